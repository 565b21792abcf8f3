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
        })
    }
}

/// Seeded sampler of training batches from a [`TokenStream`]; see
/// [`TokenStream::windows`]. Also an endless [`Iterator`] of batches.
pub struct Windows<'a> {
    stream: &'a TokenStream,
    batch: usize,
    seq: usize,
    starts: u64, // number of possible window starts: len - seq + 1
    rng: Rng,
}

impl Windows<'_> {
    /// The next `batch` windows, row-major (B, T): row b is
    /// `tokens[s_b .. s_b + seq]` with `s_b` uniform in `0..=len - seq`.
    pub fn next_batch(&mut self) -> TokenBatch {
        let tokens = self.stream.tokens();
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
