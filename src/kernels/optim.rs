//! The optimizer's dispatch functions, in-place updates of one tensor, and
//! the gradient's sum of squares (for clipping by the global norm); twins
//! in [`crate::cpu::optim`].

use bytemuck::{Pod, Zeroable};

use super::{dispatch, grid_1d, Dispatch, MAX_GROUPS};
use crate::device::Gpu;

/// The hyperparameters of [`adamw_update`], as its shader reads them: one
/// step of `torch.optim.AdamW`. `len` and `stride` are fixed when the
/// dispatch is built; the caller writes the rest before each step with
/// [`Dispatch::set_params`] / [`Dispatch::update_params`] (keeping `len` and
/// `stride`, e.g. `update_params(q, |h: &mut AdamWParams| { h.lr = lr; ... })`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamWParams {
    /// Elements in the tensor (fixed at build).
    pub len: u32,
    /// Invocations per row of the dispatch grid (fixed at build).
    pub stride: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay: param *= 1 - lr * weight_decay.
    pub weight_decay: f32,
    /// 1 - beta1^step (step counts from 1), computed in f64.
    pub bias_correction1: f32,
    /// 1 - beta2^step, computed in f64.
    pub bias_correction2: f32,
    /// Multiplies every gradient first: the gradient-clipping factor, else 1.
    pub grad_scale: f32,
}

impl AdamWParams {
    /// The bias corrections (1 - beta1^step, 1 - beta2^step) of step `step`
    /// (counted from 1), computed in f64 from the f64 betas as torch does,
    /// then rounded to f32.
    pub fn bias_corrections(beta1: f64, beta2: f64, step: u64) -> (f32, f32) {
        let t = step as f64;
        ((1.0 - beta1.powf(t)) as f32, (1.0 - beta2.powf(t)) as f32)
    }
}

/// One AdamW step on a tensor of `len` elements, in place: params, m, v
/// updated from grads with the hyperparameters of [`AdamWParams`]. Built with
/// lr 0, weight decay 0, torch's default betas and eps, bias corrections 1
/// and grad_scale 1: set the real values before every step.
pub fn adamw_update(
    gpu: &Gpu,
    params: &wgpu::Buffer, // (len)
    grads: &wgpu::Buffer,  // (len)
    m: &wgpu::Buffer,      // (len) first moment, starts at zero
    v: &wgpu::Buffer,      // (len) second moment, starts at zero
    len: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = AdamWParams {
        len: len as u32,
        stride,
        lr: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        bias_correction1: 1.0,
        bias_correction2: 1.0,
        grad_scale: 1.0,
    };
    dispatch(gpu, "adamw_update", &[params, m, v, grads], &p, groups)
}

/// The hyperparameters of [`sgd_update`], as its shader reads them: one step
/// of `torch.optim.SGD` with dampening 0 and no Nesterov. `len` and `stride`
/// are fixed at build; the caller writes the rest before each step.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SgdParams {
    /// Elements in the tensor (fixed at build).
    pub len: u32,
    /// Invocations per row of the dispatch grid (fixed at build).
    pub stride: u32,
    pub lr: f32,
    /// 0: plain SGD, the momentum buffer is neither read nor written.
    pub momentum: f32,
    /// L2 penalty added to the gradient: g += weight_decay * param.
    pub weight_decay: f32,
    /// Multiplies every gradient first: the gradient-clipping factor, else 1.
    pub grad_scale: f32,
}

/// One SGD step on a tensor of `len` elements, in place: params and the
/// momentum buffer (starts at zero) updated from grads with the
/// hyperparameters of [`SgdParams`]. Built with lr 0, momentum 0, weight
/// decay 0 and grad_scale 1: set the real values before every step.
pub fn sgd_update(
    gpu: &Gpu,
    params: &wgpu::Buffer,       // (len)
    grads: &wgpu::Buffer,        // (len)
    momentum_buf: &wgpu::Buffer, // (len)
    len: usize,
) -> Dispatch {
    let (groups, stride) = grid_1d(len);
    let p = SgdParams {
        len: len as u32,
        stride,
        lr: 0.0,
        momentum: 0.0,
        weight_decay: 0.0,
        grad_scale: 1.0,
    };
    dispatch(
        gpu,
        "sgd_update",
        &[params, momentum_buf, grads],
        &p,
        groups,
    )
}

/// Elements of `inp` one workgroup of [`sumsq_partials`] reduces.
const SUMSQ_SLICE: usize = 4096;

/// How many f32 partial sums [`sumsq_partials`] writes for `len` elements
/// (at least 1): the size of its `partials` buffer.
pub fn sumsq_partials_len(len: usize) -> usize {
    len.div_ceil(SUMSQ_SLICE).max(1)
}

/// partials[k] = sum of inp[i]^2 over the k-th slice of 4096 elements of
/// inp (len), for k < [`sumsq_partials_len`]`(len)`; the host adds the
/// partials in f64 (for the global gradient norm).
pub fn sumsq_partials(
    gpu: &Gpu,
    partials: &wgpu::Buffer, // (sumsq_partials_len(len))
    inp: &wgpu::Buffer,      // (len)
    len: usize,
) -> Dispatch {
    #[repr(C)]
    #[derive(Clone, Copy, Pod, Zeroable)]
    struct P {
        len: u32,
        groups_x: u32,
        npartials: u32,
    }
    let npartials = sumsq_partials_len(len) as u32;
    let x = npartials.min(MAX_GROUPS);
    let p = P {
        len: len as u32,
        groups_x: x,
        npartials,
    };
    dispatch(
        gpu,
        "sumsq",
        &[partials, inp],
        &p,
        [x, npartials.div_ceil(x), 1],
    )
}
