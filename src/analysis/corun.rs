//! The controls a pipeline's action times are judged against: each device's
//! share of the schedule run *solo* (that device alone, nothing else
//! running) and all devices *co-run* (every device at once, each on its own
//! share, with no messages between them).
//!
//! Both run the schedule's own [`Plan`] with its messages removed, through
//! the same worker, timestamps and [`StageProgram`] as the pipeline: only
//! the waiting for other devices is gone. An action whose input would have
//! arrived as a message reads a fixed activation instead, written into its
//! input buffer with `queue.write_buffer` before its submission — as the
//! transport writes a received one — so every action computes on ordinary
//! numbers, outside its timed span.
//!
//! The co-run minus the solo time is what the machine takes from running P
//! devices at once (on this machine: two cores for two software adapters;
//! on real GPUs a shared PCIe switch, memory bus or power budget); the
//! pipeline's action time minus the co-run time is what the pipeline itself
//! costs.

use serde::Serialize;

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::executor::fed::{without_messages, Fed};
use crate::executor::plan::Plan;
use crate::executor::{run_plan, Cluster, DeviceGroup, InProcess, StageProgram};
use crate::io::TokenBatch;
use crate::microbatch::Microbatches;
use crate::model::Shard;
use crate::schedule::Schedule;
use crate::timing::median;
use crate::trace::{Timeline, Track};
use crate::workload::forward::Gpt2Forward;
use crate::workload::resident::Resident;

/// Median action times of the two controls, in ms.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Controls {
    /// Per device: the median of its actions, run with nothing else running.
    pub solo_ms: Vec<f64>,
    /// Per device: the same while every device runs its own actions at once.
    pub corun_ms: Vec<f64>,
    /// Per stage: the median of the stage's actions, solo (the simulator's
    /// input; the same as `solo_ms` when each device holds one stage).
    pub solo_stage_ms: Vec<f64>,
    /// Per stage, co-run.
    pub corun_stage_ms: Vec<f64>,
}

/// Run both controls of `schedule` over `groups`: device `d`'s program is
/// `make(d, shard, gpu)`, fed fixed inputs where its messages were. The solo runs
/// go one device after the other, then the co-run. Under MPI (`groups` from
/// [`Cluster::device_groups`]) device `d`'s solo run is on rank `d` while
/// the others wait, its times shared with every rank, and the co-run is
/// over the ranks' net: every rank gets the same controls.
pub fn run_controls<P, F>(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    schedule: &Schedule,
    make: F,
) -> Result<Controls>
where
    P: StageProgram,
    F: Fn(usize, Shard, &Gpu) -> Result<P> + Sync,
{
    crate::executor::check_devices(schedule, groups)?;
    crate::schedule::validate::validate(schedule)?;
    // `run_on(d)` runs device d's solo on rank d: one Gpu per device.
    if cluster.rank().is_some() && groups.iter().any(|g| g.tp() > 1) {
        return Err(Error::Input(
            "the solo and co-run controls across MPI ranks need one Gpu per device (no --tp)"
                .into(),
        ));
    }
    let plan = Plan::new(schedule);
    let bare = without_messages(&plan);
    let fed = |d: usize, sh: Shard, gpu: &Gpu| Ok(Fed::new(make(d, sh, gpu)?, &plan.devices[d]));
    let stages = schedule.stages();

    let mut solo_events = Vec::new();
    for (d, g) in groups.iter().enumerate() {
        // (stage, µs) of each of device d's actions, run where d is driven.
        let times: Vec<(usize, f64)> = cluster.run_on(d, || {
            let one = Plan {
                devices: vec![bare.devices[d].clone()],
            };
            let solo = std::slice::from_ref(g);
            let timeline = run_plan(solo, &one, &InProcess::for_groups(solo), |_, sh, gpu| {
                fed(d, sh, gpu)
            })?
            .timeline;
            Ok(action_times(&timeline)
                .into_iter()
                .map(|(_, stage, t)| (stage, t))
                .collect())
        })?;
        // The single-device run calls its device 0: put it back at d.
        solo_events.extend(times.into_iter().map(|(stage, t)| (d, stage, t)));
    }
    let timeline = run_plan(groups, &bare, &cluster.net_for(groups)?, fed)?.timeline;
    let corun_events = action_times(&timeline);

    Ok(Controls {
        solo_ms: per_device(&solo_events, groups.len()),
        corun_ms: per_device(&corun_events, groups.len()),
        solo_stage_ms: per_stage(&solo_events, stages),
        corun_stage_ms: per_stage(&corun_events, stages),
    })
}

/// The controls of GPT-2 inference: what
/// [`crate::workload::forward::run_resident`] would run with the same
/// arguments, without its messages.
pub fn inference_controls(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    resident: &Resident,
    tokens: &TokenBatch,
    schedule: &Schedule,
) -> Result<Controls> {
    crate::io::check_input(&resident.cfg, tokens)?;
    crate::executor::check_devices(schedule, groups)?;
    resident.check(groups, schedule.devices, schedule.stages())?;
    let mbs = Microbatches::split(tokens, schedule.microbatches)?;
    let tp = resident.tp;
    run_controls(groups, cluster, schedule, |d, shard, gpu| {
        Gpt2Forward::resident(gpu, resident.stages(d * tp + shard.rank)?, &mbs)
    })
}

/// (device, stage, µs) of every compute event with an action (a
/// tensor-parallel group's rank 0's, as the bubble counts them).
fn action_times(t: &Timeline) -> Vec<(usize, usize, f64)> {
    t.events
        .iter()
        .filter_map(|e| match (e.track, e.action) {
            (Track::Compute { device, gpu: 0 }, Some(a)) => {
                Some((device, a.stage, e.duration_us()))
            }
            _ => None,
        })
        .collect()
}

fn per_device(events: &[(usize, usize, f64)], devices: usize) -> Vec<f64> {
    (0..devices)
        .map(|d| {
            let v = events.iter().filter(|e| e.0 == d).map(|e| e.2).collect();
            median(v) / 1e3
        })
        .collect()
}

fn per_stage(events: &[(usize, usize, f64)], stages: usize) -> Vec<f64> {
    (0..stages)
        .map(|s| {
            let v = events.iter().filter(|e| e.1 == s).map(|e| e.2).collect();
            median(v) / 1e3
        })
        .collect()
}
