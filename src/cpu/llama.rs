//! Plain CPU reference of the Llama family's own ops, forward and backward,
//! as transformers' `LlamaRMSNorm`, `apply_rotary_pos_emb` and `LlamaMLP`
//! compute them: the twins of [`crate::kernels::llama`], by name. Attention
//! (grouped-query, sliding window) is [`crate::cpu::attention_forward`] and
//! [`crate::cpu::decode`]; the embedding without learned positions is
//! [`crate::cpu::embedding_forward`] with `wpe` `None`.
//!
//! N = rows, C = channels, NH = query heads, NKV = key/value heads, HD = head
//! dim, F = MLP width. f32 throughout, sums in plain order. Backward
//! functions take their forward's inputs and recompute what they need;
//! gradients accumulate (`+=`), as in [`crate::cpu::backward`], except RoPE's,
//! which rotates its gradient in place, as its forward rotates its input.

/// out = x * rstd * weight per row, rstd = 1 / sqrt(mean(x^2) + eps)
/// (`LlamaRMSNorm`: `weight * (x * torch.rsqrt(variance + eps))`).
pub fn rmsnorm_forward(
    out: &mut [f32], // (N, C)
    inp: &[f32],     // (N, C)
    weight: &[f32],  // (C)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert_eq!(out.len(), n * c, "rmsnorm_forward: out");
    assert_eq!(inp.len(), n * c, "rmsnorm_forward: inp");
    assert_eq!(weight.len(), c, "rmsnorm_forward: weight");
    for row in 0..n {
        let x = &inp[row * c..][..c];
        let rstd = rmsnorm_rstd(x, eps);
        let o = &mut out[row * c..][..c];
        for i in 0..c {
            o[i] = (x[i] * rstd) * weight[i];
        }
    }
}

/// 1 / sqrt(sum(x^2) / C + eps), the sum in plain order.
fn rmsnorm_rstd(x: &[f32], eps: f32) -> f32 {
    let mut sumsq = 0.0f32;
    for &xi in x {
        sumsq += xi * xi;
    }
    1.0 / (sumsq / x.len() as f32 + eps).sqrt()
}

/// Backward of [`rmsnorm_forward`]. With norm = x * rstd and dnorm =
/// weight * dout, per row: dinp += rstd * (dnorm - norm * mean(dnorm * norm)),
/// dweight += dout * norm.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dinp: &mut [f32],    // (N, C)
    dweight: &mut [f32], // (C)
    dout: &[f32],        // (N, C)
    inp: &[f32],         // (N, C)
    weight: &[f32],      // (C)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert_eq!(dinp.len(), n * c, "rmsnorm_backward: dinp");
    assert_eq!(dweight.len(), c, "rmsnorm_backward: dweight");
    assert_eq!(dout.len(), n * c, "rmsnorm_backward: dout");
    assert_eq!(inp.len(), n * c, "rmsnorm_backward: inp");
    assert_eq!(weight.len(), c, "rmsnorm_backward: weight");
    for row in 0..n {
        let x = &inp[row * c..][..c];
        let d = &dout[row * c..][..c];
        let rstd = rmsnorm_rstd(x, eps);
        let mut dnorm_norm_mean = 0.0f32;
        for i in 0..c {
            let norm = x[i] * rstd;
            let dnorm = weight[i] * d[i];
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_norm_mean /= c as f32;
        let di = &mut dinp[row * c..][..c];
        for i in 0..c {
            let norm = x[i] * rstd;
            let dnorm = weight[i] * d[i];
            dweight[i] += d[i] * norm;
            di[i] += (dnorm - norm * dnorm_norm_mean) * rstd;
        }
    }
}

/// Rotary position embeddings in place on the q and k heads of qkv rows
/// `[q: NH*HD | k: NKV*HD | v: NKV*HD]` (v untouched), row r at position
/// `pos[r]` (transformers' `rotate_half` convention). For each head x =
/// [x1 | x2] and i < HD/2, with angle = inv_freq[i] * pos in f32:
/// x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin.
#[allow(clippy::too_many_arguments)]
pub fn rope_forward(
    qkv: &mut [f32],  // (N, (NH + 2 NKV) HD), in place
    pos: &[u32],      // (N)
    inv_freq: &[f32], // (HD / 2), from rope::rope_inv_freq
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
) {
    rope_rotate(qkv, pos, inv_freq, n, nh, nkv, hd, 1.0, "rope_forward");
}

/// Backward of [`rope_forward`], in place: dqkv holds the gradient of its
/// output and is turned into the gradient of its input by the transposed
/// rotation of each pair (dx1 = dy1 cos + dy2 sin, dx2 = dy2 cos - dy1 sin)
/// on the q and k heads; dv is untouched.
#[allow(clippy::too_many_arguments)]
pub fn rope_backward(
    dqkv: &mut [f32], // (N, (NH + 2 NKV) HD), in place
    pos: &[u32],      // (N)
    inv_freq: &[f32], // (HD / 2)
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
) {
    rope_rotate(dqkv, pos, inv_freq, n, nh, nkv, hd, -1.0, "rope_backward");
}

/// Rotate every (x1_i, x2_i) pair of the q and k heads by `sign` * angle_i.
#[allow(clippy::too_many_arguments)]
fn rope_rotate(
    qkv: &mut [f32],
    pos: &[u32],
    inv_freq: &[f32],
    n: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    sign: f32,
    name: &str,
) {
    let half = hd / 2;
    let row_len = (nh + 2 * nkv) * hd;
    assert!(hd.is_multiple_of(2), "{name}: head dim {hd} is not even");
    assert_eq!(qkv.len(), n * row_len, "{name}: qkv");
    assert_eq!(pos.len(), n, "{name}: positions");
    assert_eq!(inv_freq.len(), half, "{name}: inv_freq");
    for (row, &p) in qkv.chunks_mut(row_len).zip(pos) {
        for head in row[..(nh + nkv) * hd].chunks_mut(hd) {
            let (x1, x2) = head.split_at_mut(half);
            for i in 0..half {
                let angle = inv_freq[i] * p as f32;
                let (cos, sin) = (angle.cos(), sign * angle.sin());
                let (a, b) = (x1[i], x2[i]);
                x1[i] = a * cos - b * sin;
                x2[i] = b * cos + a * sin;
            }
        }
    }
}

/// silu(g) = g * sigmoid(g), with the sigmoid written so that exp never
/// overflows (as the kernels): (silu(g), sigmoid(g)).
fn silu(g: f32) -> (f32, f32) {
    let e = (-g.abs()).exp();
    let sig = if g >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    (g * sig, sig)
}

/// out = silu(gate) * up, gate_up rows `[gate: F | up: F]` (the Llama MLP's
/// `act_fn(gate_proj(x)) * up_proj(x)` with the two projections fused).
pub fn swiglu_forward(
    out: &mut [f32], // (N, F)
    gate_up: &[f32], // (N, 2F)
    n: usize,
    f: usize,
) {
    assert_eq!(out.len(), n * f, "swiglu_forward: out");
    assert_eq!(gate_up.len(), n * 2 * f, "swiglu_forward: gate_up");
    for row in 0..n {
        let (gate, up) = gate_up[row * 2 * f..][..2 * f].split_at(f);
        let o = &mut out[row * f..][..f];
        for j in 0..f {
            o[j] = silu(gate[j]).0 * up[j];
        }
    }
}

/// Backward of [`swiglu_forward`]: with s = sigmoid(gate) and silu'(g) =
/// s (1 + g (1 - s)), dgate += dout * up * silu'(gate) and
/// dup += dout * silu(gate), into dgate_up's halves.
pub fn swiglu_backward(
    dgate_up: &mut [f32], // (N, 2F)
    dout: &[f32],         // (N, F)
    gate_up: &[f32],      // (N, 2F)
    n: usize,
    f: usize,
) {
    assert_eq!(dgate_up.len(), n * 2 * f, "swiglu_backward: dgate_up");
    assert_eq!(dout.len(), n * f, "swiglu_backward: dout");
    assert_eq!(gate_up.len(), n * 2 * f, "swiglu_backward: gate_up");
    for row in 0..n {
        let (gate, up) = gate_up[row * 2 * f..][..2 * f].split_at(f);
        let (dgate, dup) = dgate_up[row * 2 * f..][..2 * f].split_at_mut(f);
        let d = &dout[row * f..][..f];
        for j in 0..f {
            let g = gate[j];
            let (silu, sig) = silu(g);
            let dsilu = sig * (1.0 + g * (1.0 - sig));
            dgate[j] += (d[j] * up[j]) * dsilu;
            dup[j] += d[j] * silu;
        }
    }
}
