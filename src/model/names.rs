//! The names of the model's tensors, as wgpipe knows them — GPT-2's Hugging
//! Face names (without the `transformer.` prefix a file may add), which
//! [`super::layout`] maps to each family's checkpoint names: the one place
//! they are written. Loading,
//! saving, the tensor sets, the devices' buffers and the messages about
//! them all take their names from here; a block's own tensors (`ln_1.weight`,
//! `attn.c_attn.weight`, …) are listed once in `weights.rs`'s `block_tensors!`.

/// The token table (V, C), tied to the LM head.
pub const WTE: &str = "wte.weight";
/// The position table (maxT, C).
pub const WPE: &str = "wpe.weight";
/// The final layernorm's gain (C).
pub const LN_F_WEIGHT: &str = "ln_f.weight";
/// The final layernorm's bias (C).
pub const LN_F_BIAS: &str = "ln_f.bias";

/// An untied LM head (V, C), in nn.Linear's layout (like the token table).
pub const LM_HEAD: &str = "lm_head.weight";

/// What every block's names start with, before the block's index.
const BLOCK: &str = "h.";

/// Block `l`, as a group of tensors: `h.3`.
pub fn block(l: usize) -> String {
    format!("{BLOCK}{l}")
}

/// Tensor `name` of block `l` (a name from `Layer::named_tensors`):
/// `h.3.attn.c_attn.weight`.
pub fn block_tensor(l: usize, name: &str) -> String {
    format!("{BLOCK}{l}.{name}")
}

/// The block a tensor belongs to: 3 for `h.3.ln_1.weight`; `None` for a
/// tensor outside the blocks.
pub fn block_index(name: &str) -> Option<usize> {
    name.strip_prefix(BLOCK)?.split('.').next()?.parse().ok()
}

/// The group a top-level tensor belongs to, as messages and labels name
/// it: `wte` for [`WTE`], `ln_f` for [`LN_F_WEIGHT`] and [`LN_F_BIAS`].
pub fn group(name: &str) -> &str {
    name.split_once('.').map_or(name, |(g, _)| g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_round_trip() {
        assert_eq!(block_tensor(3, "ln_1.weight"), "h.3.ln_1.weight");
        assert_eq!(block(3), "h.3");
        assert_eq!(block_index(&block_tensor(12, "mlp.c_fc.bias")), Some(12));
        assert_eq!(block_index(WTE), None);
        assert_eq!(block_index("h.x.ln_1.weight"), None);
        assert_eq!([group(WTE), group(WPE)], ["wte", "wpe"]);
        assert_eq!([group(LN_F_WEIGHT), group(LN_F_BIAS)], ["ln_f", "ln_f"]);
    }
}
