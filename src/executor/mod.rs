//! The executor: runs a schedule's action lists across devices, one thread
//! per device, and records what ran when.
//!
//! It reads [`Schedule`] data — the same lists `wgpipe plan` prints — and
//! never derives an order of its own. Each device thread walks its row: for
//! an `F` action it makes sure the stage's input is in place (token ids for
//! stage 0, a packet from the previous stage's device, or a local copy when
//! that stage is on the same device), submits the stage's forward with a
//! timestamp on each side, and posts its output to the next stage's device
//! without waiting for it. All buffers — weights, activations, staging — are
//! allocated once per run, before the clock starts.

pub mod measure;
pub mod partition;
mod transfer;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::io::TokenBatch;
use crate::model::Gpt2Weights;
use crate::schedule::{validate::validate, Action, Schedule};
use crate::trace::{Timeline, Track};

use transfer::Mailbox;

/// A deliberate failure, for testing that one failing device stops the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// A real wgpu validation error (an out-of-bounds buffer write).
    Validation,
    /// The device's thread panics.
    Panic,
}

/// Inject `kind` on `device` just before it runs `action`.
#[derive(Clone, Copy, Debug)]
pub struct Fault {
    pub device: usize,
    pub action: Action,
    pub kind: FaultKind,
}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Layers per stage (one count per stage); even split when `None`.
    pub split: Option<Vec<usize>>,
    pub fault: Option<Fault>,
}

/// What a pipelined run produced and how long it took.
pub struct PipelineRun {
    /// (B, T, V) logits, in the input's sequence order.
    pub logits: Vec<f32>,
    /// Compute and transfer events on one clock (`timeline.clock` says which).
    pub timeline: Timeline,
    /// Host seconds from the common start to the last device finishing.
    pub wall_s: f64,
    /// Sequences per microbatch (the largest; smaller ones are padded).
    pub microbatch_sequences: usize,
    /// Cross-device hops made, and the bytes they moved.
    pub transfers: usize,
    pub bytes_moved: u64,
}

/// State the device threads share.
struct Shared {
    abort: AtomicBool,
    /// Set when a device's thread ends, so waiters on it give up.
    done: Vec<AtomicBool>,
    /// Devices that finished setup; all start the clock together.
    ready: std::sync::atomic::AtomicUsize,
    mailboxes: Vec<Mailbox>,
    epoch: Instant,
}

impl Shared {
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }
    fn fail(&self) {
        self.abort.store(true, Ordering::SeqCst);
        for m in &self.mailboxes {
            m.wake();
        }
    }
}

/// One microbatch: which input sequences it carries, and its (padded) ids.
struct Microbatch {
    first: usize,
    count: usize,
    /// (b_mb, T) ids; sequences past `count` repeat the last real one.
    ids: Vec<u32>,
}

/// Split B sequences into M microbatches as evenly as possible (sizes differ
/// by at most one; the smaller ones are padded to the largest shape and their
/// padding rows dropped from the logits).
fn microbatches(tokens: &TokenBatch, m: usize) -> Result<(usize, Vec<Microbatch>)> {
    let (b, t) = (tokens.batch, tokens.seq);
    if m == 0 || m > b {
        return Err(Error::Input(format!(
            "{m} microbatches for a batch of {b} sequences: each microbatch needs at least one sequence; use --microbatches 1..={b} or a larger --batch"
        )));
    }
    let per = b.div_ceil(m);
    let mut first = 0;
    let mbs = (0..m)
        .map(|i| {
            let count = b / m + usize::from(i < b % m);
            let mut ids = tokens.ids[first * t..(first + count) * t].to_vec();
            while ids.len() < per * t {
                ids.extend_from_within(ids.len() - t..);
            }
            let mb = Microbatch { first, count, ids };
            first += count;
            mb
        })
        .collect();
    Ok((per, mbs))
}

/// Run `schedule` (forward actions only) over `gpus` (one per schedule
/// device) on `tokens`.
pub fn run_pipeline(
    gpus: &[Gpu],
    w: &Gpt2Weights,
    tokens: &TokenBatch,
    schedule: &Schedule,
    opts: &Options,
) -> Result<PipelineRun> {
    if gpus.len() != schedule.devices {
        return Err(Error::Input(format!(
            "the schedule has {} devices but {} were given",
            schedule.devices,
            gpus.len()
        )));
    }
    if !schedule.is_forward_only() {
        return Err(Error::Input(format!(
            "schedule `{}` has backward actions; the executor runs inference: pass its forward part",
            schedule.name
        )));
    }
    validate(schedule)?;
    crate::io::check_input(&w.config, tokens)?;
    let parts = partition::partition(w.config.n_layer, schedule.stages(), opts.split.as_deref())?;
    let (per, mbs) = microbatches(tokens, schedule.microbatches)?;

    let p = gpus.len();
    let shared = Shared {
        abort: AtomicBool::new(false),
        done: (0..p).map(|_| AtomicBool::new(false)).collect(),
        ready: Default::default(),
        mailboxes: (0..p).map(|_| Mailbox::default()).collect(),
        epoch: Instant::now(),
    };
    let job = worker::Job {
        w,
        parts: &parts,
        schedule,
        mbs: &mbs,
        per,
        seq: tokens.seq,
        fault: opts.fault,
    };
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    let outcomes: Vec<Option<worker::Outcome>> = std::thread::scope(|scope| {
        for (d, gpu) in gpus.iter().enumerate() {
            let shared = &shared;
            scope.spawn(move || {
                transfer::poll_until(&gpu.device, &|| shared.done[d].load(Ordering::SeqCst))
            });
        }
        let handles: Vec<_> = gpus
            .iter()
            .enumerate()
            .map(|(d, gpu)| {
                let (job, shared, errors) = (&job, &shared, &errors);
                scope.spawn(move || {
                    let r = worker::run_device(d, gpu, job, shared);
                    shared.done[d].store(true, Ordering::SeqCst);
                    match r {
                        Ok(o) => Some(o),
                        Err(worker::Stop::Aborted) => None,
                        Err(worker::Stop::Failed(e)) => {
                            shared.fail();
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                            None
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });
    if let Some(e) = errors
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .next()
    {
        return Err(e);
    }
    let outcomes: Vec<worker::Outcome> = outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| Error::Other("a device stopped without saying why".into())))
        .collect::<Result<_>>()?;

    // Assemble the logits in input order and the timeline on the common clock.
    let v = w.config.vocab_size;
    let row = tokens.seq * v;
    let mut logits = vec![0f32; tokens.batch * row];
    let mut events = Vec::new();
    let (mut transfers, mut bytes_moved) = (0, 0);
    let mut clock = "gpu-timestamps";
    let mut wall_s: f64 = 0.0;
    for o in outcomes {
        for (m, l) in o.logits {
            let mb = &mbs[m];
            logits[mb.first * row..(mb.first + mb.count) * row]
                .copy_from_slice(&l[..mb.count * row]);
        }
        transfers += o.transfers;
        bytes_moved += o.bytes_moved;
        if !o.gpu_clock {
            clock = "host";
        }
        wall_s = wall_s.max(o.finished_s);
        events.extend(o.events);
    }
    // A transfer's host clock starts when the consumer asked for the data;
    // the data exists only from its producer's end (GPU clock) on.
    let produced: std::collections::HashMap<String, f64> = events
        .iter()
        .filter(|e| matches!(e.track, Track::Compute { .. }))
        .map(|e| (e.name.clone(), e.end_us))
        .collect();
    for e in events
        .iter_mut()
        .filter(|e| matches!(e.track, Track::Transfer { .. }))
    {
        if let Some(a) = e.action.filter(|a| a.stage > 0) {
            let producer = Action {
                stage: a.stage - 1,
                ..a
            };
            if let Some(&end) = produced.get(&producer.to_string()) {
                e.start_us = e.start_us.max(end).min(e.end_us);
            }
        }
    }
    events.sort_by(|a, b| a.start_us.total_cmp(&b.start_us));
    Ok(PipelineRun {
        logits,
        timeline: Timeline {
            device_names: gpus.iter().map(|g| g.label.clone()).collect(),
            events,
            clock: clock.into(),
        },
        wall_s,
        microbatch_sequences: per,
        transfers,
        bytes_moved,
    })
}
