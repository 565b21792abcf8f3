// sumsq: partial sums of squares of inp (len), one per workgroup, for the
// global gradient norm (--grad-clip).
//
// Twin of cpu::optim::sumsq (which sums in f64). Workgroup k reduces the slice
// inp[k*SLICE .. (k+1)*SLICE] (SLICE = 256 invocations x 16 elements): each
// invocation sums the squares of 16 elements 256 apart, then a shared-memory
// tree halves the 256 sums to one, written to partials[k]. The host adds the
// partials in f64. Workgroups are laid out in a grid of `groups_x` per row
// (at most 65535); the grid's spare workgroups past the last slice write nothing.

struct Params {
    len: u32,
    groups_x: u32,  // workgroups per row of the dispatch grid
    npartials: u32, // ceil(len / SLICE), at least 1
}

@group(0) @binding(0) var<storage, read_write> partials: array<f32>;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> p: Params;

const WG: u32 = 256u;
const PER_THREAD: u32 = 16u;
const SLICE: u32 = 4096u; // WG * PER_THREAD

var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let k = wid.y * p.groups_x + wid.x;
    let base = k * SLICE;
    var s = 0.0;
    for (var j = 0u; j < PER_THREAD; j = j + 1u) {
        let i = base + j * WG + lid;
        if (i < p.len) {
            let x = inp[i];
            s = s + x * x;
        }
    }
    sums[lid] = s;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            sums[lid] = sums[lid] + sums[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u && k < p.npartials) {
        partials[k] = sums[0];
    }
}
