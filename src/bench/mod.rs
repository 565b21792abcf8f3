//! The benchmarks, as library calls returning typed rows: the bubble sweep
//! ([`bubble`]), pipelined decode ([`decode`]), every TP × PP layout of N
//! devices ([`layouts`]) and one hop between two devices ([`hop`]). The
//! command line prints and writes what they return.

pub mod bubble;
pub mod decode;
pub mod hop;
pub mod layouts;

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

/// Rows as CSV, the one way every bench writes it: a header of the rows'
/// field names (their `Serialize` form, in declaration order), then a line
/// per row. A list is one cell of `;`-separated values (a CSV cell cannot
/// nest), a missing value an empty cell.
pub fn csv<T: serde::Serialize>(rows: &[T]) -> Result<String> {
    let bad = |e: String| Error::Other(format!("bench CSV: {e}"));
    let mut w = ::csv::Writer::from_writer(Vec::new());
    for (i, r) in rows.iter().enumerate() {
        let serde_json::Value::Object(fields) =
            serde_json::to_value(r).map_err(|e| bad(e.to_string()))?
        else {
            return Err(bad("a row is not a struct".into()));
        };
        if i == 0 {
            w.write_record(fields.keys())
                .map_err(|e| bad(e.to_string()))?;
        }
        w.write_record(fields.values().map(cell))
            .map_err(|e| bad(e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| bad(e.error().to_string()))?;
    String::from_utf8(bytes).map_err(|e| bad(e.to_string()))
}

/// One CSV cell of a JSON value.
fn cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}
