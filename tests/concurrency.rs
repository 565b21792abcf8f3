//! Two pipeline devices on the software adapter compute at the same time.
//! Its own test binary: LP_NUM_THREADS must be set before Mesa loads, once
//! per process (../shared/wgpu-notes.md).

mod common;

use wgpipe::io::random_input_ids;
use wgpipe::model::{Gpt2Config, Gpt2Weights};
use wgpipe::schedule::{Schedule, ScheduleKind};
use wgpipe::workload::forward::{run_pipeline, Options};

#[test]
fn two_devices_compute_at_the_same_time() {
    std::env::set_var("LP_NUM_THREADS", "1");
    let cfg = Gpt2Config::named("small-test").unwrap();
    let w = Gpt2Weights::init(&cfg, 1).unwrap();
    let tokens = random_input_ids(8, 64, cfg.vocab_size, 1);
    let gpus = vec![common::gpu(), common::gpu()];
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 8, 1).unwrap();
    let run = run_pipeline(&gpus, &w, &tokens, &s, &Options::default()).unwrap();
    // Time during which both devices were computing, from the recorded trace.
    let ev = |d| -> Vec<(f64, f64)> {
        run.timeline
            .events
            .iter()
            .filter(|e| e.track.compute_device() == Some(d))
            .map(|e| (e.start_us, e.end_us))
            .collect()
    };
    let (a, b) = (ev(0), ev(1));
    let overlap: f64 = a
        .iter()
        .flat_map(|x| {
            b.iter()
                .map(move |y| (x.1.min(y.1) - x.0.max(y.0)).max(0.0))
        })
        .sum();
    let busy = |v: &[(f64, f64)]| v.iter().map(|y| y.1 - y.0).sum::<f64>();
    let (busy0, busy1) = (busy(&a), busy(&b));
    println!("overlap {overlap:.0} us; busy {busy0:.0} and {busy1:.0} us");
    // GPipe P=2 M=8: 7 of device 1's 8 forwards can run while device 0
    // runs. Devices that shared one thread pool (one Instance) or a lock in
    // the executor would never overlap at all. How much they overlap is the
    // machine's business (free cores, their speeds), so only its presence
    // is asserted. (That the executor lets devices run at once is proven
    // without timing in src/executor/tests.rs.)
    assert!(
        overlap > 0.0,
        "the two devices never computed at the same time (busy {busy0:.0} and {busy1:.0} us)"
    );
}
