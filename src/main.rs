//! The `wgpipe` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wgpipe::Cluster;

mod cli;

#[derive(Parser)]
#[command(
    name = "wgpipe",
    version,
    about = "GPT-2 as microbatched pipelines across wgpu devices, with the bubble measured"
)]
struct Cli {
    /// How pipeline devices talk: `in-process` (every device a thread of
    /// this process) or `mpi` (one MPI rank per device, started by `mpirun
    /// -np P`; `run`, `generate`, `bench bubble` and `bench hop`; needs a
    /// build with `--features mpi`).
    #[arg(long, value_enum, global = true, default_value_t = TransportKind::InProcess)]
    transport: TransportKind,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum TransportKind {
    InProcess,
    Mpi,
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
    /// Serve the model over an OpenAI-compatible HTTP API, batching requests continuously across the pipeline.
    Serve(cli::serve::ServeArgs),
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
        Command::Run(_)
        | Command::Generate(_)
        | Command::Train(_)
        | Command::Bench(_)
        | Command::Serve(_) => true,
        Command::Forward(f) => f.tp > 1,
        _ => false,
    };
    if pipelined && std::env::var_os("LP_NUM_THREADS").is_none() {
        // Mesa's software adapters read this once, when they load: one thread
        // per device lets pipeline devices run in parallel instead of sharing
        // one pool (../shared/wgpu-notes.md). No effect on real GPUs.
        std::env::set_var("LP_NUM_THREADS", "1");
    }
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,wgpu_hal=off"),
    )
    .init();
    // Ctrl-C stops the run at the devices' next action and the command
    // returns "interrupted" (a second Ctrl-C ends the process at once).
    // `serve` stops on its own signals: finishing what is in flight first.
    if !matches!(cli.command, Command::Serve(_)) {
        if let Err(e) = wgpipe::interrupt::stop_on_signals() {
            eprintln!("warning: {e}");
        }
    }
    if cli.transport == TransportKind::Mpi {
        return mpi::main(cli.command);
    }
    match dispatch(cli.command, Cluster::Local) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    }
}

/// 130 (as a shell reports a process ended by SIGINT) for an interrupted
/// command, 1 for every other failure.
fn exit_code(e: &wgpipe::Error) -> ExitCode {
    match e {
        wgpipe::Error::Interrupted => ExitCode::from(130),
        _ => ExitCode::FAILURE,
    }
}

/// Run `command` on `cluster`: this process alone, or one rank of an MPI job.
fn dispatch(command: Command, cluster: Cluster) -> wgpipe::Result<()> {
    let cx = cli::Context { cluster };
    match command {
        Command::Adapters(a) => cli::adapters::run(&a, &cx),
        Command::Forward(a) => cli::forward::run(&a, &cx),
        Command::Run(a) => cli::run::run(&a, &cx),
        Command::Generate(a) => cli::generate::run(&a, &cx),
        Command::Serve(a) => cli::serve::run(&a, &cx),
        Command::Train(a) => cli::train::run(&a, &cx),
        Command::Bench(a) => cli::bench::run(&a, &cx),
        Command::Plan(a) => cli::plan::run(&a, &cx).map_err(wgpipe::Error::from),
    }
}

/// `--transport mpi`: this process is one rank of an mpirun job.
mod mpi {
    use super::*;

    /// Which commands run across ranks; the others say so.
    fn supported(command: &Command) -> Result<(), String> {
        let name = match command {
            Command::Run(_) | Command::Generate(_) | Command::Train(_) => return Ok(()),
            Command::Bench(b)
                if matches!(
                    b.what,
                    cli::bench::BenchWhat::Hop(_) | cli::bench::BenchWhat::Bubble(_)
                ) =>
            {
                return Ok(())
            }
            Command::Adapters(_) => "adapters",
            Command::Forward(_) => "forward",
            Command::Bench(b) => match b.what {
                cli::bench::BenchWhat::Decode(_) => "bench decode",
                cli::bench::BenchWhat::Soak(_) => "bench soak",
                cli::bench::BenchWhat::Serve(_) => "bench serve",
                _ => "bench layouts",
            },
            Command::Plan(_) => "plan",
            Command::Serve(_) => "serve",
        };
        Err(format!(
            "`wgpipe {name}` does not run across MPI ranks (yet): --transport mpi works with `run`, `generate`, `train`, `bench bubble` and `bench hop`"
        ))
    }

    #[cfg(not(feature = "mpi"))]
    pub fn main(command: Command) -> ExitCode {
        let _ = supported(&command);
        eprintln!("error: --transport mpi: this wgpipe was built without MPI: rebuild with --features mpi");
        ExitCode::FAILURE
    }

    /// Run `command` as this rank; any failure ends the whole job with a
    /// message naming the rank and host (and, from the executor, the device,
    /// stage and action).
    #[cfg(feature = "mpi")]
    pub fn main(command: Command) -> ExitCode {
        use wgpipe::executor::mpi;
        if let Err(e) = supported(&command) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        let guard = match mpi::init() {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let world = guard.world();
        let who = format!("rank {} of {} on {}", world.rank, world.size, world.host);
        let cluster = Cluster::Mpi(world);
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dispatch(command, cluster)));
        let msg = match result {
            Ok(Ok(())) => {
                drop(guard); // MPI_Finalize: every rank gets here together.
                return ExitCode::SUCCESS;
            }
            Ok(Err(e)) => {
                if matches!(e, wgpipe::Error::Interrupted) {
                    // Every rank stops: those that were not signalled too.
                    mpi::report(&format!("error: {who}: interrupted"));
                    guard.abort(130)
                }
                format!("error: {who}: {e}")
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                format!("error: {who}: panicked: {what}")
            }
        };
        mpi::report(&msg);
        mpi::report(&format!("{who}: aborting the MPI job"));
        guard.abort(1)
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
