// rope_forward: rotary position embeddings, in place on the q and k heads of
// fused qkv rows (transformers' Llama `rotate_half` convention).
//   qkv (N, (NH + 2 NKV) HD) = [q: NH*HD | k: NKV*HD | v: NKV*HD] per row;
//     the NH query heads and the NKV key heads are rotated, v is untouched
//   inv_freq (HD/2): the host's inverse frequencies (rope::rope_inv_freq)
//   positions (u32 table): row r is at position
//     pos_offset + positions[(r % period) * pos_stride + pos_field]
//     (a list 0..T with period T, stride 1; or decoding's (N, 2) row table
//     of (slot, pos) with period N, stride 2, field 1)
// For a head vector x = [x1 | x2] (halves of HD/2), with
//   angle_i = inv_freq[i] * f32(pos) (one f32 product, as transformers'),
//   x1'_i = x1_i cos(angle_i) - x2_i sin(angle_i)
//   x2'_i = x2_i cos(angle_i) + x1_i sin(angle_i)
// i.e. x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2 | x1].
//
// The angle is reduced to [-pi, pi] before cos and sin (WGSL bounds their
// error only there): angle - k 2pi with 2pi split in three parts
// (Cody-Waite), the first two short enough that k * part is exact for
// |k| < 2^16, i.e. angles up to ~4e5 rad. One invocation per (row, rotated
// head, pair i < HD/2).
// Element types: st (qkv, read and written in place) from the prepended header; f32 arithmetic.

struct Params {
    n: u32,
    nh: u32,         // query heads
    nkv: u32,        // key/value heads
    hd: u32,         // head dim (even)
    period: u32,     // entries of the position table that rows cycle through
    pos_stride: u32, // u32s per entry of the position table
    pos_field: u32,  // which u32 of an entry is the position
    pos_offset: u32, // added to every position (may change per call)
    stride: u32,     // invocations per row of the dispatch grid
}

@group(0) @binding(0) var<storage, read_write> qkv: array<st>;    // (N, (NH + 2 NKV) HD)
@group(0) @binding(1) var<storage, read> positions: array<u32>;   // (period * pos_stride)
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;    // (HD / 2)
@group(0) @binding(3) var<storage, read> p: Params;

const INV_TWO_PI: f32 = 0.15915493667125702;
// 2pi = TWO_PI_A + TWO_PI_B + TWO_PI_C; A and B have at most 8 significant bits.
const TWO_PI_A: f32 = 6.28125;
const TWO_PI_B: f32 = 0.0019378662109375;
const TWO_PI_C: f32 = -2.5590313510230747e-6;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let half = p.hd / 2u;
    let heads = p.nh + p.nkv;
    var idx = gid.y * p.stride + gid.x;
    if (idx >= p.n * heads * half) {
        return;
    }
    let i = idx % half;
    idx = idx / half;
    let head = idx % heads; // q heads first, then k heads: contiguous in the row
    let row = idx / heads;

    let pos = p.pos_offset + positions[(row % p.period) * p.pos_stride + p.pos_field];
    let angle = inv_freq[i] * f32(pos);
    let k = round(angle * INV_TWO_PI);
    let r = ((angle - k * TWO_PI_A) - k * TWO_PI_B) - k * TWO_PI_C;
    let c = cos(r);
    let s = sin(r);

    let base = row * (heads + p.nkv) * p.hd + head * p.hd + i;
    let x1 = f32(qkv[base]);
    let x2 = f32(qkv[base + half]);
    qkv[base] = st(x1 * c - x2 * s);
    qkv[base + half] = st(x2 * c + x1 * s);
}
