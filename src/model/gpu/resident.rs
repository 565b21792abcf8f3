//! What a stage keeps resident on its device beside its programs: its
//! weights, uploaded once and shared by every program built over them
//! ([`StageUpload`]), and the KV cache of its blocks ([`KvCache`]).

use std::sync::Arc;

use super::{bytes, upload_token_table, vocab_chunks};
use crate::device::{upload, zeros, Gpu};
use crate::error::{Error, Result};
use crate::kernels::WeightTextures;
use crate::model::names;
use crate::model::weights::{Layer, StageWeights};
use crate::model::{Gpt2Config, Shard, StagePart};

/// A stage's weights on one device, uploaded once: every program built over
/// them ([`super::GpuStage::build`]: a full forward, a prefill, a decode step)
/// shares these buffers (cloning it clones handles, not data).
#[derive(Clone)]
pub struct StageUpload {
    pub part: StagePart,
    pub cfg: Gpt2Config,
    /// Which tensor-parallel part of the stage this device holds
    /// ([`Shard::WHOLE`] without tensor parallelism).
    pub shard: Shard,
    /// Vocabulary chunks `(v0, len)` of the transposed token table.
    pub(super) chunks: Vec<(usize, usize)>,
    pub(super) wte_t: Vec<wgpu::Buffer>,
    pub(super) wpe: Option<wgpu::Buffer>,
    pub(super) layers: Vec<Layer<wgpu::Buffer>>,
    pub(super) ln_f: Option<(wgpu::Buffer, wgpu::Buffer)>,
    /// The matmul weights (every block's four, the token table's chunks for
    /// the tied head), registered so that decoding may read them from
    /// textures on adapters where that is faster; made on first need, freed
    /// with the last clone of this upload.
    textures: Arc<WeightTextures>,
}

impl StageUpload {
    /// Upload what `w.part` says the stage holds (embedding, blocks, head).
    pub fn new(gpu: &Gpu, w: &StageWeights) -> Result<StageUpload> {
        StageUpload::shard(gpu, w, Shard::WHOLE)
    }

    /// Upload `shard`'s part of what `w.part` says the stage holds: its
    /// heads' and MLP columns' part of each block, its vocabulary range of
    /// the token table (see [`crate::model::shard`]).
    pub fn shard(gpu: &Gpu, w: &StageWeights, shard: Shard) -> Result<StageUpload> {
        gpu.cached(|_| Uploads::default())
            .0
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (cfg, part) = (w.config.clone(), w.part.clone());
        crate::model::shard::check_degree(&cfg, shard.of)?;
        if part.layers.end > cfg.n_layer {
            return Err(Error::Input(format!(
                "layers {:?} past the model's {} layers",
                part.layers, cfg.n_layer
            )));
        }
        // What a stage lacks, by the group of tensors it belongs to ("wte").
        let missing = |what: &str| {
            Error::Input(format!(
                "stage {part:?} was given no {}: build its weights with Gpt2Weights::stage",
                names::group(what)
            ))
        };
        let (mut chunks, mut wte_t) = (Vec::new(), Vec::new());
        if part.embedding || part.head {
            chunks = vocab_chunks(gpu, &cfg, shard.vocab(cfg.padded_vocab()))?;
            wte_t = upload_token_table(
                gpu,
                &cfg,
                w.wte.ok_or_else(|| missing(names::WTE))?,
                &chunks,
            );
        }
        let wpe = match part.embedding {
            true => {
                let wpe = w.wpe.ok_or_else(|| missing(names::WPE))?;
                gpu.check_binding(names::WPE, bytes(wpe.len()))?;
                Some(upload(gpu, names::WPE, wpe))
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
                let sharded;
                let lw = match shard.split() {
                    true => {
                        sharded = shard.layer(&cfg, lw);
                        &sharded
                    }
                    false => lw,
                };
                lw.try_map(&cfg, |name, t, _| {
                    let shape = [t.len()];
                    let name = names::block_tensor(l, name);
                    gpu.check_binding(&format!("{name} {shape:?}"), bytes(t.len()))?;
                    Ok::<_, Error>(upload(gpu, &name, t))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = match part.head {
            true => {
                let (g, b) = w.ln_f.ok_or_else(|| missing(names::LN_F_WEIGHT))?;
                Some((
                    upload(gpu, names::LN_F_WEIGHT, g),
                    upload(gpu, names::LN_F_BIAS, b),
                ))
            }
            false => None,
        };
        let matrices = layers
            .iter()
            .flat_map(|l| [&l.c_attn_w, &l.attn_proj_w, &l.c_fc_w, &l.mlp_proj_w]);
        let head = wte_t.iter().filter(|_| part.head);
        let textures = WeightTextures::register(gpu, matrices.chain(head));
        Ok(StageUpload {
            part,
            cfg,
            shard,
            chunks,
            wte_t,
            wpe,
            layers,
            ln_f,
            textures,
        })
    }

    /// How many stages' weights have been uploaded to `gpu` so far (every
    /// [`StageUpload::shard`]): what a long-lived pipeline shows to prove it
    /// uploads each stage once, however many runs it makes.
    pub fn count(gpu: &Gpu) -> usize {
        gpu.cached(|_| Uploads::default())
            .0
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of weights this upload holds on its device: its buffers, and the
    /// texture copies decoding has made of them so far.
    pub fn bytes(&self) -> u64 {
        let layers = self.layers.iter().flat_map(|l| {
            l.named_tensors(&self.cfg)
                .into_iter()
                .map(|(_, b, _)| b.size())
        });
        let rest = self
            .wte_t
            .iter()
            .chain(&self.wpe)
            .chain(self.ln_f.iter().flat_map(|(g, b)| [g, b]))
            .map(|b| b.size());
        layers.chain(rest).sum::<u64>() + self.textures.bytes()
    }
}

/// Stage uploads made to one Gpu ([`StageUpload::count`]).
#[derive(Default)]
struct Uploads(std::sync::atomic::AtomicUsize);

/// The KV cache of a stage's blocks on its device — only the layers this
/// stage holds: per block a key and a value buffer (slots, n_pos, C/T) (a
/// tensor-parallel rank holds its own heads' channels, C/T of them), a slot
/// per sequence, preallocated up to `n_pos` (the model's n_positions).
pub struct KvCache {
    pub slots: usize,
    pub n_pos: usize,
    pub(super) k: Vec<wgpu::Buffer>,
    pub(super) v: Vec<wgpu::Buffer>,
}

impl KvCache {
    /// A zeroed cache for `blocks` blocks and `slots` sequences, for
    /// `shard`'s heads.
    pub fn new(
        gpu: &Gpu,
        cfg: &Gpt2Config,
        shard: Shard,
        blocks: usize,
        slots: usize,
    ) -> Result<KvCache> {
        let n_pos = cfg.n_positions;
        let width = cfg.n_embd / shard.of;
        let len = slots * n_pos * width;
        gpu.check_binding(
            &format!("KV cache of one block ({slots} sequences x {n_pos} positions x {width})"),
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
