//! GPT-2 training on one device: a stage's parameters with their gradients
//! and optimizer state, and the dispatches of its F, B, I and W actions.
//!
//! The forward is [`super::gpu::GpuStage`]'s — the same kernels in the same
//! order — except that every activation the backward reads is written into a
//! buffer of its own, a [`Stashed`] tensor of one microbatch, instead of
//! shared scratch. Which buffer holds which stashed tensor of which
//! microbatch is the caller's choice (the training program pools them,
//! `workload::train`); `stash.rs` says what each action makes, reads and
//! lets go of ([`TrainStage::acquires`], [`TrainStage::releases`]).
//!
//! The backward mirrors `cpu::backward::forward_backward_microbatch` call for
//! call. Split for zero-bubble schedules:
//! - `I` (input gradient): every `matmul_backward_input`, GELU, attention,
//!   residual and layernorm backward (the layernorms' own gamma/beta
//!   gradients too: cheap, and their inputs are I's), down to the gradient of
//!   the stage input, which is the message to the previous stage;
//! - `W` (weight gradient): every matmul's weight and bias gradient, the LM
//!   head's share of `wte`, and the embedding's `wte`/`wpe` gradient. It
//!   reads the matmul inputs stashed by F and the output gradients stashed by I.
//! - `B` is I followed by W in one action.
//!
//! The loss is computed in the head stage's F: logits, then the fused
//! cross-entropy + softmax backward writes the per-row losses and `dlogits`,
//! which are stashed for I and W (the logits themselves are scratch).
//!
//! Under tensor parallelism (Megatron-LM's split, [`Shard`]) the stage is
//! one rank's shard: its heads, its MLP columns, its vocabulary range, and
//! the work records an [`Op::AllReduce`] wherever the split needs a sum over
//! the group — in F after the embedding, after each row-split projection
//! (a partial sum) and twice in the vocabulary-parallel cross-entropy (the
//! row maxima, then the sums of exponentials with the target logit); in I
//! after the input gradient of each column-parallel linear and of the
//! vocabulary-split head (each rank's share is a partial sum). W needs none.
//!
//! Shapes: B = microbatch sequences, T, C, F = MLP width, V, Vp = V padded to
//! a multiple of 4, N = B*T; L = the stage's layers. Under tensor
//! parallelism the heads, F and the logits' columns are this rank's.
//!
//! The files: this one holds the stage ([`TrainStage`]: its buffers, the
//! messages at its ends) and the recorded work ([`Op`]); `stash.rs` says
//! which tensors each action makes, reads and lets go of; `forward.rs`
//! records F's op list and `backward.rs` B's, I's and W's; `buffers.rs`
//! holds the parameters, gradients and moments and reads them back;
//! `optim.rs` steps the optimizer.

use std::collections::HashMap;

use crate::device::{upload, upload_pod, zeros, Dtype, Gpu};
use crate::error::{Error, Result};
use crate::kernels::{self as k, Dispatch};
use crate::model::block::{self, Act};
use crate::model::gpu::{upload_token_table, vocab_chunks, StageEncoder};
use crate::model::grads::NO_TARGET;
use crate::model::names;
use crate::model::weights::{block_role_present, Layer, StagePart, StageWeights};
use crate::model::{Gpt2Config, Shard};

mod backward;
mod buffers;
mod forward;
mod optim;
mod stash;

pub use backward::Phase;
pub use buffers::{HostStage, StageBuffers, Tensor, Which};
use optim::OptimizerState;
pub use stash::Stashed;

/// One step of an action's recorded work.
pub enum Op {
    Run(Dispatch),
    /// Zero a buffer (gradients accumulate, so each is cleared before use).
    Clear(wgpu::Buffer),
    /// Copy `bytes` from the first buffer to the second.
    Copy(wgpu::Buffer, wgpu::Buffer, u64),
    /// Under tensor parallelism: sum the first `bytes` of the buffer over
    /// the stage's group, in place (see [`StageEncoder::all_reduce`]).
    AllReduce(wgpu::Buffer, u64),
}

/// Record `ops` into `enc`: runs of dispatches share one compute pass; an
/// all-reduce goes through the group's collective between two passes.
pub fn encode_ops(ops: &[Op], enc: &mut dyn StageEncoder) -> Result<()> {
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            Op::Clear(b) => {
                enc.encoder().clear_buffer(b, 0, None);
                i += 1;
            }
            Op::Copy(a, b, bytes) => {
                enc.encoder().copy_buffer_to_buffer(a, 0, b, 0, *bytes);
                i += 1;
            }
            Op::AllReduce(b, bytes) => {
                enc.all_reduce(b, *bytes)?;
                i += 1;
            }
            Op::Run(_) => {
                let mut pass = enc
                    .encoder()
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("train"),
                        timestamp_writes: None,
                    });
                while let Some(Op::Run(d)) = ops.get(i) {
                    d.encode(&mut pass);
                    i += 1;
                }
            }
        }
    }
    Ok(())
}

/// One stage of GPT-2 on a device, for training on microbatches of `b` x `t`.
pub struct TrainStage {
    pub part: StagePart,
    pub b: usize,
    pub t: usize,
    pub cfg: Gpt2Config,
    /// This device's rank in the stage's tensor-parallel group
    /// ([`Shard::WHOLE`] without tensor parallelism): it holds that rank's
    /// part of every split tensor ([`Shard::layer`]) and its vocabulary range
    /// of the token tables, and all-reduces where the Megatron split says.
    pub shard: Shard,
    /// f32 elements of each of this rank's block tensors.
    lens: Layer<usize>,
    /// This rank's columns of the padded vocabulary (all of it: `0..Vp`):
    /// its token-table chunks, logits and dlogits cover these only.
    vocab: std::ops::Range<usize>,
    chunks: Vec<(usize, usize)>,
    pub params: StageBuffers,
    pub grads: StageBuffers,
    optimizer: Option<OptimizerState>,
    /// (N) token ids, with the embedding.
    ids: Option<wgpu::Buffer>,
    /// (N) next-token targets, with the head.
    targets: Option<wgpu::Buffer>,
    /// (N, this rank's columns) logits scratch and a zero bias, with the head.
    logits: Option<wgpu::Buffer>,
    no_bias: Option<wgpu::Buffer>,
    /// With the head under tensor parallelism: the vocabulary-parallel
    /// cross-entropy's (N, T) row maxima and (N, 2) sums, all-reduced.
    ce: Option<(wgpu::Buffer, wgpu::Buffer)>,
    /// (N, C) forward scratch: the row-split projections' outputs, which
    /// only the residual adds read.
    proj: wgpu::Buffer,
    /// (N, C) the stage's output when it is not stashed (no head).
    out: wgpu::Buffer,
    /// (N, C) gradient of the stage output, as received.
    dy: wgpu::Buffer,
    /// (N, C) gradient of the stage input, as sent (stages without the embedding).
    gin: wgpu::Buffer,
    /// The block's op list ([`block::ops`]) every action walks, and the
    /// activations it keeps: ([`stash::block_sets`]) I's, W's, and the
    /// linears' outputs whose gradients I keeps for W.
    ops: Vec<block::Op>,
    sets: (Vec<Act>, Vec<Act>, Vec<Act>),
    /// Which block parameters the family has (absent biases get no gradient).
    present: Layer<bool>,
    /// Under rotary positions: each row's position (T u32, 0..T) and the
    /// (hd / 2) inverse frequencies.
    rope: Option<(wgpu::Buffer, wgpu::Buffer)>,
    /// Backward scratch.
    gx: [wgpu::Buffer; 2], // (N, C) gradients of block outputs, ping-pong
    /// Gradients of the activations that are neither the residual stream
    /// nor a linear's output (those are kept for W), by activation.
    dscratch: HashMap<Act, wgpu::Buffer>,
    dlnf: wgpu::Buffer,      // (N, C)
    ln_stats: wgpu::Buffer,  // (N, 2)
    att_stats: wgpu::Buffer, // attention backward's scratch
}

fn bytes(len: usize) -> u64 {
    (len * 4) as u64
}

impl TrainStage {
    /// Upload a stage's weights — rank `shard`'s part of them — and
    /// allocate its gradients and scratch.
    pub fn new(
        gpu: &Gpu,
        w: &StageWeights,
        b: usize,
        t: usize,
        shard: Shard,
    ) -> Result<TrainStage> {
        let (cfg, part) = (w.config.clone(), w.part.clone());
        if shard.split() {
            crate::model::shard::check_degree(&cfg, shard.of)?;
        }
        let c = cfg.n_embd;
        let n = b * t;
        if n == 0 || t > cfg.n_positions {
            return Err(Error::Input(format!(
                "a microbatch of {b} x {t} tokens does not fit a model with n_positions {}",
                cfg.n_positions
            )));
        }
        if t < 2 {
            return Err(Error::Input(format!(
                "sequence length {t}: training needs at least 2 tokens per sequence (position t predicts token t+1)"
            )));
        }
        if w.layers.len() != part.layers.len() || part.layers.end > cfg.n_layer {
            return Err(Error::Input(format!(
                "stage {part:?} was given {} blocks: build its weights with Gpt2Weights::stage",
                w.layers.len()
            )));
        }
        let ops = block::ops(&cfg);
        let heads = shard.heads(&cfg);
        let width = |a: Act| block::width(&cfg, a, heads, cfg.n_inner / shard.of);
        let widest = [Act::Qkv, Act::Fc, Act::FcAct]
            .map(width)
            .into_iter()
            .max()
            .unwrap_or(c);
        gpu.check_binding("activations (N, widest)", bytes(n * widest.max(c)))?;
        // What a stage lacks, by the group of tensors it belongs to ("wte").
        let missing = |what: &str| {
            Error::Input(format!(
                "stage {part:?} was given no {}: build its weights with Gpt2Weights::stage",
                names::group(what)
            ))
        };
        let mut chunks = Vec::new();
        let (mut wte_t, mut head_t) = (Vec::new(), Vec::new());
        let vocab = shard.vocab(cfg.padded_vocab());
        if part.embedding || part.head {
            chunks = vocab_chunks(gpu, &cfg, vocab.clone())?;
            if chunks.is_empty() && shard.split() {
                return Err(Error::Input(format!(
                    "--tp {}: rank {} gets none of the vocabulary of {} to train: use a smaller --tp",
                    shard.of, shard.rank, cfg.vocab_size
                )));
            }
        }
        // The token table where the stage embeds, or holds a head tied to
        // it; an untied head's own table apart.
        if part.embedding || (part.head && cfg.tied_head()) {
            let wte = w.wte.or(w.head).ok_or_else(|| missing(names::WTE))?;
            wte_t = upload_token_table(gpu, &cfg, wte, &chunks, names::WTE, Dtype::F32);
        }
        if part.head && !cfg.tied_head() {
            let head = w.head.ok_or_else(|| missing(names::LM_HEAD))?;
            head_t = upload_token_table(gpu, &cfg, head, &chunks, names::LM_HEAD, Dtype::F32);
        }
        let wpe = match part.embedding && cfg.learned_positions() {
            true => {
                let wpe = w.wpe.ok_or_else(|| missing(names::WPE))?;
                gpu.check_binding(names::WPE, bytes(wpe.len()))?;
                Some(upload(gpu, names::WPE, wpe))
            }
            false => None,
        };
        let layers = part
            .layers
            .clone()
            .zip(w.layers)
            .map(|(l, lw)| {
                shard.layer(&cfg, lw).try_map(&cfg, |name, t, shape| {
                    let name = names::block_tensor(l, name);
                    gpu.check_binding(&format!("{name} {shape:?}"), bytes(t.len()))?;
                    Ok::<_, Error>(upload(gpu, &name, t))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = if part.head {
            let (g, bb) = w.ln_f.ok_or_else(|| missing(names::LN_F_WEIGHT))?;
            // RMSNorm has no bias: a zero one stands in, never updated.
            let bias = match bb.is_empty() {
                true => zeros(gpu, names::LN_F_BIAS, c),
                false => upload(gpu, names::LN_F_BIAS, bb),
            };
            Some((upload(gpu, names::LN_F_WEIGHT, g), bias))
        } else {
            None
        };
        let params = StageBuffers {
            wte_t,
            head_t,
            wpe,
            layers,
            ln_f,
        };
        let lens = shard.layer_lens(&cfg);
        let grads = params.zeros_like(gpu, "grad", &cfg, &part, &chunks, &lens);
        let vp = vocab.len();
        let (logits, no_bias, targets) = if part.head {
            gpu.check_binding(&format!("logits ({n}, {vp})"), bytes(n * vp))?;
            let max_len = chunks.iter().map(|&(_, l)| l).max().unwrap_or(4);
            (
                Some(zeros(gpu, "logits (N,Vp)", n * vp)),
                Some(zeros(gpu, "lm_head bias (0)", max_len)),
                Some(upload_pod(gpu, "targets (N)", &vec![NO_TARGET; n])),
            )
        } else {
            (None, None, None)
        };
        let ids = part
            .embedding
            .then(|| upload_pod(gpu, "ids (N)", &vec![0u32; n]));
        let ce = (part.head && shard.split()).then(|| {
            (
                zeros(gpu, "cross-entropy row maxima (N,T)", n * shard.of),
                zeros(gpu, "cross-entropy sums (N,2)", 2 * n),
            )
        });
        let rope = match (&cfg.arch.rope, part.layers.is_empty()) {
            (Some(r), false) => Some((
                upload_pod(gpu, "positions (T)", &(0..t as u32).collect::<Vec<_>>()),
                upload(gpu, "rope inv_freq (hd/2)", &r.inv_freq(cfg.head_dim())),
            )),
            _ => None,
        };
        let sets = stash::block_sets(&ops);
        // The input gradient of a column-parallel linear is a partial sum
        // the group adds up: its input must feed nothing else.
        for op in &ops {
            if let block::Op::Linear {
                x,
                row_split: false,
                ..
            } = *op
            {
                let readers = ops.iter().filter(|o| o.inputs().contains(&x)).count();
                if readers != 1 {
                    return Err(Error::Other(format!(
                        "bug: the block's {x:?} feeds a column-parallel linear and {} other ops",
                        readers - 1
                    )));
                }
            }
        }
        // Gradients in scratch: of every activation an op reads but the
        // residual stream and the linears' outputs (kept for W).
        let mut dscratch = HashMap::new();
        for op in &ops {
            for x in op.inputs() {
                if !matches!(x, Act::X | Act::Out) && !sets.2.contains(&x) {
                    dscratch
                        .entry(x)
                        .or_insert_with(|| zeros(gpu, &format!("d{x:?}"), n * width(x)));
                }
            }
        }
        let present = Layer::try_from_fn(&cfg, |name, _| {
            Ok::<_, std::convert::Infallible>(block_role_present(&cfg, name))
        })
        .unwrap_or_else(|never| match never {});
        let nc = |name: &str| zeros(gpu, name, n * c);
        Ok(TrainStage {
            b,
            t,
            shard,
            lens,
            vocab,
            chunks,
            params,
            grads,
            optimizer: None,
            ids,
            targets,
            logits,
            no_bias,
            ce,
            proj: nc("proj (N,C)"),
            out: nc("out (N,C)"),
            dy: nc("dy (N,C)"),
            gin: nc("dx in (N,C)"),
            ops,
            sets,
            present,
            rope,
            gx: [nc("gx0 (N,C)"), nc("gx1 (N,C)")],
            dscratch,
            dlnf: nc("dlnf (N,C)"),
            ln_stats: zeros(gpu, "ln stats (N,2)", 2 * n),
            att_stats: zeros(
                gpu,
                "attention backward scratch",
                k::attention_backward_scratch_len(gpu, b, t, heads.0),
            ),
            part,
            cfg,
        })
    }

    /// Rows of a microbatch (B*T).
    pub fn rows(&self) -> usize {
        self.b * self.t
    }

    /// Width of activation `a` on this rank: its heads, its MLP width.
    pub(crate) fn width(&self, a: Act) -> usize {
        let cfg = &self.cfg;
        block::width(cfg, a, self.shard.heads(cfg), cfg.n_inner / self.shard.of)
    }

    /// Under tensor parallelism, the group's sum of the first `len` f32 of
    /// `buf` (a partial sum each rank holds); nothing on one device.
    fn all_reduce(&self, ops: &mut Vec<Op>, buf: &wgpu::Buffer, len: usize) {
        if self.shard.split() {
            ops.push(Op::AllReduce(buf.clone(), bytes(len)));
        }
    }

    /// Blocks on this stage.
    fn layers(&self) -> usize {
        self.part.layers.len()
    }

    /// Bytes of a message at either end of this stage: an (N, C) activation
    /// or its gradient.
    pub fn message_bytes(&self) -> u64 {
        bytes(self.rows() * self.cfg.n_embd)
    }

    /// Where the received gradient of the stage output is placed for B or I.
    pub fn grad_input(&self) -> &wgpu::Buffer {
        &self.dy
    }

    /// B's or I's output message: the gradient of the stage input.
    pub fn grad_output(&self) -> &wgpu::Buffer {
        &self.gin
    }

    /// Queue one microbatch's token ids (embedding stage) and next-token
    /// targets (head stage) for the next submit.
    pub fn write_microbatch(&self, gpu: &Gpu, ids: &[u32], targets: &[u32]) {
        if let Some(b) = &self.ids {
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(ids));
        }
        if let Some(b) = &self.targets {
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(targets));
        }
    }
}

fn get(s: &HashMap<Stashed, wgpu::Buffer>, t: Stashed) -> Result<&wgpu::Buffer> {
    s.get(&t).ok_or_else(|| {
        Error::Other(format!(
            "bug: stashed tensor {t:?} has no buffer for this action"
        ))
    })
}
