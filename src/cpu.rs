//! Plain CPU reference of GPT-2's forward pass, as transformers'
//! GPT2LMHeadModel computes it. Every GPU kernel is checked against these.
//!
//! B = batch, T = sequence length, C = channels (n_embd), V = vocab size,
//! NH = heads, hd = C / NH, F = MLP width (n_inner), maxT = n_positions,
//! N = B * T rows. All buffers are row-major f32; linear weights use the
//! HF Conv1D layout (in, out). Dot products accumulate in f32, in plain order.
//!
//! Shapes are checked with `assert!`: a mismatch is a caller bug, not bad
//! input (inputs are checked by `io::check_input` and checkpoint loading).

pub mod backward;
pub mod decode;
pub mod optim;

use crate::model::config::Gpt2Config;
use crate::model::weights::{Gpt2Weights, LayerWeights};

/// out[b,t,:] = wte[ids[b,t],:] + wpe[pos_offset + t,:]; `pos_offset` is
/// the position of each sequence's first token (0 for a whole prompt).
#[allow(clippy::too_many_arguments)]
pub fn embedding_forward(
    out: &mut [f32], // (B*T, C)
    ids: &[u32],     // (B*T)
    wte: &[f32],     // (V, C)
    wpe: &[f32],     // (maxT, C)
    b: usize,
    t: usize,
    c: usize,
    pos_offset: usize,
) {
    assert_eq!(out.len(), b * t * c, "embedding_forward: out");
    assert_eq!(ids.len(), b * t, "embedding_forward: ids");
    assert!(
        wpe.len() >= (pos_offset + t) * c,
        "embedding_forward: positions {pos_offset}..{} exceed wpe rows {}",
        pos_offset + t,
        wpe.len() / c.max(1)
    );
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
            let pe = &wpe[(pos_offset + ti) * c..][..c];
            for i in 0..c {
                o[i] = te[i] + pe[i];
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

/// Causal multi-head self-attention. qkv rows are [q | k | v], each C wide;
/// head h uses columns h*hd .. (h+1)*hd of each. For query position t:
/// att[t2] = softmax_{t2 <= t}(q_t . k_t2 / sqrt(hd)), out = sum att[t2] v_t2.
pub fn attention_forward(
    out: &mut [f32], // (B*T, C)
    qkv: &[f32],     // (B*T, 3C)
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    assert_eq!(out.len(), b * t * c, "attention_forward: out");
    assert_eq!(qkv.len(), b * t * 3 * c, "attention_forward: qkv");
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_forward: C {c} not divisible by NH {nh}"
    );
    let hd = c / nh;
    let scale = 1.0 / (hd as f32).sqrt();
    let c3 = 3 * c;
    let mut att = vec![0.0f32; t]; // (T) scores, then probabilities, of one query
    for bi in 0..b {
        let rows = &qkv[bi * t * c3..][..t * c3];
        for h in 0..nh {
            for ti in 0..t {
                let q = &rows[ti * c3 + h * hd..][..hd];
                // scores and their max, keys 0..=ti only (causal)
                let mut maxval = f32::NEG_INFINITY;
                for t2 in 0..=ti {
                    let k = &rows[t2 * c3 + c + h * hd..][..hd];
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
                for a in att[..=ti].iter_mut() {
                    *a = (*a - maxval).exp();
                    sum += *a;
                }
                let inv = 1.0 / sum;
                // weighted sum of values
                let o = &mut out[(bi * t + ti) * c + h * hd..][..hd];
                o.fill(0.0);
                for t2 in 0..=ti {
                    let v = &rows[t2 * c3 + 2 * c + h * hd..][..hd];
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
    let positions: Vec<u32> = (0..n).flat_map(|r| [0, (r % t) as u32]).collect();
    let inv_freq = cfg.arch.rope.as_ref().map(|r| crate::model::rope::inv_freq(hd, r));
    let window = cfg.arch.sliding_window.unwrap_or(0);
    let p = |x: crate::model::block::Param| x.of(w).as_slice();
    for op in block::ops(cfg) {
        let get = |a: Act| acts.get(&a).expect("an op reads what an earlier one wrote").clone();
        let (out, val) = match op {
            Op::Norm { kind, x, g, b: beta, out } => {
                let mut o = vec![0.0f32; n * c];
                let xv = get(x);
                match kind {
                    Norm::Layer => layernorm_forward(&mut o, &xv, p(g), p(beta), n, c, eps),
                    Norm::Rms => rmsnorm_forward(&mut o, &xv, p(g), n, c, eps),
                }
                (out, o)
            }
            Op::Linear { x, w: wt, b: bias, out, .. } => {
                let mut o = vec![0.0f32; n * width(out)];
                matmul_forward(&mut o, &get(x), p(wt), Some(p(bias)), n, width(x), width(out));
                (out, o)
            }
            Op::Rope { qkv } => {
                let mut q = get(qkv);
                let inv = inv_freq.as_ref().expect("rotary positions have frequencies");
                rope_forward(&mut q, &positions, 2, 1, inv, n, nh, nkv, hd);
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
                swiglu_forward(&mut o, &get(x), n, width(out));
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
    let no_positions = vec![0.0f32; t * c];
    let wpe = match cfg.learned_positions() {
        true => &w.wpe,
        false => &no_positions,
    };
    embedding_forward(&mut x, ids, &w.wte, wpe, b, t, c, 0);
    for layer in &w.layers {
        block_forward(&mut x, layer, cfg, b, t);
    }
    let mut lnf = vec![0.0f32; n * c]; // (N, C)
    let eps = cfg.layer_norm_epsilon;
    match cfg.is_gpt2() {
        true => layernorm_forward(&mut lnf, &x, &w.ln_f_g, &w.ln_f_b, n, c, eps),
        false => rmsnorm_forward(&mut lnf, &x, &w.ln_f_g, n, c, eps),
    }
    let head = match cfg.tied_head() {
        true => &w.wte,
        false => &w.lm_head,
    };
    let mut logits = vec![0.0f32; n * v]; // (N, V)
    lm_head_forward(&mut logits, &lnf, head, n, c, v);
    logits
}
