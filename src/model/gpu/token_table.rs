//! The token table on a device: (V, C) stored transposed, (C, len), and
//! split into vocabulary chunks that each fit the adapter's binding limit —
//! the layout the embedding gathers from and the tied LM head multiplies
//! with (a tensor-parallel rank holds the chunks of its vocabulary range).

use crate::device::{upload_as, Dtype, Gpu};
use crate::error::Result;
use crate::model::Gpt2Config;

/// The vocabulary (or the `range` of it a tensor-parallel rank holds; all of
/// it: `0..cfg.padded_vocab()`) split into chunks whose transposed table
/// (C, len) fits one binding: `(v0, padded_len)` pairs; every length is a
/// multiple of 4 (`range` starts at a multiple of 4).
pub(crate) fn vocab_chunks(
    gpu: &Gpu,
    cfg: &Gpt2Config,
    range: std::ops::Range<usize>,
) -> Result<Vec<(usize, usize)>> {
    let c = cfg.n_embd;
    let limit = gpu.max_binding().min(gpu.limits.max_buffer_size);
    let per_chunk = ((limit / (4 * c as u64)) as usize) / 4 * 4;
    if per_chunk == 0 {
        return gpu
            .check_binding("wte (one column of the token table)", 16 * c as u64)
            .map(|_| Vec::new());
    }
    let end = range.end;
    Ok(range
        .step_by(per_chunk)
        .map(|v0| (v0, per_chunk.min(end - v0)))
        .collect())
}

/// The token table (V, C) as chunks `(v0, len)`, each transposed (C, len)
/// and zero-padded past V: the layout the embedding gathers from and the tied
/// LM head multiplies with.
pub(crate) fn token_table_chunks(
    cfg: &Gpt2Config,
    wte: &[f32],
    chunks: &[(usize, usize)],
) -> Vec<Vec<f32>> {
    let (c, v) = (cfg.n_embd, cfg.vocab_size);
    chunks
        .iter()
        .map(|&(v0, len)| {
            let mut t = vec![0f32; c * len];
            for v in v0..(v0 + len).min(v) {
                for ch in 0..c {
                    t[ch * len + (v - v0)] = wte[v * c + ch];
                }
            }
            t
        })
        .collect()
}

/// [`token_table_chunks`] of a (V, C) table (the token table, or an untied
/// LM head's, named `what`) uploaded as `dtype`, one buffer per chunk.
pub(crate) fn upload_token_table(
    gpu: &Gpu,
    cfg: &Gpt2Config,
    table: &[f32],
    chunks: &[(usize, usize)],
    what: &str,
    dtype: Dtype,
) -> Vec<wgpu::Buffer> {
    token_table_chunks(cfg, table, chunks)
        .iter()
        .zip(chunks)
        .map(|(t, (v0, _))| upload_as(gpu, &format!("{what} transposed [{v0}..]"), t, dtype))
        .collect()
}

/// The inverse of [`token_table_chunks`]: the (V, C) table from its
/// transposed chunks (padding dropped).
pub(crate) fn untranspose_token_table(
    cfg: &Gpt2Config,
    chunks: &[(usize, usize)],
    data: &[Vec<f32>],
) -> Vec<f32> {
    let (c, v) = (cfg.n_embd, cfg.vocab_size);
    let mut wte = vec![0f32; v * c];
    for (&(v0, len), t) in chunks.iter().zip(data) {
        for v in v0..(v0 + len).min(v) {
            for ch in 0..c {
                wte[v * c + ch] = t[ch * len + (v - v0)];
            }
        }
    }
    wte
}
