//! Training the Llama family end to end through `wgpipe train`: for a
//! Llama (untied head, grouped-query attention, 4 blocks), a Qwen2 (q/k/v
//! biases, tied head, one KV head, head_dim 10, a bf16 file) and a Mistral
//! (sliding window 5 under T = 9, an f16 file), pipelined with each kind of
//! schedule: the losses of 3 AdamW steps equal transformers' (f64) within
//! 1e-4 relative, `--grads-out` writes the first step's gradients under the
//! checkpoint's names within 1e-4 of transformers', and `--save` writes the
//! trained weights transformers ends with, as a checkpoint `forward` loads.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn wgpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run wgpipe")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn tensors(path: &Path) -> Vec<(String, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f64>)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n.clone(), common::tensor_f64(&n, &t)))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn check(fixture: &str, devices: &str, schedule: &[&str]) {
    let fx = common::fixture_dir(fixture);
    let dir = tempfile::tempdir().unwrap();
    let (grads, saved) = (
        dir.path().join("grads.safetensors"),
        dir.path().join("trained"),
    );
    let what = format!("{fixture} --devices {devices} {schedule:?}");
    let ids = fx.join("input_ids.safetensors");
    let mut args = vec![
        "train",
        "--checkpoint",
        s(&fx),
        "--input-ids",
        s(&ids),
        "--devices",
        devices,
        "--steps",
        "3",
        "--lr",
        "1e-3",
        "--weight-decay",
        "0.1",
        "--grads-out",
        s(&grads),
        "--save",
        s(&saved),
        "--json",
    ];
    args.extend(schedule);
    let out = wgpipe(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what}: {err}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = std::fs::read_to_string(fx.join("train_ref.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let run = &reference["runs"][0];
    assert_eq!(run["optimizer"], "adamw");
    let floats = |v: &serde_json::Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let (got, want) = (floats(&j["losses"]), floats(&run["losses"]));
    assert_eq!(got.len(), 3, "{what}");
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs(),
            "{what}: losses {got:?}, transformers {want:?}"
        );
    }

    // The first step's gradients, tensor by tensor, under transformers' names.
    let want: Vec<_> = tensors(&fx.join("loss_grads.safetensors"))
        .into_iter()
        .filter(|(n, _)| n != "loss")
        .collect();
    let got = tensors(&grads);
    let names = |v: &[(String, Vec<f64>)]| v.iter().map(|t| t.0.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{what}: gradient names");
    for ((name, g), (_, w)) in got.iter().zip(&want) {
        let scale = w.iter().fold(0f64, |m, x| m.max(x.abs()));
        let diff = g.iter().zip(w).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * scale,
            "{what}: {name}: max |Δ| {diff:e} vs max |g| {scale:e}"
        );
    }

    // The weights after 3 steps: Σw² of every tensor as transformers ends.
    let sums = &run["param_checksums"];
    let trained = tensors(&saved.join("model.safetensors"));
    assert_eq!(
        trained.len(),
        sums.as_object().unwrap().len(),
        "{what}: saved tensors"
    );
    for (name, t) in &trained {
        let want = sums[name]["sum_sq"]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: no checksum for {name}"));
        let got: f64 = t.iter().map(|x| x * x).sum();
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "{what}: {name}: Σw² {got} vs transformers {want}"
        );
    }
    let logits = dir.path().join("logits.safetensors");
    let out = wgpipe(&[
        "forward",
        "--checkpoint",
        s(&saved),
        "--input-ids",
        s(&ids),
        "--logits-out",
        s(&logits),
    ]);
    assert!(
        out.status.success(),
        "{what}: forward on the saved checkpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
