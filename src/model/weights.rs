//! GPT-2 parameters in host memory, and a deterministic seeded init.
//!
//! V = vocab_size, maxT = n_positions, C = n_embd, F = n_inner, L = n_layer.
//! Linear weights use the Hugging Face Conv1D layout [in, out], row-major:
//! y[j] = b[j] + sum_k x[k] * w[k * out + j].

use crate::error::Result;
use crate::model::config::Gpt2Config;

/// One transformer block; Conv1D layout [in, out] row-major, like the HF checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    pub ln_1_g: Vec<f32>,      // (C)
    pub ln_1_b: Vec<f32>,      // (C)
    pub c_attn_w: Vec<f32>,    // (C, 3C)
    pub c_attn_b: Vec<f32>,    // (3C)
    pub attn_proj_w: Vec<f32>, // (C, C)
    pub attn_proj_b: Vec<f32>, // (C)
    pub ln_2_g: Vec<f32>,      // (C)
    pub ln_2_b: Vec<f32>,      // (C)
    pub c_fc_w: Vec<f32>,      // (C, F)
    pub c_fc_b: Vec<f32>,      // (F)
    pub mlp_proj_w: Vec<f32>,  // (F, C)
    pub mlp_proj_b: Vec<f32>,  // (C)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Weights {
    pub config: Gpt2Config,
    pub wte: Vec<f32>,             // (V, C), also the tied LM head
    pub wpe: Vec<f32>,             // (maxT, C)
    pub layers: Vec<LayerWeights>, // (L)
    pub ln_f_g: Vec<f32>,          // (C)
    pub ln_f_b: Vec<f32>,          // (C)
}

impl LayerWeights {
    /// (name as in the HF checkpoint after `h.N.`, tensor, expected shape),
    /// in checkpoint order. The single list used by load and save.
    pub fn named_tensors(&self, cfg: &Gpt2Config) -> [(&'static str, &Vec<f32>, Vec<usize>); 12] {
        let (c, f) = (cfg.n_embd, cfg.n_inner);
        [
            ("ln_1.weight", &self.ln_1_g, vec![c]),
            ("ln_1.bias", &self.ln_1_b, vec![c]),
            ("attn.c_attn.weight", &self.c_attn_w, vec![c, 3 * c]),
            ("attn.c_attn.bias", &self.c_attn_b, vec![3 * c]),
            ("attn.c_proj.weight", &self.attn_proj_w, vec![c, c]),
            ("attn.c_proj.bias", &self.attn_proj_b, vec![c]),
            ("ln_2.weight", &self.ln_2_g, vec![c]),
            ("ln_2.bias", &self.ln_2_b, vec![c]),
            ("mlp.c_fc.weight", &self.c_fc_w, vec![c, f]),
            ("mlp.c_fc.bias", &self.c_fc_b, vec![f]),
            ("mlp.c_proj.weight", &self.mlp_proj_w, vec![f, c]),
            ("mlp.c_proj.bias", &self.mlp_proj_b, vec![c]),
        ]
    }
}

impl Gpt2Weights {
    /// Every tensor with its HF name (without the `transformer.` prefix) and
    /// expected shape: wte, wpe, h.N.*, ln_f.*.
    pub fn named_tensors(&self) -> Vec<(String, &Vec<f32>, Vec<usize>)> {
        let cfg = &self.config;
        let c = cfg.n_embd;
        let mut out = vec![
            ("wte.weight".to_string(), &self.wte, vec![cfg.vocab_size, c]),
            (
                "wpe.weight".to_string(),
                &self.wpe,
                vec![cfg.n_positions, c],
            ),
        ];
        for (l, layer) in self.layers.iter().enumerate() {
            for (name, t, shape) in layer.named_tensors(cfg) {
                out.push((format!("h.{l}.{name}"), t, shape));
            }
        }
        out.push(("ln_f.weight".to_string(), &self.ln_f_g, vec![c]));
        out.push(("ln_f.bias".to_string(), &self.ln_f_b, vec![c]));
        out
    }

    /// Deterministic GPT-2-style init: weights ~ N(0, 0.02), the two residual
    /// projections (attn c_proj, mlp c_proj) scaled by 1/sqrt(2L). Unlike
    /// GPT-2, LayerNorm gains are 1 + N(0, 0.1) and biases and LN betas are
    /// N(0, 0.02), so that tests exercise them.
    pub fn init(config: &Gpt2Config, seed: u64) -> Result<Self> {
        config.validate()?;
        let (v, p, c, f) = (
            config.vocab_size,
            config.n_positions,
            config.n_embd,
            config.n_inner,
        );
        let mut rng = Rng::new(seed);
        let std = 0.02f32;
        let proj_std = std / (2.0 * config.n_layer as f32).sqrt();
        let wte = rng.normal_vec(v * c, 0.0, std);
        let wpe = rng.normal_vec(p * c, 0.0, std);
        let mut layers = Vec::with_capacity(config.n_layer);
        for _ in 0..config.n_layer {
            layers.push(LayerWeights {
                ln_1_g: rng.normal_vec(c, 1.0, 0.1),
                ln_1_b: rng.normal_vec(c, 0.0, std),
                c_attn_w: rng.normal_vec(c * 3 * c, 0.0, std),
                c_attn_b: rng.normal_vec(3 * c, 0.0, std),
                attn_proj_w: rng.normal_vec(c * c, 0.0, proj_std),
                attn_proj_b: rng.normal_vec(c, 0.0, std),
                ln_2_g: rng.normal_vec(c, 1.0, 0.1),
                ln_2_b: rng.normal_vec(c, 0.0, std),
                c_fc_w: rng.normal_vec(c * f, 0.0, std),
                c_fc_b: rng.normal_vec(f, 0.0, std),
                mlp_proj_w: rng.normal_vec(f * c, 0.0, proj_std),
                mlp_proj_b: rng.normal_vec(c, 0.0, std),
            });
        }
        Ok(Gpt2Weights {
            config: config.clone(),
            wte,
            wpe,
            layers,
            ln_f_g: rng.normal_vec(c, 1.0, 0.1),
            ln_f_b: rng.normal_vec(c, 0.0, std),
        })
    }
}

/// splitmix64: small, fast, deterministic across platforms. Crate-internal;
/// also used for random token ids.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), 53 bits.
    fn uniform_pm1(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
    }

    /// `n` samples of N(mean, std) by Marsaglia's polar method (Box-Muller
    /// without trigonometry), both outputs of each pair used.
    fn normal_vec(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let (u, v) = (self.uniform_pm1(), self.uniform_pm1());
            let s = u * u + v * v;
            if s >= 1.0 || s == 0.0 {
                continue;
            }
            let f = (-2.0 * s.ln() / s).sqrt();
            out.push(mean + std * (u * f) as f32);
            if out.len() < n {
                out.push(mean + std * (v * f) as f32);
            }
        }
        out
    }
}
