//! wgpipe: microbatched pipeline-parallel transformer inference across wgpu
//! devices, with the pipeline bubble measured on real timelines.
//!
//! Layers, bottom to top:
//! - [`device`]: adapters, one wgpu Device + Queue per pipeline stage, limits, timestamps.
//! - [`kernels`]: one WGSL shader per op (see `shaders/`) and one Rust dispatch function each;
//!   [`cpu`] is the plain CPU reference twin of every op.
//! - [`model`]: GPT-2 config, weights (seeded init or Hugging Face checkpoint), forward.
//! - [`sampling`]: next-token settings (temperature, top-k, top-p), seeded uniforms, and the CPU
//!   reference of the device sampler ([`kernels::sample`]).
//! - [`schedule`]: pipeline schedules as pure data: generate, validate, simulate, export.
//! - [`executor`]: runs schedule data across devices.
//! - [`trace`]: timelines, bubble statistics, Chrome trace, SVG.
//! - [`tokenizer`]: text <-> token ids from a checkpoint's Hugging Face `tokenizer.json`.
//!
//! [`action`] (what a pipeline does) and [`timing`] (actions placed in time,
//! the bubble formula) are leaves that `schedule`, `executor` and `trace` share.

pub mod action;
pub mod bench;
pub mod cli;
pub mod cpu;
pub mod data;
pub mod device;
pub mod error;
pub mod executor;
pub mod io;
pub mod kernels;
pub mod microbatch;
pub mod model;
pub mod sampling;
pub mod schedule;
pub mod timing;
pub mod tokenizer;
pub mod trace;

pub use error::{Error, Result};
