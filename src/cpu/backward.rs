//! Plain CPU reference of GPT-2's backward pass: one `*_backward` twin for
//! each forward op of [`crate::cpu`], in the manner of llm.c's train_gpt2.c.
//! Every WGSL backward kernel is checked against these; these are checked by
//! finite differences and against transformers (tests/cpu_backward.rs).
//!
//! Shapes as in [`crate::cpu`]: B = batch, T = sequence length, C = channels,
//! V = vocab size, NH = heads, hd = C / NH, OC = output channels of a matmul,
//! maxT = n_positions, N = B * T rows. `dX` is the gradient of the loss with
//! respect to `X` and has the shape of `X`.
//!
//! Conventions:
//! - Every gradient ACCUMULATES (`+=`), like llm.c: microbatches and the two
//!   uses of one tensor (the tied `wte`, a residual's two inputs) sum into the
//!   same buffer. Zero the gradients once per step, never per call.
//! - A backward function takes the inputs of its forward, not cached
//!   intermediates, and recomputes what it needs (layernorm's mean and rstd,
//!   attention's probabilities) with the forward's exact arithmetic.
//! - The matmul backward is three separate functions, dX, dW and dbias,
//!   because zero-bubble schedules run the input gradient (I) and the weight
//!   gradient (W) as different actions.
//!
//! The whole model's loss and gradients are in [`train`].

pub mod train;

use crate::model::grads::NO_TARGET;

pub use train::{forward_backward, forward_backward_microbatch};

/// dwte[ids[b,t],:] += dout[b,t,:] and dwpe[t,:] += dout[b,t,:], rows in
/// order. A token that occurs several times sums its rows. The tied LM head's
/// share of dwte comes separately, from [`lm_head_backward_weight`].
pub fn embedding_backward(
    dwte: &mut [f32], // (V, C)
    dwpe: &mut [f32], // (maxT, C)
    dout: &[f32],     // (B*T, C)
    ids: &[u32],      // (B*T)
    b: usize,
    t: usize,
    c: usize,
) {
    assert_eq!(dout.len(), b * t * c, "embedding_backward: dout");
    assert_eq!(ids.len(), b * t, "embedding_backward: ids");
    assert!(dwpe.len() >= t * c, "embedding_backward: dwpe");
    let v = dwte.len() / c.max(1);
    for bi in 0..b {
        for ti in 0..t {
            let id = ids[bi * t + ti] as usize;
            assert!(id < v, "embedding_backward: token id {id} >= vocab {v}");
            let d = &dout[(bi * t + ti) * c..][..c];
            let dte = &mut dwte[id * c..][..c];
            for i in 0..c {
                dte[i] += d[i];
            }
            let dpe = &mut dwpe[ti * c..][..c];
            for i in 0..c {
                dpe[i] += d[i];
            }
        }
    }
}

/// Backward of [`crate::cpu::layernorm_forward`]. With norm = (x - mean) *
/// rstd and dnorm = gamma * dout, per row:
/// dx += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)),
/// dgamma += norm * dout, dbeta += dout.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],   // (N, C)
    dgamma: &mut [f32], // (C)
    dbeta: &mut [f32],  // (C)
    dout: &[f32],       // (N, C)
    inp: &[f32],        // (N, C)
    gamma: &[f32],      // (C)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert_eq!(dinp.len(), n * c, "layernorm_backward: dinp");
    assert_eq!(dout.len(), n * c, "layernorm_backward: dout");
    assert_eq!(inp.len(), n * c, "layernorm_backward: inp");
    assert_eq!(gamma.len(), c, "layernorm_backward: gamma");
    assert_eq!(dgamma.len(), c, "layernorm_backward: dgamma");
    assert_eq!(dbeta.len(), c, "layernorm_backward: dbeta");
    for row in 0..n {
        let x = &inp[row * c..][..c];
        let d = &dout[row * c..][..c];
        // mean and rstd exactly as the forward computes them
        let mut mean = 0.0f32;
        for &xi in x {
            mean += xi;
        }
        mean /= c as f32;
        let mut var = 0.0f32;
        for &xi in x {
            let dx = xi - mean;
            var += dx * dx;
        }
        var /= c as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        // the two row means of the gradient
        let mut dnorm_mean = 0.0f32;
        let mut dnorm_norm_mean = 0.0f32;
        for i in 0..c {
            let norm = (x[i] - mean) * rstd;
            let dnorm = gamma[i] * d[i];
            dnorm_mean += dnorm;
            dnorm_norm_mean += dnorm * norm;
        }
        dnorm_mean /= c as f32;
        dnorm_norm_mean /= c as f32;
        let di = &mut dinp[row * c..][..c];
        for i in 0..c {
            let norm = (x[i] - mean) * rstd;
            let dnorm = gamma[i] * d[i];
            dbeta[i] += d[i];
            dgamma[i] += norm * d[i];
            di[i] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rstd;
        }
    }
}

/// dX of out = inp @ weight + bias: dinp (N, C) += dout (N, OC) @ weight^T.
pub fn matmul_backward_input(
    dinp: &mut [f32], // (N, C)
    dout: &[f32],     // (N, OC)
    weight: &[f32],   // (C, OC)
    n: usize,
    c: usize,
    oc: usize,
) {
    assert_eq!(dinp.len(), n * c, "matmul_backward_input: dinp");
    assert_eq!(dout.len(), n * oc, "matmul_backward_input: dout");
    assert_eq!(weight.len(), c * oc, "matmul_backward_input: weight");
    for i in 0..n {
        let d = &dout[i * oc..][..oc];
        for k in 0..c {
            let w = &weight[k * oc..][..oc];
            let mut dot = 0.0f32;
            for j in 0..oc {
                dot += d[j] * w[j];
            }
            dinp[i * c + k] += dot;
        }
    }
}

/// dW of out = inp @ weight + bias: dweight (C, OC) += inp^T @ dout, i.e.
/// dweight[k, j] += sum over rows i of inp[i, k] * dout[i, j].
pub fn matmul_backward_weight(
    dweight: &mut [f32], // (C, OC)
    dout: &[f32],        // (N, OC)
    inp: &[f32],         // (N, C)
    n: usize,
    c: usize,
    oc: usize,
) {
    assert_eq!(dweight.len(), c * oc, "matmul_backward_weight: dweight");
    assert_eq!(dout.len(), n * oc, "matmul_backward_weight: dout");
    assert_eq!(inp.len(), n * c, "matmul_backward_weight: inp");
    for k in 0..c {
        let dw = &mut dweight[k * oc..][..oc];
        for j in 0..oc {
            let mut sum = 0.0f32;
            for i in 0..n {
                sum += inp[i * c + k] * dout[i * oc + j];
            }
            dw[j] += sum;
        }
    }
}

/// dbias of out = inp @ weight + bias: dbias (OC) += column sums of dout.
pub fn matmul_backward_bias(
    dbias: &mut [f32], // (OC)
    dout: &[f32],      // (N, OC)
    n: usize,
    oc: usize,
) {
    assert_eq!(dbias.len(), oc, "matmul_backward_bias: dbias");
    assert_eq!(dout.len(), n * oc, "matmul_backward_bias: dout");
    for (j, db) in dbias.iter_mut().enumerate() {
        let mut sum = 0.0f32;
        for i in 0..n {
            sum += dout[i * oc + j];
        }
        *db += sum;
    }
}

/// Backward of [`crate::cpu::attention_forward`] (causal, grouped-query,
/// within `window` when it is > 0; qkv rows [q: NH*hd | k: NKV*hd |
/// v: NKV*hd]). For one query t of head h, with P = softmax over its keys
/// t2 (recomputed as the forward does), in h's KV head:
/// dv[t2] += P[t2] dout[t]; dP[t2] = dout[t] . v[t2];
/// dS[t2] = P[t2] (dP[t2] - sum_u P[u] dP[u]);
/// dq[t] += scale * sum dS[t2] k[t2]; dk[t2] += scale * dS[t2] q[t].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: &mut [f32], // (B*T, (NH + 2 NKV) hd)
    dout: &[f32],     // (B*T, NH*hd)
    qkv: &[f32],      // (B*T, (NH + 2 NKV) hd)
    b: usize,
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    window: usize,
) {
    assert!(
        nkv > 0 && hd > 0 && nh.is_multiple_of(nkv),
        "attention_backward: NH {nh} not groups of NKV {nkv}, or hd {hd} is 0"
    );
    let (c, ckv) = (nh * hd, nkv * hd);
    let row_len = c + 2 * ckv;
    assert_eq!(dqkv.len(), b * t * row_len, "attention_backward: dqkv");
    assert_eq!(dout.len(), b * t * c, "attention_backward: dout");
    assert_eq!(qkv.len(), b * t * row_len, "attention_backward: qkv");
    let group = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut att = vec![0.0f32; t]; // (T) probabilities of one query
    let mut datt = vec![0.0f32; t]; // (T) their gradient, then the scores'
    for bi in 0..b {
        let base = bi * t * row_len;
        for h in 0..nh {
            let (kc, vc) = (c + (h / group) * hd, c + ckv + (h / group) * hd);
            for ti in 0..t {
                let first = match window {
                    0 => 0,
                    w => (ti + 1).saturating_sub(w),
                };
                let q = base + ti * row_len + h * hd; // offset of q[ti]
                                                      // recompute the probabilities, exactly as the forward
                let mut maxval = f32::NEG_INFINITY;
                for t2 in first..=ti {
                    let k = base + t2 * row_len + kc;
                    let mut dot = 0.0f32;
                    for i in 0..hd {
                        dot += qkv[q + i] * qkv[k + i];
                    }
                    let s = dot * scale;
                    att[t2] = s;
                    if s > maxval {
                        maxval = s;
                    }
                }
                let mut sum = 0.0f32;
                for a in att[first..=ti].iter_mut() {
                    *a = (*a - maxval).exp();
                    sum += *a;
                }
                let inv = 1.0 / sum;
                for a in att[first..=ti].iter_mut() {
                    *a *= inv;
                }
                // through the weighted sum of values: dv and dP
                let d = &dout[(bi * t + ti) * c + h * hd..][..hd];
                let mut dot_pdp = 0.0f32; // sum_u P[u] dP[u]
                for t2 in first..=ti {
                    let v = base + t2 * row_len + vc;
                    let mut dp = 0.0f32;
                    for i in 0..hd {
                        dp += d[i] * qkv[v + i];
                        dqkv[v + i] += att[t2] * d[i];
                    }
                    datt[t2] = dp;
                    dot_pdp += att[t2] * dp;
                }
                // through the softmax, then the scaled dot products: dq, dk
                for t2 in first..=ti {
                    let ds = att[t2] * (datt[t2] - dot_pdp) * scale;
                    let k = base + t2 * row_len + kc;
                    for i in 0..hd {
                        dqkv[q + i] += ds * qkv[k + i];
                        dqkv[k + i] += ds * qkv[q + i];
                    }
                }
            }
        }
    }
}

/// Backward of [`crate::cpu::gelu_forward`] (tanh form): with
/// u = sqrt(2/pi) (x + 0.044715 x^3), dinp += dout * (0.5 (1 + tanh u) +
/// 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)).
pub fn gelu_backward(dinp: &mut [f32], dout: &[f32], inp: &[f32]) {
    assert_eq!(dinp.len(), inp.len(), "gelu_backward: dinp vs inp");
    assert_eq!(dout.len(), inp.len(), "gelu_backward: dout vs inp");
    let s = (2.0f32 / std::f32::consts::PI).sqrt();
    for i in 0..inp.len() {
        let x = inp[i];
        let cube = 0.044715 * x * x * x;
        let th = (s * (x + cube)).tanh();
        let sech2 = 1.0 - th * th;
        let local = 0.5 * (1.0 + th) + 0.5 * x * sech2 * s * (1.0 + 3.0 * 0.044715 * x * x);
        dinp[i] += dout[i] * local;
    }
}

/// Backward of out = a + b: the gradient passes unchanged to BOTH inputs,
/// da += dout and db += dout. In a block, `a` is the residual stream, so its
/// gradient flows on down the stream while `b`'s goes into the branch.
pub fn residual_backward(da: &mut [f32], db: &mut [f32], dout: &[f32]) {
    assert_eq!(da.len(), dout.len(), "residual_backward: da vs dout");
    assert_eq!(db.len(), dout.len(), "residual_backward: db vs dout");
    for i in 0..dout.len() {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

/// dX of the tied LM head logits = inp @ wte^T: dinp (N, C) += dlogits @ wte.
pub fn lm_head_backward_input(
    dinp: &mut [f32], // (N, C)
    dlogits: &[f32],  // (N, V)
    wte: &[f32],      // (V, C)
    n: usize,
    c: usize,
    v: usize,
) {
    assert_eq!(dinp.len(), n * c, "lm_head_backward_input: dinp");
    assert_eq!(dlogits.len(), n * v, "lm_head_backward_input: dlogits");
    assert_eq!(wte.len(), v * c, "lm_head_backward_input: wte");
    for i in 0..n {
        let di = &mut dinp[i * c..][..c];
        for j in 0..v {
            let d = dlogits[i * v + j];
            let w = &wte[j * c..][..c];
            for k in 0..c {
                di[k] += d * w[k];
            }
        }
    }
}

/// dW of the tied LM head: dwte (V, C) += dlogits^T @ inp. This is the
/// head's share of wte's gradient; the embedding's share adds to the same
/// buffer ([`embedding_backward`]).
pub fn lm_head_backward_weight(
    dwte: &mut [f32], // (V, C)
    dlogits: &[f32],  // (N, V)
    inp: &[f32],      // (N, C)
    n: usize,
    c: usize,
    v: usize,
) {
    assert_eq!(dwte.len(), v * c, "lm_head_backward_weight: dwte");
    assert_eq!(dlogits.len(), n * v, "lm_head_backward_weight: dlogits");
    assert_eq!(inp.len(), n * c, "lm_head_backward_weight: inp");
    for j in 0..v {
        let dw = &mut dwte[j * c..][..c];
        for k in 0..c {
            let mut sum = 0.0f32;
            for i in 0..n {
                sum += dlogits[i * v + j] * inp[i * c + k];
            }
            dw[k] += sum;
        }
    }
}

/// Cross-entropy fused with the softmax backward, from logits and targets
/// straight to dlogits. Per row with a target y (rows whose target is
/// [`NO_TARGET`] are skipped: loss 0, no gradient), with p = softmax(logits):
/// losses[row] = -ln p[y] (written, not accumulated) and
/// dlogits[row, j] += scale * (p[j] - [j == y]). `scale` is dloss/dlosses[row]:
/// 1 / (number of predictions in the whole batch) for a mean loss.
pub fn crossentropy_softmax_backward(
    dlogits: &mut [f32], // (N, V)
    losses: &mut [f32],  // (N)
    logits: &[f32],      // (N, V)
    targets: &[u32],     // (N), NO_TARGET where nothing is predicted
    scale: f32,
    n: usize,
    v: usize,
) {
    assert_eq!(
        dlogits.len(),
        n * v,
        "crossentropy_softmax_backward: dlogits"
    );
    assert_eq!(logits.len(), n * v, "crossentropy_softmax_backward: logits");
    assert_eq!(losses.len(), n, "crossentropy_softmax_backward: losses");
    assert_eq!(targets.len(), n, "crossentropy_softmax_backward: targets");
    for row in 0..n {
        let y = targets[row];
        if y == NO_TARGET {
            losses[row] = 0.0;
            continue;
        }
        let y = y as usize;
        assert!(
            y < v,
            "crossentropy_softmax_backward: target {y} >= vocab {v}"
        );
        let z = &logits[row * v..][..v];
        let mut maxval = f32::NEG_INFINITY;
        for &zj in z {
            if zj > maxval {
                maxval = zj;
            }
        }
        let mut sum = 0.0f32;
        for &zj in z {
            sum += (zj - maxval).exp();
        }
        losses[row] = sum.ln() - (z[y] - maxval);
        let inv = 1.0 / sum;
        let d = &mut dlogits[row * v..][..v];
        for j in 0..v {
            let p = (z[j] - maxval).exp() * inv;
            let indicator = if j == y { 1.0 } else { 0.0 };
            d[j] += scale * (p - indicator);
        }
    }
}
