//! What a stage keeps resident on its device beside its programs: its
//! weights, uploaded once and shared by every program built over them
//! ([`StageUpload`]), and the KV cache of its blocks ([`KvCache`]).

use std::sync::Arc;

use super::{upload_token_table, vocab_chunks};
use crate::device::{dtype::beyond_f16, upload, upload_as, zeros_as, Dtype, Gpu, Precision};
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
    /// How the device stores the stage (weights, activations, KV cache) and
    /// the activations it exchanges with its neighbours.
    pub precision: Precision,
    /// Vocabulary chunks `(v0, len)` of the transposed token and head tables.
    pub(super) chunks: Vec<(usize, usize)>,
    /// With the embedding: the token table, transposed, by chunk.
    pub(super) wte_t: Vec<wgpu::Buffer>,
    /// With the head: the LM head's table, transposed, by chunk (the token
    /// table's own buffers when the head is tied to it and the stage embeds).
    pub(super) head_t: Vec<wgpu::Buffer>,
    /// With the embedding, when positions are learned.
    pub(super) wpe: Option<wgpu::Buffer>,
    pub(super) layers: Vec<Layer<wgpu::Buffer>>,
    /// With the head: the final norm's gain, and its bias (LayerNorm only).
    pub(super) ln_f: Option<(wgpu::Buffer, Option<wgpu::Buffer>)>,
    /// With blocks, under rotary positions: the (hd / 2) inverse frequencies.
    pub(super) inv_freq: Option<wgpu::Buffer>,
    /// The matmul weights (every block's four, the token table's chunks for
    /// the tied head), registered so that decoding may read them from
    /// textures on adapters where that is faster; made on first need, freed
    /// with the last clone of this upload.
    textures: Arc<WeightTextures>,
}

impl StageUpload {
    /// Upload what `w.part` says the stage holds (embedding, blocks, head), in f32.
    pub fn new(gpu: &Gpu, w: &StageWeights) -> Result<StageUpload> {
        StageUpload::shard(gpu, w, Shard::WHOLE, Precision::F32)
    }

    /// Upload `shard`'s part of what `w.part` says the stage holds: its
    /// heads' and MLP columns' part of each block, its vocabulary range of
    /// the token table (see [`crate::model::shard`]), stored as
    /// `precision.dtype` (f16: each value rounded to nearest; a tensor
    /// holding a value f16 cannot is refused, naming it — the pipeline
    /// layer checks first and keeps such a device in f32,
    /// [`crate::workload::resident::resolve_precision`]).
    pub fn shard(
        gpu: &Gpu,
        w: &StageWeights,
        shard: Shard,
        precision: Precision,
    ) -> Result<StageUpload> {
        let dt = precision.dtype;
        gpu.check_dtype(dt)?;
        if dt == Dtype::F16 {
            if let Some((name, v)) = first_beyond_f16(w) {
                return Err(Error::Input(format!(
                    "{name} holds {v:e}, beyond f16's range (±65504): it cannot be stored in f16"
                )));
            }
        }
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
        let (mut chunks, mut wte_t, mut head_t) = (Vec::new(), Vec::new(), Vec::new());
        if part.embedding || part.head {
            chunks = vocab_chunks(gpu, &cfg, shard.vocab(cfg.padded_vocab()))?;
        }
        if part.embedding {
            let wte = w.wte.ok_or_else(|| missing(names::WTE))?;
            wte_t = upload_token_table(gpu, &cfg, wte, &chunks, names::WTE, dt);
        }
        if part.head {
            head_t = match (part.embedding && cfg.tied_head(), w.head) {
                (true, _) => wte_t.clone(),
                (false, Some(t)) => {
                    let what = if cfg.tied_head() {
                        names::WTE
                    } else {
                        names::LM_HEAD
                    };
                    upload_token_table(gpu, &cfg, t, &chunks, what, dt)
                }
                (false, None) => return Err(missing(names::LM_HEAD)),
            };
        }
        let wpe = match part.embedding && cfg.learned_positions() {
            true => {
                let wpe = w.wpe.ok_or_else(|| missing(names::WPE))?;
                gpu.check_binding(names::WPE, dt.bytes(wpe.len()))?;
                Some(upload_as(gpu, names::WPE, wpe, dt))
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
                    gpu.check_binding(&format!("{name} {shape:?}"), dt.bytes(t.len()))?;
                    Ok::<_, Error>(upload_as(gpu, &name, t, dt))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ln_f = match part.head {
            true => {
                let (g, b) = w.ln_f.ok_or_else(|| missing(names::LN_F_WEIGHT))?;
                let b = cfg
                    .is_gpt2()
                    .then(|| upload_as(gpu, names::LN_F_BIAS, b, dt));
                Some((upload_as(gpu, names::LN_F_WEIGHT, g, dt), b))
            }
            false => None,
        };
        let inv_freq = match (&cfg.arch.rope, part.layers.is_empty()) {
            (Some(r), false) => Some(upload(
                gpu,
                "rope inv_freq (hd/2)",
                &r.inv_freq(cfg.head_dim()),
            )),
            _ => None,
        };
        let matrices = layers
            .iter()
            .flat_map(|l| [&l.c_attn_w, &l.attn_proj_w, &l.c_fc_w, &l.mlp_proj_w]);
        let head = head_t.iter().filter(|_| part.head);
        let textures = WeightTextures::register(gpu, matrices.chain(head), dt);
        Ok(StageUpload {
            part,
            cfg,
            shard,
            precision,
            chunks,
            wte_t,
            head_t,
            wpe,
            layers,
            ln_f,
            inv_freq,
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
        // A tied head's table shares the embedding's buffers: counted once.
        let shared = !self.wte_t.is_empty() && self.cfg.tied_head();
        let head = self.head_t.iter().filter(|_| !shared);
        let rest = self
            .wte_t
            .iter()
            .chain(head)
            .chain(&self.wpe)
            .chain(
                self.ln_f
                    .iter()
                    .flat_map(|(g, b)| std::iter::once(g).chain(b)),
            )
            .chain(&self.inv_freq)
            .map(|b| b.size());
        layers.chain(rest).sum::<u64>() + self.textures.bytes()
    }
}

/// Stage uploads made to one Gpu ([`StageUpload::count`]).
#[derive(Default)]
struct Uploads(std::sync::atomic::AtomicUsize);

/// The KV cache of a stage's blocks on its device — only the layers this
/// stage holds: per block a key and a value buffer (slots, n_pos, NKV·hd),
/// sized by the KV heads (a tensor-parallel rank holds its own KV heads, or
/// its one replicated head), a slot per sequence, preallocated up to
/// `n_pos` positions (what the generation needs, at most n_positions).
pub struct KvCache {
    pub slots: usize,
    pub n_pos: usize,
    /// The cache's element type (its stage's).
    pub dtype: Dtype,
    pub(super) k: Vec<wgpu::Buffer>,
    pub(super) v: Vec<wgpu::Buffer>,
}

impl KvCache {
    /// A zeroed cache for `blocks` blocks and `slots` sequences, for
    /// `shard`'s heads, holding `dtype`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        cfg: &Gpt2Config,
        shard: Shard,
        blocks: usize,
        slots: usize,
        n_pos: usize,
        dtype: Dtype,
    ) -> Result<KvCache> {
        let n_pos = n_pos.clamp(1, cfg.n_positions);
        let width = shard.heads(cfg).1 * cfg.head_dim();
        let len = slots * n_pos * width;
        gpu.check_binding(
            &format!("KV cache of one block ({slots} sequences x {n_pos} positions x {width})"),
            dtype.bytes(len),
        )?;
        let make = |what: &str| {
            (0..blocks)
                .map(|i| zeros_as(gpu, &format!("{what} cache block {i}"), len, dtype))
                .collect()
        };
        Ok(KvCache {
            slots,
            n_pos,
            dtype,
            k: make("k"),
            v: make("v"),
        })
    }

    /// Bytes the cache holds on its device (keys and values, every block).
    pub fn bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(|b| b.size()).sum()
    }
}

/// The first tensor of `w` (by checkpoint name) holding a value f16 cannot
/// (finite, beyond ±65504), and that value.
pub fn first_beyond_f16(w: &StageWeights) -> Option<(String, f32)> {
    let cfg = w.config;
    let named = |name: &str, t: &[f32]| beyond_f16(t).map(|(_, v)| (name.to_string(), v));
    let tables = [
        (names::WTE, w.wte),
        (names::WPE, w.wpe),
        (names::LM_HEAD, w.head),
    ];
    tables
        .iter()
        .find_map(|(name, t)| t.and_then(|t| named(name, t)))
        .or_else(|| {
            w.part.layers.clone().zip(w.layers).find_map(|(l, lw)| {
                lw.named_tensors(cfg)
                    .into_iter()
                    .find_map(|(name, t, _)| named(&names::block_tensor(l, name), t))
            })
        })
        .or_else(|| {
            let (g, b) = w.ln_f?;
            named(names::LN_F_WEIGHT, g).or_else(|| named(names::LN_F_BIAS, b))
        })
}
