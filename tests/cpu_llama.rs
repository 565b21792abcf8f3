//! The Llama family's CPU reference (`wgpipe::cpu::llama`, grouped-query
//! attention in `cpu::attention_forward` and `cpu::decode`) and the host's
//! RoPE frequencies (`wgpipe::rope`): against transformers' values
//! (tests/data/llama-ops, made by scripts/make_llama_ops_fixture.py), the
//! backward ops against finite differences of an f64 forward, and
//! attention's head grouping and window against plain restatements.
//!
//! N = rows, C = channels, NH/NKV = query/key-value heads, HD = head dim,
//! F = MLP width, T = sequence length.

mod common;

use common::llama64::{check_fd, dot64, rmsnorm64, rope64, swiglu64};
use common::{assert_close, assert_close_f64, Rng};
use serde_json::Value;
use wgpipe::cpu::llama::*;
use wgpipe::cpu::{attention_forward, decode};
use wgpipe::rope::{rope_inv_freq, RopeScaling};

fn fixture() -> Value {
    let path = common::fixture_dir("llama-ops").join("ops_ref.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A fixture list of float32 values (written exactly).
fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().expect("an integer") as usize
}

/// A `rope_scaling` of config.json as the fixture holds it.
fn scaling_of(v: &Value) -> RopeScaling {
    if v.is_null() {
        return RopeScaling::None;
    }
    let f = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("rope_scaling.{k}"));
    match v["rope_type"].as_str().unwrap() {
        "linear" => RopeScaling::Linear {
            factor: f("factor"),
        },
        "llama3" => RopeScaling::Llama3 {
            factor: f("factor"),
            low_freq_factor: f("low_freq_factor"),
            high_freq_factor: f("high_freq_factor"),
            original_max_position_embeddings: usize_of(&v["original_max_position_embeddings"]),
        },
        other => panic!("rope_type {other}"),
    }
}

/// Distance in units in the last place between two finite f32 of one sign.
fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

// ----------------------------------------------------------------------------
// RoPE's frequencies

#[test]
fn rope_inv_freq_matches_transformers() {
    // transformers' default frequencies go through torch.pow, SLEEF's powf
    // (within 1 ulp) where it vectorises; ours is correctly rounded. On the
    // fixture's 256 values they differ once, by 1 ulp (head dim 128, theta
    // 1e6, pair 37); every llama3 and linear value is bit for bit theirs.
    let r = fixture();
    let mut off_by_one = Vec::new();
    for case in r["inv_freq"].as_array().unwrap() {
        let (hd, theta) = (
            usize_of(&case["head_dim"]),
            case["rope_theta"].as_f64().unwrap(),
        );
        let scaling = scaling_of(&case["rope_scaling"]);
        let want = f32s(&case["inv_freq"]);
        let got = rope_inv_freq(hd, theta, &scaling);
        let what = format!("head_dim {hd} theta {theta} {scaling:?}");
        assert_eq!(got.len(), hd / 2, "{what}");
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let u = ulps(g, w);
            assert!(
                u <= 1,
                "{what}: inv_freq[{i}] = {g:e}, transformers {w:e} ({u} ulp)"
            );
            if u == 1 {
                off_by_one.push(format!("{what} [{i}]"));
            }
            if !matches!(scaling, RopeScaling::None) {
                assert_eq!(g, w, "{what}: inv_freq[{i}] not bit for bit");
            }
        }
    }
    assert!(
        off_by_one.len() <= 1,
        "more than one value 1 ulp off: {off_by_one:?}"
    );
}

#[test]
fn rope_inv_freq_llama3_regimes() {
    // Llama 3.1's scaling: high frequencies (wavelength < 8192/4) kept, low
    // ones (> 8192) divided by 8, the medium ones in between and monotone.
    let scaling = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    let plain = rope_inv_freq(128, 500000.0, &RopeScaling::None);
    let scaled = rope_inv_freq(128, 500000.0, &scaling);
    let (mut high, mut medium, mut low) = (0, 0, 0);
    for (&p, &s) in plain.iter().zip(&scaled) {
        let wavelen = 2.0 * std::f64::consts::PI / p as f64;
        if wavelen < 2048.0 {
            assert_eq!(s, p);
            high += 1;
        } else if wavelen > 8192.0 {
            assert_eq!(s, p / 8.0);
            low += 1;
        } else {
            assert!(s < p && s > p / 8.0, "medium {s} from {p}");
            medium += 1;
        }
    }
    assert!(high > 0 && medium > 0 && low > 0, "{high} {medium} {low}");
    assert!(scaled.windows(2).all(|w| w[1] < w[0]), "{scaled:?}");
    // Linear scaling divides every frequency.
    let lin = rope_inv_freq(10, 10000.0, &RopeScaling::Linear { factor: 4.0 });
    let base = rope_inv_freq(10, 10000.0, &RopeScaling::None);
    assert_eq!(lin, base.iter().map(|f| f / 4.0).collect::<Vec<_>>());
    assert_eq!(base[0], 1.0);
}

// ----------------------------------------------------------------------------
// the ops against transformers

/// qkv (T, (NH + 2 NKV) HD) rows from transformers' q (NH, T, HD) and k
/// (NKV, T, HD), with `v` in the value columns.
fn fuse_qkv(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
) -> Vec<f32> {
    let row_len = (nh + 2 * nkv) * hd;
    let mut qkv = vec![0.0f32; t * row_len];
    for ti in 0..t {
        let row = &mut qkv[ti * row_len..][..row_len];
        for h in 0..nh {
            row[h * hd..][..hd].copy_from_slice(&q[(h * t + ti) * hd..][..hd]);
        }
        for h in 0..nkv {
            row[(nh + h) * hd..][..hd].copy_from_slice(&k[(h * t + ti) * hd..][..hd]);
        }
        row[(nh + nkv) * hd..].copy_from_slice(&v[ti * nkv * hd..][..nkv * hd]);
    }
    qkv
}

#[test]
fn rope_matches_transformers_forward_and_backward() {
    let r = fixture();
    let c = &r["rope"];
    let (nh, nkv, hd) = (usize_of(&c["nh"]), usize_of(&c["nkv"]), usize_of(&c["hd"]));
    let pos: Vec<u32> = c["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u32)
        .collect();
    let t = pos.len();
    let inv_freq = rope_inv_freq(
        hd,
        c["rope_theta"].as_f64().unwrap(),
        &scaling_of(&c["rope_scaling"]),
    );
    let v = Rng::new(1).vec(t * nkv * hd, 1.0);
    let fuse = |q: &str, k: &str| fuse_qkv(&f32s(&c[q]), &f32s(&c[k]), &v, t, nh, nkv, hd);

    // Angles up to 65000 rad: cos and sin of the same f32 angle, ours from
    // libm, torch's from SLEEF, each within an ulp or so.
    let mut qkv = fuse("q", "k");
    rope_forward(&mut qkv, &pos, &inv_freq, t, nh, nkv, hd);
    assert_close(
        "rope_forward vs transformers",
        &qkv,
        &fuse("q_embed", "k_embed"),
        1e-6,
        1e-6,
    );
    let mut dqkv = fuse("dq_embed", "dk_embed");
    rope_backward(&mut dqkv, &pos, &inv_freq, t, nh, nkv, hd);
    assert_close(
        "rope_backward vs transformers",
        &dqkv,
        &fuse("dq", "dk"),
        1e-6,
        1e-6,
    );
}

#[test]
fn rmsnorm_matches_transformers_forward_and_backward() {
    let r = fixture();
    let c = &r["rmsnorm"];
    let (n, ch, eps) = (
        usize_of(&c["n"]),
        usize_of(&c["c"]),
        c["eps"].as_f64().unwrap() as f32,
    );
    let (x, w, dout) = (f32s(&c["x"]), f32s(&c["weight"]), f32s(&c["dout"]));
    let mut out = vec![0.0; n * ch];
    rmsnorm_forward(&mut out, &x, &w, n, ch, eps);
    // Sums of squares in a different order (torch's is vectorised).
    assert_close(
        "rmsnorm_forward vs transformers",
        &out,
        &f32s(&c["out"]),
        1e-6,
        1e-6,
    );
    let (mut dx, mut dw) = (vec![0.0; n * ch], vec![0.0; ch]);
    rmsnorm_backward(&mut dx, &mut dw, &dout, &x, &w, n, ch, eps);
    assert_close(
        "rmsnorm dx vs transformers",
        &dx,
        &f32s(&c["dx"]),
        1e-6,
        1e-5,
    );
    assert_close(
        "rmsnorm dweight vs transformers",
        &dw,
        &f32s(&c["dweight"]),
        1e-6,
        1e-5,
    );
}

#[test]
fn swiglu_matches_transformers_forward_and_backward() {
    let r = fixture();
    let c = &r["swiglu"];
    let (n, f) = (usize_of(&c["n"]), usize_of(&c["f"]));
    let (gate, up) = (f32s(&c["gate"]), f32s(&c["up"]));
    let gate_up: Vec<f32> = (0..n)
        .flat_map(|r| {
            gate[r * f..][..f]
                .iter()
                .chain(&up[r * f..][..f])
                .copied()
                .collect::<Vec<_>>()
        })
        .collect();
    let mut out = vec![0.0; n * f];
    swiglu_forward(&mut out, &gate_up, n, f);
    // torch's silu is g / (1 + exp(-g)), ours g * sigmoid(g): an ulp apart.
    assert_close(
        "swiglu_forward vs transformers",
        &out,
        &f32s(&c["out"]),
        1e-6,
        1e-6,
    );
    let mut d = vec![0.0; n * 2 * f];
    swiglu_backward(&mut d, &f32s(&c["dout"]), &gate_up, n, f);
    let (dgate, dup): (Vec<f32>, Vec<f32>) = (
        d.chunks(2 * f).flat_map(|r| r[..f].to_vec()).collect(),
        d.chunks(2 * f).flat_map(|r| r[f..].to_vec()).collect(),
    );
    assert_close(
        "swiglu dgate vs transformers",
        &dgate,
        &f32s(&c["dgate"]),
        1e-6,
        1e-5,
    );
    assert_close(
        "swiglu dup vs transformers",
        &dup,
        &f32s(&c["dup"]),
        1e-6,
        1e-6,
    );
}

// ----------------------------------------------------------------------------
// backward against finite differences (odd shapes)

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    // (C = 1 is left out: there dx is a cancellation down to ~eps, which f32
    // cannot resolve to 1e-4.)
    for (n, c, eps) in [(3, 7, 1e-5f32), (4, 13, 1e-6), (2, 2, 1e-5)] {
        let mut rng = Rng::new(10 + c as u64);
        let x: Vec<f32> = rng.vec(n * c, 2.0).iter().map(|v| v + 0.3).collect();
        let w: Vec<f32> = rng.vec(c, 0.5).iter().map(|v| v + 1.0).collect();
        let g = rng.vec(n * c, 1.0); // dL/dout: L = sum(out * g)
        let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
        rmsnorm_backward(&mut dx, &mut dw, &g, &x, &w, n, c, eps);
        let what = format!("N={n} C={c}");
        let eps64 = eps as f64;
        check_fd(
            &format!("rmsnorm dx {what}"),
            &dx,
            &x,
            |x| dot64(&rmsnorm64(x, &w, c, eps64), &g),
            1e-5,
            1e-4,
        );
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        check_fd(
            &format!("rmsnorm dweight {what}"),
            &dw,
            &w,
            |w| {
                let w32: Vec<f32> = vec![1.0; c];
                let unit = rmsnorm64(&x64, &w32, c, eps64);
                unit.iter()
                    .enumerate()
                    .map(|(i, u)| u * w[i % c] * g[i] as f64)
                    .sum()
            },
            1e-5,
            1e-4,
        );
    }
}

#[test]
fn rope_backward_matches_finite_differences_and_inverts_the_forward() {
    // (NH, NKV, HD): multi-head, grouped, multi-query; head dims 2, 10, 12.
    for (nh, nkv, hd) in [(2, 2, 2), (4, 2, 10), (3, 1, 12)] {
        let n = 5;
        let mut rng = Rng::new(hd as u64);
        let row_len = (nh + 2 * nkv) * hd;
        let qkv = rng.vec(n * row_len, 1.5);
        let pos = [0u32, 1, 9, 777, 40000];
        let scaling = RopeScaling::Linear { factor: 2.0 };
        let inv_freq = rope_inv_freq(hd, 10000.0, &scaling);
        let g = rng.vec(n * row_len, 1.0);
        let mut grad = g.clone();
        rope_backward(&mut grad, &pos, &inv_freq, n, nh, nkv, hd);
        let what = format!("NH={nh} NKV={nkv} HD={hd}");
        check_fd(
            &format!("rope dqkv {what}"),
            &grad,
            &qkv,
            |x| dot64(&rope64(x, &pos, &inv_freq, nh, nkv, hd), &g),
            1e-4,
            1e-5,
        );
        // A rotation: backward (its transpose) undoes the forward, v untouched.
        let mut y = qkv.clone();
        rope_forward(&mut y, &pos, &inv_freq, n, nh, nkv, hd);
        for r in 0..n {
            let v0 = r * row_len + (nh + nkv) * hd;
            assert_eq!(
                &y[v0..v0 + nkv * hd],
                &qkv[v0..v0 + nkv * hd],
                "{what}: v moved"
            );
        }
        rope_backward(&mut y, &pos, &inv_freq, n, nh, nkv, hd);
        assert_close(&format!("rope round trip {what}"), &y, &qkv, 1e-6, 1e-6);
        // Position 0 is the identity.
        let mut z = qkv[..row_len].to_vec();
        rope_forward(&mut z, &[0], &inv_freq, 1, nh, nkv, hd);
        assert_eq!(z, qkv[..row_len], "{what}: position 0");
    }
}

#[test]
fn swiglu_backward_matches_finite_differences() {
    let (n, f) = (3, 7);
    let mut rng = Rng::new(5);
    let mut gate_up = rng.vec(n * 2 * f, 6.0);
    gate_up[..4].copy_from_slice(&[0.0, 20.0, -20.0, 80.0]);
    let g = rng.vec(n * f, 1.0);
    let mut d = vec![0.0; n * 2 * f];
    swiglu_backward(&mut d, &g, &gate_up, n, f);
    check_fd(
        "swiglu dgate_up",
        &d,
        &gate_up,
        |x| dot64(&swiglu64(x, f), &g),
        1e-5,
        1e-5,
    );
}

#[test]
fn llama_backward_ops_accumulate() {
    // Twice on zeroed gradients is exactly twice once (x + x is exact); RoPE's
    // is in place, not accumulated.
    let (n, c) = (3, 5);
    let x = Rng::new(1).vec(n * c, 1.0);
    let w = Rng::new(2).vec(c, 1.0);
    let twice = |f: &dyn Fn(&mut Vec<f32>), len: usize| {
        let mut once = vec![0.0f32; len];
        f(&mut once);
        let mut two = vec![0.0f32; len];
        f(&mut two);
        f(&mut two);
        assert!(once.iter().any(|&v| v != 0.0));
        assert_eq!(two, once.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
    };
    twice(
        &|d| rmsnorm_backward(d, &mut vec![0.0; c], &x, &x, &w, n, c, 1e-5),
        n * c,
    );
    // dweight sums over rows within a call: one row, one add per call.
    twice(
        &|d| rmsnorm_backward(&mut vec![0.0; c], d, &x[..c], &x[..c], &w, 1, c, 1e-5),
        c,
    );
    let gate_up = Rng::new(3).vec(n * 2 * c, 3.0);
    twice(&|d| swiglu_backward(d, &x, &gate_up, n, c), n * 2 * c);
}

#[test]
fn rmsnorm_and_swiglu_known_values() {
    // rms of [3, 4] is sqrt(12.5); weight [1, 2]; no eps.
    let mut out = [0.0f32; 2];
    rmsnorm_forward(&mut out, &[3.0, 4.0], &[1.0, 2.0], 1, 2, 0.0);
    let r = 12.5f64.sqrt();
    assert_close_f64(&out, &[3.0 / r, 8.0 / r], 1e-7, 1e-7, "rmsnorm [3, 4]");
    // silu(0) = 0, silu(1) = sigmoid(1), silu(30) = 30 (to f32), silu(-100) ~ -3.7e-42.
    let gate_up = [0.0f32, 1.0, 30.0, -100.0, 5.0, 2.0, 1.0, 1.0];
    let mut out = [0.0f32; 4];
    swiglu_forward(&mut out, &gate_up, 1, 4);
    let sig1 = 1.0 / (1.0 + (-1.0f64).exp());
    assert_close_f64(
        &out,
        &[0.0, 2.0 * sig1, 30.0, -100.0 * (-100.0f64).exp()],
        1e-7,
        1e-7,
        "swiglu",
    );
    assert!(out.iter().all(|v| v.is_finite()));
}

// ----------------------------------------------------------------------------
// grouped-query attention and the sliding window

/// qkv rows with every KV head repeated NH/NKV times: the multi-head input
/// that grouped-query attention must equal (transformers' `repeat_kv`).
fn repeat_kv(qkv: &[f32], nh: usize, nkv: usize, hd: usize) -> Vec<f32> {
    let row_len = (nh + 2 * nkv) * hd;
    let group = nh / nkv;
    qkv.chunks(row_len)
        .flat_map(|row| {
            let mut out = row[..nh * hd].to_vec();
            for part in 0..2 {
                for h in 0..nh {
                    out.extend_from_slice(&row[(nh + part * nkv + h / group) * hd..][..hd]);
                }
            }
            out
        })
        .collect()
}

#[test]
fn grouped_query_attention_is_multi_head_with_repeated_kv() {
    // (B, T, NH, NKV, HD, window): MQA, GQA, head dims not powers of two.
    for (b, t, nh, nkv, hd, window) in
        [(2, 7, 4, 1, 10, 0), (1, 9, 6, 2, 12, 0), (2, 8, 4, 2, 5, 3)]
    {
        let qkv = Rng::new(t as u64).vec(b * t * (nh + 2 * nkv) * hd, 2.0);
        let mut gqa = vec![0.0; b * t * nh * hd];
        attention_forward(&mut gqa, &qkv, b, t, nh, nkv, hd, window);
        let mut mha = vec![0.0; b * t * nh * hd];
        attention_forward(
            &mut mha,
            &repeat_kv(&qkv, nh, nkv, hd),
            b,
            t,
            nh,
            nh,
            hd,
            window,
        );
        assert_eq!(
            gqa, mha,
            "B={b} T={t} NH={nh} NKV={nkv} HD={hd} window={window}"
        );
    }
}

#[test]
fn a_sliding_window_is_attention_over_the_last_window_keys() {
    let (b, t, nh, nkv, hd) = (2, 11, 4, 2, 6);
    let row_len = (nh + 2 * nkv) * hd;
    let qkv = Rng::new(3).vec(b * t * row_len, 2.0);
    let att = |window: usize| {
        let mut out = vec![0.0; b * t * nh * hd];
        attention_forward(&mut out, &qkv, b, t, nh, nkv, hd, window);
        out
    };
    // A window as long as the sequence (or longer) is no window.
    let full = att(0);
    assert_eq!(att(t), full);
    assert_eq!(att(t + 5), full);
    for w in [1, 3, 4] {
        let got = att(w);
        assert_ne!(got, full, "window {w} changed nothing");
        // Query ti over keys ti+1-w ..= ti is the last query of the
        // sequence made of those rows alone, without a window.
        for bi in 0..b {
            for ti in 0..t {
                let first = (ti + 1).saturating_sub(w);
                let len = ti + 1 - first;
                let rows = &qkv[(bi * t + first) * row_len..][..len * row_len];
                let mut alone = vec![0.0; len * nh * hd];
                attention_forward(&mut alone, rows, 1, len, nh, nkv, hd, 0);
                assert_eq!(
                    &got[(bi * t + ti) * nh * hd..][..nh * hd],
                    &alone[(len - 1) * nh * hd..],
                    "window {w}: b {bi} t {ti}"
                );
            }
        }
    }
}

#[test]
fn decode_attention_over_the_cache_equals_the_forward() {
    // One sequence written into slot 1 of a cache (row table positions
    // 0..T), then each row attending over the cache: the forward's rows, for
    // GQA, MQA and a window, with the cache sized by the KV heads.
    for (t, nh, nkv, hd, window) in [(9, 4, 2, 10, 0), (7, 3, 1, 12, 3), (6, 2, 2, 65, 4)] {
        let (slots, n_pos) = (3, t + 2);
        let row_len = (nh + 2 * nkv) * hd;
        let qkv = Rng::new(hd as u64).vec(t * row_len, 2.0);
        let rows: Vec<(u32, u32)> = (0..t as u32).map(|p| (1, p)).collect();
        let cache_len = slots * n_pos * nkv * hd;
        let (mut kc, mut vc) = (vec![0.0; cache_len], vec![0.0; cache_len]);
        decode::kv_cache_write(&mut kc, &mut vc, &qkv, &rows, nh, nkv, hd, n_pos);
        // The cache holds k and v of every row, at (slot, pos).
        for (r, &(s, p)) in rows.iter().enumerate() {
            let at = (s as usize * n_pos + p as usize) * nkv * hd;
            assert_eq!(
                &kc[at..][..nkv * hd],
                &qkv[r * row_len + nh * hd..][..nkv * hd]
            );
            assert_eq!(
                &vc[at..][..nkv * hd],
                &qkv[r * row_len + (nh + nkv) * hd..][..nkv * hd]
            );
        }
        let mut got = vec![0.0; t * nh * hd];
        decode::attention_decode(&mut got, &qkv, &kc, &vc, &rows, nh, nkv, hd, n_pos, window);
        let mut want = vec![0.0; t * nh * hd];
        attention_forward(&mut want, &qkv, 1, t, nh, nkv, hd, window);
        // Sums in another order (an iterator's sum, w / sum * v).
        assert_close(
            &format!("T={t} NH={nh} NKV={nkv} HD={hd} window={window}"),
            &got,
            &want,
            1e-6,
            1e-5,
        );
    }
}

#[test]
fn embeddings_without_positions_are_the_token_rows() {
    let (v, c) = (5, 3);
    let wte: Vec<f32> = (0..v * c).map(|i| i as f32).collect();
    let wpe = vec![100.0f32; 4 * c];
    let ids = [4u32, 0, 2, 1];
    let mut out = vec![0.0; 4 * c];
    wgpipe::cpu::embedding_forward(&mut out, &ids, &wte, None, 2, 2, c, 0);
    assert_eq!(
        out,
        [12.0, 13.0, 14.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 3.0, 4.0, 5.0]
    );
    let mut with = vec![0.0; 4 * c];
    wgpipe::cpu::embedding_forward(&mut with, &ids, &wte, Some(&wpe), 2, 2, c, 0);
    assert_eq!(with, out.iter().map(|x| x + 100.0).collect::<Vec<_>>());
    let rows = [(0u32, 3u32), (1, 0), (2, 1), (0, 2)];
    let mut dec = vec![0.0; 4 * c];
    decode::embedding_decode(&mut dec, &ids, &wte, None, &rows, c);
    assert_eq!(dec, out);
}
