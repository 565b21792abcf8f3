//! The storage type of what a device holds: weights, activations between
//! ops, the KV cache and the activations sent between devices are all f32 or
//! all f16 on one device ([`Dtype`]); kernels accumulate in f32 either way.
//! f16 needs the adapter's `shader-f16` feature ([`Gpu::shader_f16`]).
//!
//! What a run asks for is a [`DtypeChoice`]: `auto` follows the checkpoint,
//! as transformers' `dtype="auto"` does — an f32 file runs in f32, a bf16 or
//! f16 file in f16 on each device whose adapter has `shader-f16` and in f32
//! on the others (the pipeline layer resolves it per device).

use half::f16;

use super::Gpu;
use crate::error::{Error, Result};

/// The element type a device stores tensors in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    F32,
    F16,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 => 2,
        }
    }

    /// Bytes of `len` elements, rounded up to 4 (what a buffer binding needs).
    pub fn bytes(self, len: usize) -> u64 {
        ((len * self.size()).next_multiple_of(4)) as u64
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
        }
    }

    /// `values` as this type's little-endian bytes (f16: rounded to nearest,
    /// what `torch.Tensor.half()` does), padded with zeros to a multiple of 4.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        let mut out = match self {
            Dtype::F32 => bytemuck::cast_slice(values).to_vec(),
            Dtype::F16 => values
                .iter()
                .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                .collect(),
        };
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    /// `len` elements of this type's bytes as f32 (exact: every f16 is an f32).
    pub fn decode(self, bytes: &[u8], len: usize) -> Vec<f32> {
        match self {
            Dtype::F32 => bytemuck::pod_collect_to_vec(&bytes[..len * 4]),
            Dtype::F16 => bytes[..len * 2]
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How one device stores a stage: `dtype` for its weights, activations and
/// KV cache; `hop` for the activations it receives from and sends to its
/// neighbours (f16 only when every device of the pipeline stores f16, so a
/// device of each kind converts on its own side: the f16 one, with
/// `kernels::convert`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Precision {
    pub dtype: Dtype,
    pub hop: Dtype,
}

impl Precision {
    pub const F32: Precision = Precision {
        dtype: Dtype::F32,
        hop: Dtype::F32,
    };
}

impl Default for Precision {
    fn default() -> Precision {
        Precision::F32
    }
}

/// For a report: the storage type of each device and of the hops, then
/// `extra` on the same line, then on lines of their own the reasons a
/// device stores f32 where f16 was wanted.
pub fn describe(precision: &[Precision], extra: &str, notes: &[String]) -> String {
    let hop = precision.first().map_or(Dtype::F32, |p| p.hop);
    let mut s = match precision.iter().all(|p| p.dtype == precision[0].dtype) {
        true => format!(
            "storage: {} on every device, hops {hop}",
            precision.first().map_or(Dtype::F32, |p| p.dtype)
        ),
        false => {
            let each: Vec<String> = (precision.iter().enumerate())
                .map(|(d, p)| format!("device {d} {}", p.dtype))
                .collect();
            format!(
                "storage: {}; hops {hop} (each f16 device converts on its side)",
                each.join(", ")
            )
        }
    };
    s += extra;
    for n in notes {
        s += &format!("\n  {n}");
    }
    s
}

/// The largest finite f16.
pub const F16_MAX: f32 = 65504.0;

/// The first value of `values` that f16 cannot hold (finite, beyond
/// ±65504: it would become inf), with its index.
pub fn beyond_f16(values: &[f32]) -> Option<(usize, f32)> {
    values
        .iter()
        .position(|v| v.is_finite() && v.abs() > F16_MAX)
        .map(|i| (i, values[i]))
}

/// What a run asks for (`--dtype`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DtypeChoice {
    /// Follow the checkpoint: f32 for an f32 file (and the seeded presets),
    /// f16 for a bf16/f16 file on devices with `shader-f16`.
    #[default]
    Auto,
    F32,
    /// f16 on every device; refused where an adapter lacks `shader-f16`.
    F16,
}

impl std::str::FromStr for DtypeChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<DtypeChoice> {
        match s {
            "auto" => Ok(DtypeChoice::Auto),
            "f32" | "float32" => Ok(DtypeChoice::F32),
            "f16" | "float16" | "half" => Ok(DtypeChoice::F16),
            _ => Err(Error::Input(format!(
                "--dtype {s}: expected f32, f16 or auto"
            ))),
        }
    }
}

impl std::fmt::Display for DtypeChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DtypeChoice::Auto => "auto",
            DtypeChoice::F32 => "f32",
            DtypeChoice::F16 => "f16",
        })
    }
}

impl Gpu {
    /// Whether this device was opened with `shader-f16` (f16 storage).
    pub fn shader_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// Refuse `dtype` on a device that cannot store it, naming the adapter.
    pub fn check_dtype(&self, dtype: Dtype) -> Result<()> {
        if dtype == Dtype::F16 && !self.shader_f16() {
            return Err(Error::Input(format!(
                "--dtype f16: {} has no shader-f16 (see `wgpipe adapters`); use --dtype f32 or auto",
                self.label
            )));
        }
        Ok(())
    }
}
