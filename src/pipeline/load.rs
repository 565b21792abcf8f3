//! The model's weights in host memory, as a pipeline needs them: the whole
//! model in-process (and for the seeded presets everywhere); under MPI with a
//! checkpoint, only what this rank's work reads — first the config, then what
//! the `--split auto` profile runs, then this rank's stages.

use std::path::PathBuf;

use super::ModelSource;
use crate::analysis::split::{profiles, resolve_split, Chosen};
use crate::device::Dtype;
use crate::error::Result;
use crate::executor::{Cluster, DeviceGroup};
use crate::model::checkpoint::{self, Checkpoint};
use crate::model::partition::{device_parts, partition, Split};
use crate::model::{Gpt2Config, Gpt2Weights, PartialWeights, TensorSet};
use crate::schedule::Schedule;
use crate::workload::profile::profile_parts;

/// What the ranks read of the checkpoint, under MPI.
#[derive(serde::Serialize, Clone, Debug)]
pub struct CheckpointReads {
    /// Tensor bytes each rank read, by rank.
    pub checkpoint_bytes_read: Vec<u64>,
    /// The bytes of every tensor in model.safetensors.
    pub checkpoint_tensor_bytes: u64,
}

impl CheckpointReads {
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

/// The host copy of the weights a pipeline computes with.
pub(super) struct HostWeights {
    w: PartialWeights,
    /// Under MPI with a checkpoint: the open checkpoint, read from per rank.
    ckpt: Option<Checkpoint>,
    /// The checkpoint directory, when the model came from one.
    pub dir: Option<PathBuf>,
    /// How the weights were stored: F16 for a bf16/f16 checkpoint, else F32.
    pub stored: Dtype,
}

impl HostWeights {
    /// Read `source` for `cluster`: whole in-process (and for the seeded
    /// presets, which draw every tensor from one stream); under MPI with a
    /// checkpoint, the config alone so far.
    pub fn load(source: &ModelSource, cluster: &Cluster) -> Result<HostWeights> {
        let stored = match source {
            ModelSource::Checkpoint(dir) => Checkpoint::open(dir)?.stored_dtype(),
            _ => Dtype::F32,
        };
        let (w, ckpt, dir) = match source {
            ModelSource::Checkpoint(dir) if cluster.rank().is_some() => {
                let ckpt = Checkpoint::open(dir)?;
                let w = PartialWeights::empty(ckpt.config().clone());
                (w, Some(ckpt), Some(dir.clone()))
            }
            ModelSource::Checkpoint(dir) => (
                checkpoint::load_checkpoint(dir)?.into(),
                None,
                Some(dir.clone()),
            ),
            ModelSource::Preset { name, seed } => (
                Gpt2Weights::init(&Gpt2Config::named(name)?, *seed)?.into(),
                None,
                None,
            ),
            ModelSource::Config { config, seed } => {
                (Gpt2Weights::init(config, *seed)?.into(), None, None)
            }
            ModelSource::Weights(w) => ((**w).clone().into(), None, None),
        };
        Ok(HostWeights {
            w,
            ckpt,
            dir,
            stored,
        })
    }

    pub fn config(&self) -> &Gpt2Config {
        self.w.config()
    }

    /// The tensors held: every one, or under MPI what this rank read.
    pub fn weights(&self) -> &PartialWeights {
        &self.w
    }

    /// `split` resolved for `schedule` on `groups` (the `auto` profile on
    /// microbatches of `per` × `seq` tokens), with this process's tensors
    /// read for it: under MPI first what the profile runs on every device
    /// (the embedding, block 0, the head), then, once the split is chosen,
    /// this rank's stages, dropping what only the profile needed. Rank r is
    /// Gpu `r mod T` of schedule device `r / T`, which holds stages d, d+P, …
    pub fn resolve_split(
        &mut self,
        split: &Split,
        groups: &[DeviceGroup],
        cluster: &Cluster,
        schedule: &Schedule,
        (per, seq): (usize, usize),
    ) -> Result<Chosen> {
        let n_layer = self.config().n_layer;
        if let Some(ckpt) = &mut self.ckpt {
            if profiles(split, n_layer, schedule.stages()) {
                ckpt.load_into(&mut self.w, &profile_parts())?;
            }
        }
        let chosen = resolve_split(split, groups, cluster, &self.w, schedule, per, seq)?;
        if let (Some(ckpt), Some((rank, ranks))) = (&mut self.ckpt, cluster.rank()) {
            let cfg = ckpt.config().clone();
            let parts = partition(cfg.n_layer, schedule.stages(), Some(&chosen.split))?;
            let tp = (ranks / schedule.devices.max(1)).max(1);
            let mine = device_parts(&parts, schedule.devices, rank / tp);
            ckpt.load_into(&mut self.w, &mine)?;
            self.w.retain(&TensorSet::of(&cfg, &mine)?);
        }
        Ok(chosen)
    }

    /// Under MPI with a checkpoint: every rank's tensor bytes read, and the
    /// bytes of every tensor in the file. Every rank must call it (an
    /// all-gather).
    pub fn checkpoint_reads(&self, cluster: &Cluster) -> Option<CheckpointReads> {
        let ckpt = self.ckpt.as_ref()?;
        cluster.rank()?;
        Some(CheckpointReads {
            checkpoint_bytes_read: cluster.all_gather_u64(ckpt.bytes_read()),
            checkpoint_tensor_bytes: ckpt.tensor_bytes(),
        })
    }
}
