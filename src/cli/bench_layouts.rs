//! `wgpipe bench layouts`: the seed's PP-vs-TP table, measured. For N
//! devices, every layout P × T = N (pipeline depth P, tensor-parallel degree
//! T) runs the same work: a prefill (the inference forward of a batch), a
//! decode of one sequence (latency) and of P groups in flight (throughput),
//! and, where training runs (T = 1), a training step.
//!
//! Bytes between devices count what wgpipe moves: pipeline messages (under
//! TP, rank r of one group sends to rank r of the next), plus each
//! all-reduce's partial out of every rank and the sum back into it (host
//! gather-sum-scatter: 2 × the reduced bytes per rank).

use std::path::PathBuf;

use serde::Serialize;

use crate::cli::model_args::check_output_path;
use crate::device::place_devices;
use crate::error::{Error, Result};
use crate::executor::decode::{generate, DecodeJob, Generation};
use crate::executor::measure::median;
use crate::executor::train::{TrainOptions, Trainer};
use crate::executor::{run_inference, DeviceGroup, Options};
use crate::io::{random_input_ids, write_file};
use crate::model::{shard::check_degree, Gpt2Weights};
use crate::sampling::SampleSettings;
use crate::schedule::{Schedule, ScheduleKind};
use crate::trace::chart::{line_chart, Line};
use crate::trace::Track;

#[derive(clap::Args, Debug, Clone)]
pub struct LayoutsBenchArgs {
    /// Devices N: every layout P x T = N is measured (on N Gpus of the default adapter).
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// Built-in model with seeded random weights (e.g. gpt2). Default: the
    /// uniform bench model (C=256, 4 heads, F=1024, vocab 64).
    #[arg(long)]
    pub model: Option<String>,
    /// Blocks: the bench model's count (default 4), or the first N blocks of a built-in model.
    #[arg(long)]
    pub layers: Option<usize>,
    /// Sequences in the prefill batch (one microbatch per pipeline stage's worth).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Prompt tokens per sequence.
    #[arg(long, default_value_t = 32)]
    pub seq: usize,
    /// New tokens per sequence in the decode runs (at least 2).
    #[arg(long, default_value_t = 16)]
    pub max_new_tokens: usize,
    /// Context (tokens of one sequence) the KV-cache bytes per device are given at (default: n_positions).
    #[arg(long)]
    pub context: Option<usize>,
    /// Skip the training step.
    #[arg(long)]
    pub no_train: bool,
    /// Measurements per layout; the median of each figure is reported.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write prefill and decode tokens/s against the TP degree.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
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
    /// Forward + backward of the prefill batch (1F1B), where training runs (T = 1).
    pub train_step_ms: Option<f64>,
}

pub fn run(a: &LayoutsBenchArgs) -> Result<()> {
    check_output_path(a.csv.as_deref())?;
    check_output_path(a.svg.as_deref())?;
    let cfg = crate::bench::bench_model(
        a.model.as_deref(),
        a.layers,
        4,
        (a.seq + a.max_new_tokens).max(a.context.unwrap_or(0)),
    )?;
    if a.devices == 0 || a.batch == 0 || a.seq == 0 || a.repeat == 0 {
        return Err(Error::Input(
            "--devices, --batch, --seq and --repeat must be at least 1".into(),
        ));
    }
    if a.max_new_tokens < 2 || a.seq + a.max_new_tokens > cfg.n_positions {
        return Err(Error::Input(format!(
            "--max-new-tokens {} must be at least 2, and --seq {} plus it at most the model's n_positions {}",
            a.max_new_tokens, a.seq, cfg.n_positions
        )));
    }
    let context = a.context.unwrap_or(cfg.n_positions);
    if context == 0 || context > cfg.n_positions {
        return Err(Error::Input(format!(
            "--context {context} must be between 1 and the model's n_positions {}",
            cfg.n_positions
        )));
    }
    let n = a.devices;
    let layouts: Vec<(usize, usize)> = (1..=n)
        .filter(|t| n.is_multiple_of(*t))
        .map(|t| (t, n / t))
        .filter(|&(t, p)| {
            let ok = check_degree(&cfg, t).is_ok() && p <= cfg.n_layer;
            if !ok && !a.json {
                eprintln!("  TP {t} x PP {p}: skipped (the model does not split so)");
            }
            ok
        })
        .collect();
    if layouts.is_empty() {
        return Err(Error::Input(format!(
            "no layout of {n} devices splits this model ({} heads, {} blocks)",
            cfg.n_head, cfg.n_layer
        )));
    }
    let w = Gpt2Weights::init(&cfg, a.seed)?;
    let placement = place_devices(&n.to_string(), 1)?;
    let opened = placement.open()?;
    let gpus: Vec<crate::device::Gpu> = opened.into_iter().flatten().collect();
    let mut rows = Vec::new();
    for (tp, pp) in layouts {
        let groups: Vec<DeviceGroup> = gpus
            .chunks(tp)
            .map(DeviceGroup::new)
            .collect::<Result<_>>()?;
        let runs = (0..a.repeat)
            .map(|_| measure_layout(a, &w, &groups, tp, pp, context))
            .collect::<Result<Vec<_>>>()?;
        let row = median_row(runs);
        if !a.json {
            eprintln!(
                "  TP {tp} x PP {pp}: prefill {:.0} tokens/s, ITL {:.1} ms, decode {:.1} tokens/s, {:.0} / {:.0} bytes per token, {:.1} syncs per token",
                row.prefill_tokens_per_s,
                row.itl_ms,
                row.decode_tokens_per_s,
                row.bytes_per_token_prefill,
                row.bytes_per_token_decode,
                row.syncs_per_token
            );
        }
        rows.push(row);
    }
    if a.json {
        let v = serde_json::json!({
            "model": cfg,
            "devices": n,
            "batch": a.batch,
            "seq": a.seq,
            "max_new_tokens": a.max_new_tokens,
            "lp_num_threads": std::env::var("LP_NUM_THREADS").ok(),
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        print!("{}", table(&rows));
    }
    if let Some(path) = &a.csv {
        write_file(path, csv(&rows)?.as_bytes())?;
    }
    if let Some(path) = &a.svg {
        let line = |label: &str, f: fn(&LayoutRow) -> f64| Line {
            label: label.into(),
            points: rows.iter().map(|r| (r.tp as f64, f(r))).collect(),
        };
        let lines = [
            line("prefill tokens/s", |r| r.prefill_tokens_per_s),
            line("decode tokens/s (P groups)", |r| r.decode_tokens_per_s),
            line("1 / ITL (tokens/s, one sequence)", |r| 1e3 / r.itl_ms),
        ];
        let title = format!(
            "{n} devices as TP x PP, {} ({} layers): throughput against the TP degree",
            a.model.as_deref().unwrap_or("bench model"),
            cfg.n_layer
        );
        write_file(
            path,
            line_chart(
                &lines,
                &title,
                "tensor-parallel degree T (P = N / T)",
                "tokens/s",
            )
            .as_bytes(),
        )?;
    }
    Ok(())
}

fn measure_layout(
    a: &LayoutsBenchArgs,
    w: &Gpt2Weights,
    groups: &[DeviceGroup],
    tp: usize,
    pp: usize,
    context: usize,
) -> Result<LayoutRow> {
    let cfg = &w.config;
    // Prefill: the batch as P microbatches of GPipe (at least one sequence each).
    let tokens = random_input_ids(a.batch, a.seq, cfg.vocab_size, a.seed);
    let m = pp.min(a.batch);
    let schedule = Schedule::for_inference(ScheduleKind::Gpipe, pp, m, 1)?;
    run_inference(groups, w, &tokens, &schedule, &Options::default())?; // warm-up
    let pre = run_inference(groups, w, &tokens, &schedule, &Options::default())?;
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
    let alone = generate(groups, w, &job(1, 1), None, None)?;
    let many = generate(groups, w, &job(pp, pp), None, None)?;
    let (decode_bytes, syncs) = decode_traffic(&many, pp);
    let decode_tokens = (pp * (a.max_new_tokens - 1)) as f64;

    // KV bytes for one sequence at `context`: the allocation is per
    // (slot, position); the runs allocate one slot per sequence plus one.
    let slots = (pp + 1) as u64;
    let kv_bytes = many
        .kv_bytes
        .iter()
        .map(|b| b / (slots * cfg.n_positions as u64) * context as u64)
        .collect();

    let train_step_ms = match (tp, a.no_train) {
        (1, false) => Some(train_step(groups, w, &tokens, pp)?),
        _ => None,
    };
    Ok(LayoutRow {
        tp,
        pp,
        bytes_per_token_prefill: prefill_bytes / n_tokens,
        bytes_per_token_decode: decode_bytes / decode_tokens,
        syncs_per_token: syncs,
        prefill_tokens_per_s: n_tokens / pre.wall_s,
        itl_ms: alone.metrics().itl_ms_p50,
        decode_tokens_per_s: many.metrics().tokens_per_s,
        weight_bytes: many.weight_bytes.clone(),
        kv_bytes,
        context,
        train_step_ms,
    })
}

/// Bytes moved in the decode steps (not the prefill) and the sync points on
/// one step's path, averaged over the steps: messages (counted once per
/// rank pair) and rank 0's all-reduces.
fn decode_traffic(g: &Generation, groups: usize) -> (f64, f64) {
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

/// One 1F1B training step's forward and backward (after a warm-up), ms.
fn train_step(
    groups: &[DeviceGroup],
    w: &Gpt2Weights,
    tokens: &crate::io::TokenBatch,
    pp: usize,
) -> Result<f64> {
    let m = pp.min(tokens.batch);
    let schedule = Schedule::generate(ScheduleKind::OneFOneB, pp, m, 1, false)?;
    let mut t = Trainer::new(
        groups,
        w,
        &schedule,
        tokens.batch,
        tokens.seq,
        &TrainOptions::default(),
    )?;
    t.forward_backward(tokens)?;
    Ok(t.forward_backward(tokens)?.wall_s * 1e3)
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

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(";")
}

fn csv(rows: &[LayoutRow]) -> Result<String> {
    let mut s = String::from("tp,pp,bytes_per_token_prefill,bytes_per_token_decode,syncs_per_token,prefill_tokens_per_s,itl_ms,decode_tokens_per_s,weight_bytes,kv_bytes,context,train_step_ms\n");
    for r in rows {
        s += &format!(
            "{},{},{:.1},{:.1},{:.2},{:.2},{:.3},{:.3},{},{},{},{}\n",
            r.tp,
            r.pp,
            r.bytes_per_token_prefill,
            r.bytes_per_token_decode,
            r.syncs_per_token,
            r.prefill_tokens_per_s,
            r.itl_ms,
            r.decode_tokens_per_s,
            join(&r.weight_bytes),
            join(&r.kv_bytes),
            r.context,
            r.train_step_ms.map_or(String::new(), |x| format!("{x:.1}"))
        );
    }
    Ok(s)
}

fn mib(b: u64) -> String {
    format!("{:.2}", b as f64 / (1 << 20) as f64)
}

/// The rows as a Markdown table.
pub fn table(rows: &[LayoutRow]) -> String {
    let mut s = String::from(
        "| TP x PP | bytes/token prefill | bytes/token decode | syncs/token | prefill tokens/s | ITL ms (1 seq) | decode tokens/s (P groups) | weights MiB per Gpu | KV MiB per Gpu (1 seq, context) | train step ms |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} x {} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1} | {} | {} ({}) | {} |\n",
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
            r.train_step_ms.map_or("—".into(), |x| format!("{x:.0}"))
        );
    }
    s
}
