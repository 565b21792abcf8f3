//! A model's stages uploaded once to the Gpus that hold them, for as many
//! runs as a caller makes: inference ([`super::forward`]) and generation
//! ([`super::decode`]) build their per-run programs (scratch buffers, bind
//! groups, the KV cache) over these weights instead of uploading them again.

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::executor::{uniform_tp, Cluster, DeviceGroup};
use crate::model::gpu::StageUpload;
use crate::model::{partition, Gpt2Config, Shard, StagePart, StageSource};

/// Every stage's weights on its Gpu: stage s on schedule device s mod P, a
/// tensor-parallel rank holding its shard. Under MPI only this process's
/// endpoints hold uploads.
pub struct Resident {
    pub cfg: Gpt2Config,
    /// Layers, embedding and head of each stage.
    pub parts: Vec<StagePart>,
    /// Schedule devices (P).
    pub devices: usize,
    /// Tensor-parallel degree (T).
    pub tp: usize,
    /// By endpoint (device × T + rank): `(stage, its upload)` for each stage
    /// the endpoint's Gpu holds; empty for endpoints of other processes.
    endpoints: Vec<Vec<(usize, StageUpload)>>,
}

impl Resident {
    /// Upload `parts` (one per stage) of `w` to `groups` (one per schedule
    /// device): each Gpu its device's stages, or its shard of them, all Gpus
    /// at once. Under MPI (`groups` from [`Cluster::device_groups`]) only
    /// this rank's endpoint uploads.
    pub fn upload(
        groups: &[DeviceGroup],
        cluster: &Cluster,
        w: &dyn StageSource,
        parts: Vec<StagePart>,
    ) -> Result<Resident> {
        let (devices, tp) = (groups.len(), uniform_tp(groups)?);
        crate::model::shard::check_degree(w.config(), tp)?;
        if devices == 0 || !parts.len().is_multiple_of(devices) {
            return Err(Error::Input(format!(
                "{} stages cannot be placed on {devices} devices: every device holds the same number",
                parts.len()
            )));
        }
        let jobs: Vec<(usize, usize, &Gpu)> = groups
            .iter()
            .enumerate()
            .flat_map(|(d, g)| g.ranks().map(move |(rank, gpu)| (d, rank, gpu)))
            .filter(|&(d, rank, _)| cluster.runs_endpoint(d * tp + rank))
            .collect();
        let uploaded = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|&(d, rank, gpu)| {
                    let parts = &parts;
                    scope.spawn(move || -> Result<(usize, Vec<(usize, StageUpload)>)> {
                        let shard = Shard { rank, of: tp };
                        let held = partition::device_stages(parts.len(), devices, d)
                            .map(|s| {
                                Ok((s, StageUpload::shard(gpu, &w.try_stage(&parts[s])?, shard)?))
                            })
                            .collect::<Result<Vec<_>>>()?;
                        Ok((d * tp + rank, held))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Other("a weight upload panicked".into())))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        let mut endpoints: Vec<Vec<(usize, StageUpload)>> =
            (0..devices * tp).map(|_| Vec::new()).collect();
        for (e, held) in uploaded {
            endpoints[e] = held;
        }
        Ok(Resident {
            cfg: w.config().clone(),
            parts,
            devices,
            tp,
            endpoints,
        })
    }

    /// The stages endpoint `e` (device × T + rank) holds, with their weights.
    pub fn stages(&self, e: usize) -> Result<&[(usize, StageUpload)]> {
        match self.endpoints.get(e) {
            Some(held) if !held.is_empty() => Ok(held),
            _ => Err(Error::Other(format!(
                "bug: endpoint {e} holds no uploaded stages in this process"
            ))),
        }
    }

    /// Layers per stage.
    pub fn split(&self) -> Vec<usize> {
        self.parts.iter().map(|p| p.layers.len()).collect()
    }

    /// Check that `groups` are the devices these weights were uploaded to
    /// (in number and tensor-parallel degree) for a schedule of `stages`
    /// stages over `devices` devices.
    pub fn check(&self, groups: &[DeviceGroup], devices: usize, stages: usize) -> Result<()> {
        let tp = uniform_tp(groups)?;
        if groups.len() != self.devices || devices != self.devices || tp != self.tp {
            return Err(Error::Input(format!(
                "the weights are resident on {} devices of {} Gpus, but the run has {} devices of {tp}",
                self.devices,
                self.tp,
                groups.len()
            )));
        }
        if stages != self.parts.len() {
            return Err(Error::Input(format!(
                "the weights are resident as {} stages but the schedule has {stages}",
                self.parts.len()
            )));
        }
        Ok(())
    }
}
