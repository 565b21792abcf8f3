// sgd_update: one step of torch.optim.SGD (dampening 0, no nesterov) on one
// tensor, in place.
//
// Twin of cpu::optim::sgd_update. With g = grad * grad_scale (the
// --grad-clip factor, 1 without clipping), in torch's order:
//   g = g + weight_decay * param          (grad.add(param, alpha=wd))
//   if momentum != 0: buf = buf * momentum + g; g = buf
//   param = param + (-lr) * g             (param.add_(g, alpha=-lr))
// buf starts at zero, so the first step's buf is g, as torch's clone.
// The hyperparameters are rewritten per step; len and stride stay fixed.
// The two x + alpha * y are fused multiply-adds, as torch's CPU kernels do.
// One invocation per element.

struct Params {
    len: u32,
    stride: u32, // invocations per row of the dispatch grid
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    grad_scale: f32,
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read_write> buf: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.len) {
        return;
    }
    let theta = param[i];
    var g = fma(p.weight_decay, theta, grad[i] * p.grad_scale);
    if (p.momentum != 0.0) {
        let b = buf[i] * p.momentum + g;
        buf[i] = b;
        g = b;
    }
    param[i] = fma(-p.lr, g, theta);
}
