//! The executor's structure, tested on real devices with stand-in programs:
//! backward-kind products travel the same transfer path as activations,
//! devices run at the same time, and a failing device stops the run.
//! (Fault injection lives here, not in the library's API.)

use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::*;
use crate::action::{Action, Kind, Product, ProductKind};
use crate::device as buffers;
use crate::device::test_gpu;
use crate::schedule::ScheduleKind;

fn gpus(p: usize) -> Vec<Gpu> {
    (0..p).map(|_| test_gpu()).collect()
}

const WORDS: usize = 64;
const BYTES: u64 = (WORDS * 4) as u64;

/// A stand-in stage program that moves only marks. F copies its input
/// activation and stamps word 1+s; B and I copy the incoming gradient (the
/// stashed activation at the last stage) and stamp word 32+s; W stamps its
/// stage's weight record. Stage 0's final gradients reach the host, so each
/// one shows every stage its activation and its gradient went through.
struct Relay {
    stages: Vec<usize>,
    s_total: usize,
    m: usize,
    /// Per stage: activation in/out, gradient in/out, weight record.
    act_in: HashMapBuf,
    act_out: HashMapBuf,
    grad_in: HashMapBuf,
    grad_out: HashMapBuf,
    wgrad: HashMapBuf,
    /// Per (stage, microbatch): the activation F kept for B/I.
    stash: std::collections::HashMap<(usize, usize), wgpu::Buffer>,
    /// Stage 0's input gradient per microbatch, for the host.
    last_grads: std::collections::HashMap<usize, wgpu::Buffer>,
    /// Table of marks: [what][stage][microbatch], `what` = 0 microbatch id, 1 F, 2 B/I, 3 W.
    marks: wgpu::Buffer,
}

type HashMapBuf = std::collections::HashMap<usize, wgpu::Buffer>;

fn mark(what: usize, s: usize, m: usize) -> u32 {
    (1000 * what + 100 * s + m + 1) as u32
}

/// What a Relay device hands back: stage 0's gradient words per microbatch,
/// and each held stage's weight record.
type RelayOut = (Vec<(usize, Vec<u32>)>, Vec<(usize, Vec<u32>)>);

impl Relay {
    fn new(gpu: &Gpu, stages: Vec<usize>, s_total: usize, m: usize) -> Relay {
        let buf = |l: &str| buffers::zeros(gpu, l, WORDS);
        let per_stage = |l: &str| stages.iter().map(|&s| (s, buf(l))).collect::<HashMapBuf>();
        let mut table = vec![0u32; 4 * s_total * m];
        for what in 0..4 {
            for s in 0..s_total {
                for mb in 0..m {
                    table[(what * s_total + s) * m + mb] = mark(what, s, mb);
                }
            }
        }
        Relay {
            act_in: per_stage("act in"),
            act_out: per_stage("act out"),
            grad_in: per_stage("grad in"),
            grad_out: per_stage("grad out"),
            wgrad: per_stage("wgrad"),
            stash: stages
                .iter()
                .flat_map(|&s| (0..m).map(move |mb| (s, mb)))
                .map(|k| (k, buf("stash")))
                .collect(),
            last_grads: if stages.contains(&0) {
                (0..m).map(|mb| (mb, buf("final grad"))).collect()
            } else {
                Default::default()
            },
            marks: buffers::upload_pod(gpu, "marks", &table),
            stages,
            s_total,
            m,
        }
    }

    fn stamp(
        &self,
        enc: &mut wgpu::CommandEncoder,
        what: usize,
        a: Action,
        dst: &wgpu::Buffer,
        word: usize,
    ) {
        let idx = (what * self.s_total + a.stage) * self.m + a.microbatch;
        enc.copy_buffer_to_buffer(&self.marks, (idx * 4) as u64, dst, (word * 4) as u64, 4);
    }
}

impl StageProgram for Relay {
    type Output = RelayOut;

    fn message_bytes(&self, _p: Product) -> u64 {
        BYTES
    }

    fn input(&self, consumer: Action, p: Product) -> &wgpu::Buffer {
        match p.what {
            ProductKind::Activation => &self.act_in[&consumer.stage],
            _ => &self.grad_in[&consumer.stage],
        }
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        match producer.kind {
            Kind::F => &self.act_out[&producer.stage],
            _ => &self.grad_out[&producer.stage],
        }
    }

    fn encode(
        &mut self,
        _gpu: &Gpu,
        a: Action,
        enc: &mut ActionEncoder,
    ) -> crate::error::Result<()> {
        let s = a.stage;
        match a.kind {
            Kind::F => {
                let out = &self.act_out[&s];
                if s == 0 {
                    enc.clear_buffer(out, 0, None);
                    self.stamp(enc, 0, a, out, 0);
                } else {
                    enc.copy_buffer_to_buffer(&self.act_in[&s], 0, out, 0, BYTES);
                }
                self.stamp(enc, 1, a, out, 1 + s);
                enc.copy_buffer_to_buffer(out, 0, &self.stash[&(s, a.microbatch)], 0, BYTES);
            }
            Kind::B | Kind::I => {
                let out = &self.grad_out[&s];
                let src = if s + 1 == self.s_total {
                    &self.stash[&(s, a.microbatch)]
                } else {
                    &self.grad_in[&s]
                };
                enc.copy_buffer_to_buffer(src, 0, out, 0, BYTES);
                self.stamp(enc, 2, a, out, 32 + s);
                if s == 0 {
                    enc.copy_buffer_to_buffer(out, 0, &self.last_grads[&a.microbatch], 0, BYTES);
                }
                if a.kind == Kind::B {
                    self.stamp(enc, 3, a, &self.wgrad[&s], a.microbatch);
                }
            }
            Kind::W => self.stamp(enc, 3, a, &self.wgrad[&s], a.microbatch),
        }
        Ok(())
    }

    fn finish(self, gpu: &Gpu) -> crate::error::Result<RelayOut> {
        let words = |b: &wgpu::Buffer| -> crate::error::Result<Vec<u32>> {
            let f = buffers::download(gpu, b, WORDS)?;
            Ok(bytemuck::cast_slice(&f).to_vec())
        };
        let mut grads = Vec::new();
        for (&mb, b) in &self.last_grads {
            grads.push((mb, words(b)?));
        }
        let mut w = Vec::new();
        for &s in &self.stages {
            w.push((s, words(&self.wgrad[&s])?));
        }
        Ok((grads, w))
    }
}

fn run_relay(schedule: &Schedule, gpus: &[Gpu]) -> (Vec<RelayOut>, Vec<TransferRecord>) {
    let groups: Vec<DeviceGroup> = gpus.iter().map(DeviceGroup::single).collect();
    let (s_total, m) = (schedule.stages(), schedule.microbatches);
    let ran = run_programs(
        &groups,
        schedule,
        &InProcess::new(gpus.len()),
        |d, _, gpu| {
            let stages = (d..s_total).step_by(schedule.devices).collect();
            Ok(Relay::new(gpu, stages, s_total, m))
        },
    )
    .unwrap();
    (ran.outputs, ran.transfers)
}

#[test]
fn gradients_flow_backward_through_the_transfer_path() {
    let g = gpus(2);
    for (name, v, m) in [
        (ScheduleKind::Gpipe, 1, 3),
        (ScheduleKind::OneFOneB, 1, 4),
        (ScheduleKind::Interleaved, 2, 4),
        (ScheduleKind::ZbH1, 1, 4),
    ] {
        let s = Schedule::generate(name, 2, m, v, false).unwrap();
        let st = s.stages();
        let (out, transfers) = run_relay(&s, &g);
        // Stage 0's input gradient of every microbatch carries the
        // microbatch's id, every stage's forward mark and every stage's
        // backward mark: it went up the pipeline and back down.
        let grads: Vec<&(usize, Vec<u32>)> = out.iter().flat_map(|(gr, _)| gr).collect();
        assert_eq!(grads.len(), m, "{name}");
        for (mb, words) in grads {
            assert_eq!(words[0], mark(0, 0, *mb), "{name} mb {mb}: microbatch id");
            for stage in 0..st {
                assert_eq!(
                    words[1 + stage],
                    mark(1, stage, *mb),
                    "{name} mb {mb}: F of stage {stage}"
                );
                assert_eq!(
                    words[32 + stage],
                    mark(2, stage, *mb),
                    "{name} mb {mb}: backward of stage {stage}"
                );
            }
        }
        // Every stage's weight gradient was made for every microbatch (by W or B).
        for (stage, words) in out.iter().flat_map(|(_, w)| w) {
            for (mb, &word) in words.iter().enumerate().take(m) {
                assert_eq!(word, mark(3, *stage, mb), "{name}: W of {stage} mb {mb}");
            }
        }
        // Every cross-device message is recorded once, naming its ends.
        let grads_moved = transfers
            .iter()
            .filter(|t| t.product.what == ProductKind::InputGradient)
            .count();
        assert_eq!(
            grads_moved,
            (st - 1) * m,
            "{name}: one gradient per stage boundary and microbatch"
        );
        assert_eq!(transfers.len(), 2 * (st - 1) * m, "{name}");
        for t in &transfers {
            assert_eq!(t.producer.produces(), t.product);
            assert!(t.consumer.needs(st).contains(&t.product));
            assert_ne!(t.from, t.to);
            assert_eq!(t.bytes, BYTES);
        }
    }
}

/// Wraps a program: `hook` runs (on the device's thread, with the device
/// and the inner program) before each action is encoded.
struct Hooked<P, H> {
    inner: P,
    hook: H,
}

impl<P, H> StageProgram for Hooked<P, H>
where
    P: StageProgram,
    H: FnMut(&Gpu, Action, &P) -> crate::error::Result<()>,
{
    type Output = P::Output;
    fn message_bytes(&self, p: Product) -> u64 {
        self.inner.message_bytes(p)
    }
    fn input(&self, c: Action, p: Product) -> &wgpu::Buffer {
        self.inner.input(c, p)
    }
    fn output(&self, a: Action) -> &wgpu::Buffer {
        self.inner.output(a)
    }
    fn encode(
        &mut self,
        gpu: &Gpu,
        a: Action,
        enc: &mut ActionEncoder,
    ) -> crate::error::Result<()> {
        (self.hook)(gpu, a, &self.inner)?;
        self.inner.encode(gpu, a, enc)
    }
    fn encode_results(&mut self, gpu: &Gpu, a: Action, enc: &mut wgpu::CommandEncoder) {
        self.inner.encode_results(gpu, a, enc)
    }
    fn finish(self, gpu: &Gpu) -> crate::error::Result<P::Output> {
        self.inner.finish(gpu)
    }
}

/// Wait until `parties` threads have arrived at `gate`; `Err` after a long
/// wait. Not a speed limit: a deadlock detector.
fn rendezvous(gate: &(Mutex<usize>, Condvar), parties: usize) -> crate::error::Result<()> {
    let (lock, cv) = gate;
    let mut n = lock.lock().unwrap();
    *n += 1;
    cv.notify_all();
    let (n, timeout) = cv
        .wait_timeout_while(n, Duration::from_secs(120), |n| *n < parties)
        .unwrap();
    if timeout.timed_out() {
        return Err(crate::error::Error::Other(format!(
            "only {} of {parties} devices reached their rendezvous: devices do not run at the same time",
            *n
        )));
    }
    Ok(())
}

#[test]
fn devices_run_their_rows_at_the_same_time() {
    // GPipe P=2: device 0's 0F1 and device 1's 1F0 may run together; the
    // run completes only if the executor lets them.
    let g = gpus(2);
    let groups: Vec<DeviceGroup> = g.iter().map(DeviceGroup::single).collect();
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 4, 1).unwrap();
    let gate = (Mutex::new(0), Condvar::new());
    let at = |d: usize| {
        if d == 0 {
            Action::new(0, Kind::F, 1)
        } else {
            Action::new(1, Kind::F, 0)
        }
    };
    run_programs(&groups, &s, &InProcess::new(2), |d, _, gpu| {
        let gate = &gate;
        Ok(Hooked {
            inner: Relay::new(gpu, vec![d], 2, 4),
            // Run one after the other, the devices would never both arrive.
            hook: move |_: &Gpu, a: Action, _: &Relay| {
                if a == at(d) {
                    rendezvous(gate, 2)?;
                }
                Ok(())
            },
        })
    })
    .unwrap();
    assert_eq!(*gate.0.lock().unwrap(), 2);
}

/// A deliberate failure on one device, just before one action.
#[derive(Clone, Copy)]
enum Fault {
    /// A real wgpu validation error (an out-of-bounds buffer write).
    Validation,
    /// The device's thread panics.
    Panic,
}

fn injected(fault: Fault) -> String {
    let s = Schedule::for_inference(ScheduleKind::Gpipe, 3, 8, 1).unwrap();
    let g = gpus(3);
    let groups: Vec<DeviceGroup> = g.iter().map(DeviceGroup::single).collect();
    let at = Action::new(1, Kind::F, 2);
    let r = run_programs(&groups, &s, &InProcess::new(3), |d, _, gpu| {
        Ok(Hooked {
            inner: Relay::new(gpu, vec![d], 3, 8),
            hook: move |gpu: &Gpu, a: Action, inner: &Relay| {
                if d == 1 && a == at {
                    match fault {
                        Fault::Validation => {
                            let x = inner.output(a);
                            gpu.queue.write_buffer(x, x.size(), &[0u8; 4]);
                        }
                        Fault::Panic => panic!("injected fault"),
                    }
                }
                Ok(())
            },
        })
    });
    match r {
        Ok(_) => panic!("the run must fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_wgpu_error_on_one_device_stops_the_run() {
    let msg = injected(Fault::Validation);
    assert!(
        msg.contains("device 1") && msg.contains("stage 1") && msg.contains("1F2"),
        "{msg}"
    );
}

#[test]
fn a_panicking_device_thread_stops_the_run() {
    let msg = injected(Fault::Panic);
    assert!(
        msg.contains("device 1") && msg.contains("1F2") && msg.contains("panicked"),
        "{msg}"
    );
}
