//! What a program records an action into: the worker's command encoder, and
//! for a rank of a tensor-parallel group the all-reduce between segments.
//!
//! An all-reduce goes through the host (the seed's "gather, sum, write
//! back"): the work recorded so far is submitted with a copy of the partial
//! sum into a MAP_READ staging buffer; once mapped, the rank hands its values
//! to the [`Collective`], which returns the group's sum (added in rank order,
//! the same bits on every rank); the sum is queued back into the buffer with
//! `queue.write_buffer`, and recording continues in a fresh encoder. The
//! action's two timestamps thus land in its first and last submissions, and
//! the all-reduce — from this rank's partial being on the host to the sum
//! being queued — is recorded as its own event.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use super::transport::{Collective, Control, WaitError};
use crate::device::{self, Gpu};
use crate::error::{Error, Result};
use crate::model::gpu::StageEncoder;
use crate::trace::{Event, Track};

/// Where a rank is in the run: the endpoint the transport and collective
/// know it by, and the run's control.
#[derive(Clone, Copy)]
pub(super) struct Rank<'a> {
    pub device: usize,
    pub rank: usize,
    /// Ranks in the group.
    pub tp: usize,
    pub endpoint: usize,
    pub collective: &'a dyn Collective,
    pub control: &'a dyn Control,
}

/// Staging buffers for all-reduces, one per size, kept across actions.
#[derive(Default)]
pub(super) struct ReduceStaging(HashMap<u64, wgpu::Buffer>);

/// The encoder of one action (see the module doc). Dereferences to the
/// `wgpu::CommandEncoder` it records into.
pub struct ActionEncoder<'a> {
    enc: wgpu::CommandEncoder,
    gpu: &'a Gpu,
    rank: Option<Rank<'a>>,
    staging: Option<&'a mut ReduceStaging>,
    /// All-reduce events, host clock (µs from the run's epoch).
    events: Vec<Event>,
    /// Bytes this rank sent to the host and got back in all-reduces.
    pub(super) reduced_bytes: u64,
}

impl<'a> ActionEncoder<'a> {
    /// An encoder on `gpu` with nothing to reduce with (one Gpu per device).
    pub fn plain(gpu: &'a Gpu) -> ActionEncoder<'a> {
        ActionEncoder {
            enc: gpu.device.create_command_encoder(&Default::default()),
            gpu,
            rank: None,
            staging: None,
            events: Vec::new(),
            reduced_bytes: 0,
        }
    }

    pub(super) fn for_rank(
        gpu: &'a Gpu,
        rank: Rank<'a>,
        staging: &'a mut ReduceStaging,
    ) -> ActionEncoder<'a> {
        ActionEncoder {
            rank: Some(rank),
            staging: Some(staging),
            ..ActionEncoder::plain(gpu)
        }
    }

    /// The recorded commands, and the all-reduce events.
    pub(super) fn finish(self) -> (wgpu::CommandBuffer, Vec<Event>) {
        (self.enc.finish(), self.events)
    }

    fn now_us(control: &dyn Control) -> f64 {
        control.epoch().elapsed().as_secs_f64() * 1e6
    }
}

impl Deref for ActionEncoder<'_> {
    type Target = wgpu::CommandEncoder;
    fn deref(&self) -> &wgpu::CommandEncoder {
        &self.enc
    }
}

impl DerefMut for ActionEncoder<'_> {
    fn deref_mut(&mut self) -> &mut wgpu::CommandEncoder {
        &mut self.enc
    }
}

/// Why an all-reduce stopped, as an error the worker turns into its own
/// (quiet when the run was aborted anyway).
fn wait_error(device: usize, e: WaitError, tp_peer: impl Fn(usize) -> String) -> Error {
    match e {
        WaitError::Aborted => Error::Other("the run was aborted".into()),
        WaitError::ProducerGone(ep) => Error::Other(format!(
            "{} finished without taking part in device {device}'s all-reduce",
            tp_peer(ep)
        )),
        WaitError::Failed(msg) => Error::Other(msg),
    }
}

impl StageEncoder for ActionEncoder<'_> {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        &mut self.enc
    }

    fn all_reduce(&mut self, buf: &wgpu::Buffer, bytes: u64) -> Result<()> {
        let (Some(rank), Some(staging)) = (self.rank, self.staging.as_deref_mut()) else {
            return StageEncoder::all_reduce(&mut self.enc, buf, bytes);
        };
        let gpu = self.gpu;
        let out = staging
            .0
            .entry(bytes)
            .or_insert_with(|| device::staging(gpu, "all-reduce out", bytes))
            .clone();
        self.enc.copy_buffer_to_buffer(buf, 0, &out, 0, bytes);
        let done = std::mem::replace(
            &mut self.enc,
            gpu.device.create_command_encoder(&Default::default()),
        );
        gpu.queue.submit([done.finish()]);
        // As after a message's submission (see the worker): on lavapipe a
        // completion becomes visible to polls once the next submission ends.
        gpu.queue.submit([]);
        gpu.check()?;
        let (tx, rx) = std::sync::mpsc::channel();
        out.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let control = rank.control;
        // The device's poller thread fires the map when the submission ends.
        let mapped = loop {
            match rx.recv_timeout(super::transport::TICK) {
                Ok(r) => break r,
                Err(_) if control.aborted() => {
                    return Err(Error::Other("the run was aborted".into()))
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Other(
                        "the all-reduce staging map was dropped".into(),
                    ))
                }
                Err(_) => {}
            }
        };
        mapped.map_err(|e| Error::Other(format!("mapping the all-reduce staging buffer: {e}")))?;
        let t0 = ActionEncoder::now_us(control);
        let data: Vec<f32> = {
            let view = out
                .slice(..bytes)
                .get_mapped_range()
                .map_err(|e| Error::Other(format!("all-reduce staging buffer: {e}")))?;
            bytemuck::cast_slice(&view).to_vec()
        };
        out.unmap();
        let tp_peer = |ep: usize| format!("rank {} of device {}", ep % rank.tp, ep / rank.tp);
        let sum = rank
            .collective
            .all_reduce(rank.endpoint, data, control)
            .map_err(|e| wait_error(rank.device, e, tp_peer))?;
        gpu.queue.write_buffer(buf, 0, bytemuck::cast_slice(&sum));
        self.reduced_bytes += 2 * bytes;
        self.events.push(Event {
            track: Track::AllReduce {
                device: rank.device,
                gpu: rank.rank,
            },
            name: "all-reduce".into(),
            action: None,
            start_us: t0,
            end_us: ActionEncoder::now_us(control),
            bytes,
        });
        Ok(())
    }
}
