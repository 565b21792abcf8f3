//! What a training stage keeps between its actions: the [`Stashed`]
//! tensors of one microbatch, their sizes, and which of them each action
//! makes ([`TrainStage::acquires`]) and lets go of ([`TrainStage::releases`]).

use super::TrainStage;

/// A tensor a stage keeps for one microbatch between two of its actions.
/// Layer indices are local to the stage (0 = its first block).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stashed {
    /// (N, C) residual stream into block `l`; `X(L)` is ln_f's input on the
    /// head stage; `X(0)` is the stage input (the received activation, or
    /// the embedding's output).
    X(usize),
    Ln1(usize),  // (N, C)
    Qkv(usize),  // (N, 3C)
    Atty(usize), // (N, C)
    /// (B, NH, T) log-sum-exp of block `l`'s attention scores, per query.
    AttLse(usize),
    Res2(usize), // (N, C)
    Ln2(usize),  // (N, C)
    Fch(usize),  // (N, F)
    Fcg(usize),  // (N, F)
    /// (N, C) ln_f output, the LM head's input.
    Lnf,
    /// (N, Vp) gradient of the loss w.r.t. the logits.
    DLogits,
    /// Output gradients of the four matmuls of block `l`, made by I for W.
    DQkv(usize), // (N, 3C)
    DAttProj(usize), // (N, C)
    DFch(usize),     // (N, F)
    DFcProj(usize),  // (N, C)
    /// (N, C) gradient of the embedding's output, made by I for W.
    DEmb,
}

impl TrainStage {
    /// The residual streams F stashes: the input of every block, and ln_f's
    /// input on the head stage (with no blocks and no head: the stage input,
    /// which is then also its output).
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
        let (n, c, f) = (self.rows(), self.cfg.n_embd, self.cfg.n_inner);
        match s {
            Stashed::X(_)
            | Stashed::Ln1(_)
            | Stashed::Atty(_)
            | Stashed::Res2(_)
            | Stashed::Ln2(_)
            | Stashed::Lnf
            | Stashed::DAttProj(_)
            | Stashed::DFcProj(_)
            | Stashed::DEmb => n * c,
            Stashed::Qkv(_) | Stashed::DQkv(_) => n * 3 * c,
            Stashed::Fch(_) | Stashed::Fcg(_) | Stashed::DFch(_) => n * f,
            Stashed::AttLse(_) => n * self.cfg.n_head,
            Stashed::DLogits => n * self.cfg.padded_vocab(),
        }
    }

    /// What F makes that I reads (released at I or B).
    fn input_set(&self) -> Vec<Stashed> {
        let mut v: Vec<Stashed> = self.xs().map(Stashed::X).collect();
        for l in 0..self.layers() {
            v.extend([
                Stashed::Qkv(l),
                Stashed::AttLse(l),
                Stashed::Res2(l),
                Stashed::Fch(l),
            ]);
        }
        v
    }

    /// What F makes that W reads (released at W or B).
    fn weight_set(&self) -> Vec<Stashed> {
        let mut v = Vec::new();
        for l in 0..self.layers() {
            v.extend([
                Stashed::Ln1(l),
                Stashed::Atty(l),
                Stashed::Ln2(l),
                Stashed::Fcg(l),
            ]);
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
            v.extend([
                Stashed::DQkv(l),
                Stashed::DAttProj(l),
                Stashed::DFch(l),
                Stashed::DFcProj(l),
            ]);
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
