//! F: a training stage's forward over one microbatch as a list of ops,
//! every activation the backward reads written into its stashed buffer, and
//! on the head stage the loss and the gradient of the logits.

use std::collections::HashMap;

use super::{get, Op, Stashed, TrainStage};
use crate::device::Gpu;
use crate::error::{Error, Result};
use crate::kernels::{self as k, Dispatch};

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
        let (c, f, nh, eps) = (cfg.n_embd, cfg.n_inner, cfg.n_head, cfg.layer_norm_epsilon);
        let p = &self.params;
        let mut ops = Vec::new();
        let mut run = |d: Dispatch| ops.push(Op::Run(d));
        if self.part.embedding {
            let (ids, wpe) = (
                self.ids.as_ref().expect("embedding ids"),
                p.wpe.as_ref().expect("wpe"),
            );
            let x0 = get(s, Stashed::X(0))?;
            for (&(v0, len), tb) in self.chunks.iter().zip(&p.wte_t) {
                run(k::embedding_forward(
                    gpu,
                    x0,
                    ids,
                    tb,
                    Some(wpe),
                    n,
                    t,
                    c,
                    v0,
                    len,
                    0,
                ));
            }
        }
        let top = self.top(s)?;
        let l_count = self.layers();
        for (l, w) in p.layers.iter().enumerate() {
            let x = get(s, Stashed::X(l))?;
            let out = if l + 1 < l_count {
                get(s, Stashed::X(l + 1))?
            } else {
                top
            };
            let (ln1, qkv, atty) = (
                get(s, Stashed::Ln1(l))?,
                get(s, Stashed::Qkv(l))?,
                get(s, Stashed::Atty(l))?,
            );
            let (res2, ln2) = (get(s, Stashed::Res2(l))?, get(s, Stashed::Ln2(l))?);
            let (fch, fcg) = (get(s, Stashed::Fch(l))?, get(s, Stashed::Fcg(l))?);
            let proj = &self.proj;
            run(k::layernorm_forward(
                gpu, ln1, x, &w.ln_1_g, &w.ln_1_b, n, c, eps,
            ));
            run(k::matmul_forward(
                gpu,
                qkv,
                ln1,
                &w.c_attn_w,
                &w.c_attn_b,
                n,
                c,
                3 * c,
            ));
            let lse = get(s, Stashed::AttLse(l))?;
            run(k::attention_forward_lse(
                gpu,
                atty,
                lse,
                qkv,
                b,
                t,
                nh,
                nh,
                c / nh,
                0,
            ));
            run(k::matmul_forward(
                gpu,
                proj,
                atty,
                &w.attn_proj_w,
                &w.attn_proj_b,
                n,
                c,
                c,
            ));
            run(k::residual_forward(gpu, res2, x, proj, n * c));
            run(k::layernorm_forward(
                gpu, ln2, res2, &w.ln_2_g, &w.ln_2_b, n, c, eps,
            ));
            run(k::matmul_forward(
                gpu, fch, ln2, &w.c_fc_w, &w.c_fc_b, n, c, f,
            ));
            run(k::gelu_forward(gpu, fcg, fch, n * f));
            run(k::matmul_forward(
                gpu,
                proj,
                fcg,
                &w.mlp_proj_w,
                &w.mlp_proj_b,
                n,
                f,
                c,
            ));
            run(k::residual_forward(gpu, out, res2, proj, n * c));
        }
        if self.part.head {
            let vp = cfg.padded_vocab();
            let (g, bb) = p.ln_f.as_ref().expect("ln_f");
            let (lnf, dlogits) = (get(s, Stashed::Lnf)?, get(s, Stashed::DLogits)?);
            let logits = self.logits.as_ref().expect("logits");
            let no_bias = self.no_bias.as_ref().expect("no bias");
            run(k::layernorm_forward(gpu, lnf, top, g, bb, n, c, eps));
            for (&(v0, len), tb) in self.chunks.iter().zip(&p.wte_t) {
                run(k::matmul_forward_strided(
                    gpu, logits, lnf, tb, no_bias, n, c, len, vp, v0,
                ));
            }
            let (losses, scale) = loss.ok_or_else(|| {
                Error::Other("bug: the head stage's forward needs a loss buffer".into())
            })?;
            ops.push(Op::Clear(dlogits.clone()));
            let targets = self.targets.as_ref().expect("targets");
            ops.push(Op::Run(k::crossentropy_softmax_backward(
                gpu,
                dlogits,
                losses,
                logits,
                targets,
                scale,
                n,
                cfg.vocab_size,
                vp,
            )));
        }
        Ok(ops)
    }
}
