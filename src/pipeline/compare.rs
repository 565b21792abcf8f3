//! What one device would have taken for a pipeline's run, and where the
//! pipeline's speedup went: [`Pipeline::compare`] measures it (the same
//! microbatches on one device, the solo and co-run controls, the loss
//! accounting); [`Pipeline::estimate`] estimates it from the `--split auto`
//! profile or the run's own stage times.

use serde::Serialize;

use super::{ForwardReport, Pipeline};
use crate::analysis::accounting::{account, Inputs, Losses};
use crate::analysis::corun::{inference_controls, Controls};
use crate::error::Result;
use crate::executor::{Cluster, DeviceGroup};
use crate::io::TokenBatch;
use crate::model::partition::partition;
use crate::schedule::{Schedule, ScheduleKind};
use crate::workload::forward::run_resident;
use crate::workload::resident::Resident;

/// What one device would have taken for the same work, and where the
/// pipeline's speedup went.
#[derive(Clone, Debug, Serialize)]
pub struct Compare {
    /// ms on one device: measured by [`Pipeline::compare`] (on the fastest
    /// device by the `--split auto` profile, else the first), else
    /// estimated: M × the fastest device's whole-model time in the profile,
    /// or without one M × the sum of the stages' median forward times.
    /// NaN under tensor parallelism when estimated (a group's stage times
    /// are not one Gpu's).
    pub one_device_ms: f64,
    /// Which device `one_device_ms` is for.
    pub one_device: String,
    pub one_device_measured: bool,
    /// one_device_ms / the run's wall ms.
    pub speedup: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controls: Option<Controls>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounting: Option<Losses>,
    /// Why one device may still be faster, when the cause is the machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Pipeline {
    /// The device that would run the whole model fastest, by the `--split
    /// auto` profile: (device, ms per microbatch).
    fn fastest(&self) -> Option<(usize, f64)> {
        let a = self.split.auto.as_ref()?;
        (0..self.devices)
            .map(|d| (d, a.profile.whole_model_ms(d, self.config().n_layer)))
            .min_by(|x, y| x.1.total_cmp(&y.1))
    }

    /// `run`'s one-device time estimated, not measured: from the profile
    /// when there is one (the fastest device holding every layer), else from
    /// the run's stage times.
    pub fn estimate(&self, run: &ForwardReport) -> Compare {
        let m = run.measurement.microbatches as f64;
        let fastest = self.fastest();
        let one_ms = match self.tp {
            1 => fastest.map_or_else(
                || m * run.measurement.forward_ms.iter().sum::<f64>(),
                |(_, ms)| m * ms,
            ),
            _ => f64::NAN,
        };
        Compare {
            one_device_ms: one_ms,
            one_device: run.device_names[fastest.map_or(0, |(d, _)| d)].clone(),
            one_device_measured: false,
            speedup: one_ms / run.measurement.wall_ms,
            controls: None,
            accounting: None,
            note: self.software_note(),
        }
    }

    /// Measure what `run` (a [`Pipeline::forward`] of `tokens`) would have
    /// taken on one device — the same microbatches through the same
    /// executor on the fastest device by the profile (under tensor
    /// parallelism its group's first Gpu) — then the solo and co-run
    /// controls, and account for the speedup cause by cause. In-process only.
    pub fn compare(&self, tokens: &TokenBatch, run: &ForwardReport) -> Result<Compare> {
        self.cluster
            .refuse_mpi("comparing with one device (its one-device and solo runs)")?;
        let _busy = self.lock();
        let groups = self.groups()?;
        let m = run.measurement.microbatches;
        let d = self.fastest().map_or(0, |(d, _)| d);
        let alone = [DeviceGroup::single(groups[d].lead())];
        let one = Schedule::for_inference(ScheduleKind::Gpipe, 1, m, 1)?;
        let whole = partition(self.config().n_layer, 1, None)?;
        let whole = Resident::upload(&alone, &Cluster::Local, self.weights(), whole)?;
        let single = run_resident(&alone, &Cluster::Local, &whole, tokens, &one)?;
        let resident = self.resident()?;
        let controls =
            inference_controls(&groups, &self.cluster, &resident, tokens, &run.schedule)?;
        let one_ms = single.wall_s * 1e3;
        let speedup = one_ms / run.measurement.wall_ms;
        let losses = account(&Inputs {
            schedule: &run.schedule,
            bubble_analytic: run.measurement.bubble_analytic,
            baseline_ms: one_ms,
            speedup,
            solo_stage_ms: &controls.solo_stage_ms,
            corun_stage_ms: &controls.corun_stage_ms,
            pipeline_stage_ms: &run.measurement.forward_ms,
        })?;
        Ok(Compare {
            one_device_ms: one_ms,
            one_device: alone[0].label(),
            one_device_measured: true,
            speedup,
            controls: Some(controls),
            accounting: Some(losses),
            note: self.software_note(),
        })
    }

    /// When every device is a software adapter, the "devices" are this
    /// machine's cores: one device given all of them does the same work
    /// without a pipeline.
    fn software_note(&self) -> Option<String> {
        let all_cpu = self
            .gpus()
            .all(|g| g.summary.device_type.eq_ignore_ascii_case("cpu"));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        all_cpu.then(|| {
            format!(
                "note: every device here is a software adapter sharing this machine's {cores} cores; \
                 the pipeline splits the cores between its devices (LP_NUM_THREADS=1 each), it adds no compute. \
                 One software device given every core (`wgpipe forward`, lavapipe's default threads, the whole batch at once) \
                 can match or beat it; on separate GPUs each stage brings its own."
            )
        })
    }
}

/// One line on the one-device time (measured or estimated), the accounting
/// when measured, and the note.
impl std::fmt::Display for Compare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = crate::trace::axis::duration(self.one_device_ms * 1e3);
        if self.one_device_measured {
            write!(
                f,
                "one device ({}), same work: {d} measured; speedup {:.2}",
                self.one_device, self.speedup
            )?;
        } else if self.one_device_ms.is_nan() {
            write!(
                f,
                "one Gpu, same work: not estimated under --tp (a tensor-parallel group's stage times are not one Gpu's); --compare measures it"
            )?;
        } else {
            write!(
                f,
                "one device ({}), same work: ~{d} (estimated from the stages' times; --compare measures it and says where the speedup goes); speedup ~{:.2}",
                self.one_device, self.speedup
            )?;
        }
        if let Some(l) = &self.accounting {
            write!(f, "\nwhere the speedup goes:\n{}", l.table().trim_end())?;
        }
        if let Some(n) = &self.note {
            write!(f, "\n{n}")?;
        }
        Ok(())
    }
}
