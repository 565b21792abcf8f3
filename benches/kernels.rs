//! Kernel benchmarks: correctness first, then time, every row beside the
//! adapter's limit.
//!
//!     cargo bench --bench kernels -- --warm-up-time 1 --measurement-time 3
//!
//! 1. Checks `matmul_forward` (both kernels) against `cpu::matmul_forward`.
//! 2. Criterion group `matmul_forward_flop`: throughput is set to the FLOP of
//!    one matmul (2·N·C·OC), so criterion's "elem/s" reads as FLOP/s.
//! 3. A plain table of GFLOP/s from its own loop: 20 dispatches encoded in one
//!    compute pass, one submit, wait, divide. Per-submit overhead
//!    (~50-100 us on lavapipe) is then negligible, as in the real forward pass.
//!    Its best row is the adapter's best matmul.
//! 4. The adapter's read limits (`limits.rs`): streaming reads from a
//!    storage buffer and from a texture, the best of a few load shapes each.
//! 5. The gradient matmuls and decoding's GEMVs (`tables.rs`), and every
//!    kernel of a training stage's F, I and W (`train_ops.rs`), each with its
//!    fraction of the relevant limit.
//! 6. Every f16 kernel beside its f32 version on the same shape (`f16.rs`).
//! 7. GPT-2 small forward tokens/s (seeded weights, B=1, T=128 and T=512 is
//!    too slow for criterion's ten samples: best of 2 timed runs after a warm-up).
//!
//! `WGPIPE_BENCH_ONLY=train|decode|backward|f16` runs only that part of 5-6 (after
//! the limits), for quick looks.
//!
//! The adapter is the tests' one: `WGPIPE_TEST_ADAPTER` ("" = first).
//! Measure in release: debug builds turn on wgpu validation.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "kernels/f16.rs"]
mod f16;
#[path = "kernels/limits.rs"]
mod limits;
#[path = "kernels/tables.rs"]
mod tables;
#[path = "kernels/train_ops.rs"]
mod train_ops;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use wgpipe::cpu;
use wgpipe::device::{download, upload, zeros, Gpu};
use wgpipe::kernels::{self, Dispatch};

/// (label, N, C, OC)
const SHAPES: &[(&str, usize, usize, usize)] = &[
    ("square", 256, 256, 256),
    ("square", 512, 512, 512),
    ("square", 1024, 1024, 1024),
    // GPT-2 small, 512 tokens
    ("gpt2_qkv", 512, 768, 2304),
    ("gpt2_attn_proj", 512, 768, 768),
    ("gpt2_fc", 512, 768, 3072),
    ("gpt2_mlp_proj", 512, 3072, 768),
];

/// Dispatches per submit when timing.
const BATCH: usize = 20;

/// One matmul with its buffers (kept alive as long as the dispatch).
struct Matmul {
    n: usize,
    c: usize,
    oc: usize,
    out: wgpu::Buffer,
    _bufs: [wgpu::Buffer; 3],
    dispatch: Dispatch,
    // host copies, for the correctness check
    inp: Vec<f32>,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

impl Matmul {
    fn new(gpu: &Gpu, n: usize, c: usize, oc: usize) -> Matmul {
        let mut rng = common::Rng::new((n * 31 + c * 7 + oc) as u64);
        let inp = rng.vec(n * c, 1.0);
        let weight = rng.vec(c * oc, 1.0 / (c as f32).sqrt());
        let bias = rng.vec(oc, 0.5);
        let out = zeros(gpu, "out", n * oc);
        let bufs = [
            upload(gpu, "inp", &inp),
            upload(gpu, "weight", &weight),
            upload(gpu, "bias", &bias),
        ];
        let dispatch = kernels::matmul_forward(gpu, &out, &bufs[0], &bufs[1], &bufs[2], n, c, oc);
        Matmul {
            n,
            c,
            oc,
            out,
            _bufs: bufs,
            dispatch,
            inp,
            weight,
            bias,
        }
    }

    fn flop(&self) -> u64 {
        2 * (self.n * self.c * self.oc) as u64
    }

    /// `k` dispatches in one compute pass, one submit, wait.
    fn run(&self, gpu: &Gpu, k: usize) {
        kernels::run(gpu, &vec![&self.dispatch; k]).expect("matmul dispatch failed");
    }

    fn check(&self, gpu: &Gpu) {
        self.run(gpu, 1);
        let got = download(gpu, &self.out, self.n * self.oc).expect("download failed");
        let mut want = vec![0f32; self.n * self.oc];
        cpu::matmul_forward(
            &mut want,
            &self.inp,
            &self.weight,
            Some(&self.bias),
            self.n,
            self.c,
            self.oc,
        );
        let name = format!(
            "{} N={} C={} OC={}",
            self.dispatch.name, self.n, self.c, self.oc
        );
        common::assert_close(&name, &got, &want, 1e-5, 1e-4);
        println!("checked {name} against cpu::matmul_forward: ok");
    }
}

/// Wall time of `iters` dispatches, `BATCH` per submit.
fn time_batched(gpu: &Gpu, m: &Matmul, iters: u64) -> Duration {
    let start = Instant::now();
    let mut left = iters as usize;
    while left > 0 {
        let k = left.min(BATCH);
        m.run(gpu, k);
        left -= k;
    }
    start.elapsed()
}

fn bench_matmul(c: &mut Criterion, gpu: &Gpu, ms: &[(&str, Matmul)]) {
    let mut group = c.benchmark_group("matmul_forward_flop");
    // Each iteration is 10-200 ms on lavapipe: few, equal samples.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    for (label, m) in ms {
        group.throughput(Throughput::Elements(m.flop()));
        let id = BenchmarkId::new(*label, format!("{}x{}x{}", m.n, m.c, m.oc));
        group.bench_with_input(id, m, |b, m| {
            b.iter_custom(|iters| time_batched(gpu, m, iters))
        });
    }
    group.finish();
}

/// GFLOP/s from our own loop: best of 3 submits of `BATCH` dispatches, each
/// row as a fraction of the table's best (returned: the best matmul).
fn print_table(gpu: &Gpu, ms: &[(&str, Matmul)]) -> f64 {
    println!(
        "\nmatmul_forward on {}: {BATCH} dispatches per submit, best of 3",
        gpu.label
    );
    let rows: Vec<(&str, &Matmul, f64)> = ms
        .iter()
        .map(|(label, m)| {
            m.run(gpu, 1); // warm-up
            let best = (0..3)
                .map(|_| time_batched(gpu, m, BATCH as u64))
                .min()
                .expect("3 runs");
            (*label, m, best.as_secs_f64() / BATCH as f64)
        })
        .collect();
    let gflops = |m: &Matmul, per: f64| m.flop() as f64 / per / 1e9;
    let top = rows
        .iter()
        .map(|(_, m, per)| gflops(m, *per))
        .fold(0.0, f64::max);
    println!(
        "{:<16} {:>16} {:<24} {:>10} {:>9} {:>8}",
        "shape", "N x C x OC", "kernel", "ms/matmul", "GFLOP/s", "of best"
    );
    for (label, m, per) in rows {
        println!(
            "{:<16} {:>16} {:<24} {:>10.2} {:>9.1} {:>7.0}%",
            label,
            format!("{}x{}x{}", m.n, m.c, m.oc),
            m.dispatch.name,
            per * 1e3,
            gflops(m, per),
            100.0 * gflops(m, per) / top
        );
    }
    top
}

fn main() {
    let gpu = common::gpu();
    println!("adapter: {}", gpu.label);
    let only = std::env::var("WGPIPE_BENCH_ONLY").ok();

    // 1. Correctness, both kernels, odd shapes included.
    for (n, c, oc) in [(65, 64, 256), (33, 35, 71), (128, 768, 2304)] {
        Matmul::new(&gpu, n, c, oc).check(&gpu);
    }

    let ms: Vec<(&str, Matmul)> = SHAPES
        .iter()
        .map(|&(l, n, c, oc)| (l, Matmul::new(&gpu, n, c, oc)))
        .collect();
    ms[1].1.check(&gpu); // 512^3, the target shape
    if only.is_none() {
        // 2. Criterion.
        let mut crit = Criterion::default().configure_from_args();
        bench_matmul(&mut crit, &gpu, &ms);
        crit.final_summary();
    }

    // 3.-7. Our own tables (skipped under `cargo test --benches`, which runs
    //    each benchmark once only to see that it works).
    if std::env::args().any(|a| a == "--bench") {
        let best = print_table(&gpu, &ms);
        let limits = limits::measure(&gpu, best);
        let part = |name: &str| only.as_deref().is_none_or(|o| o == name);
        if part("backward") {
            tables::print_backward(&gpu, &limits);
        }
        if part("decode") {
            tables::print_decode(&gpu, &limits);
            tables::print_decode_step(&gpu, &limits);
        }
        if part("train") {
            train_ops::print(&gpu, &[32, 64], &limits);
        }
        if part("f16") {
            f16::print(&gpu, &limits);
        }
        if only.is_none() {
            print_forward(&gpu);
        }
    }
}

/// GPT-2 small (124M, seeded weights) forward tokens/s, logits read back included.
fn print_forward(gpu: &Gpu) {
    use wgpipe::io::random_input_ids;
    use wgpipe::model::{gpu::forward, Gpt2Config, Gpt2Weights};
    let cfg = Gpt2Config::named("gpt2").expect("built-in gpt2");
    let w = Gpt2Weights::init(&cfg, 0).expect("init");
    println!(
        "\nGPT-2 small forward on {} (best of 2 after a warm-up)",
        gpu.label
    );
    println!("{:>5} {:>5} {:>10} {:>10}", "B", "T", "ms", "tokens/s");
    for (b, t) in [(1, 128), (4, 128)] {
        let tokens = random_input_ids(b, t, cfg.vocab_size, 1);
        let run = || forward(gpu, &w, &tokens, b).expect("forward").seconds;
        run();
        let best = run().min(run());
        println!(
            "{b:>5} {t:>5} {:>10.1} {:>10.1}",
            best * 1e3,
            (b * t) as f64 / best
        );
    }
}
