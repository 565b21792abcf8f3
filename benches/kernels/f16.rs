//! Every f16 kernel (`kernels::F16_SHADERS`) beside its f32 version on the
//! same shape: the matmuls in GFLOP/s against the best matmul, decoding's
//! GEMVs in weight GB/s against the best streaming read (f16 reads half the
//! bytes per weight), the rest in GB/s of the bytes they read and write.
//! Each row's f16 result is checked against its CPU twin (inputs rounded to
//! f16, rtol 2e-3) before it is timed. Needs an adapter with shader-f16.

use super::common::{self, Rng};
use super::limits::Limits;
use wgpipe::cpu;
use wgpipe::device::Dtype::{self, F16, F32};
use wgpipe::device::{download_as, upload_as, upload_pod, zeros_as, Gpu};
use wgpipe::kernels::{self, probe, Dispatch, Elems, MatmulVariant, PositionTable, WeightTexture};

const REPS: usize = 5;

fn round(dt: Dtype, x: &[f32]) -> Vec<f32> {
    dt.decode(&dt.encode(x), x.len())
}

/// What a row's figure measures.
enum Work {
    /// Floating-point operations: GFLOP/s against the best matmul.
    Flop(f64),
    /// Weight elements read once (decoding): GB/s against the best read.
    Weights(usize),
    /// Elements read and written: GB/s against the best read.
    Elements(usize),
}

/// One op on one shape, built for a storage type: its dispatch(es), the
/// buffer its result is in and the result's length and type, and the CPU
/// twin's result on the same (rounded) inputs.
struct Case {
    dispatches: Vec<Dispatch>,
    out: wgpu::Buffer,
    out_len: usize,
    out_dt: Dtype,
    want: Vec<f32>,
}

impl Case {
    /// One dispatch writing `out_len` elements of `out_dt` into `out`.
    fn one(d: Dispatch, out: wgpu::Buffer, out_len: usize, out_dt: Dtype, want: Vec<f32>) -> Case {
        Case {
            dispatches: vec![d],
            out,
            out_len,
            out_dt,
            want,
        }
    }
}

fn time(gpu: &Gpu, c: &Case) -> f64 {
    // Timed one dispatch at a time (each is a separate kernel run).
    c.dispatches
        .iter()
        .map(|d| probe::best_seconds(gpu, d, REPS).expect("timed"))
        .sum()
}

fn check(gpu: &Gpu, name: &str, c: &Case) {
    kernels::run(gpu, &c.dispatches.iter().collect::<Vec<_>>()).expect("run");
    let got = download_as(gpu, &c.out, c.out_len, c.out_dt).expect("download");
    let want = round(c.out_dt, &c.want);
    common::assert_close(name, &got, &want, 1e-4, 2e-3);
}

/// Print the table: every op at f32 and f16.
pub fn print(gpu: &Gpu, limits: &Limits) {
    if !gpu.shader_f16() {
        println!("\nf16 kernels: {} has no shader-f16; skipped", gpu.label);
        return;
    }
    println!(
        "\nf16 kernels beside f32 on {}: one dispatch at a time, host clock, best of {REPS}; \
         matmuls in GFLOP/s (of the best matmul, {:.1}), decoding's GEMVs in weight GB/s, \
         the rest in GB/s read + written (of the best read, {:.2} GB/s)",
        gpu.label,
        limits.matmul_gflops,
        limits.read_gbps()
    );
    println!(
        "{:<34} {:<22} {:>9} {:>9} {:>6} {:>9} {:>9} {:>6} {:>8}",
        "kernel",
        "shape",
        "f32 ms",
        "f32 rate",
        "of lim",
        "f16 ms",
        "f16 rate",
        "of lim",
        "f16/f32"
    );
    type Build<'a> = Box<dyn Fn(Dtype) -> (Case, Work) + 'a>;
    let mut ops: Vec<(String, String, Build)> = Vec::new();
    let mut rng = Rng::new(16);
    let mut data = |len: usize, scale: f32| rng.vec(len, scale);

    // The prefill/forward matmul (the device's aligned variant) and the LM head.
    for &(label, n, c, oc) in &[
        ("gpt2_qkv", 128, 768, 2304),
        ("gpt2_mlp_proj", 128, 3072, 768),
    ] {
        let (x, w, b) = (data(n * c, 1.0), data(c * oc, 0.05), data(oc, 0.5));
        ops.push((
            "matmul_forward (aligned variant)".into(),
            format!("{label} {n}x{c}x{oc}"),
            Box::new(move |dt| {
                let (x, w, b) = (round(dt, &x), round(dt, &w), round(dt, &b));
                let out = zeros_as(gpu, "out", n * oc, dt);
                let d = kernels::matmul_forward(
                    (gpu, dt),
                    &out,
                    &upload_as(gpu, "x", &x, dt),
                    &upload_as(gpu, "w", &w, dt),
                    &upload_as(gpu, "b", &b, dt),
                    n,
                    c,
                    oc,
                );
                let mut want = vec![0f32; n * oc];
                cpu::matmul_forward(&mut want, &x, &w, Some(&b), n, c, oc);
                let case = Case::one(d, out, n * oc, dt, want);
                (case, Work::Flop(2.0 * (n * c * oc) as f64))
            }),
        ));
    }
    // Decoding's GEMVs: one row, the weight in a buffer and in a texture.
    for &(label, c, oc) in &[("gpt2_fc", 768, 3072), ("gpt2_mlp_proj", 3072, 768)] {
        let (x, w, b) = (data(c, 1.0), data(c * oc, 0.05), data(oc, 0.5));
        for texture in [false, true] {
            let (x, w, b) = (x.clone(), w.clone(), b.clone());
            let kernel = match texture {
                true => "matmul_forward_rows4_texture",
                false => "matmul_forward_rows4",
            };
            ops.push((
                kernel.into(),
                format!("{label} 1x{c}x{oc}"),
                Box::new(move |dt| {
                    let (x, w, b) = (round(dt, &x), round(dt, &w), round(dt, &b));
                    let out = zeros_as(gpu, "out", oc, dt);
                    let (xb, wb, bb) = (
                        upload_as(gpu, "x", &x, dt),
                        upload_as(gpu, "w", &w, dt),
                        upload_as(gpu, "b", &b, dt),
                    );
                    let d = match texture {
                        true => {
                            let tex =
                                WeightTexture::from_buffer(gpu, &wb, c, oc, dt).expect("texture");
                            kernels::matmul_forward_texture(
                                (gpu, dt),
                                &out,
                                &xb,
                                &tex,
                                &bb,
                                1,
                                c,
                                oc,
                                oc,
                                0,
                            )
                        }
                        false => kernels::matmul_forward_with(
                            (gpu, dt),
                            MatmulVariant::Rows4,
                            &out,
                            &xb,
                            &wb,
                            &bb,
                            1,
                            c,
                            oc,
                        ),
                    }
                    .expect("gemv");
                    let mut want = vec![0f32; oc];
                    cpu::matmul_forward(&mut want, &x, &w, Some(&b), 1, c, oc);
                    let case = Case::one(d, out, oc, dt, want);
                    (case, Work::Weights(c * oc))
                }),
            ));
        }
    }
    // Attention over a prompt (the subgroup kernel at HD 64 where there is
    // one), and decoding's attention over a 512-position cache.
    {
        let (b, t, nh, hd) = (1, 128, 12, 64);
        let qkv = data(b * t * 3 * nh * hd, 1.0);
        ops.push((
            "attention_forward".into(),
            format!("T={t} NH={nh} HD={hd}"),
            Box::new(move |dt| {
                let q = round(dt, &qkv);
                let out = zeros_as(gpu, "out", b * t * nh * hd, dt);
                let d = kernels::attention_forward(
                    (gpu, dt),
                    &out,
                    &upload_as(gpu, "qkv", &q, dt),
                    b,
                    t,
                    nh,
                    nh,
                    hd,
                    0,
                );
                let mut want = vec![0f32; b * t * nh * hd];
                cpu::attention_forward(&mut want, &q, b, t, nh, nh, hd, 0);
                // Causal: about T²/2 scores and weighted sums per head.
                let flop = 2.0 * 2.0 * (b * nh * hd) as f64 * (t * (t + 1) / 2) as f64;
                let case = Case::one(d, out, b * t * nh * hd, dt, want);
                (case, Work::Flop(flop))
            }),
        ));
        // 256 positions: lavapipe stops a loop after 65535 iterations in one
        // invocation, which attention_decode's position × head-dim loops
        // reach past ~500 positions at HD 64 (README, "Half precision").
        let (n_pos, pos) = (256, 255u32);
        let (q, kc, vc) = (
            data(3 * nh * hd, 1.0),
            data(n_pos * nh * hd, 1.0),
            data(n_pos * nh * hd, 1.0),
        );
        ops.push((
            "attention_decode".into(),
            format!("1 row, {n_pos} positions, NH={nh}"),
            Box::new(move |dt| {
                let (q, kc, vc) = (round(dt, &q), round(dt, &kc), round(dt, &vc));
                let out = zeros_as(gpu, "out", nh * hd, dt);
                let rows = upload_pod(gpu, "rows", &[0u32, pos]);
                let d = kernels::attention_decode(
                    (gpu, dt),
                    &out,
                    &upload_as(gpu, "q", &q, dt),
                    &upload_as(gpu, "k", &kc, dt),
                    &upload_as(gpu, "v", &vc, dt),
                    &rows,
                    1,
                    nh,
                    nh,
                    hd,
                    n_pos,
                    0,
                );
                let mut want = vec![0f32; nh * hd];
                cpu::decode::attention_decode(
                    &mut want,
                    &q,
                    &kc,
                    &vc,
                    &[(0, pos)],
                    nh,
                    nh,
                    hd,
                    n_pos,
                    0,
                );
                let case = Case::one(d, out, nh * hd, dt, want);
                (case, Work::Elements(2 * n_pos * nh * hd))
            }),
        ));
    }
    // Norms, activations, the residual add, RoPE, the embedding and the hop
    // conversion, at GPT-2's width over 128 rows.
    let (n, c) = (128, 768);
    let (x, y, g, beta) = (
        data(n * c, 2.0),
        data(n * c, 2.0),
        data(c, 1.0),
        data(c, 0.3),
    );
    {
        let (x, g, beta) = (x.clone(), g.clone(), beta.clone());
        ops.push((
            "layernorm_forward".into(),
            format!("{n}x{c}"),
            Box::new(move |dt| {
                let (x, g, beta) = (round(dt, &x), round(dt, &g), round(dt, &beta));
                let out = zeros_as(gpu, "out", n * c, dt);
                let d = kernels::layernorm_forward(
                    (gpu, dt),
                    &out,
                    &upload_as(gpu, "x", &x, dt),
                    &upload_as(gpu, "g", &g, dt),
                    &upload_as(gpu, "b", &beta, dt),
                    n,
                    c,
                    1e-5,
                );
                let mut want = vec![0f32; n * c];
                cpu::layernorm_forward(&mut want, &x, &g, &beta, n, c, 1e-5);
                (
                    Case::one(d, out, n * c, dt, want),
                    Work::Elements(2 * n * c),
                )
            }),
        ));
    }
    {
        let (x, g) = (x.clone(), g.clone());
        ops.push((
            "rmsnorm_forward".into(),
            format!("{n}x{c}"),
            Box::new(move |dt| {
                let (x, g) = (round(dt, &x), round(dt, &g));
                let out = zeros_as(gpu, "out", n * c, dt);
                let d = kernels::rmsnorm_forward(
                    (gpu, dt),
                    &out,
                    &upload_as(gpu, "x", &x, dt),
                    &upload_as(gpu, "g", &g, dt),
                    n,
                    c,
                    1e-5,
                );
                let mut want = vec![0f32; n * c];
                cpu::llama::rmsnorm_forward(&mut want, &x, &g, n, c, 1e-5);
                (
                    Case::one(d, out, n * c, dt, want),
                    Work::Elements(2 * n * c),
                )
            }),
        ));
    }
    {
        let x = x.clone();
        ops.push((
            "gelu_forward".into(),
            format!("{n}x{}", 4 * c),
            Box::new(move |dt| {
                let x: Vec<f32> = round(dt, &x.repeat(4));
                let out = zeros_as(gpu, "out", x.len(), dt);
                let d =
                    kernels::gelu_forward((gpu, dt), &out, &upload_as(gpu, "x", &x, dt), x.len());
                let mut want = vec![0f32; x.len()];
                cpu::gelu_forward(&mut want, &x);
                (
                    Case::one(d, out, x.len(), dt, want),
                    Work::Elements(2 * x.len()),
                )
            }),
        ));
    }
    {
        let (x, y) = (x.clone(), y.clone());
        ops.push((
            "residual_forward".into(),
            format!("{n}x{c}"),
            Box::new(move |dt| {
                let (x, y) = (round(dt, &x), round(dt, &y));
                let out = zeros_as(gpu, "out", n * c, dt);
                let d = kernels::residual_forward(
                    (gpu, dt),
                    &out,
                    &upload_as(gpu, "a", &x, dt),
                    &upload_as(gpu, "b", &y, dt),
                    n * c,
                );
                let mut want = vec![0f32; n * c];
                cpu::residual_forward(&mut want, &x, &y);
                (
                    Case::one(d, out, n * c, dt, want),
                    Work::Elements(3 * n * c),
                )
            }),
        ));
    }
    {
        let gu = data(n * 2 * c, 2.0);
        ops.push((
            "swiglu_forward".into(),
            format!("{n}x2x{c}"),
            Box::new(move |dt| {
                let gu = round(dt, &gu);
                let out = zeros_as(gpu, "out", n * c, dt);
                let d =
                    kernels::swiglu_forward((gpu, dt), &out, &upload_as(gpu, "gu", &gu, dt), n, c);
                let mut want = vec![0f32; n * c];
                cpu::llama::swiglu_forward(&mut want, &gu, n, c);
                (
                    Case::one(d, out, n * c, dt, want),
                    Work::Elements(3 * n * c),
                )
            }),
        ));
    }
    {
        let (nh, hd) = (12, 64);
        let qkv = data(n * 3 * nh * hd, 1.0);
        ops.push((
            "rope_forward".into(),
            format!("{n} rows NH={nh} HD={hd}"),
            Box::new(move |dt| {
                let q = round(dt, &qkv);
                let inv: Vec<f32> = (0..hd / 2)
                    .map(|i| 10000f32.powf(-2.0 * i as f32 / hd as f32))
                    .collect();
                let buf = upload_as(gpu, "qkv", &q, dt);
                let table: Vec<u32> = (0..n as u32).collect();
                let d = kernels::rope_forward(
                    (gpu, dt),
                    &buf,
                    &upload_pod(gpu, "pos", &table),
                    &upload_as(gpu, "inv", &inv, F32),
                    n,
                    nh,
                    nh,
                    hd,
                    PositionTable::sequences(n, 0),
                );
                let mut want = q.clone();
                cpu::llama::rope_forward(&mut want, &table, &inv, n, nh, nh, hd);
                // Timed in place: each run rotates the last one's result.
                (
                    Case::one(d, buf, q.len(), dt, want),
                    Work::Elements(4 * n * nh * hd),
                )
            }),
        ));
    }
    {
        let (v, wte, wpe) = (1024, data(1024 * c, 1.0), data(n * c, 0.5));
        let ids: Vec<u32> = (0..n as u32).map(|i| (i * 37) % 1024).collect();
        ops.push((
            "embedding_forward".into(),
            format!("{n} tokens C={c} V={v}"),
            Box::new(move |dt| {
                let (wte, wpe) = (round(dt, &wte), round(dt, &wpe));
                let wte_t: Vec<f32> = (0..c * v).map(|i| wte[(i % v) * c + i / v]).collect();
                let out = zeros_as(gpu, "out", n * c, dt);
                let wpe_b = upload_as(gpu, "wpe", &wpe, dt);
                let d = kernels::embedding_forward(
                    (gpu, dt),
                    &out,
                    &upload_pod(gpu, "ids", &ids),
                    &upload_as(gpu, "wte_t", &wte_t, dt),
                    Some(&wpe_b),
                    n,
                    n,
                    c,
                    0,
                    v,
                    0,
                );
                let mut want = vec![0f32; n * c];
                cpu::embedding_forward(&mut want, &ids, &wte, Some(&wpe), 1, n, c, 0);
                (
                    Case::one(d, out, n * c, dt, want),
                    Work::Elements(3 * n * c),
                )
            }),
        ));
    }
    {
        let x = x.clone();
        ops.push((
            "convert (a hop, f16 <-> f32)".into(),
            format!("{n}x{c}"),
            Box::new(move |dt| {
                // At f32: a plain f32 copy through the same kernel; at f16:
                // the f16 device's side of a hop to an f32 one.
                let x = round(dt, &x);
                let out = zeros_as(gpu, "out", n * c, F32);
                let d = kernels::convert(
                    (gpu, Elems { st: dt, ot: F32 }),
                    &out,
                    &upload_as(gpu, "x", &x, dt),
                    n * c,
                );
                (Case::one(d, out, n * c, F32, x), Work::Elements(2 * n * c))
            }),
        ));
    }

    for (kernel, shape, build) in &ops {
        let mut cells = Vec::new();
        for dt in [F32, F16] {
            let (case, work) = build(dt);
            check(gpu, &format!("{kernel} {shape} {dt}"), &case);
            let s = time(gpu, &case);
            let (rate, limit) = match work {
                Work::Flop(f) => (f / s / 1e9, limits.matmul_gflops),
                Work::Weights(e) | Work::Elements(e) => {
                    ((e * dt.size()) as f64 / s / 1e9, limits.read_gbps())
                }
            };
            cells.push((s, rate, limit));
        }
        let (f, h) = (cells[0], cells[1]);
        println!(
            "{:<34} {:<22} {:>9.3} {:>9.2} {:>5.0}% {:>9.3} {:>9.2} {:>5.0}% {:>7.2}x",
            kernel,
            shape,
            f.0 * 1e3,
            f.1,
            100.0 * f.1 / f.2,
            h.0 * 1e3,
            h.1,
            100.0 * h.1 / h.2,
            f.0 / h.0
        );
    }
}
