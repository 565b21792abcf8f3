//! How each family's Hugging Face checkpoint stores wgpipe's tensors.
//!
//! wgpipe holds every model in one layout ([`crate::model::weights`]):
//! linear weights as [in, out] row-major, q, k and v side by side in one
//! projection, the MLP's gate and up projections side by side. GPT-2's
//! checkpoint stores exactly that (Conv1D weights, a fused `c_attn`). A
//! Llama-family checkpoint (`LlamaForCausalLM`, `Qwen2ForCausalLM`,
//! `MistralForCausalLM`) stores nn.Linear weights as [out, in] and q, k, v,
//! gate and up as tensors of their own, under `model.` names; this module
//! says, tensor by tensor, which checkpoint tensors make one of wgpipe's and
//! how ([`stored`]), and reads ([`assemble`]) or writes ([`split`]) them.

use crate::model::config::Gpt2Config;
use crate::model::names;

/// How one of wgpipe's tensors is stored in a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Stored {
    /// As is, under this name.
    Same(String),
    /// A linear weight [in, Σ out_i] made of the checkpoint's nn.Linear
    /// weights `(name, out_i)`, each stored [out_i, in]: transposed, then
    /// side by side along the output.
    Linear(Vec<(String, usize)>),
    /// A vector made of the checkpoint's vectors `(name, len_i)` end to end
    /// (q, k and v's biases).
    Concat(Vec<(String, usize)>),
}

impl Stored {
    /// The checkpoint tensors it reads, with their shapes, given the
    /// tensor's own `shape`.
    pub fn parts(&self, shape: &[usize]) -> Vec<(String, Vec<usize>)> {
        match self {
            Stored::Same(n) => vec![(n.clone(), shape.to_vec())],
            Stored::Linear(parts) => (parts.iter())
                .map(|(n, out)| (n.clone(), vec![*out, shape[0]]))
                .collect(),
            Stored::Concat(parts) => parts
                .iter()
                .map(|(n, len)| (n.clone(), vec![*len]))
                .collect(),
        }
    }
}

/// The `model.` prefix of a Llama-family checkpoint's names (all but the
/// untied `lm_head.weight`).
const LLAMA_MODEL: &str = "model.";

/// How tensor `name` of wgpipe's (a name of [`names`]: a top-level one, or a
/// block tensor `h.{l}.{role}`) is stored in a checkpoint of `cfg`'s family.
/// GPT-2's names are the checkpoint's (the `transformer.` prefix a file may
/// add is the loader's business).
pub fn stored(cfg: &Gpt2Config, name: &str) -> Stored {
    if cfg.is_gpt2() {
        return Stored::Same(name.to_string());
    }
    let m = LLAMA_MODEL;
    match name {
        names::WTE => return Stored::Same(format!("{m}embed_tokens.weight")),
        names::LN_F_WEIGHT => return Stored::Same(format!("{m}norm.weight")),
        names::LM_HEAD => return Stored::Same(names::LM_HEAD.to_string()),
        _ => {}
    }
    let Some(l) = names::block_index(name) else {
        return Stored::Same(format!("{m}{name}"));
    };
    let role = name
        .strip_prefix(&format!("{}.", names::block(l)))
        .unwrap_or(name);
    let layer = |t: &str| format!("{m}layers.{l}.{t}");
    let (c, f) = (cfg.n_embd, cfg.n_inner);
    let (q, kv) = (cfg.q_width(), cfg.kv_width());
    let linear = |parts: &[(&str, usize)]| {
        Stored::Linear(parts.iter().map(|(t, o)| (layer(t), *o)).collect())
    };
    match role {
        "self_attn.qkv_proj.weight" => linear(&[
            ("self_attn.q_proj.weight", q),
            ("self_attn.k_proj.weight", kv),
            ("self_attn.v_proj.weight", kv),
        ]),
        "self_attn.qkv_proj.bias" => Stored::Concat(vec![
            (layer("self_attn.q_proj.bias"), q),
            (layer("self_attn.k_proj.bias"), kv),
            (layer("self_attn.v_proj.bias"), kv),
        ]),
        "self_attn.o_proj.weight" => linear(&[("self_attn.o_proj.weight", c)]),
        "mlp.gate_up_proj.weight" => {
            linear(&[("mlp.gate_proj.weight", f), ("mlp.up_proj.weight", f)])
        }
        "mlp.down_proj.weight" => linear(&[("mlp.down_proj.weight", c)]),
        other => Stored::Same(layer(other)),
    }
}

/// The block a checkpoint tensor belongs to (`h.3.…` in GPT-2,
/// `model.layers.3.…` in the Llama family); `None` outside the blocks.
pub fn block_index(cfg: &Gpt2Config, checkpoint_name: &str) -> Option<usize> {
    match cfg.is_gpt2() {
        true => names::block_index(checkpoint_name),
        false => checkpoint_name
            .strip_prefix(LLAMA_MODEL)?
            .strip_prefix("layers.")?
            .split('.')
            .next()?
            .parse()
            .ok(),
    }
}

/// Block `l` as the checkpoint names it: `h.3` in GPT-2, `model.layers.3`
/// in the Llama family.
pub fn block_name(cfg: &Gpt2Config, l: usize) -> String {
    match cfg.is_gpt2() {
        true => names::block(l),
        false => format!("{LLAMA_MODEL}layers.{l}"),
    }
}

/// One of wgpipe's tensors of `shape` from the checkpoint tensors `how`
/// names, each as `read` returns it (in the checkpoint's own layout).
pub fn assemble<E>(
    how: &Stored,
    shape: &[usize],
    mut read: impl FnMut(&str, &[usize]) -> Result<Vec<f32>, E>,
) -> Result<Vec<f32>, E> {
    match how {
        Stored::Same(n) => read(n, shape),
        Stored::Concat(parts) => {
            let mut out = Vec::with_capacity(shape.iter().product());
            for (n, len) in parts {
                out.extend(read(n, &[*len])?);
            }
            Ok(out)
        }
        Stored::Linear(parts) => {
            let (rows, cols) = (shape[0], shape[1]);
            let mut out = vec![0f32; rows * cols];
            let mut col0 = 0;
            for (n, o) in parts {
                let t = read(n, &[*o, rows])?; // [o, in]
                for j in 0..*o {
                    for i in 0..rows {
                        out[i * cols + col0 + j] = t[j * rows + i];
                    }
                }
                col0 += o;
            }
            Ok(out)
        }
    }
}

/// The checkpoint tensors `how` names, with their shapes, cut from `t` (one
/// of wgpipe's tensors of `shape`): the inverse of [`assemble`].
pub fn split(how: &Stored, t: &[f32], shape: &[usize]) -> Vec<(String, Vec<f32>, Vec<usize>)> {
    match how {
        Stored::Same(n) => vec![(n.clone(), t.to_vec(), shape.to_vec())],
        Stored::Concat(parts) => {
            let mut at = 0;
            (parts.iter())
                .map(|(n, len)| {
                    let part = t[at..at + len].to_vec();
                    at += len;
                    (n.clone(), part, vec![*len])
                })
                .collect()
        }
        Stored::Linear(parts) => {
            let (rows, cols) = (shape[0], shape[1]);
            let mut col0 = 0;
            (parts.iter())
                .map(|(n, o)| {
                    let mut part = vec![0f32; o * rows];
                    for j in 0..*o {
                        for i in 0..rows {
                            part[j * rows + i] = t[i * cols + col0 + j];
                        }
                    }
                    col0 += o;
                    (n.clone(), part, vec![*o, rows])
                })
                .collect()
        }
    }
}

/// Every checkpoint tensor of `tensors` (wgpipe's names, as
/// `named_tensors` lists them), split as the family stores them.
pub fn to_checkpoint(
    cfg: &Gpt2Config,
    tensors: &[(String, &Vec<f32>, Vec<usize>)],
) -> Vec<(String, Vec<f32>, Vec<usize>)> {
    tensors
        .iter()
        .flat_map(|(name, t, shape)| split(&stored(cfg, name), t, shape))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Gpt2Weights;

    #[test]
    fn gpt2_is_stored_as_is() {
        let cfg = Gpt2Config::named("tiny").unwrap();
        assert_eq!(
            stored(&cfg, "h.1.attn.c_attn.weight"),
            Stored::Same("h.1.attn.c_attn.weight".into())
        );
        assert_eq!(block_index(&cfg, "h.1.ln_1.weight"), Some(1));
    }

    #[test]
    fn llama_tensors_split_and_assemble_back() {
        let cfg = Gpt2Config::named("tiny-llama").unwrap();
        let w = Gpt2Weights::init(&cfg, 1).unwrap();
        let named = w.named_tensors();
        let parts = to_checkpoint(&cfg, &named);
        let q = parts
            .iter()
            .find(|(n, _, _)| n == "model.layers.1.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!(q.2, vec![cfg.q_width(), cfg.n_embd]);
        assert!(parts
            .iter()
            .any(|(n, _, _)| n == "model.embed_tokens.weight"));
        assert!(parts.iter().any(|(n, _, _)| n == "lm_head.weight"));
        assert_eq!(
            block_index(&cfg, "model.layers.1.mlp.up_proj.weight"),
            Some(1)
        );
        let lookup: std::collections::HashMap<&str, &Vec<f32>> =
            parts.iter().map(|(n, t, _)| (n.as_str(), t)).collect();
        for (name, t, shape) in &named {
            let back = assemble(&stored(&cfg, name), shape, |n, s| {
                let v = lookup[n];
                assert_eq!(v.len(), s.iter().product::<usize>(), "{n}");
                Ok::<_, ()>(v.clone())
            })
            .unwrap();
            assert_eq!(&back, *t, "{name}");
        }
    }
}
