//! A decoder-only transformer's hyperparameters: built-in presets and Hugging
//! Face `config.json` for the families wgpipe runs — GPT-2 and the Llama
//! family (Llama 2/3.x, Qwen2, Mistral, SmolLM, TinyLlama).
//!
//! V = vocab_size, maxT = n_positions, C = n_embd (hidden size), L = n_layer,
//! NH = n_head, NKV = KV heads, hd = head_dim, F = n_inner (MLP width).
//!
//! What sets a family apart from GPT-2 is [`Arch`]: RMSNorm instead of
//! LayerNorm, rotary positions instead of a learned table, a gated SiLU MLP
//! instead of GELU, grouped-query attention, biases present or not, a tied or
//! separate LM head, a sliding attention window.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Gpt2Config {
    /// V: rows of the token embedding (and of the LM head).
    pub vocab_size: usize,
    /// maxT: the longest sequence (GPT-2: rows of the position table).
    pub n_positions: usize,
    /// C: width of the residual stream.
    pub n_embd: usize,
    /// L: number of transformer blocks.
    pub n_layer: usize,
    /// NH: attention (query) heads.
    pub n_head: usize,
    /// F: MLP hidden width (GPT-2's `n_inner`, null meaning 4·C; Llama's
    /// `intermediate_size`).
    pub n_inner: usize,
    /// The norms' epsilon (GPT-2 `layer_norm_epsilon`, Llama `rms_norm_eps`).
    pub layer_norm_epsilon: f32,
    /// The architecture: GPT-2's, or what a Llama-family model changes.
    pub arch: Arch,
}

/// Which architecture, as `config.json`'s `architectures` / `model_type`
/// names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `GPT2LMHeadModel`: LayerNorm, learned positions, GELU, MHA, tied head.
    #[default]
    Gpt2,
    /// `LlamaForCausalLM` (Llama 2/3.x, SmolLM, TinyLlama).
    Llama,
    /// `Qwen2ForCausalLM`: Llama with q/k/v biases.
    Qwen2,
    /// `MistralForCausalLM`: Llama with a sliding attention window.
    Mistral,
}

impl Family {
    /// The name `config.json` gives the architecture.
    pub fn architecture(self) -> &'static str {
        match self {
            Family::Gpt2 => "GPT2LMHeadModel",
            Family::Llama => "LlamaForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
            Family::Mistral => "MistralForCausalLM",
        }
    }

    /// `config.json`'s `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
        }
    }

    const ALL: [Family; 4] = [Family::Gpt2, Family::Llama, Family::Qwen2, Family::Mistral];
}

/// Rotary position embeddings.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rope {
    /// `rope_theta`: the base of the frequencies.
    pub theta: f64,
    /// `rope_scaling`: how the frequencies are stretched for longer contexts.
    pub scaling: RopeScaling,
}

impl Rope {
    /// The (hd / 2) inverse frequencies of a head of width `head_dim`, as
    /// transformers computes them.
    pub fn inv_freq(&self, head_dim: usize) -> Vec<f32> {
        crate::rope::rope_inv_freq(head_dim, self.theta, &self.scaling)
    }
}

pub use crate::rope::RopeScaling;

/// What a family changes from GPT-2 (whose values are the default).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Arch {
    pub family: Family,
    /// KV heads (grouped-query attention); `None`: as many as query heads.
    pub n_kv_head: Option<usize>,
    /// The width of one head; `None`: C / NH.
    pub head_dim: Option<usize>,
    /// Rotary positions (Llama); `None`: a learned position table (GPT-2).
    pub rope: Option<Rope>,
    /// Biases on q, k and v (GPT-2 and Qwen2).
    pub qkv_bias: bool,
    /// The LM head is the token table (GPT-2, and Llama models that say
    /// `tie_word_embeddings`); else a tensor of its own.
    pub tie_word_embeddings: bool,
    /// Mistral: a query sees only the last `sliding_window` keys.
    pub sliding_window: Option<usize>,
}

impl Arch {
    /// GPT-2's architecture.
    pub fn gpt2() -> Arch {
        Arch {
            qkv_bias: true,
            tie_word_embeddings: true,
            ..Arch::default()
        }
    }
}

/// Names accepted by [`Gpt2Config::named`].
pub const KNOWN_CONFIGS: &[&str] = &[
    "tiny",
    "small-test",
    "gpt2",
    "gpt2-medium",
    "gpt2-large",
    "gpt2-xl",
    "tiny-llama",
    "smollm2-135m",
    "qwen2.5-0.5b",
    "llama-3.2-1b",
];

impl Gpt2Config {
    /// The vocabulary rounded up to a multiple of 4: the width of the
    /// logits and of the transposed token table on a device (vec4 kernels).
    /// The padding columns are zero weights and are dropped from results.
    pub fn padded_vocab(&self) -> usize {
        self.vocab_size.next_multiple_of(4)
    }

    /// The architecture's family.
    pub fn family(&self) -> Family {
        self.arch.family
    }

    /// GPT-2 (LayerNorm, learned positions, GELU) or the Llama family
    /// (RMSNorm, rotary positions, gated SiLU).
    pub fn is_gpt2(&self) -> bool {
        self.arch.family == Family::Gpt2
    }

    /// NKV: the KV heads.
    pub fn kv_heads(&self) -> usize {
        self.arch.n_kv_head.unwrap_or(self.n_head)
    }

    /// hd: the width of one head (`head_dim` when the config gives it,
    /// else C / NH).
    pub fn head_dim(&self) -> usize {
        self.arch
            .head_dim
            .unwrap_or(self.n_embd / self.n_head.max(1))
    }

    /// NH · hd: the attention's width (queries, and its output).
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim()
    }

    /// NKV · hd: the keys' (and the values') width, a KV-cache row.
    pub fn kv_width(&self) -> usize {
        self.kv_heads() * self.head_dim()
    }

    /// The fused q, k, v projection's width: NH·hd + 2·NKV·hd.
    pub fn qkv_width(&self) -> usize {
        self.q_width() + 2 * self.kv_width()
    }

    /// The MLP's first projection's width: F (GPT-2's c_fc), or 2F (the
    /// gate and up projections side by side).
    pub fn mlp_in_width(&self) -> usize {
        match self.is_gpt2() {
            true => self.n_inner,
            false => 2 * self.n_inner,
        }
    }

    /// A learned position table (GPT-2's `wpe`); else rotary positions.
    pub fn learned_positions(&self) -> bool {
        self.arch.rope.is_none()
    }

    /// The LM head is the token table.
    pub fn tied_head(&self) -> bool {
        self.arch.tie_word_embeddings
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
            arch: Arch::gpt2(),
        }
    }

    /// A Llama-family shape with rotary positions (no scaling), untied head,
    /// no biases: the presets adjust the rest.
    #[allow(clippy::too_many_arguments)]
    fn llama_like(
        vocab: usize,
        n_positions: usize,
        (c, layers, heads, kv, f): (usize, usize, usize, usize, usize),
        eps: f32,
        theta: f64,
    ) -> Self {
        Gpt2Config {
            vocab_size: vocab,
            n_positions,
            n_embd: c,
            n_layer: layers,
            n_head: heads,
            n_inner: f,
            layer_norm_epsilon: eps,
            arch: Arch {
                family: Family::Llama,
                n_kv_head: Some(kv),
                head_dim: None,
                rope: Some(Rope {
                    theta,
                    scaling: RopeScaling::None,
                }),
                qkv_bias: false,
                tie_word_embeddings: false,
                sliding_window: None,
            },
        }
    }

    /// A built-in configuration. "tiny", "small-test" and "tiny-llama" are
    /// for tests and deliberately use sizes that are not powers of two; the
    /// others are the published shapes of real models (with seeded weights).
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
                arch: Arch::gpt2(),
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
                arch: Arch::gpt2(),
            },
            "gpt2" => Self::gpt2_like(768, 12, 12),
            "gpt2-medium" => Self::gpt2_like(1024, 24, 16),
            "gpt2-large" => Self::gpt2_like(1280, 36, 20),
            "gpt2-xl" => Self::gpt2_like(1600, 48, 25),
            // A Llama for tests: GQA (6 heads over 2 KV heads), hd = 6,
            // F = 50 (not a multiple of 4), V prime.
            "tiny-llama" => Self::llama_like(97, 64, (36, 2, 6, 2, 50), 1e-5, 10000.0),
            // HuggingFaceTB/SmolLM2-135M.
            "smollm2-135m" => {
                let mut c = Self::llama_like(49152, 8192, (576, 30, 9, 3, 1536), 1e-5, 100000.0);
                c.arch.tie_word_embeddings = true;
                c
            }
            // Qwen/Qwen2.5-0.5B.
            "qwen2.5-0.5b" => {
                let mut c =
                    Self::llama_like(151936, 32768, (896, 24, 14, 2, 4864), 1e-6, 1000000.0);
                c.arch.family = Family::Qwen2;
                c.arch.qkv_bias = true;
                c.arch.tie_word_embeddings = true;
                c
            }
            // meta-llama/Llama-3.2-1B.
            "llama-3.2-1b" => {
                let mut c =
                    Self::llama_like(128256, 131072, (2048, 16, 32, 8, 8192), 1e-5, 500000.0);
                c.arch.head_dim = Some(64);
                c.arch.tie_word_embeddings = true;
                if let Some(r) = &mut c.arch.rope {
                    r.scaling = RopeScaling::Llama3 {
                        factor: 32.0,
                        low_freq_factor: 1.0,
                        high_freq_factor: 4.0,
                        original_max_position_embeddings: 8192,
                    };
                }
                c
            }
            _ => {
                return Err(Error::Config(format!(
                    "unknown model `{name}`; known models: {}",
                    KNOWN_CONFIGS.join(", ")
                )))
            }
        };
        Ok(cfg)
    }

    /// Read a Hugging Face `config.json` (GPT-2, Llama, Qwen2 or Mistral)
    /// and validate it.
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
        match family(obj)? {
            Family::Gpt2 => gpt2_from_json(obj),
            f => llama_from_json(obj, f),
        }
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
            ("head_dim", self.head_dim()),
            ("num_key_value_heads", self.kv_heads()),
        ] {
            if v == 0 {
                return Err(Error::Config(format!("{name} must be positive, found 0")));
            }
        }
        if self.arch.head_dim.is_none() && !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::Config(format!(
                "n_embd {} is not divisible by n_head {}",
                self.n_embd, self.n_head
            )));
        }
        if !self.n_head.is_multiple_of(self.kv_heads()) {
            return Err(Error::Config(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.n_head,
                self.kv_heads()
            )));
        }
        if self.arch.rope.is_some() && !self.head_dim().is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head_dim {} is odd: rotary embeddings rotate pairs of channels",
                self.head_dim()
            )));
        }
        if !(self.layer_norm_epsilon.is_finite() && self.layer_norm_epsilon >= 0.0) {
            return Err(Error::Config(format!(
                "the norm epsilon must be finite and non-negative, found {}",
                self.layer_norm_epsilon
            )));
        }
        // Every tensor, and the model as a whole in f32, must be addressable:
        // then no size computed from these (num_params() included) overflows.
        let checked = || -> Option<usize> {
            let c = self.n_embd;
            let wte = self.vocab_size.checked_mul(c)?;
            let wpe = self.n_positions.checked_mul(c)?;
            let hd = self.arch.head_dim.unwrap_or(1);
            let heads = self.n_head.checked_add(self.kv_heads().checked_mul(2)?)?;
            let qkv = c.checked_mul(heads.checked_mul(hd.max(c / self.n_head.max(1)))?)?;
            let fc = c.checked_mul(self.n_inner.checked_mul(2)?)?;
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
        let mut s = format!(
            "vocab_size = {}, n_positions = {}, n_embd = {}, n_layer = {}, n_head = {}, n_inner = {}",
            self.vocab_size, self.n_positions, self.n_embd, self.n_layer, self.n_head, self.n_inner
        );
        if let Some(kv) = self.arch.n_kv_head {
            s += &format!(", num_key_value_heads = {kv}");
        }
        if let Some(hd) = self.arch.head_dim {
            s += &format!(", head_dim = {hd}");
        }
        s
    }

    /// [`Self::num_params`], or None when it overflows.
    fn checked_num_params(&self) -> Option<usize> {
        let (v, p, c, f) = (self.vocab_size, self.n_positions, self.n_embd, self.n_inner);
        let hd = self.arch.head_dim.unwrap_or(c / self.n_head.max(1));
        let q = self.n_head.checked_mul(hd)?;
        let kv = self.kv_heads().checked_mul(hd)?;
        let qkv = q.checked_add(kv.checked_mul(2)?)?;
        let gpt2 = self.is_gpt2();
        let norms = c.checked_mul(if gpt2 { 4 } else { 2 })?;
        let attn = c.checked_mul(qkv)?.checked_add(q.checked_mul(c)?)?;
        let attn_bias = match (gpt2, self.arch.qkv_bias) {
            (true, _) => qkv.checked_add(c)?,
            (false, true) => qkv,
            (false, false) => 0,
        };
        let mlp_in = if gpt2 { f } else { f.checked_mul(2)? };
        let mlp = c.checked_mul(mlp_in)?.checked_add(f.checked_mul(c)?)?;
        let mlp_bias = if gpt2 { f.checked_add(c)? } else { 0 };
        let per_layer = [norms, attn, attn_bias, mlp, mlp_bias]
            .into_iter()
            .try_fold(0usize, usize::checked_add)?;
        let positions = if self.learned_positions() {
            p.checked_mul(c)?
        } else {
            0
        };
        let head = if self.tied_head() {
            0
        } else {
            v.checked_mul(c)?
        };
        let final_norm = c.checked_mul(if gpt2 { 2 } else { 1 })?;
        [
            v.checked_mul(c)?,
            positions,
            self.n_layer.checked_mul(per_layer)?,
            final_norm,
            head,
        ]
        .into_iter()
        .try_fold(0usize, usize::checked_add)
    }

    /// Number of parameters (a tied LM head counted once); 124,439,808 for
    /// "gpt2". [`Self::validate`] makes sure it does not overflow.
    pub fn num_params(&self) -> usize {
        self.checked_num_params()
            .expect("validate() checks that the parameter count fits")
    }
}

/// The family `config.json` names: `architectures[0]`, else `model_type`;
/// GPT-2 when it names neither (the fixtures written before families).
fn family(obj: &Map<String, Value>) -> std::result::Result<Family, String> {
    let arch = obj
        .get("architectures")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str);
    let model_type = obj.get("model_type").and_then(Value::as_str);
    let known = || -> String {
        Family::ALL
            .iter()
            .map(|f| f.architecture())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(a) = arch {
        return Family::ALL
            .into_iter()
            .find(|f| f.architecture() == a)
            .ok_or_else(|| {
                format!(
                    "architecture `{a}` is not supported; wgpipe runs {}",
                    known()
                )
            });
    }
    match model_type {
        None => Ok(Family::Gpt2),
        Some(t) => Family::ALL
            .into_iter()
            .find(|f| f.model_type() == t)
            .ok_or_else(|| format!("model_type `{t}` is not supported; wgpipe runs {}", known())),
    }
}

/// A non-negative integer at `key`.
fn usize_key(obj: &Map<String, Value>, key: &str) -> std::result::Result<usize, String> {
    match obj.get(key) {
        None => Err(format!("missing key `{key}`")),
        Some(v) => v
            .as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| format!("key `{key}` must be a non-negative integer, found {v}")),
    }
}

/// A number at `key`, `default` when it is missing or null.
fn f64_key(obj: &Map<String, Value>, key: &str, default: f64) -> std::result::Result<f64, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_f64()
            .ok_or_else(|| format!("key `{key}` must be a number, found {v}")),
    }
}

/// A boolean at `key`, `default` when it is missing or null.
fn bool_key(
    obj: &Map<String, Value>,
    key: &str,
    default: bool,
) -> std::result::Result<bool, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| format!("key `{key}` must be true or false, found {v}")),
    }
}

fn gpt2_from_json(obj: &Map<String, Value>) -> std::result::Result<Gpt2Config, String> {
    let n_embd = usize_key(obj, "n_embd")?;
    let n_inner = match obj.get("n_inner") {
        None | Some(Value::Null) => n_embd.checked_mul(4).ok_or_else(|| {
            format!("key `n_inner` is null, meaning 4 × n_embd, and 4 × {n_embd} overflows")
        })?,
        Some(_) => usize_key(obj, "n_inner")?,
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
        return Err("key `scale_attn_weights` is false; only scaled attention is supported".into());
    }
    if obj
        .get("scale_attn_by_inverse_layer_idx")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err("key `scale_attn_by_inverse_layer_idx` is true; not supported".into());
    }
    Ok(Gpt2Config {
        vocab_size: usize_key(obj, "vocab_size")?,
        n_positions: usize_key(obj, "n_positions")?,
        n_embd,
        n_layer: usize_key(obj, "n_layer")?,
        n_head: usize_key(obj, "n_head")?,
        n_inner,
        layer_norm_epsilon: f64_key(obj, "layer_norm_epsilon", 1e-5)? as f32,
        arch: Arch::gpt2(),
    })
}

fn llama_from_json(
    obj: &Map<String, Value>,
    family: Family,
) -> std::result::Result<Gpt2Config, String> {
    match obj.get("hidden_act").and_then(Value::as_str) {
        None | Some("silu") => {}
        Some(other) => {
            return Err(format!(
                "key `hidden_act` is `{other}`; only `silu` (the gated SiLU MLP) is supported"
            ))
        }
    }
    for key in ["mlp_bias", "attention_bias"] {
        if bool_key(obj, key, false)? {
            return Err(format!("key `{key}` is true; not supported"));
        }
    }
    let n_head = usize_key(obj, "num_attention_heads")?;
    let n_kv_head = match obj.get("num_key_value_heads") {
        None | Some(Value::Null) => n_head,
        Some(_) => usize_key(obj, "num_key_value_heads")?,
    };
    let head_dim = match obj.get("head_dim") {
        None | Some(Value::Null) => None,
        Some(_) => Some(usize_key(obj, "head_dim")?),
    };
    // Qwen2 windows attention only with `use_sliding_window`; Mistral
    // whenever `sliding_window` is set.
    let window = match obj.get("sliding_window") {
        None | Some(Value::Null) => None,
        Some(_) => Some(usize_key(obj, "sliding_window")?),
    };
    let sliding_window = match family {
        Family::Mistral => window,
        Family::Qwen2 if bool_key(obj, "use_sliding_window", false)? => return Err(
            "key `use_sliding_window` is true; Qwen2's per-layer sliding window is not supported"
                .into(),
        ),
        _ => None,
    };
    Ok(Gpt2Config {
        vocab_size: usize_key(obj, "vocab_size")?,
        n_positions: usize_key(obj, "max_position_embeddings")?,
        n_embd: usize_key(obj, "hidden_size")?,
        n_layer: usize_key(obj, "num_hidden_layers")?,
        n_head,
        n_inner: usize_key(obj, "intermediate_size")?,
        layer_norm_epsilon: f64_key(obj, "rms_norm_eps", 1e-6)? as f32,
        arch: Arch {
            family,
            n_kv_head: Some(n_kv_head),
            head_dim,
            rope: Some(rope(obj)?),
            qkv_bias: family == Family::Qwen2,
            tie_word_embeddings: bool_key(obj, "tie_word_embeddings", false)?,
            sliding_window,
        },
    })
}

/// The rotary embedding's settings: transformers 5's `rope_parameters`
/// (`rope_theta` and the scaling in one object), or the older `rope_theta`
/// and `rope_scaling` keys that published checkpoints carry.
fn rope(obj: &Map<String, Value>) -> std::result::Result<Rope, String> {
    if let Some(rp) = obj.get("rope_parameters").filter(|v| !v.is_null()) {
        let rp = rp
            .as_object()
            .ok_or_else(|| format!("key `rope_parameters` must be an object, found {rp}"))?;
        return Ok(Rope {
            theta: f64_key(rp, "rope_theta", f64_key(obj, "rope_theta", 10000.0)?)?,
            scaling: rope_scaling(rp, "rope_parameters")?,
        });
    }
    let scaling = match obj.get("rope_scaling").filter(|v| !v.is_null()) {
        None => RopeScaling::None,
        Some(rs) => rope_scaling(
            rs.as_object().ok_or_else(|| {
                format!("key `rope_scaling` must be an object or null, found {rs}")
            })?,
            "rope_scaling",
        )?,
    };
    Ok(Rope {
        theta: f64_key(obj, "rope_theta", 10000.0)?,
        scaling,
    })
}

/// A rope scaling object (`key` names where it was found): type `default`,
/// `linear` or `llama3`; any other type is refused by name.
fn rope_scaling(rs: &Map<String, Value>, key: &str) -> std::result::Result<RopeScaling, String> {
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> std::result::Result<f64, String> {
        rs.get(k)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("{key} of type `{kind}` needs a number `{k}`"))
    };
    let count = |k: &str| -> std::result::Result<usize, String> {
        rs.get(k)
            .and_then(Value::as_u64)
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| format!("{key} of type `{kind}` needs a whole number `{k}`"))
    };
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: num("factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: count("original_max_position_embeddings")?,
        }),
        other => Err(format!(
            "{key} type `{other}` is not supported; wgpipe supports `linear` and `llama3`"
        )),
    }
}
