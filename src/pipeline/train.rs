//! [`Pipeline::trainer`]: training on the pipeline's devices with its
//! schedule — every F, B, I and W executed, gradients accumulated on the
//! devices, the optimizer stepped there — held across steps by a
//! [`Trainer`], which can read its gradients and weights back and save a
//! checkpoint transformers loads.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::state::{self, TrainState};
use super::Pipeline;
use crate::analysis::measure::{measure_timeline, Measurement};
use crate::data::BatchesState;
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
    /// split, and its tensor-parallel degree (each stage's group of `tp`
    /// Gpus holds Megatron's shards and all-reduces in F and I). The
    /// trainer's weights start from the pipeline's.
    pub fn trainer(&self, config: TrainConfig) -> Result<Trainer<'_>> {
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
            return Err(Error::NonFinite(format!(
                "step {}: the loss is {} (stage {}, tensor `loss`); the step was not applied",
                self.steps_taken() + 1,
                pass.loss,
                self.schedule().stages() - 1
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

    /// Optimizer steps taken: by this trainer, and before it by the run it
    /// resumed ([`Trainer::resume`]).
    pub fn steps_taken(&self) -> u64 {
        self.inner.steps()
    }

    /// Save everything a run needs to go on later ([`super::state`]): the
    /// weights (a checkpoint transformers loads), the optimizer's moments
    /// under the same tensor names, the step count, the settings, and
    /// `data`, where the caller's batches are. `dir` must be missing, empty,
    /// or a state saved before, which is replaced whole: a failure leaves
    /// the previous state. Weights or moments that are not finite are
    /// refused, naming the tensor, and nothing is written. Under MPI every
    /// rank reads back and rank 0 writes.
    pub fn save_state(&self, dir: &Path, data: &BatchesState) -> Result<()> {
        let kind = self.config.optimizer.kind();
        let w = self.weights()?;
        let moments = self.inner.moments(kind)?;
        if !self.pipeline.cluster.is_root() {
            return Ok(());
        }
        let cfg = self.pipeline.config();
        check_finite("weight", w.named_tensors())?;
        for m in &moments {
            check_finite("optimizer moment", m.named_tensors(cfg))?;
        }
        let s = self.schedule();
        let st = TrainState {
            format: state::FORMAT,
            step: self.steps_taken(),
            optimizer: self.config.optimizer,
            grad_clip: self.config.grad_clip,
            batch: self.config.batch,
            seq: self.config.seq,
            data: data.clone(),
            layout: state::Layout {
                schedule: s.name.clone(),
                devices: s.devices,
                microbatches: s.microbatches,
                virtual_stages: s.virtual_stages,
                split: self.pipeline.split().split.clone(),
                recompute: self.config.recompute,
            },
            files: Default::default(),
            checksum: String::new(),
        };
        state::write_state(dir, st, |tmp| {
            save_checkpoint(&w, tmp)?;
            for (m, name) in moments.iter().zip(state::moment_files(kind)) {
                state::write_moments(&tmp.join(name), cfg, m)?;
            }
            Ok(())
        })
    }

    /// Go on from the state in `dir`: its checksums verified, its settings
    /// checked against this trainer's (optimizer, clipping, batch shape),
    /// its optimizer moments put on whichever devices now hold each tensor
    /// and its step count taken over. The weights are the pipeline's: build
    /// it from the state's checkpoint (`ModelSource::Checkpoint(dir)`), or
    /// this is refused. Returns the state (its `data` says where the batches
    /// were). Only a trainer that has not stepped can resume.
    pub fn resume(&mut self, dir: &Path) -> Result<TrainState> {
        let st = TrainState::read(dir)?;
        let c = &self.config;
        st.check_compatible(&c.optimizer, c.grad_clip, c.batch, c.seq)?;
        if self.steps_taken() != 0 {
            return Err(Error::Input(format!(
                "this trainer has taken {} steps; only a fresh trainer resumes a run",
                self.steps_taken()
            )));
        }
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        match &self.pipeline.host.dir {
            Some(d) if same(d, dir) => {}
            _ => {
                return Err(Error::Input(format!(
                    "{}: the pipeline's weights do not come from this training state; build it from the state's checkpoint to resume",
                    dir.display()
                )))
            }
        }
        let kind = c.optimizer.kind();
        let moments = state::read_moments(dir, self.pipeline.config(), kind)?;
        let _busy = self.pipeline.lock();
        self.inner.restore(st.step, kind, &moments)?;
        Ok(st)
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

/// Every tensor of `tensors` finite, or an error naming the first that is not.
fn check_finite<'a>(
    what: &str,
    tensors: impl IntoIterator<Item = (String, &'a Vec<f32>, Vec<usize>)>,
) -> Result<()> {
    for (name, t, _) in tensors {
        if let Some(x) = t.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite(format!(
                "{what} {name} holds {x}: refusing to save a poisoned state"
            )));
        }
    }
    Ok(())
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
