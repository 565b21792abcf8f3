//! Helpers shared by the tests: the adapters to test on, tolerance checks
//! that explain their failures, deterministic test data, and scratch
//! directories, fixtures and safetensors files.
#![allow(dead_code)] // each test binary uses a different subset

pub mod llama64;
pub mod train;

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use wgpipe::device::{list_adapters, no_adapter_error, select, AdapterSummary, Gpu};
use wgpipe::error::Error;
use wgpipe::model::{Gpt2Config, Gpt2Weights};

/// The adapter selector tests honour: `WGPIPE_TEST_ADAPTER` (same syntax as
/// `--adapter`: "" = first, `vulkan`, `gl:0`, `2`, or part of the name).
fn selector() -> Option<String> {
    std::env::var("WGPIPE_TEST_ADAPTER").ok()
}

/// The loud failure for a machine without a usable adapter: GPU tests must
/// fail, never skip.
fn no_adapter(selector: &str, e: &dyn std::fmt::Display) -> ! {
    let have: Vec<String> = list_adapters()
        .iter()
        .map(|a| format!("{} ({})", a.id(), a.name))
        .collect();
    panic!(
        "\n\n=== NO USABLE wgpu ADAPTER: GPU kernel tests cannot run ===\n\
         WGPIPE_TEST_ADAPTER={selector:?}: {e}\n\
         adapters present: [{}]\n\
         Install Mesa's software Vulkan driver (lavapipe) and rerun:\n\
         \x20   apt-get install -y mesa-vulkan-drivers\n\
         or set WGPIPE_TEST_ADAPTER to one of the adapters above.\n",
        have.join(", ")
    )
}

/// Open the adapter `WGPIPE_TEST_ADAPTER` selects (the first one when unset).
/// Panics, loudly, when there is none.
pub fn gpu() -> Gpu {
    let selector = selector().unwrap_or_default();
    Gpu::open(&selector).unwrap_or_else(|e| no_adapter(&selector, &e))
}

/// Every adapter to test on: all that `list_adapters()` returns (Vulkan
/// lavapipe and GL llvmpipe are two backends, both tested), or only the one
/// `WGPIPE_TEST_ADAPTER` selects. Panics, loudly, when there is none.
pub fn test_adapters() -> Vec<AdapterSummary> {
    let all = list_adapters();
    match selector() {
        Some(sel) => vec![select(&all, &sel).unwrap_or_else(|e| no_adapter(&sel, &e))],
        None if all.is_empty() => no_adapter("", &no_adapter_error()),
        None => all,
    }
}

/// Open every adapter of [`test_adapters`], in listing order.
pub fn all_gpus() -> Vec<Gpu> {
    test_adapters().iter().map(open_adapter).collect()
}

/// Run `body` on every adapter of [`test_adapters`], one at a time, saying
/// which (the way wgpu's own test harness runs a test on every adapter).
pub fn for_each_adapter(mut body: impl FnMut(&Gpu)) {
    for a in test_adapters() {
        let g = open_adapter(&a);
        println!("--- on {}", g.label);
        body(&g);
    }
}

/// Open one listed adapter; panics, naming it, when it does not open.
pub fn open_adapter(a: &AdapterSummary) -> Gpu {
    Gpu::open_summary(a).unwrap_or_else(|e| panic!("{} is listed but does not open: {e}", a.id()))
}

/// Assert `|g - r| <= atol + rtol * |r|` elementwise (NaN never passes). On
/// failure, print the first mismatches and the largest differences.
pub fn assert_close(name: &str, gpu: &[f32], reference: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        gpu.len(),
        reference.len(),
        "{name}: gpu has {} values, reference {}",
        gpu.len(),
        reference.len()
    );
    let mut bad = Vec::new();
    let mut nbad = 0usize;
    let (mut max_abs, mut max_abs_i) = (0f32, 0usize);
    let (mut max_rel, mut max_rel_i) = (0f32, 0usize);
    for (i, (&g, &r)) in gpu.iter().zip(reference).enumerate() {
        let d = (g - r).abs();
        let ok = d <= atol + rtol * r.abs(); // false for NaN
        if !ok {
            nbad += 1;
            if bad.len() < 8 {
                bad.push(format!("  [{i}] gpu {g:e} ref {r:e} diff {d:e}"));
            }
        }
        if d > max_abs || d.is_nan() && !max_abs.is_nan() {
            (max_abs, max_abs_i) = (d, i);
        }
        let rel = d / r.abs().max(f32::MIN_POSITIVE);
        if rel > max_rel || rel.is_nan() && !max_rel.is_nan() {
            (max_rel, max_rel_i) = (rel, i);
        }
    }
    if nbad > 0 {
        panic!(
            "{name}: {nbad} of {} values differ beyond atol {atol:e} + rtol {rtol:e}*|ref|; first:\n{}\n  \
             largest abs diff {max_abs:e} at [{max_abs_i}] (gpu {:e} ref {:e})\n  \
             largest rel diff {max_rel:e} at [{max_rel_i}] (gpu {:e} ref {:e})",
            gpu.len(),
            bad.join("\n"),
            gpu[max_abs_i],
            reference[max_abs_i],
            gpu[max_rel_i],
            reference[max_rel_i],
        );
    }
}

/// Deterministic test data: splitmix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        // 24 random bits -> [0, 1) exactly representable, then scale.
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `len` values uniform in [-scale, scale).
    pub fn vec(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.uniform() * scale).collect()
    }

    /// Uniform in 0 .. n.
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % n as u64) as u32
    }
}

// ----------------------------------------------------------------------------
// files and fixtures

/// A fresh, empty directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("scratch")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Hugging Face fixtures made with real transformers (see tests/data).
pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

pub fn f32_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Write a safetensors file from (name, dtype, shape, bytes).
pub fn write_st(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// The tensors of `w` as `save_checkpoint` would write them (F32), to edit.
pub fn tensors_of(w: &Gpt2Weights, prefix: &str) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    w.named_tensors()
        .into_iter()
        .map(|(n, t, s)| (format!("{prefix}{n}"), Dtype::F32, s, f32_bytes(t)))
        .collect()
}

pub fn tiny() -> Gpt2Config {
    Gpt2Config::named("tiny").unwrap()
}

/// An F32 or F64 tensor's values as f64.
pub fn tensor_f64(name: &str, v: &safetensors::tensor::TensorView) -> Vec<f64> {
    match v.dtype() {
        Dtype::F32 => v
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::F64 => v
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        d => panic!("{name}: unexpected dtype {d}"),
    }
}

/// Read an F32 or F64 tensor as f64.
pub fn read_float_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f64>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let v = st.tensor(name).unwrap();
    (v.shape().to_vec(), tensor_f64(name, &v))
}

/// |got - want| <= atol + rtol*|want| everywhere, against an f64 reference;
/// prints the worst on failure.
pub fn assert_close_f64(got: &[f32], want: &[f64], atol: f64, rtol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    let mut bad = Vec::new();
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = (g as f64 - w).abs();
        let excess = d - (atol + rtol * w.abs());
        if excess > 0.0 && bad.len() < 5 {
            bad.push(format!("[{i}] got {g} want {w} diff {d:e}"));
        }
        if d > worst.1 {
            worst = (i, d);
        }
    }
    assert!(
        bad.is_empty(),
        "{what}: mismatches {bad:?}; largest diff {:e} at {}",
        worst.1,
        worst.0
    );
}

pub fn err_string<T: std::fmt::Debug>(r: wgpipe::Result<T>) -> (Error, String) {
    let e = r.expect_err("expected an error");
    let s = e.to_string();
    (e, s)
}
