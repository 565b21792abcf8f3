// embedding_decode: out (N, C) = wte[ids[r]] + wpe[pos_r], each row at its
// own position — one new token per sequence, sequences at different lengths
// (without learned positions, with_wpe = 0: out = wte[ids[r]], wpe unread).
//   rows (N, 2) u32: (slot, pos) of each row (the KV cache's row table)
//
// As embedding_forward, the token table is transposed and split by
// vocabulary range: this dispatch sees wte_t (C, vlen) for tokens
// v0 .. v0+vlen and writes only the rows whose token falls in it. One
// invocation per output element.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params {
    n: u32,        // rows
    c: u32,        // channels
    v0: u32,       // first token id in this chunk
    vlen: u32,     // tokens in this chunk (row stride of wte_t)
    stride: u32,   // invocations per row of the dispatch grid
    with_wpe: u32, // 1: add wpe; 0: the model has no position table (wpe unread)
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> wte_t: array<st>;
@group(0) @binding(3) var<storage, read> wpe: array<st>;
@group(0) @binding(4) var<storage, read> rows: array<u32>;
@group(0) @binding(5) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.n * p.c) {
        return;
    }
    let row = i / p.c;
    let ch = i % p.c;
    let id = ids[row];
    if (id < p.v0 || id >= p.v0 + p.vlen) {
        return;
    }
    let te = f32(wte_t[ch * p.vlen + (id - p.v0)]);
    if (p.with_wpe == 0u) {
        out[i] = ot(te);
        return;
    }
    let pos = rows[2u * row + 1u];
    out[i] = ot(te + f32(wpe[pos * p.c + ch]));
}
