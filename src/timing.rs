//! Actions placed in time, and the bubble they leave: the plain data the
//! simulator ([`crate::schedule::simulate()`]) returns and the trace
//! ([`crate::trace::Timeline`]) draws, and the one bubble formula both use.
//!
//! A leaf module beside [`crate::action`]: it depends on nothing else, so
//! `schedule` and `trace` can both read it without reading each other.
//!
//! The bubble fraction, the same everywhere in wgpipe:
//! `1 − Σ_d busy_d / (P × makespan)`, over compute only, where
//! makespan = last compute end − first compute start.

use serde::{Deserialize, Serialize};

use crate::action::Action;

/// One action run by one device from `start` to `end`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slot {
    pub device: usize,
    pub action: Action,
    pub start: f64,
    pub end: f64,
}

/// A transfer from device `from` to device `to` of what `action` needs,
/// from `start` to `end`. It occupies neither device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimTransfer {
    pub from: usize,
    pub to: usize,
    /// The action the transfer feeds (on device `to`).
    pub action: Action,
    pub start: f64,
    pub end: f64,
}

/// What a simulation found, in the costs' time unit.
#[derive(Clone, Debug, PartialEq)]
pub struct Simulation {
    /// Every action, in the order the simulator placed them.
    pub slots: Vec<Slot>,
    /// Every transfer between devices (none when transfers are free).
    pub transfers: Vec<SimTransfer>,
    pub makespan: f64,
    /// Per device: time spent computing.
    pub busy: Vec<f64>,
    /// Per device, within the makespan.
    pub idle: Vec<f64>,
    /// 1 − Σ busy / (P × makespan); see [`BubbleStats`].
    pub bubble: f64,
    /// Per device: the most (stage, microbatch) activations held at once.
    /// One is held from the start of its F until the end of its B (or of its
    /// I: that frees the bulk; W's residue is not counted, as in the ZB
    /// paper); in a forward-only schedule, only while its F runs. With one
    /// chunk per device this counts microbatches.
    pub peak_activations: Vec<usize>,
}

impl Simulation {
    /// P: the number of devices.
    pub fn devices(&self) -> usize {
        self.busy.len()
    }
}

/// Busy and idle time per device, and the bubble fraction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BubbleStats {
    pub busy_us: Vec<f64>,
    pub idle_us: Vec<f64>,
    pub makespan_us: f64,
    pub bubble: f64,
}

impl BubbleStats {
    /// The statistics of `devices` devices from their compute intervals
    /// `(device, start, end)`; intervals of devices ≥ `devices` are ignored.
    /// With no compute, makespan and bubble are 0.
    pub fn from_compute(
        devices: usize,
        compute: impl IntoIterator<Item = (usize, f64, f64)>,
    ) -> BubbleStats {
        let mut busy_us = vec![0.0; devices];
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (d, start, end) in compute {
            lo = lo.min(start);
            hi = hi.max(end);
            if d < devices {
                busy_us[d] += end - start;
            }
        }
        let makespan_us = if lo.is_finite() { hi - lo } else { 0.0 };
        let idle_us = busy_us.iter().map(|b| makespan_us - b).collect();
        let total: f64 = busy_us.iter().sum();
        let bubble = if makespan_us > 0.0 && devices > 0 {
            1.0 - total / (devices as f64 * makespan_us)
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

/// The median of `v`; 0 for an empty list (no transfers, say).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
