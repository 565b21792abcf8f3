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
        let mut samples = Vec::new();
        for _ in 0..5 {
            let mut log =
                TimestampLog::new(gpu, 1).ok_or_else(|| gpu.err("no timestamp queries"))?;
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            log.write(&mut enc);
            gpu.wait()?;
            let host_before_us = epoch.elapsed().as_secs_f64() * 1e6;
            gpu.queue.submit([enc.finish()]);
            gpu.wait()?;
            let host_after_us = epoch.elapsed().as_secs_f64() * 1e6;
            let ticks = log.read(gpu)?[0];
            samples.push(Bracket {
                host_before_us,
                ticks,
                host_after_us,
            });
        }
        Ok(ClockMap::fit(us_per_tick, &samples).expect("five samples taken"))
    }

    /// The mapping from calibration brackets: the tightest one wins, its
    /// timestamp placed at its midpoint. `None` without samples.
    pub fn fit(us_per_tick: f64, samples: &[Bracket]) -> Option<ClockMap> {
        let tightest = samples
            .iter()
            .min_by(|a, b| a.width_us().total_cmp(&b.width_us()))?;
        let mid = (tightest.host_before_us + tightest.host_after_us) / 2.0;
        Some(ClockMap {
            us_per_tick,
            offset_us: mid - tightest.ticks as f64 * us_per_tick,
            uncertainty_us: tightest.width_us() / 2.0,
        })
    }
}

/// One calibration sample: a device timestamp (`ticks`) known to have been
/// written between two host readings (microseconds since the epoch).
#[derive(Clone, Copy, Debug)]
pub struct Bracket {
    pub host_before_us: f64,
    pub ticks: u64,
    pub host_after_us: f64,
}

impl Bracket {
    pub fn width_us(&self) -> f64 {
        self.host_after_us - self.host_before_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device clock: `host_us = ticks * us_per_tick + offset_us`, exactly.
    struct TrueClock {
        us_per_tick: f64,
        offset_us: f64,
    }

    impl TrueClock {
        fn host_us(&self, ticks: u64) -> f64 {
            ticks as f64 * self.us_per_tick + self.offset_us
        }

        /// A bracket `width_us` wide around the timestamp `ticks`, which was
        /// written at fraction `at` (0..=1) of the way through it.
        fn bracket(&self, ticks: u64, width_us: f64, at: f64) -> Bracket {
            let t = self.host_us(ticks);
            Bracket {
                host_before_us: t - at * width_us,
                ticks,
                host_after_us: t + (1.0 - at) * width_us,
            }
        }
    }

    #[test]
    fn no_samples_no_mapping() {
        assert!(ClockMap::fit(1.0, &[]).is_none());
    }

    #[test]
    fn an_exact_sample_gives_the_exact_mapping() {
        // Nanosecond ticks (lavapipe's period of 1.0), device clock 5 s ahead.
        let clock = TrueClock {
            us_per_tick: 0.001,
            offset_us: -5e6,
        };
        let m = ClockMap::fit(0.001, &[clock.bracket(6_000_000_000, 0.0, 0.5)]).unwrap();
        assert_eq!(m.uncertainty_us, 0.0);
        assert_eq!(m.us_per_tick, 0.001);
        for ticks in [5_000_000_000, 6_000_000_000, 7_234_567_891] {
            let err = (m.to_host_us(ticks) - clock.host_us(ticks)).abs();
            assert!(err < 1e-6, "{ticks} ticks off by {err} us");
        }
    }

    #[test]
    fn the_tightest_bracket_wins_and_sets_the_uncertainty() {
        let clock = TrueClock {
            us_per_tick: 0.001,
            offset_us: 1234.5,
        };
        // Widths 80, 30, 12, 12, 50 µs; the timestamp at different points of each.
        let samples = [
            clock.bracket(1_000_000, 80.0, 0.9),
            clock.bracket(2_000_000, 30.0, 0.1),
            clock.bracket(3_000_000, 12.0, 0.25),
            clock.bracket(4_000_000, 12.0, 0.75),
            clock.bracket(5_000_000, 50.0, 0.5),
        ];
        let m = ClockMap::fit(0.001, &samples).unwrap();
        assert_eq!(m.uncertainty_us, 6.0);
        // The first of the two tightest: its timestamp a quarter in, so the
        // midpoint maps it 12 * (0.5 - 0.25) = 3 µs late.
        let err = m.to_host_us(3_000_000) - clock.host_us(3_000_000);
        assert!((err - 3.0).abs() < 1e-6, "off by {err} us");
        let more = [samples[4], samples[0], samples[3], samples[2], samples[1]];
        let m2 = ClockMap::fit(0.001, &more).unwrap();
        assert_eq!(m2.uncertainty_us, 6.0);
        let err = m2.to_host_us(4_000_000) - clock.host_us(4_000_000);
        assert!((err + 3.0).abs() < 1e-6, "off by {err} us");
    }

    #[test]
    fn mapped_times_are_within_the_uncertainty_and_keep_their_order() {
        // A coarse period (83.333 ns per tick) and pseudo-random brackets.
        let clock = TrueClock {
            us_per_tick: 0.083_333,
            offset_us: -777.0,
        };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 // [0, 1)
        };
        for round in 0..100 {
            let samples: Vec<Bracket> = (0..5)
                .map(|i| {
                    let ticks = 10_000_000 + round * 1000 + i * 100;
                    clock.bracket(ticks, 5.0 + 100.0 * next(), next())
                })
                .collect();
            let m = ClockMap::fit(clock.us_per_tick, &samples).unwrap();
            let widest = samples.iter().map(Bracket::width_us).fold(0.0, f64::max);
            assert!(m.uncertainty_us * 2.0 <= widest);
            let mut last = f64::NEG_INFINITY;
            for ticks in (0..2_000_000_000u64).step_by(99_999_989) {
                let host = m.to_host_us(ticks);
                let err = (host - clock.host_us(ticks)).abs();
                assert!(
                    err <= m.uncertainty_us + 1e-6,
                    "round {round}: {ticks} ticks off by {err} us, uncertainty {}",
                    m.uncertainty_us
                );
                assert!(host > last, "mapping must keep the order of ticks");
                last = host;
            }
        }
    }
}
