//! The CPU backward reference: op-level facts, whole-model gradients by
//! finite differences, against transformers' gradients on the fixtures, and
//! microbatch accumulation.
//!
//! B = batch, T = time, C = channels, V = vocab, NH = heads, F = MLP width.

mod common;

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;
use wgpipe::cpu::backward::*;
use wgpipe::cpu::{gpt2_forward, matmul_forward};
use wgpipe::error::Error;
use wgpipe::io::{random_input_ids, read_input_ids, TokenBatch};
use wgpipe::model::grads::{next_token_targets, Gpt2Grads, NO_TARGET};
use wgpipe::model::{Gpt2Config, Gpt2Weights};

// ----------------------------------------------------------------------------
// helpers

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Every F32/F64 tensor of a safetensors file, as (name, f64 values).
fn read_all_f64(path: &Path) -> Vec<(String, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out = Vec::new();
    for (name, v) in st.tensors() {
        let data = common::tensor_f64(&name, &v);
        out.push((name, data));
    }
    out
}

fn max_abs(x: impl IntoIterator<Item = f64>) -> f64 {
    x.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// max|got - want| / max|want| for one tensor.
fn rel_max_diff(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff = max_abs(got.iter().zip(want).map(|(&g, &w)| g as f64 - w));
    diff / max_abs(want.iter().copied()).max(f64::MIN_POSITIVE)
}

/// Deterministic pseudo-random values in [-scale, scale).
fn rand_vec(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// A tiny model with odd sizes (hd = 4, F not 4C, V prime); matrices and
/// embeddings scaled up from the init so attention is far from uniform.
fn tiny_model(seed: u64) -> Gpt2Weights {
    let cfg = Gpt2Config {
        vocab_size: 13,
        n_positions: 8,
        n_embd: 12,
        n_layer: 2,
        n_head: 3,
        n_inner: 20,
        layer_norm_epsilon: 1e-5,
        arch: wgpipe::model::config::Arch::gpt2(),
    };
    let mut w = Gpt2Weights::init(&cfg, seed).unwrap();
    let up = |x: &mut Vec<f32>| x.iter_mut().for_each(|v| *v *= 10.0);
    up(&mut w.wte);
    up(&mut w.wpe);
    for l in &mut w.layers {
        up(&mut l.c_attn_w);
        up(&mut l.attn_proj_w);
        up(&mut l.c_fc_w);
        up(&mut l.mlp_proj_w);
    }
    w
}

/// Mutable access to one parameter tensor by its checkpoint name.
fn param_mut<'a>(w: &'a mut Gpt2Weights, name: &str) -> &'a mut Vec<f32> {
    match name {
        "wte.weight" => return &mut w.wte,
        "wpe.weight" => return &mut w.wpe,
        "ln_f.weight" => return &mut w.ln_f_g,
        "ln_f.bias" => return &mut w.ln_f_b,
        _ => {}
    }
    let rest = name.strip_prefix("h.").expect("layer tensor");
    let (l, field) = rest.split_once('.').unwrap();
    let l: usize = l.parse().unwrap();
    let lw = &mut w.layers[l];
    match field {
        "ln_1.weight" => &mut lw.ln_1_g,
        "ln_1.bias" => &mut lw.ln_1_b,
        "attn.c_attn.weight" => &mut lw.c_attn_w,
        "attn.c_attn.bias" => &mut lw.c_attn_b,
        "attn.c_proj.weight" => &mut lw.attn_proj_w,
        "attn.c_proj.bias" => &mut lw.attn_proj_b,
        "ln_2.weight" => &mut lw.ln_2_g,
        "ln_2.bias" => &mut lw.ln_2_b,
        "mlp.c_fc.weight" => &mut lw.c_fc_w,
        "mlp.c_fc.bias" => &mut lw.c_fc_b,
        "mlp.c_proj.weight" => &mut lw.mlp_proj_w,
        "mlp.c_proj.bias" => &mut lw.mlp_proj_b,
        other => panic!("unknown tensor {other}"),
    }
}

// ----------------------------------------------------------------------------
// an independent f64 forward + loss, for finite differences
//
// Written from the model's definition, not by calling the f32 reference, so
// the check does not share its mistakes; in f64 so that central differences
// with h = 1e-5 are accurate to ~1e-9 and the tolerance only has to cover our
// f32 analytic gradient's rounding.

fn ln64(x: &[f64], g: &[f32], b: &[f32], c: usize, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for (row, o) in x.chunks(c).zip(out.chunks_mut(c)) {
        let mean = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for i in 0..c {
            o[i] = (row[i] - mean) * rstd * g[i] as f64 + b[i] as f64;
        }
    }
    out
}

fn mm64(x: &[f64], w: &[f32], bias: &[f32], c: usize, oc: usize) -> Vec<f64> {
    let n = x.len() / c;
    let mut out = vec![0.0; n * oc];
    for i in 0..n {
        for j in 0..oc {
            let mut s = bias[j] as f64;
            for k in 0..c {
                s += x[i * c + k] * w[k * oc + j] as f64;
            }
            out[i * oc + j] = s;
        }
    }
    out
}

fn loss64(w: &Gpt2Weights, ids: &[u32], b: usize, t: usize) -> f64 {
    let cfg = &w.config;
    let (v, c, f, nh) = (cfg.vocab_size, cfg.n_embd, cfg.n_inner, cfg.n_head);
    let eps = cfg.layer_norm_epsilon as f64;
    let hd = c / nh;
    let mut x = vec![0.0f64; b * t * c];
    for r in 0..b * t {
        for i in 0..c {
            x[r * c + i] = w.wte[ids[r] as usize * c + i] as f64 + w.wpe[(r % t) * c + i] as f64;
        }
    }
    for l in &w.layers {
        let h = ln64(&x, &l.ln_1_g, &l.ln_1_b, c, eps);
        let qkv = mm64(&h, &l.c_attn_w, &l.c_attn_b, c, 3 * c);
        let mut y = vec![0.0f64; b * t * c];
        for bi in 0..b {
            for hh in 0..nh {
                for tq in 0..t {
                    let q = |d: usize| qkv[(bi * t + tq) * 3 * c + hh * hd + d];
                    let scores: Vec<f64> = (0..=tq)
                        .map(|tk| {
                            let k = |d: usize| qkv[(bi * t + tk) * 3 * c + c + hh * hd + d];
                            (0..hd).map(|d| q(d) * k(d)).sum::<f64>() / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                    for (tk, s) in scores.iter().enumerate() {
                        let p = (s - m).exp() / z;
                        for d in 0..hd {
                            y[(bi * t + tq) * c + hh * hd + d] +=
                                p * qkv[(bi * t + tk) * 3 * c + 2 * c + hh * hd + d];
                        }
                    }
                }
            }
        }
        let a = mm64(&y, &l.attn_proj_w, &l.attn_proj_b, c, c);
        x.iter_mut().zip(&a).for_each(|(xi, ai)| *xi += ai);
        let h = ln64(&x, &l.ln_2_g, &l.ln_2_b, c, eps);
        let s = (2.0 / std::f64::consts::PI).sqrt();
        let u: Vec<f64> = mm64(&h, &l.c_fc_w, &l.c_fc_b, c, f)
            .into_iter()
            .map(|z| 0.5 * z * (1.0 + (s * (z + 0.044715 * z * z * z)).tanh()))
            .collect();
        let m = mm64(&u, &l.mlp_proj_w, &l.mlp_proj_b, f, c);
        x.iter_mut().zip(&m).for_each(|(xi, mi)| *xi += mi);
    }
    let h = ln64(&x, &w.ln_f_g, &w.ln_f_b, c, eps);
    let mut total = 0.0;
    for bi in 0..b {
        for tq in 0..t - 1 {
            let r = bi * t + tq;
            let logits: Vec<f64> = (0..v)
                .map(|j| (0..c).map(|k| h[r * c + k] * w.wte[j * c + k] as f64).sum())
                .collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + logits.iter().map(|z| (z - m).exp()).sum::<f64>().ln();
            total += lse - logits[ids[r + 1] as usize];
        }
    }
    total / (b * (t - 1)) as f64
}

// ----------------------------------------------------------------------------
// whole model

#[test]
fn gradients_match_finite_differences() {
    let w = tiny_model(3);
    let (b, t) = (3, 6);
    // 18 draws from 13 tokens: some repeat, some never occur.
    let tokens = random_input_ids(b, t, w.config.vocab_size, 11);
    let (loss, grads) = forward_backward(&w, &tokens).unwrap();
    let loss_ref = loss64(&w, &tokens.ids, b, t);
    assert!(
        ((loss - loss_ref) / loss_ref).abs() < 1e-5,
        "loss {loss} vs f64 reference {loss_ref}"
    );
    // the f32 CPU forward agrees with the f64 one (so the check checks the model)
    let logits = gpt2_forward(&w, &tokens.ids, b, t);
    assert!(logits.iter().all(|x| x.is_finite()));

    let h = 1e-5;
    let mut failures = Vec::new();
    for (name, g, _) in grads.named_tensors(&w.config) {
        let gmax = max_abs(g.iter().map(|&x| x as f64));
        assert!(gmax > 0.0, "{name}: gradient is all zero");
        // the largest entry, the first, the last and a few spread between
        let argmax = (0..g.len()).max_by(|&i, &j| g[i].abs().total_cmp(&g[j].abs()));
        let mut sample = vec![argmax.unwrap(), 0, g.len() - 1];
        sample.extend((1..5).map(|k| k * g.len() / 5 + k));
        for &i in sample.iter().filter(|&&i| i < g.len()) {
            let mut wp = w.clone();
            let p = &mut param_mut(&mut wp, &name)[i];
            let x0 = *p as f64;
            // evaluate at exactly representable f32 points
            let (xp, xm) = ((x0 + h) as f32, (x0 - h) as f32);
            *p = xp;
            let lp = loss64(&wp, &tokens.ids, b, t);
            *param_mut(&mut wp, &name).get_mut(i).unwrap() = xm;
            let lm = loss64(&wp, &tokens.ids, b, t);
            let fd = (lp - lm) / (xp as f64 - xm as f64);
            let d = (g[i] as f64 - fd).abs();
            if d > 1e-4 * gmax + 1e-9 {
                failures.push(format!(
                    "{name}[{i}]: analytic {} vs finite difference {fd:e} (max|g| {gmax:e})",
                    g[i]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn check_against_transformers(name: &str) {
    let dir = fixture_dir(name);
    let w = Gpt2Weights::load_checkpoint(&dir).unwrap();
    let tokens = read_input_ids(&dir.join("input_ids.safetensors")).unwrap();
    let (loss, grads) = forward_backward(&w, &tokens).unwrap();
    let want = read_all_f64(&dir.join("loss_grads.safetensors"));
    let find = |n: &str| {
        want.iter()
            .find(|(k, _)| k == n || k.strip_prefix("transformer.") == Some(n))
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{name}: loss_grads.safetensors has no `{n}`"))
    };
    let loss_hf = find("loss")[0];
    assert!(
        ((loss - loss_hf) / loss_hf).abs() <= 1e-5,
        "{name}: loss {loss} vs transformers {loss_hf}"
    );
    let named = grads.named_tensors(&w.config);
    assert_eq!(named.len() + 1, want.len(), "{name}: tensor count");
    let mut report = Vec::new();
    for (n, g, _) in &named {
        let rel = rel_max_diff(g, find(n));
        if rel > 1e-4 {
            report.push(format!("{n}: max|Δ|/max|g| = {rel:e}"));
        }
    }
    assert!(report.is_empty(), "{name}:\n{}", report.join("\n"));
}

#[test]
fn gradients_match_transformers_tiny_gpt2() {
    check_against_transformers("tiny-gpt2");
}

#[test]
fn gradients_match_transformers_tiny_gpt2_n_inner() {
    check_against_transformers("tiny-gpt2-n-inner");
}

#[test]
fn uneven_microbatches_sum_to_the_full_batch() {
    let w = tiny_model(4);
    let (b, t) = (5, 7);
    let tokens = random_input_ids(b, t, w.config.vocab_size, 21);
    let (loss, full) = forward_backward(&w, &tokens).unwrap();

    let predictions = b * (t - 1);
    let mut acc = Gpt2Grads::zeros(&w.config);
    let mut acc_loss = 0.0;
    let mut first = 0;
    for size in [2, 2, 1] {
        let mb = TokenBatch {
            ids: tokens.ids[first * t..(first + size) * t].to_vec(),
            batch: size,
            seq: t,
        };
        acc_loss += forward_backward_microbatch(&w, &mb, predictions, &mut acc).unwrap();
        first += size;
    }
    assert!(
        (acc_loss - loss).abs() <= 1e-12 * loss,
        "{acc_loss} vs {loss}"
    );
    // Same per-row arithmetic; only the order of the sums over rows differs.
    for ((n, a, _), (_, f, _)) in acc
        .named_tensors(&w.config)
        .iter()
        .zip(full.named_tensors(&w.config))
    {
        let f64s: Vec<f64> = f.iter().map(|&x| x as f64).collect();
        let rel = rel_max_diff(a, &f64s);
        assert!(rel <= 1e-6, "{n}: max|Δ|/max|g| = {rel:e}");
    }
    // one microbatch of the whole batch is the whole batch, exactly
    let mut one = Gpt2Grads::zeros(&w.config);
    let l1 = forward_backward_microbatch(&w, &tokens, predictions, &mut one).unwrap();
    assert_eq!((l1, &one), (loss, &full));
}

#[test]
fn forward_backward_refuses_bad_input() {
    let w = tiny_model(5);
    let v = w.config.vocab_size as u32;
    let cases = [
        (vec![1u32, 2, 3], 3, 1, "at least 2 tokens"),
        (vec![1, v], 1, 2, "out of range"),
        (vec![1; 9 * 2], 2, 9, "n_positions"),
        (vec![1, 2, 3], 1, 2, "batch 1 x seq 2"),
    ];
    for (ids, batch, seq, what) in cases {
        let tokens = TokenBatch { ids, batch, seq };
        let e = forward_backward(&w, &tokens).expect_err(what);
        assert!(
            matches!(e, Error::Input(_)) && e.to_string().contains(what),
            "{e}"
        );
    }
    let tokens = random_input_ids(2, 3, 13, 0);
    let mut g = Gpt2Grads::zeros(&w.config);
    let e = forward_backward_microbatch(&w, &tokens, 3, &mut g).unwrap_err();
    assert!(e.to_string().contains("predictions (3)"), "{e}");
}

#[test]
fn next_token_targets_shift_and_ignore() {
    let ids = [10, 11, 12, 20, 21, 22, 30, 31, 32];
    assert_eq!(
        next_token_targets(&ids, 3, 3, 2),
        [11, 12, NO_TARGET, 21, 22, NO_TARGET, NO_TARGET, NO_TARGET, NO_TARGET]
    );
}

// ----------------------------------------------------------------------------
// op level

#[test]
fn every_op_accumulates() {
    // Calling a backward twice on zeroed gradients gives exactly twice once
    // (x + x is exact in binary floating point).
    let (n, c, oc) = (3, 5, 7);
    let inp = rand_vec(n * c, 1, 1.0);
    let w = rand_vec(c * oc, 2, 1.0);
    let dout = rand_vec(n * oc, 3, 1.0);
    let twice = |f: &dyn Fn(&mut Vec<f32>), len: usize| {
        let mut once = vec![0.0f32; len];
        f(&mut once);
        let mut two = vec![0.0f32; len];
        f(&mut two);
        f(&mut two);
        assert!(once.iter().any(|&x| x != 0.0));
        assert_eq!(two, once.iter().map(|x| 2.0 * x).collect::<Vec<_>>());
    };
    twice(&|d| matmul_backward_input(d, &dout, &w, n, c, oc), n * c);
    twice(
        &|d| matmul_backward_weight(d, &dout, &inp, n, c, oc),
        c * oc,
    );
    twice(&|d| matmul_backward_bias(d, &dout, n, oc), oc);
    twice(&|d| gelu_backward(d, &inp, &inp), n * c);
    twice(
        &|d| residual_backward(&mut vec![0.0; n * c], d, &inp),
        n * c,
    );
    twice(
        &|d| {
            layernorm_backward(
                d,
                &mut [0.0; 5],
                &mut [0.0; 5],
                &inp,
                &inp,
                &w[..5],
                n,
                c,
                1e-5,
            )
        },
        n * c,
    );
}

#[test]
fn matmul_backward_is_the_transposed_products() {
    // (N=2, C=3) @ (C=3, OC=2); dout picks out one output at a time, so
    // dX is a row of W^T and dW is the input in one column.
    let inp = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let w = [1.0f32, -1.0, 0.5, 2.0, -3.0, 0.25];
    let dout = [0.0f32, 1.0, 0.0, 0.0]; // d out[0, 1]
    let mut dx = [0.0f32; 6];
    matmul_backward_input(&mut dx, &dout, &w, 2, 3, 2);
    assert_eq!(dx, [-1.0, 2.0, 0.25, 0.0, 0.0, 0.0]);
    let mut dw = [0.0f32; 6];
    matmul_backward_weight(&mut dw, &dout, &inp, 2, 3, 2);
    assert_eq!(dw, [0.0, 1.0, 0.0, 2.0, 0.0, 3.0]);
    let mut db = [0.0f32; 2];
    matmul_backward_bias(&mut db, &[1.0, 2.0, 3.0, 4.0], 2, 2);
    assert_eq!(db, [4.0, 6.0]);
    // <dout, out> = <dx, inp> for a linear map without bias
    let mut out = [0.0f32; 4];
    matmul_forward(&mut out, &inp, &w, None, 2, 3, 2);
    assert_eq!(out[1], dx.iter().zip(&inp).map(|(a, b)| a * b).sum::<f32>());
}

#[test]
fn embedding_backward_sums_repeated_tokens() {
    let (v, maxt, c) = (4, 3, 2);
    let ids = [2u32, 2, 0]; // B=1, T=3: token 2 twice
    let dout = [1.0f32, 2.0, 10.0, 20.0, 100.0, 200.0];
    let mut dwte = vec![0.0f32; v * c];
    let mut dwpe = vec![0.0f32; maxt * c];
    embedding_backward(&mut dwte, &mut dwpe, &dout, &ids, 1, 3, c);
    assert_eq!(dwte, [100.0, 200.0, 0.0, 0.0, 11.0, 22.0, 0.0, 0.0]);
    assert_eq!(dwpe, dout);
}

#[test]
fn residual_backward_passes_to_both_inputs() {
    let mut da = [1.0f32, 1.0];
    let mut db = [0.0f32, 0.0];
    residual_backward(&mut da, &mut db, &[3.0, -4.0]);
    assert_eq!((da, db), ([4.0, -3.0], [3.0, -4.0]));
}

#[test]
fn crossentropy_backward_is_softmax_minus_onehot() {
    let (n, v) = (3, 4);
    let logits = [
        0.0f32, 0.0, 0.0, 0.0, 1e4, 0.0, -1e4, 0.0, 5.0, 1.0, 2.0, 3.0,
    ];
    let targets = [1, 0, NO_TARGET];
    let mut dl = vec![0.0f32; n * v];
    let mut losses = vec![9.0f32; n];
    crossentropy_softmax_backward(&mut dl, &mut losses, &logits, &targets, 0.5, n, v);
    // uniform row: loss ln 4, dlogits = 0.5 * (1/4 - onehot)
    assert!((losses[0] - 4.0f32.ln()).abs() < 1e-6);
    assert_eq!(&dl[..4], &[0.125, -0.375, 0.125, 0.125]);
    // huge logits stay finite: the target wins outright
    assert_eq!(losses[1], 0.0);
    assert_eq!(&dl[4..8], &[0.0, 0.0, 0.0, 0.0]);
    // no target: no loss, no gradient
    assert_eq!(losses[2], 0.0);
    assert_eq!(&dl[8..], &[0.0; 4]);
}

#[test]
fn attention_backward_single_key_passes_dout_to_v() {
    // T=1: the only probability is 1, so dv = dout and dq = dk = 0.
    let (c, nh) = (4, 2);
    let qkv = rand_vec(3 * c, 7, 2.0);
    let dout = [1.0f32, -2.0, 3.0, -4.0];
    let mut dqkv = vec![0.0f32; 3 * c];
    attention_backward(&mut dqkv, &dout, &qkv, 1, 1, nh, nh, c / nh, 0);
    assert_eq!(&dqkv[2 * c..], &dout);
    assert!(dqkv[..2 * c].iter().all(|&x| x.abs() < 1e-6), "{dqkv:?}");
}
