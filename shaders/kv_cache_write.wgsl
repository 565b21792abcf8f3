// kv_cache_write: copy each row's key and value into its sequence's KV cache.
//   qkv (N, (NH + 2 NKV) HD) = [q: NH*HD | k: NKV*HD | v: NKV*HD] rows, as the
//     QKV matmul writes them
//   rows (N, 2) u32: (slot, pos) of each row — the cache row it belongs to
//   k_cache, v_cache (slots, n_pos, NKV*HD), sized by the KV heads:
//     k_cache[slot, pos, :] = qkv[row, NH*HD .. (NH + NKV)*HD]
//     v_cache[slot, pos, :] = qkv[row, (NH + NKV)*HD .. (NH + 2 NKV)*HD]
//
// Prefill writes every prompt row (right-padded rows land past the prompt,
// where decode overwrites them before any attention reads them); a decode
// step writes its one new row per sequence. One invocation per (row, channel
// of the NKV*HD).
// Element types: st (qkv) / ot (k_cache, v_cache) from the prepended header.

struct Params {
    n: u32,      // rows
    nh: u32,     // query heads
    nkv: u32,    // key/value heads
    hd: u32,     // head dim
    n_pos: u32,  // cache rows per slot (n_positions)
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> k_cache: array<ot>;  // (slots, n_pos, NKV*HD)
@group(0) @binding(1) var<storage, read_write> v_cache: array<ot>;  // (slots, n_pos, NKV*HD)
@group(0) @binding(2) var<storage, read> qkv: array<st>;            // (N, (NH + 2 NKV) HD)
@group(0) @binding(3) var<storage, read> rows: array<u32>;          // (N, 2)
@group(0) @binding(4) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let kv_len = p.nkv * p.hd;
    let i = gid.y * p.stride + gid.x;
    if (i >= p.n * kv_len) {
        return;
    }
    let row = i / kv_len;
    let ch = i % kv_len;
    let slot = rows[2u * row];
    let pos = rows[2u * row + 1u];
    let dst = (slot * p.n_pos + pos) * kv_len + ch;
    let src = row * (p.nh * p.hd + 2u * kv_len) + p.nh * p.hd + ch;
    k_cache[dst] = ot(f32(qkv[src]));
    v_cache[dst] = ot(f32(qkv[src + kv_len]));
}
