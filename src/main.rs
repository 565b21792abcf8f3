//! The `wgpipe` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wgpipe::cli;

#[derive(Parser)]
#[command(
    name = "wgpipe",
    version,
    about = "GPT-2 as microbatched pipelines across wgpu devices, with the bubble measured"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every adapter on every backend, with limits and features.
    Adapters(cli::adapters::AdaptersArgs),
    /// Run the whole model on one adapter.
    Forward(cli::forward::ForwardArgs),
    /// Run the model pipelined across devices and measure the bubble.
    Run(cli::run::RunArgs),
    /// Benchmarks on real devices (`bench bubble`: the seed's bubble table, measured).
    Bench(cli::bench::BenchArgs),
    /// Show a pipeline schedule, its simulated and analytic bubble, and its memory.
    Plan(cli::plan::PlanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Run(_) | Command::Bench(_))
        && std::env::var_os("LP_NUM_THREADS").is_none()
    {
        // Mesa's software adapters read this once, when they load: one thread
        // per device lets pipeline devices run in parallel instead of sharing
        // one pool (../shared/wgpu-notes.md). No effect on real GPUs.
        std::env::set_var("LP_NUM_THREADS", "1");
    }
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,wgpu_hal=off"),
    )
    .init();
    let result = match cli.command {
        Command::Adapters(a) => cli::adapters::run(&a),
        Command::Forward(a) => cli::forward::run(&a),
        Command::Run(a) => cli::run::run(&a),
        Command::Bench(a) => cli::bench::run(&a),
        Command::Plan(a) => cli::plan::run(&a).map_err(wgpipe::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
