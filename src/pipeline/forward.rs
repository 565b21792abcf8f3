//! [`Pipeline::forward`]: the pipeline's schedule run on a batch, with the
//! logits, the timeline and the bubble measured beside the simulated and
//! analytic one.

use serde::Serialize;

use super::Pipeline;
use crate::analysis::measure::{measure, Measurement};
use crate::analysis::split::Chosen;
use crate::device::Precision;
use crate::error::Result;
use crate::executor::TransferRecord;
use crate::io::TokenBatch;
use crate::schedule::Schedule;
use crate::trace::Timeline;
use crate::workload::forward::run_resident;

/// What one forward run produced and measured. Its JSON form is the
/// measurement with the run's shape; the logits, timeline and transfers are
/// fields to use, not to print.
#[derive(Clone, Debug, Serialize)]
pub struct ForwardReport {
    /// Bubble (measured, simulated, analytic), makespan, tokens/s, busy and
    /// idle time per device, transfers.
    #[serde(flatten)]
    pub measurement: Measurement,
    pub device_names: Vec<String>,
    pub batch: usize,
    pub seq: usize,
    /// Sequences per microbatch (the largest; smaller ones were padded).
    pub microbatch_sequences: usize,
    /// Gpus per pipeline stage.
    pub tp: usize,
    /// Bytes the tensor-parallel ranks moved through the host in
    /// all-reduces.
    pub all_reduce_bytes: u64,
    /// Layers per stage, and for `--split auto` how they were chosen.
    pub split: Chosen,
    /// How each device stored its stages (`--dtype` resolved), and why a
    /// device stored f32 where f16 was wanted.
    pub precision: Vec<Precision>,
    pub precision_notes: Vec<String>,
    /// Weight bytes per device (its Gpus' buffers; 0 for another rank's).
    pub weight_bytes: Vec<u64>,
    /// (B, T, V) logits, in the batch's sequence order.
    #[serde(skip)]
    pub logits: Vec<f32>,
    /// Compute, all-reduce and transfer events on one clock.
    #[serde(skip)]
    pub timeline: Timeline,
    /// Every message moved between two devices.
    #[serde(skip)]
    pub transfers: Vec<TransferRecord>,
    /// Host seconds from the common start to the last device finishing.
    #[serde(skip)]
    pub wall_s: f64,
    /// The schedule as run.
    #[serde(skip)]
    pub schedule: Schedule,
}

impl ForwardReport {
    /// Bytes moved between devices.
    pub fn bytes_moved(&self) -> u64 {
        self.transfers.iter().map(|t| t.bytes).sum()
    }
}

impl Pipeline {
    /// The most sequences of `seq` tokens one pass can hold on every Gpu
    /// (the widest per-row buffer within a binding), at most `batch`.
    pub fn sequences_per_pass(&self, batch: usize, seq: usize) -> usize {
        (self.gpus())
            .map(|g| crate::model::gpu::sequences_per_pass(g, self.config(), batch, seq))
            .min()
            .unwrap_or(1)
    }

    /// Run the pipeline's schedule (its forward actions) on `tokens`, split
    /// into the configured microbatches (one per sequence by default), over
    /// the resident weights.
    pub fn forward(&self, tokens: &TokenBatch) -> Result<ForwardReport> {
        self.forward_microbatches(tokens, self.microbatches_for(tokens.batch))
    }

    /// [`Pipeline::forward`] with the batch split into `m` microbatches.
    pub fn forward_microbatches(&self, tokens: &TokenBatch, m: usize) -> Result<ForwardReport> {
        let _busy = self.lock();
        let schedule =
            Schedule::for_inference(self.schedule, self.devices, m, self.virtual_stages)?;
        let resident = self.resident()?;
        let groups = self.groups()?;
        let run = run_resident(&groups, &self.cluster, &resident, tokens, &schedule)?;
        let measurement = measure(&schedule, &run, tokens.batch * tokens.seq)?;
        Ok(ForwardReport {
            measurement,
            device_names: run.timeline.device_names.clone(),
            batch: tokens.batch,
            seq: tokens.seq,
            microbatch_sequences: run.microbatch_sequences,
            tp: self.tp,
            all_reduce_bytes: run.reduced_bytes,
            split: self.split.clone(),
            precision: resident.precision.clone(),
            precision_notes: resident.precision_notes.clone(),
            weight_bytes: resident.weight_bytes(),
            logits: run.logits,
            timeline: run.timeline,
            transfers: run.transfers,
            wall_s: run.wall_s,
            schedule,
        })
    }
}
