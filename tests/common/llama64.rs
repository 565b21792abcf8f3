//! f64 forwards of the Llama family's own ops, written from their
//! definitions (transformers' `LlamaRMSNorm`, `apply_rotary_pos_emb`,
//! `silu(gate) * up`), not by calling the f32 reference, and a
//! finite-difference check of a gradient against them: what
//! tests/cpu_llama.rs and tests/llama_kernels.rs check backward ops with.
//!
//! N = rows, C = channels, NH/NKV = query/key-value heads, HD = head dim,
//! F = MLP width.

/// out (N, C) = x / sqrt(mean(x^2) + eps) * w.
pub fn rmsnorm64(x: &[f64], w: &[f32], c: usize, eps: f64) -> Vec<f64> {
    let mut out = vec![0.0; x.len()];
    for (row, o) in x.chunks(c).zip(out.chunks_mut(c)) {
        let ms = row.iter().map(|v| v * v).sum::<f64>() / c as f64;
        let rstd = 1.0 / (ms + eps).sqrt();
        for i in 0..c {
            o[i] = row[i] * rstd * w[i] as f64;
        }
    }
    out
}

/// RoPE on the q and k heads of qkv (N, (NH + 2 NKV) HD), row r at `pos[r]`:
/// x * cos + rotate_half(x) * sin, rotate_half([x1 | x2]) = [-x2 | x1]. The
/// angle is transformers' f32 product inv_freq[i] * pos, then cos and sin
/// in f64.
pub fn rope64(
    qkv: &[f64],
    pos: &[u32],
    inv_freq: &[f32],
    nh: usize,
    nkv: usize,
    hd: usize,
) -> Vec<f64> {
    let half = hd / 2;
    let row_len = (nh + 2 * nkv) * hd;
    let mut out = qkv.to_vec();
    for (r, &p) in pos.iter().enumerate() {
        for head in 0..nh + nkv {
            let x = &qkv[r * row_len + head * hd..][..hd];
            let o = &mut out[r * row_len + head * hd..][..hd];
            for j in 0..hd {
                let angle = (inv_freq[j % half] * p as f32) as f64;
                let rot = if j < half { -x[j + half] } else { x[j - half] };
                o[j] = x[j] * angle.cos() + rot * angle.sin();
            }
        }
    }
    out
}

/// out (N, F) = silu(gate) * up, gate_up (N, 2F) rows [gate | up],
/// silu(g) = g / (1 + exp(-g)).
pub fn swiglu64(gate_up: &[f64], f: usize) -> Vec<f64> {
    gate_up
        .chunks(2 * f)
        .flat_map(|row| (0..f).map(move |j| row[j] / (1.0 + (-row[j]).exp()) * row[f + j]))
        .collect()
}

/// sum(a * b) in f64.
pub fn dot64(a: &[f64], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * *y as f64).sum()
}

/// Check `grad`, the analytic gradient of `loss` at `x0`, against central
/// differences of `loss` (an f64 function) with step `h`, at every index (or
/// an even sample of 256 of them for long inputs): |grad - fd| must stay
/// within `rtol` * max|grad| + 1e-9. Panics listing the first failures.
pub fn check_fd(
    name: &str,
    grad: &[f32],
    x0: &[f32],
    loss: impl Fn(&[f64]) -> f64,
    h: f64,
    rtol: f64,
) {
    assert_eq!(grad.len(), x0.len(), "{name}: gradient length");
    let gmax = grad.iter().fold(0.0f64, |m, g| m.max((*g as f64).abs()));
    assert!(gmax > 0.0, "{name}: gradient is all zero");
    let step = x0.len().div_ceil(256).max(1);
    let mut x: Vec<f64> = x0.iter().map(|&v| v as f64).collect();
    let mut bad = Vec::new();
    let mut worst = 0.0f64;
    for i in (0..x0.len()).step_by(step) {
        let v = x[i];
        x[i] = v + h;
        let lp = loss(&x);
        x[i] = v - h;
        let lm = loss(&x);
        x[i] = v;
        let fd = (lp - lm) / (2.0 * h);
        let d = (grad[i] as f64 - fd).abs();
        worst = worst.max(d / gmax);
        if d > rtol * gmax + 1e-9 && bad.len() < 8 {
            bad.push(format!(
                "  [{i}] analytic {:e} finite difference {fd:e}",
                grad[i]
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{name}: gradient vs finite differences beyond {rtol:e} * max|g| ({gmax:e}); \
         largest |diff|/max|g| {worst:e}; first:\n{}",
        bad.join("\n")
    );
}
