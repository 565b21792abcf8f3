//! The library's entry point: a [`Pipeline`] is built once — devices opened,
//! the split resolved, every stage's weights uploaded and kept resident —
//! and then called as often as a caller likes: [`Pipeline::forward`],
//! [`Pipeline::generate`] (and its streaming form), [`Pipeline::trainer`],
//! [`Pipeline::compare`]. Each call returns a typed report; nothing here
//! prints, and nothing writes a file unless asked to ([`Trainer::save`]).
//!
//! ```no_run
//! use wgpipe::{GenerateOptions, ModelSource, Pipeline, PipelineConfig};
//!
//! let pipeline = Pipeline::new(PipelineConfig {
//!     devices: "2".into(),
//!     ..PipelineConfig::new(ModelSource::Checkpoint("tests/data/tiny-gpt2-gen".into()))
//! })?;
//! let out = pipeline.generate(&["The pipeline".into()], &GenerateOptions::default())?;
//! println!("{}", out.sequences[0].text.as_deref().unwrap_or_default());
//! # Ok::<(), wgpipe::Error>(())
//! ```
//!
//! Under MPI (`cluster: Cluster::Mpi(…)`) every rank builds the same
//! pipeline and makes the same calls in the same order; each rank holds its
//! own Gpu's stages, and every rank gets every report.

mod compare;
mod forward;
mod generate;
mod load;
pub mod serve;
pub mod state;
mod train;

pub use crate::analysis::measure::Measurement;
pub use crate::analysis::serving::DecodeMetrics;
pub use crate::analysis::split::Chosen;
pub use train::{check_save_dir, Pass};

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

pub use compare::Compare;
pub use forward::ForwardReport;
pub use generate::{GenerateOptions, Generation, Prompt, Sequence, Token};
pub use load::CheckpointReads;
pub use state::TrainState;
pub use train::{StepReport, TrainConfig, Trainer};

use crate::device::{place_devices, DtypeChoice, Gpu, Placement, Precision};
use crate::error::{Error, Result};
use crate::executor::{Cluster, DeviceGroup, MpiSummary};
use crate::model::checkpoint::eos_token_id;
use crate::model::gpu::StageUpload;
use crate::model::partition::{partition, Split};
use crate::model::{Gpt2Config, Gpt2Weights, PartialWeights};
use crate::schedule::{Schedule, ScheduleKind};
use crate::tokenizer::Tokenizer;
use crate::workload::resident::{DtypeRequest, Resident};
use load::HostWeights;

/// Where a pipeline's weights come from.
#[derive(Clone, Debug)]
pub enum ModelSource {
    /// A Hugging Face `save_pretrained` directory: `config.json` and
    /// `model.safetensors`, and `tokenizer.json` when present.
    Checkpoint(PathBuf),
    /// A built-in shape (`tiny`, `small-test`, `gpt2`, `gpt2-medium`, …)
    /// with seeded random weights.
    Preset { name: String, seed: u64 },
    /// Any shape, with seeded random weights.
    Config { config: Gpt2Config, seed: u64 },
    /// Weights already in memory (read back from a trainer, say).
    Weights(Box<Gpt2Weights>),
}

impl ModelSource {
    /// The model's shape, read without loading any weights (a checkpoint's
    /// `config.json`), to check inputs before devices open.
    pub fn config(&self) -> Result<Gpt2Config> {
        match self {
            ModelSource::Checkpoint(dir) => Gpt2Config::from_json_file(&dir.join("config.json")),
            ModelSource::Preset { name, .. } => Gpt2Config::named(name),
            ModelSource::Config { config, .. } => Ok(config.clone()),
            ModelSource::Weights(w) => Ok(w.config.clone()),
        }
    }
}

/// The work the pipeline's split is chosen for: `--split auto` profiles
/// each layer kind at this shape and predicts this schedule's makespan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Forward passes of microbatches of `sequences` × `tokens`.
    Forward { sequences: usize, tokens: usize },
    /// Training steps on microbatches of `sequences` × `tokens` (a layer's
    /// backward priced at twice its forward).
    Train { sequences: usize, tokens: usize },
    /// Decoding `groups` groups of `sequences` sequences for `steps` tokens.
    Decode {
        sequences: usize,
        groups: usize,
        steps: usize,
    },
}

/// How a [`Pipeline`] is laid out. [`PipelineConfig::new`] gives the
/// defaults: one device, no tensor parallelism, `--split auto`, GPipe.
#[derive(Clone)]
pub struct PipelineConfig {
    pub model: ModelSource,
    /// Pipeline devices: a count (`"2"`: one per adapter, cycling) or a list
    /// (`"vulkan:0,gl:0"`); with `tp` T, P × T Gpus, stage-major.
    pub devices: String,
    /// Tensor-parallel degree: each stage spans `tp` Gpus.
    pub tp: usize,
    pub split: Split,
    pub schedule: ScheduleKind,
    /// Chunks (virtual stages) per device, for interleaved schedules.
    pub virtual_stages: usize,
    /// Microbatches per batch; `None`: one per sequence.
    pub microbatches: Option<usize>,
    /// The processes the devices are spread over.
    pub cluster: Cluster,
    /// What the split is chosen for.
    pub workload: Workload,
    /// The storage type on the devices (`--dtype`): `auto` follows the
    /// checkpoint (see [`crate::workload::resident::resolve_precision`]).
    pub dtype: DtypeChoice,
}

impl PipelineConfig {
    pub fn new(model: ModelSource) -> PipelineConfig {
        PipelineConfig {
            model,
            devices: "1".into(),
            tp: 1,
            split: Split::Auto,
            schedule: ScheduleKind::Gpipe,
            virtual_stages: 1,
            microbatches: None,
            cluster: Cluster::Local,
            workload: Workload::Forward {
                sequences: 1,
                tokens: 64,
            },
            dtype: DtypeChoice::Auto,
        }
    }
}

/// A model laid out across devices, its weights resident on them (see the
/// module doc). Calls run one at a time: a second caller waits for the first.
pub struct Pipeline {
    cluster: Cluster,
    host: HostWeights,
    tokenizer: Option<Tokenizer>,
    /// Every Gpu this process drives, by schedule device.
    gpus: Vec<Vec<Gpu>>,
    devices: usize,
    tp: usize,
    schedule: ScheduleKind,
    virtual_stages: usize,
    microbatches: Option<usize>,
    split: Chosen,
    device_names: Vec<String>,
    dtype: DtypeChoice,
    /// The stages' weights on their Gpus: uploaded when the pipeline is
    /// built (a training pipeline's trainer holds its own, so it uploads
    /// these only when first asked to run inference).
    resident: Mutex<Option<Arc<Resident>>>,
    /// Held by each call: the devices run one call at a time.
    busy: Mutex<()>,
}

impl Pipeline {
    /// Open the devices, resolve the split and upload every stage's weights.
    /// Every check that needs no device (the model's shape against `tp`,
    /// the schedule) comes first.
    pub fn new(config: PipelineConfig) -> Result<Pipeline> {
        let c = &config;
        if c.tp == 0 || c.virtual_stages == 0 || c.microbatches == Some(0) {
            return Err(Error::Input(
                "tp, virtual stages and microbatches must be at least 1".into(),
            ));
        }
        if matches!(c.workload, Workload::Train { .. }) && c.dtype == DtypeChoice::F16 {
            return Err(Error::Input(
                "--dtype f16 does not train: wgpipe trains in f32 (weights, activations, \
                 gradients and optimizer state; no loss scaling yet). Use --dtype f32 or auto \
                 (a 16-bit checkpoint is widened to f32 for training)"
                    .into(),
            ));
        }
        let mut host = HostWeights::load(&c.model, &c.cluster)?;
        let cfg = host.config().clone();
        let tokenizer = match &host.dir {
            Some(dir) => Tokenizer::load(dir)?,
            None => None,
        };
        let placement = place(&c.devices, c.tp, &cfg)?;
        let p = placement.devices();
        let (schedule, shape) = split_schedule(c, p, &cfg)?;
        let gpus = c.cluster.open_local(&placement, &c.devices)?;
        let groups = c.cluster.device_groups(&gpus, p)?;
        let split = host.resolve_split(&c.split, &groups, &c.cluster, &schedule, shape)?;
        let device_names = c.cluster.device_labels(&groups)?;
        drop(groups);
        let pipeline = Pipeline {
            cluster: c.cluster.clone(),
            host,
            tokenizer,
            gpus,
            devices: p,
            tp: c.tp,
            schedule: c.schedule,
            virtual_stages: c.virtual_stages,
            microbatches: c.microbatches,
            split,
            device_names,
            dtype: c.dtype,
            resident: Mutex::new(None),
            busy: Mutex::new(()),
        };
        if !matches!(c.workload, Workload::Train { .. }) {
            pipeline.resident()?;
        }
        Ok(pipeline)
    }

    /// The model's shape.
    pub fn config(&self) -> &Gpt2Config {
        self.host.config()
    }

    /// The host copy of the weights (under MPI with a checkpoint, only this
    /// rank's stages').
    pub fn weights(&self) -> &PartialWeights {
        self.host.weights()
    }

    /// The checkpoint's tokenizer, when it has a `tokenizer.json`.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The end-of-text token: the checkpoint's `eos_token_id` (an error when
    /// it names no token of the vocabulary), else the vocabulary's last id.
    pub fn eos_token_id(&self) -> Result<u32> {
        match &self.host.dir {
            Some(dir) => eos_token_id(dir, self.config()),
            None => Ok((self.config().vocab_size - 1) as u32),
        }
    }

    /// How each schedule device stores its stages (`--dtype` resolved), and
    /// a line for each device that stores f32 where f16 was wanted.
    pub fn precision(&self) -> Result<(Vec<Precision>, Vec<String>)> {
        let r = self.resident()?;
        Ok((r.precision.clone(), r.precision_notes.clone()))
    }

    /// Layers per stage, and for `--split auto` how they were chosen.
    pub fn split(&self) -> &Chosen {
        &self.split
    }

    /// Schedule devices P.
    pub fn devices(&self) -> usize {
        self.devices
    }

    /// Gpus per schedule device (the tensor-parallel degree T).
    pub fn tp(&self) -> usize {
        self.tp
    }

    /// Each schedule device's Gpus by name (`vulkan:0 (llvmpipe …)`).
    pub fn device_names(&self) -> &[String] {
        &self.device_names
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The schedule devices' Gpus held by this process.
    pub fn gpus(&self) -> impl Iterator<Item = &Gpu> {
        self.gpus.iter().flatten()
    }

    /// How many stages' weights were uploaded to each of this process's
    /// Gpus since it was opened: one per stage the Gpu holds, however many
    /// calls the pipeline has answered.
    pub fn weight_uploads(&self) -> Vec<usize> {
        self.gpus().map(StageUpload::count).collect()
    }

    /// Under MPI: the ranks, their clocks, and what each read of the
    /// checkpoint. Every rank must call it (it gathers).
    pub fn mpi_report(&self) -> Option<MpiReport> {
        let summary = self.cluster.summary()?;
        Some(MpiReport {
            summary,
            checkpoint: self.host.checkpoint_reads(&self.cluster),
        })
    }

    fn groups(&self) -> Result<Vec<DeviceGroup<'_>>> {
        self.cluster.device_groups(&self.gpus, self.devices)
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stages' weights on their Gpus, uploaded on first use.
    fn resident(&self) -> Result<Arc<Resident>> {
        let mut slot = self.resident.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        let stages = self.devices * self.virtual_stages;
        let parts = partition(self.config().n_layer, stages, Some(&self.split.split))?;
        let dtype = DtypeRequest {
            choice: self.dtype,
            stored: self.host.stored,
        };
        let r = Arc::new(Resident::upload_as(
            &self.groups()?,
            &self.cluster,
            self.weights(),
            parts,
            dtype,
        )?);
        *slot = Some(r.clone());
        Ok(r)
    }

    /// Microbatches for a batch of `batch` sequences.
    fn microbatches_for(&self, batch: usize) -> usize {
        self.microbatches.unwrap_or(batch)
    }
}

/// A pipeline's `mpi` report: the ranks and clocks, and the checkpoint bytes
/// each rank read.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MpiReport {
    #[serde(flatten)]
    pub summary: MpiSummary,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointReads>,
}

/// The ranks' clock line, then the checkpoint bytes each read.
impl std::fmt::Display for MpiReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.summary.line())?;
        if let Some(c) = &self.checkpoint {
            write!(f, "\n{}", c.line())?;
        }
        Ok(())
    }
}

/// The schedule and profile shape the split is chosen for.
fn split_schedule(
    c: &PipelineConfig,
    p: usize,
    cfg: &Gpt2Config,
) -> Result<(Schedule, (usize, usize))> {
    let m = c.microbatches.unwrap_or(4);
    let tokens = |t: usize| t.clamp(1, cfg.n_positions);
    Ok(match c.workload {
        Workload::Forward {
            sequences,
            tokens: t,
        } => (
            Schedule::for_inference(c.schedule, p, m, c.virtual_stages)?,
            (sequences.max(1), tokens(t)),
        ),
        Workload::Train {
            sequences,
            tokens: t,
        } => (
            Schedule::generate(c.schedule, p, m, c.virtual_stages, false)?,
            (sequences.max(1), tokens(t)),
        ),
        Workload::Decode {
            sequences,
            groups,
            steps,
        } => {
            if c.virtual_stages != 1 {
                return Err(Error::Input(format!(
                    "decoding runs one stage per device: virtual stages {} is not supported",
                    c.virtual_stages
                )));
            }
            (Schedule::decode(p, groups, steps)?, (sequences.max(1), 1))
        }
    })
}

/// `devices` placed into groups of `tp` Gpus, after checking that the model
/// splits T ways (before any device is opened).
pub fn place(devices: &str, tp: usize, cfg: &Gpt2Config) -> Result<Placement> {
    crate::model::shard::check_degree(cfg, tp)?;
    place_devices(devices, tp).map_err(|e| match e {
        Error::Input(msg) if tp > 1 && msg.contains("groups of") => Error::Input(format!(
            "{msg}: with --tp {tp}, --devices must name P x {tp} Gpus (a count or a list)"
        )),
        e => e,
    })
}
