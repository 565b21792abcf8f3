//! `wgpipe bench hop`: what one hop between two pipeline devices costs, by
//! message size, through the executor's own transfer path — in-process, or
//! across two MPI ranks with `mpirun -np 2 wgpipe bench hop --transport mpi`.
//!
//! Device 0 produces one message every `--pace-ms` (its action only sleeps
//! on the host, then hands its buffer on); device 1 waits for each. Each
//! hop is timed as every pipeline transfer is (from the producer's end, GPU
//! clock, to the bytes being on the consumer's queue): the staging map,
//! the move, and `write_buffer`. Pacing keeps the hops from queueing behind
//! each other, so each is one hop alone.

use std::time::Duration;

use crate::action::{Action, Product};
use crate::device::{place_devices, Gpu};
use crate::error::Result;
use crate::executor::measure::median;
use crate::executor::net::{device_groups, is_root, open_local};
use crate::executor::{run_programs, ActionEncoder, Net, StageProgram};
use crate::schedule::{Schedule, ScheduleKind};
use crate::trace::Track;

#[derive(clap::Args, Debug, Clone)]
pub struct HopArgs {
    /// The two devices: a count or a list like vulkan:0,vulkan:0.
    #[arg(long, default_value = "2")]
    pub devices: String,
    /// Message sizes in bytes (K and M suffixes: 1M = 1048576).
    #[arg(long, value_delimiter = ',', default_value = "64K,1M,16M")]
    pub bytes: Vec<String>,
    /// Hops per size (the median is reported).
    #[arg(long, default_value_t = 30)]
    pub repeat: usize,
    /// ms between two messages.
    #[arg(long, default_value_t = 20)]
    pub pace_ms: u64,
    /// Print the rows as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_bytes(s: &str) -> Result<u64> {
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
            crate::Error::Input(format!(
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

#[derive(serde::Serialize)]
struct Row {
    bytes: u64,
    hops: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    /// bytes / median.
    gb_per_s: f64,
}

pub fn run(args: &HopArgs) -> Result<()> {
    let sizes = args
        .bytes
        .iter()
        .map(|s| parse_bytes(s))
        .collect::<Result<Vec<_>>>()?;
    let placement = place_devices(&args.devices, 1)?;
    if placement.devices() != 2 {
        return Err(crate::Error::Input(format!(
            "bench hop measures one hop between two devices; --devices {} gives {}",
            args.devices,
            placement.devices()
        )));
    }
    let gpus = open_local(&placement, &args.devices)?;
    let groups = device_groups(&gpus, 2)?;
    let schedule = Schedule::for_inference(ScheduleKind::Gpipe, 2, args.repeat.max(1), 1)?;
    let mut rows = Vec::new();
    let mut names = Vec::new();
    for &bytes in &sizes {
        let pace = Duration::from_millis(args.pace_ms);
        let timeline = run_programs(&groups, &schedule, &Net::new(2)?, |_, _, gpu| {
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
        rows.push(Row {
            bytes,
            hops: ms.len(),
            median_ms: med,
            min_ms: ms.iter().copied().fold(f64::INFINITY, f64::min),
            max_ms: ms.iter().copied().fold(0.0, f64::max),
            gb_per_s: bytes as f64 / (med * 1e-3) / 1e9,
        });
        names = timeline.device_names.clone();
    }
    if !is_root() {
        return Ok(());
    }
    let transport = match crate::executor::net::mpi_rank() {
        Some(_) => "mpi",
        None => "in-process",
    };
    if args.json {
        let v = serde_json::json!({
            "transport": transport,
            "devices": names,
            "mpi": crate::executor::net::mpi_summary(),
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    println!("one hop, {transport}: {} -> {}", names[0], names[1]);
    println!("| bytes | hops | median ms | min ms | max ms | GB/s |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.3} | {:.2} |",
            r.bytes, r.hops, r.median_ms, r.min_ms, r.max_ms, r.gb_per_s
        );
    }
    Ok(())
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
