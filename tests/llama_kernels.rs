//! The Llama family's kernels (`wgpipe::kernels::llama`: RMSNorm, RoPE,
//! SwiGLU, forward and backward) on every adapter present
//! (`common::for_each_adapter`: lavapipe and GL llvmpipe here) against their
//! CPU twins in `wgpipe::cpu::llama`, at odd shapes; the backward kernels
//! also against finite differences of an f64 forward, and RoPE against
//! transformers' values (tests/data/llama-ops). Gradients start from
//! non-zero values, so accumulation (+=) is checked too. Fails loudly, never
//! skips, without an adapter.
//!
//! Tolerances, `|gpu - ref| <= atol + rtol*|ref|`:
//! - RMSNorm: the same sums in the same order; the GPU's sqrt and divide
//!   may differ by a few ulp: (1e-5, 1e-4) on O(1) outputs, as layernorm;
//! - RoPE: the same f32 angle, which the kernel reduces to [-pi, pi] itself
//!   before cos and sin; the cos and sin of the adapter against libm's, and
//!   an FMA the shader compiler may form: (2e-6, 1e-5) on values up to 2;
//! - SwiGLU: the same formula; the adapter's exp (3 + 2|x| ulp on Vulkan):
//!   (1e-6, 1e-5).

mod common;

use common::llama64::{check_fd, dot64, rmsnorm64, rope64, swiglu64};
use common::{assert_close, Rng};
use wgpipe::cpu::llama as cpu;
use wgpipe::device::{download, upload, upload_pod, zeros, Gpu};
use wgpipe::kernels::{self, Dispatch, PositionTable, RopeParams};
use wgpipe::rope::{rope_inv_freq, RopeScaling};

fn run(gpu: &Gpu, dispatches: &[&Dispatch]) {
    let names: Vec<_> = dispatches.iter().map(|d| d.name).collect();
    kernels::run(gpu, dispatches).unwrap_or_else(|e| panic!("{names:?} on {}: {e}", gpu.label));
}

fn read(gpu: &Gpu, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    download(gpu, buf, len).unwrap_or_else(|e| panic!("download on {}: {e}", gpu.label))
}

/// 64 * 65535 + 100 elements: more workgroups than one grid row holds, so
/// the kernel's `gid.y * stride + gid.x` index is exercised.
const TWO_ROW_GRID: usize = 64 * 65535 + 100;

// ----------------------------------------------------------------------------
// RMSNorm

#[test]
fn rmsnorm_forward_matches_cpu() {
    common::for_each_adapter(|gpu| {
        // (N, C, eps): N past a workgroup, C not a multiple of 4.
        for (i, &(n, c, eps)) in [
            (1, 1, 1e-5f32),
            (1, 768, 1e-6),
            (67, 37, 1e-5),
            (5, 769, 1e-6),
            (130, 3, 1e-5),
        ]
        .iter()
        .enumerate()
        {
            let mut rng = Rng::new(900 + i as u64);
            let inp: Vec<f32> = rng.vec(n * c, 2.0).iter().map(|x| x + 0.7).collect();
            let weight: Vec<f32> = rng.vec(c, 0.5).iter().map(|g| g + 1.0).collect();
            let mut want = vec![0f32; n * c];
            cpu::rmsnorm_forward(&mut want, &inp, &weight, n, c, eps);

            let out = zeros(gpu, "out", n * c);
            let (inp_b, w_b) = (upload(gpu, "inp", &inp), upload(gpu, "weight", &weight));
            run(
                gpu,
                &[&kernels::rmsnorm_forward(
                    gpu, &out, &inp_b, &w_b, n, c, eps,
                )],
            );
            let what = format!("rmsnorm_forward on {}: N={n} C={c}", gpu.label);
            assert_close(&what, &read(gpu, &out, n * c), &want, 1e-5, 1e-4);
        }
    });
}

#[test]
fn rmsnorm_backward_matches_cpu_and_finite_differences() {
    common::for_each_adapter(|gpu| {
        for (i, &(n, c, eps)) in [(9, 37, 1e-5f32), (67, 13, 1e-6), (2, 1, 1e-5)]
            .iter()
            .enumerate()
        {
            let mut rng = Rng::new(950 + i as u64);
            let inp: Vec<f32> = rng.vec(n * c, 2.0).iter().map(|x| x + 0.5).collect();
            let weight: Vec<f32> = rng.vec(c, 0.5).iter().map(|x| x + 1.0).collect();
            let dout = rng.vec(n * c, 1.0);
            let (dinp0, dw0) = (rng.vec(n * c, 1.0), rng.vec(c, 1.0));
            let (mut di, mut dw) = (dinp0.clone(), dw0.clone());
            cpu::rmsnorm_backward(&mut di, &mut dw, &dout, &inp, &weight, n, c, eps);

            let (dinp_b, dw_b) = (upload(gpu, "dinp", &dinp0), upload(gpu, "dweight", &dw0));
            let stats = zeros(gpu, "stats", n);
            let (dout_b, inp_b, w_b) = (
                upload(gpu, "dout", &dout),
                upload(gpu, "inp", &inp),
                upload(gpu, "weight", &weight),
            );
            let [p0, p1] = kernels::rmsnorm_backward(
                gpu, &dinp_b, &dw_b, &stats, &dout_b, &inp_b, &w_b, n, c, eps,
            );
            run(gpu, &[&p0, &p1]);
            let what = format!("on {}: N={n} C={c}", gpu.label);
            let (got_di, got_dw) = (read(gpu, &dinp_b, n * c), read(gpu, &dw_b, c));
            assert_close(&format!("rmsnorm dinp {what}"), &got_di, &di, 1e-5, 1e-4);
            assert_close(&format!("rmsnorm dweight {what}"), &got_dw, &dw, 1e-5, 1e-4);

            // What the kernels added, against the f64 forward (C = 1's dx is
            // a cancellation f32 cannot resolve: dweight only).
            let eps64 = eps as f64;
            if c > 1 {
                let added: Vec<f32> = got_di.iter().zip(&dinp0).map(|(g, d)| g - d).collect();
                let loss = |x: &[f64]| dot64(&rmsnorm64(x, &weight, c, eps64), &dout);
                check_fd(
                    &format!("rmsnorm dinp {what}"),
                    &added,
                    &inp,
                    loss,
                    1e-5,
                    1e-3,
                );
            }
            let added: Vec<f32> = got_dw.iter().zip(&dw0).map(|(g, d)| g - d).collect();
            let x64: Vec<f64> = inp.iter().map(|&v| v as f64).collect();
            let unit = rmsnorm64(&x64, &vec![1.0; c], c, eps64);
            let loss = |w: &[f64]| -> f64 {
                unit.iter()
                    .enumerate()
                    .map(|(i, u)| u * w[i % c] * dout[i] as f64)
                    .sum()
            };
            check_fd(
                &format!("rmsnorm dweight {what}"),
                &added,
                &weight,
                loss,
                1e-5,
                1e-3,
            );
        }
    });
}

// ----------------------------------------------------------------------------
// RoPE

/// (NH, NKV, HD): multi-head, grouped-query, multi-query; head dims 2, 10,
/// 12, 14, 64.
const ROPE_HEADS: [(usize, usize, usize); 5] =
    [(4, 4, 12), (6, 2, 10), (3, 1, 14), (2, 1, 64), (5, 5, 2)];

fn scalings() -> [(&'static str, RopeScaling, f64); 3] {
    [
        ("default", RopeScaling::None, 10000.0),
        ("linear", RopeScaling::Linear { factor: 4.0 }, 10000.0),
        (
            "llama3",
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            },
            500000.0,
        ),
    ]
}

/// A position table as a caller builds it, and the per-row positions the
/// CPU twins take.
struct Positions {
    label: &'static str,
    data: Vec<u32>,
    table: PositionTable,
    per_row: Vec<u32>,
}

impl Positions {
    fn new(label: &'static str, data: Vec<u32>, table: PositionTable, n: usize) -> Positions {
        let per_row = (0..n).map(|r| table.position(&data, r)).collect();
        Positions {
            label,
            data,
            table,
            per_row,
        }
    }
}

/// The two position tables a caller builds: the list 0..T of B sequences
/// with an offset, and decoding's (N, 2) row table (large positions too).
fn position_tables(rng: &mut Rng) -> [Positions; 2] {
    let (b, t, offset) = (3, 7, 5);
    let list: Vec<u32> = (0..t as u32).collect();
    let n = 23;
    let rows: Vec<u32> = (0..n)
        .flat_map(|r| {
            [
                r as u32 % 4,
                [0, 1, 8191, 65535, 131071][r % 5] + rng.below(1000),
            ]
        })
        .collect();
    [
        Positions::new(
            "sequences",
            list,
            PositionTable::sequences(t, offset),
            b * t,
        ),
        Positions::new("rows", rows, PositionTable::rows(n), n),
    ]
}

#[test]
fn position_tables_place_rows_as_the_other_kernels_do() {
    let t = PositionTable::sequences(4, 10);
    let list = [0u32, 1, 2, 3];
    let got: Vec<u32> = (0..9).map(|r| t.position(&list, r)).collect();
    assert_eq!(got, [10, 11, 12, 13, 10, 11, 12, 13, 10]);
    let rows = [2u32, 7, 0, 0, 1, 3]; // (slot, pos) x 3
    let d = PositionTable::rows(3);
    assert_eq!(
        (0..3).map(|r| d.position(&rows, r)).collect::<Vec<_>>(),
        [7, 0, 3]
    );
}

#[test]
fn rope_kernels_match_cpu_and_finite_differences() {
    common::for_each_adapter(|gpu| {
        let mut rng = Rng::new(1000);
        for p in position_tables(&mut rng) {
            let (label, table, pos, n) = (p.label, p.table, &p.per_row, p.per_row.len());
            let pos_b = upload_pod(gpu, "positions", &p.data);
            for (scaling_name, scaling, theta) in scalings() {
                for &(nh, nkv, hd) in &ROPE_HEADS {
                    let what = format!(
                        "on {}: {label} table, {scaling_name}, N={n} NH={nh} NKV={nkv} HD={hd}",
                        gpu.label
                    );
                    let inv_freq = rope_inv_freq(hd, theta, &scaling);
                    let inv_b = upload(gpu, "inv_freq", &inv_freq);
                    let len = n * (nh + 2 * nkv) * hd;
                    let qkv = rng.vec(len, 2.0);

                    let mut want = qkv.clone();
                    cpu::rope_forward(&mut want, pos, &inv_freq, n, nh, nkv, hd);
                    let qkv_b = upload(gpu, "qkv", &qkv);
                    let d =
                        kernels::rope_forward(gpu, &qkv_b, &pos_b, &inv_b, n, nh, nkv, hd, table);
                    run(gpu, &[&d]);
                    let got = read(gpu, &qkv_b, len);
                    assert_close(&format!("rope_forward {what}"), &got, &want, 2e-6, 1e-5);
                    // v untouched, bit for bit.
                    let row_len = (nh + 2 * nkv) * hd;
                    for r in 0..n {
                        let v = r * row_len + (nh + nkv) * hd..(r + 1) * row_len;
                        assert_eq!(got[v.clone()], qkv[v], "rope_forward {what}: v of row {r}");
                    }

                    let dy = rng.vec(len, 1.0);
                    let mut want = dy.clone();
                    cpu::rope_backward(&mut want, pos, &inv_freq, n, nh, nkv, hd);
                    let dqkv_b = upload(gpu, "dqkv", &dy);
                    let d =
                        kernels::rope_backward(gpu, &dqkv_b, &pos_b, &inv_b, n, nh, nkv, hd, table);
                    run(gpu, &[&d]);
                    let got = read(gpu, &dqkv_b, len);
                    assert_close(&format!("rope_backward {what}"), &got, &want, 2e-6, 1e-5);
                    // The gradient of sum(rope(x) * dy), against the f64 forward.
                    if hd <= 14 {
                        let loss = |x: &[f64]| dot64(&rope64(x, pos, &inv_freq, nh, nkv, hd), &dy);
                        check_fd(
                            &format!("rope_backward {what}"),
                            &got,
                            &qkv,
                            loss,
                            1e-4,
                            1e-5,
                        );
                    }
                }
            }
        }
    });
}

/// One built RoPE dispatch run at position offsets 0, 1000, 3: only its
/// parameters change, and each run equals the CPU at that offset.
#[test]
fn rope_position_offset_changes_per_call_without_rebuilding() {
    common::for_each_adapter(|gpu| {
        let (b, t, nh, nkv, hd) = (2, 5, 4, 2, 10);
        let n = b * t;
        let len = n * (nh + 2 * nkv) * hd;
        let qkv = Rng::new(77).vec(len, 1.0);
        let inv_freq = rope_inv_freq(hd, 10000.0, &RopeScaling::None);
        let list: Vec<u32> = (0..t as u32).collect();
        let (pos_b, inv_b) = (
            upload_pod(gpu, "positions", &list),
            upload(gpu, "inv_freq", &inv_freq),
        );
        let qkv_b = upload(gpu, "qkv", &qkv);
        let table = PositionTable::sequences(t, 0);
        let d = kernels::rope_forward(gpu, &qkv_b, &pos_b, &inv_b, n, nh, nkv, hd, table);
        for offset in [0u32, 1000, 3] {
            gpu.queue
                .write_buffer(&qkv_b, 0, bytemuck::cast_slice(&qkv));
            d.update_params(&gpu.queue, |p: &mut RopeParams| p.pos_offset = offset)
                .expect("rope params");
            run(gpu, &[&d]);
            let pos: Vec<u32> = (0..n as u32).map(|r| offset + r % t as u32).collect();
            let mut want = qkv.clone();
            cpu::rope_forward(&mut want, &pos, &inv_freq, n, nh, nkv, hd);
            let what = format!("rope_forward on {} at offset {offset}", gpu.label);
            assert_close(&what, &read(gpu, &qkv_b, len), &want, 2e-6, 1e-5);
        }
    });
}

#[test]
fn rope_kernels_match_transformers() {
    // transformers' q_embed, k_embed and their gradients (tests/cpu_llama.rs
    // reads the same fixture for the CPU twins), rows at positions up to 65000.
    let r: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture_dir("llama-ops").join("ops_ref.json")).unwrap(),
    )
    .unwrap();
    let c = &r["rope"];
    let f32s = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let u = |k: &str| c[k].as_u64().unwrap() as usize;
    let (nh, nkv, hd) = (u("nh"), u("nkv"), u("hd"));
    let pos: Vec<u32> = c["positions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u32)
        .collect();
    let t = pos.len();
    let s = &c["rope_scaling"];
    let sf = |k: &str| s[k].as_f64().unwrap();
    let scaling = RopeScaling::Llama3 {
        factor: sf("factor"),
        low_freq_factor: sf("low_freq_factor"),
        high_freq_factor: sf("high_freq_factor"),
        original_max_position_embeddings: s["original_max_position_embeddings"].as_u64().unwrap()
            as usize,
    };
    let inv_freq = rope_inv_freq(hd, c["rope_theta"].as_f64().unwrap(), &scaling);
    // (T, (NH + 2 NKV) HD) rows from q (NH, T, HD), k (NKV, T, HD), v zero.
    let fuse = |q: &str, k: &str| -> Vec<f32> {
        let (q, k) = (f32s(&c[q]), f32s(&c[k]));
        let row_len = (nh + 2 * nkv) * hd;
        let mut out = vec![0.0f32; t * row_len];
        for ti in 0..t {
            for h in 0..nh {
                out[ti * row_len + h * hd..][..hd].copy_from_slice(&q[(h * t + ti) * hd..][..hd]);
            }
            for h in 0..nkv {
                out[ti * row_len + (nh + h) * hd..][..hd]
                    .copy_from_slice(&k[(h * t + ti) * hd..][..hd]);
            }
        }
        out
    };
    common::for_each_adapter(|gpu| {
        let (pos_b, inv_b) = (
            upload_pod(gpu, "positions", &pos),
            upload(gpu, "inv_freq", &inv_freq),
        );
        let table = PositionTable::sequences(t, 0);
        for (dir, input, want) in [
            ("forward", ("q", "k"), ("q_embed", "k_embed")),
            ("backward", ("dq_embed", "dk_embed"), ("dq", "dk")),
        ] {
            let buf = upload(gpu, "qkv", &fuse(input.0, input.1));
            let d = match dir {
                "forward" => {
                    kernels::rope_forward(gpu, &buf, &pos_b, &inv_b, t, nh, nkv, hd, table)
                }
                _ => kernels::rope_backward(gpu, &buf, &pos_b, &inv_b, t, nh, nkv, hd, table),
            };
            run(gpu, &[&d]);
            let got = read(gpu, &buf, t * (nh + 2 * nkv) * hd);
            let what = format!("rope_{dir} on {} vs transformers", gpu.label);
            assert_close(&what, &got, &fuse(want.0, want.1), 2e-6, 1e-5);
        }
    });
}

// ----------------------------------------------------------------------------
// SwiGLU

/// gate_up (N, 2F) with the gates' hard cases first: 0, -0, saturated and
/// overflowing exp(-g) either way.
fn gate_up_data(seed: u64, n: usize, f: usize) -> Vec<f32> {
    let mut x = Rng::new(seed).vec(n * 2 * f, 6.0);
    let special = [
        0.0, -0.0, 1e-3, -1e-3, 20.0, -20.0, 89.0, -89.0, 100.0, -100.0, 1e4, -1e4,
    ];
    let k = special.len().min(f);
    x[..k].copy_from_slice(&special[..k]);
    x
}

#[test]
fn swiglu_forward_matches_cpu() {
    common::for_each_adapter(|gpu| {
        // (N, F): ragged, past one workgroup, and past one grid row.
        for (i, &(n, f)) in [(1, 1), (3, 37), (67, 13), (1, TWO_ROW_GRID)]
            .iter()
            .enumerate()
        {
            let gate_up = gate_up_data(1100 + i as u64, n, f);
            let mut want = vec![0f32; n * f];
            cpu::swiglu_forward(&mut want, &gate_up, n, f);
            let out = zeros(gpu, "out", n * f);
            let gu_b = upload(gpu, "gate_up", &gate_up);
            run(gpu, &[&kernels::swiglu_forward(gpu, &out, &gu_b, n, f)]);
            let got = read(gpu, &out, n * f);
            if let Some(j) = got.iter().position(|g| !g.is_finite()) {
                panic!(
                    "swiglu_forward on {}: element {j} = {:e}",
                    gpu.label, got[j]
                );
            }
            let what = format!("swiglu_forward on {}: N={n} F={f}", gpu.label);
            assert_close(&what, &got, &want, 1e-6, 1e-5);
        }
    });
}

#[test]
fn swiglu_backward_matches_cpu_and_finite_differences() {
    common::for_each_adapter(|gpu| {
        for (i, &(n, f)) in [(3, 37), (67, 13), (1, 1)].iter().enumerate() {
            let gate_up = gate_up_data(1200 + i as u64, n, f);
            let dout = Rng::new(1300 + i as u64).vec(n * f, 1.0);
            let d0 = Rng::new(1400 + i as u64).vec(n * 2 * f, 1.0);
            let mut want = d0.clone();
            cpu::swiglu_backward(&mut want, &dout, &gate_up, n, f);
            let (d_b, dout_b, gu_b) = (
                upload(gpu, "dgate_up", &d0),
                upload(gpu, "dout", &dout),
                upload(gpu, "gate_up", &gate_up),
            );
            run(
                gpu,
                &[&kernels::swiglu_backward(gpu, &d_b, &dout_b, &gu_b, n, f)],
            );
            let got = read(gpu, &d_b, n * 2 * f);
            let what = format!("swiglu_backward on {}: N={n} F={f}", gpu.label);
            assert_close(&what, &got, &want, 1e-6, 1e-5);
            // What the kernel added, against the f64 forward; the huge gates
            // (1e4) are left at their place: silu is linear or flat there.
            let added: Vec<f32> = got.iter().zip(&d0).map(|(g, d)| g - d).collect();
            let loss = |x: &[f64]| dot64(&swiglu64(x, f), &dout);
            check_fd(&what, &added, &gate_up, loss, 1e-4, 1e-4);
        }
    });
}
