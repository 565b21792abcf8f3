// attention_backward, phases 1 and 2 on 8-wide subgroups: attention_backward
// .wgsl's phase 1 (dk, dv and dS per key) and phase 2 (dq per query) for a
// head dim of exactly 64. Phase 0 (D per query) stays in attention_backward
// .wgsl; the host encodes it there, then phases 1 and 2 here, with the same
// buffers and parameters.
//   For key s of KV head g and every query t >= s (t - s < window when
//   window > 0) of every query head h of g:
//   P = exp(q_t . k_s * scale - lse[t]), dP = dout_t . v_s,
//   dS = P (dP - D[t]) * scale (D from phase 0, in scratch[0 .. B*NH*T));
//   dk_s += sum dS q_t, dv_s += sum P dout_t; with `keep_ds`, dS into
//   scratch[B*NH*T ..] at (b, h, t, s) for phase 2.
//
// What changed from phase 1 of attention_backward.wgsl: there each lane (one
// key) loads every query's q row and dout row, 128 floats, itself: 128
// per-lane storage loads per (query, key) pair, which on llvmpipe (a storage
// load is a per-lane loop) held the whole backward at 4-5 % of the best
// matmul. Here the 8 lanes of a subgroup are 8 consecutive keys of one
// (b, g): for each query, lane L loads dims 8L .. 8L+8 of the q row and of
// the dout row (4 vec4 loads) and subgroupShuffle hands them to the others;
// k and v sit in private memory. The arithmetic and its order per output
// are phase 1's: the score and dP summed over dims 0..63 in order, dk and
// dv accumulated over the query heads, then the queries, in order; a query
// outside a lane's range adds nothing to it.
// Phase 2 likewise gives a subgroup 8 consecutive queries of one (b, h):
// for each key, lane L loads 8 dims of the k row (and of the v row when the
// scores are computed again, without `keep_ds`), shuffled to the others;
// q and dout sit in private memory.
// Needs a head dim of 64, the SUBGROUP feature and a subgroup size of
// exactly 8; the host runs attention_backward.wgsl otherwise.
// Grid: 8 lanes per (b, g, block of 8 keys) in phase 1, per (b, h, block of
// 8 queries) in phase 2, T padded to a multiple of 8; no early return inside
// a subgroup (every lane stays for the shuffles): a padded lane takes
// position T-1 and stores nothing.

struct Params {
    b: u32,
    t: u32,
    nh: u32,       // query heads
    nkv: u32,      // key/value heads (NH a multiple of NKV)
    hd: u32,       // head dim: 64
    nblocks: u32,  // ceil(T / 8)
    scale: f32,    // 1 / sqrt(64)
    phase: u32,    // 1: dk, dv (and dS); 2: dq
    stride: u32,   // invocations per row of the dispatch grid
    keep_ds: u32,  // 1: store dS for phase 2
    window: u32,   // sliding window; 0 = none
}

@group(0) @binding(0) var<storage, read_write> dqkv: array<vec4<f32>>; // (B*T, (NH + 2 NKV) 64)
@group(0) @binding(1) var<storage, read_write> scratch: array<f32>;    // D (B, NH, T), then dS (B, NH, T, T)
@group(0) @binding(2) var<storage, read> dout: array<vec4<f32>>;       // (B*T, NH*64)
@group(0) @binding(3) var<storage, read> qkv: array<vec4<f32>>;        // (B*T, (NH + 2 NKV) 64)
@group(0) @binding(4) var<storage, read> out: array<f32>;              // phases 0 and 2's; unused here
@group(0) @binding(5) var<storage, read> lse: array<f32>;              // (B, NH, T)
@group(0) @binding(6) var<storage, read> p: Params;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(subgroup_invocation_id) sl: u32) {
    let idx = gid.y * p.stride + gid.x;
    // `out` is phase 0's; named here so the binding stays in the layout.
    if (arrayLength(&out) == 0u) {
        return;
    }
    if (p.phase == 2u) {
        dq_phase(idx, sl);
    } else {
        dk_dv_phase(idx, sl);
    }
}

fn dk_dv_phase(idx: u32, sl: u32) {
    // The whole subgroup is in range or out of it (the lanes are a multiple of 8).
    if (idx >= p.b * p.nkv * p.nblocks * 8u) {
        return;
    }
    let block = idx / 8u;
    let tb = block % p.nblocks;
    let bg = block / p.nblocks; // b * NKV + g
    let g = bg % p.nkv;
    let b = bg / p.nkv;
    let ts_lane = tb * 8u + sl;
    let ts = min(ts_lane, p.t - 1u);
    let t_first = tb * 8u;                     // the subgroup's first key
    let t_last = min(tb * 8u + 7u, p.t - 1u); // and its last
    var end = p.t;                             // past the last query any lane sees
    if (p.window > 0u) {
        end = min(p.t, t_last + p.window);
    }

    let row4 = (p.nh + 2u * p.nkv) * 16u; // vec4s per qkv row
    let cq4 = p.nh * 16u;                 // vec4s per dout row
    let group = p.nh / p.nkv;
    let queries = p.b * p.nh * p.t;
    let k_own = (b * p.t + ts) * row4 + (p.nh + g) * 16u;
    let v_own = k_own + p.nkv * 16u;
    var kc: array<vec4<f32>, 16>;
    var vc: array<vec4<f32>, 16>;
    var dk: array<vec4<f32>, 16>;
    var dv: array<vec4<f32>, 16>;
    var qf: array<vec4<f32>, 16>;
    var gf: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i = i + 1u) {
        kc[i] = qkv[k_own + i];
        vc[i] = qkv[v_own + i];
        dk[i] = vec4<f32>(0.0);
        dv[i] = vec4<f32>(0.0);
    }
    let keep = p.keep_ds == 1u && ts_lane < p.t;
    for (var h = g * group; h < (g + 1u) * group; h = h + 1u) {
        let stat0 = (b * p.nh + h) * p.t; // lse / D index of query 0 of (b, h)
        let ds0 = queries + stat0 * p.t;   // dS index of (b, h, 0, 0)
        for (var tq = t_first; tq < end; tq = tq + 1u) {
            let q = (b * p.t + tq) * row4 + h * 16u + 2u * sl;
            let d = (b * p.t + tq) * cq4 + h * 16u + 2u * sl;
            let qa = qkv[q];
            let qb = qkv[q + 1u];
            let ga = dout[d];
            let gb = dout[d + 1u];
            var sc = 0.0;
            var dp = 0.0;
            for (var j = 0u; j < 8u; j = j + 1u) {
                let x = subgroupShuffle(qa, j);
                let y = subgroupShuffle(qb, j);
                let u = subgroupShuffle(ga, j);
                let w = subgroupShuffle(gb, j);
                qf[2u * j] = x;
                qf[2u * j + 1u] = y;
                gf[2u * j] = u;
                gf[2u * j + 1u] = w;
                let ka = kc[2u * j];
                let kb = kc[2u * j + 1u];
                let va = vc[2u * j];
                let vb = vc[2u * j + 1u];
                sc = sc + x.x * ka.x;
                sc = sc + x.y * ka.y;
                sc = sc + x.z * ka.z;
                sc = sc + x.w * ka.w;
                sc = sc + y.x * kb.x;
                sc = sc + y.y * kb.y;
                sc = sc + y.z * kb.z;
                sc = sc + y.w * kb.w;
                dp = dp + u.x * va.x;
                dp = dp + u.y * va.y;
                dp = dp + u.z * va.z;
                dp = dp + u.w * va.w;
                dp = dp + w.x * vb.x;
                dp = dp + w.y * vb.y;
                dp = dp + w.z * vb.z;
                dp = dp + w.w * vb.w;
            }
            let live = tq >= ts && (p.window == 0u || tq - ts < p.window);
            let prob = select(0.0, exp(sc * p.scale - lse[stat0 + tq]), live);
            let ds = select(0.0, prob * (dp - scratch[stat0 + tq]) * p.scale, live);
            for (var i = 0u; i < 16u; i = i + 1u) {
                dk[i] = dk[i] + ds * qf[i];
                dv[i] = dv[i] + prob * gf[i];
            }
            if (keep && live) {
                scratch[ds0 + tq * p.t + ts] = ds;
            }
        }
    }
    if (ts_lane >= p.t) {
        return;
    }
    for (var i = 0u; i < 16u; i = i + 1u) {
        dqkv[k_own + i] = dqkv[k_own + i] + dk[i];
        dqkv[v_own + i] = dqkv[v_own + i] + dv[i];
    }
}

fn dq_phase(idx: u32, sl: u32) {
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
    let t_first = tb * 8u;
    let t_last = min(tb * 8u + 7u, p.t - 1u);
    var t_start = 0u;
    if (p.window > 0u && t_first + 1u > p.window) {
        t_start = t_first + 1u - p.window;
    }

    let row4 = (p.nh + 2u * p.nkv) * 16u;
    let cq4 = p.nh * 16u;
    let kvh = h / (p.nh / p.nkv);
    let stat0 = (b * p.nh + h) * p.t;
    let ds0 = p.b * p.nh * p.t + stat0 * p.t;
    let own = (b * p.t + tq) * row4 + h * 16u;
    let own_dout = (b * p.t + tq) * cq4 + h * 16u;
    let keep = p.keep_ds == 1u;
    var qr: array<vec4<f32>, 16>;
    var gr: array<vec4<f32>, 16>;
    var dq: array<vec4<f32>, 16>;
    var kf: array<vec4<f32>, 16>;
    for (var i = 0u; i < 16u; i = i + 1u) {
        qr[i] = qkv[own + i];
        gr[i] = dout[own_dout + i];
        dq[i] = vec4<f32>(0.0);
    }
    let lse_s = lse[stat0 + tq];
    let dd_s = scratch[stat0 + tq];
    for (var tk = t_start; tk <= t_last; tk = tk + 1u) {
        let k = (b * p.t + tk) * row4 + (p.nh + kvh) * 16u + 2u * sl;
        let v = k + p.nkv * 16u;
        let ka = qkv[k];
        let kb = qkv[k + 1u];
        var va = vec4<f32>(0.0);
        var vb = vec4<f32>(0.0);
        if (!keep) {
            va = qkv[v];
            vb = qkv[v + 1u];
        }
        var sc = 0.0;
        var dp = 0.0;
        for (var j = 0u; j < 8u; j = j + 1u) {
            let x = subgroupShuffle(ka, j);
            let y = subgroupShuffle(kb, j);
            kf[2u * j] = x;
            kf[2u * j + 1u] = y;
            if (!keep) {
                let u = subgroupShuffle(va, j);
                let w = subgroupShuffle(vb, j);
                let qa = qr[2u * j];
                let qb = qr[2u * j + 1u];
                let ga = gr[2u * j];
                let gb = gr[2u * j + 1u];
                sc = sc + qa.x * x.x;
                sc = sc + qa.y * x.y;
                sc = sc + qa.z * x.z;
                sc = sc + qa.w * x.w;
                sc = sc + qb.x * y.x;
                sc = sc + qb.y * y.y;
                sc = sc + qb.z * y.z;
                sc = sc + qb.w * y.w;
                dp = dp + ga.x * u.x;
                dp = dp + ga.y * u.y;
                dp = dp + ga.z * u.z;
                dp = dp + ga.w * u.w;
                dp = dp + gb.x * w.x;
                dp = dp + gb.y * w.y;
                dp = dp + gb.z * w.z;
                dp = dp + gb.w * w.w;
            }
        }
        let live = tk <= tq && (p.window == 0u || tq - tk < p.window);
        var ds = 0.0;
        if (live) {
            if (keep) {
                ds = scratch[ds0 + tq * p.t + tk];
            } else {
                ds = exp(sc * p.scale - lse_s) * (dp - dd_s) * p.scale;
            }
        }
        for (var i = 0u; i < 16u; i = i + 1u) {
            dq[i] = dq[i] + ds * kf[i];
        }
    }
    if (tq_lane >= p.t) {
        return;
    }
    for (var i = 0u; i < 16u; i = i + 1u) {
        dqkv[own + i] = dqkv[own + i] + dq[i];
    }
}
