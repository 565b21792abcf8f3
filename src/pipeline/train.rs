//! [`Pipeline::trainer`]: training on the pipeline's devices with its
//! schedule — every F, B, I and W executed, gradients accumulated on the
//! devices, the optimizer stepped there — held across steps by a
//! [`Trainer`], which can read its gradients and weights back and save a
//! checkpoint transformers loads.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::Pipeline;
use crate::analysis::measure::{measure_timeline, Measurement};
use crate::error::{Error, Result};
use crate::executor::{DeviceGroup, TransferRecord};
use crate::io::TokenBatch;
use crate::model::checkpoint::save_checkpoint;
use crate::model::grads::Gpt2Grads;
use crate::model::Gpt2Weights;
use crate::schedule::Schedule;
use crate::trace::Timeline;
use crate::workload::train::{self as workload, Optimizer, TrainOptions};

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub optimizer: Optimizer,
    /// Clip gradients to this global L2 norm before each step.
    pub grad_clip: Option<f64>,
    /// Stash only each stage's input and recompute its activations in B.
    pub recompute: bool,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
}

/// One forward and backward over a batch, before the optimizer step.
#[derive(Clone, Debug, Serialize)]
pub struct Pass {
    /// The batch's mean next-token loss, before this step's update.
    pub loss: f64,
    /// The pipeline of this pass, measured.
    pub pipeline: Measurement,
    #[serde(skip)]
    pub timeline: Timeline,
    #[serde(skip)]
    pub transfers: Vec<TransferRecord>,
}

/// One training step: the pass, and the optimizer step after it.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    #[serde(flatten)]
    pub pass: Pass,
    /// The global gradient norm before clipping (with `grad_clip`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    /// Host ms of the whole step: pipeline, tied-embedding sum, clipping,
    /// optimizer.
    pub step_ms: f64,
}

/// A model being trained on a pipeline's devices; see [`Pipeline::trainer`].
pub struct Trainer<'p> {
    inner: workload::Trainer<'p>,
    pipeline: &'p Pipeline,
    config: TrainConfig,
    /// Host ms of every [`Trainer::train_step`] so far.
    step_ms: Vec<f64>,
}

impl Pipeline {
    /// Put the model on the devices for training with the pipeline's
    /// schedule (its training form: every F, B or I and W), microbatches and
    /// split. The trainer's weights start from the pipeline's.
    pub fn trainer(&self, config: TrainConfig) -> Result<Trainer<'_>> {
        if self.tp != 1 {
            return Err(Error::Input(format!(
                "tensor parallelism (tp {}) is not implemented for training (its backward would all-reduce each split block's input gradient); train with tp 1",
                self.tp
            )));
        }
        let m = self.microbatches_for(config.batch);
        let schedule =
            Schedule::generate(self.schedule, self.devices, m, self.virtual_stages, false)?;
        let groups: Vec<DeviceGroup<'_>> = self.groups()?;
        let opts = TrainOptions {
            split: Some(self.split.split.clone()),
            recompute: config.recompute,
        };
        let inner = workload::Trainer::new(
            &groups,
            &self.cluster,
            self.weights(),
            &schedule,
            config.batch,
            config.seq,
            &opts,
        )?;
        Ok(Trainer {
            inner,
            pipeline: self,
            config,
            step_ms: Vec::new(),
        })
    }
}

impl Trainer<'_> {
    pub fn schedule(&self) -> &Schedule {
        self.inner.schedule()
    }

    /// Sequences per step.
    pub fn batch(&self) -> usize {
        self.config.batch
    }

    /// Tokens per sequence.
    pub fn seq(&self) -> usize {
        self.config.seq
    }

    /// The median host ms of the steps taken so far (NaN before the first).
    pub fn median_step_ms(&self) -> f64 {
        match self.step_ms.is_empty() {
            true => f64::NAN,
            false => crate::timing::median(self.step_ms.clone()),
        }
    }

    /// Forward and backward over `tokens` (`batch` × `seq`), as the schedule
    /// says; the gradients accumulate on the devices until
    /// [`Trainer::optimizer_step`].
    pub fn forward_backward(&mut self, tokens: &TokenBatch) -> Result<Pass> {
        let _busy = self.pipeline.lock();
        let run = self.inner.forward_backward(tokens)?;
        let pipeline = measure_timeline(
            self.inner.schedule(),
            &run.timeline,
            run.wall_s,
            &run.transfers,
            tokens.batch * tokens.seq,
        )?;
        Ok(Pass {
            loss: run.loss,
            pipeline,
            timeline: run.timeline,
            transfers: run.transfers,
        })
    }

    /// One optimizer step on every device (after clipping, when asked),
    /// then the gradients are zeroed. Returns the gradient norm when clipping.
    pub fn optimizer_step(&mut self) -> Result<Option<f64>> {
        let _busy = self.pipeline.lock();
        self.inner
            .optimizer_step(&self.config.optimizer, self.config.grad_clip)
    }

    /// [`Trainer::forward_backward`], then [`Trainer::optimizer_step`]. A
    /// loss that is not finite stops the step before the update, naming it.
    pub fn train_step(&mut self, tokens: &TokenBatch) -> Result<StepReport> {
        self.train_step_with(tokens, |_| Ok(()))
    }

    /// [`Trainer::train_step`], calling `before_update` between the
    /// backward and the optimizer step (to read or save the gradients).
    pub fn train_step_with(
        &mut self,
        tokens: &TokenBatch,
        before_update: impl FnOnce(&Self) -> Result<()>,
    ) -> Result<StepReport> {
        let t0 = Instant::now();
        let pass = self.forward_backward(tokens)?;
        if !pass.loss.is_finite() {
            return Err(Error::Other(format!(
                "the loss is {}; lower the learning rate or clip the gradients",
                pass.loss
            )));
        }
        before_update(self)?;
        let grad_norm = self.optimizer_step()?;
        let step_ms = t0.elapsed().as_secs_f64() * 1e3;
        self.step_ms.push(step_ms);
        Ok(StepReport {
            pass,
            grad_norm,
            step_ms,
        })
    }

    /// Write the accumulated gradients as a safetensors file, under the
    /// checkpoint's tensor names (transformers' `named_parameters`). Under
    /// MPI every rank reads them back and rank 0 writes.
    pub fn save_grads(&self, path: &Path) -> Result<()> {
        let g = self.grads()?;
        match self.pipeline.cluster.is_root() {
            true => g.save(self.pipeline.config(), path),
            false => Ok(()),
        }
    }

    /// The gradients accumulated since the last optimizer step, in checkpoint
    /// layout (`wte` holding both tied shares). Under MPI every rank gets them.
    pub fn grads(&self) -> Result<Gpt2Grads> {
        self.inner.grads()
    }

    /// The current weights, read back from the devices. Under MPI every rank
    /// gets them.
    pub fn weights(&self) -> Result<Gpt2Weights> {
        self.inner.weights()
    }

    /// The most stashed-activation bytes each device held (its stash pool).
    pub fn peak_activation_bytes(&self) -> Result<Vec<u64>> {
        self.inner.peak_activation_bytes()
    }

    /// Write the current weights as a checkpoint directory transformers and
    /// [`Pipeline`] load. `dir` must be missing or empty: the checkpoint is
    /// written beside it and moved into place, so a failure leaves nothing
    /// at `dir`. Under MPI every rank reads the weights back and rank 0
    /// writes.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let w = self.weights()?;
        if !self.pipeline.cluster.is_root() {
            return Ok(());
        }
        check_save_dir(dir)?;
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".wgpipe-save.")
            .tempdir_in(parent)
            .map_err(|e| Error::io(parent, e))?;
        save_checkpoint(&w, tmp.path())?;
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
        }
        let kept = tmp.keep();
        std::fs::rename(&kept, dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            Error::io(dir, e)
        })
    }
}

/// A checkpoint goes only where nothing would be overwritten: a missing or
/// empty directory whose parent exists.
pub fn check_save_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = dir.is_dir()
            && std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .next()
                .is_none();
        if !empty {
            return Err(Error::Input(format!(
                "{}: exists and is not an empty directory; refusing to overwrite it",
                dir.display()
            )));
        }
    }
    let parent = dir.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(p) = parent {
        if !p.is_dir() {
            return Err(Error::Input(format!(
                "{}: directory {} does not exist",
                dir.display(),
                p.display()
            )));
        }
    }
    Ok(())
}
