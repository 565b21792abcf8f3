//! Kernels: every WGSL shader, embedded in one table, compiled once per
//! device, and one Rust dispatch function per op (in [`ops`]).
//!
//! A dispatch function builds a ready-to-encode [`Dispatch`] (pipeline, bind
//! group, parameter buffer, workgroup counts) for fixed buffers and shapes.
//! Building happens once per run; encoding a `Dispatch` into a compute pass is
//! then cheap and allocation-free, which is what the pipeline executor repeats
//! for every microbatch. Each op has a CPU reference twin of the same name in
//! [`crate::cpu`].

pub mod ops;

pub use ops::*;

use wgpu::util::DeviceExt;

use crate::device::Gpu;
use crate::error::Result;

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
        "attention_forward",
        include_str!("../../shaders/attention_forward.wgsl"),
    ),
    (
        "gelu_forward",
        include_str!("../../shaders/gelu_forward.wgsl"),
    ),
    (
        "residual_forward",
        include_str!("../../shaders/residual_forward.wgsl"),
    ),
];

/// Shaders that need subgroup operations with a subgroup size of 8.
pub const SUBGROUP_SHADERS: &[&str] = &["matmul_forward_subgroup"];

/// The compiled compute pipelines of one device, indexed like [`SHADERS`]
/// (`None` for a subgroup shader on a device without 8-wide subgroups).
pub struct Kernels {
    pipelines: Vec<Option<wgpu::ComputePipeline>>,
}

impl Kernels {
    pub fn new(device: &wgpu::Device, subgroups: bool) -> Kernels {
        let pipelines = SHADERS
            .iter()
            .map(|(name, src)| {
                if !subgroups && SUBGROUP_SHADERS.contains(name) {
                    return None;
                }
                let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                    label: Some(name),
                    source: wgpu::ShaderSource::Wgsl((*src).into()),
                });
                Some(
                    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(name),
                        layout: None,
                        module: &module,
                        entry_point: Some("main"),
                        compilation_options: Default::default(),
                        cache: None,
                    }),
                )
            })
            .collect();
        Kernels { pipelines }
    }

    fn get(&self, name: &str) -> &wgpu::ComputePipeline {
        SHADERS
            .iter()
            .position(|(n, _)| *n == name)
            .and_then(|i| self.pipelines[i].as_ref())
            .unwrap_or_else(|| panic!("bug: shader {name} not compiled for this device"))
    }
}

/// One kernel launch with its buffers bound: encode it as often as needed.
pub struct Dispatch {
    pub name: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
}

impl Dispatch {
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups[0], self.groups[1], self.groups[2]);
    }
}

/// Build a [`Dispatch`]: `buffers` bound at 0.., then `params` as a uniform.
fn dispatch<P: bytemuck::Pod>(
    gpu: &Gpu,
    name: &'static str,
    buffers: &[&wgpu::Buffer],
    params: &P,
    groups: [u32; 3],
) -> Dispatch {
    let pipeline = gpu.kernels.get(name).clone();
    // Uniform buffers are padded to 16 bytes, the strictest backends' rule.
    let mut contents = bytemuck::bytes_of(params).to_vec();
    contents.resize(contents.len().next_multiple_of(16), 0);
    let uniform = gpu
        .device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(name),
            contents: &contents,
            usage: wgpu::BufferUsages::UNIFORM,
        });
    let mut entries: Vec<wgpu::BindGroupEntry> = buffers
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: b.as_entire_binding(),
        })
        .collect();
    entries.push(wgpu::BindGroupEntry {
        binding: buffers.len() as u32,
        resource: uniform.as_entire_binding(),
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

// ---------------------------------------------------------------------------
// Buffers

/// A storage buffer holding `data` (an empty slice gets one zero so it can be bound).
pub fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> wgpu::Buffer {
    upload_pod(gpu, label, data)
}

/// A storage buffer of token ids.
pub fn upload_u32(gpu: &Gpu, label: &str, data: &[u32]) -> wgpu::Buffer {
    upload_pod(gpu, label, data)
}

fn upload_pod<T: bytemuck::Pod>(gpu: &Gpu, label: &str, data: &[T]) -> wgpu::Buffer {
    let one = [T::zeroed()];
    let data = if data.is_empty() { &one[..] } else { data };
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
        })
}

/// A zero-filled storage buffer of `len` f32 (at least one).
pub fn zeros(gpu: &Gpu, label: &str, len: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (len.max(1) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

/// A buffer the host can map for reading, `bytes` long.
pub fn staging(gpu: &Gpu, label: &str, bytes: u64) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Map `staging` (already filled and submitted) and copy out `len` values.
pub fn read_mapped<T: bytemuck::Pod>(
    gpu: &Gpu,
    staging: &wgpu::Buffer,
    len: usize,
) -> Result<Vec<T>> {
    let bytes = (len * std::mem::size_of::<T>()) as u64;
    let slice = staging.slice(..bytes.max(4));
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    gpu.wait()?;
    rx.recv()
        .map_err(|_| gpu.err("buffer map callback never ran"))?
        .map_err(|e| gpu.err(format!("buffer map failed: {e}")))?;
    let out = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| gpu.err(format!("buffer map failed: {e}")))?;
        bytemuck::pod_collect_to_vec::<u8, T>(&view[..bytes as usize])
    };
    staging.unmap();
    Ok(out)
}

/// Copy `len` f32s out of a storage buffer (one submit + wait; for tests and
/// one-off reads, not for the pipeline's hot path).
pub fn download(gpu: &Gpu, buf: &wgpu::Buffer, len: usize) -> Result<Vec<f32>> {
    let st = staging(gpu, "download", (len * 4) as u64);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buf, 0, &st, 0, (len * 4) as u64);
    gpu.queue.submit([enc.finish()]);
    read_mapped(gpu, &st, len)
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
