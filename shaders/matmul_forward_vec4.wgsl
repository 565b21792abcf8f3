// matmul_forward, version 2: out (N, OC) = inp (N, C) @ weight (C, OC) + bias (OC)
//
// Needs C % 4 == 0, OC % 4 == 0, ldo % 4 == 0 and col_off % 4 == 0; the host
// falls back to version 1 (matmul_forward.wgsl) otherwise.
// What changed from version 1: every load is a vec4 (four K values of a row of
// `inp`, four columns of a row of `weight`). On lavapipe this is what pays:
// register blocking without shared memory or barriers (../shared/wgpu-notes.md).
// Each invocation computes a 4x4 block of `out`: rows 4*gid.y .. +4, columns
// 4*gid.x .. +4. Rows past N are clamped for loads and skipped for stores.

struct Params {
    n: u32,       // rows of inp and out
    c: u32,       // inner dimension
    oc: u32,      // columns of weight
    ldo: u32,     // row stride of out, in floats (>= col_off + oc)
    col_off: u32, // first column of out written
}

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<f32>>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let oc4 = p.oc / 4u;
    let c4 = p.c / 4u;
    let col4 = gid.x;
    let row0 = gid.y * 4u;
    if (col4 >= oc4 || row0 >= p.n) {
        return;
    }
    let last = p.n - 1u;
    let i0 = row0 * c4;
    let i1 = min(row0 + 1u, last) * c4;
    let i2 = min(row0 + 2u, last) * c4;
    let i3 = min(row0 + 3u, last) * c4;

    let b = bias[col4];
    var acc0 = b;
    var acc1 = b;
    var acc2 = b;
    var acc3 = b;
    for (var k4 = 0u; k4 < c4; k4 = k4 + 1u) {
        let w = 4u * k4 * oc4 + col4;
        let w0 = weight[w];
        let w1 = weight[w + oc4];
        let w2 = weight[w + 2u * oc4];
        let w3 = weight[w + 3u * oc4];
        let a0 = inp[i0 + k4];
        let a1 = inp[i1 + k4];
        let a2 = inp[i2 + k4];
        let a3 = inp[i3 + k4];
        acc0 = acc0 + a0.x * w0 + a0.y * w1 + a0.z * w2 + a0.w * w3;
        acc1 = acc1 + a1.x * w0 + a1.y * w1 + a1.z * w2 + a1.w * w3;
        acc2 = acc2 + a2.x * w0 + a2.y * w1 + a2.z * w2 + a2.w * w3;
        acc3 = acc3 + a3.x * w0 + a3.y * w1 + a3.z * w2 + a3.w * w3;
    }

    let ldo4 = p.ldo / 4u;
    let o = row0 * ldo4 + p.col_off / 4u + col4;
    out[o] = acc0;
    if (row0 + 1u < p.n) { out[o + ldo4] = acc1; }
    if (row0 + 2u < p.n) { out[o + 2u * ldo4] = acc2; }
    if (row0 + 3u < p.n) { out[o + 3u * ldo4] = acc3; }
}
