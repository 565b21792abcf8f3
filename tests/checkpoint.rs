//! Checkpoints: save and load round trips, stored dtypes, tensors that are
//! ignored, and every way a checkpoint can be wrong.

mod common;

use common::{err_string, f32_bytes, scratch, tensors_of, tiny, write_st};
use safetensors::{Dtype, SafeTensors};
use wgpipe::cpu::*;
use wgpipe::error::Error;
use wgpipe::io::random_input_ids;
use wgpipe::model::checkpoint::{
    save_checkpoint, save_checkpoint_with, Checkpoint, SaveOptions, StoreDtype,
};
use wgpipe::model::{Gpt2Config, Gpt2Weights, PartialWeights, StagePart, StageSource, TensorSet};

#[test]
fn checkpoint_round_trip_with_and_without_prefix() {
    let w = Gpt2Weights::init(&Gpt2Config::named("small-test").unwrap(), 5).unwrap();
    for prefix in [true, false] {
        let dir = scratch(&format!("ckpt_roundtrip_{prefix}"));
        save_checkpoint_with(
            &w,
            &dir,
            SaveOptions {
                prefix,
                dtype: StoreDtype::F32,
            },
        )
        .unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let name = if prefix {
            "transformer.h.0.attn.c_attn.weight"
        } else {
            "h.0.attn.c_attn.weight"
        };
        assert_eq!(st.tensor(name).unwrap().shape(), &[50, 150]);
        let back = Gpt2Weights::load_checkpoint(&dir).unwrap();
        assert_eq!(back, w, "bitwise round trip (prefix {prefix})");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }
    // The default is the transformers layout.
    let dir = scratch("ckpt_default");
    save_checkpoint(&w, &dir).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(SafeTensors::deserialize(&bytes)
        .unwrap()
        .tensor("transformer.wte.weight")
        .is_ok());
}

#[test]
fn checkpoint_f16_and_bf16_load_as_f32() {
    let w = Gpt2Weights::init(&tiny(), 6).unwrap();
    for (dtype, tol) in [(StoreDtype::F16, 1e-3f32), (StoreDtype::BF16, 8e-3)] {
        let dir = scratch(&format!("ckpt_{dtype:?}"));
        save_checkpoint_with(
            &w,
            &dir,
            SaveOptions {
                prefix: true,
                dtype,
            },
        )
        .unwrap();
        let back = Gpt2Weights::load_checkpoint(&dir).unwrap();
        for ((name, a, _), (_, b, _)) in w.named_tensors().iter().zip(back.named_tensors()) {
            for (x, y) in a.iter().zip(b.iter()) {
                assert!(
                    (x - y).abs() <= tol * x.abs() + 1e-7,
                    "{dtype:?} {name}: {x} vs {y}"
                );
            }
        }
        // Loading a narrowed checkpoint again and saving it is lossless.
        let dir2 = scratch(&format!("ckpt_{dtype:?}_2"));
        save_checkpoint_with(
            &back,
            &dir2,
            SaveOptions {
                prefix: false,
                dtype,
            },
        )
        .unwrap();
        assert_eq!(Gpt2Weights::load_checkpoint(&dir2).unwrap(), back);
    }
}

#[test]
fn checkpoint_ignores_lm_head_and_mask_buffers() {
    let w = Gpt2Weights::init(&tiny(), 9).unwrap();
    let dir = scratch("ckpt_extras");
    save_checkpoint(&w, &dir).unwrap();
    let mut t = tensors_of(&w, "transformer.");
    t.push((
        "lm_head.weight".into(),
        Dtype::F32,
        vec![97, 36],
        f32_bytes(&w.wte),
    ));
    t.push((
        "transformer.h.0.attn.bias".into(),
        Dtype::U8,
        vec![1, 1, 4, 4],
        vec![1; 16],
    ));
    t.push((
        "transformer.h.1.attn.masked_bias".into(),
        Dtype::F32,
        vec![],
        f32_bytes(&[-1e4]),
    ));
    write_st(&dir.join("model.safetensors"), &t);
    assert_eq!(Gpt2Weights::load_checkpoint(&dir).unwrap(), w);
    // The full load reads the model's tensors and nothing else.
    let mut ckpt = Checkpoint::open(&dir).unwrap();
    let cfg = ckpt.config().clone();
    let back = ckpt
        .load(&[StagePart::whole(&cfg)])
        .unwrap()
        .into_whole()
        .unwrap();
    assert_eq!(back, w);
    let model = set_bytes(&cfg, &TensorSet::all(&cfg), 4);
    assert_eq!(ckpt.bytes_read(), model);
    assert_eq!(ckpt.tensor_bytes(), model + 4 * 97 * 36 + 16 + 4);
}

#[test]
fn checkpoint_errors() {
    let w = Gpt2Weights::init(&tiny(), 10).unwrap();
    let base = scratch("ckpt_errors");

    // missing directory
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&base.join("absent")));
    assert!(matches!(e, Error::Io { .. }) && s.contains("absent"), "{s}");

    // a file, not a directory
    let file = base.join("plainfile");
    std::fs::write(&file, "x").unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&file));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("plainfile") && s.contains("not a directory"),
        "{s}"
    );

    let fresh = |name: &str| {
        let d = base.join(name);
        save_checkpoint(&w, &d).unwrap();
        d
    };

    // missing / malformed / incomplete config.json
    let d = fresh("no_config");
    std::fs::remove_file(d.join("config.json")).unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("config.json"),
        "{s}"
    );
    let d = fresh("bad_config");
    std::fs::write(d.join("config.json"), "{\"n_embd\": 36,").unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Json { .. }) && s.contains("config.json"),
        "{s}"
    );
    let d = fresh("config_no_key");
    std::fs::write(
        d.join("config.json"),
        r#"{"vocab_size": 97, "n_positions": 64, "n_embd": 36, "n_layer": 2}"#,
    )
    .unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Config(_)) && s.contains("n_head") && s.contains("config.json"),
        "{s}"
    );

    // n_embd not divisible by n_head
    let d = fresh("indivisible");
    std::fs::write(
        d.join("config.json"),
        r#"{"vocab_size": 97, "n_positions": 64, "n_embd": 36, "n_layer": 2, "n_head": 5}"#,
    )
    .unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Config(_)) && s.contains("36") && s.contains("n_head 5"),
        "{s}"
    );

    // missing / truncated / garbage model.safetensors
    let d = fresh("no_weights");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("model.safetensors"),
        "{s}"
    );
    let d = fresh("truncated");
    let p = d.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Safetensors { .. }) && s.contains("model.safetensors"),
        "{s}"
    );
    std::fs::write(&p, b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage header}").unwrap();
    let (e, _) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(matches!(e, Error::Safetensors { .. }));
    std::fs::write(&p, b"abc").unwrap();
    let (e, _) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(matches!(e, Error::Safetensors { .. }));

    // a missing tensor: named, and some present ones listed
    let d = fresh("missing_tensor");
    let t: Vec<_> = tensors_of(&w, "transformer.")
        .into_iter()
        .filter(|t| t.0 != "transformer.h.1.mlp.c_fc.bias")
        .collect();
    write_st(&d.join("model.safetensors"), &t);
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    match &e {
        Error::MissingTensor {
            name, available, ..
        } => {
            assert_eq!(name, "transformer.h.1.mlp.c_fc.bias");
            assert!(
                available.contains("transformer.h.0.attn.c_attn.bias"),
                "{available}"
            );
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(s.contains("model.safetensors"), "{s}");

    // a mis-shaped tensor: both shapes given
    let d = fresh("bad_shape");
    let mut t = tensors_of(&w, "");
    let i = t
        .iter()
        .position(|t| t.0 == "h.0.attn.c_attn.weight")
        .unwrap();
    t[i].2 = vec![108, 36]; // transposed (nn.Linear layout)
    write_st(&d.join("model.safetensors"), &t);
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    match &e {
        Error::TensorShape {
            name,
            expected,
            found,
            ..
        } => {
            assert_eq!(name, "h.0.attn.c_attn.weight");
            assert_eq!(
                (expected.as_slice(), found.as_slice()),
                (&[36, 108][..], &[108, 36][..])
            );
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(s.contains("[36, 108]") && s.contains("[108, 36]"), "{s}");

    // wrong dtype
    let d = fresh("bad_dtype");
    let mut t = tensors_of(&w, "transformer.");
    let i = t
        .iter()
        .position(|t| t.0 == "transformer.wpe.weight")
        .unwrap();
    t[i].1 = Dtype::I64;
    t[i].3 = vec![0u8; 64 * 36 * 8];
    write_st(&d.join("model.safetensors"), &t);
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    match &e {
        Error::TensorDtype { name, found, .. } => {
            assert_eq!(name, "transformer.wpe.weight");
            assert_eq!(found, "I64");
        }
        other => panic!("wrong error {other:?}"),
    }
    assert!(s.contains("F32"), "{s}");

    // tensors for more layers than config.json declares
    let d = fresh("extra_layer");
    let mut three = tiny();
    three.n_layer = 3;
    let w3 = Gpt2Weights::init(&three, 1).unwrap();
    write_st(
        &d.join("model.safetensors"),
        &tensors_of(&w3, "transformer."),
    );
    let (e, s) = err_string(Gpt2Weights::load_checkpoint(&d));
    assert!(
        matches!(e, Error::Config(_)) && s.contains("h.2") && s.contains("n_layer = 2"),
        "{s}"
    );
}

#[test]
fn save_then_forward_is_unchanged() {
    // The loaded model computes exactly what the saved one did.
    let w = Gpt2Weights::init(&tiny(), 12).unwrap();
    let dir = scratch("save_forward");
    save_checkpoint(&w, &dir).unwrap();
    let back = Gpt2Weights::load_checkpoint(&dir).unwrap();
    let ids = random_input_ids(2, 5, 97, 1);
    assert_eq!(
        gpt2_forward(&w, &ids.ids, 2, 5),
        gpt2_forward(&back, &ids.ids, 2, 5)
    );
}

/// Bytes of the tensors `set` names in a checkpoint of `cfg` stored with
/// `elem` bytes per value.
fn set_bytes(cfg: &Gpt2Config, set: &TensorSet, elem: u64) -> u64 {
    let (v, p, c, f) = (
        cfg.vocab_size as u64,
        cfg.n_positions as u64,
        cfg.n_embd as u64,
        cfg.n_inner as u64,
    );
    // ln_1, c_attn, attn c_proj, ln_2, c_fc, mlp c_proj: weights and biases.
    let block = 2 * c + (c * 3 * c + 3 * c) + (c * c + c) + 2 * c + (c * f + f) + (f * c + c);
    let blocks = set.layers.iter().filter(|&&x| x).count() as u64;
    elem * (u64::from(set.wte) * v * c
        + u64::from(set.wpe) * p * c
        + blocks * block
        + u64::from(set.ln_f) * 2 * c)
}

fn part(layers: std::ops::Range<usize>, embedding: bool, head: bool) -> StagePart {
    StagePart {
        layers,
        embedding,
        head,
    }
}

#[test]
fn partial_load_reads_only_its_parts_and_gives_the_full_loads_tensors() {
    let cfg = Gpt2Config::named("small-test").unwrap(); // 3 layers
    let w = Gpt2Weights::init(&cfg, 21).unwrap();
    for (dtype, elem) in [(StoreDtype::F32, 4), (StoreDtype::BF16, 2)] {
        let dir = scratch(&format!("ckpt_partial_{dtype:?}"));
        let opts = SaveOptions {
            prefix: true,
            dtype,
        };
        save_checkpoint_with(&w, &dir, opts).unwrap();
        let full = Gpt2Weights::load_checkpoint(&dir).unwrap();

        // The last two stages of a 3-stage split: blocks 1 and 2, the head.
        let parts = [part(1..2, false, false), part(2..3, false, true)];
        let mut ckpt = Checkpoint::open(&dir).unwrap();
        assert_eq!(ckpt.config(), &cfg);
        assert_eq!(ckpt.bytes_read(), 0, "opening reads the header alone");
        let all = TensorSet::all(&cfg);
        assert_eq!(ckpt.tensor_bytes(), set_bytes(&cfg, &all, elem));
        let mine = ckpt.load(&parts).unwrap();
        let set = TensorSet::of(&cfg, &parts).unwrap();
        assert_eq!(
            set,
            TensorSet {
                wte: true,
                wpe: false,
                layers: vec![false, true, true],
                ln_f: true,
                lm_head: false,
            }
        );
        assert_eq!(mine.held(), &set);
        assert_eq!(ckpt.bytes_read(), set_bytes(&cfg, &set, elem), "{dtype:?}");
        assert!(ckpt.bytes_read() < ckpt.tensor_bytes());
        for p in &parts {
            let (a, b) = (mine.stage(p).unwrap(), full.stage(p));
            assert_eq!(a.layers, b.layers, "{dtype:?} {p:?}");
            assert_eq!((a.wte, a.wpe, a.ln_f), (b.wte, b.wpe, b.ln_f));
        }
        // Through the trait the executors use, too.
        let src: &dyn StageSource = &mine;
        assert_eq!(
            src.try_stage(&parts[1]).unwrap().layers,
            full.stage(&parts[1]).layers
        );

        // Loading more reads only what is not there yet.
        let mut more = mine.clone();
        let before = ckpt.bytes_read();
        ckpt.load_into(&mut more, &[part(0..2, true, false)])
            .unwrap();
        let added = TensorSet {
            wte: false,
            wpe: true,
            layers: vec![true, false, false],
            ln_f: false,
            lm_head: false,
        };
        assert_eq!(ckpt.bytes_read() - before, set_bytes(&cfg, &added, elem));
        assert_eq!(more.whole().unwrap(), &full);
        // ... and dropping gives back exactly the smaller set.
        more.retain(&set);
        assert_eq!(more, mine);
        let (_, s) = err_string(more.into_whole().map(drop));
        assert!(s.contains("wpe, layer 0 are not loaded"), "{s}");
    }
}

#[test]
fn a_part_that_was_not_loaded_is_an_error_naming_it() {
    let cfg = Gpt2Config::named("small-test").unwrap();
    let w = Gpt2Weights::init(&cfg, 22).unwrap();
    let dir = scratch("ckpt_partial_missing");
    save_checkpoint(&w, &dir).unwrap();
    let mut ckpt = Checkpoint::open(&dir).unwrap();
    let mine = ckpt.load(&[part(0..1, true, false)]).unwrap();
    let (e, s) = err_string(mine.stage(&part(1..3, false, true)));
    assert!(matches!(e, Error::Other(_)), "{e:?}");
    assert!(
        s.contains("stage") && s.contains("layers 1-2, ln_f are not loaded in this process"),
        "{s}"
    );
    assert!(s.contains("it loaded wte, wpe, layer 0"), "{s}");
    let (_, s) = err_string(mine.stage(&part(2..3, false, false)));
    assert!(s.contains("layer 2 is not loaded"), "{s}");
    let (_, s) = err_string(mine.whole().map(drop));
    assert!(
        s.contains("the whole model: layers 1-2, ln_f are not loaded"),
        "{s}"
    );
    // A stage past the model's layers is an error too, from either kind of weights.
    let (_, s) = err_string(mine.stage(&part(2..4, false, false)));
    assert!(s.contains("past the model's 3 layers"), "{s}");
    let (_, s) = err_string(StageSource::try_stage(&w, &part(2..4, false, false)).map(drop));
    assert!(s.contains("past the model's 3 layers"), "{s}");
    // Nothing loaded at all.
    let none = PartialWeights::empty(cfg.clone());
    let (_, s) = err_string(none.stage(&part(0..1, true, false)).map(drop));
    assert!(
        s.contains("wte, wpe, layer 0 are not loaded") && s.contains("it loaded nothing"),
        "{s}"
    );
}

#[test]
fn partial_load_checks_what_it_reads() {
    let w = Gpt2Weights::init(&tiny(), 23).unwrap(); // 2 layers
    let dir = scratch("ckpt_partial_checks");
    save_checkpoint(&w, &dir).unwrap();
    // Layer 1 lacks a tensor and layer 0's c_fc is mis-shaped.
    let mut t: Vec<_> = tensors_of(&w, "transformer.")
        .into_iter()
        .filter(|t| t.0 != "transformer.h.1.mlp.c_fc.bias")
        .collect();
    let i = t
        .iter()
        .position(|t| t.0 == "transformer.h.0.mlp.c_fc.weight")
        .unwrap();
    t[i].2 = vec![144, 36];
    write_st(&dir.join("model.safetensors"), &t);
    // The head alone needs neither: it loads.
    let mut ckpt = Checkpoint::open(&dir).unwrap();
    let head = ckpt.load(&[part(0..0, false, true)]).unwrap();
    assert_eq!(
        head.stage(&part(0..0, false, true)).unwrap().head.unwrap(),
        &w.wte[..]
    );
    // Layer 1: the missing tensor, named, and nothing read.
    let before = ckpt.bytes_read();
    let (e, _) = err_string(ckpt.load(&[part(1..2, false, true)]));
    match e {
        Error::MissingTensor { name, .. } => assert_eq!(name, "transformer.h.1.mlp.c_fc.bias"),
        other => panic!("wrong error {other:?}"),
    }
    assert_eq!(ckpt.bytes_read(), before, "checked before reading");
    // Layer 0: both shapes.
    let (e, _) = err_string(ckpt.load(&[part(0..1, true, false)]));
    assert!(matches!(e, Error::TensorShape { .. }), "{e:?}");
    // The config and header checks come with opening.
    let mut three = tiny();
    three.n_layer = 3;
    write_st(
        &dir.join("model.safetensors"),
        &tensors_of(&Gpt2Weights::init(&three, 1).unwrap(), ""),
    );
    let (e, s) = err_string(Checkpoint::open(&dir).map(drop));
    assert!(matches!(e, Error::Config(_)) && s.contains("h.2"), "{s}");
}

#[test]
fn tensor_sets_describe_themselves() {
    let mut s = TensorSet::none(&Gpt2Config::named("gpt2").unwrap());
    assert_eq!(s.describe(), "nothing");
    for l in [0, 1, 2, 5, 7, 8] {
        s.layers[l] = true;
    }
    s.ln_f = true;
    assert_eq!(s.describe(), "layers 0-2, 5 and 7-8, ln_f");
    s.wte = true;
    s.layers = vec![false; 12];
    s.layers[11] = true;
    assert_eq!(s.describe(), "wte, layer 11, ln_f");
}
