//! Whole-model loss and gradients on the CPU: the forward of
//! [`crate::cpu::gpt2_forward`] keeping its activations, then the backward
//! twins of [`super`] in reverse order.
//!
//! The loss is transformers' `GPT2LMHeadModel(input_ids, labels=input_ids)`:
//! the mean next-token cross-entropy over all B×(T−1) predictions (position t
//! predicts token t+1; the last position of each sequence predicts nothing).
//! For a microbatch, each prediction's loss is scaled by 1 / (the predictions
//! of the whole batch), so the gradients accumulated over any split of the
//! batch into microbatches sum to the full-batch gradient.

use crate::cpu::{
    attention_forward, embedding_forward, gelu_forward, layernorm_forward, lm_head_forward,
    matmul_forward, residual_forward,
};
use crate::error::{Error, Result};
use crate::io::{check_input, TokenBatch};
use crate::model::config::Gpt2Config;
use crate::model::grads::{next_token_targets, Gpt2Grads};
use crate::model::weights::{Gpt2Weights, LayerWeights};

use super::{
    attention_backward, crossentropy_softmax_backward, embedding_backward, gelu_backward,
    layernorm_backward, lm_head_backward_input, lm_head_backward_weight, matmul_backward_bias,
    matmul_backward_input, matmul_backward_weight, residual_backward,
};

/// Loss and gradients of the whole batch: (mean next-token cross-entropy over
/// the B×(T−1) predictions, its gradient). Errors if the ids are invalid for
/// the model or T < 2 (no prediction to average).
pub fn forward_backward(w: &Gpt2Weights, tokens: &TokenBatch) -> Result<(f64, Gpt2Grads)> {
    let mut grads = Gpt2Grads::zeros(&w.config);
    let predictions = tokens.batch * tokens.seq.saturating_sub(1);
    let loss = forward_backward_microbatch(w, tokens, predictions, &mut grads)?;
    Ok((loss, grads))
}

/// One microbatch of a larger batch: accumulates (+=) into `grads` the
/// gradient of (sum of this microbatch's prediction losses) / `predictions`,
/// and returns that scaled loss. With `predictions` = B·(T−1) of the whole
/// batch, the returns and the gradients summed over the microbatches equal
/// the full batch's loss and gradient, however unevenly it was split.
pub fn forward_backward_microbatch(
    w: &Gpt2Weights,
    tokens: &TokenBatch,
    predictions: usize,
    grads: &mut Gpt2Grads,
) -> Result<f64> {
    let cfg = &w.config;
    check_input(cfg, tokens)?;
    let (b, t) = (tokens.batch, tokens.seq);
    if t < 2 {
        return Err(Error::Input(format!(
            "sequence length {t}: training needs at least 2 tokens per sequence \
             (position t predicts token t+1)"
        )));
    }
    if predictions < b * (t - 1) {
        return Err(Error::Input(format!(
            "the batch's predictions ({predictions}) must count at least this \
             microbatch's {b}x{} = {}",
            t - 1,
            b * (t - 1)
        )));
    }
    assert_eq!(grads.layers.len(), cfg.n_layer, "grads: layers");
    let (v, c) = (cfg.vocab_size, cfg.n_embd);
    let n = b * t;
    let ids = &tokens.ids;

    // ---- forward, keeping what backward needs
    let mut x = vec![0.0f32; n * c]; // (N, C) residual stream
    embedding_forward(&mut x, ids, &w.wte, Some(&w.wpe), b, t, c, 0);
    let mut acts = Vec::with_capacity(cfg.n_layer);
    for layer in &w.layers {
        let a = block_forward_keep(&x, layer, cfg, b, t);
        x.copy_from_slice(&a.out);
        acts.push(a);
    }
    let eps = cfg.layer_norm_epsilon;
    let mut lnf = vec![0.0f32; n * c]; // (N, C)
    layernorm_forward(&mut lnf, &x, &w.ln_f_g, &w.ln_f_b, n, c, eps);
    let mut logits = vec![0.0f32; n * v]; // (N, V)
    lm_head_forward(&mut logits, &lnf, &w.wte, n, c, v);

    // ---- loss, and backward in reverse order
    let targets = next_token_targets(ids, b, t, b);
    let scale = 1.0 / predictions as f32;
    let mut losses = vec![0.0f32; n]; // (N)
    let mut dlogits = vec![0.0f32; n * v]; // (N, V)
    crossentropy_softmax_backward(&mut dlogits, &mut losses, &logits, &targets, scale, n, v);
    let loss = losses.iter().map(|&l| l as f64).sum::<f64>() / predictions as f64;

    let mut dlnf = vec![0.0f32; n * c]; // (N, C)
    lm_head_backward_input(&mut dlnf, &dlogits, &w.wte, n, c, v);
    lm_head_backward_weight(&mut grads.wte, &dlogits, &lnf, n, c, v);
    let mut dx = vec![0.0f32; n * c]; // (N, C) gradient of the residual stream
    layernorm_backward(
        &mut dx,
        &mut grads.ln_f_g,
        &mut grads.ln_f_b,
        &dlnf,
        &x,
        &w.ln_f_g,
        n,
        c,
        eps,
    );
    for ((layer, g), a) in w.layers.iter().zip(&mut grads.layers).zip(&acts).rev() {
        dx = block_backward(&dx, layer, g, a, cfg, b, t);
    }
    embedding_backward(&mut grads.wte, &mut grads.wpe, &dx, ids, b, t, c);
    Ok(loss)
}

/// The activations of one block that its backward reads.
struct BlockActs {
    inp: Vec<f32>,       // (N, C) residual stream in
    ln1: Vec<f32>,       // (N, C)
    qkv: Vec<f32>,       // (N, 3C)
    atty: Vec<f32>,      // (N, C)
    residual2: Vec<f32>, // (N, C)
    ln2: Vec<f32>,       // (N, C)
    fch: Vec<f32>,       // (N, F)
    fch_gelu: Vec<f32>,  // (N, F)
    out: Vec<f32>,       // (N, C) residual stream out
}

/// [`crate::cpu::block_forward`], the same calls in the same order, keeping
/// the activations.
fn block_forward_keep(
    x: &[f32],
    w: &LayerWeights,
    cfg: &Gpt2Config,
    b: usize,
    t: usize,
) -> BlockActs {
    let (c, f, nh, eps) = (cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.layer_norm_epsilon);
    let n = b * t;
    let mut a = BlockActs {
        inp: x.to_vec(),
        ln1: vec![0.0; n * c],
        qkv: vec![0.0; n * 3 * c],
        atty: vec![0.0; n * c],
        residual2: vec![0.0; n * c],
        ln2: vec![0.0; n * c],
        fch: vec![0.0; n * f],
        fch_gelu: vec![0.0; n * f],
        out: vec![0.0; n * c],
    };
    let mut attproj = vec![0.0f32; n * c]; // (N, C)
    let mut fcproj = vec![0.0f32; n * c]; // (N, C)
    layernorm_forward(&mut a.ln1, x, &w.ln_1_g, &w.ln_1_b, n, c, eps);
    matmul_forward(
        &mut a.qkv,
        &a.ln1,
        &w.c_attn_w,
        Some(&w.c_attn_b),
        n,
        c,
        3 * c,
    );
    attention_forward(&mut a.atty, &a.qkv, b, t, nh, nh, c / nh, 0);
    let (ap_w, ap_b) = (&w.attn_proj_w, Some(&w.attn_proj_b[..]));
    matmul_forward(&mut attproj, &a.atty, ap_w, ap_b, n, c, c);
    residual_forward(&mut a.residual2, x, &attproj);
    layernorm_forward(&mut a.ln2, &a.residual2, &w.ln_2_g, &w.ln_2_b, n, c, eps);
    matmul_forward(&mut a.fch, &a.ln2, &w.c_fc_w, Some(&w.c_fc_b), n, c, f);
    gelu_forward(&mut a.fch_gelu, &a.fch);
    let (mp_w, mp_b) = (&w.mlp_proj_w, Some(&w.mlp_proj_b[..]));
    matmul_forward(&mut fcproj, &a.fch_gelu, mp_w, mp_b, n, f, c);
    residual_forward(&mut a.out, &a.residual2, &fcproj);
    a
}

/// Backward of one block: accumulates the layer's parameter gradients into
/// `g` and returns the gradient of the block's input (residual stream).
fn block_backward(
    dout: &[f32], // (N, C) gradient of the block's output
    w: &LayerWeights,
    g: &mut LayerWeights,
    a: &BlockActs,
    cfg: &Gpt2Config,
    b: usize,
    t: usize,
) -> Vec<f32> {
    let (c, f, nh, eps) = (cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.layer_norm_epsilon);
    let n = b * t;
    // out = residual2 + fcproj
    let mut dresidual2 = vec![0.0f32; n * c]; // (N, C)
    let mut dfcproj = vec![0.0f32; n * c]; // (N, C)
    residual_backward(&mut dresidual2, &mut dfcproj, dout);
    // fcproj = fch_gelu @ mlp_proj_w + mlp_proj_b
    let mut dfch_gelu = vec![0.0f32; n * f]; // (N, F)
    matmul_backward_input(&mut dfch_gelu, &dfcproj, &w.mlp_proj_w, n, f, c);
    matmul_backward_weight(&mut g.mlp_proj_w, &dfcproj, &a.fch_gelu, n, f, c);
    matmul_backward_bias(&mut g.mlp_proj_b, &dfcproj, n, c);
    // fch_gelu = gelu(fch)
    let mut dfch = vec![0.0f32; n * f]; // (N, F)
    gelu_backward(&mut dfch, &dfch_gelu, &a.fch);
    // fch = ln2 @ c_fc_w + c_fc_b
    let mut dln2 = vec![0.0f32; n * c]; // (N, C)
    matmul_backward_input(&mut dln2, &dfch, &w.c_fc_w, n, c, f);
    matmul_backward_weight(&mut g.c_fc_w, &dfch, &a.ln2, n, c, f);
    matmul_backward_bias(&mut g.c_fc_b, &dfch, n, f);
    // ln2 = layernorm(residual2): adds to the gradient from the residual
    let (dg, db) = (&mut g.ln_2_g, &mut g.ln_2_b);
    let (inp, gamma) = (&a.residual2, &w.ln_2_g);
    layernorm_backward(&mut dresidual2, dg, db, &dln2, inp, gamma, n, c, eps);
    // residual2 = inp + attproj
    let mut dinp = vec![0.0f32; n * c]; // (N, C)
    let mut dattproj = vec![0.0f32; n * c]; // (N, C)
    residual_backward(&mut dinp, &mut dattproj, &dresidual2);
    // attproj = atty @ attn_proj_w + attn_proj_b
    let mut datty = vec![0.0f32; n * c]; // (N, C)
    matmul_backward_input(&mut datty, &dattproj, &w.attn_proj_w, n, c, c);
    matmul_backward_weight(&mut g.attn_proj_w, &dattproj, &a.atty, n, c, c);
    matmul_backward_bias(&mut g.attn_proj_b, &dattproj, n, c);
    // atty = attention(qkv)
    let mut dqkv = vec![0.0f32; n * 3 * c]; // (N, 3C)
    attention_backward(&mut dqkv, &datty, &a.qkv, b, t, nh, nh, c / nh, 0);
    // qkv = ln1 @ c_attn_w + c_attn_b
    let mut dln1 = vec![0.0f32; n * c]; // (N, C)
    matmul_backward_input(&mut dln1, &dqkv, &w.c_attn_w, n, c, 3 * c);
    matmul_backward_weight(&mut g.c_attn_w, &dqkv, &a.ln1, n, c, 3 * c);
    matmul_backward_bias(&mut g.c_attn_b, &dqkv, n, 3 * c);
    // ln1 = layernorm(inp): adds to the gradient from the residual
    let (dg, db) = (&mut g.ln_1_g, &mut g.ln_1_b);
    layernorm_backward(&mut dinp, dg, db, &dln1, &a.inp, &w.ln_1_g, n, c, eps);
    dinp
}
