//! Workloads: what the executor runs. Each is a
//! [`StageProgram`](crate::executor::StageProgram) — what one device computes
//! per action — with the entry point that runs it across devices:
//! - [`forward`]: GPT-2 inference, `F` actions ([`forward::run_inference`]);
//! - [`train`]: every schedule's `F`, `B`, `I`, `W` with the optimizer on
//!   the devices ([`train::Trainer`]);
//! - [`decode`]: prefill and KV-cache decode as a schedule
//!   ([`decode::generate`]);
//! - [`profile`]: each layer kind timed on each device, for `--split auto`.
//!
//! Workloads use the executor (`crate::executor`) and the model; the
//! executor knows none of them.

pub mod decode;
pub mod forward;
pub mod profile;
pub mod resident;
pub mod train;

use crate::error::Result;
use crate::executor::{uniform_tp, DeviceGroup};
use crate::model::Gpt2Config;

/// Tensor-parallel groups must all be of one size that splits the model
/// (heads, MLP width, vocabulary).
pub fn check_groups(cfg: &Gpt2Config, groups: &[DeviceGroup]) -> Result<()> {
    crate::model::shard::check_degree(cfg, uniform_tp(groups)?)
}
