//! `--data train.bin`: token streams of any length and ids, read against a
//! vocabulary, then windows of any batch and length drawn from them.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use crate::gen::*;
use crate::harness::*;
use wgpipe::data::TokenStream;

pub const TRAIN_BIN: &str = "train.bin";

/// The vocabulary `train.bin` is read against (tiny-gpt2-gen's).
pub const TRAIN_VOCAB: usize = 320;

/// `--data train.bin`, then a few training windows from it.
pub fn parse_train_bin(dir: &Path, batch: usize, seq: usize) -> wgpipe::Result<TokenStream> {
    let stream = TokenStream::read(&dir.join(TRAIN_BIN), TRAIN_VOCAB)?;
    let mut w = stream.windows(batch, seq, 7)?;
    if batch.saturating_mul(seq) <= 1 << 16 {
        for _ in 0..2 {
            let b = w.next_batch();
            assert_eq!(b.ids.len(), batch * seq);
        }
    }
    Ok(stream)
}

#[derive(Clone, Debug)]
pub struct TrainInput {
    pub tokens: Vec<u16>,
    /// One more byte: an odd length.
    pub odd: bool,
    pub batch: u64,
    pub seq: u64,
}

impl Input for TrainInput {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut bytes: Vec<u8> = self.tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        if self.odd {
            bytes.push(1);
        }
        vec![(TRAIN_BIN, bytes)]
    }
}

#[test]
fn fuzz_train_bin() {
    let strategy = (
        vec(
            prop_oneof![30 => 0u16..TRAIN_VOCAB as u16, 1 => any::<u16>()],
            0..200,
        ),
        proptest::bool::weighted(0.1),
        count(),
        count(),
    )
        .prop_map(|(tokens, odd, batch, seq)| TrainInput {
            tokens,
            odd,
            batch,
            seq,
        });
    fuzz("train_bin", "train_bin", 4000, strategy, |dir, t| {
        let (batch, seq) = (t.batch as usize, t.seq as usize);
        let files = t.files();
        let got = guarded("TokenStream", total_len(&files), || {
            parse_train_bin(dir, batch, seq)
        })?;
        let msg = got
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let bad = t.tokens.iter().position(|&id| id as usize >= TRAIN_VOCAB);
        if t.odd {
            prop_assert!(
                msg.contains("is not a whole number of uint16 tokens"),
                "{}",
                msg
            );
        } else if t.tokens.is_empty() {
            prop_assert!(msg.contains("empty"), "{}", msg);
        } else if let Some(i) = bad {
            let want = format!("token id {} at position {i} is out of range", t.tokens[i]);
            prop_assert!(msg.contains(&want), "{}", msg);
        } else if batch == 0 || seq == 0 || seq > t.tokens.len() || batch.checked_mul(seq).is_none()
        {
            prop_assert!(
                got.is_err(),
                "windows of batch {} seq {} were accepted",
                batch,
                seq
            );
        } else {
            let stream = got
                .as_ref()
                .map_err(|e| TestCaseError::fail(format!("refused: {e}")))?;
            prop_assert_eq!(stream.tokens(), &t.tokens[..]);
        }
        Ok(verdict(&got))
    })
}
