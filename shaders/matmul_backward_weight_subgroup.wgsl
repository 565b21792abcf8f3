// matmul_backward_weight, version 3: dweight (C, OC) += inp (N, C)^T @ dout[:, col_off..col_off+OC]
//
// The subgroup variant of matmul_backward_weight (same parameters and
// bindings as version 2, matmul_backward_weight_vec4.wgsl): needs C, OC,
// ldd and col_off to be multiples of 4, the SUBGROUP feature and a subgroup
// size of exactly 8; the host runs version 2 otherwise.
// What changed from version 2 (4-row x 16-column block, 5 vec4 loads per 16
// vec4 FMAs): matmul_forward_subgroup's scheme with the reduction running
// over the N rows. Each invocation owns 32 rows (channels k of inp) x 4
// columns of dweight; the rows of a workgroup come from workgroup_id.y, so
// the 8 lanes of a subgroup need the same 32 channels of each inp row: per
// row i each lane loads one vec4 of them (channels k0 + 4 lane .. + 4) and
// subgroupBroadcast hands it to the others, plus its own vec4 of dout. Per
// lane: 2 vec4 loads per 32 vec4 FMAs, the forward's ratio (8 per 128).
// No transposed copy of inp is made: the transpose is in the indexing.
// Grid: [ceil(OC / 256), ceil(C / 32), 1] of 64x1 workgroups.
// No early return: every lane must stay active for subgroupBroadcast;
// out-of-range rows/columns are clamped on load and guarded on store.
// Each output sums its N rows in order, as version 2 and the CPU twin do.
// Written out (no arrays) so the accumulators stay in registers.

struct Params { n: u32, c: u32, oc: u32, ldd: u32, col_off: u32, }
@group(0) @binding(0) var<storage, read_write> dweight: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> inp: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> p: Params;
@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>, @builtin(subgroup_invocation_id) sl: u32) {
    let c4 = p.c / 4u; let oc4 = p.oc / 4u; let ldd4 = p.ldd / 4u; let off4 = p.col_off / 4u;
    let j4 = gid.x; let k0 = wg.y * 32u;
    let jc = min(j4, oc4 - 1u) + off4;
    let xk = min(wg.y * 8u + sl, c4 - 1u);
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
    for (var i = 0u; i < p.n; i = i + 1u) {
        let y = dout[i * ldd4 + jc];
        let x = inp[i * c4 + xk];
        let b0 = subgroupBroadcast(x, 0u);
        acc0 = acc0 + b0.x * y;
        acc1 = acc1 + b0.y * y;
        acc2 = acc2 + b0.z * y;
        acc3 = acc3 + b0.w * y;
        let b1 = subgroupBroadcast(x, 1u);
        acc4 = acc4 + b1.x * y;
        acc5 = acc5 + b1.y * y;
        acc6 = acc6 + b1.z * y;
        acc7 = acc7 + b1.w * y;
        let b2 = subgroupBroadcast(x, 2u);
        acc8 = acc8 + b2.x * y;
        acc9 = acc9 + b2.y * y;
        acc10 = acc10 + b2.z * y;
        acc11 = acc11 + b2.w * y;
        let b3 = subgroupBroadcast(x, 3u);
        acc12 = acc12 + b3.x * y;
        acc13 = acc13 + b3.y * y;
        acc14 = acc14 + b3.z * y;
        acc15 = acc15 + b3.w * y;
        let b4 = subgroupBroadcast(x, 4u);
        acc16 = acc16 + b4.x * y;
        acc17 = acc17 + b4.y * y;
        acc18 = acc18 + b4.z * y;
        acc19 = acc19 + b4.w * y;
        let b5 = subgroupBroadcast(x, 5u);
        acc20 = acc20 + b5.x * y;
        acc21 = acc21 + b5.y * y;
        acc22 = acc22 + b5.z * y;
        acc23 = acc23 + b5.w * y;
        let b6 = subgroupBroadcast(x, 6u);
        acc24 = acc24 + b6.x * y;
        acc25 = acc25 + b6.y * y;
        acc26 = acc26 + b6.z * y;
        acc27 = acc27 + b6.w * y;
        let b7 = subgroupBroadcast(x, 7u);
        acc28 = acc28 + b7.x * y;
        acc29 = acc29 + b7.y * y;
        acc30 = acc30 + b7.z * y;
        acc31 = acc31 + b7.w * y;
    }
    if (k0 + 0u < p.c && j4 < oc4) { let o = (k0 + 0u) * oc4 + j4; dweight[o] = dweight[o] + acc0; }
    if (k0 + 1u < p.c && j4 < oc4) { let o = (k0 + 1u) * oc4 + j4; dweight[o] = dweight[o] + acc1; }
    if (k0 + 2u < p.c && j4 < oc4) { let o = (k0 + 2u) * oc4 + j4; dweight[o] = dweight[o] + acc2; }
    if (k0 + 3u < p.c && j4 < oc4) { let o = (k0 + 3u) * oc4 + j4; dweight[o] = dweight[o] + acc3; }
    if (k0 + 4u < p.c && j4 < oc4) { let o = (k0 + 4u) * oc4 + j4; dweight[o] = dweight[o] + acc4; }
    if (k0 + 5u < p.c && j4 < oc4) { let o = (k0 + 5u) * oc4 + j4; dweight[o] = dweight[o] + acc5; }
    if (k0 + 6u < p.c && j4 < oc4) { let o = (k0 + 6u) * oc4 + j4; dweight[o] = dweight[o] + acc6; }
    if (k0 + 7u < p.c && j4 < oc4) { let o = (k0 + 7u) * oc4 + j4; dweight[o] = dweight[o] + acc7; }
    if (k0 + 8u < p.c && j4 < oc4) { let o = (k0 + 8u) * oc4 + j4; dweight[o] = dweight[o] + acc8; }
    if (k0 + 9u < p.c && j4 < oc4) { let o = (k0 + 9u) * oc4 + j4; dweight[o] = dweight[o] + acc9; }
    if (k0 + 10u < p.c && j4 < oc4) { let o = (k0 + 10u) * oc4 + j4; dweight[o] = dweight[o] + acc10; }
    if (k0 + 11u < p.c && j4 < oc4) { let o = (k0 + 11u) * oc4 + j4; dweight[o] = dweight[o] + acc11; }
    if (k0 + 12u < p.c && j4 < oc4) { let o = (k0 + 12u) * oc4 + j4; dweight[o] = dweight[o] + acc12; }
    if (k0 + 13u < p.c && j4 < oc4) { let o = (k0 + 13u) * oc4 + j4; dweight[o] = dweight[o] + acc13; }
    if (k0 + 14u < p.c && j4 < oc4) { let o = (k0 + 14u) * oc4 + j4; dweight[o] = dweight[o] + acc14; }
    if (k0 + 15u < p.c && j4 < oc4) { let o = (k0 + 15u) * oc4 + j4; dweight[o] = dweight[o] + acc15; }
    if (k0 + 16u < p.c && j4 < oc4) { let o = (k0 + 16u) * oc4 + j4; dweight[o] = dweight[o] + acc16; }
    if (k0 + 17u < p.c && j4 < oc4) { let o = (k0 + 17u) * oc4 + j4; dweight[o] = dweight[o] + acc17; }
    if (k0 + 18u < p.c && j4 < oc4) { let o = (k0 + 18u) * oc4 + j4; dweight[o] = dweight[o] + acc18; }
    if (k0 + 19u < p.c && j4 < oc4) { let o = (k0 + 19u) * oc4 + j4; dweight[o] = dweight[o] + acc19; }
    if (k0 + 20u < p.c && j4 < oc4) { let o = (k0 + 20u) * oc4 + j4; dweight[o] = dweight[o] + acc20; }
    if (k0 + 21u < p.c && j4 < oc4) { let o = (k0 + 21u) * oc4 + j4; dweight[o] = dweight[o] + acc21; }
    if (k0 + 22u < p.c && j4 < oc4) { let o = (k0 + 22u) * oc4 + j4; dweight[o] = dweight[o] + acc22; }
    if (k0 + 23u < p.c && j4 < oc4) { let o = (k0 + 23u) * oc4 + j4; dweight[o] = dweight[o] + acc23; }
    if (k0 + 24u < p.c && j4 < oc4) { let o = (k0 + 24u) * oc4 + j4; dweight[o] = dweight[o] + acc24; }
    if (k0 + 25u < p.c && j4 < oc4) { let o = (k0 + 25u) * oc4 + j4; dweight[o] = dweight[o] + acc25; }
    if (k0 + 26u < p.c && j4 < oc4) { let o = (k0 + 26u) * oc4 + j4; dweight[o] = dweight[o] + acc26; }
    if (k0 + 27u < p.c && j4 < oc4) { let o = (k0 + 27u) * oc4 + j4; dweight[o] = dweight[o] + acc27; }
    if (k0 + 28u < p.c && j4 < oc4) { let o = (k0 + 28u) * oc4 + j4; dweight[o] = dweight[o] + acc28; }
    if (k0 + 29u < p.c && j4 < oc4) { let o = (k0 + 29u) * oc4 + j4; dweight[o] = dweight[o] + acc29; }
    if (k0 + 30u < p.c && j4 < oc4) { let o = (k0 + 30u) * oc4 + j4; dweight[o] = dweight[o] + acc30; }
    if (k0 + 31u < p.c && j4 < oc4) { let o = (k0 + 31u) * oc4 + j4; dweight[o] = dweight[o] + acc31; }
}
