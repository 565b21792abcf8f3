//! The benchmarks, as library calls returning typed rows: the bubble sweep
//! ([`bubble`]), pipelined decode ([`decode`]), every TP × PP layout of N
//! devices ([`layouts`]), one hop between two devices ([`hop`]) and memory
//! over a long run ([`soak`]). The
//! command line prints and writes what they return.

pub mod bubble;
pub mod decode;
pub mod hop;
pub mod layouts;
pub mod serve;
pub mod soak;

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::checkpoint::load_checkpoint;
use crate::model::{Gpt2Config, Gpt2Weights};

/// The benchmark's model shape: per-stage compute well above a transfer of
/// its (T, C) activation (about 35 ms against 0.1 ms on lavapipe, one thread).
pub fn bench_config(layers: usize, seq: usize) -> Gpt2Config {
    Gpt2Config {
        vocab_size: 64,
        n_positions: seq.max(1),
        n_embd: 256,
        n_layer: layers,
        n_head: 4,
        n_inner: 1024,
        layer_norm_epsilon: 1e-5,
        arch: crate::model::config::Arch::gpt2(),
    }
}

/// The model a bench's `--model` / `--checkpoint` / `--layers` pick: a
/// built-in model or a checkpoint directory (its `config.json`) cut to its
/// first `layers` blocks, or (neither) the bench model with `layers` blocks
/// (`default_layers` without) and `n_positions` positions.
pub fn bench_model(
    model: Option<&str>,
    checkpoint: Option<&Path>,
    layers: Option<usize>,
    default_layers: usize,
    n_positions: usize,
) -> Result<Gpt2Config> {
    let mut cfg = match (model, checkpoint) {
        (Some(_), Some(_)) => {
            return Err(Error::Input(
                "--model and --checkpoint name two models; give one".into(),
            ))
        }
        (Some(name), None) => Gpt2Config::named(name)?,
        (None, Some(dir)) => Gpt2Config::from_json_file(&dir.join("config.json"))?,
        (None, None) => return Ok(bench_config(layers.unwrap_or(default_layers), n_positions)),
    };
    if let Some(l) = layers {
        if l == 0 || l > cfg.n_layer {
            return Err(Error::Input(format!(
                "--layers {l}: the model has {} blocks",
                cfg.n_layer
            )));
        }
        cfg.n_layer = l;
    }
    Ok(cfg)
}

/// The weights for [`bench_model`]'s `cfg`: the checkpoint's (its first
/// `cfg.n_layer` blocks), or seeded random ones.
pub fn bench_weights(
    cfg: &Gpt2Config,
    checkpoint: Option<&Path>,
    seed: u64,
) -> Result<Gpt2Weights> {
    let Some(dir) = checkpoint else {
        return Gpt2Weights::init(cfg, seed);
    };
    let mut w = load_checkpoint(dir)?;
    w.layers.truncate(cfg.n_layer);
    w.config = cfg.clone();
    Ok(w)
}

/// The model's name in a bench's titles: the built-in's, the checkpoint
/// directory's, or "bench model".
pub fn bench_name(model: Option<&str>, checkpoint: Option<&Path>) -> String {
    match (model, checkpoint) {
        (Some(name), _) => name.to_string(),
        (None, Some(dir)) => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        (None, None) => "bench model".into(),
    }
}
