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

pub mod cluster;
mod encoder;
pub mod fed;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod net;
mod outcome;
pub mod plan;
pub mod program;
pub mod transport;
pub(crate) mod wire;
mod worker;

#[cfg(test)]
mod tests;

use std::sync::Mutex;

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::model::Shard;
use crate::schedule::{validate::validate, Schedule};
use crate::trace::{Event, Timeline, Track};

pub use cluster::{Cluster, MpiSummary};
pub use encoder::ActionEncoder;
pub use net::Net;
pub use plan::Plan;
pub use program::StageProgram;
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

/// A schedule runs on as many device groups as it has devices.
pub fn check_devices(schedule: &Schedule, groups: &[DeviceGroup]) -> Result<()> {
    match groups.len() == schedule.devices {
        true => Ok(()),
        false => Err(Error::Input(format!(
            "the schedule has {} devices but {} were given",
            schedule.devices,
            groups.len()
        ))),
    }
}

/// The groups' one tensor-parallel degree; an error when they differ.
pub fn uniform_tp(groups: &[DeviceGroup]) -> Result<usize> {
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
    check_devices(schedule, groups)?;
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
    // Interrupted: the devices stopped at their next check, and whatever
    // failed on the way out (a wait cut short) is not the reason.
    crate::interrupt::check()?;
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
    let (outcomes, names) = outcome::gather::<P>(net, labels, tp, outcomes)?;
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
