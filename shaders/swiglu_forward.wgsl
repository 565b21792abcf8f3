// swiglu_forward: out (N, F) = silu(gate) * up, gate_up (N, 2F) rows [gate: F | up: F]
//
// The Llama MLP's act_fn(gate_proj(x)) * up_proj(x) with act_fn = silu,
// silu(g) = g * sigmoid(g). The sigmoid is written so that exp never
// overflows: e = exp(-|g|), sigmoid = 1 / (1 + e) for g >= 0, e / (1 + e)
// otherwise (as cpu::llama::swiglu_forward). One invocation per output element.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params {
    n: u32,
    f: u32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;   // (N, F)
@group(0) @binding(1) var<storage, read> gate_up: array<st>;     // (N, 2F)
@group(0) @binding(2) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.n * p.f) {
        return;
    }
    let row = i / p.f;
    let j = i % p.f;
    let g = f32(gate_up[row * 2u * p.f + j]);
    let u = f32(gate_up[row * 2u * p.f + p.f + j]);
    let e = exp(-abs(g));
    let sig = select(e / (1.0 + e), 1.0 / (1.0 + e), g >= 0.0);
    out[i] = ot((g * sig) * u);
}
