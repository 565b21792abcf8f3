//! One optimizer step's settings, at the model's level: what the devices'
//! update kernels (`kernels::adamw_update`, `kernels::sgd_update`, which
//! build their uniform structs from these) and their CPU twins
//! (`cpu::optim`) both take. They follow PyTorch (`torch.optim.AdamW`,
//! `torch.optim.SGD` with dampening 0 and no Nesterov), in f32. The step
//! structs are laid out (`repr(C)`, `Pod`) as the update shaders read them
//! after the tensor's length and the grid's stride, so the kernels' uniforms
//! hold them as they are.

use bytemuck::{Pod, Zeroable};

/// The hyperparameters of one step of `torch.optim.AdamW`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay: param *= 1 - lr * weight_decay.
    pub weight_decay: f32,
    /// 1 - beta1^step (step counts from 1), computed in f64 ([`bias_corrections`]).
    pub bias_correction1: f32,
    /// 1 - beta2^step, computed in f64.
    pub bias_correction2: f32,
    /// Multiplies every gradient first: the gradient-clipping factor, else 1.
    pub grad_scale: f32,
}

/// The hyperparameters of one step of `torch.optim.SGD` (dampening 0, no
/// Nesterov).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SgdStep {
    pub lr: f32,
    /// 0: plain SGD, the momentum buffer is neither read nor written.
    pub momentum: f32,
    /// L2 penalty added to the gradient: g += weight_decay * param.
    pub weight_decay: f32,
    /// Multiplies every gradient first: the gradient-clipping factor, else 1.
    pub grad_scale: f32,
}

/// The bias corrections (1 - beta1^step, 1 - beta2^step) of AdamW step
/// `step` (counted from 1), computed in f64 from the f64 betas as torch does,
/// then rounded to f32.
pub fn bias_corrections(beta1: f64, beta2: f64, step: u64) -> (f32, f32) {
    let t = step as f64;
    ((1.0 - beta1.powf(t)) as f32, (1.0 - beta2.powf(t)) as f32)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptimizerKind {
    AdamW,
    Sgd,
}

/// One optimizer step's hyperparameters, for every parameter of a model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerStep {
    AdamW(AdamWStep),
    Sgd(SgdStep),
}

impl OptimizerStep {
    pub fn kind(&self) -> OptimizerKind {
        match self {
            OptimizerStep::AdamW(_) => OptimizerKind::AdamW,
            OptimizerStep::Sgd(_) => OptimizerKind::Sgd,
        }
    }
}
