//! What a stage keeps resident on its device beside its programs: its
//! weights, uploaded once and shared by every program built over them
//! ([`StageUpload`]), and the KV cache of its blocks ([`KvCache`]).

use super::{bytes, upload_token_table, vocab_chunks};
use crate::device::{upload, zeros, Gpu};
use crate::error::{Error, Result};
use crate::model::weights::{Layer, StageWeights};
use crate::model::{Gpt2Config, StagePart};

/// A stage's weights on one device, uploaded once: every program built over
/// them ([`GpuStage::build`]: a full forward, a prefill, a decode step)
/// shares these buffers (cloning it clones handles, not data).
#[derive(Clone)]
pub struct StageUpload {
    pub part: StagePart,
    pub cfg: Gpt2Config,
    /// Vocabulary chunks `(v0, len)` of the transposed token table.
    pub(super) chunks: Vec<(usize, usize)>,
    pub(super) wte_t: Vec<wgpu::Buffer>,
    pub(super) wpe: Option<wgpu::Buffer>,
    pub(super) layers: Vec<Layer<wgpu::Buffer>>,
    pub(super) ln_f: Option<(wgpu::Buffer, wgpu::Buffer)>,
}

impl StageUpload {
    /// Upload what `w.part` says the stage holds (embedding, blocks, head).
    pub fn new(gpu: &Gpu, w: &StageWeights) -> Result<StageUpload> {
        let (cfg, part) = (w.config.clone(), w.part.clone());
        if part.layers.end > cfg.n_layer {
            return Err(Error::Input(format!(
                "layers {:?} past the model's {} layers",
                part.layers, cfg.n_layer
            )));
        }
        let missing = |what: &str| {
            Error::Input(format!(
                "stage {part:?} was given no {what}: build its weights with Gpt2Weights::stage"
            ))
        };
        let (mut chunks, mut wte_t) = (Vec::new(), Vec::new());
        if part.embedding || part.head {
            chunks = vocab_chunks(gpu, &cfg)?;
            wte_t = upload_token_table(gpu, &cfg, w.wte.ok_or_else(|| missing("wte"))?, &chunks);
        }
        let wpe = match part.embedding {
            true => {
                let wpe = w.wpe.ok_or_else(|| missing("wpe"))?;
                gpu.check_binding("wpe", bytes(wpe.len()))?;
                Some(upload(gpu, "wpe", wpe))
            }
            false => None,
        };
        if w.layers.len() != part.layers.len() {
            return Err(missing("blocks"));
        }
        let layers = part
            .layers
            .clone()
            .zip(w.layers)
            .map(|(l, lw)| {
                lw.try_map(&cfg, |name, t, shape| {
                    gpu.check_binding(&format!("h.{l}.{name} {shape:?}"), bytes(t.len()))?;
                    Ok::<_, Error>(upload(gpu, &format!("h.{l}.{name}"), t))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = match part.head {
            true => {
                let (g, b) = w.ln_f.ok_or_else(|| missing("ln_f"))?;
                Some((upload(gpu, "ln_f.weight", g), upload(gpu, "ln_f.bias", b)))
            }
            false => None,
        };
        Ok(StageUpload {
            part,
            cfg,
            chunks,
            wte_t,
            wpe,
            layers,
            ln_f,
        })
    }
}

/// The KV cache of a stage's blocks on its device — only the layers this
/// stage holds: per block a key and a value buffer (slots, n_pos, C), a slot
/// per sequence, preallocated up to `n_pos` (the model's n_positions).
pub struct KvCache {
    pub slots: usize,
    pub n_pos: usize,
    pub(super) k: Vec<wgpu::Buffer>,
    pub(super) v: Vec<wgpu::Buffer>,
}

impl KvCache {
    /// A zeroed cache for `blocks` blocks and `slots` sequences.
    pub fn new(gpu: &Gpu, cfg: &Gpt2Config, blocks: usize, slots: usize) -> Result<KvCache> {
        let n_pos = cfg.n_positions;
        let len = slots * n_pos * cfg.n_embd;
        gpu.check_binding(
            &format!(
                "KV cache of one block ({slots} sequences x {n_pos} positions x {})",
                cfg.n_embd
            ),
            bytes(len),
        )?;
        let make = |what: &str| {
            (0..blocks)
                .map(|i| zeros(gpu, &format!("{what} cache block {i}"), len))
                .collect()
        };
        Ok(KvCache {
            slots,
            n_pos,
            k: make("k"),
            v: make("v"),
        })
    }

    /// Bytes the cache holds on its device (keys and values, every block).
    pub fn bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|b| b.size()).sum()
    }
}
