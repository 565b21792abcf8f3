//! The dispatch functions of the Llama family's own ops, forward and
//! backward: RMSNorm, rotary position embeddings, SwiGLU. Twins by name in
//! [`crate::cpu::llama`]. (Grouped-query and sliding-window attention are
//! [`super::attention_forward`], [`super::attention_decode`] and
//! [`super::kv_cache_write`]; the embedding without learned positions is
//! [`super::embedding_forward`] / [`super::embedding_decode`] with `wpe`
//! `None`.)
//!
//! N = rows, C = channels, NH = query heads, NKV = key/value heads, HD = head
//! dim, F = MLP width. Gradients accumulate (+=) as in [`super::backward`],
//! except RoPE's, which rotates dqkv in place as its forward rotates qkv.

use bytemuck::{Pod, Zeroable};

use super::{dispatch, grid_1d, Dispatch, On};
use crate::device::Gpu;

/// out (N, C) = inp * rsqrt(mean(inp²) + eps) * weight (C), per row
/// (`LlamaRMSNorm`). One invocation per row.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,    // (N, C)
    inp: &wgpu::Buffer,    // (N, C)
    weight: &wgpu::Buffer, // (C)
    n: usize,
    c: usize,
    eps: f32,
) -> Dispatch {
    let on: On = on.into();
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        c: u32,
        eps: f32,
        stride: u32,
    }
    let (groups, stride) = grid_1d(n);
    let p = P {
        n: n as u32,
        c: c as u32,
        eps,
        stride,
    };
    dispatch(on, "rmsnorm_forward", &[out, inp, weight], &p, groups)
}

/// dinp (N, C), dweight (C) += the gradients of [`rmsnorm_forward`]. Two
/// dispatches, as [`super::layernorm_backward`], to encode in this order:
/// phase 0 (per row: rstd into `stats`, dinp), phase 1 (per channel:
/// dweight, from the stored rstd). `stats` is an (N) scratch buffer (an
/// (N, 2) one, such as layernorm's, serves too); both phases belong to one
/// action, as nothing else may write `stats` between them.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    gpu: &Gpu,
    dinp: &wgpu::Buffer,    // (N, C)
    dweight: &wgpu::Buffer, // (C)
    stats: &wgpu::Buffer,   // (N) scratch
    dout: &wgpu::Buffer,    // (N, C)
    inp: &wgpu::Buffer,     // (N, C)
    weight: &wgpu::Buffer,  // (C)
    n: usize,
    c: usize,
    eps: f32,
) -> [Dispatch; 2] {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        c: u32,
        eps: f32,
        phase: u32,
        stride: u32,
    }
    let buffers = [dinp, dweight, stats, dout, inp, weight];
    [(0, n), (1, c)].map(|(phase, threads)| {
        let (groups, stride) = grid_1d(threads);
        let p = P {
            n: n as u32,
            c: c as u32,
            eps,
            phase,
            stride,
        };
        dispatch(gpu, "rmsnorm_backward", &buffers, &p, groups)
    })
}

/// Where each row's position comes from, for [`rope_forward`] and
/// [`rope_backward`]: row r of a pass is at position
/// `offset + table[(r % period) * stride + field]` of a u32 table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PositionTable {
    /// Table entries the rows cycle through.
    pub period: usize,
    /// u32s per entry.
    pub stride: usize,
    /// Which u32 of an entry is the position.
    pub field: usize,
    /// Added to every position read.
    pub offset: usize,
}

impl PositionTable {
    /// B sequences of T rows, each starting at position `offset`, with the
    /// table `0, 1, .., T-1` (T u32): row r at `offset + r % T`, as
    /// [`super::embedding_forward`] places its rows (prefill, a full forward,
    /// training).
    pub fn sequences(t: usize, offset: usize) -> PositionTable {
        PositionTable {
            period: t,
            stride: 1,
            field: 0,
            offset,
        }
    }

    /// Decoding's (N, 2) row table of (slot, pos), as the KV-cache kernels
    /// read it: row r at `rows[r].1`.
    pub fn rows(n: usize) -> PositionTable {
        PositionTable {
            period: n,
            stride: 2,
            field: 1,
            offset: 0,
        }
    }

    /// The position of row `r` given the table's contents (what the kernels
    /// read; the CPU twins take these per-row positions).
    pub fn position(&self, table: &[u32], r: usize) -> u32 {
        self.offset as u32 + table[(r % self.period) * self.stride + self.field]
    }
}

/// The parameters of [`rope_forward`] and [`rope_backward`], as their
/// shaders read them. `pos_offset` may change between submits
/// ([`Dispatch::update_params`]); the others are fixed by the buffers the
/// dispatch was built with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct RopeParams {
    /// Rows N.
    pub n: u32,
    /// Query heads NH.
    pub nh: u32,
    /// Key/value heads NKV.
    pub nkv: u32,
    /// Head dim HD (even).
    pub hd: u32,
    /// [`PositionTable::period`].
    pub period: u32,
    /// [`PositionTable::stride`].
    pub pos_stride: u32,
    /// [`PositionTable::field`].
    pub pos_field: u32,
    /// [`PositionTable::offset`].
    pub pos_offset: u32,
    /// Invocations per row of the dispatch grid.
    pub stride: u32,
}

#[allow(clippy::too_many_arguments)]
fn rope_dispatch<'a>(
    on: impl Into<On<'a>>,
    name: &'static str,
    qkv: &wgpu::Buffer,
    positions: &wgpu::Buffer,
    inv_freq: &wgpu::Buffer,
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    table: PositionTable,
) -> Dispatch {
    let on: On = on.into();
    assert!(
        hd > 0 && hd.is_multiple_of(2),
        "{name}: head dim {hd} is not even"
    );
    assert!(table.period > 0, "{name}: empty position table");
    let (groups, stride) = grid_1d(n * (nh + nkv) * hd / 2);
    let p = RopeParams {
        n: n as u32,
        nh: nh as u32,
        nkv: nkv as u32,
        hd: hd as u32,
        period: table.period as u32,
        pos_stride: table.stride as u32,
        pos_field: table.field as u32,
        pos_offset: table.offset as u32,
        stride,
    };
    dispatch(on, name, &[qkv, positions, inv_freq], &p, groups)
}

/// Rotary position embeddings, in place on the NH query heads and NKV key
/// heads of qkv rows `[q: NH*HD | k: NKV*HD | v: NKV*HD]` (v untouched),
/// transformers' `rotate_half` convention: for each head [x1 | x2] and
/// i < HD/2, angle = inv_freq[i] * pos in f32, x1' = x1 cos - x2 sin,
/// x2' = x2 cos + x1 sin. Row r's position per `table`, read from
/// `positions`. One invocation per (row, rotated head, pair).
#[allow(clippy::too_many_arguments)]
pub fn rope_forward<'a>(
    on: impl Into<On<'a>>,
    qkv: &wgpu::Buffer,       // (N, (NH + 2 NKV) HD), in place
    positions: &wgpu::Buffer, // (period * stride) u32
    inv_freq: &wgpu::Buffer,  // (HD / 2), from rope::rope_inv_freq
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    table: PositionTable,
) -> Dispatch {
    let on: On = on.into();
    let name = "rope_forward";
    rope_dispatch(on, name, qkv, positions, inv_freq, n, nh, nkv, hd, table)
}

/// Backward of [`rope_forward`], in place: dqkv holds the gradient of its
/// output and becomes the gradient of its input, each (dq, dk) pair rotated
/// back by the transposed rotation (dx1 = dy1 cos + dy2 sin, dx2 = dy2 cos -
/// dy1 sin); dv untouched. Same positions and frequencies as the forward.
#[allow(clippy::too_many_arguments)]
pub fn rope_backward(
    gpu: &Gpu,
    dqkv: &wgpu::Buffer,      // (N, (NH + 2 NKV) HD), in place
    positions: &wgpu::Buffer, // (period * stride) u32
    inv_freq: &wgpu::Buffer,  // (HD / 2)
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    table: PositionTable,
) -> Dispatch {
    let name = "rope_backward";
    rope_dispatch(gpu, name, dqkv, positions, inv_freq, n, nh, nkv, hd, table)
}

/// The parameters of the SwiGLU shaders.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct SwigluParams {
    n: u32,
    f: u32,
    stride: u32,
}

impl SwigluParams {
    fn new(n: usize, f: usize) -> ([u32; 3], SwigluParams) {
        let (groups, stride) = grid_1d(n * f);
        let p = SwigluParams {
            n: n as u32,
            f: f as u32,
            stride,
        };
        (groups, p)
    }
}

/// out (N, F) = silu(gate) * up, gate_up (N, 2F) rows `[gate: F | up: F]`
/// (the Llama MLP, gate and up projections fused into one matmul). One
/// invocation per output element.
pub fn swiglu_forward<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,     // (N, F)
    gate_up: &wgpu::Buffer, // (N, 2F)
    n: usize,
    f: usize,
) -> Dispatch {
    let on: On = on.into();
    let (groups, p) = SwigluParams::new(n, f);
    dispatch(on, "swiglu_forward", &[out, gate_up], &p, groups)
}

/// dgate_up (N, 2F) += the gradient of [`swiglu_forward`] for dout (N, F):
/// dgate += dout * up * silu'(gate), dup += dout * silu(gate). One
/// invocation per element of dout.
pub fn swiglu_backward(
    gpu: &Gpu,
    dgate_up: &wgpu::Buffer, // (N, 2F)
    dout: &wgpu::Buffer,     // (N, F)
    gate_up: &wgpu::Buffer,  // (N, 2F)
    n: usize,
    f: usize,
) -> Dispatch {
    let (groups, p) = SwigluParams::new(n, f);
    dispatch(
        gpu,
        "swiglu_backward",
        &[dgate_up, dout, gate_up],
        &p,
        groups,
    )
}
