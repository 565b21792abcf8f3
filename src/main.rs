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
    /// Generate text: prefill and KV-cache decode pipelined across devices, with TTFT, TPOT and ITL measured.
    Generate(cli::generate::GenerateArgs),
    /// Train the model pipelined across devices (F, B, I, W executed), with the loss, bubble and memory measured.
    Train(cli::train::TrainArgs),
    /// Benchmarks on real devices (`bench bubble`: the seed's bubble table, measured).
    Bench(cli::bench::BenchArgs),
    /// Show a pipeline schedule, its simulated and analytic bubble, and its memory.
    Plan(cli::plan::PlanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before any wgpu call: the Vulkan loader reads it when it loads.
    ensure_runtime_dir();
    let pipelined = match &cli.command {
        Command::Run(_) | Command::Generate(_) | Command::Train(_) | Command::Bench(_) => true,
        Command::Forward(f) => f.tp > 1,
        _ => false,
    };
    if pipelined && std::env::var_os("LP_NUM_THREADS").is_none()
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
        Command::Generate(a) => cli::generate::run(&a),
        Command::Train(a) => cli::train::run(&a),
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

/// Without a desktop session `XDG_RUNTIME_DIR` is unset, and the Vulkan
/// loader says so on stderr (`error: XDG_RUNTIME_DIR is invalid or not set
/// in the environment.`) once per instance it creates — harmless, and read as
/// failure by every new user. When it is unset or not a directory, point it
/// at a private directory of ours, `<temp>/wgpipe-runtime-<uid>`, mode 0700,
/// created if missing. A path that exists but is not a real directory of
/// ours with no access for others is left alone (and so is the variable):
/// the complaint is better than trusting a directory someone else made.
fn ensure_runtime_dir() {
    let usable = std::env::var_os("XDG_RUNTIME_DIR")
        .is_some_and(|d| !d.is_empty() && std::path::Path::new(&d).is_dir());
    if usable {
        return;
    }
    if let Some(dir) = private_runtime_dir() {
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
}

#[cfg(unix)]
fn private_runtime_dir() -> Option<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    // Our uid, without libc: the owner of /proc/self (Linux; elsewhere the
    // variable stays as it was).
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok()?;
    let dir = std::env::temp_dir().join(format!("wgpipe-runtime-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    // symlink_metadata: a link planted at that path is not followed.
    let m = std::fs::symlink_metadata(&dir).ok()?;
    let ours = m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0;
    ours.then_some(dir)
}

#[cfg(not(unix))]
fn private_runtime_dir() -> Option<std::path::PathBuf> {
    None
}
