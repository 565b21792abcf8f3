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

use std::collections::HashMap;

use serde::Serialize;

use super::measure::median;
use super::net::run_on;
use super::plan::{Plan, Step};
use super::program::{Gpt2Forward, StageProgram};
use super::{run_plan, ActionEncoder, DeviceGroup, InProcess, Net, Options};
use crate::action::{Action, Product};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::io::TokenBatch;
use crate::model::{Gpt2Weights, Shard};
use crate::schedule::Schedule;
use crate::trace::{Timeline, Track};

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

/// `plan` with every message removed: each device's steps in the same
/// order, receiving and sending nothing.
pub fn without_messages(plan: &Plan) -> Plan {
    Plan {
        devices: plan
            .devices
            .iter()
            .map(|steps| {
                steps
                    .iter()
                    .map(|s| Step {
                        action: s.action,
                        inputs: Vec::new(),
                        outputs: Vec::new(),
                    })
                    .collect()
            })
            .collect(),
    }
}

/// A program whose actions read fixed inputs in place of the messages a
/// plan without messages no longer delivers.
pub struct Fed<P> {
    inner: P,
    /// Per action: the products that would have arrived as messages.
    feeds: HashMap<Action, Vec<Product>>,
    /// The fixed input, as long as the longest message.
    bytes: Vec<u8>,
}

impl<P: StageProgram> Fed<P> {
    /// Feed `inner` the inputs `steps` (with their messages) would have
    /// received.
    pub fn new(inner: P, steps: &[Step]) -> Fed<P> {
        let feeds: HashMap<Action, Vec<Product>> = steps
            .iter()
            .filter(|s| !s.inputs.is_empty())
            .map(|s| (s.action, s.inputs.iter().map(|i| i.product).collect()))
            .collect();
        let longest = feeds
            .values()
            .flatten()
            .map(|&p| inner.message_bytes(p))
            .max()
            .unwrap_or(0);
        Fed {
            inner,
            feeds,
            bytes: fixed_input((longest as usize).div_ceil(4)),
        }
    }
}

/// `n` f32 of a fixed, roughly unit-scale pattern (a residual stream's
/// order of magnitude), as bytes.
fn fixed_input(n: usize) -> Vec<u8> {
    let vals: Vec<f32> = (0..n)
        .map(|i| {
            // A cheap deterministic hash to [-1, 1).
            let h = (i as u32).wrapping_mul(2_654_435_761).rotate_left(13) ^ 0x9e37_79b9;
            (h as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect();
    bytemuck::cast_slice(&vals).to_vec()
}

impl<P: StageProgram> StageProgram for Fed<P> {
    type Output = P::Output;

    fn message_bytes(&self, p: Product) -> u64 {
        self.inner.message_bytes(p)
    }

    fn input(&self, consumer: Action, p: Product) -> &wgpu::Buffer {
        self.inner.input(consumer, p)
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        self.inner.output(producer)
    }

    fn encode(&mut self, gpu: &Gpu, a: Action, enc: &mut ActionEncoder) -> Result<()> {
        if let Some(products) = self.feeds.get(&a) {
            for &p in products {
                let bytes = self.inner.message_bytes(p) as usize;
                gpu.queue
                    .write_buffer(self.inner.input(a, p), 0, &self.bytes[..bytes]);
            }
        }
        self.inner.encode(gpu, a, enc)
    }

    fn encode_results(&mut self, gpu: &Gpu, a: Action, enc: &mut wgpu::CommandEncoder) {
        self.inner.encode_results(gpu, a, enc)
    }

    fn finish(self, gpu: &Gpu) -> Result<Self::Output> {
        self.inner.finish(gpu)
    }

    fn output_to_bytes(o: &Self::Output) -> Option<Vec<u8>> {
        P::output_to_bytes(o)
    }
    fn output_from_bytes(b: &[u8]) -> Option<Self::Output> {
        P::output_from_bytes(b)
    }
}

/// Run both controls of `schedule` over `groups`: device `d`'s program is
/// `make(d, shard, gpu)`, fed fixed inputs where its messages were. The solo runs
/// go one device after the other, then the co-run. Under MPI (`groups` from
/// [`super::net::device_groups`]) device `d`'s solo run is on rank `d` while
/// the others wait, its times shared with every rank, and the co-run is
/// over the ranks' net: every rank gets the same controls.
pub fn run_controls<P, F>(groups: &[DeviceGroup], schedule: &Schedule, make: F) -> Result<Controls>
where
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
    crate::schedule::validate::validate(schedule)?;
    // `run_on(d)` runs device d's solo on rank d: one Gpu per device.
    if super::net::mpi_rank().is_some() && groups.iter().any(|g| g.tp() > 1) {
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
        let times: Vec<(usize, f64)> = run_on(d, || {
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
    let timeline = run_plan(groups, &bare, &Net::for_groups(groups)?, fed)?.timeline;
    let corun_events = action_times(&timeline);

    Ok(Controls {
        solo_ms: per_device(&solo_events, groups.len()),
        corun_ms: per_device(&corun_events, groups.len()),
        solo_stage_ms: per_stage(&solo_events, stages),
        corun_stage_ms: per_stage(&corun_events, stages),
    })
}

/// The controls of GPT-2 inference: what [`super::run_inference`] would run
/// with the same arguments, without its messages.
pub fn inference_controls(
    groups: &[DeviceGroup],
    w: &Gpt2Weights,
    tokens: &TokenBatch,
    schedule: &Schedule,
    opts: &Options,
) -> Result<Controls> {
    let job = super::Inference::prepare(w, tokens, schedule, opts)?;
    run_controls(groups, schedule, |d, shard, gpu| {
        Gpt2Forward::new(gpu, shard, &job.held(w, schedule, d)?, &job.mbs)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleKind;

    #[test]
    fn removing_messages_keeps_every_action_in_order() {
        let s = Schedule::for_inference(ScheduleKind::Interleaved, 2, 4, 2).unwrap();
        let plan = Plan::new(&s);
        let bare = without_messages(&plan);
        for (full, bare) in plan.devices.iter().zip(&bare.devices) {
            let a: Vec<Action> = full.iter().map(|s| s.action).collect();
            let b: Vec<Action> = bare.iter().map(|s| s.action).collect();
            assert_eq!(a, b);
            assert!(bare
                .iter()
                .all(|s| s.inputs.is_empty() && s.outputs.is_empty()));
        }
    }

    #[test]
    fn the_fixed_input_is_finite_and_unit_scale() {
        let v: Vec<f32> = bytemuck::pod_collect_to_vec(&fixed_input(1000));
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|x| x.is_finite() && x.abs() <= 1.0));
        let mean = v.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.2, "mean {mean}");
    }
}
