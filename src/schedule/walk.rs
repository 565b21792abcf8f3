//! The dependency walk both validation and simulation stand on: the cell
//! check (everything a walk indexes is in range), then each device running
//! its row in order against the needs of [`Action::needs`].
//!
//! Each device runs its row strictly in order (idle cells are skipped: they
//! only mark steps in the grid). An action starts when its device is free and
//! everything it needs has finished — plus `transfer` when what it needs was
//! made on another device. Transfers occupy neither device. Every device
//! waiting on something that never comes is a deadlock, reported per device.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::schedule::{grid, Action, Kind, Product, Schedule, ScheduleError};
use crate::timing::{SimTransfer, Slot};

/// Where a walk placed every action and transfer.
pub(super) struct Walk {
    /// In the order they were placed: device by device, as far as each can go.
    pub slots: Vec<Slot>,
    /// Empty when `transfer` is 0.
    pub transfers: Vec<SimTransfer>,
}

/// Walks `s` with `duration` per action and `transfer` per hop between
/// devices, after [`check_cells`].
///
/// In rounds: each device in turn runs as far as it can. A device that
/// stops, waiting for a product, is visited again only once that product is
/// made — later in the same round when its maker comes before it, else in
/// the next round. That places the same actions in the same order as
/// visiting every device every round, in time proportional to the actions
/// rather than to devices × rounds (a chain of backwards against the device
/// order takes P rounds).
pub(super) fn walk(
    s: &Schedule,
    duration: impl Fn(&Action) -> f64,
    transfer: f64,
) -> Result<Walk, ScheduleError> {
    check_cells(s)?;
    let (p, stages, m) = (s.devices, s.stages(), s.microbatches);
    // done[product] = (end time, device that made it)
    let mut done: Vec<Option<(f64, usize)>> = vec![None; 3 * stages * m];
    let mut pos = vec![0usize; p];
    let mut free = vec![0.0f64; p];
    let mut out = Walk {
        slots: Vec::new(),
        transfers: Vec::new(),
    };
    // The devices stopped at an action lacking a product, by product.
    let mut waiting: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut round: BTreeSet<usize> = (0..p).collect();
    loop {
        let mut next = BTreeSet::new();
        while let Some(d) = round.pop_first() {
            let row = &s.rows[d];
            while pos[d] < row.len() {
                let Some(a) = row[pos[d]] else {
                    pos[d] += 1;
                    continue;
                };
                let needs = s.needs(&a);
                if let Some(n) = needs.iter().find(|n| done[n.index(m)].is_none()) {
                    waiting.entry(n.index(m)).or_default().push(d);
                    break;
                }
                let mut start = free[d];
                for &(end, from) in needs.iter().filter_map(|n| done[n.index(m)].as_ref()) {
                    if from == d {
                        start = start.max(end);
                        continue;
                    }
                    start = start.max(end + transfer);
                    if transfer > 0.0 {
                        out.transfers.push(SimTransfer {
                            from,
                            to: d,
                            action: a,
                            start: end,
                            end: end + transfer,
                        });
                    }
                }
                let end = start + duration(&a);
                out.slots.push(Slot {
                    device: d,
                    action: a,
                    start,
                    end,
                });
                let product = a.produces().index(m);
                done[product] = Some((end, d));
                for w in waiting.remove(&product).unwrap_or_default() {
                    // The devices still to come in this round are all past d.
                    if w > d {
                        round.insert(w);
                    } else {
                        next.insert(w);
                    }
                }
                free[d] = end;
                pos[d] += 1;
            }
        }
        // A device still waiting is in no round: when none was woken for the
        // next, every device has finished or none can go on.
        if next.is_empty() {
            if (0..p).all(|d| pos[d] >= s.rows[d].len()) {
                return Ok(out);
            }
            return Err(deadlock(s, &pos, &done));
        }
        round = next;
    }
}

/// Names each blocked device, the action it waits at and what it lacks.
fn deadlock(s: &Schedule, pos: &[usize], done: &[Option<(f64, usize)>]) -> ScheduleError {
    let m = s.microbatches;
    // Who makes each product (the first in row order), looked up once: a
    // search per blocked device would cost P × the actions.
    let mut makers: HashMap<Product, (usize, usize, Action)> = HashMap::new();
    for (d, step, b) in s.actions() {
        makers.entry(b.produces()).or_insert((d, step, b));
    }
    let mut waits = Vec::new();
    let mut marks = Vec::new();
    for (d, &step) in pos.iter().enumerate() {
        let Some(Some(a)) = s.rows[d].get(step) else {
            continue;
        };
        marks.push((d, step));
        for n in s
            .needs(a)
            .into_iter()
            .filter(|n| done[n.index(m)].is_none())
        {
            let whence = match makers.get(&n).copied() {
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

/// Validation's step 1, and what every walk needs first: sizes, and every
/// cell in range and on its stage's device.
pub(super) fn check_cells(s: &Schedule) -> Result<(), ScheduleError> {
    if s.devices == 0 {
        return Err(ScheduleError::Zero {
            what: "device",
            flag: "--devices",
        });
    }
    if s.microbatches == 0 {
        return Err(ScheduleError::Zero {
            what: "microbatch",
            flag: "--microbatches",
        });
    }
    if s.virtual_stages == 0 {
        return Err(ScheduleError::Zero {
            what: "chunk per device",
            flag: "--virtual",
        });
    }
    let Some(stages) = s.devices.checked_mul(s.virtual_stages) else {
        let problem = format!(
            "{} devices × {} chunks per device overflows",
            s.devices, s.virtual_stages
        );
        return Err(ScheduleError::invalid(s, problem, &[]));
    };
    if s.rows.len() != s.devices {
        let problem = format!(
            "it has {} rows but {} devices; give one row per device",
            s.rows.len(),
            s.devices
        );
        return Err(ScheduleError::invalid(s, problem, &[]));
    }
    for (d, step, a) in s.actions() {
        let problem = if a.stage >= stages {
            format!(
                "device {d} step {step}: {a} names stage {}, but {} devices × {} chunks make stages 0..{}",
                a.stage,
                s.devices,
                s.virtual_stages,
                stages - 1
            )
        } else if a.microbatch >= s.microbatches {
            format!(
                "device {d} step {step}: {a} names microbatch {}, but there are {} (0..{})",
                a.microbatch,
                s.microbatches,
                s.microbatches - 1
            )
        } else if s.device_of_stage(a.stage) != d {
            format!(
                "device {d} step {step}: stage {} lives on device {}, not device {d}",
                a.stage,
                s.device_of_stage(a.stage)
            )
        } else {
            continue;
        };
        return Err(ScheduleError::invalid(s, problem, &[(d, step)]));
    }
    // Every (stage, microbatch) has its own F: a schedule whose P·v·M (from
    // a CSV header, say) is more than its F cells lacks one. Said here,
    // before a walk or validation makes tables of 3·S·M entries, so that
    // their size is bounded by the cells actually present.
    let forwards = s.actions().filter(|(_, _, a)| a.kind == Kind::F).count();
    if stages
        .checked_mul(s.microbatches)
        .is_none_or(|n| n > forwards)
    {
        let present: HashSet<(usize, usize)> = (s.actions())
            .filter(|(_, _, a)| a.kind == Kind::F)
            .map(|(_, _, a)| (a.stage, a.microbatch))
            .collect();
        // Among the first forwards + 1 pairs in order, one is missing.
        let (stage, mb) = (0..stages)
            .flat_map(|st| (0..s.microbatches).map(move |mb| (st, mb)))
            .find(|p| !present.contains(p))
            .unwrap_or((0, 0));
        let marks: Vec<(usize, usize)> = (s.actions())
            .filter(|(_, _, a)| (a.stage, a.microbatch) == (stage, mb))
            .map(|(d, step, _)| (d, step))
            .collect();
        return Err(ScheduleError::invalid(
            s,
            missing_forward(s, stage, mb),
            &marks,
        ));
    }
    Ok(())
}

/// The problem of a schedule without `{stage}F{mb}`.
pub(super) fn missing_forward(s: &Schedule, stage: usize, mb: usize) -> String {
    format!(
        "{stage}F{mb} (stage {stage}, forward, microbatch {mb}) is missing from device {}'s row",
        s.device_of_stage(stage)
    )
}
