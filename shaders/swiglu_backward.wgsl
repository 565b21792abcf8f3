// swiglu_backward: twin of cpu::llama::swiglu_backward. With
// out = silu(gate) * up, s = sigmoid(gate), silu'(g) = s (1 + g (1 - s)):
//   dgate_up[:, :F] (dgate) += dout * up * silu'(gate)
//   dgate_up[:, F:] (dup)   += dout * silu(gate)
// gate_up (N, 2F) rows [gate: F | up: F] as swiglu_forward reads them; the
// sigmoid written as there. One invocation per element of dout (N, F), which
// owns both of its gradients; gradients accumulate (+=).

struct Params {
    n: u32,
    f: u32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dgate_up: array<f32>; // (N, 2F)
@group(0) @binding(1) var<storage, read> dout: array<f32>;           // (N, F)
@group(0) @binding(2) var<storage, read> gate_up: array<f32>;        // (N, 2F)
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.n * p.f) {
        return;
    }
    let row = i / p.f;
    let j = i % p.f;
    let gi = row * 2u * p.f + j;
    let ui = gi + p.f;
    let g = gate_up[gi];
    let u = gate_up[ui];
    let e = exp(-abs(g));
    let sig = select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
    let silu = g * sig;
    let dsilu = sig * (1.0 + g * (1.0 - sig));
    let d = dout[i];
    dgate_up[gi] = dgate_up[gi] + (d * u) * dsilu;
    dgate_up[ui] = dgate_up[ui] + d * silu;
}
