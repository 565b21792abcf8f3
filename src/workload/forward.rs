//! GPT-2 inference as a workload: [`Gpt2Forward`], the [`StageProgram`]
//! that runs `F` actions on the stages a device holds, and the entry points
//! that run a forward schedule across devices ([`run_inference`]).

use std::collections::BTreeMap;

use super::resident::Resident;
use crate::action::{Action, Kind, Product};
use crate::device::{self, Gpu, Precision};
use crate::error::{Error, Result};
use crate::executor::wire;
use crate::executor::{
    run_programs, ActionEncoder, Cluster, DeviceGroup, StageProgram, TransferRecord,
};
use crate::io::TokenBatch;
use crate::microbatch::Microbatches;
use crate::model::gpu::{GpuStage, Mode, StageUpload};
use crate::model::{partition, Gpt2Weights, Shard, StageSource, StageWeights};
use crate::schedule::Schedule;
use crate::trace::Timeline;

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Layers per stage (one count per stage); even split when `None`.
    pub split: Option<Vec<usize>>,
}

/// What a pipelined run produced and how long it took.
pub struct PipelineRun {
    /// (B, T, V) logits, in the input's sequence order.
    pub logits: Vec<f32>,
    /// Compute and transfer events on one clock (`timeline.clock` says which).
    pub timeline: Timeline,
    /// Host seconds from the common start to the last device finishing.
    pub wall_s: f64,
    /// Sequences per microbatch (the largest; smaller ones are padded).
    pub microbatch_sequences: usize,
    /// Every message moved between two devices.
    pub transfers: Vec<TransferRecord>,
    /// Bytes the tensor-parallel ranks moved through the host in
    /// all-reduces (each rank's partials out and sums back).
    pub reduced_bytes: u64,
}

impl PipelineRun {
    /// Bytes moved between devices.
    pub fn bytes_moved(&self) -> u64 {
        self.transfers.iter().map(|t| t.bytes).sum()
    }
}

/// Run `schedule` (forward actions only) over `gpus` (one per schedule
/// device, all in this process) on `tokens`.
pub fn run_pipeline(
    gpus: &[Gpu],
    w: &Gpt2Weights,
    tokens: &TokenBatch,
    schedule: &Schedule,
    opts: &Options,
) -> Result<PipelineRun> {
    let groups: Vec<DeviceGroup> = gpus.iter().map(DeviceGroup::single).collect();
    run_inference(&groups, &Cluster::Local, w, tokens, schedule, opts)
}

/// GPT-2 inference: `schedule`'s forward actions over `groups` (one per
/// schedule device, spread over `cluster`) on `tokens`, the weights uploaded
/// for this run. A caller that runs many times uploads once
/// ([`Resident::upload`]) and calls [`run_resident`].
pub fn run_inference(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    w: &dyn StageSource,
    tokens: &TokenBatch,
    schedule: &Schedule,
    opts: &Options,
) -> Result<PipelineRun> {
    check_forward(schedule)?;
    crate::io::check_input(w.config(), tokens)?;
    let parts = partition::partition(w.config().n_layer, schedule.stages(), opts.split.as_deref())?;
    let resident = Resident::upload(groups, cluster, w, parts)?;
    run_resident(groups, cluster, &resident, tokens, schedule)
}

/// GPT-2 inference over weights already on the devices: `schedule`'s
/// forward actions over `groups` on `tokens`.
pub fn run_resident(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    resident: &Resident,
    tokens: &TokenBatch,
    schedule: &Schedule,
) -> Result<PipelineRun> {
    check_forward(schedule)?;
    resident.check(groups, schedule.devices, schedule.stages())?;
    let cfg = &resident.cfg;
    crate::io::check_input(cfg, tokens)?;
    let mbs = Microbatches::split(tokens, schedule.microbatches)?;
    let tp = resident.tp;
    let ran = run_programs(
        groups,
        schedule,
        &cluster.net_for(groups)?,
        |d, shard, gpu| Gpt2Forward::resident(gpu, resident.stages(d * tp + shard.rank)?, &mbs),
    )?;
    let row = tokens.seq * cfg.vocab_size;
    // The ranks' logits of a microbatch add up to the whole (each holds its
    // vocabulary range; zeros elsewhere).
    let mut results: BTreeMap<usize, Vec<f32>> = Default::default();
    for (m, l) in ran.outputs.into_iter().flatten() {
        match results.get_mut(&m) {
            Some(sum) => sum.iter_mut().zip(&l).for_each(|(s, x)| *s += x),
            None => {
                results.insert(m, l);
            }
        }
    }
    let results: Vec<(usize, Vec<f32>)> = results.into_iter().collect();
    Ok(PipelineRun {
        logits: mbs.gather(&results, row),
        timeline: ran.timeline,
        wall_s: ran.wall_s,
        microbatch_sequences: mbs.per,
        transfers: ran.transfers,
        reduced_bytes: ran.reduced_bytes,
    })
}

/// Inference runs forward actions only.
fn check_forward(schedule: &Schedule) -> Result<()> {
    if schedule.is_forward_only() {
        return Ok(());
    }
    Err(Error::Input(format!(
        "schedule `{}` has backward actions; inference runs forward actions only: pass its forward part",
        schedule.name
    )))
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
        let uploaded = stages
            .iter()
            .map(|(s, w)| Ok((*s, StageUpload::shard(gpu, w, shard, Precision::F32)?)))
            .collect::<Result<Vec<_>>>()?;
        Gpt2Forward::resident(gpu, &uploaded, mbs)
    }

    /// Programs for microbatches shaped like `mbs` over stages already on
    /// `gpu` (`(stage, its weights)` each).
    pub fn resident(
        gpu: &Gpu,
        stages: &[(usize, StageUpload)],
        mbs: &'a Microbatches,
    ) -> Result<Gpt2Forward<'a>> {
        let mut map = BTreeMap::new();
        let mut logits = BTreeMap::new();
        for (s, up) in stages {
            let stage = GpuStage::build(gpu, up, mbs.per, mbs.seq, Mode::Full)?;
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
        self.stage(consumer.stage).input()
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        self.stage(producer.stage).output()
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
        Some(wire::to_bytes(o))
    }
    fn output_from_bytes(b: &[u8]) -> Option<Self::Output> {
        wire::from_bytes(b)
    }
}
