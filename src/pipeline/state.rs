//! A training run's state on disk, so that a stopped run can go on
//! ([`super::Trainer::save_state`], [`super::Trainer::resume`]).
//!
//! A state is a directory that is also a checkpoint transformers loads:
//! - `config.json`, `model.safetensors`: the weights, as `save_pretrained`
//!   writes them;
//! - the optimizer's moments in the same layout and under the same tensor
//!   names, one file per moment, named after PyTorch's optimizer state:
//!   `optimizer.exp_avg.safetensors` and `optimizer.exp_avg_sq.safetensors`
//!   (AdamW's m and v), or `optimizer.momentum_buffer.safetensors` (SGD);
//! - `train_state.json` ([`TrainState`]): the optimizer steps taken, the
//!   optimizer and its hyperparameters, the batch shape, where the data
//!   stream is, the layout it ran on, and a checksum of every other file
//!   and of itself.
//!
//! Everything is saved per tensor, not per device, so a run may resume on
//! another layout (devices, split, schedule). The directory is written
//! beside its place and moved in whole ([`write_state_dir`]): a failure or
//! an interrupt leaves the previous state, never a mix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::BatchesState;
use crate::error::{Error, Result};
use crate::model::checkpoint::PREFIX;
use crate::model::grads::Gpt2Grads;
use crate::model::names;
use crate::model::optim::OptimizerKind;
use crate::model::weights::LayerWeights;
use crate::model::Gpt2Config;
use crate::workload::train::Optimizer;

/// The state file in a state directory.
pub const STATE_FILE: &str = "train_state.json";
/// The state format this wgpipe writes and reads.
pub const FORMAT: u32 = 1;

/// What `train_state.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// [`FORMAT`] when written.
    pub format: u32,
    /// Optimizer steps taken: the run goes on with step `step + 1`.
    pub step: u64,
    pub optimizer: Optimizer,
    pub grad_clip: Option<f64>,
    /// Sequences per step and tokens per sequence.
    pub batch: usize,
    pub seq: usize,
    /// The training data and where it is.
    pub data: BatchesState,
    /// What the run ran on (a resumed run may change it).
    pub layout: Layout,
    /// Checksum ([`crate::io::checksum`]) of every other file, by name.
    pub files: BTreeMap<String, String>,
    /// Checksum of this JSON written with `checksum` empty.
    pub checksum: String,
}

/// The layout a state was saved from: for the record, not a constraint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub schedule: String,
    pub devices: usize,
    pub microbatches: usize,
    pub virtual_stages: usize,
    pub split: Vec<usize>,
    pub recompute: bool,
}

/// The moment files of `kind`, in [`crate::model::train::Which::Moment`]
/// order.
pub fn moment_files(kind: OptimizerKind) -> &'static [&'static str] {
    match kind {
        OptimizerKind::AdamW => &[
            "optimizer.exp_avg.safetensors",
            "optimizer.exp_avg_sq.safetensors",
        ],
        OptimizerKind::Sgd => &["optimizer.momentum_buffer.safetensors"],
    }
}

impl TrainState {
    /// This state's checksum (of its JSON with `checksum` empty).
    fn own_checksum(&self) -> Result<String> {
        let bare = TrainState {
            checksum: String::new(),
            ..self.clone()
        };
        let bytes = serde_json::to_vec(&bare)
            .map_err(|e| Error::Other(format!("the training state does not serialise: {e}")))?;
        Ok(crate::io::checksum(&bytes))
    }

    /// Read `dir`'s state and check it whole: the format, its own checksum,
    /// and every file it lists against its checksum. A missing, cut or
    /// changed file is refused, naming it.
    pub fn read(dir: &Path) -> Result<TrainState> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Input(format!(
                "{}: not a training state (no {STATE_FILE}); one is written by `train --save DIR`",
                dir.display()
            )),
            _ => Error::io(&path, e),
        })?;
        let state: TrainState = serde_json::from_slice(&text).map_err(|e| {
            Error::Input(format!(
                "{}: corrupt training state, refusing to resume: {e}",
                path.display()
            ))
        })?;
        if state.format != FORMAT {
            return Err(Error::Input(format!(
                "{}: training state format {}; this wgpipe reads format {FORMAT}",
                path.display(),
                state.format
            )));
        }
        if state.own_checksum()? != state.checksum {
            return Err(Error::Input(format!(
                "{}: corrupt training state (its checksum does not match), refusing to resume",
                path.display()
            )));
        }
        for (name, sum) in &state.files {
            let p = dir.join(name);
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            let found = crate::io::checksum(&bytes);
            if &found != sum {
                return Err(Error::Input(format!(
                    "{}: corrupt (checksum {found}, the training state says {sum}), refusing to resume",
                    p.display()
                )));
            }
        }
        Ok(state)
    }

    /// Refuse to resume this state with settings it cannot continue under:
    /// another optimizer or hyperparameters, clipping, or batch shape.
    pub fn check_compatible(
        &self,
        optimizer: &Optimizer,
        grad_clip: Option<f64>,
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        let differs = |what: &str, saved: String, now: String| {
            Err(Error::Input(format!(
                "the run was saved with {what} {saved}; this run has {now}: resume with the same settings"
            )))
        };
        if &self.optimizer != optimizer {
            return differs(
                "optimizer",
                format!("{:?}", self.optimizer),
                format!("{optimizer:?}"),
            );
        }
        if self.grad_clip != grad_clip {
            return differs(
                "grad clip",
                format!("{:?}", self.grad_clip),
                format!("{grad_clip:?}"),
            );
        }
        if (self.batch, self.seq) != (batch, seq) {
            return differs(
                "batches of",
                format!("{}x{} tokens", self.batch, self.seq),
                format!("{batch}x{seq}"),
            );
        }
        Ok(())
    }
}

/// Write the state: `fill` writes the weights and moments into a fresh
/// directory beside `dir`; `state` then gets their checksums and its own and
/// is written last; then the directory takes `dir`'s place whole.
pub(super) fn write_state(
    dir: &Path,
    mut state: TrainState,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    write_state_dir(dir, |tmp| {
        fill(tmp)?;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(tmp).map_err(|e| Error::io(tmp, e))? {
            let entry = entry.map_err(|e| Error::io(tmp, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            files.insert(name, crate::io::checksum(&bytes));
        }
        state.files = files;
        state.checksum = state.own_checksum()?;
        let text = serde_json::to_string_pretty(&state)
            .map_err(|e| Error::Other(format!("the training state does not serialise: {e}")))?;
        let path = tmp.join(STATE_FILE);
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    })
}

/// Replace `dir` — missing, empty, or a training state written before —
/// with a directory `fill` writes beside it, in one step where the system
/// allows (Linux: `renameat2(RENAME_EXCHANGE)`), so `dir` always holds
/// either the old state or the new one. Anything else at `dir` is refused.
fn write_state_dir(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let previous = dir.exists();
    if previous && !dir.join(STATE_FILE).is_file() {
        super::check_save_dir(dir)?;
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".wgpipe-save.")
        .tempdir_in(parent)
        .map_err(|e| Error::io(parent, e))?;
    fill(tmp.path())?;
    let empty = previous
        && std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .next()
            .is_none();
    if !previous || empty {
        // rename(2) replaces an empty directory.
        return std::fs::rename(tmp.path(), dir).map_err(|e| Error::io(dir, e));
    }
    let old = exchange(tmp.path(), dir)?;
    std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))
}

/// Swap the directories `new` and `dir`; returns where the old `dir` is now.
#[cfg(target_os = "linux")]
fn exchange(new: &Path, dir: &Path) -> Result<PathBuf> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::Input(format!("{}: a path with a NUL byte", p.display())))
    };
    let (a, b) = (c(new)?, c(dir)?);
    // SAFETY: two valid NUL-terminated paths, relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    match r {
        0 => Ok(new.to_path_buf()),
        _ => Err(Error::io(dir, std::io::Error::last_os_error())),
    }
}

/// Elsewhere: move `dir` aside, `new` in, and hand back the old one.
#[cfg(not(target_os = "linux"))]
fn exchange(new: &Path, dir: &Path) -> Result<PathBuf> {
    let mut aside = new.as_os_str().to_owned();
    aside.push(".old");
    let aside = PathBuf::from(aside);
    std::fs::rename(dir, &aside).map_err(|e| Error::io(dir, e))?;
    std::fs::rename(new, dir).map_err(|e| Error::io(dir, e))?;
    Ok(aside)
}

/// Write one moment set under the checkpoint's names.
pub(super) fn write_moments(path: &Path, cfg: &Gpt2Config, m: &Gpt2Grads) -> Result<()> {
    crate::io::write_named_tensors(path, &m.named_tensors(cfg), PREFIX)
}

/// Read `dir`'s moment files for `kind`, each checked tensor by tensor
/// (every name present, f32, the model's shape).
pub fn read_moments(dir: &Path, cfg: &Gpt2Config, kind: OptimizerKind) -> Result<Vec<Gpt2Grads>> {
    moment_files(kind)
        .iter()
        .map(|name| read_moment(&dir.join(name), cfg))
        .collect()
}

fn read_moment(path: &Path, cfg: &Gpt2Config) -> Result<Gpt2Grads> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let get = |name: &str, shape: Vec<usize>| -> Result<Vec<f32>> {
        let full = format!("{PREFIX}{name}");
        let t = st.tensor(&full).map_err(|_| Error::MissingTensor {
            path: path.to_path_buf(),
            name: full.clone(),
            available: format!("{} tensors", st.len()),
        })?;
        if t.dtype() != safetensors::Dtype::F32 {
            return Err(Error::TensorDtype {
                path: path.to_path_buf(),
                name: full,
                expected: "F32".into(),
                found: format!("{:?}", t.dtype()),
            });
        }
        if t.shape() != shape.as_slice() {
            return Err(Error::TensorShape {
                path: path.to_path_buf(),
                name: full,
                expected: shape,
                found: t.shape().to_vec(),
            });
        }
        let bits: Vec<u32> = crate::io::from_le_bytes(t.data(), u32::from_le);
        Ok(bits.into_iter().map(f32::from_bits).collect())
    };
    let (v, p, c) = (cfg.vocab_size, cfg.n_positions, cfg.n_embd);
    // What the family has; the others stay empty, as in `Gpt2Grads::zeros`.
    let get_if = |present: bool, name: &str, shape: Vec<usize>| match present {
        true => get(name, shape),
        false => Ok(Vec::new()),
    };
    Ok(Gpt2Grads {
        wte: get(names::WTE, vec![v, c])?,
        wpe: get_if(cfg.learned_positions(), names::WPE, vec![p, c])?,
        layers: (0..cfg.n_layer)
            .map(|l| {
                LayerWeights::try_from_fn(cfg, |name, shape| {
                    get(&names::block_tensor(l, name), shape)
                })
            })
            .collect::<Result<Vec<_>>>()?,
        ln_f_g: get(names::LN_F_WEIGHT, vec![c])?,
        ln_f_b: get_if(cfg.is_gpt2(), names::LN_F_BIAS, vec![c])?,
        lm_head: get_if(!cfg.tied_head(), names::LM_HEAD, vec![v, c])?,
    })
}
