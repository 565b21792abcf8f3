//! `wgpipe bench bubble`: the seed's bubble table, measured (and `bench
//! decode`, in its own file).

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bench::{
    accounting_table, bench_config, check_sweep, csv, run_sweep, table, Row, Sweep,
};
use crate::cli::model_args::check_output_path;
use crate::device::{place_devices, Gpu};
use crate::error::{Error, Result};
use crate::executor::net::{
    device_groups, device_labels, drives, is_root, local_adapter, mpi_line, mpi_summary, open_local,
};
use crate::io::write_file;
use crate::model::{Gpt2Config, Gpt2Weights};
use crate::schedule::{analytic, ScheduleKind};
use crate::trace::chart::{bubble_chart, waterfall_chart, Series, Waterfall};

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum BenchWhat {
    /// Measured vs simulated vs analytic bubble over a sweep of microbatch counts.
    Bubble(BubbleArgs),
    /// Pipelined KV-cache decoding: TTFT, TPOT, ITL and tokens/s for P devices and G groups in flight.
    Decode(super::bench_decode::DecodeBenchArgs),
    /// One hop between two devices by message size: in-process, or across two MPI ranks (--transport mpi).
    Hop(super::bench_hop::HopArgs),
    /// Every layout P x T of N devices (pipeline x tensor parallel) on the same work: the seed's PP-vs-TP table, measured.
    Layouts(super::bench_layouts::LayoutsBenchArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct BubbleArgs {
    /// Pipeline devices: a count or a list like vulkan:0,vulkan:0.
    #[arg(long, default_value = "2")]
    pub devices: String,
    /// Microbatch counts to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32")]
    pub microbatches: Vec<usize>,
    /// Schedules, one series each (gpipe, 1f1b, zb-h1 run their forward part; interleaved uses --virtual).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [ScheduleKind::Gpipe])]
    pub schedule: Vec<ScheduleKind>,
    /// Chunks per device for interleaved.
    #[arg(long = "virtual", default_value_t = 2)]
    pub virtual_stages: usize,
    /// Built-in model (e.g. gpt2); its layers are split evenly. Default: the
    /// uniform bench model (C=256, 4 heads, F=1024, vocab 64).
    #[arg(long)]
    pub model: Option<String>,
    /// Layers per device for the bench model.
    #[arg(long, default_value_t = 2)]
    pub layers_per_stage: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 64)]
    pub seq: usize,
    /// Sequences per microbatch.
    #[arg(long, default_value_t = 1)]
    pub sequences: usize,
    /// Timed repetitions per point (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Time training steps (F, B, I, W of each schedule) instead of forward passes.
    #[arg(long)]
    pub train: bool,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the rows as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write a chart of bubble fraction against M.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Write where the speedup goes as a waterfall chart: one panel per
    /// forward row, from the ideal speedup through each loss to the measured.
    #[arg(long, value_name = "FILE")]
    pub waterfall: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    let a = match &args.what {
        BenchWhat::Bubble(a) => a,
        BenchWhat::Decode(a) => return super::bench_decode::run(a),
        BenchWhat::Hop(a) => return super::bench_hop::run(a),
        BenchWhat::Layouts(a) => return super::bench_layouts::run(a),
    };
    check_output_path(a.csv.as_deref())?;
    check_output_path(a.svg.as_deref())?;
    check_output_path(a.waterfall.as_deref())?;
    if a.waterfall.is_some() && a.train {
        return Err(Error::Input(
            "--waterfall accounts for forward sweeps; it has no controls with --train".into(),
        ));
    }
    let placement = place_devices(&a.devices, 1)?;
    let p = placement.devices();
    let series: Vec<(ScheduleKind, usize)> = a
        .schedule
        .iter()
        .map(|&k| {
            let v = match k {
                ScheduleKind::Interleaved => a.virtual_stages,
                _ => 1,
            };
            (k, v)
        })
        .collect();
    let sweep = Sweep {
        schedules: series.clone(),
        microbatches: a.microbatches.clone(),
        sequences: a.sequences,
        seq: a.seq,
        repeat: a.repeat,
        seed: a.seed,
        train: a.train,
    };
    let cfg = match &a.model {
        Some(name) => Gpt2Config::named(name)?,
        None => bench_config(a.layers_per_stage * p, a.seq),
    };
    check_sweep(
        &sweep,
        p,
        if a.model.is_some() {
            cfg.n_layer / p
        } else {
            a.layers_per_stage
        },
    )?;
    if a.seq > cfg.n_positions {
        return Err(Error::Input(format!(
            "--seq {} exceeds the model's n_positions {}",
            a.seq, cfg.n_positions
        )));
    }
    let w = Gpt2Weights::init(&cfg, a.seed)?;
    // One Gpu per schedule device (under MPI this rank's only).
    let gpus = open_local(&placement, &a.devices)?;
    let groups = device_groups(&gpus, p)?;
    let names = device_labels(&groups)?;
    // The baseline's own Gpu on schedule device 0's adapter: opened where
    // device 0 is driven (under MPI on rank 0, its adapter).
    let single = if drives(0) {
        Some(Gpu::open_summary(local_adapter(&placement, &a.devices)?)?)
    } else {
        None
    };

    let bar = ProgressBar::new((sweep.microbatches.len() * series.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .expect("valid template"),
    );
    if !is_root() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let rows = run_sweep(&groups, single.as_ref(), &w, &sweep, |r| {
        bar.set_message(format!(
            "{} M={}: measured {:.1}%",
            r.schedule,
            r.microbatches,
            100.0 * r.bubble_measured
        ));
        bar.inc(1);
    })?;
    bar.finish_and_clear();

    if a.json {
        let mut v = serde_json::json!({
            "devices": p,
            "device_names": names,
            "model": cfg,
            "seq": a.seq,
            "sequences_per_microbatch": a.sequences,
            "repeat": a.repeat,
            "train": a.train,
            "lp_num_threads": std::env::var("LP_NUM_THREADS").ok(),
            "rows": rows,
        });
        if let Some(m) = mpi_summary() {
            v["mpi"] = m;
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        println!(
            "P={p} on {}; model: {} layers, C={}, T={}, {} sequence(s)/microbatch; median of {}",
            names[0], cfg.n_layer, cfg.n_embd, a.seq, a.sequences, a.repeat
        );
        if let Some(line) = mpi_line() {
            println!("{line}");
        }
        print!("{}", table(&rows));
        if !a.train {
            println!("\nWhere the speedup goes (losses in speedup units; they add up to the measured speedup):");
            print!("{}", accounting_table(&rows));
        }
    }
    if let Some(path) = &a.csv {
        write_file(path, csv(&rows)?.as_bytes())?;
    }
    if let Some(path) = &a.svg {
        let what = if a.train { "training step" } else { "forward" };
        let title = format!("Pipeline bubble ({what}), P={p}: analytic, simulated, measured");
        write_file(
            path,
            bubble_chart(&chart_series(&rows, p, a.train), &title).as_bytes(),
        )?;
    }
    if let Some(path) = &a.waterfall {
        let falls: Vec<Waterfall> = rows.iter().map(waterfall).collect();
        let title = format!("Where the speedup goes, P={p}: ideal, each loss, measured");
        write_file(path, waterfall_chart(&falls, &title).as_bytes())?;
    }
    Ok(())
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
pub fn chart_series(rows: &[Row], p: usize, train: bool) -> Vec<Series> {
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
