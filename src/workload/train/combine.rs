//! What training combines across devices outside the pipeline: the tied
//! token table's two gradient shares, the gradient of a KV head replicated
//! on several tensor-parallel ranks, and the tensors read back (gradients,
//! weights, optimizer moments) — under tensor parallelism every rank's
//! shards, merged into whole tensors under the checkpoint's names. Each goes
//! through [`crate::executor::Cluster::share`] in endpoint order, so every
//! MPI rank sums exactly as one process does.

use std::collections::BTreeMap;

use super::Trainer;
use crate::error::{Error, Result};
use crate::model::grads::Gpt2Grads;
use crate::model::train::Which;
use crate::model::{Gpt2Config, LayerWeights, Shard};

impl Trainer<'_> {
    /// The token table is one parameter used twice: the embedding's and the
    /// LM head's gradient shares, on different stages, are summed into both
    /// copies so that both take the same optimizer step. Under tensor
    /// parallelism each rank's share is zero outside its vocabulary range,
    /// so the one sum over every Gpu's is each range's sum, and each rank
    /// takes its range back.
    pub(super) fn sum_tied_embedding(&self) -> Result<()> {
        let holders: usize = self.parts.iter().filter(|p| p.embedding || p.head).count();
        let same_stage = self.parts.iter().any(|p| p.embedding && p.head);
        if !self.cfg.tied_head() || holders < 2 || same_stage {
            return Ok(());
        }
        let mine: Vec<Vec<f32>> = self
            .with_programs(|gpu, p| {
                p.stages
                    .values()
                    .filter(|s| s.part.embedding || s.part.head)
                    .map(|s| s.wte_grad(gpu))
                    .collect::<Result<Vec<_>>>()
            })?
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        let mut sum = vec![0f32; self.cfg.vocab_size * self.cfg.n_embd];
        for share in self.cluster.share(mine)?.iter().flatten() {
            for (a, b) in sum.iter_mut().zip(share) {
                *a += b;
            }
        }
        self.with_programs(|gpu, p| {
            for s in p
                .stages
                .values()
                .filter(|s| s.part.embedding || s.part.head)
            {
                s.write_wte_grad(gpu, &sum)?;
            }
            gpu.queue.submit([]);
            gpu.wait()
        })?;
        Ok(())
    }

    /// Under tensor parallelism with T above the KV heads, each KV head is
    /// replicated on T / NKV ranks, and each replica's k and v columns got
    /// the gradient of its own query heads only: the head's gradient is the
    /// replicas' sum (in rank order), written back into every replica so
    /// that all take the same step. (The input gradient needs nothing: the
    /// group's all-reduce already adds every replica's share.) Returns Σ g²
    /// of the replicas beyond each head's first, which the norm leaves out.
    pub(super) fn sum_replicated_kv(&self) -> Result<f64> {
        let cfg = &self.cfg;
        let (tp, nkv) = (self.tp, cfg.kv_heads());
        if tp <= nkv {
            return Ok(0.0);
        }
        // A rank's q, k, v row: its query heads' q, then its one KV head's
        // k and v.
        let q = cfg.q_width() / tp;
        let width = q + 2 * cfg.head_dim();
        let kv = |m: &[f32]| -> Vec<f32> {
            m.chunks(width)
                .flat_map(|row| row[q..].iter().copied())
                .collect()
        };
        let mine: Vec<Vec<Piece>> = self.with_programs(|gpu, p| {
            let mut out = Vec::new();
            for st in p.stages.values() {
                for (i, l) in st.part.layers.clone().enumerate() {
                    let (w, b) = st.qkv_grad(gpu, i)?;
                    out.push(((l as u32, p.shard.rank as u32), 0, vec![kv(&w), kv(&b)]));
                }
            }
            Ok(out)
        })?;
        let head = |r: usize| Shard { rank: r, of: tp }.first_kv_head(cfg);
        let mut sums: BTreeMap<(u32, usize), Vec<Vec<f32>>> = BTreeMap::new();
        let all = self.cluster.share(mine.concat())?.concat();
        for ((l, r), _, t) in &all {
            match sums.get_mut(&(*l, head(*r as usize))) {
                None => {
                    sums.insert((*l, head(*r as usize)), t.clone());
                }
                Some(s) => {
                    for (a, b) in s.iter_mut().zip(t) {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    }
                }
            }
        }
        // Every replica but each head's first (rank h·T/NKV) counted again.
        let mut again = 0.0;
        for ((l, r), ..) in &all {
            let (r, h) = (*r as usize, head(*r as usize));
            if r != h * tp / nkv {
                let s = &sums[&(*l, h)];
                again += s
                    .iter()
                    .flatten()
                    .map(|&x| x as f64 * x as f64)
                    .sum::<f64>();
            }
        }
        self.with_programs(|gpu, p| {
            let h = head(p.shard.rank);
            for st in p.stages.values() {
                for (i, l) in st.part.layers.clone().enumerate() {
                    let s = &sums[&(l as u32, h)];
                    let (mut w, mut b) = st.qkv_grad(gpu, i)?;
                    for (m, sum) in [(&mut w, &s[0]), (&mut b, &s[1])] {
                        for (row, srow) in m.chunks_mut(width).zip(sum.chunks(width - q)) {
                            row[q..].copy_from_slice(srow);
                        }
                    }
                    st.write_qkv_grad(gpu, i, &w, &b);
                }
            }
            gpu.queue.submit([]);
            gpu.wait()
        })?;
        Ok(again)
    }

    /// Read every stage's tensors, in checkpoint layout (the token table
    /// from the embedding stage); under tensor parallelism every rank's
    /// shards, merged into whole tensors.
    pub(super) fn gather(&self, which: Which) -> Result<Gpt2Grads> {
        let cfg = &self.cfg;
        let mine: Vec<Vec<Piece>> = self.with_programs(|gpu, p| {
            let mut pieces = Vec::new();
            let rank = p.shard.rank as u32;
            for st in p.stages.values() {
                let host = st.read(gpu, which)?;
                let part = &st.part;
                if part.embedding {
                    if let Some(v) = host.wte {
                        pieces.push(Gathered::Wte(v).piece(cfg, rank));
                    }
                }
                if let Some(v) = host.wpe {
                    pieces.push(Gathered::Wpe(v).piece(cfg, rank));
                }
                for (l, lw) in part.layers.clone().zip(host.layers) {
                    pieces.push(Gathered::Layer(l, Box::new(lw)).piece(cfg, rank));
                }
                if let Some((a, b)) = host.ln_f {
                    pieces.push(Gathered::LnF(a, b).piece(cfg, rank));
                }
                if let Some(v) = host.lm_head {
                    pieces.push(Gathered::LmHead(v).piece(cfg, rank));
                }
            }
            Ok(pieces)
        })?;
        let tp = self.tp;
        let mut g = Gpt2Grads::zeros(cfg);
        let mut shards: BTreeMap<usize, Vec<(usize, LayerWeights)>> = BTreeMap::new();
        // A rank's token table holds its vocabulary range, zeros elsewhere:
        // the sum of the ranks' tables is the whole one.
        let add = |dst: &mut Vec<f32>, v: Vec<f32>| match dst.len() == v.len() {
            true => dst.iter_mut().zip(v).for_each(|(a, b)| *a += b),
            false => *dst = v,
        };
        for piece in self.cluster.share(mine.concat())?.into_iter().flatten() {
            let rank = (piece.0).1 as usize;
            if rank >= tp {
                return Err(Error::Other("a rank's tensors arrived corrupt".into()));
            }
            match Gathered::from_piece(cfg, piece, Shard { rank, of: tp })? {
                Gathered::Wte(v) => add(&mut g.wte, v),
                Gathered::LmHead(v) => add(&mut g.lm_head, v),
                Gathered::Wpe(v) if rank == 0 => g.wpe = v,
                Gathered::LnF(a, b) if rank == 0 => {
                    g.ln_f_g = a;
                    g.ln_f_b = b;
                }
                Gathered::Layer(l, lw) => shards.entry(l).or_default().push((rank, *lw)),
                Gathered::Wpe(_) | Gathered::LnF(..) => {}
            }
        }
        for (l, mut by_rank) in shards {
            by_rank.sort_by_key(|(r, _)| *r);
            let ranks: Vec<LayerWeights> = by_rank.into_iter().map(|(_, w)| w).collect();
            if ranks.len() != tp {
                return Err(Error::Other(format!(
                    "block {l} arrived from {} of the {tp} tensor-parallel ranks",
                    ranks.len()
                )));
            }
            g.layers[l] = Shard::merge(cfg, &ranks)?;
        }
        Ok(g)
    }
}

enum Gathered {
    Wte(Vec<f32>),
    Wpe(Vec<f32>),
    Layer(usize, Box<crate::model::LayerWeights>),
    LnF(Vec<f32>, Vec<f32>),
    LmHead(Vec<f32>),
}

/// A [`Gathered`] tensor set as plain data, to cross processes: ((what,
/// tensor-parallel rank), layer, tensors in checkpoint order).
type Piece = ((u32, u32), usize, Vec<Vec<f32>>);

impl Gathered {
    fn piece(self, cfg: &Gpt2Config, rank: u32) -> Piece {
        match self {
            Gathered::Wte(v) => ((0, rank), 0, vec![v]),
            Gathered::Wpe(v) => ((1, rank), 0, vec![v]),
            Gathered::Layer(l, lw) => (
                (2, rank),
                l,
                lw.named_tensors(cfg)
                    .into_iter()
                    .map(|(_, t, _)| t.clone())
                    .collect(),
            ),
            Gathered::LnF(a, b) => ((3, rank), 0, vec![a, b]),
            Gathered::LmHead(v) => ((4, rank), 0, vec![v]),
        }
    }

    /// The tensors of `shard`'s piece.
    fn from_piece(
        cfg: &Gpt2Config,
        ((what, _), l, tensors): Piece,
        shard: Shard,
    ) -> Result<Gathered> {
        let lens = shard.layer_lens(cfg);
        let bad = || Error::Other("a rank's tensors arrived corrupt".into());
        let mut it = tensors.into_iter();
        let mut next = || it.next().ok_or_else(bad);
        Ok(match what {
            0 => Gathered::Wte(next()?),
            1 => Gathered::Wpe(next()?),
            2 if l < cfg.n_layer => Gathered::Layer(
                l,
                // The tensors the family has arrived; the others are zeros.
                Box::new(lens.try_map(cfg, |name, &len, _| {
                    match crate::model::weights::block_role_present(cfg, name) {
                        true => next(),
                        false => Ok(vec![0.0; len]),
                    }
                })?),
            ),
            3 => Gathered::LnF(next()?, next()?),
            4 => Gathered::LmHead(next()?),
            _ => return Err(bad()),
        })
    }
}
