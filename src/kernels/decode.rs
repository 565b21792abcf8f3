//! The dispatch functions of decoding with a KV cache: each row of a pass is
//! token `pos` of sequence `slot`, given by a (N, 2) u32 row table that the
//! caller rewrites before each pass. Each mirrors the function of the same
//! name in [`crate::cpu::decode`].

use bytemuck::{Pod, Zeroable};

use super::{dispatch, grid_1d, Dispatch};
use crate::device::Gpu;

/// k_cache[slot, pos] = k of row r, v_cache[slot, pos] = v of row r, for
/// every row r of qkv (N, 3C) with (slot, pos) = rows[r]; the caches are
/// (slots, n_pos, C).
#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write(
    gpu: &Gpu,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    qkv: &wgpu::Buffer,
    rows: &wgpu::Buffer,
    n: usize,
    c: usize,
    n_pos: usize,
) -> Dispatch {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        c: u32,
        n_pos: u32,
        stride: u32,
    }
    let (groups, stride) = grid_1d(n * c);
    let p = P {
        n: n as u32,
        c: c as u32,
        n_pos: n_pos as u32,
        stride,
    };
    dispatch(
        gpu,
        "kv_cache_write",
        &[k_cache, v_cache, qkv, rows],
        &p,
        groups,
    )
}

/// out (N, C): each row's query (in qkv (N, 3C)) attending, head by head,
/// over positions 0 ..= pos of its slot in the caches (slots, n_pos, C).
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    gpu: &Gpu,
    out: &wgpu::Buffer,
    qkv: &wgpu::Buffer,
    k_cache: &wgpu::Buffer,
    v_cache: &wgpu::Buffer,
    rows: &wgpu::Buffer,
    n: usize,
    c: usize,
    nh: usize,
    n_pos: usize,
) -> Dispatch {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        c: u32,
        nh: u32,
        hd: u32,
        nchunks: u32,
        n_pos: u32,
        scale: f32,
        stride: u32,
    }
    let hd = c / nh;
    let nchunks = hd.div_ceil(64);
    let (groups, stride) = grid_1d(n * nh * nchunks);
    let p = P {
        n: n as u32,
        c: c as u32,
        nh: nh as u32,
        hd: hd as u32,
        nchunks: nchunks as u32,
        n_pos: n_pos as u32,
        scale: 1.0 / (hd as f32).sqrt(),
        stride,
    };
    dispatch(
        gpu,
        "attention_decode",
        &[out, qkv, k_cache, v_cache, rows],
        &p,
        groups,
    )
}

/// out (N, C) = wte[ids[r]] + wpe[pos_r] for the tokens v0 .. v0+vlen of
/// one vocabulary chunk, wte_t (C, vlen) transposed.
#[allow(clippy::too_many_arguments)]
pub fn embedding_decode(
    gpu: &Gpu,
    out: &wgpu::Buffer,
    ids: &wgpu::Buffer,
    wte_t: &wgpu::Buffer,
    wpe: &wgpu::Buffer,
    rows: &wgpu::Buffer,
    n: usize,
    c: usize,
    v0: usize,
    vlen: usize,
) -> Dispatch {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        c: u32,
        v0: u32,
        vlen: u32,
        stride: u32,
    }
    let (groups, stride) = grid_1d(n * c);
    let p = P {
        n: n as u32,
        c: c as u32,
        v0: v0 as u32,
        vlen: vlen as u32,
        stride,
    };
    dispatch(
        gpu,
        "embedding_decode",
        &[out, ids, wte_t, wpe, rows],
        &p,
        groups,
    )
}
