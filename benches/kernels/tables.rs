//! The gradient matmuls and decoding's GEMVs, each row beside its limit:
//! GFLOP/s as a fraction of the best matmul (compute-bound shapes), weight
//! GB/s as a fraction of the best streaming read (decoding's one-to-four-row
//! matmuls read every weight once per token: bandwidth-bound).
//! Every row is checked against the CPU before it is timed.

use super::common::{self, Rng};
use super::limits::Limits;
use wgpipe::cpu;
use wgpipe::device::{download, upload, zeros, Dtype, Gpu};
use wgpipe::kernels::{self, probe, Kernels, MatmulOp, MatmulVariant, WeightTexture};

/// Timed runs per row (`probe::best_seconds`, best of).
const REPS: usize = 5;

/// (label, N, C, OC): GPT-2 at 512 tokens, and the bench model's stage at
/// a microbatch of 32 and 64 tokens (what `bench bubble --train` runs).
const BACKWARD_SHAPES: &[(&str, usize, usize, usize)] = &[
    ("gpt2_qkv", 512, 768, 2304),
    ("gpt2_mlp_proj", 512, 3072, 768),
    ("bench_qkv T=32", 32, 256, 768),
    ("bench_fc T=32", 32, 256, 1024),
    ("bench_mlp_proj T=32", 32, 1024, 256),
    ("bench_qkv T=64", 64, 256, 768),
    ("bench_mlp_proj T=64", 64, 1024, 256),
];

/// dX and dW of every shape, every variant the device runs, beside the
/// forward of the same shape (the device's own choice).
pub fn print_backward(gpu: &Gpu, limits: &Limits) {
    println!(
        "\ngradient matmuls on {}: K dispatches per submit, host clock, best of {REPS}; fraction of the best matmul ({:.1} GFLOP/s)",
        gpu.label, limits.matmul_gflops
    );
    println!(
        "{:<20} {:>16} {:<34} {:>9} {:>9} {:>7}",
        "shape", "N x C x OC", "kernel", "ms", "GFLOP/s", "of best"
    );
    let variants: Vec<MatmulVariant> = Kernels::of(gpu)
        .matmul_variants()
        .into_iter()
        .filter(|v| *v != MatmulVariant::General && v.shader_of(MatmulOp::BackwardInput).is_some())
        .collect();
    for &(label, n, c, oc) in BACKWARD_SHAPES {
        let mut rng = Rng::new((n + c + oc) as u64);
        let inp = rng.vec(n * c, 1.0);
        let w = rng.vec(c * oc, 1.0 / (c as f32).sqrt());
        let dout = rng.vec(n * oc, 1.0);
        let (inp_b, w_b, dout_b, bias) = (
            upload(gpu, "inp", &inp),
            upload(gpu, "w", &w),
            upload(gpu, "dout", &dout),
            zeros(gpu, "bias", oc),
        );
        let (dinp, dw, out) = (
            zeros(gpu, "dinp", n * c),
            zeros(gpu, "dw", c * oc),
            zeros(gpu, "out", n * oc),
        );
        let flop = 2.0 * (n * c * oc) as f64;
        let row = |name: &str, d: &kernels::Dispatch| {
            let s = probe::best_seconds(gpu, d, REPS).expect("timed");
            let gflops = flop / s / 1e9;
            println!(
                "{:<20} {:>16} {:<34} {:>9.2} {:>9.1} {:>6.0}%",
                label,
                format!("{n}x{c}x{oc}"),
                name,
                s * 1e3,
                gflops,
                100.0 * gflops / limits.matmul_gflops
            );
        };
        let f = kernels::matmul_forward(gpu, &out, &inp_b, &w_b, &bias, n, c, oc);
        row(f.name, &f);
        for &v in &variants {
            let d =
                kernels::matmul_backward_input_with(gpu, v, &dinp, &dout_b, &w_b, n, c, oc, oc, 0)
                    .expect("dX variant");
            check_dx(gpu, &d, &dinp, &dout, &w, n, c, oc);
            row(d.name, &d);
            let d =
                kernels::matmul_backward_weight_with(gpu, v, &dw, &dout_b, &inp_b, n, c, oc, oc, 0)
                    .expect("dW variant");
            check_dw(gpu, &d, &dw, &dout, &inp, n, c, oc);
            row(d.name, &d);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_dx(
    gpu: &Gpu,
    d: &kernels::Dispatch,
    dinp: &wgpu::Buffer,
    dout: &[f32],
    w: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    gpu.queue
        .write_buffer(dinp, 0, bytemuck::cast_slice(&vec![0f32; n * c]));
    kernels::run(gpu, &[d]).expect("dX");
    let mut want = vec![0f32; n * c];
    cpu::backward::matmul_backward_input(&mut want, dout, w, n, c, oc);
    let got = download(gpu, dinp, n * c).expect("download");
    common::assert_close(d.name, &got, &want, 1e-4, 1e-4);
}

#[allow(clippy::too_many_arguments)]
fn check_dw(
    gpu: &Gpu,
    d: &kernels::Dispatch,
    dw: &wgpu::Buffer,
    dout: &[f32],
    inp: &[f32],
    n: usize,
    c: usize,
    oc: usize,
) {
    gpu.queue
        .write_buffer(dw, 0, bytemuck::cast_slice(&vec![0f32; c * oc]));
    kernels::run(gpu, &[d]).expect("dW");
    let mut want = vec![0f32; c * oc];
    cpu::backward::matmul_backward_weight(&mut want, dout, inp, n, c, oc);
    let got = download(gpu, dw, c * oc).expect("download");
    common::assert_close(d.name, &got, &want, 1e-4, 1e-4);
}

/// (label, C, OC): every matmul of a GPT-2 decode step, and the LM head's
/// vocabulary chunks as lavapipe's 128 MiB binding cuts them.
const DECODE_SHAPES: &[(&str, usize, usize)] = &[
    ("gpt2_qkv", 768, 2304),
    ("gpt2_attn_proj", 768, 768),
    ("gpt2_fc", 768, 3072),
    ("gpt2_mlp_proj", 3072, 768),
    ("gpt2_lm_head chunk", 768, 43688),
];

/// Decoding's few-row matmuls: the weight in a buffer and in a texture, one
/// and four rows; weight GB/s as a fraction of the best streaming read.
pub fn print_decode(gpu: &Gpu, limits: &Limits) {
    let choice = kernels::decode_weights(gpu);
    println!(
        "\ndecode matmuls on {} (weights read from {:?} here): K dispatches per submit, host clock, best of {REPS}; weight GB/s, fraction of the best read ({:.2} GB/s)",
        gpu.label,
        choice.storage,
        limits.read_gbps()
    );
    println!(
        "{:<20} {:>4} {:>12} {:<38} {:>9} {:>8} {:>7}",
        "shape", "rows", "C x OC", "kernel", "ms", "GB/s", "of best"
    );
    for &(label, c, oc) in DECODE_SHAPES {
        let mut rng = Rng::new((c + oc) as u64);
        let w = rng.vec(c * oc, 1.0 / (c as f32).sqrt());
        let w_b = upload(gpu, "w", &w);
        let bias = zeros(gpu, "bias", oc);
        let mut texs: Vec<WeightTexture> = WeightTexture::from_buffer(gpu, &w_b, c, oc, Dtype::F32)
            .into_iter()
            .collect();
        if let Ok(tws) = std::env::var("WGPIPE_BENCH_TW") {
            for tw in tws.split(',').map(|x| x.parse::<usize>().unwrap()) {
                texs.extend(
                    WeightTexture::from_buffer_tiled(gpu, &w_b, c, oc, tw, Dtype::F32).ok(),
                );
            }
        }
        for n in [1, 4] {
            let inp = rng.vec(n * c, 1.0);
            let inp_b = upload(gpu, "inp", &inp);
            let out = zeros(gpu, "out", n * oc);
            let mut want = vec![0f32; n * oc];
            cpu::matmul_forward(&mut want, &inp, &w, None, n, c, oc);
            let mut ds = vec![kernels::matmul_forward_with(
                gpu,
                MatmulVariant::Rows4,
                &out,
                &inp_b,
                &w_b,
                &bias,
                n,
                c,
                oc,
            )
            .expect("rows4")];
            for t in &texs {
                ds.push(
                    kernels::matmul_forward_texture(gpu, &out, &inp_b, t, &bias, n, c, oc, oc, 0)
                        .expect("texture"),
                );
            }
            let tws: Vec<usize> = texs.iter().map(|t| t.tw).collect();
            for (i, d) in ds.iter().enumerate() {
                let name = match i {
                    0 => d.name.to_string(),
                    _ => format!("{} tw={}", d.name, tws[i - 1]),
                };
                kernels::run(gpu, &[d]).expect("decode matmul");
                let got = download(gpu, &out, n * oc).expect("download");
                common::assert_close(d.name, &got, &want, 1e-5, 1e-4);
                let s = probe::best_seconds(gpu, d, REPS).expect("timed");
                let gbps = (c * oc * 4) as f64 / s / 1e9;
                println!(
                    "{:<20} {:>4} {:>12} {:<38} {:>9.3} {:>8.2} {:>6.0}%",
                    label,
                    n,
                    format!("{c}x{oc}"),
                    name,
                    s * 1e3,
                    gbps,
                    100.0 * gbps / limits.read_gbps()
                );
            }
        }
    }
}

/// One GPT-2 decode step (one sequence, seeded weights, 16 positions in the
/// cache), every dispatch of the stage timed alone and summed by kernel,
/// then the step whole (one submit): where a token's time goes besides the
/// matmuls. Weight GB/s for the matmuls, as a fraction of the best read.
pub fn print_decode_step(gpu: &Gpu, limits: &Limits) {
    use std::collections::BTreeMap;
    use wgpipe::model::gpu::{GpuStage, KvCache, Mode, StageUpload};
    use wgpipe::model::{Gpt2Config, Gpt2Weights, Shard, StagePart};
    let cfg = Gpt2Config::named("gpt2").expect("built-in gpt2");
    let w = Gpt2Weights::init(&cfg, 0).expect("init");
    let whole = StagePart::whole(&cfg);
    let up = StageUpload::new(gpu, &w.stage(&whole)).expect("upload");
    let kv =
        KvCache::new(gpu, &cfg, Shard::WHOLE, cfg.n_layer, 2, 16, Dtype::F32).expect("kv cache");
    let stage = GpuStage::build(gpu, &up, 1, 1, Mode::Decode(&kv)).expect("decode stage");
    stage.write_rows(gpu, &[(0, 15)]);
    let mut by: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    let mut order = Vec::new();
    for seg in stage.segments() {
        for d in seg.dispatches() {
            let s = probe::best_seconds(gpu, d, 3).expect("timed");
            let e = by.entry(d.name).or_insert_with(|| {
                order.push(d.name);
                (0, 0.0)
            });
            e.0 += 1;
            e.1 += s;
        }
    }
    let c = cfg.n_embd;
    let block_weights = 12.0 * c as f64 * c as f64 * 4.0 * cfg.n_layer as f64;
    let head_weights = (c * cfg.padded_vocab() * 4) as f64;
    println!(
        "\nGPT-2 decode step on {} (1 sequence, position 15, weights from {:?}): every dispatch alone, best of 3",
        gpu.label,
        kernels::decode_weights(gpu).storage
    );
    let mut sum = 0.0;
    for name in order {
        let (count, s) = by[name];
        sum += s;
        let rate = match name {
            n if n.starts_with("matmul_forward") => {
                let gbps = (block_weights + head_weights) / s / 1e9;
                format!(
                    "{gbps:.2} GB/s, {:.0}% of the best read",
                    100.0 * gbps / limits.read_gbps()
                )
            }
            _ => String::new(),
        };
        println!("  {name:<32} x{count:<4} {:>9.2} ms  {rate}", s * 1e3);
    }
    let step = {
        let mut best = f64::INFINITY;
        for _ in 0..4 {
            let start = std::time::Instant::now();
            let mut enc = gpu.device.create_command_encoder(&Default::default());
            stage.encode(&mut enc);
            gpu.queue.submit([enc.finish()]);
            gpu.wait().expect("decode step");
            best = best.min(start.elapsed().as_secs_f64());
        }
        best
    };
    let bytes = block_weights + head_weights;
    println!(
        "  dispatches alone {:.1} ms; the step whole (one submit) {:.1} ms: {:.0} MB of weights at {:.2} GB/s, {:.0}% of the best read ({:.2} GB/s)",
        sum * 1e3,
        step * 1e3,
        bytes / 1e6,
        bytes / step / 1e9,
        100.0 * bytes / step / 1e9 / limits.read_gbps(),
        limits.read_gbps()
    );
}
