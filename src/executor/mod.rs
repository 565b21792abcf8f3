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
pub mod measure;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod net;
pub mod partition;
pub mod plan;
pub mod program;
pub mod train;
pub mod transport;
mod wire;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Mutex;

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::io::TokenBatch;
use crate::microbatch::Microbatches;
use crate::model::{Gpt2Weights, StageWeights};
use crate::schedule::{validate::validate, Schedule};
use crate::trace::{Event, Timeline, Track};

pub use plan::Plan;
pub use program::{Gpt2Forward, StageProgram};
pub use net::Net;
pub use transport::{Control, InProcess, Transport};
pub use worker::TransferRecord;

/// The Gpus of one schedule device (one row of the schedule). One Gpu
/// today; under tensor parallelism a stage spans several, and its program
/// inserts the collectives between its segments.
#[derive(Clone, Copy)]
pub struct DeviceGroup<'a> {
    gpus: &'a [Gpu],
}

impl<'a> DeviceGroup<'a> {
    /// A schedule device that is one Gpu.
    pub fn single(gpu: &'a Gpu) -> DeviceGroup<'a> {
        DeviceGroup {
            gpus: std::slice::from_ref(gpu),
        }
    }

    /// A schedule device spanning `gpus` (at least one).
    pub fn new(gpus: &'a [Gpu]) -> Result<DeviceGroup<'a>> {
        if gpus.is_empty() {
            return Err(Error::Input("a device group needs at least one Gpu".into()));
        }
        Ok(DeviceGroup { gpus })
    }

    pub fn gpus(&self) -> &'a [Gpu] {
        self.gpus
    }

    /// The Gpu that owns the group's message buffers and timestamps.
    pub fn lead(&self) -> &'a Gpu {
        &self.gpus[0]
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
    w: &Gpt2Weights,
    tokens: &TokenBatch,
    schedule: &Schedule,
    opts: &Options,
) -> Result<PipelineRun> {
    let job = Inference::prepare(w, tokens, schedule, opts)?;
    let (outputs, timeline, wall_s, transfers) =
        run_programs(groups, schedule, &Net::new(groups.len())?, |d, gpu| {
            Gpt2Forward::new(gpu, &job.held(w, schedule, d), &job.mbs)
        })?;
    let row = tokens.seq * w.config.vocab_size;
    let results: Vec<(usize, Vec<f32>)> = outputs.into_iter().flatten().collect();
    Ok(PipelineRun {
        logits: job.mbs.gather(&results, row),
        timeline,
        wall_s,
        microbatch_sequences: job.mbs.per,
        transfers,
    })
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
        w: &Gpt2Weights,
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
        crate::io::check_input(&w.config, tokens)?;
        let parts =
            partition::partition(w.config.n_layer, schedule.stages(), opts.split.as_deref())?;
        let mbs = Microbatches::split(tokens, schedule.microbatches)?;
        Ok(Inference { parts, mbs })
    }

    /// Device `d`'s stages with their weights: all a device is handed.
    pub fn held<'w>(
        &'w self,
        w: &'w Gpt2Weights,
        schedule: &Schedule,
        d: usize,
    ) -> Vec<(usize, StageWeights<'w>)> {
        (d..schedule.stages())
            .step_by(schedule.devices)
            .map(|s| (s, w.stage(&self.parts[s])))
            .collect()
    }
}

/// What [`run_programs`] hands back: each device's program output, the
/// timeline, the wall seconds and the transfers.
pub type Ran<O> = (Vec<O>, Timeline, f64, Vec<TransferRecord>);

/// Run `schedule` over `groups`, device `d` computing with the program
/// `make(d, gpu)` builds on its own thread (so each thread holds only its
/// own stages), moving messages through `net`. Any device failing stops
/// them all; the first failure is returned.
pub fn run_programs<N, P, F>(
    groups: &[DeviceGroup],
    schedule: &Schedule,
    net: &N,
    make: F,
) -> Result<Ran<P::Output>>
where
    N: Transport + Control,
    P: StageProgram,
    F: Fn(usize, &Gpu) -> Result<P> + Sync,
{
    if groups.len() != schedule.devices {
        return Err(Error::Input(format!(
            "the schedule has {} devices but {} were given",
            schedule.devices,
            groups.len()
        )));
    }
    if let Some(g) = groups.iter().find(|g| g.gpus().len() > 1) {
        return Err(Error::Input(format!(
            "device group {} spans {} Gpus: tensor parallelism within a stage is not implemented yet; give one Gpu per schedule device",
            g.label(),
            g.gpus().len()
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
    N: Transport + Control,
    P: StageProgram,
    F: Fn(usize, &Gpu) -> Result<P> + Sync,
{
    if groups.len() != plan.devices.len() {
        return Err(Error::Input(format!(
            "the plan has {} devices but {} were given",
            plan.devices.len(),
            groups.len()
        )));
    }
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let outcomes = std::thread::scope(|scope| {
        // Under MPI only this rank's device runs here.
        for (d, g) in groups.iter().enumerate().filter(|(d, _)| net.local(*d)) {
            let gpu = g.lead();
            scope.spawn(move || transport::poll_until(&gpu.device, &|| net.finished(d)));
        }
        let handles: Vec<_> = groups
            .iter()
            .enumerate()
            .filter(|(d, _)| net.local(*d))
            .map(|(d, g)| {
                let (errors, make) = (&errors, &make);
                scope.spawn(move || {
                    let dev = worker::Device {
                        index: d,
                        gpu: g.lead(),
                        steps: &plan.devices[d],
                        control: net,
                        transport: net,
                    };
                    let r = worker::run_device(&dev, |gpu| make(d, gpu));
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
                    net.finish(d);
                    (d, out)
                })
            })
            .collect();
        let mut outcomes: Vec<Option<_>> = (0..groups.len()).map(|_| None).collect();
        for h in handles {
            if let Ok((d, out)) = h.join() {
                outcomes[d] = out;
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
    let names = groups.iter().map(DeviceGroup::label).collect();
    let (outcomes, names) = wire::gather::<P>(net, names, outcomes)?;
    Ok(assemble(names, outcomes))
}

/// The devices' outcomes on one timeline.
fn assemble<O>(device_names: Vec<String>, outcomes: Vec<worker::Outcome<O>>) -> Ran<O> {
    let mut events: Vec<Event> = Vec::new();
    let mut transfers = Vec::new();
    let mut outputs = Vec::new();
    let mut clock = "gpu-timestamps";
    let mut wall_s: f64 = 0.0;
    for o in outcomes {
        if !o.gpu_clock {
            clock = "host";
        }
        wall_s = wall_s.max(o.finished_s);
        events.extend(o.events);
        transfers.extend(o.received);
        outputs.push(o.output);
    }
    // A transfer's host clock starts when the consumer asked for the data;
    // the data exists only from its producer's end (GPU clock) on.
    let produced: std::collections::HashMap<_, f64> = events
        .iter()
        .filter_map(|e| Some((e.action?, e.end_us)))
        .collect();
    for t in &mut transfers {
        if let Some(&end) = produced.get(&t.producer) {
            t.start_us = t.start_us.max(end).min(t.end_us);
        }
    }
    events.extend(transfers.iter().map(|t| Event {
        track: Track::Transfer {
            from: t.from,
            to: t.to,
        },
        name: format!("{} {}->{}", t.consumer, t.from, t.to),
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
    (outputs, timeline, wall_s, transfers)
}
