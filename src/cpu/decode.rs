//! CPU twins of the KV-cache kernels ([`crate::kernels::decode`]): each
//! row of a pass is token `pos` of sequence `slot`, from a row table of
//! (slot, pos) pairs. Attention is grouped-query: NH query heads, NKV
//! key/value heads (NH a multiple of NKV), head dim hd, qkv rows
//! [q: NH*hd | k: NKV*hd | v: NKV*hd]; the caches are (slots, n_pos, NKV*hd).
//! GPT-2 is NKV = NH, hd = C/NH.

/// k_cache[slot, pos] = k of row r, v_cache[slot, pos] = v of row r (all
/// NKV heads) for every row r with (slot, pos) = rows[r].
#[allow(clippy::too_many_arguments)]
pub fn kv_cache_write(
    k_cache: &mut [f32], // (slots, n_pos, NKV*hd)
    v_cache: &mut [f32], // (slots, n_pos, NKV*hd)
    qkv: &[f32],         // (N, (NH + 2 NKV) hd)
    rows: &[(u32, u32)], // (N) (slot, pos)
    nh: usize,
    nkv: usize,
    hd: usize,
    n_pos: usize,
) {
    let (c, ckv) = (nh * hd, nkv * hd);
    let row_len = c + 2 * ckv;
    assert_eq!(qkv.len(), rows.len() * row_len, "kv_cache_write: qkv");
    assert_eq!(k_cache.len(), v_cache.len(), "kv_cache_write: caches");
    for (r, &(slot, pos)) in rows.iter().enumerate() {
        let (slot, pos) = (slot as usize, pos as usize);
        assert!(pos < n_pos, "kv_cache_write: position {pos} past {n_pos}");
        let dst = (slot * n_pos + pos) * ckv;
        let src = &qkv[r * row_len..][..row_len];
        k_cache[dst..dst + ckv].copy_from_slice(&src[c..c + ckv]);
        v_cache[dst..dst + ckv].copy_from_slice(&src[c + ckv..]);
    }
}

/// out[r, h] = softmax over t of q_r,h · k_cache[slot, t, kvh] / √hd,
/// applied to v_cache[slot, t, kvh], with kvh = h / (NH/NKV): row r's query
/// against its own sequence, over t ≤ pos with pos − t < window (every
/// t ≤ pos when window = 0).
#[allow(clippy::too_many_arguments)]
pub fn attention_decode(
    out: &mut [f32],     // (N, NH*hd)
    qkv: &[f32],         // (N, (NH + 2 NKV) hd): queries
    k_cache: &[f32],     // (slots, n_pos, NKV*hd)
    v_cache: &[f32],     // (slots, n_pos, NKV*hd)
    rows: &[(u32, u32)], // (N) (slot, pos)
    nh: usize,
    nkv: usize,
    hd: usize,
    n_pos: usize,
    window: usize,
) {
    assert!(
        nkv > 0 && hd > 0 && nh.is_multiple_of(nkv),
        "attention_decode: NH {nh} not groups of NKV {nkv}, or hd {hd} is 0"
    );
    let n = rows.len();
    let (c, ckv) = (nh * hd, nkv * hd);
    let row_len = c + 2 * ckv;
    assert_eq!(out.len(), n * c, "attention_decode: out");
    assert_eq!(qkv.len(), n * row_len, "attention_decode: qkv");
    let group = nh / nkv;
    let scale = 1.0 / (hd as f32).sqrt();
    for (r, &(slot, pos)) in rows.iter().enumerate() {
        let (slot, pos) = (slot as usize, pos as usize);
        assert!(pos < n_pos, "attention_decode: position {pos} past {n_pos}");
        let first = match window {
            0 => 0,
            w => (pos + 1).saturating_sub(w),
        };
        for h in 0..nh {
            let q = &qkv[r * row_len + h * hd..][..hd];
            let at = |t: usize| (slot * n_pos + t) * ckv + (h / group) * hd;
            let scores: Vec<f32> = (first..=pos)
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
            for (t, w) in (first..=pos).zip(&e) {
                let v = &v_cache[at(t)..][..hd];
                for (oi, vi) in o.iter_mut().zip(v) {
                    *oi += w / sum * vi;
                }
            }
        }
    }
}

/// out[r] = wte[ids[r]] + wpe[pos_r]; with `wpe` `None` (no learned
/// positions) out[r] = wte[ids[r]].
pub fn embedding_decode(
    out: &mut [f32],     // (N, C)
    ids: &[u32],         // (N)
    wte: &[f32],         // (V, C)
    wpe: Option<&[f32]>, // (maxT, C)
    rows: &[(u32, u32)], // (N) (slot, pos)
    c: usize,
) {
    assert_eq!(ids.len(), rows.len(), "embedding_decode: ids");
    assert_eq!(out.len(), ids.len() * c, "embedding_decode: out");
    for (r, (&id, &(_, pos))) in ids.iter().zip(rows).enumerate() {
        let (id, pos) = (id as usize, pos as usize);
        let o = &mut out[r * c..][..c];
        let te = &wte[id * c..][..c];
        match wpe {
            Some(wpe) => {
                for ((oi, w), p) in o.iter_mut().zip(te).zip(&wpe[pos * c..][..c]) {
                    *oi = w + p;
                }
            }
            None => o.copy_from_slice(te),
        }
    }
}
