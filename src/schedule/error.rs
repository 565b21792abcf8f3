//! Everything that can go wrong with a schedule, in sentences.

use std::path::PathBuf;

use crate::schedule::{grid, Schedule, ScheduleKind};

/// Errors from generating, parsing, validating or simulating a schedule.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("a schedule needs at least one {what} (got {flag} 0)")]
    Zero {
        what: &'static str,
        flag: &'static str,
    },

    #[error("unknown schedule \"{name}\"; choose one of {}", ScheduleKind::names())]
    UnknownSchedule { name: String },

    #[error(
        "{schedule} holds one stage per device, but --virtual {virtual_stages} asks for {virtual_stages} chunks per device; \
         use --schedule interleaved --virtual {virtual_stages}, or --virtual 1"
    )]
    NeedsOneChunk {
        schedule: ScheduleKind,
        virtual_stages: usize,
    },

    #[error(
        "interleaved 1F1B needs the microbatch count to be a multiple of the device count (M={microbatches}, P={devices}); \
         try --microbatches {suggestion}, or --forward-only"
    )]
    MicrobatchesNotMultiple {
        microbatches: usize,
        devices: usize,
        suggestion: usize,
    },

    #[error(
        "{schedule} orders forwards against backwards, so it has no forward-only form; \
         for inference use --schedule gpipe --forward-only, or --schedule interleaved --forward-only for several chunks per device"
    )]
    NoForwardOnly { schedule: ScheduleKind },

    #[error(transparent)]
    BadAction(#[from] crate::action::ParseActionError),

    #[error("{path}: line {line}, cell {cell}: {source}")]
    CsvCell {
        path: String,
        line: usize,
        cell: usize,
        source: Box<ScheduleError>,
    },

    #[error("{path}: {reason}")]
    CsvFormat { path: String, reason: String },

    #[error("the schedule is invalid: {problem}\n{grid}")]
    Invalid { problem: String, grid: String },

    #[error("the schedule deadlocks: no device can go on.\n{waits}\n{grid}")]
    Deadlock { waits: String, grid: String },

    #[error("the {what} costs list {got} stages, but the schedule has {stages}")]
    CostsMismatch {
        what: &'static str,
        got: usize,
        stages: usize,
    },

    #[error("could not {op} {path}: {source}", path = path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path} is a directory; name a file to write instead", path = path.display())]
    OutputIsDirectory { path: PathBuf },
}

impl ScheduleError {
    /// `problem` with the grid of `s`, the cells `marks` (device, step) marked.
    pub(crate) fn invalid(
        s: &Schedule,
        problem: String,
        marks: &[(usize, usize)],
    ) -> ScheduleError {
        ScheduleError::Invalid {
            problem,
            grid: grid::render(s, marks),
        }
    }
}
