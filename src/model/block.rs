//! A decoder block, described once: the ordered ops, with the activations
//! they read and write and the parameters they use. Every path runs this
//! list — the CPU reference, the GPU forward (full, prefill, decode), the
//! tensor-parallel split (a row-split projection ends a segment), and
//! training's F and its B, I and W (the list reversed) — so a family is a
//! description, not a copy of the code.
//!
//! GPT-2:
//!
//! ```text
//! ln1 = LayerNorm(x)            qkv = ln1 @ c_attn + b      att = Attention(qkv)
//! ap  = att @ attn.c_proj + b   x2  = x + ap                ln2 = LayerNorm(x2)
//! fc  = ln2 @ c_fc + b          act = GELU(fc)              mp  = act @ mlp.c_proj + b
//! out = x2 + mp
//! ```
//!
//! The Llama family (Llama, Qwen2, Mistral): RMSNorm for the norms, rotary
//! positions applied to q and k in place right after the q, k, v projection,
//! grouped-query attention, `fc` = gate | up and `act` = SiLU(gate) · up, no
//! biases but Qwen2's on q, k and v.

use crate::model::config::Gpt2Config;
use crate::model::weights::Layer;

/// An activation of a block: one (N, width) tensor per microbatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Act {
    /// The block's input, the residual stream (N, C).
    X,
    /// The first norm's output (N, C).
    Ln1,
    /// q, k and v side by side (N, NH·hd + 2·NKV·hd); rotary positions
    /// rotate its q and k in place.
    Qkv,
    /// The attention's output (N, NH·hd).
    Att,
    /// The attention's output projection (N, C): a partial sum under tensor
    /// parallelism until the group adds it up.
    AttnProj,
    /// The residual stream after the attention (N, C).
    X2,
    /// The second norm's output (N, C).
    Ln2,
    /// The MLP's first projection (N, F), or (N, 2F) gate | up.
    Fc,
    /// Its activation (N, F).
    FcAct,
    /// The MLP's output projection (N, C), a partial sum like `AttnProj`.
    MlpProj,
    /// The block's output, the residual stream (N, C).
    Out,
}

/// A block parameter, by its role (see [`Layer`]'s fields).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Param {
    Ln1G,
    Ln1B,
    QkvW,
    QkvB,
    OutW,
    OutB,
    Ln2G,
    Ln2B,
    FcW,
    FcB,
    ProjW,
    ProjB,
}

impl Param {
    /// This parameter of a block.
    pub fn of<T>(self, l: &Layer<T>) -> &T {
        match self {
            Param::Ln1G => &l.ln_1_g,
            Param::Ln1B => &l.ln_1_b,
            Param::QkvW => &l.c_attn_w,
            Param::QkvB => &l.c_attn_b,
            Param::OutW => &l.attn_proj_w,
            Param::OutB => &l.attn_proj_b,
            Param::Ln2G => &l.ln_2_g,
            Param::Ln2B => &l.ln_2_b,
            Param::FcW => &l.c_fc_w,
            Param::FcB => &l.c_fc_b,
            Param::ProjW => &l.mlp_proj_w,
            Param::ProjB => &l.mlp_proj_b,
        }
    }
}

/// Which norm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// GPT-2's LayerNorm (gain and bias).
    Layer,
    /// The Llama family's RMSNorm (gain only).
    Rms,
}

/// One op of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `out = norm(x) · g (+ b)`.
    Norm {
        kind: Norm,
        x: Act,
        g: Param,
        b: Param,
        out: Act,
    },
    /// `out = x @ w + b` (w [in, out]). `row_split`: under tensor parallelism
    /// each rank holds some of w's rows, so `out` is a partial sum the group
    /// adds up before anything reads it; otherwise each rank holds some of
    /// w's columns and computes its part of `out`.
    Linear {
        x: Act,
        w: Param,
        b: Param,
        out: Act,
        row_split: bool,
    },
    /// Rotary positions: q and k of `qkv` rotated in place, each row at its
    /// own absolute position.
    Rope { qkv: Act },
    /// Causal (grouped-query) attention of `qkv`'s queries over its keys
    /// and values (decoding: over the KV cache, which it writes first).
    Attention { qkv: Act, out: Act },
    /// GPT-2's GELU (tanh approximation).
    Gelu { x: Act, out: Act },
    /// `out = SiLU(gate) · up` of `x` = gate | up.
    SwiGlu { x: Act, out: Act },
    /// `out = a + b`.
    Residual { a: Act, b: Act, out: Act },
}

impl Op {
    /// The activations the op reads.
    pub fn inputs(&self) -> Vec<Act> {
        match *self {
            Op::Norm { x, .. }
            | Op::Linear { x, .. }
            | Op::Gelu { x, .. }
            | Op::SwiGlu { x, .. } => {
                vec![x]
            }
            Op::Rope { qkv } | Op::Attention { qkv, .. } => vec![qkv],
            Op::Residual { a, b, .. } => vec![a, b],
        }
    }
}

/// The block of `cfg`'s family, op by op.
pub fn ops(cfg: &Gpt2Config) -> Vec<Op> {
    let norm = match cfg.is_gpt2() {
        true => Norm::Layer,
        false => Norm::Rms,
    };
    let mut ops = vec![
        Op::Norm {
            kind: norm,
            x: Act::X,
            g: Param::Ln1G,
            b: Param::Ln1B,
            out: Act::Ln1,
        },
        Op::Linear {
            x: Act::Ln1,
            w: Param::QkvW,
            b: Param::QkvB,
            out: Act::Qkv,
            row_split: false,
        },
    ];
    if !cfg.learned_positions() {
        ops.push(Op::Rope { qkv: Act::Qkv });
    }
    ops.extend([
        Op::Attention {
            qkv: Act::Qkv,
            out: Act::Att,
        },
        Op::Linear {
            x: Act::Att,
            w: Param::OutW,
            b: Param::OutB,
            out: Act::AttnProj,
            row_split: true,
        },
        Op::Residual {
            a: Act::X,
            b: Act::AttnProj,
            out: Act::X2,
        },
        Op::Norm {
            kind: norm,
            x: Act::X2,
            g: Param::Ln2G,
            b: Param::Ln2B,
            out: Act::Ln2,
        },
        Op::Linear {
            x: Act::Ln2,
            w: Param::FcW,
            b: Param::FcB,
            out: Act::Fc,
            row_split: false,
        },
        match cfg.is_gpt2() {
            true => Op::Gelu {
                x: Act::Fc,
                out: Act::FcAct,
            },
            false => Op::SwiGlu {
                x: Act::Fc,
                out: Act::FcAct,
            },
        },
        Op::Linear {
            x: Act::FcAct,
            w: Param::ProjW,
            b: Param::ProjB,
            out: Act::MlpProj,
            row_split: true,
        },
        Op::Residual {
            a: Act::X2,
            b: Act::MlpProj,
            out: Act::Out,
        },
    ]);
    ops
}

/// The final norm of the head stage.
pub fn final_norm(cfg: &Gpt2Config) -> Norm {
    match cfg.is_gpt2() {
        true => Norm::Layer,
        false => Norm::Rms,
    }
}

/// Widths of a block's activations on one rank of a tensor-parallel group
/// (`heads` = this rank's (query heads, KV heads), `f` its MLP width; the
/// whole block's with T = 1).
pub fn width(cfg: &Gpt2Config, act: Act, (nh, nkv): (usize, usize), f: usize) -> usize {
    let hd = cfg.head_dim();
    match act {
        Act::X | Act::Ln1 | Act::AttnProj | Act::X2 | Act::Ln2 | Act::MlpProj | Act::Out => {
            cfg.n_embd
        }
        Act::Qkv => (nh + 2 * nkv) * hd,
        Act::Att => nh * hd,
        Act::Fc => match cfg.is_gpt2() {
            true => f,
            false => 2 * f,
        },
        Act::FcAct => f,
    }
}
