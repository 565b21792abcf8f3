//! What `wgpipe plan` reports of a schedule: its grid, the simulated and
//! analytic bubble, and each device's peak activations and idle time — as
//! text ([`PlanReport::text`]) or, serialised, JSON.

use std::fmt::Write;

use serde::Serialize;

use super::{analytic, grid, Costs, Schedule, ScheduleKind, Simulation};

/// A schedule's figures under uniform costs.
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    pub schedule: String,
    pub devices: usize,
    pub microbatches: usize,
    #[serde(rename = "virtual")]
    pub virtual_stages: usize,
    pub forward_only: bool,
    pub makespan: f64,
    pub bubble_simulated: f64,
    /// The closed form's bubble; `None` (null) when the schedule is not
    /// named after a generator.
    pub bubble_analytic: Option<f64>,
    /// Per device.
    pub peak_activations: Vec<usize>,
    pub idle: Vec<f64>,
    pub transfer_time: f64,
    /// The grid: per device, its actions (`1F0`) and bubbles (null).
    pub rows: Vec<Vec<Option<String>>>,
    #[serde(skip)]
    text: String,
}

impl PlanReport {
    /// The figures of `s`, simulated as `sim` under `costs`.
    pub fn new(s: &Schedule, sim: &Simulation, costs: &Costs) -> PlanReport {
        let analytic = analytic_bubble(s);
        PlanReport {
            schedule: s.name.clone(),
            devices: s.devices,
            microbatches: s.microbatches,
            virtual_stages: s.virtual_stages,
            forward_only: s.is_forward_only(),
            makespan: sim.makespan,
            bubble_simulated: sim.bubble,
            bubble_analytic: analytic,
            peak_activations: sim.peak_activations.clone(),
            idle: sim.idle.clone(),
            transfer_time: costs.transfer,
            rows: s
                .rows
                .iter()
                .map(|r| r.iter().map(|c| c.map(|a| a.to_string())).collect())
                .collect(),
            text: report_text(s, sim, analytic, costs),
        }
    }

    /// The grid, then per-device peak activations and idle time, then the bubble.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// ", forward-only" or ", training".
pub fn mode(s: &Schedule) -> &'static str {
    if s.is_forward_only() {
        ", forward-only"
    } else {
        ", training"
    }
}

/// The closed-form bubble ([`analytic::bubble`]) of a schedule named after a
/// generator; None for any other name.
pub fn analytic_bubble(s: &Schedule) -> Option<f64> {
    let (p, m, v) = (s.devices, s.microbatches, s.virtual_stages);
    s.kind()
        .map(|k| analytic::bubble(k, p, m, v, s.is_forward_only()))
}

/// The grid, then per-device peak activations and idle time, then the bubble.
fn report_text(s: &Schedule, sim: &Simulation, analytic: Option<f64>, costs: &Costs) -> String {
    let mut out = String::new();
    let cost = |v: &[f64]| v.first().copied().unwrap_or(0.0);
    let _ = writeln!(
        out,
        "{}: {} devices × {} chunk(s), {} microbatches{} (F={} B={} I={} W={} transfer={})\n",
        s.name,
        s.devices,
        s.virtual_stages,
        s.microbatches,
        mode(s),
        cost(&costs.forward),
        cost(&costs.backward),
        cost(&costs.input_grad),
        cost(&costs.weight_grad),
        costs.transfer
    );
    out.push_str(&grid::render(s, &[]));
    let _ = writeln!(out, "\ndevice  peak activations  busy        idle");
    for (d, (peak, (busy, idle))) in sim
        .peak_activations
        .iter()
        .zip(sim.busy.iter().zip(&sim.idle))
        .enumerate()
    {
        let _ = writeln!(out, "{d:<6}  {peak:>16}  {busy:>10.2}  {idle:>10.2}");
    }
    let analytic = analytic
        .map(|b| format!("{:.2} %", b * 100.0))
        .unwrap_or_else(|| "n/a".into());
    let _ = writeln!(
        out,
        "\nmakespan {:.2}   bubble: simulated {:.2} %, analytic {}",
        sim.makespan,
        sim.bubble * 100.0,
        analytic
    );
    if s.kind() == Some(ScheduleKind::ZbH1) && !s.is_forward_only() && s.microbatches < s.devices {
        out.push_str("(ZB-H1's formula assumes M >= P; with fewer microbatches too few W's fill the drain)\n");
    }
    if s.virtual_stages > 1 {
        let _ = writeln!(
            out,
            "(peak activations count one chunk's activations for one microbatch; a chunk is 1/{} of a device's layers)",
            s.virtual_stages
        );
    }
    out
}
