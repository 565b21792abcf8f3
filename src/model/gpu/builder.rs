//! How a [`GpuStage`](super::GpuStage)'s program is built: the dispatches
//! of the embedding, of each block and of the head, in order, cut into
//! segments ([`super::Cut`]), over the per-block scratch buffers they share.

use super::{bytes, Cut, Mode, Segment, StageUpload};
use crate::device::{upload_pod, zeros, Gpu};
use crate::error::Result;
use crate::kernels::{self as k, Dispatch};
use crate::model::weights::Layer;
use crate::model::Gpt2Config;

/// The per-block scratch buffers, shared by every block of a stage. Under
/// tensor parallelism (T devices) the attention and MLP widths are this
/// rank's: C/T and F/T.
pub(super) struct Scratch {
    ln: wgpu::Buffer,              // (N, C) layernorm output
    qkv: wgpu::Buffer,             // (N, 3C/T)
    att: wgpu::Buffer,             // (N, C/T) attention output
    pub(super) proj: wgpu::Buffer, // (N, C) c_proj output (attention, then MLP)
    x2: wgpu::Buffer,              // (N, C) residual stream after attention
    fch: wgpu::Buffer,             // (N, F/T)
    fcg: wgpu::Buffer,             // (N, F/T) gelu(fch)
}

impl Scratch {
    pub(super) fn new(gpu: &Gpu, n: usize, c: usize, cl: usize, fl: usize) -> Scratch {
        Scratch {
            ln: zeros(gpu, "ln (N,C)", n * c),
            qkv: zeros(gpu, "qkv (N,3C/T)", n * 3 * cl),
            att: zeros(gpu, "att (N,C/T)", n * cl),
            proj: zeros(gpu, "proj (N,C)", n * c),
            x2: zeros(gpu, "x2 (N,C)", n * c),
            fch: zeros(gpu, "fch (N,F/T)", n * fl),
            fcg: zeros(gpu, "fch_gelu (N,F/T)", n * fl),
        }
    }

    pub(super) fn into_buffers(self) -> [wgpu::Buffer; 7] {
        [
            self.ln, self.qkv, self.att, self.proj, self.x2, self.fch, self.fcg,
        ]
    }
}

/// Builds a stage's program: dispatches in order, cut into segments, and the
/// buffers they bind.
pub(super) struct Builder<'a> {
    pub(super) gpu: &'a Gpu,
    pub(super) cfg: &'a Gpt2Config,
    pub(super) b: usize,
    pub(super) t: usize,
    /// (N, C) residual stream.
    pub(super) x: &'a wgpu::Buffer,
    pub(super) mode: &'a Mode<'a>,
    /// (N, 2) row table of the KV cache, with a cache.
    pub(super) rows: Option<&'a wgpu::Buffer>,
    pub(super) segments: Vec<Segment>,
    pub(super) current: Vec<Dispatch>,
    pub(super) keep: Vec<wgpu::Buffer>,
}

impl Builder<'_> {
    fn n(&self) -> usize {
        self.b * self.t
    }

    fn push(&mut self, d: Dispatch) {
        self.current.push(d);
    }

    /// End the current segment at `end`.
    pub(super) fn cut(&mut self, end: Cut) {
        let dispatches = std::mem::take(&mut self.current);
        self.segments.push(Segment { end, dispatches });
    }

    /// x = wte[ids] + wpe[pos_offset + t] (decoding: wpe[pos_r], each row at
    /// its own position), one dispatch per vocabulary chunk (position offset
    /// 0 until [`GpuStage::set_position_offset`]). Returns the (N) token id
    /// buffer.
    pub(super) fn embedding(&mut self, up: &StageUpload, wpe: &wgpu::Buffer) -> wgpu::Buffer {
        let (gpu, n, t, c) = (self.gpu, self.n(), self.t, self.cfg.n_embd);
        let ids = upload_pod(gpu, "ids (N)", &vec![0u32; n]);
        for (&(v0, len), tb) in up.chunks.iter().zip(&up.wte_t) {
            let d = match (self.mode, self.rows) {
                (Mode::Decode(_), Some(rows)) => {
                    k::embedding_decode(gpu, self.x, &ids, tb, Some(wpe), rows, n, c, v0, len)
                }
                _ => k::embedding_forward(gpu, self.x, &ids, tb, Some(wpe), n, t, c, v0, len, 0),
            };
            self.push(d);
        }
        ids
    }

    /// Block `l` (the `i`-th of the stage): x2 = x + attn(ln_1(x)); x = x2 +
    /// mlp(ln_2(x2)), cut after each c_proj matmul. With a KV cache the keys
    /// and values are written into it after the QKV matmul; decoding attends
    /// over the cache instead of the pass's own rows.
    pub(super) fn block(
        &mut self,
        l: usize,
        i: usize,
        lb: &Layer<wgpu::Buffer>,
        s: &Scratch,
        tp: usize,
    ) -> Result<()> {
        let (gpu, cfg) = (self.gpu, self.cfg);
        let (b, t, n) = (self.b, self.t, self.n());
        let (c, eps) = (cfg.n_embd, cfg.layer_norm_epsilon);
        // This rank's attention channels, heads and MLP width.
        let (cl, nh, f) = (c / tp, cfg.n_head / tp, cfg.n_inner / tp);
        let x = self.x;
        self.push(k::layernorm_forward(
            gpu, &s.ln, x, &lb.ln_1_g, &lb.ln_1_b, n, c, eps,
        ));
        self.push(k::matmul_forward(
            gpu,
            &s.qkv,
            &s.ln,
            &lb.c_attn_w,
            &lb.c_attn_b,
            n,
            c,
            3 * cl,
        ));
        match (self.mode, self.rows) {
            (Mode::Prefill(kv) | Mode::Decode(kv), Some(rows)) => {
                let (kc, vc) = (&kv.k[i], &kv.v[i]);
                self.push(k::kv_cache_write(
                    gpu,
                    kc,
                    vc,
                    &s.qkv,
                    rows,
                    n,
                    nh,
                    nh,
                    cl / nh,
                    kv.n_pos,
                ));
                self.push(match self.mode {
                    Mode::Decode(_) => k::attention_decode(
                        gpu,
                        &s.att,
                        &s.qkv,
                        kc,
                        vc,
                        rows,
                        n,
                        nh,
                        nh,
                        cl / nh,
                        kv.n_pos,
                        0,
                    ),
                    _ => k::attention_forward(gpu, &s.att, &s.qkv, b, t, nh, nh, cl / nh, 0),
                });
            }
            _ => self.push(k::attention_forward(
                gpu,
                &s.att,
                &s.qkv,
                b,
                t,
                nh,
                nh,
                cl / nh,
                0,
            )),
        }
        self.push(k::matmul_forward(
            gpu,
            &s.proj,
            &s.att,
            &lb.attn_proj_w,
            &lb.attn_proj_b,
            n,
            cl,
            c,
        ));
        self.cut(Cut::AttnProj { layer: l });
        self.push(k::residual_forward(gpu, &s.x2, x, &s.proj, n * c));
        self.push(k::layernorm_forward(
            gpu, &s.ln, &s.x2, &lb.ln_2_g, &lb.ln_2_b, n, c, eps,
        ));
        self.push(k::matmul_forward(
            gpu, &s.fch, &s.ln, &lb.c_fc_w, &lb.c_fc_b, n, c, f,
        ));
        self.push(k::gelu_forward(gpu, &s.fcg, &s.fch, n * f));
        self.push(k::matmul_forward(
            gpu,
            &s.proj,
            &s.fcg,
            &lb.mlp_proj_w,
            &lb.mlp_proj_b,
            n,
            f,
            c,
        ));
        self.cut(Cut::MlpProj { layer: l });
        self.push(k::residual_forward(gpu, x, &s.x2, &s.proj, n * c));
        Ok(())
    }

    /// logits (N, Vp) = ln_f(x) @ wte^T, one matmul per vocabulary chunk into
    /// its columns. Returns the logits buffer.
    pub(super) fn head(
        &mut self,
        up: &StageUpload,
        ln_f: &(wgpu::Buffer, wgpu::Buffer),
    ) -> Result<wgpu::Buffer> {
        let (gpu, n, c) = (self.gpu, self.n(), self.cfg.n_embd);
        let eps = self.cfg.layer_norm_epsilon;
        let vp = self.cfg.padded_vocab();
        gpu.check_binding(&format!("logits ({n}, {vp})"), bytes(n * vp))?;
        let lnf = zeros(gpu, "ln_f (N,C)", n * c);
        let out = zeros(gpu, "logits (N,Vp)", n * vp);
        let max_len = up.chunks.iter().map(|&(_, l)| l).max().unwrap_or(4);
        let no_bias = zeros(gpu, "lm_head bias (0)", max_len);
        self.push(k::layernorm_forward(
            gpu, &lnf, self.x, &ln_f.0, &ln_f.1, n, c, eps,
        ));
        for (&(v0, len), tb) in up.chunks.iter().zip(&up.wte_t) {
            self.push(k::matmul_forward_strided(
                gpu, &out, &lnf, tb, &no_bias, n, c, len, vp, v0,
            ));
        }
        self.keep.extend([lnf, no_bias]);
        Ok(out)
    }
}
