//! wgpipe: transformer models as microbatched pipelines across wgpu devices
//! — inference, training and decoding — with the pipeline bubble measured on
//! real timelines.
//!
//! Start with [`Pipeline`]: built once (devices opened, the layers split
//! across them, every stage's weights uploaded and kept resident), then
//! called as often as you like — [`Pipeline::forward`],
//! [`Pipeline::generate`] (and [`Pipeline::generate_streaming`]),
//! [`Pipeline::trainer`], [`Pipeline::compare`] — each returning a typed
//! report. A forward of the seeded `tiny` model on the default adapter:
//!
//! ```
//! use wgpipe::{ModelSource, Pipeline, PipelineConfig, Split};
//!
//! let pipeline = Pipeline::new(PipelineConfig {
//!     split: Split::Even,
//!     ..PipelineConfig::new(ModelSource::Preset { name: "tiny".into(), seed: 0 })
//! })?;
//! let vocab = pipeline.config().vocab_size;
//! let tokens = wgpipe::io::random_input_ids(2, 8, vocab, 0);
//! let report = pipeline.forward(&tokens)?;
//! assert_eq!(report.logits.len(), 2 * 8 * vocab);
//! println!("{}", report.measurement);
//! # Ok::<(), wgpipe::Error>(())
//! ```
//!
//! The benchmarks are library calls too ([`bench`]: the bubble sweep,
//! pipelined decode, every TP × PP layout, one hop).
//!
//! Layers, bottom to top (each imports only those below it):
//! - [`action`] (what a pipeline does) and [`timing`] (actions placed in
//!   time, the bubble formula, the median): leaves.
//! - [`schedule`]: pipeline schedules as pure data: generate, validate,
//!   simulate, export; [`trace`]: timelines, bubble statistics, Chrome
//!   trace, SVG.
//! - [`device`]: adapters, one wgpu Device + Queue per Gpu, limits, timestamps.
//! - The model's plain facts ([`model::config`], [`model::names`],
//!   [`model::optim`], [`model::grads`], …): leaves that the kernels, the
//!   CPU reference and the rest of the model all read.
//! - [`kernels`]: one WGSL shader per op (see `shaders/`) and one Rust
//!   dispatch function each; [`cpu`] is the plain CPU reference twin of
//!   every op.
//! - [`model`]: GPT-2's config, weights, checkpoints, its stages on a device,
//!   its partition into stages and shards.
//! - [`executor`]: runs schedule data across devices — plan, one worker
//!   thread per Gpu, transports (in-process, MPI), the [`Cluster`] a run
//!   spans.
//! - [`workload`]: what the executor runs — inference, training, decoding,
//!   the layer profile — each a program per device.
//! - [`analysis`]: the measured bubble beside simulated and analytic, where
//!   the speedup goes, the controls, serving metrics, the split chooser.
//! - [`pipeline`]: the [`Pipeline`] API; [`bench`]: the benchmarks.
//!
//! Beside them: [`io`] (token and logits files), [`data`] (token streams),
//! [`interrupt`] (stopping a run from outside, Ctrl-C in the CLI),
//! [`microbatch`], [`sampling`], [`tokenizer`], [`rope`] (RoPE's
//! frequencies as transformers computes them).

pub mod action;
pub mod analysis;
pub mod bench;
pub mod cpu;
pub mod data;
pub mod device;
pub mod error;
pub mod executor;
pub mod interrupt;
pub mod io;
pub mod kernels;
pub mod microbatch;
pub mod model;
pub mod pipeline;
pub mod rope;
pub mod sampling;
pub mod schedule;
pub mod serve;
pub mod timing;
pub mod tokenizer;
pub mod trace;
pub mod workload;

pub use error::{Error, Result};
pub use executor::Cluster;
pub use io::TokenBatch;
pub use model::partition::Split;
pub use model::Gpt2Config;
pub use pipeline::{
    Compare, ForwardReport, GenerateOptions, Generation, ModelSource, Pipeline, PipelineConfig,
    Prompt, StepReport, TrainConfig, Trainer, Workload,
};
pub use sampling::SampleSettings;
pub use schedule::ScheduleKind;
pub use workload::train::Optimizer;
