//! Moving activations between devices through the host.
//!
//! The producing device copies its stage output into a MAP_READ staging
//! buffer in the same submission as the compute, and posts a [`Packet`] in the
//! consumer's [`Mailbox`] without waiting; the map of that staging buffer is
//! requested right after the submit, and each device's poller thread
//! ([`poll_until`]) fires it as soon as the submission completes. The
//! consumer's thread, when its schedule reaches the action that needs it,
//! waits for that map and writes the bytes straight into its own input buffer
//! with `queue.write_buffer`. So the producer never waits for its own outgoing
//! copy, and the consumer copies while its own GPU may still be busy with the
//! previous action.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How often blocked waits look at the abort flag.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// How often a poller polls an idle device: short enough to add little
/// latency, long enough not to steal the CPU a
/// software adapter computes on.
const POLL: Duration = Duration::from_micros(100);

/// An activation ready (or about to be ready) on the producer's device.
pub(crate) struct Packet {
    pub from: usize,
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
    pub fn new(from: usize, staging: wgpu::Buffer, bytes: u64) -> Packet {
        let (tx, rx) = std::sync::mpsc::channel();
        staging
            .slice(..bytes)
            .map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
        Packet {
            from,
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
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, p);
        self.cv.notify_all();
    }

    /// Wake every waiter (used when the run aborts).
    pub fn wake(&self) {
        self.cv.notify_all();
    }

    /// Wait for the packet `key` from device `from`; give up when the run
    /// aborts or `from` has finished without posting it.
    pub fn take(
        &self,
        key: (usize, usize),
        from: usize,
        abort: &AtomicBool,
        done: &[AtomicBool],
    ) -> Result<Packet, WaitError> {
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
            slots = self
                .cv
                .wait_timeout(slots, TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Copy a packet's activation into `dst` on the consumer's queue. Returns
/// once the bytes are handed to the consumer's queue.
///
pub(crate) fn receive(
    p: &Packet,
    queue: &wgpu::Queue,
    dst: &wgpu::Buffer,
    abort: &AtomicBool,
) -> Result<(), String> {
    let slice = p.staging.slice(..p.bytes);
    // The producer device's poller thread fires the callback when the
    // producing submission completes; this thread only waits for it.
    let mapped = loop {
        match p.mapped.recv_timeout(TICK) {
            Ok(r) => break r,
            Err(_) if abort.load(Ordering::SeqCst) => return Err("aborted".into()),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("device {}'s staging map was dropped", p.from))
            }
            Err(_) => {}
        }
    };
    mapped.map_err(|e| {
        format!(
            "mapping the staging buffer of device {} failed: {e}",
            p.from
        )
    })?;
    {
        let view = slice
            .get_mapped_range()
            .map_err(|e| format!("mapped range of device {}: {e}", p.from))?;
        queue.write_buffer(dst, 0, &view);
    }
    p.staging.unmap();
    Ok(())
}

/// Poll `device` until `stop()`: fires its map callbacks as soon as each
/// submission completes. One per device, on its own thread, because a poll of
/// a busy lavapipe device blocks until the running submission ends — from a
/// consumer's thread that stalled the consumer up to a whole producer action.
pub(crate) fn poll_until(device: &wgpu::Device, stop: &dyn Fn() -> bool) {
    while !stop() {
        match device.poll(wgpu::PollType::Poll) {
            Ok(status) if !status.is_queue_empty() => {}
            _ => std::thread::sleep(POLL),
        }
    }
}
