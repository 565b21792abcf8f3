//! CPU reference, config, weights, checkpoint and I/O tests.
//!
//! B = batch, T = time, C = channels, V = vocab, NH = heads, F = MLP width.

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use wgpipe::cpu::*;
use wgpipe::error::Error;
use wgpipe::io::{check_input, random_input_ids, read_input_ids, write_logits, TokenBatch};
use wgpipe::model::checkpoint::{save_checkpoint, save_checkpoint_with, SaveOptions, StoreDtype};
use wgpipe::model::{Gpt2Config, Gpt2Weights};

// ----------------------------------------------------------------------------
// helpers

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cpu_model")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Hugging Face fixtures made with real transformers (see tests/data).
/// TODO(integration): use Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").
fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Write a safetensors file from (name, dtype, shape, bytes).
fn write_st(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The tensors of `w` as `save_checkpoint` would write them (F32), to edit.
fn tensors_of(w: &Gpt2Weights, prefix: &str) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    w.named_tensors()
        .into_iter()
        .map(|(n, t, s)| (format!("{prefix}{n}"), Dtype::F32, s, f32_bytes(t)))
        .collect()
}

fn tiny() -> Gpt2Config {
    Gpt2Config::named("tiny").unwrap()
}

/// Read an F32 or F64 tensor as f64.
fn read_float_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    let data = match v.dtype() {
        Dtype::F32 => v
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => v
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        d => panic!("unexpected dtype {d}"),
    };
    (v.shape().to_vec(), data)
}

/// |got - want| <= atol + rtol*|want| everywhere; prints the worst on failure.
fn assert_close(got: &[f32], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w).abs();
        let excess = d - (atol + rtol * w.abs());
        if excess > 0.0 && bad.len() < 5 {
            bad.push(format!("[{i}] got {g} want {w} diff {d:e}"));
        }
        if d > worst.1 {
            worst = (i, d);
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: mismatches {bad:?}; largest diff {:e} at {}",
        worst.1,
        worst.0
    );
}

fn err_string<T: std::fmt::Debug>(r: wgpipe::Result<T>) -> (Error, String) {
    let e = r.expect_err("expected an error");
    let s = e.to_string();
    (e, s)
}

// ----------------------------------------------------------------------------
// config

#[test]
fn config_presets() {
    let g = Gpt2Config::named("gpt2").unwrap();
    assert_eq!(
        (
            g.vocab_size,
            g.n_positions,
            g.n_embd,
            g.n_layer,
            g.n_head,
            g.n_inner
        ),
        (50257, 1024, 768, 12, 12, 3072)
    );
    assert_eq!(g.head_dim(), 64);
    assert_eq!(g.num_params(), 124_439_808);
    assert_eq!(
        Gpt2Config::named("gpt2-medium").unwrap().num_params(),
        354_823_168
    );
    assert_eq!(
        Gpt2Config::named("gpt2-large").unwrap().num_params(),
        774_030_080
    );
    assert_eq!(
        Gpt2Config::named("gpt2-xl").unwrap().num_params(),
        1_557_611_200
    );
    for name in wgpipe::model::config::KNOWN_CONFIGS {
        Gpt2Config::named(name).unwrap().validate().unwrap();
    }
    let (e, s) = err_string(Gpt2Config::named("gpt3"));
    assert!(matches!(e, Error::Config(_)));
    assert!(
        s.contains("gpt3") && s.contains("tiny") && s.contains("gpt2-xl"),
        "{s}"
    );
}

#[test]
fn config_validate() {
    let mut c = tiny();
    c.n_head = 5; // 36 % 5 != 0
    let (e, s) = err_string(c.validate());
    assert!(matches!(e, Error::Config(_)));
    assert!(s.contains("36") && s.contains('5'), "{s}");
    for field in 0..6 {
        let mut c = tiny();
        *[
            &mut c.vocab_size,
            &mut c.n_positions,
            &mut c.n_embd,
            &mut c.n_layer,
            &mut c.n_head,
            &mut c.n_inner,
        ][field] = 0;
        let (e, _) = err_string(c.validate());
        assert!(matches!(e, Error::Config(_)));
    }
}

#[test]
fn config_json() {
    let dir = scratch("config_json");
    let p = dir.join("config.json");
    std::fs::write(&p, r#"{"vocab_size": 97, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 3, "n_inner": null}"#).unwrap();
    let c = Gpt2Config::from_json_file(&p).unwrap();
    assert_eq!(c.n_inner, 144);
    assert_eq!(c.layer_norm_epsilon, 1e-5);
    std::fs::write(&p, r#"{"vocab_size": 97, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 3, "n_inner": 50, "layer_norm_epsilon": 1e-3}"#).unwrap();
    let c = Gpt2Config::from_json_file(&p).unwrap();
    assert_eq!((c.n_inner, c.layer_norm_epsilon), (50, 1e-3));

    // missing key, wrong type, unsupported activation, not divisible
    for (text, needle) in [
        (
            r#"{"vocab_size": 97, "n_positions": 32, "n_layer": 2, "n_head": 3}"#,
            "n_embd",
        ),
        (
            r#"{"vocab_size": 97, "n_positions": 32, "n_embd": "36", "n_layer": 2, "n_head": 3}"#,
            "n_embd",
        ),
        (
            r#"{"vocab_size": -1, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 3}"#,
            "vocab_size",
        ),
        (
            r#"{"vocab_size": 97, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 3, "activation_function": "relu"}"#,
            "activation_function",
        ),
        (
            r#"{"vocab_size": 97, "n_positions": 32, "n_embd": 36, "n_layer": 2, "n_head": 5}"#,
            "n_head 5",
        ),
        (r#"[1, 2]"#, "object"),
    ] {
        std::fs::write(&p, text).unwrap();
        let (e, s) = err_string(Gpt2Config::from_json_file(&p));
        assert!(matches!(e, Error::Config(_)), "{s}");
        assert!(s.contains(needle) && s.contains("config.json"), "{s}");
    }
    std::fs::write(&p, "{ not json").unwrap();
    let (e, s) = err_string(Gpt2Config::from_json_file(&p));
    assert!(
        matches!(e, Error::Json { .. }) && s.contains("config.json"),
        "{s}"
    );
    let (e, s) = err_string(Gpt2Config::from_json_file(&dir.join("nope.json")));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("nope.json"),
        "{s}"
    );
}

// ----------------------------------------------------------------------------
// weights init

#[test]
fn init_is_deterministic_and_nontrivial() {
    let cfg = Gpt2Config::named("small-test").unwrap();
    let a = Gpt2Weights::init(&cfg, 7).unwrap();
    let b = Gpt2Weights::init(&cfg, 7).unwrap();
    let c = Gpt2Weights::init(&cfg, 8).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.wte, c.wte);
    assert_ne!(a.layers[2].mlp_proj_w, c.layers[2].mlp_proj_w);
    assert_eq!(a.layers.len(), 3);
    assert_eq!(a.wte.len(), 311 * 50);
    assert_eq!(a.wpe.len(), 128 * 50);
    assert_eq!(a.layers[0].c_fc_w.len(), 50 * 123);
    assert_eq!(a.layers[0].mlp_proj_w.len(), 123 * 50);
    let count: usize = a
        .named_tensors()
        .iter()
        .map(|(_, t, s)| {
            assert_eq!(t.len(), s.iter().product::<usize>());
            t.len()
        })
        .sum();
    assert_eq!(count, cfg.num_params());
    // LN gains perturbed around 1, biases non-zero, std about 0.02.
    let l = &a.layers[0];
    assert!(l.ln_1_g.iter().all(|&g| (g - 1.0).abs() < 0.6) && l.ln_1_g.iter().any(|&g| g != 1.0));
    assert!(l.ln_2_b.iter().any(|&x| x != 0.0) && l.c_attn_b.iter().any(|&x| x != 0.0));
    let std = (a.wte.iter().map(|x| (x * x) as f64).sum::<f64>() / a.wte.len() as f64).sqrt();
    assert!((std - 0.02).abs() < 0.002, "wte std {std}");
    let pstd = (l.attn_proj_w.iter().map(|x| (x * x) as f64).sum::<f64>()
        / l.attn_proj_w.len() as f64)
        .sqrt();
    assert!((pstd - 0.02 / 6f64.sqrt()).abs() < 0.002, "proj std {pstd}");
    // Bad configs are refused.
    let mut bad = cfg.clone();
    bad.n_head = 7;
    assert!(matches!(Gpt2Weights::init(&bad, 0), Err(Error::Config(_))));
}

// ----------------------------------------------------------------------------
// ops

#[test]
fn embedding_adds_token_and_position() {
    let (v, maxt, c) = (5, 4, 3);
    let wte: Vec<f32> = (0..v * c).map(|i| i as f32).collect(); // (V, C)
    let wpe: Vec<f32> = (0..maxt * c).map(|i| 100.0 * i as f32).collect(); // (maxT, C)
    let ids = [4u32, 0, 2, 1]; // (B=2, T=2)
    let mut out = vec![0.0; 4 * c];
    embedding_forward(&mut out, &ids, &wte, &wpe, 2, 2, c, 0);
    assert_eq!(&out[0..3], &[12.0, 113.0, 214.0]); // wte[4] + wpe[0]
    assert_eq!(&out[3..6], &[300.0, 401.0, 502.0]); // wte[0] + wpe[1]
    assert_eq!(&out[6..9], &[6.0, 107.0, 208.0]); // wte[2] + wpe[0]
    assert_eq!(&out[9..12], &[303.0, 404.0, 505.0]); // wte[1] + wpe[1]
}

#[test]
fn layernorm_normalizes_rows() {
    let (n, c) = (5, 37);
    let inp: Vec<f32> = (0..n * c)
        .map(|i| ((i * 7919) % 101) as f32 * 0.3 - 11.0 + (i / c) as f32 * 5.0)
        .collect();
    let mut out = vec![0.0; n * c];
    layernorm_forward(&mut out, &inp, &vec![1.0; c], &vec![0.0; c], n, c, 1e-5);
    for row in out.chunks(c) {
        let mean: f64 = row.iter().map(|&x| x as f64).sum::<f64>() / c as f64;
        let var: f64 = row.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        assert!(mean.abs() < 1e-5, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-3, "var {var}");
    }
    // affine and eps: compare with an f64 computation
    let gamma: Vec<f32> = (0..c).map(|i| 0.5 + i as f32 * 0.1).collect();
    let beta: Vec<f32> = (0..c).map(|i| i as f32 * -0.05).collect();
    let eps = 0.1;
    layernorm_forward(&mut out, &inp, &gamma, &beta, n, c, eps);
    let mut want = vec![0.0f64; n * c];
    for r in 0..n {
        let x = &inp[r * c..][..c];
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        for i in 0..c {
            want[r * c + i] =
                (x[i] as f64 - mean) / (var + eps as f64).sqrt() * gamma[i] as f64 + beta[i] as f64;
        }
    }
    assert_close(&out, &want, 1e-5, 1e-5, "layernorm");
}

#[test]
fn matmul_matches_naive() {
    // (N=2, C=3) @ (C=3, OC=2) + bias
    let inp = [1.0, 2.0, 3.0, -1.0, 0.5, 0.0];
    let w = [1.0, 0.0, 0.0, 1.0, 2.0, -1.0]; // rows: [1,0], [0,1], [2,-1]
    let mut out = [0.0; 4];
    matmul_forward(&mut out, &inp, &w, Some(&[10.0, 20.0]), 2, 3, 2);
    assert_eq!(out, [17.0, 19.0, 9.0, 20.5]);
    matmul_forward(&mut out, &inp, &w, None, 2, 3, 2);
    assert_eq!(out, [7.0, -1.0, -1.0, 0.5]);
    // odd shapes against f64
    for (n, c, oc) in [(1, 1, 1), (3, 7, 5), (13, 17, 19)] {
        let inp: Vec<f32> = (0..n * c)
            .map(|i| ((i * 31) % 17) as f32 / 17.0 - 0.5)
            .collect();
        let w: Vec<f32> = (0..c * oc)
            .map(|i| ((i * 13) % 23) as f32 / 23.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..oc).map(|i| i as f32 * 0.1).collect();
        let mut out = vec![0.0; n * oc];
        matmul_forward(&mut out, &inp, &w, Some(&b), n, c, oc);
        let want: Vec<f64> = (0..n * oc)
            .map(|idx| {
                let (i, j) = (idx / oc, idx % oc);
                b[j] as f64
                    + (0..c)
                        .map(|k| inp[i * c + k] as f64 * w[k * oc + j] as f64)
                        .sum::<f64>()
            })
            .collect();
        assert_close(&out, &want, 1e-6, 1e-5, "matmul");
    }
}

#[test]
fn attention_two_tokens_by_hand() {
    // B=1, T=2, C=2, NH=1 (hd=2). qkv rows [q | k | v].
    let qkv = [
        1.0, 0.0, /*k0*/ 1.0, 2.0, /*v0*/ 3.0, -1.0, // t=0
        0.5, 1.0, /*k1*/ -1.0, 0.5, /*v1*/ 0.0, 4.0, // t=1
    ];
    let mut out = [0.0f32; 4];
    attention_forward(&mut out, &qkv, 1, 2, 2, 1);
    // t=0 attends only to itself.
    assert_eq!(&out[0..2], &[3.0, -1.0]);
    // t=1: scores q1.k0 = 0.5+2 = 2.5, q1.k1 = -0.5+0.5 = 0, scaled by 1/sqrt(2).
    let s0 = 2.5f64 / 2f64.sqrt();
    let s1 = 0.0f64;
    let p0 = s0.exp() / (s0.exp() + s1.exp());
    let p1 = 1.0 - p0;
    let want = [3.0, -1.0, p0 * 3.0 + p1 * 0.0, -p0 + p1 * 4.0];
    assert_close(&out, &want, 1e-6, 1e-6, "attention T=2");
}

#[test]
fn attention_heads_and_batches_are_independent() {
    // B=2, T=3, C=6, NH=3: each head's output only depends on its own columns.
    let (b, t, c, nh) = (2, 3, 6, 3);
    let qkv: Vec<f32> = (0..b * t * 3 * c)
        .map(|i| ((i * 37) % 29) as f32 / 29.0 - 0.5)
        .collect();
    let mut out = vec![0.0; b * t * c];
    attention_forward(&mut out, &qkv, b, t, c, nh);
    let hd = c / nh;
    for bi in 0..b {
        for h in 0..nh {
            // Extract this head's q, k, v as a single-head problem.
            let mut one = Vec::new();
            for ti in 0..t {
                let row = &qkv[(bi * t + ti) * 3 * c..][..3 * c];
                for part in 0..3 {
                    one.extend_from_slice(&row[part * c + h * hd..][..hd]);
                }
            }
            let mut o1 = vec![0.0; t * hd];
            attention_forward(&mut o1, &one, 1, t, hd, 1);
            for ti in 0..t {
                assert_eq!(
                    &out[(bi * t + ti) * c + h * hd..][..hd],
                    &o1[ti * hd..][..hd]
                );
            }
        }
    }
}

#[test]
fn attention_softmax_is_stable_for_large_scores() {
    // B=1, T=2, C=1, NH=1; rows [q | k | v]. Scores of 1e4 would overflow
    // exp without max subtraction.
    let qkv = [100.0f32, 100.0, 1.0, /* t=1 */ 100.0, 100.0, 3.0];
    let mut out = [0.0f32; 2];
    attention_forward(&mut out, &qkv, 1, 2, 1, 1);
    assert!(out.iter().all(|x| x.is_finite()), "{out:?}");
    assert_eq!(out[0], 1.0);
    assert!((out[1] - 2.0).abs() < 1e-6, "{}", out[1]); // equal scores -> mean of v
}

#[test]
fn gelu_new_known_values() {
    let inp = [1.0f32, -1.0, 0.0, 3.0, -3.0, 0.5, -0.5, 10.0, -10.0];
    let want = [
        0.8411919906082768,
        -0.15880800939172324,
        0.0,
        2.996362607918227,
        -0.0036373920817729943,
        0.34571400982514394,
        -0.15428599017485606,
        10.0,
        -0.0,
    ];
    let mut out = [0.0f32; 9];
    gelu_forward(&mut out, &inp);
    assert_close(&out, &want, 1e-7, 1e-6, "gelu_new");
}

#[test]
fn residual_adds() {
    let mut out = [0.0f32; 3];
    residual_forward(&mut out, &[1.0, 2.0, 3.0], &[0.5, -2.0, 10.0]);
    assert_eq!(out, [1.5, 0.0, 13.0]);
}

#[test]
fn lm_head_is_matmul_with_transposed_wte() {
    let (n, c, v) = (3, 5, 7);
    let inp: Vec<f32> = (0..n * c).map(|i| (i as f32 * 0.37).sin()).collect();
    let wte: Vec<f32> = (0..v * c).map(|i| (i as f32 * 0.11).cos()).collect();
    let mut wte_t = vec![0.0; c * v]; // (C, V)
    for j in 0..v {
        for k in 0..c {
            wte_t[k * v + j] = wte[j * c + k];
        }
    }
    let mut a = vec![0.0; n * v];
    let mut b = vec![0.0; n * v];
    lm_head_forward(&mut a, &inp, &wte, n, c, v);
    matmul_forward(&mut b, &inp, &wte_t, None, n, c, v);
    let b64: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    assert_close(&a, &b64, 1e-6, 1e-6, "lm_head");
}

// ----------------------------------------------------------------------------
// whole model

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
    attention_forward(&mut a, &qkv, b, t, c, cfg.n_head);
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
    assert_close(&x, &want, 1e-6, 1e-6, "block");
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
        assert_close(
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

// ----------------------------------------------------------------------------
// checkpoint

#[test]
fn checkpoint_round_trip_with_and_without_prefix() {
    let w = Gpt2Weights::init(&Gpt2Config::named("small-test").unwrap(), 5).unwrap();
    for prefix in [true, false] {
        let dir = scratch(&format!("ckpt_roundtrip_{prefix}"));
        save_checkpoint_with(
            &w,
            &dir,
            SaveOptions {
                prefix,
                dtype: StoreDtype::F32,
            },
        )
        .unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let name = if prefix {
            "transformer.h.0.attn.c_attn.weight"
        } else {
            "h.0.attn.c_attn.weight"
        };
        assert_eq!(st.tensor(name).unwrap().shape(), &[50, 150]);
        let back = Gpt2Weights::load_checkpoint(&dir).unwrap();
        assert_eq!(back, w, "bitwise round trip (prefix {prefix})");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }
    // The default is the transformers layout.
    let dir = scratch("ckpt_default");
    save_checkpoint(&w, &dir).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensor("transformer.wte.weight")
        .is_ok());
}

#[test]
fn checkpoint_f16_and_bf16_load_as_f32() {
    let w = Gpt2Weights::init(&tiny(), 6).unwrap();
    for (dtype, tol) in [(StoreDtype::F16, 1e-3f32), (StoreDtype::BF16, 8e-3)] {
        let dir = scratch(&format!("ckpt_{dtype:?}"));
        save_checkpoint_with(
            &w,
            &dir,
            SaveOptions {
                prefix: true,
                dtype,
            },
        )
        .unwrap();
        let back = Gpt2Weights::load_checkpoint(&dir).unwrap();
        for ((name, a, _), (_, b, _)) in w.named_tensors().iter().zip(back.named_tensors()) {
            for (x, y) in a.iter().zip(b.iter()) {
                assert!(
                    (x - y).abs() <= tol * x.abs() + 1e-7,
                    "{dtype:?} {name}: {x} vs {y}"
                );
            }
        }
        // Loading a narrowed checkpoint again and saving it is lossless.
        let dir2 = scratch(&format!("ckpt_{dtype:?}_2"));
        save_checkpoint_with(
            &back,
            &dir2,
            SaveOptions {
                prefix: false,
                dtype,
            },
        )
        .unwrap();
        assert_eq!(Gpt2Weights::load_checkpoint(&dir2).unwrap(), back);
    }
}

#[test]
fn checkpoint_ignores_lm_head_and_mask_buffers() {
    let w = Gpt2Weights::init(&tiny(), 9).unwrap();
    let dir = scratch("ckpt_extras");
    save_checkpoint(&w, &dir).unwrap();
    let mut t = tensors_of(&w, "transformer.");
    t.push((
        "lm_head.weight".into(),
        Dtype::F32,
        vec![97, 36],
        f32_bytes(&w.wte),
    ));
    t.push((
        "transformer.h.0.attn.bias".into(),
        Dtype::U8,
        vec![1, 1, 4, 4],
        vec![1; 16],
    ));
    t.push((
        "transformer.h.1.attn.masked_bias".into(),
        Dtype::F32,
        vec![],
        f32_bytes(&[-1e4]),
    ));
    write_st(&dir.join("model.safetensors"), &t);
    assert_eq!(Gpt2Weights::load_checkpoint(&dir).unwrap(), w);
}

#[test]
fn checkpoint_errors() {
    let w = Gpt2Weights::init(&tiny(), 10).unwrap();
    let base = scratch("ckpt_errors");

    // missing directory
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&base.join("absent")));
    assert!(matches!(e, Error::Io { .. }) && s.contains("absent"), "{s}");

    // a file, not a directory
    let file = base.join("plainfile");
    std::fs::write(&file, "x").unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&file));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("plainfile") && s.contains("not a directory"),
        "{s}"
    );

    let fresh = |name: &str| {
        let d = base.join(name);
        save_checkpoint(&w, &d).unwrap();
        d
    };

    // missing / malformed / incomplete config.json
    let d = fresh("no_config");
    std::fs::remove_file(d.join("config.json")).unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("config.json"),
        "{s}"
    );
    let d = fresh("bad_config");
    std::fs::write(d.join("config.json"), "{\"n_embd\": 36,").unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Json { .. }) && s.contains("config.json"),
        "{s}"
    );
    let d = fresh("config_no_key");
    std::fs::write(
        d.join("config.json"),
        r#"{"vocab_size": 97, "n_positions": 64, "n_embd": 36, "n_layer": 2}"#,
    )
    .unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Config(_)) && s.contains("n_head") && s.contains("config.json"),
        "{s}"
    );

    // n_embd not divisible by n_head
    let d = fresh("indivisible");
    std::fs::write(
        d.join("config.json"),
        r#"{"vocab_size": 97, "n_positions": 64, "n_embd": 36, "n_layer": 2, "n_head": 5}"#,
    )
    .unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Config(_)) && s.contains("36") && s.contains("n_head 5"),
        "{s}"
    );

    // missing / truncated / garbage model.safetensors
    let d = fresh("no_weights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("model.safetensors"),
        "{s}"
    );
    let d = fresh("truncated");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Safetensors { .. }) && s.contains("model.safetensors"),
        "{s}"
    );
    std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage header}").unwrap();
    let (e, _) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(matches!(e, Error::Safetensors { .. }));
    std::fs::write(&p, b"abc").unwrap();
    let (e, _) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(matches!(e, Error::Safetensors { .. }));

    // a missing tensor: named, and some present ones listed
    let d = fresh("missing_tensor");
    let t: Vec<_> = tensors_of(&w, "transformer.")
        .into_iter()
        .filter(|t| t.0 != "transformer.h.1.mlp.c_fc.bias")
        .collect();
    write_st(&d.join("model.safetensors"), &t);
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    match &e {
        Error::MissingTensor {
            name, available, ..
        } => {
            assert_eq!(name, "transformer.h.1.mlp.c_fc.bias");
            assert!(
                available.contains("transformer.h.0.attn.c_attn.bias"),
                "{available}"
            );
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(s.contains("model.safetensors"), "{s}");

    // a mis-shaped tensor: both shapes given
    let d = fresh("bad_shape");
    let mut t = tensors_of(&w, "");
    let i = t
        .iter()
        .position(|t| t.0 == "h.0.attn.c_attn.weight")
        .unwrap();
    t[i].2 = vec![108, 36]; // transposed (nn.Linear layout)
    write_st(&d.join("model.safetensors"), &t);
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    match &e {
        Error::TensorShape {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "h.0.attn.c_attn.weight");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                (&[36, 108][..], &[108, 36][..])
            );
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(s.contains("[36, 108]") && s.contains("[108, 36]"), "{s}");

    // wrong dtype
    let d = fresh("bad_dtype");
    let mut t = tensors_of(&w, "transformer.");
    let i = t
        .iter()
        .position(|t| t.0 == "transformer.wpe.weight")
        .unwrap();
    t[i].1 = Dtype::I64;
    t[i].3 = vec![0u8; 64 * 36 * 8];
    write_st(&d.join("model.safetensors"), &t);
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    match &e {
        Error::TensorDtype { name, found, .. } => {
            assert_eq!(name, "transformer.wpe.weight");
            assert_eq!(found, "I64");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(s.contains("F32"), "{s}");

    // tensors for more layers than config.json declares
    let d = fresh("extra_layer");
    let mut three = tiny();
    three.n_layer = 3;
    let w3 = Gpt2Weights::init(&three, 1).unwrap();
    write_st(
        &d.join("model.safetensors"),
        &tensors_of(&w3, "transformer."),
    );
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Config(_)) && s.contains("h.2") && s.contains("n_layer = 2"),
        "{s}"
    );
}

// ----------------------------------------------------------------------------
// input ids and logits files

fn write_ids(path: &Path, dtype: Dtype, shape: Vec<usize>, vals: &[i64]) {
    let bytes: Vec<u8> = match dtype {
        Dtype::I64 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::I32 => vals
            .iter()
            .flat_map(|v| (*v as i32).to_le_bytes())
            .collect(),
        Dtype::F32 => vals
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    };
    write_st(path, &[("input_ids".into(), dtype, shape, bytes)]);
}

#[test]
fn input_ids_load() {
    let dir = scratch("input_ids_load");
    let p = dir.join("ids.safetensors");
    let vals = [1i64, 2, 3, 4, 5, 96];
    for dtype in [Dtype::I64, Dtype::I32] {
        write_ids(&p, dtype, vec![2, 3], &vals);
        let t = read_input_ids(&p).unwrap();
        assert_eq!(
            t,
            TokenBatch {
                ids: vec![1, 2, 3, 4, 5, 96],
                batch: 2,
                seq: 3
            }
        );
        check_input(&tiny(), &t).unwrap();
    }
    write_ids(&p, Dtype::I64, vec![6], &vals);
    let t = read_input_ids(&p).unwrap();
    assert_eq!((t.batch, t.seq, t.ids.len()), (1, 6, 6));
    // Largest u32 loads; check_input rejects it later.
    write_ids(&p, Dtype::I64, vec![1], &[u32::MAX as i64]);
    assert_eq!(read_input_ids(&p).unwrap().ids, vec![u32::MAX]);
}

#[test]
fn input_ids_errors() {
    let dir = scratch("input_ids_errors");
    let p = dir.join("ids.safetensors");

    let (e, s) = err_string(read_input_ids(&dir.join("absent.safetensors")));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("absent.safetensors"),
        "{s}"
    );

    std::fs::write(&p, b"not a safetensors file").unwrap();
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Safetensors { .. }) && s.contains("ids.safetensors"),
        "{s}"
    );

    write_st(
        &p,
        &[
            ("tokens".into(), Dtype::I64, vec![2], vec![0; 16]),
            ("mask".into(), Dtype::I64, vec![2], vec![0; 16]),
        ],
    );
    let (e, s) = err_string(read_input_ids(&p));
    match &e {
        Error::MissingTensor {
            name, available, ..
        } => {
            assert_eq!(name, "input_ids");
            assert!(
                available.contains("tokens") && available.contains("mask"),
                "{available}"
            );
        }
        other => panic!("wrong error {other:?}: {s}"),
    }

    write_ids(&p, Dtype::F32, vec![2], &[1, 2]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::TensorDtype { .. }) && s.contains("F32") && s.contains("I64"),
        "{s}"
    );

    write_ids(&p, Dtype::I64, vec![1, 1, 2], &[1, 2]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("[1, 1, 2]"),
        "{s}"
    );

    write_ids(&p, Dtype::I64, vec![2, 2], &[1, 2, 3, -4]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("-4") && s.contains("[1, 1]"),
        "{s}"
    );

    write_ids(&p, Dtype::I64, vec![2], &[1, 1 << 32]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("4294967296"),
        "{s}"
    );
}

#[test]
fn check_input_errors() {
    let cfg = tiny(); // V = 97, maxT = 64
    let ok = random_input_ids(2, 64, 97, 0);
    check_input(&cfg, &ok).unwrap();
    let mut bad = ok.clone();
    bad.ids[64 + 7] = 97;
    let (e, s) = err_string(check_input(&cfg, &bad));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("97") && s.contains("[1, 7]"),
        "{s}"
    );
    let long = random_input_ids(1, 65, 97, 0);
    let (_, s) = err_string(check_input(&cfg, &long));
    assert!(s.contains("65") && s.contains("64"), "{s}");
    for (b, t) in [(0, 3), (3, 0)] {
        let (e, _) = err_string(check_input(
            &cfg,
            &TokenBatch {
                ids: vec![],
                batch: b,
                seq: t,
            },
        ));
        assert!(matches!(e, Error::Input(_)));
    }
    let (e, _) = err_string(check_input(
        &cfg,
        &TokenBatch {
            ids: vec![1, 2],
            batch: 1,
            seq: 3,
        },
    ));
    assert!(matches!(e, Error::Input(_)));
}

#[test]
fn random_ids_are_deterministic_and_in_range() {
    let a = random_input_ids(3, 17, 97, 42);
    assert_eq!(a, random_input_ids(3, 17, 97, 42));
    assert_ne!(a, random_input_ids(3, 17, 97, 43));
    assert_eq!((a.batch, a.seq, a.ids.len()), (3, 17, 51));
    assert!(a.ids.iter().all(|&i| i < 97));
}

#[test]
fn write_logits_round_trip() {
    let dir = scratch("write_logits");
    let p = dir.join("out.safetensors");
    let (b, t, v) = (2, 3, 5);
    let logits: Vec<f32> = (0..b * t * v).map(|i| i as f32 * -0.25 + 1.0).collect();
    write_logits(&p, &logits, b, t, v).unwrap();
    write_logits(&p, &logits, b, t, v).unwrap(); // overwrite is fine
    let (shape, back) = read_float_tensor(&p, "logits");
    assert_eq!(shape, vec![2, 3, 5]);
    assert_eq!(back, logits.iter().map(|&x| x as f64).collect::<Vec<_>>());
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files,
        vec![std::ffi::OsString::from("out.safetensors")],
        "no temp files left"
    );

    // wrong length, a directory, a missing parent: refused, nothing written
    let (e, _) = err_string(write_logits(
        &dir.join("short.safetensors"),
        &logits[1..],
        b,
        t,
        v,
    ));
    assert!(matches!(e, Error::Input(_)));
    let (e, s) = err_string(write_logits(&dir, &logits, b, t, v));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("directory"),
        "{s}"
    );
    let (e, _) = err_string(write_logits(
        &dir.join("absent/x.safetensors"),
        &logits,
        b,
        t,
        v,
    ));
    assert!(matches!(e, Error::Io { .. }));
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

#[test]
fn save_then_forward_is_unchanged() {
    // The loaded model computes exactly what the saved one did.
    let w = Gpt2Weights::init(&tiny(), 12).unwrap();
    let dir = scratch("save_forward");
    save_checkpoint(&w, &dir).unwrap();
    let back = Gpt2Weights::load_checkpoint(&dir).unwrap();
    let ids = random_input_ids(2, 5, 97, 1);
    assert_eq!(
        gpt2_forward(&w, &ids.ids, 2, 5),
        gpt2_forward(&back, &ids.ids, 2, 5)
    );
}
