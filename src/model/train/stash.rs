//! What a training stage keeps between its actions: the [`Stashed`]
//! tensors of one microbatch, their sizes, and which of them each action
//! makes ([`TrainStage::acquires`]) and lets go of ([`TrainStage::releases`]).
//!
//! Which activations of a block are kept follows from the block's op list
//! ([`crate::model::block::ops`]): the backward of a norm, an activation function and the
//! attention reads their inputs (I), a linear's weight gradient reads its
//! input (W), and W reads the output gradient of every linear, which I makes.

use super::TrainStage;
use crate::model::block::{Act, Op};

/// A tensor a stage keeps for one microbatch between two of its actions.
/// Layer indices are local to the stage (0 = its first block).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stashed {
    /// (N, C) residual stream into block `l`; `X(L)` is the final norm's
    /// input on the head stage; `X(0)` is the stage input (the received
    /// activation, or the embedding's output).
    X(usize),
    /// Activation `a` of block `l` that the backward reads.
    Act(Act, usize),
    /// (B, NH, T) the log-sum-exp of block `l`'s attention scores.
    AttLse(usize),
    /// (N, C) the final norm's output, the LM head's input.
    Lnf,
    /// (N, Vp) gradient of the loss w.r.t. the logits.
    DLogits,
    /// Gradient of the output `a` of a linear of block `l`, made by I for W.
    Grad(Act, usize),
    /// (N, C) gradient of the embedding's output, made by I for W.
    DEmb,
}

/// The activations of a block the backward reads, by the action that reads
/// them last: (I's, W's), and the linears' outputs whose gradients I keeps
/// for W. The residual stream (`X`, `Out`) is kept as [`Stashed::X`].
pub(super) fn block_sets(ops: &[Op]) -> (Vec<Act>, Vec<Act>, Vec<Act>) {
    let (mut input, mut weight, mut grads) = (Vec::new(), Vec::new(), Vec::new());
    for op in ops {
        match *op {
            Op::Norm { x, .. } | Op::Gelu { x, .. } | Op::SwiGlu { x, .. } => input.push(x),
            Op::Attention { qkv, out } => input.extend([qkv, out]),
            Op::Linear { x, out, .. } => {
                weight.push(x);
                grads.push(out);
            }
            Op::Rope { .. } | Op::Residual { .. } => {}
        }
    }
    let residual = |a: &Act| !matches!(a, Act::X | Act::Out);
    input.retain(|a| residual(a) && !weight.contains(a));
    weight.retain(residual);
    for v in [&mut input, &mut weight] {
        let mut seen = Vec::new();
        v.retain(|a| match seen.contains(a) {
            true => false,
            false => {
                seen.push(*a);
                true
            }
        });
    }
    (input, weight, grads)
}

impl TrainStage {
    /// The residual streams F stashes: the input of every block, and the
    /// final norm's input on the head stage (with no blocks and no head: the
    /// stage input, which is then also its output).
    fn xs(&self) -> std::ops::Range<usize> {
        let l = self.layers();
        if self.part.head {
            0..l + 1
        } else {
            0..l.max(1)
        }
    }

    /// f32 elements of a stashed tensor.
    pub fn stash_len(&self, s: Stashed) -> usize {
        let (n, cfg) = (self.rows(), &self.cfg);
        match s {
            Stashed::X(_) | Stashed::Lnf | Stashed::DEmb => n * cfg.n_embd,
            Stashed::Act(a, _) | Stashed::Grad(a, _) => n * self.width(a),
            Stashed::AttLse(_) => self.b * self.shard.heads(cfg).0 * self.t,
            Stashed::DLogits => n * self.vocab.len(),
        }
    }

    /// What F makes that I reads (released at I or B).
    fn input_set(&self) -> Vec<Stashed> {
        let mut v: Vec<Stashed> = self.xs().map(Stashed::X).collect();
        let attention = self.ops.iter().any(|op| matches!(op, Op::Attention { .. }));
        for l in 0..self.layers() {
            v.extend(self.sets.0.iter().map(|&a| Stashed::Act(a, l)));
            if attention {
                v.push(Stashed::AttLse(l));
            }
        }
        v
    }

    /// What F makes that W reads (released at W or B).
    fn weight_set(&self) -> Vec<Stashed> {
        let mut v = Vec::new();
        for l in 0..self.layers() {
            v.extend(self.sets.1.iter().map(|&a| Stashed::Act(a, l)));
        }
        if self.part.head {
            v.extend([Stashed::Lnf, Stashed::DLogits]);
        }
        v
    }

    /// What I makes for W.
    fn grad_set(&self) -> Vec<Stashed> {
        let mut v = Vec::new();
        for l in 0..self.layers() {
            v.extend(self.sets.2.iter().map(|&a| Stashed::Grad(a, l)));
        }
        if self.part.embedding {
            v.push(Stashed::DEmb);
        }
        v
    }

    /// The tensors action `kind` needs new buffers for, before it runs. With
    /// `recompute`, F keeps only the stage input and B makes the rest again.
    pub fn acquires(&self, kind: crate::action::Kind, recompute: bool) -> Vec<Stashed> {
        use crate::action::Kind;
        let forward = [self.input_set(), self.weight_set()].concat();
        match (kind, recompute) {
            (Kind::F, _) => forward,
            (Kind::B, true) => [
                forward
                    .into_iter()
                    .filter(|s| *s != Stashed::X(0))
                    .collect(),
                self.grad_set(),
            ]
            .concat(),
            (Kind::B | Kind::I, false) => self.grad_set(),
            (Kind::I | Kind::W, true) | (Kind::W, false) => Vec::new(),
        }
    }

    /// The tensors whose buffers action `kind` is done with when it ends.
    pub fn releases(&self, kind: crate::action::Kind, recompute: bool) -> Vec<Stashed> {
        use crate::action::Kind;
        let all = [self.input_set(), self.weight_set(), self.grad_set()].concat();
        match (kind, recompute) {
            (Kind::F, true) => [self.input_set(), self.weight_set()]
                .concat()
                .into_iter()
                .filter(|s| *s != Stashed::X(0))
                .collect(),
            (Kind::F, false) => Vec::new(),
            (Kind::B, _) => all,
            (Kind::I, _) => self.input_set(),
            (Kind::W, _) => [self.weight_set(), self.grad_set()].concat(),
        }
    }
}
