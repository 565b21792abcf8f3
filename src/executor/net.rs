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
    /// The net for a run over `devices` schedule devices: across the MPI
    /// ranks when this process is one of them, else in-process. Under MPI
    /// every rank must make the same runs in the same order.
    pub fn new(devices: usize) -> Result<Net> {
        #[cfg(feature = "mpi")]
        if super::mpi::cluster().is_some() {
            return Ok(Net::Mpi(super::mpi::MpiNet::new(devices)?));
        }
        Ok(Net::InProcess(InProcess::new(devices)))
    }

    /// The net for `groups`: in-process [`InProcess::for_groups`]; under MPI
    /// one rank per schedule device, so groups of one Gpu only.
    pub fn for_groups(groups: &[DeviceGroup]) -> Result<Net> {
        #[cfg(feature = "mpi")]
        if super::mpi::cluster().is_some() {
            if let Some(g) = groups.iter().find(|g| g.tp() > 1) {
                return Err(Error::Input(format!(
                    "--transport mpi runs one Gpu per rank; device group {} has {} (tensor parallelism across ranks is not implemented)",
                    g.label(),
                    g.tp()
                )));
            }
            return Net::new(groups.len());
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
/// in-process; under MPI only this rank's (rank r is schedule device r: a
/// `--devices` list is indexed by rank, a count by the rank on its host, so
/// that each host's ranks take its adapters in turn).
pub fn open_local(placement: &Placement, spec: &str) -> Result<Vec<Vec<Gpu>>> {
    #[cfg(feature = "mpi")]
    if let Some(c) = super::mpi::cluster() {
        let p = placement.devices();
        if p != c.size {
            return Err(Error::Input(format!(
                "--transport mpi: --devices {spec} gives {p} pipeline devices but mpirun started {} ranks: start one rank per device (mpirun -np {p})",
                c.size
            )));
        }
        if let Some(g) = placement.groups.iter().find(|g| g.len() > 1) {
            return Err(Error::Input(format!(
                "--transport mpi runs one Gpu per rank, not tensor-parallel groups of {}: leave out --tp",
                g.len()
            )));
        }
        let counted = spec.trim().parse::<usize>().is_ok();
        let mine = if counted { c.local_rank % p } else { c.rank };
        let group = placement.groups[mine]
            .iter()
            .map(Gpu::open_summary)
            .collect::<Result<Vec<_>>>()?;
        return Ok(vec![group]);
    }
    let _ = spec;
    placement.open()
}

/// The schedule devices' groups over what [`open_local`] opened: in-process
/// one per group; under MPI `devices` entries, every one this rank's group
/// (only this rank's device runs here; the others' names come back with
/// their results).
pub fn device_groups(gpus: &[Vec<Gpu>], devices: usize) -> Result<Vec<DeviceGroup<'_>>> {
    let groups = gpus
        .iter()
        .map(|g| DeviceGroup::new(g))
        .collect::<Result<Vec<_>>>()?;
    if mpi_rank().is_some() && groups.len() == 1 {
        return Ok(vec![groups[0]; devices]);
    }
    Ok(groups)
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
            // One Gpu per rank (`for_groups` refuses groups): no group to sum over.
            #[cfg(feature = "mpi")]
            Net::Mpi(_) => Err(WaitError::Failed(
                "all-reduce across MPI ranks is not implemented (no tensor parallelism under --transport mpi)".into(),
            )),
        }
    }
}
