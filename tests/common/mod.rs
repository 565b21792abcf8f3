//! Helpers shared by the GPU tests: the adapter to test on, a tolerance
//! check that explains its failures, and deterministic test data.
#![allow(dead_code)] // each test binary uses a different subset

use wgpipe::device::{list_adapters, Gpu};

/// Open the adapter `WGPIPE_TEST_ADAPTER` selects (same syntax as `--adapter`:
/// "" = first, `vulkan`, `gl:0`, `2`, or part of the name). Panics, loudly,
/// when there is none: GPU tests must fail, never skip, on a machine without one.
pub fn gpu() -> Gpu {
    let selector = std::env::var("WGPIPE_TEST_ADAPTER").unwrap_or_default();
    match Gpu::open(&selector) {
        Ok(g) => g,
        Err(e) => {
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
    }
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
