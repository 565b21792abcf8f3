//! Every backward WGSL kernel, through its dispatch function in
//! `wgpipe::kernels`, against its CPU twin in `cpu::backward`, on odd shapes,
//! on the real adapter (lavapipe here; see `common::gpu` and
//! `WGPIPE_TEST_ADAPTER`). Gradients start from non-zero values, so
//! accumulation (+=) is checked too. Like every GPU test here it fails
//! loudly, never skips, without an adapter.

mod common;

use common::assert_close;
use wgpipe::cpu::backward::{self as cpu};
use wgpipe::device::{download, upload, upload_pod, zeros, Gpu};
use wgpipe::kernels::{self, Dispatch, Kernels, MatmulOp, MatmulVariant};
use wgpipe::model::grads::NO_TARGET;

/// Encode `dispatches` in one pass, in order, submit, wait; any device error
/// fails the test.
fn run(gpu: &Gpu, dispatches: &[&Dispatch]) {
    let names: Vec<_> = dispatches.iter().map(|d| d.name).collect();
    kernels::run(gpu, dispatches).unwrap_or_else(|e| panic!("{names:?} on {}: {e}", gpu.label));
}

fn read(gpu: &Gpu, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    download(gpu, buf, len).unwrap_or_else(|e| panic!("download on {}: {e}", gpu.label))
}

/// Deterministic values in [-scale, scale).
fn rand_vec(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

// ----------------------------------------------------------------------------
// kernels

#[test]
fn matmul_backward_kernels_match_cpu_on_a_column_slice() {
    // dout is columns col_off .. col_off+OC of an (N, ldd) matrix, as for an
    // LM-head chunk. Odd widths run the general kernels; multiples of 4 the
    // vec4 ones, here with partial blocks at every edge (N not a multiple of
    // 8, C/4 not of 4 for dW's rows, OC/4 not of 4 for its columns).
    check_matmul_backward(7, 13, 10, 17, 3);
    check_matmul_backward(13, 20, 36, 48, 8);
    check_matmul_backward(70, 264, 68, 68, 0);
}

#[test]
fn every_matmul_backward_variant_the_device_runs_matches_cpu() {
    // Every shape class of the blocked kernels: rows below, at and past a
    // 32-row block (and the vec4 kernel's 8), C/4 and OC/4 not filling a
    // workgroup's columns, C not a multiple of 32 (the subgroup dW's row
    // block), a column slice of a wider dout, and GPT-2's QKV at N = 32.
    let shapes = [
        (1, 4, 4, 4, 0),
        (7, 36, 20, 28, 8),
        (32, 256, 768, 768, 0),
        (33, 64, 260, 300, 40),
        (70, 264, 68, 68, 0),
        (64, 128, 256, 512, 256),
        (32, 768, 2304, 2304, 0),
    ];
    common::for_each_adapter(|gpu| {
        for v in Kernels::of(gpu).matmul_variants() {
            if v.shader_of(MatmulOp::BackwardInput).is_none() {
                continue;
            }
            for &(n, c, oc, ldd, col_off) in &shapes {
                check_matmul_backward_on(gpu, Some(v), n, c, oc, ldd, col_off);
            }
        }
    });
}

#[test]
fn a_matmul_variant_without_gradients_is_an_error() {
    let gpu = common::gpu();
    let b = zeros(&gpu, "b", 64);
    let err =
        kernels::matmul_backward_input_with(&gpu, MatmulVariant::Rows4, &b, &b, &b, 4, 4, 4, 4, 0)
            .map(|_| ())
            .unwrap_err();
    assert!(err.to_string().contains("matmul_forward_rows4"), "{err}");
    let err =
        kernels::matmul_backward_weight_with(&gpu, MatmulVariant::Vec4, &b, &b, &b, 4, 6, 4, 4, 0)
            .map(|_| ())
            .unwrap_err();
    assert!(err.to_string().contains("multiples of 4"), "{err}");
}

fn check_matmul_backward(n: usize, c: usize, oc: usize, ldd: usize, col_off: usize) {
    check_matmul_backward_on(&common::gpu(), None, n, c, oc, ldd, col_off);
}

/// dinp, dweight and dbias of one shape against the CPU twins: through the
/// dispatch functions' own choice, or with `variant` for dinp and dweight.
fn check_matmul_backward_on(
    gpu: &Gpu,
    variant: Option<MatmulVariant>,
    n: usize,
    c: usize,
    oc: usize,
    ldd: usize,
    col_off: usize,
) {
    let shape = format!("N={n} C={c} OC={oc} ldd={ldd} col_off={col_off} ({variant:?})");
    let wide = rand_vec(n * ldd, 1, 1.0);
    let dout: Vec<f32> = (0..n)
        .flat_map(|i| wide[i * ldd + col_off..][..oc].to_vec())
        .collect();
    let inp = rand_vec(n * c, 2, 1.0);
    let weight = rand_vec(c * oc, 3, 1.0);
    let dinp0 = rand_vec(n * c, 4, 1.0);
    let dw0 = rand_vec(c * oc, 5, 1.0);
    let db0 = rand_vec(oc, 6, 1.0);
    let (wide_b, inp_b, w_b) = (
        upload(gpu, "dout", &wide),
        upload(gpu, "inp", &inp),
        upload(gpu, "weight", &weight),
    );
    // Sums over OC (dinp) or N (dweight) terms of size ~1: tolerance grows
    // with the length of the sum.
    let atol = |terms: usize| 1e-5 * (terms as f32 / 64.0).max(1.0);

    let mut want = dinp0.clone();
    cpu::matmul_backward_input(&mut want, &dout, &weight, n, c, oc);
    let dinp = upload(gpu, "dinp", &dinp0);
    let d = match variant {
        None => kernels::matmul_backward_input(gpu, &dinp, &wide_b, &w_b, n, c, oc, ldd, col_off),
        Some(v) => kernels::matmul_backward_input_with(
            gpu, v, &dinp, &wide_b, &w_b, n, c, oc, ldd, col_off,
        )
        .unwrap_or_else(|e| panic!("{shape}: {e}")),
    };
    run(gpu, &[&d]);
    assert_close(
        &format!("dinp {shape} via {}", d.name),
        &read(gpu, &dinp, n * c),
        &want,
        atol(oc),
        1e-5,
    );

    let mut want = dw0.clone();
    cpu::matmul_backward_weight(&mut want, &dout, &inp, n, c, oc);
    let dw = upload(gpu, "dweight", &dw0);
    let d = match variant {
        None => kernels::matmul_backward_weight(gpu, &dw, &wide_b, &inp_b, n, c, oc, ldd, col_off),
        Some(v) => kernels::matmul_backward_weight_with(
            gpu, v, &dw, &wide_b, &inp_b, n, c, oc, ldd, col_off,
        )
        .unwrap_or_else(|e| panic!("{shape}: {e}")),
    };
    run(gpu, &[&d]);
    assert_close(
        &format!("dweight {shape} via {}", d.name),
        &read(gpu, &dw, c * oc),
        &want,
        atol(n),
        1e-5,
    );

    let mut want = db0.clone();
    cpu::matmul_backward_bias(&mut want, &dout, n, oc);
    let db = upload(gpu, "dbias", &db0);
    let d = kernels::matmul_backward_bias(gpu, &db, &wide_b, n, oc, ldd, col_off);
    run(gpu, &[&d]);
    assert_close(
        &format!("dbias {shape}"),
        &read(gpu, &db, oc),
        &want,
        atol(n),
        1e-5,
    );
}

#[test]
fn layernorm_backward_kernel_matches_cpu() {
    let gpu = common::gpu();
    let (n, c, eps) = (9, 37, 1e-5f32);
    let inp: Vec<f32> = rand_vec(n * c, 11, 2.0).iter().map(|x| x + 0.5).collect();
    let gamma: Vec<f32> = rand_vec(c, 12, 0.5).iter().map(|x| x + 1.0).collect();
    let dout = rand_vec(n * c, 13, 1.0);
    let (dinp0, dg0, db0) = (
        rand_vec(n * c, 14, 1.0),
        rand_vec(c, 15, 1.0),
        rand_vec(c, 16, 1.0),
    );
    let (mut di, mut dg, mut db) = (dinp0.clone(), dg0.clone(), db0.clone());
    cpu::layernorm_backward(&mut di, &mut dg, &mut db, &dout, &inp, &gamma, n, c, eps);
    let (dinp_b, dg_b, db_b) = (
        upload(&gpu, "dinp", &dinp0),
        upload(&gpu, "dgamma", &dg0),
        upload(&gpu, "dbeta", &db0),
    );
    let stats = zeros(&gpu, "stats", 2 * n);
    let (dout_b, inp_b, gamma_b) = (
        upload(&gpu, "dout", &dout),
        upload(&gpu, "inp", &inp),
        upload(&gpu, "gamma", &gamma),
    );
    let [p0, p1] = kernels::layernorm_backward(
        &gpu, &dinp_b, &dg_b, &db_b, &stats, &dout_b, &inp_b, &gamma_b, n, c, eps,
    );
    run(&gpu, &[&p0, &p1]);
    assert_close("dinp", &read(&gpu, &dinp_b, n * c), &di, 1e-5, 1e-4);
    assert_close("dgamma", &read(&gpu, &dg_b, c), &dg, 1e-5, 1e-4);
    assert_close("dbeta", &read(&gpu, &db_b, c), &db, 1e-5, 1e-5);
}

/// An attention's shape: heads, KV heads, head dim, sliding window (0: none).
#[derive(Clone, Copy, Debug)]
struct Heads {
    nh: usize,
    nkv: usize,
    hd: usize,
    window: usize,
}

impl Heads {
    fn mha(c: usize, nh: usize) -> Heads {
        Heads {
            nh,
            nkv: nh,
            hd: c / nh,
            window: 0,
        }
    }
    fn row(&self) -> usize {
        (self.nh + 2 * self.nkv) * self.hd
    }
}

/// The forward's output and per-query log-sum-exp of the scaled scores
/// (B, NH, T), computed plainly on the CPU.
fn attention_out_lse(qkv: &[f32], b: usize, t: usize, a: Heads) -> (Vec<f32>, Vec<f32>) {
    let Heads {
        nh,
        nkv,
        hd,
        window,
    } = a;
    let c = nh * hd;
    let mut out = vec![0f32; b * t * c];
    wgpipe::cpu::attention_forward(&mut out, qkv, b, t, nh, nkv, hd, window);
    let row = a.row();
    let scale = 1.0 / (hd as f64).sqrt();
    let mut lse = Vec::with_capacity(b * nh * t);
    for bi in 0..b {
        for h in 0..nh {
            let kc = c + (h / (nh / nkv)) * hd;
            for ti in 0..t {
                let q = &qkv[(bi * t + ti) * row + h * hd..][..hd];
                let first = match window {
                    0 => 0,
                    w => (ti + 1).saturating_sub(w),
                };
                let scores: Vec<f64> = (first..=ti)
                    .map(|tk| {
                        let k = &qkv[(bi * t + tk) * row + kc..][..hd];
                        q.iter()
                            .zip(k)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let l: f64 = scores.iter().map(|s| (s - m).exp()).sum();
                lse.push((m + l.ln()) as f32);
            }
        }
    }
    (out, lse)
}

/// dqkv through attention_backward, fed by the GPU forward's own output and
/// lse (attention_forward_lse, checked against the CPU first), with a
/// scratch that holds every score's gradient, or (`recompute`) only D.
fn check_attention(gpu: &Gpu, b: usize, t: usize, a: Heads, seed: u64, recompute: bool) {
    let shape = format!("B={b} T={t} {a:?} recompute={recompute}");
    let Heads {
        nh,
        nkv,
        hd,
        window,
    } = a;
    let (c, row) = (nh * hd, a.row());
    let qkv = rand_vec(b * t * row, seed, 1.5);
    let dout = rand_vec(b * t * c, seed + 1, 1.0);
    let dqkv0 = rand_vec(b * t * row, seed + 2, 1.0);
    let (out_want, lse_want) = attention_out_lse(&qkv, b, t, a);
    let qkv_b = upload(gpu, "qkv", &qkv);
    let (out_b, lse_b) = (zeros(gpu, "out", b * t * c), zeros(gpu, "lse", b * nh * t));
    let f = kernels::attention_forward_lse(gpu, &out_b, &lse_b, &qkv_b, b, t, nh, nkv, hd, window);
    run(gpu, &[&f]);
    assert_close(
        &format!("out {shape}"),
        &read(gpu, &out_b, b * t * c),
        &out_want,
        1e-5,
        1e-4,
    );
    assert_close(
        &format!("lse {shape}"),
        &read(gpu, &lse_b, b * nh * t),
        &lse_want,
        1e-5,
        1e-5,
    );

    let mut want = dqkv0.clone();
    cpu::attention_backward(&mut want, &dout, &qkv, b, t, nh, nkv, hd, window);
    let dqkv = upload(gpu, "dqkv", &dqkv0);
    let len = match recompute {
        true => b * nh * t,
        false => kernels::attention_backward_scratch_len(gpu, b, t, nh),
    };
    let scratch = zeros(gpu, "scratch", len);
    let dout_b = upload(gpu, "dout", &dout);
    let [p0, p1, p2] = kernels::attention_backward(
        gpu, &dqkv, &scratch, &dout_b, &qkv_b, &out_b, &lse_b, b, t, nh, nkv, hd, window,
    );
    run(gpu, &[&p0, &p1, &p2]);
    assert_close(
        &format!("dqkv {shape}"),
        &read(gpu, &dqkv, b * t * row),
        &want,
        2e-5,
        1e-4,
    );
}

#[test]
fn attention_backward_kernel_matches_cpu() {
    // Every shape class: head dims below one chunk (4), exactly one (64, the
    // bench model's and GPT-2's), two chunks (75); one query, T past a
    // workgroup of queries; the dS scratch kept and recomputed; grouped-
    // and multi-query heads, a head dim not a power of two, a sliding window.
    let gqa = |nh, nkv, hd, window| Heads {
        nh,
        nkv,
        hd,
        window,
    };
    common::for_each_adapter(|gpu| {
        for recompute in [false, true] {
            check_attention(gpu, 2, 7, Heads::mha(12, 3), 21, recompute); // hd = 4
            check_attention(gpu, 1, 5, Heads::mha(150, 2), 22, recompute); // hd = 75: two chunks
            check_attention(gpu, 1, 1, Heads::mha(64, 1), 23, recompute); // one token
            check_attention(gpu, 1, 33, Heads::mha(256, 4), 24, recompute); // hd = 64
            check_attention(gpu, 2, 9, gqa(4, 2, 6, 0), 25, recompute); // GQA
            check_attention(gpu, 1, 11, gqa(6, 1, 10, 0), 26, recompute); // MQA, hd 10
            check_attention(gpu, 2, 13, gqa(4, 2, 8, 4), 27, recompute); // window 4
                                                                         // Head dim 64 runs phase 1 on 8-wide subgroups where there are
                                                                         // some: T a multiple of 8 and not, GQA and MQA, a window that
                                                                         // starts inside a block of 8 keys.
            check_attention(gpu, 2, 16, gqa(4, 2, 64, 0), 28, recompute);
            check_attention(gpu, 1, 19, gqa(3, 1, 64, 0), 29, recompute);
            check_attention(gpu, 2, 21, gqa(4, 2, 64, 6), 30, recompute);
        }
    });
}

#[test]
fn attention_backward_over_600_tokens_matches_cpu() {
    // llvmpipe stops a shader after 65,535 loop iterations in one
    // invocation; with head-dim loops taken one dim at a time the general
    // kernel (GL's at HD 64, every adapter's at HD 128) went wrong past a
    // few hundred tokens (T = 520 at HD 128: most values). Four dims an
    // iteration: GPT-2's 1024 tokens at HD 64; ~560 at HD 128.
    common::for_each_adapter(|gpu| {
        for recompute in [false, true] {
            check_attention(gpu, 1, 1000, Heads::mha(64, 1), 41, recompute); // hd = 64
            check_attention(gpu, 1, 520, Heads::mha(128, 1), 42, recompute); // hd = 128: two chunks
        }
    });
}

#[test]
fn gelu_and_residual_backward_kernels_match_cpu() {
    let gpu = common::gpu();
    let len = 1001;
    let inp = rand_vec(len, 31, 10.0);
    let dout = rand_vec(len, 32, 1.0);
    let d0 = rand_vec(len, 33, 1.0);
    let (inp_b, dout_b) = (upload(&gpu, "inp", &inp), upload(&gpu, "dout", &dout));
    let mut want = d0.clone();
    cpu::gelu_backward(&mut want, &dout, &inp);
    let dinp = upload(&gpu, "dinp", &d0);
    run(
        &gpu,
        &[&kernels::gelu_backward(&gpu, &dinp, &dout_b, &inp_b, len)],
    );
    assert_close("gelu dinp", &read(&gpu, &dinp, len), &want, 1e-6, 1e-5);

    let a0 = rand_vec(len, 34, 1.0);
    let (mut da, mut db) = (a0.clone(), d0.clone());
    cpu::residual_backward(&mut da, &mut db, &dout);
    let (da_b, db_b) = (upload(&gpu, "da", &a0), upload(&gpu, "db", &d0));
    run(
        &gpu,
        &[&kernels::residual_backward(
            &gpu, &da_b, &db_b, &dout_b, len,
        )],
    );
    assert_eq!((read(&gpu, &da_b, len), read(&gpu, &db_b, len)), (da, db));
}

/// The GPU reads rows `ld >= v` floats long (logits padded to a multiple of
/// 4 columns): only the first `v` enter the softmax, the padding of dlogits
/// stays untouched. The padding logits are large, so a softmax that included
/// them would be far off.
fn check_crossentropy(gpu: &Gpu, n: usize, v: usize, ld: usize) {
    let logits = rand_vec(n * v, 41, 8.0);
    let targets: Vec<u32> = (0..n as u32)
        .map(|i| {
            if i % 4 == 3 {
                NO_TARGET
            } else {
                (i * 7) % v as u32
            }
        })
        .collect();
    let scale = 1.0 / 7.0;
    let dl0 = rand_vec(n * v, 42, 0.1);
    let losses0 = vec![5.0f32; n];
    let (mut dl, mut losses) = (dl0.clone(), losses0.clone());
    cpu::crossentropy_softmax_backward(&mut dl, &mut losses, &logits, &targets, scale, n, v);

    // (N, v) -> (N, ld), padding columns filled with `pad`.
    let widen = |x: &[f32], pad: f32| -> Vec<f32> {
        x.chunks(v)
            .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(pad, ld - v)))
            .collect()
    };
    let dl0_wide = widen(&dl0, 0.5);
    let (dl_b, losses_b) = (
        upload(gpu, "dlogits", &dl0_wide),
        upload(gpu, "losses", &losses0),
    );
    let (logits_b, targets_b) = (
        upload(gpu, "logits", &widen(&logits, 100.0)),
        upload_pod(gpu, "targets", &targets),
    );
    let d = kernels::crossentropy_softmax_backward(
        gpu, &dl_b, &losses_b, &logits_b, &targets_b, scale, n, v, ld,
    );
    run(gpu, &[&d]);
    let got = read(gpu, &dl_b, n * ld);
    let what = format!("N={n} V={v} ld={ld}");
    // The first v columns of each row, as the CPU's (N, v).
    let got_v: Vec<f32> = got.chunks(ld).flat_map(|row| row[..v].to_vec()).collect();
    assert_close(&format!("dlogits {what}"), &got_v, &dl, 1e-6, 1e-5);
    let pad = |x: &[f32]| -> Vec<f32> { x.chunks(ld).flat_map(|r| r[v..].to_vec()).collect() };
    assert_eq!(pad(&got), pad(&dl0_wide), "dlogits padding {what}");
    assert_close(
        &format!("losses {what}"),
        &read(gpu, &losses_b, n),
        &losses,
        1e-5,
        1e-5,
    );
}

#[test]
fn crossentropy_softmax_backward_kernel_matches_cpu() {
    let gpu = common::gpu();
    check_crossentropy(&gpu, 9, 31, 31);
    check_crossentropy(&gpu, 9, 31, 32); // V rounded up to 4
    check_crossentropy(&gpu, 5, 13, 19);
}

/// The vocabulary-parallel cross-entropy over `tp` ranks, run on one Gpu:
/// each rank's dispatches see only its columns of the padded vocabulary
/// (`Shard::vocab`), and the host sums the ranks' `stats` and `sums` between
/// the phases as the group's all-reduce does. The ranks' dlogits side by
/// side and every rank's losses equal the whole-row CPU reference's.
fn check_vocab_parallel_crossentropy(gpu: &Gpu, n: usize, v: usize, tp: usize) {
    let vp = v.next_multiple_of(4);
    let logits = rand_vec(n * v, 43, 8.0);
    let targets: Vec<u32> = (0..n as u32)
        .map(|i| match i % 4 {
            3 => NO_TARGET,
            _ => (i * 7) % v as u32,
        })
        .collect();
    let scale = 1.0 / 7.0;
    let dl0 = rand_vec(n * v, 44, 0.1);
    let (mut dl, mut losses) = (dl0.clone(), vec![0f32; n]);
    cpu::crossentropy_softmax_backward(&mut dl, &mut losses, &logits, &targets, scale, n, v);
    // Column j of row r, with large padding past v (a softmax that read it
    // would be far off).
    let col = |x: &[f32], r: usize, j: usize, pad: f32| if j < v { x[r * v + j] } else { pad };
    let targets_b = upload_pod(gpu, "targets", &targets);
    let ranks: Vec<_> = (0..tp)
        .map(|rank| {
            let range = wgpipe::model::Shard { rank, of: tp }.vocab(vp);
            let w = range.len();
            let part = |x: &[f32], pad: f32| -> Vec<f32> {
                (0..n)
                    .flat_map(|r| range.clone().map(move |j| (r, j)))
                    .map(|(r, j)| col(x, r, j, pad))
                    .collect()
            };
            let bufs = (
                upload(gpu, "dlogits", &part(&dl0, 0.5)),
                upload(gpu, "losses", &vec![5.0; n]),
                zeros(gpu, "stats", n * tp),
                zeros(gpu, "sums", 2 * n),
                upload(gpu, "logits", &part(&logits, 100.0)),
            );
            (range, w, bufs)
        })
        .collect();
    let dispatches: Vec<[Dispatch; 3]> = ranks
        .iter()
        .enumerate()
        .map(|(rank, (range, w, (dlb, lb, stats, sums, logb)))| {
            kernels::crossentropy_vocab_parallel(
                gpu,
                dlb,
                lb,
                stats,
                sums,
                logb,
                &targets_b,
                scale,
                n,
                v,
                (range.start, *w),
                (rank, tp),
            )
        })
        .collect();
    // The group's sum of one buffer, written back into every rank's.
    let all_reduce = |bufs: Vec<&wgpu::Buffer>, len: usize| {
        let mut sum = vec![0f32; len];
        for b in &bufs {
            for (s, x) in sum.iter_mut().zip(read(gpu, b, len)) {
                *s += x;
            }
        }
        for b in &bufs {
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(&sum));
        }
    };
    for phase in 0..3 {
        for d in &dispatches {
            run(gpu, &[&d[phase]]);
        }
        match phase {
            0 => all_reduce(ranks.iter().map(|r| &r.2 .2).collect(), n * tp),
            1 => all_reduce(ranks.iter().map(|r| &r.2 .3).collect(), 2 * n),
            _ => {}
        }
    }
    let what = format!("N={n} V={v} T={tp}");
    let mut got = vec![0f32; n * v];
    for (range, w, (dlb, lb, ..)) in &ranks {
        let part = read(gpu, dlb, n * w);
        for r in 0..n {
            for (i, j) in range.clone().enumerate() {
                match j < v {
                    true => got[r * v + j] = part[r * w + i],
                    false => assert_eq!(part[r * w + i], 0.5, "dlogits padding {what}"),
                }
            }
        }
        assert_close(
            &format!("losses {what}"),
            &read(gpu, lb, n),
            &losses,
            1e-5,
            1e-5,
        );
    }
    assert_close(&format!("dlogits {what}"), &got, &dl, 1e-6, 1e-5);
}

#[test]
fn crossentropy_vocab_parallel_kernel_matches_cpu() {
    let gpu = common::gpu();
    check_vocab_parallel_crossentropy(&gpu, 9, 31, 2);
    check_vocab_parallel_crossentropy(&gpu, 5, 61, 3);
    // 20 columns over 4 ranks of 8: the last rank holds none.
    check_vocab_parallel_crossentropy(&gpu, 6, 17, 4);
}

#[test]
fn embedding_backward_kernel_matches_cpu_per_vocab_chunk() {
    let gpu = common::gpu();
    let (b, t, c, v, maxt) = (2, 5, 6, 11, 7);
    let ids: Vec<u32> = [3, 3, 0, 10, 4, 4, 7, 3, 9, 0].to_vec(); // repeats
    let dout = rand_vec(b * t * c, 51, 1.0);
    let dwte0 = rand_vec(v * c, 52, 1.0);
    let dwpe0 = rand_vec(maxt * c, 53, 1.0);
    let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
    cpu::embedding_backward(&mut dwte, &mut dwpe, &dout, &ids, b, t, c);
    // The GPU gradient is transposed and split by vocabulary: chunks [0, 4), [4, 11).
    let (dout_b, ids_b) = (upload(&gpu, "dout", &dout), upload_pod(&gpu, "ids", &ids));
    let dwpe_b = upload(&gpu, "dwpe", &dwpe0);
    let mut got_wte = vec![0.0f32; v * c];
    for (k, (v0, vlen)) in [(0usize, 4usize), (4, 7)].into_iter().enumerate() {
        let chunk0: Vec<f32> = (0..c)
            .flat_map(|ch| (0..vlen).map(move |j| (ch, j)))
            .map(|(ch, j)| dwte0[(v0 + j) * c + ch])
            .collect();
        let chunk = upload(&gpu, "dwte_t", &chunk0);
        let d = kernels::embedding_backward(
            &gpu,
            &chunk,
            &dwpe_b,
            &dout_b,
            &ids_b,
            b * t,
            t,
            c,
            v0,
            vlen,
            k == 0,
        );
        run(&gpu, &[&d]);
        let got = read(&gpu, &chunk, c * vlen);
        for ch in 0..c {
            for j in 0..vlen {
                got_wte[(v0 + j) * c + ch] = got[ch * vlen + j];
            }
        }
    }
    // Same additions in the same order: exact.
    assert_eq!(got_wte, dwte);
    assert_eq!(read(&gpu, &dwpe_b, maxt * c), dwpe);
}
