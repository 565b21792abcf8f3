pub mod checkpoint;
pub mod config;
pub mod grads;
pub mod names;
pub mod optim;
pub mod partition;
pub(crate) mod rng;
pub mod weights;

pub use config::Gpt2Config;
pub use shard::Shard;
pub use weights::{
    Gpt2Weights, LayerWeights, PartialWeights, StagePart, StageSource, StageWeights, TensorSet,
};
pub mod gpu;
pub mod shard;
pub mod train;
