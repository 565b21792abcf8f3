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

use crate::analysis::accounting::{account, Inputs};
use crate::analysis::corun::{inference_controls, Controls};
use crate::analysis::measure::{measure, measure_timeline, Measurement};
use crate::device::place_devices;
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::executor::MpiSummary;
use crate::executor::{Cluster, DeviceGroup};
use crate::io::random_input_ids;
use crate::model::partition::partition;
use crate::model::{Gpt2Config, Gpt2Weights};
use crate::schedule::{analytic, Schedule, ScheduleKind};
use crate::timing::median;
use crate::trace::chart::{bubble_chart, waterfall_chart, Series, Waterfall};
use crate::workload::forward::run_resident;
use crate::workload::resident::Resident;
use crate::workload::train::{TrainOptions, Trainer};

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

/// One point of the sweep. Its `Serialize` form is both the JSON row (lists
/// as arrays) and the CSV line ([`super::csv`]: a list is one cell of
/// `;`-separated values, since a CSV cell cannot nest).
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
    /// transfers (the co-run control), in ms (empty with `train`).
    pub solo_ms: Vec<f64>,
    pub corun_ms: Vec<f64>,
    pub baseline_ms: f64,
    /// Median forward time per stage and median transfer: the simulator's
    /// inputs.
    pub forward_ms: Vec<f64>,
    /// Training: median B, I and W time per stage (empty when the schedule
    /// has no such action).
    pub backward_ms: Vec<f64>,
    pub input_grad_ms: Vec<f64>,
    pub weight_grad_ms: Vec<f64>,
    /// Training: bytes of stashed activations per device.
    pub peak_activation_bytes: Vec<u64>,
    pub transfer_ms: f64,
    pub transfers: usize,
    pub bytes_moved: u64,
    pub clock: String,
}

/// One series' runner at one M: an inference schedule over weights
/// uploaded once, or a trainer whose stages stay on their devices between
/// steps.
enum Runner<'g> {
    Infer(Schedule, Resident),
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
        return Ok(Runner::Infer(s, resident));
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

/// `bench bubble`'s settings: the sweep, where it runs and on which model.
#[derive(Clone, Debug)]
pub struct BubbleBench {
    /// Pipeline devices: a count or a list like `vulkan:0,vulkan:0`.
    pub devices: String,
    pub sweep: Sweep,
    /// A built-in model (its layers split evenly), or `None` for the uniform
    /// bench model with `layers_per_stage` blocks per device.
    pub model: Option<String>,
    pub layers_per_stage: usize,
}

/// What `bench bubble` measured.
#[derive(Clone, Debug, Serialize)]
pub struct BubbleReport {
    pub devices: usize,
    pub device_names: Vec<String>,
    pub model: Gpt2Config,
    pub seq: usize,
    pub sequences_per_microbatch: usize,
    pub repeat: usize,
    pub train: bool,
    /// Mesa's software adapters' thread count, as this process ran with it.
    pub lp_num_threads: Option<String>,
    pub rows: Vec<Row>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mpi: Option<MpiSummary>,
}

impl BubbleBench {
    /// The model the sweep runs, checked against the sweep.
    pub fn model_config(&self, p: usize) -> Result<Gpt2Config> {
        let cfg = match &self.model {
            Some(name) => Gpt2Config::named(name)?,
            None => super::bench_config(self.layers_per_stage * p, self.sweep.seq),
        };
        let per_device = match self.model {
            Some(_) => cfg.n_layer / p,
            None => self.layers_per_stage,
        };
        check_sweep(&self.sweep, p, per_device)?;
        if self.sweep.seq > cfg.n_positions {
            return Err(Error::Input(format!(
                "--seq {} exceeds the model's n_positions {}",
                self.sweep.seq, cfg.n_positions
            )));
        }
        Ok(cfg)
    }

    /// Open the devices (under MPI this rank's) and the baseline's Gpu on
    /// schedule device 0's adapter, and run the sweep ([`run_sweep`]);
    /// `progress` sees each finished row.
    pub fn run(&self, cluster: &Cluster, progress: impl FnMut(&Row)) -> Result<BubbleReport> {
        let placement = place_devices(&self.devices, 1)?;
        let p = placement.devices();
        let cfg = self.model_config(p)?;
        let w = Gpt2Weights::init(&cfg, self.sweep.seed)?;
        let gpus = cluster.open_local(&placement, &self.devices)?;
        let groups = cluster.device_groups(&gpus, p)?;
        let device_names = cluster.device_labels(&groups)?;
        // The baseline's own Gpu: opened where device 0 is driven.
        let single = match cluster.drives(0) {
            true => Some(Gpu::open_summary(
                cluster.local_adapter(&placement, &self.devices)?,
            )?),
            false => None,
        };
        let rows = run_sweep(&groups, cluster, single.as_ref(), &w, &self.sweep, progress)?;
        Ok(BubbleReport {
            devices: p,
            device_names,
            model: cfg,
            seq: self.sweep.seq,
            sequences_per_microbatch: self.sweep.sequences,
            repeat: self.sweep.repeat,
            train: self.sweep.train,
            lp_num_threads: std::env::var("LP_NUM_THREADS").ok(),
            rows,
            mpi: cluster.summary(),
        })
    }
}

impl BubbleReport {
    /// A heading, the table, and for forward sweeps where the speedup goes.
    pub fn text(&self) -> String {
        let mut s = format!(
            "P={} on {}; model: {} layers, C={}, T={}, {} sequence(s)/microbatch; median of {}\n",
            self.devices,
            self.device_names.first().map_or("?", String::as_str),
            self.model.n_layer,
            self.model.n_embd,
            self.seq,
            self.sequences_per_microbatch,
            self.repeat
        );
        if let Some(m) = &self.mpi {
            s += &format!("{}\n", m.line());
        }
        s += &table(&self.rows);
        if !self.train {
            s += "\nWhere the speedup goes (losses in speedup units; they add up to the measured speedup):\n";
            s += &accounting_table(&self.rows);
        }
        s
    }

    /// The bubble against M, one series per (schedule, v): analytic curve,
    /// simulated rings, measured dots.
    pub fn chart(&self) -> String {
        let what = if self.train {
            "training step"
        } else {
            "forward"
        };
        let title = format!(
            "Pipeline bubble ({what}), P={}: analytic, simulated, measured",
            self.devices
        );
        bubble_chart(&chart_series(&self.rows, self.devices, self.train), &title)
    }

    /// Where the speedup goes, one waterfall panel per forward row.
    pub fn waterfall(&self) -> String {
        let falls: Vec<Waterfall> = self.rows.iter().map(waterfall).collect();
        let title = format!(
            "Where the speedup goes, P={}: ideal, each loss, measured",
            self.devices
        );
        waterfall_chart(&falls, &title)
    }
}

/// A forward row's loss accounting as one waterfall panel.
fn waterfall(r: &Row) -> Waterfall {
    let v = if r.virtual_stages > 1 {
        format!(" v={}", r.virtual_stages)
    } else {
        String::new()
    };
    Waterfall {
        label: format!("{}{v} M={}", r.schedule, r.microbatches),
        ideal: r.speedup_ideal,
        steps: [
            ("schedule", r.loss_schedule),
            ("imbalance", r.loss_imbalance),
            ("slowdown", r.loss_slowdown),
            ("orchestration", r.loss_orchestration),
        ]
        .iter()
        .map(|(n, l)| (n.to_string(), *l))
        .collect(),
        measured: r.speedup,
    }
}

/// One chart series per (schedule, v).
fn chart_series(rows: &[Row], p: usize, train: bool) -> Vec<Series> {
    let mut keys: Vec<(ScheduleKind, usize)> = Vec::new();
    for r in rows {
        let k = (r.schedule, r.virtual_stages);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(kind, v)| {
            let points = rows
                .iter()
                .filter(|r| r.schedule == kind && r.virtual_stages == v)
                .map(|r| {
                    (
                        r.microbatches,
                        r.bubble_analytic,
                        r.bubble_simulated,
                        r.bubble_measured,
                    )
                })
                .collect();
            Series {
                label: if v > 1 {
                    format!("{kind} v={v}")
                } else {
                    kind.to_string()
                },
                analytic: Box::new(move |m| analytic::bubble(kind, p, m, v, !train)),
                points,
            }
        })
        .collect()
}
