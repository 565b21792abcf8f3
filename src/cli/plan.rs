//! `wgpipe plan`: generate (or load) a schedule, validate and simulate it,
//! and show the grid, the simulated and analytic bubble and the peak
//! activation memory per device; optionally as JSON, an SVG Gantt chart, or
//! a CSV export.

use std::path::PathBuf;

use wgpipe::schedule::report::{mode, PlanReport};
use wgpipe::schedule::{csv, simulate, validate, Costs, Schedule, ScheduleError, ScheduleKind};
use wgpipe::trace::{svg::gantt_svg, Timeline};

use super::Context;

/// Flags of `wgpipe plan`.
#[derive(clap::Args, Debug, Clone)]
pub struct PlanArgs {
    /// Schedule generator.
    #[arg(
        long,
        value_enum,
        required_unless_present = "from_csv",
        conflicts_with = "from_csv"
    )]
    pub schedule: Option<ScheduleKind>,
    /// Pipeline devices P.
    #[arg(
        long,
        short = 'p',
        required_unless_present = "from_csv",
        conflicts_with = "from_csv"
    )]
    pub devices: Option<usize>,
    /// Microbatches M.
    #[arg(
        long,
        short = 'm',
        required_unless_present = "from_csv",
        conflicts_with = "from_csv"
    )]
    pub microbatches: Option<usize>,
    /// Chunks (virtual stages) per device v; every schedule accepts 1.
    #[arg(long = "virtual", default_value_t = 1)]
    pub virtual_stages: usize,
    /// Inference: forwards only.
    #[arg(long, conflicts_with = "from_csv")]
    pub forward_only: bool,
    /// Print the figures as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the simulated timeline as an SVG Gantt chart.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// Export the schedule as CSV (which --from-csv loads back).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Load a schedule from CSV (hand-written or exported) instead of generating one.
    #[arg(long, value_name = "FILE")]
    pub from_csv: Option<PathBuf>,
    /// Time of one forward (F) per stage.
    #[arg(long, default_value_t = 1.0)]
    pub forward_time: f64,
    /// Time of one full backward (B) per stage.
    #[arg(long, default_value_t = 2.0)]
    pub backward_time: f64,
    /// Time of one input-gradient backward (I) per stage.
    #[arg(long, default_value_t = 1.0)]
    pub input_grad_time: f64,
    /// Time of one weight-gradient backward (W) per stage.
    #[arg(long, default_value_t = 1.0)]
    pub weight_grad_time: f64,
    /// Time of one transfer between devices.
    #[arg(long, default_value_t = 0.0)]
    pub transfer_time: f64,
}

/// Runs `wgpipe plan`.
pub fn run(args: &PlanArgs, cx: &Context) -> Result<(), ScheduleError> {
    let schedule = load_or_generate(args)?;
    validate::validate(&schedule)?;
    let costs = Costs::uniform(
        schedule.stages(),
        args.forward_time,
        args.backward_time,
        args.input_grad_time,
        args.weight_grad_time,
        args.transfer_time,
    );
    let sim = simulate(&schedule, &costs)?;
    let report = PlanReport::new(&schedule, &sim, &costs);
    if let Some(path) = &args.csv {
        csv::save(&schedule, path)?;
    }
    if let Some(path) = &args.svg {
        let s = &schedule;
        let title = format!(
            "{} — P={} M={} v={}{}",
            s.name,
            s.devices,
            s.microbatches,
            s.virtual_stages,
            mode(s)
        );
        let timeline = Timeline::from_simulation(&sim);
        csv::write_file(path, gantt_svg(&timeline, &title).as_bytes())?;
    }
    match args.json {
        true => cx.print_json(&report),
        false => cx.print(report.text()),
    }
    Ok(())
}

/// The schedule of `--from-csv`, or the one `--schedule` generates.
fn load_or_generate(args: &PlanArgs) -> Result<Schedule, ScheduleError> {
    match (&args.from_csv, args.schedule) {
        (Some(path), _) => csv::load(path),
        // clap requires --schedule without --from-csv; 1F1B if a caller did not.
        (None, kind) => Schedule::generate(
            kind.unwrap_or(ScheduleKind::OneFOneB),
            args.devices.unwrap_or(0),
            args.microbatches.unwrap_or(0),
            args.virtual_stages,
            args.forward_only,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        plan: PlanArgs,
    }

    fn args(line: &str) -> PlanArgs {
        Cli::try_parse_from(std::iter::once("plan").chain(line.split_whitespace()))
            .unwrap()
            .plan
    }

    fn run_local(a: &PlanArgs) -> Result<(), ScheduleError> {
        run(
            a,
            &Context {
                cluster: wgpipe::Cluster::Local,
            },
        )
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wgpipe-plan-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn every_schedule_accepts_virtual_1() {
        for kind in ScheduleKind::ALL {
            run_local(&args(&format!(
                "--schedule {kind} --devices 3 --microbatches 5 --virtual 1"
            )))
            .unwrap();
        }
    }

    #[test]
    fn csv_export_loads_back_and_svg_refuses_a_directory() {
        let file = scratch("il.csv");
        let a = args(&format!(
            "--schedule interleaved -p 2 -m 4 --virtual 2 --csv {}",
            file.display()
        ));
        run_local(&a).unwrap();
        let b = args(&format!("--from-csv {}", file.display()));
        run_local(&b).unwrap();
        let loaded = csv::load(&file).unwrap();
        assert_eq!(
            loaded,
            Schedule::generate(ScheduleKind::Interleaved, 2, 4, 2, false).unwrap()
        );

        let dir = file.parent().unwrap().to_path_buf();
        let e = run_local(&args(&format!(
            "--schedule gpipe -p 2 -m 2 --svg {}",
            dir.display()
        )))
        .unwrap_err();
        assert!(matches!(e, ScheduleError::OutputIsDirectory { .. }));
        assert!(e
            .to_string()
            .ends_with("is a directory; name a file to write instead"));

        let missing = dir.join("nope.csv");
        let e = run_local(&args(&format!("--from-csv {}", missing.display()))).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("could not read {}", missing.display())),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn json_has_the_promised_fields() {
        let s = Schedule::generate(ScheduleKind::OneFOneB, 4, 8, 1, false).unwrap();
        let costs = Costs::uniform(4, 1.0, 2.0, 1.0, 1.0, 0.0);
        let sim = simulate(&s, &costs).unwrap();
        let j = serde_json::to_value(PlanReport::new(&s, &sim, &costs)).unwrap();
        assert_eq!(j["schedule"], "1f1b");
        assert_eq!(
            (
                j["devices"].as_u64(),
                j["microbatches"].as_u64(),
                j["virtual"].as_u64()
            ),
            (Some(4), Some(8), Some(1))
        );
        assert_eq!(j["makespan"], 33.0);
        assert!((j["bubble_simulated"].as_f64().unwrap() - 3.0 / 11.0).abs() < 1e-12);
        assert!((j["bubble_analytic"].as_f64().unwrap() - 3.0 / 11.0).abs() < 1e-12);
        assert_eq!(j["peak_activations"], serde_json::json!([4, 3, 2, 1]));
        assert_eq!(j["rows"][1][0], serde_json::Value::Null);
        assert_eq!(j["rows"][1][1], "1F0");
    }

    #[test]
    fn flags_conflict_with_from_csv() {
        let e = Cli::try_parse_from(["plan", "--from-csv", "x.csv", "--schedule", "gpipe"])
            .err()
            .unwrap();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(Cli::try_parse_from(["plan", "--schedule", "gpipe"]).is_err());
    }
}
