// attention_backward, version 2: twin of cpu::backward::attention_backward
// (causal, multi-head; qkv (B*T, 3C) = [q | k | v], head h at columns
// h*HD .. (h+1)*HD).
//   dout (B*T, C) in, dqkv (B*T, 3C) accumulated (+=). For query t, key s <= t:
//   P[t,s] = exp(q_t . k_s * scale - lse[t]), dP[t,s] = dout_t . v_s,
//   D[t] = sum_s P[t,s] dP[t,s] = dout_t . out_t, dS[t,s] = P[t,s] (dP[t,s] - D[t]);
//   dq_t += scale * sum_{s<=t} dS[t,s] k_s
//   dk_s += scale * sum_{t>=s} dS[t,s] q_t
//   dv_s += sum_{t>=s} P[t,s] dout_t
// lse (B, NH, T) is the forward's log-sum-exp of each query's scaled scores
// (attention_forward with `with_lse`), out (B*T, C) the forward's output.
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
//   phase 1, one invocation per (b, h, key s, chunk of up to 64 head dims):
//     for every query t >= s, the score, P, dP and dS over the full head;
//     accumulates dk_s and dv_s for its chunk; with `keep_ds`, chunk 0
//     writes scale * dS[t, s] into scratch[B*NH*T ..] at (b, h, t, s);
//   phase 2, one invocation per (b, h, query t, chunk): dq_t for its chunk,
//     from the stored dS, or (without `keep_ds`, when the (B, NH, T, T)
//     scratch would not fit one binding) from the scores computed again.
// Each invocation owns its slots of dqkv: no atomics. Head dims above 64 are
// split into chunks as in attention_forward.

struct Params {
    b: u32,
    t: u32,
    c: u32,
    nh: u32,
    hd: u32,       // head dim = C / NH
    nchunks: u32,  // ceil(HD / 64)
    scale: f32,    // 1 / sqrt(HD)
    phase: u32,    // 0: D; 1: dk, dv (and dS); 2: dq
    stride: u32,   // invocations per row of the dispatch grid
    keep_ds: u32,  // 1: phase 1 stores dS for phase 2
}

@group(0) @binding(0) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(1) var<storage, read_write> scratch: array<f32>; // D (B, NH, T), then dS (B, NH, T, T)
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<f32>;
@group(0) @binding(4) var<storage, read> out: array<f32>;
@group(0) @binding(5) var<storage, read> lse: array<f32>; // (B, NH, T)
@group(0) @binding(6) var<storage, read> p: Params;

const CHUNK: u32 = 64u;

// a . b over head dims lo .. hi, both read from storage (a from qkv or dout).
fn dot_qkv(a: u32, b: u32, lo: u32, hi: u32) -> f32 {
    var s = 0.0;
    for (var d = lo; d < hi; d = d + 1u) {
        s = s + qkv[a + d] * qkv[b + d];
    }
    return s;
}

fn dot_dout(a: u32, b: u32, lo: u32, hi: u32) -> f32 {
    var s = 0.0;
    for (var d = lo; d < hi; d = d + 1u) {
        s = s + dout[a + d] * qkv[b + d];
    }
    return s;
}

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var idx = gid.y * p.stride + gid.x;
    let c3 = 3u * p.c;
    let queries = p.b * p.nh * p.t;
    if (p.phase == 0u) {
        if (idx >= queries) {
            return;
        }
        let tq = idx % p.t;
        let h = (idx / p.t) % p.nh;
        let b = idx / (p.t * p.nh);
        let row = (b * p.t + tq) * p.c + h * p.hd;
        var dd = 0.0;
        for (var d = 0u; d < p.hd; d = d + 1u) {
            dd = dd + dout[row + d] * out[row + d];
        }
        scratch[idx] = dd;
        return;
    }

    if (idx >= queries * p.nchunks) {
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
    let d1 = d0 + dn;
    let stat0 = (b * p.nh + h) * p.t; // lse / D index of query 0 of this (b, h)
    let ds0 = queries + stat0 * p.t;   // dS index of (b, h, 0, 0)
    let own = (b * p.t + ts) * c3 + h * p.hd; // q of position ts; k at +C, v at +2C
    let own_dout = (b * p.t + ts) * p.c + h * p.hd;

    if (p.phase == 1u) {
        // Key ts: its k and v (this chunk) held, every query tq >= ts visited once.
        var kc: array<f32, 64>;
        var vc: array<f32, 64>;
        var qc: array<f32, 64>;
        var dc: array<f32, 64>;
        var dk: array<f32, 64>;
        var dv: array<f32, 64>;
        for (var d = 0u; d < dn; d = d + 1u) {
            kc[d] = qkv[own + p.c + d0 + d];
            vc[d] = qkv[own + 2u * p.c + d0 + d];
            dk[d] = 0.0;
            dv[d] = 0.0;
        }
        let keep = p.keep_ds == 1u && chunk == 0u;
        for (var tq = ts; tq < p.t; tq = tq + 1u) {
            let row = (b * p.t + tq) * c3 + h * p.hd;
            let drow = (b * p.t + tq) * p.c + h * p.hd;
            // Over the full head, in order: dims before the chunk, the chunk, after.
            var sc = dot_qkv(row, own + p.c, 0u, d0);
            var dp = dot_dout(drow, own + 2u * p.c, 0u, d0);
            for (var d = 0u; d < dn; d = d + 1u) {
                let q = qkv[row + d0 + d];
                let g = dout[drow + d0 + d];
                qc[d] = q;
                dc[d] = g;
                sc = sc + q * kc[d];
                dp = dp + g * vc[d];
            }
            sc = sc + dot_qkv(row, own + p.c, d1, p.hd);
            dp = dp + dot_dout(drow, own + 2u * p.c, d1, p.hd);
            let prob = exp(sc * p.scale - lse[stat0 + tq]);
            let ds = prob * (dp - scratch[stat0 + tq]) * p.scale;
            for (var d = 0u; d < dn; d = d + 1u) {
                dk[d] = dk[d] + ds * qc[d];
                dv[d] = dv[d] + prob * dc[d];
            }
            if (keep) {
                scratch[ds0 + tq * p.t + ts] = ds;
            }
        }
        for (var d = 0u; d < dn; d = d + 1u) {
            dqkv[own + p.c + d0 + d] = dqkv[own + p.c + d0 + d] + dk[d];
            dqkv[own + 2u * p.c + d0 + d] = dqkv[own + 2u * p.c + d0 + d] + dv[d];
        }
        return;
    }

    // phase 2: query ts, its keys tk <= ts.
    var dq: array<f32, 64>;
    for (var d = 0u; d < dn; d = d + 1u) {
        dq[d] = 0.0;
    }
    let lse_s = lse[stat0 + ts];
    let dd_s = scratch[stat0 + ts];
    for (var tk = 0u; tk <= ts; tk = tk + 1u) {
        let row = (b * p.t + tk) * c3 + h * p.hd;
        var ds = 0.0;
        if (p.keep_ds == 1u) {
            ds = scratch[ds0 + ts * p.t + tk];
        } else {
            let sc = dot_qkv(own, row + p.c, 0u, p.hd);
            let dp = dot_dout(own_dout, row + 2u * p.c, 0u, p.hd);
            ds = exp(sc * p.scale - lse_s) * (dp - dd_s) * p.scale;
        }
        for (var d = 0u; d < dn; d = d + 1u) {
            dq[d] = dq[d] + ds * qkv[row + p.c + d0 + d];
        }
    }
    for (var d = 0u; d < dn; d = d + 1u) {
        dqkv[own + d0 + d] = dqkv[own + d0 + d] + dq[d];
    }
}
