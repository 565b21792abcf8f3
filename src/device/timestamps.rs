//! GPU timestamps mapped onto one host clock.
//!
//! Each device writes a timestamp at the start and end of every action's
//! command buffer ([`TimestampLog`]); at the end of a run they are resolved
//! and read back in one go. [`ClockMap`] maps a device's ticks onto the host
//! clock shared by all devices (microseconds since the run's epoch): it
//! brackets a single timestamp write between two host readings, several
//! times, and keeps the tightest bracket, so the mapping is good to about half
//! a submit round trip (tens of microseconds on lavapipe).

use std::time::Instant;

use super::buffers::{read_mapped, staging};
use super::Gpu;
use crate::error::Result;

/// Most queries one wgpu query set may hold.
const SET_SIZE: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// Timestamps written into command encoders, read back at the end.
pub struct TimestampLog {
    sets: Vec<wgpu::QuerySet>,
    next: u32,
    capacity: u32,
}

impl TimestampLog {
    /// Room for `capacity` timestamps; `None` when the device has no
    /// timestamp queries inside encoders.
    pub fn new(gpu: &Gpu, capacity: u32) -> Option<TimestampLog> {
        if !gpu.timestamps {
            return None;
        }
        let sets = (0..capacity.div_ceil(SET_SIZE).max(1))
            .map(|i| {
                gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: SET_SIZE.min(capacity - i * SET_SIZE).max(1),
                })
            })
            .collect();
        Some(TimestampLog {
            sets,
            next: 0,
            capacity,
        })
    }

    /// Record a timestamp at this point of `enc`; returns its index.
    pub fn write(&mut self, enc: &mut wgpu::CommandEncoder) -> u32 {
        assert!(
            self.next < self.capacity,
            "bug: timestamp log sized too small"
        );
        let i = self.next;
        enc.write_timestamp(&self.sets[(i / SET_SIZE) as usize], i % SET_SIZE);
        self.next += 1;
        i
    }

    /// All timestamps written so far, in ticks (call after the work is done).
    pub fn read(&self, gpu: &Gpu) -> Result<Vec<u64>> {
        let n = self.next as u64;
        let resolve = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp resolve"),
            size: (n * 8)
                .next_multiple_of(wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT)
                .max(256),
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let out = staging(gpu, "timestamp readback", resolve.size());
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for (k, set) in self.sets.iter().enumerate() {
            let first = k as u32 * SET_SIZE;
            if first >= self.next {
                break;
            }
            let count = (self.next - first).min(SET_SIZE);
            enc.resolve_query_set(set, 0..count, &resolve, first as u64 * 8);
        }
        enc.copy_buffer_to_buffer(&resolve, 0, &out, 0, resolve.size());
        gpu.queue.submit([enc.finish()]);
        read_mapped(gpu, &out, n as usize)
    }
}

/// `host_us = ticks * us_per_tick + offset_us`, host microseconds since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct ClockMap {
    pub us_per_tick: f64,
    pub offset_us: f64,
    /// Half the tightest host bracket around a timestamp write: the mapping's uncertainty.
    pub uncertainty_us: f64,
}

impl ClockMap {
    pub fn to_host_us(&self, ticks: u64) -> f64 {
        ticks as f64 * self.us_per_tick + self.offset_us
    }

    /// Calibrate `gpu`'s timestamps against host time since `epoch`.
    pub fn calibrate(gpu: &Gpu, epoch: Instant) -> Result<ClockMap> {
        let us_per_tick = gpu.queue.get_timestamp_period() as f64 / 1000.0;
        let mut best: Option<(f64, f64)> = None; // (bracket, offset)
        for _ in 0..5 {
            let mut log =
                TimestampLog::new(gpu, 1).ok_or_else(|| gpu.err("no timestamp queries"))?;
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            log.write(&mut enc);
            gpu.wait()?;
            let t0 = epoch.elapsed().as_secs_f64() * 1e6;
            gpu.queue.submit([enc.finish()]);
            gpu.wait()?;
            let t1 = epoch.elapsed().as_secs_f64() * 1e6;
            let ticks = log.read(gpu)?[0];
            let offset = (t0 + t1) / 2.0 - ticks as f64 * us_per_tick;
            if best.is_none_or(|(b, _)| t1 - t0 < b) {
                best = Some((t1 - t0, offset));
            }
        }
        let (bracket, offset_us) = best.expect("five samples taken");
        Ok(ClockMap {
            us_per_tick,
            offset_us,
            uncertainty_us: bracket / 2.0,
        })
    }
}
