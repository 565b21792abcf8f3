// matmul_forward, version 1: out (N, OC) = inp (N, C) @ weight (C, OC) + bias (OC)
//
// Any shape: scalar loads, bounds-checked. Each invocation computes a 4x4
// block of `out` (rows 4*gid.y .. +4, columns 4*gid.x .. +4) held in four
// vec4 registers, so every loaded value is used four times. Loads past the
// edge are clamped to the last row/column; stores past it are skipped.
// Version 2 (matmul_forward_vec4.wgsl) adds vec4 loads for aligned shapes.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params {
    n: u32,       // rows of inp and out
    c: u32,       // inner dimension
    oc: u32,      // columns of weight
    ldo: u32,     // row stride of out, in floats (>= col_off + oc)
    col_off: u32, // first column of out written
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;
@group(0) @binding(1) var<storage, read> inp: array<st>;
@group(0) @binding(2) var<storage, read> weight: array<st>;
@group(0) @binding(3) var<storage, read> bias: array<st>;
@group(0) @binding(4) var<storage, read> p: Params;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col0 = gid.x * 4u;
    let row0 = gid.y * 4u;
    if (col0 >= p.oc || row0 >= p.n) {
        return;
    }
    let lastr = p.n - 1u;
    let lastc = p.oc - 1u;
    let i0 = row0 * p.c;
    let i1 = min(row0 + 1u, lastr) * p.c;
    let i2 = min(row0 + 2u, lastr) * p.c;
    let i3 = min(row0 + 3u, lastr) * p.c;
    let j0 = col0;
    let j1 = min(col0 + 1u, lastc);
    let j2 = min(col0 + 2u, lastc);
    let j3 = min(col0 + 3u, lastc);

    let b = vec4<f32>(f32(bias[j0]), f32(bias[j1]), f32(bias[j2]), f32(bias[j3]));
    var acc0 = b;
    var acc1 = b;
    var acc2 = b;
    var acc3 = b;
    for (var k = 0u; k < p.c; k = k + 1u) {
        let wr = k * p.oc;
        let w = vec4<f32>(f32(weight[wr + j0]), f32(weight[wr + j1]), f32(weight[wr + j2]), f32(weight[wr + j3]));
        acc0 = acc0 + f32(inp[i0 + k]) * w;
        acc1 = acc1 + f32(inp[i1 + k]) * w;
        acc2 = acc2 + f32(inp[i2 + k]) * w;
        acc3 = acc3 + f32(inp[i3 + k]) * w;
    }

    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var r = 0u; r < 4u; r = r + 1u) {
        let row = row0 + r;
        if (row >= p.n) { break; }
        let o = row * p.ldo + p.col_off + col0;
        let a = accs[r];
        out[o] = ot(a.x);
        if (col0 + 1u < p.oc) { out[o + 1u] = ot(a.y); }
        if (col0 + 2u < p.oc) { out[o + 2u] = ot(a.z); }
        if (col0 + 3u < p.oc) { out[o + 3u] = ot(a.w); }
    }
}
