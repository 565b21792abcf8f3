//! F: a training stage's forward over one microbatch, its blocks' op lists
//! ([`block::ops`]) turned into dispatches as the GPU stage's builder turns
//! them, every activation the backward reads written into its stashed
//! buffer, and on the head stage the loss and the gradient of the logits.

use std::collections::HashMap;

use super::{get, Op, Stashed, TrainStage};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::kernels::{self as k, Dispatch};
use crate::model::block::{self, Act, Norm};

impl TrainStage {
    /// Where the stage's output lies after F: its last stashed residual
    /// stream on the head stage, else the shared output buffer.
    fn top<'a>(&'a self, s: &'a HashMap<Stashed, wgpu::Buffer>) -> Result<&'a wgpu::Buffer> {
        let l = self.layers();
        if self.part.head || l == 0 {
            get(s, Stashed::X(if self.part.head { l } else { 0 }))
        } else {
            Ok(&self.out)
        }
    }

    /// F's output message buffer (the stage output), given F's tensors.
    pub fn output_of_forward<'a>(
        &'a self,
        s: &'a HashMap<Stashed, wgpu::Buffer>,
    ) -> Result<&'a wgpu::Buffer> {
        self.top(s)
    }

    /// The buffer F writes activation `a` of block `l` into: the residual
    /// stream's, a stashed one, or the projections' shared scratch.
    pub(super) fn act<'a>(
        &'a self,
        s: &'a HashMap<Stashed, wgpu::Buffer>,
        a: Act,
        l: usize,
    ) -> Result<&'a wgpu::Buffer> {
        match a {
            Act::X => get(s, Stashed::X(l)),
            Act::Out if l + 1 < self.layers() => get(s, Stashed::X(l + 1)),
            Act::Out => self.top(s),
            _ => match s.get(&Stashed::Act(a, l)) {
                Some(b) => Ok(b),
                None => Ok(&self.proj),
            },
        }
    }

    /// A dispatch of the final norm or a block's norm.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn norm_forward(
        &self,
        gpu: &Gpu,
        kind: Norm,
        out: &wgpu::Buffer,
        x: &wgpu::Buffer,
        g: &wgpu::Buffer,
        b: &wgpu::Buffer,
    ) -> Dispatch {
        let (n, c, eps) = (self.rows(), self.cfg.n_embd, self.cfg.layer_norm_epsilon);
        match kind {
            Norm::Layer => k::layernorm_forward(gpu, out, x, g, b, n, c, eps),
            Norm::Rms => k::rmsnorm_forward(gpu, out, x, g, n, c, eps),
        }
    }

    /// F: the forward over one microbatch, writing the tensors of `s`; on the
    /// head stage also, from `loss` = (losses, scale), each row's
    /// cross-entropy into `losses` (N) and `dlogits` = scale * d(Σ losses),
    /// with `scale` = 1 / (predictions in the whole batch).
    pub fn forward_ops(
        &self,
        gpu: &Gpu,
        s: &HashMap<Stashed, wgpu::Buffer>,
        loss: Option<(&wgpu::Buffer, f32)>,
    ) -> Result<Vec<Op>> {
        let cfg = &self.cfg;
        let (b, t, n) = (self.b, self.t, self.rows());
        let c = cfg.n_embd;
        let ((nh, nkv), hd) = (self.shard.heads(cfg), cfg.head_dim());
        let window = cfg.arch.sliding_window.unwrap_or(0);
        let width = |a: Act| self.width(a);
        let p = &self.params;
        let mut ops = Vec::new();
        let run = |ops: &mut Vec<Op>, d: Dispatch| ops.push(Op::Run(d));
        if self.part.embedding {
            let ids = self.ids.as_ref().expect("embedding ids");
            let x0 = get(s, Stashed::X(0))?;
            // A rank embeds its vocabulary range's tokens only: the others'
            // rows stay zero, so the group's sum is the whole embedding.
            if self.shard.split() {
                ops.push(Op::Clear(x0.clone()));
            }
            for (&(v0, len), tb) in self.chunks.iter().zip(&p.wte_t) {
                run(
                    &mut ops,
                    k::embedding_forward(gpu, x0, ids, tb, p.wpe.as_ref(), n, t, c, v0, len, 0),
                );
            }
            self.all_reduce(&mut ops, x0, n * c);
        }
        for (l, w) in p.layers.iter().enumerate() {
            for op in &self.ops {
                let d = match *op {
                    block::Op::Norm {
                        kind,
                        x,
                        g,
                        b: beta,
                        out,
                    } => self.norm_forward(
                        gpu,
                        kind,
                        self.act(s, out, l)?,
                        self.act(s, x, l)?,
                        g.of(w),
                        beta.of(w),
                    ),
                    block::Op::Linear {
                        x,
                        w: wt,
                        b: bias,
                        out,
                        row_split,
                    } => {
                        let y = self.act(s, out, l)?;
                        run(
                            &mut ops,
                            k::matmul_forward(
                                gpu,
                                y,
                                self.act(s, x, l)?,
                                wt.of(w),
                                bias.of(w),
                                n,
                                width(x),
                                width(out),
                            ),
                        );
                        // A row-split projection's output is a partial sum.
                        if row_split {
                            self.all_reduce(&mut ops, y, n * width(out));
                        }
                        continue;
                    }
                    block::Op::Rope { qkv } => {
                        let (pos, inv) = self.rope.as_ref().expect("rotary positions");
                        k::rope_forward(
                            gpu,
                            self.act(s, qkv, l)?,
                            pos,
                            inv,
                            n,
                            nh,
                            nkv,
                            hd,
                            k::PositionTable::sequences(t, 0),
                        )
                    }
                    block::Op::Attention { qkv, out } => k::attention_forward_lse(
                        gpu,
                        self.act(s, out, l)?,
                        get(s, Stashed::AttLse(l))?,
                        self.act(s, qkv, l)?,
                        b,
                        t,
                        nh,
                        nkv,
                        hd,
                        window,
                    ),
                    block::Op::Gelu { x, out } => k::gelu_forward(
                        gpu,
                        self.act(s, out, l)?,
                        self.act(s, x, l)?,
                        n * width(out),
                    ),
                    block::Op::SwiGlu { x, out } => k::swiglu_forward(
                        gpu,
                        self.act(s, out, l)?,
                        self.act(s, x, l)?,
                        n,
                        width(out),
                    ),
                    block::Op::Residual { a, b: bb, out } => k::residual_forward(
                        gpu,
                        self.act(s, out, l)?,
                        self.act(s, a, l)?,
                        self.act(s, bb, l)?,
                        n * c,
                    ),
                };
                run(&mut ops, d);
            }
        }
        if self.part.head {
            let (vs, vw) = (self.vocab.start, self.vocab.len());
            let (g, bb) = p.ln_f.as_ref().expect("ln_f");
            let (lnf, dlogits) = (get(s, Stashed::Lnf)?, get(s, Stashed::DLogits)?);
            let logits = self.logits.as_ref().expect("logits");
            let no_bias = self.no_bias.as_ref().expect("no bias");
            let top = self.top(s)?;
            run(
                &mut ops,
                self.norm_forward(gpu, block::final_norm(cfg), lnf, top, g, bb),
            );
            // This rank's columns of the logits only.
            for (&(v0, len), tb) in self.chunks.iter().zip(p.head()) {
                run(
                    &mut ops,
                    k::matmul_forward_strided(
                        gpu,
                        logits,
                        lnf,
                        tb,
                        no_bias,
                        n,
                        c,
                        len,
                        vw,
                        v0 - vs,
                    ),
                );
            }
            let (losses, scale) = loss.ok_or_else(|| {
                Error::Other("bug: the head stage's forward needs a loss buffer".into())
            })?;
            ops.push(Op::Clear(dlogits.clone()));
            let targets = self.targets.as_ref().expect("targets");
            match &self.ce {
                None => ops.push(Op::Run(k::crossentropy_softmax_backward(
                    gpu,
                    dlogits,
                    losses,
                    logits,
                    targets,
                    scale,
                    n,
                    cfg.vocab_size,
                    vw,
                ))),
                // Vocabulary-parallel: the row maxima and the sums of
                // exponentials (with the target's logit) all-reduced, no
                // rank ever holding another's logits.
                Some((stats, sums)) => {
                    let [max, sum, grad] = k::crossentropy_vocab_parallel(
                        gpu,
                        dlogits,
                        losses,
                        stats,
                        sums,
                        logits,
                        targets,
                        scale,
                        n,
                        cfg.vocab_size,
                        (vs, vw),
                        (self.shard.rank, self.shard.of),
                    );
                    ops.push(Op::Clear(stats.clone()));
                    ops.push(Op::Run(max));
                    self.all_reduce(&mut ops, stats, n * self.shard.of);
                    ops.push(Op::Run(sum));
                    self.all_reduce(&mut ops, sums, 2 * n);
                    ops.push(Op::Run(grad));
                }
            }
        }
        Ok(ops)
    }
}
