//! Element types: which kernels also compile with f16 storage
//! ([`F16_SHADERS`]), the pair of types one compiled kernel stores
//! ([`Elems`]), the header that makes one WGSL file compile for either
//! ([`shader_source`]), and where a dispatch runs ([`On`]: a device and
//! its kernel's element types).

use super::SHADERS;
use crate::device::{Dtype, Gpu};

/// Shaders that also compile with f16 storage ([`Elems`]): the inference
/// forward's ops, decoding's, and the conversion at a hop. Each is one source
/// for both types: it reads `st` and writes `ot`, type aliases the header
/// ([`shader_source`]) defines, and accumulates in f32.
pub const F16_SHADERS: &[&str] = &[
    "embedding_forward",
    "embedding_decode",
    "layernorm_forward",
    "rmsnorm_forward",
    "matmul_forward",
    "matmul_forward_vec4",
    "matmul_forward_subgroup",
    "matmul_forward_rows4",
    "matmul_forward_rows4_texture",
    "attention_forward",
    "attention_forward_subgroup",
    "attention_decode",
    "kv_cache_write",
    "gelu_forward",
    "residual_forward",
    "swiglu_forward",
    "rope_forward",
    "weights_to_texture",
    "convert",
];

/// The element types one compiled kernel stores: `st`, what it reads
/// (activations, weights, the KV cache), and `ot`, what it writes. The same
/// but for the LM head (f16 in, f32 logits out) and the conversion at a hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Elems {
    pub st: Dtype,
    pub ot: Dtype,
}

impl Elems {
    pub const F32: Elems = Elems::of(Dtype::F32);

    /// Reads and writes `dtype`.
    pub const fn of(dtype: Dtype) -> Elems {
        Elems {
            st: dtype,
            ot: dtype,
        }
    }

    fn needs_f16(self) -> bool {
        self.st == Dtype::F16 || self.ot == Dtype::F16
    }
}

/// The WGSL a kernel compiles from for `elems`: its file with a header that
/// defines `st` and `ot` (and enables f16 when either is f16), and how a
/// weight texture holds `st` weights: `TEXEL_COLS` columns a texel and the
/// functions that pack and unpack one. f16 variants hold weight textures as
/// rgba32uint texels of 8 packed halves: the host substitutes the format in
/// `weights_to_texture`'s storage texture and the sample type of the
/// texture the GEMV reads (the only texture types named in those shaders).
pub fn shader_source(name: &str, elems: Elems) -> Option<String> {
    let (_, src) = SHADERS.iter().find(|(n, _)| *n == name)?;
    let mut out = String::new();
    if elems.needs_f16() {
        out.push_str("enable f16;\n");
    }
    out.push_str(&format!(
        "alias st = {};\nalias ot = {};\n",
        elems.st, elems.ot
    ));
    // How a weight texture holds `st` weights (kernels::weights): 4 f32 in an
    // rgba32float texel, or 8 halves packed in an rgba32uint one.
    match elems.st {
        Dtype::F32 => out.push_str(
            "const TEXEL_COLS: u32 = 4u;\n\
             fn texel_pack(lo: vec4<f32>, hi: vec4<f32>) -> vec4<f32> { return lo; }\n\
             fn texel_lo(t: vec4<f32>) -> vec4<f32> { return t; }\n\
             fn texel_hi(t: vec4<f32>) -> vec4<f32> { return t; }\n",
        ),
        Dtype::F16 => out.push_str(
            "const TEXEL_COLS: u32 = 8u;\n\
             fn texel_pack(lo: vec4<f32>, hi: vec4<f32>) -> vec4<u32> {\n\
             \x20   return vec4<u32>(pack2x16float(lo.xy), pack2x16float(lo.zw), pack2x16float(hi.xy), pack2x16float(hi.zw));\n\
             }\n\
             fn texel_lo(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.x), unpack2x16float(t.y)); }\n\
             fn texel_hi(t: vec4<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(t.z), unpack2x16float(t.w)); }\n",
        ),
    }
    match elems.st {
        Dtype::F16 => out.push_str(
            &src.replace("rgba32float", "rgba32uint")
                .replace("texture_2d<f32>", "texture_2d<u32>"),
        ),
        Dtype::F32 => out.push_str(src),
    }
    Some(out)
}

/// Where a dispatch runs: a device and the element types its kernel stores
/// (`&Gpu` alone: f32, what training and every f32 run use; `(&Gpu, Dtype)`;
/// `(&Gpu, Elems)`).
#[derive(Clone, Copy)]
pub struct On<'a> {
    pub gpu: &'a Gpu,
    pub elems: Elems,
}

impl<'a> From<&'a Gpu> for On<'a> {
    fn from(gpu: &'a Gpu) -> On<'a> {
        On {
            gpu,
            elems: Elems::F32,
        }
    }
}

impl<'a> From<(&'a Gpu, Dtype)> for On<'a> {
    fn from((gpu, dtype): (&'a Gpu, Dtype)) -> On<'a> {
        On {
            gpu,
            elems: Elems::of(dtype),
        }
    }
}

impl<'a> From<(&'a Gpu, Elems)> for On<'a> {
    fn from((gpu, elems): (&'a Gpu, Elems)) -> On<'a> {
        On { gpu, elems }
    }
}
