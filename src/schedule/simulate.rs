//! Discrete-event simulation of a schedule.
//!
//! Each device runs its row strictly in order (idle cells are skipped: they
//! only mark steps in the grid). An action starts when its device is free and
//! everything it needs has finished — plus `transfer` when what it needs was
//! made on another device. Transfers occupy neither device. Every device
//! waiting on something that never comes is a deadlock, reported per device.

use std::collections::HashMap;

use crate::schedule::{grid, validate, Action, Kind, Schedule, ScheduleError};
use crate::trace::{Event, Timeline, Track};

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

/// What a simulation found.
#[derive(Clone, Debug, PartialEq)]
pub struct Simulation {
    pub timeline: Timeline,
    pub makespan: f64,
    /// Per device, within the makespan.
    pub idle: Vec<f64>,
    /// 1 − Σ busy / (P × makespan); see [`crate::trace`].
    pub bubble: f64,
    /// Per device: the most (stage, microbatch) activations held at once.
    /// One is held from the start of its F until the end of its B (or of its
    /// I: that frees the bulk; W's residue is not counted, as in the ZB
    /// paper); in a forward-only schedule, only while its F runs. With one
    /// chunk per device this counts microbatches.
    pub peak_activations: Vec<usize>,
}

/// Runs `s` with `c`; see the module comment for the rules.
pub fn simulate(s: &Schedule, c: &Costs) -> Result<Simulation, ScheduleError> {
    validate::check_cells(s)?;
    c.check(s.stages())?;
    let (p, stages, m) = (s.devices, s.stages(), s.microbatches);
    // done[product] = (end time, device that made it)
    let mut done: Vec<Option<(f64, usize)>> = vec![None; 3 * stages * m];
    let mut pos = vec![0usize; p];
    let mut free = vec![0.0f64; p];
    let mut events = Vec::new();
    loop {
        let mut progressed = false;
        for d in 0..p {
            let row = &s.rows[d];
            while pos[d] < row.len() {
                let Some(a) = row[pos[d]] else {
                    pos[d] += 1;
                    continue;
                };
                let needs = a.needs(stages);
                let made: Option<Vec<(f64, usize)>> =
                    needs.iter().map(|n| done[n.index(m)]).collect();
                let Some(made) = made else { break };
                let mut start = free[d];
                for &(end, from) in &made {
                    if from != d {
                        start = start.max(end + c.transfer);
                        if c.transfer > 0.0 {
                            let track = Track::Transfer { from, to: d };
                            let name = format!("{a} {from}->{d}");
                            events.push(Event {
                                track,
                                name,
                                action: Some(a),
                                start_us: end,
                                end_us: end + c.transfer,
                                bytes: 0,
                            });
                        }
                    } else {
                        start = start.max(end);
                    }
                }
                let end = start + c.of(&a);
                events.push(Event {
                    track: Track::compute(d),
                    name: a.to_string(),
                    action: Some(a),
                    start_us: start,
                    end_us: end,
                    bytes: 0,
                });
                done[a.produces().index(m)] = Some((end, d));
                free[d] = end;
                pos[d] += 1;
                progressed = true;
            }
        }
        if (0..p).all(|d| pos[d] >= s.rows[d].len()) {
            break;
        }
        if !progressed {
            return Err(deadlock(s, &pos, &done));
        }
    }
    let timeline = Timeline {
        device_names: (0..p).map(|d| format!("device {d}")).collect(),
        events,
        clock: "simulated".into(),
    };
    let stats = timeline.stats();
    let peak_activations = peak_activations(&timeline, p, s.is_forward_only());
    Ok(Simulation {
        makespan: stats.makespan_us,
        idle: stats.idle_us,
        bubble: stats.bubble,
        peak_activations,
        timeline,
    })
}

/// Names each blocked device, the action it waits at and what it lacks.
fn deadlock(s: &Schedule, pos: &[usize], done: &[Option<(f64, usize)>]) -> ScheduleError {
    let (stages, m) = (s.stages(), s.microbatches);
    let mut waits = Vec::new();
    let mut marks = Vec::new();
    for (d, &step) in pos.iter().enumerate() {
        let Some(Some(a)) = s.rows[d].get(step) else {
            continue;
        };
        marks.push((d, step));
        for n in a
            .needs(stages)
            .into_iter()
            .filter(|n| done[n.index(m)].is_none())
        {
            let maker = s.actions().find(|(_, _, b)| b.produces() == n);
            let whence = match maker {
                Some((md, mstep, b)) => match pos[md] {
                    p if p < s.rows[md].len() => format!(
                        "{b}, which device {md} would run at step {mstep} but is itself stuck at step {p}"
                    ),
                    _ => format!("{b}, which device {md} has at step {mstep}"),
                },
                None => format!("{n}, which no device's row contains"),
            };
            waits.push(format!(
                "  device {d} waits at step {step} on {a}: it needs {whence}"
            ));
        }
    }
    ScheduleError::Deadlock {
        waits: waits.join("\n"),
        grid: grid::render(s, &marks),
    }
}

/// Peak number of activations held per device; see [`Simulation`].
fn peak_activations(t: &Timeline, p: usize, forward_only: bool) -> Vec<usize> {
    // (stage, microbatch) -> (device, held from, held until)
    let mut held: HashMap<(usize, usize), (usize, f64, f64)> = HashMap::new();
    for e in &t.events {
        let (Track::Compute { device: d, .. }, Some(a)) = (e.track, e.action) else {
            continue;
        };
        let key = (a.stage, a.microbatch);
        match a.kind {
            Kind::F => {
                let entry = held.entry(key).or_insert((d, e.start_us, e.end_us));
                entry.0 = d;
                entry.1 = e.start_us;
                if forward_only {
                    entry.2 = e.end_us;
                }
            }
            Kind::B | Kind::I if !forward_only => {
                let entry = held.entry(key).or_insert((d, e.start_us, e.end_us));
                entry.2 = e.end_us;
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
