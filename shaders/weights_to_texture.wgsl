// weights_to_texture: a weight (C, OC) from its storage buffer into the
// float texture matmul_forward_rows4_texture reads: texel (x, y) =
// weight[k, 4j .. 4j+4] at x = j % tw, y = (j / tw) * C + k. One invocation
// per texel; run once, when a decode program first needs the texture.
// Needs OC % 4 == 0.
// Element types: st (weight) from the prepended header; f32 texels stored.
// The host substitutes the half-float format into the texture declaration
// for f16 storage (the format literal appears only there).

struct Params { c: u32, oc: u32, tw: u32, stride: u32, }
@group(0) @binding(0) var tex: texture_storage_2d<rgba32float, write>;
@group(0) @binding(1) var<storage, read> weight: array<vec4<st>>;
@group(0) @binding(2) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * p.stride + gid.x;
    let oc4 = p.oc / 4u;
    if (idx >= p.c * oc4) {
        return;
    }
    let k = idx / oc4;
    let j = idx % oc4;
    textureStore(tex, vec2<i32>(i32(j % p.tw), i32((j / p.tw) * p.c + k)), vec4<f32>(weight[idx]));
}
