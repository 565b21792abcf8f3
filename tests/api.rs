//! The library's entry point, [`Pipeline`], on real devices (lavapipe in
//! CI): built once, called many times, each stage's weights uploaded once;
//! its reports hold what the lower layers compute; `examples/embed.rs` runs.

mod common;

use std::path::PathBuf;

use wgpipe::model::checkpoint::load_checkpoint;
use wgpipe::model::gpu;
use wgpipe::pipeline::Token;
use wgpipe::{
    GenerateOptions, ModelSource, Optimizer, Pipeline, PipelineConfig, Prompt, Split, TrainConfig,
    Workload,
};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-gpt2-gen")
}

/// The generation fixture (4 blocks, a byte-level BPE tokenizer) on two
/// devices, split evenly, built for decoding two groups.
fn two_device_pipeline() -> Pipeline {
    Pipeline::new(PipelineConfig {
        devices: "2".into(),
        split: Split::Even,
        workload: Workload::Decode {
            sequences: 1,
            groups: 2,
            steps: 6,
        },
        ..PipelineConfig::new(ModelSource::Checkpoint(fixture()))
    })
    .unwrap_or_else(|e| panic!("pipeline: {e}"))
}

#[test]
fn repeated_calls_reuse_the_resident_weights() {
    let p = two_device_pipeline();
    // One upload per stage, each device holding one stage.
    assert_eq!(p.weight_uploads(), vec![1, 1]);
    let cfg = p.config().clone();
    let tokens = wgpipe::io::random_input_ids(3, 9, cfg.vocab_size, 4);
    let first = p.forward(&tokens).unwrap();
    let second = p.forward(&tokens).unwrap();
    // The pipelined logits are one device's, bitwise, call after call.
    let one = common::gpu();
    let w = load_checkpoint(&fixture()).unwrap();
    let want = gpu::forward(&one, &w, &tokens, 1).unwrap().logits;
    assert!(
        first.logits == want,
        "first call's logits differ from one device's"
    );
    assert!(
        second.logits == want,
        "second call's logits differ from one device's"
    );
    let prompts: Vec<Prompt> = vec!["The pipeline".into(), "Hello".into()];
    let opts = GenerateOptions {
        max_new_tokens: 6,
        ..GenerateOptions::default()
    };
    let a = p.generate(&prompts, &opts).unwrap();
    let b = p.generate(&prompts, &opts).unwrap();
    let ids = |g: &wgpipe::Generation| {
        g.sequences
            .iter()
            .map(|s| s.ids.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(
        a.sequences[0].prompt_ids.len() + 6,
        a.sequences[0].ids.len()
    );
    // Four calls later: still one upload per stage.
    assert_eq!(p.weight_uploads(), vec![1, 1]);
}

#[test]
fn generation_matches_transformers_and_streams_every_token_in_order() {
    let p = two_device_pipeline();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("generate_ref.json")).unwrap(),
    )
    .unwrap();
    let case = &reference["cases"][0];
    let prompts: Vec<Prompt> = (case["prompts"].as_array().unwrap().iter())
        .map(|t| Prompt::Text(t.as_str().unwrap().to_string()))
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
        groups: Some(2),
        ..GenerateOptions::default()
    };
    let mut streamed: Vec<Vec<u32>> = vec![Vec::new(); prompts.len()];
    let mut steps: Vec<Vec<usize>> = vec![Vec::new(); prompts.len()];
    let gen = p
        .generate_streaming(&prompts, &opts, |t: &Token| {
            streamed[t.sequence].push(t.id);
            steps[t.sequence].push(t.step);
            assert!(
                t.text.is_some(),
                "a checkpoint with a tokenizer streams text"
            );
        })
        .unwrap();
    for (i, s) in gen.sequences.iter().enumerate() {
        let want: Vec<u32> = serde_json::from_value(case["output_ids"][i].clone()).unwrap();
        assert_eq!(s.ids, want, "sequence {i} against transformers");
        assert_eq!(
            streamed[i],
            s.ids[s.prompt_ids.len()..],
            "sequence {i} streamed"
        );
        assert_eq!(steps[i], (0..opts.max_new_tokens).collect::<Vec<_>>());
        let text = p.tokenizer().unwrap().decode(&s.ids).unwrap();
        assert_eq!(s.text.as_deref(), Some(text.as_str()));
    }
    // The report's figures are the run's own.
    assert_eq!(
        (gen.devices, gen.groups, gen.split.clone()),
        (2, 2, vec![2, 2])
    );
    assert_eq!(gen.kv_bytes.len(), 2);
    assert!(gen.metrics.ttft_ms > 0.0 && gen.metrics.tokens_per_s > 0.0);
}

#[test]
fn a_trainer_on_the_pipeline_follows_the_cpu_reference() {
    let p = Pipeline::new(PipelineConfig {
        devices: "2".into(),
        split: Split::Even,
        schedule: wgpipe::ScheduleKind::OneFOneB,
        microbatches: Some(2),
        workload: Workload::Train {
            sequences: 1,
            tokens: 8,
        },
        ..PipelineConfig::new(ModelSource::Preset {
            name: "tiny".into(),
            seed: 3,
        })
    })
    .unwrap();
    // A training pipeline uploads nothing for inference until asked.
    assert_eq!(p.weight_uploads(), vec![0, 0]);
    let mut t = p
        .trainer(TrainConfig {
            optimizer: Optimizer::Sgd {
                lr: 0.1,
                momentum: 0.0,
                weight_decay: 0.0,
            },
            grad_clip: None,
            recompute: false,
            batch: 2,
            seq: 8,
        })
        .unwrap();
    let tokens = wgpipe::io::random_input_ids(2, 8, p.config().vocab_size, 9);
    let w0 = wgpipe::model::Gpt2Weights::init(p.config(), 3).unwrap();
    let (want, _) = wgpipe::cpu::backward::forward_backward(&w0, &tokens).unwrap();
    let step = t.train_step(&tokens).unwrap();
    assert!(
        (step.pass.loss - want).abs() <= 1e-4 * want.abs(),
        "loss {} against the CPU reference's {want}",
        step.pass.loss
    );
    // The step changed the weights on the devices, and the next loss is lower.
    let second = t.train_step(&tokens).unwrap();
    assert!(
        second.pass.loss < step.pass.loss,
        "{} then {}",
        step.pass.loss,
        second.pass.loss
    );
    assert!(t.median_step_ms().is_finite());
}

#[test]
fn bad_layouts_are_refused_before_any_device_opens() {
    let source = ModelSource::Preset {
        name: "tiny".into(),
        seed: 0,
    };
    let e = Pipeline::new(PipelineConfig {
        tp: 2,
        devices: "2".into(),
        ..PipelineConfig::new(source.clone())
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("attention heads"), "{e}");
    let e = Pipeline::new(PipelineConfig {
        split: Split::Layers(vec![1, 2]),
        devices: "2".into(),
        ..PipelineConfig::new(source)
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("adds up to 3"), "{e}");
}

/// `examples/embed.rs`, built into this test and run: it loads the fixture
/// once and generates twice.
#[path = "../examples/embed.rs"]
#[allow(dead_code)]
mod embed;

#[test]
fn the_embed_example_runs() {
    embed::run(fixture()).unwrap();
}
