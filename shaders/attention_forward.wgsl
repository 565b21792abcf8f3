// attention_forward: causal multi-head self-attention.
//   qkv (B*T, 3C) = [q | k | v], head h at columns h*HD .. (h+1)*HD of each
//   out (B*T, C):  out[b,t,h] = softmax_{t' <= t}(q.k / sqrt(HD)) @ v
//
// One invocation per (b, h, query t, chunk of up to 64 head dims). Each walks
// the keys once with an online softmax (running max and sum, the accumulator
// rescaled when the max grows), so no (T, T) score matrix is stored and any
// sequence length up to n_positions works. Head dims above 64 are split into
// chunks; each chunk recomputes the scores over the full head.
// With `with_lse` (training), the first chunk of each query also writes the
// log-sum-exp of its scaled scores, lse (B, NH, T) = m + ln(l), for the
// backward (attention_backward.wgsl), which then needs no pass of its own to
// find the softmax's normaliser.

struct Params {
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
    hd: u32,       // head dim = C / NH
    nchunks: u32,  // ceil(HD / 64)
    scale: f32,    // 1 / sqrt(HD)
    stride: u32,   // invocations per row of the dispatch grid
    with_lse: u32, // 1: write lse
}

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>; // (B, NH, T)
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
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

    let c3 = 3u * p.c;
    let q = (b * p.t + tq) * c3 + h * p.hd;
    let d0 = chunk * CHUNK;
    let dn = min(CHUNK, p.hd - d0);

    var acc: array<f32, 64>;
    for (var d = 0u; d < dn; d = d + 1u) {
        acc[d] = 0.0;
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var tk = 0u; tk <= tq; tk = tk + 1u) {
        let row = (b * p.t + tk) * c3 + h * p.hd;
        let k = row + p.c;
        var s = 0.0;
        for (var d = 0u; d < p.hd; d = d + 1u) {
            s = s + qkv[q + d] * qkv[k + d];
        }
        s = s * p.scale;
        let m_new = max(m, s);
        let corr = exp(m - m_new);
        let e = exp(s - m_new);
        l = l * corr + e;
        let v = row + 2u * p.c + d0;
        for (var d = 0u; d < dn; d = d + 1u) {
            acc[d] = acc[d] * corr + e * qkv[v + d];
        }
        m = m_new;
    }
    let o = (b * p.t + tq) * p.c + h * p.hd + d0;
    if (p.with_lse == 1u && chunk == 0u) {
        lse[query] = m + log(l);
    }
    let inv = 1.0 / l;
    for (var d = 0u; d < dn; d = d + 1u) {
        out[o + d] = acc[d] * inv;
    }
}
