//! `bench hop`: what one hop between two pipeline devices costs, by
//! message size, through the executor's own transfer path — in-process, or
//! across two MPI ranks.
//!
//! Device 0 produces one message every `pace` (its action only sleeps on the
//! host, then hands its buffer on); device 1 waits for each. Each hop is
//! timed as every pipeline transfer is (from the producer's end, GPU clock,
//! to the bytes being on the consumer's queue): the staging map, the move,
//! and `write_buffer`. Pacing keeps the hops from queueing behind each
//! other, so each is one hop alone.

use std::time::Duration;

use serde::Serialize;

use crate::action::{Action, Product};
use crate::device::{place_devices, Gpu};
use crate::error::{Error, Result};
use crate::executor::{run_programs, ActionEncoder, Cluster, MpiSummary, StageProgram};
use crate::schedule::{Schedule, ScheduleKind};
use crate::timing::median;
use crate::trace::Track;

/// `bench hop`'s settings.
#[derive(Clone, Debug)]
pub struct HopBench {
    /// The two devices: a count or a list like `vulkan:0,vulkan:0`.
    pub devices: String,
    /// Message sizes in bytes.
    pub bytes: Vec<u64>,
    /// Hops per size (the median is reported).
    pub repeat: usize,
    /// Time between two messages.
    pub pace: Duration,
}

/// One message size.
#[derive(Clone, Debug, Serialize)]
pub struct HopRow {
    pub bytes: u64,
    pub hops: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// bytes / median.
    pub gb_per_s: f64,
}

/// What `bench hop` measured.
#[derive(Clone, Debug, Serialize)]
pub struct HopReport {
    /// `in-process` or `mpi`.
    pub transport: String,
    pub devices: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mpi: Option<MpiSummary>,
    pub rows: Vec<HopRow>,
}

impl HopBench {
    /// Measure every size over `cluster` (under MPI each rank runs one of the
    /// two devices).
    pub fn run(&self, cluster: &Cluster) -> Result<HopReport> {
        let placement = place_devices(&self.devices, 1)?;
        if placement.devices() != 2 {
            return Err(Error::Input(format!(
                "bench hop measures one hop between two devices; --devices {} gives {}",
                self.devices,
                placement.devices()
            )));
        }
        let gpus = cluster.open_local(&placement, &self.devices)?;
        let groups = cluster.device_groups(&gpus, 2)?;
        let schedule = Schedule::for_inference(ScheduleKind::Gpipe, 2, self.repeat.max(1), 1)?;
        let mut rows = Vec::new();
        let mut names = Vec::new();
        for &bytes in &self.bytes {
            let pace = self.pace;
            let timeline = run_programs(&groups, &schedule, &cluster.net(2)?, |_, _, gpu| {
                Ok(Hop {
                    x: crate::device::zeros(gpu, "hop", (bytes as usize).div_ceil(4)),
                    bytes,
                    pace,
                })
            })?
            .timeline;
            let ms: Vec<f64> = timeline
                .events
                .iter()
                .filter(|e| matches!(e.track, Track::Transfer { .. }))
                .map(|e| e.duration_us() / 1e3)
                .collect();
            let med = median(ms.clone());
            rows.push(HopRow {
                bytes,
                hops: ms.len(),
                median_ms: med,
                min_ms: ms.iter().copied().fold(f64::INFINITY, f64::min),
                max_ms: ms.iter().copied().fold(0.0, f64::max),
                gb_per_s: bytes as f64 / (med * 1e-3) / 1e9,
            });
            names = timeline.device_names.clone();
        }
        Ok(HopReport {
            transport: match cluster.rank() {
                Some(_) => "mpi".into(),
                None => "in-process".into(),
            },
            devices: names,
            mpi: cluster.summary(),
            rows,
        })
    }
}

impl HopReport {
    /// A heading line and a Markdown table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "one hop, {}: {} -> {}\n| bytes | hops | median ms | min ms | max ms | GB/s |\n|---|---|---|---|---|---|\n",
            self.transport,
            self.devices.first().map_or("?", String::as_str),
            self.devices.get(1).map_or("?", String::as_str)
        );
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {:.3} | {:.3} | {:.3} | {:.2} |\n",
                r.bytes, r.hops, r.median_ms, r.min_ms, r.max_ms, r.gb_per_s
            );
        }
        s
    }
}

pub fn parse_bytes(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, mul) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mul))
        .filter(|&n| n > 0 && n % 4 == 0)
        .ok_or_else(|| {
            Error::Input(format!(
                "--bytes {s}: a positive multiple of 4 bytes, optionally with K or M"
            ))
        })
}

/// Device 0 sends its buffer every `pace`; device 1 receives into its own.
struct Hop {
    x: wgpu::Buffer,
    bytes: u64,
    pace: Duration,
}

impl StageProgram for Hop {
    type Output = ();

    fn message_bytes(&self, _p: Product) -> u64 {
        self.bytes
    }
    fn input(&self, _consumer: Action, _p: Product) -> &wgpu::Buffer {
        &self.x
    }
    fn output(&self, _producer: Action) -> &wgpu::Buffer {
        &self.x
    }
    fn encode(&mut self, _gpu: &Gpu, a: Action, _enc: &mut ActionEncoder) -> Result<()> {
        if a.stage == 0 {
            std::thread::sleep(self.pace);
        }
        Ok(())
    }
    fn finish(self, _gpu: &Gpu) -> Result<()> {
        Ok(())
    }
    fn output_to_bytes(_o: &()) -> Option<Vec<u8>> {
        Some(Vec::new())
    }
    fn output_from_bytes(b: &[u8]) -> Option<()> {
        b.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("1M").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("64K").unwrap(), 65536);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("7").is_err());
        assert!(parse_bytes("x").is_err());
    }
}
