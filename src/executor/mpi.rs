//! Stages on different hosts: one MPI rank per schedule device, products
//! moved with MPI point-to-point messages (rsmpi over the system's MPI,
//! Open MPI in CI). Built with `--features mpi`; launched as
//! `mpirun -np P wgpipe run --transport mpi …`.
//!
//! - [`Cluster`]: MPI initialised once per process (`MPI_THREAD_MULTIPLE`:
//!   the device's worker, the sender and the receiver threads all call MPI),
//!   this rank's place, and its clock aligned with rank 0's (ping-pong at
//!   start, the tightest of [`CLOCK_ROUNDS`] round trips kept).
//! - [`MpiNet`]: one run's [`Transport`] and [`Control`]. Rank `r` runs
//!   schedule device `r`. A product leaves from the producer's mapped staging
//!   buffer: the sender thread waits for the map the worker requested right
//!   after its submit and sends the mapped bytes themselves, no copy. A
//!   receiver thread takes every message as it arrives into a mailbox, so a
//!   sender never waits for its consumer's schedule to reach the action (a
//!   blocking send to a consumer that wants another product first would
//!   deadlock); the consumer's `receive` writes the bytes into its queue.
//!   Both threads poll MPI and sleep between polls instead of blocking in
//!   it: Open MPI's blocking calls spin a core, which on a software adapter
//!   is the core a device computes on.
//! - Failure: the CLI prints a failing rank's error (the executor's names
//!   the device, stage and action; the CLI adds the rank and host) and calls
//!   `MPI_Abort`, which makes mpirun end every rank; a rank that dies is
//!   noticed by mpirun itself. No rank waits for a message that will not
//!   come.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::collective::{CommunicatorCollectives, Root};
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use super::transport::{Collective, Control, Transport, WaitError, TICK};
use crate::action::{Product, ProductKind};
use crate::error::{Error, Result};

/// Ping-pong round trips per rank when aligning clocks.
pub const CLOCK_ROUNDS: usize = 32;
/// How long the receiver thread sleeps between polls of MPI while no device
/// of this rank waits for a message (a device that starts waiting wakes it).
/// Polling every 100 µs instead made each stage's forward ~5 % slower on the
/// 2-core software adapter (the poll runs on a device's core).
const IDLE: Duration = Duration::from_micros(1000);
/// ... and while one waits: it is about to need the bytes.
const WANTED: Duration = Duration::from_micros(50);
/// The sender's polls while a send is in flight: short, it moves data.
const BUSY: Duration = Duration::from_micros(10);
/// Tag of the message that stops a receiver thread (sent to itself).
const STOP_TAG: i32 = 0;
const CLOCK_TAG: i32 = 1;

/// A communicator shared by this rank's threads. MPI was initialised with
/// `MPI_THREAD_MULTIPLE`, so any thread may call it.
struct Comm(SimpleCommunicator);
// SAFETY: MPI_THREAD_MULTIPLE was granted (checked in `init`): the MPI
// library serialises concurrent calls on a communicator itself.
unsafe impl Send for Comm {}
unsafe impl Sync for Comm {}

/// This process's place among the ranks.
pub struct Cluster {
    world: Comm,
    pub rank: usize,
    pub size: usize,
    /// Rank on this host (from the launcher), for picking among a host's adapters.
    pub local_rank: usize,
    pub host: String,
    /// This rank's instant that corresponds to rank 0's `base` (rank 0's own).
    base: Instant,
    /// Per rank: half the tightest ping-pong round trip with rank 0 (µs),
    /// the bound on how far its clock may sit from rank 0's (0 for rank 0).
    pub clock_error_us: Vec<f64>,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// The cluster, when this process was started with `--transport mpi`.
pub fn cluster() -> Option<&'static Cluster> {
    CLUSTER.get()
}

impl Cluster {
    /// Every rank's `x`, by rank (`MPI_Allgather` on the world). Every rank
    /// must call it, with no run in progress.
    pub fn all_gather_u64(&self, x: u64) -> Vec<u64> {
        let mut all = vec![0u64; self.size];
        self.world.0.all_gather_into(&x, &mut all[..]);
        all
    }
}

/// Keeps MPI initialised; finalises it when dropped (after a successful run).
pub struct Guard {
    _universe: mpi::environment::Universe,
}

impl Guard {
    /// End every rank of the job (`MPI_Abort`): after this rank failed.
    pub fn abort(&self, code: i32) -> ! {
        match cluster() {
            Some(c) => c.world.0.abort(code),
            None => std::process::exit(code),
        }
    }
}

/// Whether this process was started by an MPI launcher.
fn launched() -> bool {
    [
        "OMPI_COMM_WORLD_SIZE",
        "PMI_SIZE",
        "PMIX_RANK",
        "MPI_LOCALNRANKS",
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some())
}

/// Initialise MPI and align this rank's clock with rank 0's.
pub fn init() -> Result<Guard> {
    if !launched() {
        return Err(Error::Input(
            "--transport mpi: this process was not started by an MPI launcher; run it as `mpirun -np P wgpipe … --transport mpi`, P the number of pipeline devices".into(),
        ));
    }
    let (universe, threading) = mpi::initialize_with_threading(Threading::Multiple)
        .ok_or_else(|| Error::Other("MPI was already initialised".into()))?;
    if threading != Threading::Multiple {
        return Err(Error::Other(format!(
            "this MPI library grants {threading:?} threading, not Multiple: wgpipe's device, sender and receiver threads all call MPI"
        )));
    }
    let world = universe.world();
    let rank = world.rank() as usize;
    let size = world.size() as usize;
    let local_rank = [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "PMI_LOCAL_RANK",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok())
    .unwrap_or(rank);
    let host = mpi::environment::processor_name().unwrap_or_else(|_| "?".into());
    let (base, err) = align_clock(&world, rank, size);
    let mut clock_error_us = vec![0.0f64; size];
    world.all_gather_into(&err, &mut clock_error_us[..]);
    if rank != 0 {
        quiet();
        crate::io::stop_writing_files();
    }
    let _ = CLUSTER.set(Cluster {
        world: Comm(world),
        rank,
        size,
        local_rank,
        host,
        base,
        clock_error_us,
    });
    Ok(Guard {
        _universe: universe,
    })
}

/// Where a non-root rank's errors go: its stderr as it was before [`quiet`].
static ERRORS: OnceLock<std::fs::File> = OnceLock::new();

/// A rank other than 0 prints nothing but errors: stdout and stderr go to
/// /dev/null (what the commands print is rank 0's to print), and errors to
/// the stderr saved first ([`report`]).
fn quiet() {
    use std::os::fd::FromRawFd;
    // SAFETY: plain descriptor calls on descriptors this process owns; the
    // saved one is owned by the File from here on.
    unsafe {
        let saved = libc::dup(2);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if saved < 0 || null < 0 {
            return;
        }
        let _ = ERRORS.set(std::fs::File::from_raw_fd(saved));
        libc::dup2(null, 1);
        libc::dup2(null, 2);
        libc::close(null);
    }
}

/// Print an error line where this rank's errors go.
pub fn report(msg: &str) {
    use std::io::Write;
    match ERRORS.get() {
        Some(mut f) => {
            let _ = writeln!(f, "{msg}");
        }
        None => eprintln!("{msg}"),
    }
}

/// Rank 0 answers each ping with its µs since its base; rank r keeps the
/// round trip with the shortest time, and takes rank 0's reading to have
/// been made at that round trip's midpoint. Returns this rank's instant
/// matching rank 0's base, and the half round trip (the error bound).
fn align_clock(world: &SimpleCommunicator, rank: usize, size: usize) -> (Instant, f64) {
    world.barrier();
    let base = Instant::now();
    if rank == 0 {
        for r in 1..size {
            let peer = world.process_at_rank(r as i32);
            for _ in 0..CLOCK_ROUNDS {
                let (_ping, _) = peer.receive_with_tag::<u8>(CLOCK_TAG);
                let now = base.elapsed().as_secs_f64() * 1e6;
                peer.send_with_tag(&now, CLOCK_TAG);
            }
        }
        return (base, 0.0);
    }
    let root = world.process_at_rank(0);
    let mut best: Option<(f64, Instant, f64)> = None; // (rtt µs, midpoint, rank 0's µs)
    for _ in 0..CLOCK_ROUNDS {
        let a = Instant::now();
        root.send_with_tag(&0u8, CLOCK_TAG);
        let (theirs, _) = root.receive_with_tag::<f64>(CLOCK_TAG);
        let b = Instant::now();
        let rtt = (b - a).as_secs_f64() * 1e6;
        if best.is_none_or(|(r, _, _)| rtt < r) {
            best = Some((rtt, a + (b - a) / 2, theirs));
        }
    }
    let (rtt, mid, theirs) = best.expect("at least one round");
    let aligned = mid
        .checked_sub(Duration::from_secs_f64(theirs.max(0.0) / 1e6))
        .unwrap_or(base);
    (aligned, rtt / 2.0)
}

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

/// Test hooks (environment variables, read once per run): make this rank's
/// first receive fail, or the process die at its first send.
#[derive(Clone, Copy)]
enum FailTest {
    Receive,
    Kill,
}

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
    pub fn new(endpoints: usize, tp: usize) -> Result<MpiNet> {
        let c = cluster().ok_or_else(|| Error::Other("MPI is not initialised".into()))?;
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
        let c = cluster().expect("an MpiNet implies a cluster");
        if polled_barrier(&c.world.0, || self.aborted()) {
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
        self.abort.load(Ordering::SeqCst)
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
        all_gather(mine)
    }
}

/// Wait at a barrier of every rank of `world`, testing it and sleeping
/// between tests (Open MPI's blocking barrier spins a core, which on a
/// software adapter is another rank's device's). Returns false when
/// `aborted` says to stop waiting first.
fn polled_barrier(world: &SimpleCommunicator, aborted: impl Fn() -> bool) -> bool {
    let mut req = world.immediate_barrier();
    loop {
        match req.test() {
            Ok(_) => return true,
            Err(r) => req = r,
        }
        if aborted() {
            // The request cannot be left incomplete; the CLI aborts the
            // job right after, which ends the barrier with it.
            std::mem::forget(req);
            return false;
        }
        std::thread::sleep(WANTED);
    }
}

/// Every rank's bytes on every rank, by rank: a polled barrier (so that a
/// rank that arrives first sleeps, rather than spinning a core, while
/// another still computes), then the lengths and the bytes
/// (`MPI_Allgatherv` on the world). Collective: every rank calls it, in
/// the same order; a rank that fails instead ends the job (`MPI_Abort`),
/// which ends the wait.
pub fn all_gather(mine: Vec<u8>) -> std::result::Result<Vec<Vec<u8>>, String> {
    let c = cluster().ok_or("MPI is not initialised")?;
    let world = &c.world.0;
    polled_barrier(world, || false);
    let n =
        i32::try_from(mine.len()).map_err(|_| format!("rank {}'s results exceed 2 GiB", c.rank))?;
    let mut counts = vec![0i32; c.size];
    world.all_gather_into(&n, &mut counts[..]);
    let displs: Vec<i32> = counts
        .iter()
        .scan(0i64, |acc, &n| {
            let d = *acc;
            *acc += n as i64;
            Some(i32::try_from(d).ok())
        })
        .collect::<Option<Vec<i32>>>()
        .ok_or("the ranks' results exceed 2 GiB together")?;
    let total: usize = counts.iter().map(|&n| n as usize).sum();
    let mut all = vec![0u8; total];
    {
        let mut part = mpi::datatype::PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
        world.all_gather_varcount_into(&mine[..], &mut part);
    }
    Ok(counts
        .iter()
        .zip(&displs)
        .map(|(&n, &d)| all[d as usize..][..n as usize].to_vec())
        .collect())
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
                    assert!(t > CLOCK_TAG);
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
