//! Training under tensor parallelism (`train --tp T`, Megatron-LM's split
//! inside each pipeline stage): with T = 2 on one stage and with T = 2 ×
//! P = 2 under 1F1B and ZB-H1 (whose I actions carry the backward's
//! all-reduces), the first step's gradients — merged from the shards and
//! written under the checkpoint's names — equal transformers' within 1e-4
//! per tensor, 3 AdamW steps give its losses within 1e-4 and the weights it
//! ends with; SGD with momentum and global-norm clipping (replicated
//! parameters counted once) follows transformers' run too, under GPipe; a
//! Llama (grouped-query attention, untied head) trains under ZB-H1 and
//! interleaved; a model that does not split is refused with the reason.

mod common;

use std::path::Path;

use common::train::{floats, s, trains_as_transformers as check, wgpipe};

#[test]
fn tp2_on_one_stage_trains_as_transformers_does() {
    check("tiny-gpt2-n-inner", &["--tp", "2", "--devices", "2"], 0);
}

#[test]
fn tp2_by_pp2_trains_as_transformers_does_under_1f1b_and_zb_h1() {
    for schedule in ["1f1b", "zb-h1"] {
        check(
            "tiny-gpt2-n-inner",
            &["--tp", "2", "--devices", "4", "--schedule", schedule],
            0,
        );
    }
}

#[test]
fn tp2_trains_with_sgd_and_clipping_under_gpipe() {
    // train_ref.json's last run: SGD, momentum 0.9, weight decay 0.01,
    // global-norm clipping at 1.0 (which binds on every step).
    check(
        "tiny-gpt2-n-inner",
        &["--tp", "2", "--devices", "4", "--schedule", "gpipe"],
        5,
    );
    // AdamW clipped at 1.0, on one stage.
    check("tiny-gpt2-n-inner", &["--tp", "2", "--devices", "2"], 2);
}

#[test]
fn llama_trains_under_tp2_by_pp2() {
    // Grouped-query attention: 6 query heads, 2 KV heads, one per rank.
    check(
        "tiny-llama",
        &["--tp", "2", "--devices", "4", "--schedule", "zb-h1"],
        0,
    );
    // Interleaved: 2 stages per device group, 4 in all.
    check(
        "tiny-llama",
        &[
            "--tp",
            "2",
            "--devices",
            "4",
            "--schedule",
            "interleaved",
            "--virtual",
            "2",
        ],
        0,
    );
}

#[test]
fn models_that_do_not_split_are_refused() {
    let fails = |fixture: &str, tp: &str, devices: &str, needle: &str| {
        let fx = common::fixture_dir(fixture);
        let ids = fx.join("input_ids.safetensors");
        let out = wgpipe(&[
            "train",
            "--checkpoint",
            s(&fx),
            "--input-ids",
            s(&ids),
            "--tp",
            tp,
            "--devices",
            devices,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{fixture} --tp {tp}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(needle), "{fixture} --tp {tp}: {err}");
    };
    // 3 heads do not split 2 ways.
    fails("tiny-gpt2", "2", "2", "3 attention heads");
    // Qwen2's 4 query heads split 4 ways, its MLP of 46 does not.
    fails("tiny-qwen2", "4", "4", "MLP width 46");
}

/// Qwen2's one KV head is replicated on both ranks (T above the KV heads),
/// as inference does: each replica's k and v gradient is its own query
/// heads' share, summed across the replicas before the step, and counted
/// once in the global norm (the same norm as without --tp).
#[test]
fn qwen2_trains_under_tp2_with_its_kv_head_replicated() {
    check(
        "tiny-qwen2",
        &["--tp", "2", "--devices", "4", "--schedule", "zb-h1"],
        0,
    );
    let fx = common::fixture_dir("tiny-qwen2");
    let ids = fx.join("input_ids.safetensors");
    let norms = |layout: &[&str]| {
        let mut a = vec![
            "train",
            "--checkpoint",
            s(&fx),
            "--input-ids",
            s(&ids),
            "--steps",
            "2",
            "--grad-clip",
            "1000",
            "--json",
        ];
        a.extend(layout);
        let out = wgpipe(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{a:?}: {err}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        floats(&j["grad_norms"])
    };
    let (one, tp) = (
        norms(&["--devices", "1"]),
        norms(&["--tp", "2", "--devices", "2"]),
    );
    assert_eq!(one.len(), 2);
    for (a, b) in one.iter().zip(&tp) {
        assert!((a - b).abs() <= 1e-5 * a, "norms {one:?} vs --tp 2 {tp:?}");
    }
}

#[test]
fn bench_bubble_and_bench_layouts_time_training_under_tp() {
    // bench bubble --train --tp 2: TP 2 x PP 2, 1F1B and ZB-H1 at M = 2.
    let out = wgpipe(&[
        "bench",
        "bubble",
        "--train",
        "--tp",
        "2",
        "--devices",
        "4",
        "--schedule",
        "1f1b,zb-h1",
        "--microbatches",
        "2",
        "--layers-per-stage",
        "1",
        "--seq",
        "8",
        "--repeat",
        "1",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench bubble --train --tp 2: {err}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{j}");
    for r in rows {
        assert_eq!(r["train"], true);
        let measured = r["bubble_measured"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&measured), "{r}");
    }

    // bench layouts --devices 2: a training step for PP 2 and for TP 2,
    // with PP's bytes sent and TP's bytes all-reduced.
    let out = wgpipe(&[
        "bench",
        "layouts",
        "--devices",
        "2",
        "--batch",
        "2",
        "--seq",
        "8",
        "--max-new-tokens",
        "2",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench layouts: {err}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{j}");
    for r in rows {
        assert!(r["train_step_ms"].as_f64().is_some_and(|x| x > 0.0), "{r}");
        let (sent, reduced) = (
            r["train_sent_bytes"].as_u64().unwrap(),
            r["train_reduced_bytes"].as_u64().unwrap(),
        );
        // (B*T, C) f32 messages: 2 x 8 rows x 256 wide.
        let msg = 2 * 8 * 256 * 4;
        match (r["tp"].as_u64().unwrap(), r["pp"].as_u64().unwrap()) {
            // 1F1B over 2 microbatches of one sequence: F and B, 2 each.
            (1, 2) => assert_eq!((sent, reduced), (4 * msg / 2, 0), "{r}"),
            // One microbatch: (N, C) sums after the embedding, 2 per block
            // in F and in I, the head's in I; the loss's (N, 2) and (N, T);
            // out and back, on both ranks.
            (2, 1) => {
                let n = 16;
                let sums = (1 + 2 * 4 + 2 * 4 + 1) * msg + (2 * n + 2 * n) * 4;
                assert_eq!((sent, reduced), (0, 2 * 2 * sums), "{r}");
            }
            other => panic!("layout {other:?}"),
        }
    }
}

#[test]
fn tp2_by_pp2_trains_with_recompute() {
    check(
        "tiny-gpt2-n-inner",
        &[
            "--tp",
            "2",
            "--devices",
            "4",
            "--schedule",
            "1f1b",
            "--recompute",
        ],
        0,
    );
}

/// `train --tp 2` saved after 2 steps and resumed for 2 more gives the
/// 4-step run's losses and checkpoint bit for bit (the saved moments are
/// whole tensors, split again on the way in); a run saved without --tp
/// resumes under --tp 2 to the same losses within float rounding.
#[test]
fn tp_training_resumes_from_its_own_state_and_from_another_layout() {
    let fx = common::fixture_dir("tiny-gpt2-n-inner");
    let ids = fx.join("input_ids.safetensors");
    let dir = tempfile::tempdir().unwrap();
    let train = |steps: &str, save: &Path, layout: &[&str], resume: Option<&Path>| {
        let mut a = vec![
            "train",
            "--checkpoint",
            s(&fx),
            "--input-ids",
            s(&ids),
            "--steps",
            steps,
            "--grad-clip",
            "1.0",
            "--save",
            s(save),
            "--json",
        ];
        a.extend(layout);
        if let Some(r) = resume {
            a.extend(["--resume", s(r)]);
        }
        let out = wgpipe(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{a:?}: {err}");
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        floats(&j["losses"])
    };
    // An even split: auto times the devices, and another split sums the
    // clipping norm's terms in another order.
    let tp = [
        "--tp",
        "2",
        "--devices",
        "4",
        "--schedule",
        "1f1b",
        "--split",
        "even",
    ];
    let whole = dir.path().join("whole");
    let all = train("4", &whole, &tp, None);
    let part = dir.path().join("part");
    let first = train("2", &part, &tp, None);
    let rest = train("4", &part, &tp, Some(&part));
    assert_eq!([first, rest].concat(), all);
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(model(&whole) == model(&part), "resumed weights differ");

    let plain = dir.path().join("plain");
    train("2", &plain, &["--devices", "2"], None);
    let rest = train("4", &plain, &tp, Some(&plain));
    for (g, w) in rest.iter().zip(&all[2..]) {
        assert!((g - w).abs() <= 1e-5 * w.abs(), "{rest:?} vs {all:?}");
    }
}
