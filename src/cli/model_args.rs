//! Flags shared by the commands that run the model: which weights, which
//! input tokens, where the logits go.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::executor::balance::{profile_parts, profiles, resolve_split, Chosen};
use crate::executor::net::mpi_rank;
use crate::executor::partition::{device_parts, partition, Split};
use crate::executor::DeviceGroup;
use crate::io::{self, TokenBatch};
use crate::model::checkpoint::{self, Checkpoint};
use crate::model::{Gpt2Config, Gpt2Weights, PartialWeights, TensorSet};
use crate::schedule::Schedule;

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
}

impl ModelArgs {
    pub fn load(&self) -> Result<Gpt2Weights> {
        match &self.checkpoint {
            Some(dir) => checkpoint::load_checkpoint(dir),
            None => Gpt2Weights::init(&Gpt2Config::named(&self.model)?, self.seed),
        }
    }

    /// The weights for `run`, `generate` and `train`: see [`RankWeights`].
    pub fn load_for_rank(&self) -> Result<RankWeights> {
        if let (Some(dir), Some(ranks)) = (&self.checkpoint, mpi_rank()) {
            let ckpt = Checkpoint::open(dir)?;
            return Ok(RankWeights {
                w: PartialWeights::empty(ckpt.config().clone()),
                ckpt: Some((ckpt, ranks)),
            });
        }
        // In-process every device is this process's, so it needs every
        // tensor. The seeded random models (`--model tiny` …) are made whole
        // on every rank too: the init draws the tensors from one stream in
        // order, so a rank could not make its own without drawing the rest,
        // and nothing is read from a file; what loading per rank saves is a
        // checkpoint's reading and host memory.
        Ok(RankWeights {
            w: self.load()?.into(),
            ckpt: None,
        })
    }

    /// The end-of-text token: the checkpoint's `eos_token_id` (config.json,
    /// else generation_config.json), else the last id of the vocabulary —
    /// where GPT-2 keeps `<|endoftext|>` (50256).
    pub fn eos_token_id(&self, cfg: &Gpt2Config) -> Result<u32> {
        let last = (cfg.vocab_size - 1) as u32;
        let Some(dir) = &self.checkpoint else {
            return Ok(last);
        };
        for file in ["config.json", "generation_config.json"] {
            let path = dir.join(file);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    path: path.clone(),
                    source,
                })?;
            match v.get("eos_token_id") {
                None | Some(serde_json::Value::Null) => continue,
                Some(id) => {
                    // A list names several; the first is the end-of-text token.
                    let first = id.as_array().and_then(|a| a.first()).unwrap_or(id);
                    return first
                        .as_u64()
                        .filter(|&x| x < cfg.vocab_size as u64)
                        .map(|x| x as u32)
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "{}: eos_token_id {id} is not a token id below vocab_size {}",
                                path.display(),
                                cfg.vocab_size
                            ))
                        });
                }
            }
        }
        Ok(last)
    }
}

/// The weights `run`, `generate` and `train` compute with. In-process, and for the
/// seeded random models, the whole model as [`ModelArgs::load`] makes it.
/// Under `--transport mpi` with `--checkpoint`: at first the config alone;
/// [`RankWeights::for_profile`] and [`RankWeights::for_split`] then read
/// from the file the tensors this rank's work needs, and no other bytes.
pub struct RankWeights {
    w: PartialWeights,
    /// Under MPI with a checkpoint: the open checkpoint, this rank and the
    /// number of ranks.
    ckpt: Option<(Checkpoint, (usize, usize))>,
}

impl RankWeights {
    pub fn config(&self) -> &Gpt2Config {
        self.w.config()
    }

    /// The tensors held: every one, or under MPI what this rank read.
    pub fn weights(&self) -> &PartialWeights {
        &self.w
    }

    /// `--split` resolved for `schedule` on `groups` (microbatches of
    /// `per` × `seq` tokens for the `auto` profile), with this process's
    /// tensors read for it: under MPI first what the profile needs, then
    /// this rank's stages ([`RankWeights::for_profile`],
    /// [`RankWeights::for_split`]).
    pub fn resolve_split(
        &mut self,
        split: &Split,
        groups: &[DeviceGroup],
        schedule: &Schedule,
        per: usize,
        seq: usize,
    ) -> Result<Chosen> {
        self.for_profile(split, schedule)?;
        let chosen = resolve_split(split, groups, &self.w, schedule, per, seq)?;
        self.for_split(&chosen.split, schedule)?;
        Ok(chosen)
    }

    /// Before [`crate::executor::balance::resolve_split`]: under MPI, read
    /// what its `--split auto` profile runs on every device (the embedding,
    /// block 0 and the head), when it profiles.
    fn for_profile(&mut self, split: &Split, schedule: &Schedule) -> Result<()> {
        let Some((ckpt, _)) = &mut self.ckpt else {
            return Ok(());
        };
        if profiles(split, ckpt.config().n_layer, schedule.stages()) {
            ckpt.load_into(&mut self.w, &profile_parts())?;
        }
        Ok(())
    }

    /// Once the split (layers per stage of `schedule`) is chosen: under MPI,
    /// read this rank's stages' tensors that are not here yet, and drop any
    /// others (those only the profile needed). Rank r is Gpu `r mod T` of
    /// schedule device d = `r / T` (T = ranks / devices, the `--tp`
    /// degree), which holds stages d, d+P, …; a tensor-parallel rank reads
    /// its device's whole stages and uploads its shard.
    fn for_split(&mut self, split: &[usize], schedule: &Schedule) -> Result<()> {
        let Some((ckpt, (rank, ranks))) = &mut self.ckpt else {
            return Ok(());
        };
        let cfg = ckpt.config().clone();
        let parts = partition(cfg.n_layer, schedule.stages(), Some(split))?;
        let tp = (*ranks / schedule.devices.max(1)).max(1);
        let mine = device_parts(&parts, schedule.devices, *rank / tp);
        ckpt.load_into(&mut self.w, &mine)?;
        self.w.retain(&TensorSet::of(&cfg, &mine)?);
        Ok(())
    }

    /// Under MPI with a checkpoint, for the report: every rank's tensor
    /// bytes read from the checkpoint, by rank, and the bytes of every
    /// tensor in the file. Every rank must call it (an all-gather).
    pub fn checkpoint_reads(&self) -> Option<CheckpointReads> {
        #[cfg(feature = "mpi")]
        if let (Some((ckpt, _)), Some(c)) = (&self.ckpt, crate::executor::mpi::cluster()) {
            return Some(CheckpointReads {
                checkpoint_bytes_read: c.all_gather_u64(ckpt.bytes_read()),
                checkpoint_tensor_bytes: ckpt.tensor_bytes(),
            });
        }
        None
    }
}

/// What the ranks read of the checkpoint (fields of the report's `mpi`).
#[derive(serde::Serialize, Clone, Debug)]
pub struct CheckpointReads {
    /// Tensor bytes each rank read, by rank.
    pub checkpoint_bytes_read: Vec<u64>,
    /// The bytes of every tensor in model.safetensors.
    pub checkpoint_tensor_bytes: u64,
}

impl CheckpointReads {
    /// Add the fields to the report's `mpi` object.
    pub fn add_to(&self, mpi: &mut serde_json::Value) {
        mpi["checkpoint_bytes_read"] = serde_json::json!(self.checkpoint_bytes_read);
        mpi["checkpoint_tensor_bytes"] = serde_json::json!(self.checkpoint_tensor_bytes);
    }

    /// One line for a text report.
    pub fn line(&self) -> String {
        let mb = |b: u64| format!("{:.2} MB", b as f64 / 1e6);
        let ranks: Vec<String> = (self.checkpoint_bytes_read.iter().enumerate())
            .map(|(r, &b)| format!("rank {r} {}", mb(b)))
            .collect();
        format!(
            "checkpoint: tensor bytes read by each rank (its stages', and the profile's under --split auto): {} of the file's {}",
            ranks.join(", "),
            mb(self.checkpoint_tensor_bytes)
        )
    }
}

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
    /// The token batch, checked against the model (ids < vocab, seq <= n_positions).
    pub fn tokens(&self, cfg: &Gpt2Config, seed: u64) -> Result<TokenBatch> {
        let tokens = match &self.input_ids {
            Some(path) => io::read_input_ids(path)?,
            None => io::random_input_ids(
                self.batch.unwrap_or(1),
                self.seq.unwrap_or(cfg.n_positions.min(64)),
                cfg.vocab_size,
                seed,
            ),
        };
        io::check_input(cfg, &tokens)?;
        Ok(tokens)
    }

    /// Refuse an output path we would not write (a directory) before any work is done.
    pub fn check_outputs(&self) -> Result<()> {
        check_output_path(self.logits_out.as_deref())
    }

    pub fn write_logits(&self, logits: &[f32], tokens: &TokenBatch, vocab: usize) -> Result<()> {
        match &self.logits_out {
            Some(path) => io::write_logits(path, logits, tokens.batch, tokens.seq, vocab),
            None => Ok(()),
        }
    }
}

/// An output file must not be a directory, and its directory must exist.
pub fn check_output_path(path: Option<&std::path::Path>) -> Result<()> {
    let Some(p) = path else { return Ok(()) };
    if p.is_dir() {
        return Err(Error::Input(format!(
            "{} is a directory; give a file name to write",
            p.display()
        )));
    }
    let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(d) = parent {
        if !d.is_dir() {
            return Err(Error::Input(format!(
                "cannot write {}: directory {} does not exist",
                p.display(),
                d.display()
            )));
        }
    }
    Ok(())
}

/// Help for every command's `--tp`.
pub const TP_HELP: &str = "Tensor-parallel degree T: each pipeline stage spans T devices (Megatron's split: attention by heads, the MLP by columns then rows, the vocabulary for the embedding and head; two all-reduces per block). --devices then names P x T Gpus, stage-major: --tp 4 --devices 8 is 4-way TP x 2-way PP";

/// `--devices` placed into groups of `--tp` Gpus, after checking that the
/// model splits T ways (before any device is opened).
pub fn place(devices: &str, tp: usize, cfg: &Gpt2Config) -> Result<crate::device::Placement> {
    crate::model::shard::check_degree(cfg, tp)?;
    crate::device::place_devices(devices, tp).map_err(|e| match e {
        crate::Error::Input(msg) if tp > 1 && msg.contains("groups of") => crate::Error::Input(
            format!("{msg}: with --tp {tp}, --devices must name P x {tp} Gpus (a count or a list)"),
        ),
        e => e,
    })
}
