//! Input ids and logits files: loading, validation and writing.

mod common;

use std::path::Path;

use common::{err_string, read_float_tensor, scratch, tiny, write_st};
use safetensors::Dtype;
use wgpipe::error::Error;
use wgpipe::io::{check_input, random_input_ids, read_input_ids, write_logits, TokenBatch};

fn write_ids(path: &Path, dtype: Dtype, shape: Vec<usize>, vals: &[i64]) {
    let bytes: Vec<u8> = match dtype {
        Dtype::I64 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::I32 => vals
            .iter()
            .flat_map(|v| (*v as i32).to_le_bytes())
            .collect(),
        Dtype::F32 => vals
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect(),
        _ => unreachable!(),
    };
    write_st(path, &[("input_ids".into(), dtype, shape, bytes)]);
}

#[test]
fn input_ids_load() {
    let dir = scratch("input_ids_load");
    let p = dir.join("ids.safetensors");
    let vals = [1i64, 2, 3, 4, 5, 96];
    for dtype in [Dtype::I64, Dtype::I32] {
        write_ids(&p, dtype, vec![2, 3], &vals);
        let t = read_input_ids(&p).unwrap();
        assert_eq!(
            t,
            TokenBatch {
                ids: vec![1, 2, 3, 4, 5, 96],
                batch: 2,
                seq: 3
            }
        );
        check_input(&tiny(), &t).unwrap();
    }
    write_ids(&p, Dtype::I64, vec![6], &vals);
    let t = read_input_ids(&p).unwrap();
    assert_eq!((t.batch, t.seq, t.ids.len()), (1, 6, 6));
    // Largest u32 loads; check_input rejects it later.
    write_ids(&p, Dtype::I64, vec![1], &[u32::MAX as i64]);
    assert_eq!(read_input_ids(&p).unwrap().ids, vec![u32::MAX]);
}

#[test]
fn input_ids_errors() {
    let dir = scratch("input_ids_errors");
    let p = dir.join("ids.safetensors");

    let (e, s) = err_string(read_input_ids(&dir.join("absent.safetensors")));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("absent.safetensors"),
        "{s}"
    );

    std::fs::write(&p, b"not a safetensors file").unwrap();
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Safetensors { .. }) && s.contains("ids.safetensors"),
        "{s}"
    );

    write_st(
        &p,
        &[
            ("tokens".into(), Dtype::I64, vec![2], vec![0; 16]),
            ("mask".into(), Dtype::I64, vec![2], vec![0; 16]),
        ],
    );
    let (e, s) = err_string(read_input_ids(&p));
    match &e {
        Error::MissingTensor {
            name, available, ..
        } => {
            assert_eq!(name, "input_ids");
            assert!(
                available.contains("tokens") && available.contains("mask"),
                "{available}"
            );
        }
        other => panic!("wrong error {other:?}: {s}"),
    }

    write_ids(&p, Dtype::F32, vec![2], &[1, 2]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::TensorDtype { .. }) && s.contains("F32") && s.contains("I64"),
        "{s}"
    );

    write_ids(&p, Dtype::I64, vec![1, 1, 2], &[1, 2]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("[1, 1, 2]"),
        "{s}"
    );

    write_ids(&p, Dtype::I64, vec![2, 2], &[1, 2, 3, -4]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("-4") && s.contains("[1, 1]"),
        "{s}"
    );

    // No ids: refused by name, however many empty rows the shape claims.
    write_ids(&p, Dtype::I64, vec![1 << 63, 0], &[]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("[9223372036854775808, 0]: it holds no ids"),
        "{s}"
    );

    write_ids(&p, Dtype::I64, vec![2], &[1, 1 << 32]);
    let (e, s) = err_string(read_input_ids(&p));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("4294967296"),
        "{s}"
    );
}

#[test]
fn check_input_errors() {
    let cfg = tiny(); // V = 97, maxT = 64
    let ok = random_input_ids(2, 64, 97, 0);
    check_input(&cfg, &ok).unwrap();
    let mut bad = ok.clone();
    bad.ids[64 + 7] = 97;
    let (e, s) = err_string(check_input(&cfg, &bad));
    assert!(
        matches!(e, Error::Input(_)) && s.contains("97") && s.contains("[1, 7]"),
        "{s}"
    );
    let long = random_input_ids(1, 65, 97, 0);
    let (_, s) = err_string(check_input(&cfg, &long));
    assert!(s.contains("65") && s.contains("64"), "{s}");
    for (b, t) in [(0, 3), (3, 0)] {
        let (e, _) = err_string(check_input(
            &cfg,
            &TokenBatch {
                ids: vec![],
                batch: b,
                seq: t,
            },
        ));
        assert!(matches!(e, Error::Input(_)));
    }
    let (e, _) = err_string(check_input(
        &cfg,
        &TokenBatch {
            ids: vec![1, 2],
            batch: 1,
            seq: 3,
        },
    ));
    assert!(matches!(e, Error::Input(_)));
}

#[test]
fn random_ids_are_deterministic_and_in_range() {
    let a = random_input_ids(3, 17, 97, 42);
    assert_eq!(a, random_input_ids(3, 17, 97, 42));
    assert_ne!(a, random_input_ids(3, 17, 97, 43));
    assert_eq!((a.batch, a.seq, a.ids.len()), (3, 17, 51));
    assert!(a.ids.iter().all(|&i| i < 97));
}

#[test]
fn write_logits_round_trip() {
    let dir = scratch("write_logits");
    let p = dir.join("out.safetensors");
    let (b, t, v) = (2, 3, 5);
    let logits: Vec<f32> = (0..b * t * v).map(|i| i as f32 * -0.25 + 1.0).collect();
    write_logits(&p, &logits, b, t, v).unwrap();
    write_logits(&p, &logits, b, t, v).unwrap(); // overwrite is fine
    let (shape, back) = read_float_tensor(&p, "logits");
    assert_eq!(shape, vec![2, 3, 5]);
    assert_eq!(back, logits.iter().map(|&x| x as f64).collect::<Vec<_>>());
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        files,
        vec![std::ffi::OsString::from("out.safetensors")],
        "no temp files left"
    );

    // wrong length, a directory, a missing parent: refused, nothing written
    let (e, _) = err_string(write_logits(
        &dir.join("short.safetensors"),
        &logits[1..],
        b,
        t,
        v,
    ));
    assert!(matches!(e, Error::Input(_)));
    let (e, s) = err_string(write_logits(&dir, &logits, b, t, v));
    assert!(
        matches!(e, Error::Io { .. }) && s.contains("directory"),
        "{s}"
    );
    let (e, _) = err_string(write_logits(
        &dir.join("absent/x.safetensors"),
        &logits,
        b,
        t,
        v,
    ));
    assert!(matches!(e, Error::Io { .. }));
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
}
