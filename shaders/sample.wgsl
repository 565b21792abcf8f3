// sample: the next token of each output, drawn on the device from a row of
// logits, so that only token ids travel back to the first pipeline stage.
//
// Twin of sampling::sample_row (see src/sampling.rs for the semantics).
// Output o reads logits row rows[o] (its first v of ld floats) and the
// uniform uniforms[o] in [0, 1), and writes out[o]. One workgroup per output;
// workgroups are laid out in a grid of `groups_x` per row, and those past n
// write nothing.
//
// Greedy (temperature 0): argmax, lowest index on ties, by a tree reduction.
// Otherwise, with z = logit / temperature and key(z) the order-preserving
// map of f32 onto u32 (so thresholds are exact token values):
// 1. max and min key (tree reductions);
// 2. top-k: the largest key tk with count(key >= tk) >= k, i.e. the k-th
//    largest z, found by a search over keys: each pass evaluates M
//    thresholds evenly spread over the remaining interval and keeps the
//    piece between the last that passes and the first that fails, so the
//    interval shrinks (M+1)-fold per pass: PASSES passes cover 2^32 keys;
// 3. top-p: the kept mass K = mass(key >= tk), mass(S) = sum of
//    exp(z - zmax) over S; then the largest key tp >= tk with
//    mass(key >= tp) >= top_p * K, by the same search;
// 4. the draw: invocation i sums the kept mass of its contiguous chunk of
//    the row; a scan of the chunk sums finds the chunk where the cumulative
//    mass first exceeds u * total, and its invocation walks the chunk to the
//    token. Rounding can leave that walk short of u * total: it then takes
//    the chunk's last token with mass (which the scan put at the boundary).
// Every barrier sits in uniform control flow: the branches around them test
// only the parameters, the loops around them have constant bounds.

struct Params {
    n: u32,           // outputs (workgroups that write)
    v: u32,           // tokens per row (columns sampled), < 2^24
    ld: u32,          // row stride of logits, in floats (>= v)
    groups_x: u32,    // workgroups per row of the dispatch grid
    temperature: f32, // 0 = greedy
    top_k: u32,       // 0 = off (the host passes 0 for k >= v)
    top_p: f32,       // 1 = off
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> out: array<u32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<u32>;
@group(0) @binding(3) var<storage, read> uniforms: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 64u;     // invocations per workgroup (a power of two)
const M: u32 = 16u;      // thresholds per search pass (divides WG)
const PASSES: u32 = 8u;  // (M + 1)^PASSES >= 2^32
const G: u32 = WG / M;   // first-stage partial sums per threshold
const NONE: u32 = 0xffffffffu;

var<workgroup> part: array<f32, M * WG>; // per threshold, per invocation
var<workgroup> stage1: array<f32, WG>;   // M * G first-stage sums
var<workgroup> res: array<f32, M>;       // f(threshold j)
var<workgroup> uval: array<u32, WG>;     //: key max / argmax value
var<workgroup> uidx: array<u32, WG>;     //: key min / argmax index
var<workgroup> fval: array<f32, WG>;     //: argmax value / chunk sums

var<private> lid: u32;
var<private> base: u32; // offset of this output's logits row

// z's key: order-preserving (a < b iff key(a) < key(b), -0 = +0).
fn key_of(z: f32) -> u32 {
    let b = bitcast<u32>(select(z, 0.0, z == 0.0));
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn z_of(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

fn z_at(i: u32) -> f32 {
    return logits[base + i] / p.temperature;
}

// For each threshold th[j], sum over the row's tokens with key >= th[j] of
// 1 (count) or exp(z - zmax) (mass), reduced over the workgroup.
fn evaluate(th: array<u32, M>, mass: bool, zmax: f32) -> array<f32, M> {
    var acc: array<f32, M>;
    for (var i = lid; i < p.v; i = i + WG) {
        let z = z_at(i);
        let k = key_of(z);
        var w = 1.0;
        if (mass) {
            w = exp(z - zmax);
        }
        for (var j = 0u; j < M; j = j + 1u) {
            acc[j] = acc[j] + select(0.0, w, k >= th[j]);
        }
    }
    for (var j = 0u; j < M; j = j + 1u) {
        part[j * WG + lid] = acc[j];
    }
    workgroupBarrier();
    {
        // stage 1: G sums of M partials per threshold
        let j = lid / G;
        let g = lid % G;
        var s = 0.0;
        for (var t = 0u; t < M; t = t + 1u) {
            s = s + part[j * WG + g * M + t];
        }
        stage1[j * G + g] = s;
    }
    workgroupBarrier();
    if (lid < M) {
        var s = 0.0;
        for (var g = 0u; g < G; g = g + 1u) {
            s = s + stage1[lid * G + g];
        }
        res[lid] = s;
    }
    workgroupBarrier();
    var r: array<f32, M>;
    for (var j = 0u; j < M; j = j + 1u) {
        r[j] = res[j];
    }
    workgroupBarrier(); // res is rewritten by the next call
    return r;
}

// The largest key t in [lo, hi] with f(t) >= goal (lo when none), where
// f(t) = count or mass of key >= t (non-increasing in t).
fn search(lo0: u32, hi0: u32, mass: bool, zmax: f32, goal: f32) -> u32 {
    var lo = lo0;
    var hi = hi0;
    for (var it = 0u; it < PASSES; it = it + 1u) {
        let span = hi - lo;
        let step = span / (M + 1u) + 1u;
        var th: array<u32, M>;
        for (var j = 0u; j < M; j = j + 1u) {
            th[j] = lo + min((j + 1u) * step, span);
        }
        let f = evaluate(th, mass, zmax);
        // f is non-increasing in j: the passing thresholds are a prefix
        var pass_n = 0u;
        for (var j = 0u; j < M; j = j + 1u) {
            pass_n = pass_n + select(0u, 1u, f[j] >= goal);
        }
        if (pass_n > 0u) {
            lo = th[pass_n - 1u];
        }
        if (pass_n < M) {
            hi = max(th[pass_n], lo + 1u) - 1u;
        }
    }
    return lo;
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    lid = local;
    let o = wid.y * p.groups_x + wid.x;
    let writes = o < p.n;
    let oc = min(o, max(p.n, 1u) - 1u);
    base = rows[oc] * p.ld;

    if (p.temperature == 0.0) {
        // greedy: argmax, lowest index on ties
        var bv = 0.0;
        var bi = NONE;
        for (var i = lid; i < p.v; i = i + WG) {
            let x = logits[base + i];
            if (bi == NONE || x > bv) {
                bv = x;
                bi = i;
            }
        }
        fval[lid] = bv;
        uidx[lid] = bi;
        workgroupBarrier();
        for (var half = WG / 2u; half > 0u; half = half / 2u) {
            if (lid < half) {
                let v2 = fval[lid + half];
                let i2 = uidx[lid + half];
                let v1 = fval[lid];
                let i1 = uidx[lid];
                if (i2 != NONE && (i1 == NONE || v2 > v1 || (v2 == v1 && i2 < i1))) {
                    fval[lid] = v2;
                    uidx[lid] = i2;
                }
            }
            workgroupBarrier();
        }
        if (lid == 0u && writes) {
            out[o] = uidx[0];
        }
    } else {
        // 1. max and min key
        var kmax = 0u;
        var kmin = NONE;
        for (var i = lid; i < p.v; i = i + WG) {
            let k = key_of(z_at(i));
            kmax = max(kmax, k);
            kmin = min(kmin, k);
        }
        uval[lid] = kmax;
        uidx[lid] = kmin;
        workgroupBarrier();
        for (var half = WG / 2u; half > 0u; half = half / 2u) {
            if (lid < half) {
                uval[lid] = max(uval[lid], uval[lid + half]);
                uidx[lid] = min(uidx[lid], uidx[lid + half]);
            }
            workgroupBarrier();
        }
        kmax = uval[0];
        kmin = uidx[0];
        let zmax = z_of(kmax);
        workgroupBarrier(); // uval, uidx are free again

        // 2. top-k
        var tau = kmin;
        if (p.top_k > 0u) {
            tau = search(kmin, kmax, false, zmax, f32(p.top_k));
        }
        // 3. top-p
        if (p.top_p < 1.0) {
            var th: array<u32, M>;
            for (var j = 0u; j < M; j = j + 1u) {
                th[j] = tau;
            }
            let kept = evaluate(th, true, zmax)[0];
            tau = search(tau, kmax, true, zmax, p.top_p * kept);
        }

        // 4. the draw, by inverse CDF in token order
        let chunk = (p.v + WG - 1u) / WG;
        let c0 = min(lid * chunk, p.v);
        let c1 = min(c0 + chunk, p.v);
        var s = 0.0;
        for (var i = c0; i < c1; i = i + 1u) {
            let z = z_at(i);
            if (key_of(z) >= tau) {
                s = s + exp(z - zmax);
            }
        }
        fval[lid] = s;
        workgroupBarrier();
        if (lid == 0u) {
            var cum = 0.0;
            for (var c = 0u; c < WG; c = c + 1u) {
                cum = cum + fval[c];
                fval[c] = cum;
            }
        }
        workgroupBarrier();
        let total = fval[WG - 1u]; // >= 1: the max token is always kept
        var x = clamp(uniforms[oc], 0.0, 1.0) * total;
        if (x >= total) {
            x = bitcast<f32>(bitcast<u32>(total) - 1u); // the float below
        }
        let before = select(0.0, fval[max(lid, 1u) - 1u], lid > 0u);
        if (writes && before <= x && fval[lid] > x) {
            var cum = before;
            var pick = NONE;
            var last = NONE;
            for (var i = c0; i < c1; i = i + 1u) {
                let z = z_at(i);
                if (key_of(z) >= tau) {
                    let e = exp(z - zmax);
                    if (e > 0.0) {
                        last = i;
                        cum = cum + e;
                        if (cum > x) {
                            pick = i;
                            break;
                        }
                    }
                }
            }
            out[o] = select(pick, last, pick == NONE);
        }
    }
}
