//! `wgpipe forward`: the whole model on one adapter, or with `--tp T` split
//! tensor-parallel over T devices (one stage, no pipeline).

use wgpipe::device::{list_adapters, place_devices, select};
use wgpipe::{Error, Pipeline, PipelineConfig, Result, Split};

use super::{check_tp, duration, Context, InputArgs, ModelArgs, TP_HELP};

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

impl ForwardArgs {
    /// The Gpus of the one stage: the adapter, or `--tp` T of them.
    fn devices(&self) -> Result<String> {
        if self.tp == 1 && self.devices.is_none() {
            return Ok(select(&list_adapters(), &self.adapter)?.id());
        }
        if !self.adapter.is_empty() {
            return Err(Error::Input(
                "--adapter picks one device; with --tp name the group's Gpus with --devices".into(),
            ));
        }
        let devices = self.devices.clone().unwrap_or_else(|| self.tp.to_string());
        let stages = place_devices(&devices, self.tp)?.devices();
        if stages != 1 {
            return Err(Error::Input(format!(
                "forward runs the model as one stage: --devices names {} Gpus, not --tp {} (use `wgpipe run` to pipeline P x T)",
                stages * self.tp,
                self.tp
            )));
        }
        Ok(devices)
    }
}

pub fn run(args: &ForwardArgs, cx: &Context) -> Result<()> {
    check_tp(args.tp)?;
    cx.check_outputs(&[&args.input.logits_out])?;
    let cfg = args.model.config()?;
    let tokens = args.input.tokens(&cfg, args.model.seed, 1)?;
    let pipeline = Pipeline::new(PipelineConfig {
        devices: args.devices()?,
        tp: args.tp,
        split: Split::Even,
        dtype: args.model.dtype,
        ..PipelineConfig::new(args.model.source())
    })?;
    // The whole batch in as few passes as the bindings allow.
    let per = pipeline.sequences_per_pass(tokens.batch, tokens.seq);
    let run = pipeline.forward_microbatches(&tokens, tokens.batch.div_ceil(per))?;
    let (b, t, v) = (tokens.batch, tokens.seq, cfg.vocab_size);
    let tp = match args.tp {
        1 => String::new(),
        n => format!(
            " (tensor-parallel, {n} ranks; all-reduces moved {} bytes through the host)",
            run.all_reduce_bytes
        ),
    };
    cx.print(&format!(
        "forward: {b} x {t} tokens on {}{tp} in {}: {:.1} tokens/s\n",
        run.device_names[0],
        duration(run.wall_s * 1e6),
        (b * t) as f64 / run.wall_s
    ));
    cx.print(&format!(
        "{}\n",
        wgpipe::device::dtype::describe(&run.precision, "", &run.precision_notes)
    ));
    if let Some(p) = &args.input.logits_out {
        wgpipe::io::write_logits(p, &run.logits, b, t, v)?;
        cx.print(&format!(
            "logits [{b}, {t}, {v}] written to {}\n",
            p.display()
        ));
    }
    Ok(())
}
