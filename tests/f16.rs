//! Half precision on the device (`--dtype`), end to end, against
//! transformers: the fixtures' `f16_ref.json` (scripts/measure_f16_fixtures.py)
//! hold transformers' own f16 error on each checkpoint (its f16 logits
//! against its f32 logits) and, for tiny-gpt2-gen, its f16 greedy tokens
//! with each step's top-2 margin. wgpipe's f16 logits must be within 3× that
//! error of transformers' f32 logits, its f16 greedy tokens equal to
//! transformers' f16 ones wherever the margin exceeds the error, and the
//! bytes a device holds and sends must halve exactly.

mod common;

use wgpipe::device::{Dtype, DtypeChoice, Precision};
use wgpipe::io::{read_input_ids, TokenBatch};
use wgpipe::model::checkpoint::load_checkpoint;
use wgpipe::{
    ForwardReport, GenerateOptions, ModelSource, Pipeline, PipelineConfig, Prompt, Split, Workload,
};

fn f16_ref(name: &str) -> serde_json::Value {
    let path = common::fixture_dir(name).join("f16_ref.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// transformers' max |f16 logits − f32 logits| on the fixture.
fn hf_f16_err(name: &str) -> f64 {
    f16_ref(name)["f16_max_abs_err"].as_f64().unwrap()
}

fn pipeline(model: ModelSource, devices: &str, dtype: DtypeChoice) -> wgpipe::Result<Pipeline> {
    Pipeline::new(PipelineConfig {
        devices: devices.into(),
        split: Split::Even,
        dtype,
        ..PipelineConfig::new(model)
    })
}

fn checkpoint(name: &str) -> ModelSource {
    ModelSource::Checkpoint(common::fixture_dir(name))
}

fn input(name: &str) -> TokenBatch {
    read_input_ids(&common::fixture_dir(name).join("input_ids.safetensors")).unwrap()
}

fn forward(
    model: ModelSource,
    devices: &str,
    dtype: DtypeChoice,
    tokens: &TokenBatch,
) -> ForwardReport {
    pipeline(model, devices, dtype)
        .and_then(|p| p.forward(tokens))
        .unwrap_or_else(|e| panic!("{devices} {dtype}: {e}"))
}

fn max_abs(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - y).abs()))
}

fn f16_everywhere(p: &[Precision]) -> bool {
    p.iter().all(|p| {
        *p == Precision {
            dtype: Dtype::F16,
            hop: Dtype::F16,
        }
    })
}

#[test]
fn f16_logits_are_within_three_times_transformers_own_f16_error() {
    // f32 files asked for f16 (narrowed on upload); 16-bit files by `auto`.
    let cases = [
        ("tiny-gpt2", DtypeChoice::F16),
        ("tiny-gpt2-n-inner", DtypeChoice::F16),
        ("tiny-llama", DtypeChoice::F16),
        ("tiny-llama-f16", DtypeChoice::Auto),
        ("tiny-llama-bf16", DtypeChoice::Auto),
        ("tiny-qwen2", DtypeChoice::Auto),
        ("tiny-mistral", DtypeChoice::Auto),
    ];
    for (name, dtype) in cases {
        let tokens = input(name);
        let want = common::read_float_tensor(
            &common::fixture_dir(name).join("logits.safetensors"),
            "logits",
        )
        .1;
        let bound = 3.0 * hf_f16_err(name);
        let one = forward(checkpoint(name), "1", dtype, &tokens);
        assert!(
            f16_everywhere(&one.precision),
            "{name}: {:?}",
            one.precision
        );
        let e = max_abs(&one.logits, &want);
        println!(
            "{name} f16: max |error| {e:.4} (transformers' f16: {:.4})",
            bound / 3.0
        );
        assert!(
            e <= bound,
            "{name}: f16 logits off by {e:.4}, more than 3x transformers' f16 error {:.4}",
            bound / 3.0
        );
        // Two devices with f16 hops compute exactly what one device does.
        let two = forward(checkpoint(name), "2", dtype, &tokens);
        assert!(
            f16_everywhere(&two.precision),
            "{name}: {:?}",
            two.precision
        );
        assert!(
            two.logits
                .iter()
                .zip(&one.logits)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: f16 on two devices differs from one device"
        );
    }
}

#[test]
fn auto_keeps_an_f32_checkpoint_in_f32_exactly() {
    let tokens = input("tiny-gpt2");
    let auto = forward(checkpoint("tiny-gpt2"), "2", DtypeChoice::Auto, &tokens);
    let f32 = forward(checkpoint("tiny-gpt2"), "2", DtypeChoice::F32, &tokens);
    assert_eq!(auto.precision, vec![Precision::F32; 2]);
    assert!(
        auto.precision_notes.is_empty(),
        "{:?}",
        auto.precision_notes
    );
    assert!(auto
        .logits
        .iter()
        .zip(&f32.logits)
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn f16_greedy_generation_follows_transformers_f16_where_its_margin_exceeds_the_error() {
    let name = "tiny-gpt2-gen";
    let r = f16_ref(name);
    let err = r["f16_max_abs_err"].as_f64().unwrap();
    for devices in ["1", "2"] {
        let p = Pipeline::new(PipelineConfig {
            devices: devices.into(),
            split: Split::Even,
            dtype: DtypeChoice::F16,
            workload: Workload::Decode {
                sequences: 1,
                groups: 1,
                steps: 20,
            },
            ..PipelineConfig::new(checkpoint(name))
        })
        .unwrap();
        let mut compared = 0;
        for case in r["cases"].as_array().unwrap() {
            let prompts: Vec<Vec<u32>> =
                serde_json::from_value(case["prompt_ids"].clone()).unwrap();
            let outputs: Vec<Vec<u32>> =
                serde_json::from_value(case["output_ids_f16"].clone()).unwrap();
            let margins: Vec<Vec<f64>> =
                serde_json::from_value(case["margins_f16"].clone()).unwrap();
            let opts = GenerateOptions {
                max_new_tokens: case["max_new_tokens"].as_u64().unwrap() as usize,
                stop_at_eos: false,
                ..GenerateOptions::default()
            };
            for ((prompt, want), margin) in prompts.iter().zip(&outputs).zip(&margins) {
                let gen = p.generate(&[Prompt::Ids(prompt.clone())], &opts).unwrap();
                let got = &gen.sequences[0].ids;
                // Token for token up to the first step transformers itself
                // decided by less than its f16 error.
                let sure = margin.iter().take_while(|&&m| m > err).count();
                let n = prompt.len() + sure;
                assert_eq!(
                    got[..n],
                    want[..n],
                    "{devices} device(s), prompt {prompt:?}: margins {margin:?}"
                );
                compared += sure;
            }
        }
        assert!(
            compared >= 40,
            "only {compared} steps were decided by more than the f16 error"
        );
    }
}

#[test]
fn f16_halves_weight_kv_cache_and_hop_bytes_exactly() {
    let name = "tiny-gpt2-gen";
    let gen = |dtype| {
        let p = pipeline(checkpoint(name), "2", dtype).unwrap();
        let opts = GenerateOptions {
            max_new_tokens: 4,
            ..GenerateOptions::default()
        };
        p.generate(&[Prompt::Ids(vec![51, 257, 281])], &opts)
            .unwrap()
    };
    let (full, half) = (gen(DtypeChoice::F32), gen(DtypeChoice::F16));
    assert!(f16_everywhere(&half.precision), "{:?}", half.precision);
    for (what, f, h) in [
        ("weight", &full.weight_bytes, &half.weight_bytes),
        ("KV cache", &full.kv_bytes, &half.kv_bytes),
    ] {
        assert!(f.iter().all(|&b| b > 0), "{what} bytes {f:?}");
        let halved: Vec<u64> = f.iter().map(|b| b / 2).collect();
        assert_eq!(h, &halved, "{what} bytes per device: f32 {f:?}, f16 {h:?}");
    }
    let tokens = input("tiny-gpt2");
    let f = forward(checkpoint("tiny-gpt2"), "2", DtypeChoice::F32, &tokens);
    let h = forward(checkpoint("tiny-gpt2"), "2", DtypeChoice::F16, &tokens);
    assert!(f.bytes_moved() > 0);
    assert_eq!(
        h.bytes_moved() * 2,
        f.bytes_moved(),
        "bytes moved between devices"
    );
    assert_eq!(
        h.measurement.bytes_moved,
        h.bytes_moved(),
        "the report's bytes_moved"
    );
    let halved: Vec<u64> = f.weight_bytes.iter().map(|b| b / 2).collect();
    assert_eq!(h.weight_bytes, halved, "forward's weight bytes per device");
}

/// The Vulkan adapter (lavapipe: shader-f16) and the GL one (llvmpipe: none).
fn vulkan_and_gl() -> String {
    let ids: Vec<String> = common::test_adapters().iter().map(|a| a.id()).collect();
    assert!(
        ids.iter().any(|i| i == "vulkan:0") && ids.iter().any(|i| i == "gl:0"),
        "this test needs Mesa's lavapipe (vulkan:0) and llvmpipe (gl:0): apt-get install -y \
         mesa-vulkan-drivers libegl-mesa0 libgl1-mesa-dri; found {ids:?}"
    );
    "vulkan:0,gl:0".into()
}

#[test]
fn a_vulkan_f16_device_and_a_gl_f32_device_convert_at_the_hop() {
    let devices = vulkan_and_gl();
    let name = "tiny-llama-bf16";
    let tokens = input(name);
    let want = common::read_float_tensor(
        &common::fixture_dir(name).join("logits.safetensors"),
        "logits",
    )
    .1;
    for order in [devices.clone(), "gl:0,vulkan:0".into()] {
        let run = forward(checkpoint(name), &order, DtypeChoice::Auto, &tokens);
        let f16_first = order.starts_with("vulkan");
        let dtypes: Vec<Dtype> = run.precision.iter().map(|p| p.dtype).collect();
        let want_dtypes = match f16_first {
            true => vec![Dtype::F16, Dtype::F32],
            false => vec![Dtype::F32, Dtype::F16],
        };
        assert_eq!(dtypes, want_dtypes, "{order}");
        assert!(
            run.precision.iter().all(|p| p.hop == Dtype::F32),
            "{order}: hops stay f32"
        );
        assert!(
            run.precision_notes.len() == 1
                && run.precision_notes[0].contains("gl:0")
                && run.precision_notes[0].contains("shader-f16"),
            "{order}: {:?}",
            run.precision_notes
        );
        let e = max_abs(&run.logits, &want);
        assert!(e <= 3.0 * hf_f16_err(name), "{order}: logits off by {e:.4}");
        let f32 = forward(checkpoint(name), &order, DtypeChoice::F32, &tokens);
        assert_eq!(
            run.bytes_moved(),
            f32.bytes_moved(),
            "{order}: f32 hops move f32 bytes"
        );
    }
}

#[test]
fn f16_is_refused_by_name_where_it_cannot_run() {
    let devices = vulkan_and_gl();
    let err = pipeline(checkpoint("tiny-gpt2"), &devices, DtypeChoice::F16)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("--dtype f16") && err.contains("gl:0") && err.contains("shader-f16"),
        "{err}"
    );
    let err = Pipeline::new(PipelineConfig {
        dtype: DtypeChoice::F16,
        workload: Workload::Train {
            sequences: 1,
            tokens: 8,
        },
        ..PipelineConfig::new(checkpoint("tiny-gpt2"))
    })
    .err()
    .expect("training refuses f16")
    .to_string();
    assert!(err.contains("--dtype f16 does not train"), "{err}");
    let err = Pipeline::new(PipelineConfig {
        devices: "2".into(),
        tp: 2,
        dtype: DtypeChoice::F16,
        ..PipelineConfig::new(checkpoint("tiny-gpt2-n-inner"))
    })
    .err()
    .expect("tensor parallelism refuses f16")
    .to_string();
    assert!(err.contains("--tp 2"), "{err}");
    // auto under --tp stores f32 (a 16-bit checkpoint), without refusing.
    let p = Pipeline::new(PipelineConfig {
        devices: "2".into(),
        tp: 2,
        ..PipelineConfig::new(checkpoint("tiny-llama-bf16"))
    })
    .unwrap();
    assert_eq!(p.precision().unwrap().0, vec![Precision::F32]);
}

#[test]
fn a_device_holding_a_value_beyond_f16_keeps_f32_and_says_which_tensor() {
    let dir = common::fixture_dir("tiny-gpt2");
    let mut w = load_checkpoint(&dir).unwrap();
    let last = w.config.n_layer - 1;
    w.layers[last].c_fc_w[5] = 1.0e5;
    let tokens = input("tiny-gpt2");
    let weights = || ModelSource::Weights(Box::new(w.clone()));
    let f32 = forward(weights(), "2", DtypeChoice::F32, &tokens);
    let run = forward(weights(), "2", DtypeChoice::F16, &tokens);
    // The last block is on device 1: it stays f32, device 0 stores f16,
    // and the hop between them is f32.
    assert_eq!(
        run.precision,
        vec![
            Precision {
                dtype: Dtype::F16,
                hop: Dtype::F32
            },
            Precision {
                dtype: Dtype::F32,
                hop: Dtype::F32
            }
        ]
    );
    let note = run.precision_notes.join("\n");
    assert!(
        note.contains(&format!("h.{last}.mlp.c_fc.weight")) && note.contains("1e5"),
        "{note}"
    );
    assert!(
        run.logits.iter().all(|x| x.is_finite()),
        "no inf from the big weight"
    );
    let e = run
        .logits
        .iter()
        .zip(&f32.logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(e < 0.5, "device 0 in f16 moves the logits by {e}");
    assert_eq!(run.bytes_moved(), f32.bytes_moved());
}
