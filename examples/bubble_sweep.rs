//! A small bubble sweep on whatever adapter is present (lavapipe in CI), in
//! well under a minute: GPipe on two pipeline devices, M = 1, 2, 4, 8,
//! against the one-device baseline. Prints the same table as
//! `wgpipe bench bubble`.
//!
//!     cargo run --release --example bubble_sweep

use wgpipe::bench::bubble::{BubbleBench, Sweep};
use wgpipe::{Cluster, ScheduleKind};

fn main() -> wgpipe::Result<()> {
    // 1. One thread per software device, so the two stages run in parallel.
    //    Mesa reads this once, before any device is opened.
    if std::env::var_os("LP_NUM_THREADS").is_none() {
        std::env::set_var("LP_NUM_THREADS", "1");
    }
    // 2. The sweep: GPipe at M = 1, 2, 4, 8 on 32-token sequences; a warm-up
    //    and 3 timed rounds per point, medians reported.
    let bench = BubbleBench {
        devices: "2".into(),
        tp: 1,
        sweep: Sweep {
            schedules: vec![(ScheduleKind::Gpipe, 1)],
            microbatches: vec![1, 2, 4, 8],
            sequences: 1,
            seq: 32,
            repeat: 3,
            seed: 0,
            train: false,
        },
        // 3. The uniform bench model: two identical blocks per device, a tiny
        //    vocabulary, so the stages are equal.
        model: None,
        checkpoint: None,
        layers_per_stage: 2,
    };
    // 4. Run it on this process's devices (the baseline on its own device).
    let report = bench.run(&Cluster::Local, |r| {
        eprintln!("  done M={}", r.microbatches)
    })?;
    // 5. Analytic beside simulated beside measured, and where the speedup went.
    print!("{}", report.text());
    Ok(())
}
