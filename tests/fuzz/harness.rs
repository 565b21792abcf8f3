//! What every property shares: the recording allocator, the runner, the
//! file names and fixtures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{
    Config, FileFailurePersistence, RngSeed, TestCaseError, TestError, TestRunner,
};

use crate::common::{self, fixture_dir};
use wgpipe::model::Gpt2Config;

/// The whole test binary allocates through this: the largest single request
/// made on each thread is recorded ([`largest_allocation`]), and a request
/// over [`CAP`] is refused — the process then aborts after saying so, since
/// an allocation that large can only be sized by a number read from input.
struct Recording;

/// No parser here may ask for more than this in one allocation.
pub const CAP: usize = 1 << 30;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

/// Records `size`; false when it is over [`CAP`].
fn note(size: usize) -> bool {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    if size > CAP {
        refuse(size);
        return false;
    }
    true
}

/// Says why the process is about to abort, without allocating.
fn refuse(size: usize) {
    use std::io::Write;
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = size;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"\nfuzz: refused one allocation of ");
    let _ = err.write_all(&digits[i..]);
    let _ = err
        .write_all(b" bytes (the cap is 1 GiB): a size read from an input reached an allocation\n");
}

unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if note(layout.size()) {
            System.alloc(layout)
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if note(layout.size()) {
            System.alloc_zeroed(layout)
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if note(new_size) {
            System.realloc(ptr, layout, new_size)
        } else {
            std::ptr::null_mut()
        }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// `f()`, and the largest single allocation it made on this thread.
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// The most a parser may allocate at once for `input` bytes of files: a
/// generous multiple of the input (an F16 tensor widens to f32, a JSON text
/// becomes a tree) plus room for fixed-size tables (a tokenizer's regex).
pub fn allowance(input: usize) -> usize {
    16 * input + (32 << 20)
}

/// proptest's configuration for property `name` of `parser`: `cases` cases
/// from a fixed seed unless `PROPTEST_CASES` / `PROPTEST_RNG_SEED` say
/// otherwise, failing seeds persisted beside the parser's regression corpus.
pub fn config(parser: &str, name: &str, cases: u32) -> Config {
    let mut c = Config::default(); // reads the PROPTEST_* variables
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(24);
    }
    let path = corpus_dir().join(parser).join(format!("{name}{SEEDS}"));
    let path: &'static str = Box::leak(path.display().to_string().into_boxed_str());
    c.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(path)));
    c.max_shrink_iters = 4096;
    c
}

/// One input of a property: the files it is made of, by name.
pub trait Input: std::fmt::Debug {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)>;
}

/// How the parser took one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    Refused,
}

/// Runs `check` on inputs from `strategy`, each written to a scratch
/// directory first, and counts accepted and refused inputs. A failing case
/// (a panic or a failed assertion) fails the test naming the parser, the
/// reason and the minimal input, whose files are saved for the corpus.
/// Both verdicts must occur: a property whose inputs all fail to parse (or
/// all parse) tests less than it claims.
pub fn fuzz<S>(
    parser: &'static str,
    name: &'static str,
    cases: u32,
    strategy: S,
    check: impl Fn(&Path, &S::Value) -> Result<Verdict, TestCaseError>,
) where
    S: Strategy,
    S::Value: Input,
{
    let dir = common::scratch(&format!("fuzz_{name}"));
    let counts = [Cell::new(0u32), Cell::new(0u32)];
    let mut runner = TestRunner::new(config(parser, name, cases));
    let result = runner.run(&strategy, |input| {
        let written = write_files(&dir, &input.files());
        let v = check(&dir, &input);
        for name in written {
            let _ = std::fs::remove_file(dir.join(name));
        }
        let v = v?;
        let c = &counts[(v == Verdict::Refused) as usize];
        c.set(c.get() + 1);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Abort(why)) => panic!("fuzz {name}: aborted: {why}"),
        Err(TestError::Fail(why, input)) => {
            let saved = save_failure(name, &input);
            panic!(
                "fuzz {name} ({parser}): {why}\nminimal input: {input:#?}\nits files are in {}; \
                 once fixed, make them a case of tests/data/fuzz/{parser}/ with an `expected` file",
                saved.display()
            );
        }
    }
    let (ok, refused) = (counts[0].get(), counts[1].get());
    println!("fuzz {name}: {ok} inputs accepted, {refused} refused");
    assert!(
        ok > 0 && refused > 0,
        "fuzz {name}: {ok} inputs accepted and {refused} refused; the generators must reach both"
    );
}

pub fn write_files(dir: &Path, files: &[(&'static str, Vec<u8>)]) -> Vec<&'static str> {
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    files.iter().map(|f| f.0).collect()
}

pub fn save_failure(parser: &str, input: &dyn Input) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz-failures")
        .join(parser);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_files(&dir, &input.files());
    dir
}

/// `f()`'s result, its largest allocation checked against the allowance for
/// `input` bytes; a panic in `f` is turned into a failure naming `what`.
pub fn guarded<T>(what: &str, input: usize, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    let (out, largest) = largest_allocation(|| catch_unwind(AssertUnwindSafe(f)));
    let out = out.map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| p.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        TestCaseError::fail(format!("{what} panicked: {msg}"))
    })?;
    prop_assert!(
        largest <= allowance(input),
        "{what} allocated {largest} bytes at once for {input} bytes of input (allowed {})",
        allowance(input)
    );
    Ok(out)
}

pub fn verdict<T, E>(r: &Result<T, E>) -> Verdict {
    match r {
        Ok(_) => Verdict::Accepted,
        Err(_) => Verdict::Refused,
    }
}

pub fn total_len(files: &[(&'static str, Vec<u8>)]) -> usize {
    files.iter().map(|f| f.1.len()).sum()
}

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const INPUT_IDS: &str = "input_ids.safetensors";
/// The ending of a property's persisted seeds in its parser's corpus folder.
pub const SEEDS: &str = ".proptest-regressions";

pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz")
}

pub fn fixture_config() -> Gpt2Config {
    Gpt2Config::from_json_file(&fixture_dir("tiny-gpt2").join(CONFIG)).unwrap()
}

pub fn fixture(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir(dir).join(name)).unwrap()
}

pub fn error_of<T: std::fmt::Debug>(r: wgpipe::Result<T>) -> String {
    r.expect_err("must be refused").to_string()
}
