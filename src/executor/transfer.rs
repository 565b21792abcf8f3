//! Moving activations between devices through the host.
//!
//! The producing device copies its stage output into a MAP_READ staging
//! buffer in the same submission as the compute, and posts a [`Packet`] in the
//! consumer's [`Mailbox`] without waiting. The consumer's thread, when its
//! schedule reaches the action that needs it, waits for the map the producer
//! requested right after its submit (it completes with that submission) and
//! writes the bytes straight into its own input buffer with `queue.write_buffer`. So the producer never
//! waits for its own outgoing copy, and the consumer does the copy while its
//! own GPU may still be busy with the previous action.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How often blocked waits look at the abort flag.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// How often a consumer polls the producer's device while a map is pending:
/// short enough to add little latency, long enough not to steal the CPU a
/// software adapter computes on.
const POLL: Duration = Duration::from_micros(100);

/// An activation ready (or about to be ready) on the producer's device.
pub(crate) struct Packet {
    pub from: usize,
    pub device: wgpu::Device,
    pub staging: wgpu::Buffer,
    pub bytes: u64,
    /// The map requested by the producer right after its submit.
    pub mapped: std::sync::mpsc::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

impl Packet {
    /// Post-submit: request the map of `staging` now, so that it is tied to
    /// the submission just made. (Requested later, by the consumer, it was
    /// measured completing ~one producer action late on lavapipe: ~12 ms of a
    /// 12 ms stage.)
    pub fn new(from: usize, device: &wgpu::Device, staging: wgpu::Buffer, bytes: u64) -> Packet {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.slice(..bytes).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        Packet {
            from,
            device: device.clone(),
            staging,
            bytes,
            mapped: rx,
        }
    }
}

/// Packets for one consumer device, keyed by (stage, microbatch) of the
/// action that consumes them.
#[derive(Default)]
pub(crate) struct Mailbox {
    slots: Mutex<HashMap<(usize, usize), Packet>>,
    cv: Condvar,
}

/// Why a wait ended without its packet.
pub(crate) enum WaitError {
    /// Another device failed; this one stops quietly.
    Aborted,
    /// The producer finished without sending what was waited for.
    ProducerGone(usize),
}

impl Mailbox {
    pub fn post(&self, key: (usize, usize), p: Packet) {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).insert(key, p);
        self.cv.notify_all();
    }

    /// Wake every waiter (used when the run aborts).
    pub fn wake(&self) {
        self.cv.notify_all();
    }

    /// Wait for the packet `key` from device `from`; give up when the run
    /// aborts or `from` has finished without posting it.
    pub fn take(&self, key: (usize, usize), from: usize, abort: &AtomicBool, done: &[AtomicBool]) -> Result<Packet, WaitError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(p) = slots.remove(&key) {
                return Ok(p);
            }
            if abort.load(Ordering::SeqCst) {
                return Err(WaitError::Aborted);
            }
            if done[from].load(Ordering::SeqCst) {
                return Err(WaitError::ProducerGone(from));
            }
            slots = self.cv.wait_timeout(slots, TICK).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// Copy a packet's activation into `dst` on the consumer's queue. Returns
/// once the bytes are handed to the consumer's queue.
///
/// The producer's device is polled with `PollType::Poll`, never a blocking
/// wait with a timeout, so that an abort is noticed within a poll.
pub(crate) fn receive(p: &Packet, queue: &wgpu::Queue, dst: &wgpu::Buffer, abort: &AtomicBool) -> Result<(), String> {
    let slice = p.staging.slice(..p.bytes);
    // The callback may already have fired during an earlier poll (the
    // producer running ahead): look before polling, since a poll of a busy
    // lavapipe device blocks until its current submission ends.
    let mapped = loop {
        if let Ok(r) = p.mapped.try_recv() {
            break r;
        }
        if abort.load(Ordering::SeqCst) {
            return Err("aborted".into());
        }
        let _ = p.device.poll(wgpu::PollType::Poll);
        if let Ok(r) = p.mapped.try_recv() {
            break r;
        }
        std::thread::sleep(POLL);
    };
    mapped.map_err(|e| format!("mapping the staging buffer of device {} failed: {e}", p.from))?;
    {
        let view = slice
            .get_mapped_range()
            .map_err(|e| format!("mapped range of device {}: {e}", p.from))?;
        queue.write_buffer(dst, 0, &view);
    }
    p.staging.unmap();
    Ok(())
}
