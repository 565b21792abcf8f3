// matmul_forward, version 3: out (N, OC) = inp (N, C) @ weight (C, OC) + bias (OC)
//
// Needs C % 4 == 0, OC % 4 == 0, ldo % 4 == 0 and col_off % 4 == 0; the host
// falls back to version 1 (matmul_forward.wgsl) otherwise.
// What changed from version 2 (4x4 block per invocation, 8x8 workgroup):
// each invocation now computes an 8-row x 16-column block (8 x 4 vec4
// accumulators) on a 16x4 workgroup. On lavapipe every per-invocation load
// that differs across SIMD lanes is a gather, and gathers, not arithmetic,
// bound this kernel; the bigger block does 8 FMAs per loaded vec4 instead of
// 4, which measured ~2x faster at 512^3 (README, "Kernel speed").
// Loads past the edge are clamped to the last row/column; stores are guarded.
// Written out by hand-unrolling (no arrays) so every accumulator stays in a register.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params { n: u32, c: u32, oc: u32, ldo: u32, col_off: u32, }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<ot>>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<st>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<st>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<st>>;
@group(0) @binding(4) var<storage, read> p: Params;
@compute @workgroup_size(16, 4, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let oc4 = p.oc / 4u; let c4 = p.c / 4u;
    let col4 = gid.x * 4u; let row0 = gid.y * 8u;
    if (col4 >= oc4 || row0 >= p.n) { return; }
    let last = p.n - 1u; let lastc = oc4 - 1u;
    let i0 = min(row0 + 0u, last) * c4;
    let i1 = min(row0 + 1u, last) * c4;
    let i2 = min(row0 + 2u, last) * c4;
    let i3 = min(row0 + 3u, last) * c4;
    let i4 = min(row0 + 4u, last) * c4;
    let i5 = min(row0 + 5u, last) * c4;
    let i6 = min(row0 + 6u, last) * c4;
    let i7 = min(row0 + 7u, last) * c4;
    let cj0 = min(col4 + 0u, lastc);
    let b0 = vec4<f32>(bias[cj0]);
    var acc0_0 = b0;
    var acc1_0 = b0;
    var acc2_0 = b0;
    var acc3_0 = b0;
    var acc4_0 = b0;
    var acc5_0 = b0;
    var acc6_0 = b0;
    var acc7_0 = b0;
    let cj1 = min(col4 + 1u, lastc);
    let b1 = vec4<f32>(bias[cj1]);
    var acc0_1 = b1;
    var acc1_1 = b1;
    var acc2_1 = b1;
    var acc3_1 = b1;
    var acc4_1 = b1;
    var acc5_1 = b1;
    var acc6_1 = b1;
    var acc7_1 = b1;
    let cj2 = min(col4 + 2u, lastc);
    let b2 = vec4<f32>(bias[cj2]);
    var acc0_2 = b2;
    var acc1_2 = b2;
    var acc2_2 = b2;
    var acc3_2 = b2;
    var acc4_2 = b2;
    var acc5_2 = b2;
    var acc6_2 = b2;
    var acc7_2 = b2;
    let cj3 = min(col4 + 3u, lastc);
    let b3 = vec4<f32>(bias[cj3]);
    var acc0_3 = b3;
    var acc1_3 = b3;
    var acc2_3 = b3;
    var acc3_3 = b3;
    var acc4_3 = b3;
    var acc5_3 = b3;
    var acc6_3 = b3;
    var acc7_3 = b3;
    for (var k4 = 0u; k4 < c4; k4 = k4 + 1u) {
        let w = 4u * k4 * oc4;
        let w0_0 = vec4<f32>(weight[w + 0u * oc4 + cj0]);
        let w1_0 = vec4<f32>(weight[w + 1u * oc4 + cj0]);
        let w2_0 = vec4<f32>(weight[w + 2u * oc4 + cj0]);
        let w3_0 = vec4<f32>(weight[w + 3u * oc4 + cj0]);
        let w0_1 = vec4<f32>(weight[w + 0u * oc4 + cj1]);
        let w1_1 = vec4<f32>(weight[w + 1u * oc4 + cj1]);
        let w2_1 = vec4<f32>(weight[w + 2u * oc4 + cj1]);
        let w3_1 = vec4<f32>(weight[w + 3u * oc4 + cj1]);
        let w0_2 = vec4<f32>(weight[w + 0u * oc4 + cj2]);
        let w1_2 = vec4<f32>(weight[w + 1u * oc4 + cj2]);
        let w2_2 = vec4<f32>(weight[w + 2u * oc4 + cj2]);
        let w3_2 = vec4<f32>(weight[w + 3u * oc4 + cj2]);
        let w0_3 = vec4<f32>(weight[w + 0u * oc4 + cj3]);
        let w1_3 = vec4<f32>(weight[w + 1u * oc4 + cj3]);
        let w2_3 = vec4<f32>(weight[w + 2u * oc4 + cj3]);
        let w3_3 = vec4<f32>(weight[w + 3u * oc4 + cj3]);
        let a0 = vec4<f32>(inp[i0 + k4]);
        acc0_0 = acc0_0 + a0.x * w0_0 + a0.y * w1_0 + a0.z * w2_0 + a0.w * w3_0;
        acc0_1 = acc0_1 + a0.x * w0_1 + a0.y * w1_1 + a0.z * w2_1 + a0.w * w3_1;
        acc0_2 = acc0_2 + a0.x * w0_2 + a0.y * w1_2 + a0.z * w2_2 + a0.w * w3_2;
        acc0_3 = acc0_3 + a0.x * w0_3 + a0.y * w1_3 + a0.z * w2_3 + a0.w * w3_3;
        let a1 = vec4<f32>(inp[i1 + k4]);
        acc1_0 = acc1_0 + a1.x * w0_0 + a1.y * w1_0 + a1.z * w2_0 + a1.w * w3_0;
        acc1_1 = acc1_1 + a1.x * w0_1 + a1.y * w1_1 + a1.z * w2_1 + a1.w * w3_1;
        acc1_2 = acc1_2 + a1.x * w0_2 + a1.y * w1_2 + a1.z * w2_2 + a1.w * w3_2;
        acc1_3 = acc1_3 + a1.x * w0_3 + a1.y * w1_3 + a1.z * w2_3 + a1.w * w3_3;
        let a2 = vec4<f32>(inp[i2 + k4]);
        acc2_0 = acc2_0 + a2.x * w0_0 + a2.y * w1_0 + a2.z * w2_0 + a2.w * w3_0;
        acc2_1 = acc2_1 + a2.x * w0_1 + a2.y * w1_1 + a2.z * w2_1 + a2.w * w3_1;
        acc2_2 = acc2_2 + a2.x * w0_2 + a2.y * w1_2 + a2.z * w2_2 + a2.w * w3_2;
        acc2_3 = acc2_3 + a2.x * w0_3 + a2.y * w1_3 + a2.z * w2_3 + a2.w * w3_3;
        let a3 = vec4<f32>(inp[i3 + k4]);
        acc3_0 = acc3_0 + a3.x * w0_0 + a3.y * w1_0 + a3.z * w2_0 + a3.w * w3_0;
        acc3_1 = acc3_1 + a3.x * w0_1 + a3.y * w1_1 + a3.z * w2_1 + a3.w * w3_1;
        acc3_2 = acc3_2 + a3.x * w0_2 + a3.y * w1_2 + a3.z * w2_2 + a3.w * w3_2;
        acc3_3 = acc3_3 + a3.x * w0_3 + a3.y * w1_3 + a3.z * w2_3 + a3.w * w3_3;
        let a4 = vec4<f32>(inp[i4 + k4]);
        acc4_0 = acc4_0 + a4.x * w0_0 + a4.y * w1_0 + a4.z * w2_0 + a4.w * w3_0;
        acc4_1 = acc4_1 + a4.x * w0_1 + a4.y * w1_1 + a4.z * w2_1 + a4.w * w3_1;
        acc4_2 = acc4_2 + a4.x * w0_2 + a4.y * w1_2 + a4.z * w2_2 + a4.w * w3_2;
        acc4_3 = acc4_3 + a4.x * w0_3 + a4.y * w1_3 + a4.z * w2_3 + a4.w * w3_3;
        let a5 = vec4<f32>(inp[i5 + k4]);
        acc5_0 = acc5_0 + a5.x * w0_0 + a5.y * w1_0 + a5.z * w2_0 + a5.w * w3_0;
        acc5_1 = acc5_1 + a5.x * w0_1 + a5.y * w1_1 + a5.z * w2_1 + a5.w * w3_1;
        acc5_2 = acc5_2 + a5.x * w0_2 + a5.y * w1_2 + a5.z * w2_2 + a5.w * w3_2;
        acc5_3 = acc5_3 + a5.x * w0_3 + a5.y * w1_3 + a5.z * w2_3 + a5.w * w3_3;
        let a6 = vec4<f32>(inp[i6 + k4]);
        acc6_0 = acc6_0 + a6.x * w0_0 + a6.y * w1_0 + a6.z * w2_0 + a6.w * w3_0;
        acc6_1 = acc6_1 + a6.x * w0_1 + a6.y * w1_1 + a6.z * w2_1 + a6.w * w3_1;
        acc6_2 = acc6_2 + a6.x * w0_2 + a6.y * w1_2 + a6.z * w2_2 + a6.w * w3_2;
        acc6_3 = acc6_3 + a6.x * w0_3 + a6.y * w1_3 + a6.z * w2_3 + a6.w * w3_3;
        let a7 = vec4<f32>(inp[i7 + k4]);
        acc7_0 = acc7_0 + a7.x * w0_0 + a7.y * w1_0 + a7.z * w2_0 + a7.w * w3_0;
        acc7_1 = acc7_1 + a7.x * w0_1 + a7.y * w1_1 + a7.z * w2_1 + a7.w * w3_1;
        acc7_2 = acc7_2 + a7.x * w0_2 + a7.y * w1_2 + a7.z * w2_2 + a7.w * w3_2;
        acc7_3 = acc7_3 + a7.x * w0_3 + a7.y * w1_3 + a7.z * w2_3 + a7.w * w3_3;
    }
    let ldo4 = p.ldo / 4u; let o = row0 * ldo4 + p.col_off / 4u;
    if (row0 + 0u < p.n && col4 + 0u < oc4) { out[o + 0u * ldo4 + col4 + 0u] = vec4<ot>(acc0_0); }
    if (row0 + 0u < p.n && col4 + 1u < oc4) { out[o + 0u * ldo4 + col4 + 1u] = vec4<ot>(acc0_1); }
    if (row0 + 0u < p.n && col4 + 2u < oc4) { out[o + 0u * ldo4 + col4 + 2u] = vec4<ot>(acc0_2); }
    if (row0 + 0u < p.n && col4 + 3u < oc4) { out[o + 0u * ldo4 + col4 + 3u] = vec4<ot>(acc0_3); }
    if (row0 + 1u < p.n && col4 + 0u < oc4) { out[o + 1u * ldo4 + col4 + 0u] = vec4<ot>(acc1_0); }
    if (row0 + 1u < p.n && col4 + 1u < oc4) { out[o + 1u * ldo4 + col4 + 1u] = vec4<ot>(acc1_1); }
    if (row0 + 1u < p.n && col4 + 2u < oc4) { out[o + 1u * ldo4 + col4 + 2u] = vec4<ot>(acc1_2); }
    if (row0 + 1u < p.n && col4 + 3u < oc4) { out[o + 1u * ldo4 + col4 + 3u] = vec4<ot>(acc1_3); }
    if (row0 + 2u < p.n && col4 + 0u < oc4) { out[o + 2u * ldo4 + col4 + 0u] = vec4<ot>(acc2_0); }
    if (row0 + 2u < p.n && col4 + 1u < oc4) { out[o + 2u * ldo4 + col4 + 1u] = vec4<ot>(acc2_1); }
    if (row0 + 2u < p.n && col4 + 2u < oc4) { out[o + 2u * ldo4 + col4 + 2u] = vec4<ot>(acc2_2); }
    if (row0 + 2u < p.n && col4 + 3u < oc4) { out[o + 2u * ldo4 + col4 + 3u] = vec4<ot>(acc2_3); }
    if (row0 + 3u < p.n && col4 + 0u < oc4) { out[o + 3u * ldo4 + col4 + 0u] = vec4<ot>(acc3_0); }
    if (row0 + 3u < p.n && col4 + 1u < oc4) { out[o + 3u * ldo4 + col4 + 1u] = vec4<ot>(acc3_1); }
    if (row0 + 3u < p.n && col4 + 2u < oc4) { out[o + 3u * ldo4 + col4 + 2u] = vec4<ot>(acc3_2); }
    if (row0 + 3u < p.n && col4 + 3u < oc4) { out[o + 3u * ldo4 + col4 + 3u] = vec4<ot>(acc3_3); }
    if (row0 + 4u < p.n && col4 + 0u < oc4) { out[o + 4u * ldo4 + col4 + 0u] = vec4<ot>(acc4_0); }
    if (row0 + 4u < p.n && col4 + 1u < oc4) { out[o + 4u * ldo4 + col4 + 1u] = vec4<ot>(acc4_1); }
    if (row0 + 4u < p.n && col4 + 2u < oc4) { out[o + 4u * ldo4 + col4 + 2u] = vec4<ot>(acc4_2); }
    if (row0 + 4u < p.n && col4 + 3u < oc4) { out[o + 4u * ldo4 + col4 + 3u] = vec4<ot>(acc4_3); }
    if (row0 + 5u < p.n && col4 + 0u < oc4) { out[o + 5u * ldo4 + col4 + 0u] = vec4<ot>(acc5_0); }
    if (row0 + 5u < p.n && col4 + 1u < oc4) { out[o + 5u * ldo4 + col4 + 1u] = vec4<ot>(acc5_1); }
    if (row0 + 5u < p.n && col4 + 2u < oc4) { out[o + 5u * ldo4 + col4 + 2u] = vec4<ot>(acc5_2); }
    if (row0 + 5u < p.n && col4 + 3u < oc4) { out[o + 5u * ldo4 + col4 + 3u] = vec4<ot>(acc5_3); }
    if (row0 + 6u < p.n && col4 + 0u < oc4) { out[o + 6u * ldo4 + col4 + 0u] = vec4<ot>(acc6_0); }
    if (row0 + 6u < p.n && col4 + 1u < oc4) { out[o + 6u * ldo4 + col4 + 1u] = vec4<ot>(acc6_1); }
    if (row0 + 6u < p.n && col4 + 2u < oc4) { out[o + 6u * ldo4 + col4 + 2u] = vec4<ot>(acc6_2); }
    if (row0 + 6u < p.n && col4 + 3u < oc4) { out[o + 6u * ldo4 + col4 + 3u] = vec4<ot>(acc6_3); }
    if (row0 + 7u < p.n && col4 + 0u < oc4) { out[o + 7u * ldo4 + col4 + 0u] = vec4<ot>(acc7_0); }
    if (row0 + 7u < p.n && col4 + 1u < oc4) { out[o + 7u * ldo4 + col4 + 1u] = vec4<ot>(acc7_1); }
    if (row0 + 7u < p.n && col4 + 2u < oc4) { out[o + 7u * ldo4 + col4 + 2u] = vec4<ot>(acc7_2); }
    if (row0 + 7u < p.n && col4 + 3u < oc4) { out[o + 7u * ldo4 + col4 + 3u] = vec4<ot>(acc7_3); }
}