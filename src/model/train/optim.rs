//! The optimizer of a training stage: AdamW or SGD moments for every
//! parameter, one update dispatch each (weight decay only on rank >= 2
//! tensors), and the sum of squares of the gradients for global-norm clipping.

use crate::device::{download, zeros, Gpu};
use crate::error::Result;
use crate::kernels::{self as k, Dispatch};
use crate::model::names;
use crate::model::optim::{AdamWStep, OptimizerKind, OptimizerStep, SgdStep};

use super::{bytes, StageBuffers, Tensor, TrainStage};

/// The optimizer's per-parameter state and its dispatches.
pub(super) struct OptimizerState {
    /// One update dispatch per tensor, in [`StageBuffers::tensors`] order,
    /// with whether weight decay applies to it.
    updates: Vec<(Dispatch, bool)>,
    /// AdamW's m and v, or SGD's momentum buffer ([`super::Which::Moment`]).
    pub(super) moments: Vec<StageBuffers>,
}

impl TrainStage {
    /// Record an optimizer step over every parameter, then the zeroing of
    /// every gradient, into `enc`. The first call allocates the moments.
    pub fn encode_optimizer_step(
        &mut self,
        gpu: &Gpu,
        opt: &OptimizerStep,
        enc: &mut wgpu::CommandEncoder,
    ) -> Result<()> {
        if self.optimizer.is_none() {
            self.optimizer = Some(self.build_optimizer(gpu, opt.kind()));
        }
        let state = self.optimizer.as_ref().expect("built");
        for (d, decay) in &state.updates {
            set(opt, d, &gpu.queue, *decay)?;
        }
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for (d, _) in &state.updates {
                d.encode(&mut pass);
            }
        }
        for (_, g) in self.param_tensors() {
            enc.clear_buffer(g.buf, 0, None);
        }
        Ok(())
    }

    pub(super) fn build_optimizer(&self, gpu: &Gpu, kind: OptimizerKind) -> OptimizerState {
        let (cfg, part, chunks, lens) = (&self.cfg, &self.part, &self.chunks, &self.lens);
        let zeros = |what: &str| self.params.zeros_like(gpu, what, cfg, part, chunks, lens);
        let moments: Vec<StageBuffers> = match kind {
            OptimizerKind::AdamW => vec![zeros("adam m"), zeros("adam v")],
            OptimizerKind::Sgd => vec![zeros("momentum")],
        };
        let ts: Vec<Vec<Tensor>> = moments
            .iter()
            .map(|m| m.tensors(cfg, part, chunks, lens))
            .collect();
        let updates = self
            .param_tensors()
            .into_iter()
            .enumerate()
            .map(|(i, (p, g))| {
                let d = match kind {
                    OptimizerKind::AdamW => {
                        k::adamw_update(gpu, p.buf, g.buf, ts[0][i].buf, ts[1][i].buf, p.len)
                    }
                    OptimizerKind::Sgd => k::sgd_update(gpu, p.buf, g.buf, ts[0][i].buf, p.len),
                };
                (d, p.decay)
            })
            .collect();
        drop(ts);
        OptimizerState { updates, moments }
    }

    /// Σ g² over this stage's gradients, in f64 on the host from per-workgroup
    /// partial sums made on the device; `with_wte` false leaves the token
    /// table out (the tied table is counted once, on one stage). Under
    /// tensor parallelism a replicated tensor counts on rank 0 only.
    pub fn grad_sumsq(&self, gpu: &Gpu, with_wte: bool) -> Result<f64> {
        Ok(self
            .grad_sumsq_by_tensor(gpu, with_wte)?
            .iter()
            .map(|(_, s)| s)
            .sum())
    }

    /// [`TrainStage::grad_sumsq`] per tensor, by checkpoint name (the token
    /// table's chunks as `wte.weight[v0..]`), in one submission. A NaN or an
    /// infinity anywhere in a gradient makes its tensor's sum non-finite:
    /// how a step finds a poisoned gradient and names it.
    pub fn grad_sumsq_by_tensor(&self, gpu: &Gpu, with_wte: bool) -> Result<Vec<(String, f64)>> {
        let tensors: Vec<_> = self
            .param_tensors()
            .into_iter()
            .map(|(_, g)| g)
            .filter(|g| with_wte || !g.name.starts_with(names::WTE))
            .filter(|g| !(g.replicated && self.shard.rank > 0))
            .collect();
        let lens: Vec<usize> = tensors
            .iter()
            .map(|g| k::sumsq_partials_len(g.len))
            .collect();
        let total: usize = lens.iter().sum();
        let partials = zeros(gpu, "sumsq partials", total);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        let mut off = 0;
        let mut keep = Vec::new();
        for (g, &len) in tensors.iter().zip(&lens) {
            let part = zeros(gpu, "sumsq partial", len);
            let d = k::sumsq_partials(gpu, &part, g.buf, g.len);
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                d.encode(&mut pass);
            }
            enc.copy_buffer_to_buffer(&part, 0, &partials, bytes(off), bytes(len));
            off += len;
            keep.push((d, part));
        }
        gpu.queue.submit([enc.finish()]);
        let v = download(gpu, &partials, total)?;
        let mut rest = &v[..];
        Ok(tensors
            .iter()
            .zip(&lens)
            .map(|(g, &len)| {
                let (mine, after) = rest.split_at(len);
                rest = after;
                (g.name.clone(), mine.iter().map(|&x| x as f64).sum())
            })
            .collect())
    }
}

/// Write `opt` into an update dispatch; weight decay only where `decay`.
fn set(opt: &OptimizerStep, d: &Dispatch, queue: &wgpu::Queue, decay: bool) -> Result<()> {
    match *opt {
        OptimizerStep::AdamW(h) => d.update_params(queue, |p: &mut k::AdamWParams| {
            p.step = AdamWStep {
                weight_decay: if decay { h.weight_decay } else { 0.0 },
                ..h
            }
        }),
        OptimizerStep::Sgd(h) => d.update_params(queue, |p: &mut k::SgdParams| {
            p.step = SgdStep {
                weight_decay: if decay { h.weight_decay } else { 0.0 },
                ..h
            }
        }),
    }
}
