//! `bench soak`: memory over a long run. One pipeline is loaded once; it
//! trains `steps` steps, then answers `generates` calls to `generate`, and
//! every `every` iterations the process's resident memory (RSS), its open
//! file descriptors and the device objects alive (wgpu's own counters:
//! buffers, their bytes, bind groups, summed over this process's Gpus) are
//! sampled. A leak shows as a rising line; the report compares the first
//! 100 iterations of each phase with its last 100.
//!
//! RSS and descriptors come from `/proc/self` (Linux; elsewhere they read
//! as 0). On a software adapter device memory is host memory, so a leaked
//! device buffer shows in RSS too.

use serde::Serialize;

use crate::data::{Batches, TokenStream};
use crate::error::{Error, Result};
use crate::model::Gpt2Config;
use crate::pipeline::{
    GenerateOptions, ModelSource, Pipeline, PipelineConfig, Prompt, TrainConfig, Workload,
};
use crate::schedule::ScheduleKind;
use crate::trace::chart::{line_chart, Line};
use crate::workload::train::Optimizer;

/// `bench soak`'s settings.
#[derive(Clone, Debug)]
pub struct SoakBench {
    /// Pipeline devices: a count or a list.
    pub devices: String,
    /// The model (a built-in name, seeded weights).
    pub model: String,
    pub seed: u64,
    pub schedule: ScheduleKind,
    /// Training steps, then calls to `generate`.
    pub steps: usize,
    pub generates: usize,
    /// Sample every this many iterations of each phase.
    pub every: usize,
    /// Sequences per step, split into `microbatches`, and tokens per
    /// sequence.
    pub batch: usize,
    pub microbatches: usize,
    pub seq: usize,
    /// Prompts per `generate` call, their length, and new tokens per prompt.
    pub prompts: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
}

impl Default for SoakBench {
    fn default() -> SoakBench {
        SoakBench {
            devices: "2".into(),
            model: "tiny".into(),
            seed: 0,
            schedule: ScheduleKind::OneFOneB,
            steps: 1000,
            generates: 1000,
            every: 50,
            batch: 8,
            microbatches: 2,
            seq: 32,
            prompts: 2,
            prompt_len: 8,
            new_tokens: 8,
        }
    }
}

/// One sample.
#[derive(Clone, Debug, Serialize)]
pub struct SoakSample {
    /// `train` or `generate`.
    pub phase: String,
    /// Iterations of this phase done (steps, or `generate` calls).
    pub iteration: usize,
    /// Iterations of both phases done: the x of the chart.
    pub total: usize,
    pub rss_bytes: u64,
    pub open_fds: u64,
    /// wgpu's counters over this process's Gpus.
    pub device_buffers: i64,
    pub device_buffer_bytes: i64,
    pub bind_groups: i64,
    /// Seconds since the pipeline was built.
    pub elapsed_s: f64,
}

/// One phase's first 100 iterations against its last 100 (a phase shorter
/// than 200: its first half against its second).
#[derive(Clone, Debug, Serialize)]
pub struct SoakGrowth {
    pub phase: String,
    /// Mean RSS of the samples within the first and the last 100 iterations.
    pub rss_first_bytes: f64,
    pub rss_last_bytes: f64,
    /// (last − first) / first, in percent.
    pub rss_growth_pct: f64,
    /// Last sample minus the first.
    pub device_buffers_growth: i64,
    pub device_buffer_bytes_growth: i64,
    pub bind_groups_growth: i64,
    pub open_fds_growth: i64,
}

/// What `bench soak` measured.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    pub model: String,
    pub devices: Vec<String>,
    pub schedule: String,
    pub samples: Vec<SoakSample>,
    pub growth: Vec<SoakGrowth>,
    /// The losses of the first and the last training step.
    pub first_loss: f64,
    pub last_loss: f64,
    pub wall_s: f64,
}

impl SoakBench {
    /// Build the pipeline once, train, then generate, sampling as it goes.
    /// [`crate::interrupt`] stops it between iterations.
    pub fn run(&self) -> Result<SoakReport> {
        if self.every == 0 || self.batch == 0 || self.prompts == 0 || self.prompt_len == 0 {
            return Err(Error::Input(
                "soak: --every, --batch, --prompts and --prompt-len must be at least 1".into(),
            ));
        }
        let cfg = Gpt2Config::named(&self.model)?;
        let pipeline = Pipeline::new(PipelineConfig {
            devices: self.devices.clone(),
            schedule: self.schedule,
            microbatches: Some(self.microbatches),
            workload: Workload::Train {
                sequences: self.batch.div_ceil(self.microbatches.max(1)),
                tokens: self.seq,
            },
            ..PipelineConfig::new(ModelSource::Preset {
                name: self.model.clone(),
                seed: self.seed,
            })
        })?;
        let t0 = std::time::Instant::now();
        let mut samples = Vec::new();
        let sample = |phase: &str, i: usize, total: usize| -> SoakSample {
            let (buffers, bytes, groups) = device_objects(&pipeline);
            SoakSample {
                phase: phase.into(),
                iteration: i,
                total,
                rss_bytes: rss_bytes(),
                open_fds: open_fds(),
                device_buffers: buffers,
                device_buffer_bytes: bytes,
                bind_groups: groups,
                elapsed_s: t0.elapsed().as_secs_f64(),
            }
        };
        let (first_loss, last_loss) = self.train(&pipeline, &cfg, &mut samples, &sample)?;
        self.generate(&pipeline, &cfg, &mut samples, &sample)?;
        let growth = ["train", "generate"]
            .iter()
            .filter_map(|p| growth(p, &samples))
            .collect();
        Ok(SoakReport {
            model: self.model.clone(),
            devices: pipeline.device_names().to_vec(),
            schedule: self.schedule.to_string(),
            samples,
            growth,
            first_loss,
            last_loss,
            wall_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// `steps` training steps on seeded windows of a random token stream.
    fn train(
        &self,
        pipeline: &Pipeline,
        cfg: &Gpt2Config,
        samples: &mut Vec<SoakSample>,
        sample: &dyn Fn(&str, usize, usize) -> SoakSample,
    ) -> Result<(f64, f64)> {
        let ids = crate::io::random_input_ids(1, 4096, cfg.vocab_size, self.seed);
        let tokens: Vec<u16> = ids.ids.iter().map(|&t| t as u16).collect();
        let stream = TokenStream::from_tokens(tokens, cfg.vocab_size)?;
        let mut batches = Batches::Stream(stream.windows(self.batch, self.seq, self.seed)?);
        let mut trainer = pipeline.trainer(TrainConfig {
            optimizer: Optimizer::AdamW {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            },
            grad_clip: Some(1.0),
            recompute: false,
            batch: self.batch,
            seq: self.seq,
        })?;
        let (mut first, mut last) = (f64::NAN, f64::NAN);
        samples.push(sample("train", 0, 0));
        for i in 1..=self.steps {
            crate::interrupt::check()?;
            let r = trainer.train_step(&batches.next_batch())?;
            if i == 1 {
                first = r.pass.loss;
            }
            last = r.pass.loss;
            if i % self.every == 0 || i == self.steps {
                samples.push(sample("train", i, i));
            }
        }
        Ok((first, last))
    }

    /// `generates` calls, each `prompts` random prompts (a new draw each
    /// call) of `prompt_len` ids, greedy.
    fn generate(
        &self,
        pipeline: &Pipeline,
        cfg: &Gpt2Config,
        samples: &mut Vec<SoakSample>,
        sample: &dyn Fn(&str, usize, usize) -> SoakSample,
    ) -> Result<()> {
        let opts = GenerateOptions {
            max_new_tokens: self.new_tokens,
            ..GenerateOptions::default()
        };
        samples.push(sample("generate", 0, self.steps));
        for i in 1..=self.generates {
            crate::interrupt::check()?;
            let ids = crate::io::random_input_ids(
                self.prompts,
                self.prompt_len,
                cfg.vocab_size,
                self.seed + i as u64,
            );
            let prompts: Vec<Prompt> = ids
                .ids
                .chunks(self.prompt_len)
                .map(|c| Prompt::Ids(c.to_vec()))
                .collect();
            pipeline.generate(&prompts, &opts)?;
            if i % self.every == 0 || i == self.generates {
                samples.push(sample("generate", i, self.steps + i));
            }
        }
        Ok(())
    }
}

/// A phase's growth: the samples within its first 100 iterations against
/// those within its last 100, or within its halves when it is shorter than
/// 200 (iteration 0, before the phase's first call,
/// left out: what the first call allocates once is not growth).
fn growth(phase: &str, samples: &[SoakSample]) -> Option<SoakGrowth> {
    let s: Vec<&SoakSample> = samples
        .iter()
        .filter(|s| s.phase == phase && s.iteration > 0)
        .collect();
    let (first, last) = (s.first()?, s.last()?);
    let end = last.iteration;
    let mean = |pick: &dyn Fn(&SoakSample) -> bool| {
        let v: Vec<f64> = s
            .iter()
            .filter(|x| pick(x))
            .map(|x| x.rss_bytes as f64)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    // 100 iterations, or half the phase when it is shorter than 200.
    let w = 100.min(end / 2).max(1);
    let a = mean(&|x| x.iteration <= w);
    let b = mean(&|x| x.iteration + w > end);
    Some(SoakGrowth {
        phase: phase.into(),
        rss_first_bytes: a,
        rss_last_bytes: b,
        rss_growth_pct: 100.0 * (b - a) / a,
        device_buffers_growth: last.device_buffers - first.device_buffers,
        device_buffer_bytes_growth: last.device_buffer_bytes - first.device_buffer_bytes,
        bind_groups_growth: last.bind_groups - first.bind_groups,
        open_fds_growth: last.open_fds as i64 - first.open_fds as i64,
    })
}

/// wgpu's counts over the pipeline's Gpus: (buffers, buffer bytes, bind groups).
fn device_objects(p: &Pipeline) -> (i64, i64, i64) {
    p.gpus().fold((0, 0, 0), |(a, b, c), g| {
        let h = g.device.get_internal_counters().hal;
        (
            a + h.buffers.read() as i64,
            b + h.buffer_memory.read() as i64,
            c + h.bind_groups.read() as i64,
        )
    })
}

/// Resident set size, from `/proc/self/statm` (0 where there is none).
fn rss_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    #[cfg(unix)]
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as u64;
    #[cfg(not(unix))]
    let page = 4096;
    pages * page
}

/// Open file descriptors: the entries of `/proc/self/fd` (less the one
/// reading it), 0 where there is none.
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64)
}

impl SoakReport {
    /// The growth lines and a verdict per phase.
    pub fn text(&self) -> String {
        let mut s = format!(
            "soak: {} on {} ({}), {:.0} s; loss {:.4} -> {:.4}\n",
            self.model,
            self.devices.join(", "),
            self.schedule,
            self.wall_s,
            self.first_loss,
            self.last_loss
        );
        for g in &self.growth {
            s += &format!(
                "{:>8}: RSS {:.1} -> {:.1} MiB ({:+.2} %), device buffers {:+}, buffer bytes {:+}, bind groups {:+}, fds {:+}\n",
                g.phase,
                g.rss_first_bytes / MIB,
                g.rss_last_bytes / MIB,
                g.rss_growth_pct,
                g.device_buffers_growth,
                g.device_buffer_bytes_growth,
                g.bind_groups_growth,
                g.open_fds_growth
            );
        }
        s
    }

    /// RSS (MiB), device buffers and descriptors against iterations.
    pub fn svg(&self) -> String {
        let line = |label: &str, f: &dyn Fn(&SoakSample) -> f64| Line {
            label: label.into(),
            points: self
                .samples
                .iter()
                .map(|s| (s.total as f64, f(s)))
                .collect(),
        };
        let lines = [
            line("RSS MiB", &|s| s.rss_bytes as f64 / MIB),
            line("device buffers", &|s| s.device_buffers as f64),
            line("open fds", &|s| s.open_fds as f64),
        ];
        let title = format!(
            "soak: {} on {} devices — {} training steps, then generate calls",
            self.model,
            self.devices.len(),
            self.samples
                .iter()
                .filter(|s| s.phase == "train")
                .map(|s| s.iteration)
                .max()
                .unwrap_or(0)
        );
        line_chart(
            &lines,
            &title,
            "iterations (steps, then generate calls)",
            "",
        )
    }
}

const MIB: f64 = 1024.0 * 1024.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phase: &str, i: usize, rss: u64, buffers: i64) -> SoakSample {
        SoakSample {
            phase: phase.into(),
            iteration: i,
            total: i,
            rss_bytes: rss,
            open_fds: 5,
            device_buffers: buffers,
            device_buffer_bytes: 0,
            bind_groups: 0,
            elapsed_s: 0.0,
        }
    }

    #[test]
    fn growth_compares_the_first_and_last_100_iterations_or_the_halves() {
        // 1000 iterations every 50: 50 and 100 against 950 and 1000; the
        // sample before the first call (iteration 0) is left out.
        let mut s = vec![at("train", 0, 1, 7)];
        s.extend((1..=20).map(|k| at("train", 50 * k, 1000 + k as u64, 9)));
        let g = growth("train", &s).unwrap();
        assert_eq!((g.rss_first_bytes, g.rss_last_bytes), (1001.5, 1019.5));
        assert_eq!(g.device_buffers_growth, 0);
        // 100 iterations every 10: the first 50 against the last 50.
        let s: Vec<_> = (1..=10)
            .map(|k| at("train", 10 * k, 100 * k as u64, 1))
            .collect();
        let g = growth("train", &s).unwrap();
        assert_eq!((g.rss_first_bytes, g.rss_last_bytes), (300.0, 800.0));
        assert!(growth("generate", &s).is_none());
    }
}
