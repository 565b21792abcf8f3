// matmul_forward, few rows, weight in a texture: out (N, OC) = inp (N, C) @ weight (C, OC) + bias (OC)
//
// matmul_forward_rows4.wgsl (same parameters, plus the texture's width `tw`)
// with the weight held in a texture instead of a storage buffer: on
// llvmpipe a storage-buffer load is emulated lane by lane (~0.9 GB/s
// summing a buffer on two threads) while textureLoad is vectorised
// (5-9 GB/s), so decoding's GEMVs, which read every weight once per token,
// are bound by how the weight is held (README, "Kernel speed"). Which
// holding an adapter gets is measured at start-up (kernels::probe).
// A texel holds TEXEL_COLS columns of one row (4 f32 in rgba32float, or 8
// halves packed in rgba32uint for f16 storage: weights_to_texture.wgsl):
// texel (x, y) = weight[k, TEXEL_COLS j ..] at x = j % tw, y = (j / tw) * C + k,
// rows of OC / TEXEL_COLS texels cut into blocks of tw (<= the adapter's
// max_texture_dimension_2d) stacked below each other. Each invocation owns
// one texel's columns (one or two vec4s) for up to 4 rows and loads each
// weight texel once for all of them; the input rows come from the
// workgroup id, the same for every lane, so llvmpipe loads them once per
// step rather than lane by lane (with the row taken from
// global_invocation_id it could not tell, and the input's loads cost as
// much as the weight's). Needs C % 4 == 0, OC % 4 == 0, ldo % 4 == 0 and
// col_off % 4 == 0. With 4 columns a texel the accumulation order is
// matmul_forward_rows4's (bitwise-equal results).
// Element types: st (inp, bias) / ot (output), TEXEL_COLS, texel_lo/hi and
// the texture's sample type (f32; u32 for f16) from the prepended header;
// f32 accumulation.

struct Params { n: u32, c: u32, oc: u32, ldo: u32, col_off: u32, tw: u32, }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<ot>>;
@group(0) @binding(1) var<storage, read> inp: array<vec4<st>>;
@group(0) @binding(2) var weight: texture_2d<f32>;
@group(0) @binding(3) var<storage, read> bias: array<vec4<st>>;
@group(0) @binding(4) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {
    let oc4 = p.oc / 4u;
    let c4 = p.c / 4u;
    let per = TEXEL_COLS / 4u; // output vec4s per texel: 1 or 2
    let octx = (oc4 + per - 1u) / per;
    let j = gid.x;
    let row0 = wg.y * 4u;
    if (j >= octx || row0 >= p.n) {
        return;
    }
    // The second vec4 of a texel: with 8 columns a texel, unless the row
    // ends at the first.
    let two = per == 2u && j * 2u + 1u < oc4;
    let last = p.n - 1u;
    let i0 = min(row0, last) * c4;
    let i1 = min(row0 + 1u, last) * c4;
    let i2 = min(row0 + 2u, last) * c4;
    let i3 = min(row0 + 3u, last) * c4;
    let x = i32(j % p.tw);
    let y0 = i32((j / p.tw) * p.c);
    let jb = j * per;
    let b = vec4<f32>(bias[jb]);
    var bh = vec4<f32>(0.0);
    if (two) {
        bh = vec4<f32>(bias[jb + 1u]);
    }
    let ldo4 = p.ldo / 4u;
    let o = row0 * ldo4 + p.col_off / 4u + jb;
    if (p.n == 1u) {
        // One row (decoding one sequence): a quarter of the arithmetic.
        var a = b;
        var ah = bh;
        for (var k4 = 0u; k4 < c4; k4 = k4 + 1u) {
            let y = y0 + i32(4u * k4);
            let t0 = textureLoad(weight, vec2<i32>(x, y), 0);
            let t1 = textureLoad(weight, vec2<i32>(x, y + 1), 0);
            let t2 = textureLoad(weight, vec2<i32>(x, y + 2), 0);
            let t3 = textureLoad(weight, vec2<i32>(x, y + 3), 0);
            let x0 = vec4<f32>(inp[k4]);
            a = a + x0.x * texel_lo(t0) + x0.y * texel_lo(t1) + x0.z * texel_lo(t2) + x0.w * texel_lo(t3);
            if (per == 2u) {
                ah = ah + x0.x * texel_hi(t0) + x0.y * texel_hi(t1) + x0.z * texel_hi(t2) + x0.w * texel_hi(t3);
            }
        }
        out[o] = vec4<ot>(a);
        if (two) {
            out[o + 1u] = vec4<ot>(ah);
        }
        return;
    }
    var a0 = b;
    var a1 = b;
    var a2 = b;
    var a3 = b;
    var h0 = bh;
    var h1 = bh;
    var h2 = bh;
    var h3 = bh;
    for (var k4 = 0u; k4 < c4; k4 = k4 + 1u) {
        let y = y0 + i32(4u * k4);
        let t0 = textureLoad(weight, vec2<i32>(x, y), 0);
        let t1 = textureLoad(weight, vec2<i32>(x, y + 1), 0);
        let t2 = textureLoad(weight, vec2<i32>(x, y + 2), 0);
        let t3 = textureLoad(weight, vec2<i32>(x, y + 3), 0);
        let w0 = texel_lo(t0);
        let w1 = texel_lo(t1);
        let w2 = texel_lo(t2);
        let w3 = texel_lo(t3);
        let x0 = vec4<f32>(inp[i0 + k4]);
        let x1 = vec4<f32>(inp[i1 + k4]);
        let x2 = vec4<f32>(inp[i2 + k4]);
        let x3 = vec4<f32>(inp[i3 + k4]);
        a0 = a0 + x0.x * w0 + x0.y * w1 + x0.z * w2 + x0.w * w3;
        a1 = a1 + x1.x * w0 + x1.y * w1 + x1.z * w2 + x1.w * w3;
        a2 = a2 + x2.x * w0 + x2.y * w1 + x2.z * w2 + x2.w * w3;
        a3 = a3 + x3.x * w0 + x3.y * w1 + x3.z * w2 + x3.w * w3;
        if (per == 2u) {
            let v0 = texel_hi(t0);
            let v1 = texel_hi(t1);
            let v2 = texel_hi(t2);
            let v3 = texel_hi(t3);
            h0 = h0 + x0.x * v0 + x0.y * v1 + x0.z * v2 + x0.w * v3;
            h1 = h1 + x1.x * v0 + x1.y * v1 + x1.z * v2 + x1.w * v3;
            h2 = h2 + x2.x * v0 + x2.y * v1 + x2.z * v2 + x2.w * v3;
            h3 = h3 + x3.x * v0 + x3.y * v1 + x3.z * v2 + x3.w * v3;
        }
    }
    out[o] = vec4<ot>(a0);
    if (row0 + 1u < p.n) { out[o + ldo4] = vec4<ot>(a1); }
    if (row0 + 2u < p.n) { out[o + 2u * ldo4] = vec4<ot>(a2); }
    if (row0 + 3u < p.n) { out[o + 3u * ldo4] = vec4<ot>(a3); }
    if (two) {
        out[o + 1u] = vec4<ot>(h0);
        if (row0 + 1u < p.n) { out[o + 1u + ldo4] = vec4<ot>(h1); }
        if (row0 + 2u < p.n) { out[o + 1u + 2u * ldo4] = vec4<ot>(h2); }
        if (row0 + 3u < p.n) { out[o + 1u + 3u * ldo4] = vec4<ot>(h3); }
    }
}
