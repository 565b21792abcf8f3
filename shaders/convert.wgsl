// convert: out = inp, elementwise, converted between element types. One
// invocation per element.
// Moves activations across a pipeline hop between a device that stores them
// in f16 and one (or a host path) that holds f32: with the prepended header
// st = f16, ot = f32 it widens, with st = f32, ot = f16 it narrows.
// Element types: st (input) / ot (output) from the prepended header.

struct Params {
    len: u32,
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;
@group(0) @binding(1) var<storage, read> inp: array<st>;
@group(0) @binding(2) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.len) {
        return;
    }
    out[i] = ot(inp[i]);
}
