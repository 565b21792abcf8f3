//! `config.json`: the fixture's with keys given other values (numbers
//! that overflow or allocate, above all), dropped or added, and its bytes
//! edited — next to the fixture's weights, so the checkpoint's own checks
//! run too.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

use crate::checkpoint::parse_checkpoint;
use crate::common::{self, fixture_dir};
use crate::gen::*;
use crate::harness::*;
use wgpipe::model::Gpt2Config;

/// config.json alone.
pub fn parse_config(dir: &Path) -> wgpipe::Result<Gpt2Config> {
    Gpt2Config::from_json_file(&dir.join(CONFIG))
}

pub const SIZE_KEYS: &[&str] = &[
    "vocab_size",
    "n_positions",
    "n_embd",
    "n_layer",
    "n_head",
    "n_inner",
];
pub const OTHER_KEYS: &[&str] = &[
    "layer_norm_epsilon",
    "activation_function",
    "scale_attn_weights",
    "scale_attn_by_inverse_layer_idx",
];

#[derive(Clone, Debug)]
pub enum ConfigInput {
    Generated(Value),
    Mutated(Vec<Edit>),
}

impl Input for ConfigInput {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let config = match self {
            ConfigInput::Generated(v) => serde_json::to_vec(v).unwrap(),
            ConfigInput::Mutated(edits) => {
                let mut bytes = fixture("tiny-gpt2", CONFIG);
                for e in edits {
                    apply(&mut bytes, e, 0..0);
                }
                bytes
            }
        };
        vec![(CONFIG, config), (WEIGHTS, fixture("tiny-gpt2", WEIGHTS))]
    }
}

/// The fixture's config with some keys given other values, dropped, or
/// added.
pub fn generated_config() -> impl Strategy<Value = Value> {
    let base: Value = serde_json::from_slice(&fixture("tiny-gpt2", CONFIG)).unwrap();
    let keys: Vec<&'static str> = SIZE_KEYS.iter().chain(OTHER_KEYS).copied().collect();
    let changes = vec(
        (
            select(keys),
            prop_oneof![
                6 => json_number().prop_map(Some),
                1 => json_value().prop_map(Some),
                1 => Just(None),
            ],
        ),
        0..4,
    );
    let extra = vec((json_text(), json_value()), 0..2);
    prop_oneof![
        12 => (changes, extra).prop_map(move |(changes, extra)| {
            let mut obj = base.as_object().unwrap().clone();
            for (k, v) in changes {
                match v {
                    Some(v) => obj.insert(k.into(), v),
                    None => obj.remove(k),
                };
            }
            obj.extend(extra);
            Value::Object(obj)
        }),
        1 => json_value(),
    ]
}

#[test]
fn fuzz_config() {
    let want = fixture_config();
    let strategy = prop_oneof![
        3 => generated_config().prop_map(ConfigInput::Generated),
        1 => vec(edit(), 1..4).prop_map(ConfigInput::Mutated),
    ];
    fuzz("config", "config", 4000, strategy, |dir, input| {
        let files = input.files();
        let n = total_len(&files);
        let cfg = guarded("Gpt2Config::from_json_file", n, || parse_config(dir))?;
        let got = guarded("load_checkpoint", n, || parse_checkpoint(dir))?;
        if let (Ok(c), ConfigInput::Generated(Value::Object(obj))) = (&cfg, input) {
            // Every size is the file's, n_inner null meaning 4 × n_embd.
            for (key, value) in SIZE_KEYS.iter().zip([
                c.vocab_size,
                c.n_positions,
                c.n_embd,
                c.n_layer,
                c.n_head,
                c.n_inner,
            ]) {
                let stated = match obj.get(*key) {
                    None | Some(Value::Null) if *key == "n_inner" => {
                        (c.n_embd as u64).checked_mul(4)
                    }
                    v => v.and_then(Value::as_u64),
                };
                prop_assert_eq!(stated, Some(value as u64), "{}", key);
            }
            // A size no 150 KB file can hold is refused, naming it.
            for key in SIZE_KEYS {
                if let Some(v) = obj
                    .get(*key)
                    .and_then(Value::as_u64)
                    .filter(|&v| v >= 1 << 40)
                {
                    let msg = got
                        .as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    prop_assert!(
                        msg.contains(&format!("{key} = {v}")),
                        "{} = {} was not refused by name: {:?}",
                        key,
                        v,
                        msg
                    );
                }
            }
        }
        if let Ok(w) = &got {
            let c = &w.config;
            prop_assert_eq!(
                (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_inner),
                (
                    want.vocab_size,
                    want.n_positions,
                    want.n_embd,
                    want.n_layer,
                    want.n_inner
                ),
                "a config of other sizes loaded the fixture's weights"
            );
        }
        Ok(verdict(&got))
    })
}

#[test]
fn a_config_of_absurd_sizes_is_refused_before_allocating() {
    let dir = common::scratch("fuzz_absurd_config");
    std::fs::copy(fixture_dir("tiny-gpt2").join(WEIGHTS), dir.join(WEIGHTS)).unwrap();
    let mut cfg: Value = serde_json::from_slice(&fixture("tiny-gpt2", CONFIG)).unwrap();
    for (key, value) in [
        ("n_embd", 1_000_000_000_000u64),
        ("n_layer", 1_000_000_000_000),
        ("vocab_size", 1 << 40),
    ] {
        let mut c = cfg.clone();
        c[key] = json!(value);
        if key == "n_embd" {
            c["n_head"] = json!(1);
        }
        std::fs::write(dir.join(CONFIG), serde_json::to_vec(&c).unwrap()).unwrap();
        let (msg, largest) = largest_allocation(|| error_of(parse_checkpoint(&dir)));
        assert!(
            msg.contains(&format!("{key} = {value}")) && msg.contains(CONFIG),
            "{msg}"
        );
        assert!(
            largest < 1 << 20,
            "{key}: {largest} bytes allocated at once"
        );
    }
    cfg["n_embd"] = json!(1u64 << 62);
    cfg["n_head"] = json!(1);
    std::fs::write(dir.join(CONFIG), serde_json::to_vec(&cfg).unwrap()).unwrap();
    let msg = error_of(parse_config(&dir));
    assert!(msg.contains("n_embd") && msg.contains(CONFIG), "{msg}");
}

#[test]
fn deeply_nested_config_json_is_refused_not_overflowing_the_stack() {
    let dir = common::scratch("fuzz_deep_config");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(dir.join(CONFIG), &deep).unwrap();
    let msg = error_of(parse_config(&dir));
    assert!(
        msg.contains("recursion limit") && msg.contains(CONFIG),
        "{msg}"
    );
}
