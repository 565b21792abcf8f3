// weights_to_texture: a weight (C, OC) from its storage buffer into the
// texture matmul_forward_rows4_texture reads. A texel holds TEXEL_COLS
// consecutive columns of one row: 4 f32 in an rgba32float texel, or, for
// f16 storage, 8 halves packed in an rgba32uint texel (llvmpipe fetches a
// texel at about the same rate whatever it holds, so 8 weights a fetch
// read twice as many weights per second as 4; rgba16float would carry 4).
// Texel (x, y) = weight[k, TEXEL_COLS j ..] at x = j % tw,
// y = (j / tw) * C + k. One invocation per texel; run once, when a decode
// program first needs the texture. Needs OC % 4 == 0; with 8 columns a
// texel and OC % 8 == 4, the last texel of a row holds 4 and zeros.
// Element types: st (weight), and TEXEL_COLS, texel_pack and the texture
// format (rgba32float; rgba32uint for f16, substituted by the host) from
// the prepended header.

struct Params { c: u32, oc: u32, tw: u32, stride: u32, }
@group(0) @binding(0) var tex: texture_storage_2d<rgba32float, write>;
@group(0) @binding(1) var<storage, read> weight: array<vec4<st>>;
@group(0) @binding(2) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * p.stride + gid.x;
    let oc4 = p.oc / 4u;
    let per = TEXEL_COLS / 4u; // vec4s per texel: 1 or 2
    let octx = (oc4 + per - 1u) / per; // texels per row
    if (idx >= p.c * octx) {
        return;
    }
    let k = idx / octx;
    let j = idx % octx;
    let first = k * oc4 + j * per;
    let lo = vec4<f32>(weight[first]);
    var hi = vec4<f32>(0.0);
    if (per == 2u && j * 2u + 1u < oc4) {
        hi = vec4<f32>(weight[first + 1u]);
    }
    textureStore(tex, vec2<i32>(i32(j % p.tw), i32((j / p.tw) * p.c + k)), texel_pack(lo, hi));
}
