//! Stages as MPI ranks (`--features mpi`): `mpirun -np 2` and `-np 4` on
//! this one machine, every rank on the software adapter, give exactly the
//! in-process run's logits, training losses, gradients and trained weights,
//! and generated tokens, and `bench bubble` the in-process sweep's untimed
//! figures; a rank that fails or dies
//! ends the job with a message naming it; bad launches are refused.
//!
//! Needs Open MPI's `mpirun` (`.ci/run` installs it). Running as root needs
//! Open MPI's allow-run-as-root settings: set here on the mpirun children
//! only. Every mpirun runs under `timeout`, so a hang fails the test instead
//! of hanging it (no test asserts a duration).
#![cfg(feature = "mpi")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use wgpipe::schedule::simulate::{simulate, Costs};
use wgpipe::schedule::{Schedule, ScheduleKind};

/// How long any one mpirun may take before the test calls it hung.
const HUNG_S: &str = "300";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wgpipe")
}

fn wgpipe(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run wgpipe")
}

/// `mpirun -np N wgpipe ARGS --transport mpi`, with `env` passed to every rank.
fn mpirun(np: usize, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "10", HUNG_S, "mpirun", "-np", &np.to_string()])
        .args(["--oversubscribe", "--bind-to", "none"]);
    for (k, v) in env {
        cmd.env(k, v).args(["-x", k]);
    }
    cmd.arg(bin())
        .args(args)
        .args(["--transport", "mpi"])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run mpirun ({e}): install Open MPI (apt-get install openmpi-bin libopenmpi-dev)")
    });
    assert_ne!(
        out.status.code(),
        Some(124),
        "mpirun did not finish within {HUNG_S} s: stderr {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}; stdout {}; stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "message lacks {n:?}: {err}");
    }
}

fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    (dir, p)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `run` over `np` ranks (one per Gpu: `--devices np`) writes exactly the
/// in-process run's logits, with every schedule device in the report (np /
/// `--tp` of them), the ranks' clocks aligned and every rank's compute in
/// the trace. Returns the MPI run's report.
fn same_logits(np: usize, flags: &[&str]) -> Value {
    // tiny-gpt2-4l's 3 heads and 97 tokens do not split in two; -gen's 4 and 320 do.
    let fixture = common::fixture_dir(if tp_of(flags) > 1 {
        "tiny-gpt2-gen"
    } else {
        "tiny-gpt2-4l"
    });
    logits_match(&fixture, np, flags)
}

/// The `--tp` among `flags` (1 without).
fn tp_of(flags: &[&str]) -> usize {
    flags
        .iter()
        .position(|&f| f == "--tp")
        .map_or(1, |i| flags[i + 1].parse().unwrap())
}

/// [`same_logits`] on any checkpoint: `run` in-process and over `np` ranks.
fn logits_match(fixture: &Path, np: usize, flags: &[&str]) -> Value {
    let tp = tp_of(flags);
    let devices = np.to_string();
    let mut args = vec![
        "run",
        "--checkpoint",
        path(fixture),
        "--devices",
        &devices,
        "--batch",
        "4",
        "--seq",
        "8",
        "--json",
    ];
    args.extend_from_slice(flags);
    let (_d1, local) = tmp("local.safetensors");
    let (_d2, remote) = tmp("mpi.safetensors");
    let (_d3, trace) = tmp("trace.json");
    let mut a = args.clone();
    a.extend(["--logits-out", path(&local)]);
    ok(&wgpipe(&a));
    let mut a = args.clone();
    a.extend(["--logits-out", path(&remote), "--trace", path(&trace)]);
    let stdout = ok(&mpirun(np, &a, &[]));
    // Rank 0 alone prints: one JSON document.
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        std::fs::read(&local).unwrap(),
        std::fs::read(&remote).unwrap(),
        "logits differ between in-process and {np} ranks ({flags:?})"
    );
    assert_eq!(v["device_names"].as_array().unwrap().len(), np / tp);
    assert_eq!(v["mpi"]["ranks"], np);
    assert_eq!(v["mpi"]["clock_error_us"].as_array().unwrap().len(), np);
    assert_eq!(v["mpi"]["clock_error_us"][0], 0.0);
    // The trace has every device's compute and the hops between them.
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let computing: std::collections::BTreeSet<String> = events
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == "compute")
        .map(|e| e["pid"].to_string() + &e["tid"].to_string())
        .collect();
    assert_eq!(computing.len(), np, "compute tracks: {computing:?}");
    v
}

#[test]
fn run_over_two_ranks_gives_the_in_process_logits() {
    same_logits(2, &["--microbatches", "4", "--split", "even"]);
    same_logits(
        2,
        &[
            "--microbatches",
            "4",
            "--schedule",
            "interleaved",
            "--virtual",
            "2",
        ],
    );
}

#[test]
fn run_over_four_ranks_gives_the_in_process_logits() {
    let v = same_logits(4, &["--microbatches", "3", "--split", "auto"]);
    // 4 layers over 4 stages: the one split, nothing profiled; each rank
    // read its one block (and the embedding or the head).
    let s = sizes(&common::fixture_dir("tiny-gpt2-4l"));
    assert_eq!(split_of(&v["split"]["split"]), [1, 1, 1, 1]);
    assert!(v["split"]["auto"].is_null(), "{v}");
    let (read, file) = reads_of(&v);
    assert_eq!(read, expected_reads(&s, &[1, 1, 1, 1], 4, false));
    assert_eq!(file, s.file);
}

#[test]
fn tensor_parallel_ranks_give_the_in_process_logits() {
    // One device of two ranks (TP 2), and two devices of two (TP 2 x PP 2):
    // every all-reduce crosses processes and adds in rank order, as
    // in-process does, so the logits are the same bits.
    same_logits(2, &["--tp", "2", "--microbatches", "2"]);
    let v = same_logits(
        4,
        &[
            "--tp",
            "2",
            "--microbatches",
            "4",
            "--schedule",
            "1f1b",
            "--split",
            "even",
        ],
    );
    // Ranks 0 and 1 are device 0, ranks 2 and 3 device 1: each reads its
    // device's stages (and uploads its shard of them).
    let s = sizes(&common::fixture_dir("tiny-gpt2-gen"));
    let per_device = expected_reads(&s, &[2, 2], 2, false);
    let (read, _) = reads_of(&v);
    assert_eq!(
        read,
        [per_device[0], per_device[0], per_device[1], per_device[1]]
    );
}

/// `generate` over `np` ranks: the in-process tokens and text.
fn same_tokens(np: usize, flags: &[&str]) -> Value {
    tokens_match(&common::fixture_dir("tiny-gpt2-gen"), np, flags)
}

/// [`same_tokens`] on any checkpoint with a tokenizer.
fn tokens_match(fixture: &Path, np: usize, flags: &[&str]) -> Value {
    let devices = np.to_string();
    let mut args = vec![
        "generate",
        "--checkpoint",
        path(fixture),
        "--prompt",
        "The pipeline",
        "--prompt",
        "Hello there, world",
        "--max-new-tokens",
        "6",
        "--devices",
        &devices,
        "--json",
    ];
    args.extend_from_slice(flags);
    let (_d1, local) = tmp("local.safetensors");
    let (_d2, remote) = tmp("mpi.safetensors");
    let mut a = args.clone();
    a.extend(["--ids-out", path(&local)]);
    let here: Value = serde_json::from_str(&ok(&wgpipe(&a))).unwrap();
    let mut a = args.clone();
    a.extend(["--ids-out", path(&remote)]);
    let there: Value = serde_json::from_str(&ok(&mpirun(np, &a, &[]))).unwrap();
    assert_eq!(
        std::fs::read(&local).unwrap(),
        std::fs::read(&remote).unwrap()
    );
    assert_eq!(
        here["sequences"], there["sequences"],
        "{np} ranks ({flags:?})"
    );
    assert_eq!(there["mpi"]["ranks"], np);
    there
}

#[test]
fn generate_over_two_and_four_ranks_gives_the_in_process_tokens() {
    // --split auto (the default): over 2 ranks it profiles (each rank reads
    // the profile's tensors too), over 4 there is one split.
    let s = sizes(&common::fixture_dir("tiny-gpt2-gen"));
    for (np, profiled) in [(2, true), (4, false)] {
        let v = same_tokens(np, &[]);
        let (read, file) = reads_of(&v);
        let split = split_of(&v["split"]);
        assert_eq!(read, expected_reads(&s, &split, np, profiled), "{np} ranks");
        assert_eq!(file, s.file);
    }
}

#[test]
fn tensor_parallel_ranks_give_the_in_process_tokens() {
    // TP 2 on one device, and TP 2 x PP 2: the logits are all-reduced
    // across processes before sampling, so every rank samples the same token.
    same_tokens(2, &["--tp", "2"]);
    same_tokens(4, &["--tp", "2"]);
}

/// `train` over `np` ranks: the in-process run's losses and gradient norms
/// (clipped, so the norm crosses ranks), first-step gradients and trained
/// checkpoint, byte for byte; the tied token table's two gradient shares
/// live on the first and last ranks.
fn same_training(np: usize, flags: &[&str]) {
    let fixture = common::fixture_dir("tiny-gpt2-4l");
    let there = training_matches(&fixture, np, flags);
    // Each rank read only its own stages' tensors.
    let split = split_of(&there["split"]["split"]);
    let profiled = !there["split"]["auto"].is_null();
    let (read, _) = reads_of(&there);
    let s = sizes(&fixture);
    assert_eq!(read, expected_reads(&s, &split, np, profiled), "{flags:?}");
}

/// `train` on any checkpoint in-process and over `np` ranks: the same
/// losses, gradient norms, first-step gradients and trained checkpoint,
/// byte for byte. Returns the MPI run's report.
fn training_matches(fixture: &Path, np: usize, flags: &[&str]) -> Value {
    let devices = np.to_string();
    let mut args = vec![
        "train",
        "--checkpoint",
        path(fixture),
        "--devices",
        &devices,
        "--steps",
        "2",
        "--batch",
        "4",
        "--seq",
        "8",
        "--grad-clip",
        "1.0",
        "--json",
    ];
    args.extend_from_slice(flags);
    let run = |launch: &dyn Fn(&[&str]) -> Output| {
        let dir = tempfile::tempdir().unwrap();
        let (grads, save) = (
            dir.path().join("grads.safetensors"),
            dir.path().join("saved"),
        );
        let mut a = args.clone();
        a.extend(["--grads-out", path(&grads), "--save", path(&save)]);
        let v: Value = serde_json::from_str(&ok(&launch(&a))).unwrap();
        let grads = std::fs::read(&grads).unwrap();
        let saved = std::fs::read(save.join("model.safetensors")).unwrap();
        (v, grads, saved)
    };
    let (here, grads_here, saved_here) = run(&|a| wgpipe(a));
    let (there, grads_there, saved_there) = run(&|a| mpirun(np, a, &[]));
    for key in ["losses", "grad_norms", "peak_activation_bytes", "split"] {
        assert_eq!(here[key], there[key], "{key}: {np} ranks ({flags:?})");
    }
    assert!(
        grads_here == grads_there,
        "first-step gradients differ ({np} ranks, {flags:?})"
    );
    assert!(
        saved_here == saved_there,
        "trained weights differ ({np} ranks, {flags:?})"
    );
    assert_eq!(there["mpi"]["ranks"], np);
    assert_eq!(there["device_names"].as_array().unwrap().len(), np);
    let measured = there["bubble_measured"].as_f64().unwrap();
    assert!((0.0..1.0).contains(&measured), "measured bubble {measured}");
    there
}

/// The Llama family over ranks (RMSNorm, RoPE, SwiGLU, grouped-query
/// attention, an untied head on the last rank): its pipelined logits, its
/// greedy tokens with TP 2 across two ranks, and its training under 1F1B
/// equal the in-process ones byte for byte.
#[test]
fn a_llama_over_ranks_gives_the_in_process_logits_tokens_and_training() {
    let llama = common::fixture_dir("tiny-llama");
    logits_match(&llama, 2, &["--microbatches", "4", "--schedule", "1f1b"]);
    tokens_match(&common::fixture_dir("tiny-llama-gen"), 2, &["--tp", "2"]);
    training_matches(&llama, 2, &["--schedule", "1f1b", "--split", "3,1"]);
}

/// f16 on the devices over ranks — a bf16 checkpoint under the `auto`
/// default, and `--dtype f16` asked of an f32 one: every rank stores f16,
/// hops carry f16, and the logits and tokens equal the in-process ones
/// byte for byte.
#[test]
fn f16_over_ranks_gives_the_in_process_logits_and_tokens() {
    let all_f16 = |v: &Value| {
        let p = v["precision"].as_array().unwrap();
        assert_eq!(p.len(), 2, "{v}");
        for d in p {
            assert_eq!(
                (d["dtype"].as_str(), d["hop"].as_str()),
                (Some("f16"), Some("f16"))
            );
        }
    };
    all_f16(&logits_match(
        &common::fixture_dir("tiny-llama-bf16"),
        2,
        &[],
    ));
    all_f16(&same_tokens(2, &["--dtype", "f16"]));
}

/// A run of 6 steps and a run of 3 steps resumed for 3 more, each over two
/// ranks (1F1B): the same losses, weights and optimizer state, bit for bit.
#[test]
fn a_run_resumed_over_two_ranks_equals_the_run_without_a_stop() {
    let fixture = common::fixture_dir("tiny-gpt2-4l");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("train.bin");
    let tokens: Vec<u16> = (0..2000u32).map(|i| ((i * 7919) % 97) as u16).collect();
    wgpipe::data::write_token_file(&data, &tokens).unwrap();
    let (whole, part) = (dir.path().join("whole"), dir.path().join("part"));
    let train = |extra: &[&str]| -> Value {
        let mut a = vec![
            "train",
            "--checkpoint",
            path(&fixture),
            "--data",
            path(&data),
            "--devices",
            "2",
            "--schedule",
            "1f1b",
            "--split",
            "3,1",
            "--batch",
            "4",
            "--seq",
            "8",
            "--microbatches",
            "2",
            "--grad-clip",
            "1.0",
            "--json",
        ];
        a.extend_from_slice(extra);
        serde_json::from_str(&ok(&mpirun(2, &a, &[]))).unwrap()
    };
    let six = train(&["--steps", "6", "--save", path(&whole)]);
    let three = train(&["--steps", "3", "--save", path(&part)]);
    let rest = train(&[
        "--steps",
        "6",
        "--resume",
        path(&part),
        "--save",
        path(&part),
    ]);
    let losses = |v: &Value| -> Vec<f64> { serde_json::from_value(v["losses"].clone()).unwrap() };
    let (six, three, rest) = (losses(&six), losses(&three), losses(&rest));
    assert_eq!(six[..3], three[..]);
    assert_eq!(six[3..], rest[..], "steps 4-6, resumed over two ranks");
    for f in [
        "model.safetensors",
        "optimizer.exp_avg.safetensors",
        "optimizer.exp_avg_sq.safetensors",
        "train_state.json",
    ] {
        assert!(
            std::fs::read(whole.join(f)).unwrap() == std::fs::read(part.join(f)).unwrap(),
            "{f} differs after 6 steps"
        );
    }
}

/// Ctrl-C to mpirun mid-run: every rank stops, saying so, the job exits
/// non-zero, and the training state is the last one saved, whole.
#[test]
fn sigint_to_mpirun_stops_every_rank_and_leaves_the_last_state_whole() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut child = Command::new("mpirun")
        .args(["-np", "2", "--oversubscribe", "--bind-to", "none", bin()])
        .args([
            "train",
            "--transport",
            "mpi",
            "--model",
            "tiny",
            "--devices",
            "2",
        ])
        .args([
            "--steps",
            "100000",
            "--save-every",
            "1",
            "--save",
            path(&state),
        ])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mpirun");
    // Until the first save, however long this machine takes (no clock).
    while !state.join("train_state.json").is_file() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "mpirun ended before its first save"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let hung = std::time::Duration::from_secs(120);
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > hung {
            let _ = child.kill();
            panic!("mpirun did not stop within {hung:?} of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    // The first rank to notice says so and aborts the job, which ends the
    // other. On a busy machine mpirun's own escalation (SIGTERM, then
    // SIGKILL) can end both before either reaches a step boundary and says
    // anything; what must hold either way is that nothing else is said (no
    // panic, no torn save) and the state below is whole.
    assert!(
        err.trim().is_empty() || (err.contains("error: rank ") && err.contains(": interrupted")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the state is left: {left:?}");
    let st = wgpipe::pipeline::TrainState::read(&state).expect("a whole state");
    assert!(st.step >= 1);
}

#[test]
fn train_over_two_ranks_gives_the_in_process_gradients_and_weights() {
    same_training(2, &["--schedule", "1f1b", "--split", "3,1"]);
    same_training(2, &["--schedule", "interleaved", "--virtual", "2"]);
}

#[test]
fn train_over_four_ranks_gives_the_in_process_gradients_and_weights() {
    same_training(4, &["--schedule", "zb-h1", "--microbatches", "4"]);
}

/// `train --tp 2` over `np` ranks (one per Gpu, each a rank of its device's
/// tensor-parallel group): every all-reduce of the forward and the backward
/// crosses processes and adds in rank order as in-process does, and the
/// shards merge the same way, so the losses, clipped gradient norms,
/// first-step gradients and saved checkpoint are the in-process run's, byte
/// for byte.
fn same_tp_training(fixture: &str, np: usize, flags: &[&str]) {
    let fixture = common::fixture_dir(fixture);
    let ids = fixture.join("input_ids.safetensors");
    let devices = np.to_string();
    let mut args = vec![
        "train",
        "--checkpoint",
        path(&fixture),
        "--input-ids",
        path(&ids),
        "--tp",
        "2",
        "--devices",
        &devices,
        "--steps",
        "3",
        "--grad-clip",
        "1.0",
        // Auto would time the devices, and its split (so the stash sizes)
        // could differ between the two runs.
        "--split",
        "even",
        "--json",
    ];
    args.extend_from_slice(flags);
    let run = |launch: &dyn Fn(&[&str]) -> Output| {
        let dir = tempfile::tempdir().unwrap();
        let (grads, save) = (
            dir.path().join("grads.safetensors"),
            dir.path().join("saved"),
        );
        let mut a = args.clone();
        a.extend(["--grads-out", path(&grads), "--save", path(&save)]);
        let v: Value = serde_json::from_str(&ok(&launch(&a))).unwrap();
        let grads = std::fs::read(&grads).unwrap();
        let saved = std::fs::read(save.join("model.safetensors")).unwrap();
        (v, grads, saved)
    };
    let (here, grads_here, saved_here) = run(&|a| wgpipe(a));
    let (there, grads_there, saved_there) = run(&|a| mpirun(np, a, &[]));
    for key in ["losses", "grad_norms", "peak_activation_bytes"] {
        assert_eq!(here[key], there[key], "{key}: {np} ranks ({flags:?})");
    }
    assert!(
        grads_here == grads_there,
        "first-step gradients differ ({np} ranks, {flags:?})"
    );
    assert!(
        saved_here == saved_there,
        "trained weights differ ({np} ranks, {flags:?})"
    );
    assert_eq!(there["mpi"]["ranks"], np);
}

#[test]
fn tensor_parallel_training_over_ranks_gives_the_in_process_run() {
    // 4 heads, an MLP of 50 and 61 tokens: they split in two.
    same_tp_training("tiny-gpt2-n-inner", 2, &[]);
    same_tp_training("tiny-gpt2-n-inner", 4, &["--schedule", "1f1b"]);
    same_tp_training("tiny-gpt2-n-inner", 4, &["--schedule", "zb-h1"]);
    // Qwen2's one KV head on both ranks: the replicas' gradient sum crosses
    // processes too.
    same_tp_training("tiny-qwen2", 2, &[]);
}

/// The F32 tensor bytes of a fixture's parts, from its config.json, and of
/// every tensor in its model.safetensors (all of it after the 8-byte length
/// and the header).
struct Sizes {
    wte: u64,
    wpe: u64,
    block: u64,
    ln_f: u64,
    n_layer: usize,
    file: u64,
}

fn sizes(fixture: &Path) -> Sizes {
    let text = std::fs::read_to_string(fixture.join("config.json")).unwrap();
    let c: Value = serde_json::from_str(&text).unwrap();
    let g = |k: &str| c[k].as_u64().unwrap();
    let (v, p, e) = (g("vocab_size"), g("n_positions"), g("n_embd"));
    let f = c["n_inner"].as_u64().unwrap_or(4 * e);
    // ln_1, attn c_attn and c_proj, ln_2, mlp c_fc and c_proj: weights, biases.
    let block = 2 * e + (e * 3 * e + 3 * e) + (e * e + e) + 2 * e + (e * f + f) + (f * e + e);
    let bytes = std::fs::read(fixture.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    Sizes {
        wte: 4 * v * e,
        wpe: 4 * p * e,
        block: 4 * block,
        ln_f: 4 * 2 * e,
        n_layer: g("n_layer") as usize,
        file: bytes.len() as u64 - 8 - n,
    }
}

/// The bytes each of `np` ranks must read for `split` (layers per stage;
/// rank r holds stages r, r+np, …): its stages' blocks, wte and wpe with
/// the embedding, wte and ln_f with the head, and with `profiled` the
/// `--split auto` profile's embedding, block 0 and head as well; each
/// tensor once.
fn expected_reads(s: &Sizes, split: &[usize], np: usize, profiled: bool) -> Vec<u64> {
    let stages = split.len();
    (0..np)
        .map(|r| {
            let (mut wte, mut wpe, mut ln_f) = (profiled, profiled, profiled);
            let mut layers = vec![false; s.n_layer];
            layers[0] = profiled;
            let mut start = 0;
            for (st, &n) in split.iter().enumerate() {
                if st % np == r {
                    layers[start..start + n].fill(true);
                    wte |= st == 0 || st + 1 == stages;
                    wpe |= st == 0;
                    ln_f |= st + 1 == stages;
                }
                start += n;
            }
            let blocks = layers.iter().filter(|&&x| x).count() as u64;
            u64::from(wte) * s.wte
                + u64::from(wpe) * s.wpe
                + blocks * s.block
                + u64::from(ln_f) * s.ln_f
        })
        .collect()
}

/// A report's `mpi.checkpoint_bytes_read` (by rank) and
/// `mpi.checkpoint_tensor_bytes`.
fn reads_of(v: &Value) -> (Vec<u64>, u64) {
    let m = &v["mpi"];
    let read = m["checkpoint_bytes_read"]
        .as_array()
        .unwrap_or_else(|| panic!("no checkpoint_bytes_read: {m}"))
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    (read, m["checkpoint_tensor_bytes"].as_u64().unwrap())
}

fn split_of(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a split: {v}"))
        .iter()
        .map(|c| c.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn each_rank_reads_only_its_own_stages_tensors_and_computes_the_same_logits() {
    let s = sizes(&common::fixture_dir("tiny-gpt2-4l"));
    // Rank 0: wte, wpe and h.0; rank 1: h.1-h.3, ln_f and wte (the tied head).
    assert_eq!(
        expected_reads(&s, &[1, 3], 2, false),
        [s.wte + s.wpe + s.block, 3 * s.block + s.ln_f + s.wte]
    );
    for (flags, split) in [
        (vec!["--split", "1,3"], vec![1, 3]),
        // Interleaved: rank 0 holds h.0 and h.2, rank 1 h.1 and h.3.
        (
            vec![
                "--schedule",
                "interleaved",
                "--virtual",
                "2",
                "--split",
                "even",
            ],
            vec![1, 1, 1, 1],
        ),
    ] {
        let mut f = vec!["--microbatches", "4"];
        f.extend(flags);
        let v = same_logits(2, &f);
        assert_eq!(split_of(&v["split"]["split"]), split);
        let (read, file) = reads_of(&v);
        assert_eq!(read, expected_reads(&s, &split, 2, false), "{f:?}");
        assert_eq!(file, s.file);
        assert!(read.iter().all(|&r| r < file), "{read:?} of {file}");
    }
    // generate with an explicit split reads just as little.
    let g = sizes(&common::fixture_dir("tiny-gpt2-gen"));
    let v = same_tokens(2, &["--split", "3,1"]);
    assert_eq!(split_of(&v["split"]), [3, 1]);
    let (read, file) = reads_of(&v);
    assert_eq!(
        read,
        [g.wte + g.wpe + 3 * g.block, g.block + g.ln_f + g.wte]
    );
    assert!(read.iter().all(|&r| r < file));
}

#[test]
fn split_auto_over_ranks_reads_the_profiles_tensors_and_its_own() {
    let s = sizes(&common::fixture_dir("tiny-gpt2-4l"));
    let v = same_logits(2, &["--microbatches", "4", "--split", "auto"]);
    assert!(!v["split"]["auto"].is_null(), "it profiled: {v}");
    let split = split_of(&v["split"]["split"]);
    let (read, file) = reads_of(&v);
    assert_eq!(read, expected_reads(&s, &split, 2, true), "split {split:?}");
    // Rank 0 never needs the last block (the split leaves it to rank 1).
    assert!(read[0] < file, "{read:?} of {file}");
}

/// A small two-rank `run` for the failure tests.
const SMALL_RUN: &[&str] = &[
    "run",
    "--model",
    "tiny",
    "--devices",
    "2",
    "--microbatches",
    "2",
    "--split",
    "even",
];

/// Fault injection is in test builds only: `--features fault-injection`
/// (what `.ci/run` builds), never in a shipped binary.
#[cfg(feature = "fault-injection")]
#[test]
fn a_failing_rank_ends_the_job_naming_rank_device_stage_and_action() {
    let out = mpirun(2, SMALL_RUN, &[("WGPIPE_MPI_TEST_FAIL_RANK", "1")]);
    fails_with(
        &out,
        &[
            "rank 1 of 2",
            "device 1",
            "stage 1",
            "action 1F0",
            "on purpose",
        ],
    );
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_rank_that_dies_ends_the_job() {
    let out = mpirun(2, SMALL_RUN, &[("WGPIPE_MPI_TEST_KILL_RANK", "0")]);
    // mpirun names the rank that died; rank 0 is schedule device 0.
    fails_with(&out, &["rank 0", "dying at the send of 0F0"]);
}

#[test]
fn ranks_that_are_not_one_per_gpu_are_refused() {
    let out = mpirun(3, &["run", "--model", "tiny", "--devices", "2"], &[]);
    fails_with(
        &out,
        &["gives 2 pipeline devices but mpirun started 3 ranks"],
    );
    let fixture = common::fixture_dir("tiny-gpt2-gen");
    let out = mpirun(
        2,
        &[
            "run",
            "--checkpoint",
            path(&fixture),
            "--tp",
            "2",
            "--devices",
            "4",
        ],
        &[],
    );
    fails_with(
        &out,
        &[
            "2 pipeline devices x --tp 2 = 4 Gpus but mpirun started 2 ranks",
            "-np 4",
        ],
    );
}

#[test]
fn mpi_outside_mpirun_and_unsupported_commands_are_refused() {
    let out = wgpipe(&["run", "--model", "tiny", "--transport", "mpi"]);
    fails_with(&out, &["not started by an MPI launcher", "mpirun -np"]);
    let out = wgpipe(&["adapters", "--transport", "mpi"]);
    fails_with(&out, &["`wgpipe adapters` does not run across MPI ranks"]);
    let out = wgpipe(&["bench", "decode", "--transport", "mpi"]);
    fails_with(
        &out,
        &["`wgpipe bench decode` does not run across MPI ranks"],
    );
}

#[test]
fn bench_hop_moves_every_message_across_ranks() {
    let out = mpirun(
        2,
        &[
            "bench",
            "hop",
            "--bytes",
            "4K,1M",
            "--repeat",
            "3",
            "--pace-ms",
            "1",
            "--json",
        ],
        &[],
    );
    let v: Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(v["transport"], "mpi");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for (r, bytes) in rows.iter().zip([4096, 1 << 20]) {
        assert_eq!(r["bytes"], bytes);
        assert_eq!(r["hops"], 3);
    }
}

/// `bench bubble` over two ranks: the in-process sweep's rows, as far as
/// they do not depend on timing (which rows, the analytic bubble, the hops
/// and bytes); every timed figure is consistent with itself (the simulated
/// bubble is the simulator's on the row's own stage and hop times, the
/// losses add up to the measured speedup); rank 0 prints and writes the CSV.
#[test]
fn bench_bubble_over_two_ranks_gives_the_in_process_rows() {
    let args = [
        "bench",
        "bubble",
        "--devices",
        "2",
        "--microbatches",
        "1,4",
        "--repeat",
        "1",
        "--layers-per-stage",
        "1",
        "--seq",
        "16",
        "--json",
    ];
    let here: Value = serde_json::from_str(&ok(&wgpipe(&args))).unwrap();
    let (_d, csv) = tmp("bubble.csv");
    let mut a = args.to_vec();
    a.extend(["--csv", path(&csv)]);
    let stdout = ok(&mpirun(2, &a, &[]));
    let there: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(there["devices"], 2);
    assert_eq!(there["device_names"].as_array().unwrap().len(), 2);
    assert_eq!(there["mpi"]["ranks"], 2);
    assert_eq!(there["mpi"]["clock_error_us"].as_array().unwrap().len(), 2);
    let rows = same_rows(
        &here,
        &there,
        &[
            "schedule",
            "virtual",
            "devices",
            "microbatches",
            "bubble_analytic",
            "speedup_ideal",
            "transfers",
            "bytes_moved",
        ],
    );
    for t in &rows {
        let f = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k} in {t}"));
        let measured = f("bubble_measured");
        assert!((0.0..1.0).contains(&measured), "measured bubble {t}");
        // The simulated bubble: the simulator's, on the row's own times
        // (one round, so the row's medians are that round's).
        let ms = |k: &str| -> Vec<f64> { serde_json::from_value(t[k].clone()).unwrap() };
        let m = t["microbatches"].as_u64().unwrap() as usize;
        let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, m, 1).unwrap();
        let costs = Costs {
            forward: ms("forward_ms"),
            backward: vec![0.0; 2],
            input_grad: vec![0.0; 2],
            weight_grad: vec![0.0; 2],
            transfer: f("transfer_ms"),
        };
        let sim = simulate(&s, &costs).unwrap().bubble;
        assert!((sim - f("bubble_simulated")).abs() < 1e-9, "{sim}: {t}");
        // Both controls ran on both ranks' devices; the losses add up.
        assert_eq!(ms("solo_ms").len(), 2, "{t}");
        assert_eq!(ms("corun_ms").len(), 2, "{t}");
        assert!(ms("solo_ms")
            .iter()
            .chain(&ms("corun_ms"))
            .all(|&x| x > 0.0));
        assert!(f("baseline_ms") > 0.0);
        let losses: f64 = [
            "loss_schedule",
            "loss_imbalance",
            "loss_slowdown",
            "loss_orchestration",
        ]
        .iter()
        .map(|k| f(k))
        .sum();
        assert!(
            (f("speedup_ideal") - losses - f("speedup")).abs() < 1e-9,
            "{t}"
        );
    }
    let written = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(written.lines().count(), 3, "{written}");
}

/// Two `bench bubble --json` reports with the same two rows, equal in
/// `keys` (the untimed figures); the MPI report's rows.
fn same_rows(here: &Value, there: &Value, keys: &[&str]) -> Vec<Value> {
    let (ours, theirs) = (
        here["rows"].as_array().unwrap(),
        there["rows"].as_array().unwrap(),
    );
    assert_eq!(ours.len(), 2, "{here}");
    assert_eq!(theirs.len(), 2, "{there}");
    for (o, t) in ours.iter().zip(theirs) {
        for k in keys {
            assert_eq!(o[k], t[k], "{k}: in-process {o} against MPI {t}");
        }
    }
    theirs.clone()
}

/// `bench bubble --train` over 2 ranks: each training step runs across the
/// ranks (the baseline trainer on rank 0's device alone), with the
/// in-process sweep's untimed figures, stash memory included.
#[test]
fn bench_bubble_train_over_two_ranks_gives_the_in_process_rows() {
    let args = [
        "bench",
        "bubble",
        "--train",
        "--schedule",
        "1f1b,zb-h1",
        "--devices",
        "2",
        "--microbatches",
        "4",
        "--repeat",
        "1",
        "--layers-per-stage",
        "1",
        "--seq",
        "16",
        "--json",
    ];
    let here: Value = serde_json::from_str(&ok(&wgpipe(&args))).unwrap();
    let there: Value = serde_json::from_str(&ok(&mpirun(2, &args, &[]))).unwrap();
    assert_eq!(there["mpi"]["ranks"], 2);
    let rows = same_rows(
        &here,
        &there,
        &[
            "schedule",
            "microbatches",
            "bubble_analytic",
            "transfers",
            "bytes_moved",
            "peak_activation_bytes",
        ],
    );
    for t in &rows {
        let measured = t["bubble_measured"].as_f64().unwrap();
        assert!((0.0..1.0).contains(&measured), "measured bubble {t}");
        assert!(t["baseline_ms"].as_f64().unwrap() > 0.0, "{t}");
    }
}
