// attention_forward: causal grouped-query self-attention, optionally over a
// sliding window.
//   qkv (B*T, (NH + 2 NKV) HD) = [q: NH*HD | k: NKV*HD | v: NKV*HD]: query
//     head h at columns h*HD .. (h+1)*HD of q; it reads KV head
//     h / (NH / NKV) of k and v (NKV = NH: multi-head; NKV = 1: multi-query)
//   out (B*T, NH*HD): out[b,t,h] = softmax_{t'}(q.k / sqrt(HD)) @ v over the
//     keys t' <= t with t - t' < window (every t' <= t when window = 0)
//
// One invocation per (b, h, query t, chunk of up to 64 head dims). Each walks
// its keys once with an online softmax (running max and sum, the accumulator
// rescaled when the max grows), so no (T, T) score matrix is stored and any
// sequence length up to n_positions works. Head dims above 64 are split into
// chunks; each chunk recomputes the scores over the full head.
// With `with_lse` (training), the first chunk of each query also writes the
// log-sum-exp of its scaled scores, lse (B, NH, T) = m + ln(l), for the
// backward (attention_backward.wgsl), which then needs no pass of its own to
// find the softmax's normaliser.
// Element types: st (qkv) / ot (out) from the prepended header; lse stays f32;
// f32 accumulation.

struct Params {
    b: u32,
    t: u32,
    nh: u32,       // query heads
    nkv: u32,      // key/value heads (NH a multiple of NKV)
    hd: u32,       // head dim
    nchunks: u32,  // ceil(HD / 64)
    scale: f32,    // 1 / sqrt(HD)
    window: u32,   // sliding window (keys t' > t - window); 0 = none
    stride: u32,   // invocations per row of the dispatch grid
    with_lse: u32, // 1: write lse
}

@group(0) @binding(0) var<storage, read_write> out: array<ot>;  // (B*T, NH*HD)
@group(0) @binding(1) var<storage, read_write> lse: array<f32>; // (B, NH, T), with_lse only
@group(0) @binding(2) var<storage, read> qkv: array<st>;        // (B*T, (NH + 2 NKV) HD)
@group(0) @binding(3) var<storage, read> p: Params;

const CHUNK: u32 = 64u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var idx = gid.y * p.stride + gid.x;
    if (idx >= p.b * p.nh * p.t * p.nchunks) {
        return;
    }
    let query = idx / p.nchunks; // (b, h, tq) flattened: the lse slot
    let chunk = idx % p.nchunks;
    idx = idx / p.nchunks;
    let tq = idx % p.t;
    idx = idx / p.t;
    let h = idx % p.nh;
    let b = idx / p.nh;

    let row_len = (p.nh + 2u * p.nkv) * p.hd;
    let kvh = h / (p.nh / p.nkv);
    let k_col = p.nh * p.hd + kvh * p.hd;
    let v_col = (p.nh + p.nkv) * p.hd + kvh * p.hd;
    let q = (b * p.t + tq) * row_len + h * p.hd;
    let d0 = chunk * CHUNK;
    let dn = min(CHUNK, p.hd - d0);
    var first = 0u;
    if (p.window > 0u && tq >= p.window) {
        first = tq + 1u - p.window;
    }

    var acc: array<f32, 64>;
    for (var d = 0u; d < dn; d = d + 1u) {
        acc[d] = 0.0;
    }
    var m = -3.0e38;
    var l = 0.0;
    // The head-dim loops take 4 dims an iteration (then the rest one by
    // one), in the same order as one at a time: llvmpipe stops a shader
    // after 65,535 loop iterations in one invocation, which keys x
    // (HD + HD) one-dim iterations reached at ~500 keys for HD 64.
    let hd4 = p.hd & ~3u;
    let dn4 = dn & ~3u;
    for (var tk = first; tk <= tq; tk = tk + 1u) {
        let row = (b * p.t + tk) * row_len;
        let k = row + k_col;
        var s = 0.0;
        var d = 0u;
        for (; d < hd4; d = d + 4u) {
            s = s + f32(qkv[q + d]) * f32(qkv[k + d]);
            s = s + f32(qkv[q + d + 1u]) * f32(qkv[k + d + 1u]);
            s = s + f32(qkv[q + d + 2u]) * f32(qkv[k + d + 2u]);
            s = s + f32(qkv[q + d + 3u]) * f32(qkv[k + d + 3u]);
        }
        for (; d < p.hd; d = d + 1u) {
            s = s + f32(qkv[q + d]) * f32(qkv[k + d]);
        }
        s = s * p.scale;
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * corr + e;
        let v = row + v_col + d0;
        d = 0u;
        for (; d < dn4; d = d + 4u) {
            acc[d] = acc[d] * corr + e * f32(qkv[v + d]);
            acc[d + 1u] = acc[d + 1u] * corr + e * f32(qkv[v + d + 1u]);
            acc[d + 2u] = acc[d + 2u] * corr + e * f32(qkv[v + d + 2u]);
            acc[d + 3u] = acc[d + 3u] * corr + e * f32(qkv[v + d + 3u]);
        }
        for (; d < dn; d = d + 1u) {
            acc[d] = acc[d] * corr + e * f32(qkv[v + d]);
        }
        m = m_new;
    }
    let o = (b * p.t + tq) * p.nh * p.hd + h * p.hd + d0;
    if (p.with_lse == 1u && chunk == 0u) {
        lse[query] = m + log(l);
    }
    let inv = 1.0 / l;
    for (var d = 0u; d < dn; d = d + 1u) {
        out[o + d] = ot(acc[d] * inv);
    }
}
