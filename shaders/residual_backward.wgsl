// residual_backward: da += dout and db += dout, elementwise.
//
// Twin of cpu::backward::residual_backward: out = a + b passes its gradient
// unchanged to both inputs (the residual stream and the branch). da and db
// must be different buffers. One invocation per element; accumulates (+=).

struct Params {
    len: u32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> da: array<f32>;
@group(0) @binding(1) var<storage, read_write> db: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.len) {
        return;
    }
    da[i] = da[i] + dout[i];
    db[i] = db[i] + dout[i];
}
