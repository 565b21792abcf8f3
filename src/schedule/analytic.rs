//! Closed-form bubble fractions, beside the simulated ones. All assume equal
//! times per stage and free transfers; they are what the seed's table and
//! the papers state. [`bubble`] is the one entry point; the functions below
//! it are its cases.

use crate::schedule::ScheduleKind;

/// The analytic bubble of a `kind` schedule on P = `p` devices, M = `m`
/// microbatches and v = `v` chunks per device.
///
/// Training (`forward_only` false), with equal F and B times (zb-h1: equal
/// F, I and W):
/// - `gpipe`, `1f1b`: [`fill_drain`] — 1F1B reorders but keeps the bubble;
/// - `interleaved`: [`interleaved`];
/// - `zb-h1`: [`zb_h1`] (assumes M ≥ P).
///
/// Forward-only (inference; what `wgpipe run` and `bench` execute):
/// - `gpipe`, and the forward part of `1f1b` and `zb-h1`, which is GPipe's:
///   [`fill_drain`];
/// - `interleaved`: [`interleaved_forward_only`] (breadth-first, any M).
pub fn bubble(kind: ScheduleKind, p: usize, m: usize, v: usize, forward_only: bool) -> f64 {
    match (kind, forward_only) {
        (ScheduleKind::Gpipe | ScheduleKind::OneFOneB, _) => fill_drain(p, m),
        (ScheduleKind::ZbH1, true) => fill_drain(p, m),
        (ScheduleKind::ZbH1, false) => zb_h1(p, m),
        (ScheduleKind::Interleaved, true) => interleaved_forward_only(p, m, v),
        (ScheduleKind::Interleaved, false) => interleaved(p, m, v),
    }
}

/// Fill-drain (GPipe; also 1F1B, which reorders but does not shrink the
/// bubble): (P−1)/(M+P−1). Each device is busy M units of a makespan of
/// M+P−1 units: P−1 units to fill the pipe and as many to drain it.
pub fn fill_drain(p: usize, m: usize) -> f64 {
    let (p, m) = (p as f64, m as f64);
    (p - 1.0) / (m + p - 1.0)
}

/// The ideal speedup of a fill-drain pipeline over one device doing the
/// same work: P·M/(M+P−1) — P devices, each busy a fraction 1 − bubble.
pub fn ideal_speedup(p: usize, m: usize) -> f64 {
    let (p, m) = (p as f64, m as f64);
    p * m / (m + p - 1.0)
}

/// Decoding with G groups of sequences in flight over P equal stages, in
/// steady state: each device has min(G, P) of every P passes' work,
/// 1 − min(G, P)/P.
pub fn decode_bubble(groups: usize, p: usize) -> f64 {
    1.0 - groups.min(p) as f64 / p as f64
}

/// Interleaved 1F1B (Megatron-LM): with v chunks each 1/v of a device's
/// layers, the fill and drain take (P−1)/v of a microbatch's time, so the
/// bubble time shrinks by v: (P−1)/v ÷ (M + (P−1)/v) = (P−1)/(v·M+P−1).
pub fn interleaved(p: usize, m: usize, v: usize) -> f64 {
    let (p, m, v) = (p as f64, m as f64, v as f64);
    (p - 1.0) / (v * m + p - 1.0)
}

/// Interleaved forward-only, breadth-first over microbatches per chunk. Each
/// device is busy v·M chunk-times. With M ≥ P the pipe fills once:
/// makespan v·M + P − 1. With M < P every chunk waits for microbatch 0 to
/// come round the ring: makespan v·P + M − 1. Bubble = 1 − v·M / makespan.
pub fn interleaved_forward_only(p: usize, m: usize, v: usize) -> f64 {
    let makespan = (v * p.max(m) + p.min(m) - 1) as f64;
    1.0 - (v * m) as f64 / makespan
}

/// ZB-H1 with equal F, I, W times. The ZB paper (Qi et al. 2024, §2) gives
/// 1F1B's bubble time per device as (P−1)(T_F+T_B+T_W) and ZB-H1's as
/// (P−1)(T_F+T_B−T_W), with T_B the input-gradient (our I) time. Each
/// device works M(T_F+T_B+T_W). With T_F = T_B = T_W = 1:
/// (P−1)·1 / (3M + (P−1)·1) = (P−1)/(3M+P−1) — a third of 1F1B's bubble
/// time, (P−1)/(3M+P−1) vs (P−1)/(M+P−1) as a fraction. It assumes M ≥ P:
/// with fewer microbatches there are too few deferred W's to fill the
/// drain, and the simulated bubble is larger.
pub fn zb_h1(p: usize, m: usize) -> f64 {
    let (p, m) = (p as f64, m as f64);
    (p - 1.0) / (3.0 * m + p - 1.0)
}
