//! `wgpipe generate`: autoregressive generation pipelined across devices —
//! prefill, then token-by-token decode with each stage's KV cache on its
//! own device, sampled on the last stage, streamed and measured.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::cli::model_args::{check_output_path, place, ModelArgs, TP_HELP};
use crate::error::{Error, Result};
use crate::executor::decode::{generate, stop_at_eos, DecodeJob, DecodeMetrics, TokenSink};
use crate::executor::measure::{measure_timeline, Measurement};
use crate::executor::net::{device_groups, mpi_line, mpi_rank, mpi_summary, open_local};
use crate::executor::partition::Split;
use crate::io::{self, write_file};
use crate::sampling::SampleSettings;
use crate::tokenizer::{TextStream, Tokenizer};
use crate::trace::{chrome::to_chrome_json, svg::gantt_svg};

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A prompt as text (repeatable: one sequence each); needs the
    /// checkpoint's tokenizer.json.
    #[arg(long, conflicts_with = "input_ids")]
    pub prompt: Vec<String>,
    /// Prompts as token ids: a safetensors file with an integer tensor
    /// `input_ids` [B, T], one prompt per row.
    #[arg(long, value_name = "FILE")]
    pub input_ids: Option<PathBuf>,
    /// New tokens per sequence.
    #[arg(long, default_value_t = 20)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 (the default) is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Stop a sequence at the config's end-of-text token (the rest of its row is filled with it).
    #[arg(long)]
    pub stop_at_eos: bool,
    /// Pipeline devices: a count or a list like vulkan:0,gl:0.
    #[arg(long, default_value = "1")]
    pub devices: String,
    #[arg(long, default_value_t = 1, help = TP_HELP)]
    pub tp: usize,
    /// Layers per stage: auto (profile each layer kind at the decode
    /// step's shape), even, or counts like 7,5.
    #[arg(long, default_value = "auto")]
    pub split: Split,
    /// Groups of sequences in flight (default: one per device, at most one per prompt).
    #[arg(long)]
    pub groups: Option<usize>,
    /// Write `output_ids` [B, T + N] int64 (prompt included; shorter prompts'
    /// rows are padded at the end with the end-of-text token).
    #[arg(long, value_name = "FILE")]
    pub ids_out: Option<PathBuf>,
    /// Write the measured timeline as Chrome trace-event JSON.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Write the measured timeline as an SVG Gantt chart.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Print the sequences and the serving metrics as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Sequence {
    prompt_ids: Vec<u32>,
    ids: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

#[derive(Serialize)]
struct Report {
    sequences: Vec<Sequence>,
    #[serde(flatten)]
    metrics: DecodeMetrics,
    devices: usize,
    /// Gpus per pipeline stage (tensor-parallel degree).
    tp: usize,
    groups: usize,
    device_names: Vec<String>,
    max_new_tokens: usize,
    /// KV-cache bytes per Gpu (only the layers each stage holds; under
    /// tensor parallelism only each rank's heads), device × T + rank.
    kv_bytes: Vec<u64>,
    /// Weight bytes per Gpu, in the same order.
    weight_bytes: Vec<u64>,
    split: Vec<usize>,
    /// The decode schedule's bubble: measured, and simulated with the
    /// measured median pass per stage.
    bubble_measured: f64,
    bubble_simulated: f64,
    /// Steady state with equal stages: 1 − min(groups, P) / P.
    bubble_analytic: f64,
    wall_ms: f64,
    pipeline: Measurement,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    for p in [&args.ids_out, &args.trace, &args.svg] {
        check_output_path(p.as_deref())?;
    }
    let sampling = SampleSettings {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
    };
    sampling.check()?;
    // Under MPI with a checkpoint, only the config so far: the tensors are
    // read once the split says which stage this rank holds.
    let mut w = args.model.load_for_rank()?;
    let cfg = &w.config().clone();
    let tokenizer = match &args.model.checkpoint {
        Some(dir) => Tokenizer::load(dir)?,
        None => None,
    };
    let prompts: Vec<Vec<u32>> = match (&args.input_ids, args.prompt.is_empty()) {
        (Some(path), _) => {
            let t = io::read_input_ids(path)?;
            t.ids.chunks(t.seq.max(1)).map(<[u32]>::to_vec).collect()
        }
        (None, false) => {
            let tok = tokenizer.as_ref().ok_or_else(|| {
                Error::Input(match &args.model.checkpoint {
                    Some(dir) => format!(
                        "{} has no tokenizer.json, so --prompt text cannot be tokenized; give the prompts as ids with --input-ids",
                        dir.display()
                    ),
                    None => "--prompt text needs a tokenizer: give --checkpoint DIR with a tokenizer.json, or the prompts as ids with --input-ids".into(),
                })
            })?;
            args.prompt
                .iter()
                .map(|p| tok.encode(p))
                .collect::<Result<_>>()?
        }
        (None, true) => {
            return Err(Error::Input(
                "no prompt: give --prompt TEXT (repeatable) or --input-ids FILE".into(),
            ))
        }
    };
    let placement = place(&args.devices, args.tp, cfg)?;
    let p = placement.devices();
    let groups_n = args.groups.unwrap_or(p.min(prompts.len()));
    let job = DecodeJob {
        prompts,
        max_new_tokens: args.max_new_tokens,
        groups: groups_n,
        sampling,
        seed: args.model.seed,
        keep_logits: false,
    };
    // Refuse bad prompts before opening devices or profiling.
    let layout = crate::executor::decode::Layout::new(&job, cfg.n_positions, cfg.vocab_size)?;
    let gpus = open_local(&placement, &args.devices)?;
    let groups = device_groups(&gpus, p)?;
    let schedule = crate::schedule::Schedule::decode(p, groups_n, args.max_new_tokens)?;
    let chosen = w.resolve_split(&args.split, &groups, &schedule, layout.per, 1)?;
    if !args.json {
        eprintln!("{}", chosen.describe());
    }

    // One prompt: stream its text (or ids) as the tokens come back. The
    // device threads hand each token to a channel; this thread prints.
    // (Not under MPI: the tokens come back on the last rank, rank 0 prints.)
    let streaming = !args.json && job.prompts.len() == 1 && mpi_rank().is_none();
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let sink: Option<TokenSink> = streaming.then(|| {
        let tx = Mutex::new(tx);
        Arc::new(move |_seq: usize, id: u32, _step: usize| {
            let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(id);
        }) as TokenSink
    });
    let gen = std::thread::scope(|scope| {
        let worker =
            scope.spawn(|| generate(&groups, w.weights(), &job, Some(&chosen.split), sink));
        if streaming {
            print_stream(tokenizer.as_ref(), &job.prompts[0], rx);
        }
        worker
            .join()
            .unwrap_or_else(|_| Err(Error::Other("the generation thread panicked".into())))
    })?;
    let reads = w.checkpoint_reads();
    let mut ids = gen.ids.clone();
    let lens: Vec<usize> = job.prompts.iter().map(Vec::len).collect();
    let eos = args.model.eos_token_id(cfg)?;
    if args.stop_at_eos {
        stop_at_eos(&mut ids, &lens, eos);
    }
    let metrics = gen.metrics();
    let n_new = job.prompts.len() * args.max_new_tokens;
    let pipeline = measure_timeline(
        &gen.schedule,
        &gen.timeline,
        gen.wall_s,
        &gen.transfers,
        n_new,
    )?;

    if let Some(path) = &args.ids_out {
        let width = ids.iter().map(Vec::len).max().unwrap_or(0);
        let padded: Vec<Vec<u32>> = ids
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.resize(width, eos);
                r
            })
            .collect();
        io::write_output_ids(path, &padded)?;
    }
    if let Some(path) = &args.trace {
        let json = serde_json::to_string(&to_chrome_json(&gen.timeline)).expect("trace serializes");
        write_file(path, json.as_bytes())?;
    }
    if let Some(path) = &args.svg {
        let title = format!(
            "decode — measured, P={p}, {groups_n} groups, {} new tokens",
            args.max_new_tokens
        );
        write_file(path, gantt_svg(&gen.timeline, &title).as_bytes())?;
    }
    let texts: Vec<Option<String>> = ids
        .iter()
        .map(|r| tokenizer.as_ref().map(|t| t.decode(r)).transpose())
        .collect::<Result<_>>()?;
    let report = Report {
        sequences: job
            .prompts
            .iter()
            .zip(&ids)
            .zip(texts)
            .map(|((prompt, ids), text)| Sequence {
                prompt_ids: prompt.clone(),
                ids: ids.clone(),
                text,
            })
            .collect(),
        metrics,
        devices: p,
        tp: args.tp,
        groups: groups_n,
        device_names: gen.timeline.device_names.clone(),
        max_new_tokens: args.max_new_tokens,
        kv_bytes: gen.kv_bytes.clone(),
        weight_bytes: gen.weight_bytes.clone(),
        split: chosen.split.clone(),
        bubble_measured: pipeline.bubble_measured,
        bubble_simulated: pipeline.bubble_simulated,
        bubble_analytic: 1.0 - groups_n.min(p) as f64 / p as f64,
        wall_ms: gen.wall_s * 1e3,
        pipeline,
    };
    if args.json {
        let mut v = serde_json::to_value(&report).expect("report serializes");
        if let Some(mut m) = mpi_summary() {
            if let Some(r) = &reads {
                r.add_to(&mut m);
            }
            v["mpi"] = m;
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    if let Some(line) = mpi_line() {
        eprintln!("{line}");
    }
    if let Some(r) = &reads {
        eprintln!("{}", r.line());
    }
    if !streaming {
        for (i, s) in report.sequences.iter().enumerate() {
            match &s.text {
                Some(t) => println!("[{i}] {t}"),
                None => println!("[{i}] {:?}", s.ids),
            }
        }
    }
    let m = &report.metrics;
    let stages = match args.tp {
        1 => format!("{p} device(s)"),
        tp => format!("{p} stage(s) of {tp} tensor-parallel Gpus"),
    };
    eprintln!(
        "{} sequences x {} new tokens on {stages}, {groups_n} group(s) in flight: TTFT {:.1} ms, TPOT {:.1} ms, ITL p50 {:.1} / p99 {:.1} ms, {:.1} tokens/s; decode bubble measured {:.1}% (simulated {:.1}%, steady-state {:.1}%); KV cache per Gpu {}",
        report.sequences.len(),
        args.max_new_tokens,
        m.ttft_ms,
        m.tpot_ms,
        m.itl_ms_p50,
        m.itl_ms_p99,
        m.tokens_per_s,
        100.0 * report.bubble_measured,
        100.0 * report.bubble_simulated,
        100.0 * report.bubble_analytic,
        report
            .kv_bytes
            .iter()
            .map(|b| format!("{:.2} MB", *b as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    Ok(())
}

/// Print the prompt, then each token's text as it arrives (its id without
/// a tokenizer), until the generation drops its end of the channel.
fn print_stream(tokenizer: Option<&Tokenizer>, prompt: &[u32], rx: std::sync::mpsc::Receiver<u32>) {
    let mut out = std::io::stdout();
    let Some(tok) = tokenizer else {
        for id in rx {
            let _ = write!(out, "{id} ");
            let _ = out.flush();
        }
        let _ = writeln!(out);
        return;
    };
    let mut stream = TextStream::new(tok);
    let mut text = String::new();
    for &id in prompt {
        text += &stream.push(id).unwrap_or_default();
    }
    let _ = write!(out, "{text}");
    for id in rx {
        let _ = write!(out, "{}", stream.push(id).unwrap_or_default());
        let _ = out.flush();
    }
    let _ = writeln!(out, "{}", stream.finish().unwrap_or_default());
}
