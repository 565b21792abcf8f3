// rmsnorm_backward: twin of cpu::llama::rmsnorm_backward.
//   with rstd = 1 / sqrt(mean(inp^2) + eps), norm = inp * rstd and
//   dnorm = weight * dout, per row:
//   dinp    (N, C) += rstd * (dnorm - norm * mean(dnorm * norm))
//   dweight (C)    += sum over rows of dout * norm
//
// Organised as layernorm_backward: two dispatches of this one pipeline, told
// apart by `phase`:
//   phase 0, one invocation per row: recomputes the row's rstd as
//     rmsnorm_forward does, stores it in stats (N), accumulates dinp;
//   phase 1, one invocation per channel: walks the rows in order with the
//     stored rstd and accumulates dweight (each invocation owns its channel,
//     so no atomics). Phase 1 must run after phase 0.
// Gradients accumulate (+=).

struct Params {
    n: u32,
    c: u32,
    eps: f32,
    phase: u32,  // 0: rows (rstd, dinp); 1: channels (dweight)
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;    // (N, C)
@group(0) @binding(1) var<storage, read_write> dweight: array<f32>; // (C)
@group(0) @binding(2) var<storage, read_write> stats: array<f32>;   // (N): rstd
@group(0) @binding(3) var<storage, read> dout: array<f32>;          // (N, C)
@group(0) @binding(4) var<storage, read> inp: array<f32>;           // (N, C)
@group(0) @binding(5) var<storage, read> weight: array<f32>;        // (C)
@group(0) @binding(6) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * p.stride + gid.x;
    if (p.phase == 0u) {
        if (idx >= p.n) {
            return;
        }
        let row = idx;
        let base = row * p.c;
        var sumsq = 0.0;
        for (var i = 0u; i < p.c; i = i + 1u) {
            let x = inp[base + i];
            sumsq = sumsq + x * x;
        }
        let rstd = 1.0 / sqrt(sumsq / f32(p.c) + p.eps);
        stats[row] = rstd;
        var dnorm_norm_mean = 0.0;
        for (var i = 0u; i < p.c; i = i + 1u) {
            let norm = inp[base + i] * rstd;
            let dnorm = weight[i] * dout[base + i];
            dnorm_norm_mean = dnorm_norm_mean + dnorm * norm;
        }
        dnorm_norm_mean = dnorm_norm_mean / f32(p.c);
        for (var i = 0u; i < p.c; i = i + 1u) {
            let norm = inp[base + i] * rstd;
            let dnorm = weight[i] * dout[base + i];
            dinp[base + i] = dinp[base + i] + (dnorm - norm * dnorm_norm_mean) * rstd;
        }
    } else {
        if (idx >= p.c) {
            return;
        }
        let ch = idx;
        var dw = dweight[ch];
        for (var row = 0u; row < p.n; row = row + 1u) {
            let norm = inp[row * p.c + ch] * stats[row];
            dw = dw + dout[row * p.c + ch] * norm;
        }
        dweight[ch] = dw;
    }
}
