//! [`Pipeline::serve`]: continuous batching over the pipeline, the engine
//! behind `wgpipe serve` — segment after segment of the decode schedule,
//! each pass's rows chosen by a [`Feeder`] as the first device reaches it,
//! over KV caches and programs built once (see
//! [`crate::workload::decode::continuous`]).

use std::sync::Arc;

use super::Pipeline;
use crate::error::{Error, Result};
use crate::executor::run_programs;
use crate::model::Shard;
use crate::schedule::Schedule;
use crate::trace::{Timeline, Track};
use crate::workload::decode::continuous::{Feeder, PassShape, Passes, ServeDecode, ServeEndpoint};

/// What one segment of serving measured.
#[derive(Clone, Debug)]
pub struct Segment {
    /// Passes the first device ran.
    pub passes: usize,
    pub wall_s: f64,
    /// 1 − (device busy time) / (devices × the segment's span), GPU
    /// timestamps: the decode bubble, time spent waiting for requests included.
    pub bubble: f64,
    pub timeline: Timeline,
}

impl Pipeline {
    /// Serve: run segments of `shape.segment` microbatches over `shape.groups`
    /// groups in flight until the feeder ends the run ([`Feeder::next_pass`]
    /// returns `None`, then `stopped()` is true and this returns `Ok`).
    /// `on_ready` is called once the programs and KV caches are built,
    /// `on_segment` with each completed segment. A device failure returns
    /// its error (naming the device).
    pub fn serve(
        &self,
        feeder: Arc<dyn Feeder>,
        shape: PassShape,
        stopped: &dyn Fn() -> bool,
        on_ready: &mut dyn FnMut(),
        on_segment: &mut dyn FnMut(Segment),
    ) -> Result<()> {
        if self.virtual_stages != 1 {
            return Err(Error::Input(format!(
                "serving runs one stage per device; this pipeline has {} per device",
                self.virtual_stages
            )));
        }
        if self.cluster.rank().is_some() {
            return Err(Error::Input(
                "serve runs every device in one process: --transport mpi is not supported".into(),
            ));
        }
        if shape.groups == 0 || shape.segment < shape.groups || shape.rows == 0 || shape.slots == 0
        {
            return Err(Error::Input(format!(
                "serving needs at least one group, slot and row per pass: {shape:?}"
            )));
        }
        let _busy = self.lock();
        let resident = self.resident()?;
        let groups = self.groups()?;
        let p = self.devices;
        let tp = self.tp;
        let steps = shape.segment / shape.groups;
        let schedule = Schedule::decode(p, shape.groups, steps)?;
        resident.check(&groups, schedule.devices, schedule.stages())?;
        let mut endpoints = Vec::new();
        for (d, g) in groups.iter().enumerate() {
            for (rank, gpu) in g.ranks() {
                let shard = Shard { rank, of: tp };
                let held = resident.stages(d * tp + rank)?;
                endpoints.push(ServeEndpoint::new(gpu, shard, held, p, shape)?);
            }
        }
        on_ready();
        loop {
            // A run's coordination (its clock, who is ready, who finished) is its own.
            let net = self.cluster.net_for(&groups)?;
            let passes = Passes::new(feeder.clone(), &net);
            let ran = run_programs(&groups, &schedule, &net, |d, shard, _gpu| {
                Ok(ServeDecode::new(
                    &endpoints[d * tp + shard.rank],
                    &passes,
                    d,
                    shard,
                ))
            });
            match ran {
                Ok(ran) => on_segment(measure(p, ran.timeline, ran.wall_s)),
                Err(_) if stopped() => return Ok(()),
                Err(e) => return Err(e),
            }
            if stopped() {
                return Ok(());
            }
        }
    }
}

/// A segment's passes and bubble from its timeline.
fn measure(p: usize, timeline: Timeline, wall_s: f64) -> Segment {
    let compute = || {
        timeline
            .events
            .iter()
            .filter(|e| matches!(e.track, Track::Compute { gpu: 0, .. }))
    };
    let busy: f64 = compute().map(|e| e.end_us - e.start_us).sum();
    let start = compute().map(|e| e.start_us).fold(f64::INFINITY, f64::min);
    let end = compute()
        .map(|e| e.end_us)
        .fold(f64::NEG_INFINITY, f64::max);
    let span = (end - start).max(1e-9);
    let passes = compute()
        .filter(|e| matches!(e.track, Track::Compute { device: 0, .. }))
        .count();
    Segment {
        passes,
        wall_s,
        bubble: (1.0 - busy / (p as f64 * span)).clamp(0.0, 1.0),
        timeline,
    }
}
