// layernorm_forward: out (N, C) = (inp - mean) / sqrt(var + eps) * gamma + beta
//
// Biased variance over the C channels of each row, as torch computes it.
// One invocation per row; two passes over the row (mean, then variance) keep
// the arithmetic close to the CPU reference.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params {
    n: u32,
    c: u32,
    eps: f32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;
@group(0) @binding(1) var<storage, read> inp: array<st>;
@group(0) @binding(2) var<storage, read> gamma: array<st>;
@group(0) @binding(3) var<storage, read> beta: array<st>;
@group(0) @binding(4) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * p.stride + gid.x;
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    var sum = 0.0;
    for (var i = 0u; i < p.c; i = i + 1u) {
        sum = sum + f32(inp[base + i]);
    }
    let mean = sum / f32(p.c);
    var var_sum = 0.0;
    for (var i = 0u; i < p.c; i = i + 1u) {
        let d = f32(inp[base + i]) - mean;
        var_sum = var_sum + d * d;
    }
    let rstd = 1.0 / sqrt(var_sum / f32(p.c) + p.eps);
    for (var i = 0u; i < p.c; i = i + 1u) {
        out[base + i] = ot((f32(inp[base + i]) - mean) * rstd * f32(gamma[i]) + f32(beta[i]));
    }
}
