//! The command line, a thin shell over the library: each subcommand parses
//! its flags, builds a [`wgpipe::Pipeline`] (or a bench), calls it, and
//! prints the report it returns or writes it to the files asked for.
//! Flags shared by several commands are here, one `clap` struct each.

pub mod adapters;
pub mod bench;
pub mod forward;
pub mod generate;
pub mod plan;
pub mod run;
pub mod serve;
pub mod soak;
pub mod train;

use std::path::{Path, PathBuf};

pub use wgpipe::trace::axis::duration;
use wgpipe::{io, Cluster, Error, Gpt2Config, ModelSource, Result, Split, TokenBatch};

/// Help for every command's `--tp`.
pub const TP_HELP: &str = "Tensor-parallel degree T: each pipeline stage spans T devices (Megatron's split: attention by heads, the MLP by columns then rows, the vocabulary for the embedding and head; two all-reduces per block). --devices then names P x T Gpus, stage-major: --tp 4 --devices 8 is 4-way TP x 2-way PP";

/// Help for every command's `--split`.
pub const SPLIT_HELP: &str = "Layers per stage: `auto` profiles every layer kind on every device and takes the split with the shortest predicted makespan; `even`; or a count per stage (devices x virtual), e.g. 7,5";

use wgpipe::device::DtypeChoice;

/// Which weights.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hugging Face GPT-2 checkpoint directory (config.json + model.safetensors).
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    pub checkpoint: Option<PathBuf>,
    /// Built-in model size with seeded random weights (tiny, small-test, gpt2, gpt2-medium, …).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Seed for the random weights and random input ids.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Storage type of weights, activations, KV cache and hops on the devices: f32, f16 (refused on an adapter without shader-f16, and by `train`), or auto: the checkpoint's — a bf16/f16 file runs in f16 on adapters with shader-f16 and in f32 on the others, an f32 file (or a built-in model) in f32. Kernels accumulate in f32 either way.
    #[arg(long, default_value = "auto", value_name = "f32|f16|auto")]
    pub dtype: DtypeChoice,
}

impl ModelArgs {
    pub fn source(&self) -> ModelSource {
        match &self.checkpoint {
            Some(dir) => ModelSource::Checkpoint(dir.clone()),
            None => ModelSource::Preset {
                name: self.model.clone(),
                seed: self.seed,
            },
        }
    }

    /// The model's config, read before any device opens.
    pub fn config(&self) -> Result<Gpt2Config> {
        self.source().config()
    }
}

/// Where the pipeline runs: its devices, tensor parallelism and split.
#[derive(clap::Args, Debug, Clone)]
pub struct LayoutArgs {
    #[arg(long, default_value_t = 1, help = TP_HELP)]
    pub tp: usize,
    #[arg(long, default_value = "auto", help = SPLIT_HELP)]
    pub split: Split,
}

/// The input batch of `forward` and `run`.
#[derive(clap::Args, Debug, Clone)]
pub struct InputArgs {
    /// Input token ids: a safetensors file with an integer tensor `input_ids` [batch, seq] (int64 or int32).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["batch", "seq"])]
    pub input_ids: Option<PathBuf>,
    /// Sequences of random input ids (without --input-ids).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Tokens per random sequence (without --input-ids); default: the model's n_positions, at most 64.
    #[arg(long)]
    pub seq: Option<usize>,
    /// Write the logits [batch, seq, vocab] as an f32 safetensors tensor `logits`.
    #[arg(long, value_name = "FILE")]
    pub logits_out: Option<PathBuf>,
}

impl InputArgs {
    /// The batch (`batch` sequences of random ids without a file), checked
    /// against the model.
    pub fn tokens(&self, cfg: &Gpt2Config, seed: u64, batch: usize) -> Result<TokenBatch> {
        let tokens = match &self.input_ids {
            Some(path) => io::read_input_ids(path)?,
            None => io::random_input_ids(
                self.batch.unwrap_or(batch),
                self.seq.unwrap_or(cfg.n_positions.min(64)),
                cfg.vocab_size,
                seed,
            ),
        };
        io::check_input(cfg, &tokens)?;
        Ok(tokens)
    }
}

/// A run's timeline, written where asked, and the report as JSON.
#[derive(clap::Args, Debug, Clone)]
pub struct TimelineArgs {
    /// Write the measured timeline as Chrome trace-event JSON (opens in Perfetto).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Write the measured timeline as an SVG Gantt chart.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl TimelineArgs {
    /// Refuse output paths we would not write, before any work.
    pub fn check(&self, cx: &Context) -> Result<()> {
        cx.check_outputs(&[&self.trace, &self.svg])
    }

    /// Write the trace and the Gantt chart of `timeline`.
    pub fn write(
        &self,
        cx: &Context,
        timeline: &wgpipe::trace::Timeline,
        title: &str,
    ) -> Result<()> {
        if let Some(p) = &self.trace {
            cx.write(
                p,
                wgpipe::trace::chrome::to_chrome_json(timeline)
                    .to_string()
                    .as_bytes(),
            )?;
        }
        if let Some(p) = &self.svg {
            cx.write(p, wgpipe::trace::svg::gantt_svg(timeline, title).as_bytes())?;
        }
        Ok(())
    }
}

/// A table's outputs: printed as JSON, written as CSV, drawn as SVG.
#[derive(clap::Args, Debug, Clone)]
pub struct TableArgs {
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the rows as CSV.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write a chart of the rows as SVG.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

impl TableArgs {
    pub fn check(&self, cx: &Context) -> Result<()> {
        cx.check_outputs(&[&self.csv, &self.svg])
    }

    /// Print `report` as JSON or `text`, then write the CSV of `rows` and
    /// the chart `svg()` draws, where asked.
    pub fn emit<R: serde::Serialize, T: serde::Serialize>(
        &self,
        cx: &Context,
        report: &R,
        text: impl FnOnce() -> String,
        rows: &[T],
        svg: impl FnOnce() -> String,
    ) -> Result<()> {
        match self.json {
            true => cx.print_json(report),
            false => cx.print(&text()),
        }
        if let Some(p) = &self.csv {
            cx.write(p, io::csv_rows(rows)?.as_bytes())?;
        }
        if let Some(p) = &self.svg {
            cx.write(p, svg().as_bytes())?;
        }
        Ok(())
    }
}

/// What every command runs in: the processes it is spread over. Under MPI
/// rank 0 prints and writes; the other ranks compute alongside.
pub struct Context {
    pub cluster: Cluster,
}

impl Context {
    fn root(&self) -> bool {
        self.cluster.is_root()
    }

    /// Print `text` (rank 0 only), as is.
    pub fn print(&self, text: &str) {
        if self.root() {
            print!("{text}");
        }
    }

    /// Print `report` as pretty JSON (rank 0 only).
    pub fn print_json<R: serde::Serialize>(&self, report: &R) {
        if self.root() {
            match serde_json::to_string_pretty(report) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("error: the report does not serialise: {e}"),
            }
        }
    }

    /// Write `bytes` to `path` atomically (rank 0 only).
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        match self.root() {
            true => io::write_file(path, bytes),
            false => Ok(()),
        }
    }

    /// Each output path must name a file in an existing directory (checked
    /// where the files are written: rank 0).
    pub fn check_outputs(&self, paths: &[&Option<PathBuf>]) -> Result<()> {
        if !self.root() {
            return Ok(());
        }
        paths
            .iter()
            .filter_map(|p| p.as_deref())
            .try_for_each(check_output_path)
    }
}

/// An output file must not be a directory, and its directory must exist.
pub fn check_output_path(p: &Path) -> Result<()> {
    if p.is_dir() {
        return Err(Error::Input(format!(
            "{} is a directory; give a file name to write",
            p.display()
        )));
    }
    match p.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) if !d.is_dir() => Err(Error::Input(format!(
            "cannot write {}: directory {} does not exist",
            p.display(),
            d.display()
        ))),
        _ => Ok(()),
    }
}

/// `--tp` must be at least 1.
pub fn check_tp(tp: usize) -> Result<()> {
    match tp {
        0 => Err(Error::Input("--tp must be at least 1".into())),
        _ => Ok(()),
    }
}

/// A list of numbers as text, `a / b / c`.
pub fn joined<T: std::fmt::Display>(v: &[T], sep: &str) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(sep)
}
