//! The Llama family — Llama, Qwen2, Mistral — against transformers' own
//! results on the committed fixtures (scripts/make_family_fixtures.py):
//! the CPU reference and every adapter's forward, pipelined forwards of every
//! forward schedule, greedy generation on one device, pipelined and tensor-
//! parallel, and the tokenizer's text in and out.

mod common;

use std::path::Path;

use wgpipe::device::DtypeChoice;
use wgpipe::io::read_input_ids;
use wgpipe::model::checkpoint::load_checkpoint;
use wgpipe::model::gpu;
use wgpipe::{
    GenerateOptions, ModelSource, Pipeline, PipelineConfig, Prompt, ScheduleKind, Split, Workload,
};

/// The fixtures of one architecture each, stored as f32, bf16 (one sharded)
/// and f16.
const FIXTURES: &[&str] = &[
    "tiny-llama",
    "tiny-llama-bf16",
    "tiny-llama-f16",
    "tiny-qwen2",
    "tiny-mistral",
];

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - y).abs()));
    diff / scale
}

fn reference(dir: &Path) -> Vec<f64> {
    common::read_float_tensor(&dir.join("logits.safetensors"), "logits").1
}

#[test]
fn the_cpu_reference_and_every_adapter_reproduce_transformers_logits() {
    for name in FIXTURES {
        let dir = common::fixture_dir(name);
        let w = load_checkpoint(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let tokens = read_input_ids(&dir.join("input_ids.safetensors")).unwrap();
        let want = reference(&dir);
        let cpu = wgpipe::cpu::gpt2_forward(&w, &tokens.ids, tokens.batch, tokens.seq);
        let e = rel_err(&cpu, &want);
        assert!(e < 1e-4, "{name}: the CPU reference is off by {e:.2e}");
        common::for_each_adapter(|g| {
            let out = gpu::forward(g, &w, &tokens, tokens.batch).unwrap();
            let e = rel_err(&out.logits, &want);
            println!("{name} on {}: rel. error {e:.2e}", g.label);
            assert!(e < 1e-4, "{name} on {}: logits off by {e:.2e}", g.label);
        });
    }
}

/// A pipeline of `devices` over a fixture, split evenly, in f32 (the
/// 16-bit fixtures would run in f16 under `auto`: tests/f16.rs checks that).
fn pipeline(name: &str, devices: usize, schedule: ScheduleKind, v: usize) -> Pipeline {
    Pipeline::new(PipelineConfig {
        devices: devices.to_string(),
        split: Split::Even,
        schedule,
        virtual_stages: v,
        dtype: DtypeChoice::F32,
        ..PipelineConfig::new(ModelSource::Checkpoint(common::fixture_dir(name)))
    })
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn pipelined_forwards_equal_one_device_for_every_family() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-mistral"] {
        let dir = common::fixture_dir(name);
        let tokens = read_input_ids(&dir.join("input_ids.safetensors")).unwrap();
        let one = pipeline(name, 1, ScheduleKind::Gpipe, 1)
            .forward(&tokens)
            .unwrap();
        let want = reference(&dir);
        assert!(rel_err(&one.logits, &want) < 1e-4, "{name}: one device");
        let layers = load_checkpoint(&dir).unwrap().config.n_layer;
        let mut layouts = vec![(2, ScheduleKind::OneFOneB, 1)];
        if layers >= 4 {
            layouts.extend([
                (4, ScheduleKind::Gpipe, 1),
                (2, ScheduleKind::Interleaved, 2),
            ]);
        }
        for (p, kind, v) in layouts {
            let run = pipeline(name, p, kind, v).forward(&tokens).unwrap();
            assert!(
                run.logits == one.logits,
                "{name}: P={p} {kind} v={v} differs from one device"
            );
        }
    }
}

fn gen_ref() -> serde_json::Value {
    let dir = common::fixture_dir("tiny-llama-gen");
    serde_json::from_str(&std::fs::read_to_string(dir.join("generate_ref.json")).unwrap()).unwrap()
}

#[test]
fn the_tokenizer_gives_transformers_ids_and_text() {
    let dir = common::fixture_dir("tiny-llama-gen");
    let tok = wgpipe::tokenizer::Tokenizer::load(&dir).unwrap().unwrap();
    for case in gen_ref()["cases"].as_array().unwrap() {
        for (i, p) in case["prompts"].as_array().unwrap().iter().enumerate() {
            let ids = tok.encode(p.as_str().unwrap()).unwrap();
            let want: Vec<u32> = serde_json::from_value(case["prompt_ids"][i].clone()).unwrap();
            assert_eq!(ids, want, "{p}");
            let out: Vec<u32> = serde_json::from_value(case["output_ids"][i].clone()).unwrap();
            assert_eq!(
                tok.decode(&out).unwrap(),
                case["texts"][i].as_str().unwrap()
            );
        }
    }
}

#[test]
fn greedy_generation_equals_transformers_alone_pipelined_and_tensor_parallel() {
    let dir = common::fixture_dir("tiny-llama-gen");
    for (devices, tp, groups) in [(1, 1, 1), (2, 1, 2), (4, 1, 2), (2, 2, 1)] {
        let p = Pipeline::new(PipelineConfig {
            devices: (devices).to_string(),
            tp,
            split: Split::Even,
            workload: Workload::Decode {
                sequences: 1,
                groups,
                steps: 10,
            },
            ..PipelineConfig::new(ModelSource::Checkpoint(dir.clone()))
        })
        .unwrap_or_else(|e| panic!("{devices} devices, tp {tp}: {e}"));
        for case in gen_ref()["cases"].as_array().unwrap() {
            let prompts: Vec<Prompt> = (case["prompts"].as_array().unwrap().iter())
                .map(|t| Prompt::Text(t.as_str().unwrap().into()))
                .collect();
            let opts = GenerateOptions {
                max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
                groups: Some(groups.min(prompts.len())),
                ..GenerateOptions::default()
            };
            let gen = p.generate(&prompts, &opts).unwrap();
            for (i, s) in gen.sequences.iter().enumerate() {
                let want: Vec<u32> = serde_json::from_value(case["output_ids"][i].clone()).unwrap();
                assert_eq!(
                    s.ids, want,
                    "{devices} devices (tp {tp}), sequence {i} against transformers"
                );
                assert_eq!(s.text.as_deref(), case["texts"][i].as_str());
            }
        }
    }
}

#[test]
fn unsupported_architectures_and_settings_are_refused_by_name() {
    let d = common::scratch("families-refused");
    std::fs::create_dir_all(&d).unwrap();
    for (json, needle) in [
        (
            r#"{"architectures": ["FalconForCausalLM"]}"#,
            "FalconForCausalLM",
        ),
        (r#"{"model_type": "phi3"}"#, "phi3"),
        (
            r#"{"architectures": ["LlamaForCausalLM"], "hidden_act": "gelu", "vocab_size": 8, "max_position_embeddings": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8}"#,
            "hidden_act",
        ),
        (
            r#"{"architectures": ["LlamaForCausalLM"], "rope_scaling": {"rope_type": "yarn", "factor": 4.0}, "vocab_size": 8, "max_position_embeddings": 8, "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8}"#,
            "yarn",
        ),
    ] {
        let path = d.join("config.json");
        std::fs::write(&path, json).unwrap();
        let e = wgpipe::model::Gpt2Config::from_json_file(&path).unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
    }
}
