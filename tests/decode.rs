//! Decoding with a KV cache: the three cache kernels against their CPU twins
//! on every adapter (grouped-query heads and sliding windows too),
//! and the pipelined decode (`executor::decode`) against full forwards — the
//! logits every token was sampled from equal a forward over the whole
//! sequence so far, at every step, for one device and pipelines of 2 and 3,
//! with 1 to 4 groups in flight and prompts of different lengths.

mod common;

use common::{assert_close, Rng};
use wgpipe::cpu;
use wgpipe::device::{download, upload, upload_pod, zeros, Gpu};
use wgpipe::executor::{Cluster, DeviceGroup};
use wgpipe::io::TokenBatch;
use wgpipe::kernels::{self, Dispatch};
use wgpipe::model::{gpu as model_gpu, Gpt2Config, Gpt2Weights};
use wgpipe::sampling::SampleSettings;
use wgpipe::workload::decode::{generate, stop_at_eos, DecodeJob, DecodeRun as Generation};

fn run(gpu: &Gpu, dispatches: &[&Dispatch]) {
    kernels::run(gpu, dispatches).unwrap_or_else(|e| panic!("on {}: {e}", gpu.label));
}

fn read(gpu: &Gpu, buf: &wgpu::Buffer, len: usize) -> Vec<f32> {
    download(gpu, buf, len).unwrap_or_else(|e| panic!("download on {}: {e}", gpu.label))
}

/// Rows of sequences at different positions, a slot each, in a cache of
/// `slots` x `n_pos`.
fn rows_table(rng: &mut Rng, n: usize, slots: usize, n_pos: usize) -> Vec<(u32, u32)> {
    (0..n)
        .map(|r| {
            let slot = (r % slots) as u32;
            let pos = (rng.next_u64() % n_pos as u64) as u32;
            (slot, pos)
        })
        .collect()
}

fn flat(rows: &[(u32, u32)]) -> Vec<u32> {
    rows.iter().flat_map(|&(s, p)| [s, p]).collect()
}

#[test]
fn cache_kernels_match_their_cpu_twins() {
    // (rows, NH, NKV, HD, slots, n_pos, window): GPT-2's multi-head shapes,
    // a head dim over 64 (two chunks), grouped-query (NKV = NH/2),
    // multi-query (NKV = 1), head dims not powers of two, and sliding
    // windows shorter than the positions attended.
    let shapes = [
        (3, 3, 3, 12, 4, 9, 0),
        (5, 5, 5, 10, 3, 17, 0),
        (2, 2, 2, 80, 2, 6, 0),
        (7, 4, 2, 10, 3, 20, 0),
        (5, 6, 1, 12, 4, 33, 0),
        (6, 4, 2, 12, 3, 40, 7),
        (4, 2, 1, 65, 2, 30, 5),
    ];
    common::for_each_adapter(|gpu| {
        let mut rng = Rng::new(3);
        for (n, nh, nkv, hd, slots, n_pos, window) in shapes {
            let what = format!(
                "on {}: N={n} NH={nh} NKV={nkv} HD={hd} slots={slots} n_pos={n_pos} window={window}",
                gpu.label
            );
            // Distinct (slot, pos) per row, as decoding writes them.
            let rows: Vec<(u32, u32)> = (0..n)
                .map(|r| ((r % slots) as u32, (n_pos - 1 - r / slots) as u32))
                .collect();
            let cache_len = slots * n_pos * nkv * hd;
            let k0 = rng.vec(cache_len, 1.0);
            let v0 = rng.vec(cache_len, 1.0);
            let qkv = rng.vec(n * (nh + 2 * nkv) * hd, 1.0);

            let (kc, vc) = (upload(gpu, "k", &k0), upload(gpu, "v", &v0));
            let (qkv_b, rows_b) = (
                upload(gpu, "qkv", &qkv),
                upload_pod(gpu, "rows", &flat(&rows)),
            );
            let out = zeros(gpu, "out", n * nh * hd);
            let write =
                kernels::kv_cache_write(gpu, &kc, &vc, &qkv_b, &rows_b, n, nh, nkv, hd, n_pos);
            let att = kernels::attention_decode(
                gpu, &out, &qkv_b, &kc, &vc, &rows_b, n, nh, nkv, hd, n_pos, window,
            );
            run(gpu, &[&write, &att]);

            let (mut k1, mut v1) = (k0.clone(), v0.clone());
            cpu::decode::kv_cache_write(&mut k1, &mut v1, &qkv, &rows, nh, nkv, hd, n_pos);
            assert_eq!(read(gpu, &kc, cache_len), k1, "kv_cache_write k {what}");
            assert_eq!(read(gpu, &vc, cache_len), v1, "kv_cache_write v {what}");
            let mut want = vec![0.0; n * nh * hd];
            cpu::decode::attention_decode(
                &mut want, &qkv, &k1, &v1, &rows, nh, nkv, hd, n_pos, window,
            );
            assert_close(
                &format!("attention_decode {what}"),
                &read(gpu, &out, n * nh * hd),
                &want,
                2e-5,
                1e-4,
            );
        }
    });
}

/// embedding_decode over two vocabulary chunks, rows at their own
/// positions, with a position table and without one (`wpe` `None`).
#[test]
fn embedding_decode_matches_its_cpu_twin() {
    common::for_each_adapter(|gpu| {
        let mut rng = Rng::new(4);
        let (n, c, v, max_t) = (6, 37, 11, 9);
        let wte = rng.vec(v * c, 1.0);
        let wpe = rng.vec(max_t * c, 1.0);
        let ids: Vec<u32> = (0..n).map(|r| ((r * 7) % v) as u32).collect();
        let rows = rows_table(&mut rng, n, 3, max_t);
        let (ids_b, wpe_b) = (upload_pod(gpu, "ids", &ids), upload(gpu, "wpe", &wpe));
        let rows_b = upload_pod(gpu, "rows", &flat(&rows));
        let split = 4;
        let chunk = |v0: usize, len: usize| {
            let mut t = vec![0.0f32; c * len];
            for i in 0..len {
                for ch in 0..c {
                    t[ch * len + i] = wte[(v0 + i) * c + ch];
                }
            }
            upload(gpu, "wte_t", &t)
        };
        let chunks = [
            (0, split, chunk(0, split)),
            (split, v - split, chunk(split, v - split)),
        ];
        for with_wpe in [true, false] {
            let out = zeros(gpu, "x", n * c);
            let ds: Vec<Dispatch> = chunks
                .iter()
                .map(|(v0, len, tb)| {
                    let wpe = with_wpe.then_some(&wpe_b);
                    kernels::embedding_decode(gpu, &out, &ids_b, tb, wpe, &rows_b, n, c, *v0, *len)
                })
                .collect();
            run(gpu, &ds.iter().collect::<Vec<_>>());
            let mut want = vec![0.0; n * c];
            let wpe_host = with_wpe.then_some(&wpe[..]);
            cpu::decode::embedding_decode(&mut want, &ids, &wte, wpe_host, &rows, c);
            assert_eq!(
                read(gpu, &out, n * c),
                want,
                "embedding_decode on {} wpe={with_wpe}",
                gpu.label
            );
        }
    });
}

fn greedy(prompts: &[Vec<u32>], new: usize, groups: usize) -> DecodeJob {
    DecodeJob {
        prompts: prompts.to_vec(),
        max_new_tokens: new,
        groups,
        sampling: SampleSettings::default(),
        seed: 0,
        keep_logits: true,
    }
}

fn generate_on(gpus: &[Gpu], w: &Gpt2Weights, job: &DecodeJob) -> Generation {
    let groups: Vec<DeviceGroup> = gpus.iter().map(DeviceGroup::single).collect();
    generate(&groups, &Cluster::Local, w, job, None, None)
        .unwrap_or_else(|e| panic!("generate: {e}"))
}

/// Prompts of 1 to 7 tokens.
fn prompts(cfg: &Gpt2Config, lens: &[usize], seed: u64) -> Vec<Vec<u32>> {
    let mut rng = Rng::new(seed);
    lens.iter()
        .map(|&n| {
            (0..n)
                .map(|_| (rng.next_u64() % cfg.vocab_size as u64) as u32)
                .collect()
        })
        .collect()
}

/// Every token's logits equal a full forward's last row over the sequence
/// so far (on the first device), and greedy picked its argmax.
fn check_against_full_forward(
    gpu: &Gpu,
    w: &Gpt2Weights,
    job: &DecodeJob,
    g: &Generation,
    what: &str,
) {
    let v = w.config.vocab_size;
    for (s, prompt) in job.prompts.iter().enumerate() {
        assert_eq!(g.ids[s].len(), prompt.len() + job.max_new_tokens, "{what}");
        assert_eq!(
            &g.ids[s][..prompt.len()],
            &prompt[..],
            "{what}: the prompt is kept"
        );
        for k in 0..job.max_new_tokens {
            let seq = &g.ids[s][..prompt.len() + k];
            let tokens = TokenBatch {
                ids: seq.to_vec(),
                batch: 1,
                seq: seq.len(),
            };
            let full = model_gpu::forward(gpu, w, &tokens, 1).unwrap().logits;
            let last = &full[(seq.len() - 1) * v..];
            let got = &g.logits[s][k];
            assert_close(
                &format!("{what}: sequence {s} step {k}"),
                got,
                last,
                1e-5,
                1e-4,
            );
            let argmax = got
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &x)| if x > b.1 { (i, x) } else { b },
                )
                .0;
            assert_eq!(
                g.ids[s][prompt.len() + k],
                argmax as u32,
                "{what}: greedy token {k} of {s}"
            );
        }
    }
}

#[test]
fn cached_decode_equals_full_forwards_on_one_device() {
    let gpu = common::gpu();
    for name in ["tiny", "small-test"] {
        let cfg = Gpt2Config::named(name).unwrap();
        let w = Gpt2Weights::init(&cfg, 5).unwrap();
        // Lengths 1..7: one-token prompts and right padding up to 7.
        let p = prompts(&cfg, &[3, 7, 1, 5], 11);
        for groups in [1, 2, 4] {
            let job = greedy(&p, 6, groups);
            let g = generate_on(std::slice::from_ref(&gpu), &w, &job);
            check_against_full_forward(&gpu, &w, &job, &g, &format!("{name} P=1 groups={groups}"));
        }
    }
}

#[test]
fn pipelined_decode_gives_the_single_device_tokens_and_logits() {
    let gpu = common::gpu();
    let cfg = Gpt2Config::named("small-test").unwrap();
    let w = Gpt2Weights::init(&cfg, 9).unwrap();
    let p = prompts(&cfg, &[4, 2, 6, 1, 3], 21);
    let one = generate_on(std::slice::from_ref(&gpu), &w, &greedy(&p, 5, 1));
    for (devices, groups) in [(2, 1), (2, 2), (2, 4), (3, 3), (3, 5)] {
        let gpus: Vec<Gpu> = (0..devices).map(|_| common::gpu()).collect();
        let job = greedy(&p, 5, groups);
        let g = generate_on(&gpus, &w, &job);
        let what = format!("P={devices} groups={groups}");
        // The same kernels on the same rows: the same tokens, and logits
        // within rounding of the single device's.
        assert_eq!(g.ids, one.ids, "{what}");
        for s in 0..p.len() {
            for k in 0..5 {
                assert_close(
                    &format!("{what} s={s} k={k}"),
                    &g.logits[s][k],
                    &one.logits[s][k],
                    1e-6,
                    1e-5,
                );
            }
        }
        // One prefill and four decode passes per group, on every device;
        // token times increase.
        assert_eq!(g.schedule.microbatches, groups * 5, "{what}");
        for t in &g.token_us {
            assert!(t.windows(2).all(|w| w[1] > w[0]), "{what}: {t:?}");
        }
        assert!(
            g.kv_bytes.iter().all(|&b| b > 0),
            "{what}: {:?}",
            g.kv_bytes
        );
    }
    check_against_full_forward(&gpu, &w, &greedy(&p, 5, 1), &one, "small-test P=1");
}

#[test]
fn each_stage_holds_the_cache_of_its_own_layers_only() {
    let cfg = Gpt2Config::named("small-test").unwrap(); // 3 layers
    let w = Gpt2Weights::init(&cfg, 1).unwrap();
    let p = prompts(&cfg, &[2, 3], 4);
    let one = generate_on(&[common::gpu()], &w, &greedy(&p, 2, 1));
    let two = generate_on(&[common::gpu(), common::gpu()], &w, &greedy(&p, 2, 2));
    // Two sequences plus the padding slot, each with room for the longest
    // prompt and its 2 new tokens (3 + 2 positions) of C floats, a key and a
    // value per layer: 2 + 1 layers split over two devices.
    let positions = 3 + 2;
    let per_layer = (3 * positions * cfg.n_embd * 4 * 2) as u64;
    assert_eq!(one.kv_bytes, vec![3 * per_layer]);
    assert_eq!(two.kv_bytes, vec![2 * per_layer, per_layer]);
}

#[test]
fn bad_generation_requests_are_refused_by_name() {
    let cfg = Gpt2Config::named("tiny").unwrap(); // n_positions 64, vocab 97
    let w = Gpt2Weights::init(&cfg, 1).unwrap();
    let gpu = common::gpu();
    let try_job = |prompts: Vec<Vec<u32>>, new: usize, groups: usize, top_p: f32| {
        let mut job = greedy(&prompts, new, groups);
        job.sampling.top_p = top_p;
        let groups = [DeviceGroup::single(&gpu)];
        match generate(&groups, &Cluster::Local, &w, &job, None, None) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    };
    let e = try_job(vec![vec![1; 60]], 10, 1, 1.0);
    assert!(
        e.contains("at most 54 fit") && e.contains("n_positions 64"),
        "{e}"
    );
    let e = try_job(vec![vec![1, 2], vec![]], 3, 1, 1.0);
    assert!(e.contains("prompt 1 is empty"), "{e}");
    let e = try_job(vec![vec![1, 97]], 3, 1, 1.0);
    assert!(e.contains("token id 97") && e.contains("97"), "{e}");
    let e = try_job(vec![vec![1]], 3, 2, 1.0);
    assert!(e.contains("--groups 2"), "{e}");
    let e = try_job(vec![vec![1]], 3, 1, 0.0);
    assert!(e.contains("--top-p"), "{e}");
}

#[test]
fn stop_at_eos_fills_the_rest_of_the_row() {
    let mut ids = vec![vec![5, 9, 1, 7, 9, 2], vec![9, 3, 4, 4]];
    stop_at_eos(&mut ids, &[2, 1], 9);
    // Row 0: the prompt's own 9 does not count; the first new 9 does.
    assert_eq!(ids[0], vec![5, 9, 1, 7, 9, 9]);
    assert_eq!(ids[1], vec![9, 3, 4, 4]);
}

#[test]
fn decode_logits_equal_transformers_full_forwards_on_the_fixture() {
    // transformers' next-token logits (a forward without cache over the
    // whole sequence) after the prompt and after each of 3 greedy tokens.
    let dir = common::fixture_dir("tiny-gpt2-gen");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("generate_ref.json")).unwrap())
            .unwrap();
    let w = wgpipe::model::checkpoint::load_checkpoint(&dir).unwrap();
    let prompt: Vec<u32> = serde_json::from_value(r["step_logits"]["prompt_ids"].clone()).unwrap();
    let next: Vec<u32> = serde_json::from_value(r["step_logits"]["generated_ids"].clone()).unwrap();
    let want: Vec<Vec<f32>> = serde_json::from_value(r["step_logits"]["logits"].clone()).unwrap();
    for devices in [1, 2, 4] {
        let gpus: Vec<Gpu> = (0..devices).map(|_| common::gpu()).collect();
        let g = generate_on(
            &gpus,
            &w,
            &greedy(std::slice::from_ref(&prompt), want.len(), 1),
        );
        for (k, row) in want.iter().enumerate() {
            assert_close(
                &format!("P={devices} step {k}"),
                &g.logits[0][k],
                row,
                1e-5,
                1e-4,
            );
        }
        assert_eq!(
            &g.ids[0][prompt.len()..][..next.len()],
            &next[..],
            "P={devices}"
        );
    }
}

#[test]
fn attention_decode_reads_a_long_cache_on_every_adapter() {
    // GPT-2's whole context at HD 64: past ~500 positions a one-dim-at-a-time
    // loop over the head dims ran into llvmpipe's 65,535 loop iterations per
    // invocation and returned wrong values.
    common::for_each_adapter(|gpu| {
        let mut rng = Rng::new(11);
        let (nh, hd, n_pos) = (2, 64, 1024);
        let rows = [(0u32, 1023u32), (0, 600), (0, 40)];
        let n = rows.len();
        let qkv = rng.vec(n * 3 * nh * hd, 1.0);
        let (kc, vc) = (rng.vec(n_pos * nh * hd, 1.0), rng.vec(n_pos * nh * hd, 1.0));
        let out = zeros(gpu, "out", n * nh * hd);
        let rows_b = upload_pod(gpu, "rows", &flat(&rows));
        let (q_b, k_b, v_b) = (
            upload(gpu, "qkv", &qkv),
            upload(gpu, "k", &kc),
            upload(gpu, "v", &vc),
        );
        let d = kernels::attention_decode(
            gpu, &out, &q_b, &k_b, &v_b, &rows_b, n, nh, nh, hd, n_pos, 0,
        );
        run(gpu, &[&d]);
        let mut want = vec![0f32; n * nh * hd];
        cpu::decode::attention_decode(&mut want, &qkv, &kc, &vc, &rows, nh, nh, hd, n_pos, 0);
        assert_close(
            &format!("attention_decode over 1024 positions on {}", gpu.label),
            &read(gpu, &out, n * nh * hd),
            &want,
            1e-5,
            1e-4,
        );
    });
}
