//! The measured bubble beside the simulated and the analytic one.
//!
//! Measured: from the run's compute events, `1 − Σ busy / (P × makespan)`
//! ([`crate::trace::Timeline::stats`]). Simulated: the same schedule run
//! through the simulator with the *measured* times — the median F (and, in
//! training, B, I and W) time of each stage and the median transfer — so it
//! shows what the schedule would give with this hardware's costs and no
//! orchestration overhead. Analytic: the closed form for the schedule as run,
//! forward-only or training ([`analytic::bubble`]; NaN for a schedule not
//! named after a generator).

use serde::Serialize;

use crate::error::Result;
use crate::executor::TransferRecord;
use crate::schedule::{analytic, simulate, Costs, Kind, Schedule};
use crate::timing::median;
use crate::trace::{Timeline, Track};
use crate::workload::forward::PipelineRun;

#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub schedule: String,
    pub devices: usize,
    pub microbatches: usize,
    #[serde(rename = "virtual")]
    pub virtual_stages: usize,
    pub makespan_ms: f64,
    pub wall_ms: f64,
    pub bubble_measured: f64,
    pub bubble_simulated: f64,
    pub bubble_analytic: f64,
    pub tokens_per_s: f64,
    /// Busy and idle milliseconds per device.
    pub busy_ms: Vec<f64>,
    pub idle_ms: Vec<f64>,
    /// Median forward time per stage and median transfer, in ms (the simulator's inputs).
    pub forward_ms: Vec<f64>,
    /// Training: median B, I and W time per stage, in ms (empty when the
    /// schedule has no such action).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backward_ms: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub input_grad_ms: Vec<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub weight_grad_ms: Vec<f64>,
    pub transfer_ms: f64,
    pub transfers: usize,
    pub bytes_moved: u64,
    /// `gpu-timestamps` or `host`.
    pub clock: String,
}

pub fn measure(schedule: &Schedule, run: &PipelineRun, tokens: usize) -> Result<Measurement> {
    measure_timeline(schedule, &run.timeline, run.wall_s, &run.transfers, tokens)
}

/// [`measure`] from a run's parts: its timeline, host seconds and messages.
/// Each action kind's cost per stage is its median measured time.
pub fn measure_timeline(
    schedule: &Schedule,
    timeline: &Timeline,
    wall_s: f64,
    transfers: &[TransferRecord],
    tokens: usize,
) -> Result<Measurement> {
    let stats = timeline.stats();
    let stages = schedule.stages();
    let kinds = [Kind::F, Kind::B, Kind::I, Kind::W];
    let mut per_stage: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); stages]; kinds.len()];
    let mut transfer = Vec::new();
    for e in &timeline.events {
        match (e.track, e.action) {
            (Track::Compute { .. }, Some(a)) if a.stage < stages => {
                let k = kinds.iter().position(|k| *k == a.kind).expect("every kind");
                per_stage[k][a.stage].push(e.duration_us())
            }
            (Track::Transfer { .. }, _) => transfer.push(e.duration_us()),
            _ => {}
        }
    }
    let has = |k: usize| per_stage[k].iter().any(|v| !v.is_empty());
    let present: Vec<bool> = (0..kinds.len()).map(has).collect();
    let mut medians = per_stage
        .into_iter()
        .map(|v| v.into_iter().map(median).collect::<Vec<f64>>());
    let forward = medians.next().expect("F");
    let backward = medians.next().expect("B");
    let input_grad = medians.next().expect("I");
    let weight_grad = medians.next().expect("W");
    let transfer = median(transfer);
    let costs = Costs {
        forward: forward.clone(),
        backward: backward.clone(),
        input_grad: input_grad.clone(),
        weight_grad: weight_grad.clone(),
        transfer,
    };
    let ms = |v: Vec<f64>, k: usize| {
        if present[k] {
            v.iter().map(|x| x / 1e3).collect()
        } else {
            Vec::new()
        }
    };
    let sim = simulate(schedule, &costs)?;
    let (p, m, v) = (
        schedule.devices,
        schedule.microbatches,
        schedule.virtual_stages,
    );
    Ok(Measurement {
        schedule: schedule.name.clone(),
        devices: p,
        microbatches: m,
        virtual_stages: v,
        makespan_ms: stats.makespan_us / 1e3,
        wall_ms: wall_s * 1e3,
        bubble_measured: stats.bubble,
        bubble_simulated: sim.bubble,
        bubble_analytic: schedule.kind().map_or(f64::NAN, |k| {
            analytic::bubble(k, p, m, v, schedule.is_forward_only())
        }),
        tokens_per_s: tokens as f64 / wall_s,
        busy_ms: stats.busy_us.iter().map(|x| x / 1e3).collect(),
        idle_ms: stats.idle_us.iter().map(|x| x / 1e3).collect(),
        forward_ms: forward.iter().map(|x| x / 1e3).collect(),
        backward_ms: ms(backward, 1),
        input_grad_ms: ms(input_grad, 2),
        weight_grad_ms: ms(weight_grad, 3),
        transfer_ms: transfer / 1e3,
        transfers: transfers.len(),
        bytes_moved: transfers.iter().map(|t| t.bytes).sum(),
        clock: timeline.clock.clone(),
    })
}

/// The run's figures in three lines: makespan and throughput, the bubble
/// measured beside simulated and analytic, and the transfers.
impl std::fmt::Display for Measurement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = |ms: f64| crate::trace::axis::duration(ms * 1e3);
        writeln!(
            f,
            "{} P={} M={} v={}: makespan {} (wall {}), {:.0} tokens/s, clock: {}",
            self.schedule,
            self.devices,
            self.microbatches,
            self.virtual_stages,
            d(self.makespan_ms),
            d(self.wall_ms),
            self.tokens_per_s,
            self.clock
        )?;
        writeln!(
            f,
            "bubble: measured {:.1}%   simulated {:.1}%   analytic {:.1}%",
            100.0 * self.bubble_measured,
            100.0 * self.bubble_simulated,
            100.0 * self.bubble_analytic
        )?;
        write!(
            f,
            "transfers: {} hops, {:.2} MB, median {}",
            self.transfers,
            self.bytes_moved as f64 / 1e6,
            d(self.transfer_ms)
        )
    }
}
