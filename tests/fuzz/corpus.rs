//! The regression corpus: every input that once crashed a parser, made it
//! allocate what a number in it claimed, or got past it, kept as files.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::checkpoint::parse_checkpoint;
use crate::config::parse_config;
use crate::harness::*;
use crate::input_ids::parse_input_ids;
use crate::schedule_csv::parse_schedule;
use crate::tokenizer::parse_tokenizer;
use crate::train_bin::parse_train_bin;

/// The error message of the first thing wrong with corpus case `dir`, which
/// holds the files of `parser`.
pub fn corpus_error(parser: &str, dir: &Path) -> Option<String> {
    fn message<T, E: std::fmt::Display>(r: Result<T, E>) -> Option<String> {
        r.err().map(|e| e.to_string())
    }
    match parser {
        "checkpoint" => message(parse_checkpoint(dir)),
        "input_ids" => message(parse_input_ids(dir)),
        "config" => message(parse_config(dir)),
        "tokenizer" => message(parse_tokenizer(dir)),
        "train_bin" => message(parse_train_bin(dir, 2, 3)),
        "schedule_csv" => message(parse_schedule(dir)),
        other => panic!("tests/data/fuzz/{other}: no such parser; see corpus_error"),
    }
}

/// Every case of `tests/data/fuzz/<parser>/<case>/` — the files of an input
/// that once crashed a parser, allocated what it claimed, or got past it —
/// still gives its error: the message contains the case's `expected`
/// fragment (or, where `expected` is `accepted`, the input is taken), with
/// no panic and no allocation beyond the input's allowance.
#[test]
fn fuzz_corpus() {
    let mut ran = 0;
    for parser in sorted_entries(&corpus_dir()) {
        let name = parser.file_name().unwrap().to_string_lossy().into_owned();
        for case in sorted_entries(&parser) {
            let file = case.file_name().unwrap().to_string_lossy().into_owned();
            if case.is_file() && file.ends_with(SEEDS) {
                continue;
            }
            let at = case.display();
            assert!(case.is_dir(), "{at}: a corpus case is a directory of files");
            let expected = std::fs::read_to_string(case.join("expected"))
                .unwrap_or_else(|e| panic!("{at}: no `expected` file: {e}"));
            let expected = expected.trim_end_matches('\n');
            assert!(!expected.is_empty(), "{at}: `expected` is empty");
            let input: u64 = sorted_entries(&case)
                .iter()
                .map(|f| f.metadata().unwrap().len())
                .sum();
            let (got, largest) = largest_allocation(|| {
                catch_unwind(AssertUnwindSafe(|| corpus_error(&name, &case)))
            });
            let got = got.unwrap_or_else(|_| panic!("{at}: the {name} parser panicked"));
            assert!(
                largest <= allowance(input as usize),
                "{at}: {largest} bytes allocated at once for {input} bytes of input"
            );
            match (got, expected) {
                (None, "accepted") => {}
                (Some(msg), "accepted") => panic!("{at}: refused: {msg}"),
                (Some(msg), _) => assert!(
                    msg.contains(expected),
                    "{at}: the error\n  {msg}\ndoes not contain\n  {expected}"
                ),
                (None, _) => panic!("{at}: accepted; it must be refused with {expected:?}"),
            }
            ran += 1;
        }
    }
    println!("fuzz corpus: {ran} cases");
    assert!(ran > 0, "no corpus cases under {}", corpus_dir().display());
}

pub fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}
