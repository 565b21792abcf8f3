// attention_forward, version 2: attention_forward.wgsl for a head dim of
// exactly 64, with each key and value row loaded once per subgroup.
//   qkv (B*T, 3C) = [q | k | v], head h at columns h*64 .. (h+1)*64 of each
//   out (B*T, C):  out[b,t,h] = softmax_{t' <= t}(q.k / 8) @ v
//   lse (B, NH, T) = m + ln(l) of each query's scaled scores (with_lse)
//
// What changed from version 1: there every lane (one query) loaded each
// key's and value's 64 floats itself, and its own query's once per key:
// 192 per-lane storage loads per (query, key) pair, which on llvmpipe (a
// storage load is a per-lane loop) bound it at ~3 GB/s of loads, 3-4 % of
// the best matmul. Here the 8 lanes of a subgroup are 8 consecutive
// queries of one (b, h): for each key, lane L loads dims 8L .. 8L+8 of the
// key row and of the value row (4 vec4 loads), subgroupShuffle hands them
// to the others, and the query sits in private memory: 4 loads per lane
// and key instead of 192. The arithmetic and its order per output are
// version 1's (the online softmax over keys 0..t, the score summed over
// dims 0..63 in order).
// Needs C % 4 == 0, a head dim of 64, the SUBGROUP feature and a subgroup
// size of exactly 8; the host runs version 1 otherwise.
// Grid: 8 lanes per (b, h, block of 8 queries), T padded to a multiple of
// 8. No early return inside a subgroup (every lane must stay for the
// shuffles): a padded lane takes query T-1 and stores nothing.

struct Params {
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
    nblocks: u32,  // ceil(T / 8)
    scale: f32,    // 1 / sqrt(64)
    stride: u32,   // invocations per row of the dispatch grid
    with_lse: u32, // 1: write lse
}

@group(0) @binding(0) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>; // (B, NH, T)
@group(0) @binding(2) var<storage, read> qkv: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) sl: u32) {
    let idx = gid.y * p.stride + gid.x;
    // The whole subgroup is in range or out of it (the lanes are a multiple of 8).
    if (idx >= p.b * p.nh * p.nblocks * 8u) {
        return;
    }
    let block = idx / 8u;
    let tb = block % p.nblocks;
    let bh = block / p.nblocks; // b * NH + h
    let h = bh % p.nh;
    let b = bh / p.nh;
    let tq_lane = tb * 8u + sl;
    let tq = min(tq_lane, p.t - 1u);
    let t_last = min(tb * 8u + 7u, p.t - 1u); // the subgroup's last query

    let c4 = p.c / 4u;
    let row4 = 3u * c4; // vec4s per qkv row
    let q = (b * p.t + tq) * row4 + h * 16u;
    var qr: array<vec4<f32>, 16>;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i = i + 1u) {
        qr[i] = qkv[q + i];
        acc[i] = vec4<f32>(0.0);
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var tk = 0u; tk <= t_last; tk = tk + 1u) {
        let k = (b * p.t + tk) * row4 + c4 + h * 16u + 2u * sl;
        let v = k + c4;
        let ka = qkv[k];
        let kb = qkv[k + 1u];
        let va = qkv[v];
        let vb = qkv[v + 1u];
        var s = 0.0;
        for (var j = 0u; j < 8u; j = j + 1u) {
            let x = subgroupShuffle(ka, j);
            let y = subgroupShuffle(kb, j);
            let qa = qr[2u * j];
            let qb = qr[2u * j + 1u];
            s = s + qa.x * x.x;
            s = s + qa.y * x.y;
            s = s + qa.z * x.z;
            s = s + qa.w * x.w;
            s = s + qb.x * y.x;
            s = s + qb.y * y.y;
            s = s + qb.z * y.z;
            s = s + qb.w * y.w;
        }
        s = s * p.scale;
        // Keys after this lane's query leave it unchanged (corr 1, e 0).
        let live = tk <= tq;
        let m_new = select(m, max(m, s), live);
        let corr = exp(m - m_new);
        let e = select(0.0, exp(s - m_new), live);
        l = l * corr + e;
        for (var j = 0u; j < 8u; j = j + 1u) {
            let x = subgroupShuffle(va, j);
            let y = subgroupShuffle(vb, j);
            acc[2u * j] = acc[2u * j] * corr + e * x;
            acc[2u * j + 1u] = acc[2u * j + 1u] * corr + e * y;
        }
        m = m_new;
    }
    if (tq_lane >= p.t) {
        return;
    }
    if (p.with_lse == 1u) {
        lse[bh * p.t + tq] = m + log(l);
    }
    let inv = 1.0 / l;
    let o = (b * p.t + tq) * c4 + h * 16u;
    for (var i = 0u; i < 16u; i = i + 1u) {
        out[o + i] = acc[i] * inv;
    }
}
