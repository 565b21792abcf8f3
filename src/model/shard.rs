//! Tensor parallelism inside a stage (Megatron-LM's layout): which part of
//! each weight one of the T devices of a stage's group holds.
//!
//! - Attention splits by heads: rank r holds the Q, K and V columns of heads
//!   r·H/T … (r+1)·H/T − 1 of `c_attn` (so its QKV rows are `[q_r | k_r | v_r]`,
//!   C/T wide each, and attention runs unchanged on its H/T heads), and the
//!   matching C/T *rows* of `attn.c_proj`.
//! - The MLP splits F: rank r holds F/T columns of `c_fc` (GELU is local)
//!   and the matching F/T rows of `mlp.c_proj`.
//! - Each row-split projection yields a partial (N, C) sum; the group sums
//!   them (an all-reduce) before the residual add. Its bias is added once:
//!   rank 0 holds it, the others hold zeros.
//! - The token table splits by vocabulary: rank r embeds only the tokens of
//!   its range (the others' rows stay zero, so the all-reduce after the
//!   embedding is exact) and computes only its range's logits columns.
//! - LayerNorms and the position table are replicated.
//!
//! A row of the KV cache is C/T wide on each rank: every rank holds its
//! heads' keys and values only.

use std::ops::Range;

use crate::error::{Error, Result};
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

    /// This rank's part of one block (see the module doc).
    pub fn layer(&self, cfg: &Gpt2Config, w: &LayerWeights) -> LayerWeights {
        if !self.split() {
            return w.clone();
        }
        let (c, f) = (cfg.n_embd, cfg.n_inner);
        let (cols_c, cols_f) = (self.part(c), self.part(f));
        // c_attn (C, 3C): this rank's columns of q, of k and of v.
        let qkv_cols: Vec<Range<usize>> = (0..3)
            .map(|j| j * c + cols_c.start..j * c + cols_c.end)
            .collect();
        let once = |b: &[f32]| match self.rank {
            0 => b.to_vec(),
            _ => vec![0.0; b.len()],
        };
        LayerWeights {
            ln_1_g: w.ln_1_g.clone(),
            ln_1_b: w.ln_1_b.clone(),
            c_attn_w: columns(&w.c_attn_w, 3 * c, &qkv_cols),
            c_attn_b: qkv_cols
                .iter()
                .flat_map(|r| w.c_attn_b[r.clone()].iter().copied())
                .collect(),
            attn_proj_w: w.attn_proj_w[cols_c.start * c..cols_c.end * c].to_vec(),
            attn_proj_b: once(&w.attn_proj_b),
            ln_2_g: w.ln_2_g.clone(),
            ln_2_b: w.ln_2_b.clone(),
            c_fc_w: columns(&w.c_fc_w, f, std::slice::from_ref(&cols_f)),
            c_fc_b: w.c_fc_b[cols_f.clone()].to_vec(),
            mlp_proj_w: w.mlp_proj_w[cols_f.start * c..cols_f.end * c].to_vec(),
            mlp_proj_b: once(&w.mlp_proj_b),
        }
    }
}

/// Can `cfg` split over `tp` devices? Heads and the MLP width must divide.
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
