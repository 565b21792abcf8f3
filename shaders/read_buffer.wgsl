// read_buffer: how fast this adapter streams a storage buffer (the limit
// the bandwidth-bound kernels are measured against; kernels::probe). Each
// invocation sums `per` vec4s and writes the sum, so no read can be
// optimised away. Load shapes (`shape`): 0, a contiguous chunk per
// invocation; 1, consecutive invocations on consecutive vec4s (each
// invocation strides by the number of invocations).

struct Params { per: u32, shape: u32, threads: u32, stride: u32, }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> data: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.threads) {
        return;
    }
    var acc = vec4<f32>(0.0);
    if (p.shape == 0u) {
        let base = i * p.per;
        for (var k = 0u; k < p.per; k = k + 1u) {
            acc = acc + data[base + k];
        }
    } else {
        for (var k = 0u; k < p.per; k = k + 1u) {
            acc = acc + data[k * p.threads + i];
        }
    }
    out[i] = acc;
}
