//! safetensors files as a writer (honest or not) lays them out: any dtype,
//! shape and offsets, huge ones included; the committed fixtures' bytes,
//! edited; and the header's limits, each with the message it must give.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

use crate::checkpoint::{config_json, micro, parse_checkpoint};
use crate::common;
use crate::gen::*;
use crate::harness::*;
use wgpipe::io::read_input_ids;

pub const DTYPES: &[&str] = &[
    "BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "I16", "U16",
    "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64",
];

/// Bits per element of a safetensors dtype.
pub fn dtype_bits(dtype: &str) -> Option<u128> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "F64" | "I64" | "U64" => 64,
        _ => return None,
    })
}

#[derive(Clone, Debug)]
pub struct StTensor {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// None: packed after the previous tensor, as a writer would.
    pub offsets: Option<[u64; 2]>,
}

impl StTensor {
    /// Bytes its dtype and shape take (u128::MAX when absurd).
    pub fn size(&self) -> u128 {
        let bits = dtype_bits(&self.dtype).unwrap_or(32);
        (self.shape.iter())
            .try_fold(1u128, |n, &d| n.checked_mul(d as u128))
            .and_then(|n| n.checked_mul(bits))
            .map_or(u128::MAX, |b| b / 8)
    }
}

/// How many tensor bytes follow the header.
#[derive(Clone, Debug)]
pub enum Data {
    /// As many as the header's tensors take (none when that is over 1 MiB).
    Exact,
    Short(u16),
    Extra(u16),
    Fixed(u16),
}

/// A safetensors file as a writer (honest or not) lays it out.
#[derive(Clone, Debug)]
pub struct StFile {
    pub tensors: Vec<StTensor>,
    pub metadata: Option<Value>,
    /// The 8-byte header length, when not the header's own.
    pub length: Option<u64>,
    pub data: Data,
    /// Tensor bytes: random, integer tensors mostly small values.
    pub seed: u64,
}

pub const MIB: u128 = 1 << 20;

impl StFile {
    /// The tensors written (the first of each name) and where their bytes
    /// lie when packed.
    pub fn layout(&self) -> Vec<(&StTensor, u128, u128)> {
        let mut seen = std::collections::HashSet::new();
        let mut end = 0u128;
        let mut out = Vec::new();
        for t in &self.tensors {
            if t.name == "__metadata__" || !seen.insert(&t.name) {
                continue;
            }
            let start = end;
            end = end.saturating_add(t.size());
            out.push((t, start, end));
        }
        out
    }

    pub fn packed_len(&self) -> u128 {
        self.layout().last().map_or(0, |l| l.2)
    }

    /// Written as a careful writer would: every length and offset true,
    /// every dtype known, whole bytes.
    pub fn honest(&self) -> bool {
        let names: std::collections::HashSet<_> = self.tensors.iter().map(|t| &t.name).collect();
        self.length.is_none()
            && matches!(self.data, Data::Exact)
            && self.packed_len() <= MIB
            && names.len() == self.tensors.len()
            && !names.contains(&"__metadata__".to_string())
            && self.metadata.as_ref().is_none_or(|m| {
                m.as_object()
                    .is_some_and(|o| o.values().all(Value::is_string))
            })
            && self.tensors.iter().all(|t| {
                // safetensors multiplies the shape out in a u64 (so
                // [2^62, 4, 0] is refused), then by the dtype's bits.
                let elements = (t.shape.iter()).try_fold(1u64, |n, &d| n.checked_mul(d));
                t.offsets.is_none()
                    && elements.zip(dtype_bits(&t.dtype)).is_some_and(|(n, b)| {
                        (n as u128 * b).is_multiple_of(8) && n as u128 * b <= u64::MAX as u128
                    })
            })
    }

    pub fn bytes(&self) -> Vec<u8> {
        let clamp = |x: u128| x.min(u64::MAX as u128) as u64;
        let mut header = Map::new();
        if let Some(m) = &self.metadata {
            header.insert("__metadata__".into(), m.clone());
        }
        let layout = self.layout();
        for &(t, start, end) in &layout {
            let [s, e] = t.offsets.unwrap_or([clamp(start), clamp(end)]);
            header.insert(
                t.name.clone(),
                json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [s, e]}),
            );
        }
        let text = serde_json::to_vec(&Value::Object(header)).unwrap();
        let packed = self.packed_len();
        let exact = if packed <= MIB { packed as usize } else { 0 };
        let data_len = match self.data {
            Data::Exact => exact,
            Data::Short(k) => exact.saturating_sub(k as usize),
            Data::Extra(k) => exact + k as usize,
            Data::Fixed(k) => k as usize,
        };
        let mut rng = common::Rng::new(self.seed);
        let mut data: Vec<u8> = (0..data_len).map(|_| rng.next_u64() as u8).collect();
        // Integer tensors: mostly small ids, now and then anything.
        for &(t, start, end) in &layout {
            let width = match t.dtype.as_str() {
                "I64" | "U64" => 8,
                "I32" | "U32" => 4,
                _ => continue,
            };
            let end = (end.min(data_len as u128)) as usize;
            let mut at = start.min(end as u128) as usize;
            while at + width <= end {
                let r = rng.next_u64();
                let v = if r.is_multiple_of(16) {
                    rng.next_u64()
                } else {
                    r % 120
                };
                data[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
                at += width;
            }
        }
        let mut out = self
            .length
            .unwrap_or(text.len() as u64)
            .to_le_bytes()
            .to_vec();
        out.extend_from_slice(&text);
        out.extend_from_slice(&data);
        out
    }

    /// The tensor `name`'s bytes, in an honest file.
    pub fn tensor_bytes<'a>(&self, bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
        let start = data_start(bytes);
        let (_, s, e) = self.layout().into_iter().find(|l| l.0.name == name)?;
        bytes.get(start + s as usize..start + e as usize)
    }
}

pub fn data_plan() -> impl Strategy<Value = Data> {
    prop_oneof![
        12 => Just(Data::Exact),
        1 => (1u16..16).prop_map(Data::Short),
        1 => (1u16..16).prop_map(Data::Extra),
        1 => (0u16..64).prop_map(Data::Fixed),
    ]
}

pub fn dtype() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        8 => select(DTYPES).prop_map(String::from),
        1 => json_text(),
    ]
}

pub fn offsets() -> impl Strategy<Value = Option<[u64; 2]>> + Clone {
    proptest::option::weighted(0.1, (count(), count()).prop_map(|(a, b)| [a, b]))
}

/// A tensor of any name, dtype and shape, the shape's dims sometimes huge.
pub fn any_tensor() -> impl Strategy<Value = StTensor> + Clone {
    (json_text(), dtype(), vec(count(), 0..4), offsets()).prop_map(
        |(name, dtype, shape, offsets)| StTensor {
            name,
            dtype,
            shape,
            offsets,
        },
    )
}

pub fn metadata() -> impl Strategy<Value = Option<Value>> {
    proptest::option::weighted(
        0.2,
        prop_oneof![
            3 => Just(json!({"format": "pt"})),
            1 => json_value(),
        ],
    )
}

pub fn header_length() -> impl Strategy<Value = Option<u64>> {
    proptest::option::weighted(0.08, count())
}

/// Eight tensors, each of a size safetensors accepts (its bits must fit a
/// u64: at most 2^61 - 1 bytes), that together end 8 + `short` bytes before
/// 2^64: the header's numbers are valid, their sum with the header's length
/// (hundreds of bytes) is not, for all but the largest `short`.
pub fn near_2_64() -> impl Strategy<Value = Vec<StTensor>> {
    select(&[0u64, 1, 8, 1000, 1 << 20][..]).prop_map(|short| {
        let tensor = |i: u64, bytes: u64| StTensor {
            name: if i == 0 {
                "input_ids".into()
            } else {
                format!("t{i}")
            },
            dtype: "U8".into(),
            shape: vec![bytes],
            offsets: None,
        };
        let mut v: Vec<StTensor> = (0..7).map(|i| tensor(i, (1 << 61) - 1)).collect();
        v.push(tensor(7, (1 << 61) - 1 - short));
        v
    })
}

#[derive(Clone, Copy, Debug)]
pub enum Where {
    Header,
    Data,
    Anywhere,
}

#[derive(Clone, Debug)]
pub struct MutatedSt {
    /// Which fixture directory.
    pub fixture: &'static str,
    pub edits: Vec<(Where, Edit)>,
}

impl MutatedSt {
    pub fn edited(&self, name: &str) -> Vec<u8> {
        let mut bytes = fixture(self.fixture, name);
        let header = 0..data_start(&bytes);
        let data = header.end..bytes.len();
        for (at, e) in &self.edits {
            let region = match at {
                Where::Header => header.clone(),
                Where::Data => data.clone(),
                Where::Anywhere => 0..0,
            };
            apply(&mut bytes, e, region);
        }
        bytes
    }

    /// Only tensor bytes changed, the length kept.
    pub fn data_only(&self) -> bool {
        self.edits
            .iter()
            .all(|(at, e)| matches!(at, Where::Data) && e.keeps_length())
    }

    pub fn keeps_length(&self) -> bool {
        self.edits.iter().all(|(_, e)| e.keeps_length())
    }
}

pub fn st_edits() -> impl Strategy<Value = Vec<(Where, Edit)>> {
    let at = prop_oneof![
        3 => Just(Where::Header),
        1 => Just(Where::Data),
        1 => Just(Where::Anywhere),
    ];
    vec((at, edit()), 1..5)
}

/// A safetensors file of one tensor and `data` bytes after the header.
pub fn one_tensor(
    name: &str,
    dtype: &str,
    shape: &[u64],
    offsets: [u64; 2],
    data: usize,
) -> Vec<u8> {
    let header = json!({ name: {"dtype": dtype, "shape": shape, "data_offsets": offsets} });
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.resize(out.len() + data, 0);
    out
}

#[test]
fn a_header_claiming_a_terabyte_tensor_is_refused_before_allocating() {
    let dir = common::scratch("fuzz_terabyte");
    std::fs::write(dir.join(CONFIG), config_json(&micro())).unwrap();
    let tb = 1u64 << 40;
    let file = one_tensor("transformer.wte.weight", "U8", &[tb], [0, tb], 16);
    std::fs::write(dir.join(WEIGHTS), &file).unwrap();
    let (msg, largest) = largest_allocation(|| error_of(parse_checkpoint(&dir)));
    assert!(
        msg.contains("1099511627776") && msg.contains(WEIGHTS),
        "{msg}"
    );
    assert!(largest < 1 << 20, "{largest} bytes allocated at once");

    std::fs::write(
        dir.join(INPUT_IDS),
        one_tensor("input_ids", "I64", &[1, tb / 8], [0, tb], 16),
    )
    .unwrap();
    let (msg, largest) = largest_allocation(|| error_of(read_input_ids(&dir.join(INPUT_IDS))));
    assert!(
        msg.contains("1099511627776") && msg.contains(INPUT_IDS),
        "{msg}"
    );
    assert!(largest < 1 << 20, "{largest} bytes allocated at once");
}

#[test]
fn a_header_longer_than_the_file_is_refused() {
    let dir = common::scratch("fuzz_header_length");
    let mut file = one_tensor("input_ids", "I64", &[1], [0, 8], 8);
    file[..8].copy_from_slice(&5000u64.to_le_bytes());
    std::fs::write(dir.join(INPUT_IDS), &file).unwrap();
    let msg = error_of(read_input_ids(&dir.join(INPUT_IDS)));
    assert!(msg.contains("5000") && msg.contains(INPUT_IDS), "{msg}");
}

#[test]
fn a_deeply_nested_header_is_refused_not_overflowing_the_stack() {
    let dir = common::scratch("fuzz_deep_header");
    let deep = format!("{}1{}", r#"{"a":"#.repeat(100_000), "}".repeat(100_000));
    let mut st = (deep.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(deep.as_bytes());
    std::fs::write(dir.join(INPUT_IDS), &st).unwrap();
    let msg = error_of(read_input_ids(&dir.join(INPUT_IDS)));
    assert!(
        msg.contains("recursion limit") && msg.contains(INPUT_IDS),
        "{msg}"
    );
}
