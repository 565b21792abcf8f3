//! What a pipeline does, one action at a time: `1F0` = stage 1, forward,
//! microbatch 0; and what an action makes and needs ([`Product`]).
//!
//! A leaf module: schedules (generate, validate, simulate), the executor and
//! the trace all speak in these types, and it depends on none of them.
//!
//! The text form is PyTorch pipelining's compact one: stage digits, one kind
//! letter, microbatch digits. Dependencies between actions are stated here,
//! once, and every pass (validation, simulation, step alignment, the
//! executor's transfers) reads them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
            Kind::F => ProductKind::Activation,
            Kind::B | Kind::I => ProductKind::InputGradient,
            Kind::W => ProductKind::WeightGradient,
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
            Kind::F => vec![at(s - 1, ProductKind::Activation)],
            Kind::B | Kind::I if s + 1 >= stages => vec![at(s, ProductKind::Activation)],
            Kind::B | Kind::I => vec![
                at(s, ProductKind::Activation),
                at(s + 1, ProductKind::InputGradient),
            ],
            Kind::W => vec![at(s, ProductKind::InputGradient)],
        }
    }
}

/// What a [`Product`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ProductKind {
    /// The stage's output activation (made by F): the next stage's input.
    Activation,
    /// The gradient of the loss w.r.t. the stage's input (made by B or I):
    /// what the previous stage's backward starts from.
    InputGradient,
    /// The stage's weight gradient for the microbatch, accumulated (made by
    /// W; B makes it as part of the full backward). Stays on its device.
    WeightGradient,
}

/// A result of one stage on one microbatch. What moves between devices is
/// named by its product: an activation from stage s to s+1 and an input
/// gradient from stage s+1 to s alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Product {
    pub stage: usize,
    pub microbatch: usize,
    pub what: ProductKind,
}

impl Product {
    /// Index into a dense table of 3 × stages × microbatches.
    pub fn index(&self, microbatches: usize) -> usize {
        let what = match self.what {
            ProductKind::Activation => 0,
            ProductKind::InputGradient => 1,
            ProductKind::WeightGradient => 2,
        };
        (self.stage * microbatches + self.microbatch) * 3 + what
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, m) = (self.stage, self.microbatch);
        match self.what {
            ProductKind::Activation => write!(f, "{s}F{m}"),
            ProductKind::InputGradient => {
                write!(f, "the input gradient of stage {s} ({s}B{m} or {s}I{m})")
            }
            ProductKind::WeightGradient => write!(f, "{s}W{m}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.stage, self.kind, self.microbatch)
    }
}

/// Text that is not an action.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" is not an action: {reason} (expected stage, kind, microbatch, like 1F0)")]
pub struct ParseActionError {
    pub text: String,
    pub reason: String,
}

impl FromStr for Action {
    type Err = ParseActionError;

    /// Parses `1F0`; surrounding whitespace is ignored.
    fn from_str(text: &str) -> Result<Action, ParseActionError> {
        let t = text.trim();
        let bad = |reason: &str| ParseActionError {
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
