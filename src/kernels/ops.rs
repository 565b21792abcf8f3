//! One dispatch function per op. Shapes use llm.c's letters: B batch, T time,
//! C channels, OC output channels, V vocabulary, NH heads, N = B*T rows.
//! Each mirrors the function of the same name in [`crate::cpu`].

use bytemuck::{Pod, Zeroable};

use super::{dispatch, grid_1d, Dispatch, Kernels, MatmulVariant, MAX_GROUPS};
use crate::device::Gpu;
use crate::error::{Error, Result};

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    len: u32,
    stride: u32,
}

/// The parameters of [`embedding_forward`], as its shader reads them.
/// `pos_offset` may change between submits ([`Dispatch::update_params`]);
/// the others are fixed by the buffers the dispatch was built with.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct EmbeddingParams {
    /// B*T rows.
    pub n: u32,
    /// Sequence length T: row r has position `pos_offset + r % T`.
    pub t: u32,
    /// Channels C.
    pub c: u32,
    /// First token id of this vocabulary chunk.
    pub v0: u32,
    /// Tokens in this chunk (row length of `wte_t`).
    pub vlen: u32,
    /// Invocations per row of the dispatch grid.
    pub stride: u32,
    /// Position of each sequence's first token (0 for a whole prompt).
    pub pos_offset: u32,
}

/// out (N, C) = wte_t[:, ids - v0] + wpe[pos_offset + t], for the ids in this
/// vocabulary chunk. `wte_t` is one chunk (C, vlen) of the transposed token
/// table holding tokens v0 .. v0+vlen; dispatch once per chunk. The caller
/// keeps `pos_offset + T <= maxT`.
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    gpu: &Gpu,
    out: &wgpu::Buffer,   // (N, C)
    ids: &wgpu::Buffer,   // (N) u32
    wte_t: &wgpu::Buffer, // (C, vlen)
    wpe: &wgpu::Buffer,   // (maxT, C)
    n: usize,
    t: usize,
    c: usize,
    v0: usize,
    vlen: usize,
    pos_offset: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(n * c);
    let p = EmbeddingParams {
        n: n as u32,
        t: t as u32,
        c: c as u32,
        v0: v0 as u32,
        vlen: vlen as u32,
        stride,
        pos_offset: pos_offset as u32,
    };
    dispatch(
        gpu,
        "embedding_forward",
        &[out, ids, wte_t, wpe],
        &p,
        groups,
    )
}

/// out (N, C) = layernorm(inp (N, C)) * gamma (C) + beta (C).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    gpu: &Gpu,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
    n: usize,
    c: usize,
    eps: f32,
) -> Dispatch {
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
    dispatch(
        gpu,
        "layernorm_forward",
        &[out, inp, gamma, beta],
        &p,
        groups,
    )
}

/// out (N, OC) = inp (N, C) @ weight (C, OC) + bias (OC); `weight` in
/// Conv1D layout [in, out]. When C and OC are multiples of 4: Rows4 for at
/// most [`MatmulVariant::FEW_ROWS`] rows (decoding), else the device's
/// aligned variant ([`Kernels::aligned_matmul`]: Subgroup8 on devices with
/// 8-wide subgroups, else Vec4); the general kernel otherwise.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    gpu: &Gpu,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    n: usize,
    c: usize,
    oc: usize,
) -> Dispatch {
    matmul_forward_strided(gpu, out, inp, weight, bias, n, c, oc, oc, 0)
}

/// [`matmul_forward`] with the kernel variant chosen by the caller (to test
/// or time each one). An error, naming the variant and the device or shape,
/// when the device cannot run `variant` or the shape does not suit it.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_with(
    gpu: &Gpu,
    variant: MatmulVariant,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    n: usize,
    c: usize,
    oc: usize,
) -> Result<Dispatch> {
    let shape = MatmulShape::new(n, c, oc, oc, 0);
    if !Kernels::of(gpu).supports(variant) {
        return Err(Error::Input(format!(
            "matmul variant {variant} needs 8-wide subgroups, which {} lacks",
            gpu.label
        )));
    }
    if variant.needs_aligned() && !shape.aligned() {
        return Err(Error::Input(format!(
            "matmul variant {variant} needs C and OC to be multiples of 4, got C={c} OC={oc}"
        )));
    }
    Ok(matmul_dispatch(
        gpu,
        variant,
        &[out, inp, weight, bias],
        shape,
    ))
}

/// [`matmul_forward`] writing columns `col_off .. col_off+OC` of an output
/// whose rows are `ldo` floats long: how the LM head fills the logits one
/// vocabulary chunk at a time.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_strided(
    gpu: &Gpu,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    n: usize,
    c: usize,
    oc: usize,
    ldo: usize,
    col_off: usize,
) -> Dispatch {
    let shape = MatmulShape::new(n, c, oc, ldo, col_off);
    let variant = match shape.aligned() {
        true if n <= MatmulVariant::FEW_ROWS => MatmulVariant::Rows4,
        true => Kernels::of(gpu).aligned_matmul(),
        false => MatmulVariant::General,
    };
    matmul_dispatch(gpu, variant, &[out, inp, weight, bias], shape)
}

/// The matmul shaders' parameters.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct MatmulShape {
    n: u32,
    c: u32,
    oc: u32,
    ldo: u32,
    col_off: u32,
}

impl MatmulShape {
    fn new(n: usize, c: usize, oc: usize, ldo: usize, col_off: usize) -> MatmulShape {
        MatmulShape {
            n: n as u32,
            c: c as u32,
            oc: oc as u32,
            ldo: ldo as u32,
            col_off: col_off as u32,
        }
    }

    /// What the vec4 and subgroup kernels need.
    fn aligned(&self) -> bool {
        [self.c, self.oc, self.ldo, self.col_off]
            .iter()
            .all(|x| x.is_multiple_of(4))
    }
}

/// Build the dispatch of a matmul `variant` the caller has checked the device
/// and the shape support.
fn matmul_dispatch(
    gpu: &Gpu,
    variant: MatmulVariant,
    buffers: &[&wgpu::Buffer; 4],
    p: MatmulShape,
) -> Dispatch {
    let (n, oc) = (p.n, p.oc);
    let groups = match variant {
        // One invocation per 32-row x 4-column block; workgroups of 64x1.
        MatmulVariant::Subgroup8 => [oc.div_ceil(4 * 64), n.div_ceil(32)],
        // One invocation per 8-row x 16-column block; workgroups of 16x4.
        MatmulVariant::Vec4 => [oc.div_ceil(16 * 16), n.div_ceil(8 * 4)],
        // One invocation per 4x4 block; workgroups of 8x8.
        MatmulVariant::General => [oc.div_ceil(4 * 8), n.div_ceil(4 * 8)],
        // One invocation per 4-row x 4-column block; workgroups of 64x1.
        MatmulVariant::Rows4 => [oc.div_ceil(4 * 64), n.div_ceil(4)],
    };
    let groups = [groups[0].max(1), groups[1].max(1), 1];
    dispatch(gpu, variant.shader(), buffers, &p, groups)
}

/// out (B*T, C) = causal self-attention over qkv (B*T, 3C) with NH heads.
pub fn attention_forward(
    gpu: &Gpu,
    out: &wgpu::Buffer,
    qkv: &wgpu::Buffer,
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) -> Dispatch {
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
        stride: u32,
    }
    let hd = c / nh;
    let nchunks = hd.div_ceil(64);
    let (groups, stride) = grid_1d(b * nh * t * nchunks);
    let p = P {
        b: b as u32,
        t: t as u32,
        c: c as u32,
        nh: nh as u32,
        hd: hd as u32,
        nchunks: nchunks as u32,
        scale: 1.0 / (hd as f32).sqrt(),
        stride,
    };
    dispatch(gpu, "attention_forward", &[out, qkv], &p, groups)
}

/// out = gelu_new(inp), `len` elements.
pub fn gelu_forward(gpu: &Gpu, out: &wgpu::Buffer, inp: &wgpu::Buffer, len: usize) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = ElementwiseParams {
        len: len as u32,
        stride,
    };
    dispatch(gpu, "gelu_forward", &[out, inp], &p, groups)
}

/// out = a + b, `len` elements.
pub fn residual_forward(
    gpu: &Gpu,
    out: &wgpu::Buffer,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    len: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = ElementwiseParams {
        len: len as u32,
        stride,
    };
    dispatch(gpu, "residual_forward", &[out, a, b], &p, groups)
}

// ---------------------------------------------------------------------------
// backward: one dispatch fn per shader, twins in `crate::cpu::backward`.
// Every gradient accumulates (+=): zero the gradients once per step.

/// dwte_t (C, vlen) += dout rows by token, for the tokens v0 .. v0+vlen of
/// this vocabulary chunk (the layout of [`embedding_forward`]'s table); with
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
/// [`layernorm_forward`]. Two dispatches, to encode in this order: phase 0
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

/// dqkv (B*T, 3C) += the gradient of [`attention_forward`] for dout (B*T, C).
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

// ---------------------------------------------------------------------------
// optimizer: in-place updates of one tensor, twins in `crate::cpu::optim`.

/// The hyperparameters of [`adamw_update`], as its shader reads them: one
/// step of `torch.optim.AdamW`. `len` and `stride` are fixed when the
/// dispatch is built; the caller writes the rest before each step with
/// [`Dispatch::set_params`] / [`Dispatch::update_params`] (keeping `len` and
/// `stride`, e.g. `update_params(q, |h: &mut AdamWParams| { h.lr = lr; ... })`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamWParams {
    /// Elements in the tensor (fixed at build).
    pub len: u32,
    /// Invocations per row of the dispatch grid (fixed at build).
    pub stride: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay: param *= 1 - lr * weight_decay.
    pub weight_decay: f32,
    /// 1 - beta1^step (step counts from 1), computed in f64.
    pub bias_correction1: f32,
    /// 1 - beta2^step, computed in f64.
    pub bias_correction2: f32,
    /// Multiplies every gradient first: the gradient-clipping factor, else 1.
    pub grad_scale: f32,
}

impl AdamWParams {
    /// The bias corrections (1 - beta1^step, 1 - beta2^step) of step `step`
    /// (counted from 1), computed in f64 from the f64 betas as torch does,
    /// then rounded to f32.
    pub fn bias_corrections(beta1: f64, beta2: f64, step: u64) -> (f32, f32) {
        let t = step as f64;
        ((1.0 - beta1.powf(t)) as f32, (1.0 - beta2.powf(t)) as f32)
    }
}

/// One AdamW step on a tensor of `len` elements, in place: params, m, v
/// updated from grads with the hyperparameters of [`AdamWParams`]. Built with
/// lr 0, weight decay 0, torch's default betas and eps, bias corrections 1
/// and grad_scale 1: set the real values before every step.
pub fn adamw_update(
    gpu: &Gpu,
    params: &wgpu::Buffer, // (len)
    grads: &wgpu::Buffer,  // (len)
    m: &wgpu::Buffer,      // (len) first moment, starts at zero
    v: &wgpu::Buffer,      // (len) second moment, starts at zero
    len: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = AdamWParams {
        len: len as u32,
        stride,
        lr: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        bias_correction1: 1.0,
        bias_correction2: 1.0,
        grad_scale: 1.0,
    };
    dispatch(gpu, "adamw_update", &[params, m, v, grads], &p, groups)
}

/// The hyperparameters of [`sgd_update`], as its shader reads them: one step
/// of `torch.optim.SGD` with dampening 0 and no Nesterov. `len` and `stride`
/// are fixed at build; the caller writes the rest before each step.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SgdParams {
    /// Elements in the tensor (fixed at build).
    pub len: u32,
    /// Invocations per row of the dispatch grid (fixed at build).
    pub stride: u32,
    pub lr: f32,
    /// 0: plain SGD, the momentum buffer is neither read nor written.
    pub momentum: f32,
    /// L2 penalty added to the gradient: g += weight_decay * param.
    pub weight_decay: f32,
    /// Multiplies every gradient first: the gradient-clipping factor, else 1.
    pub grad_scale: f32,
}

/// One SGD step on a tensor of `len` elements, in place: params and the
/// momentum buffer (starts at zero) updated from grads with the
/// hyperparameters of [`SgdParams`]. Built with lr 0, momentum 0, weight
/// decay 0 and grad_scale 1: set the real values before every step.
pub fn sgd_update(
    gpu: &Gpu,
    params: &wgpu::Buffer,       // (len)
    grads: &wgpu::Buffer,        // (len)
    momentum_buf: &wgpu::Buffer, // (len)
    len: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = SgdParams {
        len: len as u32,
        stride,
        lr: 0.0,
        momentum: 0.0,
        weight_decay: 0.0,
        grad_scale: 1.0,
    };
    dispatch(
        gpu,
        "sgd_update",
        &[params, momentum_buf, grads],
        &p,
        groups,
    )
}

/// Elements of `inp` one workgroup of [`sumsq_partials`] reduces.
const SUMSQ_SLICE: usize = 4096;

/// How many f32 partial sums [`sumsq_partials`] writes for `len` elements
/// (at least 1): the size of its `partials` buffer.
pub fn sumsq_partials_len(len: usize) -> usize {
    len.div_ceil(SUMSQ_SLICE).max(1)
}

/// partials[k] = sum of inp[i]^2 over the k-th slice of 4096 elements of
/// inp (len), for k < [`sumsq_partials_len`]`(len)`; the host adds the
/// partials in f64 (for the global gradient norm).
pub fn sumsq_partials(
    gpu: &Gpu,
    partials: &wgpu::Buffer, // (sumsq_partials_len(len))
    inp: &wgpu::Buffer,      // (len)
    len: usize,
) -> Dispatch {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        len: u32,
        groups_x: u32,
        npartials: u32,
    }
    let npartials = sumsq_partials_len(len) as u32;
    let x = npartials.min(MAX_GROUPS);
    let p = P {
        len: len as u32,
        groups_x: x,
        npartials,
    };
    dispatch(
        gpu,
        "sumsq",
        &[partials, inp],
        &p,
        [x, npartials.div_ceil(x), 1],
    )
}
