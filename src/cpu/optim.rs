//! Plain CPU reference of the optimizer steps and of the gradient norm: the
//! twins of the `adamw_update`, `sgd_update` and `sumsq_partials` kernels.
//!
//! The steps follow PyTorch (`torch.optim.AdamW`, `torch.optim.SGD` with
//! dampening 0 and no Nesterov), operation by operation in torch's order, in
//! f32, fusing a multiply-add where torch's vectorized CPU kernels do (`lerp`,
//! `add(other, alpha)`). They take a step's settings as the model states
//! them ([`crate::model::optim`]), as the kernels do. Shapes are checked with
//! `assert!`: a mismatch is a caller bug.

use crate::model::optim::{AdamWStep, SgdStep};

/// torch's `lerp(start, end, weight)` for f32 as its vectorized CPU kernel
/// computes it: `fma(weight, end - start, start)` when |weight| < 0.5, else
/// `fma(weight - 1, end - start, end)`.
fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    if weight.abs() < 0.5 {
        weight.mul_add(end - start, start)
    } else {
        (weight - 1.0).mul_add(end - start, end)
    }
}

/// One step of `torch.optim.AdamW` (its single-tensor path), in place. With
/// g = grads * grad_scale:
/// params *= 1 - lr * wd; m = lerp(m, g, 1 - b1); v = v * b2 + ((1 - b2) * g) * g;
/// params += (-(lr / bc1) * m) / (sqrt(v) / sqrt(bc2) + eps).
pub fn adamw_update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    h: &AdamWStep,
) {
    let len = params.len();
    assert_eq!(grads.len(), len, "adamw_update: grads");
    assert_eq!(m.len(), len, "adamw_update: m");
    assert_eq!(v.len(), len, "adamw_update: v");
    let decay = 1.0 - h.lr * h.weight_decay;
    let w = 1.0 - h.beta1;
    let step_size = h.lr / h.bias_correction1;
    let bc2_sqrt = h.bias_correction2.sqrt();
    for i in 0..len {
        let g = grads[i] * h.grad_scale;
        let theta = params[i] * decay;
        m[i] = lerp(m[i], g, w);
        v[i] = v[i] * h.beta2 + ((1.0 - h.beta2) * g) * g;
        let denom = v[i].sqrt() / bc2_sqrt + h.eps;
        params[i] = theta + (-step_size * m[i]) / denom;
    }
}

/// One step of `torch.optim.SGD` (dampening 0, no Nesterov), in place. With
/// g = grads * grad_scale + wd * params: when momentum != 0,
/// buf = buf * momentum + g and g = buf (buf starts at zero, which equals
/// torch's first-step clone of g); then params += -lr * g. The two
/// `x + alpha * y` are fused multiply-adds, as in torch.
pub fn sgd_update(params: &mut [f32], grads: &[f32], buf: &mut [f32], h: &SgdStep) {
    let len = params.len();
    assert_eq!(grads.len(), len, "sgd_update: grads");
    assert_eq!(buf.len(), len, "sgd_update: momentum buffer");
    for i in 0..len {
        let theta = params[i];
        // grad.add(param, alpha=wd); buf.mul_(momentum).add_(g); param.add_(g, alpha=-lr)
        let mut g = h.weight_decay.mul_add(theta, grads[i] * h.grad_scale);
        if h.momentum != 0.0 {
            buf[i] = buf[i] * h.momentum + g;
            g = buf[i];
        }
        params[i] = (-h.lr).mul_add(g, theta);
    }
}

/// The sum of squares of `x`, in f64 (the squared L2 norm, for the global
/// gradient norm of gradient clipping).
pub fn sumsq(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64) * (v as f64)).sum()
}
