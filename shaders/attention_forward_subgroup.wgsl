// attention_forward, version 2: attention_forward.wgsl for a head dim of
// exactly 64, with each key and value row loaded once per subgroup.
//   qkv (B*T, (NH + 2 NKV) 64) = [q: NH*64 | k: NKV*64 | v: NKV*64]; query
//     head h reads KV head h / (NH / NKV)
//   out (B*T, NH*64): out[b,t,h] = softmax_{t'}(q.k / 8) @ v over the keys
//     t' <= t with t - t' < window (every t' <= t when window = 0)
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
// version 1's (the online softmax over the lane's keys in order, the score
// summed over dims 0..63 in order); keys outside a lane's range leave its
// running max, sum and accumulator unchanged.
// Needs a head dim of 64, the SUBGROUP feature and a subgroup size of
// exactly 8; the host runs version 1 otherwise.
// Grid: 8 lanes per (b, h, block of 8 queries), T padded to a multiple of
// 8. No early return inside a subgroup (every lane must stay for the
// shuffles): a padded lane takes query T-1 and stores nothing.
// Element types: st (qkv) / ot (out) from the prepended header; lse stays f32;
// f32 accumulation.

struct Params {
    b: u32,
    t: u32,
    nh: u32,       // query heads
    nkv: u32,      // key/value heads (NH a multiple of NKV)
    hd: u32,       // head dim: 64
    nblocks: u32,  // ceil(T / 8)
    scale: f32,    // 1 / sqrt(64)
    window: u32,   // sliding window (keys t' > t - window); 0 = none
    stride: u32,   // invocations per row of the dispatch grid
    with_lse: u32, // 1: write lse
}

@group(0) @binding(0) var<storage, read_write> out: array<vec4<ot>>;
@group(0) @binding(1) var<storage, read_write> lse: array<f32>; // (B, NH, T)
@group(0) @binding(2) var<storage, read> qkv: array<vec4<st>>;
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
    let t_first = tb * 8u;                     // the subgroup's first query
    let t_last = min(tb * 8u + 7u, p.t - 1u); // and its last
    var t_start = 0u;
    if (p.window > 0u && t_first + 1u > p.window) {
        t_start = t_first + 1u - p.window;
    }

    let row4 = (p.nh + 2u * p.nkv) * 16u; // vec4s per qkv row
    let kvh = h / (p.nh / p.nkv);
    let k_col = p.nh * 16u + kvh * 16u;
    let v_col = (p.nh + p.nkv) * 16u + kvh * 16u;
    let q = (b * p.t + tq) * row4 + h * 16u;
    var qr: array<vec4<f32>, 16>;
    var acc: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i = i + 1u) {
        qr[i] = vec4<f32>(qkv[q + i]);
        acc[i] = vec4<f32>(0.0);
    }
    var m = -3.0e38;
    var l = 0.0;
    for (var tk = t_start; tk <= t_last; tk = tk + 1u) {
        let row = (b * p.t + tk) * row4;
        let k = row + k_col + 2u * sl;
        let v = row + v_col + 2u * sl;
        let ka = vec4<f32>(qkv[k]);
        let kb = vec4<f32>(qkv[k + 1u]);
        let va = vec4<f32>(qkv[v]);
        let vb = vec4<f32>(qkv[v + 1u]);
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
        // Keys after this lane's query, or older than its window, leave it
        // unchanged (corr 1, e 0).
        let live = tk <= tq && (p.window == 0u || tq - tk < p.window);
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
    let o = (b * p.t + tq) * p.nh * 16u + h * 16u;
    for (var i = 0u; i < 16u; i = i + 1u) {
        out[o + i] = vec4<ot>(acc[i] * inv);
    }
}
