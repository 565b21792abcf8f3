//! B, I and W: a training stage's backward over one microbatch as lists of
//! ops: each block's op list ([`block::ops`]) walked in reverse, every op
//! turned into its backward kernels (see the split in [`super`]'s doc).

use std::collections::{HashMap, HashSet};

use super::{get, Op, Stashed, TrainStage};
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::{self as k, Dispatch};
use crate::model::block::{self, Act, Norm};

/// Which part of the backward an action runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `B`: input and weight gradients.
    Full,
    /// `I`: input gradients only.
    Input,
    /// `W`: weight gradients only.
    Weight,
}

impl TrainStage {
    /// B, I or W over one microbatch whose tensors are `s`. With
    /// `recompute` (B only), the forward runs again first from the stashed
    /// stage input (`loss` as for [`TrainStage::forward_ops`]).
    pub fn backward_ops(
        &self,
        gpu: &Gpu,
        s: &HashMap<Stashed, wgpu::Buffer>,
        phase: Phase,
        recompute: bool,
        loss: Option<(&wgpu::Buffer, f32)>,
    ) -> Result<Vec<Op>> {
        let mut ops = if recompute {
            self.forward_ops(gpu, s, loss)?
        } else {
            Vec::new()
        };
        if phase != Phase::Weight {
            ops.extend(self.input_grad_ops(gpu, s)?);
        }
        if phase != Phase::Input {
            ops.extend(self.weight_grad_ops(gpu, s)?);
        }
        Ok(ops)
    }

    /// The dispatches of a norm's backward: d`x` += through the norm, and
    /// its gain's (and bias's) gradient.
    #[allow(clippy::too_many_arguments)]
    fn norm_backward(
        &self,
        gpu: &Gpu,
        kind: Norm,
        dx: &wgpu::Buffer,
        (dg, db): (&wgpu::Buffer, &wgpu::Buffer),
        dout: &wgpu::Buffer,
        x: &wgpu::Buffer,
        g: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let (n, c, eps) = (self.rows(), self.cfg.n_embd, self.cfg.layer_norm_epsilon);
        let stats = &self.ln_stats;
        match kind {
            Norm::Layer => {
                k::layernorm_backward(gpu, dx, dg, db, stats, dout, x, g, n, c, eps).into()
            }
            Norm::Rms => k::rmsnorm_backward(gpu, dx, dg, stats, dout, x, g, n, c, eps).into(),
        }
    }

    /// I: from the gradient of the stage output (received in `dy`, or from
    /// the loss on the head stage) down to the gradient of the stage input.
    fn input_grad_ops(&self, gpu: &Gpu, s: &HashMap<Stashed, wgpu::Buffer>) -> Result<Vec<Op>> {
        let cfg = &self.cfg;
        let (b, t, n) = (self.b, self.t, self.rows());
        let c = cfg.n_embd;
        let ((nh, nkv), hd) = (self.shard.heads(cfg), cfg.head_dim());
        let window = cfg.arch.sliding_window.unwrap_or(0);
        let width = |a: Act| self.width(a);
        let (p, g) = (&self.params, &self.grads);
        let mut ops = Vec::new();
        let l_count = self.layers();
        // The gradient of the stage's top residual stream.
        let mut dout: &wgpu::Buffer = &self.dy;
        if self.part.head {
            let (vs, vw) = (self.vocab.start, self.vocab.len());
            let dlogits = get(s, Stashed::DLogits)?;
            ops.push(Op::Clear(self.dlnf.clone()));
            for (&(v0, len), tb) in self.chunks.iter().zip(p.head()) {
                ops.push(Op::Run(k::matmul_backward_input(
                    gpu,
                    &self.dlnf,
                    dlogits,
                    tb,
                    n,
                    c,
                    len,
                    vw,
                    v0 - vs,
                )));
            }
            // The head is column-parallel over the vocabulary: each rank's
            // share of the final norm's output gradient is a partial sum.
            self.all_reduce(&mut ops, &self.dlnf, n * c);
            let (gamma, _) = p.ln_f.as_ref().expect("ln_f");
            let (dg, db) = g.ln_f.as_ref().expect("ln_f grads");
            ops.push(Op::Clear(self.gx[0].clone()));
            let x = get(s, Stashed::X(l_count))?;
            for d in self.norm_backward(
                gpu,
                block::final_norm(cfg),
                &self.gx[0],
                (dg, db),
                &self.dlnf,
                x,
                gamma,
            ) {
                ops.push(Op::Run(d));
            }
            dout = &self.gx[0];
        }
        let bottom: &wgpu::Buffer = if self.part.embedding {
            get(s, Stashed::DEmb)?
        } else {
            &self.gin
        };
        if l_count == 0 {
            if !std::ptr::eq(dout, bottom) {
                ops.push(Op::Copy(dout.clone(), bottom.clone(), self.message_bytes()));
            }
            return Ok(ops);
        }
        for l in (0..l_count).rev() {
            let (w, gl) = (&p.layers[l], &g.layers[l]);
            let dinp: &wgpu::Buffer = if l == 0 {
                bottom
            } else if std::ptr::eq(dout, &self.gx[0]) {
                &self.gx[1]
            } else {
                &self.gx[0]
            };
            // The gradient of each activation: the block's ends, a linear's
            // output (kept for W), else the backward's scratch.
            let grad = |a: Act| -> Result<wgpu::Buffer> {
                Ok(match a {
                    Act::Out => dout.clone(),
                    Act::X => dinp.clone(),
                    _ => match s.get(&Stashed::Grad(a, l)) {
                        Some(buf) => buf.clone(),
                        None => self.dscratch[&a].clone(),
                    },
                })
            };
            // Backward kernels add into their gradients: each is cleared
            // before its first writer in this block.
            let mut written: HashSet<Act> = HashSet::from([Act::Out]);
            let mut target = |ops: &mut Vec<Op>, a: Act| -> Result<wgpu::Buffer> {
                let buf = grad(a)?;
                if written.insert(a) {
                    ops.push(Op::Clear(buf.clone()));
                }
                Ok(buf)
            };
            for op in self.ops.iter().rev() {
                let ds: Vec<Dispatch> = match *op {
                    block::Op::Residual { a, b: bb, out } => {
                        let (da, db) = (target(&mut ops, a)?, target(&mut ops, bb)?);
                        vec![k::residual_backward(gpu, &da, &db, &grad(out)?, n * c)]
                    }
                    block::Op::Linear {
                        x,
                        w: wt,
                        out,
                        row_split,
                        ..
                    } => {
                        let dx = target(&mut ops, x)?;
                        let (win, wout) = (width(x), width(out));
                        ops.push(Op::Run(k::matmul_backward_input(
                            gpu,
                            &dx,
                            &grad(out)?,
                            wt.of(w),
                            n,
                            win,
                            wout,
                            wout,
                            0,
                        )));
                        // Megatron's conjugate of the forward's all-reduce:
                        // a column-parallel linear's input is replicated, so
                        // its gradient is the sum of every rank's share.
                        if !row_split {
                            self.all_reduce(&mut ops, &dx, n * win);
                        }
                        continue;
                    }
                    block::Op::Gelu { x, out } => {
                        let dx = target(&mut ops, x)?;
                        let xb = self.act(s, x, l)?;
                        vec![k::gelu_backward(gpu, &dx, &grad(out)?, xb, n * width(out))]
                    }
                    block::Op::SwiGlu { x, out } => {
                        let dx = target(&mut ops, x)?;
                        let xb = self.act(s, x, l)?;
                        vec![k::swiglu_backward(gpu, &dx, &grad(out)?, xb, n, width(out))]
                    }
                    block::Op::Norm {
                        kind,
                        x,
                        g: gp,
                        b: bp,
                        out,
                    } => {
                        let dx = target(&mut ops, x)?;
                        let xb = self.act(s, x, l)?;
                        self.norm_backward(
                            gpu,
                            kind,
                            &dx,
                            (gp.of(gl), bp.of(gl)),
                            &grad(out)?,
                            xb,
                            gp.of(w),
                        )
                    }
                    block::Op::Rope { qkv } => {
                        // In place: d(rotated) becomes d(unrotated).
                        let (pos, inv) = self.rope.as_ref().expect("rotary positions");
                        vec![k::rope_backward(
                            gpu,
                            &grad(qkv)?,
                            pos,
                            inv,
                            n,
                            nh,
                            nkv,
                            hd,
                            k::PositionTable::sequences(t, 0),
                        )]
                    }
                    block::Op::Attention { qkv, out } => {
                        let dqkv = target(&mut ops, qkv)?;
                        k::attention_backward(
                            gpu,
                            &dqkv,
                            &self.att_stats,
                            &grad(out)?,
                            self.act(s, qkv, l)?,
                            self.act(s, out, l)?,
                            get(s, Stashed::AttLse(l))?,
                            b,
                            t,
                            nh,
                            nkv,
                            hd,
                            window,
                        )
                        .into()
                    }
                };
                ops.extend(ds.into_iter().map(Op::Run));
            }
            dout = dinp;
        }
        Ok(ops)
    }

    /// W: every weight gradient from the stashed matmul inputs and the
    /// output gradients I stashed; the embedding's from its output gradient.
    fn weight_grad_ops(&self, gpu: &Gpu, s: &HashMap<Stashed, wgpu::Buffer>) -> Result<Vec<Op>> {
        let cfg = &self.cfg;
        let (t, n) = (self.t, self.rows());
        let c = cfg.n_embd;
        let width = |a: Act| self.width(a);
        let g = &self.grads;
        let mut ops = Vec::new();
        let mut run = |d: Dispatch| ops.push(Op::Run(d));
        if self.part.head {
            let (vs, vw) = (self.vocab.start, self.vocab.len());
            let (dlogits, lnf) = (get(s, Stashed::DLogits)?, get(s, Stashed::Lnf)?);
            for (&(v0, len), gb) in self.chunks.iter().zip(g.head()) {
                run(k::matmul_backward_weight(
                    gpu,
                    gb,
                    dlogits,
                    lnf,
                    n,
                    c,
                    len,
                    vw,
                    v0 - vs,
                ));
            }
        }
        for l in (0..self.layers()).rev() {
            let gl = &g.layers[l];
            for op in self.ops.iter().rev() {
                if let block::Op::Linear {
                    x,
                    w,
                    b,
                    out,
                    row_split,
                } = *op
                {
                    let dout = get(s, Stashed::Grad(out, l))?;
                    let (win, wout) = (width(x), width(out));
                    run(k::matmul_backward_weight(
                        gpu,
                        w.of(gl),
                        dout,
                        self.act(s, x, l)?,
                        n,
                        win,
                        wout,
                        wout,
                        0,
                    ));
                    // A row-split bias is rank 0's alone (the others
                    // hold zeros that stay zero).
                    if *b.of(&self.present) && !(row_split && self.shard.rank > 0) {
                        run(k::matmul_backward_bias(
                            gpu,
                            b.of(gl),
                            dout,
                            n,
                            wout,
                            wout,
                            0,
                        ));
                    }
                }
            }
        }
        if self.part.embedding {
            let ids = self.ids.as_ref().expect("ids");
            let dwpe = g.wpe.as_ref().unwrap_or(&self.dlnf);
            let demb = get(s, Stashed::DEmb)?;
            for (i, (&(v0, len), gb)) in self.chunks.iter().zip(&g.wte_t).enumerate() {
                run(k::embedding_backward(
                    gpu,
                    gb,
                    dwpe,
                    demb,
                    ids,
                    n,
                    t,
                    c,
                    v0,
                    len,
                    i == 0 && g.wpe.is_some(),
                ));
            }
        }
        Ok(ops)
    }
}
