//! `--input-ids FILE`: generated safetensors files holding (mostly) an
//! `input_ids` tensor, and the fixtures' files edited.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use crate::gen::*;
use crate::harness::*;
use crate::safetensors::*;
use wgpipe::io::{check_input, read_input_ids, TokenBatch};

/// `--input-ids FILE`, checked against the tiny-gpt2 fixture's config.
pub fn parse_input_ids(dir: &Path) -> wgpipe::Result<TokenBatch> {
    let ids = read_input_ids(&dir.join(INPUT_IDS))?;
    check_input(&fixture_config(), &ids)?;
    Ok(ids)
}

/// An `input_ids` file: mostly one plausible `input_ids` tensor.
pub fn input_ids_file() -> impl Strategy<Value = StFile> {
    let ids = (
        prop_oneof![6 => Just("I64".to_string()), 3 => Just("I32".to_string()), 2 => dtype()],
        prop_oneof![6 => vec(0u64..12, 1..=2), 1 => vec(count(), 0..4)],
        offsets(),
    )
        .prop_map(|(dtype, shape, offsets)| StTensor {
            name: "input_ids".into(),
            dtype,
            shape,
            offsets,
        });
    let tensors = prop_oneof![
        12 => vec(prop_oneof![4 => ids, 1 => any_tensor()], 0..3),
        1 => near_2_64(),
    ];
    (
        tensors,
        metadata(),
        header_length(),
        data_plan(),
        any::<u64>(),
    )
        .prop_map(|(tensors, metadata, length, data, seed)| StFile {
            tensors,
            metadata,
            length,
            data,
            seed,
        })
}

impl Input for StFile {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![(INPUT_IDS, self.bytes())]
    }
}

#[test]
fn fuzz_input_ids_generated() {
    let tiny = fixture_config();
    fuzz(
        "input_ids",
        "input_ids_generated",
        4000,
        input_ids_file(),
        |dir, f| {
            let bytes = f.bytes();
            let got = guarded("read_input_ids", bytes.len(), || {
                read_input_ids(&dir.join(INPUT_IDS))
            })?;
            // An honest file with a non-empty I64/I32 `input_ids` of rank 1 or 2
            // loads, exactly, unless an id is outside 0..2^32.
            let ids = f
                .layout()
                .into_iter()
                .find(|l| l.0.name == "input_ids")
                .map(|l| l.0);
            let expected = ids.filter(|t| {
                f.honest()
                    && matches!(t.dtype.as_str(), "I64" | "I32")
                    && matches!(t.shape.len(), 1 | 2)
                    && t.shape.iter().all(|&d| d > 0)
            });
            if let Some(t) = expected {
                let data = f.tensor_bytes(&bytes, "input_ids").unwrap();
                let values: Vec<i64> = match t.dtype.as_str() {
                    "I64" => data
                        .chunks(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    _ => data
                        .chunks(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                };
                let (batch, seq) = match t.shape[..] {
                    [s] => (1, s as usize),
                    [b, s] => (b as usize, s as usize),
                    _ => unreachable!(),
                };
                if values.iter().all(|&v| (0..1 << 32).contains(&v)) {
                    let got = got
                        .as_ref()
                        .map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
                    let want: Vec<u32> = values.iter().map(|&v| v as u32).collect();
                    prop_assert_eq!(
                        got,
                        &TokenBatch {
                            ids: want,
                            batch,
                            seq
                        }
                    );
                } else {
                    prop_assert!(got.is_err(), "an id outside 0..2^32 was accepted");
                }
            }
            if let Ok(t) = &got {
                prop_assert_eq!(t.ids.len(), t.batch * t.seq);
                // Then the ids against a model: refused exactly when one is out
                // of its vocabulary or the sequence is too long.
                let fits = t.batch > 0
                    && t.seq > 0
                    && t.seq <= tiny.n_positions
                    && t.ids.iter().all(|&id| (id as usize) < tiny.vocab_size);
                let checked = check_input(&tiny, t);
                prop_assert_eq!(checked.is_ok(), fits, "{:?}", checked);
            }
            // A header claiming more than the file holds is refused.
            if f.packed_len() > bytes.len() as u128 && f.tensors.iter().all(|t| t.offsets.is_none())
            {
                prop_assert!(
                    got.is_err(),
                    "a header claiming {} bytes in a {}-byte file was accepted",
                    f.packed_len(),
                    bytes.len()
                );
            }
            Ok(verdict(&got))
        },
    )
}

#[derive(Clone, Debug)]
pub struct MutatedIds(pub MutatedSt);

impl Input for MutatedIds {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![(INPUT_IDS, self.0.edited(INPUT_IDS))]
    }
}

#[test]
fn fuzz_input_ids_mutated() {
    let strategy = (
        select(&["tiny-gpt2", "tiny-gpt2-4l", "tiny-gpt2-n-inner"][..]),
        st_edits(),
    )
        .prop_map(|(fixture, edits)| MutatedIds(MutatedSt { fixture, edits }));
    fuzz(
        "input_ids",
        "input_ids_mutated",
        3000,
        strategy,
        |dir, m| {
            let files = m.files();
            let got = guarded("read_input_ids", total_len(&files), || parse_input_ids(dir))?;
            if !m.0.keeps_length() {
                prop_assert!(got.is_err(), "a file of another length was accepted");
            }
            Ok(verdict(&got))
        },
    )
}
