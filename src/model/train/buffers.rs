//! A training stage's parameters, gradients and optimizer moments on the
//! device ([`StageBuffers`], one buffer per tensor, listed in one fixed order
//! by [`StageBuffers::tensors`]), and the same read back to the host
//! ([`HostStage`]).

use super::TrainStage;
use crate::device::{download, zeros, Gpu};
use crate::error::{Error, Result};
use crate::model::gpu::untranspose_token_table;
use crate::model::grads::Gpt2Grads;
use crate::model::names;
use crate::model::optim::OptimizerKind;
use crate::model::weights::{Layer, LayerWeights, StagePart};
use crate::model::Gpt2Config;

/// A stage's parameters (or their gradients, or optimizer moments), one
/// buffer per tensor. The token tables are kept as the GPU stage keeps
/// them: transposed vocabulary chunks (C, len).
pub struct StageBuffers {
    /// The token table, on the embedding's stage and on the head's when the
    /// head is tied to it.
    pub wte_t: Vec<wgpu::Buffer>,
    /// An untied LM head's own table, on the head's stage.
    pub head_t: Vec<wgpu::Buffer>,
    pub wpe: Option<wgpu::Buffer>,
    pub layers: Vec<Layer<wgpu::Buffer>>,
    /// The final norm's gain and bias (under RMSNorm a zero bias that is
    /// not a parameter).
    pub ln_f: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

/// One tensor of [`StageBuffers::tensors`].
pub struct Tensor<'a> {
    /// Checkpoint name (`h.3.attn.c_attn.weight`; `wte.weight[v0..]` for a
    /// chunk of the transposed token table).
    pub name: String,
    pub buf: &'a wgpu::Buffer,
    /// f32 elements.
    pub len: usize,
    /// Rank >= 2 (matrices and embeddings): weight decay applies.
    pub decay: bool,
    /// Under tensor parallelism, held whole by every rank (norms, the
    /// position table) or by rank 0 alone (the row-split biases): counted
    /// once, on rank 0, in a sum over the group.
    pub replicated: bool,
}

impl StageBuffers {
    /// The LM head's table by chunk: its own, or the tied token table.
    pub fn head(&self) -> &[wgpu::Buffer] {
        match self.head_t.is_empty() {
            true => &self.wte_t,
            false => &self.head_t,
        }
    }

    /// Every tensor in a fixed order (the same for parameters, gradients
    /// and moments of one stage).
    pub fn tensors(
        &self,
        cfg: &Gpt2Config,
        part: &StagePart,
        chunks: &[(usize, usize)],
        lens: &Layer<usize>,
    ) -> Vec<Tensor<'_>> {
        let c = cfg.n_embd;
        let mut out = Vec::new();
        for (b, &(v0, len)) in self.wte_t.iter().zip(chunks) {
            out.push(Tensor {
                name: format!("{}[{v0}..]", names::WTE),
                buf: b,
                len: c * len,
                decay: true,
                replicated: false,
            });
        }
        for (b, &(v0, len)) in self.head_t.iter().zip(chunks) {
            out.push(Tensor {
                name: format!("{}[{v0}..]", names::LM_HEAD),
                buf: b,
                len: c * len,
                decay: true,
                replicated: false,
            });
        }
        if let Some(b) = &self.wpe {
            out.push(Tensor {
                name: names::WPE.into(),
                buf: b,
                len: cfg.n_positions * c,
                decay: true,
                replicated: true,
            });
        }
        let replicated = crate::model::Shard::replicated_roles();
        for (l, layer) in part.layers.clone().zip(&self.layers) {
            let (lens, repl) = (lens.named_tensors(cfg), replicated.named_tensors(cfg));
            for (((name, b, shape), (_, len, _)), (_, r, _)) in
                layer.named_tensors(cfg).into_iter().zip(lens).zip(repl)
            {
                out.push(Tensor {
                    name: names::block_tensor(l, name),
                    buf: b,
                    len: *len,
                    decay: shape.len() >= 2,
                    replicated: *r,
                });
            }
        }
        if let Some((g, b)) = &self.ln_f {
            let bias = cfg.is_gpt2().then_some((names::LN_F_BIAS, b));
            for (name, buf) in std::iter::once((names::LN_F_WEIGHT, g)).chain(bias) {
                out.push(Tensor {
                    name: name.into(),
                    buf,
                    len: c,
                    decay: false,
                    replicated: true,
                });
            }
        }
        out
    }

    /// Zero-filled buffers of the same shapes.
    pub(super) fn zeros_like(
        &self,
        gpu: &Gpu,
        what: &str,
        cfg: &Gpt2Config,
        part: &StagePart,
        chunks: &[(usize, usize)],
        lens: &Layer<usize>,
    ) -> StageBuffers {
        let z = |name: &str, len: usize| zeros(gpu, &format!("{what} {name}"), len);
        let c = cfg.n_embd;
        StageBuffers {
            wte_t: chunks
                .iter()
                .filter(|_| !self.wte_t.is_empty())
                .map(|&(v0, len)| z(&format!("{}[{v0}..]", names::WTE), c * len))
                .collect(),
            head_t: chunks
                .iter()
                .filter(|_| !self.head_t.is_empty())
                .map(|&(v0, len)| z(&format!("{}[{v0}..]", names::LM_HEAD), c * len))
                .collect(),
            wpe: self
                .wpe
                .as_ref()
                .map(|_| z(names::WPE, cfg.n_positions * c)),
            layers: part
                .layers
                .clone()
                .map(|l| {
                    lens.try_map(cfg, |name, &len, _| {
                        Ok::<_, std::convert::Infallible>(z(&names::block_tensor(l, name), len))
                    })
                    .unwrap_or_else(|never| match never {})
                })
                .collect(),
            ln_f: self
                .ln_f
                .as_ref()
                .map(|_| (z(names::LN_F_WEIGHT, c), z(names::LN_F_BIAS, c))),
        }
    }
}

/// A stage's tensors read back to the host, in checkpoint layout.
#[derive(Clone, Debug, Default)]
pub struct HostStage {
    /// (V, C), untransposed: on the embedding and head stages.
    pub wte: Option<Vec<f32>>,
    pub wpe: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
    /// (gain, bias), the bias empty under RMSNorm.
    pub ln_f: Option<(Vec<f32>, Vec<f32>)>,
    /// (V, C), untransposed: an untied LM head's table, on the head stage.
    pub lm_head: Option<Vec<f32>>,
}

impl TrainStage {
    /// Every parameter with its gradient, in one fixed order.
    pub fn param_tensors(&self) -> Vec<(Tensor<'_>, Tensor<'_>)> {
        let p = self
            .params
            .tensors(&self.cfg, &self.part, &self.chunks, &self.lens);
        let g = self
            .grads
            .tensors(&self.cfg, &self.part, &self.chunks, &self.lens);
        p.into_iter().zip(g).collect()
    }

    /// The buffers `which` names: `None` for optimizer moments before the
    /// optimizer's first step (or its restore) made them.
    fn buffers(&self, which: Which) -> Option<&StageBuffers> {
        match which {
            Which::Params => Some(&self.params),
            Which::Grads => Some(&self.grads),
            Which::Moment(i) => self.optimizer.as_ref()?.moments.get(i),
        }
    }

    /// Parameters (or gradients, or an optimizer moment) read back, in
    /// checkpoint layout.
    pub fn read(&self, gpu: &Gpu, which: Which) -> Result<HostStage> {
        let bufs = self.buffers(which).ok_or_else(|| {
            Error::Other(format!(
                "stage {:?} has no {which:?}: the optimizer has not stepped",
                self.part
            ))
        })?;
        let cfg = &self.cfg;
        let c = cfg.n_embd;
        let wte = self.token_table(gpu, bufs)?;
        let wpe = match &bufs.wpe {
            Some(b) => Some(download(gpu, b, cfg.n_positions * c)?),
            None => None,
        };
        let layers = bufs
            .layers
            .iter()
            .map(|l| {
                l.zip(&self.lens)
                    .try_map(cfg, |_, (b, len), _| download(gpu, b, **len))
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = match &bufs.ln_f {
            Some((g, b)) => Some((
                download(gpu, g, c)?,
                match cfg.is_gpt2() {
                    true => download(gpu, b, c)?,
                    false => Vec::new(),
                },
            )),
            None => None,
        };
        let lm_head = self.table(gpu, &bufs.head_t)?;
        Ok(HostStage {
            wte,
            wpe,
            layers,
            ln_f,
            lm_head,
        })
    }

    /// The gradient of block `l`'s (the stage's `l`-th) fused q, k, v
    /// projection as this rank holds it: (weight (C, its q + k + v
    /// columns), bias, empty when the family has none).
    pub fn qkv_grad(&self, gpu: &Gpu, l: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let g = &self.grads.layers[l];
        let w = download(gpu, &g.c_attn_w, self.lens.c_attn_w)?;
        let b = match self.present.c_attn_b {
            true => download(gpu, &g.c_attn_b, self.lens.c_attn_b)?,
            false => Vec::new(),
        };
        Ok((w, b))
    }

    /// Replace [`TrainStage::qkv_grad`] of block `l` (queued).
    pub fn write_qkv_grad(&self, gpu: &Gpu, l: usize, w: &[f32], b: &[f32]) {
        let g = &self.grads.layers[l];
        gpu.queue
            .write_buffer(&g.c_attn_w, 0, bytemuck::cast_slice(w));
        if !b.is_empty() {
            gpu.queue
                .write_buffer(&g.c_attn_b, 0, bytemuck::cast_slice(b));
        }
    }

    /// The token table's gradient (V, C), if this stage holds the table.
    pub fn wte_grad(&self, gpu: &Gpu) -> Result<Option<Vec<f32>>> {
        self.token_table(gpu, &self.grads)
    }

    /// The token table of `bufs` (parameters or gradients), read back and
    /// untransposed to (V, C); `None` on a stage without it.
    fn token_table(&self, gpu: &Gpu, bufs: &StageBuffers) -> Result<Option<Vec<f32>>> {
        self.table(gpu, &bufs.wte_t)
    }

    /// A (V, C) table held as transposed vocabulary chunks, read back;
    /// `None` where the stage holds no chunks of it.
    fn table(&self, gpu: &Gpu, chunked: &[wgpu::Buffer]) -> Result<Option<Vec<f32>>> {
        if chunked.is_empty() {
            return Ok(None);
        }
        let c = self.cfg.n_embd;
        let data = chunked
            .iter()
            .zip(&self.chunks)
            .map(|(b, &(_, len))| download(gpu, b, c * len))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(untranspose_token_table(
            &self.cfg,
            &self.chunks,
            &data,
        )))
    }

    /// Replace the token table's gradient with `wte` (V, C): how the tied
    /// embedding's two shares, on two stages, are summed into both.
    pub fn write_wte_grad(&self, gpu: &Gpu, wte: &[f32]) -> Result<()> {
        let cfg = &self.cfg;
        if wte.len() != cfg.vocab_size * cfg.n_embd {
            return Err(Error::Other(format!(
                "bug: wte gradient of {} values for a ({}, {}) table",
                wte.len(),
                cfg.vocab_size,
                cfg.n_embd
            )));
        }
        let chunks = crate::model::gpu::token_table_chunks(cfg, wte, &self.chunks);
        for (b, data) in self.grads.wte_t.iter().zip(chunks) {
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(&data));
        }
        Ok(())
    }
}

/// Parameters, gradients or an optimizer moment, for [`TrainStage::read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Params,
    Grads,
    /// AdamW's m (0) and v (1), or SGD's momentum buffer (0).
    Moment(usize),
}

impl TrainStage {
    /// Set the optimizer's moments (allocating them for `kind` if no step
    /// has yet) from `sets`, one per moment in [`Which::Moment`] order, each
    /// in checkpoint layout for the whole model: this stage writes its own
    /// tensors. How a resumed run puts its saved optimizer state back, on
    /// whichever stages now hold each tensor.
    pub fn write_moments(
        &mut self,
        gpu: &Gpu,
        kind: OptimizerKind,
        sets: &[&Gpt2Grads],
    ) -> Result<()> {
        if self.optimizer.is_none() {
            self.optimizer = Some(self.build_optimizer(gpu, kind));
        }
        let moments = &self.optimizer.as_ref().expect("built").moments;
        if moments.len() != sets.len() {
            return Err(Error::Input(format!(
                "{} optimizer moments given for an optimizer that keeps {}",
                sets.len(),
                moments.len()
            )));
        }
        let put = |b: &wgpu::Buffer, name: &str, data: &[f32], len: usize| {
            if data.len() != len {
                return Err(Error::Input(format!(
                    "optimizer moment `{name}` holds {} values; the stage's tensor has {len}",
                    data.len()
                )));
            }
            gpu.queue.write_buffer(b, 0, bytemuck::cast_slice(data));
            Ok(())
        };
        let cfg = &self.cfg;
        for (bufs, src) in moments.iter().zip(sets) {
            if !bufs.wte_t.is_empty() {
                let chunks = crate::model::gpu::token_table_chunks(cfg, &src.wte, &self.chunks);
                for (b, data) in bufs.wte_t.iter().zip(&chunks) {
                    put(b, names::WTE, data, data.len())?;
                }
            }
            if !bufs.head_t.is_empty() {
                let chunks = crate::model::gpu::token_table_chunks(cfg, &src.lm_head, &self.chunks);
                for (b, data) in bufs.head_t.iter().zip(&chunks) {
                    put(b, names::LM_HEAD, data, data.len())?;
                }
            }
            if let Some(b) = &bufs.wpe {
                put(b, names::WPE, &src.wpe, cfg.n_positions * cfg.n_embd)?;
            }
            for (l, layer) in self.part.layers.clone().zip(&bufs.layers) {
                let host = src
                    .layers
                    .get(l)
                    .ok_or_else(|| Error::Input(format!("optimizer moments hold no layer {l}")))?;
                let host = self.shard.layer(cfg, host);
                for (((name, b, _), (_, t, _)), (_, len, _)) in layer
                    .named_tensors(cfg)
                    .into_iter()
                    .zip(host.named_tensors(cfg))
                    .zip(self.lens.named_tensors(cfg))
                {
                    put(b, &names::block_tensor(l, name), t, *len)?;
                }
            }
            if let Some((g, b)) = &bufs.ln_f {
                put(g, names::LN_F_WEIGHT, &src.ln_f_g, cfg.n_embd)?;
                if cfg.is_gpt2() {
                    put(b, names::LN_F_BIAS, &src.ln_f_b, cfg.n_embd)?;
                }
            }
        }
        Ok(())
    }
}
