//! Timelines: what ran where and when. Filled by the simulator (clock
//! "simulated") and by the real executor from GPU timestamps; read by the
//! bubble statistics and the renderers ([`chrome`], [`svg`]).
//!
//! The bubble fraction, the same everywhere in wgpipe:
//! `1 − Σ_d busy_d / (P × makespan)`, over compute events only, where
//! makespan = last compute end − first compute start.

pub mod chart;
pub mod chrome;
pub mod svg;

use serde::{Deserialize, Serialize};

use crate::action::Action;

/// Where an event happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Track {
    /// Compute on one schedule device (a row of the schedule): on member
    /// `gpu` of that device's group of [`crate::device::Gpu`]s (always 0
    /// while a group is one Gpu).
    Compute { device: usize, gpu: usize },
    /// A copy between two devices (it occupies neither device's compute).
    Transfer { from: usize, to: usize },
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
            Track::Transfer { .. } => None,
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

/// Busy and idle time per device, and the bubble fraction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BubbleStats {
    pub busy_us: Vec<f64>,
    pub idle_us: Vec<f64>,
    pub makespan_us: f64,
    pub bubble: f64,
}

impl Timeline {
    /// Compute events of one device, in time order.
    pub fn device_events(&self, device: usize) -> Vec<&Event> {
        let mut v: Vec<&Event> = self
            .events
            .iter()
            .filter(|e| e.track.compute_device() == Some(device))
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
    /// Events on devices beyond `device_names` are ignored.
    pub fn stats(&self) -> BubbleStats {
        let p = self.device_names.len();
        let mut busy_us = vec![0.0; p];
        for e in &self.events {
            match e.track {
                Track::Compute { device: d, .. } if d < p => busy_us[d] += e.duration_us(),
                _ => {}
            }
        }
        let (lo, hi) = self.compute_span();
        let makespan_us = hi - lo;
        let idle_us = busy_us.iter().map(|b| makespan_us - b).collect();
        let total: f64 = busy_us.iter().sum();
        let bubble = if makespan_us > 0.0 && p > 0 {
            1.0 - total / (p as f64 * makespan_us)
        } else {
            0.0
        };
        BubbleStats {
            busy_us,
            idle_us,
            makespan_us,
            bubble,
        }
    }
}
