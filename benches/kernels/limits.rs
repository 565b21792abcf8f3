//! The adapter's limits, measured here in the same process as every kernel
//! row that is set beside them: streaming reads from a storage buffer and
//! from a texture (the best of a few load shapes each,
//! `wgpipe::kernels::probe::read_rates`), and the best matmul (the best
//! GFLOP/s of the forward matmul table).

use wgpipe::device::Gpu;
use wgpipe::kernels::probe;

/// What each kernel row is a fraction of.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Best streaming read from a storage buffer, GB/s.
    pub buffer_gbps: f64,
    /// Best streaming read from an rgba32float texture, GB/s (0 if none).
    pub texture_gbps: f64,
    /// Best matmul, GFLOP/s.
    pub matmul_gflops: f64,
}

impl Limits {
    /// The best read, buffer or texture.
    pub fn read_gbps(&self) -> f64 {
        self.buffer_gbps.max(self.texture_gbps)
    }
}

/// Measure and print the read limits (64 MiB, best of 5 per shape).
/// `matmul_gflops` comes from the matmul table.
pub fn measure(gpu: &Gpu, matmul_gflops: f64) -> Limits {
    let (buffer, texture) = probe::read_rates(gpu, 64, 5).expect("read probes");
    println!(
        "\nlimits on {}: streaming reads of 64 MiB, K dispatches per submit, host clock, best of 5",
        gpu.label
    );
    for r in buffer.iter().chain(&texture) {
        println!("  {:<56} {:>7.2} GB/s", r.how, r.gbps);
    }
    let best = |v: &[probe::ReadRate]| v.iter().map(|r| r.gbps).fold(0.0, f64::max);
    let limits = Limits {
        buffer_gbps: best(&buffer),
        texture_gbps: best(&texture),
        matmul_gflops,
    };
    println!(
        "  best: buffer {:.2} GB/s, texture {:.2} GB/s; best matmul {:.1} GFLOP/s (table above)",
        limits.buffer_gbps, limits.texture_gbps, limits.matmul_gflops
    );
    limits
}
