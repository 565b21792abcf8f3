//! Partitioning: which layers each pipeline stage holds.
//!
//! Stages are numbered like the schedule's: S = P·v stages, stage s on device
//! s % P. With v = 1 each device holds one contiguous block of layers; with
//! v > 1 the layers are cut into S contiguous chunks and device d holds chunks
//! d, d+P, d+2P, … (Megatron's interleaving). The embedding lives with stage
//! 0, ln_f and the LM head with stage S−1.

use crate::error::{Error, Result};
use crate::model::weights::StagePart;

/// How the layers are cut into stages (`--split`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// Profile every layer kind on every device of the run and take the
    /// split with the shortest predicted makespan ([`super::balance`]).
    #[default]
    Auto,
    /// As even as possible, earlier stages taking the remainder.
    Even,
    /// Layers per stage, e.g. `7,5`.
    Layers(Vec<usize>),
}

impl std::str::FromStr for Split {
    type Err = Error;

    /// `auto`, `even`, or a comma-separated count per stage (`7,5`).
    fn from_str(s: &str) -> Result<Split> {
        match s.trim() {
            "auto" => Ok(Split::Auto),
            "even" => Ok(Split::Even),
            list => list
                .split(',')
                .map(|c| {
                    c.trim().parse::<usize>().map_err(|_| {
                        Error::Input(format!(
                            "--split {s}: `{c}` is not a layer count; give auto, even, or counts per stage like 7,5"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()
                .map(Split::Layers),
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Split::Auto => write!(f, "auto"),
            Split::Even => write!(f, "even"),
            Split::Layers(v) => write!(f, "{}", join(v)),
        }
    }
}

/// Layers per stage: `split` if given (one count per stage, adding up to
/// `n_layer`, none zero), else as even as possible (earlier stages take the
/// remainder).
pub fn partition(n_layer: usize, stages: usize, split: Option<&[usize]>) -> Result<Vec<StagePart>> {
    let counts: Vec<usize> = match split {
        Some(s) => {
            if s.len() != stages {
                return Err(Error::Input(format!(
                    "--split has {} entries but the pipeline has {stages} stages (devices x virtual); give one layer count per stage",
                    s.len()
                )));
            }
            let total: usize = s.iter().sum();
            if total != n_layer {
                return Err(Error::Input(format!(
                    "--split {} adds up to {total} layers but the model has {n_layer}",
                    join(s)
                )));
            }
            if let Some(i) = s.iter().position(|&c| c == 0) {
                return Err(Error::Input(format!(
                    "--split {} leaves stage {i} empty; every stage needs at least one layer",
                    join(s)
                )));
            }
            s.to_vec()
        }
        None => {
            if n_layer < stages {
                return Err(Error::Input(format!(
                    "the model has {n_layer} layers, too few for {stages} stages (devices x virtual): every stage needs at least one layer; use fewer devices or chunks"
                )));
            }
            (0..stages)
                .map(|i| n_layer / stages + usize::from(i < n_layer % stages))
                .collect()
        }
    };
    let mut start = 0;
    Ok(counts
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let part = StagePart {
                layers: start..start + c,
                embedding: i == 0,
                head: i + 1 == stages,
            };
            start += c;
            part
        })
        .collect())
}

/// The stages device `d` of `devices` holds out of `stages`: d, d+P, d+2P, …
pub fn device_stages(stages: usize, devices: usize, d: usize) -> impl Iterator<Item = usize> {
    (d..stages).step_by(devices.max(1))
}

/// The parts device `d` holds of `parts` (all the stages, in order) when
/// they are spread over `devices` devices.
pub fn device_parts(parts: &[StagePart], devices: usize, d: usize) -> Vec<StagePart> {
    device_stages(parts.len(), devices, d)
        .map(|s| parts[s].clone())
        .collect()
}

fn join(s: &[usize]) -> String {
    s.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_gives_the_remainder_to_early_stages() {
        let p = partition(7, 3, None).unwrap();
        let layers: Vec<_> = p.iter().map(|s| s.layers.clone()).collect();
        assert_eq!(layers, vec![0..3, 3..5, 5..7]);
        assert!(p[0].embedding && !p[0].head && p[2].head && !p[2].embedding);
    }

    #[test]
    fn explicit_split_is_checked() {
        assert_eq!(partition(12, 3, Some(&[3, 5, 4])).unwrap()[1].layers, 3..8);
        assert!(partition(12, 3, Some(&[3, 5, 5]))
            .unwrap_err()
            .to_string()
            .contains("adds up to 13"));
        assert!(partition(12, 3, Some(&[12, 0, 0]))
            .unwrap_err()
            .to_string()
            .contains("stage 1 empty"));
        assert!(partition(12, 3, Some(&[6, 6]))
            .unwrap_err()
            .to_string()
            .contains("3 stages"));
        assert!(partition(2, 3, None)
            .unwrap_err()
            .to_string()
            .contains("too few"));
    }

    #[test]
    fn split_parses_auto_even_and_counts() {
        assert_eq!("auto".parse::<Split>().unwrap(), Split::Auto);
        assert_eq!("even".parse::<Split>().unwrap(), Split::Even);
        assert_eq!("7,5".parse::<Split>().unwrap(), Split::Layers(vec![7, 5]));
        assert_eq!(Split::Layers(vec![7, 5]).to_string(), "7,5");
        let e = "7,x".parse::<Split>().unwrap_err().to_string();
        assert!(e.contains("`x` is not a layer count"), "{e}");
        assert_eq!(Split::default(), Split::Auto);
    }

    #[test]
    fn one_stage_holds_everything() {
        let p = partition(4, 1, None).unwrap();
        assert_eq!(p[0].layers, 0..4);
        assert!(p[0].embedding && p[0].head);
    }
}
