// gelu_forward: out = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
//
// GPT-2's `gelu_new` (tanh approximation). One invocation per element.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params {
    len: u32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;
@group(0) @binding(1) var<storage, read> inp: array<st>;
@group(0) @binding(2) var<storage, read> p: Params;

const SQRT_2_OVER_PI: f32 = 0.7978845608028654;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.len) {
        return;
    }
    let x = f32(inp[i]);
    let u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
    // tanh(u) written out: WGSL's tanh overflows to NaN for large |u| on some drivers.
    let e = exp(-2.0 * abs(u));
    let th = sign(u) * (1.0 - e) / (1.0 + e);
    out[i] = ot(0.5 * x * (1.0 + th));
}
