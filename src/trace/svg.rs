//! The one Gantt renderer, for planned (simulated) and measured timelines:
//! one row per device (labels left, idle share right), time axis with ticks,
//! boxes coloured by kind (F, B, I, W) with the microbatch number inside when
//! it fits, idle time as the hatched row background, and transfers as a thin
//! strip under the row of the device they arrive at. With several chunks per
//! device, later chunks are drawn a shade lighter.

use std::fmt::Write;

use crate::action::Kind;
use crate::trace::axis::{duration, short, text_width, wrap, Ticks, TimeUnit};
use crate::trace::{Timeline, Track};

const WIDTH: f64 = 1200.0;
const ROW: f64 = 26.0;
const STRIP: f64 = 5.0;
const GAP: f64 = 10.0;
const AXIS: f64 = 44.0;
/// Font sizes: title, subtitle and row labels, ticks and the legend.
const TITLE: f64 = 17.0;
const LABEL: f64 = 12.0;
const SMALL: f64 = 11.0;

fn colour(kind: Option<Kind>) -> &'static str {
    match kind {
        Some(Kind::F) => "#3b7dd8",
        Some(Kind::B) => "#e0663a",
        Some(Kind::I) => "#e8a838",
        Some(Kind::W) => "#3fa463",
        None => "#8a8a8a",
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::F => "F forward",
        Kind::B => "B backward",
        Kind::I => "I input grad",
        Kind::W => "W weight grad",
    }
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG Gantt chart of `t`, titled `title`. Time runs in the unit the
/// makespan calls for (µs, ms or s; the planner's abstract units stay
/// units), ticked at round steps; the margins are sized to the row labels
/// and the last tick label, so nothing is cut.
pub fn gantt_svg(t: &Timeline, title: &str) -> String {
    let p = t.device_names.len();
    let stats = t.stats();
    let (t0, t1) = t.compute_span();
    let span = (t1 - t0).max(f64::MIN_POSITIVE);
    // The planner's default costs are abstract units (F = 1, B = 2); measured
    // timelines are in microseconds, drawn in µs, ms or s.
    let (unit, per) = if t.clock == "simulated" {
        ("units", 1.0)
    } else {
        let u = TimeUnit::for_span(span);
        (u.name, u.us)
    };
    let labels: Vec<String> = (0..p).map(|d| row_label(d, &t.device_names[d])).collect();
    let left = labels
        .iter()
        .map(|l| text_width(l, LABEL, false))
        .fold(48.0, f64::max)
        + 20.0;

    // Round ticks over the compute span, as many as their labels leave room for.
    let ticks_for = |steps: usize| Ticks::inside(0.0, span / per, steps);
    let widest = |ticks: &Ticks| {
        ticks
            .labels()
            .iter()
            .map(|l| text_width(l, SMALL, false))
            .fold(0.0, f64::max)
    };
    let mut ticks = ticks_for(10);
    let right = {
        let idle = text_width("idle 100 %", SMALL, false) + 16.0;
        let last = text_width(&ticks.label(ticks.hi()), SMALL, false) / 2.0 + 8.0;
        idle.max(last)
    };
    let plot_w = WIDTH - left - right;
    for steps in (2..10).rev() {
        let px = ticks.step() * per / span * plot_w;
        if widest(&ticks) + 12.0 <= px {
            break;
        }
        ticks = ticks_for(steps);
    }
    let x = |time: f64| left + (time - t0) / span * plot_w;

    let title_lines = wrap(title, TITLE, true, WIDTH - left - 16.0);
    let keys = legend_keys(t);
    let key_rows = legend_rows(&keys, left);
    let head = 20.0 * (title_lines.len() - 1) as f64;
    let top = 84.0 + head + 18.0 * (key_rows.len().max(1) - 1) as f64;
    let has_transfers = t
        .events
        .iter()
        .any(|e| matches!(e.track, Track::Transfer { .. }));
    let lane = ROW + if has_transfers { STRIP + 2.0 } else { 0.0 } + GAP;
    let row_y = |d: usize| top + d as f64 * lane;
    let height = top + p as f64 * lane + AXIS;
    let chunked = t
        .events
        .iter()
        .filter_map(|e| e.action)
        .any(|a| p > 0 && a.stage >= p);
    // A tensor-parallel group's row is split into one strip per rank, its
    // all-reduces drawn dark over its compute.
    let ranks = t
        .events
        .iter()
        .filter_map(|e| match e.track {
            Track::Compute { gpu, .. } | Track::AllReduce { gpu, .. } => Some(gpu + 1),
            _ => None,
        })
        .max()
        .unwrap_or(1);
    let sub = ROW / ranks as f64;
    // A hover title's times: in the axis unit, from the first compute start.
    let at = |us: f64| short((us - t0) / per, 4);
    let long = |us: f64| {
        if t.clock == "simulated" {
            format!("{} units", short(us, 4))
        } else {
            duration(us)
        }
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif">"##
    );
    s.push_str(concat!(
        r##"<defs><pattern id="idle" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">"##,
        r##"<rect width="6" height="6" fill="#f3f3f3"/><line x1="0" y1="0" x2="0" y2="6" stroke="#dcdcdc" stroke-width="2"/></pattern></defs>"##,
        "\n",
        r##"<rect width="100%" height="100%" fill="white"/>"##,
        "\n"
    ));
    for (i, line) in title_lines.iter().enumerate() {
        let _ = writeln!(
            s,
            r##"<text x="{left:.1}" y="{}" font-size="{TITLE}" font-weight="bold" fill="#222">{}</text>"##,
            24.0 + 20.0 * i as f64,
            escape(line)
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{left:.1}" y="{}" font-size="{LABEL}" fill="#555">{p} device{} · makespan {} ({}) · bubble {:.1} %</text>"##,
        44.0 + head,
        if p == 1 { "" } else { "s" },
        long(stats.makespan_us),
        escape(&t.clock),
        stats.bubble * 100.0
    );
    for (r, row) in key_rows.iter().enumerate() {
        let y = 58.0 + head + 18.0 * r as f64;
        for &(lx, k) in row {
            let (fill, label) = keys[k];
            let _ = writeln!(
                s,
                r##"<rect x="{lx:.1}" y="{y}" width="14" height="12" fill="{fill}" stroke="#bbb" stroke-width="0.5"/>"##
            );
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="{SMALL}" fill="#333">{label}</text>"##,
                lx + 19.0,
                y + 10.0
            );
        }
    }

    // Time grid and axis.
    let axis_y = top + p as f64 * lane - GAP + 6.0;
    for (v, label) in ticks.values().into_iter().zip(ticks.labels()) {
        let tx = x(t0 + v * per);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#e6e6e6"/>"##,
            top - 4.0,
            axis_y
        );
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{axis_y:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#888"/>"##,
            axis_y + 5.0
        );
        let _ = writeln!(
            s,
            r##"<text class="tick" x="{tx:.1}" y="{:.1}" font-size="{SMALL}" fill="#555" text-anchor="middle">{label}</text>"##,
            axis_y + 18.0,
        );
    }
    let _ = writeln!(
        s,
        r##"<line x1="{left:.1}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#888"/>"##,
        left + plot_w
    );
    let _ = writeln!(
        s,
        r##"<text class="axis" x="{:.1}" y="{:.1}" font-size="{SMALL}" fill="#555" text-anchor="middle">time ({unit})</text>"##,
        left + plot_w / 2.0,
        axis_y + 34.0,
    );

    // Device rows: hatched background = idle, boxes = busy.
    for (d, label) in labels.iter().enumerate() {
        let y = row_y(d);
        let _ = writeln!(s, r##"<g class="row" data-device="{d}">"##);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="{LABEL}" fill="#222" text-anchor="end">{}</text>"##,
            left - 8.0,
            y + ROW / 2.0 + 4.0,
            escape(label)
        );
        let _ = writeln!(
            s,
            r##"<rect x="{left:.1}" y="{y:.1}" width="{plot_w:.1}" height="{ROW}" fill="url(#idle)"/>"##
        );
        for e in t
            .events
            .iter()
            .filter(|e| e.track.compute_device() == Some(d))
        {
            let (bx, bw) = (x(e.start_us), (x(e.end_us) - x(e.start_us)).max(0.5));
            let kind = e.action.map(|a| a.kind);
            let light = chunked && e.action.is_some_and(|a| (a.stage / p) % 2 == 1);
            let opacity = if light { 0.62 } else { 1.0 };
            let rank = match e.track {
                Track::Compute { gpu, .. } => gpu,
                _ => 0,
            };
            let ry = y + rank as f64 * sub;
            let _ = writeln!(
                s,
                r##"<rect x="{bx:.2}" y="{ry:.1}" width="{bw:.2}" height="{sub:.1}" fill="{}" fill-opacity="{opacity}" stroke="white" stroke-width="0.6"><title>{} · {}–{} {unit} ({})</title></rect>"##,
                colour(kind),
                escape(&e.name),
                at(e.start_us),
                at(e.end_us),
                long(e.duration_us())
            );
            if ranks > 1 {
                continue;
            }
            if let Some(a) = e.action {
                let label = a.microbatch.to_string();
                if bw >= text_width(&label, SMALL, false) + 6.0 {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.2}" y="{:.1}" font-size="{SMALL}" fill="white" text-anchor="middle" pointer-events="none">{label}</text>"##,
                        bx + bw / 2.0,
                        y + ROW / 2.0 + 4.0
                    );
                }
            }
        }
        for e in &t.events {
            let Track::AllReduce { device, gpu } = e.track else {
                continue;
            };
            if device != d {
                continue;
            }
            let (bx, bw) = (x(e.start_us), (x(e.end_us) - x(e.start_us)).max(0.5));
            let ry = y + gpu as f64 * sub;
            let _ = writeln!(
                s,
                r##"<rect x="{bx:.2}" y="{ry:.1}" width="{bw:.2}" height="{sub:.1}" fill="#222" fill-opacity="0.75"><title>{} rank {gpu} ({} bytes)</title></rect>"##,
                escape(&e.name),
                e.bytes
            );
        }
        if has_transfers {
            let sy = y + ROW + 2.0;
            for e in t
                .events
                .iter()
                .filter(|e| matches!(e.track, Track::Transfer { to, .. } if to == d))
            {
                let (bx, bw) = (x(e.start_us), (x(e.end_us) - x(e.start_us)).max(0.5));
                let _ = writeln!(
                    s,
                    r##"<rect x="{bx:.2}" y="{sy:.1}" width="{bw:.2}" height="{STRIP}" fill="{}" rx="1"><title>{} ({} bytes)</title></rect>"##,
                    colour(None),
                    escape(&e.name),
                    e.bytes
                );
            }
        }
        let idle = if stats.makespan_us > 0.0 {
            stats.idle_us[d] / stats.makespan_us * 100.0
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="{SMALL}" fill="#555">idle {idle:.0} %</text>"##,
            left + plot_w + 8.0,
            y + ROW / 2.0 + 4.0
        );
        s.push_str("</g>\n");
    }
    s.push_str("</svg>\n");
    s
}

fn p_of(t: &Timeline) -> usize {
    t.device_names.len()
}

/// Colour keys (fill, label) for the kinds present, idle, and transfers.
fn legend_keys(t: &Timeline) -> Vec<(&'static str, &'static str)> {
    let mut kinds: Vec<Kind> = t
        .events
        .iter()
        .filter_map(|e| e.action)
        .map(|a| a.kind)
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut keys: Vec<(&str, &str)> = kinds
        .into_iter()
        .map(|k| (colour(Some(k)), kind_label(k)))
        .collect();
    keys.push(("url(#idle)", "idle"));
    if t.events
        .iter()
        .filter_map(|e| e.action)
        .any(|a| p_of(t) > 0 && a.stage >= p_of(t))
    {
        keys.push(("#9bbbe8", "lighter: odd-numbered chunk"));
    }
    if t.events
        .iter()
        .any(|e| matches!(e.track, Track::Transfer { .. }))
    {
        keys.push((colour(None), "transfer (under the receiving device)"));
    }
    if t.events
        .iter()
        .any(|e| matches!(e.track, Track::AllReduce { .. }))
    {
        keys.push(("#222", "all-reduce (one strip per tensor-parallel rank)"));
    }
    keys
}

/// The keys laid out left to right from `left`, a new row where the next
/// would pass the right edge: per row, (x, key index).
fn legend_rows(keys: &[(&str, &str)], left: f64) -> Vec<Vec<(f64, usize)>> {
    let mut rows: Vec<Vec<(f64, usize)>> = vec![Vec::new()];
    let mut lx = left;
    for (k, (_, label)) in keys.iter().enumerate() {
        let w = 19.0 + text_width(label, SMALL, false);
        if lx + w > WIDTH - 8.0 && lx > left {
            rows.push(Vec::new());
            lx = left;
        }
        rows.last_mut().expect("a row").push((lx, k));
        lx += w + 16.0;
    }
    rows
}

/// A row label that fits the left margin: the name up to its first " (" —
/// `vulkan:0` rather than `vulkan:0 (llvmpipe (LLVM 15.0.6, 256 bits))` —
/// and the device index when that is not already the name.
fn row_label(d: usize, name: &str) -> String {
    // A tensor-parallel group's name joins its Gpus' with " + ":
    // `2×vulkan:0` when they are alike, else `vulkan:0+gl:0`.
    let parts: Vec<&str> = name
        .split(" + ")
        .map(|n| n.split(" (").next().unwrap_or(n))
        .collect();
    let short = match parts.as_slice() {
        [one] => one.to_string(),
        [first, rest @ ..] if rest.iter().all(|p| p == first) => {
            format!("{}×{first}", parts.len())
        }
        _ => parts.join("+"),
    };
    if short.starts_with("dev") {
        short.to_string()
    } else {
        format!("{d}: {short}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::trace::check;
    use crate::trace::Event;

    /// P devices in a GPipe-like staircase of forwards, the last ending at
    /// `makespan_us`, measured on GPU timestamps; devices named like
    /// lavapipe's, or a tensor-parallel group of two.
    fn staircase(p: usize, m: usize, makespan_us: f64, names: &[&str]) -> Timeline {
        let slot = makespan_us / (m + p - 1) as f64;
        let mut events = Vec::new();
        for d in 0..p {
            for u in 0..m {
                let start = 1234.5 + (d + u) as f64 * slot;
                events.push(Event {
                    track: Track::compute(d),
                    name: format!("{d}F{u}"),
                    action: Some(Action::new(d, Kind::F, u)),
                    start_us: start,
                    end_us: start + slot,
                    bytes: 0,
                });
            }
        }
        Timeline {
            device_names: names.iter().take(p).map(|n| n.to_string()).collect(),
            events,
            clock: "gpu-timestamps".into(),
        }
    }

    const LAVAPIPE: &str = "vulkan:0 (llvmpipe (LLVM 15.0.6, 256 bits))";

    #[test]
    fn a_14_s_run_is_ticked_in_seconds() {
        let t = staircase(2, 4, 14_160_209.18, &[LAVAPIPE, LAVAPIPE]);
        let svg = gantt_svg(&t, "gpipe — measured, P=2 M=4 v=1");
        assert_eq!(
            check::class(&svg, "tick"),
            ["0", "2", "4", "6", "8", "10", "12", "14"]
        );
        assert_eq!(check::class(&svg, "axis"), ["time (s)"]);
        assert!(svg.contains("2 devices · makespan 14.16 s (gpu-timestamps)"));
        check::nothing_cut(&svg);
    }

    #[test]
    fn a_sub_ms_run_is_ticked_in_microseconds() {
        let t = staircase(2, 8, 352.8, &[LAVAPIPE, LAVAPIPE]);
        let svg = gantt_svg(&t, "short");
        assert_eq!(
            check::class(&svg, "tick"),
            ["0", "50", "100", "150", "200", "250", "300", "350"]
        );
        assert_eq!(check::class(&svg, "axis"), ["time (µs)"]);
        assert!(svg.contains("makespan 352.8 µs"));
        // A hover title in the axis unit, from the first compute start.
        assert!(svg.contains("<title>0F0 · 0–39.2 µs (39.20 µs)</title>"));
        check::nothing_cut(&svg);
    }

    #[test]
    fn a_planned_timeline_stays_in_units() {
        let mut t = staircase(
            4,
            8,
            11.0,
            &["device 0", "device 1", "device 2", "device 3"],
        );
        t.clock = "simulated".into();
        let svg = gantt_svg(&t, "planned");
        assert_eq!(check::class(&svg, "tick"), ["0", "2", "4", "6", "8", "10"]);
        assert_eq!(check::class(&svg, "axis"), ["time (units)"]);
        assert!(svg.contains("4 devices · makespan 11 units (simulated)"));
    }

    #[test]
    fn long_device_labels_and_titles_fit() {
        let group = format!("{LAVAPIPE} + {LAVAPIPE}");
        let mixed = format!("{LAVAPIPE} + gl:0 (llvmpipe (LLVM 15.0.6, 256 bits))");
        let t = staircase(2, 4, 80_405.99, &[&group, &mixed]);
        let svg = gantt_svg(&t, &"a title that goes on and on ".repeat(6));
        let rows: Vec<String> = check::texts(&svg)
            .into_iter()
            .filter(|t| t.anchor == "end")
            .map(|t| t.text)
            .collect();
        assert_eq!(rows, ["0: 2×vulkan:0", "1: vulkan:0+gl:0"]);
        assert!(svg.contains("makespan 80.41 ms"));
        check::nothing_cut(&svg);
    }
}
