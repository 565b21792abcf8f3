//! Autoregressive generation pipelined across devices: prefill, then one
//! token per pass, with each stage's KV cache on its own device.
//!
//! The loop is schedule data ([`Schedule::decode`]): microbatch u is group
//! g = u mod G of the sequences at step k = u / G (k = 0: the prompts'
//! prefill; k ≥ 1: one new token per sequence). The executor runs it like
//! every other schedule; the only new dependency is the last stage's output
//! — the sampled token ids, `4 × sequences` bytes, not logits — feeding the
//! first stage's pass of the same group one step later. With G ≥ P groups in
//! flight every device can work on some group's token while the others run
//! theirs (vLLM's one batch per pipeline stage).
//!
//! [`Gpt2Decode`] is the [`StageProgram`](crate::executor::StageProgram): for each stage a device holds, a
//! prefill program (the group's prompts right-padded to the longest prompt,
//! every row's key and value written into the cache) and a decode program
//! (one row per sequence at its own position, attending over its own cache
//! slot) over the same uploaded weights
//! ([`StageUpload`](crate::model::gpu::StageUpload)) and the same
//! [`KvCache`](crate::model::gpu::KvCache). Right padding is exact: a causal prompt row never attends
//! to a later (padded) row, and a padded row's cache entries lie past its
//! prompt, where each decode step writes its token's key and value before
//! attending. The last stage samples on the device ([`crate::kernels::sample()`]).
//!
//! The files: this one holds the entry points ([`generate`],
//! [`generate_resident`]) and what they take and return; `layout.rs` lays
//! the sequences out in groups and rows ([`Layout`]); `program.rs` is the
//! per-device program ([`Gpt2Decode`]).

use std::sync::Arc;

use super::resident::Resident;
use crate::error::Result;
use crate::executor::{run_programs, Cluster, DeviceGroup, TransferRecord};
use crate::model::partition::partition;
use crate::model::StageSource;
use crate::sampling::SampleSettings;
use crate::schedule::Schedule;
use crate::trace::{Timeline, Track};

pub mod continuous;
mod layout;
mod program;

pub use layout::Layout;
pub use program::{DecodeOutput, Gpt2Decode};

/// What to generate.
#[derive(Clone, Debug)]
pub struct DecodeJob {
    /// Token ids of each prompt (at least one token each).
    pub prompts: Vec<Vec<u32>>,
    /// New tokens per sequence (at least 1).
    pub max_new_tokens: usize,
    /// Groups of sequences in flight (at most one per prompt).
    pub groups: usize,
    pub sampling: SampleSettings,
    /// Seeds the sampler's random numbers (one per sequence and step).
    pub seed: u64,
    /// Also read back the logits each token was sampled from (V per
    /// sequence per step): what the tests compare with a full forward.
    pub keep_logits: bool,
}

/// Called with (sequence, its new tokens, step) as each group's tokens come
/// back from the device; from a poller thread.
pub type TokenSink = Arc<dyn Fn(usize, u32, usize) + Send + Sync>;

/// What a generation produced and how long it took.
pub struct DecodeRun {
    /// Per sequence: its prompt, then the new tokens.
    pub ids: Vec<Vec<u32>>,
    /// Per sequence, per new token: µs on the timeline's clock at which the
    /// pass that sampled it ended on the last stage.
    pub token_us: Vec<Vec<f64>>,
    /// Per sequence, per new token: µs the devices were busy on the passes
    /// that made it (its group's pass on every stage, GPU timestamps): the
    /// kernels' share of its latency (the sampler's included).
    pub token_busy_us: Vec<Vec<f64>>,
    /// µs on the same clock at which the first prefill began.
    pub start_us: f64,
    pub timeline: Timeline,
    pub wall_s: f64,
    pub transfers: Vec<TransferRecord>,
    /// Bytes the tensor-parallel ranks moved through the host in all-reduces.
    pub reduced_bytes: u64,
    /// KV-cache bytes per Gpu: per schedule device, or per rank of each
    /// device's tensor-parallel group (device × T + rank).
    pub kv_bytes: Vec<u64>,
    /// Weight bytes per Gpu, in the same order (texture copies included).
    pub weight_bytes: Vec<u64>,
    /// Where each Gpu's decode matmuls read their weights from, and the
    /// measurement behind the choice, in the same order.
    pub decode_weights: Vec<crate::kernels::DecodeWeights>,
    /// With `keep_logits`: per sequence, per new token, the V logits it was
    /// sampled from.
    pub logits: Vec<Vec<Vec<f32>>>,
    pub schedule: Schedule,
}

/// Generate `job` over `groups` (one per pipeline stage, spread over
/// `cluster`), the model split `split` (layers per stage; even when
/// `None`), the weights uploaded for this call. `sink` sees every token as
/// it comes back. A caller that generates many times uploads once
/// ([`Resident::upload`]) and calls [`generate_resident`].
pub fn generate(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    w: &dyn StageSource,
    job: &DecodeJob,
    split: Option<&[usize]>,
    sink: Option<TokenSink>,
) -> Result<DecodeRun> {
    let cfg = w.config();
    Layout::new(job, cfg.n_positions, cfg.vocab_size)?;
    super::check_groups(cfg, groups)?;
    let parts = partition(cfg.n_layer, groups.len(), split)?;
    let resident = Resident::upload(groups, cluster, w, parts)?;
    generate_resident(groups, cluster, &resident, job, sink)
}

/// Generate `job` over weights already on the devices, one stage per
/// device.
pub fn generate_resident(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    resident: &Resident,
    job: &DecodeJob,
    sink: Option<TokenSink>,
) -> Result<DecodeRun> {
    let cfg = &resident.cfg;
    let layout = Layout::new(job, cfg.n_positions, cfg.vocab_size)?;
    let p = groups.len();
    let schedule = Schedule::decode(p, layout.groups(), layout.steps)?;
    resident.check(groups, schedule.devices, schedule.stages())?;
    let tp = resident.tp;
    let net = cluster.net_for(groups)?;
    let ran = run_programs(groups, &schedule, &net, |d, shard, gpu| {
        let held = resident.stages(d * tp + shard.rank)?;
        // Every rank of the last stage samples the same tokens: rank 0 streams them.
        let sink = sink.clone().filter(|_| shard.rank == 0);
        Gpt2Decode::new(gpu, shard, held, p, &layout, job, sink)
    })?;
    let (outputs, timeline, wall_s, transfers) =
        (ran.outputs, ran.timeline, ran.wall_s, ran.transfers);
    let reduced_bytes = ran.reduced_bytes;
    let kv_bytes = outputs.iter().map(|o| o.kv_bytes).collect();
    let weight_bytes = outputs.iter().map(|o| o.weight_bytes).collect();
    let decode_weights = outputs.iter().map(|o| o.weights.clone()).collect();
    let last_rank0 = &outputs[(p - 1) * tp];
    let (sampled, kept) = (&last_rank0.sampled, &last_rank0.logits);
    let v = cfg.vocab_size;
    let mut logits = vec![Vec::new(); job.prompts.len()];
    for (u, rows) in kept.iter().enumerate() {
        for (b, &s) in layout.members[u % layout.groups()].iter().enumerate() {
            logits[s].push(rows[b * v..][..v].to_vec());
        }
    }
    let last = schedule.stages() - 1;
    let end_of: std::collections::HashMap<usize, f64> = timeline
        .events
        .iter()
        .filter(|e| matches!(e.track, Track::Compute { gpu: 0, .. }))
        .filter_map(|e| {
            e.action
                .filter(|a| a.stage == last)
                .map(|a| (a.microbatch, e.end_us))
        })
        .collect();
    let mut busy_of: std::collections::HashMap<usize, f64> = std::collections::HashMap::new();
    for e in &timeline.events {
        if let (Track::Compute { gpu: 0, .. }, Some(a)) = (e.track, e.action) {
            *busy_of.entry(a.microbatch).or_default() += e.end_us - e.start_us;
        }
    }
    let start_us = timeline
        .events
        .iter()
        .filter(|e| matches!(e.track, Track::Compute { .. }))
        .map(|e| e.start_us)
        .fold(f64::INFINITY, f64::min);
    let mut ids: Vec<Vec<u32>> = job.prompts.clone();
    let mut token_us = vec![Vec::new(); ids.len()];
    let mut token_busy_us = vec![Vec::new(); ids.len()];
    for (u, got) in sampled.iter().enumerate() {
        let g = u % layout.groups();
        for (&s, &id) in layout.members[g].iter().zip(got) {
            ids[s].push(id);
            token_us[s].push(end_of.get(&u).copied().unwrap_or(f64::NAN));
            token_busy_us[s].push(busy_of.get(&u).copied().unwrap_or(f64::NAN));
        }
    }
    Ok(DecodeRun {
        ids,
        token_us,
        token_busy_us,
        start_us,
        timeline,
        wall_s,
        transfers,
        reduced_bytes,
        kv_bytes,
        weight_bytes,
        decode_weights,
        logits,
        schedule,
    })
}

/// Cut every row after its first `eos` past the prompt, filling the rest
/// with `eos` (the rows keep their length).
pub fn stop_at_eos(ids: &mut [Vec<u32>], prompt_lens: &[usize], eos: u32) {
    for (row, &len) in ids.iter_mut().zip(prompt_lens) {
        if let Some(i) = row[len..].iter().position(|&t| t == eos) {
            row[len + i..].fill(eos);
        }
    }
}
