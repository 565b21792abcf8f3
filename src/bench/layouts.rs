//! `bench layouts`: the seed's PP-vs-TP table, measured. For N devices,
//! every layout P × T = N (pipeline depth P, tensor-parallel degree T) runs
//! the same work: a prefill (the inference forward of a batch), a decode of
//! one sequence (latency) and of P groups in flight (throughput), and a
//! training step (1F1B; under TP its forward's and backward's all-reduces).
//! Layouts the model cannot take are listed with the reason.
//!
//! Bytes between devices count what wgpipe moves: pipeline messages (under
//! TP, rank r of one group sends to rank r of the next), plus each
//! all-reduce's partial out of every rank and the sum back into it (host
//! gather-sum-scatter: 2 × the reduced bytes per rank).

use std::path::PathBuf;

use serde::Serialize;

use crate::analysis::serving::DecodeMetrics;
use crate::device::{place_devices, Gpu};
use crate::error::{Error, Result};
use crate::executor::{Cluster, DeviceGroup};
use crate::io::random_input_ids;
use crate::model::partition::partition;
use crate::model::shard::check_degree;
use crate::model::{Gpt2Config, Gpt2Weights};
use crate::sampling::SampleSettings;
use crate::schedule::{Schedule, ScheduleKind};
use crate::timing::median;
use crate::trace::chart::{line_chart, Line};
use crate::trace::Track;
use crate::workload::decode::{generate_resident, DecodeJob, DecodeRun};
use crate::workload::forward::run_resident;
use crate::workload::resident::Resident;
use crate::workload::train::{TrainOptions, Trainer};

/// `bench layouts`' settings.
#[derive(Clone, Debug)]
pub struct LayoutsBench {
    /// N: every layout P × T = N is measured, on N Gpus of the default adapter.
    pub devices: usize,
    /// A built-in model, or `None` for the uniform bench model.
    pub model: Option<String>,
    /// A checkpoint directory instead of a built-in (its weights are run).
    pub checkpoint: Option<PathBuf>,
    /// Blocks: the bench model's (default 4), or the first N of a built-in.
    pub layers: Option<usize>,
    /// Sequences in the prefill batch.
    pub batch: usize,
    /// Prompt tokens per sequence.
    pub seq: usize,
    /// New tokens per sequence in the decode runs (at least 2).
    pub max_new_tokens: usize,
    /// Context the KV-cache bytes are given at (default: n_positions).
    pub context: Option<usize>,
    /// Skip the training step.
    pub no_train: bool,
    /// Measurements per layout; each figure is the median.
    pub repeat: usize,
    pub seed: u64,
}

/// One measured layout.
#[derive(Clone, Debug, Serialize)]
pub struct LayoutRow {
    pub tp: usize,
    pub pp: usize,
    /// Bytes moved between devices per prompt token (prefill).
    pub bytes_per_token_prefill: f64,
    /// Bytes moved between devices per generated token (decode steps).
    pub bytes_per_token_decode: f64,
    /// Points on one decode step's path where a device waits for another:
    /// pipeline hops (with the sampled ids back to the first stage) and
    /// all-reduces.
    pub syncs_per_token: f64,
    pub prefill_tokens_per_s: f64,
    /// Inter-token latency of one sequence alone (p50).
    pub itl_ms: f64,
    /// Output tokens/s with P groups (one sequence each) in flight.
    pub decode_tokens_per_s: f64,
    /// Weight bytes on each Gpu (device × T + rank order).
    pub weight_bytes: Vec<u64>,
    /// KV-cache bytes on each Gpu for one sequence at `context` tokens.
    pub kv_bytes: Vec<u64>,
    pub context: usize,
    /// Forward + backward of the prefill batch (1F1B); `None` with `--no-train`.
    pub train_step_ms: Option<f64>,
    /// Bytes one training step sends between pipeline stages (activations
    /// forward, their gradients backward; counted once per rank pair).
    pub train_sent_bytes: Option<u64>,
    /// Bytes one training step's all-reduces move through the host: every
    /// rank's partial out and the sum back in.
    pub train_reduced_bytes: Option<u64>,
}

/// A layout that was not measured, and why.
#[derive(Clone, Debug, Serialize)]
pub struct SkippedLayout {
    pub tp: usize,
    pub pp: usize,
    pub reason: String,
}

/// What `bench layouts` measured.
#[derive(Clone, Debug, Serialize)]
pub struct LayoutsReport {
    pub model: Gpt2Config,
    pub devices: usize,
    pub batch: usize,
    pub seq: usize,
    pub max_new_tokens: usize,
    pub lp_num_threads: Option<String>,
    pub rows: Vec<LayoutRow>,
    pub skipped: Vec<SkippedLayout>,
    #[serde(skip)]
    pub model_name: String,
}

impl LayoutsBench {
    fn check(&self) -> Result<(Gpt2Config, usize)> {
        let n_pos = (self.seq + self.max_new_tokens).max(self.context.unwrap_or(0));
        let cfg = super::bench_model(
            self.model.as_deref(),
            self.checkpoint.as_deref(),
            self.layers,
            4,
            n_pos,
        )?;
        if self.devices == 0 || self.batch == 0 || self.seq == 0 || self.repeat == 0 {
            return Err(Error::Input(
                "--devices, --batch, --seq and --repeat must be at least 1".into(),
            ));
        }
        if self.max_new_tokens < 2 || self.seq + self.max_new_tokens > cfg.n_positions {
            return Err(Error::Input(format!(
                "--max-new-tokens {} must be at least 2, and --seq {} plus it at most the model's n_positions {}",
                self.max_new_tokens, self.seq, cfg.n_positions
            )));
        }
        let context = self.context.unwrap_or(cfg.n_positions);
        if context == 0 || context > cfg.n_positions {
            return Err(Error::Input(format!(
                "--context {context} must be between 1 and the model's n_positions {}",
                cfg.n_positions
            )));
        }
        Ok((cfg, context))
    }

    /// Every layout T × P = N: the ones the model takes measured, the
    /// others listed with the reason; `progress` sees each measured row.
    pub fn run(&self, mut progress: impl FnMut(&LayoutRow)) -> Result<LayoutsReport> {
        let (cfg, context) = self.check()?;
        let n = self.devices;
        let mut layouts = Vec::new();
        let mut skipped = Vec::new();
        for t in (1..=n).filter(|t| n.is_multiple_of(*t)) {
            let p = n / t;
            let why = match check_degree(&cfg, t) {
                Err(e) => Some(e.to_string()),
                Ok(()) if p > cfg.n_layer => Some(format!(
                    "{p} pipeline stages need at least {p} blocks; the model has {}",
                    cfg.n_layer
                )),
                Ok(()) => None,
            };
            match why {
                Some(reason) => skipped.push(SkippedLayout {
                    tp: t,
                    pp: p,
                    reason,
                }),
                None => layouts.push((t, p)),
            }
        }
        if layouts.is_empty() {
            let reasons: Vec<String> = (skipped.iter())
                .map(|s| format!("TP {} x PP {}: {}", s.tp, s.pp, s.reason))
                .collect();
            return Err(Error::Input(format!(
                "no layout of {n} devices splits this model ({} heads, {} blocks): {}",
                cfg.n_head,
                cfg.n_layer,
                reasons.join("; ")
            )));
        }
        let w = super::bench_weights(&cfg, self.checkpoint.as_deref(), self.seed)?;
        let gpus: Vec<Gpu> = place_devices(&n.to_string(), 1)?
            .open()?
            .into_iter()
            .flatten()
            .collect();
        let mut rows = Vec::new();
        for (tp, pp) in layouts {
            let groups: Vec<DeviceGroup> = gpus
                .chunks(tp)
                .map(DeviceGroup::new)
                .collect::<Result<_>>()?;
            let runs = (0..self.repeat)
                .map(|_| measure_layout(self, &w, &groups, tp, pp, context))
                .collect::<Result<Vec<_>>>()?;
            let row = median_row(runs);
            progress(&row);
            rows.push(row);
        }
        Ok(LayoutsReport {
            model: cfg,
            devices: n,
            batch: self.batch,
            seq: self.seq,
            max_new_tokens: self.max_new_tokens,
            lp_num_threads: std::env::var("LP_NUM_THREADS").ok(),
            rows,
            skipped,
            model_name: super::bench_name(self.model.as_deref(), self.checkpoint.as_deref()),
        })
    }
}

impl LayoutRow {
    /// One progress line.
    pub fn line(&self) -> String {
        format!(
            "TP {} x PP {}: prefill {:.0} tokens/s, ITL {:.1} ms, decode {:.1} tokens/s, {:.0} / {:.0} bytes per token, {:.1} syncs per token",
            self.tp,
            self.pp,
            self.prefill_tokens_per_s,
            self.itl_ms,
            self.decode_tokens_per_s,
            self.bytes_per_token_prefill,
            self.bytes_per_token_decode,
            self.syncs_per_token
        ) + &match (self.train_step_ms, self.train_sent_bytes, self.train_reduced_bytes) {
            (Some(ms), Some(sent), Some(red)) => format!(
                ", train step {ms:.0} ms ({} MiB sent, {} MiB all-reduced)",
                mib(sent),
                mib(red)
            ),
            _ => String::new(),
        }
    }
}

impl LayoutsReport {
    /// The rows as a Markdown table.
    pub fn table(&self) -> String {
        table(&self.rows)
    }

    /// Prefill and decode tokens/s against the TP degree.
    pub fn chart(&self) -> String {
        let line = |label: &str, f: fn(&LayoutRow) -> f64| Line {
            label: label.into(),
            points: self.rows.iter().map(|r| (r.tp as f64, f(r))).collect(),
        };
        let lines = [
            line("prefill tokens/s", |r| r.prefill_tokens_per_s),
            line("decode tokens/s (P groups)", |r| r.decode_tokens_per_s),
            line("1 / ITL (tokens/s, one sequence)", |r| 1e3 / r.itl_ms),
        ];
        let title = format!(
            "{} devices as TP x PP, {} ({} layers): throughput against the TP degree",
            self.devices, self.model_name, self.model.n_layer
        );
        line_chart(
            &lines,
            &title,
            "tensor-parallel degree T (P = N / T)",
            "tokens/s",
        )
    }
}

fn measure_layout(
    a: &LayoutsBench,
    w: &Gpt2Weights,
    groups: &[DeviceGroup],
    tp: usize,
    pp: usize,
    context: usize,
) -> Result<LayoutRow> {
    let cfg = &w.config;
    let local = Cluster::Local;
    // Prefill: the batch as P microbatches of GPipe (at least one sequence each).
    let tokens = random_input_ids(a.batch, a.seq, cfg.vocab_size, a.seed);
    let m = pp.min(a.batch);
    let schedule = Schedule::for_inference(ScheduleKind::Gpipe, pp, m, 1)?;
    let parts = partition(cfg.n_layer, pp, None)?;
    let resident = Resident::upload(groups, &local, w, parts)?;
    run_resident(groups, &local, &resident, &tokens, &schedule)?; // warm-up
    let pre = run_resident(groups, &local, &resident, &tokens, &schedule)?;
    let n_tokens = (a.batch * a.seq) as f64;
    let prefill_bytes = (pre.bytes_moved() + pre.reduced_bytes) as f64;

    // Decode: one sequence alone, then P groups of one.
    let prompts = |b: usize| {
        let ids = random_input_ids(b, a.seq, cfg.vocab_size, a.seed + 1);
        ids.ids
            .chunks(a.seq)
            .map(<[u32]>::to_vec)
            .collect::<Vec<_>>()
    };
    let job = |b: usize, g: usize| DecodeJob {
        prompts: prompts(b),
        max_new_tokens: a.max_new_tokens,
        groups: g,
        sampling: SampleSettings::default(),
        seed: a.seed,
        keep_logits: false,
    };
    let alone = generate_resident(groups, &local, &resident, &job(1, 1), None)?;
    let many = generate_resident(groups, &local, &resident, &job(pp, pp), None)?;
    let (decode_bytes, syncs) = decode_traffic(&many, pp);
    let decode_tokens = (pp * (a.max_new_tokens - 1)) as f64;

    // KV bytes for one sequence at `context`: the allocation is per
    // (slot, position); the runs allocate one slot per sequence plus one, and
    // the positions the generation needs (prompt and new tokens).
    let slots = (pp + 1) as u64;
    let positions = (a.seq + a.max_new_tokens) as u64;
    let kv_bytes = many
        .kv_bytes
        .iter()
        .map(|b| b / (slots * positions) * context as u64)
        .collect();

    let train = match a.no_train {
        false => Some(train_step(groups, w, &tokens, pp)?),
        true => None,
    };
    Ok(LayoutRow {
        tp,
        pp,
        bytes_per_token_prefill: prefill_bytes / n_tokens,
        bytes_per_token_decode: decode_bytes / decode_tokens,
        syncs_per_token: syncs,
        prefill_tokens_per_s: n_tokens / pre.wall_s,
        itl_ms: DecodeMetrics::of(&alone).itl_ms_p50,
        decode_tokens_per_s: DecodeMetrics::of(&many).tokens_per_s,
        weight_bytes: many.weight_bytes.clone(),
        kv_bytes,
        context,
        train_step_ms: train.map(|t| t.0),
        train_sent_bytes: train.map(|t| t.1),
        train_reduced_bytes: train.map(|t| t.2),
    })
}

/// Bytes moved in the decode steps (not the prefill) and the sync points on
/// one step's path, averaged over the steps: messages (counted once per
/// rank pair) and rank 0's all-reduces.
fn decode_traffic(g: &DecodeRun, groups: usize) -> (f64, f64) {
    let decode_step = |u: usize| u / groups >= 1;
    let moved: u64 = g
        .transfers
        .iter()
        .filter(|t| decode_step(t.consumer.microbatch))
        .map(|t| t.bytes)
        .sum();
    let mut reduced = 0;
    let mut syncs = g
        .transfers
        .iter()
        .filter(|t| t.rank == 0 && decode_step(t.consumer.microbatch))
        .count();
    for e in &g.timeline.events {
        if let (Track::AllReduce { gpu, .. }, Some(a)) = (e.track, e.action) {
            if decode_step(a.microbatch) {
                reduced += 2 * e.bytes;
                if gpu == 0 {
                    syncs += 1;
                }
            }
        }
    }
    let steps = (g.schedule.microbatches - groups) as f64;
    ((moved + reduced) as f64, syncs as f64 / steps)
}

/// One 1F1B training step's forward and backward (after a warm-up): ms,
/// bytes sent between stages, bytes all-reduced.
fn train_step(
    groups: &[DeviceGroup],
    w: &Gpt2Weights,
    tokens: &crate::io::TokenBatch,
    pp: usize,
) -> Result<(f64, u64, u64)> {
    let m = pp.min(tokens.batch);
    let schedule = Schedule::generate(ScheduleKind::OneFOneB, pp, m, 1, false)?;
    let mut t = Trainer::new(
        groups,
        &Cluster::Local,
        w,
        &schedule,
        tokens.batch,
        tokens.seq,
        &TrainOptions::default(),
    )?;
    t.forward_backward(tokens)?;
    let step = t.forward_backward(tokens)?;
    let sent = step.transfers.iter().map(|t| t.bytes).sum();
    let reduced = step
        .timeline
        .events
        .iter()
        .filter(|e| matches!(e.track, Track::AllReduce { .. }))
        .map(|e| 2 * e.bytes)
        .sum();
    Ok((step.wall_s * 1e3, sent, reduced))
}

/// Each timed figure's median over `runs` (the counted ones are the same
/// every run).
fn median_row(runs: Vec<LayoutRow>) -> LayoutRow {
    let med = |f: fn(&LayoutRow) -> f64| median(runs.iter().map(f).collect());
    let train = runs
        .iter()
        .filter_map(|r| r.train_step_ms)
        .collect::<Vec<_>>();
    LayoutRow {
        prefill_tokens_per_s: med(|r| r.prefill_tokens_per_s),
        itl_ms: med(|r| r.itl_ms),
        decode_tokens_per_s: med(|r| r.decode_tokens_per_s),
        train_step_ms: (!train.is_empty()).then(|| median(train)),
        ..runs[0].clone()
    }
}

fn mib(b: u64) -> String {
    format!("{:.2}", b as f64 / (1 << 20) as f64)
}

/// The rows as a Markdown table.
pub fn table(rows: &[LayoutRow]) -> String {
    let mut s = String::from(
        "| TP x PP | bytes/token prefill | bytes/token decode | syncs/token | prefill tokens/s | ITL ms (1 seq) | decode tokens/s (P groups) | weights MiB per Gpu | KV MiB per Gpu (1 seq, context) | train step ms | train MiB sent / all-reduced per step |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} x {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} | {} | {} ({}) | {} | {} |\n",
            r.tp,
            r.pp,
            r.bytes_per_token_prefill,
            r.bytes_per_token_decode,
            r.syncs_per_token,
            r.prefill_tokens_per_s,
            r.itl_ms,
            r.decode_tokens_per_s,
            r.weight_bytes
                .iter()
                .map(|&b| mib(b))
                .collect::<Vec<_>>()
                .join(" / "),
            r.kv_bytes
                .iter()
                .map(|&b| mib(b))
                .collect::<Vec<_>>()
                .join(" / "),
            r.context,
            r.train_step_ms.map_or("—".into(), |x| format!("{x:.0}")),
            match (r.train_sent_bytes, r.train_reduced_bytes) {
                (Some(sent), Some(red)) => format!("{} / {}", mib(sent), mib(red)),
                _ => "—".into(),
            }
        );
    }
    s
}
