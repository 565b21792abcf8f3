//! One schedule device's thread: set up its program and message buffers,
//! wait for every device to be ready, then run its steps in order.
//!
//! A step is one action of the schedule's row with the messages the
//! [`Plan`](super::plan::Plan) derived for it. For each step the worker
//! places the incoming messages (from the transport, or from a local
//! hand-over buffer), has the program encode the action between two
//! timestamps, copies the outgoing messages out in the same submission, and
//! hands remote ones to the transport without waiting. Nothing here knows
//! which kind of action it runs or which way a message flows.

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::encoder::{ActionEncoder, Rank, ReduceStaging};
use super::plan::{Outgoing, Step};
use super::program::StageProgram;
use super::transport::{Collective, Control, Transport, WaitError};
use crate::action::{Action, Product};
use crate::device::timestamps::{ClockMap, TimestampLog};
use crate::device::{self as buffers, wait_idle, Gpu};
use crate::error::Error;
use crate::model::Shard;
use crate::trace::{Event, Track};

/// A message moved between two devices, as the consumer saw it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TransferRecord {
    pub product: Product,
    pub producer: Action,
    pub consumer: Action,
    /// Schedule devices; under tensor parallelism rank `rank` of the one
    /// group sends to rank `rank` of the other.
    pub from: usize,
    pub to: usize,
    pub rank: usize,
    /// Host clock, µs from the run's epoch: from the consumer asking to the
    /// bytes being on its queue (the run clips the start to the producer's end).
    pub start_us: f64,
    pub end_us: f64,
    pub bytes: u64,
}

/// What a device thread hands back.
pub(super) struct Outcome<O> {
    /// Compute events of this device.
    pub events: Vec<Event>,
    /// Messages this device received from other devices.
    pub received: Vec<TransferRecord>,
    pub output: O,
    /// Compute events come from GPU timestamps (else host clocks).
    pub gpu_clock: bool,
    /// Seconds from the common start to this device finishing.
    pub finished_s: f64,
    /// Bytes this rank moved through the host in all-reduces (each partial
    /// sent and each sum received).
    pub reduced_bytes: u64,
}

pub(super) enum Stop {
    /// Another device failed first.
    Aborted,
    Failed(Error),
}

/// Where a device thread is, for error messages.
#[derive(Clone, Copy, Debug)]
enum At {
    Setup,
    Action(Action),
    Finish,
}

/// Everything one device thread works with: a schedule device's Gpu, or
/// one rank's of a tensor-parallel group (each rank runs every step of its
/// device, on its shard, meeting the others at each all-reduce).
pub(super) struct Device<'a> {
    pub index: usize,
    /// This thread's rank in the device's group.
    pub shard: Shard,
    /// The Gpu this thread runs the device's actions on.
    pub gpu: &'a Gpu,
    pub steps: &'a [Step],
    pub control: &'a dyn Control,
    pub transport: &'a dyn Transport,
    pub collective: &'a dyn Collective,
}

impl Device<'_> {
    /// The endpoint of rank `self.shard.rank` of schedule device `d`.
    fn endpoint(&self, d: usize) -> usize {
        d * self.shard.of + self.shard.rank
    }

    /// `device 2` or, in a tensor-parallel group, `device 2 rank 1`.
    fn name(&self, endpoint: usize) -> String {
        let tp = self.shard.of;
        match tp {
            1 => format!("device {endpoint}"),
            _ => format!("device {} rank {}", endpoint / tp, endpoint % tp),
        }
    }

    fn fail(&self, at: At, msg: impl Into<String>) -> Stop {
        let (stage, action) = match at {
            At::Setup => ("-".to_string(), "setup".to_string()),
            At::Finish => ("-".to_string(), "finish".to_string()),
            At::Action(a) => (a.stage.to_string(), a.to_string()),
        };
        Stop::Failed(Error::Pipeline {
            device: format!(
                "{}: {}",
                self.name(self.endpoint(self.index)),
                self.gpu.label
            ),
            stage,
            action,
            msg: msg.into(),
        })
    }

    /// A failed wait: quiet if the run was aborted anyway.
    fn wait_failed(&self, at: At, e: WaitError) -> Stop {
        match e {
            WaitError::Aborted => Stop::Aborted,
            _ if self.control.aborted() => Stop::Aborted,
            WaitError::ProducerGone(f) => self.fail(
                at,
                format!("{} finished without sending its output", self.name(f)),
            ),
            WaitError::Failed(msg) => self.fail(at, msg),
        }
    }

    fn now_us(&self) -> f64 {
        self.control.epoch().elapsed().as_secs_f64() * 1e6
    }
}

/// Run device `dev`'s steps with the program `make` builds, turning a panic
/// into an error that names the device and the action it was on.
pub(super) fn run_device<P: StageProgram>(
    dev: &Device,
    make: impl FnOnce(&Gpu) -> crate::error::Result<P>,
) -> Result<Outcome<P::Output>, Stop> {
    let at = Cell::new(At::Setup);
    match catch_unwind(AssertUnwindSafe(|| body(dev, make, &at))) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(dev.fail(at.get(), format!("thread panicked: {msg}")))
        }
    }
}

fn body<P: StageProgram>(
    dev: &Device,
    make: impl FnOnce(&Gpu) -> crate::error::Result<P>,
    at: &Cell<At>,
) -> Result<Outcome<P::Output>, Stop> {
    let gpu = dev.gpu;
    let setup_err = |e: Error| dev.fail(At::Setup, e.to_string());
    let mut program = make(gpu).map_err(setup_err)?;
    let buffers = MessageBuffers::new(dev, &program);
    let mut ts = TimestampLog::new(gpu, 2 * dev.steps.len() as u32);
    let clock = match ts {
        Some(_) => Some(ClockMap::calibrate(gpu, dev.control.epoch()).map_err(setup_err)?),
        None => None,
    };
    gpu.check().map_err(setup_err)?;

    dev.control
        .start(dev.endpoint(dev.index))
        .map_err(|e| dev.wait_failed(At::Setup, e))?;
    let start_us = dev.now_us();
    let mut rec = Record::default();
    let mut reduce = ReduceStaging::default();
    for step in dev.steps {
        at.set(At::Action(step.action));
        if dev.control.aborted() {
            return Err(Stop::Aborted);
        }
        run_step(
            dev,
            &mut program,
            &buffers,
            ts.as_mut(),
            step,
            &mut rec,
            &mut reduce,
        )?;
    }

    at.set(At::Finish);
    wait_idle(&gpu.device, &|| dev.control.aborted())
        .map_err(|msg| dev.wait_failed(At::Finish, WaitError::Failed(msg)))?;
    let finished_s = (dev.now_us() - start_us) / 1e6;
    gpu.check()
        .map_err(|e| dev.fail(At::Finish, e.to_string()))?;
    if let (Some(ts), Some(clock)) = (&ts, &clock) {
        let ticks = ts
            .read(gpu)
            .map_err(|e| dev.fail(At::Finish, e.to_string()))?;
        for &(a, b, e) in &rec.stamps {
            let (b, e) = (
                clock.to_host_us(ticks[b as usize]),
                clock.to_host_us(ticks[e as usize]),
            );
            rec.events.push(compute_event(dev, a, b, e.max(b)));
        }
    }
    let output = program
        .finish(gpu)
        .map_err(|e| dev.fail(At::Finish, e.to_string()))?;
    Ok(Outcome {
        events: rec.events,
        received: rec.received,
        output,
        gpu_clock: clock.is_some(),
        finished_s,
        reduced_bytes: rec.reduced_bytes,
    })
}

/// What a device records while it runs.
#[derive(Default)]
struct Record {
    events: Vec<Event>,
    /// (action, begin timestamp index, end timestamp index)
    stamps: Vec<(Action, u32, u32)>,
    received: Vec<TransferRecord>,
    reduced_bytes: u64,
}

/// One step: messages in, the action between two timestamps, messages out.
fn run_step<P: StageProgram>(
    dev: &Device,
    program: &mut P,
    buffers: &MessageBuffers,
    ts: Option<&mut TimestampLog>,
    step: &Step,
    rec: &mut Record,
    reduce: &mut ReduceStaging,
) -> Result<(), Stop> {
    let (gpu, a) = (dev.gpu, step.action);
    let at = At::Action(a);
    let rank = Rank {
        device: dev.index,
        rank: dev.shard.rank,
        tp: dev.shard.of,
        endpoint: dev.endpoint(dev.index),
        collective: dev.collective,
        control: dev.control,
    };
    let mut enc = ActionEncoder::for_rank(gpu, rank, reduce);
    receive(dev, program, buffers, step, &mut enc, rec)?;
    // Compute, between two timestamps (in the action's first and last
    // submission when it all-reduces in between).
    let mut ts = ts;
    let begin = ts.as_mut().map(|t| t.write(&mut enc));
    program
        .encode(gpu, a, &mut enc)
        .map_err(|e| match dev.control.aborted() {
            true => Stop::Aborted,
            false => dev.fail(at, e.to_string()),
        })?;
    let end = ts.as_mut().map(|t| t.write(&mut enc));
    program.encode_results(gpu, a, &mut enc);
    rec.reduced_bytes += enc.reduced_bytes;
    // Outgoing messages, copied out in the same submission.
    let mut remote: Vec<(&Outgoing, &wgpu::Buffer, u64)> = Vec::new();
    for out in &step.outputs {
        let (dst, bytes) = buffers.outgoing(dev.index, out);
        enc.copy_buffer_to_buffer(program.output(a), 0, dst, 0, bytes);
        if out.to != dev.index {
            remote.push((out, dst, bytes));
        }
    }
    let t_submit = dev.now_us();
    let (commands, reduces) = enc.finish();
    rec.events.extend(reduces.into_iter().map(|e| Event {
        name: format!("{a} all-reduce"),
        action: Some(a),
        ..e
    }));
    gpu.queue.submit([commands]);
    gpu.check().map_err(|e| dev.fail(at, e.to_string()))?;
    program.submitted(gpu, a);
    if !remote.is_empty() {
        // An empty submit right behind: measured on lavapipe, a
        // submission's completion (and so the staging map) became visible
        // to polls only once the *next* submission finished, stalling the
        // consumer for up to a whole producer action (transfer mean
        // 0.7-1.3 ms, max 7-9 ms; with this: 0.05, 0.2).
        gpu.queue.submit([]);
        for (out, staging, bytes) in remote {
            dev.transport.send(
                dev.endpoint(dev.index),
                dev.endpoint(out.to),
                out.product,
                staging,
                bytes,
            );
        }
    }
    match (begin, end) {
        (Some(b), Some(e)) => rec.stamps.push((a, b, e)),
        _ => {
            // Host clock: wait for this action so its end is known.
            wait_idle(&gpu.device, &|| dev.control.aborted())
                .map_err(|msg| dev.wait_failed(at, WaitError::Failed(msg)))?;
            rec.events
                .push(compute_event(dev, a, t_submit, dev.now_us()));
        }
    }
    Ok(())
}

/// Place `step`'s incoming messages where its action reads them.
fn receive<P: StageProgram>(
    dev: &Device,
    program: &P,
    buffers: &MessageBuffers,
    step: &Step,
    enc: &mut wgpu::CommandEncoder,
    rec: &mut Record,
) -> Result<(), Stop> {
    let a = step.action;
    for inc in &step.inputs {
        let dst = program.input(a, inc.product);
        if inc.from == dev.index {
            let (src, bytes) = buffers.local(inc.product);
            enc.copy_buffer_to_buffer(src, 0, dst, 0, bytes);
            continue;
        }
        let t0 = dev.now_us();
        let bytes = dev
            .transport
            .receive(
                dev.endpoint(dev.index),
                dev.endpoint(inc.from),
                inc.product,
                &dev.gpu.queue,
                dst,
                dev.control,
            )
            .map_err(|e| dev.wait_failed(At::Action(a), e))?;
        rec.received.push(TransferRecord {
            product: inc.product,
            producer: inc.producer,
            consumer: a,
            from: inc.from,
            to: dev.index,
            rank: dev.shard.rank,
            start_us: t0,
            end_us: dev.now_us(),
            bytes,
        });
    }
    Ok(())
}

/// The buffers messages leave through, allocated once per run before the
/// clock starts: a MAP_READ staging buffer per message to another device, a
/// hand-over buffer per message to another stage on this device.
struct MessageBuffers {
    staging: HashMap<(Product, usize), (wgpu::Buffer, u64)>,
    local: HashMap<Product, (wgpu::Buffer, u64)>,
}

impl MessageBuffers {
    fn new<P: StageProgram>(dev: &Device, program: &P) -> MessageBuffers {
        let mut staging = HashMap::new();
        let mut local = HashMap::new();
        for out in dev.steps.iter().flat_map(|s| &s.outputs) {
            let bytes = program.message_bytes(out.product);
            if out.to == dev.index {
                let b = buffers::zeros(dev.gpu, "hand-over", (bytes as usize).div_ceil(4));
                local.insert(out.product, (b, bytes));
            } else {
                let b = buffers::staging(dev.gpu, "message out", bytes);
                staging.insert((out.product, out.to), (b, bytes));
            }
        }
        MessageBuffers { staging, local }
    }

    /// Where outgoing message `out` of device `d` is copied to.
    fn outgoing(&self, d: usize, out: &Outgoing) -> (&wgpu::Buffer, u64) {
        let (b, bytes) = if out.to == d {
            &self.local[&out.product]
        } else {
            &self.staging[&(out.product, out.to)]
        };
        (b, *bytes)
    }

    fn local(&self, p: Product) -> (&wgpu::Buffer, u64) {
        let (b, bytes) = &self.local[&p];
        (b, *bytes)
    }
}

fn compute_event(dev: &Device, a: Action, start_us: f64, end_us: f64) -> Event {
    Event {
        track: Track::Compute {
            device: dev.index,
            gpu: dev.shard.rank,
        },
        name: a.to_string(),
        action: Some(a),
        start_us,
        end_us,
        bytes: 0,
    }
}
