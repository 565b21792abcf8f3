//! Weights held in textures, for the few-row matmuls of decoding on
//! adapters whose textures read faster than their storage buffers
//! ([`super::probe`] decides per adapter).
//!
//! A stage registers the weight buffers its matmuls read
//! ([`WeightTextures::register`], held by the stage's upload, so the textures
//! live as long as its weights). Nothing is copied then: the first time a
//! few-row matmul is built over one of them on an adapter that reads textures
//! faster ([`super::matmul_forward`] with N <= 4), the buffer is copied on
//! the device into a [`WeightTexture`] (`weights_to_texture.wgsl`), which
//! every later program over the same weights reuses. Callers keep passing
//! the buffer; which holding a kernel reads is the dispatch function's
//! business.
//!
//! Layout: a texel holds [`WeightTexture::cols`] consecutive columns of one
//! row — 4 f32 (`rgba32float`), or for an f16 weight 8 halves packed two to
//! a u32 (`rgba32uint`): llvmpipe fetches about as many texels a second
//! whatever they hold (measured: 1.6 G f32 weights/s from rgba32float,
//! 2.4 G halves/s from packed rgba32uint, 1.0 G from rgba16float, which
//! carries only 4). Texel (x, y) = weight[k, cols j ..] at x = j % tw and
//! y = (j / tw) C + k: rows of OC / cols texels cut into blocks of `tw`
//! texels (at most the adapter's `max_texture_dimension_2d`) stacked below
//! each other, so any (C, OC) with C ceil(OC / cols / tw) rows fits.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytemuck::{Pod, Zeroable};

use super::{dispatch_resources, grid_1d, run};
use crate::device::{Dtype, Gpu};
use crate::error::{Error, Result};

/// One weight (C, OC) in an rgba32float texture (rgba32uint of packed
/// halves for an f16 weight), in the layout above.
pub struct WeightTexture {
    _texture: wgpu::Texture,
    pub(super) view: wgpu::TextureView,
    /// Rows (input channels) C.
    pub c: usize,
    /// Columns (output channels) OC.
    pub oc: usize,
    /// Texels per texture row: the OC / cols texels of a weight row are cut
    /// into blocks of this width, stacked.
    pub tw: usize,
    /// The weight's element type, and the texture's (f16: rgba16float).
    pub dtype: Dtype,
}

impl WeightTexture {
    /// Copy `weight` (C, OC), a storage buffer on `gpu`, into a new texture
    /// whose rows are at most [`WeightTexture::ROW_TEXELS`] texels (and the
    /// adapter's limit) wide; submits and waits.
    /// `dtype` is the buffer's element type, and the texture's.
    pub fn from_buffer(
        gpu: &Gpu,
        weight: &wgpu::Buffer,
        c: usize,
        oc: usize,
        dtype: Dtype,
    ) -> Result<Self> {
        let max = gpu.limits.max_texture_dimension_2d as usize;
        let tw = (oc.div_ceil(WeightTexture::cols(dtype)))
            .min(max)
            .min(WeightTexture::ROW_TEXELS);
        WeightTexture::from_buffer_tiled(gpu, weight, c, oc, tw, dtype)
    }

    /// The widest texture row [`WeightTexture::from_buffer`] makes. Each lane
    /// of the GEMV walks down a column, so a row is its stride: GPT-2's LM
    /// head chunk (OC/4 = 10922 texels) read at 1.9 GB/s in 175 KiB rows and
    /// 2.7-2.9 GB/s cut into rows of 1024-2048 texels (lavapipe, one thread);
    /// the blocks' matrices (at most 768 texels wide) did not care.
    pub const ROW_TEXELS: usize = 2048;

    /// Weight columns one texel holds: 4 f32, or 8 packed halves.
    pub fn cols(dtype: Dtype) -> usize {
        match dtype {
            Dtype::F32 => 4,
            Dtype::F16 => 8,
        }
    }

    /// [`WeightTexture::from_buffer`] with rows of `tw` texels (to test the
    /// tiling on shapes that would not need it). An error naming the shape
    /// when it cannot be held: OC not a multiple of 4, or more rows or a
    /// wider row than the adapter's `max_texture_dimension_2d`.
    pub fn from_buffer_tiled(
        gpu: &Gpu,
        weight: &wgpu::Buffer,
        c: usize,
        oc: usize,
        tw: usize,
        dtype: Dtype,
    ) -> Result<Self> {
        let max = gpu.limits.max_texture_dimension_2d as usize;
        let octx = oc.div_ceil(WeightTexture::cols(dtype));
        let height = c * octx.div_ceil(tw.max(1));
        if !oc.is_multiple_of(4) || c == 0 || tw == 0 || tw > max || height > max {
            return Err(Error::Input(format!(
                "a ({c}, {oc}) weight in rows of {tw} texels does not fit a texture of at \
                 most {max} x {max} on {}",
                gpu.label
            )));
        }
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("weight texture"),
            size: wgpu::Extent3d {
                width: tw as u32,
                height: height as u32,
                depth_or_array_layers: 1,
            },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: match dtype {
                Dtype::F32 => wgpu::TextureFormat::Rgba32Float,
                Dtype::F16 => wgpu::TextureFormat::Rgba32Uint,
            },
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::STORAGE_BINDING,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        #[repr(C)]
        #[derive(Clone, Copy, Pod, Zeroable)]
        struct P {
            c: u32,
            oc: u32,
            tw: u32,
            stride: u32,
        }
        let (groups, stride) = grid_1d(c * octx);
        let p = P {
            c: c as u32,
            oc: oc as u32,
            tw: tw as u32,
            stride,
        };
        let copy = dispatch_resources(
            (gpu, dtype),
            "weights_to_texture",
            vec![
                wgpu::BindingResource::TextureView(&view),
                weight.as_entire_binding(),
            ],
            &p,
            groups,
        );
        run(gpu, &[&copy])?;
        Ok(WeightTexture {
            _texture: texture,
            view,
            c,
            oc,
            tw,
            dtype,
        })
    }

    /// Bytes the texture holds (padding of the last block included).
    pub fn bytes(&self) -> u64 {
        let texels_per_row = self.oc.div_ceil(WeightTexture::cols(self.dtype));
        (self.tw * 16 * self.c * texels_per_row.div_ceil(self.tw)) as u64
    }
}

/// A slot per registered weight buffer: once a few-row matmul has needed
/// it, its texture (`None` when it cannot be held in one).
type Slot = OnceLock<Option<Arc<WeightTexture>>>;

/// The weights of one stage that decoding may read from textures, each made
/// on first need (see the module doc). Held by whoever holds the weights;
/// when the last holder drops it, its textures go too.
pub struct WeightTextures {
    /// A stage's few dozen weights: found by a scan.
    slots: Vec<(wgpu::Buffer, Slot)>,
    /// Their element type.
    dtype: Dtype,
}

/// Every live [`WeightTextures`] of one Gpu.
#[derive(Default)]
struct Registry(Mutex<Vec<Weak<WeightTextures>>>);

impl WeightTextures {
    /// Register `weights`, the buffers of the matrices some matmul reads as
    /// its weight, holding `dtype`, on `gpu`. Copies nothing.
    pub fn register<'a>(
        gpu: &Gpu,
        weights: impl IntoIterator<Item = &'a wgpu::Buffer>,
        dtype: Dtype,
    ) -> Arc<WeightTextures> {
        let slots = weights
            .into_iter()
            .map(|b| (b.clone(), OnceLock::new()))
            .collect();
        let set = Arc::new(WeightTextures { slots, dtype });
        let registry = gpu.cached(|_| Registry::default());
        let mut live = registry.0.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&set));
        set
    }

    /// Bytes of the textures made so far.
    pub fn bytes(&self) -> u64 {
        self.slots
            .iter()
            .filter_map(|(_, t)| t.get().and_then(|t| t.as_ref()))
            .map(|t| t.bytes())
            .sum()
    }
}

/// The texture of `weight` (C, OC) if a live [`WeightTextures`] on `gpu`
/// registered it (and it holds exactly C x OC elements), made now if this is
/// the first request; `None` when none did, or it cannot be held in a
/// texture here.
pub(super) fn texture_for(
    gpu: &Gpu,
    weight: &wgpu::Buffer,
    c: usize,
    oc: usize,
) -> Option<Arc<WeightTexture>> {
    let registry = gpu.cached(|_| Registry::default());
    let set = {
        let live = registry.0.lock().unwrap_or_else(|e| e.into_inner());
        live.iter()
            .filter_map(Weak::upgrade)
            .find(|s| s.slots.iter().any(|(b, _)| b == weight))?
    };
    if weight.size() != set.dtype.bytes(c * oc) {
        return None;
    }
    let (_, slot) = set.slots.iter().find(|(b, _)| b == weight)?;
    slot.get_or_init(
        || match WeightTexture::from_buffer(gpu, weight, c, oc, set.dtype) {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                log::warn!("{e}: this weight stays in its buffer");
                None
            }
        },
    )
    .clone()
}
