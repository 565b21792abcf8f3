//! `wgpipe plan --from-csv FILE`: generated CSV text (headers with any
//! numbers, cells of any action or none) and generated schedules' CSV,
//! edited; then validated and simulated as `plan` does.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

use crate::gen::*;
use crate::harness::*;
use wgpipe::schedule::{csv, simulate, validate::validate, Costs, Schedule, ScheduleKind};

pub const SCHEDULE: &str = "schedule.csv";

/// `wgpipe plan --from-csv FILE` with its default costs.
pub fn parse_schedule(
    dir: &Path,
) -> Result<(Schedule, wgpipe::schedule::Simulation), wgpipe::schedule::ScheduleError> {
    let s = csv::load(&dir.join(SCHEDULE))?;
    validate(&s)?;
    let costs = Costs::uniform(s.stages(), 1.0, 2.0, 1.0, 1.0, 0.0);
    let sim = simulate(&s, &costs)?;
    Ok((s, sim))
}

#[derive(Clone, Debug)]
pub enum CsvInput {
    Generated {
        header: Option<Vec<(String, String)>>,
        rows: Vec<Vec<String>>,
        crlf: bool,
    },
    /// A generated schedule's CSV, edited.
    Mutated {
        kind: &'static str,
        p: usize,
        m: usize,
        v: usize,
        forward_only: bool,
        edits: Vec<Edit>,
    },
}

impl CsvInput {
    fn generated(&self) -> Option<Schedule> {
        match *self {
            CsvInput::Mutated {
                kind,
                p,
                m,
                v,
                forward_only,
                ..
            } => {
                let kind: ScheduleKind = kind.parse().unwrap();
                Schedule::generate(kind, p, m, v, forward_only).ok()
            }
            _ => None,
        }
    }
}

impl Input for CsvInput {
    fn files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let text = match self {
            CsvInput::Generated { header, rows, crlf } => {
                let nl = if *crlf { "\r\n" } else { "\n" };
                let mut text = String::new();
                if let Some(fields) = header {
                    let f: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    text += &format!("# wgpipe schedule {}{nl}", f.join(" "));
                }
                for row in rows {
                    text += &row.join(",");
                    text += nl;
                }
                text.into_bytes()
            }
            CsvInput::Mutated { edits, .. } => {
                let mut bytes = self
                    .generated()
                    .map(|s| csv::to_csv(&s))
                    .unwrap_or_default()
                    .into_bytes();
                for e in edits {
                    apply(&mut bytes, e, 0..0);
                }
                bytes
            }
        };
        vec![(SCHEDULE, text)]
    }
}

pub fn csv_input() -> impl Strategy<Value = CsvInput> {
    let number = prop_oneof![
        6 => (0u64..6).prop_map(|n| n.to_string()),
        2 => select(INTERESTING).prop_map(|n| n.to_string()),
        1 => select(&["18446744073709551616", "x", "-1", "", "٣"][..]).prop_map(String::from),
    ];
    let header = prop_oneof![
        4 => (number.clone(), number.clone(), number.clone()).prop_map(|(p, v, m)| vec![
            ("name".to_string(), "gpipe".to_string()),
            ("devices".into(), p),
            ("virtual".into(), v),
            ("microbatches".into(), m),
        ]),
        1 => vec((select(&["name", "devices", "virtual", "microbatches", "x"][..]).prop_map(String::from), number), 0..5),
    ];
    let cell = prop_oneof![
        12 => (0u64..6, select(&["F", "B", "I", "W"][..]), 0u64..6).prop_map(|(s, k, m)| format!("{s}{k}{m}")),
        3 => Just(String::new()),
        2 => (count(), select(&["F", "B", "I", "W", "X", "f", ""][..]), count()).prop_map(|(s, k, m)| format!("{s}{k}{m}")),
        1 => select(&[" ", "F", "1F", "F1", "1F0x", "١F0", "99999999999999999999F0", "0F18446744073709551615",
            "18446744073709551615F0", " 1F0 ", "\"1F0\"", "#", "1F0\u{0}"][..]).prop_map(String::from),
    ];
    let generated = (
        proptest::option::weighted(0.6, header),
        vec(vec(cell, 0..8), 0..5),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(header, rows, crlf)| CsvInput::Generated { header, rows, crlf });
    let mutated = (
        select(&["gpipe", "1f1b", "interleaved", "zb-h1"][..]),
        1usize..5,
        1usize..7,
        1usize..3,
        any::<bool>(),
        prop_oneof![2 => Just(Vec::new()), 5 => vec(edit(), 1..4)],
    )
        .prop_map(|(kind, p, m, v, forward_only, edits)| CsvInput::Mutated {
            kind,
            p,
            m,
            v,
            forward_only,
            edits,
        });
    prop_oneof![1 => generated, 1 => mutated]
}

#[test]
fn fuzz_schedule_csv() {
    fuzz(
        "schedule_csv",
        "schedule_csv",
        5000,
        csv_input(),
        |dir, input| {
            let files = input.files();
            let n = total_len(&files);
            let loaded = guarded("csv::load", n, || csv::load(&dir.join(SCHEDULE)))?;
            let valid = match &loaded {
                Ok(s) => guarded("validate", n, || validate(s))?.map(|_| s),
                Err(_) => return Ok(Verdict::Refused),
            };
            if let (CsvInput::Mutated { edits, .. }, Some(s)) = (input, input.generated()) {
                if edits.is_empty() {
                    prop_assert_eq!(
                        loaded.as_ref().ok(),
                        Some(&s),
                        "the CSV does not round-trip"
                    );
                    prop_assert!(
                        valid.is_ok(),
                        "a generated schedule is invalid: {:?}",
                        valid.err()
                    );
                }
            }
            let Ok(s) = valid else {
                return Ok(Verdict::Refused);
            };
            // What validation passes, the simulator runs.
            let sim = guarded("simulate", n, || parse_schedule(dir))?
                .map_err(|e| TestCaseError::fail(format!("valid, but plan fails: {e}")))?;
            prop_assert_eq!(sim.1.slots.len(), s.actions().count());
            prop_assert!(
                (0.0..=1.0).contains(&sim.1.bubble),
                "bubble {}",
                sim.1.bubble
            );
            Ok(Verdict::Accepted)
        },
    )
}

/// A 50,000-device schedule whose backwards run against the device order
/// (each device's B waits for the next device's), one whose every device is
/// stuck, and a 4,000-device one with a row 80,000 cells wide: the walk
/// once revisited every device each round (P² steps), a deadlock report
/// searched all actions for each stuck device, and every error drew every
/// row as wide as the widest — minutes for files of a few hundred KB.
#[test]
fn csv_schedules_of_many_devices_or_wide_rows_are_linear() {
    let p = 50_000;
    let text: String = (0..p).map(|d| format!("{d}F0,{d}B0\n")).collect();
    let s = csv::from_csv(&text, "chain.csv").unwrap();
    validate(&s).unwrap();
    let sim = simulate(&s, &Costs::uniform(p, 1.0, 2.0, 1.0, 1.0, 0.0)).unwrap();
    // F runs down the chain (1 each), B back up (2 each).
    assert_eq!(sim.makespan, 3.0 * p as f64);

    // Device d first runs stage d + P (its second chunk), which needs stage
    // d + P - 1 from device d - 1's first step — itself stuck; device 0's
    // needs stage P - 1, device P - 1's second step.
    let text: String = (0..p).map(|d| format!("{}F0,{d}F0\n", d + p)).collect();
    let s = csv::from_csv(&text, "stuck.csv").unwrap();
    let msg = validate(&s).unwrap_err().to_string();
    assert!(msg.starts_with("the schedule deadlocks"), "{}", &msg[..200]);
    assert_eq!(
        msg.matches(" waits at step 0 on ").count(),
        p,
        "one line per device"
    );

    let p = 4_000;
    let mut text: String = (0..p).map(|d| format!("{d}F0\n")).collect();
    text += &",".repeat(20 * p);
    let s = csv::from_csv(&text, "wide.csv").unwrap();
    let msg = validate(&s).unwrap_err().to_string();
    assert!(
        msg.contains("4000 rows but 4001 devices") || msg.contains("4001"),
        "{}",
        &msg[..200.min(msg.len())]
    );
}
