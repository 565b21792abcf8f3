//! Training data as one long token stream, the format of nanoGPT's `train.bin`
//! (`prepare.py`: `np.array(ids, dtype=np.uint16).tofile(path)`, i.e. raw
//! little-endian uint16 token ids, no header), and a seeded sampler of
//! training batches from it.
//!
//! B = batch, T = sequence length.
//!
//! A batch is B windows of T consecutive tokens, each starting uniformly at
//! random in `0..=len - T`. The labels are the same ids (the loss shifts them
//! by one inside, as transformers' `labels=input_ids` does), so a window needs
//! T tokens, not nanoGPT's T + 1.

use std::path::Path;

use crate::error::{Error, Result};
use crate::io::{from_le_bytes, to_le_bytes, write_atomic, TokenBatch};
use crate::model::rng::Rng;

/// A whole token stream in memory, every id checked against the vocab size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenStream {
    tokens: Vec<u16>,
}

impl TokenStream {
    /// Read a nanoGPT-style token file: little-endian uint16 ids, no header.
    /// The file must hold at least one token and every id must be below
    /// `vocab_size`.
    pub fn read(path: &Path, vocab_size: usize) -> Result<TokenStream> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let what = path.display().to_string();
        if bytes.len() % 2 != 0 {
            return Err(Error::Input(format!(
                "{what}: {} bytes is not a whole number of uint16 tokens \
                 (a token file holds little-endian uint16 ids, 2 bytes each)",
                bytes.len()
            )));
        }
        Self::checked(from_le_bytes(&bytes, u16::from_le), vocab_size, &what)
    }

    /// A stream of `tokens` held in memory, checked as [`TokenStream::read`]
    /// checks a file.
    pub fn from_tokens(tokens: Vec<u16>, vocab_size: usize) -> Result<TokenStream> {
        Self::checked(tokens, vocab_size, "token stream")
    }

    fn checked(tokens: Vec<u16>, vocab_size: usize, what: &str) -> Result<TokenStream> {
        if tokens.is_empty() {
            return Err(Error::Input(format!("{what}: empty, holds no tokens")));
        }
        if let Some(i) = tokens.iter().position(|&id| id as usize >= vocab_size) {
            return Err(Error::Input(format!(
                "{what}: token id {} at position {i} is out of range for vocab size {vocab_size}",
                tokens[i]
            )));
        }
        Ok(TokenStream { tokens })
    }

    /// Number of tokens (at least 1).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false: an empty stream is refused when it is made.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[u16] {
        &self.tokens
    }

    /// A sampler of batches of `batch` windows of `seq` consecutive tokens,
    /// deterministic for `seed`. `seq` must fit in the stream, and a batch's
    /// `batch × seq` ids in a `usize`.
    pub fn windows(&self, batch: usize, seq: usize, seed: u64) -> Result<Windows<'_>> {
        if batch == 0 || seq == 0 {
            return Err(Error::Input(format!(
                "training windows of batch {batch}, seq {seq}; both must be positive"
            )));
        }
        if seq > self.len() {
            return Err(Error::Input(format!(
                "a training window of seq {seq} needs at least {seq} tokens; \
                 the token stream holds {}",
                self.len()
            )));
        }
        if batch.checked_mul(seq).is_none() {
            return Err(Error::Input(format!(
                "training windows of batch {batch} × seq {seq}: the batch's size overflows"
            )));
        }
        Ok(Windows {
            stream: self,
            batch,
            seq,
            starts: (self.len() - seq + 1) as u64,
            rng: Rng::new(seed),
            drawn: 0,
        })
    }

    /// A checksum of the stream's tokens ([`crate::io::checksum`] of their
    /// little-endian bytes): what a resumed run checks it trains on the same data.
    pub fn checksum(&self) -> String {
        crate::io::checksum(&to_le_bytes(&self.tokens, u16::to_le))
    }
}

/// Where a [`Windows`] sampler is: its random state and the batches drawn
/// so far. [`Windows::seek`] puts a sampler of the same stream, batch and
/// seq back there, so the batches that follow are those that would have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowsPosition {
    /// The sampler's splitmix64 state.
    pub rng: u64,
    /// Batches drawn so far.
    pub batches: u64,
}

/// Seeded sampler of training batches from a [`TokenStream`]; see
/// [`TokenStream::windows`]. Also an endless [`Iterator`] of batches.
pub struct Windows<'a> {
    stream: &'a TokenStream,
    batch: usize,
    seq: usize,
    starts: u64, // number of possible window starts: len - seq + 1
    rng: Rng,
    drawn: u64,
}

impl Windows<'_> {
    /// Where the sampler is (see [`WindowsPosition`]).
    pub fn position(&self) -> WindowsPosition {
        WindowsPosition {
            rng: self.rng.state(),
            batches: self.drawn,
        }
    }

    /// Continue from `pos`, a position of a sampler of the same stream.
    pub fn seek(&mut self, pos: WindowsPosition) {
        self.rng = Rng::new(pos.rng);
        self.drawn = pos.batches;
    }

    /// The next `batch` windows, row-major (B, T): row b is
    /// `tokens[s_b .. s_b + seq]` with `s_b` uniform in `0..=len - seq`.
    pub fn next_batch(&mut self) -> TokenBatch {
        let tokens = self.stream.tokens();
        self.drawn += 1;
        let mut ids = Vec::with_capacity(self.batch * self.seq);
        for _ in 0..self.batch {
            let s = self.uniform_start();
            ids.extend(tokens[s..s + self.seq].iter().map(|&id| u32::from(id)));
        }
        TokenBatch {
            ids,
            batch: self.batch,
            seq: self.seq,
        }
    }

    /// Uniform in `0..starts`, exactly: a draw at or above `limit`, the
    /// largest multiple of `starts` that fits in a u64, is rejected (a chance
    /// of at most starts / 2^64).
    fn uniform_start(&mut self) -> usize {
        let n = self.starts;
        let limit = u64::MAX - u64::MAX % n;
        loop {
            let x = self.rng.next_u64();
            if x < limit {
                return (x % n) as usize;
            }
        }
    }
}

impl std::fmt::Debug for Windows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Windows")
            .field("stream_len", &self.stream.len())
            .field("batch", &self.batch)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Iterator for Windows<'_> {
    type Item = TokenBatch;

    fn next(&mut self) -> Option<TokenBatch> {
        Some(self.next_batch())
    }
}

/// Write `tokens` as a nanoGPT-style token file (little-endian uint16, no
/// header), through [`write_atomic`].
pub fn write_token_file(path: &Path, tokens: &[u16]) -> Result<()> {
    let bytes = to_le_bytes(tokens, u16::to_le);
    write_atomic(path, |tmp| {
        std::fs::write(tmp, &bytes).map_err(|e| Error::io(path, e))
    })
}

/// Where each training step's batch comes from: the same batch every step,
/// or seeded windows of a token stream. [`Batches::state`] says where it is,
/// in a form a resumed run checks and continues from ([`Batches::resume`]).
pub enum Batches<'a> {
    Fixed(TokenBatch),
    Stream(Windows<'a>),
}

/// A [`Batches`]' identity and position, as a resumed run's state keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum BatchesState {
    /// The same batch every step: its shape and a checksum of its ids.
    Fixed {
        batch: usize,
        seq: usize,
        checksum: String,
    },
    /// Windows of a stream: the stream's length and checksum, and where the
    /// sampler is.
    Stream {
        tokens: usize,
        checksum: String,
        batch: usize,
        seq: usize,
        position: WindowsPosition,
    },
}

impl Batches<'_> {
    /// The next step's batch.
    pub fn next_batch(&mut self) -> TokenBatch {
        match self {
            Batches::Fixed(t) => t.clone(),
            Batches::Stream(w) => w.next_batch(),
        }
    }

    /// What these batches are and where they are.
    pub fn state(&self) -> BatchesState {
        match self {
            Batches::Fixed(t) => BatchesState::Fixed {
                batch: t.batch,
                seq: t.seq,
                checksum: crate::io::checksum(&to_le_bytes(&t.ids, u32::to_le)),
            },
            Batches::Stream(w) => BatchesState::Stream {
                tokens: w.stream.len(),
                checksum: w.stream.checksum(),
                batch: w.batch,
                seq: w.seq,
                position: w.position(),
            },
        }
    }

    /// Continue from `saved`, the state of batches of the same data: the
    /// same batch, or the same stream sampled with the same shape. Anything
    /// else is refused, saying what differs.
    pub fn resume(&mut self, saved: &BatchesState) -> Result<()> {
        let now = self.state();
        match (&mut *self, saved, &now) {
            (Batches::Fixed(_), BatchesState::Fixed { .. }, _) if saved == &now => Ok(()),
            (
                Batches::Stream(w),
                BatchesState::Stream {
                    tokens,
                    checksum,
                    batch,
                    seq,
                    position,
                },
                BatchesState::Stream {
                    tokens: t2,
                    checksum: c2,
                    batch: b2,
                    seq: s2,
                    ..
                },
            ) if (tokens, checksum, batch, seq) == (t2, c2, b2, s2) => {
                w.seek(*position);
                Ok(())
            }
            _ => Err(Error::Input(format!(
                "the run was saved training on {}; this run trains on {}",
                saved.describe(),
                now.describe()
            ))),
        }
    }
}

impl BatchesState {
    /// `a fixed batch of 4x16 tokens (checksum …)`, `windows of 4x16 from a
    /// stream of N tokens (checksum …)`.
    pub fn describe(&self) -> String {
        match self {
            BatchesState::Fixed {
                batch,
                seq,
                checksum,
            } => format!("one fixed batch of {batch}x{seq} tokens (checksum {checksum})"),
            BatchesState::Stream {
                tokens,
                checksum,
                batch,
                seq,
                ..
            } => format!(
                "windows of {batch}x{seq} from a stream of {tokens} tokens (checksum {checksum})"
            ),
        }
    }
}
