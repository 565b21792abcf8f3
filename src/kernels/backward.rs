//! The backward ops' dispatch functions, one per shader, twins in
//! [`crate::cpu::backward`]: the gradients of every forward op, and the
//! cross-entropy fused with the softmax backward. Every gradient
//! accumulates (+=): zero the gradients once per step. Shapes as in
//! [`super::forward`].

use bytemuck::{Pod, Zeroable};

use super::{
    dispatch, grid_1d, Dispatch, ElementwiseParams, Kernels, MatmulOp, MatmulShape, MatmulVariant,
};
use crate::device::Gpu;
use crate::error::{Error, Result};

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
/// col_off are multiples of 4, the device's aligned matmul variant
/// ([`Kernels::aligned_matmul`]: the subgroup kernel on devices with 8-wide
/// subgroups, else the register-blocked vec4 one), as the forward runs; the
/// general kernel otherwise. The transpose is in the kernels' indexing.
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
    let variant = backward_variant(gpu, &p);
    backward_dispatch(
        gpu,
        MatmulOp::BackwardInput,
        variant,
        &[dinp, dout, weight],
        p,
    )
}

/// [`matmul_backward_input`] with the kernel variant chosen by the caller
/// (to test or time each one): an error, naming it, when the device cannot
/// run it, the shape does not suit it, or it has no gradient kernel (Rows4).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_input_with(
    gpu: &Gpu,
    variant: MatmulVariant,
    dinp: &wgpu::Buffer,
    dout: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    n: usize,
    c: usize,
    oc: usize,
    ldd: usize,
    col_off: usize,
) -> Result<Dispatch> {
    let p = MatmulShape::new(n, c, oc, ldd, col_off);
    check_variant(gpu, MatmulOp::BackwardInput, variant, &p)?;
    Ok(backward_dispatch(
        gpu,
        MatmulOp::BackwardInput,
        variant,
        &[dinp, dout, weight],
        p,
    ))
}

/// dweight (C, OC) += inp (N, C)^T @ dout[:, col_off .. col_off+OC], dout's
/// rows `ldd` floats long. Aligned shapes run the device's aligned variant,
/// as [`matmul_backward_input`] does; the transpose is in the indexing.
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
    let variant = backward_variant(gpu, &p);
    backward_dispatch(
        gpu,
        MatmulOp::BackwardWeight,
        variant,
        &[dweight, dout, inp],
        p,
    )
}

/// [`matmul_backward_weight`] with the kernel variant chosen by the caller;
/// errors as [`matmul_backward_input_with`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_weight_with(
    gpu: &Gpu,
    variant: MatmulVariant,
    dweight: &wgpu::Buffer,
    dout: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    n: usize,
    c: usize,
    oc: usize,
    ldd: usize,
    col_off: usize,
) -> Result<Dispatch> {
    let p = MatmulShape::new(n, c, oc, ldd, col_off);
    check_variant(gpu, MatmulOp::BackwardWeight, variant, &p)?;
    Ok(backward_dispatch(
        gpu,
        MatmulOp::BackwardWeight,
        variant,
        &[dweight, dout, inp],
        p,
    ))
}

/// The variant a gradient matmul of shape `p` runs: the forward's choice for
/// aligned shapes, General otherwise.
fn backward_variant(gpu: &Gpu, p: &MatmulShape) -> MatmulVariant {
    match p.aligned() {
        true => Kernels::of(gpu).aligned_matmul(),
        false => MatmulVariant::General,
    }
}

/// An error naming what keeps `variant` from running `op` at shape `p` here.
fn check_variant(gpu: &Gpu, op: MatmulOp, variant: MatmulVariant, p: &MatmulShape) -> Result<()> {
    if variant.shader_of(op).is_none() {
        return Err(Error::Input(format!(
            "matmul variant {variant} has no {op:?} kernel"
        )));
    }
    if !Kernels::of(gpu).supports(variant) {
        return Err(Error::Input(format!(
            "matmul variant {variant} needs 8-wide subgroups, which {} lacks",
            gpu.label
        )));
    }
    if variant.needs_aligned() && !p.aligned() {
        return Err(Error::Input(format!(
            "matmul variant {variant} needs C, OC, ldd and col_off to be multiples of 4, got C={} OC={} ldd={} col_off={}",
            p.c, p.oc, p.ldo, p.col_off
        )));
    }
    Ok(())
}

/// Build the dispatch of a gradient matmul the caller has checked.
fn backward_dispatch(
    gpu: &Gpu,
    op: MatmulOp,
    variant: MatmulVariant,
    buffers: &[&wgpu::Buffer; 3],
    p: MatmulShape,
) -> Dispatch {
    let (n, c, oc) = (p.n, p.c, p.oc);
    let groups = match (op, variant) {
        // dinp: one invocation per 32-row x 4-column block; workgroups of 64x1.
        (MatmulOp::BackwardInput, MatmulVariant::Subgroup8) => {
            [(c / 4).div_ceil(64), n.div_ceil(32)]
        }
        // dinp: one invocation per 8-row x 4-column block; workgroups of 16x4.
        (MatmulOp::BackwardInput, MatmulVariant::Vec4) => [(c / 4).div_ceil(16), n.div_ceil(8 * 4)],
        // dinp: one invocation per element; workgroups of 8x8.
        (MatmulOp::BackwardInput, _) => [c.div_ceil(8), n.div_ceil(8)],
        // dweight: one invocation per 32-row x 4-column block; workgroups of 64x1.
        (_, MatmulVariant::Subgroup8) => [(oc / 4).div_ceil(64), c.div_ceil(32)],
        // dweight: one invocation per 4-row x 16-column block; workgroups of 16x4.
        (_, MatmulVariant::Vec4) => [(oc / 4).div_ceil(4 * 16), (c / 4).div_ceil(4)],
        // dweight: one invocation per element; workgroups of 8x8.
        _ => [oc.div_ceil(8), c.div_ceil(8)],
    };
    let groups = [groups[0].max(1), groups[1].max(1), 1];
    let name = variant
        .shader_of(op)
        .expect("bug: gradient variants are checked before dispatch");
    dispatch(gpu, name, buffers, &p, groups)
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

/// f32 elements of [`attention_backward`]'s scratch for B x T tokens and
/// NH heads on `gpu`: D (B, NH, T) and, when it fits one binding, every
/// score's gradient (B, NH, T, T), so that each score is computed once; else
/// D alone, and the query side computes its scores again.
pub fn attention_backward_scratch_len(gpu: &Gpu, b: usize, t: usize, nh: usize) -> usize {
    let queries = b * nh * t;
    let with_ds = queries * (t + 1);
    let limit = gpu.max_binding().min(gpu.limits.max_buffer_size);
    match ((with_ds * 4) as u64) <= limit {
        true => with_ds,
        false => queries,
    }
}

/// dqkv (B*T, (NH + 2 NKV) HD) += the gradient of
/// [`attention_forward`](super::attention_forward) (grouped-query, within
/// `window` when it is > 0) for dout (B*T, NH*HD), given the forward's
/// output `out` (B*T, NH*HD) and its log-sum-exp `lse` (B, NH, T)
/// ([`attention_forward_lse`](super::attention_forward_lse)).
/// Three dispatches, to encode in this order: phase 0 (per query: D =
/// dout . out into `scratch`), phase 1 (per KV head, key and chunk of 64
/// head dims: dk, dv over the group's query heads, and every score's
/// gradient into `scratch` when it holds [`attention_backward_scratch_len`]
/// floats), phase 2 (per query and chunk: dq). With a scratch of only
/// (B, NH, T) floats phase 2 recomputes its scores. At head dim 64 on
/// 8-wide subgroups, phases 1 and 2 run `attention_backward_subgroup.wgsl`
/// (8 keys, then 8 queries, per subgroup, each row loaded once per
/// subgroup).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    gpu: &Gpu,
    dqkv: &wgpu::Buffer,    // (B*T, (NH + 2 NKV) HD)
    scratch: &wgpu::Buffer, // (B, NH, T) + (B, NH, T, T) if it fits
    dout: &wgpu::Buffer,    // (B*T, NH*HD)
    qkv: &wgpu::Buffer,     // (B*T, (NH + 2 NKV) HD)
    out: &wgpu::Buffer,     // (B*T, NH*HD)
    lse: &wgpu::Buffer,     // (B, NH, T)
    b: usize,
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    window: usize,
) -> [Dispatch; 3] {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        b: u32,
        t: u32,
        nh: u32,
        nkv: u32,
        hd: u32,
        nchunks: u32,
        scale: f32,
        phase: u32,
        stride: u32,
        keep_ds: u32,
        window: u32,
    }
    super::forward::check_heads("attention_backward", nh, nkv, hd);
    let nchunks = hd.div_ceil(64);
    let queries = b * nh * t;
    let keep_ds = scratch.size() >= (queries * (t + 1) * 4) as u64;
    let buffers = [dqkv, scratch, dout, qkv, out, lse];
    // Phases 1 and 2 on 8-wide subgroups where the head dim is 64: 8 keys
    // (8 queries) per subgroup, T padded to a multiple of 8, the sixth
    // parameter its blocks of 8.
    let subgroup = hd == 64 && gpu.supports_subgroup8();
    let blocks = t.div_ceil(8);
    let (keys, dqs) = match subgroup {
        true => (b * nkv * blocks * 8, b * nh * blocks * 8),
        false => (b * nkv * t * nchunks, queries * nchunks),
    };
    [(0, queries), (1, keys), (2, dqs)].map(|(phase, threads)| {
        let (groups, stride) = grid_1d(threads);
        let (name, nchunks) = match phase {
            1 | 2 if subgroup => ("attention_backward_subgroup", blocks),
            _ => ("attention_backward", nchunks),
        };
        let p = P {
            b: b as u32,
            t: t as u32,
            nh: nh as u32,
            nkv: nkv as u32,
            hd: hd as u32,
            nchunks: nchunks as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            phase,
            stride,
            keep_ds: keep_ds as u32,
            window: window as u32,
        };
        dispatch(gpu, name, &buffers, &p, groups)
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

/// The parameters of [`crossentropy_vocab_parallel`], as its shader reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct VocabParallelCeParams {
    pub n: u32,
    /// Vocabulary V: the columns that enter the softmax.
    pub v: u32,
    /// This rank's first column, and its columns (the row stride).
    pub v0: u32,
    pub w: u32,
    pub rank: u32,
    pub tp: u32,
    /// 0: the rank's row maxima; 1: its sums of exponentials and the target
    /// logit; 2: the losses and dlogits.
    pub phase: u32,
    pub scale: f32,
    pub stride: u32,
}

/// Cross-entropy fused with the softmax backward on rank `rank` of `tp`
/// holding the logits' columns `v0 .. v0 + w` (Megatron-LM's
/// vocabulary-parallel cross-entropy): the three dispatches, in order; the
/// group sums `stats` (N, tp; cleared before the first) after the first and
/// `sums` (N, 2) after the second. Then, as [`crossentropy_softmax_backward`]
/// on the whole row: losses[row] = -ln softmax(row)[y] and dlogits[row, j]
/// += scale * (p[j] - [j == y]) over this rank's columns below V.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_vocab_parallel(
    gpu: &Gpu,
    dlogits: &wgpu::Buffer, // (N, w)
    losses: &wgpu::Buffer,  // (N)
    stats: &wgpu::Buffer,   // (N, tp)
    sums: &wgpu::Buffer,    // (N, 2)
    logits: &wgpu::Buffer,  // (N, w)
    targets: &wgpu::Buffer, // (N) u32
    scale: f32,
    n: usize,
    v: usize,
    (v0, w): (usize, usize),
    (rank, tp): (usize, usize),
) -> [Dispatch; 3] {
    let (groups, stride) = grid_1d(n);
    [0u32, 1, 2].map(|phase| {
        let p = VocabParallelCeParams {
            n: n as u32,
            v: v as u32,
            v0: v0 as u32,
            w: w as u32,
            rank: rank as u32,
            tp: tp as u32,
            phase,
            scale,
            stride,
        };
        dispatch(
            gpu,
            "crossentropy_vocab_parallel",
            &[dlogits, losses, stats, sums, logits, targets],
            &p,
            groups,
        )
    })
}
