//! Every backward WGSL kernel against its CPU twin in `cpu::backward`, on odd
//! shapes, on a real adapter (lavapipe here). Gradients start from non-zero
//! values, so accumulation (+=) is checked too.
//!
//! The kernels have no dispatch functions in `kernels` yet (they come with the
//! kernels-layer reshape, issue 8), so this file binds them itself with a
//! minimal harness: one device, auto layout, buffers bound in binding order.
//! Like every GPU test here it fails loudly, never skips, without an adapter.

use wgpipe::cpu::backward::*;

// ----------------------------------------------------------------------------
// harness

struct Dev {
    device: wgpu::Device,
    queue: wgpu::Queue,
}

fn dev() -> Dev {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::from_env().unwrap_or(wgpu::Backends::all());
    let instance = wgpu::Instance::new(desc);
    let adapter =
        pollster::block_on(instance.request_adapter(&Default::default())).unwrap_or_else(|e| {
            panic!(
                "\n=== NO wgpu ADAPTER: backward kernel tests cannot run ({e}) ===\n\
                 install Mesa's software Vulkan driver: apt-get install -y mesa-vulkan-drivers\n"
            )
        });
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("request_device");
    Dev { device, queue }
}

/// A storage buffer's initial contents.
enum Buf<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
}

/// Params words (u32, or f32 bits) of a uniform struct of 4-byte scalars.
fn words(w: &[u32]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Run `shaders/{name}.wgsl` once per (params, workgroups) of `passes`, in
/// order, on the same storage buffers (bindings 0.. in order, params last);
/// return every storage buffer's final contents as f32.
fn run(d: &Dev, name: &str, bufs: &[Buf], passes: &[(Vec<u8>, [u32; 3])]) -> Vec<Vec<f32>> {
    use wgpu::util::DeviceExt;
    let path = format!("{}/shaders/{name}.wgsl", env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let module = d.device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(name),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipeline = d
        .device
        .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
    let usage =
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let storage: Vec<wgpu::Buffer> = bufs
        .iter()
        .map(|b| {
            let contents: Vec<u8> = match b {
                Buf::F32(x) => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
                Buf::U32(x) => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            d.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: None,
                    contents: &contents,
                    usage,
                })
        })
        .collect();
    let mut encoder = d.device.create_command_encoder(&Default::default());
    let mut keep = Vec::new();
    for (params, groups) in passes {
        let mut padded = params.clone();
        padded.resize(params.len().next_multiple_of(16), 0);
        let ubuf = d
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &padded,
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let mut entries: Vec<wgpu::BindGroupEntry> = storage
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        entries.push(wgpu::BindGroupEntry {
            binding: storage.len() as u32,
            resource: ubuf.as_entire_binding(),
        });
        let bind = d.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        keep.push(ubuf);
    }
    let staging: Vec<wgpu::Buffer> = storage
        .iter()
        .map(|b| {
            let s = d.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: b.size(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            encoder.copy_buffer_to_buffer(b, 0, &s, 0, b.size());
            s
        })
        .collect();
    d.queue.submit([encoder.finish()]);
    for s in &staging {
        s.slice(..)
            .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
    }
    d.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
    staging
        .iter()
        .map(|s| {
            let out = {
                let view = s.slice(..).get_mapped_range().expect("mapped range");
                view.chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect()
            };
            s.unmap();
            out
        })
        .collect()
}

/// 1-D grid: (workgroups, stride) for `threads` invocations of 64.
fn grid_1d(threads: usize) -> ([u32; 3], u32) {
    let groups = threads.div_ceil(64).max(1) as u32;
    ([groups, 1, 1], groups * 64)
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

/// |gpu - ref| <= atol + rtol |ref| everywhere; on failure, the first
/// mismatches and the largest difference.
fn assert_close(what: &str, gpu: &[f32], reference: &[f32], atol: f32, rtol: f32) {
    assert_eq!(gpu.len(), reference.len(), "{what}: length");
    let mut bad = Vec::new();
    let mut worst = (0, 0.0f32);
    for (i, (&g, &r)) in gpu.iter().zip(reference).enumerate() {
        let d = (g - r).abs();
        let ok = d <= atol + rtol * r.abs(); // false for NaN
        if !ok && bad.len() < 5 {
            bad.push(format!("[{i}] gpu {g} ref {r}"));
        }
        if d > worst.1 || d.is_nan() {
            worst = (i, d);
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: {bad:?}; largest diff {} at [{}]",
        worst.1,
        worst.0
    );
}

// ----------------------------------------------------------------------------
// kernels

#[test]
fn matmul_backward_kernels_match_cpu_on_a_column_slice() {
    let d = dev();
    // dout is columns 3 .. 3+OC of an (N, 17) matrix, as for an LM-head chunk.
    let (n, c, oc, ldd, col_off) = (7, 13, 10, 17, 3);
    let wide = rand_vec(n * ldd, 1, 1.0);
    let dout: Vec<f32> = (0..n)
        .flat_map(|i| wide[i * ldd + col_off..][..oc].to_vec())
        .collect();
    let inp = rand_vec(n * c, 2, 1.0);
    let weight = rand_vec(c * oc, 3, 1.0);
    let dinp0 = rand_vec(n * c, 4, 1.0);
    let dw0 = rand_vec(c * oc, 5, 1.0);
    let db0 = rand_vec(oc, 6, 1.0);
    let params = words(&[n as u32, c as u32, oc as u32, ldd as u32, col_off as u32]);

    let mut want = dinp0.clone();
    matmul_backward_input(&mut want, &dout, &weight, n, c, oc);
    let groups = [(c as u32).div_ceil(8), (n as u32).div_ceil(8), 1];
    let bufs = [Buf::F32(&dinp0), Buf::F32(&wide), Buf::F32(&weight)];
    let got = run(
        &d,
        "matmul_backward_input",
        &bufs,
        &[(params.clone(), groups)],
    );
    assert_close("dinp", &got[0], &want, 1e-5, 1e-5);

    let mut want = dw0.clone();
    matmul_backward_weight(&mut want, &dout, &inp, n, c, oc);
    let groups = [(oc as u32).div_ceil(8), (c as u32).div_ceil(8), 1];
    let bufs = [Buf::F32(&dw0), Buf::F32(&wide), Buf::F32(&inp)];
    let got = run(&d, "matmul_backward_weight", &bufs, &[(params, groups)]);
    assert_close("dweight", &got[0], &want, 1e-5, 1e-5);

    let mut want = db0.clone();
    matmul_backward_bias(&mut want, &dout, n, oc);
    let (groups, stride) = grid_1d(oc);
    let params = words(&[n as u32, oc as u32, ldd as u32, col_off as u32, stride]);
    let got = run(
        &d,
        "matmul_backward_bias",
        &[Buf::F32(&db0), Buf::F32(&wide)],
        &[(params, groups)],
    );
    assert_close("dbias", &got[0], &want, 1e-5, 1e-5);
}

#[test]
fn layernorm_backward_kernel_matches_cpu() {
    let d = dev();
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
    layernorm_backward(&mut di, &mut dg, &mut db, &dout, &inp, &gamma, n, c, eps);
    let stats = vec![0.0f32; 2 * n];
    let (g0, s0) = grid_1d(n);
    let (g1, s1) = grid_1d(c);
    let p = |phase: u32, stride: u32| words(&[n as u32, c as u32, eps.to_bits(), phase, stride]);
    let bufs = [
        Buf::F32(&dinp0),
        Buf::F32(&dg0),
        Buf::F32(&db0),
        Buf::F32(&stats),
        Buf::F32(&dout),
        Buf::F32(&inp),
        Buf::F32(&gamma),
    ];
    let got = run(
        &d,
        "layernorm_backward",
        &bufs,
        &[(p(0, s0), g0), (p(1, s1), g1)],
    );
    assert_close("dinp", &got[0], &di, 1e-5, 1e-4);
    assert_close("dgamma", &got[1], &dg, 1e-5, 1e-4);
    assert_close("dbeta", &got[2], &db, 1e-5, 1e-5);
}

fn check_attention(b: usize, t: usize, c: usize, nh: usize, seed: u64) {
    let d = dev();
    let hd = c / nh;
    let qkv = rand_vec(b * t * 3 * c, seed, 1.5);
    let dout = rand_vec(b * t * c, seed + 1, 1.0);
    let dqkv0 = rand_vec(b * t * 3 * c, seed + 2, 1.0);
    let mut want = dqkv0.clone();
    attention_backward(&mut want, &dout, &qkv, b, t, c, nh);
    let nchunks = hd.div_ceil(64);
    let stats = vec![0.0f32; b * nh * t * 2];
    let scale = 1.0 / (hd as f32).sqrt();
    let p = |phase: u32, stride: u32| {
        let dims = [b, t, c, nh, hd, nchunks].map(|x| x as u32);
        words(&[&dims[..], &[scale.to_bits(), phase, stride]].concat())
    };
    let (g0, s0) = grid_1d(b * nh * t);
    let (g1, s1) = grid_1d(b * nh * t * nchunks);
    let bufs = [
        Buf::F32(&dqkv0),
        Buf::F32(&stats),
        Buf::F32(&dout),
        Buf::F32(&qkv),
    ];
    let got = run(
        &d,
        "attention_backward",
        &bufs,
        &[(p(0, s0), g0), (p(1, s1), g1)],
    );
    assert_close(
        &format!("dqkv B={b} T={t} C={c} NH={nh}"),
        &got[0],
        &want,
        2e-5,
        1e-4,
    );
}

#[test]
fn attention_backward_kernel_matches_cpu() {
    check_attention(2, 7, 12, 3, 21); // hd = 4
    check_attention(1, 5, 150, 2, 22); // hd = 75: two chunks of head dims
}

#[test]
fn gelu_and_residual_backward_kernels_match_cpu() {
    let d = dev();
    let len = 1001;
    let inp = rand_vec(len, 31, 10.0);
    let dout = rand_vec(len, 32, 1.0);
    let d0 = rand_vec(len, 33, 1.0);
    let mut want = d0.clone();
    gelu_backward(&mut want, &dout, &inp);
    let (g, s) = grid_1d(len);
    let bufs = [Buf::F32(&d0), Buf::F32(&dout), Buf::F32(&inp)];
    let got = run(&d, "gelu_backward", &bufs, &[(words(&[len as u32, s]), g)]);
    assert_close("gelu dinp", &got[0], &want, 1e-6, 1e-5);

    let a0 = rand_vec(len, 34, 1.0);
    let (mut da, mut db) = (a0.clone(), d0.clone());
    residual_backward(&mut da, &mut db, &dout);
    let bufs = [Buf::F32(&a0), Buf::F32(&d0), Buf::F32(&dout)];
    let got = run(
        &d,
        "residual_backward",
        &bufs,
        &[(words(&[len as u32, s]), g)],
    );
    assert_eq!((&got[0], &got[1]), (&da, &db));
}

#[test]
fn crossentropy_softmax_backward_kernel_matches_cpu() {
    let d = dev();
    let (n, v) = (9, 31);
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
    crossentropy_softmax_backward(&mut dl, &mut losses, &logits, &targets, scale, n, v);
    let (g, s) = grid_1d(n);
    let params = words(&[n as u32, v as u32, f32::to_bits(scale), s]);
    let bufs = [
        Buf::F32(&dl0),
        Buf::F32(&losses0),
        Buf::F32(&logits),
        Buf::U32(&targets),
    ];
    let got = run(&d, "crossentropy_softmax_backward", &bufs, &[(params, g)]);
    assert_close("dlogits", &got[0], &dl, 1e-6, 1e-5);
    assert_close("losses", &got[1], &losses, 1e-5, 1e-5);
}

#[test]
fn embedding_backward_kernel_matches_cpu_per_vocab_chunk() {
    let d = dev();
    let (b, t, c, v, maxt) = (2, 5, 6, 11, 7);
    let ids: Vec<u32> = [3, 3, 0, 10, 4, 4, 7, 3, 9, 0].to_vec(); // repeats
    let dout = rand_vec(b * t * c, 51, 1.0);
    let dwte0 = rand_vec(v * c, 52, 1.0);
    let dwpe0 = rand_vec(maxt * c, 53, 1.0);
    let (mut dwte, mut dwpe) = (dwte0.clone(), dwpe0.clone());
    embedding_backward(&mut dwte, &mut dwpe, &dout, &ids, b, t, c);
    // The GPU gradient is transposed and split by vocabulary: chunks [0, 4), [4, 11).
    let mut got_wte = vec![0.0f32; v * c];
    let mut got_wpe = Vec::new();
    for (k, (v0, vlen)) in [(0usize, 4usize), (4, 7)].into_iter().enumerate() {
        let chunk0: Vec<f32> = (0..c)
            .flat_map(|ch| (0..vlen).map(move |j| (ch, j)))
            .map(|(ch, j)| dwte0[(v0 + j) * c + ch])
            .collect();
        let (g, s) = grid_1d(c);
        let dims = [b * t, t, c, v0, vlen, (k == 0) as usize].map(|x| x as u32);
        let params = words(&[&dims[..], &[s]].concat());
        let wpe_in = if k == 0 {
            dwpe0.clone()
        } else {
            got_wpe.clone()
        };
        let bufs = [
            Buf::F32(&chunk0),
            Buf::F32(&wpe_in),
            Buf::F32(&dout),
            Buf::U32(&ids),
        ];
        let got = run(&d, "embedding_backward", &bufs, &[(params, g)]);
        for ch in 0..c {
            for j in 0..vlen {
                got_wte[(v0 + j) * c + ch] = got[0][ch * vlen + j];
            }
        }
        got_wpe = got[1].clone();
    }
    // Same additions in the same order: exact.
    assert_eq!(got_wte, dwte);
    assert_eq!(got_wpe, dwpe);
}
