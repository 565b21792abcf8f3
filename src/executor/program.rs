//! What a schedule device computes, action by action: the [`StageProgram`]
//! the worker drives. The program knows the model and its buffers; the
//! worker knows the order (the schedule's row) and the messages (the
//! [`super::plan::Plan`]). Neither does the other's job.
//!
//! The programs themselves are workloads (`crate::workload`): inference's
//! `F` actions, training's `B`, `I`, `W`, decoding, all behind this trait.

use super::ActionEncoder;
use crate::action::{Action, Product};
use crate::device::Gpu;
use crate::error::Result;

/// One schedule device's share of the model. Called from the device's
/// thread; the worker encodes, submits and moves messages around it.
pub trait StageProgram {
    /// What [`StageProgram::finish`] hands back (logits, gradients, …).
    type Output: Send;

    /// Bytes of message `p` (the same on both ends of a transfer).
    fn message_bytes(&self, p: Product) -> u64;

    /// Where message `p` must be placed before `consumer` runs: the worker
    /// writes received bytes or copies a local hand-over there.
    fn input(&self, consumer: Action, p: Product) -> &wgpu::Buffer;

    /// Where `producer`'s message lies once its encoded work has run: the
    /// worker copies it out in the same submission.
    fn output(&self, producer: Action) -> &wgpu::Buffer;

    /// Record action `a`'s compute into `enc`, queueing any host input it
    /// takes (token ids) on the device's queue. Timed. A rank of a
    /// tensor-parallel group all-reduces through `enc` between segments
    /// (`GpuStage::encode_in`).
    fn encode(&mut self, gpu: &Gpu, a: Action, enc: &mut ActionEncoder) -> Result<()>;

    /// Record what `a` hands to the host (logits), after its timed span.
    fn encode_results(&mut self, _gpu: &Gpu, _a: Action, _enc: &mut wgpu::CommandEncoder) {}

    /// `a`'s submission is on the queue: a program may ask for results to
    /// be mapped as soon as it completes (decoding streams its tokens).
    fn submitted(&mut self, _gpu: &Gpu, _a: Action) {}

    /// After the last action has completed: read the results back.
    fn finish(self, gpu: &Gpu) -> Result<Self::Output>;

    /// Under MPI: the output as bytes for the other ranks, and back
    /// (`super::wire`). `None`: this program's output cannot cross processes.
    fn output_to_bytes(_o: &Self::Output) -> Option<Vec<u8>> {
        None
    }
    fn output_from_bytes(_b: &[u8]) -> Option<Self::Output> {
        None
    }
}
