//! One device's thread: set up its stages, wait for every device to be ready,
//! then run its row of the schedule in order.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;

use super::transfer::{receive, Packet, WaitError};
use super::{Fault, FaultKind, Microbatch, Shared};
use crate::device::timestamps::{ClockMap, TimestampLog};
use crate::device::{read_mapped, staging, wait_idle, zeros, Gpu};
use crate::error::Error;
use crate::model::gpu::{GpuStage, StagePart};
use crate::model::Gpt2Weights;
use crate::schedule::{Action, Schedule};
use crate::trace::{Event, Track};

/// What every device thread reads.
pub(super) struct Job<'a> {
    pub w: &'a Gpt2Weights,
    pub parts: &'a [StagePart],
    pub schedule: &'a Schedule,
    pub mbs: &'a [Microbatch],
    /// Sequences per (padded) microbatch.
    pub per: usize,
    pub seq: usize,
    pub fault: Option<Fault>,
}

/// What a device thread hands back.
pub(super) struct Outcome {
    pub events: Vec<Event>,
    /// (microbatch, its (b_mb, T, V) logits) from the device holding the head.
    pub logits: Vec<(usize, Vec<f32>)>,
    pub transfers: usize,
    pub bytes_moved: u64,
    /// Compute events come from GPU timestamps (else host clocks).
    pub gpu_clock: bool,
    /// Seconds from the common start to this device finishing.
    pub finished_s: f64,
}

pub(super) enum Stop {
    /// Another device failed first.
    Aborted,
    Failed(Error),
}

/// Run device `d`'s part of the job, turning a panic into an error that names
/// the device and the action it was on.
pub(super) fn run_device(d: usize, gpu: &Gpu, job: &Job, shared: &Shared) -> Result<Outcome, Stop> {
    let mut current = String::from("setup");
    let r = catch_unwind(AssertUnwindSafe(|| {
        device_body(d, gpu, job, shared, &mut current)
    }));
    match r {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(Stop::Failed(Error::Pipeline {
                device: format!("device {d}: {}", gpu.label),
                stage: stage_of(&current),
                action: current,
                msg: format!("thread panicked: {msg}"),
            }))
        }
    }
}

fn stage_of(action: &str) -> String {
    action
        .parse::<Action>()
        .map(|a| a.stage.to_string())
        .unwrap_or_else(|_| "-".into())
}

fn device_body(
    d: usize,
    gpu: &Gpu,
    job: &Job,
    shared: &Shared,
    current: &mut String,
) -> Result<Outcome, Stop> {
    let s = job.schedule;
    let last = s.stages() - 1;
    let fail = |action: &str, msg: String| {
        Stop::Failed(Error::Pipeline {
            device: format!("device {d}: {}", gpu.label),
            stage: stage_of(action),
            action: action.to_string(),
            msg,
        })
    };
    let setup_err = |e: Error| fail("setup", e.to_string());

    // --- setup: stages, staging and hand-over buffers, timestamps --------
    let mut stages = HashMap::new();
    for st in (d..s.stages()).step_by(s.devices) {
        let stage = GpuStage::new(gpu, job.w, job.parts[st].clone(), job.per, job.seq)
            .map_err(setup_err)?;
        stages.insert(st, stage);
    }
    let m = s.microbatches;
    let mut out_staging = HashMap::new(); // (stage, mb) -> MAP_READ buffer for the next device
    let mut hold = HashMap::new(); // (stage, mb) -> output kept on this device for its next stage
    let mut logits_staging = HashMap::new();
    for (&st, stage) in &stages {
        for mb in 0..m {
            if st == last {
                logits_staging.insert(mb, staging(gpu, "logits out", stage.logits_bytes()));
            } else if s.device_of_stage(st + 1) == d {
                hold.insert(
                    (st, mb),
                    zeros(gpu, "hold (N,C)", stage.rows() * job.w.config.n_embd),
                );
            } else {
                out_staging.insert(
                    (st, mb),
                    staging(gpu, "activation out", stage.activation_bytes()),
                );
            }
        }
    }
    let actions: Vec<Action> = s.rows[d].iter().flatten().copied().collect();
    let mut ts = TimestampLog::new(gpu, 2 * actions.len() as u32);
    let clock = match ts {
        Some(_) => Some(ClockMap::calibrate(gpu, shared.epoch).map_err(setup_err)?),
        None => None,
    };
    gpu.check().map_err(setup_err)?;

    // --- start together ---------------------------------------------------
    shared.ready.fetch_add(1, Ordering::SeqCst);
    while shared.ready.load(Ordering::SeqCst) < s.devices {
        if shared.aborted() {
            return Err(Stop::Aborted);
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
    let now_us = || shared.epoch.elapsed().as_secs_f64() * 1e6;
    let start_us = now_us();

    // --- the schedule ---------------------------------------------------------
    let mut events = Vec::new();
    let mut stamps = Vec::new(); // (action, begin index, end index)
    let (mut transfers, mut bytes_moved) = (0, 0);
    for a in &actions {
        *current = a.to_string();
        if shared.aborted() {
            return Err(Stop::Aborted);
        }
        let stage = &stages[&a.stage];
        let mb = a.microbatch;
        if let Some(f) = job.fault.filter(|f| f.device == d && f.action == *a) {
            match f.kind {
                FaultKind::Validation => {
                    gpu.queue.write_buffer(&stage.x, stage.x.size(), &[0u8; 4])
                }
                FaultKind::Panic => panic!("injected fault"),
            }
        }
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        // Input.
        if a.stage == 0 {
            stage.write_ids(gpu, &job.mbs[mb].ids);
        } else {
            let from = s.device_of_stage(a.stage - 1);
            if from == d {
                let src = &hold[&(a.stage - 1, mb)];
                enc.copy_buffer_to_buffer(src, 0, &stage.x, 0, stage.activation_bytes());
            } else {
                let p = shared.mailboxes[d]
                    .take((a.stage, mb), from, &shared.abort, &shared.done)
                    .map_err(|e| match e {
                        WaitError::Aborted => Stop::Aborted,
                        WaitError::ProducerGone(f) => fail(
                            &current.clone(),
                            format!("device {f} finished without sending its output"),
                        ),
                    })?;
                let t0 = now_us();
                receive(&p, &gpu.queue, &stage.x, &shared.abort).map_err(|msg| {
                    if shared.aborted() {
                        Stop::Aborted
                    } else {
                        fail(&current.clone(), msg)
                    }
                })?;
                events.push(Event {
                    track: Track::Transfer { from, to: d },
                    name: format!("{a} {from}->{d}"),
                    action: Some(*a),
                    start_us: t0,
                    end_us: now_us(),
                    bytes: p.bytes,
                });
                transfers += 1;
                bytes_moved += p.bytes;
            }
        }
        // Compute, between two timestamps.
        let begin = ts.as_mut().map(|t| t.write(&mut enc));
        stage.encode(&mut enc);
        let end = ts.as_mut().map(|t| t.write(&mut enc));
        // Output.
        let mut post = None;
        if a.stage == last {
            enc.copy_buffer_to_buffer(
                stage.logits.as_ref().expect("last stage has the head"),
                0,
                &logits_staging[&mb],
                0,
                stage.logits_bytes(),
            );
        } else if let Some(h) = hold.get(&(a.stage, mb)) {
            enc.copy_buffer_to_buffer(&stage.x, 0, h, 0, stage.activation_bytes());
        } else {
            let st = &out_staging[&(a.stage, mb)];
            enc.copy_buffer_to_buffer(&stage.x, 0, st, 0, stage.activation_bytes());
            post = Some((s.device_of_stage(a.stage + 1), st.clone()));
        }
        let t_submit = now_us();
        gpu.queue.submit([enc.finish()]);
        if let Err(e) = gpu.check() {
            return Err(fail(&current.clone(), e.to_string()));
        }
        if let Some((to, staging)) = post {
            // An empty submit right behind: measured on lavapipe, a
            // submission's completion (and so the staging map) became
            // visible to polls only once the *next* submission finished,
            // stalling the consumer for up to a whole producer action
            // (transfer mean 0.7-1.3 ms, max 7-9 ms; with this: 0.05, 0.2).
            gpu.queue.submit([]);
            let bytes = stage.activation_bytes();
            let packet = Packet::new(d, staging, bytes);
            shared.mailboxes[to].post((a.stage + 1, mb), packet);
        }
        match (begin, end) {
            (Some(b), Some(e)) => stamps.push((*a, b, e)),
            _ => {
                // Host clock: wait for this action so its end is known.
                wait_idle(&gpu.device, &|| shared.aborted())
                    .map_err(|msg| fail(&current.clone(), msg))?;
                events.push(compute_event(d, *a, t_submit, now_us()));
            }
        }
    }

    // --- drain, then read timestamps and logits -------------------------------
    *current = "finish".into();
    wait_idle(&gpu.device, &|| shared.aborted()).map_err(|msg| {
        if shared.aborted() {
            Stop::Aborted
        } else {
            fail("finish", msg)
        }
    })?;
    let finished_s = (now_us() - start_us) / 1e6;
    gpu.check().map_err(|e| fail("finish", e.to_string()))?;
    if let (Some(ts), Some(clock)) = (&ts, &clock) {
        let ticks = ts.read(gpu).map_err(|e| fail("finish", e.to_string()))?;
        for (a, b, e) in stamps {
            let (b, e) = (
                clock.to_host_us(ticks[b as usize]),
                clock.to_host_us(ticks[e as usize]),
            );
            events.push(compute_event(d, a, b, e.max(b)));
        }
    }
    let mut logits = Vec::new();
    if let Some(stage) = stages.get(&last) {
        let vp = job.w.config.vocab_size.next_multiple_of(4);
        for (mb, st) in &logits_staging {
            let padded: Vec<f32> = read_mapped(gpu, st, stage.rows() * vp)
                .map_err(|e| fail("finish", e.to_string()))?;
            logits.push((*mb, stage.strip_logits(&padded)));
        }
    }
    Ok(Outcome {
        events,
        logits,
        transfers,
        bytes_moved,
        gpu_clock: clock.is_some(),
        finished_s,
    })
}

fn compute_event(d: usize, a: Action, start_us: f64, end_us: f64) -> Event {
    Event {
        track: Track::compute(d),
        name: a.to_string(),
        action: Some(a),
        start_us,
        end_us,
        bytes: 0,
    }
}
