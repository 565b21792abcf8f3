//! The whole CPU reference forward: causality, independent rows, a block
//! against its composed ops, and transformers' own logits (committed
//! fixtures in tests/data).
//!
//! B = batch, T = time, C = channels, V = vocab, NH = heads, F = MLP width.

mod common;

use common::{assert_close_f64, fixture_dir, read_float_tensor, tiny};
use wgpipe::cpu::*;
use wgpipe::io::{check_input, random_input_ids, read_input_ids};
use wgpipe::model::{Gpt2Config, Gpt2Weights};

#[test]
fn forward_is_causal() {
    let w = Gpt2Weights::init(&tiny(), 1).unwrap();
    let v = w.config.vocab_size;
    let t = 9;
    let a = random_input_ids(1, t, v, 3);
    let mut b = a.clone();
    b.ids[5] = (b.ids[5] + 1) % v as u32;
    let la = gpt2_forward(&w, &a.ids, 1, t);
    let lb = gpt2_forward(&w, &b.ids, 1, t);
    assert_eq!(la.len(), t * v);
    assert!(la.iter().all(|x| x.is_finite()));
    assert_eq!(
        &la[..5 * v],
        &lb[..5 * v],
        "positions before the change must not move"
    );
    for ti in 5..t {
        assert_ne!(
            &la[ti * v..][..v],
            &lb[ti * v..][..v],
            "position {ti} should see the change"
        );
    }
}

#[test]
fn forward_batch_rows_are_independent() {
    let cfg = Gpt2Config::named("small-test").unwrap();
    let w = Gpt2Weights::init(&cfg, 2).unwrap();
    let (b, t, v) = (3, 7, cfg.vocab_size);
    let tokens = random_input_ids(b, t, v, 11);
    check_input(&cfg, &tokens).unwrap();
    let all = gpt2_forward(&w, &tokens.ids, b, t);
    for bi in 0..b {
        let one = gpt2_forward(&w, &tokens.ids[bi * t..][..t], 1, t);
        assert_eq!(&all[bi * t * v..][..t * v], &one[..]);
    }
    // The logits are not degenerate.
    let spread =
        all.iter().cloned().fold(f32::MIN, f32::max) - all.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 0.01, "{spread}");
}

#[test]
fn block_forward_matches_composed_ops() {
    let cfg = Gpt2Config::named("small-test").unwrap();
    let w = Gpt2Weights::init(&cfg, 4).unwrap();
    let (b, t, c, f) = (2, 5, cfg.n_embd, cfg.n_inner);
    let n = b * t;
    let x0: Vec<f32> = (0..n * c).map(|i| (i as f32 * 0.013).sin()).collect();
    let mut x = x0.clone();
    let l = &w.layers[1];
    block_forward(&mut x, l, &cfg, b, t);
    // Straight-line recomputation.
    let eps = cfg.layer_norm_epsilon;
    let mut h = vec![0.0; n * c];
    layernorm_forward(&mut h, &x0, &l.ln_1_g, &l.ln_1_b, n, c, eps);
    let mut qkv = vec![0.0; n * 3 * c];
    matmul_forward(&mut qkv, &h, &l.c_attn_w, Some(&l.c_attn_b), n, c, 3 * c);
    let mut a = vec![0.0; n * c];
    attention_forward(
        &mut a,
        &qkv,
        b,
        t,
        cfg.n_head,
        cfg.n_head,
        c / cfg.n_head,
        0,
    );
    let mut p = vec![0.0; n * c];
    matmul_forward(&mut p, &a, &l.attn_proj_w, Some(&l.attn_proj_b), n, c, c);
    let r: Vec<f32> = x0.iter().zip(&p).map(|(a, b)| a + b).collect();
    layernorm_forward(&mut h, &r, &l.ln_2_g, &l.ln_2_b, n, c, eps);
    let mut fc = vec![0.0; n * f];
    matmul_forward(&mut fc, &h, &l.c_fc_w, Some(&l.c_fc_b), n, c, f);
    let g: Vec<f32> = fc
        .iter()
        .map(|&x| {
            0.5 * x
                * (1.0 + ((2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        })
        .collect();
    let mut m = vec![0.0; n * c];
    matmul_forward(&mut m, &g, &l.mlp_proj_w, Some(&l.mlp_proj_b), n, f, c);
    let want: Vec<f64> = r.iter().zip(&m).map(|(a, b)| (a + b) as f64).collect();
    assert_close_f64(&x, &want, 1e-6, 1e-6, "block");
    assert_ne!(x, x0);
}

/// Logits from real transformers (GPT2LMHeadModel, float32 and float64).
fn check_hf_fixture(name: &str) {
    let dir = fixture_dir(name);
    assert!(
        dir.join("model.safetensors").exists(),
        "HF fixture {} is missing",
        dir.display()
    );
    let w = Gpt2Weights::load_checkpoint(&dir).unwrap();
    let tokens = read_input_ids(&dir.join("input_ids.safetensors")).unwrap();
    check_input(&w.config, &tokens).unwrap();
    let logits = gpt2_forward(&w, &tokens.ids, tokens.batch, tokens.seq);
    for file in ["logits.safetensors", "logits_f64.safetensors"] {
        let (shape, want) = read_float_tensor(&dir.join(file), "logits");
        assert_eq!(shape, vec![tokens.batch, tokens.seq, w.config.vocab_size]);
        let scale = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        let max_diff = logits
            .iter()
            .zip(&want)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max);
        eprintln!("{name}/{file}: max |diff| {max_diff:e}, max |logit| {scale:e}");
        assert_close_f64(
            &logits,
            &want,
            1e-5 * scale,
            1e-5,
            &format!("{name}/{file}"),
        );
    }
}

#[test]
fn matches_transformers_tiny_gpt2() {
    check_hf_fixture("tiny-gpt2");
}

#[test]
fn matches_transformers_tiny_gpt2_n_inner() {
    check_hf_fixture("tiny-gpt2-n-inner");
}
