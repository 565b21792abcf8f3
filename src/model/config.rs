//! GPT-2 hyperparameters: built-in presets and Hugging Face `config.json`.
//!
//! V = vocab_size, maxT = n_positions, C = n_embd, L = n_layer,
//! NH = n_head, hd = C / NH (head_dim), F = n_inner (MLP width).

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Gpt2Config {
    /// V: rows of the token embedding (and of the tied LM head).
    pub vocab_size: usize,
    /// maxT: rows of the position embedding; the longest sequence.
    pub n_positions: usize,
    /// C: width of the residual stream.
    pub n_embd: usize,
    /// L: number of transformer blocks.
    pub n_layer: usize,
    /// NH: attention heads; must divide C.
    pub n_head: usize,
    /// F: MLP hidden width (HF `n_inner`, null means 4*C).
    pub n_inner: usize,
    /// LayerNorm epsilon (HF default 1e-5).
    pub layer_norm_epsilon: f32,
}

/// Names accepted by [`Gpt2Config::named`].
pub const KNOWN_CONFIGS: &[&str] = &[
    "tiny",
    "small-test",
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
];

impl Gpt2Config {
    /// The vocabulary rounded up to a multiple of 4: the width of the
    /// logits and of the transposed token table on a device (vec4 kernels).
    /// The padding columns are zero weights and are dropped from results.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.next_multiple_of(4)
    }

    fn gpt2_like(n_embd: usize, n_layer: usize, n_head: usize) -> Self {
        Gpt2Config {
            vocab_size: 50257,
            n_positions: 1024,
            n_embd,
            n_layer,
            n_head,
            n_inner: 4 * n_embd,
            layer_norm_epsilon: 1e-5,
        }
    }

    /// A built-in configuration. "tiny" and "small-test" are for tests and
    /// deliberately use sizes that are not powers of two.
    pub fn named(name: &str) -> Result<Self> {
        let cfg = match name {
            // hd = 12, V prime.
            "tiny" => Gpt2Config {
                vocab_size: 97,
                n_positions: 64,
                n_embd: 36,
                n_layer: 2,
                n_head: 3,
                n_inner: 4 * 36,
                layer_norm_epsilon: 1e-5,
            },
            // Odd everywhere: hd = 10, F not 4*C and not a multiple of 4, V prime.
            "small-test" => Gpt2Config {
                vocab_size: 311,
                n_positions: 128,
                n_embd: 50,
                n_layer: 3,
                n_head: 5,
                n_inner: 123,
                layer_norm_epsilon: 1e-5,
            },
            "gpt2" => Self::gpt2_like(768, 12, 12),
            "gpt2-medium" => Self::gpt2_like(1024, 24, 16),
            "gpt2-large" => Self::gpt2_like(1280, 36, 20),
            "gpt2-xl" => Self::gpt2_like(1600, 48, 25),
            _ => {
                return Err(Error::Config(format!(
                    "unknown model `{name}`; known models: {}",
                    KNOWN_CONFIGS.join(", ")
                )))
            }
        };
        Ok(cfg)
    }

    /// Read a Hugging Face GPT-2 `config.json` and validate it.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        let obj = value.as_object().ok_or_else(|| {
            Error::Config(format!(
                "{}: expected a JSON object at top level",
                path.display()
            ))
        })?;
        let cfg = Self::from_json_object(obj)
            .map_err(|msg| Error::Config(format!("{}: {msg}", path.display())))?;
        cfg.validate().map_err(|e| match e {
            Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        Ok(cfg)
    }

    fn from_json_object(obj: &Map<String, Value>) -> std::result::Result<Self, String> {
        let usize_key = |key: &str| -> std::result::Result<usize, String> {
            match obj.get(key) {
                None => Err(format!("missing key `{key}`")),
                Some(v) => v
                    .as_u64()
                    .and_then(|x| usize::try_from(x).ok())
                    .ok_or_else(|| {
                        format!("key `{key}` must be a non-negative integer, found {v}")
                    }),
            }
        };
        let n_embd = usize_key("n_embd")?;
        let n_inner = match obj.get("n_inner") {
            None | Some(Value::Null) => n_embd.checked_mul(4).ok_or_else(|| {
                format!("key `n_inner` is null, meaning 4 × n_embd, and 4 × {n_embd} overflows")
            })?,
            Some(_) => usize_key("n_inner")?,
        };
        let layer_norm_epsilon = match obj.get("layer_norm_epsilon") {
            None | Some(Value::Null) => 1e-5,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| format!("key `layer_norm_epsilon` must be a number, found {v}"))?
                as f32,
        };
        // Options that change the computation and that this implementation
        // does not do: refuse them rather than compute something else.
        match obj.get("activation_function").and_then(Value::as_str) {
            None | Some("gelu_new") | Some("gelu_pytorch_tanh") => {}
            Some(other) => {
                return Err(format!(
                    "key `activation_function` is `{other}`; only `gelu_new` (tanh approximation) is supported"
                ))
            }
        }
        if obj.get("scale_attn_weights").and_then(Value::as_bool) == Some(false) {
            return Err(
                "key `scale_attn_weights` is false; only scaled attention is supported".into(),
            );
        }
        if obj
            .get("scale_attn_by_inverse_layer_idx")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Err("key `scale_attn_by_inverse_layer_idx` is true; not supported".into());
        }
        Ok(Gpt2Config {
            vocab_size: usize_key("vocab_size")?,
            n_positions: usize_key("n_positions")?,
            n_embd,
            n_layer: usize_key("n_layer")?,
            n_head: usize_key("n_head")?,
            n_inner,
            layer_norm_epsilon,
        })
    }

    /// Check that the sizes describe a model this crate can run.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_inner", self.n_inner),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be positive, found 0")));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::Config(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            )));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return Err(Error::Config(format!(
                "layer_norm_epsilon must be finite and non-negative, found {}",
                self.layer_norm_epsilon
            )));
        }
        // Every tensor, and the model as a whole in f32, must be addressable:
        // then no size computed from these (num_params() included) overflows.
        let checked = || -> Option<usize> {
            let c = self.n_embd;
            let wte = self.vocab_size.checked_mul(c)?;
            let wpe = self.n_positions.checked_mul(c)?;
            let fc = c.checked_mul(self.n_inner)?;
            let qkv = c.checked_mul(c.checked_mul(3)?)?;
            wte.max(wpe).max(fc).max(qkv).checked_mul(4)?;
            self.checked_num_params()?.checked_mul(4)
        };
        if checked().is_none() {
            return Err(Error::Config(format!(
                "{}: its tensors' sizes overflow",
                self.sizes()
            )));
        }
        Ok(())
    }

    /// The sizes, as `vocab_size = 50257, n_positions = 1024, …` (what
    /// messages about them quote).
    pub(crate) fn sizes(&self) -> String {
        format!(
            "vocab_size = {}, n_positions = {}, n_embd = {}, n_layer = {}, n_head = {}, n_inner = {}",
            self.vocab_size, self.n_positions, self.n_embd, self.n_layer, self.n_head, self.n_inner
        )
    }

    /// [`Self::num_params`], or None when it overflows.
    fn checked_num_params(&self) -> Option<usize> {
        let (v, p, c, f) = (self.vocab_size, self.n_positions, self.n_embd, self.n_inner);
        let cc = c.checked_mul(c)?;
        let cf = c.checked_mul(f)?;
        // 4C (LNs) + 3C² + 3C (c_attn) + C² + C (attn c_proj) + CF + F (c_fc) + FC + C.
        let per_layer = [c.checked_mul(9)?, cc.checked_mul(4)?, cf.checked_mul(2)?, f]
            .into_iter()
            .try_fold(0usize, usize::checked_add)?;
        [
            v.checked_mul(c)?,
            p.checked_mul(c)?,
            self.n_layer.checked_mul(per_layer)?,
            c.checked_mul(2)?,
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)
    }

    /// hd = C / NH.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of parameters (tied LM head counted once); 124,439,808 for "gpt2".
    /// [`Self::validate`] makes sure it does not overflow.
    pub fn num_params(&self) -> usize {
        let (v, p, c, f) = (self.vocab_size, self.n_positions, self.n_embd, self.n_inner);
        let per_layer = 2 * c // ln_1
            + c * 3 * c + 3 * c // c_attn
            + c * c + c // attn c_proj
            + 2 * c // ln_2
            + c * f + f // c_fc
            + f * c + c; // mlp c_proj
        v * c + p * c + self.n_layer * per_layer + 2 * c
    }
}
