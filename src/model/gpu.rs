//! GPT-2 on one device: the layers of one pipeline stage (or the whole model)
//! as a fixed list of kernel dispatches over buffers allocated once.
//!
//! B = microbatch sequences, T = sequence length, C = n_embd, F = MLP width,
//! V = vocabulary, Vp = V rounded up to a multiple of 4, N = B*T rows.
//!
//! The residual stream lives in one buffer `x` (N, C): a stage's input is
//! written into it, its layers update it, and it is its output. The token
//! table is uploaded transposed, (C, V), split into vocabulary chunks that each
//! fit the adapter's binding limit (GPT-2's table is 154 MB, lavapipe binds at
//! most 128 MiB); the embedding gathers from it and the tied LM head is then a
//! plain matmul per chunk into columns of the logits.

use std::ops::Range;

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::io::TokenBatch;
use crate::kernels::{self as k, Dispatch};
use crate::model::{Gpt2Config, Gpt2Weights};

/// Which part of the model a stage holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePart {
    /// Transformer blocks, in order.
    pub layers: Range<usize>,
    /// Token + position embedding at the start.
    pub embedding: bool,
    /// ln_f and the LM head at the end.
    pub head: bool,
}

impl StagePart {
    /// The whole model on one device.
    pub fn whole(cfg: &Gpt2Config) -> StagePart {
        StagePart {
            layers: 0..cfg.n_layer,
            embedding: true,
            head: true,
        }
    }
}

/// The vocabulary split into chunks whose transposed table (C, len) fits one
/// binding: `(v0, padded_len)` pairs; every length is a multiple of 4.
fn vocab_chunks(gpu: &Gpu, cfg: &Gpt2Config) -> Result<Vec<(usize, usize)>> {
    let (v, c) = (cfg.vocab_size, cfg.n_embd);
    let limit = gpu.max_binding().min(gpu.limits.max_buffer_size);
    let per_chunk = ((limit / (4 * c as u64)) as usize) / 4 * 4;
    if per_chunk == 0 {
        return gpu
            .check_binding("wte (one column of the token table)", 16 * c as u64)
            .map(|_| Vec::new());
    }
    let vp = v.next_multiple_of(4);
    Ok((0..vp)
        .step_by(per_chunk)
        .map(|v0| (v0, per_chunk.min(vp - v0)))
        .collect())
}

/// One stage of GPT-2 resident on a device, for microbatches of `b` x `t` tokens.
pub struct GpuStage {
    pub part: StagePart,
    pub b: usize,
    pub t: usize,
    pub cfg: Gpt2Config,
    /// (N) token ids, if this stage embeds.
    pub ids: Option<wgpu::Buffer>,
    /// (N, C) residual stream: the stage's input and output.
    pub x: wgpu::Buffer,
    /// (N, Vp) logits, if this stage has the head.
    pub logits: Option<wgpu::Buffer>,
    dispatches: Vec<Dispatch>,
    /// Weights and scratch buffers, kept alive for the bind groups.
    _buffers: Vec<wgpu::Buffer>,
}

impl GpuStage {
    /// Upload the weights of `part` to `gpu` and build its dispatches.
    pub fn new(
        gpu: &Gpu,
        w: &Gpt2Weights,
        part: StagePart,
        b: usize,
        t: usize,
    ) -> Result<GpuStage> {
        let cfg = w.config.clone();
        let (c, f, nh, eps) = (cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.layer_norm_epsilon);
        let n = b * t;
        if n == 0 || t > cfg.n_positions {
            return Err(Error::Input(format!(
                "a microbatch of {b} x {t} tokens does not fit a model with n_positions {}",
                cfg.n_positions
            )));
        }
        if part.layers.end > cfg.n_layer {
            return Err(Error::Input(format!(
                "layers {:?} past the model's {} layers",
                part.layers, cfg.n_layer
            )));
        }
        let bytes = |len: usize| (len * 4) as u64;
        gpu.check_binding("activations (N, F)", bytes(n * f.max(3 * c)))?;

        let mut keep = Vec::new();
        let mut ds = Vec::new();
        let x = k::zeros(gpu, "x (N,C)", n * c);

        let mut ids = None;
        let mut chunks = Vec::new();
        if part.embedding || part.head {
            chunks = vocab_chunks(gpu, &cfg)?;
            gpu.check_binding("wpe", bytes(w.wpe.len()))?;
        }
        // (C, len) transposed, zero-padded token table chunks.
        let wte_t: Vec<wgpu::Buffer> = chunks
            .iter()
            .map(|&(v0, len)| {
                let mut t = vec![0f32; c * len];
                for v in v0..(v0 + len).min(cfg.vocab_size) {
                    for ch in 0..c {
                        t[ch * len + (v - v0)] = w.wte[v * c + ch];
                    }
                }
                k::upload(gpu, &format!("wte_t[{v0}..]"), &t)
            })
            .collect();

        if part.embedding {
            let idb = k::upload_u32(gpu, "ids (N)", &vec![0u32; n]);
            let wpe = k::upload(gpu, "wpe", &w.wpe);
            for (&(v0, len), tb) in chunks.iter().zip(&wte_t) {
                ds.push(k::embedding_forward(
                    gpu, &x, &idb, tb, &wpe, n, t, c, v0, len,
                ));
            }
            keep.push(wpe);
            ids = Some(idb);
        }

        if !part.layers.is_empty() {
            // Scratch, shared by every block of the stage.
            let ln = k::zeros(gpu, "ln (N,C)", n * c);
            let qkv = k::zeros(gpu, "qkv (N,3C)", n * 3 * c);
            let att = k::zeros(gpu, "att (N,C)", n * c);
            let proj = k::zeros(gpu, "proj (N,C)", n * c);
            let x2 = k::zeros(gpu, "x2 (N,C)", n * c);
            let fch = k::zeros(gpu, "fch (N,F)", n * f);
            let fcg = k::zeros(gpu, "fch_gelu (N,F)", n * f);
            for l in part.layers.clone() {
                let lw = &w.layers[l];
                for (name, t, shape) in lw.named_tensors(&cfg) {
                    gpu.check_binding(&format!("h.{l}.{name} {shape:?}"), bytes(t.len()))?;
                }
                let up = |name: &str, d: &[f32]| k::upload(gpu, &format!("h.{l}.{name}"), d);
                let (ln1g, ln1b) = (up("ln_1.weight", &lw.ln_1_g), up("ln_1.bias", &lw.ln_1_b));
                let (qkvw, qkvb) = (
                    up("attn.c_attn.weight", &lw.c_attn_w),
                    up("attn.c_attn.bias", &lw.c_attn_b),
                );
                let (apw, apb) = (
                    up("attn.c_proj.weight", &lw.attn_proj_w),
                    up("attn.c_proj.bias", &lw.attn_proj_b),
                );
                let (ln2g, ln2b) = (up("ln_2.weight", &lw.ln_2_g), up("ln_2.bias", &lw.ln_2_b));
                let (fcw, fcb) = (
                    up("mlp.c_fc.weight", &lw.c_fc_w),
                    up("mlp.c_fc.bias", &lw.c_fc_b),
                );
                let (mpw, mpb) = (
                    up("mlp.c_proj.weight", &lw.mlp_proj_w),
                    up("mlp.c_proj.bias", &lw.mlp_proj_b),
                );
                // x2 = x + attn(ln_1(x)); x = x2 + mlp(ln_2(x2))
                ds.push(k::layernorm_forward(gpu, &ln, &x, &ln1g, &ln1b, n, c, eps));
                ds.push(k::matmul_forward(gpu, &qkv, &ln, &qkvw, &qkvb, n, c, 3 * c));
                ds.push(k::attention_forward(gpu, &att, &qkv, b, t, c, nh));
                ds.push(k::matmul_forward(gpu, &proj, &att, &apw, &apb, n, c, c));
                ds.push(k::residual_forward(gpu, &x2, &x, &proj, n * c));
                ds.push(k::layernorm_forward(gpu, &ln, &x2, &ln2g, &ln2b, n, c, eps));
                ds.push(k::matmul_forward(gpu, &fch, &ln, &fcw, &fcb, n, c, f));
                ds.push(k::gelu_forward(gpu, &fcg, &fch, n * f));
                ds.push(k::matmul_forward(gpu, &proj, &fcg, &mpw, &mpb, n, f, c));
                ds.push(k::residual_forward(gpu, &x, &x2, &proj, n * c));
                keep.extend([
                    ln1g, ln1b, qkvw, qkvb, apw, apb, ln2g, ln2b, fcw, fcb, mpw, mpb,
                ]);
            }
            keep.extend([ln, qkv, att, proj, x2, fch, fcg]);
        }

        let mut logits = None;
        if part.head {
            let vp = cfg.vocab_size.next_multiple_of(4);
            gpu.check_binding(&format!("logits ({n}, {vp})"), bytes(n * vp))?;
            let lnf = k::zeros(gpu, "ln_f (N,C)", n * c);
            let g = k::upload(gpu, "ln_f.weight", &w.ln_f_g);
            let bb = k::upload(gpu, "ln_f.bias", &w.ln_f_b);
            let out = k::zeros(gpu, "logits (N,Vp)", n * vp);
            let max_len = chunks.iter().map(|&(_, l)| l).max().unwrap_or(4);
            let no_bias = k::zeros(gpu, "lm_head bias (0)", max_len);
            ds.push(k::layernorm_forward(gpu, &lnf, &x, &g, &bb, n, c, eps));
            for (&(v0, len), tb) in chunks.iter().zip(&wte_t) {
                ds.push(k::matmul_forward_strided(
                    gpu, &out, &lnf, tb, &no_bias, n, c, len, vp, v0,
                ));
            }
            keep.extend([lnf, g, bb, no_bias]);
            logits = Some(out);
        }
        keep.extend(wte_t);
        Ok(GpuStage {
            part,
            b,
            t,
            cfg,
            ids,
            x,
            logits,
            dispatches: ds,
            _buffers: keep,
        })
    }

    /// Rows of a microbatch (B*T).
    pub fn rows(&self) -> usize {
        self.b * self.t
    }

    /// Bytes of the activation a stage hands to the next one: (N, C) f32.
    pub fn activation_bytes(&self) -> u64 {
        (self.rows() * self.cfg.n_embd * 4) as u64
    }

    /// Bytes of this stage's logits buffer: (N, Vp) f32.
    pub fn logits_bytes(&self) -> u64 {
        (self.rows() * self.cfg.vocab_size.next_multiple_of(4) * 4) as u64
    }

    /// Queue the token ids of one microbatch (N of them) for the next pass.
    pub fn write_ids(&self, gpu: &Gpu, ids: &[u32]) {
        if let Some(b) = &self.ids {
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(ids));
        }
    }

    /// Record this stage's forward pass as one compute pass.
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("stage forward"),
            timestamp_writes: None,
        });
        for d in &self.dispatches {
            d.encode(&mut pass);
        }
    }

    /// Drop the padding columns of (N, Vp) logits read back from the device.
    pub fn strip_logits(&self, padded: &[f32]) -> Vec<f32> {
        let (v, vp) = (self.cfg.vocab_size, self.cfg.vocab_size.next_multiple_of(4));
        padded
            .chunks(vp)
            .flat_map(|row| &row[..v])
            .copied()
            .collect()
    }
}

/// Sequences per pass so the widest per-row buffer (logits, MLP hidden or
/// QKV) fits one binding (at most `batch`).
pub fn sequences_per_pass(gpu: &Gpu, cfg: &Gpt2Config, batch: usize, seq: usize) -> usize {
    let widest = cfg
        .vocab_size
        .next_multiple_of(4)
        .max(cfg.n_inner)
        .max(3 * cfg.n_embd);
    let row_bytes = (widest * 4) as u64;
    let rows = (gpu.max_binding().min(gpu.limits.max_buffer_size) / row_bytes) as usize;
    (rows / seq.max(1)).clamp(1, batch.max(1))
}

/// The result of a single-device forward.
pub struct Forward {
    /// (B, T, V) logits.
    pub logits: Vec<f32>,
    /// Seconds from the first submit to the last logits read back.
    pub seconds: f64,
}

/// GPT-2 forward of `tokens` on one device, `per_pass` sequences at a time
/// (the same stage buffers reused for every pass).
pub fn forward(
    gpu: &Gpu,
    w: &Gpt2Weights,
    tokens: &TokenBatch,
    per_pass: usize,
) -> Result<Forward> {
    crate::io::check_input(&w.config, tokens)?;
    let (bsz, t) = (tokens.batch, tokens.seq);
    let per_pass = per_pass.clamp(1, bsz);
    let stage = GpuStage::new(gpu, w, StagePart::whole(&w.config), per_pass, t)?;
    let staging = k::staging(gpu, "logits readback", stage.logits_bytes());
    let logits_buf = stage.logits.as_ref().expect("whole-model stage has a head");
    let mut logits = Vec::with_capacity(bsz * t * w.config.vocab_size);
    let start = std::time::Instant::now();
    for s0 in (0..bsz).step_by(per_pass) {
        let nseq = per_pass.min(bsz - s0);
        // A short last pass repeats the last sequence; its rows are dropped.
        let mut ids: Vec<u32> = tokens.ids[s0 * t..(s0 + nseq) * t].to_vec();
        while ids.len() < per_pass * t {
            ids.extend_from_within(ids.len() - t..);
        }
        stage.write_ids(gpu, &ids);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        stage.encode(&mut enc);
        enc.copy_buffer_to_buffer(logits_buf, 0, &staging, 0, stage.logits_bytes());
        gpu.queue.submit([enc.finish()]);
        let vp = w.config.vocab_size.next_multiple_of(4);
        let padded: Vec<f32> = k::read_mapped(gpu, &staging, stage.rows() * vp)?;
        logits.extend(stage.strip_logits(&padded[..nseq * t * vp]));
    }
    Ok(Forward {
        logits,
        seconds: start.elapsed().as_secs_f64(),
    })
}
