//! Timelines: what ran where and when. Filled by the simulator (clock
//! "simulated") and by the real executor from GPU timestamps; read by the
//! bubble statistics and the renderers ([`chrome`], [`svg`], [`chart`]),
//! whose axes, units and number formats are [`axis`]'s.
//!
//! The bubble fraction is [`crate::timing`]'s, the same everywhere in wgpipe:
//! `1 − Σ_d busy_d / (P × makespan)`, over compute events only, where
//! makespan = last compute end − first compute start.

pub mod axis;
pub mod chart;
#[cfg(test)]
mod check;
pub mod chrome;
mod line;
pub mod svg;

use serde::{Deserialize, Serialize};

use crate::action::Action;
pub use crate::timing::BubbleStats;
use crate::timing::Simulation;

/// Where an event happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Track {
    /// Compute on one schedule device (a row of the schedule): on member
    /// `gpu` of that device's group of [`crate::device::Gpu`]s (always 0
    /// while a group is one Gpu).
    Compute { device: usize, gpu: usize },
    /// A copy between two devices (it occupies neither device's compute).
    Transfer { from: usize, to: usize },
    /// An all-reduce of tensor-parallel rank `gpu` of schedule device
    /// `device`'s group, host side: from its partial sum being on the host
    /// to the group's sum being queued back (inside the rank's compute span).
    AllReduce { device: usize, gpu: usize },
}

impl Track {
    /// Compute on schedule device `device`'s first (or only) Gpu.
    pub fn compute(device: usize) -> Track {
        Track::Compute { device, gpu: 0 }
    }

    /// The schedule device of a compute track; `None` for a transfer.
    pub fn compute_device(&self) -> Option<usize> {
        match *self {
            Track::Compute { device, .. } => Some(device),
            Track::Transfer { .. } | Track::AllReduce { .. } => None,
        }
    }
}

/// One interval on one track.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub track: Track,
    /// The action (`1F0`) for compute; `"1F0 0->1"` for the transfer that
    /// feeds action 1F0 from device 0 to device 1.
    pub name: String,
    /// The compute action, or for a transfer the action it feeds.
    pub action: Option<Action>,
    pub start_us: f64,
    pub end_us: f64,
    /// Bytes moved (transfers); 0 where unknown.
    pub bytes: u64,
}

impl Event {
    pub fn duration_us(&self) -> f64 {
        self.end_us - self.start_us
    }
}

/// Everything that ran, on one clock.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// One per device, in device order; its length is P.
    pub device_names: Vec<String>,
    pub events: Vec<Event>,
    /// "simulated", "gpu-timestamps" or "host".
    pub clock: String,
}

impl Timeline {
    /// Compute events of one device (its rank 0's, for a tensor-parallel
    /// group), in time order.
    pub fn device_events(&self, device: usize) -> Vec<&Event> {
        let mut v: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.track == Track::compute(device))
            .collect();
        v.sort_by(|a, b| a.start_us.total_cmp(&b.start_us));
        v
    }

    /// (first compute start, last compute end); (0, 0) with no compute.
    pub fn compute_span(&self) -> (f64, f64) {
        let compute = self
            .events
            .iter()
            .filter(|e| matches!(e.track, Track::Compute { .. }));
        let (lo, hi) = compute.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), e| {
            (lo.min(e.start_us), hi.max(e.end_us))
        });
        if lo.is_finite() {
            (lo, hi)
        } else {
            (0.0, 0.0)
        }
    }

    /// Busy/idle per device and the bubble fraction, over compute events.
    /// Events on devices beyond `device_names` are ignored. A device that is
    /// a tensor-parallel group counts its rank 0's events: its ranks run the
    /// same actions in lockstep, meeting at every all-reduce.
    pub fn stats(&self) -> BubbleStats {
        let compute = self.events.iter().filter_map(|e| match e.track {
            Track::Compute { device, gpu: 0 } => Some((device, e.start_us, e.end_us)),
            _ => None,
        });
        BubbleStats::from_compute(self.device_names.len(), compute)
    }

    /// The timeline of a simulation (clock "simulated"): devices named
    /// `device 0`, …; each slot a compute event named by its action (`1F0`),
    /// then each transfer an event named `1F0 0->1` after the action it feeds.
    pub fn from_simulation(sim: &Simulation) -> Timeline {
        let compute = sim.slots.iter().map(|s| Event {
            track: Track::compute(s.device),
            name: s.action.to_string(),
            action: Some(s.action),
            start_us: s.start,
            end_us: s.end,
            bytes: 0,
        });
        let transfers = sim.transfers.iter().map(|t| Event {
            track: Track::Transfer {
                from: t.from,
                to: t.to,
            },
            name: format!("{} {}->{}", t.action, t.from, t.to),
            action: Some(t.action),
            start_us: t.start,
            end_us: t.end,
            bytes: 0,
        });
        Timeline {
            device_names: (0..sim.devices()).map(|d| format!("device {d}")).collect(),
            events: compute.chain(transfers).collect(),
            clock: "simulated".into(),
        }
    }
}

impl From<&Simulation> for Timeline {
    fn from(sim: &Simulation) -> Timeline {
        Timeline::from_simulation(sim)
    }
}
