//! Where this process stands among the processes of a run: alone with every
//! device ([`Cluster::Local`]), or one rank of an MPI job, one Gpu each
//! ([`Cluster::Mpi`], `--features mpi`). A value handed to whatever runs
//! across processes — the entry points of every workload, the trainer, the
//! benches, the pipeline API — never looked up: a run on this
//! process's devices alone (a bench's one-device baseline on rank 0) is
//! simply given [`Cluster::Local`].
//!
//! Under MPI, rank r is endpoint r: Gpu `r mod T` of schedule device `r / T`
//! (T the tensor-parallel degree). The collectives here ([`Cluster::share`],
//! [`Cluster::run_on`], [`Cluster::device_labels`]) must be called by every
//! rank, in the same order.

use super::net::Net;
use super::transport::InProcess;
use super::wire::Wire;
#[cfg(feature = "mpi")]
use super::wire::{from_bytes, to_bytes};
use super::DeviceGroup;
use crate::device::{AdapterSummary, Gpu, Placement};
use crate::error::{Error, Result};

/// The processes a run is spread over.
#[derive(Clone, Default)]
pub enum Cluster {
    /// Every device is a thread of this process.
    #[default]
    Local,
    /// This process is one rank of an MPI job (`mpirun -np N … --transport mpi`).
    #[cfg(feature = "mpi")]
    Mpi(std::sync::Arc<super::mpi::World>),
}

/// Under MPI, for a report: the ranks, this rank's host as MPI names it, and
/// how closely each rank's clock was aligned with rank 0's.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MpiSummary {
    pub ranks: usize,
    pub host: String,
    /// Per rank: half the tightest ping-pong round trip with rank 0 (µs).
    pub clock_error_us: Vec<f64>,
    /// Ping-pong round trips per rank when aligning clocks.
    pub clock_rounds: usize,
}

impl MpiSummary {
    /// One line for a text report.
    pub fn line(&self) -> String {
        let worst = self.clock_error_us.iter().copied().fold(0.0, f64::max);
        format!(
            "mpi: {} ranks, one Gpu each; every rank's clock mapped onto rank 0's within ±{worst:.1} µs (half the tightest of {} ping-pongs)",
            self.ranks, self.clock_rounds
        )
    }
}

impl Cluster {
    /// This process's rank and the number of ranks, under MPI.
    pub fn rank(&self) -> Option<(usize, usize)> {
        match self {
            Cluster::Local => None,
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => Some((w.rank, w.size)),
        }
    }

    /// Whether this process reports and writes files: always in-process,
    /// rank 0 under MPI.
    pub fn is_root(&self) -> bool {
        self.rank().is_none_or(|(r, _)| r == 0)
    }

    /// Whether this process drives schedule device `d` (of one Gpu): every
    /// device in-process, device r on rank r under MPI.
    pub fn drives(&self, d: usize) -> bool {
        self.rank().is_none_or(|(r, _)| r == d)
    }

    /// Whether endpoint `e` (device × T + rank) runs in this process: every
    /// one in-process, endpoint r on rank r under MPI.
    pub fn runs_endpoint(&self, e: usize) -> bool {
        self.rank().is_none_or(|(r, _)| r == e)
    }

    /// Refuse what cannot run across MPI ranks yet.
    pub fn refuse_mpi(&self, what: &str) -> Result<()> {
        match self.rank() {
            Some(_) => Err(Error::Input(format!(
                "{what} does not run across MPI ranks yet: run it without --transport mpi"
            ))),
            None => Ok(()),
        }
    }

    /// The report's `mpi` object, under MPI.
    pub fn summary(&self) -> Option<MpiSummary> {
        match self {
            Cluster::Local => None,
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => Some(MpiSummary {
                ranks: w.size,
                host: w.host.clone(),
                clock_error_us: w.clock_error_us.clone(),
                clock_rounds: super::mpi::CLOCK_ROUNDS,
            }),
        }
    }

    /// The net for a run over `devices` schedule devices of one Gpu each:
    /// across the ranks under MPI, else in-process. Collective under MPI.
    pub fn net(&self, devices: usize) -> Result<Net> {
        match self {
            Cluster::Local => Ok(Net::InProcess(InProcess::new(devices))),
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => Ok(Net::Mpi(super::mpi::MpiNet::new(w, devices, 1)?)),
        }
    }

    /// The net for `groups`: in-process [`InProcess::for_groups`]; under MPI
    /// one rank per Gpu (endpoint), the groups' all-reduces among their
    /// ranks. Collective under MPI.
    pub fn net_for(&self, groups: &[DeviceGroup]) -> Result<Net> {
        match self {
            Cluster::Local => Ok(Net::InProcess(InProcess::for_groups(groups))),
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => {
                let tp = super::uniform_tp(groups)?;
                Ok(Net::Mpi(super::mpi::MpiNet::new(w, groups.len() * tp, tp)?))
            }
        }
    }

    /// Every process's `mine`, in rank order (device order): in-process just
    /// `[mine]`; under MPI encoded, all-gathered and decoded. For what is
    /// combined outside a run (training's tied-embedding sum, gradient norm,
    /// tensors read back).
    pub fn share<T: Wire>(&self, mine: T) -> Result<Vec<T>> {
        match self {
            Cluster::Local => Ok(vec![mine]),
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => {
                let all = super::mpi::all_gather(w, to_bytes(&mine)).map_err(gather_error)?;
                all.iter()
                    .enumerate()
                    .map(|(r, b)| {
                        from_bytes(b).ok_or_else(|| {
                            Error::Other(format!("rank {r}'s share arrived corrupt"))
                        })
                    })
                    .collect()
            }
        }
    }

    /// Every rank's `x`, by rank; in-process `[x]`.
    pub fn all_gather_u64(&self, x: u64) -> Vec<u64> {
        match self {
            Cluster::Local => vec![x],
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => w.all_gather_u64(x),
        }
    }

    /// Run `f` where schedule device `d` is driven, and hand its result to
    /// every process: in-process `f()`; under MPI rank `d` runs `f` while the
    /// others wait (asleep, not spinning), then every rank gets its result.
    /// A failure of `f` ends the job on rank `d` (the CLI aborts every
    /// rank), so no rank waits forever.
    pub fn run_on<T: Wire>(&self, d: usize, f: impl FnOnce() -> Result<T>) -> Result<T> {
        match self {
            Cluster::Local => {
                let _ = d;
                f()
            }
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => {
                if d >= w.size {
                    return Err(Error::Input(format!(
                        "device {d} has no rank: mpirun started {} ranks",
                        w.size
                    )));
                }
                let mine = if w.rank == d {
                    to_bytes(&f()?)
                } else {
                    Vec::new()
                };
                let all = super::mpi::all_gather(w, mine).map_err(gather_error)?;
                from_bytes(&all[d])
                    .ok_or_else(|| Error::Other(format!("device {d}'s result arrived corrupt")))
            }
        }
    }

    /// Every schedule device's label (`vulkan:0 (llvmpipe …)`) on every
    /// process: in-process from `groups`; under MPI each rank's own, gathered.
    pub fn device_labels(&self, groups: &[DeviceGroup]) -> Result<Vec<String>> {
        match self {
            Cluster::Local => Ok(groups.iter().map(DeviceGroup::label).collect()),
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => {
                let mine = groups.first().map(DeviceGroup::label).unwrap_or_default();
                let all = super::mpi::all_gather(w, mine.into_bytes()).map_err(gather_error)?;
                Ok(all
                    .into_iter()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .take(w.size)
                    .collect())
            }
        }
    }

    /// The adapter of `placement` this process drives first: in-process the
    /// first Gpu's; under MPI this rank's. A `--devices` list is indexed by
    /// rank, a count by the rank on its host, so that each host's ranks take
    /// its adapters in turn. Checks that the ranks match the Gpus.
    pub fn local_adapter<'p>(
        &self,
        placement: &'p Placement,
        spec: &str,
    ) -> Result<&'p AdapterSummary> {
        let all: Vec<&AdapterSummary> = placement.groups.iter().flatten().collect();
        match self {
            Cluster::Local => {
                let _ = spec;
                all.first()
                    .copied()
                    .ok_or_else(|| Error::Input("no devices placed".into()))
            }
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => {
                let (p, n) = (placement.devices(), all.len());
                if n != w.size {
                    let tp = n / p.max(1);
                    let what = if tp > 1 {
                        format!("{p} pipeline devices x --tp {tp} = {n} Gpus")
                    } else {
                        format!("{p} pipeline devices")
                    };
                    return Err(Error::Input(format!(
                        "--transport mpi: --devices {spec} gives {what} but mpirun started {} ranks: start one rank per Gpu (mpirun -np {n})",
                        w.size
                    )));
                }
                let counted = spec.trim().parse::<usize>().is_ok();
                Ok(all[if counted { w.local_rank % n } else { w.rank }])
            }
        }
    }

    /// Open the Gpus of `placement` this process drives: every group
    /// in-process; under MPI only this rank's ([`Cluster::local_adapter`]).
    pub fn open_local(&self, placement: &Placement, spec: &str) -> Result<Vec<Vec<Gpu>>> {
        match self {
            Cluster::Local => {
                let _ = spec;
                placement.open()
            }
            #[cfg(feature = "mpi")]
            Cluster::Mpi(_) => Ok(vec![vec![Gpu::open_summary(
                self.local_adapter(placement, spec)?,
            )?]]),
        }
    }

    /// The schedule devices' groups over what [`Cluster::open_local`]
    /// opened: in-process one per group; under MPI `devices` entries, every
    /// one this rank's Gpu as its member of the group (only this rank's
    /// endpoint runs here; the others' names come back with their results).
    pub fn device_groups<'g>(
        &self,
        gpus: &'g [Vec<Gpu>],
        devices: usize,
    ) -> Result<Vec<DeviceGroup<'g>>> {
        match self {
            Cluster::Local => {
                let _ = devices;
                gpus.iter().map(|g| DeviceGroup::new(g)).collect()
            }
            #[cfg(feature = "mpi")]
            Cluster::Mpi(w) => {
                let gpu = gpus
                    .first()
                    .and_then(|g| g.first())
                    .ok_or_else(|| Error::Other("bug: no Gpu opened on this rank".into()))?;
                let tp = w.size / devices.max(1);
                (0..devices)
                    .map(|_| DeviceGroup::member(gpu, tp, w.rank % tp))
                    .collect()
            }
        }
    }
}

/// An all-gather's failure as an error: [`Error::Interrupted`] when a stop
/// cut its wait short.
#[cfg(feature = "mpi")]
fn gather_error(msg: String) -> Error {
    match crate::interrupt::requested() {
        true => Error::Interrupted,
        false => Error::Other(msg),
    }
}
