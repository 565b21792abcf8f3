//! Stages as MPI ranks (`--features mpi`): `mpirun -np 2` and `-np 4` on
//! this one machine, every rank on the software adapter, give exactly the
//! in-process run's logits, training losses, gradients and trained weights,
//! and generated tokens; a rank that fails or dies
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
/// the trace.
fn same_logits(np: usize, flags: &[&str]) {
    let tp: usize = flags
        .iter()
        .position(|&f| f == "--tp")
        .map_or(1, |i| flags[i + 1].parse().unwrap());
    // tiny-gpt2-4l's 3 heads and 97 tokens do not split in two; -gen's 4 and 320 do.
    let fixture = common::fixture_dir(if tp > 1 {
        "tiny-gpt2-gen"
    } else {
        "tiny-gpt2-4l"
    });
    let devices = np.to_string();
    let mut args = vec![
        "run",
        "--checkpoint",
        path(&fixture),
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
    same_logits(4, &["--microbatches", "3", "--split", "auto"]);
}

#[test]
fn tensor_parallel_ranks_give_the_in_process_logits() {
    // One device of two ranks (TP 2), and two devices of two (TP 2 x PP 2):
    // every all-reduce crosses processes and adds in rank order, as
    // in-process does, so the logits are the same bits.
    same_logits(2, &["--tp", "2", "--microbatches", "2"]);
    same_logits(
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
}

/// `generate` over `np` ranks: the in-process tokens and text.
fn same_tokens(np: usize, flags: &[&str]) {
    let fixture = common::fixture_dir("tiny-gpt2-gen");
    let devices = np.to_string();
    let mut args = vec![
        "generate",
        "--checkpoint",
        path(&fixture),
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
}

#[test]
fn generate_over_two_and_four_ranks_gives_the_in_process_tokens() {
    same_tokens(2, &[]);
    same_tokens(4, &[]);
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
    let devices = np.to_string();
    let mut args = vec![
        "train",
        "--checkpoint",
        path(&fixture),
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

#[test]
fn a_failing_rank_ends_the_job_naming_rank_device_stage_and_action() {
    let out = mpirun(
        2,
        &[
            "run",
            "--model",
            "tiny",
            "--devices",
            "2",
            "--microbatches",
            "2",
            "--split",
            "even",
        ],
        &[("WGPIPE_MPI_TEST_FAIL_RANK", "1")],
    );
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

#[test]
fn a_rank_that_dies_ends_the_job() {
    let out = mpirun(
        2,
        &[
            "run",
            "--model",
            "tiny",
            "--devices",
            "2",
            "--microbatches",
            "2",
            "--split",
            "even",
        ],
        &[("WGPIPE_MPI_TEST_KILL_RANK", "0")],
    );
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
