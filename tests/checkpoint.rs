//! Checkpoints: save and load round trips, stored dtypes, tensors that are
//! ignored, and every way a checkpoint can be wrong.

mod common;

use common::{err_string, f32_bytes, scratch, tensors_of, tiny, write_st};
use safetensors::{Dtype, SafeTensors};
use wgpipe::cpu::*;
use wgpipe::error::Error;
use wgpipe::io::random_input_ids;
use wgpipe::model::checkpoint::{save_checkpoint, save_checkpoint_with, SaveOptions, StoreDtype};
use wgpipe::model::{Gpt2Config, Gpt2Weights};

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
