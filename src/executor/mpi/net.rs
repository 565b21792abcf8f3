//! [`MpiNet`]: one run's products between ranks (a sender and a receiver
//! thread per rank, polling MPI), its coordination, and the
//! tensor-parallel all-reduce among a device's ranks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::collective::{CommunicatorCollectives, Root};
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Communicator, SimpleCommunicator};

use super::{all_gather, polled_barrier, report, Comm, World, WANTED};
use crate::action::{Product, ProductKind};
use crate::error::{Error, Result};
use crate::executor::transport::{Collective, Control, Transport, WaitError, TICK};

/// How long the receiver thread sleeps between polls of MPI while no device
/// of this rank waits for a message (a device that starts waiting wakes it).
/// Polling every 100 µs instead made each stage's forward ~5 % slower on the
/// 2-core software adapter (the poll runs on a device's core).
const IDLE: Duration = Duration::from_micros(1000);
/// The sender's polls while a send is in flight: short, it moves data.
const BUSY: Duration = Duration::from_micros(10);
/// Tag of the message that stops a receiver thread (sent to itself).
const STOP_TAG: i32 = 0;

/// Wait for an MPI request, polling it and sleeping `pause` between polls.
fn wait<'a, D: ?Sized, S: mpi::request::Scope<'a>>(
    mut req: mpi::request::Request<'a, D, S>,
    pause: Duration,
) {
    loop {
        match req.test() {
            Ok(_) => return,
            Err(r) => req = r,
        }
        std::thread::sleep(pause);
    }
}

/// A product's message tag: stage, kind and microbatch packed into MPI's
/// positive tags (at least 2^15 - 1 by the standard, 2^31 - 1 in Open MPI).
fn tag_of(p: Product) -> std::result::Result<i32, String> {
    let what = match p.what {
        ProductKind::Activation => 0u64,
        ProductKind::InputGradient => 1,
        ProductKind::WeightGradient => 2,
    };
    let t = (((p.microbatch as u64) * 3 + what) << 10 | p.stage as u64) + 2;
    if p.stage >= 1024 || t > i32::MAX as u64 {
        return Err(format!(
            "{p}: too many stages or microbatches for an MPI tag"
        ));
    }
    Ok(t as i32)
}

/// What the sender thread sends: a staging buffer whose map was requested.
struct Outbound {
    to: usize,
    tag: std::result::Result<i32, String>,
    staging: wgpu::Buffer,
    bytes: u64,
    mapped: mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

/// Messages arrived at this rank: (source rank, tag) -> bytes.
#[derive(Default)]
struct Mailbox {
    slots: Mutex<HashMap<(usize, i32), Vec<u8>>>,
    cv: Condvar,
    /// Devices of this rank waiting in `receive`.
    waiting: std::sync::atomic::AtomicUsize,
}

/// One run's transport and control across the ranks.
pub struct MpiNet {
    world: Arc<World>,
    rank: usize,
    epoch: Instant,
    /// The run's own communicator for products (a duplicate of the world:
    /// no run's messages can match another's, nor the collectives).
    p2p: std::sync::Arc<Comm>,
    abort: std::sync::Arc<AtomicBool>,
    done: AtomicBool,
    mailbox: std::sync::Arc<Mailbox>,
    outbox: Mutex<Option<mpsc::Sender<Outbound>>>,
    /// A send that failed on the sender thread (a map error), for the
    /// device's next check.
    send_error: std::sync::Arc<Mutex<Option<String>>>,
    threads: Vec<JoinHandle<()>>,
    fail_test: Option<FailTest>,
    /// The ranks of this rank's schedule device under tensor parallelism.
    group: Option<Comm>,
}

/// Fault injection for the failure tests (`tests/mpi.rs`), in builds with
/// the `fault-injection` feature only (environment variables, read once per
/// run): make this rank's first receive fail, or the process die at its
/// first send. A build without the feature has no such behaviour.
#[derive(Clone, Copy)]
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
enum FailTest {
    Receive,
    Kill,
}

#[cfg(not(feature = "fault-injection"))]
fn fail_test(_rank: usize) -> Option<FailTest> {
    None
}

#[cfg(feature = "fault-injection")]
fn fail_test(rank: usize) -> Option<FailTest> {
    let is = |v: &str| std::env::var(v).ok().and_then(|s| s.parse::<usize>().ok()) == Some(rank);
    if is("WGPIPE_MPI_TEST_FAIL_RANK") {
        Some(FailTest::Receive)
    } else if is("WGPIPE_MPI_TEST_KILL_RANK") {
        Some(FailTest::Kill)
    } else {
        None
    }
}

impl MpiNet {
    /// A run over `endpoints` Gpus, one per rank: schedule devices of `tp`
    /// ranks each (the ranks of a device consecutive). Every rank calls this
    /// (it is collective), in the same order of runs.
    pub fn new(c: &Arc<World>, endpoints: usize, tp: usize) -> Result<MpiNet> {
        if endpoints != c.size {
            return Err(Error::Input(format!(
                "--transport mpi: the run has {endpoints} Gpus ({} pipeline devices x tp {tp}) but mpirun started {} ranks: start one rank per Gpu (mpirun -np {endpoints})",
                endpoints / tp.max(1),
                c.size
            )));
        }
        let world = &c.world.0;
        // This rank's tensor-parallel group: the ranks of its device, in
        // rank order.
        let group = if tp > 1 {
            let color = mpi::topology::Color::with_value((c.rank / tp) as i32);
            let comm = world.split_by_color(color).ok_or_else(|| {
                Error::Other("MPI did not make this rank's tensor-parallel group".into())
            })?;
            Some(Comm(comm))
        } else {
            None
        };
        // The run's epoch: rank 0's now, on every rank's clock.
        let mut since_base = c.base.elapsed().as_secs_f64();
        world.process_at_rank(0).broadcast_into(&mut since_base);
        let epoch = c.base + Duration::from_secs_f64(since_base.max(0.0));
        let p2p = std::sync::Arc::new(Comm(world.duplicate()));
        let abort = std::sync::Arc::new(AtomicBool::new(false));
        let mailbox = std::sync::Arc::new(Mailbox::default());
        let send_error = std::sync::Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel::<Outbound>();
        let receiver = {
            let (p2p, mailbox) = (p2p.clone(), mailbox.clone());
            let me = c.rank;
            std::thread::Builder::new()
                .name(format!("mpi-recv-{me}"))
                .spawn(move || receive_loop(&p2p.0, me, &mailbox))
                .map_err(|e| Error::Other(format!("starting the MPI receiver thread: {e}")))?
        };
        let sender = {
            let (p2p, abort, send_error) = (p2p.clone(), abort.clone(), send_error.clone());
            std::thread::Builder::new()
                .name(format!("mpi-send-{}", c.rank))
                .spawn(move || send_loop(&p2p.0, rx, &abort, &send_error))
                .map_err(|e| Error::Other(format!("starting the MPI sender thread: {e}")))?
        };
        Ok(MpiNet {
            world: c.clone(),
            rank: c.rank,
            epoch,
            p2p,
            abort,
            done: AtomicBool::new(false),
            mailbox,
            outbox: Mutex::new(Some(tx)),
            send_error,
            threads: vec![receiver, sender],
            fail_test: fail_test(c.rank),
            group,
        })
    }
}

/// Take every message as it comes into the mailbox, until this rank's own
/// stop message.
fn receive_loop(comm: &SimpleCommunicator, me: usize, mailbox: &Mailbox) {
    loop {
        let Some(probed) = comm.any_process().immediate_matched_probe() else {
            let wanted = mailbox.waiting.load(Ordering::SeqCst) > 0;
            std::thread::park_timeout(if wanted { WANTED } else { IDLE });
            continue;
        };
        let (data, status) = probed.matched_receive_vec::<u8>();
        let (from, tag) = (status.source_rank() as usize, status.tag());
        if tag == STOP_TAG && from == me {
            return;
        }
        mailbox
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((from, tag), data);
        mailbox.cv.notify_all();
    }
}

/// Send each product once its staging map completes, from the mapped bytes.
fn send_loop(
    comm: &SimpleCommunicator,
    rx: mpsc::Receiver<Outbound>,
    abort: &AtomicBool,
    error: &Mutex<Option<String>>,
) {
    let fail = |msg: String| {
        error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(msg);
    };
    for out in rx {
        let mapped = loop {
            match out.mapped.recv_timeout(TICK) {
                Ok(r) => break Some(r),
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(_) if abort.load(Ordering::SeqCst) => break None,
                Err(_) => {}
            }
        };
        let tag = match (&out.tag, mapped) {
            (Ok(t), Some(Ok(()))) => *t,
            (Err(e), _) => {
                fail(e.clone());
                continue;
            }
            (_, Some(Err(e))) => {
                fail(format!("mapping an outgoing staging buffer failed: {e}"));
                continue;
            }
            (_, None) => continue,
        };
        {
            let Ok(view) = out.staging.slice(..out.bytes).get_mapped_range() else {
                fail("the outgoing staging buffer's mapped range".into());
                continue;
            };
            let dest = comm.process_at_rank(out.to as i32);
            mpi::request::scope(|scope| {
                wait(dest.immediate_send_with_tag(scope, &view[..], tag), BUSY);
            });
        }
        out.staging.unmap();
    }
}

impl Drop for MpiNet {
    fn drop(&mut self) {
        // The sender drains what is queued, then ends; the receiver ends at
        // the stop message this rank sends itself (after every product it
        // was sent: MPI keeps one sender's messages in order, and every
        // product has been received by now, or the run is being aborted).
        drop(self.outbox.lock().unwrap_or_else(|e| e.into_inner()).take());
        self.p2p
            .0
            .process_at_rank(self.rank as i32)
            .send_with_tag(&0u8, STOP_TAG);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Control for MpiNet {
    fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Every rank's device is set up: a barrier across the ranks, polled so
    /// that this rank stops waiting when it is aborted.
    fn start(&self, _d: usize) -> std::result::Result<(), WaitError> {
        if polled_barrier(&self.world.world.0, || self.aborted()) {
            Ok(())
        } else {
            Err(WaitError::Aborted)
        }
    }

    fn abort(&self) {
        self.abort.store(true, Ordering::SeqCst);
        self.mailbox.cv.notify_all();
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst) || crate::interrupt::requested()
    }

    fn finish(&self, d: usize) {
        if d == self.rank {
            self.done.store(true, Ordering::SeqCst);
            self.mailbox.cv.notify_all();
        }
    }

    /// Only this rank's device is known to finish; another rank that fails
    /// ends the whole job instead.
    fn finished(&self, d: usize) -> bool {
        d == self.rank && self.done.load(Ordering::SeqCst)
    }

    fn local(&self, d: usize) -> bool {
        d == self.rank
    }

    /// Every rank's bytes on every rank: [`all_gather`].
    fn exchange(&self, mine: Vec<u8>) -> std::result::Result<Vec<Vec<u8>>, String> {
        all_gather(&self.world, mine)
    }
}

impl Transport for MpiNet {
    fn send(&self, _from: usize, to: usize, product: Product, staging: &wgpu::Buffer, bytes: u64) {
        if let Some(FailTest::Kill) = self.fail_test {
            report(&format!(
                "rank {}: WGPIPE_MPI_TEST_KILL_RANK: dying at the send of {product}",
                self.rank
            ));
            std::process::abort();
        }
        let (tx, rx) = mpsc::channel();
        staging
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        let out = Outbound {
            to,
            tag: tag_of(product),
            staging: staging.clone(),
            bytes,
            mapped: rx,
        };
        if let Some(tx) = self
            .outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let _ = tx.send(out);
        }
    }

    fn receive(
        &self,
        _to: usize,
        from: usize,
        product: Product,
        queue: &wgpu::Queue,
        dst: &wgpu::Buffer,
        control: &dyn Control,
    ) -> std::result::Result<u64, WaitError> {
        if let Some(FailTest::Receive) = self.fail_test {
            return Err(WaitError::Failed(format!(
                "WGPIPE_MPI_TEST_FAIL_RANK: rank {} fails receiving {product} on purpose",
                self.rank
            )));
        }
        let tag = tag_of(product).map_err(WaitError::Failed)?;
        let mb = &self.mailbox;
        // The receiver thread polls fast while a device waits: say so, and
        // wake it from its idle sleep.
        struct Waiting<'a>(&'a Mailbox);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.waiting.fetch_sub(1, Ordering::SeqCst);
            }
        }
        mb.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(mb);
        self.threads[0].thread().unpark();
        let mut slots = mb.slots.lock().unwrap_or_else(|e| e.into_inner());
        let data = loop {
            if let Some(d) = slots.remove(&(from, tag)) {
                break d;
            }
            if control.aborted() {
                return Err(WaitError::Aborted);
            }
            if let Some(e) = self
                .send_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
            {
                return Err(WaitError::Failed(e));
            }
            slots = mb
                .cv
                .wait_timeout(slots, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(slots);
        queue.write_buffer(dst, 0, &data);
        Ok(data.len() as u64)
    }
}

impl Collective for MpiNet {
    /// Sum `data` over this rank's tensor-parallel group: every member's
    /// part gathered to every member (`MPI_Iallgather`, polled so that an
    /// abort ends the wait), then added in rank order from rank 0's, as
    /// [`super::InProcess`] adds them: the same bits on every rank and in
    /// both transports.
    fn all_reduce(
        &self,
        _endpoint: usize,
        data: Vec<f32>,
        control: &dyn Control,
    ) -> std::result::Result<Vec<f32>, WaitError> {
        let Some(group) = &self.group else {
            return Ok(data);
        };
        let comm = &group.0;
        let n = data.len() as u64;
        let lens = gather_polled(comm, vec![n], control)?;
        if let Some(l) = lens.iter().find(|&&l| l != n) {
            return Err(WaitError::Failed(format!(
                "the tensor-parallel ranks all-reduced {n} and {l} values"
            )));
        }
        if data.is_empty() {
            return Ok(data);
        }
        let all = gather_polled(comm, data, control)?;
        let mut parts = all.chunks(n as usize);
        let mut sum = parts.next().unwrap_or_default().to_vec();
        for p in parts {
            for (s, x) in sum.iter_mut().zip(p) {
                *s += x;
            }
        }
        Ok(sum)
    }
}

/// Every member's `mine` (all the same length), concatenated in rank
/// order: `MPI_Iallgather` on `comm`, polled with sleeps between polls so
/// that this rank stops waiting when the run is aborted.
fn gather_polled<T>(
    comm: &SimpleCommunicator,
    mine: Vec<T>,
    control: &dyn Control,
) -> std::result::Result<Vec<T>, WaitError>
where
    T: mpi::datatype::Equivalence + Copy + Default,
{
    let mut all = vec![T::default(); mine.len() * comm.size() as usize];
    let mut abandoned = false;
    mpi::request::scope(|scope| {
        let mut req = comm.immediate_all_gather_into(scope, &mine[..], &mut all[..]);
        loop {
            match req.test() {
                Ok(_) => return,
                Err(r) => req = r,
            }
            if control.aborted() {
                // SAFETY: the request is left to MPI unfinished; its buffers
                // are leaked below, so MPI can never write into freed memory.
                // The CLI aborts the job right after.
                let _ = unsafe { req.into_raw() };
                abandoned = true;
                return;
            }
            std::thread::sleep(WANTED);
        }
    });
    if abandoned {
        std::mem::forget(mine);
        std::mem::forget(all);
        return Err(WaitError::Aborted);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::ProductKind;

    #[test]
    fn tags_are_distinct_and_positive() {
        let mut seen = std::collections::HashSet::new();
        for stage in 0..8 {
            for microbatch in 0..64 {
                for what in [ProductKind::Activation, ProductKind::InputGradient] {
                    let t = tag_of(Product {
                        stage,
                        microbatch,
                        what,
                    })
                    .unwrap();
                    assert!(t > super::super::CLOCK_TAG);
                    assert!(seen.insert(t));
                }
            }
        }
        let too_far = Product {
            stage: 2000,
            microbatch: 0,
            what: ProductKind::Activation,
        };
        assert!(tag_of(too_far).is_err());
    }
}
