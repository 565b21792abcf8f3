//! `wgpipe generate`: autoregressive generation pipelined across devices —
//! prefill, then token-by-token decode with each stage's KV cache on its
//! own device, sampled on the last stage, streamed and measured.

use std::io::Write;
use std::path::PathBuf;

use wgpipe::pipeline::{Generation, MpiReport, Prompt, Token};
use wgpipe::{Error, GenerateOptions, Pipeline, PipelineConfig, Result, SampleSettings, Workload};

use super::{check_tp, duration, joined, Context, LayoutArgs, ModelArgs, TimelineArgs};

#[derive(clap::Args, Debug, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub on: DecodeOn,
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
    /// Write `output_ids` [B, T + N] int64 (prompt included; shorter prompts'
    /// rows are padded at the end with the end-of-text token).
    #[arg(long, value_name = "FILE")]
    pub ids_out: Option<PathBuf>,
    #[command(flatten)]
    pub out: TimelineArgs,
}

/// The model and where it decodes: the flags `generate` and `serve` share.
#[derive(clap::Args, Debug, Clone)]
pub struct DecodeOn {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Pipeline devices: a count or a list like vulkan:0,gl:0.
    #[arg(long, default_value = "1")]
    pub devices: String,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Groups of sequences in flight (default: one per device; generate: at most one per prompt).
    #[arg(long)]
    pub groups: Option<usize>,
}

impl DecodeOn {
    /// Open the devices and upload the weights, the split chosen for
    /// decoding `sequences` sequences in `groups` groups for `steps` steps.
    pub fn pipeline(
        &self,
        cx: &Context,
        sequences: usize,
        groups: usize,
        steps: usize,
    ) -> Result<Pipeline> {
        check_tp(self.layout.tp)?;
        Pipeline::new(PipelineConfig {
            devices: self.devices.clone(),
            tp: self.layout.tp,
            split: self.layout.split.clone(),
            cluster: cx.cluster.clone(),
            dtype: self.model.dtype,
            workload: Workload::Decode {
                sequences,
                groups,
                steps,
            },
            ..PipelineConfig::new(self.model.source())
        })
    }

    /// Pipeline devices P, read before any device opens.
    pub fn stages(&self) -> Result<usize> {
        let cfg = self.model.config()?;
        Ok(wgpipe::pipeline::place(&self.devices, self.layout.tp, &cfg)?.devices())
    }
}

/// What `generate --json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    gen: &'a Generation,
    #[serde(skip_serializing_if = "Option::is_none")]
    mpi: Option<MpiReport>,
}

impl GenerateArgs {
    /// The prompts, checked as far as they can be before the model loads.
    fn prompts(&self) -> Result<Vec<Prompt>> {
        if let Some(path) = &self.input_ids {
            let t = wgpipe::io::read_input_ids(path)?;
            return Ok(t
                .ids
                .chunks(t.seq.max(1))
                .map(|r| Prompt::Ids(r.to_vec()))
                .collect());
        }
        if self.prompt.is_empty() {
            return Err(Error::Input(
                "no prompt: give --prompt TEXT (repeatable) or --input-ids FILE".into(),
            ));
        }
        match &self.on.model.checkpoint {
            None => return Err(Error::Input("--prompt text needs a tokenizer: give --checkpoint DIR with a tokenizer.json, or the prompts as ids with --input-ids".into())),
            Some(dir) if !dir.join("tokenizer.json").is_file() => {
                return Err(Error::Input(format!(
                    "{} has no tokenizer.json, so --prompt text cannot be tokenized; give the prompts as ids with --input-ids",
                    dir.display()
                )))
            }
            Some(_) => {}
        }
        Ok(self
            .prompt
            .iter()
            .map(|p| Prompt::Text(p.clone()))
            .collect())
    }

    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: self.max_new_tokens,
            sampling: SampleSettings {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
            },
            seed: self.on.model.seed,
            groups: self.on.groups,
            stop_at_eos: self.stop_at_eos,
            keep_logits: false,
        }
    }
}

pub fn run(args: &GenerateArgs, cx: &Context) -> Result<()> {
    check_tp(args.on.layout.tp)?;
    cx.check_outputs(&[&args.ids_out])?;
    args.out.check(cx)?;
    let opts = args.options();
    opts.sampling.check()?;
    let prompts = args.prompts()?;
    let p = args.on.stages()?;
    let groups = opts.groups.unwrap_or(p.min(prompts.len()));
    let sequences = prompts.len().div_ceil(groups.max(1));
    let pipeline = args
        .on
        .pipeline(cx, sequences, groups, args.max_new_tokens)?;
    if !args.out.json && cx.cluster.is_root() {
        eprintln!("{}", pipeline.split());
    }
    // One prompt streams its text as the tokens come back.
    let gen = match !args.out.json && prompts.len() == 1 && cx.cluster.is_root() {
        true => stream(&pipeline, &prompts, &opts)?,
        false => pipeline.generate(&prompts, &opts)?,
    };
    write_outputs(args, cx, &pipeline, &gen)?;
    let mpi = pipeline.mpi_report();
    if args.out.json {
        cx.print_json(&Report { gen: &gen, mpi });
    } else if cx.cluster.is_root() {
        print_summary(&gen, prompts.len() == 1, mpi.as_ref());
    }
    Ok(())
}

/// Generate, printing the prompt's text and then each token's as it comes.
fn stream(pipeline: &Pipeline, prompts: &[Prompt], opts: &GenerateOptions) -> Result<Generation> {
    let mut out = std::io::stdout();
    if let Some(tok) = pipeline.tokenizer() {
        let ids = match &prompts[0] {
            Prompt::Text(t) => tok.encode(t)?,
            Prompt::Ids(ids) => ids.clone(),
        };
        let _ = write!(out, "{}", tok.decode(&ids)?);
    }
    let gen = pipeline.generate_streaming(prompts, opts, |t: &Token| {
        let _ = match &t.text {
            Some(text) => write!(out, "{text}"),
            None => write!(out, "{} ", t.id),
        };
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    Ok(gen)
}

/// `--ids-out` (rows padded with the end-of-text token), `--trace`, `--svg`.
fn write_outputs(args: &GenerateArgs, cx: &Context, p: &Pipeline, gen: &Generation) -> Result<()> {
    if let Some(path) = &args.ids_out {
        let eos = p.eos_token_id()?;
        let width = gen.sequences.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let rows: Vec<Vec<u32>> = (gen.sequences.iter())
            .map(|s| {
                let mut r = s.ids.clone();
                r.resize(width, eos);
                r
            })
            .collect();
        if cx.cluster.is_root() {
            wgpipe::io::write_output_ids(path, &rows)?;
        }
    }
    let title = format!(
        "decode — measured, P={}, {} groups, {} new tokens",
        gen.devices, gen.groups, gen.max_new_tokens
    );
    args.out.write(cx, &gen.timeline, &title)
}

/// The sequences (unless one streamed), then the serving figures on stderr.
fn print_summary(gen: &Generation, streamed: bool, mpi: Option<&MpiReport>) {
    if let Some(r) = mpi {
        eprintln!("{r}");
    }
    if !streamed {
        for (i, s) in gen.sequences.iter().enumerate() {
            match &s.text {
                Some(t) => println!("[{i}] {t}"),
                None => println!("[{i}] {:?}", s.ids),
            }
        }
    }
    let stages = match gen.tp {
        1 => format!("{} device(s)", gen.devices),
        tp => format!("{} stage(s) of {tp} tensor-parallel Gpus", gen.devices),
    };
    let kv: Vec<String> = (gen.kv_bytes.iter())
        .map(|b| format!("{:.2} MB", *b as f64 / 1e6))
        .collect();
    let m = &gen.metrics;
    eprintln!(
        "{} sequences x {} new tokens on {stages}, {} group(s) in flight: TTFT {}, TPOT {}, ITL p50 {} / p99 {}, {:.1} tokens/s; decode bubble measured {:.1}% (simulated {:.1}%, steady-state {:.1}%); KV cache per Gpu {}",
        gen.sequences.len(),
        gen.max_new_tokens,
        gen.groups,
        duration(m.ttft_ms * 1e3),
        duration(m.tpot_ms * 1e3),
        duration(m.itl_ms_p50 * 1e3),
        duration(m.itl_ms_p99 * 1e3),
        m.tokens_per_s,
        100.0 * gen.bubble_measured,
        100.0 * gen.bubble_simulated,
        100.0 * gen.bubble_analytic,
        joined(&kv, " / ")
    );
    let weights: Vec<String> = (gen.weight_bytes.iter())
        .map(|b| format!("{:.2} MB", *b as f64 / 1e6))
        .collect();
    let weights = format!("; weights per Gpu {}", joined(&weights, " / "));
    eprintln!(
        "{}",
        wgpipe::device::dtype::describe(&gen.precision, &weights, &gen.precision_notes)
    );
}
