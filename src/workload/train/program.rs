//! [`Gpt2Train`], the training [`StageProgram`]: one device's stages
//! ([`TrainStage`]) and, per action of its schedule row, the work recorded
//! for it, with the stash buffers taken from and given back to a
//! per-device pool as the row is walked (see [`super`]).

use std::collections::{BTreeMap, HashMap};

use crate::action::{Action, Kind, Product};
use crate::device::{self, Gpu};
use crate::error::{Error, Result};
use crate::executor::program::StageProgram;
use crate::executor::ActionEncoder;
use crate::model::train::{encode_ops, Op, Phase, Stashed, TrainStage};
use crate::model::{Shard, StageWeights};

/// One device's stages in training, driven action by action by the worker.
pub struct Gpt2Train {
    pub(super) stages: BTreeMap<usize, TrainStage>,
    /// Per action: its recorded work, and for F where its input activation
    /// is placed and where its output lies.
    ops: HashMap<Action, Vec<Op>>,
    inputs: HashMap<Action, wgpu::Buffer>,
    outputs: HashMap<Action, wgpu::Buffer>,
    /// The stash pool's buffers (kept alive; bound by `ops`).
    pool: Vec<wgpu::Buffer>,
    /// Per microbatch: (N) per-row losses, on a device with the head.
    losses: Vec<wgpu::Buffer>,
    /// Per microbatch of the current step: (ids, next-token targets), padded.
    batch: Vec<(Vec<u32>, Vec<u32>)>,
    /// This device's rank in its stages' tensor-parallel group.
    pub(super) shard: Shard,
}

impl Gpt2Train {
    /// Upload this device's stages and record the work of each of its
    /// `actions` (its row of the schedule, in order), with stash buffers
    /// assigned by walking the row.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        stages: &[(usize, StageWeights)],
        actions: &[Action],
        per: usize,
        seq: usize,
        microbatches: usize,
        scale: f32,
        recompute: bool,
        shard: Shard,
    ) -> Result<Gpt2Train> {
        let mut map = BTreeMap::new();
        for (s, w) in stages {
            map.insert(*s, TrainStage::new(gpu, w, per, seq, shard)?);
        }
        let has_head = map.values().any(|s| s.part.head);
        let losses: Vec<wgpu::Buffer> = (0..if has_head { microbatches } else { 0 })
            .map(|_| device::zeros(gpu, "losses (N)", per * seq))
            .collect();
        let mut pool: Vec<wgpu::Buffer> = Vec::new();
        let mut free: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut live: HashMap<(usize, usize, Stashed), usize> = HashMap::new();
        let (mut ops, mut inputs, mut outputs) = (HashMap::new(), HashMap::new(), HashMap::new());
        for &a in actions {
            let st = map.get(&a.stage).ok_or_else(|| {
                Error::Other(format!(
                    "bug: {a} on a device that does not hold stage {}",
                    a.stage
                ))
            })?;
            for t in st.acquires(a.kind, recompute) {
                let len = st.stash_len(t);
                let idx = match free.get_mut(&len).and_then(Vec::pop) {
                    Some(i) => i,
                    None => {
                        pool.push(device::zeros(gpu, "stash", len));
                        pool.len() - 1
                    }
                };
                live.insert((a.stage, a.microbatch, t), idx);
            }
            let view: HashMap<Stashed, wgpu::Buffer> = live
                .iter()
                .filter(|((s, m, _), _)| *s == a.stage && *m == a.microbatch)
                .map(|((_, _, t), &i)| (*t, pool[i].clone()))
                .collect();
            let loss = losses.get(a.microbatch).map(|l| (l, scale));
            let list = match a.kind {
                Kind::F => {
                    inputs.insert(
                        a,
                        view.get(&Stashed::X(0)).cloned().ok_or_else(|| {
                            Error::Other(format!("bug: {a}: no stage input buffer"))
                        })?,
                    );
                    outputs.insert(a, st.output_of_forward(&view)?.clone());
                    st.forward_ops(gpu, &view, loss)?
                }
                Kind::B => st.backward_ops(gpu, &view, Phase::Full, recompute, loss)?,
                Kind::I => st.backward_ops(gpu, &view, Phase::Input, false, None)?,
                Kind::W => st.backward_ops(gpu, &view, Phase::Weight, false, None)?,
            };
            ops.insert(a, list);
            for t in st.releases(a.kind, recompute) {
                let idx = live.remove(&(a.stage, a.microbatch, t)).ok_or_else(|| {
                    Error::Other(format!("bug: {a} releases {t:?}, which it does not hold"))
                })?;
                free.entry(st.stash_len(t)).or_default().push(idx);
            }
        }
        if let Some(((s, m, t), _)) = live.iter().next() {
            return Err(Error::Input(format!(
                "the schedule never releases stage {s}'s {t:?} of microbatch {m}: a training schedule needs every F followed by its B, or its I and W"
            )));
        }
        Ok(Gpt2Train {
            stages: map,
            ops,
            inputs,
            outputs,
            pool,
            losses,
            batch: Vec::new(),
            shard,
        })
    }

    /// Bytes of the stash pool: the most activation memory this device held.
    pub fn peak_activation_bytes(&self) -> u64 {
        self.pool.iter().map(|b| b.size()).sum()
    }

    pub(super) fn set_batch(&mut self, batch: Vec<(Vec<u32>, Vec<u32>)>) {
        self.batch = batch;
    }
}

/// A step borrows each device's program: it stays on its device (weights,
/// gradients, optimizer state) for the next step, and what crosses back —
/// under MPI, to every rank — is its per-microbatch loss sums.
impl StageProgram for &mut Gpt2Train {
    /// Per microbatch: Σ of its rows' losses (empty without the head, and
    /// on every rank of a tensor-parallel group but rank 0, whose losses
    /// are the same).
    type Output = Vec<f64>;

    fn message_bytes(&self, p: Product) -> u64 {
        let s = self
            .stages
            .get(&p.stage)
            .or_else(|| self.stages.values().next())
            .expect("a device holds a stage");
        s.message_bytes()
    }

    fn input(&self, consumer: Action, _p: Product) -> &wgpu::Buffer {
        match consumer.kind {
            Kind::F => &self.inputs[&consumer],
            _ => self.stages[&consumer.stage].grad_input(),
        }
    }

    fn output(&self, producer: Action) -> &wgpu::Buffer {
        match producer.kind {
            Kind::F => &self.outputs[&producer],
            _ => self.stages[&producer.stage].grad_output(),
        }
    }

    fn encode(&mut self, gpu: &Gpu, a: Action, enc: &mut ActionEncoder) -> Result<()> {
        let stage = &self.stages[&a.stage];
        if stage.part.embedding || stage.part.head {
            let (ids, targets) = self.batch.get(a.microbatch).ok_or_else(|| {
                Error::Other(format!("bug: {a}: no data for microbatch {}", a.microbatch))
            })?;
            stage.write_microbatch(gpu, ids, targets);
        }
        let ops = self
            .ops
            .get(&a)
            .ok_or_else(|| Error::Other(format!("bug: {a} was not prepared")))?;
        encode_ops(ops, enc)
    }

    fn finish(self, gpu: &Gpu) -> Result<Vec<f64>> {
        if self.shard.rank > 0 {
            return Ok(Vec::new());
        }
        let Some(n) = self
            .stages
            .values()
            .find(|s| s.part.head)
            .map(TrainStage::rows)
        else {
            return Ok(Vec::new());
        };
        let st = device::staging(gpu, "losses out", (n * 4 * self.losses.len()) as u64);
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        for (m, l) in self.losses.iter().enumerate() {
            enc.copy_buffer_to_buffer(l, 0, &st, (m * n * 4) as u64, (n * 4) as u64);
        }
        gpu.queue.submit([enc.finish()]);
        let all: Vec<f32> = device::read_mapped(gpu, &st, n * self.losses.len())?;
        Ok(all
            .chunks(n)
            .map(|c| c.iter().map(|&x| x as f64).sum())
            .collect())
    }

    fn output_to_bytes(o: &Vec<f64>) -> Option<Vec<u8>> {
        Some(crate::executor::wire::to_bytes(o))
    }

    fn output_from_bytes(b: &[u8]) -> Option<Vec<f64>> {
        crate::executor::wire::from_bytes(b)
    }
}
