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
//!
//! The files: this one holds the stage ([`GpuStage`]) and a single-device
//! forward; `builder.rs` builds its program, `segments.rs` cuts it where a
//! tensor-parallel group sums, `resident.rs` holds the uploaded weights and
//! the KV cache, `token_table.rs` the transposed token table.

use crate::device::{read_mapped, staging, upload_pod, zeros_as, Dtype, Gpu, Precision};
use crate::error::{Error, Result};
use crate::io::TokenBatch;
use crate::kernels as k;
use crate::microbatch::Microbatches;
use crate::model::weights::{StagePart, StageWeights};
use crate::model::{Gpt2Config, Gpt2Weights, Shard};

mod builder;
mod resident;
mod segments;
mod token_table;
use builder::{Builder, Scratch};
pub use resident::{first_beyond_f16, KvCache, StageUpload};
pub use segments::{Cut, Segment, StageEncoder};
pub(crate) use token_table::{
    token_table_chunks, untranspose_token_table, upload_token_table, vocab_chunks,
};

/// One stage of GPT-2 resident on a device, for microbatches of `b` x `t` tokens.
pub struct GpuStage {
    pub part: StagePart,
    /// Which tensor-parallel part of the stage this device computes.
    pub shard: Shard,
    pub b: usize,
    pub t: usize,
    pub cfg: Gpt2Config,
    /// How the device stores the stage, and the activations it exchanges.
    pub precision: Precision,
    /// (N) token ids, if this stage embeds.
    pub ids: Option<wgpu::Buffer>,
    /// (N, C) residual stream: the stage's input and output.
    pub x: wgpu::Buffer,
    /// (N, C) in the hop's type, when it is not the stage's: what the
    /// previous device sends, converted into `x` first ([`GpuStage::input`]).
    xin: Option<wgpu::Buffer>,
    /// (N, C) in the hop's type, when it is not the stage's: `x` converted
    /// for the next device last ([`GpuStage::output`]).
    xout: Option<wgpu::Buffer>,
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

/// Bytes of `len` f32s (the logits).
fn bytes(len: usize) -> u64 {
    (len * 4) as u64
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
        let precision = up.precision;
        let dt = precision.dtype;
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
        let widest = cfg.mlp_in_width().max(cfg.qkv_width()).max(c);
        gpu.check_binding("activations (N, F)", dt.bytes(n * widest.max(f)))?;

        let x = zeros_as(gpu, "x (N,C)", n * c, dt);
        // The row table: (slot, position) of each row for the KV cache, or
        // (0, t) of row (b, t) for rotary positions without one.
        let rows = match mode {
            Mode::Full if cfg.learned_positions() || up.layers.is_empty() => None,
            Mode::Full => {
                let table: Vec<u32> = (0..n).flat_map(|r| [0, (r % t) as u32]).collect();
                Some(upload_pod(gpu, "positions (N,2)", &table))
            }
            _ => Some(upload_pod(gpu, "KV cache rows (N,2)", &vec![0u32; 2 * n])),
        };
        let mut bld = Builder {
            gpu,
            dt,
            cfg: &cfg,
            shard,
            b,
            t,
            x: &x,
            mode: &mode,
            rows: rows.as_ref(),
            segments: Vec::new(),
            current: Vec::new(),
            keep: Vec::new(),
        };
        let ids = part.embedding.then(|| bld.embedding(up));
        let embedding_dispatches = bld.current.len();
        if ids.is_some() {
            bld.cut(Cut::Embedding);
        }
        // A stage that receives activations in another type converts them
        // into x first (on this device; the f16 one of the pair).
        let xin = (!part.embedding && precision.hop != dt).then(|| {
            let xin = zeros_as(gpu, "x in (N,C)", n * c, precision.hop);
            let elems = k::Elems {
                st: precision.hop,
                ot: dt,
            };
            bld.push(k::convert((gpu, elems), &x, &xin, n * c));
            xin
        });
        let mut proj = None;
        if !up.layers.is_empty() {
            let scratch = Scratch::new(gpu, &cfg, shard, n, dt);
            for (i, (l, lb)) in part.layers.clone().zip(&up.layers).enumerate() {
                bld.block(l, i, lb, &scratch, up.inv_freq.as_ref())?;
            }
            proj = Some(scratch.proj.clone());
            bld.keep.extend(scratch.into_buffers());
        }
        let logits = match &up.ln_f {
            Some(ln_f) => Some(bld.head(up, ln_f)?),
            None => None,
        };
        // ... and one that sends them in another type converts x last.
        let xout = (!part.head && precision.hop != dt).then(|| {
            let xout = zeros_as(gpu, "x out (N,C)", n * c, precision.hop);
            let elems = k::Elems {
                st: dt,
                ot: precision.hop,
            };
            bld.push(k::convert((gpu, elems), &xout, &x, n * c));
            xout
        });
        bld.cut(Cut::End);
        let (segments, keep) = (bld.segments, bld.keep);
        Ok(GpuStage {
            part,
            shard,
            b,
            t,
            cfg,
            precision,
            ids,
            x,
            xin,
            xout,
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

    /// Set the position of each sequence's first token for the passes
    /// submitted after this call (see [`k::Dispatch::update_params`]): the
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

    /// Bytes of the activation a stage hands to the next one: (N, C) in
    /// the hop's type.
    pub fn activation_bytes(&self) -> u64 {
        self.precision.hop.bytes(self.rows() * self.cfg.n_embd)
    }

    /// Where the previous device's activation goes: `x`, or the buffer it
    /// is converted from when the hop's type is not the stage's.
    pub fn input(&self) -> &wgpu::Buffer {
        self.xin.as_ref().unwrap_or(&self.x)
    }

    /// What the next device receives: `x`, or its conversion to the hop's type.
    pub fn output(&self) -> &wgpu::Buffer {
        self.xout.as_ref().unwrap_or(&self.x)
    }

    /// The stage's storage type.
    pub fn dtype(&self) -> Dtype {
        self.precision.dtype
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
    let widest = cfg
        .padded_vocab()
        .max(cfg.mlp_in_width())
        .max(cfg.qkv_width());
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
    use crate::device::test_gpu;

    #[test]
    fn segments_cut_after_each_c_proj_and_position_offset_is_checked() {
        let cfg = Gpt2Config::named("tiny").unwrap();
        let w = Gpt2Weights::init(&cfg, 1).unwrap();
        let g = test_gpu();
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
