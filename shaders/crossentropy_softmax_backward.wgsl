// crossentropy_softmax_backward: from logits and targets straight to dlogits.
//
// Twin of cpu::backward::crossentropy_softmax_backward. Per row with target y
// (rows whose target is NO_TARGET = 0xffffffff are skipped: loss 0, no
// gradient), with p = softmax(logits[row]):
//   losses[row] = -ln p[y]                       (written)
//   dlogits[row, j] += scale * (p[j] - [j == y])  (accumulated)
// scale is 1 / (predictions in the whole batch), so microbatches sum to the
// batch's mean loss gradient. One invocation per row, three passes over it
// (max, sum of exponentials, gradient), as the CPU reference.
//
// Rows are `ld` floats long (ld >= v): on the GPU the logits are (N, Vp), V
// rounded up to a multiple of 4 for the aligned matmul. Only the first v
// columns of a row enter the softmax; the padding columns of dlogits are
// neither read nor written.

struct Params {
    n: u32,      // rows
    v: u32,      // vocabulary (columns in the softmax)
    ld: u32,     // row stride of logits and dlogits, in floats (>= v)
    scale: f32,  // d loss / d losses[row]
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(1) var<storage, read_write> losses: array<f32>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;
@group(0) @binding(4) var<storage, read> p: Params;

const NO_TARGET: u32 = 0xffffffffu;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * p.stride + gid.x;
    if (row >= p.n) {
        return;
    }
    let y = targets[row];
    if (y == NO_TARGET) {
        losses[row] = 0.0;
        return;
    }
    let base = row * p.ld;
    var maxval = -3.0e38;
    for (var j = 0u; j < p.v; j = j + 1u) {
        maxval = max(maxval, logits[base + j]);
    }
    var sum = 0.0;
    for (var j = 0u; j < p.v; j = j + 1u) {
        sum = sum + exp(logits[base + j] - maxval);
    }
    losses[row] = log(sum) - (logits[base + y] - maxval);
    let inv = 1.0 / sum;
    for (var j = 0u; j < p.v; j = j + 1u) {
        var pj = exp(logits[base + j] - maxval) * inv;
        if (j == y) {
            pj = pj - 1.0;
        }
        dlogits[base + j] = dlogits[base + j] + p.scale * pj;
    }
}
