//! Rotary position embeddings' frequencies, as transformers computes them
//! (`_compute_default_rope_parameters`, `_compute_linear_scaling_rope_parameters`,
//! `_compute_llama3_parameters`), in f32 as it does: the devices and the CPU
//! reference rotate q and k by `pos · inv_freq[i]` with these.

use crate::model::config::{Rope, RopeScaling};

/// The (hd / 2) inverse frequencies of a head of width `head_dim`.
pub fn inv_freq(head_dim: usize, rope: &Rope) -> Vec<f32> {
    let base = rope.theta as f32;
    let d = head_dim as f32;
    let default: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / d))
        .collect();
    match rope.scaling {
        RopeScaling::None => default,
        RopeScaling::Linear { factor } => default.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old,
        } => {
            let (factor, low, high, old) = (
                factor as f32,
                low_freq_factor as f32,
                high_freq_factor as f32,
                old as f32,
            );
            let (low_wavelen, high_wavelen) = (old / low, old / high);
            default
                .iter()
                .map(|&f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    let scaled = if wavelen > low_wavelen { f / factor } else { f };
                    let medium = !(wavelen < high_wavelen) && !(wavelen > low_wavelen);
                    if !medium {
                        return scaled;
                    }
                    let smooth = (old / wavelen - low) / (high - low);
                    (1.0 - smooth) * scaled / factor + smooth * scaled
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_frequencies_fall_geometrically() {
        let r = Rope {
            theta: 10000.0,
            scaling: RopeScaling::None,
        };
        let f = inv_freq(8, &r);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 0.1).abs() < 1e-7 && (f[3] - 0.001).abs() < 1e-9, "{f:?}");
    }

    #[test]
    fn llama3_keeps_high_frequencies_and_divides_low_ones() {
        let base = Rope {
            theta: 500000.0,
            scaling: RopeScaling::None,
        };
        let scaled = Rope {
            scaling: RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
            ..base.clone()
        };
        let (a, b) = (inv_freq(64, &base), inv_freq(64, &scaled));
        assert_eq!(a[0], b[0]);
        assert!((b[31] - a[31] / 32.0).abs() <= 1e-6 * a[31]);
    }
}
