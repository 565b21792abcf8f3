//! The one Gantt renderer, for planned (simulated) and measured timelines:
//! one row per device (labels left, idle share right), time axis with ticks,
//! boxes coloured by kind (F, B, I, W) with the microbatch number inside when
//! it fits, idle time as the hatched row background, and transfers as a thin
//! strip under the row of the device they arrive at. With several chunks per
//! device, later chunks are drawn a shade lighter.

use std::fmt::Write;

use crate::action::Kind;
use crate::trace::{Timeline, Track};

const WIDTH: f64 = 1200.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 78.0;
const TOP: f64 = 84.0;
const ROW: f64 = 26.0;
const STRIP: f64 = 5.0;
const GAP: f64 = 10.0;
const AXIS: f64 = 44.0;

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

/// A tick step of 1, 2 or 5 × 10^k giving at most ~10 ticks over `span`.
fn tick_step(span: f64) -> f64 {
    if span <= 0.0 {
        return 1.0;
    }
    let raw = span / 10.0;
    let base = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|f| f * base)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * base)
}

fn number(x: f64, step: f64) -> String {
    if step >= 1.0 && (x - x.round()).abs() > 1e-9 {
        format!("{x:.2}")
    } else if step >= 1.0 {
        format!("{x:.0}")
    } else {
        format!("{:.*}", (-step.log10() - 1e-9).ceil() as usize, x)
    }
}

/// An SVG Gantt chart of `t`, titled `title`.
pub fn gantt_svg(t: &Timeline, title: &str) -> String {
    // The planner's default costs are abstract units (F = 1, B = 2); measured
    // timelines are in microseconds.
    let unit = if t.clock == "simulated" {
        "units"
    } else {
        "µs"
    };
    let p = t.device_names.len();
    let stats = t.stats();
    let (t0, t1) = t.compute_span();
    let span = (t1 - t0).max(f64::MIN_POSITIVE);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |time: f64| LEFT + (time - t0) / span * plot_w;
    let has_transfers = t
        .events
        .iter()
        .any(|e| matches!(e.track, Track::Transfer { .. }));
    let lane = ROW + if has_transfers { STRIP + 2.0 } else { 0.0 } + GAP;
    let row_y = |d: usize| TOP + d as f64 * lane;
    let height = TOP + p as f64 * lane + AXIS;
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
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="24" font-size="17" font-weight="bold" fill="#222">{}</text>"##,
        escape(title)
    );
    let _ = writeln!(
        s,
        r##"<text x="{LEFT}" y="44" font-size="12" fill="#555">{} devices · makespan {} {unit} ({}) · bubble {:.1} %</text>"##,
        p,
        number(stats.makespan_us, tick_step(stats.makespan_us)),
        escape(&t.clock),
        stats.bubble * 100.0
    );
    legend(&mut s, t, has_transfers);

    // Time grid and axis.
    let step = tick_step(span);
    let axis_y = TOP + p as f64 * lane - GAP + 6.0;
    let mut tick = 0.0;
    while tick <= span + step * 1e-9 {
        let tx = x(t0 + tick);
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#e6e6e6"/>"##,
            TOP - 4.0,
            axis_y
        );
        let _ = writeln!(
            s,
            r##"<line x1="{tx:.1}" y1="{axis_y:.1}" x2="{tx:.1}" y2="{:.1}" stroke="#888"/>"##,
            axis_y + 5.0
        );
        let _ = writeln!(
            s,
            r##"<text x="{tx:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="middle">{}</text>"##,
            axis_y + 18.0,
            number(tick, step)
        );
        tick += step;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="#888"/>"##,
        LEFT + plot_w
    );
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555" text-anchor="middle">time ({unit}, {})</text>"##,
        LEFT + plot_w / 2.0,
        axis_y + 34.0,
        escape(&t.clock)
    );

    // Device rows: hatched background = idle, boxes = busy.
    for d in 0..p {
        let y = row_y(d);
        let _ = writeln!(s, r##"<g class="row" data-device="{d}">"##);
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="12" fill="#222" text-anchor="end">{}</text>"##,
            LEFT - 8.0,
            y + ROW / 2.0 + 4.0,
            escape(&row_label(d, &t.device_names[d]))
        );
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{y:.1}" width="{plot_w:.1}" height="{ROW}" fill="url(#idle)"/>"##
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
                r##"<rect x="{bx:.2}" y="{ry:.1}" width="{bw:.2}" height="{sub:.1}" fill="{}" fill-opacity="{opacity}" stroke="white" stroke-width="0.6"><title>{} · {:.3}–{:.3} {unit}</title></rect>"##,
                colour(kind),
                escape(&e.name),
                e.start_us - t0,
                e.end_us - t0
            );
            if ranks > 1 {
                continue;
            }
            if let Some(a) = e.action {
                let label = a.microbatch.to_string();
                if bw >= 7.0 * label.len() as f64 + 4.0 {
                    let _ = writeln!(
                        s,
                        r##"<text x="{:.2}" y="{:.1}" font-size="11" fill="white" text-anchor="middle" pointer-events="none">{label}</text>"##,
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
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#555">idle {idle:.0} %</text>"##,
            LEFT + plot_w + 8.0,
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

/// Colour keys for the kinds present, idle, and transfers.
fn legend(s: &mut String, t: &Timeline, has_transfers: bool) {
    let mut kinds: Vec<Kind> = t
        .events
        .iter()
        .filter_map(|e| e.action)
        .map(|a| a.kind)
        .collect();
    kinds.sort();
    kinds.dedup();
    let mut lx = LEFT;
    let y = 58.0;
    let mut key = |fill: &str, label: &str| {
        let _ = writeln!(
            s,
            r##"<rect x="{lx:.1}" y="{y}" width="14" height="12" fill="{fill}" stroke="#bbb" stroke-width="0.5"/>"##
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" fill="#333">{label}</text>"##,
            lx + 19.0,
            y + 10.0
        );
        lx += 26.0 + 6.5 * label.len() as f64;
    };
    for k in kinds {
        key(colour(Some(k)), kind_label(k));
    }
    key("url(#idle)", "idle");
    if t.events
        .iter()
        .filter_map(|e| e.action)
        .any(|a| p_of(t) > 0 && a.stage >= p_of(t))
    {
        key("#9bbbe8", "lighter: odd-numbered chunk");
    }
    if has_transfers {
        key(colour(None), "transfer (under the receiving device)");
    }
    if t.events
        .iter()
        .any(|e| matches!(e.track, Track::AllReduce { .. }))
    {
        key("#222", "all-reduce (one strip per tensor-parallel rank)");
    }
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
    use super::tick_step;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(21.0), 5.0);
        assert_eq!(tick_step(105.0), 20.0);
        assert_eq!(tick_step(0.9), 0.1);
    }
}
