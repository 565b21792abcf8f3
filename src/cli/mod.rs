//! Command-line front ends. Each subcommand lives in its own file.

pub mod adapters;
pub mod bench;
pub mod bench_decode;
pub mod bench_hop;
pub mod bench_layouts;
pub mod forward;
pub mod generate;
pub mod model_args;
pub mod plan;
pub mod run;
pub mod train;
