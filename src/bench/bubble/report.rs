//! The sweep's rows as text (the bubble table, where the speedup goes) and
//! as charts (the bubble against M, the waterfall).

use super::{BubbleReport, Row};
use crate::schedule::{analytic, ScheduleKind};
use crate::trace::chart::{bubble_chart, waterfall_chart, Series, Waterfall};

/// A plain-text table of the rows.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "schedule        v   M  analytic  simulated  measured  makespan ms   tokens/s  speedup (ideal)  hops      MB\n",
    );
    for r in rows {
        out += &format!(
            "{:<14} {:>2} {:>3}   {:>6.1}%    {:>6.1}%   {:>6.1}%  {:>11.1}  {:>9.0}  {:>6.2} ({:>4.2})  {:>5}  {:>6.2}\n",
            r.schedule.name(),
            r.virtual_stages,
            r.microbatches,
            100.0 * r.bubble_analytic,
            100.0 * r.bubble_simulated,
            100.0 * r.bubble_measured,
            r.makespan_ms,
            r.tokens_per_s,
            r.speedup,
            r.speedup_ideal,
            r.transfers,
            r.bytes_moved as f64 / 1e6
        );
    }
    out
}

/// Where the speedup goes, one line per forward row: the ideal speedup, the
/// four losses and the measured speedup (which they add up to), and the
/// speedup with the co-run control divided out.
pub fn accounting_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "schedule        v   M   ideal  -schedule  -imbalance  -slowdown  -orchestration  = measured  w/o co-run  solo ms       co-run ms\n",
    );
    let ms = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    for r in rows.iter().filter(|r| !r.train) {
        out += &format!(
            "{:<14} {:>2} {:>3}  {:>6.2}  {:>9.2}  {:>10.2}  {:>9.2}  {:>14.2}  {:>10.2}  {:>10.2}  {:<12}  {}\n",
            r.schedule.name(),
            r.virtual_stages,
            r.microbatches,
            r.speedup_ideal,
            r.loss_schedule,
            r.loss_imbalance,
            r.loss_slowdown,
            r.loss_orchestration,
            r.speedup,
            r.speedup_without_corun,
            ms(&r.solo_ms),
            ms(&r.corun_ms)
        );
    }
    out
}

impl BubbleReport {
    /// A heading, the table, and for forward sweeps where the speedup goes.
    pub fn text(&self) -> String {
        let mut s = format!(
            "P={} on {}; model: {} layers, C={}, T={}, {} sequence(s)/microbatch; median of {}\n",
            self.devices,
            self.device_names.first().map_or("?", String::as_str),
            self.model.n_layer,
            self.model.n_embd,
            self.seq,
            self.sequences_per_microbatch,
            self.repeat
        );
        if let Some(m) = &self.mpi {
            s += &format!("{}\n", m.line());
        }
        s += &table(&self.rows);
        if !self.train {
            s += "\nWhere the speedup goes (losses in speedup units; they add up to the measured speedup):\n";
            s += &accounting_table(&self.rows);
        }
        s
    }

    /// The bubble against M, one series per (schedule, v): analytic curve,
    /// simulated rings, measured dots.
    pub fn chart(&self) -> String {
        let what = if self.train {
            "training step"
        } else {
            "forward"
        };
        let title = format!(
            "Pipeline bubble ({what}), P={}: analytic, simulated, measured",
            self.devices
        );
        bubble_chart(&chart_series(&self.rows, self.devices, self.train), &title)
    }

    /// Where the speedup goes, one waterfall panel per forward row.
    pub fn waterfall(&self) -> String {
        let falls: Vec<Waterfall> = self.rows.iter().map(waterfall).collect();
        let title = format!(
            "Where the speedup goes, P={}: ideal, each loss, measured",
            self.devices
        );
        waterfall_chart(&falls, &title)
    }
}

/// A forward row's loss accounting as one waterfall panel.
fn waterfall(r: &Row) -> Waterfall {
    let v = if r.virtual_stages > 1 {
        format!(" v={}", r.virtual_stages)
    } else {
        String::new()
    };
    Waterfall {
        label: format!("{}{v} M={}", r.schedule, r.microbatches),
        ideal: r.speedup_ideal,
        steps: [
            ("schedule", r.loss_schedule),
            ("imbalance", r.loss_imbalance),
            ("slowdown", r.loss_slowdown),
            ("orchestration", r.loss_orchestration),
        ]
        .iter()
        .map(|(n, l)| (n.to_string(), *l))
        .collect(),
        measured: r.speedup,
    }
}

/// One chart series per (schedule, v).
fn chart_series(rows: &[Row], p: usize, train: bool) -> Vec<Series> {
    let mut keys: Vec<(ScheduleKind, usize)> = Vec::new();
    for r in rows {
        let k = (r.schedule, r.virtual_stages);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(kind, v)| {
            let points = rows
                .iter()
                .filter(|r| r.schedule == kind && r.virtual_stages == v)
                .map(|r| {
                    (
                        r.microbatches,
                        r.bubble_analytic,
                        r.bubble_simulated,
                        r.bubble_measured,
                    )
                })
                .collect();
            Series {
                label: if v > 1 {
                    format!("{kind} v={v}")
                } else {
                    kind.to_string()
                },
                analytic: Box::new(move |m| analytic::bubble(kind, p, m, v, !train)),
                points,
            }
        })
        .collect()
}
