//! Schedules: generators against the seed's bubble table and the papers'
//! formulas, memory, validation, CSV, parsing, deadlock, and the renderers.

use proptest::prelude::*;
use wgpipe::schedule::ScheduleKind::{self, Gpipe, Interleaved, OneFOneB, ZbH1};
use wgpipe::schedule::{
    analytic, csv, grid, simulate, validate::validate, Action, Costs, Kind, Schedule, ScheduleError,
};
use wgpipe::trace::{chrome::to_chrome_json, svg::gantt_svg, Timeline, Track};

fn make(kind: ScheduleKind, p: usize, m: usize, v: usize, forward_only: bool) -> Schedule {
    Schedule::generate(kind, p, m, v, forward_only)
        .unwrap_or_else(|e| panic!("{kind} P={p} M={m} v={v}: {e}"))
}

/// F=1, B=2, I=W=1, free transfers: the default costs of `wgpipe plan`.
fn run(s: &Schedule) -> wgpipe::schedule::Simulation {
    simulate(s, &Costs::uniform(s.stages(), 1.0, 2.0, 1.0, 1.0, 0.0)).unwrap()
}

fn a(text: &str) -> Action {
    text.parse().unwrap()
}

#[test]
fn seed_table_is_reproduced_exactly() {
    // The seed: P=4; M=4 → 43 %, 8 → 27 %, 16 → 16 %, 32 → 9 %.
    for (m, percent) in [(4, 43.0), (8, 27.0), (16, 16.0), (32, 9.0)] {
        let analytic = analytic::fill_drain(4, m);
        assert_eq!((analytic * 100.0).round(), percent);
        // Inference, and training with equal forward and backward times.
        let inference = make(Gpipe, 4, m, 1, true);
        let training = make(Gpipe, 4, m, 1, false);
        for (s, b) in [(&inference, 1.0), (&training, 1.0)] {
            let sim = simulate(s, &Costs::uniform(4, 1.0, b, 1.0, 1.0, 0.0)).unwrap();
            assert!(
                (sim.bubble - analytic).abs() < 1e-9,
                "M={m}: simulated {} vs {analytic}",
                sim.bubble
            );
            assert_eq!((sim.bubble * 100.0).round(), percent);
        }
        // 1F1B reorders but keeps the fill-drain bubble (with B = 2F too).
        let one_f_one_b = run(&make(OneFOneB, 4, m, 1, false));
        assert!((one_f_one_b.bubble - analytic).abs() < 1e-9);
        assert!((analytic::bubble(OneFOneB, 4, m, 1, false) - analytic).abs() < 1e-12);
    }
}

#[test]
fn interleaving_with_two_chunks_about_halves_the_bubble() {
    let plain = run(&make(OneFOneB, 4, 32, 1, false)).bubble;
    let chunked = run(&make(Interleaved, 4, 32, 2, false)).bubble;
    let ratio = plain / chunked;
    assert!(
        (1.8..=2.05).contains(&ratio),
        "1F1B {plain} / interleaved {chunked} = {ratio}"
    );
    assert!((chunked - analytic::interleaved(4, 32, 2)).abs() < 1e-9);
    // Inference too, for an M that is not a multiple of P.
    let plain = run(&make(Gpipe, 4, 30, 1, true)).bubble;
    let chunked = run(&make(Interleaved, 4, 30, 2, true)).bubble;
    assert!((chunked - analytic::interleaved_forward_only(4, 30, 2)).abs() < 1e-9);
    assert!(
        (1.8..=2.05).contains(&(plain / chunked)),
        "{plain} / {chunked}"
    );
}

#[test]
fn one_f_one_b_holds_p_microbatches_where_gpipe_holds_m() {
    let gpipe = run(&make(Gpipe, 4, 16, 1, false));
    let ofob = run(&make(OneFOneB, 4, 16, 1, false));
    assert_eq!(gpipe.peak_activations, vec![16; 4]);
    assert_eq!(ofob.peak_activations, vec![4, 3, 2, 1]);
    let zb = run(&make(ZbH1, 4, 16, 1, false));
    assert_eq!(zb.peak_activations, ofob.peak_activations);
}

#[test]
fn zb_h1_bubble_is_a_third_of_1f1b() {
    // Equal F, I, W (1F1B's B = I + W = 2).
    for m in [4, 8, 32] {
        let ofob = run(&make(OneFOneB, 4, m, 1, false));
        let zb = run(&make(ZbH1, 4, m, 1, false));
        for d in 0..4 {
            assert!(
                (zb.idle[d] * 3.0 - ofob.idle[d]).abs() < 1e-9,
                "M={m} device {d}: {} vs {}",
                zb.idle[d],
                ofob.idle[d]
            );
        }
        assert!((zb.bubble - analytic::zb_h1(4, m)).abs() < 1e-9);
    }
    let ratio =
        run(&make(ZbH1, 4, 32, 1, false)).bubble / run(&make(OneFOneB, 4, 32, 1, false)).bubble;
    assert!((0.33..0.37).contains(&ratio), "ratio {ratio}");
}

#[test]
fn refusals_say_what_would_work() {
    let e = Schedule::generate(Interleaved, 4, 6, 2, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "interleaved 1F1B needs the microbatch count to be a multiple of the device count (M=6, P=4); try --microbatches 8, or --forward-only"
    );
    let e = Schedule::generate(OneFOneB, 4, 8, 2, false).unwrap_err();
    assert!(
        e.to_string()
            .contains("use --schedule interleaved --virtual 2"),
        "{e}"
    );
    let e = Schedule::generate(ZbH1, 4, 8, 1, true).unwrap_err();
    assert!(
        e.to_string().contains("--schedule gpipe --forward-only"),
        "{e}"
    );
    let e = "pipedream".parse::<ScheduleKind>().unwrap_err();
    assert!(matches!(e, ScheduleError::UnknownSchedule { .. }));
    let e = Schedule::generate(Gpipe, 0, 8, 1, false).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a schedule needs at least one device (got --devices 0)"
    );
}

#[test]
fn forward_part_of_a_training_schedule_is_gpipe_inference() {
    let ofob = make(OneFOneB, 4, 8, 1, false);
    let inference = make(Gpipe, 4, 8, 1, true);
    assert!(!ofob.is_forward_only());
    let fwd = ofob.forward_part();
    assert!(fwd.is_forward_only());
    assert_eq!(fwd.rows, inference.rows);
}

#[test]
fn a_swapped_dependency_is_rejected_with_the_cell_marked() {
    let mut s = make(OneFOneB, 2, 2, 1, false);
    // Device 0: 0F0 0F1 . . 0B0 0F? … — put 0B0 before 0F0.
    let row = &mut s.rows[0];
    let f = row.iter().position(|c| *c == Some(a("0F0"))).unwrap();
    let b = row.iter().position(|c| *c == Some(a("0B0"))).unwrap();
    row.swap(f, b);
    let e = validate(&s).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ScheduleError::Invalid { .. }));
    assert!(
        msg.contains("0B0 needs 0F0, which comes after it on the same device"),
        "{msg}"
    );
    assert!(msg.contains("[0B0]") && msg.contains("<-- here"), "{msg}");
}

#[test]
fn missing_duplicate_and_misplaced_actions_are_rejected() {
    let mut s = make(Gpipe, 2, 2, 1, false);
    s.rows[1].retain(|c| *c != Some(a("1B1")));
    let msg = validate(&s).unwrap_err().to_string();
    assert!(
        msg.contains("stage 1 microbatch 1 has no backward"),
        "{msg}"
    );

    let mut s = make(Gpipe, 2, 2, 1, true);
    s.rows[0].push(Some(a("0F1")));
    let msg = validate(&s).unwrap_err().to_string();
    assert!(
        msg.contains("0F1 appears twice") && msg.contains("[0F1]"),
        "{msg}"
    );

    let mut s = make(Gpipe, 2, 2, 1, true);
    s.rows[0][0] = Some(a("1F0"));
    let msg = validate(&s).unwrap_err().to_string();
    assert!(
        msg.contains("stage 1 lives on device 1, not device 0") && msg.contains("[1F0]"),
        "{msg}"
    );

    let mut s = make(ZbH1, 2, 2, 1, false);
    s.rows[1].retain(|c| *c != Some(a("1W0")));
    let msg = validate(&s).unwrap_err().to_string();
    assert!(msg.contains("1I0 has no matching 1W0"), "{msg}");
}

fn deadlocked() -> Schedule {
    // Device 0 waits for 1B0 before it sends 0F1; device 1 waits for 0F1 first.
    let row = |cells: &[&str]| cells.iter().map(|c| Some(a(c))).collect();
    Schedule {
        name: "hand".into(),
        devices: 2,
        virtual_stages: 1,
        microbatches: 2,
        rows: vec![
            row(&["0F0", "0B0", "0F1", "0B1"]),
            row(&["1F1", "1B1", "1F0", "1B0"]),
        ],
        feedback: 0,
    }
}

#[test]
fn deadlock_says_who_waits_on_what() {
    let s = deadlocked();
    let e = simulate(&s, &Costs::uniform(2, 1.0, 2.0, 1.0, 1.0, 0.0)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ScheduleError::Deadlock { .. }));
    assert!(msg.contains("device 0 waits at step 1 on 0B0: it needs 1B0, which device 1 would run at step 3 but is itself stuck at step 0"), "{msg}");
    assert!(msg.contains("device 1 waits at step 0 on 1F1: it needs 0F1, which device 0 would run at step 2 but is itself stuck at step 1"), "{msg}");
    assert!(msg.contains("[0B0]") && msg.contains("[1F1]"), "{msg}");
    // Validation runs the same check.
    assert!(matches!(validate(&s), Err(ScheduleError::Deadlock { .. })));
}

#[test]
fn actions_print_and_parse() {
    let x = Action::new(12, Kind::I, 3);
    assert_eq!(x.to_string(), "12I3");
    assert_eq!(" 12I3 ".parse::<Action>().unwrap(), x);
    for (bad, why) in [
        ("1X0", "'X' is not a kind"),
        ("F0", "does not start with a stage number"),
        ("1F", "followed by a microbatch number"),
        ("1F0x", "followed by a microbatch number"),
        ("", "it is empty"),
        ("12", "no kind letter"),
        ("99999999999999999999999F0", "stage number is too large"),
    ] {
        let e = bad.parse::<Action>().unwrap_err();
        assert_eq!(e.text, bad);
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
}

#[test]
fn csv_round_trips_and_reads_hand_written_files() {
    for (kind, v) in [(Gpipe, 1), (OneFOneB, 1), (Interleaved, 2), (ZbH1, 1)] {
        let s = make(kind, 3, 6, v, false);
        let back = csv::from_csv(&csv::to_csv(&s), "x.csv").unwrap();
        assert_eq!(back, s);
    }
    let hand = "0F0,0F1,,0B0,0B1\n,1F0,1B0,1F1,1B1\n";
    let s = csv::from_csv(hand, "dir/mine.csv").unwrap();
    assert_eq!(
        (s.name.as_str(), s.devices, s.virtual_stages, s.microbatches),
        ("mine", 2, 1, 2)
    );
    assert_eq!(s.rows[0][2], None);
    assert_eq!(s.rows[1][2], Some(a("1B0")));
    validate(&s).unwrap();
    let e = csv::from_csv("0F0\n1F0,1Q0\n", "bad.csv").unwrap_err();
    assert_eq!(
        e.to_string(),
        "bad.csv: line 2, cell 2: \"1Q0\" is not an action: 'Q' is not a kind; use F, B, I or W (expected stage, kind, microbatch, like 1F0)"
    );
}

#[test]
fn costs_of_the_wrong_length_are_refused() {
    let s = make(Gpipe, 4, 4, 1, false);
    let e = simulate(&s, &Costs::uniform(3, 1.0, 2.0, 1.0, 1.0, 0.0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the forward costs list 3 stages, but the schedule has 4"
    );
}

#[test]
fn transfers_delay_the_consumer_but_occupy_no_device() {
    let s = make(Gpipe, 2, 1, 1, true);
    let sim = simulate(&s, &Costs::uniform(2, 1.0, 2.0, 1.0, 1.0, 0.5)).unwrap();
    assert!((sim.makespan - 2.5).abs() < 1e-12);
    assert_eq!(sim.transfers.len(), 1);
    let hop = sim.transfers[0];
    assert_eq!((hop.from, hop.to, hop.action), (0, 1, a("1F0")));
    assert_eq!((hop.start, hop.end), (1.0, 1.5));
    assert_eq!(sim.busy, vec![1.0, 1.0]);
    // The same as a trace timeline.
    let timeline = Timeline::from_simulation(&sim);
    let t: Vec<_> = timeline
        .events
        .iter()
        .filter(|e| matches!(e.track, Track::Transfer { .. }))
        .collect();
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].name, "1F0 0->1");
    assert_eq!((t[0].start_us, t[0].end_us), (1.0, 1.5));
    let stats = timeline.stats();
    assert_eq!(stats.busy_us, sim.busy);
    assert_eq!(
        (stats.makespan_us, stats.bubble, &stats.idle_us),
        (sim.makespan, sim.bubble, &sim.idle)
    );
}

#[test]
fn chrome_trace_has_a_named_track_per_device_and_transfer() {
    let s = make(OneFOneB, 3, 4, 1, false);
    let sim = simulate(&s, &Costs::uniform(3, 1.0, 2.0, 1.0, 1.0, 0.25)).unwrap();
    let timeline = Timeline::from(&sim);
    let j = to_chrome_json(&timeline);
    let events = j["traceEvents"].as_array().unwrap();
    let names: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap())
        .collect();
    // 3 devices, then transfers 0->1, 1->0, 1->2, 2->1 (forward and backward).
    assert_eq!(
        names,
        [
            "device 0",
            "device 1",
            "device 2",
            "transfer 0->1",
            "transfer 1->0",
            "transfer 1->2",
            "transfer 2->1"
        ]
    );
    let x: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(x.len(), timeline.events.len());
    assert_eq!(x.len(), sim.slots.len() + sim.transfers.len());
    let first = x.iter().find(|e| e["name"] == "1F2").unwrap();
    assert_eq!(first["tid"], 1);
    assert_eq!(first["args"]["stage"], 1);
    assert_eq!(first["args"]["microbatch"], 2);
    assert_eq!(first["args"]["kind"], "F");
    assert_eq!(first["dur"], 1.0);
    let t = x.iter().find(|e| e["cat"] == "transfer").unwrap();
    assert_eq!(t["args"]["bytes"], 0);
    assert_eq!(t["dur"], 0.25);
}

#[test]
fn svg_has_one_row_per_device() {
    for p in [1, 4, 7] {
        let s = make(ZbH1, p, 8, 1, false);
        let svg = gantt_svg(&Timeline::from_simulation(&run(&s)), "zb-h1");
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches(r#"class="row""#).count(), p);
        assert_eq!(svg.matches("<title>").count(), p * 8 * 3);
        assert!(svg.contains("fill=\"url(#idle)\""));
    }
}

#[test]
fn the_grid_marks_a_cell() {
    let s = make(OneFOneB, 2, 2, 1, false);
    let g = grid::render(&s, &[(0, 1)]);
    assert_eq!(
        g,
        "step     0    1    2    3    4    5\n\
         dev 0  0F0 [0F1]   .  0B0    .  0B1  <-- here\n\
         dev 1    .  1F0  1B0  1F1  1B1\n"
    );
}

/// The one documented refusal condition per generator.
fn refused(kind: ScheduleKind, p: usize, m: usize, v: usize, fwd: bool) -> bool {
    match kind {
        Gpipe => v > 1,
        OneFOneB | ZbH1 => v > 1 || fwd,
        Interleaved => !fwd && v > 1 && !m.is_multiple_of(p),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn every_generated_schedule_validates_and_simulates(p in 1usize..=16, m in 1usize..=64, v in 1usize..=4) {
        for kind in ScheduleKind::ALL {
            for fwd in [false, true] {
                let s = match Schedule::generate(kind, p, m, v, fwd) {
                    Err(e) => {
                        prop_assert!(refused(kind, p, m, v, fwd), "{kind} P={p} M={m} v={v} fwd={fwd} refused: {e}");
                        continue;
                    }
                    Ok(s) => s,
                };
                prop_assert!(!refused(kind, p, m, v, fwd), "{kind} P={p} M={m} v={v} fwd={fwd} accepted");
                prop_assert_eq!(s.is_forward_only(), fwd);
                validate(&s).map_err(|e| TestCaseError::fail(format!("{kind} P={p} M={m} v={v}: {e}")))?;
                let sim = run(&s);
                let per_device = if fwd { m * s.virtual_stages } else if kind == ZbH1 { 3 * m } else { 2 * m * s.virtual_stages };
                for d in 0..p {
                    prop_assert_eq!(s.rows[d].iter().flatten().count(), per_device);
                }
                // Generated grids are step-aligned: what an action needs sits in an earlier column.
                let col: std::collections::HashMap<_, _> = s.actions().map(|(_, step, a)| (a.produces(), step)).collect();
                for (_, step, a) in s.actions() {
                    for n in a.needs(s.stages()) {
                        prop_assert!(col[&n] < step, "{kind}: {a} at step {step} needs {n} at {}", col[&n]);
                    }
                }
                if !fwd && v == 1 && kind != ZbH1 {
                    prop_assert!((sim.bubble - analytic::fill_drain(p, m)).abs() < 1e-9);
                }
                if !fwd && kind == ZbH1 && m >= p {
                    prop_assert!((sim.bubble - analytic::zb_h1(p, m)).abs() < 1e-9, "zb-h1 P={p} M={m}: {}", sim.bubble);
                }
                if !fwd && kind == Interleaved {
                    prop_assert!((sim.bubble - analytic::interleaved(p, m, v)).abs() < 1e-9, "interleaved P={p} M={m} v={v}: {}", sim.bubble);
                }
                if fwd {
                    prop_assert!((sim.bubble - analytic::bubble(kind, p, m, v, true)).abs() < 1e-9);
                }
                if kind == OneFOneB || kind == ZbH1 {
                    prop_assert_eq!(sim.peak_activations[0], p.min(m));
                }
                if kind == Gpipe && !fwd {
                    prop_assert_eq!(sim.peak_activations[0], m);
                }
            }
        }
    }
}

#[test]
fn the_analytic_inference_bubble_is_that_of_what_inference_runs() {
    // 1F1B's and ZB-H1's forward part is GPipe's fill-drain; interleaved's
    // forward-only form has its own formula.
    for kind in ScheduleKind::ALL {
        let v = if kind == Interleaved { 2 } else { 1 };
        for (p, m) in [(2, 1), (4, 3), (4, 8), (3, 7)] {
            let s = Schedule::for_inference(kind, p, m, v).unwrap();
            let analytic = analytic::bubble(kind, p, m, v, true);
            assert!(
                (run(&s).bubble - analytic).abs() < 1e-9,
                "{kind} P={p} M={m} v={v}: simulated {} vs analytic {analytic}",
                run(&s).bubble
            );
        }
    }
}

#[test]
fn output_files_are_replaced_whole_or_not_at_all() {
    let dir = std::env::temp_dir().join(format!("wgpipe-atomic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("g.csv");
    let s = make(OneFOneB, 2, 2, 1, false);
    csv::save(&s, &path).unwrap();
    assert_eq!(csv::load(&path).unwrap(), s);
    // A writer that fails half-way leaves the old file and no temporary one.
    let e = wgpipe::io::write_atomic_with(
        &path,
        |tmp| {
            std::fs::write(tmp, "partial").unwrap();
            Err("disk full")
        },
        |_| "io",
    )
    .unwrap_err();
    assert_eq!(e, "disk full");
    assert_eq!(csv::load(&path).unwrap(), s);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["g.csv"]);
    let e = csv::write_file(&dir, b"x").unwrap_err();
    assert!(matches!(e, ScheduleError::OutputIsDirectory { .. }), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
