//! A model's stages uploaded once to the Gpus that hold them, for as many
//! runs as a caller makes: inference ([`super::forward`]) and generation
//! ([`super::decode`]) build their per-run programs (scratch buffers, bind
//! groups, the KV cache) over these weights instead of uploading them again.

use crate::device::{Dtype, DtypeChoice, Gpu, Precision};
use crate::error::{Error, Result};
use crate::executor::{uniform_tp, Cluster, DeviceGroup};
use crate::model::gpu::{first_beyond_f16, StageUpload};
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
    /// How each schedule device stores its stages ([`resolve_precision`]).
    pub precision: Vec<Precision>,
    /// Why a device stores f32 where f16 was asked for or the checkpoint
    /// is 16-bit (one line each, naming the device and the reason).
    pub precision_notes: Vec<String>,
    /// By endpoint (device × T + rank): `(stage, its upload)` for each stage
    /// the endpoint's Gpu holds; empty for endpoints of other processes.
    endpoints: Vec<Vec<(usize, StageUpload)>>,
}

impl Resident {
    /// Upload `parts` (one per stage) of `w` to `groups` (one per schedule
    /// device): each Gpu its device's stages, or its shard of them, all Gpus
    /// at once, in f32. Under MPI (`groups` from [`Cluster::device_groups`])
    /// only this rank's endpoint uploads.
    pub fn upload(
        groups: &[DeviceGroup],
        cluster: &Cluster,
        w: &dyn StageSource,
        parts: Vec<StagePart>,
    ) -> Result<Resident> {
        Resident::upload_as(groups, cluster, w, parts, DtypeRequest::F32)
    }

    /// [`Resident::upload`] storing each device's stages as `dtype` resolves
    /// for it ([`resolve_precision`]).
    pub fn upload_as(
        groups: &[DeviceGroup],
        cluster: &Cluster,
        w: &dyn StageSource,
        parts: Vec<StagePart>,
        dtype: DtypeRequest,
    ) -> Result<Resident> {
        let (devices, tp) = (groups.len(), uniform_tp(groups)?);
        crate::model::shard::check_degree(w.config(), tp)?;
        if devices == 0 || !parts.len().is_multiple_of(devices) {
            return Err(Error::Input(format!(
                "{} stages cannot be placed on {devices} devices: every device holds the same number",
                parts.len()
            )));
        }
        let (precision, precision_notes) = resolve_precision(dtype, groups, cluster, w, &parts)?;
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
                    let (parts, prec) = (&parts, precision[d]);
                    scope.spawn(move || -> Result<(usize, Vec<(usize, StageUpload)>)> {
                        let shard = Shard { rank, of: tp };
                        let held = partition::device_stages(parts.len(), devices, d)
                            .map(|s| {
                                let ws = w.try_stage(&parts[s])?;
                                Ok((s, StageUpload::shard(gpu, &ws, shard, prec)?))
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
            precision,
            precision_notes,
            endpoints,
        })
    }

    /// Bytes of weights each schedule device holds (its endpoints in this
    /// process; under MPI the others' show 0): buffers and texture copies.
    pub fn weight_bytes(&self) -> Vec<u64> {
        (0..self.devices)
            .map(|d| {
                (0..self.tp)
                    .flat_map(|r| &self.endpoints[d * self.tp + r])
                    .map(|(_, up)| up.bytes())
                    .sum()
            })
            .collect()
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

/// What a run asks of the storage type (`--dtype`), and what its weights
/// were stored as: `F16` for a bf16 or f16 checkpoint, `F32` for an f32 one
/// and for seeded weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DtypeRequest {
    pub choice: DtypeChoice,
    pub stored: Dtype,
}

impl DtypeRequest {
    pub const F32: DtypeRequest = DtypeRequest {
        choice: DtypeChoice::F32,
        stored: Dtype::F32,
    };
}

/// How each schedule device stores its stages, and a line for each device
/// that stores f32 where f16 was wanted. `--dtype f32`: f32 everywhere.
/// `--dtype f16`: f16 everywhere; an error naming the adapter where one lacks
/// `shader-f16`, and under tensor parallelism (its all-reduces sum f32 on
/// the host). `auto`: f16 on each device with `shader-f16` when the
/// checkpoint is 16-bit (not under tensor parallelism), else f32. Either
/// way a device whose stages hold a value f16 cannot (beyond ±65504) keeps
/// f32, and the line names the tensor. Hops are f16 only when every device
/// stores f16; otherwise each f16 device converts at its side.
pub fn resolve_precision(
    req: DtypeRequest,
    groups: &[DeviceGroup],
    cluster: &Cluster,
    w: &dyn StageSource,
    parts: &[StagePart],
) -> Result<(Vec<Precision>, Vec<String>)> {
    let (devices, tp) = (groups.len(), uniform_tp(groups)?);
    let wants = match req.choice {
        DtypeChoice::F32 => false,
        DtypeChoice::F16 => true,
        DtypeChoice::Auto => req.stored == Dtype::F16 && tp == 1,
    };
    if !wants {
        return Ok((vec![Precision::F32; devices], Vec::new()));
    }
    if tp > 1 {
        return Err(Error::Input(format!(
            "--dtype f16 with --tp {tp}: tensor-parallel all-reduces sum f32 on the host; \
             use --dtype f32 (or auto, which stores f32 under --tp)"
        )));
    }
    // What each device can store: bit 0 no shader-f16, bit 1 a tensor
    // beyond f16's range (its name known to the process that holds it).
    let mut codes = vec![0u64; devices];
    let mut beyond = vec![None; devices];
    for (d, g) in groups.iter().enumerate() {
        for (rank, gpu) in g.ranks() {
            if !cluster.runs_endpoint(d * tp + rank) {
                continue;
            }
            if !gpu.shader_f16() {
                // In-process the refusal names the adapter now; under MPI
                // every rank refuses after the gather below (a rank that
                // left early would leave the others waiting in it).
                if req.choice == DtypeChoice::F16 && cluster.rank().is_none() {
                    gpu.check_dtype(Dtype::F16)?;
                }
                codes[d] |= 1;
            }
            for s in crate::model::partition::device_stages(parts.len(), devices, d) {
                if let Some(hit) = first_beyond_f16(&w.try_stage(&parts[s])?) {
                    codes[d] |= 2;
                    beyond[d] = Some(hit);
                }
            }
        }
    }
    if cluster.rank().is_some() {
        // Each rank runs one endpoint: everyone's codes, by rank.
        let mine = codes.iter().fold(0, |a, c| a | c);
        let all = cluster.all_gather_u64(mine);
        codes = (0..devices)
            .map(|d| (0..tp).fold(0, |a, r| a | all.get(d * tp + r).copied().unwrap_or(0)))
            .collect();
        if req.choice == DtypeChoice::F16 {
            if let Some(d) = codes.iter().position(|c| c & 1 != 0) {
                return Err(Error::Input(format!(
                    "--dtype f16: device {d} has no shader-f16 (see `wgpipe adapters`); use --dtype f32 or auto"
                )));
            }
        }
    }
    let mut notes = Vec::new();
    let dtypes: Vec<Dtype> = (0..devices)
        .map(|d| {
            // Under MPI another rank's device has no local Gpu to name.
            let device = match groups[d].label() {
                l if l.is_empty() => format!("device {d}"),
                l => format!("device {d} ({l})"),
            };
            if codes[d] & 1 != 0 {
                notes.push(format!(
                    "{device} has no shader-f16: it stores f32, and converts nothing (the f16 devices convert at their hops)"
                ));
                Dtype::F32
            } else if codes[d] & 2 != 0 {
                let what = match &beyond[d] {
                    Some((name, v)) => format!("{name} holds {v:e}"),
                    None => "a tensor holds a value".into(),
                };
                notes.push(format!(
                    "{device} stores f32: {what}, beyond f16's range (±65504), which f16 would turn into inf"
                ));
                Dtype::F32
            } else {
                Dtype::F16
            }
        })
        .collect();
    let hop = match dtypes.iter().all(|&d| d == Dtype::F16) {
        true => Dtype::F16,
        false => Dtype::F32,
    };
    let precision = dtypes
        .into_iter()
        .map(|dtype| Precision { dtype, hop })
        .collect();
    Ok((precision, notes))
}
