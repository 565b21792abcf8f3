//! The bubble chart of `wgpipe bench bubble`: bubble fraction against the
//! number of microbatches M (log2 axis) — per schedule, the analytic curve as
//! a line, simulated points as rings and measured points as dots; and the
//! waterfall of where the speedup goes (`bench bubble --waterfall`).

use std::fmt::Write;

use super::svg::escape;

/// One schedule's points: (M, analytic, simulated, measured).
pub struct Series {
    pub label: String,
    /// Analytic bubble at any integer M (for the curve between points).
    pub analytic: Box<dyn Fn(usize) -> f64>,
    pub points: Vec<(usize, f64, f64, f64)>,
}

const PALETTE: [&str; 6] = [
    "#3b7dd8", "#e0663a", "#3fa463", "#8e5bc8", "#c9a227", "#444444",
];
const W: f64 = 760.0;
const H: f64 = 440.0;
const L: f64 = 70.0;
const R: f64 = 200.0;
const T: f64 = 50.0;
const B: f64 = 56.0;

pub fn bubble_chart(series: &[Series], title: &str) -> String {
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
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|p| [p.1, p.2, p.3]))
        .filter(|y| y.is_finite())
        .fold(0.1f64, f64::max)
        .min(1.0);
    let ymax = (ymax * 10.0).ceil() / 10.0;
    let x = |m: f64| L + (m.log2() - lx) / (hx - lx) * (W - L - R);
    let y = |b: f64| T + (1.0 - b / ymax) * (H - T - B);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{L}" y="26" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    // Axes and grid.
    for i in 0..=5 {
        let b = ymax * i as f64 / 5.0;
        let yy = y(b);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{:.0}%</text>"##,
            W - R,
            L - 6.0,
            yy + 4.0,
            100.0 * b
        );
    }
    let mut m = 1usize;
    while m <= hi {
        if m >= lo {
            let xx = x(m as f64);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{T}" y2="{}" stroke="#e4e4e4"/><text x="{xx:.1}" y="{}" text-anchor="middle">{m}</text>"##,
                H - B,
                H - B + 16.0
            );
        }
        m *= 2;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">microbatches M</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">bubble fraction</text>"#,
        (L + W - R) / 2.0,
        H - 14.0,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    // Series.
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
        let ly = T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            W - R + 16.0,
            W - R + 40.0,
            W - R + 46.0,
            ly + 4.0,
            escape(&se.label)
        );
    }
    let ly = T + 20.0 + 20.0 * series.len() as f64;
    let _ = writeln!(
        s,
        r##"<text x="{0}" y="{1}">line: analytic</text><circle cx="{2}" cy="{3}" r="6" fill="none" stroke="#444"/><text x="{0}" y="{4}">simulated</text><circle cx="{2}" cy="{5}" r="3.5" fill="#444"/><text x="{0}" y="{6}">measured</text>"##,
        W - R + 30.0,
        ly + 4.0,
        W - R + 20.0,
        ly + 16.0,
        ly + 20.0,
        ly + 32.0,
        ly + 36.0
    );
    s += "</svg>\n";
    s
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

/// Waterfalls side by side, one panel each, on one speedup axis: the ideal
/// and the measured speedup as full bars, every loss as a bar hanging from
/// the running total (orange: a loss; green: a gain).
pub fn waterfall_chart(falls: &[Waterfall], title: &str) -> String {
    const BAR: f64 = 22.0;
    const GAP: f64 = 6.0;
    const PANEL_GAP: f64 = 34.0;
    let bars = |f: &Waterfall| f.steps.len() + 2;
    let panel_w = |f: &Waterfall| bars(f) as f64 * (BAR + GAP);
    let width = L + falls.iter().map(|f| panel_w(f) + PANEL_GAP).sum::<f64>() + 40.0;
    let (h, t, b) = (420.0, 50.0, 120.0);
    let mut ymax: f64 = 1.0;
    for f in falls {
        let mut run = f.ideal;
        ymax = ymax.max(run).max(f.measured);
        for (_, loss) in &f.steps {
            run -= loss;
            ymax = ymax.max(run);
        }
    }
    let ymax = (ymax * 2.0).ceil() / 2.0;
    let y = |v: f64| t + (1.0 - v.clamp(0.0, ymax) / ymax) * (h - t - b);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(s, r#"<rect width="{width:.0}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{L}" y="26" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let steps = (ymax / 0.5).round() as usize;
    for i in 0..=steps {
        let v = 0.5 * i as f64;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{:.0}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{v:.1}</text>"##,
            width - 30.0,
            L - 6.0,
            yy + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="16" y="{0}" transform="rotate(-90 16 {0})" text-anchor="middle">speedup over one device</text>"#,
        (t + h - b) / 2.0
    );
    let mut x0 = L + 10.0;
    for f in falls {
        let mut bar = |i: usize, top: f64, bottom: f64, fill: &str, name: &str, value: f64| {
            let x = x0 + i as f64 * (BAR + GAP);
            let (y0, y1) = (y(top.max(bottom)), y(top.min(bottom)));
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y0:.1}" width="{BAR}" height="{:.1}" fill="{fill}"><title>{}: {value:.3}</title></rect>"#,
                (y1 - y0).max(0.5),
                escape(name)
            );
            let _ = writeln!(
                s,
                r#"<text x="{0:.1}" y="{1:.1}" text-anchor="middle" font-size="9">{value:.2}</text>"#,
                x + BAR / 2.0,
                y0 - 3.0
            );
            let (lx, ly) = (x + BAR / 2.0, h - b + 8.0);
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
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
            x0 + panel_w(f) / 2.0,
            t - 8.0,
            escape(&f.label)
        );
        x0 += panel_w(f) + PANEL_GAP;
    }
    s += "</svg>\n";
    s
}

/// One line of a [`line_chart`]: (x, y) points in x order.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Lines on linear axes from 0 (`bench decode`: tokens/s against groups in
/// flight, one line per pipeline depth), each point marked and labelled.
pub fn line_chart(lines: &[Line], title: &str, x_label: &str, y_label: &str) -> String {
    let pts = || lines.iter().flat_map(|l| l.points.iter().copied());
    let xmax = pts()
        .map(|p| p.0)
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let ymax = pts()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(1e-9f64, f64::max)
        * 1.1;
    let x = |v: f64| L + v / xmax * (W - L - R);
    let y = |v: f64| T + (1.0 - v / ymax) * (H - T - B);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{L}" y="26" font-size="15" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for i in 0..=5 {
        let v = ymax * i as f64 / 5.0;
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{v:.3}</text>"##,
            W - R,
            L - 6.0,
            yy + 4.0
        );
    }
    for i in 1..=(xmax as usize) {
        let xx = x(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{T}" y2="{}" stroke="#e4e4e4"/><text x="{xx:.1}" y="{}" text-anchor="middle">{i}</text>"##,
            H - B,
            H - B + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text><text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">{}</text>"#,
        (L + W - R) / 2.0,
        H - 14.0,
        escape(x_label),
        (T + H - B) / 2.0,
        (T + H - B) / 2.0,
        escape(y_label)
    );
    for (i, l) in lines.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = l
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for &(a, b) in l.points.iter().filter(|p| p.1.is_finite()) {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{b:.2}</text>"#,
                x(a),
                y(b),
                x(a),
                y(b) - 8.0
            );
        }
        let ly = T + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            W - R + 16.0,
            W - R + 40.0,
            W - R + 46.0,
            ly + 4.0,
            escape(&l.label)
        );
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod waterfall_tests {
    use super::*;

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
