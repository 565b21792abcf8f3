//! The `sample` kernel's dispatch: the next token of each output, drawn on
//! the device (see `shaders/sample.wgsl` for the algorithm); its CPU twin is
//! [`crate::sampling::sample_row`].
//!
//! One workgroup of 64 invocations per output, ~15 KB of workgroup memory
//! (within WebGPU's default 16 KiB). Measured on lavapipe (2 cores) at
//! V = 50257, one row alone: greedy ~0.8 ms, temperature only ~2.1 ms, top-k
//! 50 ~3.6 ms, top-p 0.9 ~4-8 ms (the more tokens in the nucleus, the more
//! passes over the row); rows run in parallel across cores. A workgroup of
//! 256 was 1.5-2x slower there, 32 the same as 64.

use bytemuck::{Pod, Zeroable};

use super::{dispatch, Dispatch, MAX_GROUPS};
use crate::device::Gpu;
use crate::sampling::SampleSettings;

/// The parameters of [`sample`], as its shader reads them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SampleParams {
    /// Outputs (one workgroup each).
    pub n: u32,
    /// Tokens per row: the first `v` columns of a logits row are sampled.
    pub v: u32,
    /// Row stride of the logits, in floats (>= v).
    pub ld: u32,
    /// Workgroups per row of the dispatch grid.
    pub groups_x: u32,
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off (also passed for top_k >= v).
    pub top_k: u32,
    /// 1 = off.
    pub top_p: f32,
    pub _pad: u32,
}

/// Largest vocabulary the kernel handles (its counts are exact f32 sums).
pub const SAMPLE_MAX_V: usize = 1 << 24;

impl SampleParams {
    /// The parameters for `n` outputs from rows of `v` of `stride` logits.
    /// Panics (a caller bug) on settings [`SampleSettings::check`] refuses,
    /// on `v` = 0 or above [`SAMPLE_MAX_V`], or on `stride < v`.
    pub fn new(n: usize, v: usize, stride: usize, s: &SampleSettings) -> SampleParams {
        if let Err(e) = s.check() {
            panic!("sample: {e}");
        }
        assert!(
            (1..SAMPLE_MAX_V).contains(&v),
            "sample: V = {v} outside 1..{SAMPLE_MAX_V}"
        );
        assert!(stride >= v, "sample: row stride {stride} < V = {v}");
        let groups = n.max(1) as u32;
        SampleParams {
            n: n as u32,
            v: v as u32,
            ld: stride as u32,
            groups_x: groups.min(MAX_GROUPS),
            temperature: s.temperature,
            top_k: if s.top_k < v { s.top_k as u32 } else { 0 },
            top_p: s.top_p,
            _pad: 0,
        }
    }

    /// Workgroup counts: one workgroup per output, `groups_x` per grid row.
    pub fn groups(&self) -> [u32; 3] {
        [self.groups_x, (self.n.max(1)).div_ceil(self.groups_x), 1]
    }
}

/// out[o] = the token drawn from logits row `rows[o]` (its first `v` of
/// `stride` floats) under `s`, with the uniform `uniforms[o]` in [0, 1)
/// (see [`crate::sampling`] for the semantics; greedy ignores `uniforms`).
/// Several outputs may read the same row. Settings must pass
/// [`SampleSettings::check`] (a panic otherwise, as for bad shapes).
#[allow(clippy::too_many_arguments)]
pub fn sample(
    gpu: &Gpu,
    out: &wgpu::Buffer,      // (n) u32
    logits: &wgpu::Buffer,   // (rows, stride) f32
    rows: &wgpu::Buffer,     // (n) u32: the logits row of each output
    uniforms: &wgpu::Buffer, // (n) f32 in [0, 1)
    n: usize,
    v: usize,
    stride: usize,
    s: &SampleSettings,
) -> Dispatch {
    let p = SampleParams::new(n, v, stride, s);
    dispatch(
        gpu,
        "sample",
        &[out, logits, rows, uniforms],
        &p,
        p.groups(),
    )
}
