//! The executor on real devices (lavapipe in CI): pipelined logits equal the
//! single-device forward, every forward-capable schedule, P = 2 and 4,
//! M = 1, 3, 8, contiguous and interleaved; a pipeline of two different
//! adapters (Vulkan + GL here) where there are two; the trace is well
//! formed. (Failures stopping the run: src/executor/tests.rs.)

mod common;

use wgpipe::device::Gpu;
use wgpipe::io::{random_input_ids, TokenBatch};
use wgpipe::model::{gpu, Gpt2Config, Gpt2Weights};
use wgpipe::schedule::{Action, Schedule, ScheduleKind};
use wgpipe::trace::{Event, Track};
use wgpipe::workload::forward::{run_pipeline, Options, PipelineRun};

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
fn a_pipeline_mixing_two_adapters() {
    // Two different adapters where there are two, preferring two backends
    // (Vulkan lavapipe + GL llvmpipe here: another backend's shader
    // compiler); on a machine with one adapter, that adapter twice.
    let w = model();
    let tokens = random_input_ids(4, 6, w.config.vocab_size, 9);
    let reference = single(&w, &tokens);
    let adapters = common::test_adapters();
    let first = &adapters[0];
    let second = adapters
        .iter()
        .find(|a| a.backend != first.backend)
        .or(adapters.get(1))
        .unwrap_or(first);
    let g = vec![common::open_adapter(first), common::open_adapter(second)];
    println!("pipeline on {} + {}", g[0].label, g[1].label);
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 4, 1).unwrap();
    let run = run_pipeline(&g, &w, &tokens, &s, &Options::default()).unwrap();
    // Possibly another backend's shader compiler: equal within f32 rounding.
    let what = format!("{} + {} logits", first.id(), second.id());
    common::assert_close(&what, &run.logits, &reference, 1e-5, 1e-4);
    assert!(run.timeline.device_names[0].starts_with(&first.id()));
    assert!(run.timeline.device_names[1].starts_with(&second.id()));
}

#[test]
fn the_trace_names_events_like_the_schedule() {
    let w = model();
    let tokens = random_input_ids(4, 6, w.config.vocab_size, 12);
    let g = gpus(2);
    // gpipe: every hand-over crosses devices. Interleaved (v = 2): device 0
    // also holds stage 2, so each microbatch passes it twice.
    for (name, v, transfers) in [("gpipe", 1, 4), ("interleaved", 2, 12)] {
        let s = Schedule::for_inference(name.parse().unwrap(), 2, 4, v).unwrap();
        let run = run_pipeline(&g, &w, &tokens, &s, &Options::default()).unwrap();
        assert_eq!(run.transfers.len(), transfers, "{name}");
        check_trace(&g, &s, &run);
    }
}

/// What a run's trace must say about its schedule on any machine: the clock
/// the devices allow; every action once, on its device, named like the
/// schedule (in the Chrome JSON too); one transfer per hand-over between
/// devices; and dependency order wherever two events share a clock.
fn check_trace(gpus: &[Gpu], s: &Schedule, run: &PipelineRun) {
    let t = &run.timeline;
    let name = &s.name;
    // GPU timestamps when every device has them, else host clocks.
    assert!(
        ["gpu-timestamps", "host"].contains(&t.clock.as_str()),
        "{name}: clock {:?}",
        t.clock
    );
    let want = if gpus.iter().all(|g| g.timestamps) {
        "gpu-timestamps"
    } else {
        "host"
    };
    assert_eq!(t.clock, want, "{name}: clock");

    // Every action once, on the device the schedule gives it.
    let compute: Vec<&Event> = t
        .events
        .iter()
        .filter(|e| matches!(e.track, Track::Compute { .. }))
        .collect();
    assert_eq!(compute.len(), s.actions().count(), "{name}: compute events");
    let event = |a: Action| -> &Event {
        let found: Vec<&&Event> = compute.iter().filter(|e| e.action == Some(a)).collect();
        assert_eq!(found.len(), 1, "{name}: {} events for {a}", found.len());
        found[0]
    };
    for (d, _, a) in s.actions() {
        let e = event(a);
        assert_eq!(e.name, a.to_string());
        assert_eq!(e.track.compute_device(), Some(d), "{name}: {a}'s device");
        assert!(e.end_us >= e.start_us, "{name}: {a} ends before it starts");
    }

    // One transfer per hand-over between devices, named for the action it feeds.
    let transfers: Vec<&Event> = t
        .events
        .iter()
        .filter(|e| matches!(e.track, Track::Transfer { .. }))
        .collect();
    let handovers = s
        .actions()
        .filter(|&(d, _, a)| a.stage > 0 && s.device_of_stage(a.stage - 1) != d)
        .count();
    assert_eq!(transfers.len(), handovers, "{name}: transfer events");
    assert_eq!(run.transfers.len(), handovers, "{name}: transfers");
    for e in transfers {
        let a = e.action.expect("a transfer names the action it feeds");
        let (from, to) = (s.device_of_stage(a.stage - 1), s.device_of_stage(a.stage));
        assert_eq!(e.track, Track::Transfer { from, to }, "{name}: {}", e.name);
        assert_eq!(e.name, format!("{a} {from}->{to}"));
        assert!(e.bytes > 0, "{name}: {} moved nothing", e.name);
    }

    // Dependency order, only where two events share a clock: on one device,
    // a microbatch's action starts after its earlier stages there ended.
    // (Across devices, two clock mappings each carry their own error.)
    for (d, _, a) in s.actions() {
        for stage in (0..a.stage).filter(|&st| s.device_of_stage(st) == d) {
            let (before, after) = (event(Action { stage, ..a }), event(a));
            assert!(
                after.start_us >= before.end_us,
                "{name}: {a} starts {} us before {} ends, on device {d}'s clock",
                before.end_us - after.start_us,
                before.name
            );
        }
    }
    // Host clocks: each device waits for every action before the next, so
    // its events follow its schedule row, one after the other.
    if t.clock == "host" {
        for (d, row) in s.rows.iter().enumerate() {
            let events = t.device_events(d);
            let order: Vec<String> = events.iter().map(|e| e.name.clone()).collect();
            let want: Vec<String> = row.iter().flatten().map(|a| a.to_string()).collect();
            assert_eq!(order, want, "{name}: device {d}'s order");
            for pair in events.windows(2) {
                assert!(
                    pair[1].start_us >= pair[0].end_us,
                    "{name}: device {d} overlaps"
                );
            }
        }
    }

    // The Chrome trace: one complete event per action, with its stage and microbatch.
    let json = wgpipe::trace::chrome::to_chrome_json(t);
    let events = json["traceEvents"].as_array().expect("traceEvents list");
    let complete: Vec<_> = events.iter().filter(|e| e["ph"] == "X").collect();
    for (_, _, a) in s.actions() {
        let named: Vec<_> = complete
            .iter()
            .filter(|e| e["name"] == a.to_string())
            .collect();
        assert_eq!(named.len(), 1, "{name}: chrome events named {a}");
        let e = named[0];
        assert!(
            e["dur"].as_f64().unwrap() > 0.0,
            "{name}: {a} has no duration"
        );
        assert_eq!(e["args"]["stage"], a.stage, "{name}: {a}");
        assert_eq!(e["args"]["microbatch"], a.microbatch, "{name}: {a}");
    }
}
