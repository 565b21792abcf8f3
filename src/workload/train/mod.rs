//! Training: a schedule's F, B, I and W actions run as data on the devices,
//! activations forward and input gradients backward through the same
//! transfer path ([`super::plan`]), weight gradients accumulated on each
//! device over the microbatches, then one optimizer step.
//!
//! [`Gpt2Train`] is the [`StageProgram`]: it holds a device's stages
//! ([`TrainStage`]) and, per action, the work recorded for it. The buffers
//! that hold a microbatch's stashed activations come from a per-device pool:
//! before the clock starts, the device's action list is walked once; each
//! action takes the buffers for the tensors it makes
//! ([`TrainStage::acquires`]) from the pool, free buffers of the same size
//! first, and gives back those it is done with ([`TrainStage::releases`]).
//! So each schedule's order decides how many microbatches a device holds,
//! and the pool's allocated bytes — real buffers — are its peak activation
//! memory ([`Trainer::peak_activation_bytes`]).
//!
//! Under tensor parallelism each schedule device is a group of T Gpus, and
//! each Gpu (an endpoint, device × T + rank) holds its rank's program: its
//! shard of the device's stages ([`crate::model::Shard`]), meeting the
//! group's other ranks at the all-reduces the stage records (F's after the
//! embedding, each row-split projection and in the vocabulary-parallel
//! cross-entropy; I's after each column-parallel linear's input gradient and
//! the head's). Tensors read back are merged from the shards into whole
//! ones under their checkpoint names.
//!
//! [`Trainer`] keeps the programs (weights, gradients, optimizer moments)
//! on their devices across steps: each step runs the schedule's plan, sums
//! the tied token table's two gradient shares (embedding on the first stage,
//! LM head on the last) into both copies, optionally clips by the global
//! gradient norm, and steps the optimizer on every device. What is combined
//! across devices outside the pipeline (the tied table's shares, replicated
//! KV heads' gradients, tensors read back and merged) is in `combine.rs`.

mod combine;
mod program;

use std::sync::Mutex;

use crate::action::{Action, Kind};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::executor::plan::Plan;
use crate::executor::{run_plan, Cluster, DeviceGroup, TransferRecord};
use crate::io::TokenBatch;
use crate::microbatch::Microbatches;
use crate::model::grads::{next_token_targets, Gpt2Grads};
use crate::model::optim::{bias_corrections, AdamWStep, OptimizerKind, OptimizerStep, SgdStep};
use crate::model::partition;
use crate::model::train::Which;
use crate::model::{Gpt2Config, Gpt2Weights, Shard, StagePart, StageSource, StageWeights};

use crate::schedule::{validate::validate, Schedule};
use crate::trace::Timeline;
pub use program::Gpt2Train;

/// How a training run is laid out.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Layers per stage (one count per stage); even when `None`.
    pub split: Option<Vec<usize>>,
    /// Stash only each stage's input and recompute the rest in B.
    pub recompute: bool,
}

/// The optimizer, with PyTorch's semantics and defaults.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Optimizer {
    /// `torch.optim.AdamW`.
    AdamW {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// `torch.optim.SGD` (dampening 0, no Nesterov).
    Sgd {
        lr: f64,
        momentum: f64,
        weight_decay: f64,
    },
}

impl Optimizer {
    /// AdamW or SGD.
    pub fn kind(&self) -> OptimizerKind {
        match self {
            Optimizer::AdamW { .. } => OptimizerKind::AdamW,
            Optimizer::Sgd { .. } => OptimizerKind::Sgd,
        }
    }

    /// The hyperparameters of optimizer step `t` (from 1), gradients scaled by `grad_scale`.
    fn step(&self, t: u64, grad_scale: f64) -> OptimizerStep {
        match *self {
            Optimizer::AdamW {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
            } => {
                let (bc1, bc2) = bias_corrections(beta1, beta2, t);
                OptimizerStep::AdamW(AdamWStep {
                    lr: lr as f32,
                    beta1: beta1 as f32,
                    beta2: beta2 as f32,
                    eps: eps as f32,
                    weight_decay: weight_decay as f32,
                    bias_correction1: bc1,
                    bias_correction2: bc2,
                    grad_scale: grad_scale as f32,
                })
            }
            Optimizer::Sgd {
                lr,
                momentum,
                weight_decay,
            } => OptimizerStep::Sgd(SgdStep {
                lr: lr as f32,
                momentum: momentum as f32,
                weight_decay: weight_decay as f32,
                grad_scale: grad_scale as f32,
            }),
        }
    }
}

/// One step's pipelined forward and backward.
pub struct StepRun {
    /// The batch's mean next-token loss, before this step's update.
    pub loss: f64,
    pub timeline: Timeline,
    pub wall_s: f64,
    pub transfers: Vec<TransferRecord>,
}

/// A model being trained across devices: its stages stay on their devices
/// between steps. Under MPI each rank holds only its own device's program;
/// what is combined across devices outside the pipeline (the tied token
/// table's gradient, the gradient norm, tensors read back) goes through
/// [`Cluster::share`], in device order, so every rank computes the same sums
/// as one process would, bit for bit.
pub struct Trainer<'g> {
    groups: Vec<DeviceGroup<'g>>,
    cluster: Cluster,
    schedule: Schedule,
    plan: Plan,
    pub parts: Vec<StagePart>,
    cfg: Gpt2Config,
    /// Tensor-parallel degree: Gpus per schedule device.
    tp: usize,
    /// By endpoint (device × T + rank): its program and Gpu, when it runs
    /// in this process.
    programs: Vec<Option<Mutex<Gpt2Train>>>,
    gpus: Vec<Option<&'g Gpu>>,
    /// A step failed: the devices' state is no longer a training state.
    broken: bool,
    batch: usize,
    seq: usize,
    /// Optimizer steps taken.
    steps: u64,
    /// Σ g² of the KV-head replicas beyond each head's first (T above the
    /// KV heads): what the global norm takes out so each head counts once.
    kv_replicas_sumsq: f64,
}

impl<'g> Trainer<'g> {
    /// Check the schedule and layout, and put each device's stages on it
    /// (under MPI, this rank's device's only).
    pub fn new(
        groups: &[DeviceGroup<'g>],
        cluster: &Cluster,
        w: &dyn StageSource,
        schedule: &Schedule,
        batch: usize,
        seq: usize,
        opts: &TrainOptions,
    ) -> Result<Trainer<'g>> {
        if schedule.is_forward_only() {
            return Err(Error::Input(format!(
                "schedule `{}` has no backward actions: training needs B (or I and W) after each F",
                schedule.name
            )));
        }
        validate(schedule)?;
        let has_split_backward = schedule
            .actions()
            .any(|(_, _, a)| matches!(a.kind, Kind::I | Kind::W));
        if opts.recompute && has_split_backward {
            return Err(Error::Input(format!(
                "--recompute with schedule `{}`: recomputation runs in a fused B; a schedule that splits the backward into I and W would need the activations again for W. Use gpipe, 1f1b or interleaved",
                schedule.name
            )));
        }
        crate::executor::check_devices(schedule, groups)?;
        let tp = crate::executor::uniform_tp(groups)?;
        if tp > 1 {
            crate::model::shard::check_degree(w.config(), tp)?;
        }
        if seq < 2 {
            return Err(Error::Input(format!(
                "sequence length {seq}: training needs at least 2 tokens per sequence (position t predicts token t+1)"
            )));
        }
        let m = schedule.microbatches;
        if m == 0 || m > batch {
            return Err(Error::Input(format!(
                "{m} microbatches for a batch of {batch} sequences: each microbatch needs at least one sequence"
            )));
        }
        let per = batch.div_ceil(m);
        let parts =
            partition::partition(w.config().n_layer, schedule.stages(), opts.split.as_deref())?;
        let plan = Plan::new(schedule);
        let scale = 1.0 / (batch * (seq - 1)) as f32;
        // Every endpoint with its Gpu where it runs in this process.
        let mut gpus: Vec<Option<&'g Gpu>> = vec![None; groups.len() * tp];
        for (d, g) in groups.iter().enumerate() {
            for (rank, gpu) in g.ranks() {
                if cluster.runs_endpoint(d * tp + rank) {
                    gpus[d * tp + rank] = Some(gpu);
                }
            }
        }
        let programs = std::thread::scope(|scope| {
            let handles: Vec<_> = gpus
                .iter()
                .enumerate()
                .map(|(e, gpu)| {
                    let gpu = (*gpu)?;
                    let (d, shard) = (
                        e / tp,
                        Shard {
                            rank: e % tp,
                            of: tp,
                        },
                    );
                    let (parts, plan) = (&parts, &plan);
                    Some(scope.spawn(move || {
                        let held = (d..schedule.stages())
                            .step_by(schedule.devices)
                            .map(|s| Ok((s, w.try_stage(&parts[s])?)))
                            .collect::<Result<Vec<(usize, StageWeights)>>>()?;
                        let actions: Vec<Action> =
                            plan.devices[d].iter().map(|s| s.action).collect();
                        Gpt2Train::new(
                            gpu,
                            &held,
                            &actions,
                            per,
                            seq,
                            m,
                            scale,
                            opts.recompute,
                            shard,
                        )
                    }))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.map(|h| {
                        h.join()
                            .unwrap_or_else(|_| {
                                Err(Error::Other("a device's setup panicked".into()))
                            })
                            .map(Mutex::new)
                    })
                    .transpose()
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(Trainer {
            groups: groups.to_vec(),
            cluster: cluster.clone(),
            schedule: schedule.clone(),
            plan,
            parts,
            cfg: w.config().clone(),
            tp,
            programs,
            gpus,
            broken: false,
            batch,
            seq,
            steps: 0,
            kv_replicas_sumsq: 0.0,
        })
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// `f` on each of this process's endpoints (Gpus), in endpoint order.
    fn with_programs<T>(
        &self,
        mut f: impl FnMut(&Gpu, &mut Gpt2Train) -> Result<T>,
    ) -> Result<Vec<T>> {
        if self.broken {
            return Err(Error::Other(
                "a previous step failed; this trainer's devices are gone".into(),
            ));
        }
        self.programs
            .iter()
            .zip(&self.gpus)
            .filter_map(|(p, g)| Some((p.as_ref()?, (*g)?)))
            .map(|(p, g)| f(g, &mut p.lock().unwrap_or_else(|e| e.into_inner())))
            .collect()
    }

    /// `f` on each of this process's endpoints, in endpoint order, with the
    /// program to change.
    fn with_programs_mut<T>(
        &mut self,
        mut f: impl FnMut(&Gpu, &mut Gpt2Train) -> Result<T>,
    ) -> Result<Vec<T>> {
        if self.broken {
            return Err(Error::Other(
                "a previous step failed; this trainer's devices are gone".into(),
            ));
        }
        self.programs
            .iter_mut()
            .zip(&self.gpus)
            .filter_map(|(p, g)| Some((p.as_mut()?, (*g)?)))
            .map(|(p, g)| f(g, p.get_mut().unwrap_or_else(|e| e.into_inner())))
            .collect()
    }

    /// Tensor-parallel degree (Gpus per schedule device).
    pub fn tp(&self) -> usize {
        self.tp
    }

    /// The most stashed-activation bytes each device held (its stash pool;
    /// under tensor parallelism the largest of its Gpus').
    pub fn peak_activation_bytes(&self) -> Result<Vec<u64>> {
        let mine = self.with_programs(|_, p| Ok(p.peak_activation_bytes()))?;
        let all = self.cluster.share(mine)?.concat();
        Ok(all
            .chunks(self.tp)
            .map(|g| g.iter().copied().max().unwrap_or(0))
            .collect())
    }

    /// Forward and backward over `tokens` (B x T as given to [`Trainer::new`]),
    /// run as the schedule says; gradients accumulate on the devices.
    pub fn forward_backward(&mut self, tokens: &TokenBatch) -> Result<StepRun> {
        if tokens.batch != self.batch || tokens.seq != self.seq {
            return Err(Error::Input(format!(
                "a batch of {}x{} tokens for a trainer built for {}x{}",
                tokens.batch, tokens.seq, self.batch, self.seq
            )));
        }
        crate::io::check_input(&self.cfg, tokens)?;
        let mbs = Microbatches::split(tokens, self.schedule.microbatches)?;
        let batch: Vec<(Vec<u32>, Vec<u32>)> = mbs
            .list
            .iter()
            .map(|mb| {
                (
                    mb.ids.clone(),
                    next_token_targets(&mb.ids, mbs.per, mbs.seq, mb.count),
                )
            })
            .collect();
        self.with_programs(|_, p| {
            p.set_batch(batch.clone());
            Ok(())
        })?;
        // Each endpoint's thread borrows its program for the step.
        let lent: Vec<Mutex<Option<&mut Gpt2Train>>> = self
            .programs
            .iter_mut()
            .map(|p| {
                Mutex::new(
                    p.as_mut()
                        .map(|m| m.get_mut().unwrap_or_else(|e| e.into_inner())),
                )
            })
            .collect();
        let net = self.cluster.net_for(&self.groups)?;
        let tp = self.tp;
        let ran = run_plan(&self.groups, &self.plan, &net, |d, shard, _gpu| {
            lent[d * tp + shard.rank]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .ok_or_else(|| {
                    Error::Other(format!(
                        "bug: device {d} rank {}'s program is not here",
                        shard.rank
                    ))
                })
        });
        drop(net);
        let ran = match ran {
            Ok(r) => r,
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        // Every device's loss sums (gathered from every rank), in device
        // order (a tensor-parallel group's from its rank 0).
        let loss = ran.outputs.iter().flatten().sum::<f64>() / (self.batch * (self.seq - 1)) as f64;
        self.sum_tied_embedding()?;
        self.kv_replicas_sumsq = self.sum_replicated_kv()?;
        Ok(StepRun {
            loss,
            timeline: ran.timeline,
            wall_s: ran.wall_s,
            transfers: ran.transfers,
        })
    }

    /// The global L2 norm of the accumulated gradients (the tied table once).
    pub fn grad_norm(&self) -> Result<f64> {
        Ok(self.grad_sumsqs()?.total.sqrt())
    }

    /// Σ g² of every gradient tensor on every stage (the tied table once, on
    /// the embedding's stage), gathered from every rank in device order.
    fn grad_sumsqs(&self) -> Result<GradSums> {
        let mine: Vec<(u32, String, f64)> = self
            .with_programs(|gpu, p| {
                let mut out = Vec::new();
                for (&s, st) in &p.stages {
                    for (name, sum) in st.grad_sumsq_by_tensor(gpu, st.part.embedding)? {
                        out.push((s as u32, name, sum));
                    }
                }
                Ok(out)
            })?
            .concat();
        let all: Vec<(u32, String, f64)> = self.cluster.share(mine)?.concat();
        Ok(GradSums {
            total: all.iter().map(|t| t.2).sum::<f64>() - self.kv_replicas_sumsq,
            tensors: all,
        })
    }

    /// Test builds only (`fault-injection`): `WGPIPE_TEST_POISON_GRAD=S:NAME`
    /// writes a NaN into gradient NAME (a checkpoint name) before step S's
    /// update, on whichever device holds it.
    #[cfg(feature = "fault-injection")]
    fn poison_for_test(&self) -> Result<()> {
        let Ok(spec) = std::env::var("WGPIPE_TEST_POISON_GRAD") else {
            return Ok(());
        };
        let Some((step, name)) = spec.split_once(':') else {
            return Ok(());
        };
        if step.parse::<u64>().ok() != Some(self.steps + 1) {
            return Ok(());
        }
        self.with_programs(|gpu, p| {
            for st in p.stages.values() {
                for (_, g) in st.param_tensors().iter().filter(|(_, g)| g.name == name) {
                    gpu.queue
                        .write_buffer(g.buf, 0, bytemuck::bytes_of(&f32::NAN));
                }
            }
            gpu.queue.submit([]);
            gpu.wait()
        })?;
        Ok(())
    }

    /// Optimizer steps taken (the next step is `steps() + 1`).
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One optimizer step on every device, gradients first clipped to a
    /// global norm of `clip` when given (as `torch.nn.utils.clip_grad_norm_`);
    /// then the gradients are zeroed. Returns the gradient norm when clipping.
    ///
    /// Every gradient is checked first (its sum of squares, the pass that
    /// clipping needs anyway): a NaN or infinity in any of them stops the
    /// step before any update, naming the step, the stage and the tensor.
    pub fn optimizer_step(&mut self, opt: &Optimizer, clip: Option<f64>) -> Result<Option<f64>> {
        #[cfg(feature = "fault-injection")]
        self.poison_for_test()?;
        let sums = self.grad_sumsqs()?;
        if let Some((stage, name, sum)) = sums.tensors.iter().find(|t| !t.2.is_finite()) {
            let what = match sum.is_nan() {
                true => "a NaN",
                false => "an infinity (or values too large to square in f32)",
            };
            let name = name.split('[').next().unwrap_or(name);
            return Err(Error::NonFinite(format!(
                "step {}: the gradient of {name} on stage {stage} holds {what}; the step was not applied",
                self.steps + 1
            )));
        }
        let (norm, scale) = match clip {
            Some(max) => {
                let norm = sums.total.sqrt();
                (Some(norm), (max / (norm + 1e-6)).min(1.0))
            }
            None => (None, 1.0),
        };
        self.steps += 1;
        let step = opt.step(self.steps, scale);
        self.with_programs(|gpu, p| {
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            for s in p.stages.values_mut() {
                s.encode_optimizer_step(gpu, &step, &mut enc)?;
            }
            gpu.queue.submit([enc.finish()]);
            gpu.wait()
        })?;
        Ok(norm)
    }

    /// The optimizer's moments (AdamW's m and v, or SGD's momentum buffer),
    /// each in checkpoint layout, read back from the devices. Under MPI every
    /// rank gets them all. Before the first step there are none: an error.
    pub fn moments(&self, kind: OptimizerKind) -> Result<Vec<Gpt2Grads>> {
        (0..moment_count(kind))
            .map(|i| self.gather(Which::Moment(i)))
            .collect()
    }

    /// Continue a saved run: `steps` optimizer steps already taken (the bias
    /// corrections go on from there) and the optimizer's moments `moments`
    /// (as [`Trainer::moments`] read them, from whichever layout), each
    /// device taking its own stages' tensors.
    pub fn restore(
        &mut self,
        steps: u64,
        kind: OptimizerKind,
        moments: &[Gpt2Grads],
    ) -> Result<()> {
        if moments.len() != moment_count(kind) {
            return Err(Error::Input(format!(
                "{} optimizer moments for {kind:?}, which keeps {}",
                moments.len(),
                moment_count(kind)
            )));
        }
        let sets: Vec<&Gpt2Grads> = moments.iter().collect();
        self.with_programs_mut(|gpu, p| {
            for s in p.stages.values_mut() {
                s.write_moments(gpu, kind, &sets)?;
            }
            gpu.queue.submit([]);
            gpu.wait()
        })?;
        self.steps = steps;
        Ok(())
    }

    /// The accumulated gradients, in checkpoint layout (`wte` holding both
    /// tied shares). Under MPI every rank gets them all.
    pub fn grads(&self) -> Result<Gpt2Grads> {
        self.gather(Which::Grads)
    }

    /// The current weights, read back from the devices. Under MPI every
    /// rank gets them all.
    pub fn weights(&self) -> Result<Gpt2Weights> {
        let g = self.gather(Which::Params)?;
        Ok(Gpt2Weights {
            config: self.cfg.clone(),
            wte: g.wte,
            wpe: g.wpe,
            layers: g.layers,
            ln_f_g: g.ln_f_g,
            ln_f_b: g.ln_f_b,
            lm_head: g.lm_head,
        })
    }
}

/// Σ g² per gradient tensor: (stage, checkpoint name, sum), and their total.
struct GradSums {
    tensors: Vec<(u32, String, f64)>,
    total: f64,
}

/// How many moment tensors per parameter `kind` keeps.
fn moment_count(kind: OptimizerKind) -> usize {
    match kind {
        OptimizerKind::AdamW => 2,
        OptimizerKind::Sgd => 1,
    }
}
