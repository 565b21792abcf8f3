//! What this adapter can read, measured: streaming reads from a storage
//! buffer and from an rgba32float texture ([`read_rates`], the limits the
//! bench sets every bandwidth-bound kernel beside), and the per-adapter
//! choice of where decoding's weights are read from ([`decode_weights`]):
//! the few-row matmul timed over the same weight in a buffer and in a
//! texture, once per device, the faster kept. On most GPUs both read at full
//! speed and buffers stay; on llvmpipe a storage load is emulated lane by
//! lane and textures read ~10x faster (../shared/wgpu-notes.md).

use std::sync::Arc;
use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use serde::Serialize;

use super::weights::WeightTexture;
use super::{dispatch, dispatch_resources, grid_1d, Dispatch};
use crate::device::{upload, zeros, Gpu};
use crate::error::Result;

/// Where decoding's few-row matmuls read their weights from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightStorage {
    /// The storage buffers every other kernel reads.
    Buffer,
    /// A copy in an rgba32float texture per weight ([`super::weights`]).
    Texture,
}

/// This adapter's choice for decoding, and the measurement behind it.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeWeights {
    pub storage: WeightStorage,
    /// The one-row matmul over a (768, 2304) weight (GPT-2's QKV), weight
    /// bytes per second with the weight in a buffer and in a texture (0 when
    /// the adapter cannot hold it in a texture).
    pub buffer_gbps: f64,
    pub texture_gbps: f64,
    /// Set by `WGPIPE_DECODE_WEIGHTS=buffer|texture`, not measured.
    pub forced: bool,
}

/// The probe's GEMV shape: GPT-2's QKV projection.
const PROBE_C: usize = 768;
const PROBE_OC: usize = 2304;

/// The choice for `gpu`, measured on the first call and kept for the
/// device's life (~0.1 s on lavapipe). `WGPIPE_DECODE_WEIGHTS=buffer` or
/// `texture` forces one (rates still measured, for the report).
pub fn decode_weights(gpu: &Gpu) -> Arc<DecodeWeights> {
    gpu.cached(|gpu| {
        let forced = match std::env::var("WGPIPE_DECODE_WEIGHTS").as_deref() {
            Ok("buffer") => Some(WeightStorage::Buffer),
            Ok("texture") => Some(WeightStorage::Texture),
            _ => None,
        };
        let (buffer_gbps, texture_gbps) = match gemv_rates(gpu) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("decode weight probe on {} failed: {e}", gpu.label);
                (0.0, 0.0)
            }
        };
        let measured = match texture_gbps > buffer_gbps {
            true => WeightStorage::Texture,
            false => WeightStorage::Buffer,
        };
        DecodeWeights {
            storage: forced.unwrap_or(measured),
            buffer_gbps,
            texture_gbps,
            forced: forced.is_some(),
        }
    })
}

/// GB/s of weight read by a one-row matmul with the weight in a buffer and
/// in a texture (best of 3 after a warm-up).
fn gemv_rates(gpu: &Gpu) -> Result<(f64, f64)> {
    let (c, oc) = (PROBE_C, PROBE_OC);
    let w: Vec<f32> = (0..c * oc).map(|i| (i % 7) as f32 * 0.01).collect();
    let weight = upload(gpu, "probe weight", &w);
    let inp = upload(gpu, "probe input", &vec![1.0; c]);
    let bias = zeros(gpu, "probe bias", oc);
    let out = zeros(gpu, "probe out", oc);
    let bytes = (c * oc * 4) as f64;
    let buf = super::matmul_forward_with(
        gpu,
        super::MatmulVariant::Rows4,
        &out,
        &inp,
        &weight,
        &bias,
        1,
        c,
        oc,
    )?;
    let buffer = bytes / best_seconds(gpu, &buf, 3)? / 1e9;
    let texture = match WeightTexture::from_buffer(gpu, &weight, c, oc, crate::device::Dtype::F32) {
        Ok(tex) => {
            let d = super::matmul_forward_texture(gpu, &out, &inp, &tex, &bias, 1, c, oc, oc, 0)?;
            bytes / best_seconds(gpu, &d, 3)? / 1e9
        }
        Err(_) => 0.0,
    };
    Ok((buffer, texture))
}

/// Seconds of one run of `d`: host time of a submit of K runs of it in one
/// compute pass, divided by K (K grown until a submit takes ~20 ms, so the
/// ~0.1 ms a submit and wait cost is amortised), the best of `reps` after a
/// warm-up. Not GPU timestamps: llvmpipe writes those from its rasterizer's
/// scene, not in order with compute dispatches, so they do not bracket a
/// single dispatch (they do bracket a whole submission).
pub fn best_seconds(gpu: &Gpu, d: &Dispatch, reps: usize) -> Result<f64> {
    let run = |k: usize| -> Result<f64> {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for _ in 0..k {
                d.encode(&mut pass);
            }
        }
        let start = Instant::now();
        gpu.queue.submit([enc.finish()]);
        gpu.wait()?;
        Ok(start.elapsed().as_secs_f64())
    };
    let one = run(1)?; // warm-up, and the size of the batch
    let k = ((0.02 / one.max(1e-6)).ceil() as usize).clamp(1, 64);
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        best = best.min(run(k)? / k as f64);
    }
    Ok(best)
}

/// One streaming-read measurement: how the kernel reads, and GB/s.
#[derive(Clone, Debug, Serialize)]
pub struct ReadRate {
    pub how: &'static str,
    pub gbps: f64,
}

/// Streaming reads of `mib` MiB from a storage buffer and from an
/// rgba32float texture, each in a few load shapes ([`best_seconds`], best
/// of `reps`): (buffer rates, texture rates). Texture rates are empty where
/// the texture cannot be made (it is 2048 texels wide).
pub fn read_rates(gpu: &Gpu, mib: usize, reps: usize) -> Result<(Vec<ReadRate>, Vec<ReadRate>)> {
    let vec4s = mib * (1 << 20) / 16;
    // Real values, written from the host: memory never written might be
    // the kernel's shared zero page, which reads from cache.
    let values: Vec<f32> = (0..vec4s * 4).map(|i| (i % 251) as f32).collect();
    let data = upload(gpu, "read probe data", &values);
    let bytes = (vec4s * 16) as f64;
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        per: u32,
        shape: u32,
        threads: u32,
        stride: u32,
        width: u32,
    }
    let mut buffer = Vec::new();
    for (how, shape, per) in [
        ("buffer, a contiguous chunk per invocation", 0, 256),
        (
            "buffer, consecutive invocations on consecutive vec4s",
            1,
            256,
        ),
        ("buffer, a contiguous chunk per invocation (64)", 0, 64),
    ] {
        let threads = vec4s / per;
        let out = zeros(gpu, "read probe out", threads * 4);
        let (groups, stride) = grid_1d(threads);
        let p = P {
            per: per as u32,
            shape,
            threads: threads as u32,
            stride,
            width: 0,
        };
        let d = dispatch(gpu, "read_buffer", &[&out, &data], &p, groups);
        buffer.push(ReadRate {
            how,
            gbps: bytes / best_seconds(gpu, &d, reps)? / 1e9,
        });
    }
    let mut texture = Vec::new();
    let width = 2048usize;
    let height = vec4s / width;
    let max = gpu.limits.max_texture_dimension_2d as usize;
    if width <= max && height <= max && height > 0 {
        let tex = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("read probe texture"),
            size: wgpu::Extent3d {
                width: width as u32,
                height: height as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        gpu.queue.write_texture(
            tex.as_image_copy(),
            bytemuck::cast_slice(&values),
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some((width * 16) as u32),
                rows_per_image: None,
            },
            tex.size(),
        );
        let view = tex.create_view(&Default::default());
        for (how, shape, per) in [
            ("texture, lanes along a row, each down a column", 0, 64),
            (
                "texture, lanes along a row, each down a column (256)",
                0,
                256,
            ),
            ("texture, a run along a row per invocation", 1, 64),
        ] {
            let threads = width * height / per;
            let out = zeros(gpu, "read probe out", threads * 4);
            let (groups, stride) = grid_1d(threads);
            let p = P {
                per: per as u32,
                shape,
                threads: threads as u32,
                stride,
                width: width as u32,
            };
            let d = dispatch_resources(
                gpu,
                "read_texture",
                vec![
                    out.as_entire_binding(),
                    wgpu::BindingResource::TextureView(&view),
                ],
                &p,
                groups,
            );
            texture.push(ReadRate {
                how,
                gbps: bytes / best_seconds(gpu, &d, reps)? / 1e9,
            });
        }
    }
    Ok((buffer, texture))
}
