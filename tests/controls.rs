//! The solo and co-run controls and the layer profile on real devices
//! (lavapipe in CI): they run the executor's own plans without messages, so
//! what they compute must be what the pipeline computes where nothing was
//! removed, and every action must be timed. No timing is asserted.

mod common;

use wgpipe::analysis::corun::inference_controls;
use wgpipe::analysis::split::choose_split;
use wgpipe::device::Gpu;
use wgpipe::executor::fed::{without_messages, Fed};
use wgpipe::executor::{run_plan, Cluster, DeviceGroup, InProcess, Plan};
use wgpipe::io::random_input_ids;
use wgpipe::microbatch::Microbatches;
use wgpipe::model::partition::partition;
use wgpipe::model::{Gpt2Config, Gpt2Weights};
use wgpipe::schedule::{Schedule, ScheduleKind};
use wgpipe::workload::forward::{run_pipeline, Gpt2Forward, Options};
use wgpipe::workload::profile::profile_layers;
use wgpipe::workload::resident::Resident;

fn model() -> Gpt2Weights {
    let mut cfg = Gpt2Config::named("tiny").unwrap();
    cfg.n_layer = 8;
    Gpt2Weights::init(&cfg, 11).unwrap()
}

fn gpus(p: usize) -> Vec<Gpu> {
    (0..p).map(|_| common::gpu()).collect()
}

#[test]
fn a_plan_without_messages_computes_what_the_pipeline_does_on_one_device() {
    // One device, several microbatches: no messages to remove, so the
    // stripped plan with fed inputs must give the pipeline's logits, bitwise.
    let w = model();
    let tokens = random_input_ids(3, 7, w.config.vocab_size, 5);
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 1, 3, 1).unwrap();
    let g = gpus(1);
    let want = run_pipeline(&g, &w, &tokens, &s, &Options::default())
        .unwrap()
        .logits;
    let plan = Plan::new(&s);
    let mbs = Microbatches::split(&tokens, 3).unwrap();
    let parts = partition(8, 1, None).unwrap();
    let groups = [DeviceGroup::single(&g[0])];
    let ran = run_plan(
        &groups,
        &without_messages(&plan),
        &InProcess::new(1),
        |_, shard, gpu| {
            Ok(Fed::new(
                Gpt2Forward::new(gpu, shard, &[(0, w.stage(&parts[0]))], &mbs)?,
                &plan.devices[0],
            ))
        },
    )
    .unwrap();
    let (outputs, timeline, transfers) = (ran.outputs, ran.timeline, ran.transfers);
    let results: Vec<(usize, Vec<f32>)> = outputs.into_iter().flatten().collect();
    let row = tokens.seq * w.config.vocab_size;
    assert!(mbs.gather(&results, row) == want, "logits differ");
    assert!(transfers.is_empty());
    assert_eq!(timeline.events.len(), 3);
}

#[test]
fn the_controls_time_every_device_alone_and_together() {
    let w = model();
    let g = gpus(2);
    let groups: Vec<DeviceGroup> = g.iter().map(DeviceGroup::single).collect();
    let tokens = random_input_ids(4, 7, w.config.vocab_size, 5);
    for (kind, v) in [(ScheduleKind::Gpipe, 1), (ScheduleKind::Interleaved, 2)] {
        let name = kind.to_string();
        let s = Schedule::for_inference(kind, 2, 4, v).unwrap();
        let parts = partition(w.config.n_layer, s.stages(), None).unwrap();
        let resident = Resident::upload(&groups, &Cluster::Local, &w, parts).unwrap();
        let c = inference_controls(&groups, &Cluster::Local, &resident, &tokens, &s).unwrap();
        assert_eq!((c.solo_ms.len(), c.corun_ms.len()), (2, 2), "{name}");
        assert_eq!(c.solo_stage_ms.len(), 2 * v, "{name}");
        assert_eq!(c.corun_stage_ms.len(), 2 * v, "{name}");
        let all = c.solo_ms.iter().chain(&c.corun_ms);
        let all = all.chain(&c.solo_stage_ms).chain(&c.corun_stage_ms);
        for x in all {
            assert!(x.is_finite() && *x > 0.0, "{name}: {c:?}");
        }
    }
    // A schedule for three devices on two is refused, by name.
    let parts = partition(w.config.n_layer, 2, None).unwrap();
    let resident = Resident::upload(&groups, &Cluster::Local, &w, parts).unwrap();
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 3, 3, 1).unwrap();
    let e = inference_controls(&groups, &Cluster::Local, &resident, &tokens, &s).unwrap_err();
    assert!(e.to_string().contains("3 devices but 2"), "{e}");
}

#[test]
fn the_profile_times_every_layer_kind_on_every_device() {
    let w = model();
    let g = gpus(2);
    let groups: Vec<DeviceGroup> = g.iter().map(DeviceGroup::single).collect();
    let prof = profile_layers(&groups, &Cluster::Local, &w, 1, 7, 3).unwrap();
    assert_eq!(prof.devices.len(), 2);
    for c in &prof.devices {
        for x in [c.embedding_ms, c.block_ms, c.head_ms] {
            assert!(x.is_finite() && x > 0.0, "{prof:?}");
        }
    }
    // Whatever the times, the chosen split is a valid one.
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 4, 1).unwrap();
    let c = choose_split(&prof, &s, 8).unwrap();
    assert_eq!(c.split.iter().sum::<usize>(), 8);
    assert!(c.split.iter().all(|&n| n >= 1));
}
