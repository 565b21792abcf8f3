//! `wgpipe train`: GPT-2 trained across devices, every schedule's F, B, I
//! and W actions executed, with the loss per step, the measured bubble of a
//! training step beside the simulated and analytic one, and each device's
//! peak activation memory.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::cli::model_args::{check_output_path, ModelArgs};
use crate::data::TokenStream;
use crate::device::place_devices;
use crate::error::{Error, Result};
use crate::executor::balance::Chosen;
use crate::executor::measure::{measure_timeline, median, Measurement};
use crate::executor::net::{device_groups, is_root, mpi_line, mpi_summary, open_local};
use crate::executor::partition::Split;
use crate::executor::train::{Optimizer, TrainOptions, Trainer};
use crate::io::{self, write_file, TokenBatch};
use crate::model::checkpoint::save_checkpoint;
use crate::schedule::{Schedule, ScheduleKind};
use crate::trace::{chrome::to_chrome_json, svg::gantt_svg};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerName {
    /// torch.optim.AdamW.
    Adamw,
    /// torch.optim.SGD (with --momentum).
    Sgd,
}

#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Training batch: a safetensors file with an integer tensor `input_ids`
    /// [batch, seq]; every step trains on it.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["data"])]
    pub input_ids: Option<PathBuf>,
    /// A token stream as nanoGPT's train.bin (little-endian uint16): each
    /// step trains on --batch random windows of --seq tokens (seeded).
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// Sequences per step (with --data, or random ids).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per sequence (with --data, or random ids); default: n_positions, at most 64.
    #[arg(long)]
    pub seq: Option<usize>,
    /// Pipeline devices: a count or a list like vulkan:0,gl:0.
    #[arg(long, default_value = "2")]
    pub devices: String,
    /// Tensor-parallel degree; training runs with 1 only (see `wgpipe run --help`).
    #[arg(long, default_value_t = 1)]
    pub tp: usize,
    /// Microbatches M per step (default: one per sequence).
    #[arg(long)]
    pub microbatches: Option<usize>,
    #[arg(long, value_enum, default_value_t = ScheduleKind::OneFOneB)]
    pub schedule: ScheduleKind,
    /// Chunks (virtual stages) per device, for interleaved.
    #[arg(long = "virtual", default_value_t = 1)]
    pub virtual_stages: usize,
    /// Layers per stage: `auto` profiles every layer kind on every device and
    /// takes the split with the shortest predicted makespan; `even`; or a
    /// count per stage (devices x virtual), e.g. 7,5.
    #[arg(long, default_value = "auto")]
    pub split: Split,
    /// Optimizer steps.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, value_enum, default_value_t = OptimizerName::Adamw)]
    pub optimizer: OptimizerName,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Weight decay on matrices and embeddings (not biases or layer norms);
    /// default 0.01 for AdamW (PyTorch's), 0 for SGD.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.0)]
    pub momentum: f64,
    /// Clip gradients to this global L2 norm (across all stages) before each step.
    #[arg(long, value_name = "NORM")]
    pub grad_clip: Option<f64>,
    /// Stash only each stage's input and recompute its activations in backward.
    #[arg(long)]
    pub recompute: bool,
    /// Write the first step's accumulated gradients (before the optimizer
    /// step) as safetensors, under the checkpoint's tensor names.
    #[arg(long, value_name = "FILE")]
    pub grads_out: Option<PathBuf>,
    /// Write the trained model as a checkpoint directory (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Write the last step's measured timeline as Chrome trace-event JSON.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Write the last step's measured timeline as an SVG Gantt chart.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints.
#[derive(Serialize)]
struct Report {
    losses: Vec<f64>,
    schedule: String,
    devices: usize,
    device_names: Vec<String>,
    microbatches: usize,
    #[serde(rename = "virtual")]
    virtual_stages: usize,
    batch: usize,
    seq: usize,
    optimizer: String,
    recompute: bool,
    /// Median milliseconds per step: pipeline, tied-embedding sum, clipping, optimizer.
    step_ms: f64,
    tokens_per_s: f64,
    bubble_measured: f64,
    bubble_simulated: f64,
    bubble_analytic: f64,
    /// Per device: bytes of the buffers holding stashed activations.
    peak_activation_bytes: Vec<u64>,
    grad_norms: Vec<f64>,
    /// The last step's pipeline, measured.
    last_step: Measurement,
    /// Layers per stage, and for `--split auto` how they were chosen.
    split: Chosen,
    /// Under `--transport mpi`: the ranks and their clocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    mpi: Option<serde_json::Value>,
}

impl TrainArgs {
    fn optimizer(&self) -> Result<Optimizer> {
        let bad = |what: String| Err(Error::Input(what));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!(
                "--lr {}: the learning rate must be a positive number",
                self.lr
            ));
        }
        let wd = self.weight_decay.unwrap_or(match self.optimizer {
            OptimizerName::Adamw => 0.01,
            OptimizerName::Sgd => 0.0,
        });
        if !(wd.is_finite() && wd >= 0.0) {
            return bad(format!("--weight-decay {wd}: must be 0 or more"));
        }
        Ok(match self.optimizer {
            OptimizerName::Adamw => {
                for (name, b) in [("--beta1", self.beta1), ("--beta2", self.beta2)] {
                    if !(0.0..1.0).contains(&b) {
                        return bad(format!("{name} {b}: must be in [0, 1)"));
                    }
                }
                if !(self.eps.is_finite() && self.eps > 0.0) {
                    return bad(format!("--eps {}: must be positive", self.eps));
                }
                Optimizer::AdamW {
                    lr: self.lr,
                    beta1: self.beta1,
                    beta2: self.beta2,
                    eps: self.eps,
                    weight_decay: wd,
                }
            }
            OptimizerName::Sgd => {
                if !(self.momentum.is_finite() && self.momentum >= 0.0) {
                    return bad(format!("--momentum {}: must be 0 or more", self.momentum));
                }
                Optimizer::Sgd {
                    lr: self.lr,
                    momentum: self.momentum,
                    weight_decay: wd,
                }
            }
        })
    }

    /// Every check that needs no device, before any work.
    fn check(&self) -> Result<Optimizer> {
        if self.steps == 0 {
            return Err(Error::Input("--steps 0: train at least one step".into()));
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::Input(format!(
                    "--grad-clip {c}: the norm must be positive"
                )));
            }
        }
        if self.input_ids.is_some() && (self.batch.is_some() || self.seq.is_some()) {
            return Err(Error::Input(
                "--batch and --seq come from the --input-ids file; give one or the other".into(),
            ));
        }
        // Rank 0 writes every file (under MPI the others' paths may not exist).
        if is_root() {
            for p in [&self.grads_out, &self.trace, &self.svg] {
                check_output_path(p.as_deref())?;
            }
            if let Some(dir) = &self.save {
                check_save_dir(dir)?;
            }
        }
        self.optimizer()
    }
}

/// `--save` must not overwrite anything: a missing or empty directory only.
fn check_save_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        let empty = dir.is_dir()
            && std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .next()
                .is_none();
        if !empty {
            return Err(Error::Input(format!(
                "--save {}: exists and is not an empty directory; refusing to overwrite it",
                dir.display()
            )));
        }
    }
    let parent = dir.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(p) = parent {
        if !p.is_dir() {
            return Err(Error::Input(format!(
                "--save {}: directory {} does not exist",
                dir.display(),
                p.display()
            )));
        }
    }
    Ok(())
}

/// Write the checkpoint into a fresh directory beside `dir`, then move it
/// into place: a failure leaves nothing at `dir`.
fn save_into(w: &crate::model::Gpt2Weights, dir: &Path) -> Result<()> {
    check_save_dir(dir)?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".wgpipe-save.")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    save_checkpoint(w, tmp.path())?;
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&kept);
        Error::io(dir, e)
    })
}

/// Where each step's tokens come from.
enum Batches<'a> {
    Fixed(TokenBatch),
    Stream(crate::data::Windows<'a>),
}

impl Batches<'_> {
    fn next(&mut self) -> TokenBatch {
        match self {
            Batches::Fixed(t) => t.clone(),
            Batches::Stream(w) => w.next_batch(),
        }
    }
}

pub fn run(args: &TrainArgs) -> Result<()> {
    if args.tp != 1 {
        return Err(Error::Input(format!(
            "--tp {}: tensor parallelism is not implemented for training (its backward would all-reduce each split block's input gradient); train with --tp 1, or use --tp with run, forward or generate",
            args.tp
        )));
    }
    let opt = args.check()?;
    // Under MPI with a checkpoint, only the config so far: the tensors are
    // read once the split says which stages this rank holds.
    let mut w = args.model.load_for_rank()?;
    let cfg = &w.config().clone();
    let seq = args.seq.unwrap_or(cfg.n_positions.min(64));
    let stream = match (&args.input_ids, &args.data) {
        (None, Some(path)) => Some(TokenStream::read(path, cfg.vocab_size)?),
        _ => None,
    };
    let mut batches = match (&args.input_ids, &stream) {
        (Some(path), _) => {
            let t = io::read_input_ids(path)?;
            io::check_input(cfg, &t)?;
            Batches::Fixed(t)
        }
        (None, Some(stream)) => {
            Batches::Stream(stream.windows(args.batch.unwrap_or(4), seq, args.model.seed)?)
        }
        (None, None) => {
            let t = io::random_input_ids(
                args.batch.unwrap_or(4),
                seq,
                cfg.vocab_size,
                args.model.seed,
            );
            io::check_input(cfg, &t)?;
            Batches::Fixed(t)
        }
    };
    let first = batches.next();
    let (batch, seq) = (first.batch, first.seq);
    let m = args.microbatches.unwrap_or(batch);
    let placement = place_devices(&args.devices, 1)?;
    let schedule = Schedule::generate(
        args.schedule,
        placement.devices(),
        m,
        args.virtual_stages,
        false,
    )?;
    let gpus = open_local(&placement, &args.devices)?;
    let groups = device_groups(&gpus, placement.devices())?;
    let chosen = w.resolve_split(&args.split, &groups, &schedule, batch.div_ceil(m), seq)?;
    let reads = w.checkpoint_reads();
    if !args.json {
        println!("{}", chosen.describe());
    }
    let opts = TrainOptions {
        split: Some(chosen.split.clone()),
        recompute: args.recompute,
    };
    let mut trainer = Trainer::new(&groups, w.weights(), &schedule, batch, seq, &opts)?;

    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed}]")
            .expect("valid template"),
    );
    let mut losses = Vec::with_capacity(args.steps);
    let mut step_ms = Vec::with_capacity(args.steps);
    let mut norms = Vec::new();
    let mut last = None;
    let mut tokens = first;
    for step in 0..args.steps {
        if step > 0 {
            tokens = batches.next();
        }
        let t0 = std::time::Instant::now();
        let run = trainer.forward_backward(&tokens)?;
        if step == 0 {
            if let Some(path) = &args.grads_out {
                // Every rank takes part in reading them back; rank 0 writes.
                let g = trainer.grads()?;
                io::write_named_tensors(path, &g.named_tensors(cfg), "transformer.")?;
            }
        }
        if let Some(n) = trainer.optimizer_step(&opt, args.grad_clip)? {
            norms.push(n);
        }
        step_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if !run.loss.is_finite() {
            bar.finish_and_clear();
            return Err(Error::Other(format!(
                "step {step}: the loss is {}; lower --lr (now {}) or add --grad-clip",
                run.loss, args.lr
            )));
        }
        losses.push(run.loss);
        bar.set_message(format!("loss {:.4}", run.loss));
        bar.inc(1);
        last = Some(run);
    }
    bar.finish();
    let run = last.expect("at least one step");
    let meas = measure_timeline(
        &schedule,
        &run.timeline,
        run.wall_s,
        &run.transfers,
        batch * seq,
    )?;
    let step = median(step_ms);
    let peak = trainer.peak_activation_bytes()?;
    if let Some(dir) = &args.save {
        let w = trainer.weights()?;
        if is_root() {
            save_into(&w, dir)?;
        }
    }
    if let Some(p) = &args.trace {
        let json = serde_json::to_string(&to_chrome_json(&run.timeline)).expect("trace serializes");
        write_file(p, json.as_bytes())?;
    }
    if let Some(p) = &args.svg {
        let title = format!(
            "{} training step — measured, P={} M={} v={}",
            schedule.name, schedule.devices, m, args.virtual_stages
        );
        write_file(p, gantt_svg(&run.timeline, &title).as_bytes())?;
    }
    let report = Report {
        losses,
        schedule: schedule.name.clone(),
        devices: schedule.devices,
        device_names: run.timeline.device_names.clone(),
        microbatches: m,
        virtual_stages: args.virtual_stages,
        batch,
        seq,
        optimizer: format!("{:?}", args.optimizer).to_lowercase(),
        recompute: args.recompute,
        step_ms: step,
        tokens_per_s: (batch * seq) as f64 / (step / 1e3),
        bubble_measured: meas.bubble_measured,
        bubble_simulated: meas.bubble_simulated,
        bubble_analytic: meas.bubble_analytic,
        peak_activation_bytes: peak,
        grad_norms: norms,
        last_step: meas,
        split: chosen,
        mpi: mpi_summary().map(|mut m| {
            if let Some(r) = &reads {
                r.add_to(&mut m);
            }
            m
        }),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("json"));
    } else {
        print_report(&report);
        if let Some(r) = &reads {
            println!("{}", r.line());
        }
    }
    Ok(())
}

fn print_report(r: &Report) {
    let first = r.losses.first().copied().unwrap_or(f64::NAN);
    let last = r.losses.last().copied().unwrap_or(f64::NAN);
    println!(
        "{} P={} M={} v={}: {} steps of {}x{} tokens, loss {first:.4} -> {last:.4}",
        r.schedule,
        r.devices,
        r.microbatches,
        r.virtual_stages,
        r.losses.len(),
        r.batch,
        r.seq
    );
    println!(
        "step {:.1} ms (median), {:.0} tokens/s; last step's pipeline: makespan {:.1} ms",
        r.step_ms, r.tokens_per_s, r.last_step.makespan_ms
    );
    println!(
        "bubble: measured {:.1}%   simulated {:.1}%   analytic {:.1}%",
        100.0 * r.bubble_measured,
        100.0 * r.bubble_simulated,
        100.0 * r.bubble_analytic
    );
    for (d, name) in r.device_names.iter().enumerate() {
        println!(
            "  device {d} {name}: busy {:.1} ms, peak stashed activations {:.2} MB{}",
            r.last_step.busy_ms[d],
            r.peak_activation_bytes[d] as f64 / 1e6,
            if r.recompute { " (recompute)" } else { "" }
        );
    }
    if let Some(line) = mpi_line() {
        println!("{line}");
    }
}
