// matmul_backward_input, version 1: dinp (N, C) += dout (N, OC) @ weight^T
//
// Twin of cpu::backward::matmul_backward_input: the input gradient (dX) of
// out = inp @ weight + bias, weight (C, OC). Separate from the weight
// gradient so that zero-bubble schedules can run dX (I) and dW (W) apart.
// dout may be a column slice of a wider matrix (the LM head's vocabulary
// chunk of dlogits): row stride ldd, first column col_off, as
// matmul_forward's ldo / col_off.
//
// Any shape, plain: one invocation per element of dinp (gid.x = column k,
// gid.y = row i), a dot product over OC in order, then +=.

struct Params {
    n: u32,       // rows of dinp and dout
    c: u32,       // columns of dinp, rows of weight
    oc: u32,      // columns of weight (and of the dout slice)
    ldd: u32,     // row stride of dout, in floats (>= col_off + oc)
    col_off: u32, // first column of dout read
}

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let k = gid.x;
    let i = gid.y;
    if (k >= p.c || i >= p.n) {
        return;
    }
    let d = i * p.ldd + p.col_off;
    let w = k * p.oc;
    var dot = 0.0;
    for (var j = 0u; j < p.oc; j = j + 1u) {
        dot = dot + dout[d + j] * weight[w + j];
    }
    let o = i * p.c + k;
    dinp[o] = dinp[o] + dot;
}
