//! Token streams (nanoGPT's train.bin format) and the seeded batch sampler.

use std::path::{Path, PathBuf};

use wgpipe::data::{write_token_file, TokenStream};
use wgpipe::Error;

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

/// The message of an `Error::Input`; panics on any other result.
fn input_error<T: std::fmt::Debug>(r: wgpipe::Result<T>) -> String {
    match r {
        Err(Error::Input(msg)) => msg,
        other => panic!("expected Error::Input, got {other:?}"),
    }
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// 0, 1, 2, ... : every token distinct, so a window is known by its first id.
fn counting(n: usize) -> Vec<u16> {
    (0..n).map(|i| i as u16).collect()
}

#[test]
fn round_trip_through_a_token_file() {
    let dir = tmp();
    let path = dir.path().join("train.bin");
    let tokens: Vec<u16> = vec![0, 1, 258, 50256, 65535, 7];
    write_token_file(&path, &tokens).unwrap();
    // The bytes are little-endian uint16, no header, as numpy's tofile writes them.
    let want_bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    assert_eq!(std::fs::read(&path).unwrap(), want_bytes);
    let stream = TokenStream::read(&path, 65536).unwrap();
    assert_eq!(stream.tokens(), &tokens[..]);
    assert_eq!(stream.len(), tokens.len());
    assert!(!stream.is_empty());
}

#[test]
fn reads_little_endian_bytes_written_by_hand() {
    let dir = tmp();
    // 0x0102 = 258, 0x00ff = 255, 0xc450 = 50256
    let path = write_bytes(dir.path(), "t.bin", &[0x02, 0x01, 0xff, 0x00, 0x50, 0xc4]);
    let stream = TokenStream::read(&path, 50257).unwrap();
    assert_eq!(stream.tokens(), &[258, 255, 50256]);
}

#[test]
fn same_seed_same_batches() {
    let stream = TokenStream::from_tokens(counting(500), 500).unwrap();
    let a: Vec<_> = stream.windows(4, 16, 42).unwrap().take(5).collect();
    let mut w = stream.windows(4, 16, 42).unwrap();
    let b: Vec<_> = (0..5).map(|_| w.next_batch()).collect();
    assert_eq!(a, b);
    // Successive batches are fresh draws.
    assert_ne!(a[0], a[1]);
}

#[test]
fn different_seeds_differ() {
    let stream = TokenStream::from_tokens(counting(500), 500).unwrap();
    let a = stream.windows(4, 16, 1).unwrap().next_batch();
    let b = stream.windows(4, 16, 2).unwrap().next_batch();
    assert_ne!(a, b);
}

#[test]
fn every_window_is_a_slice_of_the_stream() {
    // A stream with repeats, so a row is matched by search, not by its first id.
    let tokens: Vec<u16> = (0..300u32).map(|i| ((i * i + 3 * i) % 37) as u16).collect();
    let stream = TokenStream::from_tokens(tokens.clone(), 37).unwrap();
    let (batch, seq) = (3, 9);
    for tb in stream.windows(batch, seq, 7).unwrap().take(20) {
        assert_eq!((tb.batch, tb.seq, tb.ids.len()), (batch, seq, batch * seq));
        for row in tb.ids.chunks(seq) {
            let row: Vec<u16> = row.iter().map(|&id| id as u16).collect();
            assert!(
                tokens.windows(seq).any(|w| w == &row[..]),
                "row {row:?} is not {seq} consecutive tokens of the stream"
            );
        }
    }
}

#[test]
fn starts_cover_the_whole_range_including_the_last() {
    // len 10, seq 8: the starts are 0, 1, 2 (0..=len-seq), about equally often.
    let stream = TokenStream::from_tokens(counting(10), 10).unwrap();
    let mut counts = [0usize; 3];
    for tb in stream.windows(5, 8, 3).unwrap().take(200) {
        for row in tb.ids.chunks(8) {
            let want: Vec<u32> = (row[0]..row[0] + 8).collect();
            assert_eq!(row, &want[..]);
            counts[row[0] as usize] += 1;
        }
    }
    // 1000 draws of 3 equally likely starts: each far from 0 and from 1000.
    assert!(
        counts.iter().all(|&c| (250..=420).contains(&c)),
        "{counts:?}"
    );
}

#[test]
fn a_window_as_long_as_the_stream_is_the_stream() {
    let stream = TokenStream::from_tokens(counting(12), 12).unwrap();
    let tb = stream.windows(2, 12, 0).unwrap().next_batch();
    let want: Vec<u32> = (0..12).chain(0..12).collect();
    assert_eq!(tb.ids, want);
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = tmp();
    let path = dir.path().join("no-such.bin");
    let err = TokenStream::read(&path, 10).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such.bin"), "{err}");
}

#[test]
fn odd_byte_length_is_refused() {
    let dir = tmp();
    let path = write_bytes(dir.path(), "odd.bin", &[1, 0, 2]);
    let msg = input_error(TokenStream::read(&path, 10));
    assert!(msg.contains("odd.bin"), "{msg}");
    assert!(msg.contains("3 bytes"), "{msg}");
    assert!(msg.contains("not a whole number of uint16 tokens"), "{msg}");
}

#[test]
fn empty_file_is_refused() {
    let dir = tmp();
    let path = dir.path().join("empty.bin");
    write_token_file(&path, &[]).unwrap();
    let msg = input_error(TokenStream::read(&path, 10));
    assert!(msg.contains("empty.bin"), "{msg}");
    assert!(msg.contains("empty"), "{msg}");
    let msg = input_error(TokenStream::from_tokens(vec![], 10));
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn token_out_of_vocab_is_refused_with_position_and_id() {
    let dir = tmp();
    let path = dir.path().join("big.bin");
    write_token_file(&path, &[3, 9, 10, 11]).unwrap();
    // 9 is the largest id vocab 10 allows; 10 at position 2 is the first too big.
    let msg = input_error(TokenStream::read(&path, 10));
    assert!(msg.contains("big.bin"), "{msg}");
    assert!(
        msg.contains("token id 10 at position 2") && msg.contains("vocab size 10"),
        "{msg}"
    );
    assert!(TokenStream::read(&path, 12).is_ok());
}

#[test]
fn windows_longer_than_the_stream_are_refused() {
    let stream = TokenStream::from_tokens(counting(5), 5).unwrap();
    let msg = input_error(stream.windows(1, 6, 0));
    assert!(msg.contains("needs at least 6 tokens"), "{msg}");
    assert!(msg.contains("holds 5"), "{msg}");
}

#[test]
fn empty_windows_are_refused() {
    let stream = TokenStream::from_tokens(counting(5), 5).unwrap();
    let msg = input_error(stream.windows(0, 3, 0));
    assert!(msg.contains("batch 0"), "{msg}");
    let msg = input_error(stream.windows(2, 0, 0));
    assert!(msg.contains("seq 0"), "{msg}");
}

/// Found by the fuzz tests (tests/fuzz): a batch of 2^62 windows of 4 tokens used to be
/// accepted, its `batch × seq` ids overflowing when a batch was drawn.
#[test]
fn windows_whose_batch_overflows_are_refused() {
    let stream = TokenStream::from_tokens(counting(5), 5).unwrap();
    let msg = input_error(stream.windows(1 << 62, 4, 0));
    assert!(
        msg.contains("batch 4611686018427387904 × seq 4") && msg.contains("overflows"),
        "{msg}"
    );
    assert_eq!(
        stream
            .windows(1 << 16, 4, 0)
            .unwrap()
            .next_batch()
            .ids
            .len(),
        4 << 16
    );
}
