//! Ctrl-C: SIGINT sent to a real `wgpipe` mid-run stops it — `run`,
//! `train`, `generate`, `bench soak` — with exit status 130 and
//! "interrupted" on stderr, and leaves no partial output: no output file
//! that was being produced, no temporary file or directory, and a training
//! state that is the last one saved, whole. Each child gets a generous time
//! to stop; the test fails on a hang, never on a duration.
#![cfg(unix)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a signalled child may take before the test calls it hung.
const HUNG: Duration = Duration::from_secs(60);

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wgpipe")
}

/// Wait until `ready()` or the child ends (a failure: it had to be mid-run).
/// No clock: a slow machine only waits longer.
fn wait_until(child: &mut Child, what: &str, ready: impl Fn() -> bool) {
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("wgpipe ended ({status}) before {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGINT, then the child's exit status and stderr; a child still running
/// after [`HUNG`] is killed and fails the test.
fn interrupt(mut child: Child) -> (Option<i32>, String) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill has no memory preconditions; pid is our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > HUNG {
            let _ = child.kill();
            panic!("wgpipe did not stop within {HUNG:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(e) = child.stderr.as_mut() {
        std::io::Read::read_to_string(e, &mut err).unwrap();
    }
    (status.code(), err)
}

fn assert_interrupted((code, err): (Option<i32>, String)) {
    assert_eq!(code, Some(130), "exit status; stderr: {err}");
    assert!(err.contains("error: interrupted"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Nothing but `keep` in `dir`: no partial file, no temporary one.
fn only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, keep, "in {}", dir.display());
}

/// Wait for the child's first line on `stream` (the split, on stdout for
/// `run` and stderr for `generate`: the pipeline is built and about to run).
/// The stream is read on by a thread of its own, so the child never blocks
/// on a full pipe; the thread hands back everything it read.
fn first_line(stream: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        let mut text = String::new();
        let _ = r.read_line(&mut text);
        let _ = tx.send(!text.is_empty());
        let _ = std::io::Read::read_to_string(&mut r, &mut text);
        text
    });
    assert!(rx.recv().expect("a first line"), "no output before the run");
    reader
}

#[test]
fn sigint_stops_train_between_saves_and_leaves_the_last_state_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let saved = tmp.path().join("state");
    let mut child = spawn(&[
        "train",
        "--model",
        "tiny",
        "--devices",
        "2",
        "--steps",
        "100000",
        "--save",
        saved.to_str().unwrap(),
        "--save-every",
        "1",
    ]);
    let state = saved.join("train_state.json");
    wait_until(&mut child, "its first save", || state.is_file());
    assert_interrupted(interrupt(child));
    only(tmp.path(), &["state"]);
    let st = wgpipe::pipeline::TrainState::read(&saved).expect("a whole state");
    assert!(st.step >= 1);
}

#[test]
fn sigint_stops_run_generate_and_a_bench_and_writes_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let (logits, ids, csv) = (out("logits.st"), out("ids.st"), out("soak.csv"));
    let cases: [Vec<&str>; 3] = [
        vec![
            "run",
            "--model",
            "small-test",
            "--devices",
            "2",
            "--split",
            "even",
            "--batch",
            "256",
            "--microbatches",
            "256",
            "--seq",
            "64",
            "--logits-out",
            &logits,
        ],
        vec![
            "generate",
            "--model",
            "gpt2",
            "--devices",
            "2",
            "--split",
            "even",
            "--input-ids",
            "",
            "--max-new-tokens",
            "200",
            "--ids-out",
            &ids,
        ],
        vec!["bench", "soak", "--steps", "100000", "--csv", &csv],
    ];
    let prompts = tmp.path().join("prompts.safetensors");
    let ids: Vec<u8> = (0..2 * 20i64)
        .flat_map(|i| (i % 300 + 1).to_le_bytes())
        .collect();
    let name = "input_ids".to_string();
    common::write_st(
        &prompts,
        &[(name, safetensors::Dtype::I64, vec![2, 20], ids)],
    );
    for mut args in cases {
        if let Some(i) = args.iter().position(|a| a.is_empty()) {
            args[i] = prompts.to_str().unwrap();
        }
        let mut child = spawn(&args);
        let reader = match args[0] {
            "run" => Some(first_line(child.stdout.take().unwrap())),
            "generate" => Some(first_line(child.stderr.take().unwrap())),
            // The bench says nothing before its report.
            _ => {
                std::thread::sleep(Duration::from_secs(3));
                None
            }
        };
        std::thread::sleep(Duration::from_millis(500));
        let (code, mut err) = interrupt(child);
        if let (Some(r), "generate") = (reader, args[0]) {
            err += &r.join().unwrap();
        }
        assert_interrupted((code, err));
        only(tmp.path(), &["prompts.safetensors"]);
    }
}
