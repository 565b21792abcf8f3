//! Token ids in, logits out: safetensors files shared with Hugging Face.
//!
//! B = batch, T = sequence length, V = vocab size.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensorError};

use crate::error::{Error, Result};
use crate::model::config::Gpt2Config;
use crate::model::rng::Rng;

pub const INPUT_IDS: &str = "input_ids";
pub const LOGITS: &str = "logits";

/// A batch of token sequences, all of length `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    pub ids: Vec<u32>, // (B, T) row-major
    pub batch: usize,  // B
    pub seq: usize,    // T
}

/// Read tensor `input_ids` ([B, T], or [T] as B = 1; I64 as transformers
/// saves it, or I32) from a safetensors file. The header is checked first
/// ([`read_safetensors_header`]); then only that tensor's bytes are read.
pub fn read_input_ids(path: &Path) -> Result<TokenBatch> {
    let io = |e| Error::io(path, e);
    let mut file = File::open(path).map_err(io)?;
    let (header, data_start) = read_safetensors_header(&mut file, path)?;
    let info = header.info(INPUT_IDS).ok_or_else(|| {
        let mut names = header.offset_keys();
        names.sort_unstable();
        Error::MissingTensor {
            path: path.to_path_buf(),
            name: INPUT_IDS.into(),
            available: if names.is_empty() {
                "no tensors".into()
            } else {
                names.join(", ")
            },
        }
    })?;
    let (batch, seq) = match info.shape[..] {
        [t] => (1, t),
        [b, t] => (b, t),
        ref other => {
            return Err(Error::Input(format!(
                "{}: tensor `{INPUT_IDS}` has shape {other:?}; expected [batch, seq] or [seq]",
                path.display()
            )))
        }
    };
    if batch == 0 || seq == 0 {
        return Err(Error::Input(format!(
            "{}: tensor `{INPUT_IDS}` has shape {:?}: it holds no ids",
            path.display(),
            info.shape
        )));
    }
    let width = match info.dtype {
        Dtype::I64 => 8,
        Dtype::I32 => 4,
        other => {
            return Err(Error::TensorDtype {
                path: path.to_path_buf(),
                name: INPUT_IDS.into(),
                expected: "I64 or I32".into(),
                found: other.to_string(),
            })
        }
    };
    // The header was checked against the file's length: these bytes exist.
    let (start, end) = info.data_offsets;
    let mut data = vec![0u8; end - start];
    file.seek(SeekFrom::Start(data_start + start as u64))
        .map_err(io)?;
    file.read_exact(&mut data).map_err(io)?;
    let raw: Vec<i64> = match width {
        8 => from_le_bytes(&data, i64::from_le),
        _ => from_le_bytes(&data, i32::from_le)
            .into_iter()
            .map(i64::from)
            .collect(),
    };
    let mut ids = Vec::with_capacity(raw.len());
    for (i, &x) in raw.iter().enumerate() {
        let id = u32::try_from(x).map_err(|_| {
            Error::Input(format!(
                "{}: token id {x} at [{}, {}] is out of range (ids must be in 0..2^32)",
                path.display(),
                i / seq,
                i % seq
            ))
        })?;
        ids.push(id);
    }
    Ok(TokenBatch { ids, batch, seq })
}

/// The largest header `safetensors` reads (its own limit).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The header of the safetensors file open as `file` (`path` names it in
/// errors): the 8-byte little-endian length, then that much JSON, checked as
/// `SafeTensors::deserialize` checks it (offsets contiguous, sizes matching
/// dtype and shape) and against the file's length — the header must fit in
/// the file and its tensors must end where the file ends — before anything
/// sized by a number in it is allocated. Returns it and where the tensors'
/// bytes start. Every reader of a safetensors file that a user hands in
/// goes through here, so that a tensor's byte range, once in the header,
/// is known to be in the file.
pub(crate) fn read_safetensors_header(file: &mut File, path: &Path) -> Result<(Metadata, u64)> {
    let bad = |msg: String| Error::Safetensors {
        path: path.to_path_buf(),
        msg,
    };
    let io = |e| Error::io(path, e);
    let len = file.metadata().map_err(io)?.len();
    if len < 8 {
        return Err(bad(format!(
            "{}: the file has {len} bytes, fewer than the 8 of the header's length",
            SafeTensorError::HeaderTooSmall
        )));
    }
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(io)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER_BYTES {
        return Err(bad(format!(
            "{}: the header claims {n} bytes, more than the {MAX_HEADER_BYTES} a header may have",
            SafeTensorError::HeaderTooLarge
        )));
    }
    if n > len - 8 {
        return Err(bad(format!(
            "{}: the header claims {n} bytes, the file has {} after the length",
            SafeTensorError::InvalidHeaderLength,
            len - 8
        )));
    }
    let mut text = vec![0u8; n as usize];
    file.read_exact(&mut text).map_err(io)?;
    let text = std::str::from_utf8(&text)
        .map_err(|e| bad(SafeTensorError::InvalidHeader(e).to_string()))?;
    let header: Metadata = serde_json::from_str(text)
        .map_err(|e| bad(SafeTensorError::InvalidHeaderDeserialization(e).to_string()))?;
    // Compared without adding to the header's numbers: they can be near 2^64.
    let data = header.data_len() as u64;
    let after_header = len - 8 - n;
    if data != after_header {
        let size = |t: &TensorInfo| t.data_offsets.1 - t.data_offsets.0;
        let largest = header
            .tensors()
            .into_iter()
            .max_by(|(a, x), (b, y)| size(x).cmp(&size(y)).then(b.cmp(a)))
            .map(|(name, t)| {
                format!(
                    " (the largest, `{name}` {:?} {:?}, {} bytes)",
                    t.dtype,
                    t.shape,
                    size(t)
                )
            })
            .unwrap_or_default();
        return Err(bad(format!(
            "{}: the header's tensors take {data} bytes{largest}, the file has {after_header} after the header{}",
            SafeTensorError::MetadataIncompleteBuffer,
            if data > after_header { " (truncated?)" } else { "" }
        )));
    }
    Ok((header, 8 + n))
}

/// The values stored little-endian (as safetensors stores them) in `data`.
/// `data` may start at any address (a tensor's data in a safetensors file is
/// not necessarily aligned for its type): the bytes are copied into an
/// aligned vector, and `from_le` (e.g. `u32::from_le`, a no-op on
/// little-endian machines) fixes the byte order. safetensors checks that a
/// tensor's byte length is a whole number of elements.
pub(crate) fn from_le_bytes<T: bytemuck::Pod>(data: &[u8], from_le: fn(T) -> T) -> Vec<T> {
    debug_assert_eq!(data.len() % std::mem::size_of::<T>(), 0);
    let values: Vec<T> = bytemuck::pod_collect_to_vec(data);
    if cfg!(target_endian = "little") {
        values
    } else {
        values.into_iter().map(from_le).collect()
    }
}

/// `values` as little-endian bytes (`to_le`, e.g. `u16::to_le`, is a no-op on
/// little-endian machines).
pub(crate) fn to_le_bytes<T: bytemuck::Pod>(values: &[T], to_le: fn(T) -> T) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice(values).to_vec()
    } else {
        let swapped: Vec<T> = values.iter().map(|&x| to_le(x)).collect();
        bytemuck::cast_slice(&swapped).to_vec()
    }
}

/// Uniform random ids in 0..vocab (deterministic per seed). `vocab` 0 is
/// treated as 1, so that [`check_input`] can report the bad config instead.
pub fn random_input_ids(batch: usize, seq: usize, vocab: usize, seed: u64) -> TokenBatch {
    let mut rng = Rng::new(seed);
    let v = vocab.clamp(1, u32::MAX as usize + 1) as u64;
    let ids = (0..batch * seq)
        .map(|_| (rng.next_u64() % v) as u32)
        .collect();
    TokenBatch { ids, batch, seq }
}

/// Check that `tokens` can be fed to a model with `config`.
pub fn check_input(config: &Gpt2Config, tokens: &TokenBatch) -> Result<()> {
    let (b, t) = (tokens.batch, tokens.seq);
    if b == 0 || t == 0 {
        return Err(Error::Input(format!(
            "empty input: batch {b}, seq {t}; both must be positive"
        )));
    }
    if tokens.ids.len() != b * t {
        return Err(Error::Input(format!(
            "input holds {} ids, but batch {b} x seq {t} = {}",
            tokens.ids.len(),
            b * t
        )));
    }
    if t > config.n_positions {
        return Err(Error::Input(format!(
            "sequence length {t} exceeds the model's n_positions {}",
            config.n_positions
        )));
    }
    if let Some(i) = tokens
        .ids
        .iter()
        .position(|&id| id as usize >= config.vocab_size)
    {
        return Err(Error::Input(format!(
            "token id {} at [{}, {}] is out of range for vocab size {}",
            tokens.ids[i],
            i / t,
            i % t,
            config.vocab_size
        )));
    }
    Ok(())
}

/// Write `logits` (B*T*V values) as the f32 tensor `logits` [B, T, V].
/// Goes through a temporary file in the same directory and a rename, so a
/// failure leaves no partial file at `path`.
pub fn write_logits(
    path: &Path,
    logits: &[f32],
    batch: usize,
    seq: usize,
    vocab: usize,
) -> Result<()> {
    let n = batch
        .checked_mul(seq)
        .and_then(|x| x.checked_mul(vocab))
        .ok_or_else(|| Error::Input(format!("logits shape [{batch}, {seq}, {vocab}] overflows")))?;
    if logits.len() != n {
        return Err(Error::Input(format!(
            "{}: logits hold {} values, shape [{batch}, {seq}, {vocab}] needs {n}",
            path.display(),
            logits.len()
        )));
    }
    #[cfg(target_endian = "little")]
    let bytes: std::borrow::Cow<[u8]> = std::borrow::Cow::Borrowed(bytemuck::cast_slice(logits));
    #[cfg(target_endian = "big")]
    let bytes: std::borrow::Cow<[u8]> =
        std::borrow::Cow::Owned(logits.iter().flat_map(|x| x.to_le_bytes()).collect());
    let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![batch, seq, vocab], &bytes)
        .map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    write_atomic(path, |tmp| {
        safetensors::serialize_to_file([(LOGITS, view)], None, tmp)
            .map_err(|e| safetensors_write_error(tmp, e))
    })
}

pub(crate) fn safetensors_write_error(path: &Path, e: SafeTensorError) -> Error {
    match e {
        SafeTensorError::IoError(source) => Error::io(path, source),
        other => Error::Safetensors {
            path: path.to_path_buf(),
            msg: other.to_string(),
        },
    }
}

/// The one way wgpipe writes an output file: `write` fills a temporary file
/// beside `path` (same directory, so the rename cannot cross file systems),
/// which then replaces `path` in one rename. On any failure the temporary
/// file is removed and `path` is untouched; a directory at `path` is refused.
///
/// `write` gets the temporary file's path (safetensors writes by path);
/// `io_error` turns an I/O failure of the temporary file, the rename or the
/// directory check into the caller's error type.
pub fn write_atomic_with<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<(), E>,
    io_error: impl Fn(std::io::Error) -> E,
) -> std::result::Result<(), E> {
    if path.is_dir() {
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a directory; expected a file path",
        )));
    }
    let file_name = path.file_name().ok_or_else(|| {
        io_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // A plain file's mode (0666 less the umask), not tempfile's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.tempfile_in(dir).map_err(&io_error)?;
    write(tmp.path())?;
    tmp.persist(path).map_err(|e| io_error(e.error))?;
    Ok(())
}

/// [`write_atomic_with`] for wgpipe's [`Error`]: I/O failures name `path`.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    write_atomic_with(path, write, |e| Error::io(path, e))
}

/// Writes `bytes` to the file `path` through [`write_atomic`].
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |tmp| {
        std::fs::write(tmp, bytes).map_err(|e| Error::io(path, e))
    })
}

/// A checksum of `bytes` as 16 hex digits: 64-bit FNV-1a. Not
/// cryptographic: it detects a file that was cut short or changed by
/// accident (a resumed run's state), not one changed on purpose.
pub fn checksum(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Write named f32 tensors (name, values, shape) as one safetensors file,
/// each name prefixed with `prefix` (`transformer.` for GPT2LMHeadModel's
/// names), through [`write_atomic`].
pub fn write_named_tensors(
    path: &Path,
    tensors: &[(String, &Vec<f32>, Vec<usize>)],
    prefix: &str,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t, _)| t.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, _, shape), b)| {
            safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (format!("{prefix}{name}"), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    write_atomic(path, |tmp| {
        safetensors::serialize_to_file(views, None, tmp)
            .map_err(|e| safetensors_write_error(tmp, e))
    })
}

/// Write `rows` (token ids, every row the same length) as the int64 tensor
/// `output_ids` [B, T] — as transformers' `generate` returns it — through
/// [`write_atomic`].
pub fn write_output_ids(path: &Path, rows: &[Vec<u32>]) -> Result<()> {
    let t = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != t) {
        return Err(Error::Input(format!(
            "{}: output_ids rows differ in length",
            path.display()
        )));
    }
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|&id| i64::from(id).to_le_bytes())
        .collect();
    let view = safetensors::tensor::TensorView::new(Dtype::I64, vec![rows.len(), t], &bytes)
        .map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    write_atomic(path, |tmp| {
        safetensors::serialize_to_file([("output_ids", view)], None, tmp)
            .map_err(|e| safetensors_write_error(tmp, e))
    })
}

/// Rows as CSV, the one way wgpipe writes a table (every bench's `--csv`): a header of the rows'
/// field names (their `Serialize` form, in declaration order), then a line
/// per row. A list is one cell of `;`-separated values (a CSV cell cannot
/// nest), a missing value an empty cell.
pub fn csv_rows<T: serde::Serialize>(rows: &[T]) -> Result<String> {
    let bad = |e: String| Error::Other(format!("CSV: {e}"));
    let mut w = ::csv::Writer::from_writer(Vec::new());
    for (i, r) in rows.iter().enumerate() {
        let serde_json::Value::Object(fields) =
            serde_json::to_value(r).map_err(|e| bad(e.to_string()))?
        else {
            return Err(bad("a row is not a struct".into()));
        };
        if i == 0 {
            w.write_record(fields.keys())
                .map_err(|e| bad(e.to_string()))?;
        }
        w.write_record(fields.values().map(cell))
            .map_err(|e| bad(e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| bad(e.error().to_string()))?;
    String::from_utf8(bytes).map_err(|e| bad(e.to_string()))
}

/// One CSV cell of a JSON value.
fn cell(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(cell).collect::<Vec<_>>().join(";"),
        other => other.to_string(),
    }
}
