// read_texture: how fast this adapter streams an rgba32float texture
// through textureLoad (kernels::probe; the limit decoding's texture GEMV is
// measured against). Each invocation sums `per` texels and writes the sum.
// Load shapes (`shape`): 0, consecutive invocations on consecutive texels
// of a row, each walking down `per` rows (as the texture GEMV reads); 1, a
// contiguous run of `per` texels along a row per invocation.

struct Params { per: u32, shape: u32, threads: u32, stride: u32, width: u32, }
@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var data: texture_2d<f32>;
@group(0) @binding(2) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.threads) {
        return;
    }
    var acc = vec4<f32>(0.0);
    if (p.shape == 0u) {
        let x = i32(i % p.width);
        let y0 = i32((i / p.width) * p.per);
        for (var k = 0u; k < p.per; k = k + 1u) {
            acc = acc + textureLoad(data, vec2<i32>(x, y0 + i32(k)), 0);
        }
    } else {
        let runs = p.width / p.per;
        let x0 = i32((i % runs) * p.per);
        let y = i32(i / runs);
        for (var k = 0u; k < p.per; k = k + 1u) {
            acc = acc + textureLoad(data, vec2<i32>(x0 + i32(k), y), 0);
        }
    }
    out[i] = acc;
}
