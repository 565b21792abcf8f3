//! A small bubble sweep on whatever adapter is present (lavapipe in CI), in
//! well under a minute: GPipe on two pipeline devices, M = 1, 2, 4, 8,
//! against the one-device baseline. Prints the same table as
//! `wgpipe bench bubble`.
//!
//!     cargo run --release --example bubble_sweep

use wgpipe::bench::{bench_config, run_sweep, table, Sweep};
use wgpipe::device::{place_devices, Gpu};
use wgpipe::executor::DeviceGroup;
use wgpipe::model::Gpt2Weights;
use wgpipe::schedule::ScheduleKind;

fn main() -> wgpipe::Result<()> {
    // 1. One thread per software device, so the two stages run in parallel.
    //    Mesa reads this once, before any device is opened.
    if std::env::var_os("LP_NUM_THREADS").is_none() {
        std::env::set_var("LP_NUM_THREADS", "1");
    }
    // 2. Two pipeline devices, each on its own wgpu Instance, plus one for the baseline.
    let placement = place_devices("2", 1)?;
    // One Gpu per schedule device.
    let gpus = placement
        .groups
        .iter()
        .flatten()
        .map(Gpu::open_summary)
        .collect::<wgpipe::Result<Vec<_>>>()?;
    let single = Gpu::open_summary(&placement.groups[0][0])?;
    let groups: Vec<DeviceGroup> = gpus.iter().map(DeviceGroup::single).collect();
    // 3. A uniform model: one identical layer per device, tiny vocabulary.
    let w = Gpt2Weights::init(&bench_config(2, 32), 0)?;
    // 4. The sweep: warm-up + 3 timed runs per point, median reported.
    let sweep = Sweep {
        schedules: vec![(ScheduleKind::Gpipe, 1)],
        microbatches: vec![1, 2, 4, 8],
        sequences: 1,
        seq: 32,
        repeat: 3,
        seed: 0,
        train: false,
    };
    let rows = run_sweep(&groups, Some(&single), &w, &sweep, |r| {
        eprintln!("  done M={}", r.microbatches)
    })?;
    // 5. Analytic beside simulated beside measured.
    print!("{}", table(&rows));
    Ok(())
}
