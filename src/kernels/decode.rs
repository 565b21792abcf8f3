//! The dispatch functions of decoding with a KV cache: each row of a pass is
//! token `pos` of sequence `slot`, given by a (N, 2) u32 row table that the
//! caller rewrites before each pass. Each mirrors the function of the same
//! name in [`crate::cpu::decode`]. Attention is grouped-query: NH query
//! heads, NKV key/value heads (NH a multiple of NKV), head dim HD, qkv rows
//! `[q: NH*HD | k: NKV*HD | v: NKV*HD]`, the caches sized by the KV heads;
//! GPT-2 is NKV = NH, HD = C/NH.

use bytemuck::{Pod, Zeroable};

use super::forward::check_heads;
use super::{dispatch, grid_1d, Dispatch, On};

/// k_cache[slot, pos] = k of row r, v_cache[slot, pos] = v of row r (all
/// NKV heads), for every row r of qkv with (slot, pos) = rows[r].
#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write<'a>(
    on: impl Into<On<'a>>,
    k_cache: &wgpu::Buffer, // (slots, n_pos, NKV*HD)
    v_cache: &wgpu::Buffer, // (slots, n_pos, NKV*HD)
    qkv: &wgpu::Buffer,     // (N, (NH + 2 NKV) HD)
    rows: &wgpu::Buffer,    // (N, 2) u32
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    n_pos: usize,
) -> Dispatch {
    let on: On = on.into();
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        nh: u32,
        nkv: u32,
        hd: u32,
        n_pos: u32,
        stride: u32,
    }
    check_heads("kv_cache_write", nh, nkv, hd);
    let (groups, stride) = grid_1d(n * nkv * hd);
    let p = P {
        n: n as u32,
        nh: nh as u32,
        nkv: nkv as u32,
        hd: hd as u32,
        n_pos: n_pos as u32,
        stride,
    };
    dispatch(
        on,
        "kv_cache_write",
        &[k_cache, v_cache, qkv, rows],
        &p,
        groups,
    )
}

/// out (N, NH*HD): each row's query heads attending over positions
/// 0 ..= pos of its slot in the caches, query head h over KV head
/// h / (NH/NKV), scale 1/sqrt(HD); with `window` > 0 only over the positions
/// t with pos - t < window (0: no window).
#[allow(clippy::too_many_arguments)]
pub fn attention_decode<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,     // (N, NH*HD)
    qkv: &wgpu::Buffer,     // (N, (NH + 2 NKV) HD): the queries
    k_cache: &wgpu::Buffer, // (slots, n_pos, NKV*HD)
    v_cache: &wgpu::Buffer, // (slots, n_pos, NKV*HD)
    rows: &wgpu::Buffer,    // (N, 2) u32
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    n_pos: usize,
    window: usize,
) -> Dispatch {
    let on: On = on.into();
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        nh: u32,
        nkv: u32,
        hd: u32,
        nchunks: u32,
        n_pos: u32,
        scale: f32,
        window: u32,
        stride: u32,
    }
    check_heads("attention_decode", nh, nkv, hd);
    let nchunks = hd.div_ceil(64);
    let (groups, stride) = grid_1d(n * nh * nchunks);
    let p = P {
        n: n as u32,
        nh: nh as u32,
        nkv: nkv as u32,
        hd: hd as u32,
        nchunks: nchunks as u32,
        n_pos: n_pos as u32,
        scale: 1.0 / (hd as f32).sqrt(),
        window: window as u32,
        stride,
    };
    dispatch(
        on,
        "attention_decode",
        &[out, qkv, k_cache, v_cache, rows],
        &p,
        groups,
    )
}

/// out (N, C) = wte[ids[r]] + wpe[pos_r] for the tokens v0 .. v0+vlen of
/// one vocabulary chunk, wte_t (C, vlen) transposed. With `wpe` `None` (no
/// learned positions) out = wte[ids[r]], and no position table is read.
#[allow(clippy::too_many_arguments)]
pub fn embedding_decode<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,         // (N, C)
    ids: &wgpu::Buffer,         // (N) u32
    wte_t: &wgpu::Buffer,       // (C, vlen)
    wpe: Option<&wgpu::Buffer>, // (maxT, C)
    rows: &wgpu::Buffer,        // (N, 2) u32
    n: usize,
    c: usize,
    v0: usize,
    vlen: usize,
) -> Dispatch {
    let on: On = on.into();
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        c: u32,
        v0: u32,
        vlen: u32,
        stride: u32,
        with_wpe: u32,
    }
    let (groups, stride) = grid_1d(n * c);
    let p = P {
        n: n as u32,
        c: c as u32,
        v0: v0 as u32,
        vlen: vlen as u32,
        stride,
        with_wpe: wpe.is_some() as u32,
    };
    // Without a position table the shader reads none; wte_t fills its binding.
    let wpe = wpe.unwrap_or(wte_t);
    dispatch(
        on,
        "embedding_decode",
        &[out, ids, wte_t, wpe, rows],
        &p,
        groups,
    )
}
