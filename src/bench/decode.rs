//! `bench decode`: the serving side of the seed's PP-vs-TP table, measured —
//! for P devices and G groups of sequences in flight, the time to the first
//! token, the time per output token, inter-token latencies and output
//! tokens/s of pipelined KV-cache decoding.

use std::path::PathBuf;

use serde::Serialize;

use crate::analysis::serving::DecodeMetrics;
use crate::analysis::split::{choose_split, PROFILE_ITERATIONS};
use crate::device::{place_devices, Dtype, DtypeChoice};
use crate::error::{Error, Result};
use crate::executor::{Cluster, DeviceGroup};
use crate::io::random_input_ids;
use crate::model::checkpoint::Checkpoint;
use crate::model::partition::partition;
use crate::model::{Gpt2Config, Gpt2Weights};
use crate::sampling::SampleSettings;
use crate::schedule::Schedule;
use crate::timing::median;
use crate::trace::chart::{line_chart, Line};
use crate::workload::decode::{generate_resident, DecodeJob};
use crate::workload::profile::profile_layers;
use crate::workload::resident::{DtypeRequest, Resident};

/// `bench decode`'s settings.
#[derive(Clone, Debug)]
pub struct DecodeBench {
    /// Pipeline depths P, each on P devices of the default adapter.
    pub devices: Vec<usize>,
    /// Group counts (default: 1 to 2P for each P).
    pub groups: Option<Vec<usize>>,
    pub sequences_per_group: usize,
    /// A built-in model, or `None` for the uniform bench model.
    pub model: Option<String>,
    /// A checkpoint directory instead of a built-in (its weights are run).
    pub checkpoint: Option<PathBuf>,
    /// Blocks: the bench model's count (default 4), or the first N of a
    /// built-in model.
    pub layers: Option<usize>,
    pub prompt_len: usize,
    pub max_new_tokens: usize,
    /// Timed runs per point; each figure is the median.
    pub repeat: usize,
    pub seed: u64,
    /// Storage types to measure each point in (`auto` follows the
    /// checkpoint).
    pub dtypes: Vec<DtypeChoice>,
}

/// One measured point.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeRow {
    pub devices: usize,
    pub groups: usize,
    pub sequences: usize,
    /// The storage type each device ran in (`--dtype` resolved).
    pub dtype: Vec<Dtype>,
    pub ttft_ms: f64,
    /// Prompt tokens over TTFT: sequences × prompt length / time to the
    /// first token (the prefill passes, and the first decode's sampling).
    pub prefill_tokens_per_s: f64,
    pub tpot_ms: f64,
    pub itl_ms_p50: f64,
    pub itl_ms_p99: f64,
    /// The ITL's breakdown: the devices computing a decoded token (its
    /// passes on every stage, sampler included; GPU timestamps), and the
    /// rest of ITL p50 (submits, waits, hops, readbacks, other groups).
    pub itl_kernels_ms: f64,
    pub itl_other_ms: f64,
    pub tokens_per_s: f64,
    /// The decode schedule's bubble, measured on the timeline.
    pub bubble_measured: f64,
    /// Steady state with equal stages: 1 − min(G, P) / P.
    pub bubble_analytic: f64,
    /// Layers per stage.
    pub split: Vec<usize>,
    /// KV-cache bytes on each device.
    pub kv_bytes: Vec<u64>,
    /// Weight bytes on each device (buffers and the texture copies decoding reads).
    pub weight_bytes: Vec<u64>,
    /// Bytes sent between devices over the run.
    pub bytes_moved: u64,
    /// Where each device's decode matmuls read their weights from.
    pub decode_weights: Vec<crate::kernels::WeightStorage>,
}

/// What `bench decode` measured.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeReport {
    pub model: Gpt2Config,
    pub prompt_len: usize,
    pub max_new_tokens: usize,
    pub sequences_per_group: usize,
    pub repeat: usize,
    pub lp_num_threads: Option<String>,
    pub rows: Vec<DecodeRow>,
    /// The model's name for titles: the built-in's, or "bench model".
    #[serde(skip)]
    pub model_name: String,
}

impl DecodeBench {
    /// Measure every (P, G); `progress` sees each finished row.
    pub fn run(&self, mut progress: impl FnMut(&DecodeRow)) -> Result<DecodeReport> {
        let n_pos = self.prompt_len + self.max_new_tokens;
        let cfg = super::bench_model(
            self.model.as_deref(),
            self.checkpoint.as_deref(),
            self.layers,
            4,
            n_pos,
        )?;
        if self.devices.contains(&0)
            || self.sequences_per_group == 0
            || self.repeat == 0
            || self.dtypes.is_empty()
        {
            return Err(Error::Input(
                "--devices, --sequences-per-group, --repeat and --dtype must be at least 1".into(),
            ));
        }
        if self.prompt_len == 0 || n_pos > cfg.n_positions {
            return Err(Error::Input(format!(
                "--prompt-len {} + --max-new-tokens {} must be between 1 and the model's n_positions {}",
                self.prompt_len, self.max_new_tokens, cfg.n_positions
            )));
        }
        let w = super::bench_weights(&cfg, self.checkpoint.as_deref(), self.seed)?;
        let stored = match &self.checkpoint {
            Some(dir) => Checkpoint::open(dir)?.stored_dtype(),
            None => Dtype::F32,
        };
        let mut rows = Vec::new();
        for &p in &self.devices {
            for row in self.measure_depth(&w, p, stored)? {
                progress(&row);
                rows.push(row);
            }
        }
        Ok(DecodeReport {
            model: cfg,
            prompt_len: self.prompt_len,
            max_new_tokens: self.max_new_tokens,
            sequences_per_group: self.sequences_per_group,
            repeat: self.repeat,
            lp_num_threads: std::env::var("LP_NUM_THREADS").ok(),
            rows,
            model_name: super::bench_name(self.model.as_deref(), self.checkpoint.as_deref()),
        })
    }

    /// Every group count on P devices. The layers are profiled once per P
    /// at the decode step's shape; the split is chosen for each group
    /// count's own schedule (with one group every split takes the same time,
    /// with P or more the slowest stage sets it).
    fn measure_depth(&self, w: &Gpt2Weights, p: usize, stored: Dtype) -> Result<Vec<DecodeRow>> {
        let cfg = &w.config;
        let gpus = place_devices(&p.to_string(), 1)?.open()?;
        let groups = gpus
            .iter()
            .map(|g| DeviceGroup::new(g))
            .collect::<Result<Vec<_>>>()?;
        let local = Cluster::Local;
        let seqs = self.sequences_per_group;
        let profile = (p > 1)
            .then(|| profile_layers(&groups, &local, w, seqs, 1, PROFILE_ITERATIONS))
            .transpose()?;
        let counts = self.groups.clone().unwrap_or_else(|| (1..=2 * p).collect());
        let mut rows = Vec::new();
        for (&g, &choice) in counts
            .iter()
            .flat_map(|g| self.dtypes.iter().map(move |d| (g, d)))
        {
            let schedule = Schedule::decode(p, g, self.max_new_tokens)?;
            let split = match &profile {
                Some(prof) => choose_split(prof, &schedule, cfg.n_layer)?.split,
                None => vec![cfg.n_layer],
            };
            let parts = partition(cfg.n_layer, p, Some(&split))?;
            let dtype = DtypeRequest { choice, stored };
            let resident = Resident::upload_as(&groups, &local, w, parts, dtype)?;
            let b = g * seqs;
            let ids = random_input_ids(b, self.prompt_len, cfg.vocab_size, self.seed);
            let job = DecodeJob {
                prompts: ids
                    .ids
                    .chunks(self.prompt_len)
                    .map(<[u32]>::to_vec)
                    .collect(),
                max_new_tokens: self.max_new_tokens,
                groups: g,
                sampling: SampleSettings::default(),
                seed: self.seed,
                keep_logits: false,
            };
            let mut runs = Vec::new();
            for _ in 0..self.repeat {
                let run = generate_resident(&groups, &local, &resident, &job, None)?;
                let bubble = run.timeline.stats().bubble;
                let storage: Vec<_> = run.decode_weights.iter().map(|w| w.storage).collect();
                let moved = run.transfers.iter().map(|t| t.bytes).sum::<u64>();
                runs.push((
                    DecodeMetrics::of(&run),
                    bubble,
                    (run.kv_bytes.clone(), run.weight_bytes.clone(), moved),
                    storage,
                ));
            }
            let med =
                |f: &dyn Fn(&DecodeMetrics) -> f64| median(runs.iter().map(|r| f(&r.0)).collect());
            rows.push(DecodeRow {
                devices: p,
                groups: g,
                sequences: b,
                dtype: resident.precision.iter().map(|p| p.dtype).collect(),
                ttft_ms: med(&|m| m.ttft_ms),
                prefill_tokens_per_s: med(&|m| (b * self.prompt_len) as f64 / (m.ttft_ms / 1e3)),
                tpot_ms: med(&|m| m.tpot_ms),
                itl_ms_p50: med(&|m| m.itl_ms_p50),
                itl_ms_p99: med(&|m| m.itl_ms_p99),
                itl_kernels_ms: med(&|m| m.itl_kernels_ms_p50),
                itl_other_ms: med(&|m| m.itl_ms_p50 - m.itl_kernels_ms_p50),
                tokens_per_s: med(&|m| m.tokens_per_s),
                bubble_measured: median(runs.iter().map(|r| r.1).collect()),
                bubble_analytic: crate::schedule::analytic::decode_bubble(g, p),
                split,
                kv_bytes: runs[0].2 .0.clone(),
                weight_bytes: runs[0].2 .1.clone(),
                bytes_moved: runs[0].2 .2,
                decode_weights: runs[0].3.clone(),
            });
        }
        Ok(rows)
    }
}

impl DecodeRow {
    /// `f16`, `f32`, or per device (`f16/f32`).
    pub fn dtype_name(&self) -> String {
        let mut names: Vec<&str> = self.dtype.iter().map(|d| d.name()).collect();
        names.dedup();
        names.join("/")
    }

    /// One progress line.
    pub fn line(&self) -> String {
        format!(
            "P={} G={} {} split {:?}: TTFT {:.1} ms, TPOT {:.1} ms, ITL p50 {:.1} (kernels {:.1} + rest {:.1}) / p99 {:.1} ms, {:.2} tokens/s, bubble {:.1}%",
            self.devices,
            self.groups,
            self.dtype_name(),
            self.split,
            self.ttft_ms,
            self.tpot_ms,
            self.itl_ms_p50,
            self.itl_kernels_ms,
            self.itl_other_ms,
            self.itl_ms_p99,
            self.tokens_per_s,
            100.0 * self.bubble_measured
        )
    }
}

impl DecodeReport {
    /// The rows as a Markdown table.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| P | groups | sequences | dtype | weights MB/device | KV MB/device | TTFT ms | prefill tokens/s | TPOT ms | ITL p50 ms | of which kernels | ITL p99 ms | tokens/s | bubble (steady-state) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        );
        let mb = |b: &[u64]| {
            let v: Vec<String> = b
                .iter()
                .map(|x| format!("{:.2}", *x as f64 / 1e6))
                .collect();
            v.join(" / ")
        };
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} % ({:.0} %) |\n",
                r.devices,
                r.groups,
                r.sequences,
                r.dtype_name(),
                mb(&r.weight_bytes),
                mb(&r.kv_bytes),
                r.ttft_ms,
                r.prefill_tokens_per_s,
                r.tpot_ms,
                r.itl_ms_p50,
                r.itl_kernels_ms,
                r.itl_ms_p99,
                r.tokens_per_s,
                100.0 * r.bubble_measured,
                100.0 * r.bubble_analytic
            );
        }
        s
    }

    /// Output tokens/s against groups in flight, one line per P.
    pub fn chart(&self) -> String {
        let mut series: Vec<(usize, String)> = Vec::new();
        for r in &self.rows {
            let key = (r.devices, r.dtype_name());
            if !series.contains(&key) {
                series.push(key);
            }
        }
        let one_dtype = series.iter().all(|(_, d)| *d == series[0].1);
        let lines: Vec<Line> = series
            .iter()
            .map(|(p, d)| Line {
                label: match one_dtype {
                    true => format!("P={p}"),
                    false => format!("P={p} {d}"),
                },
                points: (self
                    .rows
                    .iter()
                    .filter(|r| r.devices == *p && r.dtype_name() == *d))
                .map(|r| (r.groups as f64, r.tokens_per_s))
                .collect(),
            })
            .collect();
        let title = format!(
            "Decode throughput, {} ({} layers): output tokens/s against groups in flight",
            self.model_name, self.model.n_layer
        );
        line_chart(&lines, &title, "groups in flight", "tokens/s")
    }
}
