// adamw_update: one step of torch.optim.AdamW on one tensor, in place.
//
// Twin of cpu::optim::adamw_update. With g = grad * grad_scale (grad_scale is
// the --grad-clip factor, 1 without clipping), in torch's order
// (_single_tensor_adam with decoupled weight decay):
//   param *= 1 - lr * weight_decay
//   m = lerp(m, g, 1 - beta1)               (torch's lerp: fused, both branches)
//   v = v * beta2 + ((1 - beta2) * g) * g   (mul_ then addcmul_)
//   denom = sqrt(v) / sqrt(bias_correction2) + eps
//   param += (-(lr / bias_correction1) * m) / denom   (addcdiv_)
// bias_correction{1,2} = 1 - beta{1,2}^step, computed by the host in f64.
// The hyperparameters are rewritten per step; len and stride stay fixed.
// One invocation per element.

struct Params {
    len: u32,
    stride: u32, // invocations per row of the dispatch grid
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2: f32,
    grad_scale: f32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read_write> m: array<f32>;
@group(0) @binding(2) var<storage, read_write> v: array<f32>;
@group(0) @binding(3) var<storage, read> grad: array<f32>;
@group(0) @binding(4) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.len) {
        return;
    }
    let g = grad[i] * p.grad_scale;
    let theta = param[i] * (1.0 - p.lr * p.weight_decay);
    // torch's lerp(self, end, w) as its vectorized CPU kernel computes it:
    // fma(w, end - self, self) for |w| < 0.5, else fma(w - 1, end - self, end).
    let w = 1.0 - p.beta1;
    var mi = m[i];
    if (abs(w) < 0.5) {
        mi = fma(w, g - mi, mi);
    } else {
        mi = fma(w - 1.0, g - mi, g);
    }
    let vi = v[i] * p.beta2 + ((1.0 - p.beta2) * g) * g;
    let denom = sqrt(vi) / sqrt(p.bias_correction2) + p.eps;
    let step_size = p.lr / p.bias_correction1;
    m[i] = mi;
    v[i] = vi;
    param[i] = theta + (-step_size * mi) / denom;
}
