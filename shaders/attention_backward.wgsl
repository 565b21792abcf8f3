// attention_backward, version 2: twin of cpu::backward::attention_backward
// (causal, grouped-query, optionally over a sliding window, as
// attention_forward: qkv (B*T, (NH + 2 NKV) HD) = [q: NH*HD | k: NKV*HD |
// v: NKV*HD], query head h reads KV head h / (NH / NKV)).
//   dout (B*T, NH*HD) in, dqkv accumulated (+=). For query t, key s <= t
//   (and t - s < window when window > 0), in the query's head h and its KV
//   head g:
//   P[t,s] = exp(q_t . k_s * scale - lse[t]), dP[t,s] = dout_t . v_s,
//   D[t] = sum_s P[t,s] dP[t,s] = dout_t . out_t, dS[t,s] = P[t,s] (dP[t,s] - D[t]);
//   dq_t += scale * sum_{s<=t} dS[t,s] k_s
//   dk_s += scale * sum_{h in g} sum_{t>=s} dS[t,s] q_t
//   dv_s += sum_{h in g} sum_{t>=s} P[t,s] dout_t
// lse (B, NH, T) is the forward's log-sum-exp of each query's scaled scores
// (attention_forward with `with_lse`), out (B*T, NH*HD) the forward's output.
//
// What changed from version 1 (a pass per query to find the softmax's
// normaliser and D, then per position both the query's and the key's side,
// each recomputing its scores: every score and dP three times, ~960 scalar
// storage loads per (t, s) pair at HD = 64): the normaliser comes from the
// forward, D is one dot product per query, and every score and dP is
// computed once, by the key's invocation, which writes scale * dS into a
// (B, NH, T, T) scratch that the query's side then only reads. The key's k
// and v, and the query row's q and dout, are held in private arrays while
// they are reused (on llvmpipe a storage load is a per-lane gather; a
// private one is not): ~130 storage loads per pair for dk and dv, ~65 for dq.
//
// Three dispatches of this one pipeline, told apart by `phase`, in order:
//   phase 0, one invocation per (b, h, query t): D[t] = dout_t . out_t into
//     scratch[0 .. B*NH*T);
//   phase 1, one invocation per (b, KV head g, key s, chunk of up to 64 head
//     dims): for every query head h of g and query t >= s, the score, P, dP
//     and dS over the full head; accumulates dk_s and dv_s for its chunk;
//     with `keep_ds`, chunk 0 writes scale * dS[t, s] into
//     scratch[B*NH*T ..] at (b, h, t, s);
//   phase 2, one invocation per (b, h, query t, chunk): dq_t for its chunk,
//     from the stored dS, or (without `keep_ds`, when the (B, NH, T, T)
//     scratch would not fit one binding) from the scores computed again.
// Each invocation owns its slots of dqkv: no atomics. Head dims above 64 are
// split into chunks as in attention_forward.

struct Params {
    b: u32,
    t: u32,
    nh: u32,       // query heads
    nkv: u32,      // key/value heads (NH a multiple of NKV)
    hd: u32,       // head dim
    nchunks: u32,  // ceil(HD / 64)
    scale: f32,    // 1 / sqrt(HD)
    phase: u32,    // 0: D; 1: dk, dv (and dS); 2: dq
    stride: u32,   // invocations per row of the dispatch grid
    keep_ds: u32,  // 1: phase 1 stores dS for phase 2
    window: u32,   // sliding window; 0 = none
}

@group(0) @binding(0) var<storage, read_write> dqkv: array<f32>;    // (B*T, (NH + 2 NKV) HD)
@group(0) @binding(1) var<storage, read_write> scratch: array<f32>; // D (B, NH, T), then dS (B, NH, T, T)
@group(0) @binding(2) var<storage, read> dout: array<f32>;          // (B*T, NH*HD)
@group(0) @binding(3) var<storage, read> qkv: array<f32>;           // (B*T, (NH + 2 NKV) HD)
@group(0) @binding(4) var<storage, read> out: array<f32>;           // (B*T, NH*HD)
@group(0) @binding(5) var<storage, read> lse: array<f32>;           // (B, NH, T)
@group(0) @binding(6) var<storage, read> p: Params;

const CHUNK: u32 = 64u;

// a . b over head dims lo .. hi, both read from storage (a from qkv or dout).
// Every loop over head dims below takes 4 dims an iteration (then the rest
// one by one), in the same order as one at a time: llvmpipe stops a shader
// after 65,535 loop iterations in one invocation, which keys or queries x
// head dims one at a time reached at ~500 tokens for HD 64.
fn dot_qkv(a: u32, b: u32, lo: u32, hi: u32) -> f32 {
    var s = 0.0;
    var d = lo;
    for (; d + 4u <= hi; d = d + 4u) {
        s = s + qkv[a + d] * qkv[b + d];
        s = s + qkv[a + d + 1u] * qkv[b + d + 1u];
        s = s + qkv[a + d + 2u] * qkv[b + d + 2u];
        s = s + qkv[a + d + 3u] * qkv[b + d + 3u];
    }
    for (; d < hi; d = d + 1u) {
        s = s + qkv[a + d] * qkv[b + d];
    }
    return s;
}

fn dot_dout(a: u32, b: u32, lo: u32, hi: u32) -> f32 {
    var s = 0.0;
    var d = lo;
    for (; d + 4u <= hi; d = d + 4u) {
        s = s + dout[a + d] * qkv[b + d];
        s = s + dout[a + d + 1u] * qkv[b + d + 1u];
        s = s + dout[a + d + 2u] * qkv[b + d + 2u];
        s = s + dout[a + d + 3u] * qkv[b + d + 3u];
    }
    for (; d < hi; d = d + 1u) {
        s = s + dout[a + d] * qkv[b + d];
    }
    return s;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var idx = gid.y * p.stride + gid.x;
    let row_len = (p.nh + 2u * p.nkv) * p.hd; // a qkv row
    let cq = p.nh * p.hd;                     // a dout / out row
    let group = p.nh / p.nkv;
    let queries = p.b * p.nh * p.t;
    if (p.phase == 0u) {
        if (idx >= queries) {
            return;
        }
        let tq = idx % p.t;
        let h = (idx / p.t) % p.nh;
        let b = idx / (p.t * p.nh);
        let row = (b * p.t + tq) * cq + h * p.hd;
        var dd = 0.0;
        for (var d = 0u; d < p.hd; d = d + 1u) {
            dd = dd + dout[row + d] * out[row + d];
        }
        scratch[idx] = dd;
        return;
    }

    // phase 1 runs per KV head, phase 2 per query head.
    var heads = p.nh;
    if (p.phase == 1u) {
        heads = p.nkv;
    }
    if (idx >= p.b * heads * p.t * p.nchunks) {
        return;
    }
    let chunk = idx % p.nchunks;
    idx = idx / p.nchunks;
    let ts = idx % p.t;
    idx = idx / p.t;
    let hh = idx % heads;
    let b = idx / heads;
    let d0 = chunk * CHUNK;
    let dn = min(CHUNK, p.hd - d0);
    let dn4 = dn & ~3u;
    let d1 = d0 + dn;

    if (p.phase == 1u) {
        // Key ts of KV head hh: its k and v (this chunk) held, every query
        // tq >= ts (within the window) of every query head of the group
        // visited once.
        let k_own = (b * p.t + ts) * row_len + (p.nh + hh) * p.hd;
        let v_own = k_own + p.nkv * p.hd;
        var kc: array<f32, 64>;
        var vc: array<f32, 64>;
        var qc: array<f32, 64>;
        var dc: array<f32, 64>;
        var dk: array<f32, 64>;
        var dv: array<f32, 64>;
        for (var d = 0u; d < dn; d = d + 1u) {
            kc[d] = qkv[k_own + d0 + d];
            vc[d] = qkv[v_own + d0 + d];
            dk[d] = 0.0;
            dv[d] = 0.0;
        }
        var last = p.t;
        if (p.window > 0u) {
            last = min(p.t, ts + p.window);
        }
        let keep = p.keep_ds == 1u && chunk == 0u;
        for (var h = hh * group; h < (hh + 1u) * group; h = h + 1u) {
            let stat0 = (b * p.nh + h) * p.t; // lse / D index of query 0 of (b, h)
            let ds0 = queries + stat0 * p.t;   // dS index of (b, h, 0, 0)
            for (var tq = ts; tq < last; tq = tq + 1u) {
                let row = (b * p.t + tq) * row_len + h * p.hd;
                let drow = (b * p.t + tq) * cq + h * p.hd;
                // Over the full head, in order: dims before the chunk, the chunk, after.
                var sc = dot_qkv(row, k_own, 0u, d0);
                var dp = dot_dout(drow, v_own, 0u, d0);
                var d = 0u;
                for (; d < dn4; d = d + 4u) {
                    let q0 = qkv[row + d0 + d];
                    let g0 = dout[drow + d0 + d];
                    qc[d] = q0;
                    dc[d] = g0;
                    sc = sc + q0 * kc[d];
                    dp = dp + g0 * vc[d];
                    let q1 = qkv[row + d0 + d + 1u];
                    let g1 = dout[drow + d0 + d + 1u];
                    qc[d + 1u] = q1;
                    dc[d + 1u] = g1;
                    sc = sc + q1 * kc[d + 1u];
                    dp = dp + g1 * vc[d + 1u];
                    let q2 = qkv[row + d0 + d + 2u];
                    let g2 = dout[drow + d0 + d + 2u];
                    qc[d + 2u] = q2;
                    dc[d + 2u] = g2;
                    sc = sc + q2 * kc[d + 2u];
                    dp = dp + g2 * vc[d + 2u];
                    let q3 = qkv[row + d0 + d + 3u];
                    let g3 = dout[drow + d0 + d + 3u];
                    qc[d + 3u] = q3;
                    dc[d + 3u] = g3;
                    sc = sc + q3 * kc[d + 3u];
                    dp = dp + g3 * vc[d + 3u];
                }
                for (; d < dn; d = d + 1u) {
                    let q = qkv[row + d0 + d];
                    let g = dout[drow + d0 + d];
                    qc[d] = q;
                    dc[d] = g;
                    sc = sc + q * kc[d];
                    dp = dp + g * vc[d];
                }
                sc = sc + dot_qkv(row, k_own, d1, p.hd);
                dp = dp + dot_dout(drow, v_own, d1, p.hd);
                let prob = exp(sc * p.scale - lse[stat0 + tq]);
                let ds = prob * (dp - scratch[stat0 + tq]) * p.scale;
                d = 0u;
                for (; d < dn4; d = d + 4u) {
                    dk[d] = dk[d] + ds * qc[d];
                    dv[d] = dv[d] + prob * dc[d];
                    dk[d + 1u] = dk[d + 1u] + ds * qc[d + 1u];
                    dv[d + 1u] = dv[d + 1u] + prob * dc[d + 1u];
                    dk[d + 2u] = dk[d + 2u] + ds * qc[d + 2u];
                    dv[d + 2u] = dv[d + 2u] + prob * dc[d + 2u];
                    dk[d + 3u] = dk[d + 3u] + ds * qc[d + 3u];
                    dv[d + 3u] = dv[d + 3u] + prob * dc[d + 3u];
                }
                for (; d < dn; d = d + 1u) {
                    dk[d] = dk[d] + ds * qc[d];
                    dv[d] = dv[d] + prob * dc[d];
                }
                if (keep) {
                    scratch[ds0 + tq * p.t + ts] = ds;
                }
            }
        }
        for (var d = 0u; d < dn; d = d + 1u) {
            dqkv[k_own + d0 + d] = dqkv[k_own + d0 + d] + dk[d];
            dqkv[v_own + d0 + d] = dqkv[v_own + d0 + d] + dv[d];
        }
        return;
    }

    // phase 2: query ts of head hh, its keys tk <= ts (within the window).
    let h = hh;
    let kvh = h / group;
    let stat0 = (b * p.nh + h) * p.t;
    let ds0 = queries + stat0 * p.t;
    let own = (b * p.t + ts) * row_len + h * p.hd;
    let own_dout = (b * p.t + ts) * cq + h * p.hd;
    var dq: array<f32, 64>;
    for (var d = 0u; d < dn; d = d + 1u) {
        dq[d] = 0.0;
    }
    let lse_s = lse[stat0 + ts];
    let dd_s = scratch[stat0 + ts];
    var first = 0u;
    if (p.window > 0u && ts >= p.window) {
        first = ts + 1u - p.window;
    }
    for (var tk = first; tk <= ts; tk = tk + 1u) {
        let k_row = (b * p.t + tk) * row_len + (p.nh + kvh) * p.hd;
        var ds = 0.0;
        if (p.keep_ds == 1u) {
            ds = scratch[ds0 + ts * p.t + tk];
        } else {
            let sc = dot_qkv(own, k_row, 0u, p.hd);
            let dp = dot_dout(own_dout, k_row + p.nkv * p.hd, 0u, p.hd);
            ds = exp(sc * p.scale - lse_s) * (dp - dd_s) * p.scale;
        }
        var d = 0u;
        for (; d < dn4; d = d + 4u) {
            dq[d] = dq[d] + ds * qkv[k_row + d0 + d];
            dq[d + 1u] = dq[d + 1u] + ds * qkv[k_row + d0 + d + 1u];
            dq[d + 2u] = dq[d + 2u] + ds * qkv[k_row + d0 + d + 2u];
            dq[d + 3u] = dq[d + 3u] + ds * qkv[k_row + d0 + d + 3u];
        }
        for (; d < dn; d = d + 1u) {
            dq[d] = dq[d] + ds * qkv[k_row + d0 + d];
        }
    }
    for (var d = 0u; d < dn; d = d + 1u) {
        dqkv[own + d0 + d] = dqkv[own + d0 + d] + dq[d];
    }
}
