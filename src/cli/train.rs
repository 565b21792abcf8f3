//! `wgpipe train`: GPT-2 trained across devices, every schedule's F, B, I
//! and W actions executed, with the loss per step, the measured bubble of a
//! training step beside the simulated and analytic one, and each device's
//! peak activation memory.

use std::path::PathBuf;

use indicatif::{ProgressBar, ProgressStyle};
use wgpipe::data::{Batches, TokenStream};
use wgpipe::pipeline::{
    check_save_dir, Chosen, Measurement, MpiReport, StepReport, TrainState, Trainer,
};
use wgpipe::{
    Error, ModelSource, Optimizer, Pipeline, PipelineConfig, Result, ScheduleKind, TokenBatch,
    TrainConfig, Workload,
};

use super::{duration, Context, LayoutArgs, ModelArgs, TimelineArgs};

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
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Microbatches M per step (default: one per sequence).
    #[arg(long)]
    pub microbatches: Option<usize>,
    #[arg(long, value_enum, default_value_t = ScheduleKind::OneFOneB)]
    pub schedule: ScheduleKind,
    /// Chunks (virtual stages) per device, for interleaved.
    #[arg(long = "virtual", default_value_t = 1)]
    pub virtual_stages: usize,
    /// Optimizer steps, counted from the start of the run (with --resume,
    /// the steps already taken included).
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
    /// Write the run's state at the end: a checkpoint directory transformers
    /// loads, with the optimizer state, data position and settings beside it
    /// (--resume continues from it). Must not exist, be empty, or be the
    /// --resume directory; replaced whole at each save.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Also save to --save every N steps (of the run, from its start).
    #[arg(long, value_name = "N", requires = "save")]
    pub save_every: Option<usize>,
    /// Continue the run saved in DIR (by --save): its weights, optimizer
    /// state and data position; --steps counts from the run's start. The
    /// model, optimizer settings and batch must be the run's; the devices,
    /// split and schedule may change.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// The last step's timeline (`--trace`, `--svg`), and the report as JSON.
    #[command(flatten)]
    pub out: TimelineArgs,
}

/// What `--json` prints.
#[derive(serde::Serialize)]
struct Report {
    /// The loss of each step run here, from step `first_step` (1 unless resumed).
    losses: Vec<f64>,
    first_step: u64,
    /// The steps after which the run's state was saved to --save.
    saved_steps: Vec<u64>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    mpi: Option<MpiReport>,
}

impl TrainArgs {
    /// The optimizer, its hyperparameters checked.
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
        if self.optimizer == OptimizerName::Sgd {
            if !(self.momentum.is_finite() && self.momentum >= 0.0) {
                return bad(format!("--momentum {}: must be 0 or more", self.momentum));
            }
            return Ok(Optimizer::Sgd {
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: wd,
            });
        }
        for (name, b) in [("--beta1", self.beta1), ("--beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} {b}: must be in [0, 1)"));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad(format!("--eps {}: must be positive", self.eps));
        }
        let (beta1, beta2, eps) = (self.beta1, self.beta2, self.eps);
        Ok(Optimizer::AdamW {
            lr: self.lr,
            beta1,
            beta2,
            eps,
            weight_decay: wd,
        })
    }

    /// Every check that needs no device, before any work.
    fn check(&self, cx: &Context) -> Result<Optimizer> {
        super::check_tp(self.layout.tp)?;
        if self.steps == 0 {
            return Err(Error::Input("--steps 0: train at least one step".into()));
        }
        if let Some(c) = self.grad_clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(Error::Input(format!(
                "--grad-clip {c}: the norm must be positive"
            )));
        }
        if self.input_ids.is_some() && (self.batch.is_some() || self.seq.is_some()) {
            return Err(Error::Input(
                "--batch and --seq come from the --input-ids file; give one or the other".into(),
            ));
        }
        cx.check_outputs(&[&self.grads_out])?;
        self.out.check(cx)?;
        if self.save_every == Some(0) {
            return Err(Error::Input(
                "--save-every 0: save every 1 step or more".into(),
            ));
        }
        let resumed_in_place = self.save.is_some() && self.save == self.resume;
        if let (Some(dir), true, false) = (&self.save, cx.cluster.is_root(), resumed_in_place) {
            check_save_dir(dir).map_err(|e| Error::Input(format!("--save {e}")))?;
        }
        self.optimizer()
    }
}

/// The state of the run `--resume` names, read and checked against this
/// run before any device opens: the same model, settings it can go on
/// under, and steps left to take.
fn resume_state(args: &TrainArgs, opt: &Optimizer) -> Result<Option<TrainState>> {
    let Some(dir) = &args.resume else {
        return Ok(None);
    };
    let refuse = |msg: String| Err(Error::Input(format!("--resume {}: {msg}", dir.display())));
    let st = TrainState::read(dir)?;
    let (saved, asked) = (
        ModelSource::Checkpoint(dir.clone()).config()?,
        args.model.config()?,
    );
    if saved != asked {
        return refuse(format!(
            "the run trained another model ({}); this run asks for {}",
            shape(&saved),
            shape(&asked)
        ));
    }
    if args.steps as u64 <= st.step {
        return refuse(format!(
            "the run has taken {} steps already; --steps {} counts from its start: ask for more",
            st.step, args.steps
        ));
    }
    st.check_compatible(opt, args.grad_clip, st.batch, st.seq)?;
    Ok(Some(st))
}

/// `2 layers, 64 wide, 2 heads, vocab 128, 64 positions`.
fn shape(c: &wgpipe::Gpt2Config) -> String {
    format!(
        "{} layers, {} wide, {} heads, vocab {}, {} positions",
        c.n_layer, c.n_embd, c.n_head, c.vocab_size, c.n_positions
    )
}

pub fn run(args: &TrainArgs, cx: &Context) -> Result<()> {
    let opt = args.check(cx)?;
    let resume = resume_state(args, &opt)?;
    let cfg = args.model.config()?;
    let seq = args.seq.unwrap_or(cfg.n_positions.min(64));
    let stream = match (&args.input_ids, &args.data) {
        (None, Some(path)) => Some(TokenStream::read(path, cfg.vocab_size)?),
        _ => None,
    };
    let mut batches = batches(args, &cfg, seq, stream.as_ref())?;
    if let Some(st) = &resume {
        batches.resume(&st.data).map_err(|e| match e {
            Error::Input(msg) => Error::Input(format!("--resume: {msg}")),
            e => e,
        })?;
    }
    let first = batches.next_batch();
    wgpipe::io::check_input(&cfg, &first)?;
    let m = args.microbatches.unwrap_or(first.batch);
    let model = match &args.resume {
        Some(dir) => ModelSource::Checkpoint(dir.clone()),
        None => args.model.source(),
    };
    let pipeline = Pipeline::new(PipelineConfig {
        devices: args.devices.clone(),
        tp: args.layout.tp,
        split: args.layout.split.clone(),
        schedule: args.schedule,
        virtual_stages: args.virtual_stages,
        microbatches: Some(m),
        cluster: cx.cluster.clone(),
        dtype: args.model.dtype,
        workload: Workload::Train {
            sequences: first.batch.div_ceil(m),
            tokens: first.seq,
        },
        ..PipelineConfig::new(model)
    })?;
    if !args.out.json {
        cx.print(&format!("{}\n", pipeline.split()));
    }
    let mut trainer = pipeline.trainer(TrainConfig {
        optimizer: opt,
        grad_clip: args.grad_clip,
        recompute: args.recompute,
        batch: first.batch,
        seq: first.seq,
    })?;
    if let Some(dir) = &args.resume {
        trainer.resume(dir)?;
    }
    let run = train_steps(args, cx, &mut trainer, first, &mut batches)?;
    finish(args, cx, &pipeline, &trainer, &run)
}

/// Where each step's tokens come from: the `--input-ids` batch every step,
/// `--batch` seeded windows of `--data`, or one batch of random ids.
fn batches<'s>(
    args: &TrainArgs,
    cfg: &wgpipe::Gpt2Config,
    seq: usize,
    stream: Option<&'s TokenStream>,
) -> Result<Batches<'s>> {
    let batch = args.batch.unwrap_or(4);
    Ok(match (&args.input_ids, stream) {
        (Some(path), _) => Batches::Fixed(wgpipe::io::read_input_ids(path)?),
        (None, Some(s)) => Batches::Stream(s.windows(batch, seq, args.model.seed)?),
        (None, None) => Batches::Fixed(wgpipe::io::random_input_ids(
            batch,
            seq,
            cfg.vocab_size,
            args.model.seed,
        )),
    })
}

/// What the steps of this process did.
struct Ran {
    steps: Vec<StepReport>,
    first_step: u64,
    saved_steps: Vec<u64>,
}

/// Every step left (from the resumed step on), with a progress bar; the
/// first step's gradients written where `--grads-out` asks, before its
/// update; the state saved every `--save-every` steps and at the end.
fn train_steps(
    args: &TrainArgs,
    cx: &Context,
    trainer: &mut Trainer,
    first: TokenBatch,
    batches: &mut Batches,
) -> Result<Ran> {
    let done = trainer.steps_taken();
    let bar = match args.out.json || !cx.cluster.is_root() {
        true => ProgressBar::hidden(),
        false => ProgressBar::new(args.steps as u64),
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed}]")
            .expect("valid template"),
    );
    bar.set_position(done);
    let mut ran = Ran {
        steps: Vec::with_capacity(args.steps),
        first_step: done + 1,
        saved_steps: Vec::new(),
    };
    let mut tokens = first;
    for step in done + 1..=args.steps as u64 {
        if step > done + 1 {
            tokens = batches.next_batch();
        }
        let report = match (step == done + 1, &args.grads_out) {
            (true, Some(path)) => trainer.train_step_with(&tokens, |t| t.save_grads(path)),
            _ => trainer.train_step(&tokens),
        }
        .map_err(|e| match e {
            Error::NonFinite(msg) => Error::NonFinite(format!(
                "{msg} (--lr is {}; lower it, or add --grad-clip)",
                args.lr
            )),
            e => e,
        })?;
        bar.set_message(format!("loss {:.4}", report.pass.loss));
        bar.inc(1);
        ran.steps.push(report);
        let every = args.save_every.is_some_and(|n| step % n as u64 == 0);
        if let (Some(dir), true) = (&args.save, every || step == args.steps as u64) {
            trainer
                .save_state(dir, &batches.state())
                .map_err(|e| match e {
                    Error::Interrupted => e,
                    e => Error::Input(format!("--save {e}")),
                })?;
            ran.saved_steps.push(step);
        }
    }
    bar.finish();
    Ok(ran)
}

/// Save, write the last step's timeline, and report.
fn finish(
    args: &TrainArgs,
    cx: &Context,
    pipeline: &Pipeline,
    trainer: &Trainer,
    run: &Ran,
) -> Result<()> {
    let peak = trainer.peak_activation_bytes()?;
    let steps = &run.steps;
    let last = &steps.last().expect("at least one step").pass;
    let s = trainer.schedule();
    let title = format!(
        "{} training step — measured, P={} M={} v={}",
        s.name, s.devices, s.microbatches, s.virtual_stages
    );
    args.out.write(cx, &last.timeline, &title)?;
    let step_ms = trainer.median_step_ms();
    let (batch, seq) = (trainer.batch(), trainer.seq());
    let m = &last.pipeline;
    let report = Report {
        losses: steps.iter().map(|r| r.pass.loss).collect(),
        first_step: run.first_step,
        saved_steps: run.saved_steps.clone(),
        schedule: s.name.clone(),
        devices: s.devices,
        device_names: last.timeline.device_names.clone(),
        microbatches: s.microbatches,
        virtual_stages: s.virtual_stages,
        batch,
        seq,
        optimizer: format!("{:?}", args.optimizer).to_lowercase(),
        recompute: args.recompute,
        step_ms,
        tokens_per_s: (batch * seq) as f64 / (step_ms / 1e3),
        bubble_measured: m.bubble_measured,
        bubble_simulated: m.bubble_simulated,
        bubble_analytic: m.bubble_analytic,
        peak_activation_bytes: peak,
        grad_norms: steps.iter().filter_map(|r| r.grad_norm).collect(),
        last_step: m.clone(),
        split: pipeline.split().clone(),
        mpi: pipeline.mpi_report(),
    };
    match args.out.json {
        true => cx.print_json(&report),
        false => cx.print(&text(&report)),
    }
    Ok(())
}

fn text(r: &Report) -> String {
    let first = r.losses.first().copied().unwrap_or(f64::NAN);
    let last = r.losses.last().copied().unwrap_or(f64::NAN);
    let steps = match r.first_step {
        1 => format!("{} steps", r.losses.len()),
        f => format!("steps {f}-{} (resumed)", f + r.losses.len() as u64 - 1),
    };
    let mut s = format!(
        "{} P={} M={} v={}: {steps} of {}x{} tokens, loss {first:.4} -> {last:.4}\n",
        r.schedule, r.devices, r.microbatches, r.virtual_stages, r.batch, r.seq
    );
    if let Some(last) = r.saved_steps.last() {
        s += &format!("saved the run's state after step {last}\n");
    }
    s += &format!(
        "step {} (median), {:.0} tokens/s; last step's pipeline: makespan {}\n",
        duration(r.step_ms * 1e3),
        r.tokens_per_s,
        duration(r.last_step.makespan_ms * 1e3)
    );
    s += &format!(
        "bubble: measured {:.1}%   simulated {:.1}%   analytic {:.1}%\n",
        100.0 * r.bubble_measured,
        100.0 * r.bubble_simulated,
        100.0 * r.bubble_analytic
    );
    for (d, name) in r.device_names.iter().enumerate() {
        s += &format!(
            "  device {d} {name}: busy {}, peak stashed activations {:.2} MB{}\n",
            duration(r.last_step.busy_ms[d] * 1e3),
            r.peak_activation_bytes[d] as f64 / 1e6,
            if r.recompute { " (recompute)" } else { "" }
        );
    }
    match &r.mpi {
        Some(m) => s + &format!("{m}\n"),
        None => s,
    }
}
