//! B, I and W: a training stage's backward over one microbatch as lists of
//! ops, call for call the mirror of `cpu::backward::forward_backward_microbatch`
//! (see the split in [`super`]'s doc).

use std::collections::HashMap;

use super::{get, Op, Stashed, TrainStage};
use crate::device::Gpu;
use crate::error::Result;
use crate::kernels::{self as k, Dispatch};

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

    /// I: from the gradient of the stage output (received in `dy`, or from
    /// the loss on the head stage) down to the gradient of the stage input.
    fn input_grad_ops(&self, gpu: &Gpu, s: &HashMap<Stashed, wgpu::Buffer>) -> Result<Vec<Op>> {
        let cfg = &self.cfg;
        let (b, t, n) = (self.b, self.t, self.rows());
        let (c, f, nh, eps) = (cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.layer_norm_epsilon);
        let (p, g) = (&self.params, &self.grads);
        let mut ops = Vec::new();
        let clear = |ops: &mut Vec<Op>, b: &wgpu::Buffer| ops.push(Op::Clear(b.clone()));
        let l_count = self.layers();
        // The gradient of the stage's top residual stream.
        let mut dout: &wgpu::Buffer = &self.dy;
        if self.part.head {
            let vp = cfg.padded_vocab();
            let dlogits = get(s, Stashed::DLogits)?;
            clear(&mut ops, &self.dlnf);
            for (&(v0, len), tb) in self.chunks.iter().zip(&p.wte_t) {
                ops.push(Op::Run(k::matmul_backward_input(
                    gpu, &self.dlnf, dlogits, tb, n, c, len, vp, v0,
                )));
            }
            let (gamma, _) = p.ln_f.as_ref().expect("ln_f");
            let (dg, db) = g.ln_f.as_ref().expect("ln_f grads");
            clear(&mut ops, &self.gx[0]);
            let x = get(s, Stashed::X(l_count))?;
            for d in k::layernorm_backward(
                gpu,
                &self.gx[0],
                dg,
                db,
                &self.ln_stats,
                &self.dlnf,
                x,
                gamma,
                n,
                c,
                eps,
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
            let (dqkv, dattproj) = (get(s, Stashed::DQkv(l))?, get(s, Stashed::DAttProj(l))?);
            let (dfch, dfcproj) = (get(s, Stashed::DFch(l))?, get(s, Stashed::DFcProj(l))?);
            // out = res2 + fcproj
            clear(&mut ops, &self.dres2);
            clear(&mut ops, dfcproj);
            ops.push(Op::Run(k::residual_backward(
                gpu,
                &self.dres2,
                dfcproj,
                dout,
                n * c,
            )));
            // fcproj = fcg @ mlp_proj_w + b
            clear(&mut ops, &self.dfcg);
            ops.push(Op::Run(k::matmul_backward_input(
                gpu,
                &self.dfcg,
                dfcproj,
                &w.mlp_proj_w,
                n,
                f,
                c,
                c,
                0,
            )));
            // fcg = gelu(fch)
            clear(&mut ops, dfch);
            ops.push(Op::Run(k::gelu_backward(
                gpu,
                dfch,
                &self.dfcg,
                get(s, Stashed::Fch(l))?,
                n * f,
            )));
            // fch = ln2 @ c_fc_w + b
            clear(&mut ops, &self.dln);
            ops.push(Op::Run(k::matmul_backward_input(
                gpu, &self.dln, dfch, &w.c_fc_w, n, c, f, f, 0,
            )));
            // ln2 = layernorm(res2), adding to the residual's gradient
            let res2 = get(s, Stashed::Res2(l))?;
            for d in k::layernorm_backward(
                gpu,
                &self.dres2,
                &gl.ln_2_g,
                &gl.ln_2_b,
                &self.ln_stats,
                &self.dln,
                res2,
                &w.ln_2_g,
                n,
                c,
                eps,
            ) {
                ops.push(Op::Run(d));
            }
            // res2 = x + attproj
            clear(&mut ops, dinp);
            clear(&mut ops, dattproj);
            ops.push(Op::Run(k::residual_backward(
                gpu,
                dinp,
                dattproj,
                &self.dres2,
                n * c,
            )));
            // attproj = atty @ attn_proj_w + b
            clear(&mut ops, &self.datty);
            ops.push(Op::Run(k::matmul_backward_input(
                gpu,
                &self.datty,
                dattproj,
                &w.attn_proj_w,
                n,
                c,
                c,
                c,
                0,
            )));
            // atty = attention(qkv)
            clear(&mut ops, dqkv);
            for d in k::attention_backward(
                gpu,
                dqkv,
                &self.att_stats,
                &self.datty,
                get(s, Stashed::Qkv(l))?,
                get(s, Stashed::Atty(l))?,
                get(s, Stashed::AttLse(l))?,
                b,
                t,
                nh,
                nh,
                c / nh,
                0,
            ) {
                ops.push(Op::Run(d));
            }
            // qkv = ln1 @ c_attn_w + b
            clear(&mut ops, &self.dln);
            ops.push(Op::Run(k::matmul_backward_input(
                gpu,
                &self.dln,
                dqkv,
                &w.c_attn_w,
                n,
                c,
                3 * c,
                3 * c,
                0,
            )));
            // ln1 = layernorm(x), adding to the residual's gradient
            let x = get(s, Stashed::X(l))?;
            for d in k::layernorm_backward(
                gpu,
                dinp,
                &gl.ln_1_g,
                &gl.ln_1_b,
                &self.ln_stats,
                &self.dln,
                x,
                &w.ln_1_g,
                n,
                c,
                eps,
            ) {
                ops.push(Op::Run(d));
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
        let (c, f) = (cfg.n_embd, cfg.n_inner);
        let g = &self.grads;
        let mut ops = Vec::new();
        let mut run = |d: Dispatch| ops.push(Op::Run(d));
        if self.part.head {
            let vp = cfg.padded_vocab();
            let (dlogits, lnf) = (get(s, Stashed::DLogits)?, get(s, Stashed::Lnf)?);
            for (&(v0, len), gb) in self.chunks.iter().zip(&g.wte_t) {
                run(k::matmul_backward_weight(
                    gpu, gb, dlogits, lnf, n, c, len, vp, v0,
                ));
            }
        }
        for l in (0..self.layers()).rev() {
            let gl = &g.layers[l];
            let dfcproj = get(s, Stashed::DFcProj(l))?;
            run(k::matmul_backward_weight(
                gpu,
                &gl.mlp_proj_w,
                dfcproj,
                get(s, Stashed::Fcg(l))?,
                n,
                f,
                c,
                c,
                0,
            ));
            run(k::matmul_backward_bias(
                gpu,
                &gl.mlp_proj_b,
                dfcproj,
                n,
                c,
                c,
                0,
            ));
            let dfch = get(s, Stashed::DFch(l))?;
            run(k::matmul_backward_weight(
                gpu,
                &gl.c_fc_w,
                dfch,
                get(s, Stashed::Ln2(l))?,
                n,
                c,
                f,
                f,
                0,
            ));
            run(k::matmul_backward_bias(gpu, &gl.c_fc_b, dfch, n, f, f, 0));
            let dattproj = get(s, Stashed::DAttProj(l))?;
            run(k::matmul_backward_weight(
                gpu,
                &gl.attn_proj_w,
                dattproj,
                get(s, Stashed::Atty(l))?,
                n,
                c,
                c,
                c,
                0,
            ));
            run(k::matmul_backward_bias(
                gpu,
                &gl.attn_proj_b,
                dattproj,
                n,
                c,
                c,
                0,
            ));
            let dqkv = get(s, Stashed::DQkv(l))?;
            run(k::matmul_backward_weight(
                gpu,
                &gl.c_attn_w,
                dqkv,
                get(s, Stashed::Ln1(l))?,
                n,
                c,
                3 * c,
                3 * c,
                0,
            ));
            run(k::matmul_backward_bias(
                gpu,
                &gl.c_attn_b,
                dqkv,
                n,
                3 * c,
                3 * c,
                0,
            ));
        }
        if self.part.embedding {
            let (ids, dwpe) = (
                self.ids.as_ref().expect("ids"),
                g.wpe.as_ref().expect("wpe grad"),
            );
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
                    i == 0,
                ));
            }
        }
        Ok(ops)
    }
}
