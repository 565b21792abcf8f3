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

use crate::device::{read_mapped, staging, upload_pod, zeros, Gpu};
use crate::error::{Error, Result};
use crate::io::TokenBatch;
use crate::kernels::{self as k, Dispatch};
use crate::microbatch::Microbatches;
use crate::model::weights::{Layer, StageWeights};
use crate::model::{Gpt2Config, Gpt2Weights, Shard};

pub use crate::model::weights::StagePart;

mod resident;
mod token_table;
pub use resident::{KvCache, StageUpload};
pub(crate) use token_table::{
    token_table_chunks, untranspose_token_table, upload_token_table, vocab_chunks,
};

/// Where one [`Segment`] of a stage's program ends.
///
/// A stage's dispatches are cut where a Megatron-style tensor-parallel stage
/// all-reduces a partial sum ([`GpuStage::reduced`]): after the embedding
/// (each rank embeds its vocabulary range's tokens), and right after each
/// block's attention c_proj matmul and its MLP c_proj matmul have written
/// their (N, C) output into [`GpuStage::partial_sum`], before the residual
/// add that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// After the embedding (a stage that embeds).
    Embedding,
    /// After block `layer`'s attention c_proj matmul.
    AttnProj { layer: usize },
    /// After block `layer`'s MLP c_proj matmul.
    MlpProj { layer: usize },
    /// The end of the stage (its last segment).
    End,
}

/// A run of a stage's dispatches between two [`Cut`]s, in program order.
pub struct Segment {
    /// What follows this segment's last dispatch.
    pub end: Cut,
    dispatches: Vec<Dispatch>,
}

impl Segment {
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Record this segment's dispatches into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.encode(pass);
        }
    }
}

/// Where a stage's program is recorded, and how a tensor-parallel stage
/// sums a partial result across its group between two segments.
pub trait StageEncoder {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder;

    /// Sum the first `bytes` of `buf` over every device of the group, in
    /// place, after the work recorded so far; later work sees the sum.
    fn all_reduce(&mut self, buf: &wgpu::Buffer, bytes: u64) -> Result<()>;
}

/// A plain encoder: one device, nothing to sum with.
impl StageEncoder for wgpu::CommandEncoder {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self
    }

    fn all_reduce(&mut self, _buf: &wgpu::Buffer, _bytes: u64) -> Result<()> {
        Err(Error::Other(
            "a tensor-parallel stage was recorded without its group: run it through the executor"
                .into(),
        ))
    }
}

/// One stage of GPT-2 resident on a device, for microbatches of `b` x `t` tokens.
pub struct GpuStage {
    pub part: StagePart,
    /// Which tensor-parallel part of the stage this device computes.
    pub shard: Shard,
    pub b: usize,
    pub t: usize,
    pub cfg: Gpt2Config,
    /// (N) token ids, if this stage embeds.
    pub ids: Option<wgpu::Buffer>,
    /// (N, C) residual stream: the stage's input and output.
    pub x: wgpu::Buffer,
    /// (N, Vp) logits, if this stage has the head.
    pub logits: Option<wgpu::Buffer>,
    /// (N, 2) u32 (slot, position) of each row in the KV cache, when the
    /// stage reads or writes one ([`Mode::Prefill`], [`Mode::Decode`]).
    pub rows: Option<wgpu::Buffer>,
    /// (N, C) output of the c_proj matmuls, if this stage has blocks.
    proj: Option<wgpu::Buffer>,
    /// The program, cut into segments; the embedding's dispatches (one per
    /// vocabulary chunk) are the first `embedding_dispatches` of the first.
    segments: Vec<Segment>,
    embedding_dispatches: usize,
    /// Weights and scratch buffers, kept alive for the bind groups.
    _weights: StageUpload,
    _buffers: Vec<wgpu::Buffer>,
}

/// The per-block scratch buffers, shared by every block of a stage. Under
/// tensor parallelism (T devices) the attention and MLP widths are this
/// rank's: C/T and F/T.
struct Scratch {
    ln: wgpu::Buffer,   // (N, C) layernorm output
    qkv: wgpu::Buffer,  // (N, 3C/T)
    att: wgpu::Buffer,  // (N, C/T) attention output
    proj: wgpu::Buffer, // (N, C) c_proj output (attention, then MLP)
    x2: wgpu::Buffer,   // (N, C) residual stream after attention
    fch: wgpu::Buffer,  // (N, F/T)
    fcg: wgpu::Buffer,  // (N, F/T) gelu(fch)
}

impl Scratch {
    fn new(gpu: &Gpu, n: usize, c: usize, cl: usize, fl: usize) -> Scratch {
        Scratch {
            ln: zeros(gpu, "ln (N,C)", n * c),
            qkv: zeros(gpu, "qkv (N,3C/T)", n * 3 * cl),
            att: zeros(gpu, "att (N,C/T)", n * cl),
            proj: zeros(gpu, "proj (N,C)", n * c),
            x2: zeros(gpu, "x2 (N,C)", n * c),
            fch: zeros(gpu, "fch (N,F/T)", n * fl),
            fcg: zeros(gpu, "fch_gelu (N,F/T)", n * fl),
        }
    }

    fn into_buffers(self) -> [wgpu::Buffer; 7] {
        [
            self.ln, self.qkv, self.att, self.proj, self.x2, self.fch, self.fcg,
        ]
    }
}

/// Bytes of `len` f32s.
fn bytes(len: usize) -> u64 {
    (len * 4) as u64
}

/// Builds a stage's program: dispatches in order, cut into segments, and the
/// buffers they bind.
struct Builder<'a> {
    gpu: &'a Gpu,
    cfg: &'a Gpt2Config,
    b: usize,
    t: usize,
    /// (N, C) residual stream.
    x: &'a wgpu::Buffer,
    mode: &'a Mode<'a>,
    /// (N, 2) row table of the KV cache, with a cache.
    rows: Option<&'a wgpu::Buffer>,
    segments: Vec<Segment>,
    current: Vec<Dispatch>,
    keep: Vec<wgpu::Buffer>,
}

impl Builder<'_> {
    fn n(&self) -> usize {
        self.b * self.t
    }

    fn push(&mut self, d: Dispatch) {
        self.current.push(d);
    }

    /// End the current segment at `end`.
    fn cut(&mut self, end: Cut) {
        let dispatches = std::mem::take(&mut self.current);
        self.segments.push(Segment { end, dispatches });
    }

    /// x = wte[ids] + wpe[pos_offset + t] (decoding: wpe[pos_r], each row at
    /// its own position), one dispatch per vocabulary chunk (position offset
    /// 0 until [`GpuStage::set_position_offset`]). Returns the (N) token id
    /// buffer.
    fn embedding(&mut self, up: &StageUpload, wpe: &wgpu::Buffer) -> wgpu::Buffer {
        let (gpu, n, t, c) = (self.gpu, self.n(), self.t, self.cfg.n_embd);
        let ids = upload_pod(gpu, "ids (N)", &vec![0u32; n]);
        for (&(v0, len), tb) in up.chunks.iter().zip(&up.wte_t) {
            let d = match (self.mode, self.rows) {
                (Mode::Decode(_), Some(rows)) => {
                    k::embedding_decode(gpu, self.x, &ids, tb, wpe, rows, n, c, v0, len)
                }
                _ => k::embedding_forward(gpu, self.x, &ids, tb, wpe, n, t, c, v0, len, 0),
            };
            self.push(d);
        }
        ids
    }

    /// Block `l` (the `i`-th of the stage): x2 = x + attn(ln_1(x)); x = x2 +
    /// mlp(ln_2(x2)), cut after each c_proj matmul. With a KV cache the keys
    /// and values are written into it after the QKV matmul; decoding attends
    /// over the cache instead of the pass's own rows.
    fn block(
        &mut self,
        l: usize,
        i: usize,
        lb: &Layer<wgpu::Buffer>,
        s: &Scratch,
        tp: usize,
    ) -> Result<()> {
        let (gpu, cfg) = (self.gpu, self.cfg);
        let (b, t, n) = (self.b, self.t, self.n());
        let (c, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        // This rank's attention channels, heads and MLP width.
        let (cl, nh, f) = (c / tp, cfg.n_head / tp, cfg.n_inner / tp);
        let x = self.x;
        self.push(k::layernorm_forward(
            gpu, &s.ln, x, &lb.ln_1_g, &lb.ln_1_b, n, c, eps,
        ));
        self.push(k::matmul_forward(
            gpu,
            &s.qkv,
            &s.ln,
            &lb.c_attn_w,
            &lb.c_attn_b,
            n,
            c,
            3 * cl,
        ));
        match (self.mode, self.rows) {
            (Mode::Prefill(kv) | Mode::Decode(kv), Some(rows)) => {
                let (kc, vc) = (&kv.k[i], &kv.v[i]);
                self.push(k::kv_cache_write(
                    gpu, kc, vc, &s.qkv, rows, n, cl, kv.n_pos,
                ));
                self.push(match self.mode {
                    Mode::Decode(_) => {
                        k::attention_decode(gpu, &s.att, &s.qkv, kc, vc, rows, n, cl, nh, kv.n_pos)
                    }
                    _ => k::attention_forward(gpu, &s.att, &s.qkv, b, t, cl, nh),
                });
            }
            _ => self.push(k::attention_forward(gpu, &s.att, &s.qkv, b, t, cl, nh)),
        }
        self.push(k::matmul_forward(
            gpu,
            &s.proj,
            &s.att,
            &lb.attn_proj_w,
            &lb.attn_proj_b,
            n,
            cl,
            c,
        ));
        self.cut(Cut::AttnProj { layer: l });
        self.push(k::residual_forward(gpu, &s.x2, x, &s.proj, n * c));
        self.push(k::layernorm_forward(
            gpu, &s.ln, &s.x2, &lb.ln_2_g, &lb.ln_2_b, n, c, eps,
        ));
        self.push(k::matmul_forward(
            gpu, &s.fch, &s.ln, &lb.c_fc_w, &lb.c_fc_b, n, c, f,
        ));
        self.push(k::gelu_forward(gpu, &s.fcg, &s.fch, n * f));
        self.push(k::matmul_forward(
            gpu,
            &s.proj,
            &s.fcg,
            &lb.mlp_proj_w,
            &lb.mlp_proj_b,
            n,
            f,
            c,
        ));
        self.cut(Cut::MlpProj { layer: l });
        self.push(k::residual_forward(gpu, x, &s.x2, &s.proj, n * c));
        Ok(())
    }

    /// logits (N, Vp) = ln_f(x) @ wte^T, one matmul per vocabulary chunk into
    /// its columns. Returns the logits buffer.
    fn head(
        &mut self,
        up: &StageUpload,
        ln_f: &(wgpu::Buffer, wgpu::Buffer),
    ) -> Result<wgpu::Buffer> {
        let (gpu, n, c) = (self.gpu, self.n(), self.cfg.n_embd);
        let eps = self.cfg.layer_norm_epsilon;
        let vp = self.cfg.padded_vocab();
        gpu.check_binding(&format!("logits ({n}, {vp})"), bytes(n * vp))?;
        let lnf = zeros(gpu, "ln_f (N,C)", n * c);
        let out = zeros(gpu, "logits (N,Vp)", n * vp);
        let max_len = up.chunks.iter().map(|&(_, l)| l).max().unwrap_or(4);
        let no_bias = zeros(gpu, "lm_head bias (0)", max_len);
        self.push(k::layernorm_forward(
            gpu, &lnf, self.x, &ln_f.0, &ln_f.1, n, c, eps,
        ));
        for (&(v0, len), tb) in up.chunks.iter().zip(&up.wte_t) {
            self.push(k::matmul_forward_strided(
                gpu, &out, &lnf, tb, &no_bias, n, c, len, vp, v0,
            ));
        }
        self.keep.extend([lnf, no_bias]);
        Ok(out)
    }
}

/// What a [`GpuStage`] program computes.
pub enum Mode<'a> {
    /// The forward over B x T tokens, no cache.
    Full,
    /// The forward over B right-padded prompts of T tokens, writing every
    /// row's key and value into the cache at its (slot, position).
    Prefill(&'a KvCache),
    /// One new token per sequence (T = 1), each at its own position,
    /// attending over its sequence's cache.
    Decode(&'a KvCache),
}

impl GpuStage {
    /// Upload a stage's weights (`w.part` says which: embedding, blocks,
    /// head) to `gpu` and build its forward over `b` x `t` tokens.
    pub fn new(gpu: &Gpu, w: &StageWeights, b: usize, t: usize) -> Result<GpuStage> {
        GpuStage::build(gpu, &StageUpload::new(gpu, w)?, b, t, Mode::Full)
    }

    /// Build a program over weights already on `gpu`: `b` x `t` tokens,
    /// computing what `mode` says.
    pub fn build(gpu: &Gpu, up: &StageUpload, b: usize, t: usize, mode: Mode) -> Result<GpuStage> {
        let (cfg, part, shard) = (up.cfg.clone(), up.part.clone(), up.shard);
        let (c, f) = (cfg.n_embd, cfg.n_inner);
        let n = b * t;
        if n == 0 || t > cfg.n_positions {
            return Err(Error::Input(format!(
                "a microbatch of {b} x {t} tokens does not fit a model with n_positions {}",
                cfg.n_positions
            )));
        }
        if let Mode::Decode(_) = mode {
            if t != 1 {
                return Err(Error::Input(format!(
                    "a decode step runs one token per sequence, not {t}"
                )));
            }
        }
        if let Mode::Prefill(kv) | Mode::Decode(kv) = mode {
            if kv.k.len() != up.layers.len() || kv.n_pos < t {
                return Err(Error::Input(format!(
                    "a KV cache of {} blocks and {} positions does not fit a stage of {} blocks over {t} tokens",
                    kv.k.len(),
                    kv.n_pos,
                    up.layers.len()
                )));
            }
        }
        gpu.check_binding("activations (N, F)", bytes(n * f.max(3 * c)))?;

        let x = zeros(gpu, "x (N,C)", n * c);
        let rows = match mode {
            Mode::Full => None,
            _ => Some(upload_pod(gpu, "KV cache rows (N,2)", &vec![0u32; 2 * n])),
        };
        let mut bld = Builder {
            gpu,
            cfg: &cfg,
            b,
            t,
            x: &x,
            mode: &mode,
            rows: rows.as_ref(),
            segments: Vec::new(),
            current: Vec::new(),
            keep: Vec::new(),
        };
        let ids = up.wpe.as_ref().map(|wpe| bld.embedding(up, wpe));
        let embedding_dispatches = bld.current.len();
        if ids.is_some() {
            bld.cut(Cut::Embedding);
        }
        let mut proj = None;
        if !up.layers.is_empty() {
            let scratch = Scratch::new(gpu, n, c, c / shard.of, f / shard.of);
            for (i, (l, lb)) in part.layers.clone().zip(&up.layers).enumerate() {
                bld.block(l, i, lb, &scratch, shard.of)?;
            }
            proj = Some(scratch.proj.clone());
            bld.keep.extend(scratch.into_buffers());
        }
        let logits = match &up.ln_f {
            Some(ln_f) => Some(bld.head(up, ln_f)?),
            None => None,
        };
        bld.cut(Cut::End);
        let (segments, keep) = (bld.segments, bld.keep);
        Ok(GpuStage {
            part,
            shard,
            b,
            t,
            cfg,
            ids,
            x,
            logits,
            rows,
            proj,
            segments,
            embedding_dispatches,
            _weights: up.clone(),
            _buffers: keep,
        })
    }

    /// Queue the KV-cache row table for the next pass: (slot, position) of
    /// each of the N rows. Nothing to do for a stage without a cache.
    pub fn write_rows(&self, gpu: &Gpu, rows: &[(u32, u32)]) {
        if let Some(b) = &self.rows {
            let flat: Vec<u32> = rows.iter().flat_map(|&(s, p)| [s, p]).collect();
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(&flat));
        }
    }

    /// The program, in order, cut where a tensor-parallel all-reduce of a
    /// partial sum would go (see [`Cut`]); the last segment ends at
    /// [`Cut::End`]. Encoding every segment's dispatches in order into one
    /// compute pass is exactly [`GpuStage::encode`]; a later collective can be
    /// inserted between segments instead.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The buffer a tensor-parallel group sums at `cut`, and its bytes:
    /// the residual stream after the embedding, the c_proj output after a
    /// projection; `None` at the end.
    pub fn reduced(&self, cut: Cut) -> Option<(&wgpu::Buffer, u64)> {
        match cut {
            Cut::Embedding => Some((&self.x, self.activation_bytes())),
            Cut::AttnProj { .. } | Cut::MlpProj { .. } => {
                self.proj.as_ref().map(|p| (p, self.activation_bytes()))
            }
            Cut::End => None,
        }
    }

    /// (N, C) buffer the attention and MLP c_proj matmuls write, which holds
    /// the partial sum at each [`Cut::AttnProj`] / [`Cut::MlpProj`]; `None`
    /// for a stage without blocks.
    pub fn partial_sum(&self) -> Option<&wgpu::Buffer> {
        self.proj.as_ref()
    }

    /// Set the position of each sequence's first token for the passes
    /// submitted after this call (see [`Dispatch::update_params`]): the
    /// embedding then adds `wpe[offset + t]`. 0 when built. `gpu` must be the
    /// device the stage was built on. An offset with `offset + T` past the
    /// model's n_positions is an input error; a stage without the embedding
    /// checks the offset and has nothing to update.
    pub fn set_position_offset(&self, gpu: &Gpu, offset: usize) -> Result<()> {
        let n_positions = self.cfg.n_positions;
        let fits = offset
            .checked_add(self.t)
            .is_some_and(|end| end <= n_positions);
        let off = u32::try_from(offset).ok().filter(|_| fits).ok_or_else(|| {
            Error::Input(format!(
                "position offset {offset} + sequence length {} exceeds the model's n_positions {n_positions}",
                self.t
            ))
        })?;
        let first = self.segments.first().map_or(&[][..], |s| s.dispatches());
        for d in &first[..self.embedding_dispatches] {
            d.update_params(&gpu.queue, |p: &mut k::EmbeddingParams| p.pos_offset = off)?;
        }
        Ok(())
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
        (self.rows() * self.cfg.padded_vocab() * 4) as u64
    }

    /// Queue the token ids of one microbatch (N of them) for the next pass.
    pub fn write_ids(&self, gpu: &Gpu, ids: &[u32]) {
        if let Some(b) = &self.ids {
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(ids));
        }
    }

    /// Record this stage's forward pass into `enc`: on one device every
    /// segment in one compute pass ([`GpuStage::encode`]); on a rank of a
    /// tensor-parallel group each segment in its own pass with the group's
    /// all-reduce of [`GpuStage::reduced`] at each cut. A rank embeds only
    /// its vocabulary range's tokens, so it clears the residual stream first
    /// and the sum after the embedding is exact; its logits hold its range's
    /// columns and zeros.
    pub fn encode_in(&self, enc: &mut dyn StageEncoder) -> Result<()> {
        if !self.shard.split() {
            self.encode(enc.encoder());
            return Ok(());
        }
        if self.ids.is_some() {
            enc.encoder().clear_buffer(&self.x, 0, None);
        }
        // Likewise the logits: a rank writes its vocabulary range's columns
        // only, and a sum of them (decoding samples from it) must not find
        // the last pass's sum in the others.
        if let Some(logits) = &self.logits {
            enc.encoder().clear_buffer(logits, 0, None);
        }
        for s in &self.segments {
            {
                let mut pass = enc
                    .encoder()
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("stage forward segment"),
                        timestamp_writes: None,
                    });
                s.encode(&mut pass);
            }
            if let Some((buf, bytes)) = self.reduced(s.end) {
                enc.all_reduce(buf, bytes)?;
            }
        }
        Ok(())
    }

    /// Record this stage's forward pass, every segment in order, as one
    /// compute pass (a stage on one device: see [`GpuStage::encode_in`]).
    pub fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("stage forward"),
            timestamp_writes: None,
        });
        for s in &self.segments {
            s.encode(&mut pass);
        }
    }

    /// Drop the padding columns of (N, Vp) logits read back from the device.
    pub fn strip_logits(&self, padded: &[f32]) -> Vec<f32> {
        let (v, vp) = (self.cfg.vocab_size, self.cfg.padded_vocab());
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
    let widest = cfg.padded_vocab().max(cfg.n_inner).max(3 * cfg.n_embd);
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
    let passes = Microbatches::passes(tokens, per_pass);
    let whole = StagePart::whole(&w.config);
    let stage = GpuStage::new(gpu, &w.stage(&whole), passes.per, tokens.seq)?;
    let staging = staging(gpu, "logits readback", stage.logits_bytes());
    let logits_buf = stage.logits.as_ref().expect("whole-model stage has a head");
    let mut results = Vec::with_capacity(passes.list.len());
    let start = std::time::Instant::now();
    for (i, pass) in passes.list.iter().enumerate() {
        stage.write_ids(gpu, &pass.ids);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        stage.encode(&mut enc);
        enc.copy_buffer_to_buffer(logits_buf, 0, &staging, 0, stage.logits_bytes());
        gpu.queue.submit([enc.finish()]);
        let padded: Vec<f32> = read_mapped(gpu, &staging, stage.rows() * w.config.padded_vocab())?;
        results.push((i, stage.strip_logits(&padded)));
    }
    let logits = passes.gather(&results, tokens.seq * w.config.vocab_size);
    Ok(Forward {
        logits,
        seconds: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs an adapter (lavapipe here), like the GPU integration tests.
    fn gpu() -> Gpu {
        Gpu::open("").unwrap_or_else(|e| panic!("GPU stage tests need a wgpu adapter: {e}"))
    }

    #[test]
    fn segments_cut_after_each_c_proj_and_position_offset_is_checked() {
        let cfg = Gpt2Config::named("tiny").unwrap();
        let w = Gpt2Weights::init(&cfg, 1).unwrap();
        let g = gpu();
        let t = 3;
        let whole = StagePart::whole(&cfg);
        let stage = GpuStage::new(&g, &w.stage(&whole), 2, t).unwrap();

        let ends: Vec<Cut> = stage.segments().iter().map(|s| s.end).collect();
        let mut want = vec![Cut::Embedding];
        for layer in 0..cfg.n_layer {
            want.extend([Cut::AttnProj { layer }, Cut::MlpProj { layer }]);
        }
        want.push(Cut::End);
        assert_eq!(ends, want);
        let embedding = stage.segments()[0].dispatches();
        assert!(embedding.iter().all(|d| d.name == "embedding_forward"));
        for s in &stage.segments()[1..want.len() - 1] {
            let last = s.dispatches().last().expect("non-empty segment").name;
            assert!(
                last.starts_with("matmul_forward"),
                "{:?} ends in {last}",
                s.end
            );
        }
        for s in &stage.segments()[2..] {
            let first = s.dispatches()[0].name;
            assert_eq!(first, "residual_forward", "segment after a cut");
        }
        assert!(stage.partial_sum().is_some());

        stage.set_position_offset(&g, cfg.n_positions - t).unwrap();
        stage.set_position_offset(&g, 0).unwrap();
        for bad in [cfg.n_positions - t + 1, usize::MAX] {
            let err = stage.set_position_offset(&g, bad).unwrap_err();
            assert!(
                matches!(err, Error::Input(_)) && err.to_string().contains("n_positions"),
                "{err}"
            );
        }
    }
}
