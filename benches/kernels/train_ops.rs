//! A training stage's actions taken apart: every op of F, I and W of one
//! bench-model stage (2 blocks, C = 256, F = 1024), timed one by one, then
//! each action whole as the pipeline runs it (one encoder, one submit), so
//! the sum of the parts can be held against the whole.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use wgpipe::action::Kind;
use wgpipe::device::{zeros, Gpu};
use wgpipe::model::train::{encode_ops, Op, Phase, Stashed, TrainStage};
use wgpipe::model::{Gpt2Weights, Shard, StagePart};

/// One op's time, by kernel.
pub struct OpTime {
    pub name: &'static str,
    pub us: f64,
}

/// A middle stage of the bench model (no embedding, no head), 2 blocks, for
/// microbatches of one sequence of `t` tokens, with every stashed tensor of
/// one microbatch allocated.
pub struct Stage {
    pub stage: TrainStage,
    pub stash: HashMap<Stashed, wgpu::Buffer>,
}

impl Stage {
    pub fn new(gpu: &Gpu, t: usize) -> Stage {
        let cfg = wgpipe::bench::bench_config(2, t);
        let w = Gpt2Weights::init(&cfg, 0).expect("bench model");
        let part = StagePart {
            layers: 0..2,
            embedding: false,
            head: false,
        };
        let stage = TrainStage::new(gpu, &w.stage(&part), 1, t, Shard::WHOLE).expect("train stage");
        let mut stash = HashMap::new();
        for kind in [Kind::F, Kind::B] {
            for s in stage.acquires(kind, false) {
                stash.insert(s, zeros(gpu, "stash", stage.stash_len(s)));
            }
        }
        Stage { stage, stash }
    }

    /// The ops of F, I or W.
    pub fn ops(&self, gpu: &Gpu, kind: Kind) -> Vec<Op> {
        match kind {
            Kind::F => self.stage.forward_ops(gpu, &self.stash, None),
            Kind::I => self
                .stage
                .backward_ops(gpu, &self.stash, Phase::Input, false, None),
            Kind::W => self
                .stage
                .backward_ops(gpu, &self.stash, Phase::Weight, false, None),
            Kind::B => self
                .stage
                .backward_ops(gpu, &self.stash, Phase::Full, false, None),
        }
        .expect("ops")
    }
}

/// Each dispatch of `ops` timed alone: `probe::best_seconds` (K copies per
/// submit, host time, best of `reps`). Clears and copies are left out; a
/// dispatch that accumulates (+=) just accumulates K times.
pub fn time_each(gpu: &Gpu, ops: &[Op], reps: usize) -> Vec<OpTime> {
    ops.iter()
        .filter_map(|o| match o {
            Op::Run(d) => Some(d),
            _ => None,
        })
        .map(|d| OpTime {
            name: d.name,
            us: 1e6 * wgpipe::kernels::probe::best_seconds(gpu, d, reps).expect("timed"),
        })
        .collect()
}

/// The whole of `ops` as the pipeline records it (runs of dispatches share a
/// compute pass), one submit and a wait: median host ms of `reps` after a warm-up.
pub fn time_whole(gpu: &Gpu, ops: &[Op], reps: usize) -> f64 {
    let mut ms: Vec<f64> = (0..reps + 1)
        .map(|_| {
            let start = Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            encode_ops(ops, &mut enc).expect("one device records no all-reduce");
            gpu.queue.submit([enc.finish()]);
            gpu.wait().expect("ops");
            start.elapsed().as_secs_f64() * 1e3
        })
        .skip(1)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

/// Times summed by kernel name, in first-seen order.
pub fn by_kernel(times: &[OpTime]) -> Vec<(&'static str, usize, f64)> {
    let mut order = Vec::new();
    let mut sums: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for t in times {
        let e = sums.entry(t.name).or_insert_with(|| {
            order.push(t.name);
            (0, 0.0)
        });
        e.0 += 1;
        e.1 += t.us;
    }
    order
        .into_iter()
        .map(|n| (n, sums[n].0, sums[n].1))
        .collect()
}

/// The work of one kernel's dispatches in an action of the bench stage (2
/// blocks, C, F = 4C, NH heads, one sequence of T tokens): FLOP for the
/// compute-bound kernels, else the bytes it must at least read and write.
enum Work {
    Flop(f64),
    Bytes(f64),
}

/// `split`: attention's backward runs its phases 1 and 2 (scores, dP, dk,
/// dv; dq) on `attention_backward_subgroup`, leaving phase 0 (D, one dot
/// product per query: counted as bytes) to `attention_backward`.
fn work(name: &str, t: usize, c: usize, nh: usize, split: bool) -> Work {
    let (n, f, l) = (t as f64, 4.0 * c as f64, 2.0);
    let c = c as f64;
    let hd = c / nh as f64;
    // Every matmul of a block: QKV, attention projection, MLP in and out.
    let matmul = 2.0 * n * (3.0 * c * c + c * c + c * f + f * c) * l;
    // Causal attention per head: T(T+1)/2 (query, key) pairs of 2 HD-long
    // dot products (scores, then P V); the backward has 5.
    let pairs = (t * (t + 1) / 2) as f64 * nh as f64 * l;
    let b = 4.0; // bytes per f32
    match name {
        n_ if n_.starts_with("matmul_forward")
            || n_.starts_with("matmul_backward_input")
            || n_.starts_with("matmul_backward_weight") =>
        {
            Work::Flop(matmul)
        }
        "attention_forward" | "attention_forward_subgroup" => Work::Flop(pairs * 4.0 * hd),
        "attention_backward" if split => Work::Bytes(2.0 * n * c * b * l),
        "attention_backward" => Work::Flop(pairs * 10.0 * hd),
        "attention_backward_subgroup" => Work::Flop(pairs * 10.0 * hd),
        // read in, write out (x2 per block)
        "layernorm_forward" => Work::Bytes(2.0 * 2.0 * n * c * b * l),
        "gelu_forward" => Work::Bytes(2.0 * n * f * b * l),
        // two inputs, one output
        "residual_forward" => Work::Bytes(2.0 * 3.0 * n * c * b * l),
        // dout in, two gradients read and written
        "residual_backward" => Work::Bytes(2.0 * 5.0 * n * c * b * l),
        // dout, inp in, dinp read and written
        "gelu_backward" => Work::Bytes(4.0 * n * f * b * l),
        "layernorm_backward" => Work::Bytes(2.0 * 4.0 * n * c * b * l),
        // dout of the four matmuls read once
        "matmul_backward_bias" => Work::Bytes(n * (3.0 * c + c + f + c) * b * l),
        _ => Work::Bytes(0.0),
    }
}

/// Print F, I, W and B of the bench stage at each `t`: per kernel, the sum
/// of its dispatches' times and the fraction of the adapter's limit it
/// reaches (compute-bound kernels of the best matmul, the others of the best
/// buffer read); then each action whole, and B / F and (I + W) / F.
pub fn print(gpu: &Gpu, ts: &[usize], limits: &super::limits::Limits) {
    for &t in ts {
        let st = Stage::new(gpu, t);
        let (c, nh) = (st.stage.cfg.n_embd, st.stage.cfg.n_head);
        println!(
            "
bench-model stage (2 blocks, C={c}, F={}, {nh} heads), T={t}, on {}: per kernel, each dispatch timed alone (K per submit, host clock), best of 5",
            4 * c,
            gpu.label
        );
        println!(
            "  {:<2} {:<34} {:>4} {:>9} {:>12} {:>8}",
            "", "kernel", "x", "us", "rate", "of limit"
        );
        let mut whole = Vec::new();
        for kind in [Kind::F, Kind::I, Kind::W, Kind::B] {
            let ops = st.ops(gpu, kind);
            let each = time_each(gpu, &ops, 5);
            let sum: f64 = each.iter().map(|o| o.us).sum();
            if kind != Kind::B {
                let kernels = by_kernel(&each);
                let split = kernels.iter().any(|k| k.0 == "attention_backward_subgroup");
                for (name, count, us) in kernels {
                    let (rate, frac) = match work(name, t, c, nh, split) {
                        Work::Flop(fl) => {
                            let g = fl / us / 1e3;
                            (format!("{g:.1} GFLOP/s"), g / limits.matmul_gflops)
                        }
                        Work::Bytes(by) => {
                            let g = by / us / 1e3;
                            (format!("{g:.2} GB/s"), g / limits.buffer_gbps)
                        }
                    };
                    println!(
                        "  {:<2} {:<34} {:>4} {:>9.0} {:>12} {:>7.0}%",
                        format!("{kind:?}"),
                        name,
                        count,
                        us,
                        rate,
                        100.0 * frac
                    );
                }
            }
            let w = time_whole(gpu, &ops, 5);
            whole.push((kind, sum / 1e3, w));
        }
        for (kind, sum, w) in &whole {
            println!(
                "  {kind:?}: dispatches alone {sum:.2} ms, the action whole (one submit) {w:.2} ms"
            );
        }
        let ms = |k: Kind| whole.iter().find(|x| x.0 == k).map_or(f64::NAN, |x| x.1);
        println!(
            "  B / F = {:.2}, (I + W) / F = {:.2} (dispatches alone)",
            ms(Kind::B) / ms(Kind::F),
            (ms(Kind::I) + ms(Kind::W)) / ms(Kind::F)
        );
    }
}
