//! `wgpipe generate` against transformers' own `generate(do_sample=False,
//! use_cache=True)` on the `tiny-gpt2-gen` fixture (a random 4-layer GPT-2
//! with a byte-level BPE tokenizer; see scripts/make_hf_fixture.py
//! --gen-only): the same tokens and the same text, on one device and
//! pipelined over 2 and 4 with several group counts; the ids files; the
//! end-of-text stop; seeded sampling; and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::Dtype;
use serde_json::Value;

fn wgpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run wgpipe")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error message lacks {n:?}: {err}");
    }
}

fn fixture() -> PathBuf {
    common::fixture_dir("tiny-gpt2-gen")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture().join("generate_ref.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// `generate --json` of case `case`'s prompts (as text) with extra flags.
fn generate_case(case: &Value, extra: &[&str]) -> Value {
    let dir = fixture();
    let n = case["max_new_tokens"].to_string();
    let mut args = vec![
        "generate",
        "--checkpoint",
        dir.to_str().unwrap(),
        "--max-new-tokens",
        &n,
        "--split",
        "even",
        "--json",
    ];
    let prompts: Vec<String> = serde_json::from_value(case["prompts"].clone()).unwrap();
    for p in &prompts {
        args.extend(["--prompt", p]);
    }
    args.extend(extra);
    ok_json(&wgpipe(&args))
}

#[test]
fn greedy_generation_equals_transformers_on_one_device_and_pipelined() {
    let r = reference();
    let case = &r["cases"][0]; // prompts of 2, 5, 9 and 13 tokens, 10 new each
    for (devices, groups) in [
        ("1", "1"),
        ("1", "4"),
        ("2", "1"),
        ("2", "2"),
        ("2", "3"),
        ("4", "4"),
    ] {
        let what = format!("--devices {devices} --groups {groups}");
        let v = generate_case(case, &["--devices", devices, "--groups", groups]);
        let seqs = v["sequences"].as_array().unwrap();
        assert_eq!(seqs.len(), 4, "{what}");
        for (i, s) in seqs.iter().enumerate() {
            assert_eq!(
                ids(&s["prompt_ids"]),
                ids(&case["prompt_ids"][i]),
                "{what}: prompt {i} tokenized"
            );
            assert_eq!(
                ids(&s["ids"]),
                ids(&case["output_ids"][i]),
                "{what}: sequence {i}"
            );
            assert_eq!(s["text"], case["texts"][i], "{what}: text {i}");
        }
        assert_eq!(
            v["devices"].as_u64(),
            Some(devices.parse().unwrap()),
            "{what}"
        );
        assert_eq!(
            v["groups"].as_u64(),
            Some(groups.parse().unwrap()),
            "{what}"
        );
        for k in [
            "ttft_ms",
            "tpot_ms",
            "itl_ms_p50",
            "itl_ms_p99",
            "tokens_per_s",
        ] {
            let x = v[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{what}: {k} missing"));
            assert!(x.is_finite() && x > 0.0, "{what}: {k} = {x}");
        }
        assert!(
            v["itl_ms_p50"].as_f64() <= v["itl_ms_p99"].as_f64(),
            "{what}"
        );
    }
    // One long prompt, 20 new tokens, over two devices.
    let case = &r["cases"][1];
    let v = generate_case(case, &["--devices", "2"]);
    assert_eq!(ids(&v["sequences"][0]["ids"]), ids(&case["output_ids"][0]));
    assert_eq!(v["sequences"][0]["text"], case["texts"][0]);
}

#[test]
fn one_prompt_streams_its_text() {
    let r = reference();
    let case = &r["cases"][1];
    let dir = fixture();
    let prompt = case["prompts"][0].as_str().unwrap();
    let out = wgpipe(&[
        "generate",
        "--checkpoint",
        dir.to_str().unwrap(),
        "--prompt",
        prompt,
        "--max-new-tokens",
        "20",
        "--devices",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The prompt and the generated text, as the tokenizer decodes them.
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim_end_matches('\n'),
        case["texts"][0].as_str().unwrap()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TTFT") && err.contains("tokens/s"), "{err}");
}

#[test]
fn input_ids_in_output_ids_out() {
    let r = reference();
    let case = &r["cases"][0];
    let dir = common::scratch("generate-ids");
    // The two prompts of 9 and 13 tokens cut to 9: [2, 9] int64.
    let rows: Vec<Vec<u32>> = [2, 3]
        .iter()
        .map(|&i| ids(&case["prompt_ids"][i])[..9].to_vec())
        .collect();
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|&x| i64::from(x).to_le_bytes())
        .collect();
    let input = dir.join("in.safetensors");
    common::write_st(
        &input,
        &[("input_ids".into(), Dtype::I64, vec![2, 9], bytes)],
    );
    let out_path = dir.join("out.safetensors");
    let fx = fixture();
    let args = |devices: &'static str| {
        vec![
            "generate".to_string(),
            "--checkpoint".into(),
            fx.to_str().unwrap().into(),
            "--input-ids".into(),
            input.to_str().unwrap().into(),
            "--max-new-tokens".into(),
            "10".into(),
            "--devices".into(),
            devices.into(),
            "--ids-out".into(),
            out_path.to_str().unwrap().into(),
            "--json".into(),
        ]
    };
    let one = ok_json(&wgpipe(
        &args("1").iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let read_back = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&b).unwrap();
        let t = st.tensor("output_ids").unwrap();
        assert_eq!(t.dtype(), Dtype::I64);
        assert_eq!(t.shape(), &[2, 19]);
        t.data()
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect::<Vec<u32>>()
    };
    let written = read_back(&out_path);
    let two = ok_json(&wgpipe(
        &args("2").iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    assert_eq!(
        read_back(&out_path),
        written,
        "pipelined writes the same ids"
    );
    for (i, row) in written.chunks(19).enumerate() {
        assert_eq!(&row[..9], &rows[i][..], "the prompt is kept");
        assert_eq!(ids(&one["sequences"][i]["ids"]), row.to_vec());
        assert_eq!(ids(&two["sequences"][i]["ids"]), row.to_vec());
    }
}

#[test]
fn stop_at_eos_ends_a_sequence_as_transformers_does() {
    let r = reference();
    let e = &r["eos_case"];
    let x = e["eos_token_id"].as_u64().unwrap();
    // The fixture with its end-of-text token moved to X, which greedy
    // generation of this prompt reaches at its third new token.
    let dir = common::scratch("generate-eos");
    for f in [
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        std::fs::copy(fixture().join(f), dir.join(f)).unwrap();
    }
    let mut cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
            .unwrap();
    cfg["eos_token_id"] = x.into();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let prompt = ids(&e["prompt_ids"]);
    let input = dir.join("in.safetensors");
    let bytes: Vec<u8> = prompt
        .iter()
        .flat_map(|&t| i64::from(t).to_le_bytes())
        .collect();
    common::write_st(
        &input,
        &[("input_ids".into(), Dtype::I64, vec![1, prompt.len()], bytes)],
    );
    let n = e["max_new_tokens"].as_u64().unwrap() as usize;
    let v = ok_json(&wgpipe(&[
        "generate",
        "--checkpoint",
        dir.to_str().unwrap(),
        "--input-ids",
        input.to_str().unwrap(),
        "--max-new-tokens",
        &n.to_string(),
        "--stop-at-eos",
        "--devices",
        "2",
        "--json",
    ]));
    // transformers stops at X; our row keeps its length, filled with X.
    let mut want = ids(&e["output_ids"]);
    assert_eq!(*want.last().unwrap() as u64, x);
    want.resize(prompt.len() + n, x as u32);
    assert_eq!(ids(&v["sequences"][0]["ids"]), want);
}

#[test]
fn seeded_sampling_is_the_same_however_it_is_pipelined() {
    let r = reference();
    let case = &r["cases"][0];
    let flags = [
        "--temperature",
        "0.9",
        "--top-k",
        "40",
        "--top-p",
        "0.95",
        "--seed",
        "7",
    ];
    let run = |devices: &str, groups: &str| {
        let mut extra = flags.to_vec();
        extra.extend(["--devices", devices, "--groups", groups]);
        let v = generate_case(case, &extra);
        v["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| ids(&s["ids"]))
            .collect::<Vec<_>>()
    };
    let one = run("1", "1");
    assert_eq!(run("2", "2"), one);
    assert_eq!(run("2", "4"), one);
    // Sampling differs from greedy somewhere, and another seed differs.
    let greedy: Vec<Vec<u32>> = (0..4).map(|i| ids(&case["output_ids"][i])).collect();
    assert_ne!(one, greedy);
    let mut extra = flags.to_vec();
    extra[7] = "8";
    let other: Vec<Vec<u32>> = generate_case(case, &extra)["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| ids(&s["ids"]))
        .collect();
    assert_ne!(other, one);
}

#[test]
fn bad_generation_input_is_refused() {
    let dir = fixture();
    let d = dir.to_str().unwrap();
    // n_positions 48: a 40-token prompt leaves room for 8 new tokens.
    let long = "a".repeat(40);
    fails_with(
        &wgpipe(&[
            "generate",
            "--checkpoint",
            d,
            "--prompt",
            &long,
            "--max-new-tokens",
            "10",
        ]),
        &["prompt 0 has 40 tokens", "at most 38 fit", "n_positions 48"],
    );
    fails_with(
        &wgpipe(&[
            "generate",
            "--checkpoint",
            d,
            "--prompt",
            "",
            "--max-new-tokens",
            "3",
        ]),
        &["prompt 0 is empty"],
    );
    fails_with(
        &wgpipe(&["generate", "--model", "tiny", "--prompt", "hello"]),
        &["--prompt text needs a tokenizer", "--input-ids"],
    );
    fails_with(
        &wgpipe(&[
            "generate",
            "--checkpoint",
            d,
            "--prompt",
            "The",
            "--top-p",
            "0",
        ]),
        &["--top-p"],
    );
    fails_with(
        &wgpipe(&[
            "generate",
            "--checkpoint",
            d,
            "--prompt",
            "The",
            "--top-p",
            "1.5",
        ]),
        &["--top-p"],
    );
    fails_with(&wgpipe(&["generate", "--checkpoint", d]), &["no prompt"]);
    // A checkpoint without tokenizer.json, and ids out of range.
    let bare = common::scratch("generate-bare");
    for f in ["model.safetensors", "config.json"] {
        std::fs::copy(dir.join(f), bare.join(f)).unwrap();
    }
    fails_with(
        &wgpipe(&[
            "generate",
            "--checkpoint",
            bare.to_str().unwrap(),
            "--prompt",
            "The",
        ]),
        &["has no tokenizer.json", "--input-ids"],
    );
    let input = bare.join("in.safetensors");
    let bytes: Vec<u8> = [1i64, 320].iter().flat_map(|t| t.to_le_bytes()).collect();
    common::write_st(
        &input,
        &[("input_ids".into(), Dtype::I64, vec![1, 2], bytes)],
    );
    fails_with(
        &wgpipe(&[
            "generate",
            "--checkpoint",
            bare.to_str().unwrap(),
            "--input-ids",
            input.to_str().unwrap(),
        ]),
        &["320"],
    );
}

#[test]
fn bench_decode_reports_every_point() {
    let dir = common::scratch("bench-decode");
    let (csv, svg) = (dir.join("d.csv"), dir.join("d.svg"));
    let v = ok_json(&wgpipe(&[
        "bench",
        "decode",
        "--devices",
        "1,2",
        "--layers",
        "2",
        "--prompt-len",
        "4",
        "--max-new-tokens",
        "3",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--json",
    ]));
    let rows = v["rows"].as_array().unwrap();
    // P = 1: groups 1, 2; P = 2: groups 1 to 4.
    let points: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["devices"].as_u64().unwrap(),
                r["groups"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(points, vec![(1, 1), (1, 2), (2, 1), (2, 2), (2, 3), (2, 4)]);
    for r in rows {
        for k in [
            "ttft_ms",
            "tpot_ms",
            "itl_ms_p50",
            "itl_ms_p99",
            "tokens_per_s",
        ] {
            let x = r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
            assert!(x.is_finite() && x > 0.0, "{k}: {r}");
        }
    }
    // One group on two devices: one device works at a time.
    assert_eq!(rows[2]["bubble_analytic"].as_f64(), Some(0.5));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(text.lines().count(), 7, "{text}");
    assert!(std::fs::read_to_string(&svg).unwrap().contains("P=2"));
}

#[test]
fn tensor_parallel_generation_equals_transformers_and_bad_layouts_are_refused() {
    let r = reference();
    let case = &r["cases"][0];
    // 2-way TP x 2-way PP, and 4-way TP on one stage.
    for extra in [
        &["--tp", "2", "--devices", "4"][..],
        &["--tp", "4", "--devices", "4"],
    ] {
        let out = generate_case(case, extra);
        let want: Vec<Vec<u32>> = serde_json::from_value(case["output_ids"].clone()).unwrap();
        for (s, w) in want.iter().enumerate() {
            assert_eq!(
                ids(&out["sequences"][s]["ids"]),
                *w,
                "{extra:?} sequence {s}"
            );
        }
        let tp: usize = extra[1].parse().unwrap();
        assert_eq!(out["tp"], tp as u64);
        assert_eq!(out["kv_bytes"].as_array().unwrap().len(), 4, "one per Gpu");
    }
    let dir = fixture();
    let d = dir.to_str().unwrap();
    let base = [
        "generate",
        "--checkpoint",
        d,
        "--prompt",
        "The",
        "--max-new-tokens",
        "2",
    ];
    let with = |extra: &[&str]| wgpipe(&[&base[..], extra].concat());
    fails_with(&with(&["--tp", "3"]), &["--tp 3", "4 attention heads"]);
    fails_with(
        &with(&["--tp", "2", "--devices", "3"]),
        &["--tp 2", "P x 2"],
    );
    fails_with(&with(&["--tp", "0"]), &["--tp must be at least 1"]);
}
