// attention_backward, phase 1 on 8-wide subgroups: attention_backward.wgsl's
// phase 1 (dk, dv and dS per key) for a head dim of exactly 64. Phases 0
// and 2 stay in attention_backward.wgsl; the host encodes phase 0 there,
// then this, then phase 2 there, with the same buffers and parameters.
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
// Needs a head dim of 64, the SUBGROUP feature and a subgroup size of
// exactly 8; the host runs attention_backward.wgsl's phase 1 otherwise.
// Grid: 8 lanes per (b, g, block of 8 keys), T padded to a multiple of 8;
// no early return inside a subgroup (every lane stays for the shuffles): a
// padded lane takes key T-1 and stores nothing.

struct Params {
    b: u32,
    t: u32,
    nh: u32,       // query heads
    nkv: u32,      // key/value heads (NH a multiple of NKV)
    hd: u32,       // head dim: 64
    nblocks: u32,  // ceil(T / 8)
    scale: f32,    // 1 / sqrt(64)
    phase: u32,    // 1
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
    // The whole subgroup is in range or out of it (the lanes are a multiple of 8).
    if (idx >= p.b * p.nkv * p.nblocks * 8u || arrayLength(&out) == 0u) {
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
