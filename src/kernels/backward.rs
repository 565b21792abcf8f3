//! The backward ops' dispatch functions, one per shader, twins in
//! [`crate::cpu::backward`]: the gradients of every forward op, and the
//! cross-entropy fused with the softmax backward. Every gradient
//! accumulates (+=): zero the gradients once per step. Shapes as in
//! [`super::forward`].

use bytemuck::{Pod, Zeroable};

use super::{dispatch, grid_1d, Dispatch, ElementwiseParams, MatmulShape};
use crate::device::Gpu;

/// dwte_t (C, vlen) += dout rows by token, for the tokens v0 .. v0+vlen of
/// this vocabulary chunk (the layout of [`embedding_forward`](super::embedding_forward)'s table); with
/// `with_wpe`, also dwpe (maxT, C) += dout rows by position. Dispatch once per
/// chunk, with `with_wpe` on exactly one of them.
#[allow(clippy::too_many_arguments)]
pub fn embedding_backward(
    gpu: &Gpu,
    dwte_t: &wgpu::Buffer, // (C, vlen)
    dwpe: &wgpu::Buffer,   // (maxT, C)
    dout: &wgpu::Buffer,   // (N, C)
    ids: &wgpu::Buffer,    // (N) u32
    n: usize,
    t: usize,
    c: usize,
    v0: usize,
    vlen: usize,
    with_wpe: bool,
) -> Dispatch {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        t: u32,
        c: u32,
        v0: u32,
        vlen: u32,
        with_wpe: u32,
        stride: u32,
    }
    let (groups, stride) = grid_1d(c);
    let p = P {
        n: n as u32,
        t: t as u32,
        c: c as u32,
        v0: v0 as u32,
        vlen: vlen as u32,
        with_wpe: with_wpe as u32,
        stride,
    };
    dispatch(
        gpu,
        "embedding_backward",
        &[dwte_t, dwpe, dout, ids],
        &p,
        groups,
    )
}

/// dinp (N, C), dgamma (C), dbeta (C) += the gradients of
/// [`layernorm_forward`](super::layernorm_forward). Two dispatches, to encode in this order: phase 0
/// (per row: mean and rstd into `stats`, dinp), phase 1 (per channel: dgamma,
/// dbeta). `stats` is an (N, 2) scratch buffer.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    gpu: &Gpu,
    dinp: &wgpu::Buffer,   // (N, C)
    dgamma: &wgpu::Buffer, // (C)
    dbeta: &wgpu::Buffer,  // (C)
    stats: &wgpu::Buffer,  // (N, 2) scratch
    dout: &wgpu::Buffer,   // (N, C)
    inp: &wgpu::Buffer,    // (N, C)
    gamma: &wgpu::Buffer,  // (C)
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
    let buffers = [dinp, dgamma, dbeta, stats, dout, inp, gamma];
    [(0, n), (1, c)].map(|(phase, threads)| {
        let (groups, stride) = grid_1d(threads);
        let p = P {
            n: n as u32,
            c: c as u32,
            eps,
            phase,
            stride,
        };
        dispatch(gpu, "layernorm_backward", &buffers, &p, groups)
    })
}

/// dinp (N, C) += dout[:, col_off .. col_off+OC] @ weight (C, OC)^T, where
/// dout's rows are `ldd` floats long (the LM head reads one vocabulary chunk
/// of dlogits; `ldd = oc`, `col_off = 0` otherwise). When C, OC, ldd and
/// col_off are multiples of 4, the register-blocked vec4 kernel; the general
/// one otherwise.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_input(
    gpu: &Gpu,
    dinp: &wgpu::Buffer,   // (N, C)
    dout: &wgpu::Buffer,   // (N, ldd)
    weight: &wgpu::Buffer, // (C, OC)
    n: usize,
    c: usize,
    oc: usize,
    ldd: usize,
    col_off: usize,
) -> Dispatch {
    let p = MatmulShape::new(n, c, oc, ldd, col_off);
    let (name, groups) = if p.aligned() {
        // One invocation per 8-row x 4-column block; workgroups of 16x4.
        let g = [(c / 4).div_ceil(16), n.div_ceil(8 * 4)];
        ("matmul_backward_input_vec4", g)
    } else {
        // One invocation per element of dinp; workgroups of 8x8.
        ("matmul_backward_input", [c.div_ceil(8), n.div_ceil(8)])
    };
    let groups = [groups[0].max(1) as u32, groups[1].max(1) as u32, 1];
    dispatch(gpu, name, &[dinp, dout, weight], &p, groups)
}

/// dweight (C, OC) += inp (N, C)^T @ dout[:, col_off .. col_off+OC], dout's
/// rows `ldd` floats long. Aligned shapes (as [`matmul_backward_input`]) run
/// the register-blocked vec4 kernel.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_weight(
    gpu: &Gpu,
    dweight: &wgpu::Buffer, // (C, OC)
    dout: &wgpu::Buffer,    // (N, ldd)
    inp: &wgpu::Buffer,     // (N, C)
    n: usize,
    c: usize,
    oc: usize,
    ldd: usize,
    col_off: usize,
) -> Dispatch {
    let p = MatmulShape::new(n, c, oc, ldd, col_off);
    let (name, groups) = if p.aligned() {
        // One invocation per 4-row x 16-column block; workgroups of 16x4.
        let g = [(oc / 4).div_ceil(4 * 16), (c / 4).div_ceil(4)];
        ("matmul_backward_weight_vec4", g)
    } else {
        // One invocation per element of dweight; workgroups of 8x8.
        ("matmul_backward_weight", [oc.div_ceil(8), c.div_ceil(8)])
    };
    let groups = [groups[0].max(1) as u32, groups[1].max(1) as u32, 1];
    dispatch(gpu, name, &[dweight, dout, inp], &p, groups)
}

/// dbias (OC) += column sums of dout[:, col_off .. col_off+OC], dout's rows
/// `ldd` floats long.
pub fn matmul_backward_bias(
    gpu: &Gpu,
    dbias: &wgpu::Buffer, // (OC)
    dout: &wgpu::Buffer,  // (N, ldd)
    n: usize,
    oc: usize,
    ldd: usize,
    col_off: usize,
) -> Dispatch {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        oc: u32,
        ldd: u32,
        col_off: u32,
        stride: u32,
    }
    let (groups, stride) = grid_1d(oc);
    let p = P {
        n: n as u32,
        oc: oc as u32,
        ldd: ldd as u32,
        col_off: col_off as u32,
        stride,
    };
    dispatch(gpu, "matmul_backward_bias", &[dbias, dout], &p, groups)
}

/// dqkv (B*T, 3C) += the gradient of [`attention_forward`](super::attention_forward) for dout (B*T, C).
/// Two dispatches, to encode in this order: phase 0 (per query: logsumexp
/// and sum of P dP into `stats`), phase 1 (per position and chunk of 64 head
/// dims: dq, dk, dv). `stats` is a (B, NH, T, 2) scratch buffer.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    dqkv: &wgpu::Buffer,  // (B*T, 3C)
    stats: &wgpu::Buffer, // (B, NH, T, 2) scratch
    dout: &wgpu::Buffer,  // (B*T, C)
    qkv: &wgpu::Buffer,   // (B*T, 3C)
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> [Dispatch; 2] {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        b: u32,
        t: u32,
        c: u32,
        nh: u32,
        hd: u32,
        nchunks: u32,
        scale: f32,
        phase: u32,
        stride: u32,
    }
    let hd = c / nh;
    let nchunks = hd.div_ceil(64);
    let buffers = [dqkv, stats, dout, qkv];
    [(0, b * nh * t), (1, b * nh * t * nchunks)].map(|(phase, threads)| {
        let (groups, stride) = grid_1d(threads);
        let p = P {
            b: b as u32,
            t: t as u32,
            c: c as u32,
            nh: nh as u32,
            hd: hd as u32,
            nchunks: nchunks as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            phase,
            stride,
        };
        dispatch(gpu, "attention_backward", &buffers, &p, groups)
    })
}

/// dinp += dout * gelu_new'(inp), `len` elements.
pub fn gelu_backward(
    gpu: &Gpu,
    dinp: &wgpu::Buffer,
    dout: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    len: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = ElementwiseParams {
        len: len as u32,
        stride,
    };
    dispatch(gpu, "gelu_backward", &[dinp, dout, inp], &p, groups)
}

/// da += dout and db += dout, `len` elements; `da` and `db` must be
/// different buffers.
pub fn residual_backward(
    gpu: &Gpu,
    da: &wgpu::Buffer,
    db: &wgpu::Buffer,
    dout: &wgpu::Buffer,
    len: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = ElementwiseParams {
        len: len as u32,
        stride,
    };
    dispatch(gpu, "residual_backward", &[da, db, dout], &p, groups)
}

/// The parameters of [`crossentropy_softmax_backward`], as its shader reads
/// them. `scale` may change between submits ([`Dispatch::update_params`]),
/// e.g. when the number of predictions in a batch varies.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct CrossEntropyParams {
    /// Rows N.
    pub n: u32,
    /// Vocabulary V: the columns that enter the softmax.
    pub v: u32,
    /// Row stride of logits and dlogits (>= V).
    pub ld: u32,
    /// d loss / d losses[row]: 1 / (predictions in the whole batch).
    pub scale: f32,
    /// Invocations per row of the dispatch grid.
    pub stride: u32,
}

/// Cross-entropy fused with the softmax backward, per row with a target y
/// (rows whose target is `NO_TARGET` are skipped, loss 0): losses[row] =
/// -ln softmax(logits[row, ..V])[y] (written) and dlogits[row, j] += scale *
/// (p[j] - [j == y]) for j < V (accumulated). Rows are `ld` floats long: on
/// the GPU the logits are (N, Vp), V rounded up to 4; the padding columns
/// ld - V are not part of the softmax and their dlogits stay untouched.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_softmax_backward(
    gpu: &Gpu,
    dlogits: &wgpu::Buffer, // (N, ld)
    losses: &wgpu::Buffer,  // (N)
    logits: &wgpu::Buffer,  // (N, ld)
    targets: &wgpu::Buffer, // (N) u32
    scale: f32,
    n: usize,
    v: usize,
    ld: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(n);
    let p = CrossEntropyParams {
        n: n as u32,
        v: v as u32,
        ld: ld as u32,
        scale,
        stride,
    };
    dispatch(
        gpu,
        "crossentropy_softmax_backward",
        &[dlogits, losses, logits, targets],
        &p,
        groups,
    )
}
