//! How a run's devices talk: [`Transport`] moves a product's bytes from one
//! device to another; [`Collective`] sums a partial result over the devices
//! of a tensor-parallel group; [`Control`] is the run's shared state (start
//! barrier, abort, which devices are done). The worker sees only these
//! traits, so another implementation (processes under MPI, say) slots in
//! without touching it. [`InProcess`] is today's: every device a thread of
//! this process, products handed over through the host.
//!
//! The indices these traits take are *endpoints*: one per Gpu of the run,
//! `device × T + rank` for rank `rank` of schedule device `device`'s
//! tensor-parallel group of T (so simply the schedule device when T = 1).
//! A message goes from rank r of one group to rank r of the next: every rank
//! holds the whole activation after its group's last all-reduce.
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
    /// The run was aborted, or a stop was asked for ([`crate::interrupt`]).
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

/// Summing over a tensor-parallel group.
pub trait Collective: Sync {
    /// Endpoint `endpoint`'s contribution `data` to its group's next sum;
    /// returns the elementwise sum over the group's T ranks, added in rank
    /// order (so every rank gets the same bits). Every rank of a group calls
    /// it the same number of times, with equally long data.
    fn all_reduce(
        &self,
        endpoint: usize,
        data: Vec<f32>,
        control: &dyn Control,
    ) -> Result<Vec<f32>, WaitError>;
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

/// One tensor-parallel group's sums in progress, by round (each rank's
/// n-th call is round n).
struct Rounds {
    /// Per rank, how many sums it has taken part in.
    calls: Vec<u64>,
    open: HashMap<u64, Round>,
}

/// One sum: contributions by rank, the sum once complete, ranks that took it.
type Round = (
    Vec<Option<Vec<f32>>>,
    Option<std::sync::Arc<Vec<f32>>>,
    usize,
);

struct Group {
    rounds: Mutex<Rounds>,
    cv: Condvar,
}

impl Group {
    fn new(tp: usize) -> Group {
        Group {
            rounds: Mutex::new(Rounds {
                calls: vec![0; tp],
                open: HashMap::new(),
            }),
            cv: Condvar::new(),
        }
    }
}

/// Every device a thread of this process: [`Control`] on atomics,
/// [`Transport`] through the host with one mailbox per consumer endpoint,
/// and [`Collective`] as a host gather-sum-scatter per group.
pub struct InProcess {
    epoch: Instant,
    endpoints: usize,
    /// Ranks per tensor-parallel group.
    tp: usize,
    abort: AtomicBool,
    ready: AtomicUsize,
    done: Vec<AtomicBool>,
    mailboxes: Vec<Mailbox>,
    groups: Vec<Group>,
}

impl InProcess {
    /// `devices` endpoints, each a group of one.
    pub fn new(devices: usize) -> InProcess {
        InProcess::with_groups(devices, 1)
    }

    /// `devices` schedule devices of `tp` Gpus each: `devices × tp` endpoints.
    pub fn with_groups(devices: usize, tp: usize) -> InProcess {
        let tp = tp.max(1);
        let endpoints = devices * tp;
        InProcess {
            epoch: Instant::now(),
            endpoints,
            tp,
            abort: AtomicBool::new(false),
            ready: AtomicUsize::new(0),
            done: (0..endpoints).map(|_| AtomicBool::new(false)).collect(),
            mailboxes: (0..endpoints).map(|_| Mailbox::default()).collect(),
            groups: (0..devices).map(|_| Group::new(tp)).collect(),
        }
    }

    /// For `groups` (all of one size): see [`InProcess::with_groups`].
    pub fn for_groups(groups: &[super::DeviceGroup]) -> InProcess {
        let tp = groups.first().map_or(1, |g| g.gpus().len());
        InProcess::with_groups(groups.len(), tp)
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
        while self.ready.load(Ordering::SeqCst) < self.endpoints {
            if self.aborted() {
                return Err(WaitError::Aborted);
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    }

    fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst) || crate::interrupt::requested()
    }

    fn finish(&self, d: usize) {
        self.done[d].store(true, Ordering::SeqCst);
        self.wake_all();
    }

    fn finished(&self, d: usize) -> bool {
        self.done[d].load(Ordering::SeqCst)
    }
}

impl InProcess {
    fn wake_all(&self) {
        for m in &self.mailboxes {
            m.cv.notify_all();
        }
        for g in &self.groups {
            g.cv.notify_all();
        }
    }
}

impl Collective for InProcess {
    fn all_reduce(
        &self,
        endpoint: usize,
        data: Vec<f32>,
        control: &dyn Control,
    ) -> Result<Vec<f32>, WaitError> {
        let (d, rank) = (endpoint / self.tp, endpoint % self.tp);
        if self.tp == 1 {
            return Ok(data);
        }
        let group = &self.groups[d];
        let mut st = group.rounds.lock().unwrap_or_else(|e| e.into_inner());
        let round = st.calls[rank];
        st.calls[rank] += 1;
        let tp = self.tp;
        let slot = st
            .open
            .entry(round)
            .or_insert_with(|| (vec![None; tp], None, 0));
        slot.0[rank] = Some(data);
        if slot.0.iter().all(Option::is_some) {
            // The last to arrive sums, in rank order.
            let mut parts = slot.0.iter_mut().map(|c| c.take().unwrap_or_default());
            let mut sum = parts.next().unwrap_or_default();
            for p in parts {
                if p.len() != sum.len() {
                    return Err(WaitError::Failed(format!(
                        "device {d}'s ranks all-reduced {} and {} values",
                        sum.len(),
                        p.len()
                    )));
                }
                for (s, x) in sum.iter_mut().zip(&p) {
                    *s += x;
                }
            }
            slot.1 = Some(std::sync::Arc::new(sum));
            group.cv.notify_all();
        }
        loop {
            let slot = st.open.get_mut(&round).expect("an open round");
            if let Some(sum) = slot.1.clone() {
                slot.2 += 1;
                if slot.2 == tp {
                    st.open.remove(&round);
                }
                return Ok(std::sync::Arc::try_unwrap(sum).unwrap_or_else(|a| (*a).clone()));
            }
            if control.aborted() {
                return Err(WaitError::Aborted);
            }
            if let Some(gone) =
                (0..tp).find(|&r| r != rank && slot.0[r].is_none() && control.finished(d * tp + r))
            {
                return Err(WaitError::ProducerGone(d * tp + gone));
            }
            st = group
                .cv
                .wait_timeout(st, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
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
