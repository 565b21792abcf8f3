//! The whole GPT-2 forward on every adapter present, against transformers'
//! own logits (committed fixtures made by scripts/make_hf_fixture.py) and
//! against the CPU reference.

mod common;

use std::path::Path;

use wgpipe::io::{random_input_ids, read_input_ids};
use wgpipe::model::{checkpoint, gpu, Gpt2Config, Gpt2Weights, StagePart};

fn read_f32(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    match t.dtype() {
        safetensors::Dtype::F32 => bytemuck::pod_collect_to_vec(t.data()),
        safetensors::Dtype::F64 => bytemuck::pod_collect_to_vec::<u8, f64>(t.data())
            .into_iter()
            .map(|x| x as f32)
            .collect(),
        d => panic!("{name}: unexpected dtype {d:?}"),
    }
}

/// max |a - b| / max |b|
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn check_hf_fixture(name: &str) {
    let dir = common::fixture_dir(name);
    let w = checkpoint::load_checkpoint(&dir).unwrap();
    let tokens = read_input_ids(&dir.join("input_ids.safetensors")).unwrap();
    let exact = read_f32(&dir.join("logits_f64.safetensors"), "logits");
    let hf = read_f32(&dir.join("logits.safetensors"), "logits");
    common::for_each_adapter(|g| {
        let out = gpu::forward(g, &w, &tokens, tokens.batch).unwrap();
        let (e_exact, e_hf) = (rel_err(&out.logits, &exact), rel_err(&out.logits, &hf));
        println!("{name}: rel. error vs f64 {e_exact:.2e}, vs transformers f32 {e_hf:.2e}");
        assert!(
            e_exact < 1e-5,
            "{name} on {}: logits off transformers' (f64) by {e_exact:.2e}",
            g.label
        );
        assert!(
            e_hf < 1e-5,
            "{name} on {}: logits off transformers' (f32) by {e_hf:.2e}",
            g.label
        );
    });
}

#[test]
fn reproduces_transformers_logits() {
    check_hf_fixture("tiny-gpt2");
}

#[test]
fn reproduces_transformers_logits_with_n_inner_and_eps_from_config() {
    check_hf_fixture("tiny-gpt2-n-inner");
}

#[test]
fn checkpoint_without_transformer_prefix_gives_the_same_logits() {
    let w = checkpoint::load_checkpoint(&common::fixture_dir("tiny-gpt2")).unwrap();
    let dir = std::env::temp_dir().join(format!("wgpipe-noprefix-{}", std::process::id()));
    let opts = checkpoint::SaveOptions {
        prefix: false,
        ..Default::default()
    };
    checkpoint::save_checkpoint_with(&w, &dir, opts).unwrap();
    let w2 = checkpoint::load_checkpoint(&dir).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let tokens =
        read_input_ids(&common::fixture_dir("tiny-gpt2").join("input_ids.safetensors")).unwrap();
    let g = common::gpu();
    let a = gpu::forward(&g, &w, &tokens, 2).unwrap().logits;
    let b = gpu::forward(&g, &w2, &tokens, 2).unwrap().logits;
    assert_eq!(a, b);
}

#[test]
fn odd_shapes_match_the_cpu_reference() {
    // small-test: head dim 10, n_inner 123, prime vocab: the general kernels.
    let cfg = Gpt2Config::named("small-test").unwrap();
    let w = Gpt2Weights::init(&cfg, 7).unwrap();
    let tokens = random_input_ids(3, 13, cfg.vocab_size, 1);
    let reference = wgpipe::cpu::gpt2_forward(&w, &tokens.ids, 3, 13);
    common::for_each_adapter(|g| {
        let out = gpu::forward(g, &w, &tokens, 3).unwrap();
        let what = format!("logits on {}", g.label);
        common::assert_close(&what, &out.logits, &reference, 1e-4, 1e-3);
    });
}

#[test]
fn passes_of_fewer_sequences_give_the_same_logits() {
    let cfg = Gpt2Config::named("tiny").unwrap();
    let w = Gpt2Weights::init(&cfg, 3).unwrap();
    let tokens = random_input_ids(5, 9, cfg.vocab_size, 2);
    common::for_each_adapter(|g| {
        let whole = gpu::forward(g, &w, &tokens, 5).unwrap().logits;
        // 2 + 2 + 1 sequences: the last pass is short. Each sequence's logits
        // depend only on that sequence, and the kernels compute rows independently.
        let split = gpu::forward(g, &w, &tokens, 2).unwrap().logits;
        assert_eq!(whole, split, "on {}", g.label);
    });
}

#[test]
fn a_tensor_past_the_binding_limit_is_refused_by_name() {
    common::for_each_adapter(|g| {
        // c_fc.weight (4, F) just past the adapter's binding limit. The MLP
        // tensors are zeros (allocated, not drawn): only their sizes matter.
        let f = (g.max_binding() / 16 + 1) as usize;
        let mut cfg = Gpt2Config {
            vocab_size: 8,
            n_positions: 4,
            n_embd: 4,
            n_layer: 1,
            n_head: 1,
            n_inner: 1,
            layer_norm_epsilon: 1e-5,
            arch: wgpipe::model::config::Arch::gpt2(),
        };
        let mut w = Gpt2Weights::init(&cfg, 0).unwrap();
        cfg.n_inner = f;
        w.config = cfg.clone();
        let l = &mut w.layers[0];
        (l.c_fc_w, l.c_fc_b, l.mlp_proj_w) = (vec![0.0; 4 * f], vec![0.0; f], vec![0.0; f * 4]);
        let part = StagePart::whole(&cfg);
        let err = gpu::GpuStage::new(g, &w.stage(&part), 1, 1)
            .err()
            .expect("must be refused");
        let msg = err.to_string();
        assert!(msg.contains("h.0.mlp.c_fc.weight"), "{msg}");
        assert!(msg.contains("max_storage_buffer_binding_size"), "{msg}");
    });
}
