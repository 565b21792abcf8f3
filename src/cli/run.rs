//! `wgpipe run`: the model pipelined across devices, with the measured
//! bubble beside the simulated and analytic one, and what one device would
//! have taken.

use wgpipe::pipeline::{Compare, ForwardReport, MpiReport};
use wgpipe::{Pipeline, PipelineConfig, Result, ScheduleKind, Workload};

use super::{check_tp, duration, Context, InputArgs, LayoutArgs, ModelArgs, TimelineArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Pipeline devices: a count (one per physical adapter, cycling) or a list like vulkan:0,gl:0.
    #[arg(long, default_value = "2")]
    pub devices: String,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Microbatches M the batch is split into (default: one per sequence; 4 random sequences without --batch or --input-ids).
    #[arg(long)]
    pub microbatches: Option<usize>,
    /// Schedule. Inference runs forwards only: gpipe and interleaved run their
    /// forward-only form; 1f1b and zb-h1 run their forward part (each device's
    /// forwards in the schedule's order, which is GPipe's).
    #[arg(long, value_enum, default_value_t = ScheduleKind::Gpipe)]
    pub schedule: ScheduleKind,
    /// Chunks (virtual stages) per device, for interleaved.
    #[arg(long = "virtual", default_value_t = 1)]
    pub virtual_stages: usize,
    /// Also run the same work on one device, and the solo and co-run
    /// controls, and account for the speedup (ideal → measured) cause by cause.
    #[arg(long)]
    pub compare: bool,
    #[command(flatten)]
    pub out: TimelineArgs,
}

/// What `run --json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    run: &'a ForwardReport,
    compare: Compare,
    #[serde(skip_serializing_if = "Option::is_none")]
    mpi: Option<MpiReport>,
}

pub fn run(args: &RunArgs, cx: &Context) -> Result<()> {
    check_tp(args.layout.tp)?;
    if args.compare {
        cx.cluster
            .refuse_mpi("--compare (its one-device and solo runs)")?;
    }
    cx.check_outputs(&[&args.input.logits_out])?;
    args.out.check(cx)?;
    let cfg = args.model.config()?;
    // Without --microbatches: one microbatch per sequence (of the file, or
    // of --batch, default 4).
    let tokens = args
        .input
        .tokens(&cfg, args.model.seed, args.microbatches.unwrap_or(4))?;
    let m = args.microbatches.unwrap_or(tokens.batch);
    let pipeline = Pipeline::new(PipelineConfig {
        devices: args.devices.clone(),
        tp: args.layout.tp,
        split: args.layout.split.clone(),
        schedule: args.schedule,
        virtual_stages: args.virtual_stages,
        microbatches: Some(m),
        cluster: cx.cluster.clone(),
        dtype: args.model.dtype,
        workload: Workload::Forward {
            sequences: tokens.batch.div_ceil(m),
            tokens: tokens.seq,
        },
        ..PipelineConfig::new(args.model.source())
    })?;
    if !args.out.json {
        cx.print(&format!("{}\n", pipeline.split()));
    }
    let run = pipeline.forward(&tokens)?;
    let compare = match args.compare {
        true => pipeline.compare(&tokens, &run)?,
        false => pipeline.estimate(&run),
    };
    if let Some(p) = &args.input.logits_out {
        if cx.cluster.is_root() {
            wgpipe::io::write_logits(p, &run.logits, tokens.batch, tokens.seq, cfg.vocab_size)?;
        }
    }
    let m = &run.measurement;
    let title = format!(
        "{} — measured, P={} M={} v={}",
        m.schedule, m.devices, m.microbatches, m.virtual_stages
    );
    args.out.write(cx, &run.timeline, &title)?;
    let mpi = pipeline.mpi_report();
    if args.out.json {
        cx.print_json(&Report {
            run: &run,
            compare,
            mpi,
        });
        return Ok(());
    }
    cx.print(&text(&run, &compare, mpi.as_ref()));
    Ok(())
}

/// The grid, the bubble, transfers, each device's busy and idle time, and
/// the one-device comparison.
fn text(run: &ForwardReport, c: &Compare, mpi: Option<&MpiReport>) -> String {
    let m = &run.measurement;
    let mut s = format!("{}\n", wgpipe::schedule::grid::render(&run.schedule, &[]));
    s += &format!("{m}\n");
    for (d, name) in run.device_names.iter().enumerate() {
        s += &format!(
            "  device {d} {name}: busy {}, idle {}\n",
            duration(m.busy_ms[d] * 1e3),
            duration(m.idle_ms[d] * 1e3)
        );
    }
    let moved = format!("; {} bytes moved between devices", run.bytes_moved());
    s += &format!(
        "{}\n",
        wgpipe::device::dtype::describe(&run.precision, &moved, &run.precision_notes)
    );
    if let Some(r) = mpi {
        s += &format!("{r}\n");
    }
    if run.tp > 1 {
        s += &format!(
            "tensor parallel: {} Gpus per stage; all-reduces moved {} bytes through the host, messages {} bytes\n",
            run.tp,
            run.all_reduce_bytes,
            run.bytes_moved()
        );
    }
    s + &format!("{c}\n")
}
