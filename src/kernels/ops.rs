//! One dispatch function per op. Shapes use llm.c's letters: B batch, T time,
//! C channels, OC output channels, V vocabulary, NH heads, N = B*T rows.
//! Each mirrors the function of the same name in [`crate::cpu`].

use bytemuck::{Pod, Zeroable};

use super::{dispatch, grid_1d, Dispatch};
use crate::device::Gpu;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    len: u32,
    stride: u32,
}

/// out (N, C) = wte_t[:, ids - v0] + wpe[t], for the ids in this vocabulary
/// chunk. `wte_t` is one chunk (C, vlen) of the transposed token table holding
/// tokens v0 .. v0+vlen; dispatch once per chunk.
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
) -> Dispatch {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        t: u32,
        c: u32,
        v0: u32,
        vlen: u32,
        stride: u32,
    }
    let (groups, stride) = grid_1d(n * c);
    let p = P {
        n: n as u32,
        t: t as u32,
        c: c as u32,
        v0: v0 as u32,
        vlen: vlen as u32,
        stride,
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
/// Conv1D layout [in, out]. When C and OC are multiples of 4: the subgroup
/// kernel on devices with 8-wide subgroups, else the vec4 one; the general
/// kernel otherwise.
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
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        n: u32,
        c: u32,
        oc: u32,
        ldo: u32,
        col_off: u32,
    }
    let p = P {
        n: n as u32,
        c: c as u32,
        oc: oc as u32,
        ldo: ldo as u32,
        col_off: col_off as u32,
    };
    let aligned = c.is_multiple_of(4)
        && oc.is_multiple_of(4)
        && ldo.is_multiple_of(4)
        && col_off.is_multiple_of(4);
    let (name, groups) = if aligned && gpu.subgroup8 {
        // One invocation per 32-row x 4-column block; workgroups of 64x1.
        (
            "matmul_forward_subgroup",
            [oc.div_ceil(4 * 64), n.div_ceil(32)],
        )
    } else if aligned {
        // One invocation per 8-row x 16-column block; workgroups of 16x4.
        (
            "matmul_forward_vec4",
            [oc.div_ceil(16 * 16), n.div_ceil(8 * 4)],
        )
    } else {
        // One invocation per 4x4 block; workgroups of 8x8.
        ("matmul_forward", [oc.div_ceil(4 * 8), n.div_ceil(4 * 8)])
    };
    let groups = [groups[0].max(1) as u32, groups[1].max(1) as u32, 1];
    dispatch(gpu, name, &[out, inp, weight, bias], &p, groups)
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
