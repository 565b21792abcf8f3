// matmul_backward_weight, version 1: dweight (C, OC) += inp^T (C, N) @ dout (N, OC)
//
// Twin of cpu::backward::matmul_backward_weight: the weight gradient (dW) of
// out = inp @ weight + bias. Separate from the input gradient so that
// zero-bubble schedules can defer it (the W action). dout may be a column
// slice of a wider matrix (row stride ldd, first column col_off): for the LM
// head, dweight is one vocabulary chunk of the transposed token table's
// gradient, dwte_t (C, vlen).
//
// Any shape, plain: one invocation per element of dweight (gid.x = column j,
// gid.y = row k), a sum over the N rows in order, then +=.

struct Params {
    n: u32,       // rows of inp and dout
    c: u32,       // columns of inp, rows of dweight
    oc: u32,      // columns of dweight (and of the dout slice)
    ldd: u32,     // row stride of dout, in floats (>= col_off + oc)
    col_off: u32, // first column of dout read
}

@group(0) @binding(0) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> inp: array<f32>;
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.x;
    let k = gid.y;
    if (j >= p.oc || k >= p.c) {
        return;
    }
    var sum = 0.0;
    for (var i = 0u; i < p.n; i = i + 1u) {
        sum = sum + inp[i * p.c + k] * dout[i * p.ldd + p.col_off + j];
    }
    let o = k * p.oc + j;
    dweight[o] = dweight[o] + sum;
}
