//! Every WGSL kernel on the real adapter (lavapipe here; see
//! `common::gpu` and `WGPIPE_TEST_ADAPTER`) against its CPU twin in
//! `wgpipe::cpu`, at several shapes, odd ones included.
//!
//! Tolerances, `|gpu - ref| <= atol + rtol*|ref|`:
//! - exact (0, 0) where both sides do the same single rounding: residual
//!   (one add), embedding (one add of the same two floats);
//! - matmul: summation order differs (GPU: 4 K-terms per step, FMA allowed),
//!   so errors grow like sqrt(C) * eps * |partial sums|. Weights are scaled by
//!   1/sqrt(C) (as in a real init) so outputs are O(1); then (1e-5, 1e-4)
//!   holds with room to spare up to C = 256;
//! - layernorm: same two-pass algorithm, but the GPU's sqrt/divide may differ
//!   by a few ulp; outputs are O(1): (1e-5, 1e-4);
//! - attention: online softmax (running max, rescaled accumulator) vs the
//!   CPU's two-pass softmax, plus Vulkan's exp precision (3 + 2|x| ulp);
//!   outputs are averages of O(1) values: (2e-5, 1e-4);
//! - gelu: the GPU writes tanh out with exp (Vulkan precision, see above);
//!   for x << 0 the result is a cancellation 1 + tanh(u) near 0 on both
//!   sides, so only an absolute bound is meaningful there: (1e-5, 1e-4).

mod common;

use common::{assert_close, Rng};
use wgpipe::cpu;
use wgpipe::device::{download, upload, upload_pod, zeros, Dtype, Gpu};
use wgpipe::kernels::{self, Dispatch, EmbeddingParams, Kernels, MatmulVariant};

/// Encode `dispatches` in one pass, submit, wait; any device error fails the test.
fn run(gpu: &Gpu, dispatches: &[&Dispatch]) {
    let names: Vec<_> = dispatches.iter().map(|d| d.name).collect();
    kernels::run(gpu, dispatches).unwrap_or_else(|e| panic!("{names:?} on {}: {e}", gpu.label));
}

fn read(gpu: &Gpu, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    download(gpu, buf, len).unwrap_or_else(|e| panic!("download on {}: {e}", gpu.label))
}

// ---------------------------------------------------------------------------
// matmul

/// (inp (N, C), weight (C, OC), bias (OC)) with O(1) outputs.
fn matmul_data(seed: u64, n: usize, c: usize, oc: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let inp = rng.vec(n * c, 1.0);
    let weight = rng.vec(c * oc, 1.0 / (c as f32).sqrt());
    let bias = rng.vec(oc, 0.5);
    (inp, weight, bias)
}

/// The kernel the host must pick for an aligned shape on `gpu`.
fn aligned_kernel(gpu: &Gpu) -> &'static str {
    let want = if gpu.supports_subgroup8() {
        MatmulVariant::Subgroup8
    } else {
        MatmulVariant::Vec4
    };
    assert_eq!(Kernels::of(gpu).aligned_matmul(), want);
    want.shader()
}

/// (N, C, OC, aligned: C and OC multiples of 4)
const MATMUL_SHAPES: [(usize, usize, usize, bool); 11] = [
    (1, 1, 1, false),
    (3, 5, 7, false),
    (7, 20, 50, false),  // C aligned, OC not
    (9, 13, 12, false),  // OC aligned, C not
    (70, 33, 67, false), // several workgroups, ragged edges
    (1, 4, 4, true),
    (5, 8, 4, true), // N not a multiple of 4
    (33, 36, 108, true),
    (65, 64, 256, true),
    (130, 256, 36, true),
    (97, 516, 260, true), // several column workgroups, ragged rows and columns
];

/// Run one matmul dispatch built by `build` and compare with the CPU.
fn check_matmul(
    gpu: &Gpu,
    seed: u64,
    (n, c, oc): (usize, usize, usize),
    want_kernel: &str,
    build: impl FnOnce(&wgpu::Buffer, [&wgpu::Buffer; 3]) -> Dispatch,
) {
    let (inp, weight, bias) = matmul_data(seed, n, c, oc);
    let mut want = vec![0f32; n * oc];
    cpu::matmul_forward(&mut want, &inp, &weight, Some(&bias), n, c, oc);

    let out = zeros(gpu, "out", n * oc);
    let (inp_b, w_b, b_b) = (
        upload(gpu, "inp", &inp),
        upload(gpu, "w", &weight),
        upload(gpu, "b", &bias),
    );
    let d = build(&out, [&inp_b, &w_b, &b_b]);
    assert_eq!(d.name, want_kernel, "kernel chosen for N={n} C={c} OC={oc}");
    run(gpu, &[&d]);
    let got = read(gpu, &out, n * oc);
    assert_close(
        &format!("matmul_forward ({want_kernel}) N={n} C={c} OC={oc}"),
        &got,
        &want,
        1e-5,
        1e-4,
    );
}

#[test]
fn matmul_forward_matches_cpu() {
    // The variant the host picks: on a device with 8-wide subgroups
    // (lavapipe) the aligned shapes run the subgroup kernel, except at
    // decoding's few rows.
    let gpu = common::gpu();
    for (i, &(n, c, oc, aligned)) in MATMUL_SHAPES.iter().enumerate() {
        let kernel = match aligned {
            true if n <= MatmulVariant::FEW_ROWS => "matmul_forward_rows4",
            true => aligned_kernel(&gpu),
            false => "matmul_forward",
        };
        check_matmul(&gpu, i as u64, (n, c, oc), kernel, |out, [inp, w, b]| {
            kernels::matmul_forward(&gpu, out, inp, w, b, n, c, oc)
        });
    }
}

#[test]
fn every_matmul_variant_the_device_runs_matches_cpu() {
    // Each variant requested explicitly, on every shape it accepts: the
    // general kernel on aligned shapes too, and the vec4 kernel on a device
    // whose automatic choice is the subgroup one.
    let gpu = common::gpu();
    let variants = Kernels::of(&gpu).matmul_variants();
    assert!(
        variants.contains(&MatmulVariant::General) && variants.contains(&MatmulVariant::Vec4),
        "every device runs the general and vec4 kernels, {} has {variants:?}",
        gpu.label
    );
    assert_eq!(
        variants.contains(&MatmulVariant::Subgroup8),
        gpu.supports_subgroup8()
    );
    for v in variants {
        for (i, &(n, c, oc, aligned)) in MATMUL_SHAPES.iter().enumerate() {
            if v.needs_aligned() && !aligned {
                continue;
            }
            check_matmul(
                &gpu,
                i as u64,
                (n, c, oc),
                v.shader(),
                |out, [inp, w, b]| {
                    kernels::matmul_forward_with(&gpu, v, out, inp, w, b, n, c, oc)
                        .unwrap_or_else(|e| panic!("{v} N={n} C={c} OC={oc}: {e}"))
                },
            );
        }
    }
}

#[test]
fn an_unsupported_matmul_variant_is_an_error_not_a_panic() {
    let gpu = common::gpu();
    let kernels = Kernels::of(&gpu);
    let (out, a) = (zeros(&gpu, "out", 64), zeros(&gpu, "a", 64));
    // A misaligned shape for the kernels that need multiples of 4.
    for v in [MatmulVariant::Vec4, MatmulVariant::Subgroup8] {
        let err = kernels::matmul_forward_with(&gpu, v, &out, &a, &a, &a, 2, 5, 3)
            .err()
            .unwrap_or_else(|| panic!("{v} accepted C=5 OC=3"));
        let msg = err.to_string();
        assert!(msg.contains(v.shader()), "{msg}");
    }
    // A variant the device lacks (e.g. Subgroup8 on GL's llvmpipe).
    for v in MatmulVariant::ALL {
        let r = kernels::matmul_forward_with(&gpu, v, &out, &a, &a, &a, 4, 4, 4);
        if kernels.supports(v) {
            assert!(r.is_ok(), "{v} on {}: {:?}", gpu.label, r.err());
        } else {
            let msg = r.err().expect("unsupported variant accepted").to_string();
            assert!(
                msg.contains(v.shader()) && msg.contains(&gpu.label),
                "{msg}"
            );
        }
    }
    // Compiled once per device: the same kernels every time.
    assert!(std::sync::Arc::ptr_eq(&kernels, &Kernels::of(&gpu)));
}

#[test]
fn texture_matmul_matches_the_buffer_kernel_bitwise_at_every_shape_class() {
    // Decoding's few-row matmul with the weight in a texture: 1 to 4 rows,
    // OC/4 below and past a workgroup's 64 columns, rows of texels cut into
    // blocks (a last block partly filled) as on an adapter whose
    // max_texture_dimension_2d is narrower than OC/4, and a column slice of
    // a wider output (the LM head's chunks). Same arithmetic in the same
    // order as matmul_forward_rows4: bitwise equal, and close to the CPU.
    common::for_each_adapter(|gpu| {
        // (N, C, OC, ldo, col_off, texels per texture row)
        for (i, &(n, c, oc, ldo, off, tw)) in [
            (1, 4, 4, 4, 0, 1),
            (1, 768, 2304, 2304, 0, 576),
            (2, 36, 100, 100, 0, 25),
            (3, 36, 100, 100, 0, 8),
            (4, 64, 260, 300, 40, 65),
            (4, 256, 516, 516, 0, 7),
        ]
        .iter()
        .enumerate()
        {
            let shape = format!("N={n} C={c} OC={oc} ldo={ldo} col_off={off} tw={tw}");
            let (inp, weight, bias) = matmul_data(100 + i as u64, n, c, oc);
            let (inp_b, w_b, b_b) = (
                upload(gpu, "inp", &inp),
                upload(gpu, "w", &weight),
                upload(gpu, "b", &bias),
            );
            let tex = kernels::WeightTexture::from_buffer_tiled(gpu, &w_b, c, oc, tw, Dtype::F32)
                .unwrap_or_else(|e| panic!("{shape}: {e}"));
            let (o_tex, o_buf) = (zeros(gpu, "out", n * ldo), zeros(gpu, "out", n * ldo));
            let d = kernels::matmul_forward_texture(
                gpu, &o_tex, &inp_b, &tex, &b_b, n, c, oc, ldo, off,
            )
            .unwrap_or_else(|e| panic!("{shape}: {e}"));
            assert_eq!(d.name, "matmul_forward_rows4_texture");
            let r = kernels::matmul_forward_strided(
                gpu, &o_buf, &inp_b, &w_b, &b_b, n, c, oc, ldo, off,
            );
            assert_eq!(
                r.name, "matmul_forward_rows4",
                "unregistered weights stay in buffers"
            );
            run(gpu, &[&d, &r]);
            let (got, buf) = (read(gpu, &o_tex, n * ldo), read(gpu, &o_buf, n * ldo));
            assert!(
                got.iter()
                    .zip(&buf)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{shape}: texture and buffer kernels differ"
            );
            let mut want = vec![0f32; n * oc];
            cpu::matmul_forward(&mut want, &inp, &weight, Some(&bias), n, c, oc);
            let cols: Vec<f32> = (0..n)
                .flat_map(|r| got[r * ldo + off..][..oc].to_vec())
                .collect();
            assert_close(&format!("texture matmul {shape}"), &cols, &want, 1e-5, 1e-4);
        }
        // Shapes it refuses, by name.
        let w = zeros(gpu, "w", 16);
        let tex = kernels::WeightTexture::from_buffer(gpu, &w, 4, 4, Dtype::F32).unwrap();
        let b = zeros(gpu, "b", 64);
        for (n, c, oc) in [(5, 4, 4), (1, 8, 4), (1, 4, 6)] {
            let err = kernels::matmul_forward_texture(gpu, &b, &b, &tex, &b, n, c, oc, oc, 0)
                .map(|_| ())
                .unwrap_err();
            assert!(
                err.to_string().contains("matmul_forward_rows4_texture"),
                "{err}"
            );
        }
        let too_tall = gpu.limits.max_texture_dimension_2d as usize + 1;
        let big = zeros(gpu, "w", 4 * too_tall);
        let err = kernels::WeightTexture::from_buffer(gpu, &big, too_tall, 4, Dtype::F32)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
    });
}

#[test]
fn registered_weights_are_read_from_textures_where_the_adapter_chose_them() {
    // A stage's registered weights: a few-row matmul runs the texture kernel
    // exactly when the adapter's measured choice is textures; more rows, or
    // a buffer nobody registered, always read the buffer.
    common::for_each_adapter(|gpu| {
        let choice = kernels::decode_weights(gpu);
        println!("{}: {choice:?}", gpu.label);
        assert!(choice.buffer_gbps > 0.0, "{choice:?}");
        let (n, c, oc) = (2, 64, 128);
        let (inp, weight, bias) = matmul_data(7, n, c, oc);
        let (inp_b, w_b, b_b) = (
            upload(gpu, "inp", &inp),
            upload(gpu, "w", &weight),
            upload(gpu, "b", &bias),
        );
        let registered = kernels::WeightTextures::register(gpu, [&w_b], Dtype::F32);
        let out = zeros(gpu, "out", 40 * oc);
        let d = kernels::matmul_forward(gpu, &out, &inp_b, &w_b, &b_b, n, c, oc);
        let want = match choice.storage {
            kernels::WeightStorage::Texture => "matmul_forward_rows4_texture",
            kernels::WeightStorage::Buffer => "matmul_forward_rows4",
        };
        assert_eq!(d.name, want);
        assert_eq!(
            registered.bytes() > 0,
            choice.storage == kernels::WeightStorage::Texture
        );
        run(gpu, &[&d]);
        let mut expect = vec![0f32; n * oc];
        cpu::matmul_forward(&mut expect, &inp, &weight, Some(&bias), n, c, oc);
        assert_close(
            "registered matmul",
            &read(gpu, &out, n * oc),
            &expect,
            1e-5,
            1e-4,
        );
        let many = kernels::matmul_forward(gpu, &out, &inp_b, &w_b, &b_b, 40, c, oc);
        assert_ne!(many.name, "matmul_forward_rows4_texture");
        drop(registered);
        let after = kernels::matmul_forward(gpu, &out, &inp_b, &w_b, &b_b, n, c, oc);
        assert_eq!(
            after.name, "matmul_forward_rows4",
            "the textures went with their holder"
        );
    });
}

/// Two column blocks of a wider output, like the LM head's vocabulary chunks:
/// each block matches the CPU, the gap and the margins stay exactly zero.
#[test]
fn matmul_forward_strided_writes_only_its_columns() {
    let gpu = common::gpu();
    // (N, C, [(OC, col_off) per block], ldo, kernel)
    type Case = (usize, usize, [(usize, usize); 2], usize, &'static str);
    let cases: [Case; 3] = [
        (13, 24, [(8, 4), (12, 16)], 32, aligned_kernel(&gpu)),
        (11, 9, [(5, 3), (7, 10)], 19, "matmul_forward"),
        // A decode step's head: few rows.
        (3, 24, [(8, 4), (12, 16)], 32, "matmul_forward_rows4"),
    ];
    for (ci, &(n, c, blocks, ldo, kernel)) in cases.iter().enumerate() {
        let out = zeros(&gpu, "out", n * ldo);
        let inp = Rng::new(100 + ci as u64).vec(n * c, 1.0);
        let inp_b = upload(&gpu, "inp", &inp);
        let mut want = vec![0f32; n * ldo]; // (N, ldo): zero outside the blocks
        let mut keep = Vec::new(); // buffers must outlive the run
        let mut ds = Vec::new();
        for (bi, &(oc, col_off)) in blocks.iter().enumerate() {
            let (_, weight, bias) = matmul_data(200 + 10 * ci as u64 + bi as u64, n, c, oc);
            let mut block = vec![0f32; n * oc];
            cpu::matmul_forward(&mut block, &inp, &weight, Some(&bias), n, c, oc);
            for r in 0..n {
                want[r * ldo + col_off..][..oc].copy_from_slice(&block[r * oc..][..oc]);
            }
            let (w_b, b_b) = (upload(&gpu, "w", &weight), upload(&gpu, "b", &bias));
            let d = kernels::matmul_forward_strided(
                &gpu, &out, &inp_b, &w_b, &b_b, n, c, oc, ldo, col_off,
            );
            assert_eq!(d.name, kernel, "kernel chosen for case {ci}");
            ds.push(d);
            keep.push((w_b, b_b));
        }
        run(&gpu, &ds.iter().collect::<Vec<_>>());
        let got = read(&gpu, &out, n * ldo);
        assert_close(
            &format!("matmul_forward_strided ({kernel}) case {ci}"),
            &got,
            &want,
            1e-5,
            1e-4,
        );
        for r in 0..n {
            for col in 0..ldo {
                if !blocks
                    .iter()
                    .any(|&(oc, off)| (off..off + oc).contains(&col))
                {
                    assert_eq!(
                        got[r * ldo + col],
                        0.0,
                        "{kernel} case {ci}: wrote untouched column {col} of row {r}"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// layernorm

#[test]
fn layernorm_forward_matches_cpu() {
    let gpu = common::gpu();
    let eps = 1e-5;
    for (i, &(n, c)) in [(1, 1), (1, 768), (37, 36), (5, 769), (130, 3)]
        .iter()
        .enumerate()
    {
        let mut rng = Rng::new(300 + i as u64);
        // An offset mean and a spread like a residual stream's.
        let inp: Vec<f32> = rng.vec(n * c, 2.0).iter().map(|x| x + 0.7).collect();
        let gamma: Vec<f32> = rng.vec(c, 0.5).iter().map(|g| g + 1.0).collect();
        let beta = rng.vec(c, 0.2);
        let mut want = vec![0f32; n * c];
        cpu::layernorm_forward(&mut want, &inp, &gamma, &beta, n, c, eps);

        let out = zeros(&gpu, "out", n * c);
        let bufs = [
            upload(&gpu, "inp", &inp),
            upload(&gpu, "g", &gamma),
            upload(&gpu, "b", &beta),
        ];
        let d = kernels::layernorm_forward(&gpu, &out, &bufs[0], &bufs[1], &bufs[2], n, c, eps);
        run(&gpu, &[&d]);
        let got = read(&gpu, &out, n * c);
        assert_close(
            &format!("layernorm_forward N={n} C={c}"),
            &got,
            &want,
            1e-5,
            1e-4,
        );
    }
}

// ---------------------------------------------------------------------------
// attention

/// (B, T, NH, NKV, HD, window) for the attention kernels: GPT-2's
/// multi-head shapes (NKV = NH, HD = C/NH, no window) with head dims 4, 12,
/// 5, 65 (two chunks of the kernel's 64-wide accumulator, the second 1
/// wide), 96 (64 + 32), 64 (exactly one); then grouped-query (NKV = NH/2),
/// multi-query (NKV = 1), head dims that are not powers of two, and
/// sliding windows shorter than the sequence (1 = each query alone); the
/// last four have head dim 64, which lavapipe runs on version 2 (8-wide
/// subgroups, 8 queries a subgroup): T a multiple of 8 and not, grouped and
/// multi-query, a window that starts inside a block of 8 queries.
// The last two: GPT-2's whole context at HD 64 (the general kernel on GL),
// and HD 128 over 700 keys (the general kernel everywhere): past ~500 keys a
// one-dim-at-a-time head-dim loop ran into llvmpipe's 65,535 loop
// iterations per invocation.
const ATTENTION_SHAPES: [(usize, usize, usize, usize, usize, usize); 18] = [
    (1, 1, 1, 1, 4, 0),
    (2, 11, 3, 3, 12, 0),
    (3, 17, 4, 4, 5, 0),
    (1, 40, 2, 2, 65, 0),
    (2, 64, 1, 1, 96, 0),
    (1, 33, 2, 2, 64, 0),
    (2, 13, 4, 2, 10, 0),
    (1, 37, 6, 1, 12, 0),
    (3, 17, 4, 2, 12, 5),
    (1, 40, 2, 1, 65, 16),
    (2, 9, 8, 4, 6, 1),
    (1, 70, 3, 1, 14, 7),
    (2, 32, 4, 4, 64, 0),
    (2, 13, 3, 3, 64, 0),
    (1, 21, 4, 2, 64, 6),
    (2, 19, 2, 1, 64, 0),
    (1, 1024, 1, 1, 64, 0),
    (1, 700, 1, 1, 128, 0),
];

#[test]
fn attention_forward_matches_cpu() {
    common::for_each_adapter(|gpu| {
        for (i, &(b, t, nh, nkv, hd, window)) in ATTENTION_SHAPES.iter().enumerate() {
            // Scale 2: scores up to ~|4 hd / sqrt(hd)|, so the softmax is
            // peaked in places and the running max really moves.
            let qkv = Rng::new(400 + i as u64).vec(b * t * (nh + 2 * nkv) * hd, 2.0);
            let mut want = vec![0f32; b * t * nh * hd];
            cpu::attention_forward(&mut want, &qkv, b, t, nh, nkv, hd, window);

            let out = zeros(gpu, "out", b * t * nh * hd);
            let qkv_b = upload(gpu, "qkv", &qkv);
            let d = kernels::attention_forward(gpu, &out, &qkv_b, b, t, nh, nkv, hd, window);
            run(gpu, &[&d]);
            let got = read(gpu, &out, b * t * nh * hd);
            assert_close(
                &format!(
                    "attention_forward on {}: B={b} T={t} NH={nh} NKV={nkv} HD={hd} window={window}",
                    gpu.label
                ),
                &got,
                &want,
                2e-5,
                1e-4,
            );
        }
    });
}

// ---------------------------------------------------------------------------
// elementwise

/// 64 * 65535 + 100 elements: more workgroups than one grid row holds, so the
/// kernel's `gid.y * stride + gid.x` index is exercised.
const TWO_ROW_GRID: usize = 64 * 65535 + 100;

#[test]
fn gelu_forward_matches_cpu() {
    let gpu = common::gpu();
    let special = [
        0.0, -0.0, 1e-3, -1e-3, 1.0, -1.0, 3.0, -3.0, 5.0, -5.0, 10.0, -10.0, 20.0, -20.0, 100.0,
        -100.0, 1e4, -1e4, 1e20, -1e20,
    ];
    for (i, &len) in [1usize, 63, 1001, TWO_ROW_GRID].iter().enumerate() {
        let mut inp = Rng::new(500 + i as u64).vec(len, 6.0);
        let k = special.len().min(len);
        inp[..k].copy_from_slice(&special[..k]);
        let mut want = vec![0f32; len];
        cpu::gelu_forward(&mut want, &inp);

        let out = zeros(&gpu, "out", len);
        let inp_b = upload(&gpu, "inp", &inp);
        let d = kernels::gelu_forward(&gpu, &out, &inp_b, len);
        run(&gpu, &[&d]);
        let got = read(&gpu, &out, len);
        if let Some(j) = got.iter().position(|g| !g.is_finite()) {
            panic!(
                "gelu_forward len={len}: gelu({:e}) = {:e} on the GPU",
                inp[j], got[j]
            );
        }
        assert_close(&format!("gelu_forward len={len}"), &got, &want, 1e-5, 1e-4);
    }
}

#[test]
fn residual_forward_matches_cpu() {
    let gpu = common::gpu();
    for (i, &len) in [1usize, 7, 65, 4099, TWO_ROW_GRID].iter().enumerate() {
        let mut rng = Rng::new(600 + i as u64);
        let (a, b) = (rng.vec(len, 3.0), rng.vec(len, 3.0));
        let mut want = vec![0f32; len];
        cpu::residual_forward(&mut want, &a, &b);

        let out = zeros(&gpu, "out", len);
        let (a_b, b_b) = (upload(&gpu, "a", &a), upload(&gpu, "b", &b));
        let d = kernels::residual_forward(&gpu, &out, &a_b, &b_b, len);
        run(&gpu, &[&d]);
        let got = read(&gpu, &out, len);
        // One correctly rounded add on both sides: exact.
        assert_close(
            &format!("residual_forward len={len}"),
            &got,
            &want,
            0.0,
            0.0,
        );
    }
}

// ---------------------------------------------------------------------------
// embedding

/// Columns v0 .. v0+vlen of wte (V, C), transposed: (C, vlen).
fn transpose_chunk(wte: &[f32], c: usize, v0: usize, vlen: usize) -> Vec<f32> {
    let mut t = vec![0f32; c * vlen];
    for ch in 0..c {
        for v in 0..vlen {
            t[ch * vlen + v] = wte[(v0 + v) * c + ch];
        }
    }
    t
}

/// With a position table (GPT-2) and without one (Llama: `wpe` `None`,
/// the kernel reads none), on every adapter.
#[test]
fn embedding_forward_matches_cpu_over_two_vocab_chunks() {
    common::for_each_adapter(|gpu| {
        // (B, T, C, V, maxT, split): chunks [0, split) and [split, V).
        for (i, &(b, t, c, v, max_t, split)) in [
            (2, 5, 13, 37, 7, 20),
            (1, 1, 1, 2, 1, 1),
            (3, 9, 48, 101, 9, 64),
        ]
        .iter()
        .enumerate()
        {
            let mut rng = Rng::new(700 + i as u64);
            let wte = rng.vec(v * c, 1.0); // (V, C)
            let wpe = rng.vec(max_t * c, 0.1); // (maxT, C)
            let mut ids: Vec<u32> = (0..b * t).map(|_| rng.below(v as u32)).collect();
            // The edges of both chunks.
            for (slot, id) in [0, split - 1, split, v - 1].into_iter().enumerate() {
                if slot < ids.len() {
                    ids[slot] = id as u32;
                }
            }
            let ids_b = upload_pod(gpu, "ids", &ids);
            let wpe_b = upload(gpu, "wpe", &wpe);
            let chunks = [
                (
                    0,
                    split,
                    upload(gpu, "wte_t[0]", &transpose_chunk(&wte, c, 0, split)),
                ),
                (
                    split,
                    v - split,
                    upload(gpu, "wte_t[1]", &transpose_chunk(&wte, c, split, v - split)),
                ),
            ];
            for with_wpe in [true, false] {
                let mut want = vec![0f32; b * t * c];
                let wpe_host = with_wpe.then_some(&wpe[..]);
                cpu::embedding_forward(&mut want, &ids, &wte, wpe_host, b, t, c, 0);

                let out = zeros(gpu, "out", b * t * c);
                let ds: Vec<Dispatch> = chunks
                    .iter()
                    .map(|(v0, vlen, chunk)| {
                        let wpe = with_wpe.then_some(&wpe_b);
                        kernels::embedding_forward(
                            gpu,
                            &out,
                            &ids_b,
                            chunk,
                            wpe,
                            b * t,
                            t,
                            c,
                            *v0,
                            *vlen,
                            0,
                        )
                    })
                    .collect();
                run(gpu, &ds.iter().collect::<Vec<_>>());
                let got = read(gpu, &out, b * t * c);
                // One add of the same two floats on both sides (or a copy): exact.
                assert_close(
                    &format!(
                        "embedding_forward on {}: B={b} T={t} C={c} V={v} split={split} wpe={with_wpe}",
                        gpu.label
                    ),
                    &got,
                    &want,
                    0.0,
                    0.0,
                );
            }
        }
    });
}

/// One built embedding dispatch run at position offset 0, then k, then 0
/// again: only its parameters are rewritten, nothing is rebuilt, and each run
/// equals the CPU reference at that offset exactly.
#[test]
fn embedding_position_offset_changes_per_call_without_rebuilding() {
    let gpu = common::gpu();
    let (b, t, c, v, max_t) = (2, 3, 10, 17, 8);
    let mut rng = Rng::new(800);
    let wte = rng.vec(v * c, 1.0); // (V, C)
    let wpe = rng.vec(max_t * c, 0.1); // (maxT, C)
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(v as u32)).collect();

    let out = zeros(&gpu, "out", b * t * c);
    let ids_b = upload_pod(&gpu, "ids", &ids);
    let wpe_b = upload(&gpu, "wpe", &wpe);
    let wte_b = upload(&gpu, "wte_t", &transpose_chunk(&wte, c, 0, v));
    let d = kernels::embedding_forward(
        &gpu,
        &out,
        &ids_b,
        &wte_b,
        Some(&wpe_b),
        b * t,
        t,
        c,
        0,
        v,
        0,
    );
    for offset in [0, max_t - t, 2, 0] {
        d.update_params(&gpu.queue, |p: &mut EmbeddingParams| {
            p.pos_offset = offset as u32
        })
        .expect("embedding params");
        assert_eq!(
            d.params::<EmbeddingParams>().expect("params").pos_offset,
            offset as u32
        );
        run(&gpu, &[&d]);
        let got = read(&gpu, &out, b * t * c);
        let mut want = vec![0f32; b * t * c];
        cpu::embedding_forward(&mut want, &ids, &wte, Some(&wpe), b, t, c, offset);
        // The offset reference is the plain one over wpe's rows from `offset`.
        let mut shifted = vec![0f32; b * t * c];
        cpu::embedding_forward(
            &mut shifted,
            &ids,
            &wte,
            Some(&wpe[offset * c..]),
            b,
            t,
            c,
            0,
        );
        assert_eq!(want, shifted, "cpu::embedding_forward at offset {offset}");
        assert_close(
            &format!("embedding_forward at position offset {offset}"),
            &got,
            &want,
            0.0,
            0.0,
        );
    }
    // Parameters of another op's type are refused, naming both types.
    let err = d
        .set_params(&gpu.queue, &[0u32; 8])
        .expect_err("wrong parameter type accepted");
    assert!(err.to_string().contains("EmbeddingParams"), "{err}");
}
