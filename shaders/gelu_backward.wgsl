// gelu_backward: dinp += dout * gelu_new'(inp)
//
// Twin of cpu::backward::gelu_backward. With u = sqrt(2/pi) (x + 0.044715 x^3):
// gelu_new'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2).
// One invocation per element; gradients accumulate (+=).

struct Params {
    len: u32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<storage, read> p: Params;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.len) {
        return;
    }
    let x = inp[i];
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    // tanh(u) written out, as in gelu_forward (WGSL's tanh can overflow to NaN).
    let e = exp(-2.0 * abs(u));
    let th = sign(u) * (1.0 - e) / (1.0 + e);
    let local = 0.5 * (1.0 + th)
        + 0.5 * x * (1.0 - th * th) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
    dinp[i] = dinp[i] + dout[i] * local;
}
