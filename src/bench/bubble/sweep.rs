//! The sweep itself: for each M one warm-up of everything, then `repeat`
//! rounds, each running the baseline and every schedule once, so that a
//! drift in the machine's speed hits them alike; every figure is the median
//! over the rounds.

use super::{Row, Sweep};
use crate::analysis::accounting::{account, Inputs};
use crate::analysis::corun::{inference_controls, Controls};
use crate::analysis::measure::{measure, measure_timeline, Measurement};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::executor::{Cluster, DeviceGroup};
use crate::io::random_input_ids;
use crate::model::partition::partition;
use crate::model::Gpt2Weights;
use crate::schedule::{analytic, Schedule, ScheduleKind};
use crate::timing::median;
use crate::workload::forward::run_resident;
use crate::workload::resident::Resident;
use crate::workload::train::{TrainOptions, Trainer};

/// One series' runner at one M: an inference schedule over weights
/// uploaded once, or a trainer whose stages stay on their devices between
/// steps.
enum Runner<'g> {
    Infer(Schedule, Box<Resident>),
    Train(Box<Trainer<'g>>),
}

impl Runner<'_> {
    /// Run once and measure it, with the peak activation bytes per device
    /// (training only).
    fn once(
        &mut self,
        groups: &[DeviceGroup],
        cluster: &Cluster,
        tokens: &crate::io::TokenBatch,
    ) -> Result<(Measurement, Vec<u64>)> {
        let n = tokens.batch * tokens.seq;
        match self {
            Runner::Infer(s, resident) => {
                let run = run_resident(groups, cluster, resident, tokens, s)?;
                Ok((measure(s, &run, n)?, Vec::new()))
            }
            Runner::Train(t) => {
                let run = t.forward_backward(tokens)?;
                let m =
                    measure_timeline(t.schedule(), &run.timeline, run.wall_s, &run.transfers, n)?;
                Ok((m, t.peak_activation_bytes()?))
            }
        }
    }
}

fn runner<'g>(
    groups: &[DeviceGroup<'g>],
    cluster: &Cluster,
    w: &Gpt2Weights,
    tokens: &crate::io::TokenBatch,
    s: Schedule,
    train: bool,
) -> Result<Runner<'g>> {
    if !train {
        let parts = partition(w.config.n_layer, s.stages(), None)?;
        let resident = Resident::upload(groups, cluster, w, parts)?;
        return Ok(Runner::Infer(s, Box::new(resident)));
    }
    let t = Trainer::new(
        groups,
        cluster,
        w,
        &s,
        tokens.batch,
        tokens.seq,
        &TrainOptions::default(),
    )?;
    Ok(Runner::Train(Box::new(t)))
}

/// Run the sweep on `groups` (the pipeline, one per schedule device) and
/// `single` (the baseline device). For each M: one warm-up of everything,
/// then `repeat` rounds, each running the baseline and every schedule once,
/// so that a drift in the machine's speed (software adapters share the CPU
/// with everything else) hits all of them alike; every figure is the median
/// over the rounds. `progress` is called once per finished point.
///
/// Under MPI every rank calls this with the same sweep: `groups` from
/// [`Cluster::device_groups`], and `single` on rank 0 only
/// (`None` elsewhere). Every pipeline run and the co-run control go over
/// the ranks' net; the baseline runs on rank 0's device by itself while the
/// others wait, and each solo control on its own rank; every rank gets every
/// time, so every rank computes the same rows.
pub fn run_sweep(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    single: Option<&Gpu>,
    w: &Gpt2Weights,
    sweep: &Sweep,
    mut progress: impl FnMut(&Row),
) -> Result<Vec<Row>> {
    let p = groups.len();
    let mut rows = Vec::new();
    for &m in &sweep.microbatches {
        let (base, meas, controls) = run_rounds(groups, cluster, single, w, sweep, m)?;
        for ((&(kind, v), ms), ctl) in sweep.schedules.iter().zip(meas).zip(controls) {
            let mut row = summarize(kind, v, p, m, sweep.train, &base, &ms);
            if let Some((s, c)) = ctl {
                add_accounting(&mut row, &s, &c)?;
            }
            progress(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One M of the sweep: the warm-up, then `repeat` rounds. Returns the
/// baseline's wall time (ms) per round and, per schedule of the sweep, its
/// measurement per round.
/// The baseline's ms per round; per schedule its measurements per round and,
/// for forward sweeps, the schedule with its controls.
type Rounds = (
    Vec<f64>,
    Vec<Vec<(Measurement, Vec<u64>)>>,
    Vec<Option<(Schedule, Controls)>>,
);

fn run_rounds(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    single: Option<&Gpu>,
    w: &Gpt2Weights,
    sweep: &Sweep,
    m: usize,
) -> Result<Rounds> {
    let p = groups.len();
    let one: Vec<DeviceGroup> = single.map(DeviceGroup::single).into_iter().collect();
    let tokens = random_input_ids(
        m * sweep.sequences,
        sweep.seq,
        w.config.vocab_size,
        sweep.seed,
    );
    let make = |kind, p, v| {
        if sweep.train {
            Schedule::generate(kind, p, m, v, false)
        } else {
            Schedule::for_inference(kind, p, m, v)
        }
    };
    // The baseline: one device, by itself (under MPI, on rank 0 while the
    // other ranks wait), its wall ms handed to every process.
    let mut base_r = if one.is_empty() {
        None
    } else {
        let s = make(ScheduleKind::Gpipe, 1, 1)?;
        Some(runner(&one, &Cluster::Local, w, &tokens, s, sweep.train)?)
    };
    let mut baseline = || {
        cluster.run_on(0, || {
            let r = base_r.as_mut().ok_or_else(|| {
                Error::Other("the one-device baseline has no device on this process".into())
            })?;
            Ok(r.once(&one, &Cluster::Local, &tokens)?.0.wall_ms)
        })
    };
    let mut runners = sweep
        .schedules
        .iter()
        .map(|&(kind, v)| runner(groups, cluster, w, &tokens, make(kind, p, v)?, sweep.train))
        .collect::<Result<Vec<_>>>()?;
    // Warm-up.
    baseline()?;
    for r in &mut runners {
        r.once(groups, cluster, &tokens)?;
    }
    let mut base = Vec::new();
    let mut meas: Vec<Vec<(Measurement, Vec<u64>)>> = vec![Vec::new(); runners.len()];
    for _ in 0..sweep.repeat.max(1) {
        base.push(baseline()?);
        for (i, r) in runners.iter_mut().enumerate() {
            meas[i].push(r.once(groups, cluster, &tokens)?);
        }
    }
    // The solo and co-run controls of each forward schedule, once per M,
    // after its rounds.
    let controls = runners
        .iter()
        .map(|r| match r {
            Runner::Infer(s, resident) => {
                let c = inference_controls(groups, cluster, resident, &tokens, s)?;
                Ok(Some((s.clone(), c)))
            }
            Runner::Train(_) => Ok(None),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((base, meas, controls))
}

/// Fill `row`'s loss accounting from the controls of its schedule.
fn add_accounting(row: &mut Row, s: &Schedule, c: &Controls) -> Result<()> {
    let l = account(&Inputs {
        schedule: s,
        bubble_analytic: row.bubble_analytic,
        baseline_ms: row.baseline_ms,
        speedup: row.speedup,
        solo_stage_ms: &c.solo_stage_ms,
        corun_stage_ms: &c.corun_stage_ms,
        pipeline_stage_ms: &row.forward_ms,
    })?;
    row.loss_schedule = l.loss_schedule;
    row.loss_imbalance = l.loss_imbalance;
    row.loss_slowdown = l.loss_slowdown;
    row.loss_orchestration = l.loss_orchestration;
    row.speedup_without_corun = l.speedup_without_corun;
    row.solo_ms = c.solo_ms.clone();
    row.corun_ms = c.corun_ms.clone();
    Ok(())
}

/// The row of one schedule at one M: medians over its rounds `ms`, the
/// speedup against the baseline rounds `base` (ms).
fn summarize(
    schedule: ScheduleKind,
    v: usize,
    p: usize,
    m: usize,
    train: bool,
    base: &[f64],
    rounds: &[(Measurement, Vec<u64>)],
) -> Row {
    let ms: Vec<&Measurement> = rounds.iter().map(|(m, _)| m).collect();
    let med = |f: &dyn Fn(&Measurement) -> f64| median(ms.iter().map(|x| f(x)).collect());
    let stages = ms[0].forward_ms.len();
    let per_stage = |f: &dyn Fn(&Measurement) -> &Vec<f64>| -> Vec<f64> {
        if f(ms[0]).is_empty() {
            return Vec::new();
        }
        (0..stages).map(|i| med(&|x| f(x)[i])).collect()
    };
    // Each round's pipeline against the baseline run just before it.
    let speedup = median(base.iter().zip(&ms).map(|(b, x)| b / x.wall_ms).collect());
    Row {
        schedule,
        train,
        virtual_stages: v,
        devices: p,
        microbatches: m,
        bubble_analytic: ms[0].bubble_analytic,
        bubble_simulated: med(&|x| x.bubble_simulated),
        bubble_measured: med(&|x| x.bubble_measured),
        makespan_ms: med(&|x| x.makespan_ms),
        tokens_per_s: med(&|x| x.tokens_per_s),
        speedup,
        speedup_ideal: analytic::ideal_speedup(p, m),
        loss_schedule: f64::NAN,
        loss_imbalance: f64::NAN,
        loss_slowdown: f64::NAN,
        loss_orchestration: f64::NAN,
        speedup_without_corun: f64::NAN,
        solo_ms: Vec::new(),
        corun_ms: Vec::new(),
        baseline_ms: median(base.to_vec()),
        forward_ms: (0..stages).map(|i| med(&|x| x.forward_ms[i])).collect(),
        backward_ms: per_stage(&|x| &x.backward_ms),
        input_grad_ms: per_stage(&|x| &x.input_grad_ms),
        weight_grad_ms: per_stage(&|x| &x.weight_grad_ms),
        peak_activation_bytes: rounds[0].1.clone(),
        transfer_ms: med(&|x| x.transfer_ms),
        transfers: ms[0].transfers,
        bytes_moved: ms[0].bytes_moved,
        clock: ms[0].clock.clone(),
    }
}
