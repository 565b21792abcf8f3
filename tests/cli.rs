//! The command line on bad input: every case must end in a clear error that
//! names what is wrong and a non-zero exit — never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wgpipe::device::{list_adapters, place_devices};
use wgpipe::model::{checkpoint, Gpt2Config, Gpt2Weights};

fn wgpipe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args(args)
        .env("XDG_RUNTIME_DIR", "/tmp")
        .output()
        .expect("run wgpipe")
}

/// Asserts a clean failure whose message contains every one of `needles`.
fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {err}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit 1 (not a panic's 101); stderr: {err}"
    );
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error message lacks {n:?}: {err}");
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wgpipe-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_checkpoint(tag: &str) -> PathBuf {
    let d = tmpdir(tag);
    let w = Gpt2Weights::init(&Gpt2Config::named("tiny").unwrap(), 1).unwrap();
    checkpoint::save_checkpoint(&w, &d).unwrap();
    d
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-gpt2")
}

/// The `logits` tensor of a safetensors file: (shape, values).
fn read_logits(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("logits").unwrap();
    (
        t.shape().to_vec(),
        bytemuck::pod_collect_to_vec::<u8, f32>(t.data()),
    )
}

/// Asserts `path`'s logits reproduce transformers' (the fixture's) to 1e-5
/// relative to the largest logit.
fn matches_transformers(path: &Path) {
    let (shape, got) = read_logits(path);
    let (want_shape, want) = read_logits(&fixture().join("logits.safetensors"));
    assert_eq!(shape, want_shape);
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    assert!(err < 1e-5, "logits off transformers' by {err:.2e}");
}

#[test]
fn forward_on_a_transformers_checkpoint_writes_logits() {
    let d = tmpdir("ok");
    let out_file = d.join("logits.safetensors");
    let ids = fixture().join("input_ids.safetensors");
    let out = wgpipe(&[
        "forward",
        "--checkpoint",
        fixture().to_str().unwrap(),
        "--input-ids",
        ids.to_str().unwrap(),
        "--logits-out",
        out_file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tokens/s"));
    assert_eq!(read_logits(&out_file).0, vec![2, 11, 97]);
    matches_transformers(&out_file);
}

#[test]
fn missing_checkpoint_directory() {
    fails_with(
        &wgpipe(&["forward", "--checkpoint", "/nonexistent/ckpt"]),
        &["/nonexistent/ckpt"],
    );
}

#[test]
fn malformed_config_json() {
    let d = tiny_checkpoint("badcfg");
    std::fs::write(d.join("config.json"), "{ not json").unwrap();
    fails_with(
        &wgpipe(&["forward", "--checkpoint", d.to_str().unwrap()]),
        &["config.json"],
    );
}

#[test]
fn malformed_safetensors() {
    let d = tiny_checkpoint("badst");
    std::fs::write(d.join("model.safetensors"), b"\x10\0\0\0\0\0\0\0garbage!").unwrap();
    fails_with(
        &wgpipe(&["forward", "--checkpoint", d.to_str().unwrap()]),
        &["model.safetensors"],
    );
}

#[test]
fn missing_and_misshaped_tensors_are_named() {
    // Rewrite the fixture's weights without one tensor, then with one mis-shaped.
    let src = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&src).unwrap();
    let write = |dir: &Path, drop: &str, reshape: Option<&str>| {
        std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
        let mut views = Vec::new();
        for (name, t) in st.tensors() {
            if name == drop {
                continue;
            }
            let shape: Vec<usize> = if Some(name.as_str()) == reshape {
                vec![t.shape().iter().product::<usize>() / 4, 4]
            } else {
                t.shape().to_vec()
            };
            views.push((
                name,
                safetensors::tensor::TensorView::new(t.dtype(), shape, t.data()).unwrap(),
            ));
        }
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    };
    let d = tmpdir("missing");
    write(&d, "transformer.h.1.mlp.c_fc.weight", None);
    fails_with(
        &wgpipe(&["forward", "--checkpoint", d.to_str().unwrap()]),
        &["h.1.mlp.c_fc.weight"],
    );
    let d = tmpdir("shape");
    write(&d, "", Some("transformer.h.0.attn.c_attn.weight"));
    fails_with(
        &wgpipe(&["forward", "--checkpoint", d.to_str().unwrap()]),
        &["h.0.attn.c_attn.weight", "36, 108", "972, 4"],
    );
}

#[test]
fn n_embd_not_divisible_by_n_head() {
    let d = tiny_checkpoint("heads");
    let cfg = std::fs::read_to_string(d.join("config.json")).unwrap();
    let cfg = cfg.replace("\"n_head\": 3", "\"n_head\": 5");
    assert!(
        cfg.contains("\"n_head\": 5"),
        "config.json layout changed: {cfg}"
    );
    std::fs::write(d.join("config.json"), cfg).unwrap();
    fails_with(
        &wgpipe(&["forward", "--checkpoint", d.to_str().unwrap()]),
        &["36", "5"],
    );
}

#[test]
fn token_id_past_the_vocabulary() {
    let d = tmpdir("ids");
    let ids: Vec<i64> = vec![1, 2, 3, 97];
    let bytes: Vec<u8> = bytemuck::cast_slice(&ids).to_vec();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, 4], &bytes).unwrap();
    let f = d.join("ids.safetensors");
    safetensors::serialize_to_file(vec![("input_ids", view)], None, &f).unwrap();
    let out = wgpipe(&[
        "forward",
        "--checkpoint",
        fixture().to_str().unwrap(),
        "--input-ids",
        f.to_str().unwrap(),
    ]);
    fails_with(&out, &["97"]);
}

#[test]
fn sequence_longer_than_n_positions() {
    fails_with(
        &wgpipe(&["forward", "--model", "tiny", "--seq", "65"]),
        &["65", "64"],
    );
}

#[test]
fn logits_out_to_a_directory_is_refused_before_work() {
    let d = tmpdir("outdir");
    fails_with(
        &wgpipe(&[
            "forward",
            "--model",
            "tiny",
            "--logits-out",
            d.to_str().unwrap(),
        ]),
        &["directory"],
    );
    assert!(d.is_dir(), "the directory the user had is untouched");
}

#[test]
fn no_adapter_says_how_to_install_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_wgpipe"))
        .args(["forward", "--model", "tiny"])
        .env("WGPU_BACKEND", "vulkan")
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .output()
        .unwrap();
    fails_with(&out, &["no wgpu adapter", "mesa-vulkan-drivers"]);
}

#[test]
fn unknown_adapter_lists_what_there_is() {
    let ids: Vec<String> = list_adapters().iter().map(|a| a.id()).collect();
    let mut needles = vec!["quantum"];
    needles.extend(ids.iter().map(String::as_str));
    fails_with(
        &wgpipe(&["forward", "--model", "tiny", "--adapter", "quantum"]),
        &needles,
    );
}

#[test]
fn adapters_lists_every_adapter_the_library_finds() {
    let out = wgpipe(&["adapters", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let id = format!("{}:{}", a["backend"].as_str().unwrap(), a["backend_index"]);
            (id, a["name"].as_str().unwrap().to_string())
        })
        .collect();
    let want: Vec<(String, String)> = list_adapters()
        .into_iter()
        .map(|a| (a.id(), a.name))
        .collect();
    assert!(
        !want.is_empty(),
        "no wgpu adapter: apt-get install -y mesa-vulkan-drivers"
    );
    assert_eq!(listed, want);
    for (i, a) in v.as_array().unwrap().iter().enumerate() {
        assert_eq!(a["index"], i);
        assert!(["vulkan", "metal", "dx12", "gl"].contains(&a["backend"].as_str().unwrap()));
        assert!(a["max_storage_buffer_binding_size"].as_u64().unwrap() > 0);
        assert!(a["max_texture_dimension_2d"].as_u64().unwrap() > 0);
        assert!(a["timestamp_query"].is_boolean());
        // Where decoding reads its weights from, measured on the adapter.
        let d = &a["decode_weights"];
        assert!(
            ["buffer", "texture"].contains(&d["storage"].as_str().unwrap()),
            "{d}"
        );
        assert!(d["buffer_gbps"].as_f64().unwrap() > 0.0, "{d}");
    }
}

#[test]
fn run_json_reports_the_three_bubbles() {
    let out = wgpipe(&[
        "run",
        "--model",
        "small-test",
        "--devices",
        "2",
        "--microbatches",
        "3",
        "--seq",
        "8",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for k in [
        "devices",
        "microbatches",
        "schedule",
        "makespan_ms",
        "bubble_measured",
        "bubble_simulated",
        "bubble_analytic",
        "tokens_per_s",
        "clock",
    ] {
        assert!(!v[k].is_null(), "missing {k}: {v}");
    }
    assert_eq!(v["devices"], 2);
    assert_eq!(v["microbatches"], 3);
    assert!(
        (v["bubble_analytic"].as_f64().unwrap() - 0.25).abs() < 1e-12,
        "(P-1)/(M+P-1) = 1/4"
    );
    let measured = v["bubble_measured"].as_f64().unwrap();
    assert!(measured > 0.0 && measured < 1.0, "{measured}");
    // GPU timestamps only on adapters that have timestamp queries, else host clocks.
    // --split auto (the default): the profile of both devices, and a split
    // whose predicted makespan is no longer than the even split's.
    let split = &v["split"];
    assert_eq!(split["asked"], "auto", "{split}");
    let layers: Vec<u64> = serde_json::from_value(split["split"].clone()).unwrap();
    assert_eq!(
        (layers.len(), layers.iter().sum::<u64>()),
        (2, 3),
        "{split}"
    );
    let auto = &split["auto"];
    assert_eq!(auto["chosen"]["split"], split["split"], "{split}");
    assert_eq!(auto["profile"]["devices"].as_array().unwrap().len(), 2);
    let makespan = |k: &str| auto[k]["makespan_ms"].as_f64().unwrap();
    assert!(makespan("chosen") <= makespan("even"), "{split}");
    let clock = v["clock"].as_str().unwrap();
    assert!(["gpu-timestamps", "host"].contains(&clock), "{clock}");
    if clock == "gpu-timestamps" {
        let placed = place_devices("2", 1).unwrap();
        assert!(
            placed.groups.iter().flatten().all(|a| a.timestamp_query),
            "{placed:?}"
        );
    }
}

#[test]
fn run_refuses_bad_splits_and_interleaving_without_layers() {
    fails_with(
        &wgpipe(&["run", "--model", "tiny", "--devices", "2", "--split", "1,2"]),
        &["adds up to 3", "2"],
    );
    fails_with(
        &wgpipe(&[
            "run",
            "--model",
            "tiny",
            "--devices",
            "2",
            "--schedule",
            "interleaved",
            "--virtual",
            "2",
        ]),
        &["too few"],
    );
}

#[test]
fn bench_bubble_json_has_a_row_per_point() {
    let d = tmpdir("bench");
    let (csv, svg, fall) = (d.join("b.csv"), d.join("b.svg"), d.join("w.svg"));
    let out = wgpipe(&[
        "bench",
        "bubble",
        "--devices",
        "2",
        "--microbatches",
        "1,2",
        "--seq",
        "8",
        "--repeat",
        "1",
        "--json",
        "--csv",
        csv.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--waterfall",
        fall.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let w = std::fs::read_to_string(&fall).unwrap();
    assert!(w.contains("<svg") && w.contains("gpipe M=1") && w.contains("gpipe M=2"));
    for (r, m) in rows.iter().zip([1, 2]) {
        assert_eq!(r["microbatches"], m);
        let analytic = r["bubble_analytic"].as_f64().unwrap();
        assert!((analytic - 1.0 / (m as f64 + 1.0)).abs() < 1e-12);
        for k in [
            "bubble_simulated",
            "bubble_measured",
            "makespan_ms",
            "tokens_per_s",
            "speedup",
        ] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{k}: {r}");
        }
        // Where the speedup goes: the four losses take the ideal speedup
        // exactly to the measured one; the controls give one time per device.
        let f = |k: &str| r[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}"));
        let losses = [
            "loss_schedule",
            "loss_imbalance",
            "loss_slowdown",
            "loss_orchestration",
        ];
        let sum: f64 = losses.iter().map(|k| f(k)).sum();
        assert!(
            (f("speedup_ideal") - sum - f("speedup")).abs() < 1e-9,
            "losses do not add up: {r}"
        );
        assert!(f("speedup_without_corun") > 0.0, "{r}");
        for k in ["solo_ms", "corun_ms"] {
            // Lists are JSON arrays.
            let cells: Vec<f64> = serde_json::from_value(r[k].clone()).unwrap();
            assert!(
                cells.len() == 2 && cells.iter().all(|x| *x > 0.0),
                "{k}: {r}"
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
}

#[test]
fn run_on_a_transformers_checkpoint_matches_its_logits() {
    // Two devices, one microbatch per sequence of the file (no --microbatches).
    let d = tmpdir("runlogits");
    let out_file = d.join("logits.safetensors");
    let ids = fixture().join("input_ids.safetensors");
    let out = wgpipe(&[
        "run",
        "--checkpoint",
        fixture().to_str().unwrap(),
        "--input-ids",
        ids.to_str().unwrap(),
        "--devices",
        "2",
        "--logits-out",
        out_file.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["microbatches"], 2);
    matches_transformers(&out_file);
}

#[test]
fn run_compare_measures_one_device_and_accounts_for_the_speedup() {
    let out = wgpipe(&[
        "run",
        "--model",
        "tiny",
        "--devices",
        "2",
        "--microbatches",
        "4",
        "--seq",
        "16",
        "--compare",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &v["compare"];
    assert_eq!(c["one_device_measured"], true, "{c}");
    let f = |x: &serde_json::Value| x.as_f64().unwrap_or_else(|| panic!("{c}"));
    assert!(f(&c["one_device_ms"]) > 0.0);
    let a = &c["accounting"];
    let sum: f64 = [
        "loss_schedule",
        "loss_imbalance",
        "loss_slowdown",
        "loss_orchestration",
    ]
    .iter()
    .map(|k| f(&a[k]))
    .sum();
    assert!(
        (f(&a["speedup_ideal"]) - sum - f(&a["speedup"])).abs() < 1e-9,
        "{a}"
    );
    assert!((f(&a["speedup"]) - f(&c["speedup"])).abs() < 1e-12, "{c}");
    assert_eq!(c["controls"]["solo_ms"].as_array().unwrap().len(), 2);

    // Without --compare: an estimate, and no accounting.
    let out = wgpipe(&[
        "run",
        "--model",
        "small-test",
        "--devices",
        "2",
        "--microbatches",
        "2",
        "--seq",
        "8",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(", same work: ~"),
        "{text}"
    );
    assert!(text.contains("split auto: "), "{text}");
}

#[test]
fn split_even_and_counts_skip_the_profile() {
    for (split, want) in [("even", "[2,1]"), ("1,2", "[1,2]")] {
        let out = wgpipe(&[
            "run",
            "--model",
            "small-test",
            "--devices",
            "2",
            "--microbatches",
            "2",
            "--seq",
            "8",
            "--split",
            split,
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["split"]["split"].to_string(), want, "{}", v["split"]);
        assert!(v["split"]["auto"].is_null(), "{}", v["split"]);
    }
    // A malformed --split is a usage error (clap's exit code 2).
    let out = wgpipe(&["run", "--model", "tiny", "--devices", "2", "--split", "2,x"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`x` is not a layer count"), "{err}");
}

#[test]
fn tensor_parallel_forward_and_run_give_the_single_device_logits() {
    let ck = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-gpt2-gen");
    let ck = ck.to_str().unwrap();
    let dir = tmpdir("tp");
    let file = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let input = [
        "--checkpoint",
        ck,
        "--batch",
        "2",
        "--seq",
        "6",
        "--seed",
        "3",
    ];
    let one = wgpipe(&[&["forward"][..], &input, &["--logits-out", &file("one")]].concat());
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let tp = wgpipe(
        &[
            &["forward", "--tp", "2"][..],
            &input,
            &["--logits-out", &file("tp")],
        ]
        .concat(),
    );
    assert!(
        tp.status.success(),
        "{}",
        String::from_utf8_lossy(&tp.stderr)
    );
    let run = wgpipe(
        &[
            &[
                "run",
                "--tp",
                "2",
                "--devices",
                "4",
                "--split",
                "even",
                "--microbatches",
                "2",
                "--json",
            ][..],
            &input,
            &["--logits-out", &file("run")],
        ]
        .concat(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["tp"], 2);
    assert!(v["all_reduce_bytes"].as_u64().unwrap() > 0);
    let (shape, want) = read_logits(&dir.join("one"));
    for f in ["tp", "run"] {
        let (s, got) = read_logits(&dir.join(f));
        assert_eq!(s, shape);
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-5 * scale.max(1.0), "{f}: max |Δ| {worst}");
    }
    // Bad layouts, before any device work.
    fails_with(
        &wgpipe(&[&["run", "--tp", "3"][..], &input].concat()),
        &["--tp 3", "attention heads"],
    );
    fails_with(
        &wgpipe(&[&["run", "--tp", "2", "--devices", "3"][..], &input].concat()),
        &["3 Gpus", "P x 2"],
    );
    fails_with(
        &wgpipe(&[&["forward", "--tp", "2", "--devices", "4"][..], &input].concat()),
        &["one stage", "wgpipe run"],
    );
    fails_with(
        &wgpipe(&["train", "--tp", "2", "--devices", "3", "--checkpoint", ck]),
        &["3 Gpus", "P x 2"],
    );
}

/// `bench bubble`, `bench decode` and `bench layouts` run a checkpoint's
/// own model (here a Llama: grouped-query attention, RoPE, an untied head)
/// given `--checkpoint`, and refuse it beside `--model`.
#[test]
fn the_benches_run_a_checkpoint() {
    let llama = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny-llama");
    let llama = llama.to_str().unwrap();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = wgpipe(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let v = json(&[
        "bench",
        "bubble",
        "--checkpoint",
        llama,
        "--devices",
        "2",
        "--microbatches",
        "2",
        "--seq",
        "8",
        "--repeat",
        "1",
        "--json",
    ]);
    assert_eq!(v["model"]["n_layer"], 4, "{v}");
    assert_eq!(v["model"]["n_head"], 6, "{v}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 1);
    let v = json(&[
        "bench",
        "decode",
        "--checkpoint",
        llama,
        "--devices",
        "2",
        "--groups",
        "2",
        "--prompt-len",
        "4",
        "--max-new-tokens",
        "3",
        "--repeat",
        "1",
        "--json",
    ]);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0]["tokens_per_s"].as_f64().unwrap() > 0.0, "{v}");
    // 6 query heads over 2 KV heads: TP 2 splits both; each layout runs.
    let v = json(&[
        "bench",
        "layouts",
        "--checkpoint",
        llama,
        "--devices",
        "2",
        "--batch",
        "2",
        "--seq",
        "4",
        "--max-new-tokens",
        "2",
        "--repeat",
        "1",
        "--json",
    ]);
    assert_eq!(v["rows"].as_array().unwrap().len(), 2, "{v}");
    // Both at once is a usage error (clap's status 2), naming the two.
    let out = wgpipe(&["bench", "decode", "--checkpoint", llama, "--model", "gpt2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--checkpoint") && err.contains("--model"),
        "{err}"
    );
}
