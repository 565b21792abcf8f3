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

use crate::error::{Error, Result};
use crate::model::Gpt2Config;

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

/// The model a bench's `--model` / `--layers` pick: a built-in model cut to
/// its first `layers` blocks, or (no `--model`) the bench model with
/// `layers` blocks (`default_layers` without) and `n_positions` positions.
pub fn bench_model(
    model: Option<&str>,
    layers: Option<usize>,
    default_layers: usize,
    n_positions: usize,
) -> Result<Gpt2Config> {
    let Some(name) = model else {
        return Ok(bench_config(layers.unwrap_or(default_layers), n_positions));
    };
    let mut cfg = Gpt2Config::named(name)?;
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
