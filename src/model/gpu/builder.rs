//! How a [`GpuStage`](super::GpuStage)'s program is built: the embedding,
//! each block as its family's op list ([`crate::model::block::ops`]) turned
//! into dispatches, and the head, in order, cut into segments
//! ([`super::Cut`]) after each row-split projection, over the per-block
//! scratch buffers they share.

use super::{bytes, Cut, Mode, Segment, StageUpload};
use crate::device::{upload_pod, zeros, zeros_as, Dtype, Gpu};
use crate::error::Result;
use crate::kernels::{self as k, Dispatch};
use crate::model::block::{self, Act, Norm, Op};
use crate::model::weights::Layer;
use crate::model::{Gpt2Config, Shard};

/// The per-block scratch buffers, shared by every block of a stage; two
/// activations whose lives do not overlap share one (the two norms' outputs,
/// the two projections'). Under tensor parallelism the attention's and the
/// MLP's widths are this rank's.
pub(super) struct Scratch {
    ln: wgpu::Buffer,              // (N, C) a norm's output
    qkv: wgpu::Buffer,             // (N, (NH + 2 NKV) hd / T)
    att: wgpu::Buffer,             // (N, NH hd / T) attention output
    pub(super) proj: wgpu::Buffer, // (N, C) a projection's output (attention, then MLP)
    x2: wgpu::Buffer,              // (N, C) residual stream after attention
    fc: wgpu::Buffer,              // (N, F/T), or (N, 2F/T) gate | up
    fca: wgpu::Buffer,             // (N, F/T) its activation
}

impl Scratch {
    pub(super) fn new(gpu: &Gpu, cfg: &Gpt2Config, shard: Shard, n: usize, dt: Dtype) -> Scratch {
        let heads = shard.heads(cfg);
        let f = cfg.n_inner / shard.of;
        let w = |a: Act| n * block::width(cfg, a, heads, f);
        let z = |label: &str, a: Act| zeros_as(gpu, label, w(a), dt);
        Scratch {
            ln: z("ln (N,C)", Act::Ln1),
            qkv: z("qkv (N,QKV/T)", Act::Qkv),
            att: z("att (N,Q/T)", Act::Att),
            proj: z("proj (N,C)", Act::AttnProj),
            x2: z("x2 (N,C)", Act::X2),
            fc: z("fc (N,F/T)", Act::Fc),
            fca: z("fc act (N,F/T)", Act::FcAct),
        }
    }

    pub(super) fn into_buffers(self) -> [wgpu::Buffer; 7] {
        [
            self.ln, self.qkv, self.att, self.proj, self.x2, self.fc, self.fca,
        ]
    }
}

/// Builds a stage's program: dispatches in order, cut into segments, and the
/// buffers they bind.
pub(super) struct Builder<'a> {
    pub(super) gpu: &'a Gpu,
    /// The stage's storage type: every dispatch's but the head's output (f32 logits).
    pub(super) dt: Dtype,
    pub(super) cfg: &'a Gpt2Config,
    pub(super) shard: Shard,
    pub(super) b: usize,
    pub(super) t: usize,
    /// (N, C) residual stream.
    pub(super) x: &'a wgpu::Buffer,
    pub(super) mode: &'a Mode<'a>,
    /// (N, 2) (slot, position) of each row: the KV cache's row table, or
    /// under rotary positions without a cache each row's position.
    pub(super) rows: Option<&'a wgpu::Buffer>,
    pub(super) segments: Vec<Segment>,
    pub(super) current: Vec<Dispatch>,
    pub(super) keep: Vec<wgpu::Buffer>,
}

impl<'a> Builder<'a> {
    fn n(&self) -> usize {
        self.b * self.t
    }

    /// Where this stage's dispatches run: its device, storing its type.
    fn on(&self) -> k::On<'a> {
        (self.gpu, self.dt).into()
    }

    pub(super) fn push(&mut self, d: Dispatch) {
        self.current.push(d);
    }

    /// End the current segment at `end`.
    pub(super) fn cut(&mut self, end: Cut) {
        let dispatches = std::mem::take(&mut self.current);
        self.segments.push(Segment { end, dispatches });
    }

    /// x = wte[ids] (+ wpe[pos_offset + t] with learned positions;
    /// decoding: wpe[pos_r], each row at its own position), one dispatch per
    /// vocabulary chunk (position offset 0 until
    /// [`super::GpuStage::set_position_offset`]). Returns the (N) token id
    /// buffer.
    pub(super) fn embedding(&mut self, up: &StageUpload) -> wgpu::Buffer {
        let (gpu, n, t, c) = (self.gpu, self.n(), self.t, self.cfg.n_embd);
        let ids = upload_pod(gpu, "ids (N)", &vec![0u32; n]);
        let wpe = up.wpe.as_ref();
        for (&(v0, len), tb) in up.chunks.iter().zip(&up.wte_t) {
            let on = self.on();
            let d = match (self.mode, self.rows) {
                (Mode::Decode(_), Some(rows)) => {
                    k::embedding_decode(on, self.x, &ids, tb, wpe, rows, n, c, v0, len)
                }
                _ => k::embedding_forward(on, self.x, &ids, tb, wpe, n, t, c, v0, len, 0),
            };
            self.push(d);
        }
        ids
    }

    /// The buffer of activation `a`.
    fn buf<'s>(&'s self, s: &'s Scratch, a: Act) -> &'s wgpu::Buffer {
        match a {
            Act::X | Act::Out => self.x,
            Act::Ln1 | Act::Ln2 => &s.ln,
            Act::Qkv => &s.qkv,
            Act::Att => &s.att,
            Act::AttnProj | Act::MlpProj => &s.proj,
            Act::X2 => &s.x2,
            Act::Fc => &s.fc,
            Act::FcAct => &s.fca,
        }
    }

    /// Block `l` (the `i`-th of the stage): its family's ops, each a
    /// dispatch (the attention two with a KV cache: the keys and values
    /// written into it, then attention over the pass's own rows, or when
    /// decoding over the cache), cut after each row-split projection.
    pub(super) fn block(
        &mut self,
        l: usize,
        i: usize,
        lb: &Layer<wgpu::Buffer>,
        s: &Scratch,
        inv_freq: Option<&wgpu::Buffer>,
    ) -> Result<()> {
        let (on, cfg) = (self.on(), self.cfg);
        let (b, t, n) = (self.b, self.t, self.n());
        let (c, eps, hd) = (cfg.n_embd, cfg.layer_norm_epsilon, cfg.head_dim());
        let heads = self.shard.heads(cfg);
        let (nh, nkv) = heads;
        let f = cfg.n_inner / self.shard.of;
        let width = |a: Act| block::width(cfg, a, heads, f);
        let window = cfg.arch.sliding_window.unwrap_or(0);
        for op in block::ops(cfg) {
            let d = match op {
                Op::Norm {
                    kind,
                    x,
                    g,
                    b: beta,
                    out,
                } => match kind {
                    Norm::Layer => k::layernorm_forward(
                        on,
                        self.buf(s, out),
                        self.buf(s, x),
                        g.of(lb),
                        beta.of(lb),
                        n,
                        c,
                        eps,
                    ),
                    Norm::Rms => k::rmsnorm_forward(
                        on,
                        self.buf(s, out),
                        self.buf(s, x),
                        g.of(lb),
                        n,
                        c,
                        eps,
                    ),
                },
                Op::Linear {
                    x,
                    w,
                    b: bias,
                    out,
                    row_split,
                } => {
                    let d = k::matmul_forward(
                        on,
                        self.buf(s, out),
                        self.buf(s, x),
                        w.of(lb),
                        bias.of(lb),
                        n,
                        width(x),
                        width(out),
                    );
                    if row_split {
                        self.push(d);
                        self.cut(match out {
                            Act::AttnProj => Cut::AttnProj { layer: l },
                            _ => Cut::MlpProj { layer: l },
                        });
                        continue;
                    }
                    d
                }
                Op::Rope { qkv } => {
                    let rows = self.rows.expect("rotary positions need a position table");
                    let inv = inv_freq.expect("rotary positions need their frequencies");
                    let table = k::PositionTable::rows(n);
                    k::rope_forward(on, self.buf(s, qkv), rows, inv, n, nh, nkv, hd, table)
                }
                Op::Attention { qkv, out } => {
                    let (q, o) = (self.buf(s, qkv).clone(), self.buf(s, out).clone());
                    let (q, o) = (&q, &o);
                    match (self.mode, self.rows) {
                        (Mode::Prefill(kv) | Mode::Decode(kv), Some(rows)) => {
                            let (kc, vc) = (&kv.k[i], &kv.v[i]);
                            self.push(k::kv_cache_write(
                                on, kc, vc, q, rows, n, nh, nkv, hd, kv.n_pos,
                            ));
                            match self.mode {
                                Mode::Decode(_) => k::attention_decode(
                                    on, o, q, kc, vc, rows, n, nh, nkv, hd, kv.n_pos, window,
                                ),
                                _ => k::attention_forward(on, o, q, b, t, nh, nkv, hd, window),
                            }
                        }
                        _ => k::attention_forward(on, o, q, b, t, nh, nkv, hd, window),
                    }
                }
                Op::Gelu { x, out } => {
                    k::gelu_forward(on, self.buf(s, out), self.buf(s, x), n * width(out))
                }
                Op::SwiGlu { x, out } => {
                    k::swiglu_forward(on, self.buf(s, out), self.buf(s, x), n, width(out))
                }
                Op::Residual { a, b: bb, out } => k::residual_forward(
                    on,
                    self.buf(s, out),
                    self.buf(s, a),
                    self.buf(s, bb),
                    n * c,
                ),
            };
            self.push(d);
        }
        Ok(())
    }

    /// logits (N, Vp) = norm(x) @ head^T (the head's table: wte when tied),
    /// one matmul per vocabulary chunk into its columns. Returns the logits
    /// buffer.
    pub(super) fn head(
        &mut self,
        up: &StageUpload,
        ln_f: &(wgpu::Buffer, Option<wgpu::Buffer>),
    ) -> Result<wgpu::Buffer> {
        let (gpu, dt, n, c) = (self.gpu, self.dt, self.n(), self.cfg.n_embd);
        let eps = self.cfg.layer_norm_epsilon;
        let vp = self.cfg.padded_vocab();
        gpu.check_binding(&format!("logits ({n}, {vp})"), bytes(n * vp))?;
        let lnf = zeros_as(gpu, "final norm (N,C)", n * c, dt);
        // The logits are f32 whatever the stage stores: the head's matmul
        // reads `dt` and writes f32, which sampling and the host read.
        let out = zeros(gpu, "logits (N,Vp)", n * vp);
        let max_len = up.chunks.iter().map(|&(_, l)| l).max().unwrap_or(4);
        let no_bias = zeros_as(gpu, "lm_head bias (0)", max_len, dt);
        let on = self.on();
        self.push(match (block::final_norm(self.cfg), &ln_f.1) {
            (Norm::Layer, Some(beta)) => {
                k::layernorm_forward(on, &lnf, self.x, &ln_f.0, beta, n, c, eps)
            }
            _ => k::rmsnorm_forward(on, &lnf, self.x, &ln_f.0, n, c, eps),
        });
        let to_f32 = k::Elems {
            st: dt,
            ot: Dtype::F32,
        };
        for (&(v0, len), tb) in up.chunks.iter().zip(&up.head_t) {
            self.push(k::matmul_forward_strided(
                (gpu, to_f32),
                &out,
                &lnf,
                tb,
                &no_bias,
                n,
                c,
                len,
                vp,
                v0,
            ));
        }
        self.keep.extend([lnf, no_bias]);
        Ok(out)
    }
}
