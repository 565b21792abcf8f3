//! Continuous batching over the decode pipeline: what `wgpipe serve` runs.
//!
//! [`generate`](super::generate) decodes a fixed set of prompts laid out
//! once ([`super::Layout`]). A server's sequences come and go, so here the
//! first stage asks a [`Feeder`] what each microbatch holds just before it
//! encodes it: a [`Pass`] of rows, each one token of one sequence at its
//! own (slot, position) in the KV cache, and the rows whose logits are
//! sampled. A row of a sequence still reading its prompt is a prompt token
//! (a chunk of the prompt per pass, so a long prompt shares its passes with
//! the other sequences' decode rows); the row of a decoding sequence is its
//! last token. Every row runs the decode program ([`Mode::Decode`]): its key
//! and value are written into the cache before any row attends, and each
//! row attends over positions 0 ..= its own of its slot only, so a prompt
//! processed this way computes what a prefill computes, and a row's result
//! depends on nothing else in its pass.
//!
//! The schedule is still [`Schedule::decode`](crate::schedule::Schedule::decode)
//! (microbatch u = group u mod G at step u / G), run in segments of a fixed
//! number of microbatches; what persists between segments — the KV caches,
//! the programs, the sampler — lives in one [`ServeEndpoint`] per Gpu. The
//! last stage's sampled ids (4 bytes a sample) still travel to the first
//! stage one step later, so at most G passes are in flight, but the first
//! stage takes its token ids from the host: the feeder hears every sampled
//! token ([`Feeder::arrived`]) before it puts its sequence into another pass.
//!
//! Sampling settings differ per request, so the last stage samples each
//! sampled row with its own dispatch of the `sample` kernel (one output
//! each, parameters rewritten per pass): the same kernel `generate` runs,
//! with the same uniform for the same (seed, step), hence the same tokens.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::action::{Action, Kind, Product};
use crate::device::{self, Gpu};
use crate::error::{Error, Result};
use crate::executor::{ActionEncoder, Control, StageProgram};
use crate::kernels::{self as k, Dispatch, SampleParams};
use crate::model::gpu::{GpuStage, KvCache, Mode, StageEncoder, StageUpload};
use crate::model::Shard;
use crate::sampling::SampleSettings;

/// One row of a pass: token `token` of the sequence in cache slot `slot`,
/// at position `pos`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub slot: u32,
    pub pos: u32,
    pub token: u32,
}

/// A sampled row: the next token of sequence `seq` (the feeder's id) from
/// the logits of row `row` of the pass, drawn with `uniform` under `settings`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub row: u32,
    pub seq: u64,
    pub uniform: f32,
    pub settings: SampleSettings,
}

/// What one microbatch computes.
#[derive(Clone, Debug, Default)]
pub struct Pass {
    pub rows: Vec<Row>,
    pub samples: Vec<Sample>,
}

/// The capacities a server's passes are built for.
#[derive(Clone, Copy, Debug)]
pub struct PassShape {
    /// Sequences the KV cache holds at once (slots `0..slots`; one more
    /// slot takes the padding rows).
    pub slots: usize,
    /// Rows per pass at most (decode rows and prompt chunks together).
    pub rows: usize,
    /// Groups in flight G.
    pub groups: usize,
    /// Microbatches per segment (a multiple of G).
    pub segment: usize,
}

/// Decides what each pass holds and hears what it sampled: the server's
/// batcher. Called from the devices' threads.
pub trait Feeder: Send + Sync {
    /// The next pass (blocking until there is work); `None` ends the run,
    /// as it must soon after `give_up()` turns true (another device failed).
    /// A pass holds at most `shape.rows` rows and as many samples.
    fn next_pass(&self, give_up: &dyn Fn() -> bool) -> Option<Arc<Pass>>;
    /// The ids `pass` sampled, one per [`Pass::samples`], in order (from
    /// the last device's poller thread).
    fn arrived(&self, pass: &Pass, ids: &[u32]);
}

/// The decode programs of one stage, one per row count (powers of two up
/// to the pass's rows), over one KV cache.
struct ServeStage {
    programs: Vec<GpuStage>,
    _cache: KvCache,
}

impl ServeStage {
    /// The smallest program that holds `rows` rows.
    fn for_rows(&self, rows: usize) -> &GpuStage {
        self.programs
            .iter()
            .find(|p| p.rows() >= rows)
            .unwrap_or_else(|| self.programs.last().expect("a stage has programs"))
    }
}

/// The last stage's per-row sampler: one `sample` dispatch of one output
/// per possible sampled row.
struct RowSampler {
    /// (rows, Vp) the logits rows being sampled, copied out of the program's.
    logits: wgpu::Buffer,
    uniforms: Vec<wgpu::Buffer>,
    outs: Vec<wgpu::Buffer>,
    dispatches: Vec<Dispatch>,
    /// MAP_READ buffers of `rows` u32 the sampled ids are read back through.
    free: Arc<Mutex<Vec<wgpu::Buffer>>>,
}

/// What one Gpu keeps between segments: its stage's programs and KV cache,
/// the buffers messages pass through, and on the last stage the sampler.
pub struct ServeEndpoint {
    stages: BTreeMap<usize, ServeStage>,
    last: usize,
    rows: usize,
    dummy_slot: u32,
    n_embd: usize,
    /// The activations' type between stages ([`crate::device::Precision::hop`]).
    hop: crate::device::Dtype,
    vocab: (usize, usize),
    /// (rows, C) the activation received from the previous stage and the
    /// one sent to the next.
    carry_in: wgpu::Buffer,
    carry_out: wgpu::Buffer,
    /// (rows) u32 the sampled ids, sent to the first stage, and where the
    /// first stage receives them (it reads the feeder's ids instead).
    tokens: wgpu::Buffer,
    tokens_in: wgpu::Buffer,
    sampler: Option<RowSampler>,
    /// Passes this Gpu has encoded (every segment).
    passes: AtomicUsize,
}

impl ServeEndpoint {
    /// `shard`'s part of the stages `held` on `gpu`, for passes of `shape`
    /// over `stages_total` stages.
    pub fn new(
        gpu: &Gpu,
        shard: Shard,
        held: &[(usize, StageUpload)],
        stages_total: usize,
        shape: PassShape,
    ) -> Result<ServeEndpoint> {
        let cfg = &held
            .first()
            .ok_or_else(|| Error::Other("bug: a Gpu without stages".into()))?
            .1
            .cfg;
        let (rows, last) = (shape.rows.max(1), stages_total - 1);
        let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
            .take_while(|&n| n < rows)
            .collect();
        sizes.push(rows);
        let mut stages = BTreeMap::new();
        let mut sampler = None;
        for (s, up) in held {
            let cache = KvCache::new(
                gpu,
                &up.cfg,
                shard,
                up.part.layers.len(),
                shape.slots + 1,
                up.cfg.n_positions,
                up.precision.dtype,
            )?;
            let programs = sizes
                .iter()
                .map(|&n| GpuStage::build(gpu, up, n, 1, Mode::Decode(&cache)))
                .collect::<Result<Vec<_>>>()?;
            if *s == last {
                sampler = Some(RowSampler::new(gpu, cfg, rows));
            }
            stages.insert(
                *s,
                ServeStage {
                    programs,
                    _cache: cache,
                },
            );
        }
        Ok(ServeEndpoint {
            stages,
            last,
            rows,
            dummy_slot: shape.slots as u32,
            n_embd: cfg.n_embd,
            hop: held
                .first()
                .map_or(crate::device::Dtype::F32, |(_, up)| up.precision.hop),
            vocab: (cfg.vocab_size, cfg.padded_vocab()),
            carry_in: device::zeros(gpu, "serve activation in (rows,C)", rows * cfg.n_embd),
            carry_out: device::zeros(gpu, "serve activation out (rows,C)", rows * cfg.n_embd),
            tokens: device::zeros(gpu, "serve sampled ids (rows)", rows),
            tokens_in: device::zeros(gpu, "serve sampled ids in (rows)", rows),
            sampler,
            passes: AtomicUsize::new(0),
        })
    }
}

impl RowSampler {
    fn new(gpu: &Gpu, cfg: &crate::model::Gpt2Config, rows: usize) -> RowSampler {
        let (v, vp) = (cfg.vocab_size, cfg.padded_vocab());
        let logits = device::zeros(gpu, "serve sampled logits (rows,Vp)", rows * vp);
        let uniforms: Vec<_> = (0..rows)
            .map(|_| device::zeros(gpu, "serve uniform", 1))
            .collect();
        let outs: Vec<_> = (0..rows)
            .map(|_| device::zeros(gpu, "serve sampled id", 1))
            .collect();
        let dispatches = (0..rows)
            .map(|j| {
                let row = device::upload_pod(gpu, "serve sample row", &[j as u32]);
                k::sample(
                    gpu,
                    &outs[j],
                    &logits,
                    &row,
                    &uniforms[j],
                    1,
                    v,
                    vp,
                    &SampleSettings::default(),
                )
            })
            .collect();
        RowSampler {
            logits,
            uniforms,
            outs,
            dispatches,
            free: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// The passes of one segment, shared by its devices: the first stage
/// decides each (once, under tensor parallelism too), the others look it up.
pub struct Passes<'a> {
    feeder: Arc<dyn Feeder>,
    /// The run's control: the feeder gives up once it is aborted.
    control: &'a dyn Control,
    decided: Mutex<HashMap<usize, Arc<Pass>>>,
    decide: Mutex<()>,
}

impl<'a> Passes<'a> {
    pub fn new(feeder: Arc<dyn Feeder>, control: &'a dyn Control) -> Passes<'a> {
        Passes {
            feeder,
            control,
            decided: Mutex::new(HashMap::new()),
            decide: Mutex::new(()),
        }
    }

    fn lookup(&self, u: usize) -> Option<Arc<Pass>> {
        let map = self.decided.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&u).cloned()
    }

    /// Microbatch `u`'s pass: decided here when `first` (the first stage).
    fn get(&self, u: usize, first: bool) -> Result<Arc<Pass>> {
        if !first {
            return self.lookup(u).ok_or_else(|| {
                Error::Other(format!("bug: pass {u} reached a later stage undecided"))
            });
        }
        let _one = self.decide.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = self.lookup(u) {
            return Ok(p);
        }
        let pass = self
            .feeder
            .next_pass(&|| self.control.aborted())
            .ok_or_else(|| Error::Other("serving stopped".into()))?;
        self.decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(u, pass.clone());
        Ok(pass)
    }
}

/// One Gpu's program for a segment of serving (see the module doc).
pub struct ServeDecode<'a> {
    ep: &'a ServeEndpoint,
    passes: &'a Passes<'a>,
    /// This Gpu reports the sampled ids (rank 0 of the last stage).
    reports: bool,
    /// Read-backs requested and not yet completed.
    pending: Arc<AtomicUsize>,
    /// The read-back buffer of the pass being encoded.
    staged: Option<(wgpu::Buffer, Arc<Pass>)>,
    /// Test builds: fail this Gpu's pass number N (WGPIPE_TEST_FAIL_DEVICE=D:N).
    fail_at: Option<usize>,
}

impl<'a> ServeDecode<'a> {
    pub fn new(
        ep: &'a ServeEndpoint,
        passes: &'a Passes<'a>,
        device: usize,
        shard: Shard,
    ) -> ServeDecode<'a> {
        ServeDecode {
            ep,
            passes,
            reports: shard.rank == 0 && ep.stages.contains_key(&ep.last),
            pending: Arc::new(AtomicUsize::new(0)),
            staged: None,
            fail_at: injected_failure(device),
        }
    }
}

/// `WGPIPE_TEST_FAIL_DEVICE=D:N`: device D fails its N-th pass (from 0),
/// in test builds (`fault-injection`) only.
#[cfg(feature = "fault-injection")]
fn injected_failure(device: usize) -> Option<usize> {
    let v = std::env::var("WGPIPE_TEST_FAIL_DEVICE").ok()?;
    let (d, n) = v.split_once(':')?;
    (d.parse::<usize>().ok()? == device).then_some(n.parse().ok()?)
}

#[cfg(not(feature = "fault-injection"))]
fn injected_failure(_device: usize) -> Option<usize> {
    None
}

impl StageProgram for ServeDecode<'_> {
    type Output = ();

    fn message_bytes(&self, p: Product) -> u64 {
        match p.stage == self.ep.last {
            true => (4 * self.ep.rows) as u64,
            false => self.ep.hop.bytes(self.ep.rows * self.ep.n_embd),
        }
    }

    fn input(&self, consumer: Action, _p: Product) -> &wgpu::Buffer {
        match consumer.stage {
            0 => &self.ep.tokens_in,
            _ => &self.ep.carry_in,
        }
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        match producer.stage == self.ep.last {
            true => &self.ep.tokens,
            false => &self.ep.carry_out,
        }
    }

    fn encode(&mut self, gpu: &Gpu, a: Action, enc: &mut ActionEncoder) -> Result<()> {
        if a.kind != Kind::F {
            return Err(Error::Input(format!(
                "{a}: serving runs forward actions only"
            )));
        }
        let pass = self.passes.get(a.microbatch, a.stage == 0)?;
        let n_pass = self.ep.passes.fetch_add(1, Ordering::SeqCst);
        if self.fail_at == Some(n_pass) {
            return Err(Error::Other(format!(
                "injected failure at pass {n_pass} (WGPIPE_TEST_FAIL_DEVICE)"
            )));
        }
        let ep = self.ep;
        let prog = ep.stages[&a.stage].for_rows(pass.rows.len());
        let n = prog.rows();
        let mut table: Vec<(u32, u32)> = pass.rows.iter().map(|r| (r.slot, r.pos)).collect();
        table.resize(n, (ep.dummy_slot, 0));
        prog.write_rows(gpu, &table);
        let bytes = prog.activation_bytes();
        if a.stage == 0 {
            let mut ids: Vec<u32> = pass.rows.iter().map(|r| r.token).collect();
            ids.resize(n, 0);
            prog.write_ids(gpu, &ids);
        } else {
            enc.copy_buffer_to_buffer(&ep.carry_in, 0, prog.input(), 0, bytes);
        }
        prog.encode_in(enc)?;
        if a.stage != ep.last {
            enc.copy_buffer_to_buffer(prog.output(), 0, &ep.carry_out, 0, bytes);
            return Ok(());
        }
        let logits = prog.logits.as_ref().expect("the last stage has the head");
        if prog.shard.split() {
            enc.all_reduce(logits, prog.logits_bytes())?;
        }
        let sm = ep.sampler.as_ref().expect("the last stage samples");
        let (v, vp) = ep.vocab;
        let row_bytes = (4 * vp) as u64;
        for (j, s) in pass.samples.iter().enumerate() {
            enc.copy_buffer_to_buffer(
                logits,
                s.row as u64 * row_bytes,
                &sm.logits,
                j as u64 * row_bytes,
                row_bytes,
            );
            gpu.queue
                .write_buffer(&sm.uniforms[j], 0, bytemuck::bytes_of(&s.uniform));
            sm.dispatches[j].set_params(&gpu.queue, &SampleParams::new(1, v, vp, &s.settings))?;
        }
        if !pass.samples.is_empty() {
            let mut cpass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("serve sample"),
                timestamp_writes: None,
            });
            for d in &sm.dispatches[..pass.samples.len()] {
                d.encode(&mut cpass);
            }
        }
        for j in 0..pass.samples.len() {
            enc.copy_buffer_to_buffer(&sm.outs[j], 0, &ep.tokens, 4 * j as u64, 4);
        }
        if self.reports && !pass.samples.is_empty() {
            let staging = sm
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_else(|| {
                    device::staging(gpu, "serve sampled ids out", (4 * ep.rows) as u64)
                });
            self.staged = Some((staging, pass));
        }
        Ok(())
    }

    fn encode_results(&mut self, _gpu: &Gpu, _a: Action, enc: &mut wgpu::CommandEncoder) {
        if let Some((staging, pass)) = &self.staged {
            let bytes = (4 * pass.samples.len()) as u64;
            enc.copy_buffer_to_buffer(&self.ep.tokens, 0, staging, 0, bytes);
        }
    }

    fn submitted(&mut self, _gpu: &Gpu, _a: Action) {
        let Some((buf, pass)) = self.staged.take() else {
            return;
        };
        let k = pass.samples.len();
        let pending = self.pending.clone();
        pending.fetch_add(1, Ordering::SeqCst);
        let feeder = self.passes.feeder.clone();
        let free = self
            .ep
            .sampler
            .as_ref()
            .expect("the last stage samples")
            .free
            .clone();
        let b = buf.clone();
        buf.slice(..(4 * k) as u64)
            .map_async(wgpu::MapMode::Read, move |r| {
                let ids: Option<Vec<u32>> = match r {
                    Ok(()) => b
                        .slice(..(4 * k) as u64)
                        .get_mapped_range()
                        .ok()
                        .map(|view| bytemuck::cast_slice::<u8, u32>(&view).to_vec()),
                    Err(_) => None,
                };
                b.unmap();
                if let Some(ids) = ids {
                    feeder.arrived(&pass, &ids);
                }
                free.lock().unwrap_or_else(|e| e.into_inner()).push(b);
                pending.fetch_sub(1, Ordering::SeqCst);
            });
    }

    fn finish(self, gpu: &Gpu) -> Result<()> {
        // The device is idle and every map was requested after its submit:
        // polling fires the callbacks left (a minute at most: a lost
        // callback is an error, not a hang).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.pending.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() > deadline {
                return Err(Error::Other(format!(
                    "{} sampled-token read-backs never completed",
                    self.pending.load(Ordering::SeqCst)
                )));
            }
            let _ = gpu.device.poll(wgpu::PollType::Poll);
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
        Ok(())
    }
}
