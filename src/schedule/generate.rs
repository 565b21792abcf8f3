//! Generators: pure functions of P devices, M microbatches and v chunks per
//! device. Each builds every device's order of actions, then
//! [`Schedule::aligned`] places idle steps so the grid shows the bubbles.
//!
//! | schedule      | v  | training            | forward-only              |
//! |---------------|----|---------------------|---------------------------|
//! | `gpipe`       | 1  | all F, then all B   | all F                     |
//! | `1f1b`        | 1  | PipeDream-Flush     | refused (that is gpipe)   |
//! | `interleaved` | ≥1 | Megatron, M % P = 0 | breadth-first, any M      |
//! | `zb-h1`       | 1  | ZB-H1 (I and W)     | refused (that is gpipe)   |
//!
//! `interleaved` with v = 1 is 1F1B (Megatron's formula reduces to it) and
//! accepts any M.

use crate::schedule::{Action, Kind, Schedule, ScheduleError, ScheduleKind};

/// GPipe fill-drain. Training: every device runs all M forwards, then all M
/// backwards in microbatch order, so device 0 holds M microbatches of
/// activations. Forward-only: the forwards alone (inference).
pub fn gpipe(p: usize, m: usize, v: usize, forward_only: bool) -> Result<Schedule, ScheduleError> {
    check_sizes(p, m, v)?;
    one_chunk(ScheduleKind::Gpipe, v)?;
    let orders = (0..p)
        .map(|d| {
            let mut row: Vec<Action> = (0..m).map(|mb| Action::new(d, Kind::F, mb)).collect();
            if !forward_only {
                row.extend((0..m).map(|mb| Action::new(d, Kind::B, mb)));
            }
            row
        })
        .collect();
    finish(ScheduleKind::Gpipe, p, m, v, orders)
}

/// 1F1B (PipeDream-Flush). Device d runs min(P−1−d, M) warm-up forwards,
/// then alternates one forward with one backward, then drains the remaining
/// backwards. At most P microbatches are in flight on device 0 (min(P, M)).
pub fn one_f_one_b(
    p: usize,
    m: usize,
    v: usize,
    forward_only: bool,
) -> Result<Schedule, ScheduleError> {
    check_sizes(p, m, v)?;
    one_chunk(ScheduleKind::OneFOneB, v)?;
    if forward_only {
        return Err(ScheduleError::NoForwardOnly {
            schedule: ScheduleKind::OneFOneB,
        });
    }
    finish(
        ScheduleKind::OneFOneB,
        p,
        m,
        v,
        (0..p)
            .map(|d| one_f_one_b_row(d, d, p, m, Kind::B))
            .collect(),
    )
}

/// One device's 1F1B order for `stage`; `back` is B (or I for split backward,
/// without the W's).
fn one_f_one_b_row(d: usize, stage: usize, p: usize, m: usize, back: Kind) -> Vec<Action> {
    let warmup = (p - 1 - d).min(m);
    let mut row: Vec<Action> = (0..warmup)
        .map(|mb| Action::new(stage, Kind::F, mb))
        .collect();
    for i in 0..m - warmup {
        row.push(Action::new(stage, Kind::F, warmup + i));
        row.push(Action::new(stage, back, i));
    }
    row.extend((m - warmup..m).map(|mb| Action::new(stage, back, mb)));
    row
}

/// Interleaved 1F1B (Megatron-LM, Narayanan et al. 2021): device d holds
/// chunks d, d+P, …, d+(v−1)P. Training follows Megatron's order: forward
/// micro-step k runs chunk (k / P) mod v on microbatch (k / Pv)·P + k mod P,
/// backward micro-steps walk the chunks in reverse; device d warms up with
/// min(2(P−1−d) + (v−1)P, vM) forwards (all of them when M = P), then
/// alternates. That order needs M to be a multiple of P. v = 1 is 1F1B.
///
/// Forward-only (inference) works for any M: each device runs its chunks in
/// order, and within a chunk all microbatches (breadth-first), so device 0
/// streams chunk 0 for every microbatch before chunk 1 needs the first one
/// back from device P−1.
pub fn interleaved(
    p: usize,
    m: usize,
    v: usize,
    forward_only: bool,
) -> Result<Schedule, ScheduleError> {
    check_sizes(p, m, v)?;
    let orders: Vec<Vec<Action>> = if forward_only {
        (0..p)
            .map(|d| {
                let stages = (0..v).map(move |c| c * p + d);
                stages
                    .flat_map(|s| (0..m).map(move |mb| Action::new(s, Kind::F, mb)))
                    .collect()
            })
            .collect()
    } else if v == 1 {
        (0..p)
            .map(|d| one_f_one_b_row(d, d, p, m, Kind::B))
            .collect()
    } else {
        if !m.is_multiple_of(p) {
            let suggestion = m.div_ceil(p) * p;
            return Err(ScheduleError::MicrobatchesNotMultiple {
                microbatches: m,
                devices: p,
                suggestion,
            });
        }
        (0..p).map(|d| megatron_row(d, p, m, v)).collect()
    };
    finish(ScheduleKind::Interleaved, p, m, v, orders)
}

/// Megatron's interleaved order for device d (training, M a multiple of P).
fn megatron_row(d: usize, p: usize, m: usize, v: usize) -> Vec<Action> {
    let total = m * v;
    let microbatch = |k: usize| (k / (p * v)) * p + k % p;
    let chunk = |k: usize| (k % (p * v)) / p;
    let forward = |k: usize| Action::new(chunk(k) * p + d, Kind::F, microbatch(k));
    let backward = |k: usize| Action::new((v - 1 - chunk(k)) * p + d, Kind::B, microbatch(k));
    let warmup = if m == p {
        total
    } else {
        (2 * (p - 1 - d) + (v - 1) * p).min(total)
    };
    let mut row: Vec<Action> = (0..warmup).map(forward).collect();
    for k in 0..total - warmup {
        row.push(forward(warmup + k));
        row.push(backward(k));
    }
    row.extend((total - warmup..total).map(backward));
    row
}

/// ZB-H1 (Qi et al. 2024, "Zero Bubble Pipeline Parallelism"): 1F1B with each
/// backward split into I (input gradient, on the critical path) and W
/// (weight gradient, deferrable). Device d keeps 1F1B's warm-up of
/// min(P−1−d, M) forwards, so its peak activation memory equals 1F1B's, but
/// holds back its first d W's: after its k-th I it runs the oldest pending W
/// only once k ≥ d, and the W's it still owes fill the drain at the end.
/// (The same rule as PyTorch's zero-bubble `_get_1f1b_rank_ops` with one
/// chunk per rank.) With equal F, I, W times the bubble is a third of 1F1B's.
pub fn zb_h1(p: usize, m: usize, v: usize, forward_only: bool) -> Result<Schedule, ScheduleError> {
    check_sizes(p, m, v)?;
    one_chunk(ScheduleKind::ZbH1, v)?;
    if forward_only {
        return Err(ScheduleError::NoForwardOnly {
            schedule: ScheduleKind::ZbH1,
        });
    }
    let orders = (0..p)
        .map(|d| {
            let mut row = Vec::with_capacity(3 * m);
            let mut next_w = 0;
            let mut inputs_done = 0;
            for a in one_f_one_b_row(d, d, p, m, Kind::I) {
                row.push(a);
                if a.kind == Kind::I {
                    if inputs_done >= d {
                        row.push(Action::new(d, Kind::W, next_w));
                        next_w += 1;
                    }
                    inputs_done += 1;
                }
            }
            row.extend((next_w..m).map(|mb| Action::new(d, Kind::W, mb)));
            row
        })
        .collect();
    finish(ScheduleKind::ZbH1, p, m, v, orders)
}

fn check_sizes(p: usize, m: usize, v: usize) -> Result<(), ScheduleError> {
    if p == 0 {
        return Err(ScheduleError::Zero {
            what: "device",
            flag: "--devices",
        });
    }
    if m == 0 {
        return Err(ScheduleError::Zero {
            what: "microbatch",
            flag: "--microbatches",
        });
    }
    if v == 0 {
        return Err(ScheduleError::Zero {
            what: "chunk per device",
            flag: "--virtual",
        });
    }
    Ok(())
}

fn one_chunk(schedule: ScheduleKind, v: usize) -> Result<(), ScheduleError> {
    if v == 1 {
        Ok(())
    } else {
        Err(ScheduleError::NeedsOneChunk {
            schedule,
            virtual_stages: v,
        })
    }
}

fn finish(
    kind: ScheduleKind,
    p: usize,
    m: usize,
    v: usize,
    orders: Vec<Vec<Action>>,
) -> Result<Schedule, ScheduleError> {
    let rows = orders
        .into_iter()
        .map(|row| row.into_iter().map(Some).collect())
        .collect();
    let compact = Schedule {
        name: kind.to_string(),
        devices: p,
        virtual_stages: v,
        microbatches: m,
        rows,
        feedback: 0,
    };
    compact.aligned()
}
