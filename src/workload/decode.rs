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
//! [`Gpt2Decode`] is the [`StageProgram`]: for each stage a device holds, a
//! prefill program (the group's prompts right-padded to the longest prompt,
//! every row's key and value written into the cache) and a decode program
//! (one row per sequence at its own position, attending over its own cache
//! slot) over the same uploaded weights ([`StageUpload`]) and the same
//! [`KvCache`]. Right padding is exact: a causal prompt row never attends
//! to a later (padded) row, and a padded row's cache entries lie past its
//! prompt, where each decode step writes its token's key and value before
//! attending. The last stage samples on the device ([`k::sample`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::resident::Resident;
use crate::action::{Action, Kind, Product};
use crate::device::{self, Gpu};
use crate::error::{Error, Result};
use crate::executor::wire;
use crate::executor::{
    run_programs, ActionEncoder, Cluster, DeviceGroup, StageProgram, TransferRecord,
};
use crate::kernels::{self as k, Dispatch};
use crate::model::gpu::{GpuStage, KvCache, Mode, StageEncoder, StageUpload};
use crate::model::partition::partition;
use crate::model::{Shard, StageSource};
use crate::sampling::{uniform, SampleSettings};
use crate::schedule::Schedule;
use crate::trace::{Timeline, Track};

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

/// Which sequences each group holds and how the passes are shaped.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Sequence indices per group, contiguous; earlier groups take the remainder.
    pub members: Vec<Vec<usize>>,
    /// Sequences per pass: the largest group.
    pub per: usize,
    /// Rows per sequence in a prefill: the longest prompt.
    pub t_max: usize,
    /// Prompt length of every sequence.
    pub lens: Vec<usize>,
    pub steps: usize,
}

impl Layout {
    /// Check `job` against the model and lay out its groups.
    pub fn new(job: &DecodeJob, n_positions: usize, vocab: usize) -> Result<Layout> {
        let b = job.prompts.len();
        if b == 0 {
            return Err(Error::Input("no prompts to generate from".into()));
        }
        if let Some(i) = job.prompts.iter().position(Vec::is_empty) {
            return Err(Error::Input(format!(
                "prompt {i} is empty: every prompt needs at least one token"
            )));
        }
        if job.max_new_tokens == 0 {
            return Err(Error::Input("--max-new-tokens must be at least 1".into()));
        }
        for (i, p) in job.prompts.iter().enumerate() {
            if let Some(&id) = p.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::Input(format!(
                    "prompt {i}: token id {id} is out of range for the model's vocabulary of {vocab}"
                )));
            }
            if p.len() + job.max_new_tokens > n_positions {
                let fit = n_positions.saturating_sub(job.max_new_tokens);
                return Err(Error::Input(format!(
                    "prompt {i} has {} tokens, but with --max-new-tokens {} at most {fit} fit the model's n_positions {n_positions} (or ask for at most {} new tokens)",
                    p.len(),
                    job.max_new_tokens,
                    n_positions.saturating_sub(p.len())
                )));
            }
        }
        if job.groups == 0 || job.groups > b {
            return Err(Error::Input(format!(
                "--groups {} must be between 1 and the number of prompts ({b})",
                job.groups
            )));
        }
        job.sampling.check()?;
        let g = job.groups;
        let mut members = Vec::with_capacity(g);
        let mut next = 0;
        for i in 0..g {
            let n = b / g + usize::from(i < b % g);
            members.push((next..next + n).collect::<Vec<_>>());
            next += n;
        }
        Ok(Layout {
            per: members.iter().map(Vec::len).max().unwrap_or(1),
            t_max: job.prompts.iter().map(Vec::len).max().unwrap_or(1),
            lens: job.prompts.iter().map(Vec::len).collect(),
            members,
            steps: job.max_new_tokens,
        })
    }

    fn groups(&self) -> usize {
        self.members.len()
    }

    /// The cache slot rows of padding use: one past the sequences.
    fn dummy_slot(&self) -> u32 {
        self.lens.len() as u32
    }

    /// (slot, position) of every row of group `g`'s pass at `step`.
    fn rows(&self, g: usize, step: usize) -> Vec<(u32, u32)> {
        let members = &self.members[g];
        let mut rows = Vec::new();
        for b in 0..self.per {
            let seq = members.get(b).copied();
            let slot = seq.map_or(self.dummy_slot(), |s| s as u32);
            if step == 0 {
                rows.extend((0..self.t_max as u32).map(|t| (slot, t)));
            } else {
                let pos = seq.map_or(0, |s| self.lens[s] + step - 1);
                rows.push((slot, pos as u32));
            }
        }
        rows
    }

    /// The logits row the sampler reads for each sequence of group `g`.
    fn sample_rows(&self, g: usize, step: usize) -> Vec<u32> {
        (0..self.per)
            .map(|b| match (step, self.members[g].get(b)) {
                (0, Some(&s)) => (b * self.t_max + self.lens[s] - 1) as u32,
                (0, None) => (b * self.t_max) as u32,
                (_, _) => b as u32,
            })
            .collect()
    }
}

/// One stage of the decode on its device.
struct DecodeStage {
    prefill: GpuStage,
    decode: GpuStage,
    cache: KvCache,
}

/// The last stage's sampler: one dispatch per program (prefill, decode).
struct Sampler {
    prefill: Dispatch,
    decode: Dispatch,
    /// (per) logits row per output, and (per) uniforms, per program.
    rows: [wgpu::Buffer; 2],
    uniforms: [wgpu::Buffer; 2],
    /// (per) u32: the sampled ids, copied to the group's `next_ids`.
    out: wgpu::Buffer,
}

/// Token ids as they come back: per microbatch, per member sequence.
type Arrived = Arc<Mutex<Vec<Option<Vec<u32>>>>>;

/// GPT-2 generation on the stages one device holds (see the module doc).
pub struct Gpt2Decode<'a> {
    layout: &'a Layout,
    job: &'a DecodeJob,
    stages: BTreeMap<usize, DecodeStage>,
    last: usize,
    /// (per) u32 per group: the group's next input tokens (stage 0) and the
    /// last stage's sampled tokens — the message between them.
    next_ids: Vec<wgpu::Buffer>,
    sampler: Option<Sampler>,
    /// Per microbatch, a staging buffer the sampled ids are copied to.
    results: Vec<wgpu::Buffer>,
    /// With `keep_logits`: per microbatch, (per, V) logits rows.
    logits: Vec<wgpu::Buffer>,
    arrived: Arrived,
    sink: Option<TokenSink>,
    weight_bytes: u64,
}

impl<'a> Gpt2Decode<'a> {
    /// `shard`'s part of the stages `held` on `gpu` (a tensor-parallel
    /// rank holds its heads' part of each block and of the KV cache; the
    /// last stage's ranks sum their logits columns before sampling, so each
    /// samples the same tokens).
    pub fn new(
        gpu: &Gpu,
        shard: Shard,
        held: &[(usize, StageUpload)],
        stages_total: usize,
        layout: &'a Layout,
        job: &'a DecodeJob,
        sink: Option<TokenSink>,
    ) -> Result<Gpt2Decode<'a>> {
        let per = layout.per;
        let slots = layout.lens.len() + 1;
        let mut stages = BTreeMap::new();
        let mut sampler = None;
        let mut weight_bytes = 0;
        let last = stages_total - 1;
        let next_ids: Vec<wgpu::Buffer> = (0..layout.groups())
            .map(|g| device::zeros(gpu, &format!("next ids group {g}"), per))
            .collect();
        for (s, up) in held {
            weight_bytes += up.bytes();
            let cache = KvCache::new(gpu, &up.cfg, shard, up.part.layers.len(), slots)?;
            let prefill = GpuStage::build(gpu, up, per, layout.t_max, Mode::Prefill(&cache))?;
            let decode = GpuStage::build(gpu, up, per, 1, Mode::Decode(&cache))?;
            if *s == last {
                let (v, vp) = (up.cfg.vocab_size, up.cfg.padded_vocab());
                let out = device::zeros(gpu, "sampled ids", per);
                let rows = [0, 1].map(|_| device::zeros(gpu, "sample rows", per));
                let uniforms = [0, 1].map(|_| device::zeros(gpu, "sample uniforms", per));
                let logits =
                    |st: &GpuStage| st.logits.clone().expect("the last stage has the head");
                let s = &job.sampling;
                sampler = Some(Sampler {
                    prefill: k::sample(
                        gpu,
                        &out,
                        &logits(&prefill),
                        &rows[0],
                        &uniforms[0],
                        per,
                        v,
                        vp,
                        s,
                    ),
                    decode: k::sample(
                        gpu,
                        &out,
                        &logits(&decode),
                        &rows[1],
                        &uniforms[1],
                        per,
                        v,
                        vp,
                        s,
                    ),
                    rows,
                    uniforms,
                    out,
                });
            }
            stages.insert(
                *s,
                DecodeStage {
                    prefill,
                    decode,
                    cache,
                },
            );
        }
        let m = layout.groups() * layout.steps;
        let results = match sampler {
            Some(_) => (0..m)
                .map(|_| device::staging(gpu, "sampled ids out", (4 * per) as u64))
                .collect(),
            None => Vec::new(),
        };
        let logits = match (&sampler, job.keep_logits) {
            (Some(_), true) => {
                let v = held[0].1.cfg.vocab_size;
                (0..m)
                    .map(|_| device::staging(gpu, "sampled logits out", (4 * per * v) as u64))
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(Gpt2Decode {
            layout,
            job,
            stages,
            last,
            next_ids,
            sampler,
            results,
            logits,
            arrived: Arc::new(Mutex::new(vec![None; m])),
            sink,
            weight_bytes,
        })
    }

    fn split(&self, u: usize) -> (usize, usize) {
        (u % self.layout.groups(), u / self.layout.groups())
    }

    fn program(&self, stage: usize, step: usize) -> &GpuStage {
        let st = &self.stages[&stage];
        if step == 0 {
            &st.prefill
        } else {
            &st.decode
        }
    }

    /// Bytes of the KV caches on this device.
    pub fn kv_bytes(&self) -> u64 {
        self.stages.values().map(|s| s.cache.bytes()).sum()
    }
}

impl StageProgram for Gpt2Decode<'_> {
    /// KV-cache bytes on the device and, when it holds the last stage, per
    /// microbatch the sampled ids of the group's members (and their logits
    /// with `keep_logits`).
    type Output = DecodeOutput;

    fn message_bytes(&self, p: Product) -> u64 {
        let (_, step) = self.split(p.microbatch);
        if p.stage == self.last {
            return (4 * self.layout.per) as u64;
        }
        let any = self.stages.values().next().expect("a device holds a stage");
        match step {
            0 => any.prefill.activation_bytes(),
            _ => any.decode.activation_bytes(),
        }
    }

    fn input(&self, consumer: Action, _p: Product) -> &wgpu::Buffer {
        let (g, step) = self.split(consumer.microbatch);
        if consumer.stage == 0 {
            &self.next_ids[g]
        } else {
            &self.program(consumer.stage, step).x
        }
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        let (g, step) = self.split(producer.microbatch);
        if producer.stage == self.last {
            &self.next_ids[g]
        } else {
            &self.program(producer.stage, step).x
        }
    }

    fn encode(&mut self, gpu: &Gpu, a: Action, enc: &mut ActionEncoder) -> Result<()> {
        if a.kind != Kind::F {
            return Err(Error::Input(format!(
                "{a}: decoding runs forward actions only"
            )));
        }
        let (g, step) = self.split(a.microbatch);
        let (layout, job) = (self.layout, self.job);
        let prog = self.program(a.stage, step);
        prog.write_rows(gpu, &layout.rows(g, step));
        if a.stage == 0 {
            let ids = prog.ids.as_ref().expect("stage 0 embeds");
            if step == 0 {
                let mut padded = vec![0u32; layout.per * layout.t_max];
                for (b, &s) in layout.members[g].iter().enumerate() {
                    padded[b * layout.t_max..][..layout.lens[s]].copy_from_slice(&job.prompts[s]);
                }
                prog.write_ids(gpu, &padded);
            } else {
                enc.copy_buffer_to_buffer(&self.next_ids[g], 0, ids, 0, (4 * layout.per) as u64);
            }
        }
        prog.encode_in(enc)?;
        if a.stage == self.last {
            if prog.shard.split() {
                let logits = prog.logits.as_ref().expect("the last stage has the head");
                enc.all_reduce(logits, prog.logits_bytes())?;
            }
            let sm = self.sampler.as_ref().expect("the last stage samples");
            let which = usize::from(step > 0);
            let rows = layout.sample_rows(g, step);
            gpu.queue
                .write_buffer(&sm.rows[which], 0, bytemuck::cast_slice(&rows));
            let us: Vec<f32> = (0..layout.per)
                .map(|b| {
                    layout.members[g]
                        .get(b)
                        .map_or(0.0, |&s| uniform(job.seed, s as u64, step as u64))
                })
                .collect();
            gpu.queue
                .write_buffer(&sm.uniforms[which], 0, bytemuck::cast_slice(&us));
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("sample"),
                    timestamp_writes: None,
                });
                match step {
                    0 => sm.prefill.encode(&mut pass),
                    _ => sm.decode.encode(&mut pass),
                }
            }
            let bytes = (4 * layout.per) as u64;
            enc.copy_buffer_to_buffer(&sm.out, 0, &self.next_ids[g], 0, bytes);
        }
        Ok(())
    }

    fn encode_results(&mut self, _gpu: &Gpu, a: Action, enc: &mut wgpu::CommandEncoder) {
        if a.stage != self.last {
            return;
        }
        let (g, step) = self.split(a.microbatch);
        let bytes = (4 * self.layout.per) as u64;
        enc.copy_buffer_to_buffer(&self.next_ids[g], 0, &self.results[a.microbatch], 0, bytes);
        if let Some(dst) = self.logits.get(a.microbatch) {
            let prog = self.program(a.stage, step);
            let src = prog.logits.as_ref().expect("the last stage has the head");
            let (v, vp) = (prog.cfg.vocab_size, prog.cfg.padded_vocab());
            for (b, row) in self.layout.sample_rows(g, step).into_iter().enumerate() {
                let row_bytes = (4 * v) as u64;
                enc.copy_buffer_to_buffer(
                    src,
                    (row as usize * vp * 4) as u64,
                    dst,
                    b as u64 * row_bytes,
                    row_bytes,
                );
            }
        }
    }

    fn submitted(&mut self, _gpu: &Gpu, a: Action) {
        if a.stage != self.last {
            return;
        }
        let u = a.microbatch;
        let (g, step) = self.split(u);
        let members = self.layout.members[g].clone();
        let buf = self.results[u].clone();
        let (arrived, sink) = (self.arrived.clone(), self.sink.clone());
        self.results[u]
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| {
                let ids: Vec<u32> = match r {
                    Ok(()) => match buf.slice(..).get_mapped_range() {
                        Ok(view) => {
                            bytemuck::cast_slice::<u8, u32>(&view)[..members.len()].to_vec()
                        }
                        Err(_) => return,
                    },
                    Err(_) => return,
                };
                buf.unmap();
                if let Some(sink) = &sink {
                    for (&s, &id) in members.iter().zip(&ids) {
                        sink(s, id, step);
                    }
                }
                arrived.lock().unwrap_or_else(|e| e.into_inner())[u] = Some(ids);
            });
    }

    fn finish(self, gpu: &Gpu) -> Result<Self::Output> {
        let out = |sampled, logits| DecodeOutput {
            kv_bytes: self.kv_bytes(),
            weight_bytes: self.weight_bytes,
            sampled,
            logits,
        };
        if self.sampler.is_none() {
            return Ok(out(Vec::new(), Vec::new()));
        }
        let v = self.stages[&self.last].decode.cfg.vocab_size;
        let logits = self
            .logits
            .iter()
            .map(|b| device::read_mapped::<f32>(gpu, b, self.layout.per * v))
            .collect::<Result<Vec<_>>>()?;
        // Every map was requested after its submit and the device is idle:
        // polling fires whatever callbacks are left (a minute at most, so a
        // lost callback is an error, not a hang).
        let n = self.results.len();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let done = self
                .arrived
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .all(Option::is_some);
            if done || std::time::Instant::now() > deadline {
                break;
            }
            let _ = gpu.device.poll(wgpu::PollType::Poll);
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        let arrived = std::mem::take(&mut *self.arrived.lock().unwrap_or_else(|e| e.into_inner()));
        arrived
            .into_iter()
            .enumerate()
            .map(|(u, ids)| {
                ids.ok_or_else(|| {
                    Error::Other(format!(
                        "the sampled tokens of microbatch {u} of {n} never came back"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(|ids| out(ids, logits))
    }

    fn output_to_bytes(o: &Self::Output) -> Option<Vec<u8>> {
        let o = (
            o.kv_bytes,
            o.weight_bytes,
            (o.sampled.clone(), o.logits.clone()),
        );
        Some(wire::to_bytes(&o))
    }
    fn output_from_bytes(b: &[u8]) -> Option<Self::Output> {
        let (kv_bytes, weight_bytes, (sampled, logits)) = wire::from_bytes(b)?;
        Some(DecodeOutput {
            kv_bytes,
            weight_bytes,
            sampled,
            logits,
        })
    }
}

/// What one Gpu's [`Gpt2Decode`] hands back.
pub struct DecodeOutput {
    /// Bytes of the KV caches on the Gpu.
    pub kv_bytes: u64,
    /// Bytes of weights on the Gpu.
    pub weight_bytes: u64,
    /// With the last stage: per microbatch, the sampled ids of the group's
    /// sequences.
    pub sampled: Vec<Vec<u32>>,
    /// With `keep_logits`: per microbatch, (per, V) logits rows.
    pub logits: Vec<Vec<f32>>,
}

/// What a generation produced and how long it took.
pub struct DecodeRun {
    /// Per sequence: its prompt, then the new tokens.
    pub ids: Vec<Vec<u32>>,
    /// Per sequence, per new token: µs on the timeline's clock at which the
    /// pass that sampled it ended on the last stage.
    pub token_us: Vec<Vec<f64>>,
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
    /// Weight bytes per Gpu, in the same order.
    pub weight_bytes: Vec<u64>,
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
    let start_us = timeline
        .events
        .iter()
        .filter(|e| matches!(e.track, Track::Compute { .. }))
        .map(|e| e.start_us)
        .fold(f64::INFINITY, f64::min);
    let mut ids: Vec<Vec<u32>> = job.prompts.clone();
    let mut token_us = vec![Vec::new(); ids.len()];
    for (u, got) in sampled.iter().enumerate() {
        let g = u % layout.groups();
        for (&s, &id) in layout.members[g].iter().zip(got) {
            ids[s].push(id);
            token_us[s].push(end_of.get(&u).copied().unwrap_or(f64::NAN));
        }
    }
    Ok(DecodeRun {
        ids,
        token_us,
        start_us,
        timeline,
        wall_s,
        transfers,
        reduced_bytes,
        kv_bytes,
        weight_bytes,
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
