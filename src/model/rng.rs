//! The crate's seeded random numbers: the initial weights
//! ([`super::Gpt2Weights::init`]), random token ids
//! (`io::random_input_ids`) and synthetic token streams (`data`), each the
//! same on every platform for the same seed.

/// splitmix64: small, fast, deterministic across platforms. Crate-internal.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The state: `Rng::new(r.state())` continues where `r` is.
    pub(crate) fn state(&self) -> u64 {
        self.0
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), 53 bits.
    fn uniform_pm1(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
    }

    /// `n` samples of N(mean, std) by Marsaglia's polar method (Box-Muller
    /// without trigonometry), both outputs of each pair used.
    pub(crate) fn normal_vec(&mut self, n: usize, mean: f32, std: f32) -> Vec<f32> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let (u, v) = (self.uniform_pm1(), self.uniform_pm1());
            let s = u * u + v * v;
            if s >= 1.0 || s == 0.0 {
                continue;
            }
            let f = (-2.0 * s.ln() / s).sqrt();
            out.push(mean + std * (u * f) as f32);
            if out.len() < n {
                out.push(mean + std * (v * f) as f32);
            }
        }
        out
    }
}
