// matmul_forward, few rows, weight in a texture: out (N, OC) = inp (N, C) @ weight (C, OC) + bias (OC)
//
// matmul_forward_rows4.wgsl (same parameters, plus the texture's width `tw`)
// with the weight held in an rgba32float texture (rgba16float for f16
// storage) instead of a storage buffer: on llvmpipe a storage-buffer load
// is emulated lane by lane (~0.9 GB/s summing a buffer on two threads)
// while textureLoad is
// vectorised (5-9 GB/s), so decoding's GEMVs, which read every weight once
// per token, are bound by how the weight is held (README, "Kernel speed").
// Which holding an adapter gets is measured at start-up (kernels::probe).
// Texel (x, y) holds weight[k, 4j .. 4j+4] at x = j % tw, y = (j / tw) * C + k:
// rows of OC/4 texels, cut into blocks of tw (<= the adapter's
// max_texture_dimension_2d) stacked below each other (weights_to_texture.wgsl
// writes that layout). Each invocation owns one vec4 of output columns for
// up to 4 rows and loads each weight texel once for all of them; the input
// rows come from the workgroup id, the same for every lane, so llvmpipe
// loads them once per step rather than lane by lane (with the row taken
// from global_invocation_id it could not tell, and the input's loads cost
// as much as the weight's). Needs
// C % 4 == 0, OC % 4 == 0, ldo % 4 == 0 and col_off % 4 == 0. The
// accumulation order is matmul_forward_rows4's (bitwise-equal results).
// Element types: st (inp, bias) / ot (output) from the prepended header; the
// texture is read as f32 whatever its format; f32 accumulation.

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
    let j = gid.x;
    let row0 = wg.y * 4u;
    if (j >= oc4 || row0 >= p.n) {
        return;
    }
    let last = p.n - 1u;
    let i0 = min(row0, last) * c4;
    let i1 = min(row0 + 1u, last) * c4;
    let i2 = min(row0 + 2u, last) * c4;
    let i3 = min(row0 + 3u, last) * c4;
    let x = i32(j % p.tw);
    let y0 = i32((j / p.tw) * p.c);
    let b = vec4<f32>(bias[j]);
    let ldo4 = p.ldo / 4u;
    let o = row0 * ldo4 + p.col_off / 4u + j;
    if (p.n == 1u) {
        // One row (decoding one sequence): a quarter of the arithmetic.
        var a = b;
        for (var k4 = 0u; k4 < c4; k4 = k4 + 1u) {
            let y = y0 + i32(4u * k4);
            let w0 = textureLoad(weight, vec2<i32>(x, y), 0);
            let w1 = textureLoad(weight, vec2<i32>(x, y + 1), 0);
            let w2 = textureLoad(weight, vec2<i32>(x, y + 2), 0);
            let w3 = textureLoad(weight, vec2<i32>(x, y + 3), 0);
            let x0 = vec4<f32>(inp[k4]);
            a = a + x0.x * w0 + x0.y * w1 + x0.z * w2 + x0.w * w3;
        }
        out[o] = vec4<ot>(a);
        return;
    }
    var a0 = b;
    var a1 = b;
    var a2 = b;
    var a3 = b;
    for (var k4 = 0u; k4 < c4; k4 = k4 + 1u) {
        let y = y0 + i32(4u * k4);
        let w0 = textureLoad(weight, vec2<i32>(x, y), 0);
        let w1 = textureLoad(weight, vec2<i32>(x, y + 1), 0);
        let w2 = textureLoad(weight, vec2<i32>(x, y + 2), 0);
        let w3 = textureLoad(weight, vec2<i32>(x, y + 3), 0);
        let x0 = vec4<f32>(inp[i0 + k4]);
        let x1 = vec4<f32>(inp[i1 + k4]);
        let x2 = vec4<f32>(inp[i2 + k4]);
        let x3 = vec4<f32>(inp[i3 + k4]);
        a0 = a0 + x0.x * w0 + x0.y * w1 + x0.z * w2 + x0.w * w3;
        a1 = a1 + x1.x * w0 + x1.y * w1 + x1.z * w2 + x1.w * w3;
        a2 = a2 + x2.x * w0 + x2.y * w1 + x2.z * w2 + x2.w * w3;
        a3 = a3 + x3.x * w0 + x3.y * w1 + x3.z * w2 + x3.w * w3;
    }
    out[o] = vec4<ot>(a0);
    if (row0 + 1u < p.n) { out[o + ldo4] = vec4<ot>(a1); }
    if (row0 + 2u < p.n) { out[o + 2u * ldo4] = vec4<ot>(a2); }
    if (row0 + 3u < p.n) { out[o + 3u * ldo4] = vec4<ot>(a3); }
}
