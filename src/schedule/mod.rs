//! Pipeline schedules as data.
//!
//! A [`Schedule`] is one ordered list of [`Action`]s per device (`None` is a
//! deliberate idle step). Generators ([`generate`]) are pure functions of
//! P devices, M microbatches and v chunks per device; validation, simulation,
//! CSV and the grid formatter are separate passes that read the same data.
//! The executor runs these lists; nothing else re-derives an order.
//!
//! Legend: P = devices, M = microbatches, v = chunks (virtual stages) per
//! device, S = P·v stages. Device d holds stages d, d+P, d+2P, …

pub mod analytic;
pub mod csv;
mod error;
pub mod generate;
pub mod grid;
pub mod simulate;
pub mod validate;

pub use crate::action::{Action, Kind, Product, ProductKind};
pub use error::ScheduleError;
pub use simulate::{simulate, Costs, Simulation};

use serde::{Deserialize, Serialize};

/// Names accepted by [`Schedule::from_name`] and `wgpipe plan --schedule`.
pub const SCHEDULE_NAMES: [&str; 4] = ["gpipe", "1f1b", "interleaved", "zb-h1"];

/// Per-device ordered action lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Generator name (`gpipe`, `1f1b`, `interleaved`, `zb-h1`) or what a CSV said.
    pub name: String,
    /// P.
    pub devices: usize,
    /// v: chunks (virtual stages) per device.
    pub virtual_stages: usize,
    /// M.
    pub microbatches: usize,
    /// One row per device; column = step; `None` = deliberate idle step.
    pub rows: Vec<Vec<Option<Action>>>,
}

impl Schedule {
    /// S = P·v.
    pub fn stages(&self) -> usize {
        self.devices * self.virtual_stages
    }

    /// Device d holds stages d, d+P, d+2P, …
    pub fn device_of_stage(&self, stage: usize) -> usize {
        stage % self.devices
    }

    /// True when no device has a backward action (B, I or W).
    pub fn is_forward_only(&self) -> bool {
        self.actions().all(|(_, _, a)| a.kind == Kind::F)
    }

    /// Every action with its device and step (column), row by row.
    pub fn actions(&self) -> impl Iterator<Item = (usize, usize, Action)> + '_ {
        self.rows.iter().enumerate().flat_map(|(d, row)| {
            row.iter()
                .enumerate()
                .filter_map(move |(step, cell)| cell.map(|a| (d, step, a)))
        })
    }

    /// Number of steps (columns) of the widest row.
    pub fn steps(&self) -> usize {
        self.rows.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Only the F actions, in each device's order: how a training schedule is
    /// run for inference. Idle steps are re-placed for the shorter lists
    /// (see [`Schedule::aligned`]); if the order cannot run, the lists are
    /// returned without idle steps and validation will say why.
    pub fn forward_part(&self) -> Schedule {
        let rows = self
            .rows
            .iter()
            .map(|row| {
                row.iter()
                    .flatten()
                    .filter(|a| a.kind == Kind::F)
                    .map(|a| Some(*a))
                    .collect()
            })
            .collect();
        let compact = Schedule {
            rows,
            ..self.clone()
        };
        compact.aligned().unwrap_or(compact)
    }

    /// The same order with idle steps re-placed so that each action sits in
    /// the step where it would start if every action took one step and
    /// transfers were free. Generators return aligned schedules, so their grid
    /// shows the warm-up and drain bubbles. Fails if the order deadlocks.
    pub fn aligned(&self) -> Result<Schedule, ScheduleError> {
        let unit = Costs::uniform(self.stages(), 1.0, 1.0, 1.0, 1.0, 0.0);
        let sim = simulate(self, &unit)?;
        let mut rows: Vec<Vec<Option<Action>>> = vec![Vec::new(); self.devices];
        for e in &sim.timeline.events {
            if let (crate::trace::Track::Compute { device: d, .. }, Some(a)) = (e.track, e.action) {
                let step = e.start_us.round() as usize;
                let row = &mut rows[d];
                if row.len() < step {
                    row.resize(step, None);
                }
                row.push(Some(a));
            }
        }
        Ok(Schedule {
            rows,
            ..self.clone()
        })
    }

    /// Generates a schedule by its CLI name: `gpipe`, `1f1b`, `interleaved`, `zb-h1`.
    /// `v` is the number of chunks per device; every schedule accepts `v = 1`.
    pub fn from_name(
        name: &str,
        p: usize,
        m: usize,
        v: usize,
        forward_only: bool,
    ) -> Result<Schedule, ScheduleError> {
        match name {
            "gpipe" => generate::gpipe(p, m, v, forward_only),
            "1f1b" => generate::one_f_one_b(p, m, v, forward_only),
            "interleaved" => generate::interleaved(p, m, v, forward_only),
            "zb-h1" => generate::zb_h1(p, m, v, forward_only),
            _ => Err(ScheduleError::UnknownSchedule {
                name: name.to_string(),
            }),
        }
    }

    /// The schedule inference runs: the forward-only form of `gpipe` and
    /// `interleaved`; for the training schedules (`1f1b`, `zb-h1`) their
    /// forward part, each device's forwards in the schedule's own order.
    pub fn for_inference(
        name: &str,
        p: usize,
        m: usize,
        v: usize,
    ) -> Result<Schedule, ScheduleError> {
        match name {
            "gpipe" | "interleaved" => Schedule::from_name(name, p, m, v, true),
            _ => Ok(Schedule::from_name(name, p, m, v, false)?.forward_part()),
        }
    }
}
