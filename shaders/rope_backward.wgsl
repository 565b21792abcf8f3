// rope_backward: twin of cpu::llama::rope_backward. rope_forward rotates each
// pair (x1_i, x2_i) of a q or k head by angle_i; its gradient rotates the
// pair's gradient back (the transpose, a rotation by -angle_i), in place:
//   dqkv (N, (NH + 2 NKV) HD): gradient w.r.t. rope_forward's output in,
//     w.r.t. its input out, for the q and k heads; dv is untouched
//   dx1_i = dy1_i cos(angle_i) + dy2_i sin(angle_i)
//   dx2_i = dy2_i cos(angle_i) - dy1_i sin(angle_i)
// Positions, inverse frequencies, the angle and its reduction exactly as in
// rope_forward. One invocation per (row, rotated head, pair).

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

@group(0) @binding(0) var<storage, read_write> dqkv: array<f32>;  // (N, (NH + 2 NKV) HD)
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
    let head = idx % heads;
    let row = idx / heads;

    let pos = p.pos_offset + positions[(row % p.period) * p.pos_stride + p.pos_field];
    let angle = inv_freq[i] * f32(pos);
    let k = round(angle * INV_TWO_PI);
    let r = ((angle - k * TWO_PI_A) - k * TWO_PI_B) - k * TWO_PI_C;
    let c = cos(r);
    let s = sin(r);

    let base = row * (heads + p.nkv) * p.hd + head * p.hd + i;
    let dy1 = dqkv[base];
    let dy2 = dqkv[base + half];
    dqkv[base] = dy1 * c + dy2 * s;
    dqkv[base + half] = dy2 * c - dy1 * s;
}
