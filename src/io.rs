//! Token ids in, logits out: safetensors files shared with Hugging Face.
//!
//! B = batch, T = sequence length, V = vocab size.

use std::path::Path;

use safetensors::{Dtype, SafeTensorError, SafeTensors};

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
/// saves it, or I32) from a safetensors file.
pub fn read_input_ids(path: &Path) -> Result<TokenBatch> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let view = st.tensor(INPUT_IDS).map_err(|_| {
        let mut names = st.names();
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
    let (batch, seq) = match *view.shape() {
        [t] => (1, t),
        [b, t] => (b, t),
        ref other => {
            return Err(Error::Input(format!(
                "{}: tensor `{INPUT_IDS}` has shape {other:?}; expected [batch, seq] or [seq]",
                path.display()
            )))
        }
    };
    let data = view.data();
    let raw: Vec<i64> = match view.dtype() {
        Dtype::I64 => from_le_bytes(data, i64::from_le),
        Dtype::I32 => from_le_bytes(data, i32::from_le)
            .into_iter()
            .map(i64::from)
            .collect(),
        other => {
            return Err(Error::TensorDtype {
                path: path.to_path_buf(),
                name: INPUT_IDS.into(),
                expected: "I64 or I32".into(),
                found: other.to_string(),
            })
        }
    };
    let mut ids = Vec::with_capacity(raw.len());
    for (i, &x) in raw.iter().enumerate() {
        let id = u32::try_from(x).map_err(|_| {
            Error::Input(format!(
                "{}: token id {x} at [{}, {}] is out of range (ids must be in 0..2^32)",
                path.display(),
                i / seq.max(1),
                i % seq.max(1)
            ))
        })?;
        ids.push(id);
    }
    Ok(TokenBatch { ids, batch, seq })
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
