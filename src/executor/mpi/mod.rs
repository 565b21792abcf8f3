//! Stages on different hosts: one MPI rank per schedule device, products
//! moved with MPI point-to-point messages (rsmpi over the system's MPI,
//! Open MPI in CI). Built with `--features mpi`; launched as
//! `mpirun -np P wgpipe run --transport mpi …`.
//!
//! - [`World`]: MPI initialised once per process (`MPI_THREAD_MULTIPLE`:
//!   the device's worker, the sender and the receiver threads all call MPI),
//!   this rank's place, and its clock aligned with rank 0's (ping-pong at
//!   start, the tightest of [`CLOCK_ROUNDS`] round trips kept).
//! - [`MpiNet`] (`net.rs`): one run's [`Transport`](super::Transport),
//!   [`Control`](super::Control) and [`Collective`](super::Collective). Rank `r` runs endpoint `r` (Gpu `r mod T` of schedule
//!   device `r / T`). A product leaves from the producer's mapped staging
//!   buffer: the sender thread waits for the map the worker requested right
//!   after its submit and sends the mapped bytes themselves, no copy. A
//!   receiver thread takes every message as it arrives into a mailbox, so a
//!   sender never waits for its consumer's schedule to reach the action (a
//!   blocking send to a consumer that wants another product first would
//!   deadlock); the consumer's `receive` writes the bytes into its queue.
//!   Both threads poll MPI and sleep between polls instead of blocking in
//!   it: Open MPI's blocking calls spin a core, which on a software adapter
//!   is the core a device computes on. A tensor-parallel group's ranks
//!   all-reduce on their own communicator.
//! - Failure: the CLI prints a failing rank's error (the executor's names
//!   the device, stage and action; the CLI adds the rank and host) and calls
//!   `MPI_Abort`, which makes mpirun end every rank; a rank that dies is
//!   noticed by mpirun itself. No rank waits for a message that will not
//!   come.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mpi::collective::CommunicatorCollectives;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use crate::error::{Error, Result};

mod net;

pub use net::MpiNet;

/// Ping-pong round trips per rank when aligning clocks.
pub const CLOCK_ROUNDS: usize = 32;
/// How long a rank that waits for another (a message, a barrier, an
/// all-reduce) sleeps between polls of MPI: it is about to need the answer.
const WANTED: Duration = Duration::from_micros(50);
const CLOCK_TAG: i32 = 1;

/// A communicator shared by this rank's threads. MPI was initialised with
/// `MPI_THREAD_MULTIPLE`, so any thread may call it.
struct Comm(SimpleCommunicator);
// SAFETY: MPI_THREAD_MULTIPLE was granted (checked in `init`): the MPI
// library serialises concurrent calls on a communicator itself.
unsafe impl Send for Comm {}
unsafe impl Sync for Comm {}

/// This process's place among the ranks: made once by [`init`] and handed,
/// as [`crate::executor::Cluster::Mpi`], to whatever runs across ranks.
pub struct World {
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

impl World {
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
    world: Arc<World>,
    _universe: mpi::environment::Universe,
}

impl Guard {
    /// This rank's place, to hand to what runs across the ranks.
    pub fn world(&self) -> Arc<World> {
        self.world.clone()
    }

    /// End every rank of the job (`MPI_Abort`): after this rank failed.
    pub fn abort(&self, code: i32) -> ! {
        self.world.world.0.abort(code)
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
    }
    let world = Arc::new(World {
        world: Comm(world),
        rank,
        size,
        local_rank,
        host,
        base,
        clock_error_us,
    });
    Ok(Guard {
        world,
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
/// What [`all_gather`] says when a stop was asked for while it waited.
pub const INTERRUPTED: &str = "interrupted";

pub fn all_gather(c: &World, mine: Vec<u8>) -> std::result::Result<Vec<Vec<u8>>, String> {
    let world = &c.world.0;
    if !polled_barrier(world, crate::interrupt::requested) {
        // The CLI aborts the job, which ends the other ranks' waits.
        return Err(INTERRUPTED.into());
    }
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
