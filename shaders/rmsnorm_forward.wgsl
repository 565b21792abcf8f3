// rmsnorm_forward: out (N, C) = inp * rsqrt(mean(inp^2) + eps) * weight
//
// transformers' LlamaRMSNorm in f32: rstd = 1 / sqrt(sum(x^2) / C + eps),
// out = (x * rstd) * weight. No mean subtracted, no bias. One invocation per
// row; the sum of squares in plain order, as the CPU reference
// (cpu::llama::rmsnorm_forward).
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params {
    n: u32,
    c: u32,
    eps: f32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;    // (N, C)
@group(0) @binding(1) var<storage, read> inp: array<st>;          // (N, C)
@group(0) @binding(2) var<storage, read> weight: array<st>;       // (C)
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let row = gid.y * p.stride + gid.x;
    if (row >= p.n) {
        return;
    }
    let base = row * p.c;
    var sumsq = 0.0;
    for (var i = 0u; i < p.c; i = i + 1u) {
        let x = f32(inp[base + i]);
        sumsq = sumsq + x * x;
    }
    let rstd = 1.0 / sqrt(sumsq / f32(p.c) + p.eps);
    for (var i = 0u; i < p.c; i = i + 1u) {
        out[base + i] = ot((f32(inp[base + i]) * rstd) * f32(weight[i]));
    }
}
