//! The executor: runs a schedule's action lists across devices, one thread
//! per schedule device, and records what ran when.
//!
//! It reads [`Schedule`] data — the same lists `wgpipe plan` prints — and
//! never derives an order of its own. The pieces, each in one place:
//! - [`plan`]: which messages each action receives and sends, from the
//!   schedule's own dependencies (activations forward, gradients backward);
//! - [`program`]: what a device computes per action ([`StageProgram`];
//!   [`Gpt2Forward`] for inference);
//! - [`transport`]: how bytes move between devices and how the run is
//!   coordinated ([`Transport`], [`Control`]; [`InProcess`] today);
//! - `worker`: one device's thread, driving its program through its steps.
//!
//! All buffers — weights, activations, staging — are allocated once per run,
//! before the clock starts.

pub mod accounting;
pub mod balance;
pub mod corun;
pub mod decode;
mod encoder;
pub mod measure;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod net;
pub mod partition;
pub mod plan;
pub mod program;
pub mod train;
pub mod transport;
pub(crate) mod wire;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Mutex;

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::io::TokenBatch;
use crate::microbatch::Microbatches;
use crate::model::{Gpt2Weights, Shard, StageSource, StageWeights};
use crate::schedule::{validate::validate, Schedule};
use crate::trace::{Event, Timeline, Track};

pub use encoder::ActionEncoder;
pub use net::Net;
pub use plan::Plan;
pub use program::{Gpt2Forward, StageProgram};
pub use transport::{Collective, Control, InProcess, Transport};
pub use worker::TransferRecord;

/// The Gpus of one schedule device (one row of the schedule): one, or under
/// tensor parallelism T of them, each running a rank's shard of the
/// device's stages with the all-reduces between their segments. Under MPI a
/// process holds one member of a group ([`DeviceGroup::member`]); the other
/// ranks' Gpus are in other processes.
#[derive(Clone, Copy)]
pub struct DeviceGroup<'a> {
    /// The group's Gpus held here: ranks `first..first + gpus.len()` of `tp`.
    gpus: &'a [Gpu],
    tp: usize,
    first: usize,
}

impl<'a> DeviceGroup<'a> {
    /// A schedule device that is one Gpu.
    pub fn single(gpu: &'a Gpu) -> DeviceGroup<'a> {
        DeviceGroup {
            gpus: std::slice::from_ref(gpu),
            tp: 1,
            first: 0,
        }
    }

    /// A schedule device spanning `gpus` (at least one).
    pub fn new(gpus: &'a [Gpu]) -> Result<DeviceGroup<'a>> {
        if gpus.is_empty() {
            return Err(Error::Input("a device group needs at least one Gpu".into()));
        }
        Ok(DeviceGroup {
            gpus,
            tp: gpus.len(),
            first: 0,
        })
    }

    /// Rank `rank` of a group of `tp` whose other ranks run elsewhere (MPI).
    pub fn member(gpu: &'a Gpu, tp: usize, rank: usize) -> Result<DeviceGroup<'a>> {
        if rank >= tp {
            return Err(Error::Other(format!("bug: rank {rank} of a group of {tp}")));
        }
        Ok(DeviceGroup {
            gpus: std::slice::from_ref(gpu),
            tp,
            first: rank,
        })
    }

    /// The Gpus held here (all of the group's, unless a [`DeviceGroup::member`]).
    pub fn gpus(&self) -> &'a [Gpu] {
        self.gpus
    }

    /// The first Gpu held here (rank 0's, unless a [`DeviceGroup::member`]).
    pub fn lead(&self) -> &'a Gpu {
        &self.gpus[0]
    }

    /// Tensor-parallel degree: the Gpus in the group.
    pub fn tp(&self) -> usize {
        self.tp
    }

    /// Each Gpu held here with its rank in the group.
    pub fn ranks(&self) -> impl Iterator<Item = (usize, &'a Gpu)> + '_ {
        self.gpus
            .iter()
            .enumerate()
            .map(|(i, g)| (self.first + i, g))
    }

    /// `vulkan:0 (llvmpipe …)`, joined with `+` for a group.
    pub fn label(&self) -> String {
        let labels: Vec<&str> = self.gpus.iter().map(|g| g.label.as_str()).collect();
        labels.join(" + ")
    }
}

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
/// device) on `tokens`.
pub fn run_pipeline(
    gpus: &[Gpu],
    w: &Gpt2Weights,
    tokens: &TokenBatch,
    schedule: &Schedule,
    opts: &Options,
) -> Result<PipelineRun> {
    let groups: Vec<DeviceGroup> = gpus.iter().map(DeviceGroup::single).collect();
    run_inference(&groups, w, tokens, schedule, opts)
}

/// GPT-2 inference: `schedule`'s forward actions over `groups` (one per
/// schedule device) on `tokens`.
pub fn run_inference(
    groups: &[DeviceGroup],
    w: &dyn StageSource,
    tokens: &TokenBatch,
    schedule: &Schedule,
    opts: &Options,
) -> Result<PipelineRun> {
    let job = Inference::prepare(w, tokens, schedule, opts)?;
    check_groups(w.config(), groups)?;
    let ran = run_programs(
        groups,
        schedule,
        &Net::for_groups(groups)?,
        |d, shard, gpu| Gpt2Forward::new(gpu, shard, &job.held(w, schedule, d)?, &job.mbs),
    )?;
    let row = tokens.seq * w.config().vocab_size;
    // The ranks' logits of a microbatch add up to the whole (each holds its
    // vocabulary range; zeros elsewhere).
    let mut results: std::collections::BTreeMap<usize, Vec<f32>> = Default::default();
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
        logits: job.mbs.gather(&results, row),
        timeline: ran.timeline,
        wall_s: ran.wall_s,
        microbatch_sequences: job.mbs.per,
        transfers: ran.transfers,
        reduced_bytes: ran.reduced_bytes,
    })
}

/// Tensor-parallel groups must all be of one size that splits the model
/// (heads, MLP width, vocabulary).
pub fn check_groups(cfg: &crate::model::Gpt2Config, groups: &[DeviceGroup]) -> Result<()> {
    crate::model::shard::check_degree(cfg, uniform_tp(groups)?)
}

/// The groups' one tensor-parallel degree; an error when they differ.
fn uniform_tp(groups: &[DeviceGroup]) -> Result<usize> {
    let tp = groups.first().map_or(1, DeviceGroup::tp);
    match groups.iter().find(|g| g.tp() != tp) {
        Some(g) => Err(Error::Input(format!(
            "device group {} has {} Gpus but the first has {tp}: every device needs the same tensor-parallel degree",
            g.label(),
            g.tp()
        ))),
        None => Ok(tp),
    }
}

/// GPT-2 inference over a schedule, checked once: each stage's layers and
/// the microbatches.
pub struct Inference {
    pub parts: Vec<crate::model::StagePart>,
    pub mbs: Microbatches,
}

impl Inference {
    /// Refuse a schedule with backward actions, bad token ids, a bad split
    /// or microbatch count; then partition and split.
    pub fn prepare(
        w: &dyn StageSource,
        tokens: &TokenBatch,
        schedule: &Schedule,
        opts: &Options,
    ) -> Result<Inference> {
        if !schedule.is_forward_only() {
            return Err(Error::Input(format!(
                "schedule `{}` has backward actions; inference runs forward actions only: pass its forward part",
                schedule.name
            )));
        }
        let cfg = w.config();
        crate::io::check_input(cfg, tokens)?;
        let parts = partition::partition(cfg.n_layer, schedule.stages(), opts.split.as_deref())?;
        let mbs = Microbatches::split(tokens, schedule.microbatches)?;
        Ok(Inference { parts, mbs })
    }

    /// Device `d`'s stages with their weights: all a device is handed (an
    /// error naming what `w` lacks when it was loaded without them).
    pub fn held<'w>(
        &'w self,
        w: &'w dyn StageSource,
        schedule: &Schedule,
        d: usize,
    ) -> Result<Vec<(usize, StageWeights<'w>)>> {
        partition::device_stages(schedule.stages(), schedule.devices, d)
            .map(|s| Ok((s, w.try_stage(&self.parts[s])?)))
            .collect()
    }
}

/// What [`run_programs`] hands back.
pub struct Ran<O> {
    /// Each thread's program output, by endpoint: device × T + rank.
    pub outputs: Vec<O>,
    /// Compute (every rank), all-reduce and transfer events on one clock.
    pub timeline: Timeline,
    /// Host seconds from the common start to the last device finishing.
    pub wall_s: f64,
    /// Every message moved between two devices.
    pub transfers: Vec<TransferRecord>,
    /// Bytes moved through the host by all-reduces, over every rank.
    pub reduced_bytes: u64,
}

/// Run `schedule` over `groups`, rank r of device `d`'s group computing
/// with the program `make(d, shard, gpu)` builds on its own thread (so each
/// thread holds only its own stages, or its shard of them), moving messages
/// through `net`. Any device failing stops them all; the first failure is
/// returned.
pub fn run_programs<N, P, F>(
    groups: &[DeviceGroup],
    schedule: &Schedule,
    net: &N,
    make: F,
) -> Result<Ran<P::Output>>
where
    N: Transport + Control + Collective,
    P: StageProgram,
    F: Fn(usize, Shard, &Gpu) -> Result<P> + Sync,
{
    if groups.len() != schedule.devices {
        return Err(Error::Input(format!(
            "the schedule has {} devices but {} were given",
            schedule.devices,
            groups.len()
        )));
    }
    validate(schedule)?;
    run_plan(groups, &Plan::new(schedule), net, make)
}

/// Run `plan`'s steps over `groups` (one per plan device), as
/// [`run_programs`] does for a schedule's plan. The plan is taken as given:
/// the controls ([`corun`]) and the layer profile ([`balance`]) run plans
/// with their messages removed, which no schedule describes.
pub fn run_plan<N, P, F>(
    groups: &[DeviceGroup],
    plan: &Plan,
    net: &N,
    make: F,
) -> Result<Ran<P::Output>>
where
    N: Transport + Control + Collective,
    P: StageProgram,
    F: Fn(usize, Shard, &Gpu) -> Result<P> + Sync,
{
    if groups.len() != plan.devices.len() {
        return Err(Error::Input(format!(
            "the plan has {} devices but {} were given",
            plan.devices.len(),
            groups.len()
        )));
    }
    let tp = uniform_tp(groups)?;
    // One thread per Gpu held here: (endpoint, device, its shard, its Gpu).
    let ranks: Vec<(usize, usize, Shard, &Gpu)> = groups
        .iter()
        .enumerate()
        .flat_map(|(d, g)| {
            g.ranks()
                .map(move |(rank, gpu)| (d * tp + rank, d, Shard { rank, of: tp }, gpu))
        })
        .collect();
    let endpoints = groups.len() * tp;
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let outcomes = std::thread::scope(|scope| {
        // Under MPI only this rank's endpoint runs here.
        let local = || ranks.iter().filter(|r| net.local(r.0));
        for &(e, _, _, gpu) in local() {
            scope.spawn(move || transport::poll_until(&gpu.device, &|| net.finished(e)));
        }
        let handles: Vec<_> = local()
            .map(|&(e, d, shard, gpu)| {
                let (errors, make) = (&errors, &make);
                scope.spawn(move || {
                    let dev = worker::Device {
                        index: d,
                        shard,
                        gpu,
                        steps: &plan.devices[d],
                        control: net,
                        transport: net,
                        collective: net,
                    };
                    let r = worker::run_device(&dev, |gpu| make(d, shard, gpu));
                    // A failure is recorded, and the run aborted, before this
                    // device says it has finished: otherwise a device waiting
                    // on it could report "finished without sending" first,
                    // naming the wrong device.
                    let out = match r {
                        Ok(o) => Some(o),
                        Err(worker::Stop::Aborted) => None,
                        Err(worker::Stop::Failed(e)) => {
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                            net.abort();
                            None
                        }
                    };
                    net.finish(e);
                    (e, out)
                })
            })
            .collect();
        let mut outcomes: Vec<Option<_>> = (0..endpoints).map(|_| None).collect();
        for h in handles {
            if let Ok((e, out)) = h.join() {
                outcomes[e] = out;
            }
        }
        outcomes
    });
    if let Some(e) = errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .next()
    {
        return Err(e);
    }
    // Each endpoint's Gpu by name, where it is held here.
    let mut labels = vec![String::new(); endpoints];
    for &(e, _, _, gpu) in &ranks {
        labels[e] = gpu.label.clone();
    }
    let (outcomes, names) = wire::gather::<P>(net, labels, tp, outcomes)?;
    Ok(assemble(groups, names, outcomes))
}

/// The devices' outcomes (by endpoint) on one timeline, `device_names` one
/// per schedule device.
fn assemble<O>(
    groups: &[DeviceGroup],
    device_names: Vec<String>,
    outcomes: Vec<worker::Outcome<O>>,
) -> Ran<O> {
    let mut events: Vec<Event> = Vec::new();
    let mut transfers = Vec::new();
    let mut outputs = Vec::new();
    let mut clock = "gpu-timestamps";
    let mut wall_s: f64 = 0.0;
    let mut reduced_bytes = 0;
    for o in outcomes {
        if !o.gpu_clock {
            clock = "host";
        }
        wall_s = wall_s.max(o.finished_s);
        reduced_bytes += o.reduced_bytes;
        events.extend(o.events);
        transfers.extend(o.received);
        outputs.push(o.output);
    }
    // A transfer's host clock starts when the consumer asked for the data;
    // the data exists only from its producer's end (GPU clock) on: the
    // producing rank's compute event.
    let produced: std::collections::HashMap<_, f64> = events
        .iter()
        .filter_map(|e| match e.track {
            Track::Compute { gpu, .. } => Some(((e.action?, gpu), e.end_us)),
            _ => None,
        })
        .collect();
    for t in &mut transfers {
        if let Some(&end) = produced.get(&(t.producer, t.rank)) {
            t.start_us = t.start_us.max(end).min(t.end_us);
        }
    }
    events.extend(transfers.iter().map(|t| Event {
        track: Track::Transfer {
            from: t.from,
            to: t.to,
        },
        name: match groups.first().map_or(1, DeviceGroup::tp) {
            1 => format!("{} {}->{}", t.consumer, t.from, t.to),
            _ => format!("{} {}->{} rank {}", t.consumer, t.from, t.to, t.rank),
        },
        action: Some(t.consumer),
        start_us: t.start_us,
        end_us: t.end_us,
        bytes: t.bytes,
    }));
    events.sort_by(|a, b| a.start_us.total_cmp(&b.start_us));
    let timeline = Timeline {
        device_names,
        events,
        clock: clock.into(),
    };
    Ran {
        outputs,
        timeline,
        wall_s,
        transfers,
        reduced_bytes,
    }
}
