// matmul_backward_input, version 3: dinp (N, C) += dout[:, col_off..col_off+OC] @ weight (C, OC)^T
//
// The subgroup variant of matmul_backward_input (same parameters and
// bindings as version 2, matmul_backward_input_vec4.wgsl): needs C, OC, ldd
// and col_off to be multiples of 4, the SUBGROUP feature and a subgroup size
// of exactly 8; the host runs version 2 otherwise.
// What changed from version 2 (8-row x 4-column block, every lane loading
// its own rows of dout): matmul_forward_subgroup's scheme with the weight
// read along its rows. Each invocation computes 32 rows x 4 columns of dinp;
// the rows of a workgroup come from workgroup_id.y, so the 8 lanes of a
// subgroup need the same 32 dout rows: per step over OC each lane loads 4 of
// them and subgroupBroadcast hands them to the others, and 4 vec4 of weight
// (its 4 rows k, which are the transposed columns). Per lane: 8 vec4 loads
// per 32 x 4 vec4 dot products, as the forward's 8 per 128 vec4 FMAs
// (version 2: 12 per 32). No transposed copy of the weight is made: the
// transpose is in the indexing.
// Grid: [ceil(C / 256), ceil(N / 32), 1] of 64x1 workgroups.
// No early return: every lane must stay active for subgroupBroadcast;
// out-of-range rows/columns are clamped on load and guarded on store.
// The accumulation order per output is version 2's.
// Written out (no arrays) so the accumulators stay in registers.

struct Params { n: u32, c: u32, oc: u32, ldd: u32, col_off: u32, }
@group(0) @binding(0) var<storage, read_write> dinp: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> p: Params;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) sl: u32) {
    let c4 = p.c / 4u; let oc4 = p.oc / 4u; let ldd4 = p.ldd / 4u; let off4 = p.col_off / 4u;
    let k4 = gid.x; let row0 = wg.y * 32u;
    let last = p.n - 1u;
    let kc = min(k4, c4 - 1u);
    let w0 = (4u * kc + 0u) * oc4;
    let w1 = (4u * kc + 1u) * oc4;
    let w2 = (4u * kc + 2u) * oc4;
    let w3 = (4u * kc + 3u) * oc4;
    let d0 = min(row0 + 0u + sl, last) * ldd4 + off4;
    let d1 = min(row0 + 8u + sl, last) * ldd4 + off4;
    let d2 = min(row0 + 16u + sl, last) * ldd4 + off4;
    let d3 = min(row0 + 24u + sl, last) * ldd4 + off4;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    var acc4 = vec4<f32>(0.0);
    var acc5 = vec4<f32>(0.0);
    var acc6 = vec4<f32>(0.0);
    var acc7 = vec4<f32>(0.0);
    var acc8 = vec4<f32>(0.0);
    var acc9 = vec4<f32>(0.0);
    var acc10 = vec4<f32>(0.0);
    var acc11 = vec4<f32>(0.0);
    var acc12 = vec4<f32>(0.0);
    var acc13 = vec4<f32>(0.0);
    var acc14 = vec4<f32>(0.0);
    var acc15 = vec4<f32>(0.0);
    var acc16 = vec4<f32>(0.0);
    var acc17 = vec4<f32>(0.0);
    var acc18 = vec4<f32>(0.0);
    var acc19 = vec4<f32>(0.0);
    var acc20 = vec4<f32>(0.0);
    var acc21 = vec4<f32>(0.0);
    var acc22 = vec4<f32>(0.0);
    var acc23 = vec4<f32>(0.0);
    var acc24 = vec4<f32>(0.0);
    var acc25 = vec4<f32>(0.0);
    var acc26 = vec4<f32>(0.0);
    var acc27 = vec4<f32>(0.0);
    var acc28 = vec4<f32>(0.0);
    var acc29 = vec4<f32>(0.0);
    var acc30 = vec4<f32>(0.0);
    var acc31 = vec4<f32>(0.0);
    for (var j = 0u; j < oc4; j = j + 1u) {
        let x0 = weight[w0 + j];
        let x1 = weight[w1 + j];
        let x2 = weight[w2 + j];
        let x3 = weight[w3 + j];
        let v0 = dout[d0 + j];
        let v1 = dout[d1 + j];
        let v2 = dout[d2 + j];
        let v3 = dout[d3 + j];
        let a0 = subgroupBroadcast(v0, 0u);
        acc0 = acc0 + vec4<f32>(dot(a0, x0), dot(a0, x1), dot(a0, x2), dot(a0, x3));
        let a1 = subgroupBroadcast(v0, 1u);
        acc1 = acc1 + vec4<f32>(dot(a1, x0), dot(a1, x1), dot(a1, x2), dot(a1, x3));
        let a2 = subgroupBroadcast(v0, 2u);
        acc2 = acc2 + vec4<f32>(dot(a2, x0), dot(a2, x1), dot(a2, x2), dot(a2, x3));
        let a3 = subgroupBroadcast(v0, 3u);
        acc3 = acc3 + vec4<f32>(dot(a3, x0), dot(a3, x1), dot(a3, x2), dot(a3, x3));
        let a4 = subgroupBroadcast(v0, 4u);
        acc4 = acc4 + vec4<f32>(dot(a4, x0), dot(a4, x1), dot(a4, x2), dot(a4, x3));
        let a5 = subgroupBroadcast(v0, 5u);
        acc5 = acc5 + vec4<f32>(dot(a5, x0), dot(a5, x1), dot(a5, x2), dot(a5, x3));
        let a6 = subgroupBroadcast(v0, 6u);
        acc6 = acc6 + vec4<f32>(dot(a6, x0), dot(a6, x1), dot(a6, x2), dot(a6, x3));
        let a7 = subgroupBroadcast(v0, 7u);
        acc7 = acc7 + vec4<f32>(dot(a7, x0), dot(a7, x1), dot(a7, x2), dot(a7, x3));
        let a8 = subgroupBroadcast(v1, 0u);
        acc8 = acc8 + vec4<f32>(dot(a8, x0), dot(a8, x1), dot(a8, x2), dot(a8, x3));
        let a9 = subgroupBroadcast(v1, 1u);
        acc9 = acc9 + vec4<f32>(dot(a9, x0), dot(a9, x1), dot(a9, x2), dot(a9, x3));
        let a10 = subgroupBroadcast(v1, 2u);
        acc10 = acc10 + vec4<f32>(dot(a10, x0), dot(a10, x1), dot(a10, x2), dot(a10, x3));
        let a11 = subgroupBroadcast(v1, 3u);
        acc11 = acc11 + vec4<f32>(dot(a11, x0), dot(a11, x1), dot(a11, x2), dot(a11, x3));
        let a12 = subgroupBroadcast(v1, 4u);
        acc12 = acc12 + vec4<f32>(dot(a12, x0), dot(a12, x1), dot(a12, x2), dot(a12, x3));
        let a13 = subgroupBroadcast(v1, 5u);
        acc13 = acc13 + vec4<f32>(dot(a13, x0), dot(a13, x1), dot(a13, x2), dot(a13, x3));
        let a14 = subgroupBroadcast(v1, 6u);
        acc14 = acc14 + vec4<f32>(dot(a14, x0), dot(a14, x1), dot(a14, x2), dot(a14, x3));
        let a15 = subgroupBroadcast(v1, 7u);
        acc15 = acc15 + vec4<f32>(dot(a15, x0), dot(a15, x1), dot(a15, x2), dot(a15, x3));
        let a16 = subgroupBroadcast(v2, 0u);
        acc16 = acc16 + vec4<f32>(dot(a16, x0), dot(a16, x1), dot(a16, x2), dot(a16, x3));
        let a17 = subgroupBroadcast(v2, 1u);
        acc17 = acc17 + vec4<f32>(dot(a17, x0), dot(a17, x1), dot(a17, x2), dot(a17, x3));
        let a18 = subgroupBroadcast(v2, 2u);
        acc18 = acc18 + vec4<f32>(dot(a18, x0), dot(a18, x1), dot(a18, x2), dot(a18, x3));
        let a19 = subgroupBroadcast(v2, 3u);
        acc19 = acc19 + vec4<f32>(dot(a19, x0), dot(a19, x1), dot(a19, x2), dot(a19, x3));
        let a20 = subgroupBroadcast(v2, 4u);
        acc20 = acc20 + vec4<f32>(dot(a20, x0), dot(a20, x1), dot(a20, x2), dot(a20, x3));
        let a21 = subgroupBroadcast(v2, 5u);
        acc21 = acc21 + vec4<f32>(dot(a21, x0), dot(a21, x1), dot(a21, x2), dot(a21, x3));
        let a22 = subgroupBroadcast(v2, 6u);
        acc22 = acc22 + vec4<f32>(dot(a22, x0), dot(a22, x1), dot(a22, x2), dot(a22, x3));
        let a23 = subgroupBroadcast(v2, 7u);
        acc23 = acc23 + vec4<f32>(dot(a23, x0), dot(a23, x1), dot(a23, x2), dot(a23, x3));
        let a24 = subgroupBroadcast(v3, 0u);
        acc24 = acc24 + vec4<f32>(dot(a24, x0), dot(a24, x1), dot(a24, x2), dot(a24, x3));
        let a25 = subgroupBroadcast(v3, 1u);
        acc25 = acc25 + vec4<f32>(dot(a25, x0), dot(a25, x1), dot(a25, x2), dot(a25, x3));
        let a26 = subgroupBroadcast(v3, 2u);
        acc26 = acc26 + vec4<f32>(dot(a26, x0), dot(a26, x1), dot(a26, x2), dot(a26, x3));
        let a27 = subgroupBroadcast(v3, 3u);
        acc27 = acc27 + vec4<f32>(dot(a27, x0), dot(a27, x1), dot(a27, x2), dot(a27, x3));
        let a28 = subgroupBroadcast(v3, 4u);
        acc28 = acc28 + vec4<f32>(dot(a28, x0), dot(a28, x1), dot(a28, x2), dot(a28, x3));
        let a29 = subgroupBroadcast(v3, 5u);
        acc29 = acc29 + vec4<f32>(dot(a29, x0), dot(a29, x1), dot(a29, x2), dot(a29, x3));
        let a30 = subgroupBroadcast(v3, 6u);
        acc30 = acc30 + vec4<f32>(dot(a30, x0), dot(a30, x1), dot(a30, x2), dot(a30, x3));
        let a31 = subgroupBroadcast(v3, 7u);
        acc31 = acc31 + vec4<f32>(dot(a31, x0), dot(a31, x1), dot(a31, x2), dot(a31, x3));
    }
    if (row0 + 0u < p.n && k4 < c4) { let o = (row0 + 0u) * c4 + k4; dinp[o] = dinp[o] + acc0; }
    if (row0 + 1u < p.n && k4 < c4) { let o = (row0 + 1u) * c4 + k4; dinp[o] = dinp[o] + acc1; }
    if (row0 + 2u < p.n && k4 < c4) { let o = (row0 + 2u) * c4 + k4; dinp[o] = dinp[o] + acc2; }
    if (row0 + 3u < p.n && k4 < c4) { let o = (row0 + 3u) * c4 + k4; dinp[o] = dinp[o] + acc3; }
    if (row0 + 4u < p.n && k4 < c4) { let o = (row0 + 4u) * c4 + k4; dinp[o] = dinp[o] + acc4; }
    if (row0 + 5u < p.n && k4 < c4) { let o = (row0 + 5u) * c4 + k4; dinp[o] = dinp[o] + acc5; }
    if (row0 + 6u < p.n && k4 < c4) { let o = (row0 + 6u) * c4 + k4; dinp[o] = dinp[o] + acc6; }
    if (row0 + 7u < p.n && k4 < c4) { let o = (row0 + 7u) * c4 + k4; dinp[o] = dinp[o] + acc7; }
    if (row0 + 8u < p.n && k4 < c4) { let o = (row0 + 8u) * c4 + k4; dinp[o] = dinp[o] + acc8; }
    if (row0 + 9u < p.n && k4 < c4) { let o = (row0 + 9u) * c4 + k4; dinp[o] = dinp[o] + acc9; }
    if (row0 + 10u < p.n && k4 < c4) { let o = (row0 + 10u) * c4 + k4; dinp[o] = dinp[o] + acc10; }
    if (row0 + 11u < p.n && k4 < c4) { let o = (row0 + 11u) * c4 + k4; dinp[o] = dinp[o] + acc11; }
    if (row0 + 12u < p.n && k4 < c4) { let o = (row0 + 12u) * c4 + k4; dinp[o] = dinp[o] + acc12; }
    if (row0 + 13u < p.n && k4 < c4) { let o = (row0 + 13u) * c4 + k4; dinp[o] = dinp[o] + acc13; }
    if (row0 + 14u < p.n && k4 < c4) { let o = (row0 + 14u) * c4 + k4; dinp[o] = dinp[o] + acc14; }
    if (row0 + 15u < p.n && k4 < c4) { let o = (row0 + 15u) * c4 + k4; dinp[o] = dinp[o] + acc15; }
    if (row0 + 16u < p.n && k4 < c4) { let o = (row0 + 16u) * c4 + k4; dinp[o] = dinp[o] + acc16; }
    if (row0 + 17u < p.n && k4 < c4) { let o = (row0 + 17u) * c4 + k4; dinp[o] = dinp[o] + acc17; }
    if (row0 + 18u < p.n && k4 < c4) { let o = (row0 + 18u) * c4 + k4; dinp[o] = dinp[o] + acc18; }
    if (row0 + 19u < p.n && k4 < c4) { let o = (row0 + 19u) * c4 + k4; dinp[o] = dinp[o] + acc19; }
    if (row0 + 20u < p.n && k4 < c4) { let o = (row0 + 20u) * c4 + k4; dinp[o] = dinp[o] + acc20; }
    if (row0 + 21u < p.n && k4 < c4) { let o = (row0 + 21u) * c4 + k4; dinp[o] = dinp[o] + acc21; }
    if (row0 + 22u < p.n && k4 < c4) { let o = (row0 + 22u) * c4 + k4; dinp[o] = dinp[o] + acc22; }
    if (row0 + 23u < p.n && k4 < c4) { let o = (row0 + 23u) * c4 + k4; dinp[o] = dinp[o] + acc23; }
    if (row0 + 24u < p.n && k4 < c4) { let o = (row0 + 24u) * c4 + k4; dinp[o] = dinp[o] + acc24; }
    if (row0 + 25u < p.n && k4 < c4) { let o = (row0 + 25u) * c4 + k4; dinp[o] = dinp[o] + acc25; }
    if (row0 + 26u < p.n && k4 < c4) { let o = (row0 + 26u) * c4 + k4; dinp[o] = dinp[o] + acc26; }
    if (row0 + 27u < p.n && k4 < c4) { let o = (row0 + 27u) * c4 + k4; dinp[o] = dinp[o] + acc27; }
    if (row0 + 28u < p.n && k4 < c4) { let o = (row0 + 28u) * c4 + k4; dinp[o] = dinp[o] + acc28; }
    if (row0 + 29u < p.n && k4 < c4) { let o = (row0 + 29u) * c4 + k4; dinp[o] = dinp[o] + acc29; }
    if (row0 + 30u < p.n && k4 < c4) { let o = (row0 + 30u) * c4 + k4; dinp[o] = dinp[o] + acc30; }
    if (row0 + 31u < p.n && k4 < c4) { let o = (row0 + 31u) * c4 + k4; dinp[o] = dinp[o] + acc31; }
}
