// matmul_backward_input, version 2: dinp (N, C) += dout[:, col_off..col_off+OC] @ weight (C, OC)^T
//
// The aligned variant of matmul_backward_input.wgsl (same parameters): needs
// C, OC, ldd and col_off to be multiples of 4; the host falls back to
// version 1 otherwise. As matmul_forward_vec4 does for the forward, each
// invocation computes a register block, here 8 rows x 4 columns of dinp (8
// vec4 accumulators), on a 16x4 workgroup: per step over OC it loads 4 vec4
// of weight (its 4 rows k) and 8 vec4 of dout and does 32 vec4 dot products.
// On lavapipe, per-lane loads are gathers, and this does 8x fewer per FMA
// than version 1 (one invocation per element), which is what bounds it.
// Loads past the last row are clamped; stores are guarded.
// Written out by hand-unrolling (no arrays) so the accumulators stay in registers.

struct Params { n: u32, c: u32, oc: u32, ldd: u32, col_off: u32, }
@group(0) @binding(0) var<storage, read_write> dinp: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> dout: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> p: Params;
@compute @workgroup_size(16, 4, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c4 = p.c / 4u; let oc4 = p.oc / 4u; let ldd4 = p.ldd / 4u; let off4 = p.col_off / 4u;
    let k4 = gid.x; let row0 = gid.y * 8u;
    if (k4 >= c4 || row0 >= p.n) { return; }
    let last = p.n - 1u;
    let w0 = (4u * k4 + 0u) * oc4;
    let w1 = (4u * k4 + 1u) * oc4;
    let w2 = (4u * k4 + 2u) * oc4;
    let w3 = (4u * k4 + 3u) * oc4;
    let d0 = min(row0 + 0u, last) * ldd4 + off4;
    let d1 = min(row0 + 1u, last) * ldd4 + off4;
    let d2 = min(row0 + 2u, last) * ldd4 + off4;
    let d3 = min(row0 + 3u, last) * ldd4 + off4;
    let d4 = min(row0 + 4u, last) * ldd4 + off4;
    let d5 = min(row0 + 5u, last) * ldd4 + off4;
    let d6 = min(row0 + 6u, last) * ldd4 + off4;
    let d7 = min(row0 + 7u, last) * ldd4 + off4;
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    var a4 = vec4<f32>(0.0);
    var a5 = vec4<f32>(0.0);
    var a6 = vec4<f32>(0.0);
    var a7 = vec4<f32>(0.0);
    for (var j = 0u; j < oc4; j = j + 1u) {
        let x0 = weight[w0 + j];
        let x1 = weight[w1 + j];
        let x2 = weight[w2 + j];
        let x3 = weight[w3 + j];
        let y0 = dout[d0 + j];
        a0 = a0 + vec4<f32>(dot(y0, x0), dot(y0, x1), dot(y0, x2), dot(y0, x3));
        let y1 = dout[d1 + j];
        a1 = a1 + vec4<f32>(dot(y1, x0), dot(y1, x1), dot(y1, x2), dot(y1, x3));
        let y2 = dout[d2 + j];
        a2 = a2 + vec4<f32>(dot(y2, x0), dot(y2, x1), dot(y2, x2), dot(y2, x3));
        let y3 = dout[d3 + j];
        a3 = a3 + vec4<f32>(dot(y3, x0), dot(y3, x1), dot(y3, x2), dot(y3, x3));
        let y4 = dout[d4 + j];
        a4 = a4 + vec4<f32>(dot(y4, x0), dot(y4, x1), dot(y4, x2), dot(y4, x3));
        let y5 = dout[d5 + j];
        a5 = a5 + vec4<f32>(dot(y5, x0), dot(y5, x1), dot(y5, x2), dot(y5, x3));
        let y6 = dout[d6 + j];
        a6 = a6 + vec4<f32>(dot(y6, x0), dot(y6, x1), dot(y6, x2), dot(y6, x3));
        let y7 = dout[d7 + j];
        a7 = a7 + vec4<f32>(dot(y7, x0), dot(y7, x1), dot(y7, x2), dot(y7, x3));
    }
    if (row0 + 0u < p.n) { let o = (row0 + 0u) * c4 + k4; dinp[o] = dinp[o] + a0; }
    if (row0 + 1u < p.n) { let o = (row0 + 1u) * c4 + k4; dinp[o] = dinp[o] + a1; }
    if (row0 + 2u < p.n) { let o = (row0 + 2u) * c4 + k4; dinp[o] = dinp[o] + a2; }
    if (row0 + 3u < p.n) { let o = (row0 + 3u) * c4 + k4; dinp[o] = dinp[o] + a3; }
    if (row0 + 4u < p.n) { let o = (row0 + 4u) * c4 + k4; dinp[o] = dinp[o] + a4; }
    if (row0 + 5u < p.n) { let o = (row0 + 5u) * c4 + k4; dinp[o] = dinp[o] + a5; }
    if (row0 + 6u < p.n) { let o = (row0 + 6u) * c4 + k4; dinp[o] = dinp[o] + a6; }
    if (row0 + 7u < p.n) { let o = (row0 + 7u) * c4 + k4; dinp[o] = dinp[o] + a7; }
}
