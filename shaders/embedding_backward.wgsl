// embedding_backward: dwte_t (C, vlen) += dout rows by token; dwpe (maxT, C) += dout rows by position
//
// Twin of cpu::backward::embedding_backward. The token table's gradient has
// the layout of embedding_forward's table: transposed and split by vocabulary
// range, so this dispatch accumulates into one chunk dwte_t (C, vlen) holding
// tokens v0 .. v0+vlen, from the rows whose token falls in it. Run it once
// per chunk, with `with_wpe` = 1 on exactly one of them so the position
// gradient is added once.
//
// One invocation per channel: it walks the rows in order and owns its column
// of both gradients, so repeated tokens (and positions) sum without atomics
// and in the CPU reference's order. Gradients accumulate (+=).

struct Params {
    n: u32,        // B*T rows
    t: u32,        // sequence length (position = row % t)
    c: u32,        // channels
    v0: u32,       // first token id in this chunk
    vlen: u32,     // tokens in this chunk (row stride of dwte_t)
    with_wpe: u32, // 1: also accumulate dwpe
    stride: u32,   // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dwte_t: array<f32>;
@group(0) @binding(1) var<storage, read_write> dwpe: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let ch = gid.y * p.stride + gid.x;
    if (ch >= p.c) {
        return;
    }
    for (var row = 0u; row < p.n; row = row + 1u) {
        let d = dout[row * p.c + ch];
        let id = ids[row];
        if (id >= p.v0 && id < p.v0 + p.vlen) {
            let w = ch * p.vlen + (id - p.v0);
            dwte_t[w] = dwte_t[w] + d;
        }
        if (p.with_wpe != 0u) {
            let w = (row % p.t) * p.c + ch;
            dwpe[w] = dwpe[w] + d;
        }
    }
}
