//! RoPE's inverse frequencies, computed on the host as transformers computes
//! them (`modeling_rope_utils`: `_compute_default_rope_parameters`,
//! `_compute_linear_scaling_rope_parameters`, `_compute_llama3_parameters`):
//! the same f32 operations in the same order, so the frequencies, and the
//! angles `inv_freq[i] * position` made from them, are transformers' own.
//! The kernels ([`crate::kernels::rope_forward`]) and the CPU reference
//! ([`crate::cpu::llama::rope_forward`]) both take the result as an input.
//!
//! How torch evaluates the Python: `base ** t` is `torch.pow` in f32 with
//! `base` converted to f32; `x / tensor` is `tensor.reciprocal() * x`; a
//! Python float meeting an f32 tensor is converted to f32 first; arithmetic
//! on plain Python numbers stays in f64. Checked against transformers'
//! values (scripts/make_llama_ops_fixture.py, tests/cpu_llama.rs): bit for
//! bit, but for torch's pow (see [`rope_inv_freq`]'s helper) being 1 ulp off
//! once in 256 values.

/// The `rope_scaling` of a Llama-family `config.json`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "rope_type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// No `rope_scaling` (or `rope_type: "default"`): Llama 2, Qwen2,
    /// Mistral, SmolLM, TinyLlama.
    None,
    /// `rope_type: "linear"`: every frequency divided by `factor`.
    Linear { factor: f64 },
    /// `rope_type: "llama3"` (Llama 3.1, 3.2): low frequencies divided by
    /// `factor`, high ones kept, a smooth blend between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: usize,
    },
}

/// inv_freq (head_dim / 2): the inverse frequency of each rotated pair, for
/// `rope_theta` = `theta` and the model's scaling. `head_dim` must be even.
pub fn rope_inv_freq(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f32> {
    assert!(
        head_dim > 0 && head_dim.is_multiple_of(2),
        "rope_inv_freq: head_dim {head_dim} is not even"
    );
    // _compute_default_rope_parameters:
    // 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    let base = theta as f32;
    let dim = head_dim as f32;
    let inv_freq: Vec<f32> = (0..head_dim / 2)
        .map(|i| {
            let exponent = (2 * i) as f32 / dim;
            1.0 / pow_f32(base, exponent)
        })
        .collect();
    match *scaling {
        RopeScaling::None => inv_freq,
        // inv_freq /= factor
        RopeScaling::Linear { factor } => inv_freq.iter().map(|f| f / factor as f32).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_context_len,
        } => {
            // Python floats, then compared with f32 tensors.
            let low_freq_wavelen = (old_context_len as f64 / low_freq_factor) as f32;
            let high_freq_wavelen = (old_context_len as f64 / high_freq_factor) as f32;
            let two_pi = (2.0 * std::f64::consts::PI) as f32;
            let factor = factor as f32;
            let low = low_freq_factor as f32;
            let span = (high_freq_factor - low_freq_factor) as f32;
            inv_freq
                .iter()
                .map(|&f| {
                    // wavelen = 2 * math.pi / inv_freq
                    let wavelen = (1.0 / f) * two_pi;
                    // torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
                    let llama = if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        f
                    };
                    // (old_context_len / wavelen - low_freq_factor) / (high - low)
                    let smooth = ((1.0 / wavelen) * old_context_len as f32 - low) / span;
                    // (1 - smooth) * inv_freq_llama / factor + smooth * inv_freq_llama
                    let smoothed = (1.0 - smooth) * llama / factor + smooth * llama;
                    // ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
                    if (high_freq_wavelen..=low_freq_wavelen).contains(&wavelen) {
                        smoothed
                    } else {
                        llama
                    }
                })
                .collect()
        }
    }
}

/// base ** exponent in f32, correctly rounded (computed in f64). torch's
/// f32 pow is SLEEF's powf (within 1 ulp) where it vectorises, glibc's powf
/// elsewhere: on the 256 reference values of tests/data/llama-ops the two
/// differ once, by 1 ulp (tests/cpu_llama.rs).
fn pow_f32(base: f32, exponent: f32) -> f32 {
    (base as f64).powf(exponent as f64) as f32
}
