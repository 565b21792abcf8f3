// crossentropy_vocab_parallel: cross-entropy fused with the softmax backward
// when the logits' columns are split over the T ranks of a tensor-parallel
// group (Megatron-LM's vocabulary-parallel cross-entropy). Rank `rank` holds
// the columns v0 .. v0 + w of every row (w is its row stride) and never sees
// another rank's. Its result is the whole-row twin's,
// cpu::backward::crossentropy_softmax_backward (tests/gpu_backward.rs).
//
// Three phases, one dispatch each, with a sum over the group (an all-reduce)
// after phases 0 and 1:
//   0: stats[row, rank] = the max of the row's own columns; stats (N, T) is
//      cleared first, so the sum puts every rank's max side by side.
//   1: m = max over stats[row, ..]; sums[row] = (Σ_own exp(l_j - m), the
//      target's logit if this rank holds it, else 0): the sum gives the
//      row's whole sum of exponentials and its target logit.
//   2: losses[row] = ln S - (l_y - m)                     (written)
//      dlogits[row, j] += scale * (exp(l_j - m) / S - [v0 + j == y])
// Rows whose target is NO_TARGET are skipped (loss 0, no gradient); columns
// at or past v (the padding of Vp) are neither read nor written.

struct Params {
    n: u32,      // rows
    v: u32,      // vocabulary (columns in the softmax)
    v0: u32,     // this rank's first column
    w: u32,      // this rank's columns: the row stride of logits and dlogits
    rank: u32,
    tp: u32,     // ranks in the group: the row stride of stats
    phase: u32,  // 0, 1 or 2 (see above)
    scale: f32,  // d loss / d losses[row]
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(1) var<storage, read_write> losses: array<f32>;
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;
@group(0) @binding(4) var<storage, read> logits: array<f32>;
@group(0) @binding(5) var<storage, read> targets: array<u32>;
@group(0) @binding(6) var<storage, read> p: Params;

const NO_TARGET: u32 = 0xffffffffu;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * p.stride + gid.x;
    if (row >= p.n) {
        return;
    }
    let y = targets[row];
    // This rank's columns of the softmax: j < cols.
    var cols = 0u;
    if (p.v > p.v0) {
        cols = min(p.w, p.v - p.v0);
    }
    let base = row * p.w;
    if (p.phase == 0u) {
        var mx = -3.0e38;
        for (var j = 0u; j < cols; j = j + 1u) {
            mx = max(mx, logits[base + j]);
        }
        stats[row * p.tp + p.rank] = mx;
        return;
    }
    var m = -3.0e38;
    for (var r = 0u; r < p.tp; r = r + 1u) {
        m = max(m, stats[row * p.tp + r]);
    }
    if (p.phase == 1u) {
        var s = 0.0;
        for (var j = 0u; j < cols; j = j + 1u) {
            s = s + exp(logits[base + j] - m);
        }
        var ly = 0.0;
        if (y != NO_TARGET && y >= p.v0 && y - p.v0 < cols) {
            ly = logits[base + (y - p.v0)];
        }
        sums[2u * row] = s;
        sums[2u * row + 1u] = ly;
        return;
    }
    if (y == NO_TARGET) {
        losses[row] = 0.0;
        return;
    }
    let total = sums[2u * row];
    losses[row] = log(total) - (sums[2u * row + 1u] - m);
    let inv = 1.0 / total;
    for (var j = 0u; j < cols; j = j + 1u) {
        var pj = exp(logits[base + j] - m) * inv;
        if (p.v0 + j == y) {
            pj = pj - 1.0;
        }
        dlogits[base + j] = dlogits[base + j] + p.scale * pj;
    }
}
