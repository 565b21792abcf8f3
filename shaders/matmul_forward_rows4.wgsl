// matmul_forward, version for few rows: out (N, OC) = inp (N, C) @ weight (C, OC) + bias (OC)
//
// Decoding runs the matmuls on one row per sequence. The other versions
// compute 8 (vec4) or 32 (subgroup) rows per invocation, clamping rows past N
// to the last one, so at N = 1 they do 8-32 times the work; and they are
// bound by loads, not arithmetic (README, "Kernel speed"). Here each
// invocation owns one vec4 of output columns for up to 4 rows: it walks the
// whole of K once, loading each weight vec4 once for all its rows (the
// input rows are the same for every lane of the workgroup). Needs C % 4 ==
// 0, OC % 4 == 0, ldo % 4 == 0 and col_off % 4 == 0, as version 3.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params { n: u32, c: u32, oc: u32, ldo: u32, col_off: u32, }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<ot>>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<st>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<st>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<st>>;
@group(0) @binding(4) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let oc4 = p.oc / 4u;
    let c4 = p.c / 4u;
    let j = gid.x;
    let row0 = gid.y * 4u;
    if (j >= oc4 || row0 >= p.n) {
        return;
    }
    let last = p.n - 1u;
    let i0 = min(row0, last) * c4;
    let i1 = min(row0 + 1u, last) * c4;
    let i2 = min(row0 + 2u, last) * c4;
    let i3 = min(row0 + 3u, last) * c4;
    let b = vec4<f32>(bias[j]);
    var a0 = b;
    var a1 = b;
    var a2 = b;
    var a3 = b;
    for (var k4 = 0u; k4 < c4; k4 = k4 + 1u) {
        let w = 4u * k4 * oc4 + j;
        let w0 = vec4<f32>(weight[w]);
        let w1 = vec4<f32>(weight[w + oc4]);
        let w2 = vec4<f32>(weight[w + 2u * oc4]);
        let w3 = vec4<f32>(weight[w + 3u * oc4]);
        let x0 = vec4<f32>(inp[i0 + k4]);
        let x1 = vec4<f32>(inp[i1 + k4]);
        let x2 = vec4<f32>(inp[i2 + k4]);
        let x3 = vec4<f32>(inp[i3 + k4]);
        a0 = a0 + x0.x * w0 + x0.y * w1 + x0.z * w2 + x0.w * w3;
        a1 = a1 + x1.x * w0 + x1.y * w1 + x1.z * w2 + x1.w * w3;
        a2 = a2 + x2.x * w0 + x2.y * w1 + x2.z * w2 + x2.w * w3;
        a3 = a3 + x3.x * w0 + x3.y * w1 + x3.z * w2 + x3.w * w3;
    }
    let ldo4 = p.ldo / 4u;
    let o = row0 * ldo4 + p.col_off / 4u + j;
    out[o] = vec4<ot>(a0);
    if (row0 + 1u < p.n) { out[o + ldo4] = vec4<ot>(a1); }
    if (row0 + 2u < p.n) { out[o + 2u * ldo4] = vec4<ot>(a2); }
    if (row0 + 3u < p.n) { out[o + 3u * ldo4] = vec4<ot>(a3); }
}
