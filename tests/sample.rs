//! The `sample` kernel on the real adapter (lavapipe here, see
//! `common::for_each_adapter`) against its CPU twin `sampling::sample_row`.
//!
//! Greedy is exact. Sampling compares the drawn token: the GPU sums exp()
//! in f32, in its own order, the CPU in f64 in token order, so when u × total
//! falls within rounding of a token boundary the two may pick neighbours.
//! Every mismatch must be such a tie (the CPU's cumulative mass at the
//! boundary within a relative 1e-4 of u × total), mismatches must be rare
//! (< 1 %), and the GPU's token must always be one the CPU keeps after top-k
//! and top-p.

mod common;

use common::Rng;
use wgpipe::device::{download, upload, upload_pod, zeros, Gpu};
use wgpipe::kernels::{self, Dispatch, SampleParams, SHADERS};
use wgpipe::sampling::{self, kept, kept_mass, sample_row, SampleSettings};

fn settings(temperature: f32, top_k: usize, top_p: f32) -> SampleSettings {
    SampleSettings {
        temperature,
        top_k,
        top_p,
    }
}

/// Logits in a (nrows, stride) buffer; the padding columns hold a huge value
/// that would win any argmax if the kernel read past V.
struct Logits {
    v: usize,
    stride: usize,
    data: Vec<f32>,
}

impl Logits {
    fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.stride..r * self.stride + self.v]
    }
}

/// `nrows` rows of V logits, of several kinds: spread uniform values,
/// coarsely quantised ones (many ties, at the max too), a constant row, a
/// row whose max is the last token, and rows with -inf entries (masked).
fn make_logits(seed: u64, nrows: usize, v: usize) -> Logits {
    let stride = v + 3;
    let mut rng = Rng::new(seed);
    let mut data = vec![1e30f32; nrows * stride];
    for r in 0..nrows {
        let row = &mut data[r * stride..r * stride + v];
        let scale = [8.0, 3.0, 1.0][r % 3];
        for x in row.iter_mut() {
            *x = rng.uniform() * scale;
        }
        match r % 6 {
            1 => row.iter_mut().for_each(|x| *x = (*x * 2.0).round() / 2.0),
            2 => row.iter_mut().for_each(|x| *x = x.round()),
            3 if r % 12 == 3 => row.iter_mut().for_each(|x| *x = -1.5),
            4 => row[v - 1] = 9.0,
            5 => {
                for i in (0..v).step_by(3) {
                    row[i] = f32::NEG_INFINITY;
                }
                row[v / 2] = 8.5;
            }
            _ => {}
        }
    }
    Logits { v, stride, data }
}

/// Run the kernel: out[o] drawn from row rows[o] with uniforms[o].
fn gpu_sample(
    gpu: &Gpu,
    logits: &Logits,
    rows: &[u32],
    uniforms: &[f32],
    s: &SampleSettings,
) -> Vec<u32> {
    let n = rows.len();
    assert_eq!(uniforms.len(), n);
    let out = zeros(gpu, "tokens", n);
    let (l, r, u) = (
        upload(gpu, "logits", &logits.data),
        upload_pod(gpu, "rows", rows),
        upload(gpu, "uniforms", uniforms),
    );
    let d = kernels::sample(gpu, &out, &l, &r, &u, n, logits.v, logits.stride, s);
    run(gpu, &[&d]);
    download(gpu, &out, n)
        .unwrap_or_else(|e| panic!("download on {}: {e}", gpu.label))
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

fn run(gpu: &Gpu, dispatches: &[&Dispatch]) {
    kernels::run(gpu, dispatches).unwrap_or_else(|e| panic!("sample on {}: {e}", gpu.label));
}

/// Outputs in a scrambled order, rows repeated: output o reads row
/// (o * 7 + 3) % nrows.
fn row_map(n: usize, nrows: usize) -> Vec<u32> {
    (0..n).map(|o| ((o * 7 + 3) % nrows) as u32).collect()
}

#[test]
fn greedy_is_the_argmax_lowest_index_on_ties() {
    common::for_each_adapter(|gpu| {
        for (v, nrows, n) in [(7, 24, 40), (97, 24, 40), (50257, 12, 12)] {
            let logits = make_logits(v as u64, nrows, v);
            let rows = row_map(n, nrows);
            // uniforms are ignored by greedy: pass noise
            let us: Vec<f32> = (0..n as u64).map(|o| sampling::uniform(1, o, 0)).collect();
            let got = gpu_sample(gpu, &logits, &rows, &us, &SampleSettings::default());
            for (o, (&g, &r)) in got.iter().zip(&rows).enumerate() {
                let row = logits.row(r as usize);
                let want = sampling::argmax(row);
                assert_eq!(
                    g, want,
                    "V={v} output {o} (row {r}): gpu {g}, argmax {want} (value {})",
                    row[want as usize]
                );
            }
        }
    });
}

/// Settings sampled in every case: temperature alone, top-k (ties at the
/// threshold, k = 1, k >= V = off, k above the kernel's 1024 candidates),
/// top-p (tiny too), and both.
const SETTINGS: [(f32, usize, f32); 12] = [
    (1.0, 0, 1.0),
    (0.6, 0, 1.0),
    (1.5, 40, 1.0),
    (1.0, 3, 1.0),
    (0.8, 1, 1.0),
    (1.0, 100_000, 1.0),
    (1.0, 0, 0.9),
    (2.0, 0, 0.5),
    (1.0, 0, 1e-6),
    (0.8, 50, 0.95),
    (1.0, 3000, 1.0),
    (1.2, 3000, 0.6),
];

/// Compare the GPU's tokens with `sample_row` for every setting; returns
/// (outputs, mismatches) and panics on any mismatch that is not a rounding
/// tie or any token outside the kept set.
fn check_sampling(gpu: &Gpu, v: usize, nrows: usize, per_row: usize) -> (usize, usize) {
    let logits = make_logits(100 + v as u64, nrows, v);
    let n = nrows * per_row;
    let rows = row_map(n, nrows);
    let (mut total, mut mismatches) = (0, 0);
    for (si, &(t, k, p)) in SETTINGS.iter().enumerate() {
        let s = settings(t, k, p);
        let mut us: Vec<f32> = (0..n as u64)
            .map(|o| sampling::uniform(si as u64, o, v as u64))
            .collect();
        // the ends of [0, 1)
        us[0] = 0.0;
        us[1] = 1.0 - f32::EPSILON / 2.0;
        let got = gpu_sample(gpu, &logits, &rows, &us, &s);
        for (o, ((&g, &r), &u)) in got.iter().zip(&rows).zip(&us).enumerate() {
            let row = logits.row(r as usize);
            let what = format!("V={v} {s:?} output {o} (row {r}) u={u}");
            assert!((g as usize) < v, "{what}: gpu token {g} >= V");
            let keep = kept(row, &s);
            assert!(
                keep[g as usize],
                "{what}: gpu token {g} (logit {}) is not in the kept set ({} kept)",
                row[g as usize],
                keep.iter().filter(|&&k| k).count()
            );
            let want = sample_row(row, &s, u);
            total += 1;
            if g == want {
                continue;
            }
            mismatches += 1;
            // A tie: the CPU's cumulative mass at the boundary between the two
            // choices (after the lower one) is u × total up to rounding.
            let w = kept_mass(row, &s, &keep);
            let sum: f64 = w.iter().sum();
            let x = u as f64 * sum;
            let lower = g.min(want) as usize;
            let cum: f64 = w[..=lower].iter().sum();
            assert!(
                (cum - x).abs() <= 1e-4 * x + 1e-7 * sum,
                "{what}: gpu {g}, cpu {want}: cumulative mass {cum} at token {lower} vs \
                 u*total {x} (total {sum}) is no rounding tie"
            );
        }
    }
    (total, mismatches)
}

#[test]
fn sampling_matches_cpu_up_to_rounding_ties() {
    common::for_each_adapter(|gpu| {
        let (mut total, mut mismatches) = (0, 0);
        for (v, nrows, per_row) in [(7, 12, 16), (97, 12, 16), (50257, 6, 4)] {
            let (t, m) = check_sampling(gpu, v, nrows, per_row);
            println!("V={v}: {m} of {t} draws differ from the CPU (rounding ties)");
            total += t;
            mismatches += m;
        }
        assert!(
            mismatches * 100 < total,
            "{mismatches} of {total} draws differ from the CPU: more than 1 %"
        );
    });
}

/// Draws follow the distribution: frequencies over many outputs of one row
/// against the CPU's kept probabilities (GPU and CPU both from `uniform`).
#[test]
fn gpu_frequencies_match_probabilities() {
    let gpu = common::gpu();
    let logits = Logits {
        v: 5,
        stride: 5,
        data: vec![0.2, -0.5, 1.0, 0.9, -2.0],
    };
    let n = 4000;
    let rows = vec![0u32; n];
    let us: Vec<f32> = (0..n as u64).map(|o| sampling::uniform(77, o, 0)).collect();
    for s in [settings(1.0, 0, 1.0), settings(0.7, 3, 0.8)] {
        let got = gpu_sample(&gpu, &logits, &rows, &us, &s);
        let keep = kept(logits.row(0), &s);
        let w = kept_mass(logits.row(0), &s, &keep);
        let sum: f64 = w.iter().sum();
        let mut counts = [0usize; 5];
        for &g in &got {
            counts[g as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = w[i] / sum;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            let f = c as f64 / n as f64;
            assert!(
                (f - p).abs() <= 4.0 * se,
                "{s:?} token {i}: frequency {f} vs probability {p} (se {se})"
            );
        }
    }
}

#[test]
fn dispatch_params_clamp_top_k_and_lay_out_the_grid() {
    let s = settings(0.9, 50257, 0.5);
    let p = SampleParams::new(3, 50257, 50260, &s);
    assert_eq!(
        (p.n, p.v, p.ld, p.top_k, p.top_p),
        (3, 50257, 50260, 0, 0.5)
    );
    assert_eq!(p.groups(), [3, 1, 1]);
    let p = SampleParams::new(70_000, 7, 7, &settings(1.0, 5, 1.0));
    assert_eq!(p.top_k, 5);
    assert_eq!(p.groups(), [65535, 2, 1]);
    let p = SampleParams::new(0, 7, 7, &SampleSettings::default());
    assert_eq!(p.groups(), [1, 1, 1]);
}

// ---------------------------------------------------------------------------
// speed (run by hand: cargo test --release --test sample -- --ignored --nocapture)

/// The `sample` shader with other constants: workgroup size, thresholds per
/// search pass and passes.
fn variant_source(wg: u32, m: u32, passes: u32) -> String {
    let src = SHADERS.iter().find(|(n, _)| *n == "sample").unwrap().1;
    let mut out = src.to_string();
    for (name, value) in [("WG", wg), ("M", m), ("PASSES", passes)] {
        let line = src
            .lines()
            .find(|l| l.starts_with(&format!("const {name}: u32 = ")))
            .unwrap_or_else(|| panic!("no const {name} in sample.wgsl"));
        let decl = line.split(';').next().unwrap();
        out = out.replace(decl, &format!("const {name}: u32 = {value}u"));
    }
    out
}

/// GPT-2-like rows of V logits: roughly normal (sd 2.5); "peaked" rows also
/// lift 20 tokens by 6..12 (a few likely tokens, as usual), "flat" rows do
/// not (the nucleus at top-p 0.9 then holds thousands of tokens).
fn realistic_logits(seed: u64, nrows: usize, v: usize, peaked: bool) -> Logits {
    let mut rng = Rng::new(seed);
    let mut data = Vec::with_capacity(nrows * v);
    for _ in 0..nrows {
        let start = data.len();
        for _ in 0..v {
            let s: f32 = (0..4).map(|_| rng.uniform()).sum();
            data.push(s * 2.5 / (4.0f32 / 3.0).sqrt());
        }
        if peaked {
            for _ in 0..20 {
                let i = rng.below(v as u32) as usize;
                data[start + i] += 9.0 + 3.0 * rng.uniform();
            }
        }
    }
    Logits { v, stride: v, data }
}

/// Milliseconds per row at V = 50257, for one row (latency) and 8 rows
/// (throughput: lavapipe runs workgroups on all cores). SAMPLE_VARIANTS="64,8,11
/// 32,8,11" times other (WG, M, PASSES); SAMPLE_SHADER=path times that file.
#[test]
#[ignore = "timing, run by hand"]
fn sample_speed() {
    use std::time::Instant;
    use wgpu::util::DeviceExt;

    let gpu = common::gpu();
    let v = 50257;
    let cases = [
        ("greedy", SampleSettings::default()),
        ("temperature", settings(1.0, 0, 1.0)),
        ("top-k 50", settings(1.0, 50, 1.0)),
        ("top-p 0.9", settings(1.0, 0, 0.9)),
        ("top-k 50 + top-p 0.9", settings(1.0, 50, 0.9)),
    ];
    let file = std::env::var("SAMPLE_SHADER").ok();
    let variants: Vec<Option<(u32, u32, u32)>> = match std::env::var("SAMPLE_VARIANTS") {
        Ok(list) => list
            .split_whitespace()
            .map(|t| {
                let n: Vec<u32> = t.split(',').map(|x| x.parse().unwrap()).collect();
                Some((n[0], n[1], n[2]))
            })
            .collect(),
        Err(_) => vec![None],
    };
    println!("V = {v} on {}: ms per row", gpu.label);
    for variant in &variants {
        let src = match (&file, variant) {
            (Some(f), _) => std::fs::read_to_string(f).unwrap(),
            (None, Some((wg, m, passes))) => variant_source(*wg, *m, *passes),
            (None, None) => SHADERS
                .iter()
                .find(|(n, _)| *n == "sample")
                .unwrap()
                .1
                .into(),
        };
        let module = gpu
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("sample variant"),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let pipeline = gpu
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("sample variant"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    zero_initialize_workgroup_memory: false, // as Kernels does
                    ..Default::default()
                },
                cache: None,
            });
        for peaked in [true, false] {
            let logits = realistic_logits(5, 8, v, peaked);
            let lbuf = upload(&gpu, "logits", &logits.data);
            for n in [1usize, 8] {
                let rows: Vec<u32> = (0..n as u32).collect();
                let us: Vec<f32> = (0..n as u64).map(|o| sampling::uniform(3, o, 0)).collect();
                let (rbuf, ubuf, out) = (
                    upload_pod(&gpu, "rows", &rows),
                    upload(&gpu, "u", &us),
                    zeros(&gpu, "out", n),
                );
                let kind = if peaked { "peaked" } else { "flat" };
                let mut line = format!("{variant:?} {kind:6} {n} rows:");
                for (name, s) in &cases {
                    let p = SampleParams::new(n, v, logits.stride, s);
                    let ubo = gpu
                        .device
                        .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                            label: None,
                            contents: bytemuck::bytes_of(&p),
                            usage: wgpu::BufferUsages::UNIFORM,
                        });
                    let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &pipeline.get_bind_group_layout(0),
                        entries: &[&out, &lbuf, &rbuf, &ubuf, &ubo]
                            .iter()
                            .enumerate()
                            .map(|(i, b)| wgpu::BindGroupEntry {
                                binding: i as u32,
                                resource: b.as_entire_binding(),
                            })
                            .collect::<Vec<_>>(),
                    });
                    let reps = 10;
                    let mut best = f64::MAX;
                    for _ in 0..5 {
                        let mut enc = gpu.device.create_command_encoder(&Default::default());
                        {
                            let mut pass = enc.begin_compute_pass(&Default::default());
                            for _ in 0..reps {
                                pass.set_pipeline(&pipeline);
                                pass.set_bind_group(0, &bg, &[]);
                                let [x, y, z] = p.groups();
                                pass.dispatch_workgroups(x, y, z);
                            }
                        }
                        let t0 = Instant::now();
                        gpu.queue.submit([enc.finish()]);
                        gpu.wait().unwrap();
                        best = best.min(t0.elapsed().as_secs_f64() / reps as f64);
                    }
                    // and the tokens agree with the CPU
                    let got = download(&gpu, &out, n).unwrap();
                    for (r, g) in got.into_iter().map(f32::to_bits).enumerate() {
                        if file.is_some() && n == 1 {
                            println!("({name}: out {g:#x})");
                        }
                        if file.is_none() {
                            let want = sample_row(logits.row(r), s, us[r]);
                            assert!(kept(logits.row(r), s)[g as usize], "{name}: {g} not kept");
                            if g != want {
                                println!("({name} row {r}: gpu {g}, cpu {want})");
                            }
                        }
                    }
                    line += &format!("  {name} {:.2}", best * 1e3 / n as f64);
                }
                println!("{line}");
            }
        }
    }
}
