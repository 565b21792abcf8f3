//! A stage's program cut into segments for tensor parallelism: where each
//! [`Segment`] ends ([`Cut`]), which buffer a tensor-parallel group sums
//! there ([`GpuStage::reduced`]), and how a stage is recorded with those
//! sums between its segments ([`GpuStage::encode_in`], through a
//! [`StageEncoder`]).

use super::GpuStage;
use crate::error::{Error, Result};
use crate::kernels::Dispatch;

/// Where one [`Segment`] of a stage's program ends.
///
/// A stage's dispatches are cut where a Megatron-style tensor-parallel stage
/// all-reduces a partial sum ([`GpuStage::reduced`]): after the embedding
/// (each rank embeds its vocabulary range's tokens), and right after each
/// block's attention c_proj matmul and its MLP c_proj matmul have written
/// their (N, C) output into [`GpuStage::partial_sum`], before the residual
/// add that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// After the embedding (a stage that embeds).
    Embedding,
    /// After block `layer`'s attention c_proj matmul.
    AttnProj { layer: usize },
    /// After block `layer`'s MLP c_proj matmul.
    MlpProj { layer: usize },
    /// The end of the stage (its last segment).
    End,
}

/// A run of a stage's dispatches between two [`Cut`]s, in program order.
pub struct Segment {
    /// What follows this segment's last dispatch.
    pub end: Cut,
    pub(super) dispatches: Vec<Dispatch>,
}

impl Segment {
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Record this segment's dispatches into `pass`.
    pub fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            d.encode(pass);
        }
    }
}

/// Where a stage's program is recorded, and how a tensor-parallel stage
/// sums a partial result across its group between two segments.
pub trait StageEncoder {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder;

    /// Sum the first `bytes` of `buf` over every device of the group, in
    /// place, after the work recorded so far; later work sees the sum.
    fn all_reduce(&mut self, buf: &wgpu::Buffer, bytes: u64) -> Result<()>;
}

/// A plain encoder: one device, nothing to sum with.
impl StageEncoder for wgpu::CommandEncoder {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self
    }

    fn all_reduce(&mut self, _buf: &wgpu::Buffer, _bytes: u64) -> Result<()> {
        Err(Error::Other(
            "a tensor-parallel stage was recorded without its group: run it through the executor"
                .into(),
        ))
    }
}

impl GpuStage {
    /// The program, in order, cut where a tensor-parallel all-reduce of a
    /// partial sum would go (see [`Cut`]); the last segment ends at
    /// [`Cut::End`]. Encoding every segment's dispatches in order into one
    /// compute pass is exactly [`GpuStage::encode`]; a later collective can be
    /// inserted between segments instead.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The buffer a tensor-parallel group sums at `cut`, and its bytes:
    /// the residual stream after the embedding, the c_proj output after a
    /// projection; `None` at the end.
    pub fn reduced(&self, cut: Cut) -> Option<(&wgpu::Buffer, u64)> {
        match cut {
            Cut::Embedding => Some((&self.x, self.activation_bytes())),
            Cut::AttnProj { .. } | Cut::MlpProj { .. } => {
                self.proj.as_ref().map(|p| (p, self.activation_bytes()))
            }
            Cut::End => None,
        }
    }

    /// (N, C) buffer the attention and MLP c_proj matmuls write, which holds
    /// the partial sum at each [`Cut::AttnProj`] / [`Cut::MlpProj`]; `None`
    /// for a stage without blocks.
    pub fn partial_sum(&self) -> Option<&wgpu::Buffer> {
        self.proj.as_ref()
    }

    /// Record this stage's forward pass into `enc`: on one device every
    /// segment in one compute pass ([`GpuStage::encode`]); on a rank of a
    /// tensor-parallel group each segment in its own pass with the group's
    /// all-reduce of [`GpuStage::reduced`] at each cut. A rank embeds only
    /// its vocabulary range's tokens, so it clears the residual stream first
    /// and the sum after the embedding is exact; its logits hold its range's
    /// columns and zeros.
    pub fn encode_in(&self, enc: &mut dyn StageEncoder) -> Result<()> {
        if !self.shard.split() {
            self.encode(enc.encoder());
            return Ok(());
        }
        if self.ids.is_some() {
            enc.encoder().clear_buffer(&self.x, 0, None);
        }
        // Likewise the logits: a rank writes its vocabulary range's columns
        // only, and a sum of them (decoding samples from it) must not find
        // the last pass's sum in the others.
        if let Some(logits) = &self.logits {
            enc.encoder().clear_buffer(logits, 0, None);
        }
        for s in &self.segments {
            {
                let mut pass = enc
                    .encoder()
                    .begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some("stage forward segment"),
                        timestamp_writes: None,
                    });
                s.encode(&mut pass);
            }
            if let Some((buf, bytes)) = self.reduced(s.end) {
                enc.all_reduce(buf, bytes)?;
            }
        }
        Ok(())
    }
}
