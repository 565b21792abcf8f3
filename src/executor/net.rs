//! Which transport a run uses: [`InProcess`] (every device a thread of this
//! process), or with `--features mpi` and `--transport mpi` one MPI rank per
//! device ([`super::mpi`]). The entry points ([`super::run_inference`],
//! [`super::decode::generate`], the `--split auto` profile) ask [`Net::new`],
//! so the same code runs either way; this file is the only place that knows
//! both.

use std::time::Instant;

use super::transport::{Collective, Control, InProcess, Transport, WaitError};
use super::DeviceGroup;
use crate::action::Product;
use crate::device::{Gpu, Placement};
use crate::error::{Error, Result};

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
        if super::mpi::cluster().is_some() {
            return Ok(Net::Mpi(super::mpi::MpiNet::new(devices, 1)?));
        }
        Ok(Net::InProcess(InProcess::new(devices)))
    }

    /// The net for `groups`: in-process [`InProcess::for_groups`]; under MPI
    /// one rank per Gpu (endpoint), the groups' all-reduces among their ranks.
    pub fn for_groups(groups: &[DeviceGroup]) -> Result<Net> {
        #[cfg(feature = "mpi")]
        if super::mpi::cluster().is_some() {
            let tp = super::uniform_tp(groups)?;
            return Ok(Net::Mpi(super::mpi::MpiNet::new(groups.len() * tp, tp)?));
        }
        Ok(Net::InProcess(InProcess::for_groups(groups)))
    }
}

/// This process's rank and the number of ranks, under `--transport mpi`.
pub fn mpi_rank() -> Option<(usize, usize)> {
    #[cfg(feature = "mpi")]
    if let Some(c) = super::mpi::cluster() {
        return Some((c.rank, c.size));
    }
    None
}

/// Under MPI, for the report: the ranks, their hosts' names as MPI gives
/// them (this rank's only), and how closely each rank's clock was aligned
/// with rank 0's (µs, half the tightest ping-pong round trip).
pub fn mpi_summary() -> Option<serde_json::Value> {
    #[cfg(feature = "mpi")]
    if let Some(c) = super::mpi::cluster() {
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
    if let Some(c) = super::mpi::cluster() {
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

/// Whether schedule device `d` runs in this process: every device
/// in-process; under MPI only this rank's (rank r is device r).
pub fn local_device(d: usize) -> bool {
    mpi_rank().is_none_or(|(r, _)| r == d)
}

/// Every process's `mine`, in rank order (device order): in-process just
/// `[mine]`; under MPI encoded, all-gathered and decoded, which every rank
/// must do, in the same order. For what is combined outside a run
/// (training's tied-embedding sum, gradient norm, tensors read back).
pub(crate) fn share<T: super::wire::Wire>(mine: T) -> Result<Vec<T>> {
    #[cfg(feature = "mpi")]
    if super::mpi::cluster().is_some() {
        let all = super::mpi::all_gather(&super::wire::to_bytes(&mine)).map_err(Error::Other)?;
        return all
            .iter()
            .enumerate()
            .map(|(r, b)| {
                super::wire::from_bytes(b)
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

/// Open the Gpus of `placement` this process drives: every group
/// in-process; under MPI only this rank's Gpu. Rank r is endpoint r: Gpu
/// `r mod T` of schedule device `r / T` (T the tensor-parallel degree). A
/// `--devices` list is indexed by rank, a count by the rank on its host, so
/// that each host's ranks take its adapters in turn.
pub fn open_local(placement: &Placement, spec: &str) -> Result<Vec<Vec<Gpu>>> {
    #[cfg(feature = "mpi")]
    if let Some(c) = super::mpi::cluster() {
        let all: Vec<_> = placement.groups.iter().flatten().collect();
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
        let mine = if counted { c.local_rank % n } else { c.rank };
        return Ok(vec![vec![Gpu::open_summary(all[mine])?]]);
    }
    let _ = spec;
    placement.open()
}

/// The schedule devices' groups over what [`open_local`] opened: in-process
/// one per group; under MPI `devices` entries, every one this rank's Gpu as
/// its member of the group (only this rank's endpoint runs here; the
/// others' names come back with their results).
pub fn device_groups(gpus: &[Vec<Gpu>], devices: usize) -> Result<Vec<DeviceGroup<'_>>> {
    #[cfg(feature = "mpi")]
    if let Some(c) = super::mpi::cluster() {
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
