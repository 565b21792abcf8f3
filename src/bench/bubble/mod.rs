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
//!
//! `sweep.rs` runs the sweep; `report.rs` turns its rows into tables and
//! charts.

mod report;
mod sweep;

use std::path::PathBuf;

use serde::Serialize;

use crate::device::{place_devices, Gpu};
use crate::error::{Error, Result};
use crate::executor::{Cluster, MpiSummary};
use crate::model::Gpt2Config;
use crate::schedule::{Schedule, ScheduleKind};

pub use report::{accounting_table, table};
pub use sweep::run_sweep;

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

/// `bench bubble`'s settings: the sweep, where it runs and on which model.
#[derive(Clone, Debug)]
pub struct BubbleBench {
    /// Pipeline devices: a count or a list like `vulkan:0,vulkan:0` (P × T
    /// Gpus, stage-major, with `tp` T).
    pub devices: String,
    /// Tensor-parallel degree: Gpus per pipeline device.
    pub tp: usize,
    pub sweep: Sweep,
    /// A built-in model (its layers split evenly), or `None` for the uniform
    /// bench model with `layers_per_stage` blocks per device.
    pub model: Option<String>,
    /// A checkpoint directory instead (its layers split evenly, its weights run).
    pub checkpoint: Option<PathBuf>,
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
        let (model, checkpoint) = (self.model.as_deref(), self.checkpoint.as_deref());
        let bench_layers = self.layers_per_stage * p;
        let cfg = super::bench_model(model, checkpoint, None, bench_layers, self.sweep.seq)?;
        let per_device = match (model, checkpoint) {
            (None, None) => self.layers_per_stage,
            _ => cfg.n_layer / p,
        };
        check_sweep(&self.sweep, p, per_device)?;
        if self.tp != 1 {
            crate::model::shard::check_degree(&cfg, self.tp)?;
        }
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
        if self.tp == 0 {
            return Err(Error::Input("--tp must be at least 1".into()));
        }
        let placement = place_devices(&self.devices, self.tp)?;
        let p = placement.devices();
        let cfg = self.model_config(p)?;
        let w = super::bench_weights(&cfg, self.checkpoint.as_deref(), self.sweep.seed)?;
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
