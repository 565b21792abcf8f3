//! [`Pipeline::generate`]: text in, text out — prefill, then token-by-token
//! decode with each stage's KV cache on its own device, groups of sequences
//! in flight, sampled on the last device — with TTFT, TPOT and ITL measured;
//! and [`Pipeline::generate_streaming`], which hands each token to the
//! caller as it comes back.

use std::sync::{mpsc, Arc, Mutex};

use serde::Serialize;

use super::Pipeline;
use crate::analysis::measure::{measure_timeline, Measurement};
use crate::analysis::serving::DecodeMetrics;
use crate::error::{Error, Result};
use crate::executor::TransferRecord;
use crate::sampling::SampleSettings;
use crate::tokenizer::TextStream;
use crate::trace::Timeline;
use crate::workload::decode::{generate_resident, stop_at_eos, DecodeJob, Layout, TokenSink};

/// A prompt: text (through the checkpoint's tokenizer) or token ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Prompt {
        Prompt::Text(s.to_string())
    }
}

impl From<String> for Prompt {
    fn from(s: String) -> Prompt {
        Prompt::Text(s)
    }
}

impl From<Vec<u32>> for Prompt {
    fn from(ids: Vec<u32>) -> Prompt {
        Prompt::Ids(ids)
    }
}

/// How to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// New tokens per sequence.
    pub max_new_tokens: usize,
    /// Greedy by default; temperature, top-k, top-p.
    pub sampling: SampleSettings,
    /// Seeds the sampler (one draw per sequence and step, so the tokens do
    /// not depend on the layout).
    pub seed: u64,
    /// Groups of sequences in flight; default one per device, at most one
    /// per prompt.
    pub groups: Option<usize>,
    /// End each sequence at the end-of-text token (the rest of its row is
    /// filled with it).
    pub stop_at_eos: bool,
    /// Also keep the logits each token was sampled from (V per sequence per
    /// step).
    pub keep_logits: bool,
}

impl Default for GenerateOptions {
    fn default() -> GenerateOptions {
        GenerateOptions {
            max_new_tokens: 20,
            sampling: SampleSettings::default(),
            seed: 0,
            groups: None,
            stop_at_eos: false,
            keep_logits: false,
        }
    }
}

/// One generated sequence.
#[derive(Clone, Debug, Serialize)]
pub struct Sequence {
    pub prompt_ids: Vec<u32>,
    /// The prompt, then the new tokens.
    pub ids: Vec<u32>,
    /// The whole text, when the checkpoint has a tokenizer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One new token, as [`Pipeline::generate_streaming`] hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct Token {
    /// Which prompt's sequence.
    pub sequence: usize,
    pub id: u32,
    /// 0 for the first new token.
    pub step: usize,
    /// The text this token adds to its sequence, when there is a tokenizer
    /// (empty while a multi-byte character is incomplete).
    pub text: Option<String>,
}

/// What a generation produced and measured.
#[derive(Clone, Debug, Serialize)]
pub struct Generation {
    pub sequences: Vec<Sequence>,
    /// TTFT, TPOT, ITL p50 / p99, tokens/s.
    #[serde(flatten)]
    pub metrics: DecodeMetrics,
    pub devices: usize,
    /// Gpus per pipeline stage.
    pub tp: usize,
    pub groups: usize,
    pub device_names: Vec<String>,
    pub max_new_tokens: usize,
    /// KV-cache bytes per Gpu (device × T + rank): only the layers each
    /// stage holds, and under tensor parallelism only each rank's heads.
    pub kv_bytes: Vec<u64>,
    /// Weight bytes per Gpu, in the same order (with the texture copies
    /// decoding reads on adapters whose textures read faster).
    pub weight_bytes: Vec<u64>,
    /// How each pipeline device stored its stages and KV cache (`--dtype`
    /// resolved), and why a device stored f32 where f16 was wanted.
    pub precision: Vec<crate::device::Precision>,
    pub precision_notes: Vec<String>,
    /// Where each Gpu's decode matmuls read their weights from (buffer or
    /// texture, chosen per adapter by measurement), in the same order.
    pub decode_weights: Vec<crate::kernels::DecodeWeights>,
    pub split: Vec<usize>,
    /// The decode schedule's bubble: measured, and simulated with the
    /// measured median pass per stage.
    pub bubble_measured: f64,
    pub bubble_simulated: f64,
    /// Steady state with equal stages: 1 − min(groups, P) / P.
    pub bubble_analytic: f64,
    pub wall_ms: f64,
    pub pipeline: Measurement,
    #[serde(skip)]
    pub timeline: Timeline,
    #[serde(skip)]
    pub transfers: Vec<TransferRecord>,
    /// With `keep_logits`: per sequence, per new token, the V logits it was
    /// sampled from.
    #[serde(skip)]
    pub logits: Vec<Vec<Vec<f32>>>,
}

impl Pipeline {
    /// The prompts as token ids, checked against the model.
    fn prompt_ids(&self, prompts: &[Prompt]) -> Result<Vec<Vec<u32>>> {
        prompts
            .iter()
            .map(|p| match p {
                Prompt::Ids(ids) => Ok(ids.clone()),
                Prompt::Text(t) => match &self.tokenizer {
                    Some(tok) => tok.encode(t),
                    None => Err(Error::Input(match &self.host.dir {
                        Some(dir) => format!(
                            "{} has no tokenizer.json, so text prompts cannot be tokenized; give the prompts as ids",
                            dir.display()
                        ),
                        None => "text prompts need a tokenizer: load a checkpoint with a tokenizer.json, or give the prompts as ids".into(),
                    })),
                },
            })
            .collect()
    }

    /// Generate from `prompts`; see [`Pipeline::generate_streaming`] for the
    /// tokens as they come.
    pub fn generate(&self, prompts: &[Prompt], opts: &GenerateOptions) -> Result<Generation> {
        self.run_generation(prompts, opts, None)
    }

    /// Generate from `prompts`, calling `on_token` on this thread with each
    /// new token as it comes back from the last device (under MPI, where the
    /// tokens arrive on the last rank, after the generation, in order).
    pub fn generate_streaming(
        &self,
        prompts: &[Prompt],
        opts: &GenerateOptions,
        mut on_token: impl FnMut(&Token),
    ) -> Result<Generation> {
        let mut streams: Vec<Option<TextStream>> = (0..prompts.len())
            .map(|_| self.tokenizer.as_ref().map(TextStream::new))
            .collect();
        // The prompt's own text first, so each token's piece follows it.
        for (s, p) in self.prompt_ids(prompts)?.iter().enumerate() {
            if let Some(stream) = streams[s].as_mut() {
                for &id in p {
                    let _ = stream.push(id);
                }
            }
        }
        let mut emit = |sequence: usize, id: u32, step: usize| {
            let text = streams[sequence]
                .as_mut()
                .map(|s| s.push(id).unwrap_or_default());
            on_token(&Token {
                sequence,
                id,
                step,
                text,
            });
        };
        if self.cluster.rank().is_some() {
            let gen = self.run_generation(prompts, opts, None)?;
            for (s, seq) in gen.sequences.iter().enumerate() {
                for (step, &id) in seq.ids[seq.prompt_ids.len()..].iter().enumerate() {
                    emit(s, id, step);
                }
            }
            return Ok(gen);
        }
        let (tx, rx) = mpsc::channel::<(usize, u32, usize)>();
        let tx = Mutex::new(tx);
        let sink: TokenSink = Arc::new(move |s: usize, id: u32, step: usize| {
            let _ = tx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send((s, id, step));
        });
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| self.run_generation(prompts, opts, Some(sink)));
            for (s, id, step) in rx {
                emit(s, id, step);
            }
            worker
                .join()
                .unwrap_or_else(|_| Err(Error::Other("the generation thread panicked".into())))
        })
    }

    fn run_generation(
        &self,
        prompts: &[Prompt],
        opts: &GenerateOptions,
        sink: Option<TokenSink>,
    ) -> Result<Generation> {
        if self.virtual_stages != 1 {
            return Err(Error::Input(format!(
                "generation runs one stage per device; this pipeline has {} per device",
                self.virtual_stages
            )));
        }
        let cfg = self.config().clone();
        let prompts = self.prompt_ids(prompts)?;
        let p = self.devices;
        let groups = opts.groups.unwrap_or(p.min(prompts.len()));
        let job = DecodeJob {
            prompts,
            max_new_tokens: opts.max_new_tokens,
            groups,
            sampling: opts.sampling,
            seed: opts.seed,
            keep_logits: opts.keep_logits,
        };
        // Bad prompts are refused before any device works.
        Layout::new(&job, cfg.n_positions, cfg.vocab_size)?;
        let _busy = self.lock();
        let resident = self.resident()?;
        let devices = self.groups()?;
        let run = generate_resident(&devices, &self.cluster, &resident, &job, sink)?;
        drop(_busy);
        let mut ids = run.ids.clone();
        let lens: Vec<usize> = job.prompts.iter().map(Vec::len).collect();
        if opts.stop_at_eos {
            stop_at_eos(&mut ids, &lens, self.eos_token_id()?);
        }
        let n_new = job.prompts.len() * opts.max_new_tokens;
        let pipeline = measure_timeline(
            &run.schedule,
            &run.timeline,
            run.wall_s,
            &run.transfers,
            n_new,
        )?;
        let sequences = job
            .prompts
            .iter()
            .zip(ids)
            .map(|(prompt, ids)| {
                let text = self
                    .tokenizer
                    .as_ref()
                    .map(|t| t.decode(&ids))
                    .transpose()?;
                Ok(Sequence {
                    prompt_ids: prompt.clone(),
                    ids,
                    text,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Generation {
            sequences,
            metrics: DecodeMetrics::of(&run),
            devices: p,
            tp: self.tp,
            groups,
            device_names: run.timeline.device_names.clone(),
            max_new_tokens: opts.max_new_tokens,
            kv_bytes: run.kv_bytes.clone(),
            weight_bytes: run.weight_bytes.clone(),
            decode_weights: run.decode_weights.clone(),
            precision: resident.precision.clone(),
            precision_notes: resident.precision_notes.clone(),
            split: resident.split(),
            bubble_measured: pipeline.bubble_measured,
            bubble_simulated: pipeline.bubble_simulated,
            bubble_analytic: crate::schedule::analytic::decode_bubble(groups, p),
            wall_ms: run.wall_s * 1e3,
            pipeline,
            timeline: run.timeline,
            transfers: run.transfers,
            logits: run.logits,
        })
    }
}
