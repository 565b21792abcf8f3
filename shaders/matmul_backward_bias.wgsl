// matmul_backward_bias: dbias (OC) += column sums of dout (N, OC)
//
// Twin of cpu::backward::matmul_backward_bias. dout may be a column slice of
// a wider matrix (row stride ldd, first column col_off). One invocation per
// column, summing the rows in order, then +=.

struct Params {
    n: u32,       // rows of dout
    oc: u32,      // columns of dbias (and of the dout slice)
    ldd: u32,     // row stride of dout, in floats (>= col_off + oc)
    col_off: u32, // first column of dout read
    stride: u32,  // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(1) var<storage, read> dout: array<f32>;
@group(0) @binding(2) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let j = gid.y * p.stride + gid.x;
    if (j >= p.oc) {
        return;
    }
    var sum = 0.0;
    for (var i = 0u; i < p.n; i = i + 1u) {
        sum = sum + dout[i * p.ldd + p.col_off + j];
    }
    dbias[j] = dbias[j] + sum;
}
