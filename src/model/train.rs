//! GPT-2 training on one device: a stage's parameters with their gradients
//! and optimizer state, and the dispatches of its F, B, I and W actions.
//!
//! The forward is [`super::gpu::GpuStage`]'s — the same kernels in the same
//! order — except that every activation the backward reads is written into a
//! buffer of its own, a [`Stashed`] tensor of one microbatch, instead of
//! shared scratch. Which buffer holds which stashed tensor of which
//! microbatch is the caller's choice (the executor pools them,
//! `executor::train`); this file says what each action makes, reads and
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
//! Shapes: B = microbatch sequences, T, C, F = MLP width, V, Vp = V padded to
//! a multiple of 4, N = B*T; L = the stage's layers.

use std::collections::HashMap;

use crate::device::{download, upload, upload_pod, zeros, Gpu};
use crate::error::{Error, Result};
use crate::kernels::{self as k, Dispatch};
use crate::model::gpu::{untranspose_token_table, upload_token_table, vocab_chunks};
use crate::model::grads::NO_TARGET;
use crate::model::weights::{Layer, LayerWeights, StagePart, StageWeights};
use crate::model::Gpt2Config;

mod optim;

use optim::OptimizerState;
pub use optim::{OptimizerKind, OptimizerStep};

/// A tensor a stage keeps for one microbatch between two of its actions.
/// Layer indices are local to the stage (0 = its first block).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stashed {
    /// (N, C) residual stream into block `l`; `X(L)` is ln_f's input on the
    /// head stage; `X(0)` is the stage input (the received activation, or
    /// the embedding's output).
    X(usize),
    Ln1(usize),  // (N, C)
    Qkv(usize),  // (N, 3C)
    Atty(usize), // (N, C)
    Res2(usize), // (N, C)
    Ln2(usize),  // (N, C)
    Fch(usize),  // (N, F)
    Fcg(usize),  // (N, F)
    /// (N, C) ln_f output, the LM head's input.
    Lnf,
    /// (N, Vp) gradient of the loss w.r.t. the logits.
    DLogits,
    /// Output gradients of the four matmuls of block `l`, made by I for W.
    DQkv(usize), // (N, 3C)
    DAttProj(usize), // (N, C)
    DFch(usize),     // (N, F)
    DFcProj(usize),  // (N, C)
    /// (N, C) gradient of the embedding's output, made by I for W.
    DEmb,
}

/// Which part of the backward an action runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `B`: input and weight gradients.
    Full,
    /// `I`: input gradients only.
    Input,
    /// `W`: weight gradients only.
    Weight,
}

/// One step of an action's recorded work.
pub enum Op {
    Run(Dispatch),
    /// Zero a buffer (gradients accumulate, so each is cleared before use).
    Clear(wgpu::Buffer),
    /// Copy `bytes` from the first buffer to the second.
    Copy(wgpu::Buffer, wgpu::Buffer, u64),
}

/// Record `ops` into `enc`: runs of dispatches share one compute pass.
pub fn encode_ops(ops: &[Op], enc: &mut wgpu::CommandEncoder) {
    let mut i = 0;
    while i < ops.len() {
        match &ops[i] {
            Op::Clear(b) => {
                enc.clear_buffer(b, 0, None);
                i += 1;
            }
            Op::Copy(a, b, bytes) => {
                enc.copy_buffer_to_buffer(a, 0, b, 0, *bytes);
                i += 1;
            }
            Op::Run(_) => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
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
}

/// A stage's parameters (or their gradients, or optimizer moments), one
/// buffer per tensor. The token table is kept as the GPU stage keeps it:
/// transposed vocabulary chunks (C, len).
pub struct StageBuffers {
    pub wte_t: Vec<wgpu::Buffer>,
    pub wpe: Option<wgpu::Buffer>,
    pub layers: Vec<Layer<wgpu::Buffer>>,
    pub ln_f: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

/// One tensor of [`StageBuffers::tensors`].
pub struct Tensor<'a> {
    /// Checkpoint name (`h.3.attn.c_attn.weight`; `wte.weight[v0..]` for a
    /// chunk of the transposed token table).
    pub name: String,
    pub buf: &'a wgpu::Buffer,
    /// f32 elements.
    pub len: usize,
    /// Rank >= 2 (matrices and embeddings): weight decay applies.
    pub decay: bool,
}

impl StageBuffers {
    /// Every tensor in a fixed order (the same for parameters, gradients
    /// and moments of one stage).
    pub fn tensors(
        &self,
        cfg: &Gpt2Config,
        part: &StagePart,
        chunks: &[(usize, usize)],
    ) -> Vec<Tensor<'_>> {
        let c = cfg.n_embd;
        let mut out = Vec::new();
        for (b, &(v0, len)) in self.wte_t.iter().zip(chunks) {
            out.push(Tensor {
                name: format!("wte.weight[{v0}..]"),
                buf: b,
                len: c * len,
                decay: true,
            });
        }
        if let Some(b) = &self.wpe {
            out.push(Tensor {
                name: "wpe.weight".into(),
                buf: b,
                len: cfg.n_positions * c,
                decay: true,
            });
        }
        for (l, layer) in part.layers.clone().zip(&self.layers) {
            for (name, b, shape) in layer.named_tensors(cfg) {
                out.push(Tensor {
                    name: format!("h.{l}.{name}"),
                    buf: b,
                    len: shape.iter().product(),
                    decay: shape.len() >= 2,
                });
            }
        }
        if let Some((g, b)) = &self.ln_f {
            for (name, buf) in [("ln_f.weight", g), ("ln_f.bias", b)] {
                out.push(Tensor {
                    name: name.into(),
                    buf,
                    len: c,
                    decay: false,
                });
            }
        }
        out
    }

    /// Zero-filled buffers of the same shapes.
    fn zeros_like(
        &self,
        gpu: &Gpu,
        what: &str,
        cfg: &Gpt2Config,
        part: &StagePart,
        chunks: &[(usize, usize)],
    ) -> StageBuffers {
        let z = |name: &str, len: usize| zeros(gpu, &format!("{what} {name}"), len);
        let c = cfg.n_embd;
        StageBuffers {
            wte_t: chunks
                .iter()
                .map(|&(v0, len)| z(&format!("wte[{v0}..]"), c * len))
                .collect(),
            wpe: self.wpe.as_ref().map(|_| z("wpe", cfg.n_positions * c)),
            layers: part
                .layers
                .clone()
                .map(|l| {
                    Layer::try_from_fn(cfg, |name, shape| {
                        Ok::<_, std::convert::Infallible>(z(
                            &format!("h.{l}.{name}"),
                            shape.iter().product(),
                        ))
                    })
                    .unwrap_or_else(|never| match never {})
                })
                .collect(),
            ln_f: self
                .ln_f
                .as_ref()
                .map(|_| (z("ln_f.weight", c), z("ln_f.bias", c))),
        }
    }
}

/// A stage's tensors read back to the host, in checkpoint layout.
#[derive(Clone, Debug, Default)]
pub struct HostStage {
    /// (V, C), untransposed: on the embedding and head stages.
    pub wte: Option<Vec<f32>>,
    pub wpe: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
    pub ln_f: Option<(Vec<f32>, Vec<f32>)>,
}

/// One stage of GPT-2 on a device, for training on microbatches of `b` x `t`.
pub struct TrainStage {
    pub part: StagePart,
    pub b: usize,
    pub t: usize,
    pub cfg: Gpt2Config,
    chunks: Vec<(usize, usize)>,
    pub params: StageBuffers,
    pub grads: StageBuffers,
    optimizer: Option<OptimizerState>,
    /// (N) token ids, with the embedding.
    ids: Option<wgpu::Buffer>,
    /// (N) next-token targets, with the head.
    targets: Option<wgpu::Buffer>,
    /// (N, Vp) logits scratch and a zero bias, with the head.
    logits: Option<wgpu::Buffer>,
    no_bias: Option<wgpu::Buffer>,
    /// (N, C) forward scratch: c_proj outputs.
    proj: wgpu::Buffer,
    /// (N, C) the stage's output when it is not stashed (no head).
    out: wgpu::Buffer,
    /// (N, C) gradient of the stage output, as received.
    dy: wgpu::Buffer,
    /// (N, C) gradient of the stage input, as sent (stages without the embedding).
    gin: wgpu::Buffer,
    /// Backward scratch.
    gx: [wgpu::Buffer; 2], // (N, C) gradients of block outputs, ping-pong
    dres2: wgpu::Buffer,     // (N, C)
    dfcg: wgpu::Buffer,      // (N, F)
    dln: wgpu::Buffer,       // (N, C)
    datty: wgpu::Buffer,     // (N, C)
    dlnf: wgpu::Buffer,      // (N, C)
    ln_stats: wgpu::Buffer,  // (N, 2)
    att_stats: wgpu::Buffer, // (B, NH, T, 2)
}

fn bytes(len: usize) -> u64 {
    (len * 4) as u64
}

impl TrainStage {
    /// Upload a stage's weights and allocate its gradients and scratch.
    pub fn new(gpu: &Gpu, w: &StageWeights, b: usize, t: usize) -> Result<TrainStage> {
        let (cfg, part) = (w.config.clone(), w.part.clone());
        let (c, f) = (cfg.n_embd, cfg.n_inner);
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
        gpu.check_binding("activations (N, F)", bytes(n * f.max(3 * c)))?;
        let missing = |what: &str| {
            Error::Input(format!(
                "stage {part:?} was given no {what}: build its weights with Gpt2Weights::stage"
            ))
        };
        let mut chunks = Vec::new();
        let mut wte_t = Vec::new();
        if part.embedding || part.head {
            chunks = vocab_chunks(gpu, &cfg, 0..cfg.padded_vocab())?;
            wte_t = upload_token_table(gpu, &cfg, w.wte.ok_or_else(|| missing("wte"))?, &chunks);
        }
        let wpe = if part.embedding {
            let wpe = w.wpe.ok_or_else(|| missing("wpe"))?;
            gpu.check_binding("wpe", bytes(wpe.len()))?;
            Some(upload(gpu, "wpe", wpe))
        } else {
            None
        };
        let layers = part
            .layers
            .clone()
            .zip(w.layers)
            .map(|(l, lw)| {
                lw.try_map(&cfg, |name, t, shape| {
                    gpu.check_binding(&format!("h.{l}.{name} {shape:?}"), bytes(t.len()))?;
                    Ok::<_, Error>(upload(gpu, &format!("h.{l}.{name}"), t))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = if part.head {
            let (g, bb) = w.ln_f.ok_or_else(|| missing("ln_f"))?;
            Some((upload(gpu, "ln_f.weight", g), upload(gpu, "ln_f.bias", bb)))
        } else {
            None
        };
        let params = StageBuffers {
            wte_t,
            wpe,
            layers,
            ln_f,
        };
        let grads = params.zeros_like(gpu, "grad", &cfg, &part, &chunks);
        let vp = cfg.padded_vocab();
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
        let nc = |name: &str| zeros(gpu, name, n * c);
        Ok(TrainStage {
            b,
            t,
            chunks,
            params,
            grads,
            optimizer: None,
            ids,
            targets,
            logits,
            no_bias,
            proj: nc("proj (N,C)"),
            out: nc("out (N,C)"),
            dy: nc("dy (N,C)"),
            gin: nc("dx in (N,C)"),
            gx: [nc("gx0 (N,C)"), nc("gx1 (N,C)")],
            dres2: nc("dres2 (N,C)"),
            dfcg: zeros(gpu, "dfcg (N,F)", n * f),
            dln: nc("dln (N,C)"),
            datty: nc("datty (N,C)"),
            dlnf: nc("dlnf (N,C)"),
            ln_stats: zeros(gpu, "ln stats (N,2)", 2 * n),
            att_stats: zeros(gpu, "attention stats (B,NH,T,2)", 2 * b * cfg.n_head * t),
            part,
            cfg,
        })
    }

    /// Rows of a microbatch (B*T).
    pub fn rows(&self) -> usize {
        self.b * self.t
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

    /// The residual streams F stashes: the input of every block, and ln_f's
    /// input on the head stage (with no blocks and no head: the stage input,
    /// which is then also its output).
    fn xs(&self) -> std::ops::Range<usize> {
        let l = self.layers();
        if self.part.head {
            0..l + 1
        } else {
            0..l.max(1)
        }
    }

    /// f32 elements of a stashed tensor.
    pub fn stash_len(&self, s: Stashed) -> usize {
        let (n, c, f) = (self.rows(), self.cfg.n_embd, self.cfg.n_inner);
        match s {
            Stashed::X(_)
            | Stashed::Ln1(_)
            | Stashed::Atty(_)
            | Stashed::Res2(_)
            | Stashed::Ln2(_)
            | Stashed::Lnf
            | Stashed::DAttProj(_)
            | Stashed::DFcProj(_)
            | Stashed::DEmb => n * c,
            Stashed::Qkv(_) | Stashed::DQkv(_) => n * 3 * c,
            Stashed::Fch(_) | Stashed::Fcg(_) | Stashed::DFch(_) => n * f,
            Stashed::DLogits => n * self.cfg.padded_vocab(),
        }
    }

    /// What F makes that I reads (released at I or B).
    fn input_set(&self) -> Vec<Stashed> {
        let mut v: Vec<Stashed> = self.xs().map(Stashed::X).collect();
        for l in 0..self.layers() {
            v.extend([Stashed::Qkv(l), Stashed::Res2(l), Stashed::Fch(l)]);
        }
        v
    }

    /// What F makes that W reads (released at W or B).
    fn weight_set(&self) -> Vec<Stashed> {
        let mut v = Vec::new();
        for l in 0..self.layers() {
            v.extend([
                Stashed::Ln1(l),
                Stashed::Atty(l),
                Stashed::Ln2(l),
                Stashed::Fcg(l),
            ]);
        }
        if self.part.head {
            v.extend([Stashed::Lnf, Stashed::DLogits]);
        }
        v
    }

    /// What I makes for W.
    fn grad_set(&self) -> Vec<Stashed> {
        let mut v = Vec::new();
        for l in 0..self.layers() {
            v.extend([
                Stashed::DQkv(l),
                Stashed::DAttProj(l),
                Stashed::DFch(l),
                Stashed::DFcProj(l),
            ]);
        }
        if self.part.embedding {
            v.push(Stashed::DEmb);
        }
        v
    }

    /// The tensors action `kind` needs new buffers for, before it runs. With
    /// `recompute`, F keeps only the stage input and B makes the rest again.
    pub fn acquires(&self, kind: crate::action::Kind, recompute: bool) -> Vec<Stashed> {
        use crate::action::Kind;
        let forward = [self.input_set(), self.weight_set()].concat();
        match (kind, recompute) {
            (Kind::F, _) => forward,
            (Kind::B, true) => [
                forward
                    .into_iter()
                    .filter(|s| *s != Stashed::X(0))
                    .collect(),
                self.grad_set(),
            ]
            .concat(),
            (Kind::B | Kind::I, false) => self.grad_set(),
            (Kind::I | Kind::W, true) | (Kind::W, false) => Vec::new(),
        }
    }

    /// The tensors whose buffers action `kind` is done with when it ends.
    pub fn releases(&self, kind: crate::action::Kind, recompute: bool) -> Vec<Stashed> {
        use crate::action::Kind;
        let all = [self.input_set(), self.weight_set(), self.grad_set()].concat();
        match (kind, recompute) {
            (Kind::F, true) => [self.input_set(), self.weight_set()]
                .concat()
                .into_iter()
                .filter(|s| *s != Stashed::X(0))
                .collect(),
            (Kind::F, false) => Vec::new(),
            (Kind::B, _) => all,
            (Kind::I, _) => self.input_set(),
            (Kind::W, _) => [self.weight_set(), self.grad_set()].concat(),
        }
    }

    /// Where the stage's output lies after F: its last stashed residual
    /// stream on the head stage, else the shared output buffer.
    fn top<'a>(&'a self, s: &'a HashMap<Stashed, wgpu::Buffer>) -> Result<&'a wgpu::Buffer> {
        let l = self.layers();
        if self.part.head || l == 0 {
            get(s, Stashed::X(if self.part.head { l } else { 0 }))
        } else {
            Ok(&self.out)
        }
    }

    /// F's output message buffer (the stage output), given F's tensors.
    pub fn output_of_forward<'a>(
        &'a self,
        s: &'a HashMap<Stashed, wgpu::Buffer>,
    ) -> Result<&'a wgpu::Buffer> {
        self.top(s)
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

    /// F: the forward over one microbatch, writing the tensors of `s`; on the
    /// head stage also, from `loss` = (losses, scale), each row's
    /// cross-entropy into `losses` (N) and `dlogits` = scale * d(Σ losses),
    /// with `scale` = 1 / (predictions in the whole batch).
    pub fn forward_ops(
        &self,
        gpu: &Gpu,
        s: &HashMap<Stashed, wgpu::Buffer>,
        loss: Option<(&wgpu::Buffer, f32)>,
    ) -> Result<Vec<Op>> {
        let cfg = &self.cfg;
        let (b, t, n) = (self.b, self.t, self.rows());
        let (c, f, nh, eps) = (cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.layer_norm_epsilon);
        let p = &self.params;
        let mut ops = Vec::new();
        let mut run = |d: Dispatch| ops.push(Op::Run(d));
        if self.part.embedding {
            let (ids, wpe) = (
                self.ids.as_ref().expect("embedding ids"),
                p.wpe.as_ref().expect("wpe"),
            );
            let x0 = get(s, Stashed::X(0))?;
            for (&(v0, len), tb) in self.chunks.iter().zip(&p.wte_t) {
                run(k::embedding_forward(
                    gpu, x0, ids, tb, wpe, n, t, c, v0, len, 0,
                ));
            }
        }
        let top = self.top(s)?;
        let l_count = self.layers();
        for (l, w) in p.layers.iter().enumerate() {
            let x = get(s, Stashed::X(l))?;
            let out = if l + 1 < l_count {
                get(s, Stashed::X(l + 1))?
            } else {
                top
            };
            let (ln1, qkv, atty) = (
                get(s, Stashed::Ln1(l))?,
                get(s, Stashed::Qkv(l))?,
                get(s, Stashed::Atty(l))?,
            );
            let (res2, ln2) = (get(s, Stashed::Res2(l))?, get(s, Stashed::Ln2(l))?);
            let (fch, fcg) = (get(s, Stashed::Fch(l))?, get(s, Stashed::Fcg(l))?);
            let proj = &self.proj;
            run(k::layernorm_forward(
                gpu, ln1, x, &w.ln_1_g, &w.ln_1_b, n, c, eps,
            ));
            run(k::matmul_forward(
                gpu,
                qkv,
                ln1,
                &w.c_attn_w,
                &w.c_attn_b,
                n,
                c,
                3 * c,
            ));
            run(k::attention_forward(gpu, atty, qkv, b, t, c, nh));
            run(k::matmul_forward(
                gpu,
                proj,
                atty,
                &w.attn_proj_w,
                &w.attn_proj_b,
                n,
                c,
                c,
            ));
            run(k::residual_forward(gpu, res2, x, proj, n * c));
            run(k::layernorm_forward(
                gpu, ln2, res2, &w.ln_2_g, &w.ln_2_b, n, c, eps,
            ));
            run(k::matmul_forward(
                gpu, fch, ln2, &w.c_fc_w, &w.c_fc_b, n, c, f,
            ));
            run(k::gelu_forward(gpu, fcg, fch, n * f));
            run(k::matmul_forward(
                gpu,
                proj,
                fcg,
                &w.mlp_proj_w,
                &w.mlp_proj_b,
                n,
                f,
                c,
            ));
            run(k::residual_forward(gpu, out, res2, proj, n * c));
        }
        if self.part.head {
            let vp = cfg.padded_vocab();
            let (g, bb) = p.ln_f.as_ref().expect("ln_f");
            let (lnf, dlogits) = (get(s, Stashed::Lnf)?, get(s, Stashed::DLogits)?);
            let logits = self.logits.as_ref().expect("logits");
            let no_bias = self.no_bias.as_ref().expect("no bias");
            run(k::layernorm_forward(gpu, lnf, top, g, bb, n, c, eps));
            for (&(v0, len), tb) in self.chunks.iter().zip(&p.wte_t) {
                run(k::matmul_forward_strided(
                    gpu, logits, lnf, tb, no_bias, n, c, len, vp, v0,
                ));
            }
            let (losses, scale) = loss.ok_or_else(|| {
                Error::Other("bug: the head stage's forward needs a loss buffer".into())
            })?;
            ops.push(Op::Clear(dlogits.clone()));
            let targets = self.targets.as_ref().expect("targets");
            ops.push(Op::Run(k::crossentropy_softmax_backward(
                gpu,
                dlogits,
                losses,
                logits,
                targets,
                scale,
                n,
                cfg.vocab_size,
                vp,
            )));
        }
        Ok(ops)
    }

    /// B, I or W over one microbatch whose tensors are `s`. With
    /// `recompute` (B only), the forward runs again first from the stashed
    /// stage input (`loss` as for [`TrainStage::forward_ops`]).
    pub fn backward_ops(
        &self,
        gpu: &Gpu,
        s: &HashMap<Stashed, wgpu::Buffer>,
        phase: Phase,
        recompute: bool,
        loss: Option<(&wgpu::Buffer, f32)>,
    ) -> Result<Vec<Op>> {
        let mut ops = if recompute {
            self.forward_ops(gpu, s, loss)?
        } else {
            Vec::new()
        };
        if phase != Phase::Weight {
            ops.extend(self.input_grad_ops(gpu, s)?);
        }
        if phase != Phase::Input {
            ops.extend(self.weight_grad_ops(gpu, s)?);
        }
        Ok(ops)
    }

    /// I: from the gradient of the stage output (received in `dy`, or from
    /// the loss on the head stage) down to the gradient of the stage input.
    fn input_grad_ops(&self, gpu: &Gpu, s: &HashMap<Stashed, wgpu::Buffer>) -> Result<Vec<Op>> {
        let cfg = &self.cfg;
        let (b, t, n) = (self.b, self.t, self.rows());
        let (c, f, nh, eps) = (cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.layer_norm_epsilon);
        let (p, g) = (&self.params, &self.grads);
        let mut ops = Vec::new();
        let clear = |ops: &mut Vec<Op>, b: &wgpu::Buffer| ops.push(Op::Clear(b.clone()));
        let l_count = self.layers();
        // The gradient of the stage's top residual stream.
        let mut dout: &wgpu::Buffer = &self.dy;
        if self.part.head {
            let vp = cfg.padded_vocab();
            let dlogits = get(s, Stashed::DLogits)?;
            clear(&mut ops, &self.dlnf);
            for (&(v0, len), tb) in self.chunks.iter().zip(&p.wte_t) {
                ops.push(Op::Run(k::matmul_backward_input(
                    gpu, &self.dlnf, dlogits, tb, n, c, len, vp, v0,
                )));
            }
            let (gamma, _) = p.ln_f.as_ref().expect("ln_f");
            let (dg, db) = g.ln_f.as_ref().expect("ln_f grads");
            clear(&mut ops, &self.gx[0]);
            let x = get(s, Stashed::X(l_count))?;
            for d in k::layernorm_backward(
                gpu,
                &self.gx[0],
                dg,
                db,
                &self.ln_stats,
                &self.dlnf,
                x,
                gamma,
                n,
                c,
                eps,
            ) {
                ops.push(Op::Run(d));
            }
            dout = &self.gx[0];
        }
        let bottom: &wgpu::Buffer = if self.part.embedding {
            get(s, Stashed::DEmb)?
        } else {
            &self.gin
        };
        if l_count == 0 {
            if !std::ptr::eq(dout, bottom) {
                ops.push(Op::Copy(dout.clone(), bottom.clone(), self.message_bytes()));
            }
            return Ok(ops);
        }
        for l in (0..l_count).rev() {
            let (w, gl) = (&p.layers[l], &g.layers[l]);
            let dinp: &wgpu::Buffer = if l == 0 {
                bottom
            } else if std::ptr::eq(dout, &self.gx[0]) {
                &self.gx[1]
            } else {
                &self.gx[0]
            };
            let (dqkv, dattproj) = (get(s, Stashed::DQkv(l))?, get(s, Stashed::DAttProj(l))?);
            let (dfch, dfcproj) = (get(s, Stashed::DFch(l))?, get(s, Stashed::DFcProj(l))?);
            // out = res2 + fcproj
            clear(&mut ops, &self.dres2);
            clear(&mut ops, dfcproj);
            ops.push(Op::Run(k::residual_backward(
                gpu,
                &self.dres2,
                dfcproj,
                dout,
                n * c,
            )));
            // fcproj = fcg @ mlp_proj_w + b
            clear(&mut ops, &self.dfcg);
            ops.push(Op::Run(k::matmul_backward_input(
                gpu,
                &self.dfcg,
                dfcproj,
                &w.mlp_proj_w,
                n,
                f,
                c,
                c,
                0,
            )));
            // fcg = gelu(fch)
            clear(&mut ops, dfch);
            ops.push(Op::Run(k::gelu_backward(
                gpu,
                dfch,
                &self.dfcg,
                get(s, Stashed::Fch(l))?,
                n * f,
            )));
            // fch = ln2 @ c_fc_w + b
            clear(&mut ops, &self.dln);
            ops.push(Op::Run(k::matmul_backward_input(
                gpu, &self.dln, dfch, &w.c_fc_w, n, c, f, f, 0,
            )));
            // ln2 = layernorm(res2), adding to the residual's gradient
            let res2 = get(s, Stashed::Res2(l))?;
            for d in k::layernorm_backward(
                gpu,
                &self.dres2,
                &gl.ln_2_g,
                &gl.ln_2_b,
                &self.ln_stats,
                &self.dln,
                res2,
                &w.ln_2_g,
                n,
                c,
                eps,
            ) {
                ops.push(Op::Run(d));
            }
            // res2 = x + attproj
            clear(&mut ops, dinp);
            clear(&mut ops, dattproj);
            ops.push(Op::Run(k::residual_backward(
                gpu,
                dinp,
                dattproj,
                &self.dres2,
                n * c,
            )));
            // attproj = atty @ attn_proj_w + b
            clear(&mut ops, &self.datty);
            ops.push(Op::Run(k::matmul_backward_input(
                gpu,
                &self.datty,
                dattproj,
                &w.attn_proj_w,
                n,
                c,
                c,
                c,
                0,
            )));
            // atty = attention(qkv)
            clear(&mut ops, dqkv);
            for d in k::attention_backward(
                gpu,
                dqkv,
                &self.att_stats,
                &self.datty,
                get(s, Stashed::Qkv(l))?,
                b,
                t,
                c,
                nh,
            ) {
                ops.push(Op::Run(d));
            }
            // qkv = ln1 @ c_attn_w + b
            clear(&mut ops, &self.dln);
            ops.push(Op::Run(k::matmul_backward_input(
                gpu,
                &self.dln,
                dqkv,
                &w.c_attn_w,
                n,
                c,
                3 * c,
                3 * c,
                0,
            )));
            // ln1 = layernorm(x), adding to the residual's gradient
            let x = get(s, Stashed::X(l))?;
            for d in k::layernorm_backward(
                gpu,
                dinp,
                &gl.ln_1_g,
                &gl.ln_1_b,
                &self.ln_stats,
                &self.dln,
                x,
                &w.ln_1_g,
                n,
                c,
                eps,
            ) {
                ops.push(Op::Run(d));
            }
            dout = dinp;
        }
        Ok(ops)
    }

    /// W: every weight gradient from the stashed matmul inputs and the
    /// output gradients I stashed; the embedding's from its output gradient.
    fn weight_grad_ops(&self, gpu: &Gpu, s: &HashMap<Stashed, wgpu::Buffer>) -> Result<Vec<Op>> {
        let cfg = &self.cfg;
        let (t, n) = (self.t, self.rows());
        let (c, f) = (cfg.n_embd, cfg.n_inner);
        let g = &self.grads;
        let mut ops = Vec::new();
        let mut run = |d: Dispatch| ops.push(Op::Run(d));
        if self.part.head {
            let vp = cfg.padded_vocab();
            let (dlogits, lnf) = (get(s, Stashed::DLogits)?, get(s, Stashed::Lnf)?);
            for (&(v0, len), gb) in self.chunks.iter().zip(&g.wte_t) {
                run(k::matmul_backward_weight(
                    gpu, gb, dlogits, lnf, n, c, len, vp, v0,
                ));
            }
        }
        for l in (0..self.layers()).rev() {
            let gl = &g.layers[l];
            let dfcproj = get(s, Stashed::DFcProj(l))?;
            run(k::matmul_backward_weight(
                gpu,
                &gl.mlp_proj_w,
                dfcproj,
                get(s, Stashed::Fcg(l))?,
                n,
                f,
                c,
                c,
                0,
            ));
            run(k::matmul_backward_bias(
                gpu,
                &gl.mlp_proj_b,
                dfcproj,
                n,
                c,
                c,
                0,
            ));
            let dfch = get(s, Stashed::DFch(l))?;
            run(k::matmul_backward_weight(
                gpu,
                &gl.c_fc_w,
                dfch,
                get(s, Stashed::Ln2(l))?,
                n,
                c,
                f,
                f,
                0,
            ));
            run(k::matmul_backward_bias(gpu, &gl.c_fc_b, dfch, n, f, f, 0));
            let dattproj = get(s, Stashed::DAttProj(l))?;
            run(k::matmul_backward_weight(
                gpu,
                &gl.attn_proj_w,
                dattproj,
                get(s, Stashed::Atty(l))?,
                n,
                c,
                c,
                c,
                0,
            ));
            run(k::matmul_backward_bias(
                gpu,
                &gl.attn_proj_b,
                dattproj,
                n,
                c,
                c,
                0,
            ));
            let dqkv = get(s, Stashed::DQkv(l))?;
            run(k::matmul_backward_weight(
                gpu,
                &gl.c_attn_w,
                dqkv,
                get(s, Stashed::Ln1(l))?,
                n,
                c,
                3 * c,
                3 * c,
                0,
            ));
            run(k::matmul_backward_bias(
                gpu,
                &gl.c_attn_b,
                dqkv,
                n,
                3 * c,
                3 * c,
                0,
            ));
        }
        if self.part.embedding {
            let (ids, dwpe) = (
                self.ids.as_ref().expect("ids"),
                g.wpe.as_ref().expect("wpe grad"),
            );
            let demb = get(s, Stashed::DEmb)?;
            for (i, (&(v0, len), gb)) in self.chunks.iter().zip(&g.wte_t).enumerate() {
                run(k::embedding_backward(
                    gpu,
                    gb,
                    dwpe,
                    demb,
                    ids,
                    n,
                    t,
                    c,
                    v0,
                    len,
                    i == 0,
                ));
            }
        }
        Ok(ops)
    }

    /// Every parameter with its gradient, in one fixed order.
    pub fn param_tensors(&self) -> Vec<(Tensor<'_>, Tensor<'_>)> {
        let p = self.params.tensors(&self.cfg, &self.part, &self.chunks);
        let g = self.grads.tensors(&self.cfg, &self.part, &self.chunks);
        p.into_iter().zip(g).collect()
    }

    /// Parameters (or gradients) read back, in checkpoint layout.
    pub fn read(&self, gpu: &Gpu, which: Which) -> Result<HostStage> {
        let bufs = match which {
            Which::Params => &self.params,
            Which::Grads => &self.grads,
        };
        let cfg = &self.cfg;
        let c = cfg.n_embd;
        let wte = self.token_table(gpu, bufs)?;
        let wpe = match &bufs.wpe {
            Some(b) => Some(download(gpu, b, cfg.n_positions * c)?),
            None => None,
        };
        let layers = bufs
            .layers
            .iter()
            .map(|l| l.try_map(cfg, |_, b, shape| download(gpu, b, shape.iter().product())))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = match &bufs.ln_f {
            Some((g, b)) => Some((download(gpu, g, c)?, download(gpu, b, c)?)),
            None => None,
        };
        Ok(HostStage {
            wte,
            wpe,
            layers,
            ln_f,
        })
    }

    /// The token table's gradient (V, C), if this stage holds the table.
    pub fn wte_grad(&self, gpu: &Gpu) -> Result<Option<Vec<f32>>> {
        self.token_table(gpu, &self.grads)
    }

    /// The token table of `bufs` (parameters or gradients), read back and
    /// untransposed to (V, C); `None` on a stage without it.
    fn token_table(&self, gpu: &Gpu, bufs: &StageBuffers) -> Result<Option<Vec<f32>>> {
        if bufs.wte_t.is_empty() {
            return Ok(None);
        }
        let c = self.cfg.n_embd;
        let data = bufs
            .wte_t
            .iter()
            .zip(&self.chunks)
            .map(|(b, &(_, len))| download(gpu, b, c * len))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(untranspose_token_table(
            &self.cfg,
            &self.chunks,
            &data,
        )))
    }

    /// Replace the token table's gradient with `wte` (V, C): how the tied
    /// embedding's two shares, on two stages, are summed into both.
    pub fn write_wte_grad(&self, gpu: &Gpu, wte: &[f32]) -> Result<()> {
        let cfg = &self.cfg;
        if wte.len() != cfg.vocab_size * cfg.n_embd {
            return Err(Error::Other(format!(
                "bug: wte gradient of {} values for a ({}, {}) table",
                wte.len(),
                cfg.vocab_size,
                cfg.n_embd
            )));
        }
        let chunks = crate::model::gpu::token_table_chunks(cfg, wte, &self.chunks);
        for (b, data) in self.grads.wte_t.iter().zip(chunks) {
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(&data));
        }
        Ok(())
    }
}

/// Parameters or gradients, for [`TrainStage::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Params,
    Grads,
}

fn get(s: &HashMap<Stashed, wgpu::Buffer>, t: Stashed) -> Result<&wgpu::Buffer> {
    s.get(&t).ok_or_else(|| {
        Error::Other(format!(
            "bug: stashed tensor {t:?} has no buffer for this action"
        ))
    })
}
