// attention_backward: twin of cpu::backward::attention_backward (causal,
// multi-head; qkv (B*T, 3C) = [q | k | v], head h at columns h*HD .. (h+1)*HD).
//   dout (B*T, C) in, dqkv (B*T, 3C) accumulated (+=). For query t, key s <= t:
//   P[t,s] = softmax_s(q_t . k_s * scale), dP[t,s] = dout_t . v_s,
//   D[t] = sum_s P[t,s] dP[t,s], dS[t,s] = P[t,s] (dP[t,s] - D[t]);
//   dq_t += scale * sum_{s<=t} dS[t,s] k_s
//   dk_s += scale * sum_{t>=s} dS[t,s] q_t
//   dv_s += sum_{t>=s} P[t,s] dout_t
//
// Two dispatches of this one pipeline, told apart by `phase`:
//   phase 0, one invocation per (b, h, query t): one pass over the keys with
//     an online softmax (running max, sum and sum of P dP, rescaled when the
//     max grows) stores stats (B, NH, T, 2) = (logsumexp of the scaled scores, D);
//   phase 1, one invocation per (b, h, position s, chunk of up to 64 head
//     dims): with those stats, P is exp(score - logsumexp) for any (t, s), so
//     the invocation accumulates dq of query s (over keys <= s) and dk, dv of
//     key s (over queries >= s) for its chunk, and owns those slots of dqkv:
//     no atomics. Head dims above 64 are split into chunks as in
//     attention_forward. Phase 1 must run after phase 0.
// No (T, T) matrix is stored; work is O(T^2 HD) per (b, h), like the forward.

struct Params {
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
    hd: u32,       // head dim = C / NH
    nchunks: u32,  // ceil(HD / 64)
    scale: f32,    // 1 / sqrt(HD)
    phase: u32,    // 0: per-query stats; 1: gradients
    stride: u32,   // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> stats: array<f32>; // (B, NH, T, 2)
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<f32>;
@group(0) @binding(4) var<storage, read> p: Params;

const CHUNK: u32 = 64u;

// q_a . k_b * scale, over the full head (a = query row, b = key row offsets).
fn score(qa: u32, kb: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < p.hd; d = d + 1u) {
        s = s + qkv[qa + d] * qkv[kb + d];
    }
    return s * p.scale;
}

// dout_a . v_b over the full head.
fn dp(da: u32, vb: u32) -> f32 {
    var s = 0.0;
    for (var d = 0u; d < p.hd; d = d + 1u) {
        s = s + dout[da + d] * qkv[vb + d];
    }
    return s;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var idx = gid.y * p.stride + gid.x;
    let c3 = 3u * p.c;
    if (p.phase == 0u) {
        if (idx >= p.b * p.nh * p.t) {
            return;
        }
        let tq = idx % p.t;
        let h = (idx / p.t) % p.nh;
        let b = idx / (p.t * p.nh);
        let q = (b * p.t + tq) * c3 + h * p.hd;
        let dq_row = (b * p.t + tq) * p.c + h * p.hd;
        var m = -3.0e38;
        var l = 0.0;
        var pdp = 0.0; // sum of e * dP, rescaled with l
        for (var tk = 0u; tk <= tq; tk = tk + 1u) {
            let row = (b * p.t + tk) * c3 + h * p.hd;
            let s = score(q, row + p.c);
            let m_new = max(m, s);
            let corr = exp(m - m_new);
            let e = exp(s - m_new);
            l = l * corr + e;
            pdp = pdp * corr + e * dp(dq_row, row + 2u * p.c);
            m = m_new;
        }
        stats[2u * idx] = m + log(l);
        stats[2u * idx + 1u] = pdp / l;
        return;
    }

    if (idx >= p.b * p.nh * p.t * p.nchunks) {
        return;
    }
    let chunk = idx % p.nchunks;
    idx = idx / p.nchunks;
    let ts = idx % p.t;
    idx = idx / p.t;
    let h = idx % p.nh;
    let b = idx / p.nh;
    let d0 = chunk * CHUNK;
    let dn = min(CHUNK, p.hd - d0);
    let stat0 = (b * p.nh + h) * p.t; // stats index of query 0 of this (b, h)
    let own = (b * p.t + ts) * c3 + h * p.hd; // q of position s; k at +C, v at +2C
    let own_dout = (b * p.t + ts) * p.c + h * p.hd;

    var dq: array<f32, 64>;
    var dk: array<f32, 64>;
    var dv: array<f32, 64>;
    for (var d = 0u; d < dn; d = d + 1u) {
        dq[d] = 0.0;
        dk[d] = 0.0;
        dv[d] = 0.0;
    }
    // dq of query s: its keys tk <= s
    let lse_s = stats[2u * (stat0 + ts)];
    let dd_s = stats[2u * (stat0 + ts) + 1u];
    for (var tk = 0u; tk <= ts; tk = tk + 1u) {
        let row = (b * p.t + tk) * c3 + h * p.hd;
        let prob = exp(score(own, row + p.c) - lse_s);
        let ds = prob * (dp(own_dout, row + 2u * p.c) - dd_s) * p.scale;
        for (var d = 0u; d < dn; d = d + 1u) {
            dq[d] = dq[d] + ds * qkv[row + p.c + d0 + d];
        }
    }
    // dk, dv of key s: the queries tq >= s
    for (var tq = ts; tq < p.t; tq = tq + 1u) {
        let row = (b * p.t + tq) * c3 + h * p.hd;
        let drow = (b * p.t + tq) * p.c + h * p.hd;
        let prob = exp(score(row, own + p.c) - stats[2u * (stat0 + tq)]);
        let ds = prob * (dp(drow, own + 2u * p.c) - stats[2u * (stat0 + tq) + 1u]) * p.scale;
        for (var d = 0u; d < dn; d = d + 1u) {
            dk[d] = dk[d] + ds * qkv[row + d0 + d];
            dv[d] = dv[d] + prob * dout[drow + d0 + d];
        }
    }
    for (var d = 0u; d < dn; d = d + 1u) {
        dqkv[own + d0 + d] = dqkv[own + d0 + d] + dq[d];
        dqkv[own + p.c + d0 + d] = dqkv[own + p.c + d0 + d] + dk[d];
        dqkv[own + 2u * p.c + d0 + d] = dqkv[own + 2u * p.c + d0 + d] + dv[d];
    }
}
