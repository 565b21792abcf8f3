//! The measured bubble beside the simulated and the analytic one.
//!
//! Measured: from the run's compute events, `1 − Σ busy / (P × makespan)`
//! ([`crate::trace::Timeline::stats`]). Simulated: the same schedule run
//! through the simulator with the *measured* times — the median forward time
//! of each stage and the median transfer — so it shows what the schedule
//! would give with this hardware's costs and no orchestration overhead.
//! Analytic: the closed form for the schedule's forward part
//! ([`analytic::bubble`]; NaN for a schedule not named after a generator).

use serde::Serialize;

use super::PipelineRun;
use crate::error::Result;
use crate::schedule::{analytic, simulate, Costs, Kind, Schedule};
use crate::trace::Track;

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
    pub transfer_ms: f64,
    pub transfers: usize,
    pub bytes_moved: u64,
    /// `gpu-timestamps` or `host`.
    pub clock: String,
}

/// The median of `v`; 0 for an empty list (no transfers, say).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn measure(schedule: &Schedule, run: &PipelineRun, tokens: usize) -> Result<Measurement> {
    let stats = run.timeline.stats();
    let stages = schedule.stages();
    let mut per_stage: Vec<Vec<f64>> = vec![Vec::new(); stages];
    let mut transfer = Vec::new();
    for e in &run.timeline.events {
        match (e.track, e.action) {
            (Track::Compute { .. }, Some(a)) if a.kind == Kind::F => {
                per_stage[a.stage].push(e.duration_us())
            }
            (Track::Transfer { .. }, _) => transfer.push(e.duration_us()),
            _ => {}
        }
    }
    let forward: Vec<f64> = per_stage.into_iter().map(median).collect();
    let transfer = median(transfer);
    let costs = Costs {
        forward: forward.clone(),
        backward: vec![0.0; stages],
        input_grad: vec![0.0; stages],
        weight_grad: vec![0.0; stages],
        transfer,
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
        wall_ms: run.wall_s * 1e3,
        bubble_measured: stats.bubble,
        bubble_simulated: sim.bubble,
        bubble_analytic: schedule
            .kind()
            .map_or(f64::NAN, |k| analytic::bubble(k, p, m, v, true)),
        tokens_per_s: tokens as f64 / run.wall_s,
        busy_ms: stats.busy_us.iter().map(|x| x / 1e3).collect(),
        idle_ms: stats.idle_us.iter().map(|x| x / 1e3).collect(),
        forward_ms: forward.iter().map(|x| x / 1e3).collect(),
        transfer_ms: transfer / 1e3,
        transfers: run.transfers.len(),
        bytes_moved: run.bytes_moved(),
        clock: run.timeline.clock.clone(),
    })
}
