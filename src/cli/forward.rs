//! `wgpipe forward`: the whole model on one adapter.

use crate::cli::model_args::{InputArgs, ModelArgs};
use crate::device::Gpu;
use crate::error::Result;
use crate::model::gpu;

#[derive(clap::Args, Debug, Clone)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Adapter: index, backend (vulkan, gl, …), backend:index, or a name substring.
    #[arg(long, default_value = "")]
    pub adapter: String,
}

pub fn run(args: &ForwardArgs) -> Result<()> {
    args.input.check_outputs()?;
    let w = args.model.load()?;
    let tokens = args.input.tokens(&w.config, args.model.seed)?;
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
    if let Some(p) = &args.input.logits_out {
        println!(
            "logits [{}, {}, {}] written to {}",
            tokens.batch,
            tokens.seq,
            w.config.vocab_size,
            p.display()
        );
    }
    Ok(())
}
