//! The executor on real devices (lavapipe in CI): pipelined logits equal the
//! single-device forward, every forward-capable schedule, P = 2 and 4,
//! M = 1, 3, 8, contiguous and interleaved; a Vulkan + GL pipeline; the
//! trace is well formed. (Failures stopping the run: src/executor/tests.rs.)

mod common;

use wgpipe::device::Gpu;
use wgpipe::executor::{run_pipeline, Options};
use wgpipe::io::{random_input_ids, TokenBatch};
use wgpipe::model::{gpu, Gpt2Config, Gpt2Weights};
use wgpipe::schedule::{Schedule, ScheduleKind};

/// tiny's odd shapes, with 8 layers so that P=4 and P=2 x v=2 have work.
fn model() -> Gpt2Weights {
    let mut cfg = Gpt2Config::named("tiny").unwrap();
    cfg.n_layer = 8;
    Gpt2Weights::init(&cfg, 11).unwrap()
}

fn gpus(p: usize) -> Vec<Gpu> {
    (0..p).map(|_| common::gpu()).collect()
}

fn single(w: &Gpt2Weights, tokens: &TokenBatch) -> Vec<f32> {
    gpu::forward(&common::gpu(), w, tokens, tokens.batch)
        .unwrap()
        .logits
}

fn check(
    w: &Gpt2Weights,
    gpus: &[Gpu],
    tokens: &TokenBatch,
    reference: &[f32],
    name: &str,
    m: usize,
    v: usize,
) {
    let s = Schedule::for_inference(name.parse().unwrap(), gpus.len(), m, v).unwrap();
    let run = run_pipeline(gpus, w, tokens, &s, &Options::default()).unwrap();
    // Same kernels, same per-row arithmetic: bitwise equal.
    assert!(
        run.logits == reference,
        "{name} P={} M={m} v={v}: pipelined logits differ from the single-device forward",
        gpus.len()
    );
    let computes = run
        .timeline
        .events
        .iter()
        .filter(|e| e.action.is_some_and(|a| e.name == a.to_string()))
        .count();
    assert_eq!(computes, s.stages() * m, "one compute event per action");
}

#[test]
fn every_schedule_matches_the_single_device_forward() {
    let w = model();
    let tokens = random_input_ids(8, 7, w.config.vocab_size, 5);
    let reference = single(&w, &tokens);
    for p in [2, 4] {
        let g = gpus(p);
        for m in [1, 3, 8] {
            for name in ["gpipe", "1f1b", "zb-h1"] {
                check(&w, &g, &tokens, &reference, name, m, 1);
            }
            check(&w, &g, &tokens, &reference, "interleaved", m, 2);
        }
    }
}

#[test]
fn one_device_holding_every_chunk() {
    // P=1, v=2: the hand-over between chunks stays on the device.
    let w = model();
    let tokens = random_input_ids(3, 5, w.config.vocab_size, 6);
    let reference = single(&w, &tokens);
    check(&w, &gpus(1), &tokens, &reference, "interleaved", 3, 2);
}

#[test]
fn uneven_microbatches_and_explicit_split() {
    let w = model();
    let tokens = random_input_ids(5, 6, w.config.vocab_size, 7);
    let reference = single(&w, &tokens);
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 3, 3, 1).unwrap();
    let opts = Options {
        split: Some(vec![1, 5, 2]),
    };
    let run = run_pipeline(&gpus(3), &w, &tokens, &s, &opts).unwrap();
    assert!(
        run.logits == reference,
        "5 sequences in microbatches of 2, 2, 1"
    );
    assert_eq!(run.microbatch_sequences, 2);
}

#[test]
fn bad_splits_and_microbatch_counts_are_refused() {
    let w = model();
    let tokens = random_input_ids(2, 4, w.config.vocab_size, 8);
    let g = gpus(2);
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 3, 1).unwrap();
    let err = run_pipeline(&g, &w, &tokens, &s, &Options::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("3 microbatches for a batch of 2"), "{err}");
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 2, 1).unwrap();
    let opts = Options {
        split: Some(vec![8, 0]),
    };
    let err = run_pipeline(&g, &w, &tokens, &s, &opts)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("stage 1 empty"), "{err}");
}

#[test]
fn a_pipeline_mixing_vulkan_and_gl() {
    let w = model();
    let tokens = random_input_ids(4, 6, w.config.vocab_size, 9);
    let reference = single(&w, &tokens);
    let g = vec![Gpu::open("vulkan:0").unwrap(), Gpu::open("gl:0").unwrap()];
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 4, 1).unwrap();
    let run = run_pipeline(&g, &w, &tokens, &s, &Options::default()).unwrap();
    // Another backend's shader compiler: equal within f32 rounding.
    common::assert_close("vulkan+gl logits", &run.logits, &reference, 1e-5, 1e-4);
    assert!(run.timeline.device_names[1].starts_with("gl:0"));
}

#[test]
fn the_trace_names_events_like_the_schedule() {
    let w = model();
    let tokens = random_input_ids(4, 6, w.config.vocab_size, 12);
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 4, 1).unwrap();
    let run = run_pipeline(&gpus(2), &w, &tokens, &s, &Options::default()).unwrap();
    assert_eq!(
        run.timeline.clock, "gpu-timestamps",
        "lavapipe has timestamp queries"
    );
    assert_eq!(run.transfers.len(), 4);
    let json = wgpipe::trace::chrome::to_chrome_json(&run.timeline);
    let events = json["traceEvents"].as_array().expect("traceEvents list");
    let complete: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    for a in ["0F0", "0F3", "1F0", "1F3"] {
        let e = complete
            .iter()
            .find(|e| e["name"] == a)
            .unwrap_or_else(|| panic!("no event {a}"));
        assert!(e["dur"].as_f64().unwrap() > 0.0);
        assert!(e["args"]["microbatch"].is_number() && e["args"]["stage"].is_number());
    }
    // Each microbatch's stage 1 starts after its stage 0 ended (one clock).
    for m in 0..4 {
        let f = |n: String| {
            run.timeline
                .events
                .iter()
                .find(|e| e.name == n)
                .unwrap()
                .clone()
        };
        let (a, b) = (f(format!("0F{m}")), f(format!("1F{m}")));
        // Two devices, two clock mappings, each good to about half a submit
        // round trip (tens of µs): allow 300 µs.
        assert!(
            b.start_us >= a.end_us - 300.0,
            "1F{m} starts {} before 0F{m} ends",
            a.end_us - b.start_us
        );
    }
}
