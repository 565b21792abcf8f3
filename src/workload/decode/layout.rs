//! How a generation's sequences are laid out: which group holds which
//! sequences, and for each pass the (slot, position) of every row and the
//! logits row each sequence samples from.

use super::DecodeJob;
use crate::error::{Error, Result};

/// Which sequences each group holds and how the passes are shaped.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Sequence indices per group, contiguous; earlier groups take the remainder.
    pub members: Vec<Vec<usize>>,
    /// Sequences per pass: the largest group.
    pub per: usize,
    /// Rows per sequence in a prefill: the longest prompt.
    pub t_max: usize,
    /// Prompt length of every sequence.
    pub lens: Vec<usize>,
    pub steps: usize,
}

impl Layout {
    /// The KV cache positions a sequence needs: the longest prompt and every
    /// new token (a shorter prompt's padding rows lie within the longest's).
    pub fn positions(&self) -> usize {
        self.t_max + self.steps
    }

    /// Check `job` against the model and lay out its groups.
    pub fn new(job: &DecodeJob, n_positions: usize, vocab: usize) -> Result<Layout> {
        let b = job.prompts.len();
        if b == 0 {
            return Err(Error::Input("no prompts to generate from".into()));
        }
        if let Some(i) = job.prompts.iter().position(Vec::is_empty) {
            return Err(Error::Input(format!(
                "prompt {i} is empty: every prompt needs at least one token"
            )));
        }
        if job.max_new_tokens == 0 {
            return Err(Error::Input("--max-new-tokens must be at least 1".into()));
        }
        for (i, p) in job.prompts.iter().enumerate() {
            if let Some(&id) = p.iter().find(|&&id| id as usize >= vocab) {
                return Err(Error::Input(format!(
                    "prompt {i}: token id {id} is out of range for the model's vocabulary of {vocab}"
                )));
            }
            if p.len() + job.max_new_tokens > n_positions {
                let fit = n_positions.saturating_sub(job.max_new_tokens);
                return Err(Error::Input(format!(
                    "prompt {i} has {} tokens, but with --max-new-tokens {} at most {fit} fit the model's n_positions {n_positions} (or ask for at most {} new tokens)",
                    p.len(),
                    job.max_new_tokens,
                    n_positions.saturating_sub(p.len())
                )));
            }
        }
        if job.groups == 0 || job.groups > b {
            return Err(Error::Input(format!(
                "--groups {} must be between 1 and the number of prompts ({b})",
                job.groups
            )));
        }
        job.sampling.check()?;
        let g = job.groups;
        let mut members = Vec::with_capacity(g);
        let mut next = 0;
        for i in 0..g {
            let n = b / g + usize::from(i < b % g);
            members.push((next..next + n).collect::<Vec<_>>());
            next += n;
        }
        Ok(Layout {
            per: members.iter().map(Vec::len).max().unwrap_or(1),
            t_max: job.prompts.iter().map(Vec::len).max().unwrap_or(1),
            lens: job.prompts.iter().map(Vec::len).collect(),
            members,
            steps: job.max_new_tokens,
        })
    }

    pub(super) fn groups(&self) -> usize {
        self.members.len()
    }

    /// The cache slot rows of padding use: one past the sequences.
    pub(super) fn dummy_slot(&self) -> u32 {
        self.lens.len() as u32
    }

    /// (slot, position) of every row of group `g`'s pass at `step`.
    pub(super) fn rows(&self, g: usize, step: usize) -> Vec<(u32, u32)> {
        let members = &self.members[g];
        let mut rows = Vec::new();
        for b in 0..self.per {
            let seq = members.get(b).copied();
            let slot = seq.map_or(self.dummy_slot(), |s| s as u32);
            if step == 0 {
                rows.extend((0..self.t_max as u32).map(|t| (slot, t)));
            } else {
                let pos = seq.map_or(0, |s| self.lens[s] + step - 1);
                rows.push((slot, pos as u32));
            }
        }
        rows
    }

    /// The logits row the sampler reads for each sequence of group `g`.
    pub(super) fn sample_rows(&self, g: usize, step: usize) -> Vec<u32> {
        (0..self.per)
            .map(|b| match (step, self.members[g].get(b)) {
                (0, Some(&s)) => (b * self.t_max + self.lens[s] - 1) as u32,
                (0, None) => (b * self.t_max) as u32,
                (_, _) => b as u32,
            })
            .collect()
    }
}
