//! Validation: the right actions, each once, on the right device, in an
//! order that can run.
//!
//! 1. Sizes and cells: P, M, v ≥ 1, one row per device, every action's stage
//!    and microbatch in range and on the device that holds the stage.
//! 2. Completeness: every (stage, microbatch) has exactly one F and, in a
//!    training schedule (one with any B/I/W), exactly one B or one I and one W.
//! 3. Order on one device: an action comes after what it needs from the same
//!    device (F(s) after F(s−1), B/I(s) after F(s) and B/I(s+1), W after I).
//! 4. Order across devices: a dry run of the dependency walk the simulator
//!    uses, with unit times, must finish; otherwise the deadlock says which
//!    device waits on what.
//!
//! Every rejection carries the grid with the offending cell marked.

use crate::schedule::walk::{check_cells, missing_forward, walk};
use crate::schedule::{Kind, Schedule, ScheduleError};

/// Checks everything above; `Ok` means the schedule runs to completion.
pub fn validate(s: &Schedule) -> Result<(), ScheduleError> {
    check_cells(s)?;
    check_counts(s)?;
    check_device_order(s)?;
    walk(s, |_| 1.0, 0.0).map(|_| ())
}

fn invalid(s: &Schedule, problem: String, marks: &[(usize, usize)]) -> ScheduleError {
    ScheduleError::invalid(s, problem, marks)
}

/// Step 2: each action once; training schedules complete.
fn check_counts(s: &Schedule) -> Result<(), ScheduleError> {
    let m = s.microbatches;
    let kinds = [Kind::F, Kind::B, Kind::I, Kind::W];
    // seen[kind][stage * M + mb] = (device, step) of the first occurrence
    let mut seen: Vec<Vec<Option<(usize, usize)>>> = vec![vec![None; s.stages() * m]; 4];
    for (d, step, a) in s.actions() {
        let k = kinds.iter().position(|&k| k == a.kind).unwrap_or(0);
        let slot = &mut seen[k][a.stage * m + a.microbatch];
        if let Some((d0, step0)) = *slot {
            let problem =
                format!("{a} appears twice: device {d0} step {step0} and device {d} step {step}");
            return Err(invalid(s, problem, &[(d0, step0), (d, step)]));
        }
        *slot = Some((d, step));
    }
    let training = !s.is_forward_only();
    for stage in 0..s.stages() {
        for mb in 0..m {
            let at = |k: usize| seen[k][stage * m + mb];
            let dev = s.device_of_stage(stage);
            let (f, b, i, w) = (at(0), at(1), at(2), at(3));
            let problem = if f.is_none() {
                missing_forward(s, stage, mb)
            } else if !training {
                continue;
            } else {
                match (b, i, w) {
                    (Some(_), None, None) | (None, Some(_), Some(_)) => continue,
                    (None, None, None) => {
                        format!(
                            "stage {stage} microbatch {mb} has no backward: add {stage}B{mb}, or {stage}I{mb} and {stage}W{mb}, to device {dev}'s row"
                        )
                    }
                    (Some(_), _, _) => format!(
                        "stage {stage} microbatch {mb} has both a full backward {stage}B{mb} and a split one; keep one"
                    ),
                    (None, Some(_), None) => format!("{stage}I{mb} has no matching {stage}W{mb}"),
                    (None, None, Some(_)) => format!("{stage}W{mb} has no matching {stage}I{mb}"),
                }
            };
            let marks: Vec<(usize, usize)> = [f, b, i, w].into_iter().flatten().collect();
            return Err(invalid(s, problem, &marks));
        }
    }
    Ok(())
}

/// Step 3: on each device, what an action needs from that same device comes first.
fn check_device_order(s: &Schedule) -> Result<(), ScheduleError> {
    let (stages, m) = (s.stages(), s.microbatches);
    // One table for all rows (one per row would cost P · 3·S·M): a row
    // looks only at products of its own device's stages, which only it makes
    // (check_cells put every action on its stage's device).
    let mut made = vec![false; 3 * stages * m];
    for (d, row) in s.rows.iter().enumerate() {
        for (step, a) in row
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.map(|a| (i, a)))
        {
            for n in s.needs(&a) {
                if s.device_of_stage(n.stage) == d && !made[n.index(m)] {
                    let later = row
                        .iter()
                        .flatten()
                        .find(|b| b.produces() == n)
                        .map(|b| b.to_string())
                        .unwrap_or_else(|| n.to_string());
                    let problem = format!(
                        "device {d} step {step}: {a} needs {later}, which comes after it on the same device"
                    );
                    return Err(invalid(s, problem, &[(d, step)]));
                }
            }
            made[a.produces().index(m)] = true;
        }
    }
    Ok(())
}
