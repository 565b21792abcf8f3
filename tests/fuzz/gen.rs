//! Generated values every parser's inputs are made of: numbers that break
//! arithmetic, JSON, and edits of a file's bytes.

use std::ops::Range;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};

/// Numbers that break arithmetic: powers of two near the widths, 10^12, the
/// extremes.
pub const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    255,
    256,
    65535,
    65536,
    (1 << 31) - 1,
    1 << 31,
    (1 << 32) - 1,
    1 << 32,
    1 << 40,
    1_000_000_000_000,
    1 << 53,
    1 << 61,
    1 << 62,
    (1 << 63) - 1,
    1 << 63,
    u64::MAX,
];

/// Mostly small, sometimes interesting, sometimes anything.
pub fn count() -> impl Strategy<Value = u64> + Clone {
    prop_oneof![
        8 => 0u64..6,
        2 => 0u64..70,
        3 => select(INTERESTING),
        1 => any::<u64>(),
    ]
}

pub fn json_number() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        4 => count().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => select(&[-1i64, i64::MIN][..]).prop_map(Value::from),
        1 => select(&[0.5f64, -0.0, 1e-5, 1.5, 1e300, -1e300, 4.0][..]).prop_map(|f| json!(f)),
    ]
}

pub fn json_text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        select(
            &[
                "",
                " ",
                "a",
                "Ġ",
                "▁",
                "##",
                "</w>",
                "<unk>",
                "<|endoftext|>",
                "gelu_new",
                "relu",
                "F32",
                "I64",
                "\u{0}",
                "(",
                "\\s+"
            ][..]
        )
        .prop_map(String::from),
        "[a-zA-Z0-9_. ]{0,12}",
    ]
}

/// Any JSON value, up to three levels deep.
pub fn json_value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        json_number(),
        json_text().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::from),
            vec((json_text(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An edit of a file's bytes. Positions are taken modulo the region edited.
#[derive(Clone, Debug)]
pub enum Edit {
    Flip {
        at: u64,
        bit: u8,
    },
    Set {
        at: u64,
        byte: u8,
    },
    /// Eight little-endian bytes, as a length or count is stored.
    Word {
        at: u64,
        value: u64,
    },
    /// Keep only this many bytes (modulo the length: always shorter).
    Cut {
        keep: u64,
    },
    Insert {
        at: u64,
        bytes: Vec<u8>,
    },
    /// Copy `len` bytes from one place over another.
    Copy {
        from: u64,
        len: u16,
        to: u64,
    },
}

impl Edit {
    /// Whether the file keeps its length.
    pub fn keeps_length(&self) -> bool {
        !matches!(self, Edit::Cut { .. } | Edit::Insert { .. })
    }
}

pub fn edit() -> impl Strategy<Value = Edit> + Clone {
    prop_oneof![
        4 => (any::<u64>(), 0u8..8).prop_map(|(at, bit)| Edit::Flip { at, bit }),
        3 => (any::<u64>(), prop_oneof![any::<u8>(), select(&b"0123456789,:[]{}\"-.eE \n"[..])])
            .prop_map(|(at, byte)| Edit::Set { at, byte }),
        2 => (any::<u64>(), select(INTERESTING)).prop_map(|(at, value)| Edit::Word { at, value }),
        1 => any::<u64>().prop_map(|keep| Edit::Cut { keep }),
        1 => (any::<u64>(), vec(any::<u8>(), 1..6)).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        1 => (any::<u64>(), 1u16..64, any::<u64>()).prop_map(|(from, len, to)| Edit::Copy { from, len, to }),
    ]
}

/// `edit` applied to `bytes`, positions within `region` (the whole file
/// when `region` is empty or past its end).
pub fn apply(bytes: &mut Vec<u8>, edit: &Edit, region: Range<usize>) {
    let len = bytes.len();
    let region = if region.start < region.end && region.end <= len {
        region
    } else {
        0..len
    };
    let pos = |at: u64| region.start + (at % region.len().max(1) as u64) as usize;
    if len == 0 {
        if let Edit::Insert { bytes: b, .. } = edit {
            bytes.extend_from_slice(b);
        }
        return;
    }
    match *edit {
        Edit::Flip { at, bit } => bytes[pos(at)] ^= 1 << bit,
        Edit::Set { at, byte } => bytes[pos(at)] = byte,
        Edit::Word { at, value } => {
            let p = pos(at);
            let n = (len - p).min(8);
            bytes[p..p + n].copy_from_slice(&value.to_le_bytes()[..n]);
        }
        Edit::Cut { keep } => bytes.truncate((keep % len as u64) as usize),
        Edit::Insert { at, bytes: ref b } => {
            let p = pos(at);
            bytes.splice(p..p, b.iter().copied());
        }
        Edit::Copy { from, len: n, to } => {
            let from = (from % len as u64) as usize;
            let to = pos(to);
            let n = (n as usize).min(len - from).min(len - to);
            let chunk = bytes[from..from + n].to_vec();
            bytes[to..to + n].copy_from_slice(&chunk);
        }
    }
}

/// Where a safetensors file's tensor bytes start: 8 + the header length.
pub fn data_start(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}
