//! Plain CPU reference of GPT-2's forward pass, as transformers'
//! GPT2LMHeadModel computes it. Every GPU kernel is checked against these.
//!
//! B = batch, T = sequence length, C = channels (n_embd), V = vocab size,
//! NH = heads, hd = C / NH, F = MLP width (n_inner), maxT = n_positions,
//! N = B * T rows. All buffers are row-major f32; linear weights use the
//! HF Conv1D layout (in, out). Dot products accumulate in f32, in plain order.
//! Attention is written for grouped-query heads too (NKV key/value heads,
//! any hd, a sliding window): GPT-2 is NKV = NH, hd = C/NH, no window. The
//! Llama family's own ops (RMSNorm, RoPE, SwiGLU) are in [`llama`].
//!
//! Shapes are checked with `assert!`: a mismatch is a caller bug, not bad
//! input (inputs are checked by `io::check_input` and checkpoint loading).

pub mod backward;
pub mod decode;
pub mod llama;
pub mod optim;

use crate::model::config::Gpt2Config;
use crate::model::weights::{Gpt2Weights, LayerWeights};

/// out[b,t,:] = wte[ids[b,t],:] + wpe[pos_offset + t,:]; `pos_offset` is
/// the position of each sequence's first token (0 for a whole prompt). With
/// `wpe` `None` (no learned positions: Llama) out[b,t,:] = wte[ids[b,t],:].
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    out: &mut [f32],     // (B*T, C)
    ids: &[u32],         // (B*T)
    wte: &[f32],         // (V, C)
    wpe: Option<&[f32]>, // (maxT, C)
    b: usize,
    t: usize,
    c: usize,
    pos_offset: usize,
) {
    assert_eq!(out.len(), b * t * c, "embedding_forward: out");
    assert_eq!(ids.len(), b * t, "embedding_forward: ids");
    if let Some(wpe) = wpe {
        assert!(
            wpe.len() >= (pos_offset + t) * c,
            "embedding_forward: positions {pos_offset}..{} exceed wpe rows {}",
            pos_offset + t,
            wpe.len() / c.max(1)
        );
    }
    let v = wte.len() / c.max(1);
    for bi in 0..b {
        for ti in 0..t {
            let id = ids[bi * t + ti] as usize;
            assert!(
                id < v,
                "embedding_forward: token id {id} at [{bi}, {ti}] >= vocab {v}"
            );
            let o = &mut out[(bi * t + ti) * c..][..c];
            let te = &wte[id * c..][..c];
            match wpe {
                Some(wpe) => {
                    let pe = &wpe[(pos_offset + ti) * c..][..c];
                    for i in 0..c {
                        o[i] = te[i] + pe[i];
                    }
                }
                None => o.copy_from_slice(te),
            }
        }
    }
}

/// out = (inp - mean) / sqrt(var + eps) * gamma + beta, per row; biased
/// variance, like torch.nn.LayerNorm.
pub fn layernorm_forward(
    out: &mut [f32], // (N, C)
    inp: &[f32],     // (N, C)
    gamma: &[f32],   // (C)
    beta: &[f32],    // (C)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert_eq!(out.len(), n * c, "layernorm_forward: out");
    assert_eq!(inp.len(), n * c, "layernorm_forward: inp");
    assert_eq!(gamma.len(), c, "layernorm_forward: gamma");
    assert_eq!(beta.len(), c, "layernorm_forward: beta");
    for row in 0..n {
        let x = &inp[row * c..][..c];
        let mut mean = 0.0f32;
        for &xi in x {
            mean += xi;
        }
        mean /= c as f32;
        let mut var = 0.0f32;
        for &xi in x {
            let d = xi - mean;
            var += d * d;
        }
        var /= c as f32;
        let rstd = 1.0 / (var + eps).sqrt();
        let o = &mut out[row * c..][..c];
        for i in 0..c {
            o[i] = (x[i] - mean) * rstd * gamma[i] + beta[i];
        }
    }
}

/// out = inp @ weight + bias. Loop order i, k, j: rows of `weight` are
/// streamed contiguously.
pub fn matmul_forward(
    out: &mut [f32],      // (N, OC)
    inp: &[f32],          // (N, C)
    weight: &[f32],       // (C, OC)
    bias: Option<&[f32]>, // (OC)
    n: usize,
    c: usize,
    oc: usize,
) {
    assert_eq!(out.len(), n * oc, "matmul_forward: out");
    assert_eq!(inp.len(), n * c, "matmul_forward: inp");
    assert_eq!(weight.len(), c * oc, "matmul_forward: weight");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), oc, "matmul_forward: bias");
    }
    for i in 0..n {
        let o = &mut out[i * oc..][..oc];
        match bias {
            Some(bias) => o.copy_from_slice(bias),
            None => o.fill(0.0),
        }
        let x = &inp[i * c..][..c];
        for k in 0..c {
            let a = x[k];
            let w = &weight[k * oc..][..oc];
            for j in 0..oc {
                o[j] += a * w[j];
            }
        }
    }
}

/// Causal grouped-query self-attention. qkv rows are
/// [q: NH*hd | k: NKV*hd | v: NKV*hd]; query head h uses columns
/// h*hd .. (h+1)*hd of q and KV head h / (NH/NKV) of k and v (NKV = NH:
/// multi-head, GPT-2 with hd = C/NH). For query position t, over the keys
/// t2 <= t with t - t2 < window (every t2 <= t when window = 0):
/// att[t2] = softmax(q_t . k_t2 / sqrt(hd)), out = sum att[t2] v_t2.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(
    out: &mut [f32], // (B*T, NH*hd)
    qkv: &[f32],     // (B*T, (NH + 2 NKV) hd)
    b: usize,
    t: usize,
    nh: usize,
    nkv: usize,
    hd: usize,
    window: usize,
) {
    assert!(
        nkv > 0 && hd > 0 && nh.is_multiple_of(nkv),
        "attention_forward: NH {nh} not groups of NKV {nkv}, or hd {hd} is 0"
    );
    let (c, ckv) = (nh * hd, nkv * hd); // widths of q and of k (and v)
    let row_len = c + 2 * ckv;
    assert_eq!(out.len(), b * t * c, "attention_forward: out");
    assert_eq!(qkv.len(), b * t * row_len, "attention_forward: qkv");
    let group = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut att = vec![0.0f32; t]; // (T) scores, then probabilities, of one query
    for bi in 0..b {
        let rows = &qkv[bi * t * row_len..][..t * row_len];
        for h in 0..nh {
            let (kc, vc) = (c + (h / group) * hd, c + ckv + (h / group) * hd);
            for ti in 0..t {
                let q = &rows[ti * row_len + h * hd..][..hd];
                // the keys this query sees: causal, within the window
                let first = match window {
                    0 => 0,
                    w => (ti + 1).saturating_sub(w),
                };
                // scores and their max
                let mut maxval = f32::NEG_INFINITY;
                for t2 in first..=ti {
                    let k = &rows[t2 * row_len + kc..][..hd];
                    let mut dot = 0.0f32;
                    for i in 0..hd {
                        dot += q[i] * k[i];
                    }
                    let s = dot * scale;
                    att[t2] = s;
                    if s > maxval {
                        maxval = s;
                    }
                }
                // softmax with max subtraction
                let mut sum = 0.0f32;
                for a in att[first..=ti].iter_mut() {
                    *a = (*a - maxval).exp();
                    sum += *a;
                }
                let inv = 1.0 / sum;
                // weighted sum of values
                let o = &mut out[(bi * t + ti) * c + h * hd..][..hd];
                o.fill(0.0);
                for t2 in first..=ti {
                    let v = &rows[t2 * row_len + vc..][..hd];
                    let p = att[t2] * inv;
                    for i in 0..hd {
                        o[i] += p * v[i];
                    }
                }
            }
        }
    }
}

/// gelu_new (tanh approximation):
/// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    assert_eq!(out.len(), inp.len(), "gelu_forward: out vs inp");
    let s = (2.0f32 / std::f32::consts::PI).sqrt();
    for (o, &x) in out.iter_mut().zip(inp) {
        let cube = 0.044715 * x * x * x;
        *o = 0.5 * x * (1.0 + (s * (x + cube)).tanh());
    }
}

/// out = a + b, elementwise.
pub fn residual_forward(out: &mut [f32], a: &[f32], b: &[f32]) {
    assert_eq!(out.len(), a.len(), "residual_forward: out vs a");
    assert_eq!(out.len(), b.len(), "residual_forward: out vs b");
    for i in 0..out.len() {
        out[i] = a[i] + b[i];
    }
}

/// logits = inp @ wte^T (the LM head is tied to the token embedding).
pub fn lm_head_forward(
    out: &mut [f32], // (N, V)
    inp: &[f32],     // (N, C)
    wte: &[f32],     // (V, C)
    n: usize,
    c: usize,
    v: usize,
) {
    assert_eq!(out.len(), n * v, "lm_head_forward: out");
    assert_eq!(inp.len(), n * c, "lm_head_forward: inp");
    assert_eq!(wte.len(), v * c, "lm_head_forward: wte");
    for i in 0..n {
        let x = &inp[i * c..][..c];
        let o = &mut out[i * v..][..v];
        for (j, oj) in o.iter_mut().enumerate() {
            let w = &wte[j * c..][..c];
            let mut dot = 0.0f32;
            for k in 0..c {
                dot += x[k] * w[k];
            }
            *oj = dot;
        }
    }
}

/// One pre-norm transformer block, in place on the residual stream: its
/// family's op list ([`crate::model::block::ops`]) run op by op on plain
/// vectors — for GPT-2
/// x = x + attn_proj(attention(c_attn(ln_1(x))));
/// x = x + mlp_proj(gelu(c_fc(ln_2(x)))).
pub fn block_forward(
    x: &mut [f32], // (B*T, C) residual stream, in/out
    w: &LayerWeights,
    cfg: &Gpt2Config,
    b: usize,
    t: usize,
) {
    use crate::model::block::{self, Act, Norm, Op};
    let (c, eps, hd) = (cfg.n_embd, cfg.layer_norm_epsilon, cfg.head_dim());
    let (nh, nkv, f) = (cfg.n_head, cfg.kv_heads(), cfg.n_inner);
    let n = b * t;
    assert_eq!(x.len(), n * c, "block_forward: x");
    let width = |a: Act| block::width(cfg, a, (nh, nkv), f);
    let mut acts: std::collections::HashMap<Act, Vec<f32>> = Default::default();
    acts.insert(Act::X, x.to_vec());
    let positions: Vec<u32> = (0..n).map(|r| (r % t) as u32).collect();
    let inv_freq = cfg.arch.rope.as_ref().map(|r| r.inv_freq(hd));
    let window = cfg.arch.sliding_window.unwrap_or(0);
    let p = |x: crate::model::block::Param| x.of(w).as_slice();
    for op in block::ops(cfg) {
        let get = |a: Act| {
            acts.get(&a)
                .expect("an op reads what an earlier one wrote")
                .clone()
        };
        let (out, val) = match op {
            Op::Norm {
                kind,
                x,
                g,
                b: beta,
                out,
            } => {
                let mut o = vec![0.0f32; n * c];
                let xv = get(x);
                match kind {
                    Norm::Layer => layernorm_forward(&mut o, &xv, p(g), p(beta), n, c, eps),
                    Norm::Rms => llama::rmsnorm_forward(&mut o, &xv, p(g), n, c, eps),
                }
                (out, o)
            }
            Op::Linear {
                x,
                w: wt,
                b: bias,
                out,
                ..
            } => {
                let mut o = vec![0.0f32; n * width(out)];
                matmul_forward(
                    &mut o,
                    &get(x),
                    p(wt),
                    Some(p(bias)),
                    n,
                    width(x),
                    width(out),
                );
                (out, o)
            }
            Op::Rope { qkv } => {
                let mut q = get(qkv);
                let inv = inv_freq
                    .as_ref()
                    .expect("rotary positions have frequencies");
                llama::rope_forward(&mut q, &positions, inv, n, nh, nkv, hd);
                (qkv, q)
            }
            Op::Attention { qkv, out } => {
                let mut o = vec![0.0f32; n * width(out)];
                attention_forward(&mut o, &get(qkv), b, t, nh, nkv, hd, window);
                (out, o)
            }
            Op::Gelu { x, out } => {
                let mut o = vec![0.0f32; n * width(out)];
                gelu_forward(&mut o, &get(x));
                (out, o)
            }
            Op::SwiGlu { x, out } => {
                let mut o = vec![0.0f32; n * width(out)];
                llama::swiglu_forward(&mut o, &get(x), n, width(out));
                (out, o)
            }
            Op::Residual { a, b: bb, out } => {
                let mut o = vec![0.0f32; n * c];
                residual_forward(&mut o, &get(a), &get(bb));
                (out, o)
            }
        };
        acts.insert(out, val);
    }
    x.copy_from_slice(&acts[&Act::Out]);
}

/// The whole model's forward: (B, T) token ids to (B, T, V) logits — the
/// embedding (with learned positions, or none under rotary ones), every
/// block, the final norm and the LM head (the token table when tied).
pub fn gpt2_forward(w: &Gpt2Weights, ids: &[u32], b: usize, t: usize) -> Vec<f32> {
    let cfg = &w.config;
    let (v, c) = (cfg.vocab_size, cfg.n_embd);
    let n = b * t;
    let mut x = vec![0.0f32; n * c]; // (N, C) residual stream
    let wpe = cfg.learned_positions().then_some(&w.wpe[..]);
    embedding_forward(&mut x, ids, &w.wte, wpe, b, t, c, 0);
    for layer in &w.layers {
        block_forward(&mut x, layer, cfg, b, t);
    }
    let mut lnf = vec![0.0f32; n * c]; // (N, C)
    let eps = cfg.layer_norm_epsilon;
    match cfg.is_gpt2() {
        true => layernorm_forward(&mut lnf, &x, &w.ln_f_g, &w.ln_f_b, n, c, eps),
        false => llama::rmsnorm_forward(&mut lnf, &x, &w.ln_f_g, n, c, eps),
    }
    let head = match cfg.tied_head() {
        true => &w.wte,
        false => &w.lm_head,
    };
    let mut logits = vec![0.0f32; n * v]; // (N, V)
    lm_head_forward(&mut logits, &lnf, head, n, c, v);
    logits
}
