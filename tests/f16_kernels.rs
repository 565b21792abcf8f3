//! Every f16 kernel (`kernels::F16_SHADERS`) against its CPU twin, on every
//! adapter with `shader-f16` (lavapipe here; GL's llvmpipe has none, and
//! asking it for f16 is refused by name).
//!
//! The inputs are rounded to f16 first (what the device holds), the CPU
//! twin computes in f32 on those values and its result is rounded to f16:
//! the kernels load f16, accumulate in f32 and store f16 once, so the two
//! differ only by the order of f32 sums rounded into one f16 — at most an
//! ulp or two of f16 (rtol 2e-3; an f16 ulp is 2^-10 ≈ 9.8e-4 relative).
//! The LM head's matmul (f16 in, f32 logits out) and the hop conversions
//! are checked at their own output types.

mod common;

use common::{assert_close, Rng};
use wgpipe::cpu;
use wgpipe::device::Dtype::{F16, F32};
use wgpipe::device::{download_as, upload_as, upload_pod, zeros_as, Dtype, Gpu};
use wgpipe::kernels::{self, Dispatch, Elems, MatmulVariant, PositionTable, WeightTexture};

/// Tolerances of an f16 output against the f16-rounded CPU result.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 2e-3;

/// `x` rounded to f16 (nearest), as f32.
fn f16(x: &[f32]) -> Vec<f32> {
    F16.decode(&F16.encode(x), x.len())
}

fn run(gpu: &Gpu, ds: &[&Dispatch]) {
    kernels::run(gpu, ds).unwrap_or_else(|e| panic!("{}: {e}", gpu.label));
}

/// Values of `len` drawn from `rng`, rounded to f16, and their f16 buffer.
fn input(gpu: &Gpu, rng: &mut Rng, len: usize, scale: f32) -> (Vec<f32>, wgpu::Buffer) {
    let x = f16(&rng.vec(len, scale));
    let b = upload_as(gpu, "input", &x, F16);
    (x, b)
}

fn read(gpu: &Gpu, b: &wgpu::Buffer, len: usize, dtype: Dtype) -> Vec<f32> {
    download_as(gpu, b, len, dtype).unwrap_or_else(|e| panic!("{}: {e}", gpu.label))
}

/// `body` on every adapter with shader-f16; the others must refuse f16 by
/// name. At least one adapter must have it (lavapipe does).
fn for_each_f16_adapter(mut body: impl FnMut(&Gpu)) {
    let mut ran = 0;
    common::for_each_adapter(|gpu| {
        if gpu.shader_f16() {
            body(gpu);
            ran += 1;
        } else {
            let err = gpu.check_dtype(F16).unwrap_err().to_string();
            assert!(
                err.contains(&gpu.label) && err.contains("shader-f16"),
                "{err}"
            );
        }
    });
    assert!(
        ran > 0,
        "no adapter with shader-f16: install Mesa's lavapipe (apt-get install -y mesa-vulkan-drivers)"
    );
}

#[test]
fn f16_matmuls_match_the_cpu_reference() {
    for_each_f16_adapter(|gpu| {
        let mut rng = Rng::new(1);
        let k = kernels::Kernels::of(gpu);
        for (n, c, oc) in [(3, 20, 12), (37, 64, 96), (4, 128, 64), (1, 64, 32)] {
            let (inp, inp_b) = input(gpu, &mut rng, n * c, 1.0);
            let (w, w_b) = input(gpu, &mut rng, c * oc, 0.2);
            let (bias, b_b) = input(gpu, &mut rng, oc, 0.5);
            let mut want = vec![0f32; n * oc];
            cpu::matmul_forward(&mut want, &inp, &w, Some(&bias), n, c, oc);
            let want = f16(&want);
            for v in k.matmul_variants() {
                if v.needs_aligned() && (c % 4 != 0 || oc % 4 != 0) {
                    continue;
                }
                if v == MatmulVariant::Rows4 && n > MatmulVariant::FEW_ROWS {
                    continue;
                }
                let out = zeros_as(gpu, "out", n * oc, F16);
                let d =
                    kernels::matmul_forward_with((gpu, F16), v, &out, &inp_b, &w_b, &b_b, n, c, oc)
                        .unwrap_or_else(|e| panic!("{v}: {e}"));
                run(gpu, &[&d]);
                let got = read(gpu, &out, n * oc, F16);
                assert_close(
                    &format!("f16 {v} N={n} C={c} OC={oc}"),
                    &got,
                    &want,
                    ATOL,
                    RTOL,
                );
            }
            if n <= MatmulVariant::FEW_ROWS && oc % 4 == 0 && c % 4 == 0 {
                // Decoding's texture GEMV: 8 halves packed in each rgba32uint
                // texel (OC = 12: the last texel of a row half empty), whole
                // rows and cut into blocks of 1 texel, into the columns
                // `off .. off + OC` of rows `ldo` long (the others untouched).
                for tw in [None, Some(1)] {
                    let tex = match tw {
                        None => WeightTexture::from_buffer(gpu, &w_b, c, oc, F16),
                        Some(tw) => WeightTexture::from_buffer_tiled(gpu, &w_b, c, oc, tw, F16),
                    }
                    .expect("texture");
                    let texels = c * oc.div_ceil(8);
                    assert_eq!(
                        tex.bytes(),
                        (texels * 16) as u64,
                        "16 bytes a texel of 8 halves"
                    );
                    let (ldo, off) = (oc + 8, 4);
                    let out = upload_as(gpu, "out", &vec![7.0; n * ldo], F16);
                    let d = kernels::matmul_forward_texture(
                        (gpu, F16),
                        &out,
                        &inp_b,
                        &tex,
                        &b_b,
                        n,
                        c,
                        oc,
                        ldo,
                        off,
                    )
                    .expect("texture matmul");
                    run(gpu, &[&d]);
                    let got = read(gpu, &out, n * ldo, F16);
                    let cols: Vec<f32> = (0..n)
                        .flat_map(|r| got[r * ldo + off..][..oc].to_vec())
                        .collect();
                    let shape = format!("N={n} C={c} OC={oc} tw={tw:?}");
                    assert_close(&format!("f16 texture {shape}"), &cols, &want, ATOL, RTOL);
                    let others = (0..n).flat_map(|r| {
                        let row = &got[r * ldo..][..ldo];
                        row[..off]
                            .iter()
                            .chain(&row[off + oc..])
                            .copied()
                            .collect::<Vec<_>>()
                    });
                    assert!(
                        others.into_iter().all(|x| x == 7.0),
                        "{shape}: wrote outside its columns"
                    );
                }
                let f32_tex = WeightTexture::from_buffer(gpu, &w_b, c, oc, F32);
                if let Ok(t) = f32_tex {
                    let out = zeros_as(gpu, "out", n * oc, F16);
                    let err = kernels::matmul_forward_texture(
                        (gpu, F16),
                        &out,
                        &inp_b,
                        &t,
                        &b_b,
                        n,
                        c,
                        oc,
                        oc,
                        0,
                    )
                    .map(|_| ())
                    .unwrap_err();
                    assert!(err.to_string().contains("f32 weight texture"), "{err}");
                }
            }
            // The LM head: f16 in, f32 logits out, into columns of a wider row.
            let (ldo, off) = (oc + 8, 4);
            let logits = zeros_as(gpu, "logits", n * ldo, F32);
            let head = Elems { st: F16, ot: F32 };
            let d = kernels::matmul_forward_strided(
                (gpu, head),
                &logits,
                &inp_b,
                &w_b,
                &b_b,
                n,
                c,
                oc,
                ldo,
                off,
            );
            run(gpu, &[&d]);
            let got = read(gpu, &logits, n * ldo, F32);
            let cols: Vec<f32> = (0..n)
                .flat_map(|r| got[r * ldo + off..][..oc].to_vec())
                .collect();
            let mut exact = vec![0f32; n * oc];
            cpu::matmul_forward(&mut exact, &inp, &w, Some(&bias), n, c, oc);
            assert_close(
                &format!("f16 head N={n} C={c} OC={oc}"),
                &cols,
                &exact,
                1e-4,
                1e-4,
            );
        }
    });
}

#[test]
fn f16_norms_embedding_and_elementwise_ops_match_the_cpu_reference() {
    for_each_f16_adapter(|gpu| {
        let mut rng = Rng::new(2);
        let (n, c, eps) = (7, 48, 1e-5);
        let (x, x_b) = input(gpu, &mut rng, n * c, 2.0);
        let (g, g_b) = input(gpu, &mut rng, c, 1.0);
        let (beta, beta_b) = input(gpu, &mut rng, c, 0.3);
        let out = zeros_as(gpu, "out", n * c, F16);

        let mut want = vec![0f32; n * c];
        cpu::layernorm_forward(&mut want, &x, &g, &beta, n, c, eps);
        run(
            gpu,
            &[&kernels::layernorm_forward(
                (gpu, F16),
                &out,
                &x_b,
                &g_b,
                &beta_b,
                n,
                c,
                eps,
            )],
        );
        assert_close(
            "f16 layernorm",
            &read(gpu, &out, n * c, F16),
            &f16(&want),
            ATOL,
            RTOL,
        );

        cpu::llama::rmsnorm_forward(&mut want, &x, &g, n, c, eps);
        run(
            gpu,
            &[&kernels::rmsnorm_forward(
                (gpu, F16),
                &out,
                &x_b,
                &g_b,
                n,
                c,
                eps,
            )],
        );
        assert_close(
            "f16 rmsnorm",
            &read(gpu, &out, n * c, F16),
            &f16(&want),
            ATOL,
            RTOL,
        );

        cpu::gelu_forward(&mut want, &x);
        run(
            gpu,
            &[&kernels::gelu_forward((gpu, F16), &out, &x_b, n * c)],
        );
        assert_close(
            "f16 gelu",
            &read(gpu, &out, n * c, F16),
            &f16(&want),
            ATOL,
            RTOL,
        );

        let (y, y_b) = input(gpu, &mut rng, n * c, 2.0);
        cpu::residual_forward(&mut want, &x, &y);
        run(
            gpu,
            &[&kernels::residual_forward(
                (gpu, F16),
                &out,
                &x_b,
                &y_b,
                n * c,
            )],
        );
        assert_close(
            "f16 residual",
            &read(gpu, &out, n * c, F16),
            &f16(&want),
            ATOL,
            RTOL,
        );

        let f = c / 2;
        let mut sw = vec![0f32; n * f];
        cpu::llama::swiglu_forward(&mut sw, &x, n, f);
        let out_f = zeros_as(gpu, "out", n * f, F16);
        run(
            gpu,
            &[&kernels::swiglu_forward((gpu, F16), &out_f, &x_b, n, f)],
        );
        assert_close(
            "f16 swiglu",
            &read(gpu, &out_f, n * f, F16),
            &f16(&sw),
            ATOL,
            RTOL,
        );

        // Embedding: the transposed token table (C, V) and positions, f16.
        let (v, t, off) = (20, 7, 3);
        let ids: Vec<u32> = (0..n).map(|_| rng.below(v as u32)).collect();
        let (wte, _) = input(gpu, &mut rng, v * c, 1.0);
        let (wpe, wpe_b) = input(gpu, &mut rng, 16 * c, 0.5);
        let wte_t: Vec<f32> = (0..c * v).map(|i| wte[(i % v) * c + i / v]).collect();
        let wte_t_b = upload_as(gpu, "wte_t", &wte_t, F16);
        let ids_b = upload_pod(gpu, "ids", &ids);
        cpu::embedding_forward(&mut want, &ids, &wte, Some(&wpe), 1, n, c, off);
        let d = kernels::embedding_forward(
            (gpu, F16),
            &out,
            &ids_b,
            &wte_t_b,
            Some(&wpe_b),
            n,
            n,
            c,
            0,
            v,
            off,
        );
        run(gpu, &[&d]);
        assert_close(
            "f16 embedding",
            &read(gpu, &out, n * c, F16),
            &f16(&want),
            ATOL,
            RTOL,
        );
        let rows: Vec<(u32, u32)> = (0..n).map(|r| (0, (r * 2 % t) as u32)).collect();
        let rows_b = upload_pod(
            gpu,
            "rows",
            &rows.iter().flat_map(|&(s, p)| [s, p]).collect::<Vec<_>>(),
        );
        cpu::decode::embedding_decode(&mut want, &ids, &wte, Some(&wpe), &rows, c);
        let d = kernels::embedding_decode(
            (gpu, F16),
            &out,
            &ids_b,
            &wte_t_b,
            Some(&wpe_b),
            &rows_b,
            n,
            c,
            0,
            v,
        );
        run(gpu, &[&d]);
        assert_close(
            "f16 embedding_decode",
            &read(gpu, &out, n * c, F16),
            &f16(&want),
            ATOL,
            RTOL,
        );

        // The hop conversions: f32 -> f16 rounds to nearest; f16 -> f32 is exact.
        let wide = rng.vec(n * c, 3.0);
        let wide_b = upload_as(gpu, "f32", &wide, F32);
        let narrow = zeros_as(gpu, "f16", n * c, F16);
        let back = zeros_as(gpu, "f32 again", n * c, F32);
        run(
            gpu,
            &[
                &kernels::convert((gpu, Elems { st: F32, ot: F16 }), &narrow, &wide_b, n * c),
                &kernels::convert((gpu, Elems { st: F16, ot: F32 }), &back, &narrow, n * c),
            ],
        );
        assert_eq!(
            read(gpu, &narrow, n * c, F16),
            f16(&wide),
            "f32 -> f16 rounds to nearest"
        );
        assert_eq!(
            read(gpu, &back, n * c, F32),
            f16(&wide),
            "f16 -> f32 is exact"
        );
    });
}

#[test]
fn f16_attention_rope_and_kv_cache_match_the_cpu_reference() {
    for_each_f16_adapter(|gpu| {
        let mut rng = Rng::new(3);
        // hd 64 runs the subgroup kernel where there is one; hd 16 the general one.
        for (b, t, nh, nkv, hd, window) in [
            (2, 9, 4, 2, 16, 0),
            (1, 13, 2, 1, 64, 5),
            (2, 8, 2, 2, 64, 0),
        ] {
            let (n, row) = (b * t, (nh + 2 * nkv) * hd);
            let shape = format!("B={b} T={t} NH={nh} NKV={nkv} HD={hd} window={window}");
            let (qkv, qkv_b) = input(gpu, &mut rng, n * row, 1.0);
            let out = zeros_as(gpu, "att", n * nh * hd, F16);
            let mut want = vec![0f32; n * nh * hd];
            cpu::attention_forward(&mut want, &qkv, b, t, nh, nkv, hd, window);
            run(
                gpu,
                &[&kernels::attention_forward(
                    (gpu, F16),
                    &out,
                    &qkv_b,
                    b,
                    t,
                    nh,
                    nkv,
                    hd,
                    window,
                )],
            );
            let got = read(gpu, &out, n * nh * hd, F16);
            assert_close(
                &format!("f16 attention {shape}"),
                &got,
                &f16(&want),
                ATOL,
                RTOL,
            );

            // RoPE in place on q and k, each row at its position in the sequence.
            let inv: Vec<f32> = (0..hd / 2)
                .map(|i| 10000f32.powf(-2.0 * i as f32 / hd as f32))
                .collect();
            let inv_b = upload_as(gpu, "inv_freq", &inv, F32);
            let table: Vec<u32> = (0..t as u32).collect();
            let pos_b = upload_pod(gpu, "positions", &table);
            let pos: Vec<u32> = (0..n).map(|r| (r % t) as u32).collect();
            let mut rot = qkv.clone();
            cpu::llama::rope_forward(&mut rot, &pos, &inv, n, nh, nkv, hd);
            let d = kernels::rope_forward(
                (gpu, F16),
                &qkv_b,
                &pos_b,
                &inv_b,
                n,
                nh,
                nkv,
                hd,
                PositionTable::sequences(t, 0),
            );
            run(gpu, &[&d]);
            assert_close(
                &format!("f16 rope {shape}"),
                &read(gpu, &qkv_b, n * row, F16),
                &f16(&rot),
                ATOL,
                RTOL,
            );

            // Decoding: every row written to the f16 cache at (slot b, pos t),
            // then each row attending over its sequence's cache.
            let n_pos = t + 3;
            let rows: Vec<(u32, u32)> = (0..n).map(|r| ((r / t) as u32, (r % t) as u32)).collect();
            let rows_b = upload_pod(
                gpu,
                "rows",
                &rows.iter().flat_map(|&(s, p)| [s, p]).collect::<Vec<_>>(),
            );
            let cache_len = b * n_pos * nkv * hd;
            let (kc, vc) = (
                zeros_as(gpu, "k", cache_len, F16),
                zeros_as(gpu, "v", cache_len, F16),
            );
            let (mut kw, mut vw) = (vec![0f32; cache_len], vec![0f32; cache_len]);
            cpu::decode::kv_cache_write(&mut kw, &mut vw, &qkv, &rows, nh, nkv, hd, n_pos);
            let mut dec = vec![0f32; n * nh * hd];
            cpu::decode::attention_decode(
                &mut dec, &qkv, &kw, &vw, &rows, nh, nkv, hd, n_pos, window,
            );
            let qkv2 = upload_as(gpu, "qkv", &qkv, F16);
            run(
                gpu,
                &[
                    &kernels::kv_cache_write(
                        (gpu, F16),
                        &kc,
                        &vc,
                        &qkv2,
                        &rows_b,
                        n,
                        nh,
                        nkv,
                        hd,
                        n_pos,
                    ),
                    &kernels::attention_decode(
                        (gpu, F16),
                        &out,
                        &qkv2,
                        &kc,
                        &vc,
                        &rows_b,
                        n,
                        nh,
                        nkv,
                        hd,
                        n_pos,
                        window,
                    ),
                ],
            );
            assert_eq!(
                read(gpu, &kc, cache_len, F16),
                kw,
                "f16 kv_cache_write {shape}: keys copied exactly"
            );
            assert_eq!(
                read(gpu, &vc, cache_len, F16),
                vw,
                "f16 kv_cache_write {shape}: values copied exactly"
            );
            let got = read(gpu, &out, n * nh * hd, F16);
            assert_close(
                &format!("f16 attention_decode {shape}"),
                &got,
                &f16(&dec),
                ATOL,
                RTOL,
            );
        }
    });
}
