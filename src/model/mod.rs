//! The model — GPT-2 or a Llama-family decoder — its facts, then the model
//! on devices.
//!
//! Facts, shared by the devices and the CPU reference ([`crate::cpu`]):
//! [`config`] (the shape and the architecture), [`names`] (the tensors'
//! names), [`layout`] (how each family's checkpoint stores them),
//! [`weights`] (the parameters in host memory, the tensor sets a stage
//! holds), [`grads`] (gradients in the same layout, next-token targets),
//! [`optim`] (one optimizer step's settings), the seeded RNG (`rng.rs`), and
//! [`checkpoint`] (safetensors in, out).
//!
//! Placement: [`partition`] (which layers each pipeline stage holds) and
//! [`shard`] (each tensor-parallel rank's part of a block).
//!
//! On a device: [`gpu`] (a stage's forward as a list of kernel dispatches,
//! its weights and KV cache) and [`train`] (a stage's training actions and
//! optimizer step).

pub mod block;
pub mod checkpoint;
pub mod config;
pub mod grads;
pub mod layout;
pub mod names;
pub mod optim;
pub(crate) mod rng;
pub mod weights;

pub mod partition;
pub mod shard;

pub mod gpu;
pub mod train;

pub use config::Gpt2Config;
pub use shard::Shard;
pub use weights::{
    Gpt2Weights, LayerWeights, PartialWeights, StagePart, StageSource, StageWeights, TensorSet,
};
