//! The bubble benchmark: for each schedule and microbatch count M, run the
//! real pipeline (warm-up, then R repetitions, medians) and put the
//! measured bubble beside the simulated and the analytic one, with the
//! speedup over the same microbatches run on one device.
//!
//! Stages are uniform: the model has `layers_per_stage` identical blocks per
//! device, and a vocabulary small enough (64) that the embedding and LM head
//! add about 1 % to the first and last stage. The one-device baseline runs
//! the same M microbatches of the same shape through the same executor on
//! one device holding every layer, so the speedup compares like with like:
//! ideal P·M/(M+P−1).
//!
//! With `train`, each point is one training step (every F, B, I, W of the
//! schedule; no optimizer step, which is outside the pipeline) and the
//! baseline is the same step on one device.

use serde::Serialize;

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::executor::accounting::{account, Inputs};
use crate::executor::corun::{inference_controls, Controls};
use crate::executor::measure::{measure, measure_timeline, median, Measurement};
use crate::executor::net::{alone, run_on};
use crate::executor::train::{TrainOptions, Trainer};
use crate::executor::{run_inference, DeviceGroup, Options};
use crate::io::random_input_ids;
use crate::model::{Gpt2Config, Gpt2Weights};
use crate::schedule::{Schedule, ScheduleKind};

/// The benchmark's model shape: per-stage compute well above a transfer of
/// its (T, C) activation (about 35 ms against 0.1 ms on lavapipe, one thread).
pub fn bench_config(layers: usize, seq: usize) -> Gpt2Config {
    Gpt2Config {
        vocab_size: 64,
        n_positions: seq.max(1),
        n_embd: 256,
        n_layer: layers,
        n_head: 4,
        n_inner: 1024,
        layer_norm_epsilon: 1e-5,
    }
}

/// The model a bench's `--model` / `--layers` pick: a built-in model cut to
/// its first `layers` blocks, or (no `--model`) the bench model with
/// `layers` blocks (`default_layers` without) and `n_positions` positions.
pub fn bench_model(
    model: Option<&str>,
    layers: Option<usize>,
    default_layers: usize,
    n_positions: usize,
) -> Result<Gpt2Config> {
    let Some(name) = model else {
        return Ok(bench_config(layers.unwrap_or(default_layers), n_positions));
    };
    let mut cfg = Gpt2Config::named(name)?;
    if let Some(l) = layers {
        if l == 0 || l > cfg.n_layer {
            return Err(Error::Input(format!(
                "--layers {l}: the model has {} blocks",
                cfg.n_layer
            )));
        }
        cfg.n_layer = l;
    }
    Ok(cfg)
}

#[derive(Clone, Debug)]
pub struct Sweep {
    /// (schedule, v) per series, e.g. (Gpipe, 1), (Interleaved, 2).
    pub schedules: Vec<(ScheduleKind, usize)>,
    pub microbatches: Vec<usize>,
    /// Sequences per microbatch.
    pub sequences: usize,
    pub seq: usize,
    pub repeat: usize,
    pub seed: u64,
    /// Training steps (F, B, I, W) instead of forward passes.
    pub train: bool,
}

/// One point of the sweep. Its `Serialize` form is both the JSON row and the
/// CSV line ([`csv()`]); the per-stage `forward_ms` is one cell of
/// `;`-separated values in both, since a CSV cell cannot nest.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub schedule: ScheduleKind,
    /// A training step (true) or a forward pass.
    pub train: bool,
    #[serde(rename = "virtual")]
    pub virtual_stages: usize,
    pub devices: usize,
    pub microbatches: usize,
    pub bubble_analytic: f64,
    pub bubble_simulated: f64,
    pub bubble_measured: f64,
    pub makespan_ms: f64,
    pub tokens_per_s: f64,
    /// One-device time over pipeline time, both by wall clock: the median
    /// over rounds of each round's ratio.
    pub speedup: f64,
    /// P·M/(M+P−1).
    pub speedup_ideal: f64,
    /// Where the speedup goes (forward sweep; NaN with `train`): from
    /// `speedup_ideal` down to `speedup`, in speedup units, adding up
    /// exactly ([`crate::executor::accounting`]).
    pub loss_schedule: f64,
    pub loss_imbalance: f64,
    pub loss_slowdown: f64,
    pub loss_orchestration: f64,
    /// The measured speedup with the co-run control divided out: what the
    /// pipeline would reach if running the stages at once cost nothing.
    pub speedup_without_corun: f64,
    /// Per device: its stage's median action time with nothing else
    /// running, and while every device runs its own actions at once with no
    /// transfers (the co-run control), in ms (`;`-separated; empty with `train`).
    #[serde(serialize_with = "semicolon_separated")]
    pub solo_ms: Vec<f64>,
    #[serde(serialize_with = "semicolon_separated")]
    pub corun_ms: Vec<f64>,
    pub baseline_ms: f64,
    /// Median forward time per stage (serialized `;`-separated, e.g.
    /// `35.1;34.9`) and median transfer: the simulator's inputs.
    #[serde(serialize_with = "semicolon_separated")]
    pub forward_ms: Vec<f64>,
    /// Training: median B, I and W time per stage (`;`-separated; empty
    /// when the schedule has no such action).
    #[serde(serialize_with = "semicolon_separated")]
    pub backward_ms: Vec<f64>,
    #[serde(serialize_with = "semicolon_separated")]
    pub input_grad_ms: Vec<f64>,
    #[serde(serialize_with = "semicolon_separated")]
    pub weight_grad_ms: Vec<f64>,
    /// Training: bytes of stashed activations per device (`;`-separated).
    #[serde(serialize_with = "semicolon_separated_u64")]
    pub peak_activation_bytes: Vec<u64>,
    pub transfer_ms: f64,
    pub transfers: usize,
    pub bytes_moved: u64,
    pub clock: String,
}

/// One series' runner at one M: an inference schedule run afresh each
/// time, or a trainer whose stages stay on their devices between steps.
enum Runner<'g> {
    Infer(Schedule),
    Train(Box<Trainer<'g>>),
}

impl Runner<'_> {
    /// Run once and measure it, with the peak activation bytes per device
    /// (training only).
    fn once(
        &mut self,
        groups: &[DeviceGroup],
        w: &Gpt2Weights,
        tokens: &crate::io::TokenBatch,
    ) -> Result<(Measurement, Vec<u64>)> {
        let n = tokens.batch * tokens.seq;
        match self {
            Runner::Infer(s) => {
                let run = run_inference(groups, w, tokens, s, &Options::default())?;
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
    w: &Gpt2Weights,
    tokens: &crate::io::TokenBatch,
    s: Schedule,
    train: bool,
) -> Result<Runner<'g>> {
    if !train {
        return Ok(Runner::Infer(s));
    }
    let t = Trainer::new(
        groups,
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
/// [`crate::executor::net::device_groups`], and `single` on rank 0 only
/// (`None` elsewhere). Every pipeline run and the co-run control go over
/// the ranks' net; the baseline runs on rank 0's device by itself while the
/// others wait, and each solo control on its own rank; every rank gets every
/// time, so every rank computes the same rows.
pub fn run_sweep(
    groups: &[DeviceGroup],
    single: Option<&Gpu>,
    w: &Gpt2Weights,
    sweep: &Sweep,
    mut progress: impl FnMut(&Row),
) -> Result<Vec<Row>> {
    let p = groups.len();
    let mut rows = Vec::new();
    for &m in &sweep.microbatches {
        let (base, meas, controls) = run_rounds(groups, single, w, sweep, m)?;
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
        Some(alone(|| runner(&one, w, &tokens, s, sweep.train))?)
    };
    let mut baseline = || {
        run_on(0, || {
            let r = base_r.as_mut().ok_or_else(|| {
                Error::Other("the one-device baseline has no device on this process".into())
            })?;
            Ok(alone(|| r.once(&one, w, &tokens))?.0.wall_ms)
        })
    };
    let mut runners = sweep
        .schedules
        .iter()
        .map(|&(kind, v)| runner(groups, w, &tokens, make(kind, p, v)?, sweep.train))
        .collect::<Result<Vec<_>>>()?;
    // Warm-up.
    baseline()?;
    for r in &mut runners {
        r.once(groups, w, &tokens)?;
    }
    let mut base = Vec::new();
    let mut meas: Vec<Vec<(Measurement, Vec<u64>)>> = vec![Vec::new(); runners.len()];
    for _ in 0..sweep.repeat.max(1) {
        base.push(baseline()?);
        for (i, r) in runners.iter_mut().enumerate() {
            meas[i].push(r.once(groups, w, &tokens)?);
        }
    }
    // The solo and co-run controls of each forward schedule, once per M,
    // after its rounds.
    let controls = sweep
        .schedules
        .iter()
        .map(|&(kind, v)| {
            if sweep.train {
                return Ok(None);
            }
            let s = make(kind, p, v)?;
            let c = inference_controls(groups, w, &tokens, &s, &Options::default())?;
            Ok(Some((s, c)))
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
        speedup_ideal: (p * m) as f64 / (m + p - 1) as f64,
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

/// Check a sweep's shape before any device work.
pub fn check_sweep(sweep: &Sweep, devices: usize, layers_per_stage: usize) -> Result<()> {
    if sweep.microbatches.is_empty() || sweep.microbatches.contains(&0) {
        return Err(Error::Input(
            "--microbatches needs a list of counts >= 1, e.g. 1,2,4,8".into(),
        ));
    }
    for &(kind, v) in &sweep.schedules {
        if !layers_per_stage.is_multiple_of(v) {
            return Err(Error::Input(format!(
                "{kind} with --virtual {v} splits each device's {layers_per_stage} layers into {v} chunks: use --layers-per-stage a multiple of {v}"
            )));
        }
        for &m in &sweep.microbatches {
            if sweep.train {
                Schedule::generate(kind, devices, m, v, false)?;
            } else {
                Schedule::for_inference(kind, devices, m, v)?;
            }
        }
    }
    Ok(())
}

/// A plain-text table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "schedule        v   M  analytic  simulated  measured  makespan ms   tokens/s  speedup (ideal)  hops      MB\n",
    );
    for r in rows {
        out += &format!(
            "{:<14} {:>2} {:>3}   {:>6.1}%    {:>6.1}%   {:>6.1}%  {:>11.1}  {:>9.0}  {:>6.2} ({:>4.2})  {:>5}  {:>6.2}\n",
            r.schedule.name(),
            r.virtual_stages,
            r.microbatches,
            100.0 * r.bubble_analytic,
            100.0 * r.bubble_simulated,
            100.0 * r.bubble_measured,
            r.makespan_ms,
            r.tokens_per_s,
            r.speedup,
            r.speedup_ideal,
            r.transfers,
            r.bytes_moved as f64 / 1e6
        );
    }
    out
}

/// Where the speedup goes, one line per forward row: the ideal speedup, the
/// four losses and the measured speedup (which they add up to), and the
/// speedup with the co-run control divided out.
pub fn accounting_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "schedule        v   M   ideal  -schedule  -imbalance  -slowdown  -orchestration  = measured  w/o co-run  solo ms       co-run ms\n",
    );
    let ms = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    for r in rows.iter().filter(|r| !r.train) {
        out += &format!(
            "{:<14} {:>2} {:>3}  {:>6.2}  {:>9.2}  {:>10.2}  {:>9.2}  {:>14.2}  {:>10.2}  {:>10.2}  {:<12}  {}\n",
            r.schedule.name(),
            r.virtual_stages,
            r.microbatches,
            r.speedup_ideal,
            r.loss_schedule,
            r.loss_imbalance,
            r.loss_slowdown,
            r.loss_orchestration,
            r.speedup,
            r.speedup_without_corun,
            ms(&r.solo_ms),
            ms(&r.corun_ms)
        );
    }
    out
}

/// The rows as CSV: a header of [`Row`]'s field names, then one line per
/// row, written by the `csv` crate from `Row`'s `Serialize` form (so every
/// field is there, in declaration order; `forward_ms` as one `;`-separated cell).
pub fn csv(rows: &[Row]) -> Result<String> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)
            .map_err(|e| Error::Other(format!("bench CSV: {e}")))?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::Other(format!("bench CSV: {}", e.error())))?;
    String::from_utf8(bytes).map_err(|e| Error::Other(format!("bench CSV: {e}")))
}

/// `values` as one string, `;`-separated: how [`Row`] serializes a
/// per-stage list, so that it fits one CSV cell.
fn semicolon_separated<S: serde::Serializer>(values: &[f64], s: S) -> Result<S::Ok, S::Error> {
    let cells: Vec<String> = values.iter().map(f64::to_string).collect();
    s.serialize_str(&cells.join(";"))
}

/// [`semicolon_separated`] for counts.
fn semicolon_separated_u64<S: serde::Serializer>(values: &[u64], s: S) -> Result<S::Ok, S::Error> {
    let cells: Vec<String> = values.iter().map(u64::to_string).collect();
    s.serialize_str(&cells.join(";"))
}
