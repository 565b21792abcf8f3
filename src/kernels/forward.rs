//! The forward ops' dispatch functions, one per shader: embedding,
//! layernorm, the matmul variants, attention, GELU and the residual add.
//! Shapes use llm.c's letters: B batch, T time, C channels, OC output
//! channels, V vocabulary, NH (query) heads, NKV key/value heads, HD head
//! dim, N = B*T rows. Each mirrors the function of the same name in
//! [`crate::cpu`].

use bytemuck::{Pod, Zeroable};

use super::weights::WeightTexture;
use super::{
    dispatch, dispatch_resources, grid_1d, Dispatch, ElementwiseParams, Kernels, MatmulShape,
    MatmulVariant, On,
};
use crate::device::{zeros, Gpu};
use crate::error::{Error, Result};

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
    /// 1: add the position table; 0: there is none (fixed at build time).
    pub with_wpe: u32,
}

/// out (N, C) = wte_t[:, ids - v0] + wpe[pos_offset + t], for the ids in this
/// vocabulary chunk. `wte_t` is one chunk (C, vlen) of the transposed token
/// table holding tokens v0 .. v0+vlen; dispatch once per chunk. The caller
/// keeps `pos_offset + T <= maxT`. With `wpe` `None` (a model without
/// learned positions: Llama) out = wte_t[:, ids - v0] only, and no position
/// table is read.
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,         // (N, C)
    ids: &wgpu::Buffer,         // (N) u32
    wte_t: &wgpu::Buffer,       // (C, vlen)
    wpe: Option<&wgpu::Buffer>, // (maxT, C)
    n: usize,
    t: usize,
    c: usize,
    v0: usize,
    vlen: usize,
    pos_offset: usize,
) -> Dispatch {
    let on: On = on.into();
    let (groups, stride) = grid_1d(n * c);
    let p = EmbeddingParams {
        n: n as u32,
        t: t as u32,
        c: c as u32,
        v0: v0 as u32,
        vlen: vlen as u32,
        stride,
        pos_offset: pos_offset as u32,
        with_wpe: wpe.is_some() as u32,
    };
    // Without a position table the shader reads none; wte_t fills its binding.
    let wpe = wpe.unwrap_or(wte_t);
    dispatch(on, "embedding_forward", &[out, ids, wte_t, wpe], &p, groups)
}

/// out (N, C) = layernorm(inp (N, C)) * gamma (C) + beta (C).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    gamma: &wgpu::Buffer,
    beta: &wgpu::Buffer,
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
    dispatch(
        on,
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
pub fn matmul_forward<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    n: usize,
    c: usize,
    oc: usize,
) -> Dispatch {
    let on: On = on.into();
    matmul_forward_strided(on, out, inp, weight, bias, n, c, oc, oc, 0)
}

/// [`matmul_forward`] with the kernel variant chosen by the caller (to test
/// or time each one). An error, naming the variant and the device or shape,
/// when the device cannot run `variant` or the shape does not suit it.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_with<'a>(
    on: impl Into<On<'a>>,
    variant: MatmulVariant,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    weight: &wgpu::Buffer,
    bias: &wgpu::Buffer,
    n: usize,
    c: usize,
    oc: usize,
) -> Result<Dispatch> {
    let on: On = on.into();
    let gpu = on.gpu;
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
        on,
        variant,
        &[out, inp, weight, bias],
        shape,
    ))
}

/// [`matmul_forward`] writing columns `col_off .. col_off+OC` of an output
/// whose rows are `ldo` floats long: how the LM head fills the logits one
/// vocabulary chunk at a time.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_strided<'a>(
    on: impl Into<On<'a>>,
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
    let on: On = on.into();
    let gpu = on.gpu;
    let shape = MatmulShape::new(n, c, oc, ldo, col_off);
    let variant = match shape.aligned() {
        true if n <= MatmulVariant::FEW_ROWS => MatmulVariant::Rows4,
        true => Kernels::of(gpu).aligned_matmul(),
        false => MatmulVariant::General,
    };
    if variant == MatmulVariant::Rows4
        && super::decode_weights(gpu).storage == super::WeightStorage::Texture
    {
        if let Some(tex) = super::weights::texture_for(gpu, weight, c, oc) {
            if tex.dtype == on.elems.st {
                return texture_dispatch(on, out, inp, &tex, bias, shape);
            }
        }
    }
    matmul_dispatch(on, variant, &[out, inp, weight, bias], shape)
}

/// [`matmul_forward_strided`] for at most [`MatmulVariant::FEW_ROWS`] rows
/// with the weight (C, OC) held in a texture
/// (`matmul_forward_rows4_texture`): what [`matmul_forward`] runs for
/// decoding on adapters whose textures read faster than their buffers
/// ([`super::decode_weights`]), for weights a stage registered
/// ([`super::WeightTextures`]). An error, naming the shape, for more rows,
/// widths not multiples of 4, or a texture of another shape.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward_texture<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    weight: &WeightTexture,
    bias: &wgpu::Buffer,
    n: usize,
    c: usize,
    oc: usize,
    ldo: usize,
    col_off: usize,
) -> Result<Dispatch> {
    let on: On = on.into();
    let shape = MatmulShape::new(n, c, oc, ldo, col_off);
    if weight.dtype != on.elems.st {
        return Err(Error::Input(format!(
            "matmul_forward_rows4_texture: a {} weight texture read by a kernel storing {}",
            weight.dtype, on.elems.st
        )));
    }
    if n > MatmulVariant::FEW_ROWS || !shape.aligned() || (weight.c, weight.oc) != (c, oc) {
        return Err(Error::Input(format!(
            "matmul_forward_rows4_texture needs at most {} rows, widths that are multiples \
             of 4 and a ({c}, {oc}) weight texture: got N={n} C={c} OC={oc} ldo={ldo} \
             col_off={col_off}, a ({}, {}) texture",
            MatmulVariant::FEW_ROWS,
            weight.c,
            weight.oc
        )));
    }
    Ok(texture_dispatch(on, out, inp, weight, bias, shape))
}

fn texture_dispatch<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    weight: &WeightTexture,
    bias: &wgpu::Buffer,
    shape: MatmulShape,
) -> Dispatch {
    let on: On = on.into();
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        shape: MatmulShape,
        tw: u32,
    }
    // One invocation per 4 rows x one texel's columns; workgroups of 64x1.
    let cols = WeightTexture::cols(weight.dtype) as u32;
    let groups = [
        shape.oc.div_ceil(cols * 64).max(1),
        shape.n.div_ceil(4).max(1),
        1,
    ];
    let p = P {
        shape,
        tw: weight.tw as u32,
    };
    dispatch_resources(
        on,
        "matmul_forward_rows4_texture",
        vec![
            out.as_entire_binding(),
            inp.as_entire_binding(),
            wgpu::BindingResource::TextureView(&weight.view),
            bias.as_entire_binding(),
        ],
        &p,
        groups,
    )
}

/// Build the dispatch of a matmul `variant` the caller has checked the device
/// and the shape support.
fn matmul_dispatch<'a>(
    on: impl Into<On<'a>>,
    variant: MatmulVariant,
    buffers: &[&wgpu::Buffer; 4],
    p: MatmulShape,
) -> Dispatch {
    let on: On = on.into();
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
    dispatch(on, variant.shader(), buffers, &p, groups)
}

/// out (B*T, NH*HD) = causal grouped-query self-attention over qkv rows
/// `[q: NH*HD | k: NKV*HD | v: NKV*HD]`: query head h reads KV head
/// h / (NH/NKV), scores scaled by 1/sqrt(HD); with `window` > 0 query t sees
/// only the keys t' with t - t' < window (Mistral's sliding window), with 0
/// every t' <= t. GPT-2 is NKV = NH, HD = C/NH, window 0. NH must be a
/// multiple of NKV; HD need not be a power of two.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer, // (B*T, NH*HD)
    qkv: &wgpu::Buffer, // (B*T, (NH + 2 NKV) HD)
    b: usize,
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    window: usize,
) -> Dispatch {
    let on: On = on.into();
    let gpu = on.gpu;
    let no_lse = zeros(gpu, "no lse", 1);
    let heads = (nh, nkv, hd);
    attention_dispatch(on, out, qkv, (&no_lse, false), b, t, heads, window)
}

/// [`attention_forward`] that also writes lse (B, NH, T), the log-sum-exp
/// of each query's scaled scores: what training keeps for
/// [`attention_backward`](super::attention_backward), so that it need not
/// find the softmax's normaliser again.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_lse(
    gpu: &Gpu,
    out: &wgpu::Buffer, // (B*T, NH*HD)
    lse: &wgpu::Buffer, // (B, NH, T)
    qkv: &wgpu::Buffer, // (B*T, (NH + 2 NKV) HD)
    b: usize,
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    window: usize,
) -> Dispatch {
    attention_dispatch(gpu, out, qkv, (lse, true), b, t, (nh, nkv, hd), window)
}

#[allow(clippy::too_many_arguments)]
fn attention_dispatch<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,
    qkv: &wgpu::Buffer,
    (lse, with_lse): (&wgpu::Buffer, bool),
    b: usize,
    t: usize,
    (nh, nkv, hd): (usize, usize, usize),
    window: usize,
) -> Dispatch {
    let on: On = on.into();
    let gpu = on.gpu;
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
        window: u32,
        stride: u32,
        with_lse: u32,
    }
    check_heads("attention_forward", nh, nkv, hd);
    let p = |nchunks: usize, items: usize| {
        let (groups, stride) = grid_1d(items);
        let p = P {
            b: b as u32,
            t: t as u32,
            nh: nh as u32,
            nkv: nkv as u32,
            hd: hd as u32,
            nchunks: nchunks as u32,
            scale: 1.0 / (hd as f32).sqrt(),
            window: window as u32,
            stride,
            with_lse: with_lse as u32,
        };
        (p, groups)
    };
    if hd == 64 && gpu.supports_subgroup8() {
        // Version 2: 8 queries of a head per 8-wide subgroup, T padded to
        // a multiple of 8; the sixth parameter is its blocks of 8 queries.
        let nblocks = t.div_ceil(8);
        let (p, groups) = p(nblocks, b * nh * nblocks * 8);
        return dispatch(
            on,
            "attention_forward_subgroup",
            &[out, lse, qkv],
            &p,
            groups,
        );
    }
    let nchunks = hd.div_ceil(64);
    let (p, groups) = p(nchunks, b * nh * t * nchunks);
    dispatch(on, "attention_forward", &[out, lse, qkv], &p, groups)
}

/// The head shape every attention kernel needs: NKV > 0 key/value heads
/// shared by groups of NH/NKV query heads, HD > 0. A caller's bug otherwise.
pub(super) fn check_heads(name: &str, nh: usize, nkv: usize, hd: usize) {
    assert!(
        nkv > 0 && hd > 0 && nh.is_multiple_of(nkv),
        "{name}: NH {nh} query heads are not groups of NKV {nkv} key/value heads, or HD {hd} is 0"
    );
}

/// out = gelu_new(inp), `len` elements.
pub fn gelu_forward<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    len: usize,
) -> Dispatch {
    elementwise(on, "gelu_forward", &[out, inp], len)
}

/// out = a + b, `len` elements.
pub fn residual_forward<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    len: usize,
) -> Dispatch {
    elementwise(on, "residual_forward", &[out, a, b], len)
}

/// out = inp converted from `on`'s `st` to its `ot`, `len` elements: an
/// activation leaving an f16 device for an f32 one, or arriving from one,
/// converted on the f16 device (its CPU twin is [`crate::device::Dtype::encode`]
/// of the f32 values: round to nearest).
pub fn convert<'a>(
    on: impl Into<On<'a>>,
    out: &wgpu::Buffer,
    inp: &wgpu::Buffer,
    len: usize,
) -> Dispatch {
    elementwise(on, "convert", &[out, inp], len)
}

/// An elementwise kernel over `len` elements (one invocation each).
fn elementwise<'a>(
    on: impl Into<On<'a>>,
    name: &'static str,
    buffers: &[&wgpu::Buffer],
    len: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = ElementwiseParams {
        len: len as u32,
        stride,
    };
    dispatch(on, name, buffers, &p, groups)
}
