//! `wgpipe forward`: the whole model on one adapter, or with `--tp T` split
//! tensor-parallel over T devices (one stage, no pipeline).

use crate::cli::model_args::{place, InputArgs, ModelArgs, TP_HELP};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::executor::{run_inference, DeviceGroup, Options};
use crate::model::gpu;
use crate::schedule::{Schedule, ScheduleKind};

#[derive(clap::Args, Debug, Clone)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Adapter: index, backend (vulkan, gl, …), backend:index, or a name substring.
    #[arg(long, default_value = "")]
    pub adapter: String,
    #[arg(long, default_value_t = 1, help = TP_HELP)]
    pub tp: usize,
    /// With --tp T: the T Gpus (a count or a list like vulkan:0,vulkan:1); default T.
    #[arg(long)]
    pub devices: Option<String>,
}

pub fn run(args: &ForwardArgs) -> Result<()> {
    args.input.check_outputs()?;
    let w = args.model.load()?;
    let tokens = args.input.tokens(&w.config, args.model.seed)?;
    if args.tp > 1 || args.devices.is_some() {
        return tensor_parallel(args, &w, &tokens);
    }
    let gpu = Gpu::open(&args.adapter)?;
    let per_pass = gpu::sequences_per_pass(&gpu, &w.config, tokens.batch, tokens.seq);
    let out = gpu::forward(&gpu, &w, &tokens, per_pass)?;
    args.input
        .write_logits(&out.logits, &tokens, w.config.vocab_size)?;
    let n = tokens.batch * tokens.seq;
    println!(
        "forward: {} x {} tokens on {} in {:.1} ms: {:.1} tokens/s",
        tokens.batch,
        tokens.seq,
        gpu.label,
        out.seconds * 1e3,
        n as f64 / out.seconds
    );
    report_logits(args, &tokens, w.config.vocab_size);
    Ok(())
}

/// The whole model as one stage split over `--tp` Gpus.
fn tensor_parallel(
    args: &ForwardArgs,
    w: &crate::model::Gpt2Weights,
    tokens: &crate::io::TokenBatch,
) -> Result<()> {
    if !args.adapter.is_empty() {
        return Err(Error::Input(
            "--adapter picks one device; with --tp name the group's Gpus with --devices".into(),
        ));
    }
    let devices = args.devices.clone().unwrap_or_else(|| args.tp.to_string());
    let placement = place(&devices, args.tp, &w.config)?;
    if placement.devices() != 1 {
        return Err(Error::Input(format!(
            "forward runs the model as one stage: --devices names {} Gpus, not --tp {} (use `wgpipe run` to pipeline P x T)",
            placement.devices() * args.tp,
            args.tp
        )));
    }
    let gpus = placement.open()?;
    let group = DeviceGroup::new(&gpus[0])?;
    let per = gpu::sequences_per_pass(group.lead(), &w.config, tokens.batch, tokens.seq);
    let schedule = Schedule::for_inference(ScheduleKind::Gpipe, 1, tokens.batch.div_ceil(per), 1)?;
    let run = run_inference(&[group], w, tokens, &schedule, &Options::default())?;
    args.input
        .write_logits(&run.logits, tokens, w.config.vocab_size)?;
    let n = tokens.batch * tokens.seq;
    println!(
        "forward: {} x {} tokens on {} (tensor-parallel, {} ranks) in {:.1} ms: {:.1} tokens/s; all-reduces moved {} bytes through the host",
        tokens.batch,
        tokens.seq,
        group.label(),
        args.tp,
        run.wall_s * 1e3,
        n as f64 / run.wall_s,
        run.reduced_bytes
    );
    report_logits(args, tokens, w.config.vocab_size);
    Ok(())
}

/// Say where `--logits-out` went.
fn report_logits(args: &ForwardArgs, tokens: &crate::io::TokenBatch, vocab: usize) {
    if let Some(p) = &args.input.logits_out {
        println!(
            "logits [{}, {}, {vocab}] written to {}",
            tokens.batch,
            tokens.seq,
            p.display()
        );
    }
}
