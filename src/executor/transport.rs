//! How a run's devices talk: [`Transport`] moves a product's bytes from one
//! device to another; [`Control`] is the run's shared state (start barrier,
//! abort, which devices are done). The worker sees only these two traits, so
//! another implementation (processes under MPI, say) slots in without
//! touching it. [`InProcess`] is today's: every device a thread of this
//! process, products handed over through the host.
//!
//! In-process transfer: the producing device copies its product into a
//! MAP_READ staging buffer in the same submission as the compute, and
//! [`Transport::send`] requests that buffer's map right after the submit and
//! posts it in the consumer's mailbox without waiting; each device's poller
//! thread ([`poll_until`]) fires the map as soon as the submission completes.
//! The consumer, when its schedule reaches the action that needs the product,
//! waits for that map and writes the bytes straight into its own buffer with
//! `queue.write_buffer`. So the producer never waits for its outgoing copy,
//! and the consumer copies while its own GPU may still be busy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::action::Product;

/// How often blocked waits look at the abort flag.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// How often a poller polls an idle device: short enough to add little
/// latency, long enough not to steal the CPU a software adapter computes on.
const POLL: Duration = Duration::from_micros(100);

/// Why a wait ended without what it waited for.
#[derive(Debug)]
pub enum WaitError {
    /// Another device failed; this one stops quietly.
    Aborted,
    /// The producer finished without sending what was waited for.
    ProducerGone(usize),
    /// The bytes could not be moved (a map or write failed).
    Failed(String),
}

/// The run's shared control: every device calls these from its own thread.
pub trait Control: Sync {
    /// The instant all host times of the run count from.
    fn epoch(&self) -> Instant;
    /// Device `d` is set up; return once every device is (all start their
    /// clocks together), or `Err` when the run was aborted meanwhile.
    fn start(&self, d: usize) -> Result<(), WaitError>;
    /// Stop the run: every device gives up at its next check or wait.
    fn abort(&self);
    fn aborted(&self) -> bool;
    /// Device `d`'s thread has ended (successfully or not).
    fn finish(&self, d: usize);
    fn finished(&self, d: usize) -> bool;

    /// Whether device `d` runs in this process: all do in-process; under
    /// MPI only this rank's (`super::mpi`).
    fn local(&self, _d: usize) -> bool {
        true
    }

    /// Across processes: every process's `mine`, in rank order, on every
    /// process (collective: each calls it once per run, after its devices
    /// finish). In-process there is only this one.
    fn exchange(&self, mine: Vec<u8>) -> Result<Vec<Vec<u8>>, String> {
        Ok(vec![mine])
    }
}

/// Moving a product's bytes between devices.
pub trait Transport: Sync {
    /// Producer side, right after the submission that copies `product` into
    /// `staging` (a MAP_READ buffer of device `from`, `bytes` long): hand it
    /// towards device `to`. Must not wait for the GPU.
    fn send(&self, from: usize, to: usize, product: Product, staging: &wgpu::Buffer, bytes: u64);

    /// Consumer side: wait for `product` from device `from` and queue its
    /// bytes into `dst` on `queue` (device `to`'s). Returns once the bytes
    /// are handed to the queue.
    fn receive(
        &self,
        to: usize,
        from: usize,
        product: Product,
        queue: &wgpu::Queue,
        dst: &wgpu::Buffer,
        control: &dyn Control,
    ) -> Result<u64, WaitError>;
}

/// A product ready (or about to be ready) in the producer's staging buffer.
struct Packet {
    staging: wgpu::Buffer,
    bytes: u64,
    /// The map requested by the producer right after its submit.
    mapped: std::sync::mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

/// Packets for one consumer device, keyed by product.
#[derive(Default)]
struct Mailbox {
    slots: Mutex<HashMap<Product, Packet>>,
    cv: Condvar,
}

/// Every device a thread of this process: [`Control`] on atomics, and
/// [`Transport`] through the host with one mailbox per consumer device.
pub struct InProcess {
    epoch: Instant,
    devices: usize,
    abort: AtomicBool,
    ready: AtomicUsize,
    done: Vec<AtomicBool>,
    mailboxes: Vec<Mailbox>,
}

impl InProcess {
    pub fn new(devices: usize) -> InProcess {
        InProcess {
            epoch: Instant::now(),
            devices,
            abort: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            done: (0..devices).map(|_| AtomicBool::new(false)).collect(),
            mailboxes: (0..devices).map(|_| Mailbox::default()).collect(),
        }
    }

    /// Wait for `product` in device `to`'s mailbox.
    fn take(
        &self,
        to: usize,
        from: usize,
        product: Product,
        control: &dyn Control,
    ) -> Result<Packet, WaitError> {
        let mb = &self.mailboxes[to];
        let mut slots = mb.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(p) = slots.remove(&product) {
                return Ok(p);
            }
            if control.aborted() {
                return Err(WaitError::Aborted);
            }
            if control.finished(from) {
                return Err(WaitError::ProducerGone(from));
            }
            slots = mb
                .cv
                .wait_timeout(slots, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Control for InProcess {
    fn epoch(&self) -> Instant {
        self.epoch
    }

    fn start(&self, _d: usize) -> Result<(), WaitError> {
        self.ready.fetch_add(1, Ordering::SeqCst);
        while self.ready.load(Ordering::SeqCst) < self.devices {
            if self.aborted() {
                return Err(WaitError::Aborted);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        for m in &self.mailboxes {
            m.cv.notify_all();
        }
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    fn finish(&self, d: usize) {
        self.done[d].store(true, Ordering::SeqCst);
        for m in &self.mailboxes {
            m.cv.notify_all();
        }
    }

    fn finished(&self, d: usize) -> bool {
        self.done[d].load(Ordering::SeqCst)
    }
}

impl Transport for InProcess {
    fn send(&self, _from: usize, to: usize, product: Product, staging: &wgpu::Buffer, bytes: u64) {
        // Request the map now, so that it is tied to the submission just
        // made. (Requested later, by the consumer, it was measured completing
        // ~one producer action late on lavapipe: ~12 ms of a 12 ms stage.)
        let (tx, rx) = std::sync::mpsc::channel();
        staging
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        let packet = Packet {
            staging: staging.clone(),
            bytes,
            mapped: rx,
        };
        let mb = &self.mailboxes[to];
        mb.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(product, packet);
        mb.cv.notify_all();
    }

    fn receive(
        &self,
        to: usize,
        from: usize,
        product: Product,
        queue: &wgpu::Queue,
        dst: &wgpu::Buffer,
        control: &dyn Control,
    ) -> Result<u64, WaitError> {
        let p = self.take(to, from, product, control)?;
        // The producer device's poller thread fires the callback when the
        // producing submission completes; this thread only waits for it.
        let mapped = loop {
            match p.mapped.recv_timeout(TICK) {
                Ok(r) => break r,
                Err(_) if control.aborted() => return Err(WaitError::Aborted),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(WaitError::Failed(format!(
                        "device {from}'s staging map was dropped"
                    )))
                }
                Err(_) => {}
            }
        };
        mapped.map_err(|e| {
            WaitError::Failed(format!(
                "mapping the staging buffer of device {from} failed: {e}"
            ))
        })?;
        {
            let view =
                p.staging.slice(..p.bytes).get_mapped_range().map_err(|e| {
                    WaitError::Failed(format!("mapped range of device {from}: {e}"))
                })?;
            queue.write_buffer(dst, 0, &view);
        }
        p.staging.unmap();
        Ok(p.bytes)
    }
}

/// Poll `device` until `stop()`: fires its map callbacks as soon as each
/// submission completes. One per device, on its own thread, because a poll of
/// a busy lavapipe device blocks until the running submission ends — from a
/// consumer's thread that stalled the consumer up to a whole producer action.
///
/// It sleeps [`POLL`] after every poll, busy or not. It used to poll again at
/// once while work was queued; that spun a core beside the device threads,
/// and on a machine with as many cores as devices it made every pipeline
/// action 15-40 % slower than the same action in the co-run control
/// (`bench bubble`'s `loss_slowdown`: 0.28 -> 0.05 at P = 2, M = 8; speedup
/// 1.36 -> 1.67 of an ideal 1.78). A callback now fires at most ~0.1 ms late.
pub(crate) fn poll_until(device: &wgpu::Device, stop: &dyn Fn() -> bool) {
    while !stop() {
        let _ = device.poll(wgpu::PollType::Poll);
        std::thread::sleep(POLL);
    }
}
