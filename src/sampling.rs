//! Next-token sampling: the settings (temperature, top-k, top-p), the seeded
//! random numbers that drive it, and the plain CPU reference of what the
//! `sample` kernel ([`crate::kernels::sample`]) computes on the device.
//!
//! Semantics, per row of V logits (the kernel's and [`sample_row`]'s):
//! - greedy (temperature 0): the argmax, the lowest index on ties (what
//!   `torch.argmax` picks);
//! - otherwise z_i = logits_i / temperature, then
//!   - top-k (when 0 < k < V): keep the tokens with z_i >= the k-th largest z
//!     (ties at the threshold are kept, so more than k may remain);
//!   - top-p (when top_p < 1): among those kept, with p_i ∝ exp(z_i - max z),
//!     keep the smallest set of most probable tokens whose probability adds
//!     up to at least top_p (ties at the threshold kept, at least one token
//!     kept): Hugging Face's `TopPLogitsWarper` up to ties;
//!   - draw by inverse CDF in token-index order: the first kept token i
//!     (in increasing index) whose cumulative kept mass exceeds u × the total
//!     kept mass, for a uniform u in [0, 1) from [`uniform`].
//!
//! NaN logits give an unspecified token.

use crate::error::{Error, Result};

/// How the next token is chosen from a row of logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleSettings {
    /// Divides the logits; 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens (ties kept); 0, or k >= V, = off.
    pub top_k: usize,
    /// Keep the most likely tokens whose probability adds up to top_p; 1 = off.
    pub top_p: f32,
}

impl Default for SampleSettings {
    /// Greedy: temperature 0, top-k and top-p off.
    fn default() -> Self {
        SampleSettings {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl SampleSettings {
    /// Whether this is greedy decoding (temperature 0): argmax, no randomness.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Refuse settings the sampler cannot honour, naming the CLI flag:
    /// a negative or non-finite temperature, a top_p outside (0, 1].
    pub fn check(&self) -> Result<()> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(Error::Input(format!(
                "--temperature must be a finite number >= 0 (0 = greedy), got {t}"
            )));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(Error::Input(format!(
                "--top-p must be in (0, 1] (1 = off), got {p}"
            )));
        }
        Ok(())
    }
}

/// SplitMix64's output function of `x` (after its increment).
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The uniform number in [0, 1) that draws token `step` of sequence
/// `sequence` under `seed`: a hash of the three (SplitMix64, chained), so it
/// does not depend on how sequences are grouped into microbatches or spread
/// over pipeline stages. A multiple of 2^-24, hence exact in f32 and < 1.
pub fn uniform(seed: u64, sequence: u64, step: u64) -> f32 {
    let h = splitmix64(splitmix64(splitmix64(seed) ^ sequence) ^ step);
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// The argmax of `logits`, the lowest index on ties (as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// z = logits / temperature, in f32 (as the kernel divides).
fn scaled(logits: &[f32], temperature: f32) -> Vec<f32> {
    logits.iter().map(|&l| l / temperature).collect()
}

/// Which tokens survive top-k and top-p (all of them when both are off or
/// the settings are greedy). Probabilities are computed in f64.
pub fn kept(logits: &[f32], s: &SampleSettings) -> Vec<bool> {
    let v = logits.len();
    if s.is_greedy() {
        return vec![true; v];
    }
    let z = scaled(logits, s.temperature);
    let mut keep = vec![true; v];
    if s.top_k > 0 && s.top_k < v {
        let mut sorted = z.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let threshold = sorted[s.top_k - 1];
        for (k, &zi) in keep.iter_mut().zip(&z) {
            *k = zi >= threshold;
        }
    }
    if s.top_p < 1.0 {
        let zmax = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let w: Vec<f64> = z
            .iter()
            .map(|&zi| (zi as f64 - zmax as f64).exp())
            .collect();
        let mut order: Vec<usize> = (0..v).filter(|&i| keep[i]).collect();
        let total: f64 = order.iter().map(|&i| w[i]).sum();
        order.sort_by(|&a, &b| z[b].total_cmp(&z[a]));
        let target = s.top_p as f64 * total;
        let mut threshold = z[*order.last().expect("top-k keeps at least one token")];
        let mut cum = 0.0;
        for &i in &order {
            cum += w[i];
            if cum >= target {
                threshold = z[i];
                break;
            }
        }
        for (k, &zi) in keep.iter_mut().zip(&z) {
            *k = *k && zi >= threshold;
        }
    }
    keep
}

/// The token a row of logits yields under `s` for the uniform `u` in [0, 1):
/// the reference the `sample` kernel is tested against (see the module doc).
/// Masses are exp(z - max z) in f64, summed in token order.
pub fn sample_row(logits: &[f32], s: &SampleSettings, u: f32) -> u32 {
    assert!(!logits.is_empty(), "sample_row: empty row");
    if s.is_greedy() {
        return argmax(logits);
    }
    let keep = kept(logits, s);
    let w = kept_mass(logits, s, &keep);
    let total: f64 = w.iter().sum();
    let x = u as f64 * total;
    let mut cum = 0.0;
    let mut last = None;
    for (i, &wi) in w.iter().enumerate() {
        if wi > 0.0 {
            cum += wi;
            if cum > x {
                return i as u32;
            }
            last = Some(i);
        }
    }
    // Only when u * total rounds up to the total: the last token with mass.
    last.unwrap_or_else(|| argmax(logits) as usize) as u32
}

/// exp(z_i - max z) in f64 for the kept tokens, 0 for the others.
pub fn kept_mass(logits: &[f32], s: &SampleSettings, keep: &[bool]) -> Vec<f64> {
    let z = scaled(logits, s.temperature);
    let zmax = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    z.iter()
        .zip(keep)
        .map(|(&zi, &k)| {
            if k {
                (zi as f64 - zmax as f64).exp()
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(temperature: f32, top_k: usize, top_p: f32) -> SampleSettings {
        SampleSettings {
            temperature,
            top_k,
            top_p,
        }
    }

    /// Deterministic logits in [-scale, scale).
    fn logits(seed: u64, v: usize, scale: f32) -> Vec<f32> {
        (0..v as u64)
            .map(|i| (uniform(seed, 1000 + i, 7) * 2.0 - 1.0) * scale)
            .collect()
    }

    #[test]
    fn default_is_greedy_and_valid() {
        let s = SampleSettings::default();
        assert!(s.is_greedy());
        assert_eq!((s.top_k, s.top_p), (0, 1.0));
        s.check().unwrap();
        settings(0.7, 50, 0.9).check().unwrap();
        settings(1.0, 0, 1.0).check().unwrap();
    }

    #[test]
    fn check_names_the_flag_and_the_value() {
        for (s, flag, shown) in [
            (settings(1.0, 0, 0.0), "--top-p", "got 0"),
            (settings(1.0, 0, 1.5), "--top-p", "got 1.5"),
            (settings(1.0, 0, -0.1), "--top-p", "got -0.1"),
            (settings(1.0, 0, f32::NAN), "--top-p", "got NaN"),
            (settings(-1.0, 0, 1.0), "--temperature", "got -1"),
            (settings(f32::NAN, 0, 1.0), "--temperature", "got NaN"),
            (settings(f32::INFINITY, 0, 1.0), "--temperature", "got inf"),
        ] {
            let e = s.check().expect_err(&format!("{s:?} accepted"));
            assert!(matches!(e, Error::Input(_)), "{s:?}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(flag) && msg.contains(shown), "{s:?}: {msg}");
            if flag == "--top-p" {
                assert!(msg.contains("(0, 1]"), "{msg}");
            }
        }
    }

    #[test]
    fn uniform_is_deterministic_in_range_and_varies() {
        let mut seen = std::collections::HashSet::new();
        for seq in 0..50 {
            for step in 0..50 {
                let u = uniform(42, seq, step);
                assert!((0.0..1.0).contains(&u), "{u}");
                assert_eq!(u, uniform(42, seq, step));
                seen.insert(u.to_bits());
            }
        }
        assert!(seen.len() > 2400, "only {} distinct of 2500", seen.len());
        assert_ne!(uniform(1, 0, 0), uniform(2, 0, 0));
        assert_ne!(uniform(1, 0, 1), uniform(1, 1, 0));
    }

    #[test]
    fn argmax_takes_the_lowest_index_on_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 2.0, 3.0]), 1);
        assert_eq!(argmax(&[-5.0]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
        let s = SampleSettings::default();
        assert_eq!(sample_row(&[0.0, 2.0, 2.0], &s, 0.99), 1);
    }

    #[test]
    fn top_k_keeps_ties_at_the_threshold() {
        let l = [1.0, 3.0, 2.0, 2.0, 0.5];
        let s = settings(1.0, 2, 1.0);
        assert_eq!(kept(&l, &s), [false, true, true, true, false]);
        // k >= V is off
        assert!(kept(&l, &settings(1.0, 5, 1.0)).iter().all(|&k| k));
        assert!(kept(&l, &settings(1.0, 99, 1.0)).iter().all(|&k| k));
    }

    #[test]
    fn top_p_keeps_the_smallest_most_likely_set() {
        // probabilities 0.5, 0.25, 0.125, 0.125
        let l = [2f32.ln() * 3.0, 2f32.ln() * 2.0, 2f32.ln(), 2f32.ln()];
        let at = |p| kept(&l, &settings(1.0, 0, p));
        assert_eq!(at(0.4), [true, false, false, false]);
        assert_eq!(at(0.6), [true, true, false, false]);
        // 0.8 needs the third token, whose tie is kept too
        assert_eq!(at(0.8), [true, true, true, true]);
        // at least one token survives any top_p
        assert_eq!(at(1e-9), [true, false, false, false]);
    }

    #[test]
    fn inverse_cdf_in_token_order() {
        // probabilities 0.25, 0.5, 0.25
        let l = [0.0, 2f32.ln(), 0.0];
        let s = settings(1.0, 0, 1.0);
        assert_eq!(sample_row(&l, &s, 0.0), 0);
        assert_eq!(sample_row(&l, &s, 0.24), 0);
        assert_eq!(sample_row(&l, &s, 0.26), 1);
        assert_eq!(sample_row(&l, &s, 0.74), 1);
        assert_eq!(sample_row(&l, &s, 0.76), 2);
        assert_eq!(sample_row(&l, &s, 0.999_999_9), 2);
        // top-k = 2: the second largest, 0.0, is tied: all three kept
        assert_eq!(kept(&l, &settings(1.0, 2, 1.0)), [true, true, true]);
        // top-k = 1: only token 1
        assert_eq!(sample_row(&l, &settings(1.0, 1, 1.0), 0.0), 1);
        assert_eq!(sample_row(&l, &settings(1.0, 1, 1.0), 0.99), 1);
    }

    #[test]
    fn top_k_1_and_tiny_top_p_are_greedy() {
        for seed in 0..20 {
            let l = logits(seed, 97, 4.0);
            let want = argmax(&l);
            for step in 0..20 {
                let u = uniform(seed, 0, step);
                for s in [settings(0.8, 1, 1.0), settings(1.3, 0, 1e-6)] {
                    assert_eq!(sample_row(&l, &s, u), want, "{s:?}");
                }
            }
        }
    }

    #[test]
    fn frequencies_match_softmax() {
        let l = [0.5f32, -1.0, 1.2, 0.0, 0.3, -0.4, 2.0];
        let t = 1.5f32;
        let s = settings(t, 0, 1.0);
        let e: Vec<f64> = l.iter().map(|&x| ((x / t) as f64).exp()).collect();
        let sum: f64 = e.iter().sum();
        let n = 20_000;
        let mut counts = [0usize; 7];
        for step in 0..n {
            counts[sample_row(&l, &s, uniform(9, 3, step)) as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = e[i] / sum;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            let f = c as f64 / n as f64;
            assert!(
                (f - p).abs() < 4.0 * se,
                "token {i}: frequency {f} vs probability {p} (se {se})"
            );
        }
    }

    #[test]
    fn frequencies_match_renormalised_top_k_top_p() {
        // top-k 4 keeps tokens 6, 2, 0, 4; top-p 0.8 then keeps the smallest
        // set reaching 80% of their mass: 6 and 2 make 78%, so 6, 2, 0.
        let l = [0.5f32, -1.0, 1.2, 0.0, 0.3, -0.4, 2.0];
        let s = settings(1.0, 4, 0.8);
        let keep = kept(&l, &s);
        assert_eq!(keep, [true, false, true, false, false, false, true]);
        let w = kept_mass(&l, &s, &keep);
        let sum: f64 = w.iter().sum();
        let n = 20_000;
        let mut counts = [0usize; 7];
        for step in 0..n {
            counts[sample_row(&l, &s, uniform(5, 0, step)) as usize] += 1;
        }
        for (i, &c) in counts.iter().enumerate() {
            let p = w[i] / sum;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            let f = c as f64 / n as f64;
            assert!(
                (f - p).abs() <= 4.0 * se,
                "token {i}: frequency {f} vs probability {p} (se {se})"
            );
        }
    }
}
