//! `tokenizer.json`: the tiny-gpt2-gen fixture with its parts (decoder,
//! pre-tokenizer, normalizer, post-processor, padding, truncation, model
//! fields, any node) replaced by generated components, then loaded and used
//! the way `generate` uses it.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use crate::common;
use crate::gen::*;
use crate::harness::*;
use wgpipe::tokenizer::{TextStream, Tokenizer};

/// The file `generate` reads beside a checkpoint.
pub const TOKENIZER: &str = "tokenizer.json";

/// Texts every tokenizer is tried on.
pub const PROBES: &[&str] = &[
    "",
    "Hello world",
    "The pipeline  bubble\n\tis measured, 12.5 %",
    "héllo 🙂 ÿ\u{0}\u{FFFD}",
];

/// What `generate` does with `tokenizer.json`: load it, encode prompts,
/// decode and stream ids (those of the probes, and ids at and past the end
/// of the vocabulary). Returns the decoded probes.
pub fn parse_tokenizer(dir: &Path) -> wgpipe::Result<Vec<String>> {
    let tok = Tokenizer::from_file(dir.join(TOKENIZER))?;
    let mut texts = Vec::new();
    for text in PROBES {
        let ids = tok.encode(text)?;
        let mut stream = TextStream::new(&tok);
        let mut streamed = String::new();
        for &id in &ids {
            streamed += &stream.push(id)?;
        }
        streamed += &stream.finish()?;
        let decoded = tok.decode(&ids)?;
        if streamed != decoded {
            return Err(wgpipe::Error::Other(format!(
                "streamed {streamed:?} but decoded {decoded:?}"
            )));
        }
        texts.push(decoded);
    }
    let v = tok.vocab_size() as u32;
    for id in [0, v.saturating_sub(1), v, u32::MAX] {
        let _ = tok.decode(&[id]);
    }
    Ok(texts)
}

/// A value of one field of a tokenizer component.
#[derive(Clone, Copy, Debug)]
pub enum Field {
    Char,
    Count,
    Bool,
    Text,
    Pattern,
    Behavior,
    Scheme,
    Direction,
    /// A (token, id) pair, as BertProcessing's `sep` and `cls`.
    TokenId,
    Template,
}

pub fn field(kind: Field) -> BoxedStrategy<Value> {
    match kind {
        Field::Char => select(&["Ġ", " ", "a", "▁", "", "ab"][..]).prop_map(Value::from).boxed(),
        Field::Count => prop_oneof![4 => 0u64..5, 1 => select(INTERESTING)].prop_map(Value::from).boxed(),
        Field::Bool => any::<bool>().prop_map(Value::from).boxed(),
        Field::Text => json_text().prop_map(Value::from).boxed(),
        Field::Pattern => (
            select(&["String", "Regex"][..]),
            select(&["Ġ", " ", "\\s+", "(", "a{1000000}", "(a*)*b", "\\p{L}+", "", ".", "(?=a)"][..]),
        )
            .prop_map(|(k, p)| json!({ k: p }))
            .boxed(),
        Field::Behavior => select(&["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous", "x"][..])
            .prop_map(Value::from)
            .boxed(),
        Field::Scheme => select(&["always", "never", "first", "x"][..]).prop_map(Value::from).boxed(),
        Field::Direction => select(&["Left", "Right", "x"][..]).prop_map(Value::from).boxed(),
        Field::TokenId => (json_text(), field(Field::Count)).prop_map(|(t, id)| json!([t, id])).boxed(),
        Field::Template => select(vec![
            json!([{"Sequence": {"id": "A", "type_id": 0}}]),
            json!([{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}]),
            json!([{"SpecialToken": {"id": "<missing>", "type_id": 0}}]),
            json!([]),
        ])
        .boxed(),
    }
}

pub type Component = (&'static str, &'static [(&'static str, Field)]);

use Field::*;

pub const DECODERS: &[Component] = &[
    (
        "ByteLevel",
        &[
            ("add_prefix_space", Bool),
            ("trim_offsets", Bool),
            ("use_regex", Bool),
        ],
    ),
    (
        "Strip",
        &[("content", Char), ("start", Count), ("stop", Count)],
    ),
    ("Replace", &[("pattern", Pattern), ("content", Text)]),
    ("ByteFallback", &[]),
    ("Fuse", &[]),
    ("WordPiece", &[("prefix", Text), ("cleanup", Bool)]),
    (
        "Metaspace",
        &[
            ("replacement", Char),
            ("prepend_scheme", Scheme),
            ("split", Bool),
        ],
    ),
    (
        "CTC",
        &[
            ("pad_token", Text),
            ("word_delimiter_token", Text),
            ("cleanup", Bool),
        ],
    ),
    ("BPEDecoder", &[("suffix", Text)]),
];

pub const PRE_TOKENIZERS: &[Component] = &[
    (
        "ByteLevel",
        &[
            ("add_prefix_space", Bool),
            ("trim_offsets", Bool),
            ("use_regex", Bool),
        ],
    ),
    ("Whitespace", &[]),
    ("WhitespaceSplit", &[]),
    ("BertPreTokenizer", &[]),
    (
        "Metaspace",
        &[
            ("replacement", Char),
            ("prepend_scheme", Scheme),
            ("split", Bool),
        ],
    ),
    ("CharDelimiterSplit", &[("delimiter", Char)]),
    (
        "Split",
        &[
            ("pattern", Pattern),
            ("behavior", Behavior),
            ("invert", Bool),
        ],
    ),
    ("Punctuation", &[("behavior", Behavior)]),
    ("Digits", &[("individual_digits", Bool)]),
    ("UnicodeScripts", &[]),
    ("FixedLength", &[("length", Count)]),
];

pub const NORMALIZERS: &[Component] = &[
    ("NFC", &[]),
    ("NFKD", &[]),
    ("Lowercase", &[]),
    ("Strip", &[("strip_left", Bool), ("strip_right", Bool)]),
    ("StripAccents", &[]),
    ("Replace", &[("pattern", Pattern), ("content", Text)]),
    ("Prepend", &[("prepend", Text)]),
    ("ByteLevel", &[]),
    ("Precompiled", &[("precompiled_charsmap", Text)]),
    (
        "BertNormalizer",
        &[
            ("clean_text", Bool),
            ("handle_chinese_chars", Bool),
            ("strip_accents", Bool),
            ("lowercase", Bool),
        ],
    ),
];

pub const POST_PROCESSORS: &[Component] = &[
    (
        "ByteLevel",
        &[
            ("add_prefix_space", Bool),
            ("trim_offsets", Bool),
            ("use_regex", Bool),
        ],
    ),
    (
        "TemplateProcessing",
        &[
            ("single", Template),
            ("pair", Template),
            ("special_tokens", Count),
        ],
    ),
    ("BertProcessing", &[("sep", TokenId), ("cls", TokenId)]),
    (
        "RobertaProcessing",
        &[
            ("sep", TokenId),
            ("cls", TokenId),
            ("trim_offsets", Bool),
            ("add_prefix_space", Bool),
        ],
    ),
];

/// One component of `table`: every field of its type, now and then one
/// left out or of another kind.
pub fn component(table: &'static [Component]) -> BoxedStrategy<Value> {
    select(table)
        .prop_flat_map(|(ty, fields)| {
            let values: Vec<BoxedStrategy<Value>> = fields.iter().map(|&(_, f)| field(f)).collect();
            (
                values,
                proptest::option::weighted(0.1, (0..fields.len().max(1), json_value())),
            )
                .prop_map(move |(values, odd)| {
                    let mut obj = Map::new();
                    obj.insert("type".into(), ty.into());
                    for (&(name, _), v) in fields.iter().zip(values) {
                        obj.insert(name.into(), v);
                    }
                    if let Some((i, v)) = odd.filter(|_| !fields.is_empty()) {
                        obj.insert(fields[i].0.into(), v);
                    }
                    Value::Object(obj)
                })
        })
        .boxed()
}

/// One component, or a `Sequence` of two.
pub fn component_or_sequence(
    table: &'static [Component],
    list_key: &'static str,
) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => component(table),
        1 => vec(component(table), 1..3).prop_map(move |v| json!({"type": "Sequence", list_key: v})),
    ]
    .boxed()
}

/// A change to the tokenizer: a JSON pointer and its new value (None:
/// removed).
#[derive(Clone, Debug)]
pub struct JsonEdit {
    pub pointer: String,
    pub value: Option<Value>,
}

/// The pointers of `v`'s nodes, depth first.
pub fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
    match v {
        Value::Object(o) => o
            .iter()
            .for_each(|(k, c)| pointers(c, &format!("{at}/{}", escape(k)), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, c)| pointers(c, &format!("{at}/{i}"), out)),
        _ => {}
    }
}

pub fn apply_json(v: &mut Value, e: &JsonEdit) {
    let Some((parent, key)) = e.pointer.rsplit_once('/') else {
        return; // the root
    };
    let key = key.replace("~1", "/").replace("~0", "~");
    match (v.pointer_mut(parent), &e.value) {
        (Some(Value::Object(o)), Some(x)) => {
            o.insert(key, x.clone());
        }
        (Some(Value::Object(o)), None) => {
            o.remove(&key);
        }
        (Some(Value::Array(a)), x) => {
            if let Ok(i) = key.parse::<usize>() {
                match x {
                    Some(x) if i < a.len() => a[i] = x.clone(),
                    None if i < a.len() => drop(a.remove(i)),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
pub struct TokenizerInput {
    pub edits: Vec<JsonEdit>,
    pub bytes: Vec<Edit>,
}

pub fn tokenizer_fixture() -> Value {
    serde_json::from_slice(&fixture("tiny-gpt2-gen", TOKENIZER)).unwrap()
}

impl Input for TokenizerInput {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut v = tokenizer_fixture();
        for e in &self.edits {
            apply_json(&mut v, e);
        }
        let mut bytes = serde_json::to_vec(&v).unwrap();
        for e in &self.bytes {
            apply(&mut bytes, e, 0..0);
        }
        vec![(TOKENIZER, bytes)]
    }
}

pub fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let mut all = Vec::new();
    pointers(&tokenizer_fixture(), "", &mut all);
    let set = |p: &'static str, s: BoxedStrategy<Value>| {
        s.prop_map(move |v| JsonEdit {
            pointer: p.into(),
            value: Some(v),
        })
    };
    prop_oneof![
        3 => set("/decoder", component_or_sequence(DECODERS, "decoders")),
        3 => set("/pre_tokenizer", component_or_sequence(PRE_TOKENIZERS, "pretokenizers")),
        2 => set("/normalizer", component_or_sequence(NORMALIZERS, "normalizers")),
        2 => set("/post_processor", component_or_sequence(POST_PROCESSORS, "processors")),
        1 => set("/truncation", (field(Direction), field(Count), select(&["LongestFirst", "OnlyFirst", "OnlySecond"][..]), field(Count))
            .prop_map(|(d, m, s, st)| json!({"direction": d, "max_length": m, "strategy": s, "stride": st})).boxed()),
        1 => set("/padding", (prop_oneof![Just(json!("BatchLongest")), field(Count).prop_map(|n| json!({"Fixed": n}))], field(Direction), prop_oneof![Just(Value::Null), field(Count)], field(Count), field(Text))
            .prop_map(|(s, d, m, id, t)| json!({"strategy": s, "direction": d, "pad_to_multiple_of": m, "pad_id": id, "pad_type_id": 0, "pad_token": t})).boxed()),
        1 => set("/model/dropout", prop_oneof![Just(Value::Null), select(&[0.0, 0.5, 1.0, 1.5, -1.0][..]).prop_map(|f| json!(f))].boxed()),
        1 => set("/model/byte_fallback", any::<bool>().prop_map(Value::from).boxed()),
        1 => set("/model/unk_token", field(Text)),
        1 => set("/model/continuing_subword_prefix", field(Text)),
        1 => set("/model/end_of_word_suffix", field(Text)),
        1 => set("/added_tokens/0/id", field(Count)),
        1 => set("/added_tokens/0/content", field(Text)),
        3 => (select(all), proptest::option::weighted(0.85, json_value()))
            .prop_map(|(pointer, value)| JsonEdit { pointer, value }),
    ]
}

#[test]
fn fuzz_tokenizer() {
    let strategy = (
        vec(json_edit(), 0..4),
        prop_oneof![6 => Just(Vec::new()), 1 => vec(edit(), 1..3)],
    )
        .prop_map(|(edits, bytes)| TokenizerInput { edits, bytes });
    fuzz("tokenizer", "tokenizer", 3000, strategy, |dir, t| {
        let files = t.files();
        let got = guarded("the tokenizer", total_len(&files), || parse_tokenizer(dir))?;
        if t.edits.is_empty() && t.bytes.is_empty() {
            // The fixture itself round-trips every probe.
            prop_assert_eq!(
                got.as_ref().ok(),
                Some(&PROBES.iter().map(|p| p.to_string()).collect())
            );
        }
        Ok(verdict(&got))
    })
}

#[test]
fn deeply_nested_tokenizer_json_is_refused_not_overflowing_the_stack() {
    let dir = common::scratch("fuzz_deep_tokenizer");
    // Sequence normalizers, nested (written as text: a Value that deep
    // would overflow this test's own stack).
    let n = 10_000;
    let normalizer = format!(
        "{}{{\"type\": \"Lowercase\"}}{}",
        r#"{"type": "Sequence", "normalizers": ["#.repeat(n),
        "]}".repeat(n)
    );
    let text = serde_json::to_string(&tokenizer_fixture())
        .unwrap()
        .replacen(
            "\"normalizer\":null",
            &format!("\"normalizer\":{normalizer}"),
            1,
        );
    assert!(text.len() > 10 * n, "the normalizer went in");
    std::fs::write(dir.join(TOKENIZER), text).unwrap();
    let msg = error_of(Tokenizer::from_file(dir.join(TOKENIZER)));
    assert!(
        msg.contains("recursion limit") && msg.contains(TOKENIZER),
        "{msg}"
    );
}
