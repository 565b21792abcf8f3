//! Line charts (`bench decode`: tokens/s against groups in flight;
//! `bench layouts`: throughput against the TP degree). Lines whose
//! magnitudes differ by 10× or more are drawn in panels of their own, stacked
//! on one x axis, each with its own round y ticks; every point is labelled
//! where its label does not cover another label or point, and dropped where
//! it would.

use std::fmt::Write;

use super::axis::{sig, text_width, Ticks};
use super::chart::{document, left_margin, title, y_grid, y_title, FONT, PALETTE};
use super::svg::escape;

/// One line of a [`line_chart`]: (x, y) points in x order.
pub struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 760.0;
const RIGHT: f64 = 24.0;
/// A plot's height: alone, or one of several stacked panels.
const ALONE: f64 = 300.0;
const PANEL: f64 = 200.0;
const POINT_FONT: f64 = 10.0;

/// The lines' finite points.
fn finite(l: &Line) -> impl Iterator<Item = (f64, f64)> + '_ {
    l.points
        .iter()
        .copied()
        .filter(|p| p.0.is_finite() && p.1.is_finite())
}

/// A line's largest |y|.
fn peak(l: &Line) -> f64 {
    finite(l).map(|p| p.1.abs()).fold(0.0, f64::max)
}

/// The lines (by index) grouped into panels: largest peak first, a line joins
/// the current panel while that panel's largest peak is under 10× its own. A
/// panel lists its lines in the caller's order; panels go in the order of
/// their first line.
pub(crate) fn panels(lines: &[Line]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by(|&a, &b| peak(&lines[b]).total_cmp(&peak(&lines[a])).then(a.cmp(&b)));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in order {
        match groups.last_mut() {
            Some(g) if peak(&lines[g[0]]) < 10.0 * peak(&lines[i]) || peak(&lines[i]) == 0.0 => {
                g.push(i)
            }
            _ => groups.push(vec![i]),
        }
    }
    for g in &mut groups {
        g.sort();
    }
    groups.sort_by_key(|g| g[0]);
    groups
}

/// A label's or a marker's box: left, right, top, bottom.
#[derive(Clone, Copy)]
struct Rect(f64, f64, f64, f64);

impl Rect {
    fn overlaps(&self, o: &Rect) -> bool {
        self.0 < o.1 && o.0 < self.1 && self.2 < o.3 && o.2 < self.3
    }
}

/// Lines on linear axes, the y axes from 0 (or below, for negative values),
/// x ticked at round steps and padded half a step either side; each panel's
/// legend above it.
pub fn line_chart(lines: &[Line], title_text: &str, x_label: &str, y_label: &str) -> String {
    let groups = panels(lines);
    let yticks: Vec<Ticks> = groups
        .iter()
        .map(|g| {
            let ys = || g.iter().flat_map(|&i| finite(&lines[i])).map(|p| p.1);
            let hi = ys().fold(0.0, f64::max);
            let lo = ys().fold(0.0, f64::min);
            // Headroom for the labels above the highest points.
            let pad = 0.08 * (hi - lo).max(f64::MIN_POSITIVE);
            Ticks::covering(lo - if lo < 0.0 { pad } else { 0.0 }, hi + pad, 6)
        })
        .collect();
    let left = left_margin(&yticks.iter().collect::<Vec<_>>(), FONT, "");
    let plot_w = WIDTH - left - RIGHT;

    // x: round ticks over the points, whole numbers for whole-number data.
    let xs = || lines.iter().flat_map(finite).map(|p| p.0);
    let (xmin, xmax) = (
        xs().fold(f64::INFINITY, f64::min),
        xs().fold(f64::NEG_INFINITY, f64::max),
    );
    let (xmin, xmax) = if xmin.is_finite() {
        (xmin, xmax)
    } else {
        (0.0, 1.0)
    };
    let whole = xs().all(|v| v.fract() == 0.0);
    let steps = if whole {
        ((xmax - xmin).round() as usize).clamp(1, 10)
    } else {
        8
    };
    let xt = Ticks::covering(xmin, xmax, steps);
    let (x0, x1) = (xt.lo() - xt.step() / 2.0, xt.hi() + xt.step() / 2.0);
    let x = |v: f64| left + (v - x0) / (x1 - x0) * plot_w;

    let mut s = String::new();
    let mut cursor = title(&mut s, title_text, left, WIDTH - left - 12.0) + 10.0;
    let height = if groups.len() == 1 { ALONE } else { PANEL };
    let mut bottom = cursor;
    for (g, ticks) in groups.iter().zip(&yticks) {
        // The panel's legend: its lines, left to right, wrapping.
        let mut lx = left;
        cursor += 18.0;
        for &i in g {
            let w = 30.0 + text_width(&lines[i].label, FONT, false);
            if lx + w > WIDTH - RIGHT && lx > left {
                lx = left;
                cursor += 18.0;
            }
            let c = PALETTE[i % PALETTE.len()];
            let _ = writeln!(
                s,
                r#"<line x1="{lx:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{c}" stroke-width="2"/><text class="legend" x="{:.1}" y="{cursor:.1}">{}</text>"#,
                lx + 24.0,
                cursor - 4.0,
                cursor - 4.0,
                lx + 30.0,
                escape(&lines[i].label)
            );
            lx += w + 18.0;
        }
        let top = cursor + 14.0;
        bottom = top + height;
        let y = |v: f64| top + (1.0 - (v - ticks.lo()) / (ticks.hi() - ticks.lo())) * height;
        let _ = writeln!(s, r#"<g class="panel">"#);
        y_grid(&mut s, ticks, left, left + plot_w, y, "");
        for v in xt.values() {
            let xx = x(v);
            let _ = writeln!(
                s,
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{top:.1}" y2="{bottom:.1}" stroke="#e4e4e4"/>"##
            );
        }
        y_title(&mut s, y_label, top + height / 2.0);
        for &i in g {
            let c = PALETTE[i % PALETTE.len()];
            let path: Vec<String> = finite(&lines[i])
                .map(|(a, b)| format!("{:.1},{:.1}", x(a), y(b)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{c}" stroke-width="2"/>"#,
                path.join(" ")
            );
            for (a, b) in finite(&lines[i]) {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"/>"#,
                    x(a),
                    y(b)
                );
            }
        }
        point_labels(&mut s, lines, g, &x, &y, (top, bottom));
        s.push_str("</g>\n");
        cursor = bottom + 20.0;
    }
    for v in xt.values() {
        let _ = writeln!(
            s,
            r#"<text class="xtick" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(v),
            bottom + 16.0,
            xt.label(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        bottom + 38.0,
        escape(x_label)
    );
    document(WIDTH, bottom + 52.0, FONT, &s)
}

/// Each point's value (3 significant digits, in its line's colour) above its
/// marker, or below where that would cover a label already placed or another
/// marker, or not at all where both would; within the panel's `(top,
/// bottom)`. Points go left to right, the higher first, so where two meet
/// the higher one's label goes above and the lower one's below.
fn point_labels(
    s: &mut String,
    lines: &[Line],
    group: &[usize],
    x: &impl Fn(f64) -> f64,
    y: &impl Fn(f64) -> f64,
    (top, bottom): (f64, f64),
) {
    let mut points: Vec<(f64, f64, usize)> = group
        .iter()
        .flat_map(|&i| finite(&lines[i]).map(move |(a, b)| (a, b, i)))
        .collect();
    points.sort_by(|p, q| {
        p.0.total_cmp(&q.0)
            .then(q.1.total_cmp(&p.1))
            .then(p.2.cmp(&q.2))
    });
    let mut taken: Vec<Rect> = points
        .iter()
        .map(|&(a, b, _)| Rect(x(a) - 4.5, x(a) + 4.5, y(b) - 4.5, y(b) + 4.5))
        .collect();
    for &(a, b, i) in &points {
        let (px, py) = (x(a), y(b));
        let text = sig(b, 3);
        let half = text_width(&text, POINT_FONT, false) / 2.0 + 1.0;
        let spot = [py - 8.0, py + 16.0].into_iter().find_map(|base| {
            let r = Rect(px - half, px + half, base - 8.5, base + 2.5);
            let inside = r.2 >= top - 6.0 && r.3 <= bottom - 1.0;
            (inside && !taken.iter().any(|t| t.overlaps(&r))).then_some((base, r))
        });
        if let Some((base, r)) = spot {
            taken.push(r);
            let _ = writeln!(
                s,
                r#"<text class="point" x="{px:.1}" y="{base:.1}" font-size="{POINT_FONT}" text-anchor="middle" fill="{}">{text}</text>"#,
                PALETTE[i % PALETTE.len()]
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::check;

    fn line(label: &str, points: &[(f64, f64)]) -> Line {
        Line {
            label: label.into(),
            points: points.to_vec(),
        }
    }

    /// `docs/layouts-n4.csv`'s three lines: prefill 20–40× the other two.
    fn layouts() -> Vec<Line> {
        vec![
            line(
                "prefill tokens/s",
                &[(1.0, 405.72), (2.0, 261.31), (4.0, 192.60)],
            ),
            line(
                "decode tokens/s (P groups)",
                &[(1.0, 22.383), (2.0, 10.553), (4.0, 9.043)],
            ),
            line(
                "1 / ITL (tokens/s, one sequence)",
                &[(1.0, 11.322), (2.0, 10.326), (4.0, 9.708)],
            ),
        ]
    }

    #[test]
    fn a_30x_line_gets_its_own_panel() {
        assert_eq!(panels(&layouts()), [vec![0], vec![1, 2]]);
        let svg = line_chart(&layouts(), "layouts", "T", "tokens/s");
        assert_eq!(svg.matches(r#"<g class="panel">"#).count(), 2);
        assert_eq!(
            check::class(&svg, "ytick"),
            ["0", "100", "200", "300", "400", "500", "0", "5", "10", "15", "20", "25"]
        );
        assert_eq!(check::class(&svg, "xtick"), ["1", "2", "3", "4"]);
        assert_eq!(check::class(&svg, "axis"), ["tokens/s", "tokens/s", "T"]);
        check::nothing_cut(&svg);
    }

    #[test]
    fn lines_within_10x_share_a_panel() {
        let lines = [
            line("P=1", &[(1.0, 11.757), (2.0, 11.871)]),
            line(
                "P=2",
                &[(1.0, 11.991), (2.0, 23.036), (3.0, 23.740), (4.0, 24.401)],
            ),
        ];
        assert_eq!(panels(&lines), [vec![0, 1]]);
        let svg = line_chart(&lines, "decode", "groups in flight", "tokens/s");
        assert_eq!(svg.matches(r#"<g class="panel">"#).count(), 1);
        assert_eq!(
            check::class(&svg, "ytick"),
            ["0", "5", "10", "15", "20", "25", "30"]
        );
        check::nothing_cut(&svg);
    }

    #[test]
    fn point_labels_do_not_overlap() {
        // At x = 1 and 2 the decode and ITL points nearly meet; at 3 four
        // lines meet at one point and only two labels fit there.
        let mut lines = layouts();
        lines.push(line("a", &[(3.0, 10.0)]));
        lines.push(line("b", &[(3.0, 10.0)]));
        lines.push(line("c", &[(3.0, 10.0)]));
        lines.push(line("d", &[(3.0, 10.0)]));
        let svg = line_chart(&lines, "crowded", "T", "tokens/s");
        let labels: Vec<check::Text> = check::texts(&svg)
            .into_iter()
            .filter(|t| t.class == "point")
            .collect();
        let boxes: Vec<((f64, f64), (f64, f64))> = labels
            .iter()
            .map(|t| (t.x_extent(), t.y_extent()))
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            for (j, b) in boxes.iter().enumerate().skip(i + 1) {
                let apart =
                    a.0 .1 <= b.0 .0 || b.0 .1 <= a.0 .0 || a.1 .1 <= b.1 .0 || b.1 .1 <= a.1 .0;
                assert!(apart, "{:?} overlaps {:?}", labels[i], labels[j]);
            }
        }
        // 9 points of the three lines, all labelled, and 2 of the 4 at x = 3.
        assert_eq!(labels.len(), 9 + 2);
        let texts: Vec<&str> = labels.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(
            texts,
            ["406", "261", "193", "22.4", "11.3", "10.6", "10.3", "10.0", "10.0", "9.71", "9.04"]
        );
        check::nothing_cut(&svg);
    }
}
