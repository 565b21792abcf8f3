//! Which transport a run uses: [`InProcess`] (every device a thread of this
//! process), or with `--features mpi` and `--transport mpi` one MPI rank per
//! device ([`super::mpi`]). The entry points ([`super::run_inference`],
//! [`super::decode::generate`], the `--split auto` profile) ask [`Net::new`],
//! so the same code runs either way; this file is the only place that knows
//! both.

use std::cell::Cell;
use std::time::Instant;

use super::transport::{Collective, Control, InProcess, Transport, WaitError};
use super::wire::Wire;
#[cfg(feature = "mpi")]
use super::wire::{from_bytes, to_bytes};
use super::DeviceGroup;
use crate::action::Product;
use crate::device::{AdapterSummary, Gpu, Placement};
use crate::error::{Error, Result};

thread_local! {
    /// Set inside [`alone`]: this thread runs as if no other rank existed.
    static ALONE: Cell<bool> = const { Cell::new(false) };
}

/// The MPI cluster this process is a rank of, unless inside [`alone`].
#[cfg(feature = "mpi")]
fn cluster() -> Option<&'static super::mpi::Cluster> {
    if ALONE.get() {
        return None;
    }
    super::mpi::cluster()
}

/// Run `f` on this process by itself, as if it were not one of MPI ranks:
/// every [`Net`] made inside (by [`Net::new`], [`Net::for_groups`], and so by
/// [`super::run_inference`] or a trainer) is in-process, and [`mpi_rank`] is
/// `None`. For a run on this process's devices alone, such as `bench
/// bubble`'s one-device baseline on rank 0 while the other ranks wait in
/// [`run_on`]. No effect outside MPI; this thread only.
pub fn alone<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ALONE.set(self.0);
        }
    }
    let _restore = Restore(ALONE.replace(true));
    f()
}

/// Whether this process drives schedule device `d` (of one Gpu): every
/// device in-process, device r on rank r under MPI.
pub fn drives(d: usize) -> bool {
    mpi_rank().is_none_or(|(r, _)| r == d)
}

/// Run `f` where schedule device `d` is driven, and hand its result to
/// every process: in-process `f()`; under MPI rank `d` runs `f` while the
/// others wait (asleep, not spinning), then every rank gets its result
/// ([`super::mpi::all_gather`]). Collective under MPI: every rank calls it,
/// in the same order. A failure of `f` ends the job on rank `d` (the CLI
/// aborts every rank), so no rank waits forever.
pub(crate) fn run_on<T: Wire>(d: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
    #[cfg(feature = "mpi")]
    if let Some(c) = cluster() {
        if d >= c.size {
            return Err(Error::Input(format!(
                "device {d} has no rank: mpirun started {} ranks",
                c.size
            )));
        }
        let mine = if c.rank == d {
            to_bytes(&f()?)
        } else {
            Vec::new()
        };
        let all = super::mpi::all_gather(mine).map_err(Error::Other)?;
        return from_bytes(&all[d])
            .ok_or_else(|| Error::Other(format!("device {d}'s result arrived corrupt")));
    }
    let _ = d;
    f()
}

/// Every schedule device's label (`vulkan:0 (llvmpipe …)`) on every
/// process: in-process from `groups`; under MPI (where `groups` are all
/// this rank's, [`device_groups`]) each rank's own, gathered.
pub fn device_labels(groups: &[DeviceGroup]) -> Result<Vec<String>> {
    #[cfg(feature = "mpi")]
    if let Some(c) = cluster() {
        let mine = groups.first().map(DeviceGroup::label).unwrap_or_default();
        let all = super::mpi::all_gather(mine.into_bytes()).map_err(Error::Other)?;
        return Ok(all
            .into_iter()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .take(c.size)
            .collect());
    }
    Ok(groups.iter().map(DeviceGroup::label).collect())
}

/// A run's transport and control.
pub enum Net {
    InProcess(InProcess),
    #[cfg(feature = "mpi")]
    Mpi(super::mpi::MpiNet),
}

impl Net {
    /// The net for a run over `devices` schedule devices of one Gpu each:
    /// across the MPI ranks when this process is one of them, else
    /// in-process. Under MPI every rank must make the same runs in the same
    /// order.
    pub fn new(devices: usize) -> Result<Net> {
        #[cfg(feature = "mpi")]
        if cluster().is_some() {
            return Ok(Net::Mpi(super::mpi::MpiNet::new(devices, 1)?));
        }
        Ok(Net::InProcess(InProcess::new(devices)))
    }

    /// The net for `groups`: in-process [`InProcess::for_groups`]; under MPI
    /// one rank per Gpu (endpoint), the groups' all-reduces among their ranks.
    pub fn for_groups(groups: &[DeviceGroup]) -> Result<Net> {
        #[cfg(feature = "mpi")]
        if cluster().is_some() {
            let tp = super::uniform_tp(groups)?;
            return Ok(Net::Mpi(super::mpi::MpiNet::new(groups.len() * tp, tp)?));
        }
        Ok(Net::InProcess(InProcess::for_groups(groups)))
    }
}

/// This process's rank and the number of ranks, under `--transport mpi`.
pub fn mpi_rank() -> Option<(usize, usize)> {
    #[cfg(feature = "mpi")]
    if let Some(c) = cluster() {
        return Some((c.rank, c.size));
    }
    None
}

/// Under MPI, for the report: the ranks, their hosts' names as MPI gives
/// them (this rank's only), and how closely each rank's clock was aligned
/// with rank 0's (µs, half the tightest ping-pong round trip).
pub fn mpi_summary() -> Option<serde_json::Value> {
    #[cfg(feature = "mpi")]
    if let Some(c) = cluster() {
        return Some(serde_json::json!({
            "ranks": c.size,
            "host": c.host,
            "clock_error_us": c.clock_error_us,
        }));
    }
    None
}

/// One line for a text report under MPI.
pub fn mpi_line() -> Option<String> {
    #[cfg(feature = "mpi")]
    if let Some(c) = cluster() {
        let worst = c.clock_error_us.iter().copied().fold(0.0, f64::max);
        return Some(format!(
            "mpi: {} ranks, one device each; every rank's clock mapped onto rank 0's within ±{worst:.1} µs (half the tightest of {} ping-pongs)",
            c.size,
            super::mpi::CLOCK_ROUNDS
        ));
    }
    None
}

/// Whether this process reports: always in-process, rank 0 under MPI.
pub fn is_root() -> bool {
    mpi_rank().is_none_or(|(r, _)| r == 0)
}

/// Every process's `mine`, in rank order (device order): in-process just
/// `[mine]`; under MPI encoded, all-gathered and decoded, which every rank
/// must do, in the same order. For what is combined outside a run
/// (training's tied-embedding sum, gradient norm, tensors read back).
pub(crate) fn share<T: Wire>(mine: T) -> Result<Vec<T>> {
    #[cfg(feature = "mpi")]
    if cluster().is_some() {
        let all = super::mpi::all_gather(to_bytes(&mine)).map_err(Error::Other)?;
        return all
            .iter()
            .enumerate()
            .map(|(r, b)| {
                from_bytes(b)
                    .ok_or_else(|| Error::Other(format!("rank {r}'s share arrived corrupt")))
            })
            .collect();
    }
    Ok(vec![mine])
}

/// Refuse `--transport mpi` where a command cannot run across ranks yet.
pub fn refuse_mpi(what: &str) -> Result<()> {
    match mpi_rank() {
        Some(_) => Err(Error::Input(format!(
            "{what} does not run across MPI ranks yet: run it without --transport mpi"
        ))),
        None => Ok(()),
    }
}

/// The adapter of `placement` this process drives first: in-process the
/// first Gpu's; under MPI this rank's. Rank r is endpoint r: Gpu `r mod T`
/// of schedule device `r / T` (T the tensor-parallel degree). A `--devices`
/// list is indexed by rank, a count by the rank on its host, so that each
/// host's ranks take its adapters in turn. Checks that the ranks match the
/// Gpus.
pub fn local_adapter<'p>(placement: &'p Placement, spec: &str) -> Result<&'p AdapterSummary> {
    let all: Vec<&AdapterSummary> = placement.groups.iter().flatten().collect();
    #[cfg(feature = "mpi")]
    if let Some(c) = cluster() {
        let (p, n) = (placement.devices(), all.len());
        if n != c.size {
            let tp = n / p.max(1);
            let what = if tp > 1 {
                format!("{p} pipeline devices x --tp {tp} = {n} Gpus")
            } else {
                format!("{p} pipeline devices")
            };
            return Err(Error::Input(format!(
                "--transport mpi: --devices {spec} gives {what} but mpirun started {} ranks: start one rank per Gpu (mpirun -np {n})",
                c.size
            )));
        }
        let counted = spec.trim().parse::<usize>().is_ok();
        return Ok(all[if counted { c.local_rank % n } else { c.rank }]);
    }
    let _ = spec;
    all.first()
        .copied()
        .ok_or_else(|| Error::Input("no devices placed".into()))
}

/// Open the Gpus of `placement` this process drives: every group
/// in-process; under MPI only this rank's ([`local_adapter`]).
pub fn open_local(placement: &Placement, spec: &str) -> Result<Vec<Vec<Gpu>>> {
    if mpi_rank().is_some() {
        return Ok(vec![vec![Gpu::open_summary(local_adapter(
            placement, spec,
        )?)?]]);
    }
    placement.open()
}

/// The schedule devices' groups over what [`open_local`] opened: in-process
/// one per group; under MPI `devices` entries, every one this rank's Gpu as
/// its member of the group (only this rank's endpoint runs here; the
/// others' names come back with their results).
pub fn device_groups(gpus: &[Vec<Gpu>], devices: usize) -> Result<Vec<DeviceGroup<'_>>> {
    #[cfg(feature = "mpi")]
    if let Some(c) = cluster() {
        let gpu = gpus
            .first()
            .and_then(|g| g.first())
            .ok_or_else(|| Error::Other("bug: no Gpu opened on this rank".into()))?;
        let tp = c.size / devices.max(1);
        return (0..devices)
            .map(|_| DeviceGroup::member(gpu, tp, c.rank % tp))
            .collect();
    }
    let _ = devices;
    gpus.iter().map(|g| DeviceGroup::new(g)).collect()
}

impl Control for Net {
    fn epoch(&self) -> Instant {
        match self {
            Net::InProcess(n) => n.epoch(),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.epoch(),
        }
    }
    fn start(&self, d: usize) -> std::result::Result<(), WaitError> {
        match self {
            Net::InProcess(n) => n.start(d),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.start(d),
        }
    }
    fn abort(&self) {
        match self {
            Net::InProcess(n) => n.abort(),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.abort(),
        }
    }
    fn aborted(&self) -> bool {
        match self {
            Net::InProcess(n) => n.aborted(),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.aborted(),
        }
    }
    fn finish(&self, d: usize) {
        match self {
            Net::InProcess(n) => n.finish(d),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.finish(d),
        }
    }
    fn finished(&self, d: usize) -> bool {
        match self {
            Net::InProcess(n) => n.finished(d),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.finished(d),
        }
    }
    fn local(&self, d: usize) -> bool {
        match self {
            Net::InProcess(n) => n.local(d),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.local(d),
        }
    }
    fn exchange(&self, mine: Vec<u8>) -> std::result::Result<Vec<Vec<u8>>, String> {
        match self {
            Net::InProcess(n) => n.exchange(mine),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.exchange(mine),
        }
    }
}

impl Transport for Net {
    fn send(&self, from: usize, to: usize, product: Product, staging: &wgpu::Buffer, bytes: u64) {
        match self {
            Net::InProcess(n) => n.send(from, to, product, staging, bytes),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.send(from, to, product, staging, bytes),
        }
    }
    fn receive(
        &self,
        to: usize,
        from: usize,
        product: Product,
        queue: &wgpu::Queue,
        dst: &wgpu::Buffer,
        control: &dyn Control,
    ) -> std::result::Result<u64, WaitError> {
        match self {
            Net::InProcess(n) => n.receive(to, from, product, queue, dst, control),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.receive(to, from, product, queue, dst, control),
        }
    }
}

impl Collective for Net {
    fn all_reduce(
        &self,
        endpoint: usize,
        data: Vec<f32>,
        control: &dyn Control,
    ) -> std::result::Result<Vec<f32>, WaitError> {
        match self {
            Net::InProcess(n) => n.all_reduce(endpoint, data, control),
            #[cfg(feature = "mpi")]
            Net::Mpi(n) => n.all_reduce(endpoint, data, control),
        }
    }
}
