// layernorm_backward: twin of cpu::backward::layernorm_backward.
//   with norm = (inp - mean) * rstd and dnorm = gamma * dout, per row:
//   dinp   (N, C) += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
//   dgamma (C)    += sum over rows of norm * dout
//   dbeta  (C)    += sum over rows of dout
//
// Two dispatches of this one pipeline, told apart by `phase`:
//   phase 0, one invocation per row: recomputes the row's mean and rstd as
//     layernorm_forward does, stores them in stats (N, 2), accumulates dinp;
//   phase 1, one invocation per channel: walks the rows in order with the
//     stored stats and accumulates dgamma and dbeta (each invocation owns its
//     channel, so no atomics). Phase 1 must run after phase 0.
// Gradients accumulate (+=).

struct Params {
    n: u32,
    c: u32,
    eps: f32,
    phase: u32,  // 0: rows (stats, dinp); 1: channels (dgamma, dbeta)
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(1) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>; // (N, 2): mean, rstd
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read> inp: array<f32>;
@group(0) @binding(6) var<storage, read> gamma: array<f32>;
@group(0) @binding(7) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let idx = gid.y * p.stride + gid.x;
    if (p.phase == 0u) {
        let row = min(idx, p.n - 1u);
        let live = idx < p.n;
        let base = row * p.c;
        var sum = 0.0;
        for (var i = 0u; i < p.c; i = i + 1u) {
            sum = sum + inp[base + i];
        }
        let mean = sum / f32(p.c);
        var var_sum = 0.0;
        for (var i = 0u; i < p.c; i = i + 1u) {
            let d = inp[base + i] - mean;
            var_sum = var_sum + d * d;
        }
        let rstd = 1.0 / sqrt(var_sum / f32(p.c) + p.eps);
        if (live) {
            stats[2u * row] = mean;
            stats[2u * row + 1u] = rstd;
        }
        var dnorm_mean = 0.0;
        var dnorm_norm_mean = 0.0;
        for (var i = 0u; i < p.c; i = i + 1u) {
            let norm = (inp[base + i] - mean) * rstd;
            let dnorm = gamma[i] * dout[base + i];
            dnorm_mean = dnorm_mean + dnorm;
            dnorm_norm_mean = dnorm_norm_mean + dnorm * norm;
        }
        dnorm_mean = dnorm_mean / f32(p.c);
        dnorm_norm_mean = dnorm_norm_mean / f32(p.c);
        for (var i = 0u; i < p.c; i = i + 1u) {
            let norm = (inp[base + i] - mean) * rstd;
            let dnorm = gamma[i] * dout[base + i];
            if (live) {
                dinp[base + i] = dinp[base + i] + (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rstd;
            }
        }
    } else {
        let ch = min(idx, p.c - 1u);
        var dg = dgamma[ch];
        var db = dbeta[ch];
        for (var row = 0u; row < p.n; row = row + 1u) {
            let d = dout[row * p.c + ch];
            let norm = (inp[row * p.c + ch] - stats[2u * row]) * stats[2u * row + 1u];
            db = db + d;
            dg = dg + norm * d;
        }
        if (idx < p.c) {
            dgamma[ch] = dg;
            dbeta[ch] = db;
        }
    }
}
