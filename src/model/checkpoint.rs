//! Hugging Face GPT-2 checkpoints: a directory with `config.json` and
//! `model.safetensors`, as `save_pretrained` writes them.
//!
//! V = vocab_size, maxT = n_positions, C = n_embd, F = n_inner, L = n_layer.
//! Tensor names may carry the `transformer.` prefix (GPT2LMHeadModel) or not
//! (GPT2Model). Conv1D weights are stored [in, out], the layout used here, so
//! nothing is transposed. `lm_head.weight` (tied to wte) and the attention
//! mask buffers (`h.N.attn.bias`, `h.N.attn.masked_bias`) are ignored.
//! F32 tensors load as they are; F16 and BF16 are widened to f32.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::model::config::Gpt2Config;
use crate::model::weights::{Gpt2Weights, LayerWeights};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
const PREFIX: &str = "transformer.";

impl Gpt2Weights {
    /// Load `dir/config.json` and `dir/model.safetensors`.
    pub fn load_checkpoint(dir: &Path) -> Result<Self> {
        load_checkpoint(dir)
    }
}

/// See [`Gpt2Weights::load_checkpoint`].
pub fn load_checkpoint(dir: &Path) -> Result<Gpt2Weights> {
    let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
    if !meta.is_dir() {
        return Err(Error::io(
            dir,
            std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory; expected a checkpoint directory with config.json and model.safetensors",
            ),
        ));
    }
    let config = Gpt2Config::from_json_file(&dir.join(CONFIG_FILE))?;
    let path = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: path.clone(),
        msg: e.to_string(),
    })?;
    let file = TensorFile::new(&path, &st);
    file.check_layer_count(&config)?;

    let (v, p, c, f) = (
        config.vocab_size,
        config.n_positions,
        config.n_embd,
        config.n_inner,
    );
    let wte = file.get("wte.weight", &[v, c])?;
    let wpe = file.get("wpe.weight", &[p, c])?;
    let mut layers = Vec::with_capacity(config.n_layer);
    for l in 0..config.n_layer {
        let g = |name: &str, shape: &[usize]| file.get(&format!("h.{l}.{name}"), shape);
        layers.push(LayerWeights {
            ln_1_g: g("ln_1.weight", &[c])?,
            ln_1_b: g("ln_1.bias", &[c])?,
            c_attn_w: g("attn.c_attn.weight", &[c, 3 * c])?,
            c_attn_b: g("attn.c_attn.bias", &[3 * c])?,
            attn_proj_w: g("attn.c_proj.weight", &[c, c])?,
            attn_proj_b: g("attn.c_proj.bias", &[c])?,
            ln_2_g: g("ln_2.weight", &[c])?,
            ln_2_b: g("ln_2.bias", &[c])?,
            c_fc_w: g("mlp.c_fc.weight", &[c, f])?,
            c_fc_b: g("mlp.c_fc.bias", &[f])?,
            mlp_proj_w: g("mlp.c_proj.weight", &[f, c])?,
            mlp_proj_b: g("mlp.c_proj.bias", &[c])?,
        });
    }
    let ln_f_g = file.get("ln_f.weight", &[c])?;
    let ln_f_b = file.get("ln_f.bias", &[c])?;
    Ok(Gpt2Weights {
        config,
        wte,
        wpe,
        layers,
        ln_f_g,
        ln_f_b,
    })
}

/// A parsed model.safetensors and whether its names carry `transformer.`.
struct TensorFile<'a> {
    path: &'a Path,
    st: &'a SafeTensors<'a>,
    prefix: &'static str,
}

impl<'a> TensorFile<'a> {
    fn new(path: &'a Path, st: &'a SafeTensors<'a>) -> Self {
        let prefixed = st.names().iter().any(|n| n.starts_with(PREFIX));
        TensorFile {
            path,
            st,
            prefix: if prefixed { PREFIX } else { "" },
        }
    }

    /// A few of the names in the file, for "missing tensor" messages.
    fn available(&self) -> String {
        let mut names = self.st.names();
        names.sort_unstable();
        let n = names.len();
        if n == 0 {
            return "no tensors".into();
        }
        let shown: Vec<&str> = names.into_iter().take(8).collect();
        if n > shown.len() {
            format!("{}, ... ({n} tensors in all)", shown.join(", "))
        } else {
            shown.join(", ")
        }
    }

    /// Refuse tensors for layers beyond n_layer: the config does not match.
    fn check_layer_count(&self, cfg: &Gpt2Config) -> Result<()> {
        let max_layer = self
            .st
            .names()
            .iter()
            .filter_map(|n| {
                n.strip_prefix(self.prefix)?
                    .strip_prefix("h.")?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .max();
        match max_layer {
            Some(l) if l >= cfg.n_layer => Err(Error::Config(format!(
                "{}: has tensors for layer h.{l}, but {CONFIG_FILE} says n_layer = {}",
                self.path.display(),
                cfg.n_layer
            ))),
            _ => Ok(()),
        }
    }

    /// Tensor `name` (without prefix) as f32, checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = format!("{}{name}", self.prefix);
        let view = self.st.tensor(&full).map_err(|_| Error::MissingTensor {
            path: self.path.to_path_buf(),
            name: full.clone(),
            available: self.available(),
        })?;
        if view.shape() != shape {
            return Err(Error::TensorShape {
                path: self.path.to_path_buf(),
                name: full,
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let data = view.data();
        let out = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            other => {
                return Err(Error::TensorDtype {
                    path: self.path.to_path_buf(),
                    name: full,
                    expected: "F32 (or F16/BF16)".into(),
                    found: other.to_string(),
                })
            }
        };
        Ok(out)
    }
}

/// Element type for [`save_checkpoint_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum StoreDtype {
    #[default]
    F32,
    F16,
    BF16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaveOptions {
    /// Prefix names with `transformer.` as GPT2LMHeadModel does.
    pub prefix: bool,
    pub dtype: StoreDtype,
}

impl Default for SaveOptions {
    fn default() -> Self {
        SaveOptions {
            prefix: true,
            dtype: StoreDtype::F32,
        }
    }
}

/// Write `dir/config.json` and `dir/model.safetensors` in the layout
/// `GPT2LMHeadModel.save_pretrained` uses (F32, `transformer.` prefix, no
/// `lm_head.weight`). Creates `dir` if needed.
pub fn save_checkpoint(w: &Gpt2Weights, dir: &Path) -> Result<()> {
    save_checkpoint_with(w, dir, SaveOptions::default())
}

/// [`save_checkpoint`] with a choice of name prefix and element type.
pub fn save_checkpoint_with(w: &Gpt2Weights, dir: &Path, opts: SaveOptions) -> Result<()> {
    w.config.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let cfg = &w.config;
    let config_json = serde_json::json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_positions,
        "n_ctx": cfg.n_positions,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": cfg.n_inner,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "tie_word_embeddings": true,
    });
    let config_path = dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config_json).map_err(|source| Error::Json {
        path: config_path.clone(),
        source,
    })?;
    crate::io::write_atomic(&config_path, |tmp| {
        std::fs::write(tmp, text.as_bytes()).map_err(|e| Error::io(tmp, e))
    })?;

    let prefix = if opts.prefix { PREFIX } else { "" };
    let dtype = match opts.dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
        StoreDtype::BF16 => Dtype::BF16,
    };
    let encode = |x: &[f32]| -> Vec<u8> {
        match opts.dtype {
            StoreDtype::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            StoreDtype::F16 => x
                .iter()
                .flat_map(|v| f32_to_f16(*v).to_le_bytes())
                .collect(),
            StoreDtype::BF16 => x
                .iter()
                .flat_map(|v| f32_to_bf16(*v).to_le_bytes())
                .collect(),
        }
    };
    let mut encoded = Vec::new(); // (name, bytes, shape)
    for (name, t, shape) in w.named_tensors() {
        let n: usize = shape.iter().product();
        if t.len() != n {
            return Err(Error::Other(format!(
                "cannot save tensor `{name}`: it holds {} values, its shape {shape:?} needs {n}",
                t.len()
            )));
        }
        encoded.push((format!("{prefix}{name}"), encode(t), shape));
    }
    let weights_path = dir.join(WEIGHTS_FILE);
    let views = encoded
        .iter()
        .map(|(name, bytes, shape)| {
            safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Safetensors {
            path: weights_path.clone(),
            msg: e.to_string(),
        })?;
    let mut info = HashMap::new();
    info.insert("format".to_string(), "pt".to_string());
    crate::io::write_atomic(&weights_path, |tmp| {
        safetensors::serialize_to_file(views, Some(info), tmp)
            .map_err(|e| crate::io::safetensors_write_error(tmp, e))
    })
}

/// IEEE binary16 bits to f32 (exact).
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man * 2^-24, exact in f32.
        (0, m) => {
            let v = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7fc0_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 bits to f32 (exact).
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// f32 to IEEE binary16 bits, rounding to nearest even.
pub(crate) fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    let round = |value: u32, shift: u32| -> u32 {
        let q = value >> shift;
        let rem = value & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        if rem > half || (rem == half && q & 1 == 1) {
            q + 1
        } else {
            q
        }
    };
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        return sign | round(m, (14 - e) as u32) as u16;
    }
    // A carry out of the mantissa bumps the exponent (up to inf): correct.
    sign | (((e as u32) << 10) + round(man, 13)) as u16
}

/// f32 to bfloat16 bits, rounding to nearest even.
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x40;
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
    }

    #[test]
    fn f16_roundtrip_all_values() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            if x.is_nan() {
                assert!(f16_to_f32(f32_to_f16(x)).is_nan());
            } else {
                assert_eq!(f32_to_f16(x), h, "f16 bits {h:#06x} -> {x}");
            }
        }
    }

    #[test]
    fn f16_rounding() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3*2^-11 is halfway between 1+2^-10 (odd) and 1+2^-9: up.
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(70000.0), 0x7c00);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(1e-10), 0);
        assert_eq!(f32_to_f16(2f32.powi(-25)), 0); // tie to even: 0
        assert_eq!(f32_to_f16(1.5 * 2f32.powi(-25)), 1);
    }

    #[test]
    fn bf16_roundtrip() {
        for h in [0x3f80u16, 0xc000, 0x0001, 0x7f7f, 0x8000] {
            assert_eq!(f32_to_bf16(bf16_to_f32(h)), h);
        }
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80); // tie to even
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
    }
}
