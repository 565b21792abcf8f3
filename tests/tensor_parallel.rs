//! Tensor parallelism inside a stage (Megatron's split), alone and under a
//! pipeline: the ranks' shards with their all-reduces give the single
//! device's logits within f32 rounding (the partial sums are added in
//! another order: per rank, then across ranks in rank order — not bitwise),
//! and greedy generation gives the same tokens as one device and as
//! transformers.

mod common;

use common::{assert_close, fixture_dir, gpu, Rng};
use wgpipe::device::Gpu;
use wgpipe::executor::{Cluster, DeviceGroup};
use wgpipe::io::TokenBatch;
use wgpipe::model::{checkpoint::load_checkpoint, gpu as model_gpu, Gpt2Weights};
use wgpipe::sampling::SampleSettings;
use wgpipe::schedule::{Schedule, ScheduleKind};
use wgpipe::trace::Track;
use wgpipe::workload::decode::{generate, DecodeJob};
use wgpipe::workload::forward::{run_inference, Options, PipelineRun};

/// The fixture with 4 heads, C = 32, F = 128, 4 blocks, V = 320: splits 2 and 4 ways.
fn model() -> Gpt2Weights {
    load_checkpoint(&fixture_dir("tiny-gpt2-gen")).unwrap()
}

/// `n` Gpus of the test adapter, each on its own instance.
fn gpus(n: usize) -> Vec<Gpu> {
    (0..n).map(|_| gpu()).collect()
}

fn tokens(w: &Gpt2Weights, batch: usize, seq: usize) -> TokenBatch {
    let mut rng = Rng::new(11);
    TokenBatch {
        ids: (0..batch * seq)
            .map(|_| rng.below(w.config.vocab_size as u32))
            .collect(),
        batch,
        seq,
    }
}

/// `gpus` in groups of `tp`, stage-major.
fn groups(gpus: &[Gpu], tp: usize) -> Vec<DeviceGroup<'_>> {
    gpus.chunks(tp)
        .map(|g| DeviceGroup::new(g).unwrap())
        .collect()
}

fn run(gpus: &[Gpu], tp: usize, w: &Gpt2Weights, t: &TokenBatch, s: &Schedule) -> PipelineRun {
    run_inference(
        &groups(gpus, tp),
        &Cluster::Local,
        w,
        t,
        s,
        &Options::default(),
    )
    .unwrap_or_else(|e| panic!("{} over TP {tp}: {e}", s.name))
}

#[test]
fn a_tensor_parallel_stage_gives_the_single_device_logits() {
    let w = model();
    let t = tokens(&w, 3, 9);
    let one = gpu();
    let want = model_gpu::forward(&one, &w, &t, 3).unwrap().logits;
    let (l, c) = (w.config.n_layer, w.config.n_embd);
    for tp in [2, 4] {
        let g = gpus(tp);
        let s = Schedule::for_inference(ScheduleKind::Gpipe, 1, 3, 1).unwrap();
        let r = run(&g, tp, &w, &t, &s);
        assert_close(&format!("TP {tp} logits"), &r.logits, &want, 1e-5, 1e-5);
        // Every rank ran every action, and all-reduced after the embedding
        // and after each block's two projections: (1 + 2L) per action.
        for rank in 0..tp {
            let compute = r
                .timeline
                .events
                .iter()
                .filter(|e| {
                    e.track
                        == Track::Compute {
                            device: 0,
                            gpu: rank,
                        }
                })
                .count();
            let reduces = r
                .timeline
                .events
                .iter()
                .filter(|e| {
                    e.track
                        == Track::AllReduce {
                            device: 0,
                            gpu: rank,
                        }
                })
                .count();
            assert_eq!(
                (compute, reduces),
                (3, 3 * (1 + 2 * l)),
                "TP {tp} rank {rank}"
            );
        }
        // Each rank sends its (N, C) partial and gets the sum back.
        let n = t.seq; // one sequence per microbatch
        assert_eq!(
            r.reduced_bytes,
            (tp * 3 * (1 + 2 * l) * 2 * n * c * 4) as u64,
            "TP {tp}"
        );
        assert!(r.transfers.is_empty());
    }
}

#[test]
fn every_schedule_runs_across_tensor_parallel_groups() {
    let w = model();
    let t = tokens(&w, 4, 7);
    let one = gpu();
    let want = model_gpu::forward(&one, &w, &t, 4).unwrap().logits;
    let g = gpus(4);
    for (kind, v) in [
        (ScheduleKind::Gpipe, 1),
        (ScheduleKind::OneFOneB, 1),
        (ScheduleKind::Interleaved, 2),
        (ScheduleKind::ZbH1, 1),
    ] {
        let s = Schedule::for_inference(kind, 2, 4, v).unwrap();
        let r = run(&g, 2, &w, &t, &s);
        assert_close(
            &format!("TP 2 x PP 2 {}", s.name),
            &r.logits,
            &want,
            1e-5,
            1e-5,
        );
        // Rank r of one group sends to rank r of the next, each the whole
        // activation: twice the messages of PP 2 alone.
        let stages = 2 * v;
        assert_eq!(r.transfers.len(), 2 * 4 * (stages - 1), "{}", s.name);
        for rank in 0..2 {
            assert!(r.transfers.iter().any(|x| x.rank == rank));
        }
        assert_eq!(r.timeline.device_names.len(), 2);
        assert!(r.timeline.stats().bubble.is_finite());
        // The Chrome trace has a thread for every rank of every group and
        // for each rank's all-reduces.
        let trace = wgpipe::trace::chrome::to_chrome_json(&r.timeline);
        let threads: Vec<String> = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["name"] == "thread_name")
            .map(|e| e["args"]["name"].as_str().unwrap().to_string())
            .collect();
        for d in 0..2 {
            for rank in 0..2 {
                let compute = format!("device {d} rank {rank}");
                assert!(
                    threads.iter().any(|t| t.starts_with(&compute)),
                    "{threads:?}"
                );
                let reduce = format!("device {d} rank {rank} all-reduce");
                assert!(threads.contains(&reduce), "{threads:?}");
            }
        }
    }
}

#[test]
fn greedy_generation_with_tensor_parallelism_gives_the_same_tokens() {
    let dir = fixture_dir("tiny-gpt2-gen");
    let w = model();
    let text = std::fs::read_to_string(dir.join("generate_ref.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = &r["cases"][0];
    let prompts: Vec<Vec<u32>> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
    let want: Vec<Vec<u32>> = serde_json::from_value(case["output_ids"].clone()).unwrap();
    let new = case["max_new_tokens"].as_u64().unwrap() as usize;
    let job = |groups| DecodeJob {
        prompts: prompts.clone(),
        max_new_tokens: new,
        groups,
        sampling: SampleSettings::default(),
        seed: 0,
        keep_logits: true,
    };
    let one = gpus(1);
    let single = generate(&groups(&one, 1), &Cluster::Local, &w, &job(1), None, None).unwrap();
    let g = gpus(4);
    for (tp, p, n_groups) in [(2, 1, 1), (4, 1, 2), (2, 2, 2)] {
        let what = format!("TP {tp} x PP {p}, {n_groups} groups");
        let run = generate(
            &groups(&g[..tp * p], tp),
            &Cluster::Local,
            &w,
            &job(n_groups),
            None,
            None,
        )
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        for (s, want) in want.iter().enumerate() {
            assert_eq!(
                &run.ids[s], want,
                "{what}: sequence {s} against transformers"
            );
        }
        for (s, steps) in run.logits.iter().enumerate() {
            for (k, l) in steps.iter().enumerate() {
                assert_close(
                    &format!("{what}: sequence {s} step {k}"),
                    l,
                    &single.logits[s][k],
                    1e-5,
                    1e-5,
                );
            }
        }
        // Each rank holds its heads' part of the cache: 1/T of one device's.
        assert_eq!(run.kv_bytes.len(), tp * p, "{what}");
        let whole: u64 = single.kv_bytes.iter().sum();
        assert_eq!(run.kv_bytes.iter().sum::<u64>(), whole, "{what}");
        assert!(run.reduced_bytes > 0);
    }
}

#[test]
fn layouts_that_do_not_split_the_model_are_refused() {
    let w = model();
    let t = tokens(&w, 2, 5);
    let g = gpus(3);
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 1, 2, 1).unwrap();
    let e = run_inference(
        &groups(&g, 3),
        &Cluster::Local,
        &w,
        &t,
        &s,
        &Options::default(),
    )
    .err()
    .expect("3 does not divide 4 heads");
    assert!(e.to_string().contains("4 attention heads"), "{e}");
    // Groups of different sizes.
    let mixed = [
        DeviceGroup::new(&g[..2]).unwrap(),
        DeviceGroup::new(&g[2..]).unwrap(),
    ];
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 2, 1).unwrap();
    let e = run_inference(&mixed, &Cluster::Local, &w, &t, &s, &Options::default())
        .err()
        .expect("mixed degrees");
    assert!(e.to_string().contains("same tensor-parallel degree"), "{e}");
}
