//! Tensor parallelism inside a stage (Megatron-LM's layout): which part of
//! each weight one of the T devices of a stage's group holds.
//!
//! - Attention splits by heads: rank r holds the Q columns of query heads
//!   r·NH/T … (r+1)·NH/T − 1 of the fused q, k, v projection, and the K and V
//!   columns of the KV heads they read (so its QKV rows are `[q_r | k_r |
//!   v_r]` and attention runs unchanged on its heads), and the matching
//!   *rows* of the output projection. With grouped-query attention the KV
//!   heads split T ways too, or, when T exceeds them (and is a multiple of
//!   them), each KV head is replicated on the T/NKV ranks whose query heads
//!   read it, as vLLM does.
//! - The MLP splits F: rank r holds F/T columns of the first projection
//!   (GPT-2's `c_fc`; the Llama family's gate and up projections, F/T
//!   columns of each), its activation is local, and it holds the matching
//!   F/T rows of the second projection.
//! - Each row-split projection yields a partial (N, C) sum; the group sums
//!   them (an all-reduce) before the residual add. Its bias is added once:
//!   rank 0 holds it, the others hold zeros.
//! - The token table splits by vocabulary: rank r embeds only the tokens of
//!   its range (the others' rows stay zero, so the all-reduce after the
//!   embedding is exact) and computes only its range's logits columns.
//! - LayerNorms and the position table are replicated.
//!
//! A row of the KV cache holds each rank's KV heads only: NKV/T of them,
//! or one replicated head.

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::weights::Layer;
use crate::model::{Gpt2Config, LayerWeights};

/// Rank `rank` of a tensor-parallel group of `of` devices; `of = 1` is the
/// whole stage on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    pub rank: usize,
    pub of: usize,
}

impl Shard {
    /// The whole stage on one device.
    pub const WHOLE: Shard = Shard { rank: 0, of: 1 };

    /// Rank `rank` of `of`, checked against `cfg`.
    pub fn new(cfg: &Gpt2Config, rank: usize, of: usize) -> Result<Shard> {
        check_degree(cfg, of)?;
        if rank >= of {
            return Err(Error::Input(format!(
                "tensor-parallel rank {rank} of a group of {of}"
            )));
        }
        Ok(Shard { rank, of })
    }

    /// Tensor parallelism at all?
    pub fn split(&self) -> bool {
        self.of > 1
    }

    /// This rank's slice of `0..n` (n divisible by `of`).
    pub fn part(&self, n: usize) -> Range<usize> {
        let k = n / self.of;
        self.rank * k..(self.rank + 1) * k
    }

    /// This rank's range of the padded vocabulary `0..vp`, in multiples of 4.
    pub fn vocab(&self, vp: usize) -> Range<usize> {
        let per = vp.div_ceil(4 * self.of) * 4;
        let start = (self.rank * per).min(vp);
        start..((self.rank + 1) * per).min(vp)
    }

    /// This rank's query heads and KV heads: (NH/T, NKV/T), or (NH/T, 1)
    /// when each KV head is replicated on T/NKV ranks.
    pub fn heads(&self, cfg: &Gpt2Config) -> (usize, usize) {
        let (nh, nkv) = (cfg.n_head, cfg.kv_heads());
        (nh / self.of, (nkv / self.of).max(1))
    }

    /// This rank's first KV head: of its own NKV/T, or the one replicated
    /// head its query heads read (both rank · NKV / T, rounded down).
    pub fn first_kv_head(&self, cfg: &Gpt2Config) -> usize {
        self.rank * cfg.kv_heads() / self.of
    }

    /// This rank's columns of the fused q, k, v projection (C, q + 2kv):
    /// its query heads' q columns and its KV heads' k and v columns.
    fn qkv_cols(&self, cfg: &Gpt2Config) -> [Range<usize>; 3] {
        let hd = cfg.head_dim();
        let (q, kv) = (cfg.q_width(), cfg.kv_width());
        let (nh_r, nkv_r) = self.heads(cfg);
        let q_cols = self.rank * nh_r * hd..(self.rank + 1) * nh_r * hd;
        let kv0 = self.first_kv_head(cfg) * hd;
        let kv_cols = kv0..kv0 + nkv_r * hd;
        [
            q_cols,
            q + kv_cols.start..q + kv_cols.end,
            q + kv + kv_cols.start..q + kv + kv_cols.end,
        ]
    }

    /// This rank's columns of the MLP's first projection: F/T columns
    /// (GPT-2), or F/T of the gate's and F/T of the up's (the Llama family's
    /// gate | up).
    fn fc_cols(&self, cfg: &Gpt2Config) -> Vec<Range<usize>> {
        let (f, cols_f) = (cfg.n_inner, self.part(cfg.n_inner));
        match cfg.is_gpt2() {
            true => vec![cols_f],
            false => vec![cols_f.clone(), f + cols_f.start..f + cols_f.end],
        }
    }

    /// This rank's part of one block (see the module doc).
    pub fn layer(&self, cfg: &Gpt2Config, w: &LayerWeights) -> LayerWeights {
        if !self.split() {
            return w.clone();
        }
        let c = cfg.n_embd;
        let qkv_cols = self.qkv_cols(cfg);
        let q_cols = qkv_cols[0].clone();
        let fc_cols = self.fc_cols(cfg);
        let cols_f = self.part(cfg.n_inner);
        let once = |b: &[f32]| match self.rank {
            0 => b.to_vec(),
            _ => vec![0.0; b.len()],
        };
        let pick = |b: &[f32], ranges: &[Range<usize>]| -> Vec<f32> {
            ranges
                .iter()
                .flat_map(|r| b[r.clone()].iter().copied())
                .collect()
        };
        LayerWeights {
            ln_1_g: w.ln_1_g.clone(),
            ln_1_b: w.ln_1_b.clone(),
            c_attn_w: columns(&w.c_attn_w, cfg.qkv_width(), &qkv_cols),
            c_attn_b: pick(&w.c_attn_b, &qkv_cols),
            attn_proj_w: w.attn_proj_w[q_cols.start * c..q_cols.end * c].to_vec(),
            attn_proj_b: once(&w.attn_proj_b),
            ln_2_g: w.ln_2_g.clone(),
            ln_2_b: w.ln_2_b.clone(),
            c_fc_w: columns(&w.c_fc_w, cfg.mlp_in_width(), &fc_cols),
            c_fc_b: pick(&w.c_fc_b, &fc_cols),
            mlp_proj_w: w.mlp_proj_w[cols_f.start * c..cols_f.end * c].to_vec(),
            mlp_proj_b: once(&w.mlp_proj_b),
        }
    }

    /// Elements of each of this rank's block tensors (every role, present
    /// or not): the lengths [`Shard::layer`] gives.
    pub fn layer_lens(&self, cfg: &Gpt2Config) -> Layer<usize> {
        let whole = Layer::try_from_fn(cfg, |_, shape| {
            Ok::<_, std::convert::Infallible>(shape.iter().product::<usize>())
        })
        .unwrap_or_else(|never| match never {});
        if !self.split() {
            return whole;
        }
        let c = cfg.n_embd;
        let qkv: usize = self.qkv_cols(cfg).iter().map(|r| r.len()).sum();
        let fc: usize = self.fc_cols(cfg).iter().map(|r| r.len()).sum();
        let (q, f) = (self.qkv_cols(cfg)[0].len(), self.part(cfg.n_inner).len());
        Layer {
            c_attn_w: c * qkv,
            c_attn_b: qkv,
            attn_proj_w: q * c,
            c_fc_w: c * fc,
            c_fc_b: fc,
            mlp_proj_w: f * c,
            ..whole
        }
    }

    /// Which of a block's tensors every rank holds whole (the norms) or
    /// only rank 0 does (the row-split projections' biases; zeros on the
    /// others): what a sum over the group's tensors counts once, on rank 0.
    pub fn replicated_roles() -> Layer<bool> {
        Layer {
            ln_1_g: true,
            ln_1_b: true,
            c_attn_w: false,
            c_attn_b: false,
            attn_proj_w: false,
            attn_proj_b: true,
            ln_2_g: true,
            ln_2_b: true,
            c_fc_w: false,
            c_fc_b: false,
            mlp_proj_w: false,
            mlp_proj_b: true,
        }
    }

    /// The whole block from its T shards, by rank: the inverse of
    /// [`Shard::layer`] (norms and the row-split biases from rank 0; a KV
    /// head replicated on several ranks from the first that holds it).
    pub fn merge(cfg: &Gpt2Config, shards: &[LayerWeights]) -> Result<LayerWeights> {
        let tp = shards.len();
        if tp == 1 {
            return Ok(shards[0].clone());
        }
        check_degree(cfg, tp)?;
        let c = cfg.n_embd;
        let mut w = LayerWeights {
            c_attn_w: vec![0.0; c * cfg.qkv_width()],
            c_attn_b: vec![0.0; cfg.qkv_width()],
            attn_proj_w: Vec::with_capacity(cfg.q_width() * c),
            c_fc_w: vec![0.0; c * cfg.mlp_in_width()],
            c_fc_b: vec![0.0; cfg.mlp_in_width()],
            mlp_proj_w: Vec::with_capacity(cfg.n_inner * c),
            ..shards[0].clone()
        };
        let bad = |r: usize| {
            Error::Other(format!(
                "bug: tensor-parallel rank {r}'s block tensors have the wrong sizes"
            ))
        };
        let place = |whole: &mut [f32], width: usize, part: &[f32], ranges: &[Range<usize>]| {
            let pw: usize = ranges.iter().map(|r| r.len()).sum();
            if pw == 0 || part.len() * width != whole.len() * pw {
                return false;
            }
            for (row, prow) in whole.chunks_mut(width).zip(part.chunks(pw)) {
                let mut at = 0;
                for r in ranges {
                    row[r.clone()].copy_from_slice(&prow[at..at + r.len()]);
                    at += r.len();
                }
            }
            true
        };
        for (r, s) in shards.iter().enumerate() {
            let sh = Shard { rank: r, of: tp };
            let (qkv, fc) = (sh.qkv_cols(cfg), sh.fc_cols(cfg));
            let ok = place(&mut w.c_attn_w, cfg.qkv_width(), &s.c_attn_w, &qkv)
                && place(&mut w.c_attn_b, cfg.qkv_width(), &s.c_attn_b, &qkv)
                && place(&mut w.c_fc_w, cfg.mlp_in_width(), &s.c_fc_w, &fc)
                && place(&mut w.c_fc_b, cfg.mlp_in_width(), &s.c_fc_b, &fc);
            if !ok {
                return Err(bad(r));
            }
            w.attn_proj_w.extend_from_slice(&s.attn_proj_w);
            w.mlp_proj_w.extend_from_slice(&s.mlp_proj_w);
        }
        if w.attn_proj_w.len() != cfg.q_width() * c || w.mlp_proj_w.len() != cfg.n_inner * c {
            return Err(bad(0));
        }
        // A KV head replicated on several ranks: the first holder's copy
        // (rank order above wrote the last's; put the first's back).
        if tp > cfg.kv_heads() {
            for r in (0..tp).rev() {
                let sh = Shard { rank: r, of: tp };
                let qkv = sh.qkv_cols(cfg);
                let kv = [qkv[1].clone(), qkv[2].clone()];
                let (q_len, s) = (qkv[0].len(), &shards[r]);
                let sub = |m: &[f32], width: usize| -> Vec<f32> {
                    m.chunks(width)
                        .flat_map(|row| row[q_len..].iter().copied())
                        .collect()
                };
                let pw = qkv.iter().map(|x| x.len()).sum::<usize>();
                place(&mut w.c_attn_w, cfg.qkv_width(), &sub(&s.c_attn_w, pw), &kv);
                place(&mut w.c_attn_b, cfg.qkv_width(), &sub(&s.c_attn_b, pw), &kv);
            }
        }
        Ok(w)
    }
}

/// Can `cfg` split over `tp` devices? The query heads and the MLP width
/// must divide by T, and the KV heads divide by T or T by them (each then
/// replicated on T/NKV ranks).
pub fn check_degree(cfg: &Gpt2Config, tp: usize) -> Result<()> {
    if tp == 0 {
        return Err(Error::Input("--tp must be at least 1".into()));
    }
    if !cfg.n_head.is_multiple_of(tp) {
        return Err(Error::Input(format!(
            "--tp {tp} does not divide the model's {} attention heads: tensor parallelism splits attention by heads",
            cfg.n_head
        )));
    }
    let nkv = cfg.kv_heads();
    if !(nkv.is_multiple_of(tp) || tp.is_multiple_of(nkv)) {
        return Err(Error::Input(format!(
            "--tp {tp} does not split the model's {nkv} KV heads: T must divide them, or be a multiple of them (each KV head is then replicated on T / {nkv} ranks)"
        )));
    }
    if !cfg.n_inner.is_multiple_of(tp) {
        return Err(Error::Input(format!(
            "--tp {tp} does not divide the model's MLP width {} (n_inner)",
            cfg.n_inner
        )));
    }
    if cfg.padded_vocab() / 4 < tp {
        return Err(Error::Input(format!(
            "--tp {tp} is more than the vocabulary of {} can be split into",
            cfg.vocab_size
        )));
    }
    Ok(())
}

/// The given column ranges of a row-major (rows, width) matrix, side by side.
fn columns(m: &[f32], width: usize, ranges: &[Range<usize>]) -> Vec<f32> {
    let mut out =
        Vec::with_capacity(m.len() / width * ranges.iter().map(|r| r.len()).sum::<usize>());
    for row in m.chunks(width) {
        for r in ranges {
            out.extend_from_slice(&row[r.clone()]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Gpt2Weights;

    /// The shards' matmuls add up to the whole layer's: q/k/v columns per
    /// head group, projections by rows, biases once.
    #[test]
    fn shards_partition_every_block_tensor() {
        let cfg = Gpt2Config {
            n_embd: 32,
            n_head: 4,
            n_inner: 100,
            ..Gpt2Config::named("tiny").unwrap()
        };
        let w = Gpt2Weights::init(&cfg, 3).unwrap();
        let l = &w.layers[0];
        let (c, f) = (cfg.n_embd, cfg.n_inner);
        for tp in [2, 4] {
            let shards: Vec<LayerWeights> = (0..tp)
                .map(|r| Shard::new(&cfg, r, tp).unwrap().layer(&cfg, l))
                .collect();
            // c_attn: column j of rank r's q part is column r*C/T + j of the whole.
            for (r, s) in shards.iter().enumerate() {
                let cl = c / tp;
                assert_eq!(s.c_attn_w.len(), c * 3 * cl);
                for row in 0..c {
                    for part in 0..3 {
                        for j in 0..cl {
                            assert_eq!(
                                s.c_attn_w[row * 3 * cl + part * cl + j],
                                l.c_attn_w[row * 3 * c + part * c + r * cl + j]
                            );
                        }
                    }
                }
            }
            let cat = |get: fn(&LayerWeights) -> &Vec<f32>| -> Vec<f32> {
                shards.iter().flat_map(|s| get(s).iter().copied()).collect()
            };
            assert_eq!(cat(|s| &s.attn_proj_w), l.attn_proj_w);
            assert_eq!(cat(|s| &s.mlp_proj_w), l.mlp_proj_w);
            assert_eq!(cat(|s| &s.c_fc_b), l.c_fc_b);
            assert_eq!(shards[0].mlp_proj_b, l.mlp_proj_b);
            assert!(shards[1..]
                .iter()
                .all(|s| s.attn_proj_b.iter().all(|&b| b == 0.0)));
            assert_eq!(shards[1].c_fc_w.len(), c * f / tp);
            assert_eq!(&Shard::merge(&cfg, &shards).unwrap(), l);
            for (r, s) in shards.iter().enumerate() {
                let lens = Shard { rank: r, of: tp }.layer_lens(&cfg);
                let got = s.try_map(&cfg, |_, t, _| Ok::<_, ()>(t.len())).unwrap();
                assert_eq!(got, lens);
            }
        }
    }

    #[test]
    fn vocabulary_ranges_cover_the_padded_vocabulary() {
        for (vp, tp) in [(50260, 4), (320, 2), (12, 3), (8, 2)] {
            let mut next = 0;
            for r in 0..tp {
                let v = Shard { rank: r, of: tp }.vocab(vp);
                assert_eq!(v.start, next);
                assert!(v.start.is_multiple_of(4) && (v.end.is_multiple_of(4) || v.end == vp));
                next = v.end;
            }
            assert_eq!(next, vp);
        }
    }

    #[test]
    fn degrees_that_do_not_divide_are_refused() {
        let cfg = Gpt2Config::named("gpt2").unwrap();
        check_degree(&cfg, 4).unwrap();
        let e = check_degree(&cfg, 5).unwrap_err().to_string();
        assert!(e.contains("12 attention heads"), "{e}");
        assert!(check_degree(&cfg, 0).is_err());
        assert!(Shard::new(&cfg, 4, 4).is_err());
    }
}
