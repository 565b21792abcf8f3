//! Training on real devices (lavapipe in CI): the GPU gradients equal the CPU
//! reference's (itself checked against transformers and finite differences
//! in tests/cpu_backward.rs); every training schedule, pipelined over P = 2
//! and 4 with even and uneven microbatches, gives the single-device
//! gradients; the tied token table's two shares meet; the optimizer steps
//! follow transformers' training of the fixtures; and each schedule's
//! activation memory is what its order implies.

mod common;

use wgpipe::cpu::backward::forward_backward;
use wgpipe::device::Gpu;
use wgpipe::executor::{Cluster, DeviceGroup};
use wgpipe::io::{random_input_ids, TokenBatch};
use wgpipe::model::grads::Gpt2Grads;
use wgpipe::model::{Gpt2Config, Gpt2Weights};
use wgpipe::schedule::{Schedule, ScheduleKind};
use wgpipe::workload::train::{Optimizer, TrainOptions, Trainer};

/// tiny's odd shapes with 8 layers, so that P = 4 and P = 2 x v = 2 have work.
fn model() -> Gpt2Weights {
    let mut cfg = Gpt2Config::named("tiny").unwrap();
    cfg.n_layer = 8;
    Gpt2Weights::init(&cfg, 5).unwrap()
}

fn gpus(p: usize) -> Vec<Gpu> {
    (0..p).map(|_| common::gpu()).collect()
}

/// Per tensor: max |got − want| ≤ tol · max |want|.
fn assert_grads_close(got: &Gpt2Grads, want: &Gpt2Grads, cfg: &Gpt2Config, tol: f64, what: &str) {
    for ((name, g, _), (_, w, _)) in got
        .named_tensors(cfg)
        .into_iter()
        .zip(want.named_tensors(cfg))
    {
        let scale = w.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
        let diff = g
            .iter()
            .zip(w.iter())
            .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
        assert!(
            scale > 0.0 && diff <= tol * scale,
            "{what}: {name}: max |Δ| {diff:e} vs max |g| {scale:e}"
        );
    }
}

/// One forward + backward of `tokens` under `kind` over `p` devices.
fn pipelined(
    w: &Gpt2Weights,
    tokens: &TokenBatch,
    kind: ScheduleKind,
    p: usize,
    m: usize,
    v: usize,
    opts: &TrainOptions,
) -> (f64, Gpt2Grads, Vec<u64>) {
    let gpus = gpus(p);
    let groups: Vec<DeviceGroup> = gpus.iter().map(DeviceGroup::single).collect();
    let s = Schedule::generate(kind, p, m, v, false).unwrap();
    let mut t = Trainer::new(
        &groups,
        &Cluster::Local,
        w,
        &s,
        tokens.batch,
        tokens.seq,
        opts,
    )
    .unwrap();
    let run = t.forward_backward(tokens).unwrap();
    let computes = run
        .timeline
        .events
        .iter()
        .filter(|e| e.action.is_some())
        .count();
    assert!(
        computes >= s.actions().count(),
        "{kind} P={p} M={m}: one event per action"
    );
    (
        run.loss,
        t.grads().unwrap(),
        t.peak_activation_bytes().unwrap(),
    )
}

#[test]
fn single_device_gradients_equal_the_cpu_reference() {
    let w = model();
    let tokens = random_input_ids(3, 7, w.config.vocab_size, 2);
    let (loss, grads) = forward_backward(&w, &tokens).unwrap();
    for m in [1, 3] {
        let (gl, gg, _) = pipelined(
            &w,
            &tokens,
            ScheduleKind::Gpipe,
            1,
            m,
            1,
            &Default::default(),
        );
        assert!(
            (gl - loss).abs() <= 1e-5 * loss.abs(),
            "M={m}: loss {gl} vs CPU {loss}"
        );
        assert_grads_close(&gg, &grads, &w.config, 1e-4, &format!("one device, M={m}"));
    }
}

#[test]
fn every_training_schedule_gives_the_single_device_gradients() {
    let w = model();
    // 5 sequences: M = 2 and 3 split them unevenly.
    let tokens = random_input_ids(5, 6, w.config.vocab_size, 3);
    let (loss, reference, _) = pipelined(
        &w,
        &tokens,
        ScheduleKind::Gpipe,
        1,
        1,
        1,
        &Default::default(),
    );
    let cases = [
        (ScheduleKind::Gpipe, 2, 3, 1),
        (ScheduleKind::Gpipe, 4, 5, 1),
        (ScheduleKind::OneFOneB, 2, 2, 1),
        (ScheduleKind::OneFOneB, 4, 5, 1),
        (ScheduleKind::Interleaved, 2, 4, 2),
        (ScheduleKind::ZbH1, 2, 3, 1),
        (ScheduleKind::ZbH1, 4, 5, 1),
    ];
    for (kind, p, m, v) in cases {
        let what = format!("{kind} P={p} M={m} v={v}");
        let tokens = if m > tokens.batch {
            random_input_ids(m, 6, w.config.vocab_size, 3)
        } else {
            tokens.clone()
        };
        let (reference_loss, reference) = if tokens.batch == 5 {
            (loss, reference.clone())
        } else {
            let (l, g, _) = pipelined(
                &w,
                &tokens,
                ScheduleKind::Gpipe,
                1,
                1,
                1,
                &Default::default(),
            );
            (l, g)
        };
        let (l, g, _) = pipelined(&w, &tokens, kind, p, m, v, &Default::default());
        assert!(
            (l - reference_loss).abs() <= 1e-6 * reference_loss.abs(),
            "{what}: loss {l} vs {reference_loss}"
        );
        // Microbatches are summed in another order: not bitwise.
        assert_grads_close(&g, &reference, &w.config, 1e-5, &what);
    }
}

#[test]
fn recompute_gives_the_same_gradients() {
    let w = model();
    let tokens = random_input_ids(4, 6, w.config.vocab_size, 4);
    let opts = TrainOptions {
        recompute: true,
        ..Default::default()
    };
    let (l0, g0, m0) = pipelined(
        &w,
        &tokens,
        ScheduleKind::OneFOneB,
        2,
        4,
        1,
        &Default::default(),
    );
    let (l1, g1, m1) = pipelined(&w, &tokens, ScheduleKind::OneFOneB, 2, 4, 1, &opts);
    // The same kernels on the same inputs: bitwise.
    assert_eq!(l0, l1);
    assert!(g0 == g1, "recomputed gradients differ");
    // Device 0 holds two microbatches under 1F1B: keeping only their
    // stage inputs saves memory. The last device runs each B right after
    // its F and holds one anyway.
    assert!(
        m1[0] < m0[0],
        "device 0: recompute holds {} bytes, not less than {}",
        m1[0],
        m0[0]
    );
    assert!(
        m1[1] <= m0[1],
        "device 1: recompute holds {} bytes, more than {}",
        m1[1],
        m0[1]
    );
}

#[test]
fn activation_memory_follows_the_schedule() {
    let w = model();
    let (p, m) = (2, 8);
    let tokens = random_input_ids(m, 6, w.config.vocab_size, 5);
    let peak = |kind, m| {
        let tokens = random_input_ids(m, 6, w.config.vocab_size, 5);
        pipelined(&w, &tokens, kind, p, m, 1, &Default::default()).2
    };
    // GPipe holds every microbatch: two M's give one microbatch's bytes (A)
    // and the buffers held whatever M is (D: one backward's gradients).
    let (g4, g8) = (peak(ScheduleKind::Gpipe, 4), peak(ScheduleKind::Gpipe, m));
    let per_mb = (g8[0] - g4[0]) / 4;
    assert!(
        per_mb > 0 && (g8[0] - g4[0]) % 4 == 0,
        "GPipe device 0: {g4:?} -> {g8:?}"
    );
    let fixed = g8[0] - m as u64 * per_mb;
    let f1b = peak(ScheduleKind::OneFOneB, m);
    let zb = peak(ScheduleKind::ZbH1, m);
    // 1F1B's device 0 holds at most P microbatches where GPipe holds M.
    assert!(
        f1b[0] - fixed <= (p as u64 * (g8[0] - fixed)) / m as u64,
        "1F1B device 0 {} vs GPipe {} (fixed {fixed}, per microbatch {per_mb})",
        f1b[0],
        g8[0]
    );
    assert!(
        zb[0] <= f1b[0],
        "ZB-H1 device 0 {} > 1F1B {}",
        zb[0],
        f1b[0]
    );
    let _ = tokens;
}

#[test]
fn three_optimizer_steps_follow_the_cpu_update() {
    // Pipelined AdamW steps equal the same steps taken on one device.
    let w = model();
    let tokens = random_input_ids(4, 6, w.config.vocab_size, 6);
    let opt = Optimizer::AdamW {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let losses = |kind, p, m| {
        let gpus = gpus(p);
        let groups: Vec<DeviceGroup> = gpus.iter().map(DeviceGroup::single).collect();
        let s = Schedule::generate(kind, p, m, 1, false).unwrap();
        let mut t =
            Trainer::new(&groups, &Cluster::Local, &w, &s, 4, 6, &Default::default()).unwrap();
        let mut out = Vec::new();
        for _ in 0..3 {
            out.push(t.forward_backward(&tokens).unwrap().loss);
            t.optimizer_step(&opt, Some(1.0)).unwrap();
        }
        out
    };
    let one = losses(ScheduleKind::Gpipe, 1, 1);
    assert!(one[2] < one[0], "loss does not fall: {one:?}");
    for kind in [ScheduleKind::OneFOneB, ScheduleKind::ZbH1] {
        let got = losses(kind, 2, 4);
        for (a, b) in got.iter().zip(&one) {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs(),
                "{kind}: {got:?} vs one device {one:?}"
            );
        }
    }
}

/// transformers' training of a fixture (tests/data/*/train_ref.json, made by
/// scripts/make_hf_fixture.py --train-only in f64): the loss before each of 3
/// optimizer steps, for AdamW and SGD with and without decay and clipping.
fn check_against_transformers(fixture: &str, schedules: &[(ScheduleKind, usize)]) {
    let dir = common::fixture_dir(fixture);
    let w = wgpipe::model::checkpoint::load_checkpoint(&dir).unwrap();
    let tokens = wgpipe::io::read_input_ids(&dir.join("input_ids.safetensors")).unwrap();
    let text = std::fs::read_to_string(dir.join("train_ref.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    for run in reference["runs"].as_array().unwrap() {
        let opt = match run["optimizer"].as_str().unwrap() {
            "adamw" => Optimizer::AdamW {
                lr: f(&run["lr"]),
                beta1: f(&run["betas"][0]),
                beta2: f(&run["betas"][1]),
                eps: f(&run["eps"]),
                weight_decay: f(&run["weight_decay"]),
            },
            "sgd" => Optimizer::Sgd {
                lr: f(&run["lr"]),
                momentum: f(&run["momentum"]),
                weight_decay: f(&run["weight_decay"]),
            },
            other => panic!("unknown optimizer {other}"),
        };
        let clip = run["grad_clip"].as_f64();
        let want: Vec<f64> = run["losses"].as_array().unwrap().iter().map(f).collect();
        for &(kind, v) in schedules {
            let p = 2;
            let m = tokens.batch;
            let gpus = gpus(p);
            let groups: Vec<DeviceGroup> = gpus.iter().map(DeviceGroup::single).collect();
            let s = Schedule::generate(kind, p, m, v, false).unwrap();
            let mut t = Trainer::new(
                &groups,
                &Cluster::Local,
                &w,
                &s,
                tokens.batch,
                tokens.seq,
                &Default::default(),
            )
            .unwrap();
            let mut got = Vec::new();
            for _ in 0..want.len() {
                got.push(t.forward_backward(&tokens).unwrap().loss);
                t.optimizer_step(&opt, clip).unwrap();
            }
            for (g, r) in got.iter().zip(&want) {
                assert!(
                    (g - r).abs() <= 1e-4 * r.abs(),
                    "{fixture} {kind} v={v} {opt:?} clip {clip:?}: losses {got:?}, transformers {want:?}"
                );
            }
        }
    }
}

#[test]
fn training_follows_transformers_for_every_schedule() {
    use ScheduleKind::*;
    check_against_transformers("tiny-gpt2", &[(Gpipe, 1), (OneFOneB, 1), (ZbH1, 1)]);
    check_against_transformers(
        "tiny-gpt2-4l",
        &[(Gpipe, 1), (OneFOneB, 1), (Interleaved, 2), (ZbH1, 1)],
    );
}
