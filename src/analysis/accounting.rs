//! Where the speedup goes: from the ideal P·M/(M+P−1) down to the measured
//! speedup, one loss per cause, in speedup units, adding up exactly.
//!
//! Notation: P devices, M microbatches, S stages; T1 the one-device time of
//! the same work (measured, or estimated from a layer profile); sim(t) the
//! simulator's makespan of the schedule with per-stage forward times t and
//! free transfers; `solo`, `corun`, `pipe` the per-stage median action times
//! alone, in the co-run control ([`super::corun`]) and in the pipeline; ū
//! every stage at the mean of `solo`. The speedups, each one cause less than
//! the one before:
//!
//! | speedup | definition | loss on the way to it |
//! |---|---|---|
//! | S_ideal | P·M/(M+P−1) | |
//! | S_a | P·(1 − analytic bubble) | `loss_schedule` = S_ideal − S_a: 0 for fill-drain, negative (a gain) for interleaved |
//! | S_imb | S_a · sim(ū) / sim(solo) | `loss_imbalance` = S_a − S_imb: the stages' unequal times alone; 0 when they are equal |
//! | S_slow | T1 / sim(pipe) | `loss_slowdown` = S_imb − S_slow: the pipeline's actions slower than alone |
//! | S | T1 / Tp, measured | `loss_orchestration` = S_slow − S: measured minus simulated (transfers, waits, submits) |
//!
//! so `speedup_ideal − (loss_schedule + loss_imbalance + loss_slowdown +
//! loss_orchestration) = speedup`, exactly, by construction.
//!
//! S_imb is what the stages' solo times give under the schedule, as a
//! speedup over W = S_a · sim(ū) — for fill-drain W = M · Σ solo, the work of
//! the stages alone — while S_slow counts from T1. So the slowdown has three
//! parts, reported beside it and adding up to it:
//! - `slowdown_baseline` = S_imb − T1/sim(solo) = (W − T1)/sim(solo): the
//!   stages alone, summed, against the one-device run of the same layers
//!   (per-action overheads; a slower second device);
//! - `slowdown_corun` = T1/sim(solo) − T1/sim(corun): the machine's share,
//!   the devices slowing each other when they run at once;
//! - `slowdown_pipeline` = T1/sim(corun) − T1/sim(pipe): what is left, ours.
//!
//! `speedup_without_corun` = S · sim(corun)/sim(solo) is the measured
//! speedup with the co-run control divided out.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::schedule::{simulate, Costs, Schedule};

/// What the accounting reads. Times in ms, per stage.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub schedule: &'a Schedule,
    /// The schedule's analytic bubble, forward only.
    pub bubble_analytic: f64,
    /// T1: the one-device time of the same work.
    pub baseline_ms: f64,
    /// S: the measured speedup (T1 / Tp, or the median of per-round ratios).
    pub speedup: f64,
    pub solo_stage_ms: &'a [f64],
    pub corun_stage_ms: &'a [f64],
    /// Median forward time of each stage in the pipeline.
    pub pipeline_stage_ms: &'a [f64],
}

/// The speedup's way from ideal to measured; see the module doc.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Losses {
    pub speedup_ideal: f64,
    pub loss_schedule: f64,
    pub loss_imbalance: f64,
    pub loss_slowdown: f64,
    pub loss_orchestration: f64,
    pub speedup: f64,
    /// S_a, S_imb and S_slow.
    pub speedup_schedule: f64,
    pub speedup_balanced: f64,
    pub speedup_simulated: f64,
    /// The slowdown's parts (they add up to `loss_slowdown`).
    pub slowdown_baseline: f64,
    pub slowdown_corun: f64,
    pub slowdown_pipeline: f64,
    pub speedup_without_corun: f64,
}

impl Losses {
    /// The four losses, named, in order from the ideal to the measured.
    pub fn steps(&self) -> [(&'static str, f64); 4] {
        [
            ("schedule", self.loss_schedule),
            ("imbalance", self.loss_imbalance),
            ("slowdown", self.loss_slowdown),
            ("orchestration", self.loss_orchestration),
        ]
    }

    /// One line per loss, for a terminal.
    pub fn table(&self) -> String {
        let mut out = format!("  ideal speedup        {:>6.2}\n", self.speedup_ideal);
        let why = [
            "the schedule's own bubble",
            "stages unequal alone",
            "actions slower than alone",
            "transfers, waits, submits",
        ];
        for ((name, loss), why) in self.steps().iter().zip(why) {
            out += &format!("  - {name:<18} {loss:>6.2}   {why}\n");
        }
        out += &format!(
            "    (slowdown: {:.2} stages alone vs one device, {:.2} co-run, {:.2} pipeline)\n",
            self.slowdown_baseline, self.slowdown_corun, self.slowdown_pipeline
        );
        out += &format!("  = measured speedup   {:>6.2}\n", self.speedup);
        out
    }
}

/// The makespan of `schedule` with per-stage forward times `t` and free
/// transfers.
pub fn simulated_ms(schedule: &Schedule, t: &[f64]) -> Result<f64> {
    let n = t.len();
    let costs = Costs {
        forward: t.to_vec(),
        backward: vec![0.0; n],
        input_grad: vec![0.0; n],
        weight_grad: vec![0.0; n],
        transfer: 0.0,
    };
    Ok(simulate(schedule, &costs)?.makespan)
}

/// Account for the speedup; see the module doc.
pub fn account(i: &Inputs) -> Result<Losses> {
    let s = i.schedule;
    let stages = s.stages();
    for (what, t) in [
        ("solo", i.solo_stage_ms),
        ("co-run", i.corun_stage_ms),
        ("pipeline", i.pipeline_stage_ms),
    ] {
        if t.len() != stages {
            return Err(Error::Input(format!(
                "loss accounting: {} {what} stage times for {stages} stages",
                t.len()
            )));
        }
        if let Some(x) = t.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
            return Err(Error::Input(format!(
                "loss accounting: a {what} stage time of {x} ms; every stage needs a positive time"
            )));
        }
    }
    for (what, x) in [("baseline time", i.baseline_ms), ("speedup", i.speedup)] {
        if !(x.is_finite() && x > 0.0) {
            return Err(Error::Input(format!(
                "loss accounting: {what} {x} is not a positive number"
            )));
        }
    }
    let p = s.devices as f64;
    let t1 = i.baseline_ms;
    let mean = i.solo_stage_ms.iter().sum::<f64>() / stages as f64;
    let sim_solo = simulated_ms(s, i.solo_stage_ms)?;
    let sim_even = simulated_ms(s, &vec![mean; stages])?;
    let sim_corun = simulated_ms(s, i.corun_stage_ms)?;
    let sim_pipe = simulated_ms(s, i.pipeline_stage_ms)?;

    let ideal = crate::schedule::analytic::ideal_speedup(s.devices, s.microbatches);
    let s_a = p * (1.0 - i.bubble_analytic);
    let s_imb = s_a * sim_even / sim_solo;
    let s_slow = t1 / sim_pipe;
    Ok(Losses {
        speedup_ideal: ideal,
        loss_schedule: ideal - s_a,
        loss_imbalance: s_a - s_imb,
        loss_slowdown: s_imb - s_slow,
        loss_orchestration: s_slow - i.speedup,
        speedup: i.speedup,
        speedup_schedule: s_a,
        speedup_balanced: s_imb,
        speedup_simulated: s_slow,
        slowdown_baseline: s_imb - t1 / sim_solo,
        slowdown_corun: t1 / sim_solo - t1 / sim_corun,
        slowdown_pipeline: t1 / sim_corun - s_slow,
        speedup_without_corun: i.speedup * sim_corun / sim_solo,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::analytic;
    use crate::schedule::ScheduleKind;

    fn gpipe(p: usize, m: usize) -> Schedule {
        Schedule::for_inference(ScheduleKind::Gpipe, p, m, 1).unwrap()
    }

    fn sum_of_losses(l: &Losses) -> f64 {
        l.steps().iter().map(|(_, x)| x).sum()
    }

    #[test]
    fn the_losses_add_up_to_the_measured_speedup() {
        // Unequal, arbitrary figures: the identity holds whatever they are.
        let s = gpipe(3, 8);
        let l = account(&Inputs {
            schedule: &s,
            bubble_analytic: analytic::fill_drain(3, 8),
            baseline_ms: 1234.5,
            speedup: 1.37,
            solo_stage_ms: &[40.0, 55.0, 47.0],
            corun_stage_ms: &[44.0, 60.0, 51.0],
            pipeline_stage_ms: &[50.0, 66.0, 52.0],
        })
        .unwrap();
        assert!((l.speedup_ideal - sum_of_losses(&l) - l.speedup).abs() < 1e-12);
        let parts = l.slowdown_baseline + l.slowdown_corun + l.slowdown_pipeline;
        assert!((parts - l.loss_slowdown).abs() < 1e-12);
        assert!(l.loss_schedule.abs() < 1e-12, "fill-drain: {l:?}");
        assert!(l.loss_imbalance > 0.0 && l.slowdown_corun > 0.0 && l.slowdown_pipeline > 0.0);
    }

    #[test]
    fn a_perfect_pipeline_loses_only_its_bubble() {
        // Equal stages, no slowdown, T1 = M·Σ stage and Tp = sim: every
        // loss is zero and the speedup is the ideal.
        let (p, m, t) = (2, 4, 10.0);
        let s = gpipe(p, m);
        let tp = simulated_ms(&s, &[t, t]).unwrap();
        assert_eq!(tp, (m + p - 1) as f64 * t);
        let t1 = (m * p) as f64 * t;
        let l = account(&Inputs {
            schedule: &s,
            bubble_analytic: analytic::fill_drain(p, m),
            baseline_ms: t1,
            speedup: t1 / tp,
            solo_stage_ms: &[t, t],
            corun_stage_ms: &[t, t],
            pipeline_stage_ms: &[t, t],
        })
        .unwrap();
        for (name, x) in l.steps() {
            assert!(x.abs() < 1e-12, "{name}: {x}");
        }
        assert!((l.speedup - 8.0 / 5.0).abs() < 1e-12);
        assert!((l.speedup_without_corun - l.speedup).abs() < 1e-12);
    }

    #[test]
    fn interleaving_gains_on_the_schedule() {
        let (p, m, v) = (2, 4, 2);
        let s = Schedule::for_inference(ScheduleKind::Interleaved, p, m, v).unwrap();
        let t = [5.0; 4];
        let l = account(&Inputs {
            schedule: &s,
            bubble_analytic: analytic::interleaved_forward_only(p, m, v),
            baseline_ms: 160.0,
            speedup: 1.5,
            solo_stage_ms: &t,
            corun_stage_ms: &t,
            pipeline_stage_ms: &t,
        })
        .unwrap();
        assert!(l.loss_schedule < 0.0, "{l:?}");
        // Equal stages: no imbalance, whatever the schedule.
        assert!(l.loss_imbalance.abs() < 1e-12, "{l:?}");
        assert!((l.speedup_ideal - sum_of_losses(&l) - l.speedup).abs() < 1e-12);
    }

    #[test]
    fn bad_figures_are_named() {
        let s = gpipe(2, 2);
        let ok = [1.0, 1.0];
        let base = Inputs {
            schedule: &s,
            bubble_analytic: 0.0,
            baseline_ms: 1.0,
            speedup: 1.0,
            solo_stage_ms: &ok,
            corun_stage_ms: &ok,
            pipeline_stage_ms: &ok,
        };
        let e = account(&Inputs {
            corun_stage_ms: &[1.0],
            ..base.clone()
        })
        .unwrap_err();
        assert!(
            e.to_string().contains("1 co-run stage times for 2 stages"),
            "{e}"
        );
        let e = account(&Inputs {
            pipeline_stage_ms: &[1.0, 0.0],
            ..base.clone()
        })
        .unwrap_err();
        assert!(e.to_string().contains("pipeline stage time of 0"), "{e}");
        let e = account(&Inputs {
            baseline_ms: f64::NAN,
            ..base
        })
        .unwrap_err();
        assert!(e.to_string().contains("baseline time"), "{e}");
    }
}
