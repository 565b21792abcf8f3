//! The per-device program of a generation: for each stage a device holds,
//! a prefill and a decode program over the same weights and KV cache, and
//! on the last stage the sampler (see [`super`]'s doc).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{DecodeJob, Layout, TokenSink};
use crate::action::{Action, Kind, Product};
use crate::device::{self, Gpu};
use crate::error::{Error, Result};
use crate::executor::wire;
use crate::executor::{ActionEncoder, StageProgram};
use crate::kernels::{self as k, Dispatch};
use crate::model::gpu::{GpuStage, KvCache, Mode, StageEncoder, StageUpload};
use crate::model::Shard;
use crate::sampling::uniform;

/// One stage of the decode on its device.
struct DecodeStage {
    prefill: GpuStage,
    decode: GpuStage,
    cache: KvCache,
    upload: StageUpload,
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
    /// Where this Gpu's decode matmuls read their weights from.
    weights: k::DecodeWeights,
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
        let last = stages_total - 1;
        let next_ids: Vec<wgpu::Buffer> = (0..layout.groups())
            .map(|g| device::zeros(gpu, &format!("next ids group {g}"), per))
            .collect();
        for (s, up) in held {
            let cache = KvCache::new(
                gpu,
                &up.cfg,
                shard,
                up.part.layers.len(),
                slots,
                layout.positions(),
                up.precision.dtype,
            )?;
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
                    upload: up.clone(),
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
            weights: (*k::decode_weights(gpu)).clone(),
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
            self.program(consumer.stage, step).input()
        }
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        let (g, step) = self.split(producer.microbatch);
        if producer.stage == self.last {
            &self.next_ids[g]
        } else {
            self.program(producer.stage, step).output()
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
        // Counted now: the texture copies decoding made are weights too.
        let weight_bytes: u64 = self.stages.values().map(|s| s.upload.bytes()).sum();
        let out = |sampled, logits| DecodeOutput {
            kv_bytes: self.kv_bytes(),
            weight_bytes,
            weights: self.weights.clone(),
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
        let w = &o.weights;
        let flags = u32::from(w.storage == k::WeightStorage::Texture) | (u32::from(w.forced) << 1);
        let o = (
            (o.kv_bytes, o.weight_bytes),
            (flags, (w.buffer_gbps, w.texture_gbps)),
            (o.sampled.clone(), o.logits.clone()),
        );
        Some(wire::to_bytes(&o))
    }
    fn output_from_bytes(b: &[u8]) -> Option<Self::Output> {
        let (bytes, weights, results): OutputWire = wire::from_bytes(b)?;
        let ((kv_bytes, weight_bytes), (flags, (buffer_gbps, texture_gbps))) = (bytes, weights);
        let (sampled, logits) = results;
        let storage = match flags & 1 {
            1 => k::WeightStorage::Texture,
            _ => k::WeightStorage::Buffer,
        };
        Some(DecodeOutput {
            kv_bytes,
            weight_bytes,
            weights: k::DecodeWeights {
                storage,
                buffer_gbps,
                texture_gbps,
                forced: flags & 2 != 0,
            },
            sampled,
            logits,
        })
    }
}

/// [`DecodeOutput`] on the wire: (KV and weight bytes), (the decode
/// weights' holding as flags, its two rates), (sampled ids, logits).
type OutputWire = (
    (u64, u64),
    (u32, (f64, f64)),
    (Vec<Vec<u32>>, Vec<Vec<f32>>),
);

/// What one Gpu's [`Gpt2Decode`] hands back.
pub struct DecodeOutput {
    /// Bytes of the KV caches on the Gpu.
    pub kv_bytes: u64,
    /// Bytes of weights on the Gpu (texture copies for decoding included).
    pub weight_bytes: u64,
    /// Where the Gpu's decode matmuls read their weights from.
    pub weights: k::DecodeWeights,
    /// With the last stage: per microbatch, the sampled ids of the group's
    /// sequences.
    pub sampled: Vec<Vec<u32>>,
    /// With `keep_logits`: per microbatch, (per, V) logits rows.
    pub logits: Vec<Vec<f32>>,
}
