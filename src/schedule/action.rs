//! One cell of a schedule: `1F0` = stage 1, forward, microbatch 0.
//!
//! The text form is PyTorch pipelining's compact one: stage digits, one kind
//! letter, microbatch digits. Dependencies between actions are stated here,
//! once, and every pass (validation, simulation, step alignment) reads them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::schedule::ScheduleError;

/// What an action computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// Forward pass of one stage on one microbatch.
    F,
    /// Full backward: input gradient and weight gradient together.
    B,
    /// Backward for the input gradient only (split backward, zero-bubble).
    I,
    /// Backward for the weight gradient only (split backward, zero-bubble).
    W,
}

impl Kind {
    pub fn letter(self) -> char {
        match self {
            Kind::F => 'F',
            Kind::B => 'B',
            Kind::I => 'I',
            Kind::W => 'W',
        }
    }

    fn from_letter(c: char) -> Option<Kind> {
        match c {
            'F' => Some(Kind::F),
            'B' => Some(Kind::B),
            'I' => Some(Kind::I),
            'W' => Some(Kind::W),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.letter())
    }
}

/// One step of one device: run `kind` of `stage` on `microbatch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Action {
    pub stage: usize,
    pub kind: Kind,
    pub microbatch: usize,
}

impl Action {
    pub fn new(stage: usize, kind: Kind, microbatch: usize) -> Action {
        Action {
            stage,
            kind,
            microbatch,
        }
    }

    /// The result this action makes available to others.
    pub fn produces(&self) -> Product {
        let what = match self.kind {
            Kind::F => Phase::Forward,
            Kind::B | Kind::I => Phase::Gradient,
            Kind::W => Phase::Weight,
        };
        Product {
            stage: self.stage,
            microbatch: self.microbatch,
            what,
        }
    }

    /// The results this action needs before it may start, in a pipeline of
    /// `stages` stages: F(s) needs F(s-1); B/I(s) need F(s) and the input
    /// gradient of s+1 (made by B or I); W(s) needs I(s).
    pub fn needs(&self, stages: usize) -> Vec<Product> {
        let (s, m) = (self.stage, self.microbatch);
        let at = |stage, what| Product {
            stage,
            microbatch: m,
            what,
        };
        match self.kind {
            Kind::F if s == 0 => vec![],
            Kind::F => vec![at(s - 1, Phase::Forward)],
            Kind::B | Kind::I if s + 1 >= stages => vec![at(s, Phase::Forward)],
            Kind::B | Kind::I => vec![at(s, Phase::Forward), at(s + 1, Phase::Gradient)],
            Kind::W => vec![at(s, Phase::Gradient)],
        }
    }
}

/// Which result of a (stage, microbatch) pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Activations out of the forward (made by F).
    Forward,
    /// Gradient w.r.t. the stage's input (made by B or I).
    Gradient,
    /// Weight gradient accumulated (made by W; B makes it implicitly).
    Weight,
}

/// A result of one stage on one microbatch, as named in dependency messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Product {
    pub stage: usize,
    pub microbatch: usize,
    pub what: Phase,
}

impl Product {
    /// Index into a dense table of 3 × stages × microbatches.
    pub(crate) fn index(&self, microbatches: usize) -> usize {
        let phase = match self.what {
            Phase::Forward => 0,
            Phase::Gradient => 1,
            Phase::Weight => 2,
        };
        (self.stage * microbatches + self.microbatch) * 3 + phase
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, m) = (self.stage, self.microbatch);
        match self.what {
            Phase::Forward => write!(f, "{s}F{m}"),
            Phase::Gradient => write!(f, "the input gradient of stage {s} ({s}B{m} or {s}I{m})"),
            Phase::Weight => write!(f, "{s}W{m}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.stage, self.kind, self.microbatch)
    }
}

impl FromStr for Action {
    type Err = ScheduleError;

    /// Parses `1F0`; surrounding whitespace is ignored.
    fn from_str(text: &str) -> Result<Action, ScheduleError> {
        let t = text.trim();
        let bad = |reason: &str| ScheduleError::BadAction {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let letter_at = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
            bad(if t.is_empty() {
                "it is empty"
            } else {
                "it has no kind letter (F, B, I or W)"
            })
        })?;
        if letter_at == 0 {
            return Err(bad("it does not start with a stage number"));
        }
        let (stage, rest) = t.split_at(letter_at);
        let mut chars = rest.chars();
        let letter = chars.next().unwrap_or(' ');
        let kind = Kind::from_letter(letter)
            .ok_or_else(|| bad(&format!("'{letter}' is not a kind; use F, B, I or W")))?;
        let mb = chars.as_str();
        if mb.is_empty() || !mb.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(
                "the kind letter must be followed by a microbatch number and nothing else",
            ));
        }
        let number = |digits: &str, what: &str| {
            digits
                .parse::<usize>()
                .map_err(|_| bad(&format!("the {what} number is too large")))
        };
        Ok(Action {
            stage: number(stage, "stage")?,
            kind,
            microbatch: number(mb, "microbatch")?,
        })
    }
}
