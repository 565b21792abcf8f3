//! CPU twins of the KV-cache kernels ([`crate::kernels::decode`]): each
//! row of a pass is token `pos` of sequence `slot`, from a row table of
//! (slot, pos) pairs; the caches are (slots, n_pos, C).

/// k_cache[slot, pos] = qkv[r, C..2C], v_cache[slot, pos] = qkv[r, 2C..3C]
/// for every row r with (slot, pos) = rows[r].
pub fn kv_cache_write(
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    qkv: &[f32],         // (N, 3C)
    rows: &[(u32, u32)], // (N) (slot, pos)
    c: usize,
    n_pos: usize,
) {
    assert_eq!(qkv.len(), rows.len() * 3 * c, "kv_cache_write: qkv");
    assert_eq!(k_cache.len(), v_cache.len(), "kv_cache_write: caches");
    for (r, &(slot, pos)) in rows.iter().enumerate() {
        let (slot, pos) = (slot as usize, pos as usize);
        assert!(pos < n_pos, "kv_cache_write: position {pos} past {n_pos}");
        let dst = (slot * n_pos + pos) * c;
        let src = &qkv[r * 3 * c..][..3 * c];
        k_cache[dst..dst + c].copy_from_slice(&src[c..2 * c]);
        v_cache[dst..dst + c].copy_from_slice(&src[2 * c..]);
    }
}

/// out[r, h] = softmax over t ≤ pos of q_r,h · k_cache[slot, t, h] / √hd,
/// applied to v_cache[slot, t, h]: row r's query against its own sequence.
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    out: &mut [f32],     // (N, C)
    qkv: &[f32],         // (N, 3C): queries
    k_cache: &[f32],     // (slots, n_pos, C)
    v_cache: &[f32],     // (slots, n_pos, C)
    rows: &[(u32, u32)], // (N) (slot, pos)
    c: usize,
    nh: usize,
    n_pos: usize,
) {
    let n = rows.len();
    assert_eq!(out.len(), n * c, "attention_decode: out");
    assert_eq!(qkv.len(), n * 3 * c, "attention_decode: qkv");
    assert!(
        nh > 0 && c.is_multiple_of(nh),
        "attention_decode: C {c}, NH {nh}"
    );
    let hd = c / nh;
    let scale = 1.0 / (hd as f32).sqrt();
    for (r, &(slot, pos)) in rows.iter().enumerate() {
        let (slot, pos) = (slot as usize, pos as usize);
        assert!(pos < n_pos, "attention_decode: position {pos} past {n_pos}");
        for h in 0..nh {
            let q = &qkv[r * 3 * c + h * hd..][..hd];
            let at = |t: usize| (slot * n_pos + t) * c + h * hd;
            let scores: Vec<f32> = (0..=pos)
                .map(|t| {
                    let k = &k_cache[at(t)..][..hd];
                    q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale
                })
                .collect();
            let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            let o = &mut out[r * c + h * hd..][..hd];
            o.fill(0.0);
            for (t, w) in e.iter().enumerate() {
                let v = &v_cache[at(t)..][..hd];
                for (oi, vi) in o.iter_mut().zip(v) {
                    *oi += w / sum * vi;
                }
            }
        }
    }
}

/// out[r] = wte[ids[r]] + wpe[pos_r].
pub fn embedding_decode(
    out: &mut [f32],     // (N, C)
    ids: &[u32],         // (N)
    wte: &[f32],         // (V, C)
    wpe: &[f32],         // (maxT, C)
    rows: &[(u32, u32)], // (N) (slot, pos)
    c: usize,
) {
    assert_eq!(ids.len(), rows.len(), "embedding_decode: ids");
    assert_eq!(out.len(), ids.len() * c, "embedding_decode: out");
    for (r, (&id, &(_, pos))) in ids.iter().zip(rows).enumerate() {
        let (id, pos) = (id as usize, pos as usize);
        let o = &mut out[r * c..][..c];
        for ((oi, w), p) in o
            .iter_mut()
            .zip(&wte[id * c..][..c])
            .zip(&wpe[pos * c..][..c])
        {
            *oi = w + p;
        }
    }
}
