//! `wgpipe run`: the model pipelined across devices, with the measured
//! bubble beside the simulated and analytic one.

use std::path::PathBuf;

use crate::cli::model_args::{check_output_path, place, InputArgs, ModelArgs, TP_HELP};
use crate::error::Result;
use crate::executor::accounting::{account, Inputs, Losses};
use crate::executor::corun::{inference_controls, Controls};
use crate::executor::measure::{measure, Measurement};
use crate::executor::net::{device_groups, mpi_line, mpi_summary, open_local, refuse_mpi};
use crate::executor::partition::Split;
use crate::executor::{run_inference, DeviceGroup, Options};
use crate::io::write_file;
use crate::schedule::{Schedule, ScheduleKind};
use crate::trace::{chrome::to_chrome_json, svg::gantt_svg};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub input: InputArgs,
    /// Pipeline devices: a count (one per physical adapter, cycling) or a list like vulkan:0,gl:0.
    #[arg(long, default_value = "2")]
    pub devices: String,
    #[arg(long, default_value_t = 1, help = TP_HELP)]
    pub tp: usize,
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
    /// Layers per stage: `auto` profiles every layer kind on every device and
    /// takes the split with the shortest predicted makespan; `even`; or a
    /// count per stage (devices x virtual), e.g. 7,5.
    #[arg(long, default_value = "auto")]
    pub split: Split,
    /// Write the measured timeline as Chrome trace-event JSON (opens in Perfetto).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Write the measured timeline as an SVG Gantt chart.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Also run the same work on one device, and the solo and co-run
    /// controls, and account for the speedup (ideal → measured) cause by cause.
    #[arg(long)]
    pub compare: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What one device would have taken for the same work, and where the
/// pipeline's speedup went.
#[derive(serde::Serialize)]
struct Compare {
    /// ms on one device: measured with `--compare` (on the fastest device by
    /// the `--split auto` profile, else the first), else estimated: M × the
    /// fastest device's whole-model time in the profile, or without one M ×
    /// the sum of the stages' median forward times in this run.
    one_device_ms: f64,
    /// Which device `one_device_ms` is for.
    one_device: String,
    one_device_measured: bool,
    /// one_device_ms / this run's wall ms.
    speedup: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    controls: Option<Controls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accounting: Option<Losses>,
    /// Why one device may still be faster, when the cause is the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// When every device is a software adapter, the "devices" are this machine's
/// cores: one device given all of them (lavapipe's default threads, as
/// `wgpipe forward` runs) does the same work without a pipeline.
fn software_note(groups: &[DeviceGroup]) -> Option<String> {
    let all_cpu = groups
        .iter()
        .flat_map(|g| g.gpus())
        .all(|g| g.summary.device_type.eq_ignore_ascii_case("cpu"));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    all_cpu.then(|| {
        format!(
            "note: every device here is a software adapter sharing this machine's {cores} cores; \
             the pipeline splits the cores between its devices (LP_NUM_THREADS=1 each), it adds no compute. \
             One software device given every core (`wgpipe forward`, lavapipe's default threads, the whole batch at once) \
             can match or beat it; on separate GPUs each stage brings its own."
        )
    })
}

pub fn run(args: &RunArgs) -> Result<()> {
    if args.compare {
        refuse_mpi("--compare (its one-device and solo runs)")?;
    }
    args.input.check_outputs()?;
    check_output_path(args.trace.as_deref())?;
    check_output_path(args.svg.as_deref())?;
    // Under MPI with a checkpoint, only the config so far: the tensors are
    // read once the split says which stages this rank holds.
    let mut w = args.model.load_for_rank()?;
    let cfg = w.config().clone();
    // Without --microbatches: one microbatch per sequence (of the file, or of
    // --batch, default 4).
    let mut input = args.input.clone();
    if input.input_ids.is_none() && input.batch.is_none() {
        input.batch = Some(args.microbatches.unwrap_or(4));
    }
    let tokens = input.tokens(&cfg, args.model.seed)?;
    let m = args.microbatches.unwrap_or(tokens.batch);
    let placement = place(&args.devices, args.tp, &cfg)?;
    let schedule =
        Schedule::for_inference(args.schedule, placement.devices(), m, args.virtual_stages)?;
    let gpus = open_local(&placement, &args.devices)?;
    let groups = device_groups(&gpus, placement.devices())?;
    let chosen = w.resolve_split(
        &args.split,
        &groups,
        &schedule,
        tokens.batch.div_ceil(m),
        tokens.seq,
    )?;
    if !args.json {
        println!("{}", chosen.describe());
    }
    let opts = Options {
        split: Some(chosen.split.clone()),
    };
    let run = run_inference(&groups, w.weights(), &tokens, &schedule, &opts)?;
    let reads = w.checkpoint_reads();
    let n_tokens = tokens.batch * tokens.seq;
    let meas = measure(&schedule, &run, n_tokens)?;
    // The device that would run the whole model fastest, by the profile.
    let fastest = chosen.auto.as_ref().map(|a| {
        (0..groups.len())
            .map(|d| (d, a.profile.whole_model_ms(d, cfg.n_layer)))
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .expect("at least one device")
    });
    let compare = if args.compare {
        // The same microbatches through the same executor on one device (the
        // fastest by the profile, else the first).
        let one = Schedule::for_inference(crate::schedule::ScheduleKind::Gpipe, 1, m, 1)?;
        let d = fastest.map_or(0, |(d, _)| d);
        // One Gpu: under tensor parallelism, the group's first.
        let alone = [DeviceGroup::single(groups[d].lead())];
        let single = run_inference(&alone, w.weights(), &tokens, &one, &Options::default())?;
        let controls =
            inference_controls(&groups, w.weights().whole()?, &tokens, &schedule, &opts)?;
        let one_ms = single.wall_s * 1e3;
        let speedup = one_ms / meas.wall_ms;
        let losses = account(&Inputs {
            schedule: &schedule,
            bubble_analytic: meas.bubble_analytic,
            baseline_ms: one_ms,
            speedup,
            solo_stage_ms: &controls.solo_stage_ms,
            corun_stage_ms: &controls.corun_stage_ms,
            pipeline_stage_ms: &meas.forward_ms,
        })?;
        Compare {
            one_device_ms: one_ms,
            one_device: alone[0].label(),
            one_device_measured: true,
            speedup,
            controls: Some(controls),
            accounting: Some(losses),
            note: software_note(&groups),
        }
    } else {
        // From the profile when there is one (the fastest device with every
        // layer), else from this run's stage times. Not under tensor
        // parallelism: a group's times are not one Gpu's (null in JSON).
        let one_ms = match args.tp {
            1 => fastest.map_or_else(
                || m as f64 * meas.forward_ms.iter().sum::<f64>(),
                |(_, ms)| m as f64 * ms,
            ),
            _ => f64::NAN,
        };
        Compare {
            one_device_ms: one_ms,
            one_device: run.timeline.device_names[fastest.map_or(0, |(d, _)| d)].clone(),
            one_device_measured: false,
            speedup: one_ms / meas.wall_ms,
            controls: None,
            accounting: None,
            note: software_note(&groups),
        }
    };

    input.write_logits(&run.logits, &tokens, cfg.vocab_size)?;
    if let Some(p) = &args.trace {
        let json = serde_json::to_string(&to_chrome_json(&run.timeline)).expect("trace serializes");
        write_file(p, json.as_bytes())?;
    }
    if let Some(p) = &args.svg {
        let title = format!(
            "{} — measured, P={} M={} v={}",
            schedule.name, schedule.devices, m, args.virtual_stages
        );
        write_file(p, gantt_svg(&run.timeline, &title).as_bytes())?;
    }
    if args.json {
        let mut v = serde_json::to_value(&meas).expect("measurement serializes");
        v["device_names"] = serde_json::json!(run.timeline.device_names);
        v["batch"] = serde_json::json!(tokens.batch);
        v["seq"] = serde_json::json!(tokens.seq);
        v["microbatch_sequences"] = serde_json::json!(run.microbatch_sequences);
        v["tp"] = serde_json::json!(args.tp);
        v["all_reduce_bytes"] = serde_json::json!(run.reduced_bytes);
        v["compare"] = serde_json::to_value(&compare).expect("compare serializes");
        v["split"] = serde_json::to_value(&chosen).expect("split serializes");
        if let Some(mut m) = mpi_summary() {
            if let Some(r) = &reads {
                r.add_to(&mut m);
            }
            v["mpi"] = m;
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        print_report(&meas, &run.timeline.device_names, &schedule);
        if let Some(line) = mpi_line() {
            println!("{line}");
        }
        if let Some(r) = &reads {
            println!("{}", r.line());
        }
        if args.tp > 1 {
            println!(
                "tensor parallel: {} Gpus per stage; all-reduces moved {} bytes through the host, messages {} bytes",
                args.tp,
                run.reduced_bytes,
                run.bytes_moved()
            );
        }
        print_compare(&compare);
    }
    Ok(())
}

fn print_report(m: &Measurement, names: &[String], schedule: &Schedule) {
    println!("{}", crate::schedule::grid::render(schedule, &[]));
    println!(
        "{} P={} M={} v={}: makespan {:.2} ms (wall {:.2} ms), {:.0} tokens/s, clock: {}",
        m.schedule,
        m.devices,
        m.microbatches,
        m.virtual_stages,
        m.makespan_ms,
        m.wall_ms,
        m.tokens_per_s,
        m.clock
    );
    println!(
        "bubble: measured {:.1}%   simulated {:.1}%   analytic {:.1}%",
        100.0 * m.bubble_measured,
        100.0 * m.bubble_simulated,
        100.0 * m.bubble_analytic
    );
    println!(
        "transfers: {} hops, {:.2} MB, median {:.3} ms",
        m.transfers,
        m.bytes_moved as f64 / 1e6,
        m.transfer_ms
    );
    for (d, name) in names.iter().enumerate() {
        println!(
            "  device {d} {name}: busy {:.2} ms, idle {:.2} ms",
            m.busy_ms[d], m.idle_ms[d]
        );
    }
}

fn print_compare(c: &Compare) {
    if c.one_device_measured {
        println!(
            "one device ({}), same work: {:.2} ms measured; speedup {:.2}",
            c.one_device, c.one_device_ms, c.speedup
        );
    } else if c.one_device_ms.is_nan() {
        println!(
            "one Gpu, same work: not estimated under --tp (a tensor-parallel group's stage times are not one Gpu's); --compare measures it"
        );
    } else {
        println!(
            "one device ({}), same work: ~{:.2} ms (estimated from the stages' times; --compare measures it and says where the speedup goes); speedup ~{:.2}",
            c.one_device, c.one_device_ms, c.speedup
        );
    }
    if let Some(l) = &c.accounting {
        println!("where the speedup goes:");
        print!("{}", l.table());
    }
    if let Some(n) = &c.note {
        println!("{n}");
    }
}
