//! `wgpipe bench decode`: the serving side of the seed's PP-vs-TP table,
//! measured — for P devices and G groups of sequences in flight, the time to
//! the first token, the time per output token, inter-token latencies and
//! output tokens/s of pipelined KV-cache decoding.

use std::path::PathBuf;

use serde::Serialize;

use crate::cli::model_args::check_output_path;
use crate::device::place_devices;
use crate::error::{Error, Result};
use crate::executor::balance::{choose_split, profile_layers, PROFILE_ITERATIONS};
use crate::executor::decode::{generate, DecodeJob};
use crate::executor::measure::median;
use crate::executor::DeviceGroup;
use crate::io::{random_input_ids, write_file};
use crate::model::Gpt2Weights;
use crate::sampling::SampleSettings;
use crate::schedule::Schedule;
use crate::trace::chart::{line_chart, Line};

#[derive(clap::Args, Debug, Clone)]
pub struct DecodeBenchArgs {
    /// Pipeline depths P to measure, each on P devices of the default adapter.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub devices: Vec<usize>,
    /// Group counts to measure (default: 1 to 2P for each P).
    #[arg(long, value_delimiter = ',')]
    pub groups: Option<Vec<usize>>,
    /// Sequences per group.
    #[arg(long, default_value_t = 1)]
    pub sequences_per_group: usize,
    /// Built-in model with seeded random weights (e.g. gpt2). Default: the
    /// uniform bench model of `bench bubble` (C=256, 4 heads, F=1024, vocab
    /// 64), whose stages balance at any P dividing its layers.
    #[arg(long)]
    pub model: Option<String>,
    /// Blocks: the bench model's count (default 4), or the first N blocks
    /// of a built-in model (default: all).
    #[arg(long)]
    pub layers: Option<usize>,
    /// Prompt tokens per sequence.
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Timed runs per point; the median of each figure is reported.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write output tokens/s against groups in flight, one line per P.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// One measured point.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeRow {
    pub devices: usize,
    pub groups: usize,
    pub sequences: usize,
    pub ttft_ms: f64,
    pub tpot_ms: f64,
    pub itl_ms_p50: f64,
    pub itl_ms_p99: f64,
    pub tokens_per_s: f64,
    /// The decode schedule's bubble, measured on the timeline.
    pub bubble_measured: f64,
    /// Steady state with equal stages: 1 − min(G, P) / P.
    pub bubble_analytic: f64,
    /// Layers per stage.
    pub split: String,
    /// KV-cache bytes on each device, `;`-separated.
    pub kv_bytes: String,
}

pub fn run(a: &DecodeBenchArgs) -> Result<()> {
    check_output_path(a.csv.as_deref())?;
    check_output_path(a.svg.as_deref())?;
    let cfg = crate::bench::bench_model(
        a.model.as_deref(),
        a.layers,
        4,
        a.prompt_len + a.max_new_tokens,
    )?;
    if a.devices.contains(&0) || a.sequences_per_group == 0 || a.repeat == 0 {
        return Err(Error::Input(
            "--devices, --sequences-per-group and --repeat must be at least 1".into(),
        ));
    }
    if a.prompt_len == 0 || a.prompt_len + a.max_new_tokens > cfg.n_positions {
        return Err(Error::Input(format!(
            "--prompt-len {} + --max-new-tokens {} must be between 1 and the model's n_positions {}",
            a.prompt_len, a.max_new_tokens, cfg.n_positions
        )));
    }
    let w = Gpt2Weights::init(&cfg, a.seed)?;
    let mut rows = Vec::new();
    for &p in &a.devices {
        let placement = place_devices(&p.to_string(), 1)?;
        let gpus = placement.open()?;
        let groups = gpus
            .iter()
            .map(|g| DeviceGroup::new(g))
            .collect::<Result<Vec<_>>>()?;
        let counts = a.groups.clone().unwrap_or_else(|| (1..=2 * p).collect());
        // Profile once per P at the decode step's shape; choose the split
        // for each group count's own schedule (with one group every split
        // takes the same time, with P or more the slowest stage sets it).
        let profile = (p > 1)
            .then(|| profile_layers(&groups, &w, a.sequences_per_group, 1, PROFILE_ITERATIONS))
            .transpose()?;
        for &g in &counts {
            let schedule = Schedule::decode(p, g, a.max_new_tokens)?;
            let split = match &profile {
                Some(prof) => choose_split(prof, &schedule, cfg.n_layer)?.split,
                None => vec![cfg.n_layer],
            };
            let b = g * a.sequences_per_group;
            let ids = random_input_ids(b, a.prompt_len, cfg.vocab_size, a.seed);
            let job = DecodeJob {
                prompts: ids.ids.chunks(a.prompt_len).map(<[u32]>::to_vec).collect(),
                max_new_tokens: a.max_new_tokens,
                groups: g,
                sampling: SampleSettings::default(),
                seed: a.seed,
                keep_logits: false,
            };
            let mut runs = Vec::new();
            for _ in 0..a.repeat {
                let gen = generate(&groups, &w, &job, Some(&split), None)?;
                let stats = gen.timeline.stats();
                runs.push((gen.metrics(), stats.bubble, gen.kv_bytes.clone()));
            }
            let med = |f: &dyn Fn(&crate::executor::decode::DecodeMetrics) -> f64| {
                median(runs.iter().map(|r| f(&r.0)).collect())
            };
            let row = DecodeRow {
                devices: p,
                groups: g,
                sequences: b,
                ttft_ms: med(&|m| m.ttft_ms),
                tpot_ms: med(&|m| m.tpot_ms),
                itl_ms_p50: med(&|m| m.itl_ms_p50),
                itl_ms_p99: med(&|m| m.itl_ms_p99),
                tokens_per_s: med(&|m| m.tokens_per_s),
                bubble_measured: median(runs.iter().map(|r| r.1).collect()),
                bubble_analytic: 1.0 - g.min(p) as f64 / p as f64,
                split: join(&split),
                kv_bytes: join(&runs[0].2),
            };
            if !a.json {
                eprintln!(
                    "  P={p} G={g} split {}: TTFT {:.1} ms, TPOT {:.1} ms, ITL p50 {:.1} / p99 {:.1} ms, {:.2} tokens/s, bubble {:.1}%",
                    row.split, row.ttft_ms, row.tpot_ms, row.itl_ms_p50, row.itl_ms_p99, row.tokens_per_s, 100.0 * row.bubble_measured
                );
            }
            rows.push(row);
        }
    }
    if a.json {
        let v = serde_json::json!({
            "model": cfg,
            "prompt_len": a.prompt_len,
            "max_new_tokens": a.max_new_tokens,
            "sequences_per_group": a.sequences_per_group,
            "repeat": a.repeat,
            "lp_num_threads": std::env::var("LP_NUM_THREADS").ok(),
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        print!("{}", table(&rows));
    }
    if let Some(path) = &a.csv {
        let mut wr = ::csv::Writer::from_writer(Vec::new());
        for r in &rows {
            wr.serialize(r)
                .map_err(|e| Error::Other(format!("bench CSV: {e}")))?;
        }
        let bytes = wr
            .into_inner()
            .map_err(|e| Error::Other(format!("bench CSV: {}", e.error())))?;
        write_file(path, &bytes)?;
    }
    if let Some(path) = &a.svg {
        let lines: Vec<Line> = a
            .devices
            .iter()
            .map(|&p| Line {
                label: format!("P={p}"),
                points: rows
                    .iter()
                    .filter(|r| r.devices == p)
                    .map(|r| (r.groups as f64, r.tokens_per_s))
                    .collect(),
            })
            .collect();
        let title = format!(
            "Decode throughput, {} ({} layers): output tokens/s against groups in flight",
            a.model.as_deref().unwrap_or("bench model"),
            cfg.n_layer
        );
        write_file(
            path,
            line_chart(&lines, &title, "groups in flight", "tokens/s").as_bytes(),
        )?;
    }
    Ok(())
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(";")
}

/// The rows as a Markdown table.
pub fn table(rows: &[DecodeRow]) -> String {
    let mut s = String::from(
        "| P | groups | sequences | TTFT ms | TPOT ms | ITL p50 ms | ITL p99 ms | tokens/s | bubble (steady-state) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.1} % ({:.0} %) |\n",
            r.devices,
            r.groups,
            r.sequences,
            r.ttft_ms,
            r.tpot_ms,
            r.itl_ms_p50,
            r.itl_ms_p99,
            r.tokens_per_s,
            100.0 * r.bubble_measured,
            100.0 * r.bubble_analytic
        );
    }
    s
}
