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
//
// Otherwise, with z = logit / temperature, key(z) the order-preserving map
// of f32 onto u32 (so thresholds are exact token values) and mass(S) = the
// sum of exp(z - zmax) over S:
// 1. zmax and the smallest key, kmin (one pass over the row).
// 2. When top-k or top-p is on, the threshold: the largest key t with
//    f(t) >= goal, where f(t) = count(key >= t) and goal = k for top-k,
//    f(t) = mass(key >= t) and goal = top_p * (mass kept by top-k) for
//    top-p. A search pass evaluates M thresholds in (lo, hi] (count and
//    mass at each, and the largest key below each) and keeps [last that
//    passes, largest key below the first that fails]: spread evenly over the
//    keys, they shrink the interval M-fold, and its ends are soon tokens'
//    keys (a few passes for ties or few distinct values).
//    The first pass over the row tries kmin and cuts at zmax - 32, 16, ...,
//    0.5, where softmax distributions put their thresholds; passes over the
//    row go on until at most CAP tokens have a key >= lo (or, when only one
//    of top-k and top-p is on, until at most CAP lie in [lo, hi]). Those
//    tokens, (key, token id) in token order, are then copied into workgroup
//    memory, and the rest of the search reads only them. When they never fit
//    (huge ties, top_k > CAP with top-p on) the search runs over the row to
//    the end: the same threshold, in more passes.
// 3. The draw, by inverse CDF in token order over the kept tokens (the
//    copied ones when they include all kept tokens, else the row):
//    invocation i sums the kept mass of its contiguous chunk, a scan of the
//    chunk sums finds the chunk where the cumulative mass first exceeds
//    u * total, and its invocation walks it to the token. These sums are
//    exact: each exp(z - zmax) is taken as a 64-bit fixed point number with
//    40 fraction bits, so the walk and the scan agree and no order of
//    summation matters.
//
// Why this shape: on lavapipe (Mesa 22.3) a load with a per-invocation
// address costs ~14 ns, from a storage buffer or workgroup memory alike,
// vec4 or not; barriers are cheap. So the cost is the number of passes over
// the row (~0.8 ms each at V = 50257), and the few tokens near the threshold
// are worth copying out once.
//
// Every barrier sits in uniform control flow: the branches around them test
// the parameters or values from workgroupUniformLoad, the loops around them
// have constant bounds. Every workgroup variable is written before it is
// read, so the pipeline skips zeroing them (kernels::NO_WORKGROUP_ZEROING).

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
@group(0) @binding(4) var<storage, read> p: Params;

const WG: u32 = 64u;      // invocations per workgroup (a power of two, >= 3 * M)
const M: u32 = 8u;        // thresholds per search pass
const VALUE_PASSES: u32 = 4u; // passes that may split the interval by value
const PASSES: u32 = 15u;  // M^(PASSES - VALUE_PASSES) >= 2^32
const CAP: u32 = 1024u;   // candidate tokens held in workgroup memory
const NONE: u32 = 0xffffffffu;

// per threshold j and invocation: count and mass of the tokens with key >=
// th[j] (slots j and M + j of part), largest key below th[j] (slot j of partk)
var<workgroup> part: array<f32, 2u * M * WG>;
var<workgroup> partk: array<u32, M * WG>;
var<workgroup> res: array<f32, 2u * M>;
var<workgroup> resk: array<u32, M>;
var<workgroup> ckey: array<u32, CAP>;          // candidates, in token order
var<workgroup> cidx: array<u32, CAP>;
var<workgroup> wa: array<u32, WG>;
var<workgroup> wb: array<u32, WG>;
var<workgroup> wf: array<f32, WG>;
var<workgroup> flag: u32;

var<private> lid: u32;
var<private> base: u32;     // offset of this output's logits row
var<private> zmax: f32;
var<private> use_cand: bool; // tokens come from ckey/cidx, else the row
var<private> src_n: u32;     // tokens in the source
// The search: the interval [lo, hi] holding the threshold; the count and
// mass of the tokens with key >= lo and of those with key > hi, and this
// invocation's share of both counts (over the row's chunks, for the copy
// into workgroup memory); when the candidates hold only the tokens in
// [lo, hi], the count and mass of those above, added to what they yield.
var<private> lo: u32;
var<private> hi: u32;
var<private> lo_cnt: f32;
var<private> lo_mass: f32;
var<private> hi_cnt: f32;
var<private> hi_mass: f32;
var<private> my_lo: u32;
var<private> my_hi: u32;
var<private> off_cnt: f32;
var<private> off_mass: f32;
var<private> total_mass: f32; // of the whole row, from the first pass

// z's key: order-preserving (a < b iff key(a) < key(b), -0 = +0).
fn key_of(z: f32) -> u32 {
    let b = bitcast<u32>(select(z, 0.0, z == 0.0));
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

fn z_of(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// token i of the source: its z and its token id
fn src_z(i: u32) -> f32 {
    if (use_cand) {
        return z_of(ckey[i]);
    }
    return logits[base + i] / p.temperature;
}

fn src_token(i: u32) -> u32 {
    if (use_cand) {
        return cidx[i];
    }
    return i;
}

// This invocation's contiguous chunk [x, y) of n source tokens.
fn chunk(n: u32) -> vec2<u32> {
    let len = (n + WG - 1u) / WG;
    let c0 = min(lid * len, n);
    return vec2<u32>(c0, min(c0 + len, n));
}

// x in [0, 2^24) as a fixed point number with 40 fraction bits, as
// (low word, high word); exact for x >= 2^-17, truncated below 2^-40.
fn fixed(x: f32) -> vec2<u32> {
    let s = x * 256.0;
    let h = floor(s);
    return vec2<u32>(u32((s - h) * 4294967296.0), u32(h));
}

fn add64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let l = a.x + b.x;
    return vec2<u32>(l, a.y + b.y + select(0u, 1u, l < a.x));
}

fn less64(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.y < b.y || (a.y == b.y && a.x < b.x);
}

// What a pass finds at each threshold th[j] among the source's tokens:
// count and mass of those with key >= th[j] (r[j], r[M + j]), and the
// largest key below th[j] (below[j], 0 if none).
struct Found {
    r: array<f32, 2u * M>,
    below: array<u32, M>,
}

// One pass over the first n source tokens, reduced over the workgroup
// (masses only when with_mass). Leaves each invocation's counts in
// part[j * WG + lid].
fn evaluate(th: array<u32, M>, n: u32, with_mass: bool) -> Found {
    var cnt: array<f32, M>;
    var mas: array<f32, M>;
    var below: array<u32, M>;
    let c = chunk(n);
    for (var i = c.x; i < c.y; i = i + 1u) {
        let z = src_z(i);
        let k = key_of(z);
        var e = 0.0;
        if (with_mass) {
            e = exp(z - zmax);
        }
        for (var j = 0u; j < M; j = j + 1u) {
            let above = k >= th[j];
            cnt[j] = cnt[j] + select(0.0, 1.0, above);
            mas[j] = mas[j] + select(0.0, e, above);
            below[j] = max(below[j], select(k, 0u, above));
        }
    }
    for (var j = 0u; j < M; j = j + 1u) {
        part[j * WG + lid] = cnt[j];
        part[(M + j) * WG + lid] = mas[j];
        partk[j * WG + lid] = below[j];
    }
    workgroupBarrier();
    if (lid < 2u * M) {
        var s = 0.0;
        for (var t = 0u; t < WG; t = t + 1u) {
            s = s + part[lid * WG + t];
        }
        res[lid] = s;
    } else if (lid < 3u * M) {
        let j = lid - 2u * M;
        var b = 0u;
        for (var t = 0u; t < WG; t = t + 1u) {
            b = max(b, partk[j * WG + t]);
        }
        resk[j] = b;
    }
    workgroupBarrier();
    var f: Found;
    for (var j = 0u; j < 2u * M; j = j + 1u) {
        f.r[j] = res[j];
    }
    for (var j = 0u; j < M; j = j + 1u) {
        f.below[j] = resk[j];
    }
    workgroupBarrier(); // res, resk are rewritten by the next call
    return f;
}

// Evaluate th (non-decreasing, within [lo, hi]) over the first n source
// tokens and narrow [lo, hi] to the largest threshold whose count (or mass,
// by_mass) reaches goal. `first`: the first pass over the row, th[0] = kmin;
// top-p's goal is then top_p times the mass found at kmin (the row's total),
// kept in total_mass.
fn narrow(th: array<u32, M>, n: u32, by_mass: bool, goal_in: f32, first: bool) {
    let found = evaluate(th, n, by_mass || p.top_p < 1.0);
    let r = found.r;
    var goal = goal_in;
    if (first) {
        total_mass = r[M];
        if (by_mass) {
            goal = p.top_p * total_mass;
        }
    }
    // f is non-increasing in j: the passing thresholds are a prefix
    var passed = 0u;
    for (var j = 0u; j < M; j = j + 1u) {
        let f = select(r[j] + off_cnt, r[M + j] + off_mass, by_mass);
        passed = passed + select(0u, 1u, f >= goal);
    }
    if (first) {
        passed = max(passed, 1u); // kmin always passes
    }
    if (passed > 0u) {
        lo = th[passed - 1u];
        lo_cnt = r[passed - 1u] + off_cnt;
        lo_mass = r[M + passed - 1u] + off_mass;
        my_lo = u32(part[(passed - 1u) * WG + lid]);
    }
    if (passed < M) {
        // No token lies in (below, th[passed]): the threshold, a token's
        // key, is at most below (and lo stands even if a rounding tie
        // between two summation orders of the masses failed it now).
        hi = max(found.below[passed], lo);
        hi_cnt = r[passed] + off_cnt;
        hi_mass = r[M + passed] + off_mass;
        my_hi = u32(part[passed * WG + lid]);
    }
}

// M thresholds spread over (lo, hi], non-decreasing, the last one hi.
// Evenly in key space (repeating hi when it is close), which cuts the
// interval M-fold; but over more than two binades (2^24 keys), in the first
// VALUE_PASSES passes of a search, evenly in value: keys crowd near zero,
// tokens do not.
fn spread(it: u32) -> array<u32, M> {
    let span = hi - lo;
    let a = z_of(lo);
    let b = z_of(hi);
    let by_value = it < VALUE_PASSES && span > (1u << 24u) && abs(a) < 1e30 && abs(b) < 1e30;
    let step = span / M + select(0u, 1u, span % M != 0u);
    var th: array<u32, M>;
    var prev = lo;
    for (var j = 0u; j < M; j = j + 1u) {
        var t = lo + min((j + 1u) * step, span);
        if (by_value) {
            t = clamp(key_of(a + (b - a) * (f32(j + 1u) / f32(M))), lo + 1u, hi);
        }
        th[j] = max(t, prev);
        prev = th[j];
    }
    return th;
}

// Whether `cond` holds (the same in every invocation), as a uniform value.
fn uniform_bool(cond: bool) -> bool {
    if (lid == 0u) {
        flag = select(0u, 1u, cond);
    }
    return workgroupUniformLoad(&flag) != 0u;
}

// Narrow [lo, hi] to the exact threshold over the source.
fn search(by_mass: bool, goal: f32) {
    for (var it = 0u; it < PASSES; it = it + 1u) {
        if (uniform_bool(lo >= hi)) {
            break;
        }
        narrow(spread(it), src_n, by_mass, goal, false);
    }
}

@compute @workgroup_size(WG, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    lid = local;
    let o = wid.y * p.groups_x + wid.x;
    let oc = min(o, max(p.n, 1u) - 1u);
    base = rows[oc] * p.ld;
    if (p.temperature == 0.0) {
        greedy(o);
    } else {
        draw(o, oc);
    }
}

// argmax, lowest index on ties
fn greedy(o: u32) {
    var bv = 0.0;
    var bi = NONE;
    for (var i = lid; i < p.v; i = i + WG) {
        let x = logits[base + i];
        if (bi == NONE || x > bv) {
            bv = x;
            bi = i;
        }
    }
    wf[lid] = bv;
    wa[lid] = bi;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            let v2 = wf[lid + half];
            let i2 = wa[lid + half];
            let v1 = wf[lid];
            let i1 = wa[lid];
            if (i2 != NONE && (i1 == NONE || v2 > v1 || (v2 == v1 && i2 < i1))) {
                wf[lid] = v2;
                wa[lid] = i2;
            }
        }
        workgroupBarrier();
    }
    if (lid == 0u && o < p.n) {
        out[o] = wa[0];
    }
}

fn draw(o: u32, oc: u32) {
    // 1. zmax and kmin
    var kmax = 0u;
    var kmin = NONE;
    for (var i = lid; i < p.v; i = i + WG) {
        let k = key_of(logits[base + i] / p.temperature);
        kmax = max(kmax, k);
        kmin = min(kmin, k);
    }
    wa[lid] = kmax;
    wb[lid] = kmin;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half = half / 2u) {
        if (lid < half) {
            wa[lid] = max(wa[lid], wa[lid + half]);
            wb[lid] = min(wb[lid], wb[lid + half]);
        }
        workgroupBarrier();
    }
    kmax = wa[0];
    kmin = wb[0];
    zmax = z_of(kmax);
    workgroupBarrier(); // wa, wb are free again

    use_cand = false;
    src_n = p.v;
    lo = kmin;
    hi = kmax;
    lo_cnt = f32(p.v);
    lo_mass = 0.0;
    hi_cnt = 0.0;
    hi_mass = 0.0;
    my_lo = 0u;
    my_hi = 0u;
    off_cnt = 0.0;
    off_mass = 0.0;

    // 2. thresholds
    if (p.top_k > 0u || p.top_p < 1.0) {
        // Over the row, with top-k's criterion when it is on, else top-p's.
        let by_mass = p.top_k == 0u;
        let kgoal = f32(p.top_k);
        // The first pass: kmin (the total mass) and cuts below zmax.
        var th: array<u32, M>;
        th[0] = kmin;
        for (var j = 1u; j < M; j = j + 1u) {
            th[j] = max(kmin, key_of(zmax - 0.5 * f32(1u << (M - 1u - j))));
        }
        narrow(th, p.v, by_mass, kgoal, true);
        let goal = select(kgoal, p.top_p * total_mass, by_mass);
        // More passes over the row while too many tokens lie above lo, or,
        // when only one of top-k and top-p is on, in [lo, hi].
        let one = (p.top_k > 0u) != (p.top_p < 1.0);
        for (var it = 0u; it < PASSES; it = it + 1u) {
            let more = lo < hi && lo_cnt > f32(CAP) && !(one && lo_cnt - hi_cnt <= f32(CAP));
            if (uniform_bool(!more)) {
                break;
            }
            narrow(spread(it), p.v, by_mass, goal, false);
        }

        // Copy the tokens with key >= lo (or in [lo, hi]) into workgroup
        // memory, in token order, when they fit.
        let fits_all = lo_cnt <= f32(CAP);
        let fits_part = !fits_all && one && lo_cnt - hi_cnt <= f32(CAP);
        wa[lid] = select(my_lo - my_hi, my_lo, fits_all);
        workgroupBarrier();
        if (lid == 0u) {
            var at = 0u;
            for (var i = 0u; i < WG; i = i + 1u) {
                let c = wa[i];
                wa[i] = at;
                at = at + c;
            }
            wb[0] = min(at, CAP);
        }
        workgroupBarrier();
        let copied = wb[0];
        if (fits_all || fits_part) {
            var at = wa[lid];
            let c = chunk(p.v);
            for (var i = c.x; i < c.y; i = i + 1u) {
                let k = key_of(logits[base + i] / p.temperature);
                if (k >= lo && (fits_all || k <= hi) && at < CAP) {
                    ckey[at] = k;
                    cidx[at] = i;
                    at = at + 1u;
                }
            }
        }
        workgroupBarrier();
        if (fits_all || fits_part) {
            use_cand = true;
            src_n = copied;
        }
        if (fits_part) {
            off_cnt = hi_cnt;
            off_mass = hi_mass;
        }

        // The exact thresholds.
        if (p.top_k > 0u) {
            search(false, kgoal);
        }
        if (p.top_p < 1.0) {
            // top-p over what top-k kept (lo_mass: the mass above lo)
            if (!by_mass) {
                hi = kmax;
            }
            search(true, select(p.top_p * lo_mass, goal, by_mass));
        }
        if (fits_part) {
            // the kept tokens above hi are not among the candidates
            use_cand = false;
            src_n = p.v;
        }
    }
    let tau = lo;

    // 3. the draw, by inverse CDF in token order, in exact fixed point
    let c = chunk(src_n);
    var s = vec2<u32>(0u, 0u);
    for (var i = c.x; i < c.y; i = i + 1u) {
        let z = src_z(i);
        if (key_of(z) >= tau) {
            s = add64(s, fixed(exp(z - zmax)));
        }
    }
    wa[lid] = s.x;
    wb[lid] = s.y;
    workgroupBarrier();
    if (lid == 0u) {
        var cum = vec2<u32>(0u, 0u);
        for (var i = 0u; i < WG; i = i + 1u) {
            cum = add64(cum, vec2<u32>(wa[i], wb[i]));
            wa[i] = cum.x;
            wb[i] = cum.y;
        }
    }
    workgroupBarrier();
    // the total is at least 1: the largest token is always kept
    let total = vec2<u32>(wa[WG - 1u], wb[WG - 1u]);
    let totalf = f32(total.y) / 256.0 + f32(total.x) / 1099511627776.0;
    var x = fixed(clamp(uniforms[oc], 0.0, 1.0) * totalf);
    if (!less64(x, total)) {
        // u * total rounded up to the total: the largest value below it
        x = vec2<u32>(total.x - 1u, total.y - select(0u, 1u, total.x == 0u));
    }
    var before = vec2<u32>(0u, 0u);
    if (lid > 0u) {
        before = vec2<u32>(wa[lid - 1u], wb[lid - 1u]);
    }
    let after = vec2<u32>(wa[lid], wb[lid]);
    if (o < p.n && !less64(x, before) && less64(x, after)) {
        var cum = before;
        var pick = NONE;
        var last = NONE;
        for (var i = c.x; i < c.y; i = i + 1u) {
            let z = src_z(i);
            if (key_of(z) >= tau) {
                let e = fixed(exp(z - zmax));
                if (e.x != 0u || e.y != 0u) {
                    last = src_token(i);
                }
                cum = add64(cum, e);
                if (less64(x, cum)) {
                    pick = src_token(i);
                    break;
                }
            }
        }
        // (the sums are exact, so the walk always crosses x; just in case)
        out[o] = select(pick, last, pick == NONE);
    }
}
