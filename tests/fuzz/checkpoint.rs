//! `--checkpoint DIR`: a micro model's checkpoint with some tensors wrong
//! (dtype, shape, offsets, names, extra or missing ones), and the
//! fixtures' checkpoints edited.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};

use crate::gen::*;
use crate::harness::*;
use crate::safetensors::*;
use wgpipe::model::checkpoint::load_checkpoint;
use wgpipe::model::{Gpt2Config, Gpt2Weights};

/// `--checkpoint DIR`: config.json and every tensor of model.safetensors.
pub fn parse_checkpoint(dir: &Path) -> wgpipe::Result<Gpt2Weights> {
    load_checkpoint(dir)
}

/// A 2-layer model small enough that its whole checkpoint is a few KiB.
pub fn micro() -> Gpt2Config {
    Gpt2Config {
        vocab_size: 5,
        n_positions: 3,
        n_embd: 4,
        n_layer: 2,
        n_head: 2,
        n_inner: 6,
        layer_norm_epsilon: 1e-5,
        arch: wgpipe::model::config::Arch::gpt2(),
    }
}

pub fn config_json(c: &Gpt2Config) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.n_positions,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": c.n_inner,
        "layer_norm_epsilon": c.layer_norm_epsilon,
    }))
    .unwrap()
}

/// What becomes of one of the micro model's tensors.
#[derive(Clone, Debug)]
pub enum TensorEdit {
    Keep,
    Drop,
    Dtype(String),
    Shape(Vec<u64>),
    Offsets([u64; 2]),
    Rename(String),
}

#[derive(Clone, Debug)]
pub struct MicroCheckpoint {
    pub prefix: bool,
    pub dtype: &'static str,
    /// One per tensor of the model, in checkpoint order.
    pub edits: Vec<TensorEdit>,
    pub extra: Vec<StTensor>,
    /// Tensors instead of the model's (those of [`near_2_64`]).
    pub instead: Option<Vec<StTensor>>,
    pub metadata: Option<Value>,
    pub length: Option<u64>,
    pub data: Data,
    pub seed: u64,
}

impl MicroCheckpoint {
    fn file(&self) -> StFile {
        if let Some(tensors) = &self.instead {
            return StFile {
                tensors: tensors.clone(),
                metadata: None,
                length: None,
                data: self.data.clone(),
                seed: self.seed,
            };
        }
        let w = Gpt2Weights::init(&micro(), 0).unwrap();
        let prefix = if self.prefix { "transformer." } else { "" };
        let mut tensors = Vec::new();
        for ((name, _, shape), edit) in w.named_tensors().into_iter().zip(&self.edits) {
            let mut t = StTensor {
                name: format!("{prefix}{name}"),
                dtype: self.dtype.into(),
                shape: shape.iter().map(|&d| d as u64).collect(),
                offsets: None,
            };
            match edit {
                TensorEdit::Keep => {}
                TensorEdit::Drop => continue,
                TensorEdit::Dtype(d) => t.dtype = d.clone(),
                TensorEdit::Shape(s) => t.shape = s.clone(),
                TensorEdit::Offsets(o) => t.offsets = Some(*o),
                TensorEdit::Rename(n) => t.name = n.clone(),
            }
            tensors.push(t);
        }
        tensors.extend(self.extra.iter().cloned());
        StFile {
            tensors,
            metadata: self.metadata.clone(),
            length: self.length,
            data: self.data.clone(),
            seed: self.seed,
        }
    }

    fn untouched(&self) -> bool {
        self.edits.iter().all(|e| matches!(e, TensorEdit::Keep))
            && self.extra.is_empty()
            && self.instead.is_none()
    }
}

impl Input for MicroCheckpoint {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (CONFIG, config_json(&micro())),
            (WEIGHTS, self.file().bytes()),
        ]
    }
}

pub fn tensor_edit() -> impl Strategy<Value = TensorEdit> {
    prop_oneof![
        60 => Just(TensorEdit::Keep),
        1 => Just(TensorEdit::Drop),
        1 => dtype().prop_map(TensorEdit::Dtype),
        2 => vec(count(), 0..3).prop_map(TensorEdit::Shape),
        1 => (count(), count()).prop_map(|(a, b)| TensorEdit::Offsets([a, b])),
        1 => prop_oneof![
            json_text(),
            Just("transformer.h.7.ln_1.weight".to_string()),
            Just("h.99999999999999999999.ln_1.weight".to_string()),
        ].prop_map(TensorEdit::Rename),
    ]
}

pub fn micro_checkpoint() -> impl Strategy<Value = MicroCheckpoint> {
    let n = micro().n_layer * 12 + 4;
    let extra = prop_oneof![
        1 => any_tensor(),
        1 => (select(&["lm_head.weight", "h.0.attn.bias", "transformer.h.1.attn.masked_bias", "h.2.mlp.c_fc.bias"][..]), dtype(), vec(count(), 0..3))
            .prop_map(|(name, dtype, shape)| StTensor { name: name.into(), dtype, shape, offsets: None }),
    ];
    (
        any::<bool>(),
        select(&["F32", "F16", "BF16"][..]),
        vec(tensor_edit(), n..=n),
        vec(extra, 0..2),
        proptest::option::weighted(0.04, near_2_64()),
        metadata(),
        header_length(),
        data_plan(),
        any::<u64>(),
    )
        .prop_map(
            |(prefix, dtype, edits, extra, instead, metadata, length, data, seed)| {
                MicroCheckpoint {
                    prefix,
                    dtype,
                    edits,
                    extra: if seed % 4 == 0 { extra } else { Vec::new() },
                    instead,
                    metadata,
                    length,
                    data,
                    seed,
                }
            },
        )
}

/// `bytes` as f32, widened from `dtype` as a checkpoint loads them.
pub fn widen(dtype: &str, bytes: &[u8]) -> Vec<u32> {
    match dtype {
        "F32" => bytes
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        "F16" => bytes
            .chunks(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32().to_bits())
            .collect(),
        _ => bytes
            .chunks(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32().to_bits())
            .collect(),
    }
}

#[test]
fn fuzz_checkpoint_generated() {
    fuzz(
        "checkpoint",
        "checkpoint_generated",
        3000,
        micro_checkpoint(),
        |dir, c| {
            let files = c.files();
            let got = guarded("load_checkpoint", total_len(&files), || {
                parse_checkpoint(dir)
            })?;
            let f = c.file();
            if c.untouched() && f.honest() {
                let w = got
                    .as_ref()
                    .map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
                // Every tensor is the file's bytes, widened to f32.
                let bytes = &files[1].1;
                let prefix = if c.prefix { "transformer." } else { "" };
                for (name, t, _) in w.named_tensors() {
                    let stored = f.tensor_bytes(bytes, &format!("{prefix}{name}")).unwrap();
                    let loaded: Vec<u32> = t.iter().map(|x| x.to_bits()).collect();
                    prop_assert!(
                        loaded == widen(c.dtype, stored),
                        "{} differs from the file",
                        name
                    );
                }
            }
            if let Err(e) = &got {
                let msg = e.to_string();
                prop_assert!(
                    msg.contains(WEIGHTS) || msg.contains(CONFIG),
                    "the error names no file: {}",
                    msg
                );
            }
            if f.packed_len() > files[1].1.len() as u128 {
                prop_assert!(
                    got.is_err(),
                    "a header claiming {} bytes was accepted",
                    f.packed_len()
                );
            }
            Ok(verdict(&got))
        },
    )
}

/// A fixture's model.safetensors with its config.json.
#[derive(Clone, Debug)]
pub struct MutatedCheckpoint(pub MutatedSt);

impl Input for MutatedCheckpoint {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        vec![
            (CONFIG, fixture(self.0.fixture, CONFIG)),
            (WEIGHTS, self.0.edited(WEIGHTS)),
        ]
    }
}

#[test]
fn fuzz_checkpoint_mutated() {
    let strategy = (select(&["tiny-gpt2", "tiny-gpt2-n-inner"][..]), st_edits())
        .prop_map(|(fixture, edits)| MutatedCheckpoint(MutatedSt { fixture, edits }));
    fuzz(
        "checkpoint",
        "checkpoint_mutated",
        2500,
        strategy,
        |dir, m| {
            let files = m.files();
            let got = guarded("load_checkpoint", total_len(&files), || {
                parse_checkpoint(dir)
            })?;
            if m.0.data_only() {
                prop_assert!(
                    got.is_ok(),
                    "only tensor bytes changed, yet: {:?}",
                    got.err()
                );
            }
            if !m.0.keeps_length() {
                prop_assert!(got.is_err(), "a file of another length was accepted");
            }
            Ok(verdict(&got))
        },
    )
}
