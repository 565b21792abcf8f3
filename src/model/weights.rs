//! GPT-2 parameters in host memory, and a deterministic seeded init.
//!
//! V = vocab_size, maxT = n_positions, C = n_embd, F = n_inner, L = n_layer.
//! Linear weights use the Hugging Face Conv1D layout [in, out], row-major:
//! y[j] = b[j] + sum_k x[k] * w[k * out + j].

use std::ops::Range;

use crate::error::{Error, Result};
use crate::model::config::Gpt2Config;
use crate::model::names;
use crate::model::rng::Rng;

/// How one block tensor of a family is named and shaped, and whether the
/// family has it at all.
pub struct Role {
    /// The name after the block's prefix (`ln_1.weight`,
    /// `self_attn.qkv_proj.weight`), as wgpipe names it internally;
    /// [`crate::model::layout`] says how a checkpoint stores it.
    pub name: &'static str,
    pub shape: Vec<usize>,
    /// The family has this tensor. A block's struct always holds every
    /// role; one the family lacks (a bias of Llama's, RMSNorm's bias) is
    /// zeros of its shape, never loaded, saved, trained or counted.
    pub present: bool,
}

/// A role named `gpt2` in GPT-2 and `llama` in the Llama family.
fn role(
    cfg: &Gpt2Config,
    gpt2: &'static str,
    llama: &'static str,
    shape: Vec<usize>,
    present: bool,
) -> Role {
    Role {
        name: if cfg.is_gpt2() { gpt2 } else { llama },
        shape,
        present,
    }
}

/// Declares [`Layer`] and the one list of a block's tensors: field, and its
/// [`Role`] (name, shape, presence) for a config. Load, save, the GPU stage,
/// gradients and the optimizer all read this list.
macro_rules! block_tensors {
    ($( $field:ident : $role:expr ),* $(,)?) => {
        /// One transformer block's tensors, one `T` each (f32 weights in
        /// host memory, buffers on a device, gradients …); linear weights
        /// in the layout [in, out] row-major (GPT-2's Conv1D; a Llama
        /// checkpoint's nn.Linear weights are transposed on load).
        #[derive(Clone, Debug, PartialEq)]
        pub struct Layer<T> {
            $(pub $field: T,)*
        }

        impl<T> Layer<T> {
            /// (name after the block prefix, tensor, shape) of every tensor
            /// the family has, in checkpoint order.
            pub fn named_tensors(&self, cfg: &Gpt2Config) -> Vec<(&'static str, &T, Vec<usize>)> {
                let mut out = Vec::new();
                $(
                    let r: Role = ($role)(cfg);
                    if r.present {
                        out.push((r.name, &self.$field, r.shape));
                    }
                )*
                out
            }

            /// Build a block tensor by tensor, every role (present or not),
            /// in checkpoint order, from each one's name and shape.
            pub fn try_from_fn<E>(
                cfg: &Gpt2Config,
                mut make: impl FnMut(&'static str, Vec<usize>) -> Result<T, E>,
            ) -> Result<Layer<T>, E> {
                Ok(Layer {
                    $($field: {
                        let r: Role = ($role)(cfg);
                        make(r.name, r.shape)?
                    },)*
                })
            }

            /// The two blocks' tensors side by side, field by field.
            pub fn zip<'a, U>(&'a self, other: &'a Layer<U>) -> Layer<(&'a T, &'a U)> {
                Layer {
                    $($field: (&self.$field, &other.$field),)*
                }
            }

            /// The same block with each tensor (every role) turned into
            /// something else.
            pub fn try_map<U, E>(
                &self,
                cfg: &Gpt2Config,
                mut f: impl FnMut(&'static str, &T, Vec<usize>) -> Result<U, E>,
            ) -> Result<Layer<U>, E> {
                Ok(Layer {
                    $($field: {
                        let r: Role = ($role)(cfg);
                        f(r.name, &self.$field, r.shape)?
                    },)*
                })
            }
        }

        /// Whether block tensor `name` is one the family of `cfg` has.
        pub fn block_role_present(cfg: &Gpt2Config, name: &str) -> bool {
            $(
                let r: Role = ($role)(cfg);
                if r.name == name {
                    return r.present;
                }
            )*
            false
        }
    };
}

// A family's widths come from the config: q (NH·hd), qkv (NH·hd + 2·NKV·hd),
// the MLP's first projection (F, or 2F: gate | up).
block_tensors! {
    ln_1_g: |c: &Gpt2Config| role(c, "ln_1.weight", "input_layernorm.weight", vec![c.n_embd], true),
    ln_1_b: |c: &Gpt2Config| role(c, "ln_1.bias", "input_layernorm.bias", vec![c.n_embd], c.is_gpt2()),
    c_attn_w: |c: &Gpt2Config| role(c, "attn.c_attn.weight", "self_attn.qkv_proj.weight", vec![c.n_embd, c.qkv_width()], true),
    c_attn_b: |c: &Gpt2Config| role(c, "attn.c_attn.bias", "self_attn.qkv_proj.bias", vec![c.qkv_width()], c.arch.qkv_bias),
    attn_proj_w: |c: &Gpt2Config| role(c, "attn.c_proj.weight", "self_attn.o_proj.weight", vec![c.q_width(), c.n_embd], true),
    attn_proj_b: |c: &Gpt2Config| role(c, "attn.c_proj.bias", "self_attn.o_proj.bias", vec![c.n_embd], c.is_gpt2()),
    ln_2_g: |c: &Gpt2Config| role(c, "ln_2.weight", "post_attention_layernorm.weight", vec![c.n_embd], true),
    ln_2_b: |c: &Gpt2Config| role(c, "ln_2.bias", "post_attention_layernorm.bias", vec![c.n_embd], c.is_gpt2()),
    c_fc_w: |c: &Gpt2Config| role(c, "mlp.c_fc.weight", "mlp.gate_up_proj.weight", vec![c.n_embd, c.mlp_in_width()], true),
    c_fc_b: |c: &Gpt2Config| role(c, "mlp.c_fc.bias", "mlp.gate_up_proj.bias", vec![c.mlp_in_width()], c.is_gpt2()),
    mlp_proj_w: |c: &Gpt2Config| role(c, "mlp.c_proj.weight", "mlp.down_proj.weight", vec![c.n_inner, c.n_embd], true),
    mlp_proj_b: |c: &Gpt2Config| role(c, "mlp.c_proj.bias", "mlp.down_proj.bias", vec![c.n_embd], c.is_gpt2()),
}

/// One block's weights in host memory.
pub type LayerWeights = Layer<Vec<f32>>;

/// A model's parameters in host memory. Tensors the family lacks are
/// empty (`wpe` without learned positions, `ln_f_b` under RMSNorm,
/// `lm_head` when the head is tied to `wte`).
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Weights {
    pub config: Gpt2Config,
    pub wte: Vec<f32>,             // (V, C), also the LM head when tied
    pub wpe: Vec<f32>,             // (maxT, C), learned positions only
    pub layers: Vec<LayerWeights>, // (L)
    pub ln_f_g: Vec<f32>,          // (C)
    pub ln_f_b: Vec<f32>,          // (C), LayerNorm only
    pub lm_head: Vec<f32>,         // (V, C), an untied head only
}

/// Which part of the model a stage holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagePart {
    /// Transformer blocks, in order.
    pub layers: Range<usize>,
    /// The token (and position) embedding at the start.
    pub embedding: bool,
    /// The final norm and the LM head at the end.
    pub head: bool,
}

impl StagePart {
    /// The whole model on one device.
    pub fn whole(cfg: &Gpt2Config) -> StagePart {
        StagePart {
            layers: 0..cfg.n_layer,
            embedding: true,
            head: true,
        }
    }
}

/// The weights one stage holds, borrowed from the model: a device thread
/// is handed these and nothing else.
#[derive(Clone, Copy, Debug)]
pub struct StageWeights<'a> {
    pub config: &'a Gpt2Config,
    pub part: &'a StagePart,
    /// The blocks `part.layers`, in order.
    pub layers: &'a [LayerWeights],
    /// (V, C), with the embedding: the token table.
    pub wte: Option<&'a [f32]>,
    /// (maxT, C), with the embedding, when positions are learned.
    pub wpe: Option<&'a [f32]>,
    /// (gamma, beta) of the final norm, with the head (beta empty under
    /// RMSNorm).
    pub ln_f: Option<(&'a [f32], &'a [f32])>,
    /// (V, C), with the head: the LM head's table (`wte` when tied).
    pub head: Option<&'a [f32]>,
}

impl Gpt2Weights {
    /// The tensors stage `part` needs (`part.layers` within the model's;
    /// [`StageSource::try_stage`] says so instead of panicking).
    pub fn stage<'a>(&'a self, part: &'a StagePart) -> StageWeights<'a> {
        StageWeights {
            config: &self.config,
            part,
            layers: &self.layers[part.layers.clone()],
            wte: part.embedding.then_some(&self.wte[..]),
            wpe: (part.embedding && self.config.learned_positions()).then_some(&self.wpe[..]),
            ln_f: part.head.then_some((&self.ln_f_g[..], &self.ln_f_b[..])),
            head: part.head.then_some(match self.config.tied_head() {
                true => &self.wte[..],
                false => &self.lm_head[..],
            }),
        }
    }

    /// Every tensor the family has with its name ([`crate::model::names`])
    /// and shape, in checkpoint order.
    pub fn named_tensors(&self) -> Vec<(String, &Vec<f32>, Vec<usize>)> {
        named_model_tensors(
            &self.config,
            [&self.wte, &self.wpe],
            &self.layers,
            [&self.ln_f_g, &self.ln_f_b],
            &self.lm_head,
        )
    }

    /// Deterministic GPT-2-style init: weights ~ N(0, 0.02), the two residual
    /// projections (the attention's and the MLP's output) scaled by
    /// 1/sqrt(2L). Unlike GPT-2, norm gains are 1 + N(0, 0.1) and biases and
    /// LayerNorm betas are N(0, 0.02), so that tests exercise them. Tensors
    /// the family lacks are zeros (in a block) or empty (outside one). GPT-2
    /// draws its tensors in the order it always has, so its seeded models
    /// are unchanged.
    pub fn init(config: &Gpt2Config, seed: u64) -> Result<Self> {
        config.validate()?;
        let (v, p, c) = (config.vocab_size, config.n_positions, config.n_embd);
        let mut rng = Rng::new(seed);
        let std = 0.02f32;
        let proj_std = std / (2.0 * config.n_layer as f32).sqrt();
        let wte = rng.normal_vec(v * c, 0.0, std);
        let wpe = match config.learned_positions() {
            true => rng.normal_vec(p * c, 0.0, std),
            false => Vec::new(),
        };
        let mut layers = Vec::with_capacity(config.n_layer);
        for _ in 0..config.n_layer {
            let lw = LayerWeights::try_from_fn(config, |name, shape| {
                let n: usize = shape.iter().product();
                if !block_role_present(config, name) {
                    return Ok::<_, std::convert::Infallible>(vec![0.0; n]);
                }
                let is_norm = name.contains("ln_") || name.contains("layernorm");
                let is_out = name.ends_with("c_proj.weight")
                    || name.ends_with("o_proj.weight")
                    || name.ends_with("down_proj.weight");
                Ok(match (is_norm, shape.len(), is_out) {
                    (true, _, _) if name.ends_with("weight") => rng.normal_vec(n, 1.0, 0.1),
                    (_, 2, true) => rng.normal_vec(n, 0.0, proj_std),
                    _ => rng.normal_vec(n, 0.0, std),
                })
            })
            .unwrap_or_else(|e| match e {});
            layers.push(lw);
        }
        let ln_f_g = rng.normal_vec(c, 1.0, 0.1);
        let ln_f_b = match config.is_gpt2() {
            true => rng.normal_vec(c, 0.0, std),
            false => Vec::new(),
        };
        let lm_head = match config.tied_head() {
            true => Vec::new(),
            false => rng.normal_vec(v * c, 0.0, std),
        };
        Ok(Gpt2Weights {
            config: config.clone(),
            wte,
            wpe,
            layers,
            ln_f_g,
            ln_f_b,
            lm_head,
        })
    }
}

/// Where stages' weights come from: the whole model ([`Gpt2Weights`]), or
/// the part of it this process loaded ([`PartialWeights`]: under
/// `--transport mpi` each rank reads only its own stages' tensors). The
/// executors take `&dyn StageSource`, so either runs the same code.
pub trait StageSource: Sync {
    fn config(&self) -> &Gpt2Config;
    /// The tensors stage `part` needs; an error naming those not held.
    fn try_stage<'a>(&'a self, part: &'a StagePart) -> Result<StageWeights<'a>>;
}

impl StageSource for Gpt2Weights {
    fn config(&self) -> &Gpt2Config {
        &self.config
    }

    fn try_stage<'a>(&'a self, part: &'a StagePart) -> Result<StageWeights<'a>> {
        TensorSet::of(&self.config, std::slice::from_ref(part))?;
        Ok(self.stage(part))
    }
}

/// A set of a model's tensors in the groups a stage holds them: the token
/// table `wte`, the position table `wpe`, whole blocks `h.N.*`, and `ln_f`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSet {
    pub wte: bool,
    pub wpe: bool,
    /// One flag per block, h.0 … h.{L-1}.
    pub layers: Vec<bool>,
    pub ln_f: bool,
    /// An untied LM head's own table.
    pub lm_head: bool,
}

impl TensorSet {
    /// No tensor of a model of `cfg`'s shape.
    pub fn none(cfg: &Gpt2Config) -> TensorSet {
        TensorSet {
            wte: false,
            wpe: false,
            layers: vec![false; cfg.n_layer],
            ln_f: false,
            lm_head: false,
        }
    }

    /// Every tensor of the model.
    pub fn all(cfg: &Gpt2Config) -> TensorSet {
        TensorSet {
            wte: true,
            wpe: cfg.learned_positions(),
            layers: vec![true; cfg.n_layer],
            ln_f: true,
            lm_head: !cfg.tied_head(),
        }
    }

    /// What stages `parts` need together: their blocks; wte (and wpe, for
    /// learned positions) with the embedding; the final norm and the head's
    /// table (wte when tied, else lm_head) with the head.
    pub fn of(cfg: &Gpt2Config, parts: &[StagePart]) -> Result<TensorSet> {
        let mut s = TensorSet::none(cfg);
        for p in parts {
            if p.layers.end > cfg.n_layer {
                return Err(Error::Input(format!(
                    "stage {p:?} holds layers {:?}, past the model's {} layers",
                    p.layers, cfg.n_layer
                )));
            }
            p.layers.clone().for_each(|l| s.layers[l] = true);
            s.wte |= p.embedding || (p.head && cfg.tied_head());
            s.wpe |= p.embedding && cfg.learned_positions();
            s.ln_f |= p.head;
            s.lm_head |= p.head && !cfg.tied_head();
        }
        Ok(s)
    }

    /// The tensors in `self` but not in `other`.
    pub fn minus(&self, other: &TensorSet) -> TensorSet {
        let held = |l: usize| other.layers.get(l).copied().unwrap_or(false);
        TensorSet {
            wte: self.wte && !other.wte,
            wpe: self.wpe && !other.wpe,
            layers: (self.layers.iter().enumerate())
                .map(|(l, &x)| x && !held(l))
                .collect(),
            ln_f: self.ln_f && !other.ln_f,
            lm_head: self.lm_head && !other.lm_head,
        }
    }

    pub fn is_empty(&self) -> bool {
        !(self.wte || self.wpe || self.ln_f || self.lm_head || self.layers.iter().any(|&x| x))
    }

    /// The set in words: "wte, wpe, layers 0-2 and 5, ln_f" ("nothing").
    pub fn describe(&self) -> String {
        let mut items: Vec<String> = Vec::new();
        for (on, name) in [(self.wte, names::WTE), (self.wpe, names::WPE)] {
            if on {
                items.push(names::group(name).into());
            }
        }
        let mut runs: Vec<(usize, usize)> = Vec::new(); // inclusive
        for l in (0..self.layers.len()).filter(|&l| self.layers[l]) {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == l => *end = l,
                _ => runs.push((l, l)),
            }
        }
        if !runs.is_empty() {
            let run = |&(a, b): &(usize, usize)| match a == b {
                true => a.to_string(),
                false => format!("{a}-{b}"),
            };
            let single = runs.len() == 1 && runs[0].0 == runs[0].1;
            let list: Vec<String> = runs.iter().map(run).collect();
            let list = match list.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
                _ => list.join(""),
            };
            items.push(format!(
                "{} {list}",
                if single { "layer" } else { "layers" }
            ));
        }
        if self.ln_f {
            items.push(names::group(names::LN_F_WEIGHT).into());
        }
        if self.lm_head {
            items.push(names::group(names::LM_HEAD).into());
        }
        match items.is_empty() {
            true => "nothing".into(),
            false => items.join(", "),
        }
    }
}

/// Some of a model's tensors — what one MPI rank loaded of a checkpoint, its
/// own stages' — and which ones. Everything that hands tensors out checks
/// the set first: a tensor that was not loaded is an error naming it, never
/// an empty or stale one.
#[derive(Clone, Debug, PartialEq)]
pub struct PartialWeights {
    /// The tensors in `held`; every other one is empty and never handed out.
    w: Gpt2Weights,
    held: TensorSet,
}

impl From<Gpt2Weights> for PartialWeights {
    /// The whole model, every tensor held.
    fn from(w: Gpt2Weights) -> PartialWeights {
        let held = TensorSet::all(&w.config);
        PartialWeights { w, held }
    }
}

impl PartialWeights {
    /// A model of `config`'s shape with no tensor loaded yet.
    pub fn empty(config: Gpt2Config) -> PartialWeights {
        PartialWeights {
            held: TensorSet::none(&config),
            w: Gpt2Weights {
                wte: Vec::new(),
                wpe: Vec::new(),
                layers: (0..config.n_layer)
                    .map(|_| PartialWeights::empty_layer(&config))
                    .collect(),
                ln_f_g: Vec::new(),
                ln_f_b: Vec::new(),
                lm_head: Vec::new(),
                config,
            },
        }
    }

    pub fn config(&self) -> &Gpt2Config {
        &self.w.config
    }

    /// Which tensors are here.
    pub fn held(&self) -> &TensorSet {
        &self.held
    }

    /// An error unless every tensor of `need` is here.
    fn check(&self, need: &TensorSet, what: &str) -> Result<()> {
        let missing = need.minus(&self.held);
        if missing.is_empty() {
            return Ok(());
        }
        let n_missing = missing.layers.iter().filter(|&&x| x).count()
            + [missing.wte, missing.wpe, missing.ln_f, missing.lm_head]
                .iter()
                .filter(|&&x| x)
                .count();
        Err(Error::Other(format!(
            "{what}: {} {} not loaded in this process (it loaded {}: under --transport mpi each rank reads only its own stages' tensors from the checkpoint)",
            missing.describe(),
            if n_missing == 1 { "is" } else { "are" },
            self.held.describe()
        )))
    }

    /// The tensors stage `part` needs, when they are all here.
    pub fn stage<'a>(&'a self, part: &'a StagePart) -> Result<StageWeights<'a>> {
        let need = TensorSet::of(self.config(), std::slice::from_ref(part))?;
        self.check(&need, &format!("stage {part:?}"))?;
        Ok(self.w.stage(part))
    }

    /// The whole model, when every tensor is here.
    pub fn whole(&self) -> Result<&Gpt2Weights> {
        self.check(&TensorSet::all(self.config()), "the whole model")?;
        Ok(&self.w)
    }

    /// [`Self::whole`], by value.
    pub fn into_whole(self) -> Result<Gpt2Weights> {
        self.check(&TensorSet::all(self.config()), "the whole model")?;
        Ok(self.w)
    }

    /// Drop (and free) every tensor not in `keep`.
    pub fn retain(&mut self, keep: &TensorSet) {
        let drop = self.held.minus(keep);
        let w = &mut self.w;
        if drop.wte {
            w.wte = Vec::new();
        }
        if drop.wpe {
            w.wpe = Vec::new();
        }
        if drop.ln_f {
            (w.ln_f_g, w.ln_f_b) = (Vec::new(), Vec::new());
        }
        if drop.lm_head {
            w.lm_head = Vec::new();
        }
        for l in (0..drop.layers.len()).filter(|&l| drop.layers[l]) {
            w.layers[l] = PartialWeights::empty_layer(&w.config);
        }
        self.held = self.held.minus(&drop);
    }

    fn empty_layer(cfg: &Gpt2Config) -> LayerWeights {
        Layer::try_from_fn(cfg, |_, _| Ok::<_, std::convert::Infallible>(Vec::new()))
            .unwrap_or_else(|e| match e {})
    }

    // The loader's (checkpoint.rs) setters: it has checked each shape.
    pub(crate) fn put_wte(&mut self, v: Vec<f32>) {
        (self.w.wte, self.held.wte) = (v, true);
    }
    pub(crate) fn put_wpe(&mut self, v: Vec<f32>) {
        (self.w.wpe, self.held.wpe) = (v, true);
    }
    pub(crate) fn put_layer(&mut self, l: usize, lw: LayerWeights) {
        (self.w.layers[l], self.held.layers[l]) = (lw, true);
    }
    pub(crate) fn put_ln_f(&mut self, g: Vec<f32>, b: Vec<f32>) {
        (self.w.ln_f_g, self.w.ln_f_b, self.held.ln_f) = (g, b, true);
    }
    pub(crate) fn put_lm_head(&mut self, v: Vec<f32>) {
        (self.w.lm_head, self.held.lm_head) = (v, true);
    }
}

impl StageSource for PartialWeights {
    fn config(&self) -> &Gpt2Config {
        PartialWeights::config(self)
    }

    fn try_stage<'a>(&'a self, part: &'a StagePart) -> Result<StageWeights<'a>> {
        self.stage(part)
    }
}

/// The whole model's tensor list, in checkpoint order, for anything shaped
/// like the model (its weights, its gradients): the token table, the
/// position table (learned positions only), the blocks, the final norm's
/// gain (and bias, LayerNorm only), an untied LM head; each with its name
/// ([`names`]) and shape.
pub fn named_model_tensors<'a>(
    cfg: &Gpt2Config,
    embeddings: [&'a Vec<f32>; 2],
    layers: &'a [LayerWeights],
    ln_f: [&'a Vec<f32>; 2],
    lm_head: &'a Vec<f32>,
) -> Vec<(String, &'a Vec<f32>, Vec<usize>)> {
    let (v, c) = (cfg.vocab_size, cfg.n_embd);
    let mut out = vec![(names::WTE.to_string(), embeddings[0], vec![v, c])];
    if cfg.learned_positions() {
        out.push((
            names::WPE.to_string(),
            embeddings[1],
            vec![cfg.n_positions, c],
        ));
    }
    for (l, layer) in layers.iter().enumerate() {
        for (name, t, shape) in layer.named_tensors(cfg) {
            out.push((names::block_tensor(l, name), t, shape));
        }
    }
    out.push((names::LN_F_WEIGHT.to_string(), ln_f[0], vec![c]));
    if cfg.is_gpt2() {
        out.push((names::LN_F_BIAS.to_string(), ln_f[1], vec![c]));
    }
    if !cfg.tied_head() {
        out.push((names::LM_HEAD.to_string(), lm_head, vec![v, c]));
    }
    out
}
