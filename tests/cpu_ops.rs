//! The CPU reference ops, one by one, against hand-computed values and
//! naive loops.
//!
//! B = batch, T = time, C = channels, V = vocab, NH = heads, F = MLP width.

mod common;

use common::assert_close_f64;
use wgpipe::cpu::*;

#[test]
fn embedding_adds_token_and_position() {
    let (v, maxt, c) = (5, 4, 3);
    let wte: Vec<f32> = (0..v * c).map(|i| i as f32).collect(); // (V, C)
    let wpe: Vec<f32> = (0..maxt * c).map(|i| 100.0 * i as f32).collect(); // (maxT, C)
    let ids = [4u32, 0, 2, 1]; // (B=2, T=2)
    let mut out = vec![0.0; 4 * c];
    embedding_forward(&mut out, &ids, &wte, Some(&wpe), 2, 2, c, 0);
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
    assert_close_f64(&out, &want, 1e-5, 1e-5, "layernorm");
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
        assert_close_f64(&out, &want, 1e-6, 1e-5, "matmul");
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
    attention_forward(&mut out, &qkv, 1, 2, 1, 1, 2, 0);
    // t=0 attends only to itself.
    assert_eq!(&out[0..2], &[3.0, -1.0]);
    // t=1: scores q1.k0 = 0.5+2 = 2.5, q1.k1 = -0.5+0.5 = 0, scaled by 1/sqrt(2).
    let s0 = 2.5f64 / 2f64.sqrt();
    let s1 = 0.0f64;
    let p0 = s0.exp() / (s0.exp() + s1.exp());
    let p1 = 1.0 - p0;
    let want = [3.0, -1.0, p0 * 3.0 + p1 * 0.0, -p0 + p1 * 4.0];
    assert_close_f64(&out, &want, 1e-6, 1e-6, "attention T=2");
}

#[test]
fn attention_heads_and_batches_are_independent() {
    // B=2, T=3, C=6, NH=3: each head's output only depends on its own columns.
    let (b, t, c, nh) = (2, 3, 6, 3);
    let qkv: Vec<f32> = (0..b * t * 3 * c)
        .map(|i| ((i * 37) % 29) as f32 / 29.0 - 0.5)
        .collect();
    let mut out = vec![0.0; b * t * c];
    let hd = c / nh;
    attention_forward(&mut out, &qkv, b, t, nh, nh, hd, 0);
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
            attention_forward(&mut o1, &one, 1, t, 1, 1, hd, 0);
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
    attention_forward(&mut out, &qkv, 1, 2, 1, 1, 1, 0);
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
    assert_close_f64(&out, &want, 1e-7, 1e-6, "gelu_new");
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
    assert_close_f64(&a, &b64, 1e-6, 1e-6, "lm_head");
}
