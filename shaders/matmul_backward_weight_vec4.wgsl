// matmul_backward_weight, version 2: dweight (C, OC) += inp (N, C)^T @ dout[:, col_off..col_off+OC]
//
// The aligned variant of matmul_backward_weight.wgsl (same parameters): needs
// C, OC, ldd and col_off to be multiples of 4; the host falls back to
// version 1 otherwise. Each invocation owns a 4-row x 16-column block of
// dweight (16 vec4 accumulators) on a 16x4 workgroup and walks the N rows in
// order: per row one vec4 of inp (its 4 rows k of dweight) and 4 vec4 of
// dout, 16 vec4 FMAs. Version 1 (one invocation per element) loads two
// scalars per FMA, each a gather on lavapipe.
// Loads past the last column are clamped; stores are guarded.
// Written out by hand-unrolling (no arrays) so the accumulators stay in registers.

struct Params { n: u32, c: u32, oc: u32, ldd: u32, col_off: u32, }
@group(0) @binding(0) var<storage, read_write> dweight: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> p: Params;
@compute @workgroup_size(16, 4, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = p.c / 4u; let oc4 = p.oc / 4u; let ldd4 = p.ldd / 4u; let off4 = p.col_off / 4u;
    let j0 = gid.x * 4u; let k4 = gid.y;
    if (j0 >= oc4 || k4 >= c4) { return; }
    let lastj = oc4 - 1u;
    let q0 = min(j0 + 0u, lastj) + off4;
    let q1 = min(j0 + 1u, lastj) + off4;
    let q2 = min(j0 + 2u, lastj) + off4;
    let q3 = min(j0 + 3u, lastj) + off4;
    var a0_0 = vec4<f32>(0.0);
    var a0_1 = vec4<f32>(0.0);
    var a0_2 = vec4<f32>(0.0);
    var a0_3 = vec4<f32>(0.0);
    var a1_0 = vec4<f32>(0.0);
    var a1_1 = vec4<f32>(0.0);
    var a1_2 = vec4<f32>(0.0);
    var a1_3 = vec4<f32>(0.0);
    var a2_0 = vec4<f32>(0.0);
    var a2_1 = vec4<f32>(0.0);
    var a2_2 = vec4<f32>(0.0);
    var a2_3 = vec4<f32>(0.0);
    var a3_0 = vec4<f32>(0.0);
    var a3_1 = vec4<f32>(0.0);
    var a3_2 = vec4<f32>(0.0);
    var a3_3 = vec4<f32>(0.0);
    for (var i = 0u; i < p.n; i = i + 1u) {
        let x = inp[i * c4 + k4];
        let base = i * ldd4;
        let y0 = dout[base + q0];
        let y1 = dout[base + q1];
        let y2 = dout[base + q2];
        let y3 = dout[base + q3];
        a0_0 = a0_0 + x.x * y0;
        a0_1 = a0_1 + x.x * y1;
        a0_2 = a0_2 + x.x * y2;
        a0_3 = a0_3 + x.x * y3;
        a1_0 = a1_0 + x.y * y0;
        a1_1 = a1_1 + x.y * y1;
        a1_2 = a1_2 + x.y * y2;
        a1_3 = a1_3 + x.y * y3;
        a2_0 = a2_0 + x.z * y0;
        a2_1 = a2_1 + x.z * y1;
        a2_2 = a2_2 + x.z * y2;
        a2_3 = a2_3 + x.z * y3;
        a3_0 = a3_0 + x.w * y0;
        a3_1 = a3_1 + x.w * y1;
        a3_2 = a3_2 + x.w * y2;
        a3_3 = a3_3 + x.w * y3;
    }
    if (j0 + 0u < oc4) { let o = (4u * k4 + 0u) * oc4 + j0 + 0u; dweight[o] = dweight[o] + a0_0; }
    if (j0 + 1u < oc4) { let o = (4u * k4 + 0u) * oc4 + j0 + 1u; dweight[o] = dweight[o] + a0_1; }
    if (j0 + 2u < oc4) { let o = (4u * k4 + 0u) * oc4 + j0 + 2u; dweight[o] = dweight[o] + a0_2; }
    if (j0 + 3u < oc4) { let o = (4u * k4 + 0u) * oc4 + j0 + 3u; dweight[o] = dweight[o] + a0_3; }
    if (j0 + 0u < oc4) { let o = (4u * k4 + 1u) * oc4 + j0 + 0u; dweight[o] = dweight[o] + a1_0; }
    if (j0 + 1u < oc4) { let o = (4u * k4 + 1u) * oc4 + j0 + 1u; dweight[o] = dweight[o] + a1_1; }
    if (j0 + 2u < oc4) { let o = (4u * k4 + 1u) * oc4 + j0 + 2u; dweight[o] = dweight[o] + a1_2; }
    if (j0 + 3u < oc4) { let o = (4u * k4 + 1u) * oc4 + j0 + 3u; dweight[o] = dweight[o] + a1_3; }
    if (j0 + 0u < oc4) { let o = (4u * k4 + 2u) * oc4 + j0 + 0u; dweight[o] = dweight[o] + a2_0; }
    if (j0 + 1u < oc4) { let o = (4u * k4 + 2u) * oc4 + j0 + 1u; dweight[o] = dweight[o] + a2_1; }
    if (j0 + 2u < oc4) { let o = (4u * k4 + 2u) * oc4 + j0 + 2u; dweight[o] = dweight[o] + a2_2; }
    if (j0 + 3u < oc4) { let o = (4u * k4 + 2u) * oc4 + j0 + 3u; dweight[o] = dweight[o] + a2_3; }
    if (j0 + 0u < oc4) { let o = (4u * k4 + 3u) * oc4 + j0 + 0u; dweight[o] = dweight[o] + a3_0; }
    if (j0 + 1u < oc4) { let o = (4u * k4 + 3u) * oc4 + j0 + 1u; dweight[o] = dweight[o] + a3_1; }
    if (j0 + 2u < oc4) { let o = (4u * k4 + 3u) * oc4 + j0 + 2u; dweight[o] = dweight[o] + a3_2; }
    if (j0 + 3u < oc4) { let o = (4u * k4 + 3u) * oc4 + j0 + 3u; dweight[o] = dweight[o] + a3_3; }
}
