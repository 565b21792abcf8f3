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
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;

use crate::error::{Error, Result};
use crate::io::{from_le_bytes, read_safetensors_header, to_le_bytes};
use crate::model::config::{Family, Gpt2Config, RopeScaling};
use crate::model::weights::{
    block_role_present, Gpt2Weights, LayerWeights, PartialWeights, StagePart, TensorSet,
};
use crate::model::{layout, names};

pub const CONFIG_FILE: &str = "config.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The prefix of every tensor name in a GPT-2 checkpoint (`transformer.wte.weight`).
pub const PREFIX: &str = "transformer.";

impl Gpt2Weights {
    /// Load `dir/config.json` and `dir/model.safetensors`.
    pub fn load_checkpoint(dir: &Path) -> Result<Self> {
        load_checkpoint(dir)
    }
}

/// See [`Gpt2Weights::load_checkpoint`]: [`Checkpoint::load`] with every
/// stage part asked for.
pub fn load_checkpoint(dir: &Path) -> Result<Gpt2Weights> {
    let mut ckpt = Checkpoint::open(dir)?;
    let whole = StagePart::whole(ckpt.config());
    ckpt.load(&[whole])?.into_whole()
}

/// An open checkpoint: its config and the safetensors headers (each
/// tensor's dtype, shape and byte range) read, no tensor yet.
/// [`Checkpoint::load`] then reads the tensors some stages need, and only
/// those bytes: it seeks to each tensor and reads it. (Seek and read rather
/// than a memory map: the bytes read are exactly the bytes counted, no
/// `unsafe` for a file another process may change under the map, and no
/// dependency; each tensor goes through one buffer of its own size on its
/// way to f32.) The weights are one `model.safetensors`, or the shards a
/// `model.safetensors.index.json` lists.
pub struct Checkpoint {
    /// The directory.
    dir: PathBuf,
    config: Gpt2Config,
    /// `model.safetensors`, or each shard.
    files: Vec<Shard>,
    /// Which file holds each tensor.
    index: HashMap<String, usize>,
    /// `transformer.` when a GPT-2 file's names carry it (GPT2LMHeadModel),
    /// else "".
    prefix: &'static str,
    bytes_read: u64,
}

/// One safetensors file of a checkpoint.
struct Shard {
    path: PathBuf,
    file: File,
    header: Metadata,
    /// Where the tensors' bytes start: after the length and the header.
    data_start: u64,
}

/// A sharded checkpoint's index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

impl Checkpoint {
    /// Read `dir/config.json` and the weights' headers (`model.safetensors`,
    /// or the shards `model.safetensors.index.json` names), and check that
    /// they agree (no tensors for layers past n_layer, enough bytes for the
    /// config's parameters).
    pub fn open(dir: &Path) -> Result<Checkpoint> {
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
        let names = match dir.join(INDEX_FILE).is_file() {
            true => shard_names(dir)?,
            false => vec![WEIGHTS_FILE.to_string()],
        };
        let mut files = Vec::with_capacity(names.len());
        let mut index = HashMap::new();
        for name in names {
            let path = dir.join(&name);
            let mut file = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let (header, data_start) = read_safetensors_header(&mut file, &path)?;
            for t in header.offset_keys() {
                index.insert(t, files.len());
            }
            files.push(Shard {
                path,
                file,
                header,
                data_start,
            });
        }
        let data: u128 = files.iter().map(|f| f.header.data_len() as u128).sum();
        check_size(&config, &dir.join(CONFIG_FILE), data, &files[0].path)?;
        let prefixed = config.is_gpt2() && index.keys().any(|n: &String| n.starts_with(PREFIX));
        let ckpt = Checkpoint {
            dir: dir.to_path_buf(),
            config,
            files,
            index,
            prefix: if prefixed { PREFIX } else { "" },
            bytes_read: 0,
        };
        ckpt.check_layer_count()?;
        Ok(ckpt)
    }

    /// The weights' storage type, for `--dtype auto`: f16 when every tensor
    /// is stored as F16 or BF16 (bf16 goes to the device as f16), else f32.
    pub fn stored_dtype(&self) -> crate::device::Dtype {
        let sixteen = self.files.iter().all(|f| {
            f.header
                .tensors()
                .values()
                .all(|i| matches!(i.dtype, Dtype::F16 | Dtype::BF16))
        });
        match sixteen {
            true => crate::device::Dtype::F16,
            false => crate::device::Dtype::F32,
        }
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The bytes of every tensor in the files (all of each after its
    /// header), those this model ignores included.
    pub fn tensor_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.header.data_len() as u64).sum()
    }

    /// The tensor bytes read from the files so far (the headers not counted).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The tensors stages `parts` need (see [`TensorSet::of`]), read from
    /// the files, and nothing else.
    pub fn load(&mut self, parts: &[StagePart]) -> Result<PartialWeights> {
        let mut w = PartialWeights::empty(self.config.clone());
        self.load_into(&mut w, parts)?;
        Ok(w)
    }

    /// Read into `w` the tensors stages `parts` need that it does not hold.
    /// Every tensor to read is checked (present, shape, dtype) before any
    /// is read.
    pub fn load_into(&mut self, w: &mut PartialWeights, parts: &[StagePart]) -> Result<()> {
        if w.config() != &self.config {
            return Err(Error::Config(format!(
                "{}: these weights are of another model ({:?}), not this checkpoint's ({:?})",
                self.dir.display(),
                w.config(),
                self.config
            )));
        }
        let cfg = self.config.clone();
        let want = TensorSet::of(&cfg, parts)?.minus(w.held());
        each(&cfg, &want, |name, shape| {
            for (part, part_shape) in layout::stored(&cfg, name).parts(shape) {
                self.info(&part, &part_shape)?;
            }
            Ok(())
        })?;
        let (v, p, c) = (cfg.vocab_size, cfg.n_positions, cfg.n_embd);
        if want.wte {
            w.put_wte(self.tensor(names::WTE, &[v, c])?);
        }
        if want.wpe {
            w.put_wpe(self.tensor(names::WPE, &[p, c])?);
        }
        for l in (0..cfg.n_layer).filter(|&l| want.layers[l]) {
            let lw = LayerWeights::try_from_fn(&cfg, |name, shape| {
                match block_role_present(&cfg, name) {
                    true => self.tensor(&names::block_tensor(l, name), &shape),
                    false => Ok(vec![0.0; shape.iter().product()]),
                }
            })?;
            w.put_layer(l, lw);
        }
        if want.ln_f {
            let g = self.tensor(names::LN_F_WEIGHT, &[c])?;
            let b = match cfg.is_gpt2() {
                true => self.tensor(names::LN_F_BIAS, &[c])?,
                false => Vec::new(),
            };
            w.put_ln_f(g, b);
        }
        if want.lm_head {
            w.put_lm_head(self.tensor(names::LM_HEAD, &[v, c])?);
        }
        Ok(())
    }

    /// wgpipe's tensor `name` of `shape`, read from the checkpoint tensors
    /// the family stores it as ([`layout::stored`]).
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let how = layout::stored(&self.config, name);
        layout::assemble(&how, shape, |part, part_shape| self.read(part, part_shape))
    }

    /// A few of the names in the files, for "missing tensor" messages.
    fn available(&self) -> String {
        let mut names: Vec<&str> = self.index.keys().map(String::as_str).collect();
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
    fn check_layer_count(&self) -> Result<()> {
        let max_layer = self
            .index
            .keys()
            .filter_map(|n| layout::block_index(&self.config, n.strip_prefix(self.prefix)?))
            .max();
        match max_layer {
            Some(l) if l >= self.config.n_layer => Err(Error::Config(format!(
                "{}: has tensors for layer {}, but {CONFIG_FILE} says n_layer = {}",
                self.dir.display(),
                layout::block_name(&self.config, l),
                self.config.n_layer
            ))),
            _ => Ok(()),
        }
    }

    /// Checkpoint tensor `name` (without prefix) in its file's header:
    /// present, of `shape`, and F32, F16 or BF16.
    fn info(&self, name: &str, shape: &[usize]) -> Result<(usize, &TensorInfo)> {
        let full = format!("{}{name}", self.prefix);
        let missing = || Error::MissingTensor {
            path: self.files[0].path.clone(),
            name: full.clone(),
            available: self.available(),
        };
        let &f = self.index.get(&full).ok_or_else(missing)?;
        let path = &self.files[f].path;
        let info = self.files[f].header.info(&full).ok_or_else(missing)?;
        if info.shape != shape {
            return Err(Error::TensorShape {
                path: path.clone(),
                name: full,
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        if !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            return Err(Error::TensorDtype {
                path: path.clone(),
                name: full,
                expected: "F32 (or F16/BF16)".into(),
                found: info.dtype.to_string(),
            });
        }
        Ok((f, info))
    }

    /// Checkpoint tensor `name` (without prefix) as f32, checked against
    /// `shape`: its bytes alone read from its file.
    fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (f, dtype, (start, end)) = {
            let (f, info) = self.info(name, shape)?;
            (f, info.dtype, info.data_offsets)
        };
        let shard = &mut self.files[f];
        let mut bytes = vec![0u8; end - start];
        let path = shard.path.clone();
        let io = |e| Error::io(&path, e);
        shard
            .file
            .seek(SeekFrom::Start(shard.data_start + start as u64))
            .map_err(io)?;
        shard.file.read_exact(&mut bytes).map_err(io)?;
        self.bytes_read += bytes.len() as u64;
        // `info` admitted only the dtypes `decode_f32` widens.
        decode_f32(dtype, &bytes).ok_or_else(|| Error::TensorDtype {
            path: path.clone(),
            name: format!("{}{name}", self.prefix),
            expected: "F32 (or F16/BF16)".into(),
            found: dtype.to_string(),
        })
    }
}

/// `f(name, shape)` for each of wgpipe's tensors in `set` that the family
/// has (names of [`names`]), in checkpoint order.
fn each(
    cfg: &Gpt2Config,
    set: &TensorSet,
    mut f: impl FnMut(&str, &[usize]) -> Result<()>,
) -> Result<()> {
    let (v, p, c) = (cfg.vocab_size, cfg.n_positions, cfg.n_embd);
    if set.wte {
        f(names::WTE, &[v, c])?;
    }
    if set.wpe {
        f(names::WPE, &[p, c])?;
    }
    for l in (0..cfg.n_layer).filter(|&l| set.layers[l]) {
        LayerWeights::try_from_fn(cfg, |name, shape| {
            match block_role_present(cfg, name) {
                true => f(&names::block_tensor(l, name), &shape),
                false => Ok(()),
            }
            .map(|_| Vec::new())
        })?;
    }
    if set.ln_f {
        f(names::LN_F_WEIGHT, &[c])?;
        if cfg.is_gpt2() {
            f(names::LN_F_BIAS, &[c])?;
        }
    }
    if set.lm_head {
        f(names::LM_HEAD, &[v, c])?;
    }
    Ok(())
}

/// The shard files a `model.safetensors.index.json` names (its
/// `weight_map`'s values), each once, in first-mention order. Each must be
/// a plain file name in the checkpoint directory.
fn shard_names(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    let map = v
        .get("weight_map")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| Error::Config(format!("{}: no `weight_map` object", path.display())))?;
    let mut out: Vec<String> = Vec::new();
    for (tensor, file) in map {
        let name = file.as_str().filter(|f| {
            let p = Path::new(f);
            p.components().count() == 1 && p.file_name().is_some()
        });
        let name = name.ok_or_else(|| {
            Error::Config(format!(
                "{}: tensor `{tensor}` maps to {file}, not a file name in the checkpoint directory",
                path.display()
            ))
        })?;
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    if out.is_empty() {
        return Err(Error::Config(format!(
            "{}: `weight_map` names no file",
            path.display()
        )));
    }
    Ok(out)
}

/// The fewest bytes a stored parameter takes: F16 and BF16 (F32 takes 4).
const MIN_BYTES_PER_PARAM: u128 = 2;

/// Refuse a config whose model cannot be in the weights file: its
/// parameters, at [`MIN_BYTES_PER_PARAM`] bytes each, take more bytes than
/// the file's tensors. This is the limit on config.json's sizes, checked
/// before anything is sized by them — n_layer = 10^12 or n_embd = 10^12 is
/// refused here, not allocated (a stage's tensor set has one entry per
/// layer). Tensors the model ignores only make the file larger, so a
/// complete checkpoint always passes; a missing or mis-shaped tensor is
/// named when it is read ([`Checkpoint::load_into`]).
fn check_size(config: &Gpt2Config, config_path: &Path, have: u128, path: &Path) -> Result<()> {
    // validate() has checked that num_params (in f32 bytes, even) fits a usize.
    let params = config.num_params() as u128;
    if params * MIN_BYTES_PER_PARAM > have {
        return Err(Error::Config(format!(
            "{}: {} make {params} parameters, at least {} bytes stored as F16, but {} holds {have} bytes of tensors: the config does not describe these weights",
            config_path.display(),
            config.sizes(),
            params * MIN_BYTES_PER_PARAM,
            path.display()
        )));
    }
    Ok(())
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

/// Write `dir/config.json` and `dir/model.safetensors` in the layout the
/// family's `save_pretrained` uses (F32; GPT-2: the `transformer.` prefix,
/// no `lm_head.weight`; Llama family: `model.` names, q, k, v, gate and up
/// projections as tensors of their own, `lm_head.weight` when untied).
/// Creates `dir` if needed.
pub fn save_checkpoint(w: &Gpt2Weights, dir: &Path) -> Result<()> {
    save_checkpoint_with(w, dir, SaveOptions::default())
}

/// [`save_checkpoint`] with a choice of name prefix and element type.
pub fn save_checkpoint_with(w: &Gpt2Weights, dir: &Path, opts: SaveOptions) -> Result<()> {
    w.config.validate()?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let cfg = &w.config;
    let config_json = config_json(cfg);
    let config_path = dir.join(CONFIG_FILE);
    let text = serde_json::to_string_pretty(&config_json).map_err(|source| Error::Json {
        path: config_path.clone(),
        source,
    })?;
    crate::io::write_atomic(&config_path, |tmp| {
        std::fs::write(tmp, text.as_bytes()).map_err(|e| Error::io(tmp, e))
    })?;

    let prefix = if opts.prefix && cfg.is_gpt2() {
        PREFIX
    } else {
        ""
    };
    let dtype = match opts.dtype {
        StoreDtype::F32 => Dtype::F32,
        StoreDtype::F16 => Dtype::F16,
        StoreDtype::BF16 => Dtype::BF16,
    };
    let mut encoded = Vec::new(); // (name, bytes, shape)
    let named = w.named_tensors();
    for (name, t, shape) in &named {
        let n: usize = shape.iter().product();
        if t.len() != n {
            return Err(Error::Other(format!(
                "cannot save tensor `{name}`: it holds {} values, its shape {shape:?} needs {n}",
                t.len()
            )));
        }
    }
    for (name, t, shape) in layout::to_checkpoint(cfg, &named) {
        encoded.push((format!("{prefix}{name}"), encode(opts.dtype, &t), shape));
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

/// The family's `config.json` for `cfg`, as transformers writes it.
fn config_json(cfg: &Gpt2Config) -> serde_json::Value {
    use serde_json::json;
    let a = &cfg.arch;
    if cfg.is_gpt2() {
        return json!({
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
    }
    let mut v = json!({
        "model_type": cfg.family().model_type(),
        "architectures": [cfg.family().architecture()],
        "hidden_act": "silu",
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.n_positions,
        "hidden_size": cfg.n_embd,
        "intermediate_size": cfg.n_inner,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": cfg.kv_heads(),
        "head_dim": cfg.head_dim(),
        "rms_norm_eps": cfg.layer_norm_epsilon,
        "tie_word_embeddings": a.tie_word_embeddings,
        "attention_bias": false,
        "mlp_bias": false,
        "torch_dtype": "float32",
    });
    if let Some(r) = &a.rope {
        v["rope_theta"] = json!(r.theta);
        v["rope_scaling"] = match &r.scaling {
            RopeScaling::None => serde_json::Value::Null,
            RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
        };
    }
    if cfg.family() == Family::Mistral {
        v["sliding_window"] = json!(a.sliding_window);
    }
    v
}

/// The end-of-text token of the checkpoint in `dir`: its `eos_token_id`
/// (config.json, else generation_config.json; the first of a list), else the
/// last id of the vocabulary — where GPT-2 keeps `<|endoftext|>` (50256).
pub fn eos_token_id(dir: &Path, cfg: &Gpt2Config) -> Result<u32> {
    let last = (cfg.vocab_size - 1) as u32;
    for file in ["config.json", "generation_config.json"] {
        let path = dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        match v.get("eos_token_id") {
            None | Some(serde_json::Value::Null) => continue,
            Some(id) => {
                // A list names several; the first is the end-of-text token.
                let first = id.as_array().and_then(|a| a.first()).unwrap_or(id);
                return first
                    .as_u64()
                    .filter(|&x| x < cfg.vocab_size as u64)
                    .map(|x| x as u32)
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "{}: eos_token_id {id} is not a token id below vocab_size {}",
                            path.display(),
                            cfg.vocab_size
                        ))
                    });
            }
        }
    }
    Ok(last)
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
