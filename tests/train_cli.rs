//! `wgpipe train` end to end: its losses follow transformers' training of
//! the fixture, `--grads-out` writes transformers' gradients, `--save` writes
//! a checkpoint that `forward` loads, `--data` reads a token stream; and bad
//! input ends in a clear error with nothing written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn wgpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run wgpipe")
}

fn ok_json(out: &Output) -> serde_json::Value {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wgpipe failed: {err}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"))
}

/// A clean failure (exit 1, no panic) whose message has every needle.
fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error message lacks {n:?}: {err}");
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgpipe-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn train_follows_transformers_writes_its_gradients_and_a_checkpoint_forward_loads() {
    let fx = common::fixture_dir("tiny-gpt2");
    let ids = fx.join("input_ids.safetensors");
    let dir = tmpdir("save");
    let grads = dir.join("grads.safetensors");
    let saved = dir.join("trained");
    // train_ref.json's first run: AdamW, lr 1e-3, weight decay 0.1, 3 steps.
    let out = wgpipe(&[
        "train",
        "--checkpoint",
        s(&fx),
        "--input-ids",
        s(&ids),
        "--devices",
        "2",
        "--schedule",
        "zb-h1",
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
    ]);
    let j = ok_json(&out);
    let text = std::fs::read_to_string(fx.join("train_ref.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let run = &reference["runs"][0];
    assert_eq!(
        (run["optimizer"].as_str(), run["weight_decay"].as_f64()),
        (Some("adamw"), Some(0.1))
    );
    let want: Vec<f64> = run["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let got: Vec<f64> = j["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(&want) {
        assert!(
            (g - w).abs() <= 1e-4 * w.abs(),
            "losses {got:?}, transformers {want:?}"
        );
    }
    assert_eq!(j["schedule"], "zb-h1");
    assert_eq!(
        (
            j["devices"].as_u64(),
            j["microbatches"].as_u64(),
            j["virtual"].as_u64()
        ),
        (Some(2), Some(2), Some(1))
    );
    for key in [
        "step_ms",
        "tokens_per_s",
        "bubble_measured",
        "bubble_simulated",
        "bubble_analytic",
    ] {
        assert!(
            j[key].as_f64().is_some_and(f64::is_finite),
            "{key}: {}",
            j[key]
        );
    }
    let peak = j["peak_activation_bytes"].as_array().unwrap();
    assert!(
        peak.len() == 2 && peak.iter().all(|b| b.as_u64().unwrap() > 0),
        "{peak:?}"
    );

    // --grads-out: the first step's gradients, transformers' names and values.
    let bytes = std::fs::read(&grads).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let reference = fx.join("loss_grads.safetensors");
    let ref_bytes = std::fs::read(&reference).unwrap();
    let ref_st = safetensors::SafeTensors::deserialize(&ref_bytes).unwrap();
    let names: Vec<String> = ref_st
        .names()
        .into_iter()
        .filter(|n| *n != "loss")
        .map(String::from)
        .collect();
    assert_eq!(st.names().len(), names.len(), "one gradient per parameter");
    for name in names {
        let want = common::tensor_f64(&name, &ref_st.tensor(&name).unwrap());
        let got = common::tensor_f64(
            &name,
            &st.tensor(&name).unwrap_or_else(|e| panic!("{name}: {e}")),
        );
        let scale = want.iter().fold(0f64, |m, x| m.max(x.abs()));
        let diff = got
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            diff <= 1e-4 * scale,
            "{name}: max |Δ| {diff:e} vs max |g| {scale:e}"
        );
    }

    // --save: the weights after 3 steps, as transformers' run ends with them.
    let w = wgpipe::model::checkpoint::load_checkpoint(&saved).unwrap();
    let sums = &run["param_checksums"];
    for (name, t, _) in w.named_tensors() {
        let c = &sums[format!("transformer.{name}")];
        let want = c["sum_sq"]
            .as_f64()
            .unwrap_or_else(|| panic!("no checksum for {name}"));
        let got: f64 = t.iter().map(|&x| x as f64 * x as f64).sum();
        // The key part of c_attn's bias has a true gradient of zero (softmax
        // ignores a constant added to every score of a row): what the f32 and
        // f64 runs see there is rounding noise, which AdamW normalises into
        // updates of ±lr. Every other tensor agrees to ~1e-7.
        let tol = if name.ends_with("attn.c_attn.bias") {
            2e-3
        } else {
            1e-5
        };
        assert!(
            (got - want).abs() <= tol * want,
            "{name}: Σw² {got} vs transformers {want}"
        );
    }
    let logits = dir.join("logits.safetensors");
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
        "forward on the saved checkpoint: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logits.is_file());
}

#[test]
fn train_on_a_token_stream_with_recompute_and_sgd() {
    let dir = tmpdir("data");
    let data = dir.join("train.bin");
    let tokens: Vec<u16> = (0..500u16).map(|i| (i * 7 + i / 5) % 97).collect();
    wgpipe::data::write_token_file(&data, &tokens).unwrap();
    let out = wgpipe(&[
        "train",
        "--model",
        "tiny",
        "--data",
        s(&data),
        "--batch",
        "4",
        "--seq",
        "12",
        "--devices",
        "2",
        "--schedule",
        "gpipe",
        "--microbatches",
        "4",
        "--steps",
        "4",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--momentum",
        "0.9",
        "--recompute",
        "--grad-clip",
        "1.0",
        "--json",
    ]);
    let j = ok_json(&out);
    let losses: Vec<f64> = j["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(losses.len(), 4);
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "{losses:?}"
    );
    assert_eq!(j["recompute"], true);
    assert_eq!(j["grad_norms"].as_array().unwrap().len(), 4);
}

#[test]
fn bad_training_input_is_refused_with_nothing_written() {
    let dir = tmpdir("bad");
    let base = [
        "train",
        "--model",
        "tiny",
        "--batch",
        "2",
        "--seq",
        "8",
        "--devices",
        "2",
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        wgpipe(&a)
    };
    fails_with(&with(&["--steps", "0"]), &["--steps"]);
    fails_with(&with(&["--lr", "0"]), &["--lr", "positive"]);
    fails_with(&with(&["--lr", "NaN"]), &["--lr"]);
    fails_with(&with(&["--beta2", "1.5"]), &["--beta2"]);
    fails_with(&with(&["--grad-clip=-1"]), &["--grad-clip"]);
    fails_with(
        &wgpipe(&[
            "train",
            "--model",
            "tiny",
            "--batch",
            "2",
            "--seq",
            "1",
            "--devices",
            "2",
        ]),
        &["at least 2 tokens"],
    );
    fails_with(
        &with(&["--schedule", "zb-h1", "--recompute"]),
        &["--recompute", "zb-h1"],
    );
    fails_with(
        &with(&[
            "--schedule",
            "interleaved",
            "--virtual",
            "2",
            "--microbatches",
            "1",
        ]),
        &["multiple"],
    );

    // A --save directory that holds something: refused before any work, untouched.
    let keep = dir.join("mine");
    std::fs::create_dir_all(&keep).unwrap();
    std::fs::write(keep.join("model.safetensors"), b"precious").unwrap();
    fails_with(
        &with(&["--save", s(&keep)]),
        &["--save", "not an empty directory"],
    );
    assert_eq!(
        std::fs::read(keep.join("model.safetensors")).unwrap(),
        b"precious"
    );

    // Token files: odd length, ids past the vocabulary, too short a stream.
    let odd = dir.join("odd.bin");
    std::fs::write(&odd, [1u8, 0, 2]).unwrap();
    fails_with(&with(&["--data", s(&odd)]), &["odd.bin", "uint16"]);
    let big = dir.join("big.bin");
    wgpipe::data::write_token_file(&big, &[1, 2, 300, 4, 5, 6, 7, 8, 9, 10]).unwrap();
    fails_with(&with(&["--data", s(&big)]), &["big.bin", "300", "vocab"]);
    let short = dir.join("short.bin");
    wgpipe::data::write_token_file(&short, &[1, 2, 3]).unwrap();
    fails_with(&with(&["--data", s(&short)]), &["needs at least 8 tokens"]);

    // Failures after setup leave no output files behind.
    let grads = dir.join("g.safetensors");
    fails_with(&with(&["--lr=-3", "--grads-out", s(&grads)]), &["--lr"]);
    assert!(!grads.exists());
}
