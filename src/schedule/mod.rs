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

//!
//! Nothing here reads the trace: the simulator returns plain
//! [`Simulation`] data ([`crate::timing`]), which the trace module can draw.

pub mod analytic;
pub mod csv;
mod error;
pub mod generate;
pub mod grid;
mod kind;
pub mod report;
pub mod simulate;
pub mod validate;
mod walk;

pub use crate::action::{Action, Kind, Product, ProductKind};
pub use crate::timing::{SimTransfer, Simulation, Slot};
pub use error::ScheduleError;
pub use kind::ScheduleKind;
pub use simulate::{simulate, Costs};

use serde::{Deserialize, Serialize};

/// Per-device ordered action lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// The generator's name ([`ScheduleKind`]) or what a CSV said.
    pub name: String,
    /// P.
    pub devices: usize,
    /// v: chunks (virtual stages) per device.
    pub virtual_stages: usize,
    /// M.
    pub microbatches: usize,
    /// One row per device; column = step; `None` = deliberate idle step.
    pub rows: Vec<Vec<Option<Action>>>,
    /// Autoregressive decoding (0 otherwise): microbatch u's first-stage
    /// forward also needs the last stage's output of microbatch u −
    /// `feedback` — the tokens sampled for the same group of sequences one
    /// step earlier ([`Schedule::decode`]).
    #[serde(default)]
    pub feedback: usize,
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

    /// What `a` needs before it may start: [`Action::needs`], and in a decode
    /// schedule, for a first-stage forward, the tokens of its group's
    /// previous step.
    pub fn needs(&self, a: &Action) -> Vec<Product> {
        let mut needs = a.needs(self.stages());
        if self.feedback > 0 && a.kind == Kind::F && a.stage == 0 && a.microbatch >= self.feedback {
            needs.push(Product {
                stage: self.stages() - 1,
                microbatch: a.microbatch - self.feedback,
                what: ProductKind::Activation,
            });
        }
        needs
    }

    /// Pipelined autoregressive decoding over `p` devices: `groups` groups
    /// of sequences in flight, each through `steps` passes (the prompt's
    /// prefill, then one new token per pass). Microbatch u is group u mod
    /// `groups` at step u / `groups`; each device runs its stage on every
    /// microbatch in order, and stage 0 waits for the last stage's tokens of
    /// the same group's previous step. With `groups` ≥ `p` every device can
    /// stay busy; with one group, one device works at a time.
    pub fn decode(p: usize, groups: usize, steps: usize) -> Result<Schedule, ScheduleError> {
        for (n, what, flag) in [
            (p, "device", "--devices"),
            (groups, "group of sequences", "--groups"),
            (steps, "decode step", "--max-new-tokens"),
        ] {
            if n == 0 {
                return Err(ScheduleError::Zero { what, flag });
            }
        }
        let m = groups * steps;
        let rows = (0..p)
            .map(|d| (0..m).map(|u| Some(Action::new(d, Kind::F, u))).collect())
            .collect();
        Schedule {
            name: "decode".into(),
            devices: p,
            virtual_stages: 1,
            microbatches: m,
            rows,
            feedback: groups,
        }
        .aligned()
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

    /// The generator this schedule is named after, if its name is one
    /// (a CSV file may name it anything).
    pub fn kind(&self) -> Option<ScheduleKind> {
        self.name.parse().ok()
    }

    /// The same order with idle steps re-placed so that each action sits in
    /// the step where it would start if every action took one step and
    /// transfers were free. Generators return aligned schedules, so their grid
    /// shows the warm-up and drain bubbles. Fails if the order deadlocks.
    pub fn aligned(&self) -> Result<Schedule, ScheduleError> {
        let unit = walk::walk(self, |_| 1.0, 0.0)?;
        let mut rows: Vec<Vec<Option<Action>>> = vec![Vec::new(); self.devices];
        for slot in &unit.slots {
            let step = slot.start.round() as usize;
            let row = &mut rows[slot.device];
            if row.len() < step {
                row.resize(step, None);
            }
            row.push(Some(slot.action));
        }
        Ok(Schedule {
            rows,
            ..self.clone()
        })
    }

    /// Generates a `kind` schedule for P = `p` devices, M = `m` microbatches
    /// and v = `v` chunks per device; every schedule accepts `v = 1`.
    pub fn generate(
        kind: ScheduleKind,
        p: usize,
        m: usize,
        v: usize,
        forward_only: bool,
    ) -> Result<Schedule, ScheduleError> {
        match kind {
            ScheduleKind::Gpipe => generate::gpipe(p, m, v, forward_only),
            ScheduleKind::OneFOneB => generate::one_f_one_b(p, m, v, forward_only),
            ScheduleKind::Interleaved => generate::interleaved(p, m, v, forward_only),
            ScheduleKind::ZbH1 => generate::zb_h1(p, m, v, forward_only),
        }
    }

    /// The schedule inference runs: the forward-only form of `gpipe` and
    /// `interleaved`; for the training schedules (`1f1b`, `zb-h1`) their
    /// forward part, each device's forwards in the schedule's own order.
    pub fn for_inference(
        kind: ScheduleKind,
        p: usize,
        m: usize,
        v: usize,
    ) -> Result<Schedule, ScheduleError> {
        match kind {
            ScheduleKind::Gpipe | ScheduleKind::Interleaved => {
                Schedule::generate(kind, p, m, v, true)
            }
            ScheduleKind::OneFOneB | ScheduleKind::ZbH1 => {
                Ok(Schedule::generate(kind, p, m, v, false)?.forward_part())
            }
        }
    }
}
