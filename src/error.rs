//! The library's error type. Every variant names what is wrong (file, tensor,
//! shape, limit, device) so that the CLI can print it as-is and exit non-zero.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: malformed JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("{path}: malformed safetensors file: {msg}")]
    Safetensors { path: PathBuf, msg: String },

    #[error("{path}: tensor `{name}` is missing (the file has: {available})")]
    MissingTensor {
        path: PathBuf,
        name: String,
        available: String,
    },

    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    TensorShape {
        path: PathBuf,
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{path}: tensor `{name}` has dtype {found}, expected {expected}")]
    TensorDtype {
        path: PathBuf,
        name: String,
        expected: String,
        found: String,
    },

    #[error("invalid model config: {0}")]
    Config(String),

    #[error("invalid input: {0}")]
    Input(String),

    #[error(
        "no wgpu adapter found{detail}. On Debian/Ubuntu install Mesa's software Vulkan driver: \
         `apt-get install -y mesa-vulkan-drivers` (lavapipe); GL's llvmpipe comes with libegl-mesa0"
    )]
    NoAdapter { detail: String },

    #[error(
        "adapter `{selector}` not found; this machine has: {have} (`wgpipe adapters` lists them)"
    )]
    AdapterNotFound { selector: String, have: String },

    #[error("{adapter}: tensor `{tensor}` needs {bytes} bytes in one binding, above this adapter's max_storage_buffer_binding_size of {limit} bytes")]
    BindingLimit {
        adapter: String,
        tensor: String,
        bytes: u64,
        limit: u64,
    },

    #[error("{device}: wgpu error: {msg}")]
    Device { device: String, msg: String },

    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),

    #[error("pipeline failed on {device} (stage {stage}, action {action}): {msg}")]
    Pipeline {
        device: String,
        stage: String,
        action: String,
        msg: String,
    },

    /// A NaN or infinity in the loss or a gradient: which step, stage and
    /// tensor. The step was not applied.
    #[error("{0}")]
    NonFinite(String),

    /// The run was stopped by [`crate::interrupt::request`] (Ctrl-C in the CLI).
    #[error("interrupted")]
    Interrupted,

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
