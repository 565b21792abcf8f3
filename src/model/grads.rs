//! What the CPU reference and the devices share about training, at the
//! model's level: the gradient of every parameter in checkpoint layout
//! ([`Gpt2Grads`]) and the next-token targets a batch trains on
//! ([`next_token_targets`], [`NO_TARGET`]).

use std::path::Path;

use crate::error::Result;
use crate::model::config::Gpt2Config;
use crate::model::weights::{named_model_tensors, LayerWeights};

/// Target of a row that predicts nothing (the last position of a sequence, or
/// a padding row): no loss, no gradient. Like transformers' ignore_index -100.
pub const NO_TARGET: u32 = u32::MAX;

/// Gradients of every parameter: the same tensors, shapes and checkpoint
/// names as [`Gpt2Weights`]. `wte` holds both the embedding's and the tied
/// LM head's share, as transformers reports it. Layer gradients reuse
/// [`LayerWeights`] as their container.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Grads {
    pub wte: Vec<f32>,             // (V, C)
    pub wpe: Vec<f32>,             // (maxT, C), learned positions only
    pub layers: Vec<LayerWeights>, // (L)
    pub ln_f_g: Vec<f32>,          // (C)
    pub ln_f_b: Vec<f32>,          // (C), LayerNorm only
    pub lm_head: Vec<f32>,         // (V, C), an untied head only
}

impl Gpt2Grads {
    /// All-zero gradients for a model of this config.
    pub fn zeros(cfg: &Gpt2Config) -> Self {
        let (v, p, c) = (cfg.vocab_size, cfg.n_positions, cfg.n_embd);
        let layer = LayerWeights::try_from_fn(cfg, |_, shape| {
            Ok::<_, std::convert::Infallible>(vec![0.0; shape.iter().product()])
        })
        .unwrap_or_else(|never| match never {});
        let sized = |present: bool, n: usize| vec![0.0; if present { n } else { 0 }];
        Gpt2Grads {
            wte: vec![0.0; v * c],
            wpe: sized(cfg.learned_positions(), p * c),
            layers: vec![layer; cfg.n_layer],
            ln_f_g: vec![0.0; c],
            ln_f_b: sized(cfg.is_gpt2(), c),
            lm_head: sized(!cfg.tied_head(), v * c),
        }
    }

    /// Every gradient with the name of its parameter (as
    /// [`Gpt2Weights::named_tensors`]: `wte.weight`, `h.N.…`, `ln_f.…`) and
    /// its shape, in checkpoint order.
    pub fn named_tensors(&self, cfg: &Gpt2Config) -> Vec<(String, &Vec<f32>, Vec<usize>)> {
        named_model_tensors(
            cfg,
            [&self.wte, &self.wpe],
            &self.layers,
            [&self.ln_f_g, &self.ln_f_b],
            &self.lm_head,
        )
    }

    /// Write the gradients as one safetensors file under the checkpoint's
    /// names, as transformers' `named_parameters` reports them
    /// (`transformer.wte.weight`, …; a Llama's `model.layers.0.self_attn.q_proj.weight`, …).
    pub fn save(&self, cfg: &Gpt2Config, path: &Path) -> Result<()> {
        let tensors = crate::model::layout::to_checkpoint(cfg, &self.named_tensors(cfg));
        let named: Vec<(String, &Vec<f32>, Vec<usize>)> = tensors
            .iter()
            .map(|(n, t, s)| (n.clone(), t, s.clone()))
            .collect();
        let prefix = match cfg.is_gpt2() {
            true => crate::model::checkpoint::PREFIX,
            false => "",
        };
        crate::io::write_named_tensors(path, &named, prefix)
    }
}

/// Next-token targets of a (B, T) batch, row-major like the ids: row (b, t)
/// targets ids[b, t+1]; the last position of each sequence, and every row of
/// sequences b >= `real` (padding), get [`NO_TARGET`].
pub fn next_token_targets(ids: &[u32], b: usize, t: usize, real: usize) -> Vec<u32> {
    assert_eq!(ids.len(), b * t, "next_token_targets: ids");
    let mut targets = vec![NO_TARGET; b * t];
    for bi in 0..real.min(b) {
        for ti in 0..t.saturating_sub(1) {
            targets[bi * t + ti] = ids[bi * t + ti + 1];
        }
    }
    targets
}
