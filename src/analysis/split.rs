//! `--split auto`: measure what each kind of layer costs on each device of
//! the run ([`crate::workload::profile`]), then cut the model into the
//! contiguous split whose predicted makespan is shortest
//! ([`resolve_split`]).
//!
//! The chooser ([`choose_split`]) is a pure function of that cost table and
//! the schedule: the simulator's makespan with those stage times and free
//! transfers is what it minimises. For one chunk per device that makespan is
//! `Σ t_s + (M − 1) · max t_s` (the longest path through the fill-drain
//! grid), so the optimum is, for some bound τ on the slowest stage, the
//! split with the least total time whose stages all fit under τ. The chooser
//! finds that split for every τ that a stage could cost (a small dynamic
//! program each) and simulates each candidate. When the model has few enough
//! splits (GPT-2's 12 layers always do) every split is simulated too, so the
//! choice is the optimum; otherwise the best candidate is improved by moving
//! single layers between neighbouring stages — exact for one chunk per
//! device, a heuristic for interleaved placements.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::executor::{Cluster, DeviceGroup};
use crate::model::partition::{partition, Split};
use crate::model::StageSource;
use crate::schedule::{simulate, Costs, Schedule};
use crate::workload::profile::profile_layers_repeated;
pub use crate::workload::profile::{LayerCosts, Profile};

/// A split with its predicted stage times and makespan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SplitChoice {
    /// Layers per stage.
    pub split: Vec<usize>,
    pub stage_ms: Vec<f64>,
    /// The simulator's makespan of the schedule with these stage times and
    /// free transfers.
    pub makespan_ms: f64,
}

/// Splits with at most this many alternatives are all tried.
const EXHAUSTIVE: usize = 20_000;

/// Predict `split` on `schedule` with `profile`.
pub fn predict(profile: &Profile, schedule: &Schedule, split: &[usize]) -> Result<SplitChoice> {
    check_profile(profile, schedule)?;
    let n_layer = split.iter().sum();
    partition(n_layer, schedule.stages(), Some(split))?;
    let stage_ms = profile.stage_times(split);
    // A training schedule's backward actions are priced from the forward's
    // with the usual ratios (B = 2F, I = W = F); the profile times forwards.
    let scaled = |k: f64| stage_ms.iter().map(|t| k * t).collect::<Vec<_>>();
    let costs = Costs {
        forward: stage_ms.clone(),
        backward: scaled(2.0),
        input_grad: scaled(1.0),
        weight_grad: scaled(1.0),
        transfer: 0.0,
    };
    let makespan_ms = simulate(schedule, &costs)?.makespan;
    Ok(SplitChoice {
        split: split.to_vec(),
        stage_ms,
        makespan_ms,
    })
}

/// The split of `n_layer` layers over `schedule`'s stages with the shortest
/// predicted makespan (see the module doc). Ties go to the smaller slowest
/// stage, then to the earlier split in lexicographic order.
pub fn choose_split(profile: &Profile, schedule: &Schedule, n_layer: usize) -> Result<SplitChoice> {
    let stages = schedule.stages();
    partition(n_layer, stages, None)?; // enough layers for the stages
    if count_splits(n_layer, stages) <= EXHAUSTIVE {
        let mut all = bounded_candidates(profile, stages, n_layer);
        all.extend(all_splits(n_layer, stages));
        return best_of(profile, schedule, all);
    }
    bounded_split(profile, schedule, n_layer)
}

/// The best of every contiguous split, tried one by one: the reference the
/// chooser is tested against.
pub fn exhaustive_split(
    profile: &Profile,
    schedule: &Schedule,
    n_layer: usize,
) -> Result<SplitChoice> {
    partition(n_layer, schedule.stages(), None)?;
    best_of(profile, schedule, all_splits(n_layer, schedule.stages()))
}

/// The best of the bounded-slowest-stage candidates, and of the even
/// split, each improved by moving one layer at a time from one stage to
/// another while that shortens the makespan (no exhaustive check): exact
/// for one chunk per device, a heuristic for interleaved placements; public
/// for its test.
pub fn bounded_split(
    profile: &Profile,
    schedule: &Schedule,
    n_layer: usize,
) -> Result<SplitChoice> {
    let stages = schedule.stages();
    let even = partition(n_layer, stages, None)?;
    let even: Vec<usize> = even.iter().map(|p| p.layers.len()).collect();
    let starts = [
        best_of(
            profile,
            schedule,
            bounded_candidates(profile, stages, n_layer),
        )?,
        predict(profile, schedule, &even)?,
    ];
    let mut best: Option<SplitChoice> = None;
    for start in starts {
        let c = hill_climb(profile, schedule, start)?;
        if best.as_ref().is_none_or(|b| c.makespan_ms < b.makespan_ms) {
            best = Some(c);
        }
    }
    Ok(best.expect("two starts"))
}

/// Move one layer from any stage to any other while the best such move
/// shortens the makespan.
fn hill_climb(profile: &Profile, schedule: &Schedule, mut cur: SplitChoice) -> Result<SplitChoice> {
    let stages = cur.split.len();
    for _ in 0..cur.split.iter().sum::<usize>() * stages {
        let mut moves = Vec::new();
        for from in (0..stages).filter(|&i| cur.split[i] > 1) {
            for to in (0..stages).filter(|&j| j != from) {
                let mut v = cur.split.clone();
                v[from] -= 1;
                v[to] += 1;
                moves.push(v);
            }
        }
        if moves.is_empty() {
            break;
        }
        let next = best_of(profile, schedule, moves)?;
        if next.makespan_ms >= cur.makespan_ms {
            break;
        }
        cur = next;
    }
    Ok(cur)
}

fn best_of(
    profile: &Profile,
    schedule: &Schedule,
    candidates: impl IntoIterator<Item = Vec<usize>>,
) -> Result<SplitChoice> {
    let mut best: Option<SplitChoice> = None;
    for split in candidates {
        let c = predict(profile, schedule, &split)?;
        let key = |c: &SplitChoice| (c.makespan_ms, slowest(&c.stage_ms));
        let better = match &best {
            None => true,
            Some(b) => match key(&c).partial_cmp(&key(b)) {
                Some(std::cmp::Ordering::Less) => true,
                Some(std::cmp::Ordering::Equal) => c.split < b.split,
                _ => false,
            },
        };
        if better {
            best = Some(c);
        }
    }
    best.ok_or_else(|| Error::Input("no split to choose from".into()))
}

fn slowest(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn check_profile(profile: &Profile, schedule: &Schedule) -> Result<()> {
    if profile.devices.len() != schedule.devices {
        return Err(Error::Input(format!(
            "the layer profile covers {} devices but the schedule has {}",
            profile.devices.len(),
            schedule.devices
        )));
    }
    let bad = profile.devices.iter().position(|c| {
        [c.embedding_ms, c.block_ms, c.head_ms]
            .iter()
            .any(|x| !x.is_finite() || *x < 0.0)
    });
    if let Some(d) = bad {
        return Err(Error::Input(format!(
            "the layer profile of device {d} has a negative or non-finite time: {:?}",
            profile.devices[d]
        )));
    }
    Ok(())
}

/// For every bound τ a stage's time can take: the split with the least
/// total time whose stages all take at most τ (none when no split fits).
fn bounded_candidates(profile: &Profile, stages: usize, n_layer: usize) -> Vec<Vec<usize>> {
    let most = n_layer + 1 - stages; // the most layers one stage can hold
    let cost = |s: usize, n: usize| profile.stage_ms(s, stages, n);
    let mut bounds: Vec<f64> = (0..stages)
        .flat_map(|s| (1..=most).map(move |n| (s, n)))
        .map(|(s, n)| cost(s, n))
        .collect();
    bounds.sort_by(|a, b| a.total_cmp(b));
    bounds.dedup();
    let mut out: Vec<Vec<usize>> = Vec::new();
    for tau in bounds {
        // best[s][l]: least total time of stages 0..s holding layers 0..l.
        let mut best = vec![vec![f64::INFINITY; n_layer + 1]; stages + 1];
        let mut took = vec![vec![0usize; n_layer + 1]; stages + 1];
        best[0][0] = 0.0;
        for s in 0..stages {
            for l in 0..=n_layer {
                if !best[s][l].is_finite() {
                    continue;
                }
                for n in 1..=most.min(n_layer - l) {
                    let c = cost(s, n);
                    if c > tau {
                        break; // costs grow with n
                    }
                    if best[s][l] + c < best[s + 1][l + n] {
                        best[s + 1][l + n] = best[s][l] + c;
                        took[s + 1][l + n] = n;
                    }
                }
            }
        }
        if !best[stages][n_layer].is_finite() {
            continue;
        }
        let mut split = vec![0; stages];
        let mut l = n_layer;
        for s in (1..=stages).rev() {
            split[s - 1] = took[s][l];
            l -= took[s][l];
        }
        if !out.contains(&split) {
            out.push(split);
        }
    }
    out
}

/// How many ways `n` layers split into `k` non-empty contiguous stages:
/// C(n − 1, k − 1), saturating.
fn count_splits(n: usize, k: usize) -> usize {
    if k == 0 || n < k {
        return 0;
    }
    let (n, k) = (n - 1, (k - 1).min(n - k));
    let mut c: usize = 1;
    for i in 0..k {
        c = c.saturating_mul(n - i) / (i + 1);
        if c > EXHAUSTIVE {
            return usize::MAX;
        }
    }
    c
}

/// Every split of `n` layers into `k` non-empty stages, in lexicographic order.
pub fn all_splits(n: usize, k: usize) -> impl Iterator<Item = Vec<usize>> {
    let mut next = (k >= 1 && n >= k).then(|| {
        let mut v = vec![1; k];
        v[k - 1] = n - (k - 1);
        v
    });
    std::iter::from_fn(move || {
        let cur = next.take()?;
        // The next composition: find the rightmost stage (not the last) that
        // can grow, i.e. whose successors hold more than one layer each in
        // total beyond their minimum.
        let k = cur.len();
        let mut v = cur.clone();
        let mut i = k.wrapping_sub(2);
        while i < k {
            let rest: usize = v[i + 1..].iter().sum();
            if rest > k - 1 - i {
                v[i] += 1;
                for x in &mut v[i + 1..] {
                    *x = 1;
                }
                let head: usize = v[..k - 1].iter().sum();
                v[k - 1] = n - head;
                next = Some(v);
                break;
            }
            i = i.wrapping_sub(1);
        }
        Some(cur)
    })
}

/// The split a run uses, and for `--split auto` how it was chosen.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Chosen {
    /// `auto`, `even` or `layers`: what was asked for.
    pub asked: String,
    /// Layers per stage.
    pub split: Vec<usize>,
    /// With `auto`, when there was a choice to make: the profile, the chosen
    /// split and the even split, both predicted from the profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoSplit>,
}

/// How `--split auto` chose.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AutoSplit {
    pub profile: Profile,
    /// The split taken: the best, or the even one when the best's gain is
    /// within the profile's noise.
    pub chosen: SplitChoice,
    pub even: SplitChoice,
    /// The split with the shortest predicted makespan.
    pub best: SplitChoice,
    /// Even's predicted makespan minus the best's.
    pub gain_ms: f64,
    /// How far the prediction moves between the profile's repetitions:
    /// half the range, over the repetitions, of even's predicted makespan
    /// and of the best split's gain, whichever is larger.
    pub noise_ms: f64,
    /// Why the chosen split won, in words.
    pub why: String,
}

/// Profile iterations (microbatches) per layer kind and device, per
/// repetition, for `auto`.
pub const PROFILE_ITERATIONS: usize = 3;
/// Profile repetitions (runs) for `auto`: the spread between them is the
/// noise a gain must clear.
pub const PROFILE_REPEATS: usize = 3;

/// Turn `--split` into layers per stage for `schedule` on `groups`: counts
/// are checked, `even` is the even partition, and `auto` profiles every
/// layer kind on every device (microbatches of `per` × `seq` tokens) and
/// chooses — unless only one split exists, when nothing is profiled.
pub fn resolve_split(
    split: &Split,
    groups: &[DeviceGroup],
    cluster: &Cluster,
    w: &dyn StageSource,
    schedule: &Schedule,
    per: usize,
    seq: usize,
) -> Result<Chosen> {
    let (n_layer, stages) = (w.config().n_layer, schedule.stages());
    let counts =
        |parts: Vec<crate::model::StagePart>| parts.iter().map(|p| p.layers.len()).collect();
    let even: Vec<usize> = counts(partition(n_layer, stages, None)?);
    let (asked, split, auto) = match split {
        Split::Layers(v) => ("layers", counts(partition(n_layer, stages, Some(v))?), None),
        Split::Even => ("even", even, None),
        Split::Auto if !profiles(split, n_layer, stages) => ("auto", even, None),
        Split::Auto => {
            crate::executor::check_devices(schedule, groups)?;
            let profile = profile_layers_repeated(
                groups,
                cluster,
                w,
                (per, seq),
                PROFILE_ITERATIONS,
                PROFILE_REPEATS,
            )?;
            let auto = choose_stable(profile, schedule, &even)?;
            ("auto", auto.chosen.split.clone(), Some(auto))
        }
    };
    Ok(Chosen {
        asked: asked.into(),
        split,
        auto,
    })
}

/// `--split auto`'s choice from a (repeated) profile: the split with the
/// shortest predicted makespan, unless its gain over the even split is
/// within the profile's own noise (see [`AutoSplit::noise_ms`]), when the
/// even split is kept — so that runs of the same model on the same devices
/// do not take different splits from one profile's noise to the next.
pub fn choose_stable(profile: Profile, schedule: &Schedule, even: &[usize]) -> Result<AutoSplit> {
    let n_layer = even.iter().sum();
    let best = choose_split(&profile, schedule, n_layer)?;
    let even = predict(&profile, schedule, even)?;
    let gain_ms = even.makespan_ms - best.makespan_ms;
    let half_range = |v: Vec<f64>| {
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        if v.len() < 2 {
            0.0
        } else {
            (hi - lo) / 2.0
        }
    };
    let (mut evens, mut gains) = (Vec::new(), Vec::new());
    for rep in &profile.repetitions {
        let e = predict(rep, schedule, &even.split)?.makespan_ms;
        evens.push(e);
        gains.push(e - predict(rep, schedule, &best.split)?.makespan_ms);
    }
    let noise_ms = half_range(evens).max(half_range(gains));
    let d = |ms: f64| crate::trace::axis::duration(ms * 1e3);
    let pct = 100.0 * gain_ms / even.makespan_ms.max(f64::MIN_POSITIVE);
    let reps = profile.repetitions.len().max(1);
    let (chosen, why) = if best.split == even.split {
        (
            best.clone(),
            "the even split is the fastest predicted".to_string(),
        )
    } else if gain_ms > noise_ms {
        (
            best.clone(),
            format!(
                "beats even by {} ({pct:.1} %) per step, above the profile's noise of ±{} over {reps} repetitions",
                d(gain_ms),
                d(noise_ms)
            ),
        )
    } else {
        (
            even.clone(),
            format!(
                "kept even: the best split, {}, would gain {} ({pct:.1} %), within the profile's noise of ±{} over {reps} repetitions",
                join(&best.split),
                d(gain_ms),
                d(noise_ms)
            ),
        )
    };
    Ok(AutoSplit {
        profile,
        chosen,
        even,
        best,
        gain_ms,
        noise_ms,
        why,
    })
}

/// `3,1`.
fn join(v: &[usize]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One or a few lines: the split, and for `auto` the predicted stage times
/// against the even split's and the profile.
impl std::fmt::Display for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Chosen {
    fn describe(&self) -> String {
        let d = |ms: f64| crate::trace::axis::duration(ms * 1e3);
        let ms = |v: &[f64]| v.iter().map(|&t| d(t)).collect::<Vec<_>>().join(" / ");
        let Some(a) = &self.auto else {
            let why = match self.asked.as_str() {
                "auto" => "auto: the only split",
                "layers" => "pinned by --split",
                asked => asked,
            };
            return format!("split {} ({why})", join(&self.split));
        };
        let mut s = format!(
            "split auto: {} — {}; predicted time per microbatch by stage {} (makespan {}); even {} would be {} ({})",
            join(&a.chosen.split),
            a.why,
            ms(&a.chosen.stage_ms),
            d(a.chosen.makespan_ms),
            join(&a.even.split),
            ms(&a.even.stage_ms),
            d(a.even.makespan_ms)
        );
        for (i, c) in a.profile.devices.iter().enumerate() {
            s += &format!(
                "\n  profile device {i}: embedding {}, block {}, head {}",
                d(c.embedding_ms),
                d(c.block_ms),
                d(c.head_ms)
            );
        }
        s
    }
}

/// Whether [`resolve_split`] profiles for `split` of `n_layer` layers over
/// `stages` stages: `auto` when more than one split exists. It then needs
/// the tensors of [`crate::workload::profile::profile_parts`] on every device.
pub fn profiles(split: &Split, n_layer: usize, stages: usize) -> bool {
    matches!(split, Split::Auto) && count_splits(n_layer, stages) > 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::ScheduleKind;

    /// A small deterministic generator (no timing, no GPU).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn random_profile(rng: &mut Lcg, p: usize) -> Profile {
        Profile {
            devices: (0..p)
                .map(|_| LayerCosts {
                    embedding_ms: 5.0 * rng.next(),
                    block_ms: 1.0 + 9.0 * rng.next(),
                    head_ms: 30.0 * rng.next(),
                })
                .collect(),
            repetitions: Vec::new(),
        }
    }

    fn uniform(p: usize, block: f64, head: f64) -> Profile {
        Profile {
            devices: vec![
                LayerCosts {
                    embedding_ms: 0.1,
                    block_ms: block,
                    head_ms: head,
                };
                p
            ],
            repetitions: Vec::new(),
        }
    }

    /// A profile of `reps` repetitions of `uniform(2, block, head)`, the
    /// second device's block `jitter[r]` slower in repetition r.
    fn repeated(block: f64, head: f64, jitter: &[f64]) -> Profile {
        let reps: Vec<Profile> = jitter
            .iter()
            .map(|&j| {
                let mut p = uniform(2, block, head);
                p.devices[1].block_ms += j;
                p
            })
            .collect();
        Profile {
            devices: uniform(2, block, head).devices,
            repetitions: reps,
        }
    }

    #[test]
    fn a_gain_within_the_profiles_noise_keeps_the_even_split() {
        let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 4, 1).unwrap();
        // Equal devices and a head worth 1.2 blocks: 7,5 beats 6,6 by 5.7 ms
        // of 316, less than the repetitions move (a block ±5 ms on device 1).
        let a = choose_stable(repeated(10.0, 12.0, &[-5.0, 0.0, 5.0]), &s, &[6, 6]).unwrap();
        assert_ne!(a.best.split, vec![6, 6], "{a:?}");
        assert_eq!(a.chosen.split, vec![6, 6], "{a:?}");
        assert!(a.gain_ms > 0.0 && a.gain_ms <= a.noise_ms, "{a:?}");
        assert!(a.why.starts_with("kept even"), "{}", a.why);
        // The same profile measured steadily: the gain stands.
        let a = choose_stable(repeated(10.0, 12.0, &[0.0, 0.0, 0.0]), &s, &[6, 6]).unwrap();
        assert_eq!(a.chosen.split, a.best.split, "{a:?}");
        assert_eq!(a.noise_ms, 0.0);
        assert!(a.why.starts_with("beats even"), "{}", a.why);
        // A head worth 5 blocks: a gain far above the noise.
        let a = choose_stable(repeated(10.0, 50.0, &[-1.0, 0.0, 1.0]), &s, &[6, 6]).unwrap();
        assert_eq!(a.chosen.split, vec![8, 4], "{a:?}");
        let chosen = Chosen {
            asked: "auto".into(),
            split: a.chosen.split.clone(),
            auto: Some(a),
        };
        assert!(chosen.to_string().contains("beats even by"), "{chosen}");
    }

    #[test]
    fn a_pinned_split_says_so() {
        let c = Chosen {
            asked: "layers".into(),
            split: vec![3, 1],
            auto: None,
        };
        assert_eq!(c.to_string(), "split 3,1 (pinned by --split)");
    }

    #[test]
    fn auto_matches_trying_every_split_on_random_devices() {
        let mut rng = Lcg(7);
        for (p, m, layers) in [(2, 1, 12), (2, 4, 12), (2, 16, 12), (3, 8, 9), (4, 4, 12)] {
            let s = Schedule::for_inference(ScheduleKind::Gpipe, p, m, 1).unwrap();
            for _ in 0..8 {
                let prof = random_profile(&mut rng, p);
                let best = exhaustive_split(&prof, &s, layers).unwrap();
                // The bounded candidates alone are exact for one chunk per
                // device; the chooser adds the exhaustive check on top.
                let bounded = bounded_split(&prof, &s, layers).unwrap();
                let auto = choose_split(&prof, &s, layers).unwrap();
                assert!(
                    (bounded.makespan_ms - best.makespan_ms).abs() < 1e-9 * best.makespan_ms,
                    "P={p} M={m} {prof:?}: bounded {bounded:?} vs best {best:?}"
                );
                assert_eq!(auto.makespan_ms, best.makespan_ms);
                // Σ t + (M − 1)·max t is the fill-drain makespan.
                let sum: f64 = auto.stage_ms.iter().sum();
                let want = sum + (m - 1) as f64 * slowest(&auto.stage_ms);
                assert!((auto.makespan_ms - want).abs() < 1e-9 * want);
            }
        }
    }

    #[test]
    fn interleaved_placements_are_balanced_too() {
        let mut rng = Lcg(11);
        let (p, m, v, layers) = (2, 4, 2, 12);
        let s = Schedule::for_inference(ScheduleKind::Interleaved, p, m, v).unwrap();
        for _ in 0..24 {
            let prof = random_profile(&mut rng, p);
            let best = exhaustive_split(&prof, &s, layers).unwrap();
            let auto = choose_split(&prof, &s, layers).unwrap();
            assert_eq!(auto.split.len(), p * v);
            assert_eq!(auto.makespan_ms, best.makespan_ms);
            // Without the exhaustive check: within the 10 %.
            let bounded = bounded_split(&prof, &s, layers).unwrap();
            assert!(
                bounded.makespan_ms <= 1.1 * best.makespan_ms,
                "{prof:?}: {bounded:?} vs {best:?}"
            );
        }
    }

    #[test]
    fn a_heavy_head_and_a_slow_device_move_layers() {
        let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 8, 1).unwrap();
        // GPT-2: the head costs about two and a half blocks.
        let heavy = choose_split(&uniform(2, 1.0, 2.5), &s, 12).unwrap();
        assert_eq!(heavy.split, vec![7, 5]);
        assert!((heavy.stage_ms[0] - 7.1).abs() < 1e-12 && heavy.stage_ms[1] == 7.5);
        // Device 1 three times slower: it gets about a quarter of the blocks.
        let mut slow = uniform(2, 1.0, 0.0);
        slow.devices[1].block_ms = 3.0;
        let c = choose_split(&slow, &s, 12).unwrap();
        assert_eq!(c.split, vec![9, 3]);
    }

    #[test]
    fn bad_profiles_and_splits_are_refused() {
        let s = Schedule::for_inference(ScheduleKind::Gpipe, 2, 4, 1).unwrap();
        let e = choose_split(&uniform(3, 1.0, 1.0), &s, 12).unwrap_err();
        assert!(e.to_string().contains("covers 3 devices"), "{e}");
        let mut nan = uniform(2, 1.0, 1.0);
        nan.devices[1].head_ms = f64::NAN;
        let e = choose_split(&nan, &s, 12).unwrap_err();
        assert!(e.to_string().contains("device 1"), "{e}");
        let e = choose_split(&uniform(2, 1.0, 1.0), &s, 1).unwrap_err();
        assert!(e.to_string().contains("too few"), "{e}");
        let e = predict(&uniform(2, 1.0, 1.0), &s, &[12, 0]).unwrap_err();
        assert!(e.to_string().contains("stage 1 empty"), "{e}");
    }

    #[test]
    fn all_splits_are_every_composition_once() {
        let all: Vec<Vec<usize>> = all_splits(5, 3).collect();
        assert_eq!(all.len(), 6); // C(4, 2)
        assert_eq!(all[0], vec![1, 1, 3]);
        assert_eq!(all[5], vec![3, 1, 1]);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, all);
        assert!(all.iter().all(|s| s.iter().sum::<usize>() == 5));
        assert_eq!(all_splits(4, 1).collect::<Vec<_>>(), vec![vec![4]]);
        assert_eq!(all_splits(2, 3).count(), 0);
        for (n, k) in [(12, 2), (12, 4), (7, 7), (10, 3)] {
            assert_eq!(all_splits(n, k).count(), count_splits(n, k), "{n} {k}");
        }
    }
}
