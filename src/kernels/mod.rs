//! Kernels: every WGSL shader, embedded in one table, compiled once per
//! device ([`Kernels::of`]), and one Rust dispatch function per op: the
//! forward ops in [`forward`], their gradients in [`backward`], the
//! optimizer in [`optim`], decoding against a KV cache in [`decode`], the
//! sampler in [`mod@sample`], and the Llama family's own ops (RMSNorm, RoPE,
//! SwiGLU, forward and backward) in [`llama`]. This file holds what they share: the shader table,
//! the compiled pipelines, [`Dispatch`] and how one is built; the element
//! types a kernel stores (f32 or f16) are [`elems`].
//! Buffers are the device layer's ([`crate::device::buffers`]).
//!
//! A dispatch function builds a ready-to-encode [`Dispatch`] (pipeline, bind
//! group, parameter buffer, workgroup counts) for fixed buffers and shapes;
//! parameters that change per call (a position offset) can be rewritten
//! without rebuilding it ([`Dispatch::update_params`]).
//! Building happens once per run; encoding a `Dispatch` into a compute pass is
//! then cheap and allocation-free, which is what the pipeline executor repeats
//! for every microbatch. Each op has a CPU reference twin of the same name in
//! [`crate::cpu`] (forward), [`crate::cpu::backward`] (backward) or
//! [`crate::cpu::optim`] (optimizer steps and the gradient's sum of squares)
//! or [`crate::cpu::decode`] (decoding against a KV cache) or
//! [`crate::cpu::llama`] (the Llama family's ops); the sampler's
//! ([`mod@sample`]) is [`crate::sampling::sample_row`].

pub mod backward;
pub mod decode;
pub mod elems;
pub mod forward;
pub mod llama;
pub mod optim;
pub mod probe;
pub mod sample;
pub mod weights;

pub use backward::*;
pub use decode::*;
pub use elems::{shader_source, Elems, On, F16_SHADERS};
pub use forward::*;
pub use llama::*;
pub use optim::*;
pub use probe::{decode_weights, DecodeWeights, WeightStorage};
pub use sample::*;
pub use weights::{WeightTexture, WeightTextures};

use std::any::TypeId;
use std::sync::{Arc, Mutex};

use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

use crate::device::Gpu;
use crate::error::{Error, Result};

/// Every shader: (name, WGSL source). One file per kernel and direction.
pub const SHADERS: &[(&str, &str)] = &[
    (
        "embedding_forward",
        include_str!("../../shaders/embedding_forward.wgsl"),
    ),
    (
        "layernorm_forward",
        include_str!("../../shaders/layernorm_forward.wgsl"),
    ),
    (
        "matmul_forward",
        include_str!("../../shaders/matmul_forward.wgsl"),
    ),
    (
        "matmul_forward_vec4",
        include_str!("../../shaders/matmul_forward_vec4.wgsl"),
    ),
    (
        "matmul_forward_subgroup",
        include_str!("../../shaders/matmul_forward_subgroup.wgsl"),
    ),
    (
        "matmul_forward_rows4",
        include_str!("../../shaders/matmul_forward_rows4.wgsl"),
    ),
    (
        "matmul_forward_rows4_texture",
        include_str!("../../shaders/matmul_forward_rows4_texture.wgsl"),
    ),
    (
        "attention_forward",
        include_str!("../../shaders/attention_forward.wgsl"),
    ),
    (
        "attention_forward_subgroup",
        include_str!("../../shaders/attention_forward_subgroup.wgsl"),
    ),
    (
        "gelu_forward",
        include_str!("../../shaders/gelu_forward.wgsl"),
    ),
    (
        "residual_forward",
        include_str!("../../shaders/residual_forward.wgsl"),
    ),
    // backward: twins in cpu::backward
    (
        "embedding_backward",
        include_str!("../../shaders/embedding_backward.wgsl"),
    ),
    (
        "layernorm_backward",
        include_str!("../../shaders/layernorm_backward.wgsl"),
    ),
    (
        "matmul_backward_input",
        include_str!("../../shaders/matmul_backward_input.wgsl"),
    ),
    (
        "matmul_backward_input_vec4",
        include_str!("../../shaders/matmul_backward_input_vec4.wgsl"),
    ),
    (
        "matmul_backward_input_subgroup",
        include_str!("../../shaders/matmul_backward_input_subgroup.wgsl"),
    ),
    (
        "matmul_backward_weight",
        include_str!("../../shaders/matmul_backward_weight.wgsl"),
    ),
    (
        "matmul_backward_weight_vec4",
        include_str!("../../shaders/matmul_backward_weight_vec4.wgsl"),
    ),
    (
        "matmul_backward_weight_subgroup",
        include_str!("../../shaders/matmul_backward_weight_subgroup.wgsl"),
    ),
    (
        "matmul_backward_bias",
        include_str!("../../shaders/matmul_backward_bias.wgsl"),
    ),
    (
        "attention_backward",
        include_str!("../../shaders/attention_backward.wgsl"),
    ),
    (
        "attention_backward_subgroup",
        include_str!("../../shaders/attention_backward_subgroup.wgsl"),
    ),
    (
        "gelu_backward",
        include_str!("../../shaders/gelu_backward.wgsl"),
    ),
    (
        "residual_backward",
        include_str!("../../shaders/residual_backward.wgsl"),
    ),
    (
        "crossentropy_softmax_backward",
        include_str!("../../shaders/crossentropy_softmax_backward.wgsl"),
    ),
    (
        "crossentropy_vocab_parallel",
        include_str!("../../shaders/crossentropy_vocab_parallel.wgsl"),
    ),
    // optimizer and gradient norm: twins in cpu::optim
    (
        "adamw_update",
        include_str!("../../shaders/adamw_update.wgsl"),
    ),
    ("sgd_update", include_str!("../../shaders/sgd_update.wgsl")),
    ("sumsq", include_str!("../../shaders/sumsq.wgsl")),
    // decoding with a KV cache: twins in cpu::decode
    (
        "kv_cache_write",
        include_str!("../../shaders/kv_cache_write.wgsl"),
    ),
    (
        "attention_decode",
        include_str!("../../shaders/attention_decode.wgsl"),
    ),
    (
        "embedding_decode",
        include_str!("../../shaders/embedding_decode.wgsl"),
    ),
    // generation: twin in sampling
    ("sample", include_str!("../../shaders/sample.wgsl")),
    // the Llama family's ops: twins in cpu::llama
    (
        "rmsnorm_forward",
        include_str!("../../shaders/rmsnorm_forward.wgsl"),
    ),
    (
        "rmsnorm_backward",
        include_str!("../../shaders/rmsnorm_backward.wgsl"),
    ),
    (
        "rope_forward",
        include_str!("../../shaders/rope_forward.wgsl"),
    ),
    (
        "rope_backward",
        include_str!("../../shaders/rope_backward.wgsl"),
    ),
    (
        "swiglu_forward",
        include_str!("../../shaders/swiglu_forward.wgsl"),
    ),
    (
        "swiglu_backward",
        include_str!("../../shaders/swiglu_backward.wgsl"),
    ),
    // a pipeline hop between an f16 device and an f32 one (forward.rs)
    ("convert", include_str!("../../shaders/convert.wgsl")),
    // weights held in textures for decoding (weights.rs)
    (
        "weights_to_texture",
        include_str!("../../shaders/weights_to_texture.wgsl"),
    ),
    // the adapter's read limits (probe.rs)
    (
        "read_buffer",
        include_str!("../../shaders/read_buffer.wgsl"),
    ),
    (
        "read_texture",
        include_str!("../../shaders/read_texture.wgsl"),
    ),
];

/// Shaders that need subgroup operations with a subgroup size of 8.
pub const SUBGROUP_SHADERS: &[&str] = &[
    "matmul_forward_subgroup",
    "matmul_backward_input_subgroup",
    "matmul_backward_weight_subgroup",
    "attention_forward_subgroup",
    "attention_backward_subgroup",
];

/// Shaders compiled without zeroing their workgroup memory first (WebGPU's
/// default), because they write every workgroup variable before reading it.
/// On GL, wgpu zeroes workgroup memory with shader code that for `sample`'s
/// large arrays took Mesa's llvmpipe ~90 s to compile (3 s without).
pub const NO_WORKGROUP_ZEROING: &[&str] = &["sample"];

/// What a matmul kernel computes: the forward product `out = inp @ W + b`,
/// or one of its two gradients, `dinp += dout @ W^T` and `dW += inp^T @ dout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulOp {
    Forward,
    BackwardInput,
    BackwardWeight,
}

/// The matmul kernels, by how they block the work; each exists for the
/// forward and, except Rows4, for both gradients ([`MatmulVariant::shader_of`]).
/// Vec4 and Subgroup8 need C, OC (and the strided form's row length and
/// column offset) to be multiples of 4; Subgroup8 also needs a device with
/// 8-wide subgroups ([`Gpu::supports_subgroup8`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// `matmul_forward`: any shape, one invocation per 4x4 output block.
    General,
    /// `matmul_forward_vec4`: vec4 loads, one invocation per 8x16 block.
    Vec4,
    /// `matmul_forward_subgroup`: subgroup broadcasts, one invocation per 32x4 block.
    Subgroup8,
    /// `matmul_forward_rows4`: few rows (decoding), one invocation per
    /// 4-row x 4-column block, every weight loaded once per 4 rows.
    Rows4,
}

impl MatmulVariant {
    pub const ALL: [MatmulVariant; 4] = [
        MatmulVariant::General,
        MatmulVariant::Vec4,
        MatmulVariant::Subgroup8,
        MatmulVariant::Rows4,
    ];

    /// Rows up to which [`matmul_forward`] runs Rows4 on aligned shapes.
    pub const FEW_ROWS: usize = 4;

    /// Its forward kernel's name in [`SHADERS`] (and a [`Dispatch`]'s `name`).
    pub fn shader(self) -> &'static str {
        match self {
            MatmulVariant::General => "matmul_forward",
            MatmulVariant::Vec4 => "matmul_forward_vec4",
            MatmulVariant::Subgroup8 => "matmul_forward_subgroup",
            MatmulVariant::Rows4 => "matmul_forward_rows4",
        }
    }

    /// Its kernel for `op`, `None` where it has none (Rows4 has no gradients).
    pub fn shader_of(self, op: MatmulOp) -> Option<&'static str> {
        use MatmulVariant as V;
        Some(match (op, self) {
            (MatmulOp::Forward, _) => self.shader(),
            (_, V::Rows4) => return None,
            (MatmulOp::BackwardInput, V::General) => "matmul_backward_input",
            (MatmulOp::BackwardInput, V::Vec4) => "matmul_backward_input_vec4",
            (MatmulOp::BackwardInput, V::Subgroup8) => "matmul_backward_input_subgroup",
            (MatmulOp::BackwardWeight, V::General) => "matmul_backward_weight",
            (MatmulOp::BackwardWeight, V::Vec4) => "matmul_backward_weight_vec4",
            (MatmulOp::BackwardWeight, V::Subgroup8) => "matmul_backward_weight_subgroup",
        })
    }

    /// Whether the variant needs shapes whose widths are multiples of 4.
    pub fn needs_aligned(self) -> bool {
        self != MatmulVariant::General
    }
}

impl std::fmt::Display for MatmulVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.shader())
    }
}

/// The compiled compute pipelines of one device, indexed like [`SHADERS`]
/// (`None` for a subgroup shader on a device without 8-wide subgroups), and
/// the matmul variant chosen for aligned shapes on it.
pub struct Kernels {
    pipelines: Vec<Option<wgpu::ComputePipeline>>,
    /// The f16 variants ([`F16_SHADERS`]), compiled on first use: a device
    /// that never stores f16 compiles none.
    f16: Mutex<std::collections::HashMap<(&'static str, Elems), wgpu::ComputePipeline>>,
    aligned_matmul: MatmulVariant,
}

impl Kernels {
    /// The kernels of `gpu`, compiled on the first call for that device and
    /// shared by every later one (kept in [`Gpu::cached`]).
    pub fn of(gpu: &Gpu) -> Arc<Kernels> {
        gpu.cached(Kernels::compile)
    }

    /// Compile every shader `gpu` can run. The aligned matmul variant is
    /// decided here, once, from the adapter's features.
    fn compile(gpu: &Gpu) -> Kernels {
        let subgroup8 = gpu.supports_subgroup8();
        let pipelines = SHADERS
            .iter()
            .map(|(name, _)| {
                if !subgroup8 && SUBGROUP_SHADERS.contains(name) {
                    return None;
                }
                Some(Kernels::compile_one(gpu, name, Elems::F32))
            })
            .collect();
        Kernels {
            pipelines,
            f16: Default::default(),
            aligned_matmul: if subgroup8 {
                MatmulVariant::Subgroup8
            } else {
                MatmulVariant::Vec4
            },
        }
    }

    fn compile_one(gpu: &Gpu, name: &str, elems: Elems) -> wgpu::ComputePipeline {
        let src = shader_source(name, elems).expect("a shader of the table");
        let module = gpu
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(name),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        gpu.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(name),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    zero_initialize_workgroup_memory: !NO_WORKGROUP_ZEROING.contains(&name),
                    ..Default::default()
                },
                cache: None,
            })
    }

    /// The matmul variant [`matmul_forward`] and both matmul gradients run for
    /// shapes whose widths are multiples of 4: Subgroup8 on devices with
    /// 8-wide subgroups, else Vec4. (Other shapes run [`MatmulVariant::General`].)
    pub fn aligned_matmul(&self) -> MatmulVariant {
        self.aligned_matmul
    }

    /// Whether this device can run `variant` (every device runs General and Vec4).
    pub fn supports(&self, variant: MatmulVariant) -> bool {
        self.find(variant.shader()).is_some()
    }

    /// The matmul variants this device can run, in [`MatmulVariant::ALL`] order.
    pub fn matmul_variants(&self) -> Vec<MatmulVariant> {
        MatmulVariant::ALL
            .into_iter()
            .filter(|v| self.supports(*v))
            .collect()
    }

    fn find(&self, name: &str) -> Option<&wgpu::ComputePipeline> {
        SHADERS
            .iter()
            .position(|(n, _)| *n == name)
            .and_then(|i| self.pipelines[i].as_ref())
    }

    /// A compiled pipeline for `elems`. Only the subgroup shaders can be
    /// missing, and the public API checks [`Kernels::supports`] before
    /// asking for one; f16 variants exist for [`F16_SHADERS`] on devices with
    /// `shader-f16`, which the pipeline layer checks before it stores f16.
    fn get(&self, gpu: &Gpu, name: &'static str, elems: Elems) -> wgpu::ComputePipeline {
        let f32 = self
            .find(name)
            .unwrap_or_else(|| panic!("bug: shader {name} not compiled for this device"));
        if elems == Elems::F32 {
            return f32.clone();
        }
        assert!(
            F16_SHADERS.contains(&name) && gpu.shader_f16(),
            "bug: shader {name} has no {elems:?} variant on {}",
            gpu.label
        );
        let mut f16 = self.f16.lock().unwrap_or_else(|e| e.into_inner());
        f16.entry((name, elems))
            .or_insert_with(|| Kernels::compile_one(gpu, name, elems))
            .clone()
    }
}

/// One kernel launch with its buffers bound: encode it as often as needed.
///
/// Its parameters (shapes, offsets) live in a small buffer owned by the
/// dispatch, bound as a read-only *storage* buffer after the op's own
/// buffers, not as a uniform buffer: Mesa's lavapipe (22.x) inlines uniform
/// values into a shader whose loops or branches read them and, when that
/// halves the shader, compiles the inlined copy with LLVM again at *every*
/// bind — 10-30 ms per dispatch. Parameters it cannot see as uniforms are
/// never inlined (measured: `layernorm_backward` at N = 32, C = 256 took
/// 14-30 ms per dispatch with a uniform, 0.07-0.2 ms without; README,
/// "Kernel speed"). They are written when the dispatch is built and can be
/// rewritten between submits with [`Dispatch::update_params`], e.g. the
/// embedding's position offset per decode step, without rebuilding anything.
pub struct Dispatch {
    pub name: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    params_buf: wgpu::Buffer,
    /// The parameters last written, as bytes of `params_type`.
    params: Mutex<Vec<u8>>,
    params_type: (TypeId, &'static str),
}

impl Dispatch {
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }

    /// The parameters last written (at build time or by [`Dispatch::update_params`]).
    /// `P` must be the parameter type of this dispatch's op (e.g.
    /// [`EmbeddingParams`]); another type is an error naming both.
    pub fn params<P: bytemuck::Pod>(&self) -> Result<P> {
        self.check_type::<P>()?;
        let bytes = self.params.lock().unwrap_or_else(|e| e.into_inner());
        Ok(bytemuck::pod_read_unaligned(
            &bytes[..std::mem::size_of::<P>()],
        ))
    }

    /// Change this dispatch's parameters with `edit` and queue the write of
    /// its parameter buffer (`queue.write_buffer`): it takes effect for work
    /// submitted to `queue` after this call, not for work already submitted.
    /// Call it before the submit whose command buffer encodes this dispatch;
    /// when called twice before that submit, the last value wins. `queue`
    /// must belong to the device the dispatch was built on. `P` must be the
    /// op's parameter type (checked, an error otherwise).
    pub fn update_params<P: bytemuck::Pod>(
        &self,
        queue: &wgpu::Queue,
        edit: impl FnOnce(&mut P),
    ) -> Result<()> {
        self.check_type::<P>()?;
        let mut bytes = self.params.lock().unwrap_or_else(|e| e.into_inner());
        let size = std::mem::size_of::<P>();
        let mut p: P = bytemuck::pod_read_unaligned(&bytes[..size]);
        edit(&mut p);
        bytes[..size].copy_from_slice(bytemuck::bytes_of(&p));
        queue.write_buffer(&self.params_buf, 0, &bytes);
        Ok(())
    }

    /// Replace this dispatch's parameters: [`Dispatch::update_params`] with a whole value.
    pub fn set_params<P: bytemuck::Pod>(&self, queue: &wgpu::Queue, params: &P) -> Result<()> {
        self.update_params(queue, |p: &mut P| *p = *params)
    }

    fn check_type<P: bytemuck::Pod>(&self) -> Result<()> {
        if TypeId::of::<P>() != self.params_type.0 {
            return Err(Error::Input(format!(
                "dispatch `{}` takes parameters of type {}, not {}",
                self.name,
                self.params_type.1,
                std::any::type_name::<P>()
            )));
        }
        Ok(())
    }
}

/// Build a [`Dispatch`]: `buffers` bound at 0.., then `params` in a
/// read-only storage buffer (see [`Dispatch`] for why not a uniform).
fn dispatch<'a, P: bytemuck::Pod>(
    on: impl Into<On<'a>>,
    name: &'static str,
    buffers: &[&wgpu::Buffer],
    params: &P,
    groups: [u32; 3],
) -> Dispatch {
    let resources = buffers.iter().map(|b| b.as_entire_binding()).collect();
    dispatch_resources(on, name, resources, params, groups)
}

/// [`dispatch`] with any resources (a texture view among the buffers)
/// bound at 0.., then `params`.
fn dispatch_resources<'a, P: bytemuck::Pod>(
    on: impl Into<On<'a>>,
    name: &'static str,
    resources: Vec<wgpu::BindingResource<'_>>,
    params: &P,
    groups: [u32; 3],
) -> Dispatch {
    let On { gpu, elems } = on.into();
    let pipeline = Kernels::of(gpu).get(gpu, name, elems);
    // Parameter blocks are padded to 16 bytes, the strictest backends' rule.
    let mut contents = bytemuck::bytes_of(params).to_vec();
    contents.resize(contents.len().next_multiple_of(16), 0);
    let params_buf = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(name),
            contents: &contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        });
    let count = resources.len() as u32;
    let mut entries: Vec<wgpu::BindGroupEntry> = resources
        .into_iter()
        .enumerate()
        .map(|(i, resource)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource,
        })
        .collect();
    entries.push(wgpu::BindGroupEntry {
        binding: count,
        resource: params_buf.as_entire_binding(),
    });
    let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(name),
        layout: &pipeline.get_bind_group_layout(0),
        entries: &entries,
    });
    Dispatch {
        name,
        pipeline,
        bind_group,
        groups,
        params_buf,
        params: Mutex::new(contents),
        params_type: (TypeId::of::<P>(), std::any::type_name::<P>()),
    }
}

/// The parameters of the elementwise shaders (GELU and the residual add,
/// forward and backward).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct ElementwiseParams {
    len: u32,
    stride: u32,
}

/// The matmul shaders' parameters (forward and backward).
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

/// Workgroup size of the 1-D kernels.
const WG: u32 = 64;
/// Most workgroups one dispatch dimension may have (WebGPU's default limit).
const MAX_GROUPS: u32 = 65535;

/// Grid for `threads` invocations of a 1-D kernel of workgroup size [`WG`]:
/// returns the workgroup counts and the `stride` (invocations per grid row)
/// the kernel uses to recover its linear index as `gid.y * stride + gid.x`.
fn grid_1d(threads: usize) -> ([u32; 3], u32) {
    let groups = threads.div_ceil(WG as usize).max(1) as u32;
    let x = groups.min(MAX_GROUPS);
    let y = groups.div_ceil(x);
    ([x, y, 1], x * WG)
}

/// Encode `dispatches` into one compute pass, submit and wait.
pub fn run(gpu: &Gpu, dispatches: &[&Dispatch]) -> Result<()> {
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        for d in dispatches {
            d.encode(&mut pass);
        }
    }
    gpu.queue.submit([enc.finish()]);
    gpu.wait()
}
