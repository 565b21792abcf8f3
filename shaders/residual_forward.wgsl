// residual_forward: out = a + b, elementwise. One invocation per element.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params {
    len: u32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;
@group(0) @binding(1) var<storage, read> a: array<st>;
@group(0) @binding(2) var<storage, read> b: array<st>;
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.len) {
        return;
    }
    out[i] = ot(f32(a[i]) + f32(b[i]));
}
