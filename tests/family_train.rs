//! Training the Llama family end to end through `wgpipe train`: for a
//! Llama (untied head, grouped-query attention, 4 blocks), a Qwen2 (q/k/v
//! biases, tied head, one KV head, head_dim 10, a bf16 file) and a Mistral
//! (sliding window 5 under T = 9, an f16 file), pipelined with each kind of
//! schedule: the losses of 3 AdamW steps equal transformers' (f64) within
//! 1e-4 relative, `--grads-out` writes the first step's gradients under the
//! checkpoint's names within 1e-4 of transformers', and `--save` writes the
//! trained weights transformers ends with, as a checkpoint `forward` loads.

mod common;

use common::train::trains_as_transformers;

/// 3 AdamW steps of `fixture` over `devices` with `schedule`, against the
/// fixture's first transformers run.
fn check(fixture: &str, devices: &str, schedule: &[&str]) {
    let mut args = vec!["--devices", devices];
    args.extend(schedule);
    trains_as_transformers(fixture, &args, 0);
}

#[test]
fn llama_trains_as_transformers_does() {
    check("tiny-llama", "2", &["--schedule", "1f1b"]);
    check(
        "tiny-llama",
        "2",
        &["--schedule", "interleaved", "--virtual", "2"],
    );
}

#[test]
fn qwen2_trains_as_transformers_does() {
    check("tiny-qwen2", "2", &["--schedule", "zb-h1"]);
}

#[test]
fn mistral_trains_as_transformers_does() {
    check("tiny-mistral", "2", &["--schedule", "gpipe"]);
}
