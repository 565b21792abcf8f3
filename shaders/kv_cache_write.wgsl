// kv_cache_write: copy each row's key and value into its sequence's KV cache.
//   qkv (N, 3C) = [q | k | v] rows, as the QKV matmul writes them
//   rows (N, 2) u32: (slot, pos) of each row — the cache row it belongs to
//   k_cache, v_cache (slots, n_pos, C):
//     k_cache[slot, pos, :] = qkv[row, C .. 2C];  v_cache[slot, pos, :] = qkv[row, 2C .. 3C]
//
// Prefill writes every prompt row (right-padded rows land past the prompt,
// where decode overwrites them before any attention reads them); a decode
// step writes its one new row per sequence. One invocation per (row, channel).

struct Params {
    n: u32,      // rows
    c: u32,      // channels
    n_pos: u32,  // cache rows per slot (n_positions)
    stride: u32, // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(1) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> rows: array<u32>;
@group(0) @binding(4) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.y * p.stride + gid.x;
    if (i >= p.n * p.c) {
        return;
    }
    let row = i / p.c;
    let ch = i % p.c;
    let slot = rows[2u * row];
    let pos = rows[2u * row + 1u];
    let dst = (slot * p.n_pos + pos) * p.c + ch;
    let src = row * 3u * p.c + ch;
    k_cache[dst] = qkv[src + p.c];
    v_cache[dst] = qkv[src + 2u * p.c];
}
