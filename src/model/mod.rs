pub mod checkpoint;
pub mod config;
pub mod weights;

pub use config::Gpt2Config;
pub use weights::{Gpt2Weights, LayerWeights, StagePart, StageWeights};
pub mod gpu;
pub mod train;
