//! `wgpipe bench soak`: memory over a long run ([`wgpipe::bench::soak`]):
//! the samples printed or written as JSON, CSV and an SVG curve.

use wgpipe::bench::soak::SoakBench;
use wgpipe::{Result, ScheduleKind};

use super::{Context, TableArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Pipeline devices: a count or a list like vulkan:0,vulkan:0.
    #[arg(long, default_value = "2")]
    pub devices: String,
    /// Built-in model with seeded random weights.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    #[arg(long, value_enum, default_value_t = ScheduleKind::OneFOneB)]
    pub schedule: ScheduleKind,
    /// Training steps, then calls to generate.
    #[arg(long, default_value_t = 1000)]
    pub steps: usize,
    #[arg(long, default_value_t = 1000)]
    pub generates: usize,
    /// Sample RSS, descriptors and device buffers every N iterations.
    #[arg(long, default_value_t = 50)]
    pub every: usize,
    /// Sequences per training step.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Microbatches per training step.
    #[arg(long, default_value_t = 2)]
    pub microbatches: usize,
    /// Tokens per training sequence.
    #[arg(long, default_value_t = 32)]
    pub seq: usize,
    /// New tokens per prompt in each generate call (2 prompts of 8 tokens).
    #[arg(long, default_value_t = 8)]
    pub new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// `--csv`: every sample; `--svg`: RSS, device buffers and fds against iterations.
    #[command(flatten)]
    pub out: TableArgs,
}

pub fn run(a: &SoakArgs, cx: &Context) -> Result<()> {
    a.out.check(cx)?;
    let bench = SoakBench {
        devices: a.devices.clone(),
        model: a.model.clone(),
        seed: a.seed,
        schedule: a.schedule,
        steps: a.steps,
        generates: a.generates,
        every: a.every,
        batch: a.batch,
        microbatches: a.microbatches,
        seq: a.seq,
        new_tokens: a.new_tokens,
        ..SoakBench::default()
    };
    let report = bench.run()?;
    a.out.emit(
        cx,
        &report,
        || report.text(),
        &report.samples,
        || report.svg(),
    )
}
