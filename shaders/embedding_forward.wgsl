// embedding_forward: out (B*T, C) = wte[ids[b,t]] + wpe[pos_offset + t]
// (without learned positions, with_wpe = 0: out = wte[ids[b,t]], wpe unread)
//
// The token table is stored transposed and split by vocabulary range so that
// GPT-2's 50257 x 768 table fits the adapter's binding limit: this dispatch
// sees one chunk, wte_t (C, vlen) holding tokens v0 .. v0+vlen, and writes
// only the rows whose token falls in it. One invocation per output element.
// Element types: st (inputs) / ot (output) from the prepended header; f32 accumulation.

struct Params {
    n: u32,          // B*T rows
    t: u32,          // sequence length (position = pos_offset + row % t)
    c: u32,          // channels
    v0: u32,         // first token id in this chunk
    vlen: u32,       // tokens in this chunk (row stride of wte_t)
    stride: u32,     // invocations per row of the dispatch grid
    pos_offset: u32, // position of each sequence's first token (may change per call)
    with_wpe: u32,   // 1: add wpe; 0: the model has no position table (wpe unread)
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> wte_t: array<st>;
@group(0) @binding(3) var<storage, read> wpe: array<st>;
@group(0) @binding(4) var<storage, read> p: Params;

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
    let pos = p.pos_offset + row % p.t;
    out[i] = ot(te + f32(wpe[pos * p.c + ch]));
}
