//! Inputs that cannot crash it (issue 24, part 5): every parser of a file a
//! user hands in — `model.safetensors` and `config.json` (`--checkpoint`),
//! `--input-ids`, `tokenizer.json`, `train.bin` (`--data`) and a schedule
//! CSV (`plan --from-csv`) — fed generated and mutated inputs, one module per
//! parser. Every case must come back `Ok` or `Err`: no panic, and no single
//! allocation larger than the input can justify (a test-only global
//! allocator records the largest request, and refuses any over 1 GiB; see
//! [`harness`]). Where the result is known — an honest file loads exactly, a
//! truncated one is refused, a number too large is refused by name — the
//! properties check it.
//!
//! Each property runs a fixed number of cases from a fixed seed, so CI runs
//! the same inputs every time; `PROPTEST_CASES=20000 PROPTEST_RNG_SEED=<n>
//! cargo test --test fuzz` fuzzes longer and elsewhere. A failure names the
//! property, the reason and the minimal input, and writes the input's files
//! under `target/tmp/fuzz-failures/<property>/`; proptest appends its seed to
//! `tests/data/fuzz/<parser>/<property>.proptest-regressions` (committed,
//! and replayed first on every run while the generator is unchanged). Once
//! fixed, the files become a case of the regression corpus, which outlives
//! any generator: a directory `tests/data/fuzz/<parser>/<case>/` with the
//! input files and `expected`, a fragment of the error it must give
//! ([`corpus`]).

#[path = "../common/mod.rs"]
mod common;

mod gen;
mod harness;

mod checkpoint;
mod config;
mod corpus;
mod input_ids;
mod safetensors;
mod schedule_csv;
mod tokenizer;
mod train_bin;
