//! Buffers on one [`Gpu`]: storage buffers for weights and activations,
//! host-mappable staging buffers, and the reads back to the host.
//!
//! Storage buffers are created with `STORAGE | COPY_DST | COPY_SRC`, so that
//! any of them can be bound by a kernel, written from the host
//! (`queue.write_buffer`) and copied out to a staging buffer.

use wgpu::util::DeviceExt;

use super::{Dtype, Gpu};
use crate::error::Result;

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_DST)
    .union(wgpu::BufferUsages::COPY_SRC);

/// A storage buffer holding `data` (an empty slice gets one zero so it can be bound).
pub fn upload(gpu: &Gpu, label: &str, data: &[f32]) -> wgpu::Buffer {
    upload_pod(gpu, label, data)
}

/// A storage buffer holding any plain-old-data slice (token ids as `u32`,
/// parameter tables, …); an empty slice gets one zeroed element.
pub fn upload_pod<T: bytemuck::Pod>(gpu: &Gpu, label: &str, data: &[T]) -> wgpu::Buffer {
    let one = [T::zeroed()];
    let data = if data.is_empty() { &one[..] } else { data };
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: bytemuck::cast_slice(data),
            usage: STORAGE,
        })
}

/// A zero-filled storage buffer of `len` f32 (at least one).
pub fn zeros(gpu: &Gpu, label: &str, len: usize) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (len.max(1) * 4) as u64,
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

/// A storage buffer holding `data` stored as `dtype` (f16: rounded to
/// nearest); an empty slice gets one zero.
pub fn upload_as(gpu: &Gpu, label: &str, data: &[f32], dtype: Dtype) -> wgpu::Buffer {
    let bytes = dtype.encode(if data.is_empty() { &[0.0] } else { data });
    gpu.device
        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(label),
            contents: &bytes,
            usage: STORAGE,
        })
}

/// A zero-filled storage buffer of `len` elements of `dtype` (at least one).
pub fn zeros_as(gpu: &Gpu, label: &str, len: usize, dtype: Dtype) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: dtype.bytes(len.max(1)),
        usage: STORAGE,
        mapped_at_creation: false,
    })
}

/// A buffer the host can map for reading, `bytes` long (at least 4).
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

/// Copy `len` elements of `dtype` out of a storage buffer, as f32 (exact).
pub fn download_as(gpu: &Gpu, buf: &wgpu::Buffer, len: usize, dtype: Dtype) -> Result<Vec<f32>> {
    let bytes = dtype.bytes(len);
    let st = staging(gpu, "download", bytes);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(buf, 0, &st, 0, bytes);
    gpu.queue.submit([enc.finish()]);
    let raw: Vec<u8> = read_mapped(gpu, &st, bytes as usize)?;
    Ok(dtype.decode(&raw, len))
}
