//! Resumable training (`wgpipe train --save DIR --save-every N`, `--resume
//! DIR`): a run of 6 steps and a run of 3 steps resumed for 3 more give the
//! same losses and the same weights and optimizer state, bit for bit, with
//! every schedule; a state is refused with a message when the model, the
//! settings or a file differ; the layout may change. A NaN poisons no state.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn wgpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run wgpipe")
}

fn ok_json(out: &Output) -> Value {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "wgpipe failed: {err}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {err}"))
}

/// Exit 1, no panic, and every needle in the message.
fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "expected exit 1; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error message lacks {n:?}: {err}");
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A token stream for the fixture's vocabulary (97 tokens), seeded.
fn token_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("train.bin");
    let mut x: u64 = 12345;
    let tokens: Vec<u16> = (0..2000)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((x >> 33) % 97) as u16
        })
        .collect();
    wgpipe::data::write_token_file(&path, &tokens).unwrap();
    path
}

/// `train` on the 4-layer fixture over 2 devices, even split, windows of
/// the token file, with `extra` flags (which replace a default of the same
/// name).
fn train(data: &Path, extra: &[&str]) -> Output {
    let fx = common::fixture_dir("tiny-gpt2-4l");
    let defaults = [
        ("--checkpoint", s(&fx)),
        ("--data", s(data)),
        ("--batch", "4"),
        ("--seq", "16"),
        ("--microbatches", "2"),
        ("--devices", "2"),
        ("--split", "even"),
        ("--grad-clip", "1.0"),
    ];
    let mut args = vec!["train", "--json"];
    for (flag, value) in defaults {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
    wgpipe(&args)
}

fn losses(v: &Value) -> Vec<f64> {
    serde_json::from_value(v["losses"].clone()).unwrap()
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

#[test]
fn six_steps_equal_three_resumed_for_three_more_bit_for_bit_with_every_schedule() {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path());
    for (schedule, opt) in [
        (&["--schedule", "1f1b"][..], &[][..]),
        (&["--schedule", "zb-h1"], &[]),
        (
            &["--schedule", "gpipe"],
            &["--optimizer", "sgd", "--momentum", "0.9"],
        ),
        (&["--schedule", "interleaved", "--virtual", "2"], &[]),
    ] {
        let what = format!("{schedule:?} {opt:?}");
        let flags: Vec<&str> = schedule.iter().chain(opt).copied().collect();
        let (whole, part) = (tmp.path().join("whole"), tmp.path().join("part"));
        let _ = std::fs::remove_dir_all(&whole);
        let _ = std::fs::remove_dir_all(&part);
        let mut a = flags.clone();
        a.extend(["--steps", "6", "--save", s(&whole)]);
        let six = ok_json(&train(&data, &a));
        let mut a = flags.clone();
        a.extend(["--steps", "3", "--save", s(&part), "--save-every", "2"]);
        let three = ok_json(&train(&data, &a));
        assert_eq!(three["saved_steps"], serde_json::json!([2, 3]), "{what}");
        let mut a = flags.clone();
        a.extend(["--steps", "6", "--resume", s(&part), "--save", s(&part)]);
        let rest = ok_json(&train(&data, &a));
        assert_eq!(rest["first_step"], 4, "{what}");
        let (six, three, rest) = (losses(&six), losses(&three), losses(&rest));
        assert_eq!(six.len(), 6);
        // JSON numbers print f64 exactly: equal text, equal bits.
        assert_eq!(six[..3], three[..], "{what}: the first three steps");
        assert_eq!(six[3..], rest[..], "{what}: steps 4-6, resumed");
        assert!(
            files(&whole) == files(&part),
            "{what}: the weights, optimizer state or train_state.json differ after 6 steps"
        );
    }
}

#[test]
fn a_resume_with_another_model_settings_or_a_corrupt_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path());
    let saved = tmp.path().join("saved");
    ok_json(&train(&data, &["--steps", "2", "--save", s(&saved)]));
    let resume = |extra: &[&str]| {
        let mut a = vec!["--steps", "4", "--resume", s(&saved)];
        a.extend_from_slice(extra);
        train(&data, &a)
    };
    // Settings it cannot go on under.
    fails_with(
        &resume(&["--lr", "0.01"]),
        &[
            "the run was saved with optimizer AdamW",
            "lr: 0.001",
            "lr: 0.01",
        ],
    );
    fails_with(
        &resume(&["--batch", "2"]),
        &[
            "--resume: the run was saved training on windows of 4x16",
            "windows of 2x16",
        ],
    );
    fails_with(
        &train(&data, &["--steps", "2", "--resume", s(&saved)]),
        &["has taken 2 steps already; --steps 2 counts from its start"],
    );
    let other = wgpipe(&[
        "train",
        "--model",
        "tiny",
        "--steps",
        "4",
        "--resume",
        s(&saved),
    ]);
    fails_with(
        &other,
        &[
            "the run trained another model (4 layers",
            "this run asks for 2 layers",
        ],
    );
    // Another layout is allowed: one device, another schedule.
    let v = ok_json(&resume(&["--devices", "1", "--schedule", "gpipe"]));
    assert_eq!((v["first_step"].as_u64(), losses(&v).len()), (Some(3), 2));
    // A changed byte in any file, or a cut state file.
    let m = saved.join("optimizer.exp_avg.safetensors");
    let mut bytes = std::fs::read(&m).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&m, &bytes).unwrap();
    fails_with(
        &resume(&[]),
        &["optimizer.exp_avg.safetensors: corrupt (checksum"],
    );
    bytes[n - 1] ^= 1;
    std::fs::write(&m, &bytes).unwrap();
    let st = saved.join("train_state.json");
    let text = std::fs::read_to_string(&st).unwrap();
    std::fs::write(&st, text.replace("\"step\": 2", "\"step\": 1")).unwrap();
    fails_with(
        &resume(&[]),
        &["corrupt training state (its checksum does not match)"],
    );
    std::fs::write(&st, &text[..text.len() / 2]).unwrap();
    fails_with(
        &resume(&[]),
        &["corrupt training state, refusing to resume"],
    );
    // Not a state at all; and --save onto another run's state is refused.
    fails_with(
        &train(&data, &["--steps", "4", "--resume", s(tmp.path())]),
        &["not a training state (no train_state.json)"],
    );
}

#[test]
fn a_non_finite_loss_stops_the_step_and_poisons_no_state() {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path());
    let saved = tmp.path().join("saved");
    // lr 1e30: step 1's update sends every weight to ~1e30, step 2's
    // forward overflows.
    let out = train(
        &data,
        &[
            "--steps",
            "4",
            "--lr",
            "1e30",
            "--save",
            s(&saved),
            "--save-every",
            "1",
        ],
    );
    fails_with(
        &out,
        &[
            "step 2: the loss is NaN (stage 1, tensor `loss`); the step was not applied",
            "--lr is 1000000000000000000000000000000",
        ],
    );
    // The state of step 1 stands, whole.
    let st: Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("train_state.json")).unwrap())
            .unwrap();
    assert_eq!(st["step"], 1);
}

/// A NaN in one gradient (put there by the test build's hook) stops the
/// step before its update, naming the step, the stage and the tensor; the
/// state saved before it stands.
#[cfg(feature = "fault-injection")]
#[test]
fn a_nan_gradient_is_named_and_poisons_no_state() {
    let tmp = tempfile::tempdir().unwrap();
    let data = token_file(tmp.path());
    let saved = tmp.path().join("saved");
    let fx = common::fixture_dir("tiny-gpt2-4l");
    let out = Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args([
            "train",
            "--checkpoint",
            s(&fx),
            "--data",
            s(&data),
            "--batch",
            "4",
        ])
        .args([
            "--seq",
            "16",
            "--devices",
            "2",
            "--split",
            "even",
            "--steps",
            "4",
        ])
        .args(["--save", s(&saved), "--save-every", "1"])
        .env("XDG_RUNTIME_DIR", "/tmp")
        .env("WGPIPE_TEST_POISON_GRAD", "2:h.3.mlp.c_fc.weight")
        .output()
        .unwrap();
    fails_with(
        &out,
        &["step 2: the gradient of h.3.mlp.c_fc.weight on stage 1 holds a NaN; the step was not applied"],
    );
    let st = wgpipe::pipeline::TrainState::read(&saved).unwrap();
    assert_eq!(st.step, 1);
}
