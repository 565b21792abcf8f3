//! Stages as MPI ranks (`--features mpi`): `mpirun -np 2` and `-np 4` on
//! this one machine, every rank on the software adapter, give exactly the
//! in-process run's logits and generated tokens, and `bench bubble` the
//! in-process sweep's untimed figures; a rank that fails or dies
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

/// `run` over `np` ranks writes exactly the in-process run's logits, with
/// every rank's device in the report and the ranks' clocks aligned.
fn same_logits(np: usize, flags: &[&str]) {
    let fixture = common::fixture_dir("tiny-gpt2-4l");
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
    assert_eq!(v["device_names"].as_array().unwrap().len(), np);
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

/// `generate` over `np` ranks: the in-process tokens and text.
fn same_tokens(np: usize) {
    let fixture = common::fixture_dir("tiny-gpt2-gen");
    let devices = np.to_string();
    let args = [
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
    let (_d1, local) = tmp("local.safetensors");
    let (_d2, remote) = tmp("mpi.safetensors");
    let mut a = args.to_vec();
    a.extend(["--ids-out", path(&local)]);
    let here: Value = serde_json::from_str(&ok(&wgpipe(&a))).unwrap();
    let mut a = args.to_vec();
    a.extend(["--ids-out", path(&remote)]);
    let there: Value = serde_json::from_str(&ok(&mpirun(np, &a, &[]))).unwrap();
    assert_eq!(
        std::fs::read(&local).unwrap(),
        std::fs::read(&remote).unwrap()
    );
    assert_eq!(here["sequences"], there["sequences"], "{np} ranks");
    assert_eq!(there["mpi"]["ranks"], np);
}

#[test]
fn generate_over_two_and_four_ranks_gives_the_in_process_tokens() {
    same_tokens(2);
    same_tokens(4);
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
fn more_ranks_than_devices_and_tensor_parallel_groups_are_refused() {
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
    fails_with(&out, &["one Gpu per rank", "leave out --tp"]);
}

#[test]
fn mpi_outside_mpirun_and_unsupported_commands_are_refused() {
    let out = wgpipe(&["run", "--model", "tiny", "--transport", "mpi"]);
    fails_with(&out, &["not started by an MPI launcher", "mpirun -np"]);
    let out = wgpipe(&["train", "--model", "tiny", "--transport", "mpi"]);
    fails_with(&out, &["`wgpipe train` does not run across MPI ranks"]);
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
    let (ours, theirs) = (
        here["rows"].as_array().unwrap(),
        there["rows"].as_array().unwrap(),
    );
    assert_eq!(ours.len(), 2);
    assert_eq!(theirs.len(), 2);
    for (o, t) in ours.iter().zip(theirs) {
        for k in [
            "schedule",
            "virtual",
            "devices",
            "microbatches",
            "bubble_analytic",
            "speedup_ideal",
            "transfers",
            "bytes_moved",
        ] {
            assert_eq!(o[k], t[k], "{k}: in-process {o} against MPI {t}");
        }
        let f = |k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k} in {t}"));
        let measured = f("bubble_measured");
        assert!((0.0..1.0).contains(&measured), "measured bubble {t}");
        // The simulated bubble: the simulator's, on the row's own times
        // (one round, so the row's medians are that round's).
        let ms = |k: &str| -> Vec<f64> {
            let cells = t[k].as_str().unwrap();
            cells.split(';').map(|c| c.parse().unwrap()).collect()
        };
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

#[test]
fn bench_bubble_train_is_refused_across_ranks_for_now() {
    let out = mpirun(
        2,
        &["bench", "bubble", "--train", "--microbatches", "2"],
        &[],
    );
    fails_with(
        &out,
        &["bench bubble --train", "does not run across MPI ranks yet"],
    );
}
