//! The optimizer's dispatch functions, in-place updates of one tensor, and
//! the gradient's sum of squares (for clipping by the global norm); twins
//! in [`crate::cpu::optim`]. Both sides take a step's settings as the model
//! states them ([`crate::model::optim`]); the parameters here put before them
//! what only the device needs.

use bytemuck::{Pod, Zeroable};

use super::{dispatch, grid_1d, Dispatch, MAX_GROUPS};
use crate::device::Gpu;
use crate::model::optim::{AdamWStep, SgdStep};

/// The parameters of [`adamw_update`], as its shader reads them: the tensor's
/// `len` and the grid's `stride`, fixed when the dispatch is built, then the
/// step's settings, which the caller writes before each step:
/// `update_params(q, |p: &mut AdamWParams| p.step = step)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct AdamWParams {
    /// Elements in the tensor (fixed at build).
    pub len: u32,
    /// Invocations per row of the dispatch grid (fixed at build).
    pub stride: u32,
    pub step: AdamWStep,
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
        step: AdamWStep {
            lr: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            bias_correction1: 1.0,
            bias_correction2: 1.0,
            grad_scale: 1.0,
        },
    };
    dispatch(gpu, "adamw_update", &[params, m, v, grads], &p, groups)
}

/// The parameters of [`sgd_update`], as its shader reads them: `len` and
/// `stride`, fixed at build, then the step's settings (as [`AdamWParams`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct SgdParams {
    /// Elements in the tensor (fixed at build).
    pub len: u32,
    /// Invocations per row of the dispatch grid (fixed at build).
    pub stride: u32,
    pub step: SgdStep,
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
        step: SgdStep {
            lr: 0.0,
            momentum: 0.0,
            weight_decay: 0.0,
            grad_scale: 1.0,
        },
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
