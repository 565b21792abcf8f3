//! The bubble chart of `wgpipe bench bubble`: bubble fraction against the
//! number of microbatches M (log2 axis) — per schedule, the analytic curve as
//! a line, simulated points as rings and measured points as dots; and the
//! waterfall of where the speedup goes (`bench bubble --waterfall`).
//! [`line_chart`] (in `line.rs`) draws the decode and layouts benches.
//!
//! Every value axis is ticked at round steps ([`super::axis::Ticks`]);
//! canvases grow to their legends and titles (wrapped), so nothing is cut.

use std::fmt::Write;

use super::axis::{text_width, wrap, Ticks};
pub use super::line::{line_chart, Line};
use super::svg::escape;

/// One schedule's points: (M, analytic, simulated, measured).
pub struct Series {
    pub label: String,
    /// Analytic bubble at any integer M (for the curve between points).
    pub analytic: Box<dyn Fn(usize) -> f64>,
    pub points: Vec<(usize, f64, f64, f64)>,
}

pub(crate) const PALETTE: [&str; 6] = [
    "#3b7dd8", "#e0663a", "#3fa463", "#8e5bc8", "#c9a227", "#444444",
];
/// Font sizes: titles, and everything else unless a chart says otherwise.
pub(crate) const TITLE: f64 = 15.0;
pub(crate) const FONT: f64 = 12.0;

/// The title from (`x`, 26), wrapped to `max_width`: the last line's baseline.
pub(crate) fn title(s: &mut String, text: &str, x: f64, max_width: f64) -> f64 {
    let lines = wrap(text, TITLE, true, max_width);
    for (i, line) in lines.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{}" font-size="{TITLE}" font-weight="bold">{}</text>"#,
            26.0 + 19.0 * i as f64,
            escape(line)
        );
    }
    26.0 + 19.0 * (lines.len().max(1) - 1) as f64
}

/// The SVG root and white background of a `width` × `height` chart, then `body`.
pub(crate) fn document(width: f64, height: f64, font_size: f64, body: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"{font_size}\">\n<rect width=\"{width:.0}\" height=\"{height:.0}\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

/// A value-axis title, rotated, centred on `y` at the left edge.
pub(crate) fn y_title(s: &mut String, text: &str, y: f64) {
    let _ = writeln!(
        s,
        r#"<text class="axis" x="16" y="{y:.1}" transform="rotate(-90 16 {y:.1})" text-anchor="middle">{}</text>"#,
        escape(text)
    );
}

/// Horizontal grid lines from `x0` to `x1` with the tick labels left of
/// `x0`, at `y(v)` for each tick (class `ytick`).
pub(crate) fn y_grid(
    s: &mut String,
    ticks: &Ticks,
    x0: f64,
    x1: f64,
    y: impl Fn(f64) -> f64,
    suffix: &str,
) {
    for v in ticks.values() {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0:.1}" x2="{x1:.1}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e4e4e4"/><text class="ytick" x="{:.1}" y="{:.1}" text-anchor="end">{}{suffix}</text>"##,
            x0 - 6.0,
            yy + 4.0,
            ticks.label(v)
        );
    }
}

/// The left margin that holds the rotated axis title and the widest tick label.
pub(crate) fn left_margin(ticks: &[&Ticks], size: f64, suffix: &str) -> f64 {
    let widest = ticks
        .iter()
        .flat_map(|t| t.labels())
        .map(|l| text_width(&format!("{l}{suffix}"), size, false))
        .fold(0.0, f64::max);
    (30.0 + widest + 10.0).max(60.0)
}

/// Bubble fraction (%) against M on a log2 axis, one colour per schedule:
/// analytic as a curve, simulated as rings, measured as dots; the legend on
/// the right, as wide as its longest label.
pub fn bubble_chart(series: &[Series], title_text: &str) -> String {
    const PLOT_W: f64 = 490.0;
    const PLOT_H: f64 = 334.0;
    let ms: Vec<usize> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let (lo, hi) = (
        ms.iter().copied().min().unwrap_or(1).max(1),
        ms.iter().copied().max().unwrap_or(1).max(2),
    );
    let (lx, hx) = (
        (lo as f64).log2(),
        (hi as f64).log2().max((lo as f64).log2() + 1.0),
    );
    let top_value = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1, p.2, p.3]))
        .filter(|y| y.is_finite())
        .fold(0.05f64, f64::max)
        .min(1.0);
    let yt = Ticks::covering(0.0, 100.0 * top_value, 6);
    let left = left_margin(&[&yt], FONT, "");
    let keys = ["analytic", "simulated", "measured"];
    let legend_w = series
        .iter()
        .map(|s| s.label.as_str())
        .chain(keys)
        .map(|l| text_width(l, FONT, false))
        .fold(0.0, f64::max)
        + 46.0
        + 16.0;
    let width = left + PLOT_W + legend_w;

    let mut s = String::new();
    let head = title(&mut s, title_text, left, width - left - 12.0);
    let top = head + 24.0;
    let bottom = top + PLOT_H;
    let height = bottom + 56.0;
    let x = |m: f64| left + (m.log2() - lx) / (hx - lx) * PLOT_W;
    let y = |b: f64| top + (1.0 - (100.0 * b - yt.lo()) / (yt.hi() - yt.lo())) * PLOT_H;

    // Axes and grid.
    y_grid(&mut s, &yt, left, left + PLOT_W, |v| y(v / 100.0), "");
    let mut m = 1usize;
    while m <= hi {
        if m >= lo {
            let xx = x(m as f64);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top:.1}" y2="{bottom:.1}" stroke="#e4e4e4"/><text class="xtick" x="{xx:.1}" y="{:.1}" text-anchor="middle">{m}</text>"##,
                bottom + 16.0
            );
        }
        m *= 2;
    }
    let _ = writeln!(
        s,
        r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">microbatches M (log scale)</text>"#,
        left + PLOT_W / 2.0,
        bottom + 40.0,
    );
    y_title(&mut s, "bubble fraction (%)", (top + bottom) / 2.0);
    // Series.
    let lx0 = left + PLOT_W + 16.0;
    for (i, se) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = (lo..=hi)
            .map(|m| ((se.analytic)(m), m))
            .filter(|(b, _)| b.is_finite())
            .map(|(b, m)| format!("{:.1},{:.1}", x(m as f64), y(b)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2" opacity="0.7"/>"#,
            path.join(" ")
        );
        for &(m, _, sim, meas) in &se.points {
            let xx = x(m as f64);
            let _ = writeln!(
                s,
                r#"<circle cx="{xx:.1}" cy="{:.1}" r="6" fill="none" stroke="{c}" stroke-width="1.5"/>"#,
                y(sim)
            );
            let _ = writeln!(
                s,
                r#"<circle cx="{xx:.1}" cy="{:.1}" r="3.5" fill="{c}"/>"#,
                y(meas)
            );
        }
        let ly = top + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{lx0:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"/><text class="legend" x="{:.1}" y="{:.1}">{}</text>"#,
            lx0 + 24.0,
            lx0 + 30.0,
            ly + 4.0,
            escape(&se.label)
        );
    }
    // What the marks mean: glyphs centred 12 px in, labels where the series' are.
    let ly = top + 20.0 + 20.0 * series.len() as f64;
    let (gx, tx) = (lx0 + 12.0, lx0 + 30.0);
    let _ = writeln!(
        s,
        r##"<line x1="{lx0:.1}" x2="{:.1}" y1="{ly:.1}" y2="{ly:.1}" stroke="#444" stroke-width="2" opacity="0.7"/><text class="legend" x="{tx:.1}" y="{:.1}">analytic</text>"##,
        lx0 + 24.0,
        ly + 4.0
    );
    let _ = writeln!(
        s,
        r##"<circle cx="{gx:.1}" cy="{:.1}" r="6" fill="none" stroke="#444" stroke-width="1.5"/><text class="legend" x="{tx:.1}" y="{:.1}">simulated</text>"##,
        ly + 20.0,
        ly + 24.0
    );
    let _ = writeln!(
        s,
        r##"<circle cx="{gx:.1}" cy="{:.1}" r="3.5" fill="#444"/><text class="legend" x="{tx:.1}" y="{:.1}">measured</text>"##,
        ly + 40.0,
        ly + 44.0
    );
    document(width, height, FONT, &s)
}

/// One waterfall: from the ideal speedup, each loss in turn, down to the
/// measured speedup (the losses add up: `ideal − Σ steps = measured`).
pub struct Waterfall {
    /// e.g. `gpipe M=8`.
    pub label: String,
    pub ideal: f64,
    /// (cause, loss in speedup units; negative = a gain).
    pub steps: Vec<(String, f64)>,
    pub measured: f64,
}

const LOSS: &str = "#e0663a";
const GAIN: &str = "#3fa463";
const TOTAL: &str = "#3b7dd8";

/// A speedup to two decimals, without a sign on a zero (`0.00`, not `-0.00`).
fn two_decimals(v: f64) -> String {
    let s = format!("{v:.2}");
    if s == "-0.00" {
        "0.00".into()
    } else {
        s
    }
}

/// Waterfalls side by side, one panel each, on one speedup axis: the ideal
/// and the measured speedup as full bars, every loss as a bar hanging from
/// the running total (orange: a loss; green: a gain).
pub fn waterfall_chart(falls: &[Waterfall], title_text: &str) -> String {
    const BAR: f64 = 22.0;
    const GAP: f64 = 6.0;
    const PANEL_GAP: f64 = 34.0;
    const SIZE: f64 = 11.0;
    let (plot_h, below) = (250.0, 96.0);
    let bars = |f: &Waterfall| f.steps.len() + 2;
    let panel_w = |f: &Waterfall| bars(f) as f64 * (BAR + GAP);
    let mut ymax: f64 = 1.0;
    for f in falls {
        let mut run = f.ideal;
        ymax = ymax.max(run).max(f.measured);
        for (_, loss) in &f.steps {
            run -= loss;
            ymax = ymax.max(run);
        }
    }
    let yt = Ticks::covering(0.0, ymax, 5);
    let left = left_margin(&[&yt], SIZE, "");
    let panels: f64 = falls.iter().map(|f| panel_w(f) + PANEL_GAP).sum::<f64>() - PANEL_GAP;
    // The last bar's rotated label reaches right of the panels.
    let reach = falls
        .last()
        .map(|_| text_width("measured", SIZE, false) * 0.5 + 12.0)
        .unwrap_or(0.0);
    let width = (left + 10.0 + panels.max(0.0) + reach).max(480.0);

    let mut s = String::new();
    let head = title(&mut s, title_text, left, width - left - 12.0);
    // Room for the panels' labels between the title and the plot.
    let top = head + 30.0;
    let h = top + plot_h + below;
    let y =
        |v: f64| top + (1.0 - (v.clamp(yt.lo(), yt.hi()) - yt.lo()) / (yt.hi() - yt.lo())) * plot_h;
    y_grid(&mut s, &yt, left, width - 12.0, y, "");
    y_title(&mut s, "speedup over one device (×)", top + plot_h / 2.0);
    let mut x0 = left + 10.0;
    for f in falls {
        let mut bar = |i: usize, from: f64, to: f64, fill: &str, name: &str, value: f64| {
            let x = x0 + i as f64 * (BAR + GAP);
            let (y0, y1) = (y(from.max(to)), y(from.min(to)));
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y0:.1}" width="{BAR}" height="{:.1}" fill="{fill}"><title>{}: {value:.3}</title></rect>"#,
                (y1 - y0).max(0.5),
                escape(name)
            );
            let _ = writeln!(
                s,
                r#"<text class="value" x="{0:.1}" y="{1:.1}" text-anchor="middle" font-size="9">{2}</text>"#,
                x + BAR / 2.0,
                y0 - 3.0,
                two_decimals(value)
            );
            let (lx, ly) = (x + BAR / 2.0, top + plot_h + 8.0);
            let _ = writeln!(
                s,
                r#"<text x="{lx:.1}" y="{ly:.1}" transform="rotate(60 {lx:.1} {ly:.1})">{}</text>"#,
                escape(name)
            );
        };
        bar(0, f.ideal, 0.0, TOTAL, "ideal", f.ideal);
        let mut run = f.ideal;
        for (i, (name, loss)) in f.steps.iter().enumerate() {
            let fill = if *loss >= 0.0 { LOSS } else { GAIN };
            bar(i + 1, run, run - loss, fill, name, -loss);
            run -= loss;
        }
        bar(
            f.steps.len() + 1,
            f.measured,
            0.0,
            TOTAL,
            "measured",
            f.measured,
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-weight="bold">{}</text>"#,
            x0 + panel_w(f) / 2.0,
            top - 8.0,
            escape(&f.label)
        );
        x0 += panel_w(f) + PANEL_GAP;
    }
    document(width, h, SIZE, &s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::check;

    fn gpipe(label: &str, p: usize) -> Series {
        let b = move |m: usize| (p - 1) as f64 / (m + p - 1) as f64;
        Series {
            label: label.into(),
            analytic: Box::new(b),
            points: [1, 2, 4, 8, 16, 32]
                .iter()
                .map(|&m| (m, b(m), b(m) + 0.002, b(m) + 0.004))
                .collect(),
        }
    }

    #[test]
    fn the_bubble_chart_ticks_percent_at_round_steps() {
        let series = [
            gpipe("gpipe", 2),
            gpipe(
                "interleaved v=2, a label longer than the old legend column",
                2,
            ),
        ];
        let svg = bubble_chart(
            &series,
            "Pipeline bubble (forward), P=2: analytic, simulated, measured",
        );
        assert_eq!(
            check::class(&svg, "ytick"),
            ["0", "10", "20", "30", "40", "50", "60"]
        );
        assert_eq!(
            check::class(&svg, "xtick"),
            ["1", "2", "4", "8", "16", "32"]
        );
        assert_eq!(
            check::class(&svg, "axis"),
            ["microbatches M (log scale)", "bubble fraction (%)"]
        );
        check::nothing_cut(&svg);
    }

    #[test]
    fn one_waterfall_with_a_long_title_is_not_cut() {
        let f = Waterfall {
            label: "interleaved v=2 M=16".into(),
            ideal: 1.882,
            steps: vec![("schedule".into(), -0.0001), ("orchestration".into(), 0.1)],
            measured: 1.782,
        };
        let svg = waterfall_chart(
            &[f],
            "Where the speedup goes, P=2: ideal, each loss, measured",
        );
        assert_eq!(
            check::class(&svg, "ytick"),
            ["0.0", "0.5", "1.0", "1.5", "2.0"]
        );
        assert_eq!(
            check::class(&svg, "value"),
            ["1.88", "0.00", "-0.10", "1.78"]
        );
        check::nothing_cut(&svg);
    }

    #[test]
    fn a_waterfall_hangs_each_loss_from_the_running_total() {
        let f = Waterfall {
            label: "gpipe M=8".into(),
            ideal: 1.78,
            steps: vec![
                ("schedule".into(), 0.0),
                ("imbalance".into(), 0.10),
                ("slowdown".into(), 0.30),
                ("orchestration".into(), -0.02),
            ],
            measured: 1.40,
        };
        let svg = waterfall_chart(&[f], "where the speedup goes");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // ideal, four steps, measured: six bars, after the background.
        assert_eq!(svg.matches("<rect").count(), 1 + 6);
        assert!(svg.contains("ideal: 1.780") && svg.contains("measured: 1.400"));
        // A loss is drawn as a negative change, a gain as a positive one, in its colour.
        assert!(svg.contains(&format!(r#"fill="{LOSS}"><title>slowdown: -0.300"#)));
        assert!(svg.contains(&format!(r#"fill="{GAIN}"><title>orchestration: 0.020"#)));
        assert!(svg.contains("gpipe M=8"));
    }
}
