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

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::io::{from_le_bytes, to_le_bytes};
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

    let (v, p, c) = (config.vocab_size, config.n_positions, config.n_embd);
    let wte = file.get("wte.weight", &[v, c])?;
    let wpe = file.get("wpe.weight", &[p, c])?;
    let mut layers = Vec::with_capacity(config.n_layer);
    for l in 0..config.n_layer {
        let g = |name: &str, shape: &[usize]| file.get(&format!("h.{l}.{name}"), shape);
        layers.push(LayerWeights::try_from_fn(&config, |name, shape| {
            g(name, &shape)
        })?);
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
        decode_f32(view.dtype(), view.data()).ok_or_else(|| Error::TensorDtype {
            path: self.path.to_path_buf(),
            name: full,
            expected: "F32 (or F16/BF16)".into(),
            found: view.dtype().to_string(),
        })
    }
}

/// A tensor's little-endian F32, F16 or BF16 bytes (possibly unaligned) as
/// f32, widening exactly; `None` for other dtypes.
fn decode_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    let bits16 = || from_le_bytes(data, u16::from_le).into_iter();
    Some(match dtype {
        Dtype::F32 => from_le_bytes(data, u32::from_le)
            .into_iter()
            .map(f32::from_bits)
            .collect(),
        Dtype::F16 => bits16().map(|h| f16::from_bits(h).to_f32()).collect(),
        Dtype::BF16 => bits16().map(|h| bf16::from_bits(h).to_f32()).collect(),
        _ => return None,
    })
}

/// `x` in `dtype`, little-endian, rounding to nearest even when narrowing.
fn encode(dtype: StoreDtype, x: &[f32]) -> Vec<u8> {
    match dtype {
        StoreDtype::F32 => to_le_bytes(x, |v| f32::from_bits(v.to_bits().to_le())),
        StoreDtype::F16 => {
            let h: Vec<u16> = x.iter().map(|&v| f16::from_f32(v).to_bits()).collect();
            to_le_bytes(&h, u16::to_le)
        }
        StoreDtype::BF16 => {
            let h: Vec<u16> = x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect();
            to_le_bytes(&h, u16::to_le)
        }
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
    let mut encoded = Vec::new(); // (name, bytes, shape)
    for (name, t, shape) in w.named_tensors() {
        let n: usize = shape.iter().product();
        if t.len() != n {
            return Err(Error::Other(format!(
                "cannot save tensor `{name}`: it holds {} values, its shape {shape:?} needs {n}",
                t.len()
            )));
        }
        encoded.push((format!("{prefix}{name}"), encode(opts.dtype, t), shape));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `bytes` copied one byte into a new buffer: from `[1..]` on, the data
    /// is misaligned for any element type wider than a byte.
    fn misaligned(bytes: &[u8]) -> Vec<u8> {
        let mut buf = vec![0xAAu8];
        buf.extend_from_slice(bytes);
        buf
    }

    #[test]
    fn decodes_known_f16_bf16_and_f32_values_from_unaligned_bytes() {
        let f16_bits: [u16; 9] = [
            0x3c00, 0xc000, 0x7bff, 0x0001, 0x8001, 0x0400, 0x7c00, 0x3555, 0x7e00,
        ];
        let want_f16 = [
            1.0,
            -2.0,
            65504.0,
            2f32.powi(-24),
            -(2f32.powi(-24)),
            2f32.powi(-14),
            f32::INFINITY,
            0.333_251_95,
        ];
        let bytes: Vec<u8> = f16_bits.iter().flat_map(|h| h.to_le_bytes()).collect();
        let buf = misaligned(&bytes);
        let got = decode_f32(Dtype::F16, &buf[1..]).unwrap();
        assert_eq!(&got[..8], &want_f16);
        assert!(got[8].is_nan());

        let bf16_bits: [u16; 3] = [0x3f80, 0xc000, 0x7f7f];
        let bytes: Vec<u8> = bf16_bits.iter().flat_map(|h| h.to_le_bytes()).collect();
        let buf = misaligned(&bytes);
        let got = decode_f32(Dtype::BF16, &buf[1..]).unwrap();
        assert_eq!(got, [1.0, -2.0, f32::from_bits(0x7f7f_0000)]);

        let want = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.0e38];
        let bytes: Vec<u8> = want.iter().flat_map(|x| x.to_le_bytes()).collect();
        let buf = misaligned(&bytes);
        assert_eq!(decode_f32(Dtype::F32, &buf[1..]).unwrap(), want);

        assert_eq!(decode_f32(Dtype::I64, &[0; 8]), None);
    }

    #[test]
    fn encodes_little_endian_rounding_to_nearest_even() {
        assert_eq!(encode(StoreDtype::F32, &[1.0]), 1f32.to_le_bytes());
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(
            encode(StoreDtype::F16, &[1.0 + 2f32.powi(-11), -2.0]),
            [0x00, 0x3c, 0x00, 0xc0]
        );
        assert_eq!(
            encode(StoreDtype::BF16, &[1.0 + 3.0 * 2f32.powi(-8)]),
            [0x82, 0x3f]
        );
    }
}
