//! The layer profile behind `--split auto`: the three kinds of work a stage
//! can hold — the embedding, one transformer block (every block has the same
//! shape), and ln_f with the LM head over the whole vocabulary — timed on
//! every device, all devices at once with no messages between them (as they
//! will run), through the executor's own worker and timestamps, for a few
//! microbatches of the run's shape; each figure is the median. Repeated
//! ([`profile_layers_repeated`]), each repetition is a run of its own, and
//! the spread between them is the profile's noise. A stage's
//! time is then additive: `n · block (+ embedding on stage 0) (+ head on the
//! last stage)` of the device that holds it (stage s on device s mod P).

use serde::Serialize;

use super::forward::Gpt2Forward;
use crate::action::{Action, Kind};
use crate::error::{Error, Result};
use crate::executor::fed::{without_messages, Fed};
use crate::executor::plan::{Incoming, Plan, Step};
use crate::executor::{run_plan, Cluster, DeviceGroup};
use crate::io::random_input_ids;
use crate::microbatch::Microbatches;
use crate::model::{StagePart, StageSource};
use crate::timing::median;
use crate::trace::Track;

/// What each kind of layer costs on one device, in ms per microbatch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerCosts {
    pub embedding_ms: f64,
    pub block_ms: f64,
    /// ln_f and the LM head over the whole vocabulary.
    pub head_ms: f64,
}

/// Layer costs per schedule device.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Profile {
    /// The median of every timed microbatch of every repetition.
    pub devices: Vec<LayerCosts>,
    /// Each repetition's own medians (a separate run each), when the profile
    /// was repeated: how much the figures move from run to run, the noise a
    /// prediction from them carries ([`crate::analysis::split`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repetitions: Vec<Profile>,
}

impl Profile {
    /// Time of stage `s` of `stages` holding `blocks` blocks.
    pub fn stage_ms(&self, s: usize, stages: usize, blocks: usize) -> f64 {
        let c = &self.devices[s % self.devices.len()];
        let mut t = blocks as f64 * c.block_ms;
        if s == 0 {
            t += c.embedding_ms;
        }
        if s + 1 == stages {
            t += c.head_ms;
        }
        t
    }

    /// Stage times of `split` (layers per stage).
    pub fn stage_times(&self, split: &[usize]) -> Vec<f64> {
        split
            .iter()
            .enumerate()
            .map(|(s, &n)| self.stage_ms(s, split.len(), n))
            .collect()
    }

    /// What `n_layer` layers take on device `d` alone, per microbatch.
    pub fn whole_model_ms(&self, d: usize, n_layer: usize) -> f64 {
        let c = &self.devices[d];
        c.embedding_ms + n_layer as f64 * c.block_ms + c.head_ms
    }
}

/// The three one-device stages the profile times: the embedding, one block
/// (block 0), the head.
pub fn profile_parts() -> [StagePart; 3] {
    [
        StagePart {
            layers: 0..0,
            embedding: true,
            head: false,
        },
        StagePart {
            layers: 0..1,
            embedding: false,
            head: false,
        },
        StagePart {
            layers: 0..0,
            embedding: false,
            head: true,
        },
    ]
}

/// Time each kind of layer of `w` on each device in `groups`, all devices at
/// once with no messages between them, over `iterations` microbatches of `per` × `seq` tokens (the median of each).
pub fn profile_layers(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    w: &dyn StageSource,
    per: usize,
    seq: usize,
    iterations: usize,
) -> Result<Profile> {
    let durations = profile_run(groups, cluster, w, per, seq, iterations)?;
    Ok(Profile {
        devices: medians(&durations),
        repetitions: Vec::new(),
    })
}

/// [`profile_layers`] `repeats` times, each a run of its own: the profile is
/// the median of every microbatch timed, and keeps each repetition's
/// medians ([`Profile::repetitions`]).
pub fn profile_layers_repeated(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    w: &dyn StageSource,
    (per, seq): (usize, usize),
    iterations: usize,
    repeats: usize,
) -> Result<Profile> {
    let mut all: Vec<[Vec<f64>; 3]> = Vec::new();
    let mut repetitions = Vec::new();
    for _ in 0..repeats.max(1) {
        let run = profile_run(groups, cluster, w, per, seq, iterations)?;
        repetitions.push(Profile {
            devices: medians(&run),
            repetitions: Vec::new(),
        });
        all.resize_with(run.len(), Default::default);
        for (d, kinds) in run.into_iter().enumerate() {
            for (k, v) in kinds.into_iter().enumerate() {
                all[d][k].extend(v);
            }
        }
    }
    Ok(Profile {
        devices: medians(&all),
        repetitions,
    })
}

/// Each device's median ms per layer kind.
fn medians(durations: &[[Vec<f64>; 3]]) -> Vec<LayerCosts> {
    durations
        .iter()
        .map(|[e, b, h]| LayerCosts {
            embedding_ms: median(e.clone()),
            block_ms: median(b.clone()),
            head_ms: median(h.clone()),
        })
        .collect()
}

/// One profile run: by device, by layer kind (embedding, block, head), the
/// ms of every microbatch.
fn profile_run(
    groups: &[DeviceGroup],
    cluster: &Cluster,
    w: &dyn StageSource,
    per: usize,
    seq: usize,
    iterations: usize,
) -> Result<Vec<[Vec<f64>; 3]>> {
    let cfg = w.config();
    if cfg.n_layer == 0 {
        return Err(Error::Input("the model has no layers to profile".into()));
    }
    let iterations = iterations.max(1);
    let tokens = random_input_ids(iterations * per, seq, cfg.vocab_size, 0);
    crate::io::check_input(cfg, &tokens)?;
    let mbs = Microbatches::split(&tokens, iterations)?;
    // Three stages of one device: the embedding, one block, the head.
    let parts = profile_parts();
    let held = (0..3)
        .map(|s| Ok((s, w.try_stage(&parts[s])?)))
        .collect::<Result<Vec<_>>>()?;
    // Each block and head reads the output of the one before, fed as a fixed
    // input (the plan it runs carries no messages).
    let full: Vec<Step> = (0..iterations)
        .flat_map(|m| (0..parts.len()).map(move |k| Action::new(k, Kind::F, m)))
        .map(|a| Step {
            action: a,
            inputs: a
                .needs(parts.len())
                .into_iter()
                .map(|product| Incoming {
                    product,
                    producer: Action::new(product.stage, Kind::F, a.microbatch),
                    from: 0,
                })
                .collect(),
            outputs: Vec::new(),
        })
        .collect();
    // Every device profiles at once, as they will run in the pipeline (on a
    // machine whose devices share cores or a bus, alone would flatter them).
    let plan = without_messages(&Plan {
        devices: vec![full.clone(); groups.len()],
    });
    let net = cluster.net_for(groups)?;
    let timeline = run_plan(groups, &plan, &net, |_, shard, gpu| {
        Ok(Fed::new(Gpt2Forward::new(gpu, shard, &held, &mbs)?, &full))
    })?
    .timeline;
    let kind_ms = |d: usize, k: usize| {
        timeline
            .events
            .iter()
            .filter(|e| e.track == Track::compute(d))
            .filter(|e| e.action.is_some_and(|a| a.stage == k))
            .map(|e| e.duration_us() / 1e3)
            .collect::<Vec<f64>>()
    };
    Ok((0..groups.len())
        .map(|d| [kind_ms(d, 0), kind_ms(d, 1), kind_ms(d, 2)])
        .collect())
}
