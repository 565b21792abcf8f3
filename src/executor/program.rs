//! What a schedule device computes, action by action: the [`StageProgram`]
//! the worker drives. The program knows the model and its buffers; the
//! worker knows the order (the schedule's row) and the messages (the
//! [`super::plan::Plan`]). Neither does the other's job.
//!
//! [`Gpt2Forward`] is GPT-2 inference: `F` actions on the stages a device
//! holds. Training programs add `B`, `I`, `W` behind the same trait.

use std::collections::BTreeMap;

use super::ActionEncoder;
use crate::action::{Action, Kind, Product};
use crate::device::{self, Gpu};
use crate::error::{Error, Result};
use crate::microbatch::Microbatches;
use crate::model::gpu::{GpuStage, Mode, StageUpload};
use crate::model::{Shard, StageWeights};

/// One schedule device's share of the model. Called from the device's
/// thread; the worker encodes, submits and moves messages around it.
pub trait StageProgram {
    /// What [`StageProgram::finish`] hands back (logits, gradients, …).
    type Output: Send;

    /// Bytes of message `p` (the same on both ends of a transfer).
    fn message_bytes(&self, p: Product) -> u64;

    /// Where message `p` must be placed before `consumer` runs: the worker
    /// writes received bytes or copies a local hand-over there.
    fn input(&self, consumer: Action, p: Product) -> &wgpu::Buffer;

    /// Where `producer`'s message lies once its encoded work has run: the
    /// worker copies it out in the same submission.
    fn output(&self, producer: Action) -> &wgpu::Buffer;

    /// Record action `a`'s compute into `enc`, queueing any host input it
    /// takes (token ids) on the device's queue. Timed. A rank of a
    /// tensor-parallel group all-reduces through `enc` between segments
    /// ([`GpuStage::encode_in`]).
    fn encode(&mut self, gpu: &Gpu, a: Action, enc: &mut ActionEncoder) -> Result<()>;

    /// Record what `a` hands to the host (logits), after its timed span.
    fn encode_results(&mut self, _gpu: &Gpu, _a: Action, _enc: &mut wgpu::CommandEncoder) {}

    /// `a`'s submission is on the queue: a program may ask for results to
    /// be mapped as soon as it completes (decoding streams its tokens).
    fn submitted(&mut self, _gpu: &Gpu, _a: Action) {}

    /// After the last action has completed: read the results back.
    fn finish(self, gpu: &Gpu) -> Result<Self::Output>;

    /// Under MPI: the output as bytes for the other ranks, and back
    /// (`super::wire`). `None`: this program's output cannot cross processes.
    fn output_to_bytes(_o: &Self::Output) -> Option<Vec<u8>> {
        None
    }
    fn output_from_bytes(_b: &[u8]) -> Option<Self::Output> {
        None
    }
}

/// GPT-2 inference on the stages one device holds (or its rank's shard of
/// them, under tensor parallelism): each `F` runs a stage's layers on one
/// microbatch in its residual buffer `x`, which is both the stage's input
/// and its output message. A rank's logits hold its vocabulary range's
/// columns and zeros elsewhere: the ranks' logits add up to the whole.
pub struct Gpt2Forward<'a> {
    stages: BTreeMap<usize, GpuStage>,
    mbs: &'a Microbatches,
    /// Staging for the logits of each microbatch, on the device with the head.
    logits: BTreeMap<usize, wgpu::Buffer>,
}

impl<'a> Gpt2Forward<'a> {
    /// Upload `shard`'s part of each `(stage, its weights)` of this device
    /// to `gpu`.
    pub fn new(
        gpu: &Gpu,
        shard: Shard,
        stages: &[(usize, StageWeights)],
        mbs: &'a Microbatches,
    ) -> Result<Gpt2Forward<'a>> {
        let mut map = BTreeMap::new();
        let mut logits = BTreeMap::new();
        for (s, w) in stages {
            let up = StageUpload::shard(gpu, w, shard)?;
            let stage = GpuStage::build(gpu, &up, mbs.per, mbs.seq, Mode::Full)?;
            if stage.part.head {
                for m in 0..mbs.list.len() {
                    logits.insert(m, device::staging(gpu, "logits out", stage.logits_bytes()));
                }
            }
            map.insert(*s, stage);
        }
        Ok(Gpt2Forward {
            stages: map,
            mbs,
            logits,
        })
    }

    fn stage(&self, s: usize) -> &GpuStage {
        &self.stages[&s]
    }
}

impl StageProgram for Gpt2Forward<'_> {
    /// (microbatch, its padded (per, T, V) logits), from the device with the head.
    type Output = Vec<(usize, Vec<f32>)>;

    fn message_bytes(&self, _p: Product) -> u64 {
        // Only activations move in inference: (N, C) f32, the same at
        // every stage boundary.
        let any = self.stages.values().next().expect("a device holds a stage");
        any.activation_bytes()
    }

    fn input(&self, consumer: Action, _p: Product) -> &wgpu::Buffer {
        &self.stage(consumer.stage).x
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        &self.stage(producer.stage).x
    }

    fn encode(&mut self, gpu: &Gpu, a: Action, enc: &mut ActionEncoder) -> Result<()> {
        if a.kind != Kind::F {
            return Err(Error::Input(format!(
                "{a}: GPT-2 inference runs forward actions only"
            )));
        }
        let stage = self.stage(a.stage);
        if stage.part.embedding {
            stage.write_ids(gpu, &self.mbs.list[a.microbatch].ids);
        }
        stage.encode_in(enc)
    }

    fn encode_results(&mut self, _gpu: &Gpu, a: Action, enc: &mut wgpu::CommandEncoder) {
        let stage = self.stage(a.stage);
        if let (Some(logits), Some(staging)) = (&stage.logits, self.logits.get(&a.microbatch)) {
            enc.copy_buffer_to_buffer(logits, 0, staging, 0, stage.logits_bytes());
        }
    }

    fn finish(self, gpu: &Gpu) -> Result<Self::Output> {
        let Some(stage) = self.stages.values().find(|s| s.part.head) else {
            return Ok(Vec::new());
        };
        let vp = stage.cfg.padded_vocab();
        self.logits
            .iter()
            .map(|(&m, st)| {
                let padded: Vec<f32> = device::read_mapped(gpu, st, stage.rows() * vp)?;
                Ok((m, stage.strip_logits(&padded)))
            })
            .collect()
    }

    fn output_to_bytes(o: &Self::Output) -> Option<Vec<u8>> {
        Some(super::wire::to_bytes(o))
    }
    fn output_from_bytes(b: &[u8]) -> Option<Self::Output> {
        super::wire::from_bytes(b)
    }
}
