//! Discrete-event simulation of a schedule: the dependency walk
//! (`walk.rs`: rows in order, an action starts when its device is free
//! and what it needs has arrived) with the given [`Costs`], returned as plain
//! [`Simulation`] data. The trace's `Timeline::from_simulation` turns it
//! into a timeline for the renderers.

use std::collections::HashMap;

use crate::schedule::{walk, Action, Kind, Schedule, ScheduleError};
use crate::timing::{BubbleStats, Simulation, Slot};

/// Time of each kind of action, per stage, and of one transfer, in µs.
#[derive(Clone, Debug, PartialEq)]
pub struct Costs {
    pub forward: Vec<f64>,
    pub backward: Vec<f64>,
    pub input_grad: Vec<f64>,
    pub weight_grad: Vec<f64>,
    pub transfer: f64,
}

impl Costs {
    /// The same times for every one of `stages` stages.
    pub fn uniform(stages: usize, f: f64, b: f64, i: f64, w: f64, transfer: f64) -> Costs {
        Costs {
            forward: vec![f; stages],
            backward: vec![b; stages],
            input_grad: vec![i; stages],
            weight_grad: vec![w; stages],
            transfer,
        }
    }

    /// Duration of one action.
    pub fn of(&self, a: &Action) -> f64 {
        let per_stage = match a.kind {
            Kind::F => &self.forward,
            Kind::B => &self.backward,
            Kind::I => &self.input_grad,
            Kind::W => &self.weight_grad,
        };
        per_stage[a.stage]
    }

    fn check(&self, stages: usize) -> Result<(), ScheduleError> {
        let lists = [
            ("forward", &self.forward),
            ("backward", &self.backward),
            ("input-gradient", &self.input_grad),
            ("weight-gradient", &self.weight_grad),
        ];
        for (what, list) in lists {
            if list.len() != stages {
                return Err(ScheduleError::CostsMismatch {
                    what,
                    got: list.len(),
                    stages,
                });
            }
        }
        Ok(())
    }
}

/// Runs `s` with `c`. Each device runs its row in order (idle cells only mark
/// steps); an action starts when its device is free and what it needs has
/// finished, plus `c.transfer` when that was made on another device.
/// Transfers occupy neither device. A deadlock names who waits on what.
pub fn simulate(s: &Schedule, c: &Costs) -> Result<Simulation, ScheduleError> {
    walk::check_cells(s)?;
    c.check(s.stages())?;
    let walk::Walk { slots, transfers } = walk::walk(s, |a| c.of(a), c.transfer)?;
    let stats =
        BubbleStats::from_compute(s.devices, slots.iter().map(|x| (x.device, x.start, x.end)));
    let peak_activations = peak_activations(&slots, s.devices, s.is_forward_only());
    Ok(Simulation {
        slots,
        transfers,
        makespan: stats.makespan_us,
        busy: stats.busy_us,
        idle: stats.idle_us,
        bubble: stats.bubble,
        peak_activations,
    })
}

/// Peak number of activations held per device; see [`Simulation`].
fn peak_activations(slots: &[Slot], p: usize, forward_only: bool) -> Vec<usize> {
    // (stage, microbatch) -> (device, held from, held until)
    let mut held: HashMap<(usize, usize), (usize, f64, f64)> = HashMap::new();
    for &Slot {
        device: d,
        action: a,
        start,
        end,
    } in slots
    {
        let key = (a.stage, a.microbatch);
        match a.kind {
            Kind::F => {
                let entry = held.entry(key).or_insert((d, start, end));
                entry.0 = d;
                entry.1 = start;
                if forward_only {
                    entry.2 = end;
                }
            }
            Kind::B | Kind::I if !forward_only => {
                let entry = held.entry(key).or_insert((d, start, end));
                entry.2 = end;
            }
            _ => {}
        }
    }
    let mut points: Vec<Vec<(f64, i64)>> = vec![Vec::new(); p];
    for (d, from, until) in held.into_values() {
        points[d].push((from, 1));
        points[d].push((until.max(from), -1));
    }
    points
        .into_iter()
        .map(|mut pts| {
            // Releases before acquisitions at the same instant.
            pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let (mut now, mut peak) = (0i64, 0i64);
            for (_, delta) in pts {
                now += delta;
                peak = peak.max(now);
            }
            peak as usize
        })
        .collect()
}
