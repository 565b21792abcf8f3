//! What the runs mean: the measured bubble beside the simulated and analytic
//! one ([`measure`]), where the speedup goes ([`accounting`]) against the
//! solo and co-run controls ([`corun`]), the serving metrics of a
//! generation ([`serving`]), and the `--split auto` chooser ([`split`]: a
//! pure search over a measured profile).
//!
//! Analysis reads the executor's timelines and runs workloads (the controls,
//! the profile); neither knows it.

pub mod accounting;
pub mod corun;
pub mod measure;
pub mod serving;
pub mod split;
