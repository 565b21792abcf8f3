// attention_decode: each row's query against its own sequence's KV cache,
// grouped-query, optionally over a sliding window.
//   qkv (N, (NH + 2 NKV) HD): the row's query head h at columns
//                h*HD .. (h+1)*HD (keys and values of the row are already
//                in the cache: kv_cache_write); head h reads KV head
//                h / (NH / NKV)
//   rows (N, 2) u32: (slot, pos) — the row is token `pos` of sequence `slot`
//   k_cache, v_cache (slots, n_pos, NKV*HD)
//   out (N, NH*HD): out[r, h] = softmax_t(q . k_cache[slot, t, kvh] / sqrt(HD)) @ v_cache[slot, t, kvh]
//     over the positions t <= pos with pos - t < window (0 ..= pos when window = 0)
//
// Each row attends over its own slot only: sequences of different lengths
// decode side by side, and no padding enters. Same online softmax as
// attention_forward: one invocation per (row, head, chunk of up to 64 head
// dims).
// Element types: st (qkv, k_cache, v_cache) / ot (out) from the prepended
// header; f32 accumulation.

struct Params {
    n: u32,        // rows
    nh: u32,       // query heads
    nkv: u32,      // key/value heads (NH a multiple of NKV)
    hd: u32,       // head dim
    nchunks: u32,  // ceil(HD / 64)
    n_pos: u32,    // cache rows per slot
    scale: f32,    // 1 / sqrt(HD)
    window: u32,   // sliding window (positions t > pos - window); 0 = none
    stride: u32,   // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;  // (N, NH*HD)
@group(0) @binding(1) var<storage, read> qkv: array<st>;        // (N, (NH + 2 NKV) HD)
@group(0) @binding(2) var<storage, read> k_cache: array<st>;    // (slots, n_pos, NKV*HD)
@group(0) @binding(3) var<storage, read> v_cache: array<st>;    // (slots, n_pos, NKV*HD)
@group(0) @binding(4) var<storage, read> rows: array<u32>;      // (N, 2)
@group(0) @binding(5) var<storage, read> p: Params;

const CHUNK: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var idx = gid.y * p.stride + gid.x;
    if (idx >= p.n * p.nh * p.nchunks) {
        return;
    }
    let chunk = idx % p.nchunks;
    idx = idx / p.nchunks;
    let h = idx % p.nh;
    let r = idx / p.nh;
    let slot = rows[2u * r];
    let pos = rows[2u * r + 1u];

    let kv_len = p.nkv * p.hd;
    let kvh = h / (p.nh / p.nkv);
    let q = r * (p.nh * p.hd + 2u * kv_len) + h * p.hd;
    let d0 = chunk * CHUNK;
    let dn = min(CHUNK, p.hd - d0);
    var first = 0u;
    if (p.window > 0u && pos >= p.window) {
        first = pos + 1u - p.window;
    }

    var acc: array<f32, 64>;
    for (var d = 0u; d < dn; d = d + 1u) {
        acc[d] = 0.0;
    }
    var m = -3.0e38;
    var l = 0.0;
    // The head-dim loops take 4 dims an iteration (then the rest one by
    // one), in the same order as one at a time: llvmpipe stops a shader
    // after 65,535 loop iterations in one invocation, which positions x
    // (HD + HD) one-dim iterations reached at ~500 positions for HD 64.
    let hd4 = p.hd & ~3u;
    let dn4 = dn & ~3u;
    for (var tk = first; tk <= pos; tk = tk + 1u) {
        let kv = (slot * p.n_pos + tk) * kv_len + kvh * p.hd;
        var s = 0.0;
        var d = 0u;
        for (; d < hd4; d = d + 4u) {
            s = s + f32(qkv[q + d]) * f32(k_cache[kv + d]);
            s = s + f32(qkv[q + d + 1u]) * f32(k_cache[kv + d + 1u]);
            s = s + f32(qkv[q + d + 2u]) * f32(k_cache[kv + d + 2u]);
            s = s + f32(qkv[q + d + 3u]) * f32(k_cache[kv + d + 3u]);
        }
        for (; d < p.hd; d = d + 1u) {
            s = s + f32(qkv[q + d]) * f32(k_cache[kv + d]);
        }
        s = s * p.scale;
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * corr + e;
        let vd = kv + d0;
        d = 0u;
        for (; d < dn4; d = d + 4u) {
            acc[d] = acc[d] * corr + e * f32(v_cache[vd + d]);
            acc[d + 1u] = acc[d + 1u] * corr + e * f32(v_cache[vd + d + 1u]);
            acc[d + 2u] = acc[d + 2u] * corr + e * f32(v_cache[vd + d + 2u]);
            acc[d + 3u] = acc[d + 3u] * corr + e * f32(v_cache[vd + d + 3u]);
        }
        for (; d < dn; d = d + 1u) {
            acc[d] = acc[d] * corr + e * f32(v_cache[vd + d]);
        }
        m = m_new;
    }
    let o = r * p.nh * p.hd + h * p.hd + d0;
    let inv = 1.0 / l;
    for (var d = 0u; d < dn; d = d + 1u) {
        out[o + d] = ot(acc[d] * inv);
    }
}
