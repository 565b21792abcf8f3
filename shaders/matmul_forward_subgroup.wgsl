// matmul_forward, version 4: out (N, OC) = inp (N, C) @ weight (C, OC) + bias (OC)
//
// Needs C % 4 == 0, OC % 4 == 0, ldo % 4 == 0 and col_off % 4 == 0, the
// SUBGROUP feature and a subgroup size of exactly 8 (lavapipe's 256-bit SIMD);
// the host uses version 3 (matmul_forward_vec4.wgsl) otherwise.
// What changed from version 3 (8x16 block, every lane loading its own rows):
// llvmpipe turns every storage load into a per-lane loop, so the number of
// vec4 loads per lane is what bounds the kernel. Here each invocation computes
// 32 rows x 4 columns; all rows of a workgroup come from workgroup_id.y, so
// the 8 lanes of a subgroup need the same 32 input rows: each lane loads 4 of
// them per k4 step and subgroupBroadcast hands them to the others. Per lane:
// 8 vec4 loads per 128 vec4 FMAs instead of 24 per 128 (measured ~2x at 512^3).
// Grid: [ceil(OC / 256), ceil(N / 32), 1] of 64x1 workgroups.
// No early return: every lane must stay active for subgroupBroadcast;
// out-of-range rows/columns are clamped on load and guarded on store.
// The accumulation order per output is version 3's (bitwise-equal results).
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.
struct Params { n: u32, c: u32, oc: u32, ldo: u32, col_off: u32, }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<ot>>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<st>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<st>>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<st>>;
@group(0) @binding(4) var<storage, read> p: Params;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) sl: u32) {
    let oc4 = p.oc / 4u; let c4 = p.c / 4u;
    let col4 = gid.x * 1u; let row0 = wg.y * 32u;
    let last = p.n - 1u; let lastc = oc4 - 1u;
    let li0 = min(row0 + 0u + sl, last) * c4;
    let li1 = min(row0 + 8u + sl, last) * c4;
    let li2 = min(row0 + 16u + sl, last) * c4;
    let li3 = min(row0 + 24u + sl, last) * c4;
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
    var acc8_0 = b0;
    var acc9_0 = b0;
    var acc10_0 = b0;
    var acc11_0 = b0;
    var acc12_0 = b0;
    var acc13_0 = b0;
    var acc14_0 = b0;
    var acc15_0 = b0;
    var acc16_0 = b0;
    var acc17_0 = b0;
    var acc18_0 = b0;
    var acc19_0 = b0;
    var acc20_0 = b0;
    var acc21_0 = b0;
    var acc22_0 = b0;
    var acc23_0 = b0;
    var acc24_0 = b0;
    var acc25_0 = b0;
    var acc26_0 = b0;
    var acc27_0 = b0;
    var acc28_0 = b0;
    var acc29_0 = b0;
    var acc30_0 = b0;
    var acc31_0 = b0;
    for (var k4 = 0u; k4 < c4; k4 = k4 + 1u) {
        let w = 4u * k4 * oc4; let kk = i32(4u * k4);
        let w0_0 = vec4<f32>(weight[w + 0u * oc4 + cj0]);
        let w1_0 = vec4<f32>(weight[w + 1u * oc4 + cj0]);
        let w2_0 = vec4<f32>(weight[w + 2u * oc4 + cj0]);
        let w3_0 = vec4<f32>(weight[w + 3u * oc4 + cj0]);
        let v0 = vec4<f32>(inp[li0 + k4]);
        let v1 = vec4<f32>(inp[li1 + k4]);
        let v2 = vec4<f32>(inp[li2 + k4]);
        let v3 = vec4<f32>(inp[li3 + k4]);
        let a0 = subgroupBroadcast(v0, 0u);
        acc0_0 = acc0_0 + a0.x * w0_0 + a0.y * w1_0 + a0.z * w2_0 + a0.w * w3_0;
        let a1 = subgroupBroadcast(v0, 1u);
        acc1_0 = acc1_0 + a1.x * w0_0 + a1.y * w1_0 + a1.z * w2_0 + a1.w * w3_0;
        let a2 = subgroupBroadcast(v0, 2u);
        acc2_0 = acc2_0 + a2.x * w0_0 + a2.y * w1_0 + a2.z * w2_0 + a2.w * w3_0;
        let a3 = subgroupBroadcast(v0, 3u);
        acc3_0 = acc3_0 + a3.x * w0_0 + a3.y * w1_0 + a3.z * w2_0 + a3.w * w3_0;
        let a4 = subgroupBroadcast(v0, 4u);
        acc4_0 = acc4_0 + a4.x * w0_0 + a4.y * w1_0 + a4.z * w2_0 + a4.w * w3_0;
        let a5 = subgroupBroadcast(v0, 5u);
        acc5_0 = acc5_0 + a5.x * w0_0 + a5.y * w1_0 + a5.z * w2_0 + a5.w * w3_0;
        let a6 = subgroupBroadcast(v0, 6u);
        acc6_0 = acc6_0 + a6.x * w0_0 + a6.y * w1_0 + a6.z * w2_0 + a6.w * w3_0;
        let a7 = subgroupBroadcast(v0, 7u);
        acc7_0 = acc7_0 + a7.x * w0_0 + a7.y * w1_0 + a7.z * w2_0 + a7.w * w3_0;
        let a8 = subgroupBroadcast(v1, 0u);
        acc8_0 = acc8_0 + a8.x * w0_0 + a8.y * w1_0 + a8.z * w2_0 + a8.w * w3_0;
        let a9 = subgroupBroadcast(v1, 1u);
        acc9_0 = acc9_0 + a9.x * w0_0 + a9.y * w1_0 + a9.z * w2_0 + a9.w * w3_0;
        let a10 = subgroupBroadcast(v1, 2u);
        acc10_0 = acc10_0 + a10.x * w0_0 + a10.y * w1_0 + a10.z * w2_0 + a10.w * w3_0;
        let a11 = subgroupBroadcast(v1, 3u);
        acc11_0 = acc11_0 + a11.x * w0_0 + a11.y * w1_0 + a11.z * w2_0 + a11.w * w3_0;
        let a12 = subgroupBroadcast(v1, 4u);
        acc12_0 = acc12_0 + a12.x * w0_0 + a12.y * w1_0 + a12.z * w2_0 + a12.w * w3_0;
        let a13 = subgroupBroadcast(v1, 5u);
        acc13_0 = acc13_0 + a13.x * w0_0 + a13.y * w1_0 + a13.z * w2_0 + a13.w * w3_0;
        let a14 = subgroupBroadcast(v1, 6u);
        acc14_0 = acc14_0 + a14.x * w0_0 + a14.y * w1_0 + a14.z * w2_0 + a14.w * w3_0;
        let a15 = subgroupBroadcast(v1, 7u);
        acc15_0 = acc15_0 + a15.x * w0_0 + a15.y * w1_0 + a15.z * w2_0 + a15.w * w3_0;
        let a16 = subgroupBroadcast(v2, 0u);
        acc16_0 = acc16_0 + a16.x * w0_0 + a16.y * w1_0 + a16.z * w2_0 + a16.w * w3_0;
        let a17 = subgroupBroadcast(v2, 1u);
        acc17_0 = acc17_0 + a17.x * w0_0 + a17.y * w1_0 + a17.z * w2_0 + a17.w * w3_0;
        let a18 = subgroupBroadcast(v2, 2u);
        acc18_0 = acc18_0 + a18.x * w0_0 + a18.y * w1_0 + a18.z * w2_0 + a18.w * w3_0;
        let a19 = subgroupBroadcast(v2, 3u);
        acc19_0 = acc19_0 + a19.x * w0_0 + a19.y * w1_0 + a19.z * w2_0 + a19.w * w3_0;
        let a20 = subgroupBroadcast(v2, 4u);
        acc20_0 = acc20_0 + a20.x * w0_0 + a20.y * w1_0 + a20.z * w2_0 + a20.w * w3_0;
        let a21 = subgroupBroadcast(v2, 5u);
        acc21_0 = acc21_0 + a21.x * w0_0 + a21.y * w1_0 + a21.z * w2_0 + a21.w * w3_0;
        let a22 = subgroupBroadcast(v2, 6u);
        acc22_0 = acc22_0 + a22.x * w0_0 + a22.y * w1_0 + a22.z * w2_0 + a22.w * w3_0;
        let a23 = subgroupBroadcast(v2, 7u);
        acc23_0 = acc23_0 + a23.x * w0_0 + a23.y * w1_0 + a23.z * w2_0 + a23.w * w3_0;
        let a24 = subgroupBroadcast(v3, 0u);
        acc24_0 = acc24_0 + a24.x * w0_0 + a24.y * w1_0 + a24.z * w2_0 + a24.w * w3_0;
        let a25 = subgroupBroadcast(v3, 1u);
        acc25_0 = acc25_0 + a25.x * w0_0 + a25.y * w1_0 + a25.z * w2_0 + a25.w * w3_0;
        let a26 = subgroupBroadcast(v3, 2u);
        acc26_0 = acc26_0 + a26.x * w0_0 + a26.y * w1_0 + a26.z * w2_0 + a26.w * w3_0;
        let a27 = subgroupBroadcast(v3, 3u);
        acc27_0 = acc27_0 + a27.x * w0_0 + a27.y * w1_0 + a27.z * w2_0 + a27.w * w3_0;
        let a28 = subgroupBroadcast(v3, 4u);
        acc28_0 = acc28_0 + a28.x * w0_0 + a28.y * w1_0 + a28.z * w2_0 + a28.w * w3_0;
        let a29 = subgroupBroadcast(v3, 5u);
        acc29_0 = acc29_0 + a29.x * w0_0 + a29.y * w1_0 + a29.z * w2_0 + a29.w * w3_0;
        let a30 = subgroupBroadcast(v3, 6u);
        acc30_0 = acc30_0 + a30.x * w0_0 + a30.y * w1_0 + a30.z * w2_0 + a30.w * w3_0;
        let a31 = subgroupBroadcast(v3, 7u);
        acc31_0 = acc31_0 + a31.x * w0_0 + a31.y * w1_0 + a31.z * w2_0 + a31.w * w3_0;
    }
    let ldo4 = p.ldo / 4u; let o = row0 * ldo4 + p.col_off / 4u;
    if (row0 + 0u < p.n && col4 + 0u < oc4) { out[o + 0u * ldo4 + col4 + 0u] = vec4<ot>(acc0_0); }
    if (row0 + 1u < p.n && col4 + 0u < oc4) { out[o + 1u * ldo4 + col4 + 0u] = vec4<ot>(acc1_0); }
    if (row0 + 2u < p.n && col4 + 0u < oc4) { out[o + 2u * ldo4 + col4 + 0u] = vec4<ot>(acc2_0); }
    if (row0 + 3u < p.n && col4 + 0u < oc4) { out[o + 3u * ldo4 + col4 + 0u] = vec4<ot>(acc3_0); }
    if (row0 + 4u < p.n && col4 + 0u < oc4) { out[o + 4u * ldo4 + col4 + 0u] = vec4<ot>(acc4_0); }
    if (row0 + 5u < p.n && col4 + 0u < oc4) { out[o + 5u * ldo4 + col4 + 0u] = vec4<ot>(acc5_0); }
    if (row0 + 6u < p.n && col4 + 0u < oc4) { out[o + 6u * ldo4 + col4 + 0u] = vec4<ot>(acc6_0); }
    if (row0 + 7u < p.n && col4 + 0u < oc4) { out[o + 7u * ldo4 + col4 + 0u] = vec4<ot>(acc7_0); }
    if (row0 + 8u < p.n && col4 + 0u < oc4) { out[o + 8u * ldo4 + col4 + 0u] = vec4<ot>(acc8_0); }
    if (row0 + 9u < p.n && col4 + 0u < oc4) { out[o + 9u * ldo4 + col4 + 0u] = vec4<ot>(acc9_0); }
    if (row0 + 10u < p.n && col4 + 0u < oc4) { out[o + 10u * ldo4 + col4 + 0u] = vec4<ot>(acc10_0); }
    if (row0 + 11u < p.n && col4 + 0u < oc4) { out[o + 11u * ldo4 + col4 + 0u] = vec4<ot>(acc11_0); }
    if (row0 + 12u < p.n && col4 + 0u < oc4) { out[o + 12u * ldo4 + col4 + 0u] = vec4<ot>(acc12_0); }
    if (row0 + 13u < p.n && col4 + 0u < oc4) { out[o + 13u * ldo4 + col4 + 0u] = vec4<ot>(acc13_0); }
    if (row0 + 14u < p.n && col4 + 0u < oc4) { out[o + 14u * ldo4 + col4 + 0u] = vec4<ot>(acc14_0); }
    if (row0 + 15u < p.n && col4 + 0u < oc4) { out[o + 15u * ldo4 + col4 + 0u] = vec4<ot>(acc15_0); }
    if (row0 + 16u < p.n && col4 + 0u < oc4) { out[o + 16u * ldo4 + col4 + 0u] = vec4<ot>(acc16_0); }
    if (row0 + 17u < p.n && col4 + 0u < oc4) { out[o + 17u * ldo4 + col4 + 0u] = vec4<ot>(acc17_0); }
    if (row0 + 18u < p.n && col4 + 0u < oc4) { out[o + 18u * ldo4 + col4 + 0u] = vec4<ot>(acc18_0); }
    if (row0 + 19u < p.n && col4 + 0u < oc4) { out[o + 19u * ldo4 + col4 + 0u] = vec4<ot>(acc19_0); }
    if (row0 + 20u < p.n && col4 + 0u < oc4) { out[o + 20u * ldo4 + col4 + 0u] = vec4<ot>(acc20_0); }
    if (row0 + 21u < p.n && col4 + 0u < oc4) { out[o + 21u * ldo4 + col4 + 0u] = vec4<ot>(acc21_0); }
    if (row0 + 22u < p.n && col4 + 0u < oc4) { out[o + 22u * ldo4 + col4 + 0u] = vec4<ot>(acc22_0); }
    if (row0 + 23u < p.n && col4 + 0u < oc4) { out[o + 23u * ldo4 + col4 + 0u] = vec4<ot>(acc23_0); }
    if (row0 + 24u < p.n && col4 + 0u < oc4) { out[o + 24u * ldo4 + col4 + 0u] = vec4<ot>(acc24_0); }
    if (row0 + 25u < p.n && col4 + 0u < oc4) { out[o + 25u * ldo4 + col4 + 0u] = vec4<ot>(acc25_0); }
    if (row0 + 26u < p.n && col4 + 0u < oc4) { out[o + 26u * ldo4 + col4 + 0u] = vec4<ot>(acc26_0); }
    if (row0 + 27u < p.n && col4 + 0u < oc4) { out[o + 27u * ldo4 + col4 + 0u] = vec4<ot>(acc27_0); }
    if (row0 + 28u < p.n && col4 + 0u < oc4) { out[o + 28u * ldo4 + col4 + 0u] = vec4<ot>(acc28_0); }
    if (row0 + 29u < p.n && col4 + 0u < oc4) { out[o + 29u * ldo4 + col4 + 0u] = vec4<ot>(acc29_0); }
    if (row0 + 30u < p.n && col4 + 0u < oc4) { out[o + 30u * ldo4 + col4 + 0u] = vec4<ot>(acc30_0); }
    if (row0 + 31u < p.n && col4 + 0u < oc4) { out[o + 31u * ldo4 + col4 + 0u] = vec4<ot>(acc31_0); }
}