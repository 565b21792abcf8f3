//! Splitting a batch into microbatches, and the padding that gives every
//! microbatch the same shape.
//!
//! Device buffers are allocated once per run for one microbatch shape, so a
//! short microbatch is padded by repeating its last sequence; the padding rows
//! are dropped again when results are gathered ([`Microbatch::real_rows`]).
//! The pipeline executor and the single-device forward both split this way.

use crate::error::{Error, Result};
use crate::io::TokenBatch;

/// One microbatch: which input sequences it carries, and its (padded) ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Microbatch {
    /// Index of its first sequence in the batch.
    pub first: usize,
    /// Real sequences (the rest of `ids` is padding).
    pub count: usize,
    /// (per, T) ids; sequences past `count` repeat the last real one.
    pub ids: Vec<u32>,
}

impl Microbatch {
    /// The first `count` rows of a padded per-microbatch result whose rows
    /// are `row` values long (e.g. T·V for logits).
    pub fn real_rows<'a, T>(&self, padded: &'a [T], row: usize) -> &'a [T] {
        &padded[..self.count * row]
    }
}

/// A batch split into microbatches of at most `per` sequences each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Microbatches {
    /// Sequences per (padded) microbatch: the largest microbatch.
    pub per: usize,
    pub seq: usize,
    pub list: Vec<Microbatch>,
}

impl Microbatches {
    /// Split B sequences into `m` microbatches as evenly as possible (sizes
    /// differ by at most one; earlier ones take the remainder).
    pub fn split(tokens: &TokenBatch, m: usize) -> Result<Microbatches> {
        let b = tokens.batch;
        if m == 0 || m > b {
            return Err(Error::Input(format!(
                "{m} microbatches for a batch of {b} sequences: each microbatch needs at least one sequence; use --microbatches 1..={b} or a larger --batch"
            )));
        }
        let per = b.div_ceil(m);
        let mut first = 0;
        let list = (0..m)
            .map(|i| {
                let count = b / m + usize::from(i < b % m);
                let mb = Self::slice(tokens, first, count, per);
                first += count;
                mb
            })
            .collect();
        Ok(Microbatches {
            per,
            seq: tokens.seq,
            list,
        })
    }

    /// Consecutive passes of `per` sequences (the last one padded): how a
    /// single device runs a batch larger than its buffers.
    pub fn passes(tokens: &TokenBatch, per: usize) -> Microbatches {
        let per = per.clamp(1, tokens.batch.max(1));
        let list = (0..tokens.batch)
            .step_by(per)
            .map(|first| Self::slice(tokens, first, per.min(tokens.batch - first), per))
            .collect();
        Microbatches {
            per,
            seq: tokens.seq,
            list,
        }
    }

    fn slice(tokens: &TokenBatch, first: usize, count: usize, per: usize) -> Microbatch {
        let t = tokens.seq;
        let mut ids = tokens.ids[first * t..(first + count) * t].to_vec();
        while ids.len() < per * t {
            ids.extend_from_within(ids.len() - t..);
        }
        Microbatch { first, count, ids }
    }

    /// Put each microbatch's padded result (`row` values per sequence) back
    /// in batch order, dropping the padding rows.
    pub fn gather<T: Copy + Default>(&self, results: &[(usize, Vec<T>)], row: usize) -> Vec<T> {
        let batch: usize = self.list.iter().map(|mb| mb.count).sum();
        let mut out = vec![T::default(); batch * row];
        for (m, padded) in results {
            let mb = &self.list[*m];
            out[mb.first * row..(mb.first + mb.count) * row]
                .copy_from_slice(mb.real_rows(padded, row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(b: usize, t: usize) -> TokenBatch {
        TokenBatch {
            ids: (0..(b * t) as u32).collect(),
            batch: b,
            seq: t,
        }
    }

    #[test]
    fn uneven_split_pads_with_the_last_sequence() {
        let mbs = Microbatches::split(&batch(5, 2), 3).unwrap();
        assert_eq!(mbs.per, 2);
        let counts: Vec<_> = mbs.list.iter().map(|m| (m.first, m.count)).collect();
        assert_eq!(counts, vec![(0, 2), (2, 2), (4, 1)]);
        assert_eq!(mbs.list[2].ids, vec![8, 9, 8, 9]);
    }

    #[test]
    fn gather_restores_batch_order_without_padding() {
        let mbs = Microbatches::split(&batch(5, 1), 2).unwrap();
        // Results in completion order, each a padded copy of its ids.
        let results: Vec<(usize, Vec<u32>)> = [1, 0]
            .into_iter()
            .map(|m| (m, mbs.list[m].ids.clone()))
            .collect();
        assert_eq!(mbs.gather(&results, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn passes_cover_the_batch() {
        let p = Microbatches::passes(&batch(5, 1), 2);
        assert_eq!(p.list.len(), 3);
        assert_eq!(p.list[2].ids, vec![4, 4]);
        assert_eq!(
            p.gather(&[(0, vec![0, 1]), (1, vec![2, 3]), (2, vec![4, 4])], 1)
                .len(),
            5
        );
    }

    #[test]
    fn too_many_microbatches_are_refused() {
        let e = Microbatches::split(&batch(2, 1), 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 microbatches for a batch of 2"), "{e}");
        assert!(Microbatches::split(&batch(2, 1), 0).is_err());
    }
}
