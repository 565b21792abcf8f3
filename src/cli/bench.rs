//! `wgpipe bench`: the measurements of [`wgpipe::bench`] — the bubble sweep,
//! pipelined decode, every TP × PP layout, one hop — printed, and written as
//! CSV and SVG where asked.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use wgpipe::bench::bubble::{BubbleBench, Sweep};
use wgpipe::bench::decode::DecodeBench;
use wgpipe::bench::hop::{parse_bytes, HopBench};
use wgpipe::bench::layouts::LayoutsBench;
use wgpipe::{Error, Result, ScheduleKind};

use super::{Context, TableArgs};

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
    Decode(DecodeArgs),
    /// One hop between two devices by message size: in-process, or across two MPI ranks (--transport mpi).
    Hop(HopArgs),
    /// Every layout P x T of N devices (pipeline x tensor parallel) on the same work: the seed's PP-vs-TP table, measured.
    Layouts(LayoutsArgs),
    /// The OpenAI-compatible server under load: N concurrent loopback clients against P devices and G groups in flight.
    Serve(ServeBenchArgs),
    /// Memory over a long run: 1000 training steps then 1000 generate calls on one pipeline, RSS, fds and device buffers sampled.
    Soak(super::soak::SoakArgs),
}

pub fn run(args: &BenchArgs, cx: &Context) -> Result<()> {
    match &args.what {
        BenchWhat::Bubble(a) => bubble(a, cx),
        BenchWhat::Decode(a) => decode(a, cx),
        BenchWhat::Hop(a) => hop(a, cx),
        BenchWhat::Layouts(a) => layouts(a, cx),
        BenchWhat::Soak(a) => super::soak::run(a, cx),
        BenchWhat::Serve(a) => serve(a, cx),
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct BubbleArgs {
    /// Pipeline devices: a count or a list like vulkan:0,vulkan:0 (P x T Gpus with --tp T).
    #[arg(long, default_value = "2")]
    pub devices: String,
    /// Tensor-parallel degree: each pipeline device is a group of T Gpus (Megatron's split), forward and training alike.
    #[arg(long, default_value_t = 1)]
    pub tp: usize,
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
    /// A `save_pretrained` directory instead of a built-in model: its
    /// config and weights (any family wgpipe runs).
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    pub checkpoint: Option<PathBuf>,
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
    /// `--svg`: the bubble against M.
    #[command(flatten)]
    pub out: TableArgs,
    /// Write where the speedup goes as a waterfall chart: one panel per
    /// forward row, from the ideal speedup through each loss to the measured.
    #[arg(long, value_name = "FILE")]
    pub waterfall: Option<PathBuf>,
}

impl BubbleArgs {
    fn bench(&self) -> BubbleBench {
        let schedules = (self.schedule.iter())
            .map(|&k| match k {
                ScheduleKind::Interleaved => (k, self.virtual_stages),
                _ => (k, 1),
            })
            .collect();
        BubbleBench {
            devices: self.devices.clone(),
            tp: self.tp,
            sweep: Sweep {
                schedules,
                microbatches: self.microbatches.clone(),
                sequences: self.sequences,
                seq: self.seq,
                repeat: self.repeat,
                seed: self.seed,
                train: self.train,
            },
            model: self.model.clone(),
            checkpoint: self.checkpoint.clone(),
            layers_per_stage: self.layers_per_stage,
        }
    }
}

fn bubble(a: &BubbleArgs, cx: &Context) -> Result<()> {
    a.out.check(cx)?;
    cx.check_outputs(&[&a.waterfall])?;
    if a.waterfall.is_some() && a.train {
        return Err(Error::Input(
            "--waterfall accounts for forward sweeps; it has no controls with --train".into(),
        ));
    }
    let bench = a.bench();
    let points = bench.sweep.microbatches.len() * bench.sweep.schedules.len();
    let bar = progress(cx, points);
    let report = bench.run(&cx.cluster, |r| {
        bar.set_message(format!(
            "{} M={}: measured {:.1}%",
            r.schedule,
            r.microbatches,
            100.0 * r.bubble_measured
        ));
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    let text = || report.text();
    a.out
        .emit(cx, &report, text, &report.rows, || report.chart())?;
    if let Some(path) = &a.waterfall {
        cx.write(path, report.waterfall().as_bytes())?;
    }
    Ok(())
}

/// A progress bar over `n` points, drawn by rank 0 only.
fn progress(cx: &Context, n: usize) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .expect("valid template"),
    );
    if !cx.cluster.is_root() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar
}

#[derive(clap::Args, Debug, Clone)]
pub struct DecodeArgs {
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
    /// A `save_pretrained` directory instead of a built-in model: its
    /// config and weights (any family wgpipe runs).
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    pub checkpoint: Option<PathBuf>,
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
    /// Storage types to measure every point in, e.g. `f32,f16` (auto: the
    /// checkpoint's; f16 needs shader-f16 on every device).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "auto",
        value_name = "f32|f16|auto,…"
    )]
    pub dtype: Vec<wgpipe::device::DtypeChoice>,
    /// `--svg`: output tokens/s against groups in flight, one line per P
    /// (and storage type).
    #[command(flatten)]
    pub out: TableArgs,
}

fn decode(a: &DecodeArgs, cx: &Context) -> Result<()> {
    a.out.check(cx)?;
    let bench = DecodeBench {
        devices: a.devices.clone(),
        groups: a.groups.clone(),
        sequences_per_group: a.sequences_per_group,
        model: a.model.clone(),
        checkpoint: a.checkpoint.clone(),
        layers: a.layers,
        prompt_len: a.prompt_len,
        max_new_tokens: a.max_new_tokens,
        repeat: a.repeat,
        seed: a.seed,
        dtypes: a.dtype.clone(),
    };
    let json = a.out.json;
    let report = bench.run(|r| {
        if !json {
            eprintln!("  {}", r.line());
        }
    })?;
    a.out.emit(
        cx,
        &report,
        || report.table(),
        &report.rows,
        || report.chart(),
    )
}

#[derive(clap::Args, Debug, Clone)]
pub struct LayoutsArgs {
    /// Devices N: every layout P x T = N is measured (on N Gpus of the default adapter).
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// Built-in model with seeded random weights (e.g. gpt2). Default: the
    /// uniform bench model (C=256, 4 heads, F=1024, vocab 64).
    #[arg(long)]
    pub model: Option<String>,
    /// A `save_pretrained` directory instead of a built-in model: its
    /// config and weights (any family wgpipe runs).
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    pub checkpoint: Option<PathBuf>,
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
    /// `--svg`: prefill and decode tokens/s against the TP degree.
    #[command(flatten)]
    pub out: TableArgs,
}

fn layouts(a: &LayoutsArgs, cx: &Context) -> Result<()> {
    a.out.check(cx)?;
    let bench = LayoutsBench {
        devices: a.devices,
        model: a.model.clone(),
        checkpoint: a.checkpoint.clone(),
        layers: a.layers,
        batch: a.batch,
        seq: a.seq,
        max_new_tokens: a.max_new_tokens,
        context: a.context,
        no_train: a.no_train,
        repeat: a.repeat,
        seed: a.seed,
    };
    let json = a.out.json;
    let report = bench.run(|r| {
        if !json {
            eprintln!("  {}", r.line());
        }
    })?;
    if !json {
        for s in &report.skipped {
            eprintln!("  TP {} x PP {}: skipped ({})", s.tp, s.pp, s.reason);
        }
    }
    a.out.emit(
        cx,
        &report,
        || report.table(),
        &report.rows,
        || report.chart(),
    )
}

#[derive(clap::Args, Debug, Clone)]
pub struct HopArgs {
    /// The two devices: a count or a list like vulkan:0,vulkan:0.
    #[arg(long, default_value = "2")]
    pub devices: String,
    /// Message sizes in bytes (K and M suffixes: 1M = 1048576).
    #[arg(long, value_delimiter = ',', default_value = "64K,1M,16M")]
    pub bytes: Vec<String>,
    /// Hops per size (the median is reported).
    #[arg(long, default_value_t = 30)]
    pub repeat: usize,
    /// ms between two messages.
    #[arg(long, default_value_t = 20)]
    pub pace_ms: u64,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

fn hop(a: &HopArgs, cx: &Context) -> Result<()> {
    let bench = HopBench {
        devices: a.devices.clone(),
        bytes: a
            .bytes
            .iter()
            .map(|s| parse_bytes(s))
            .collect::<Result<_>>()?,
        repeat: a.repeat,
        pace: Duration::from_millis(a.pace_ms),
    };
    let report = bench.run(&cx.cluster)?;
    match a.json {
        true => cx.print_json(&report),
        false => cx.print(&report.table()),
    }
    Ok(())
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeBenchArgs {
    #[command(flatten)]
    pub model: super::ModelArgs,
    /// Serve the uniform bench model of `bench decode` (C=256, 4 heads,
    /// F=1024, vocab 64; seeded weights, prompts as ids) with `--layers`
    /// blocks, instead of --checkpoint / --model.
    #[arg(long, conflicts_with = "checkpoint")]
    pub bench_model: bool,
    /// The bench model's blocks.
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Pipeline depths P to measure, each on P devices of the default adapter.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub devices: Vec<usize>,
    /// Groups in flight to measure (default: 1 to 2P for each P).
    #[arg(long, value_delimiter = ',')]
    pub groups: Option<Vec<usize>>,
    /// Concurrent clients (the server's --max-batch is set to this).
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Requests each client sends, one after another.
    #[arg(long, default_value_t = 4)]
    pub requests: usize,
    /// New tokens per request.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// Seconds a request may take before it counts as an error.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// `--svg`: output tokens/s against groups in flight, one line per P.
    #[command(flatten)]
    pub out: TableArgs,
}

fn serve(a: &ServeBenchArgs, cx: &Context) -> Result<()> {
    a.out.check(cx)?;
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        return Err(Error::Input(format!(
            "--timeout must be a positive number of seconds, got {}",
            a.timeout
        )));
    }
    let model = match a.bench_model {
        true => wgpipe::ModelSource::Config {
            config: wgpipe::bench::bench_config(a.layers, 64),
            seed: a.model.seed,
        },
        false => a.model.source(),
    };
    let bench = wgpipe::bench::serve::ServeBench {
        model,
        dtype: a.model.dtype,
        devices: a.devices.clone(),
        groups: a.groups.clone(),
        clients: a.clients,
        requests: a.requests,
        max_tokens: a.max_tokens,
        timeout: Duration::from_secs_f64(a.timeout),
    };
    let json = a.out.json;
    let report = bench.run(|r| {
        if !json {
            eprintln!("  {}", r.line());
        }
    })?;
    a.out.emit(
        cx,
        &report,
        || report.table(),
        &report.rows,
        || report.chart(),
    )
}
