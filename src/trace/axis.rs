//! What every chart's axes (and a text report's numbers) share: a time unit
//! chosen from the span (µs, ms or s), round ticks at 1, 2 or 5 × 10^k,
//! numbers to a few significant digits, and an estimate of a label's width
//! so that margins can be sized to what they hold.
//!
//! Plain functions of their arguments; the SVG renderers ([`super::svg`],
//! [`super::chart`]) call them, and so may the CLI's reports.

/// A unit of time: its name and how many µs one of it is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeUnit {
    pub name: &'static str,
    pub us: f64,
}

pub const MICROSECONDS: TimeUnit = TimeUnit {
    name: "µs",
    us: 1.0,
};
pub const MILLISECONDS: TimeUnit = TimeUnit {
    name: "ms",
    us: 1e3,
};
pub const SECONDS: TimeUnit = TimeUnit { name: "s", us: 1e6 };

impl TimeUnit {
    /// The largest of s, ms and µs in which `span_us` is at least 1:
    /// 14 160 209 µs → s, 40 000 µs → ms, 300 µs → µs.
    pub fn for_span(span_us: f64) -> TimeUnit {
        if span_us >= SECONDS.us {
            SECONDS
        } else if span_us >= MILLISECONDS.us {
            MILLISECONDS
        } else {
            MICROSECONDS
        }
    }

    /// `us` microseconds in this unit.
    pub fn of(&self, us: f64) -> f64 {
        us / self.us
    }
}

/// A duration to 4 significant digits in the unit its size calls for:
/// `14.16 s`, `174.4 ms`, `300.0 µs`.
pub fn duration(us: f64) -> String {
    let unit = TimeUnit::for_span(us.abs());
    format!("{} {}", sig(unit.of(us), 4), unit.name)
}

/// `x` rounded to `digits` significant digits, without an exponent:
/// `sig(14.160209, 4)` = `14.16`, `sig(11.991, 3)` = `12.0`,
/// `sig(0.0012345, 3)` = `0.00123`. Digits left of the point are kept
/// (`sig(123456.0, 3)` = `123456`).
pub fn sig(x: f64, digits: u32) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x == 0.0 {
        return "0".into();
    }
    let decimals = |v: f64| (digits as i32 - 1 - v.abs().log10().floor() as i32).max(0) as usize;
    // Round once, then count again: 9.9996 rounds to 10.00, one digit more.
    let d = decimals(x);
    let rounded: f64 = format!("{x:.d$}").parse().unwrap_or(x);
    let d = decimals(rounded).min(d);
    let s = format!("{rounded:.d$}");
    if s.trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        s.trim_start_matches('-').to_string()
    } else {
        s
    }
}

/// [`sig`] without trailing zeros after the point: `short(57.0, 4)` = `57`,
/// `short(39.2, 4)` = `39.2`.
pub fn short(x: f64, digits: u32) -> String {
    let s = sig(x, digits);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Ticks at whole multiples of a round step (1, 2 or 5 × 10^k): the
/// `first`-th to the `last`-th multiple.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ticks {
    /// 1, 2 or 5.
    mantissa: i64,
    /// The step is mantissa × 10^exponent.
    exponent: i32,
    pub first: i64,
    pub last: i64,
}

impl Ticks {
    /// The smallest round step that cuts `span` into at most `max_steps`
    /// steps (at least 1); a span of 0 gets the step of a span of 1.
    fn step_for(span: f64, max_steps: usize) -> (i64, i32) {
        let span = if span > 0.0 && span.is_finite() {
            span
        } else {
            1.0
        };
        let raw = span / max_steps.max(1) as f64;
        let mut exponent = raw.log10().floor() as i32;
        // A step exactly at a power of ten can land one decade low.
        if 10f64.powi(exponent + 1) <= raw {
            exponent += 1;
        }
        for mantissa in [1, 2, 5] {
            if mantissa as f64 * 10f64.powi(exponent) >= raw * (1.0 - 1e-12) {
                return (mantissa, exponent);
            }
        }
        (1, exponent + 1)
    }

    fn with_step(lo: f64, hi: f64, max_steps: usize) -> Ticks {
        let (mantissa, exponent) = Ticks::step_for(hi - lo, max_steps);
        Ticks {
            mantissa,
            exponent,
            first: 0,
            last: 0,
        }
    }

    /// Round ticks inside [`lo`, `hi`], at most `max_steps` steps apart
    /// over the span (the axis keeps its ends; a Gantt's time axis).
    pub fn inside(lo: f64, hi: f64, max_steps: usize) -> Ticks {
        let mut t = Ticks::with_step(lo, hi, max_steps);
        let step = t.step();
        t.first = (lo / step - 1e-9).ceil() as i64;
        t.last = ((hi / step + 1e-9).floor() as i64).max(t.first);
        t
    }

    /// Round ticks from at or below `lo` to at or above `hi`, at most
    /// `max_steps` steps (the axis grows to its outer ticks: a value axis).
    /// 0–446 with 5 steps: 0, 100, …, 500.
    pub fn covering(lo: f64, hi: f64, max_steps: usize) -> Ticks {
        let mut t = Ticks::with_step(lo, hi, max_steps);
        // Rounding both ends outward can add a step; widen until it fits.
        loop {
            let step = t.step();
            t.first = (lo / step + 1e-9).floor() as i64;
            t.last = ((hi / step - 1e-9).ceil() as i64).max(t.first + 1);
            if (t.last - t.first) as usize <= max_steps.max(1) {
                return t;
            }
            (t.mantissa, t.exponent) = match t.mantissa {
                1 => (2, t.exponent),
                2 => (5, t.exponent),
                _ => (1, t.exponent + 1),
            };
        }
    }

    pub fn step(&self) -> f64 {
        self.value(1)
    }

    /// The `i`-th multiple of the step, computed without accumulating error.
    fn value(&self, i: i64) -> f64 {
        let n = (i * self.mantissa) as f64;
        if self.exponent >= 0 {
            n * 10f64.powi(self.exponent)
        } else {
            n / 10f64.powi(-self.exponent)
        }
    }

    /// The lowest and the highest tick.
    pub fn lo(&self) -> f64 {
        self.value(self.first)
    }
    pub fn hi(&self) -> f64 {
        self.value(self.last)
    }

    pub fn values(&self) -> Vec<f64> {
        (self.first..=self.last).map(|i| self.value(i)).collect()
    }

    /// `v` with as many decimals as the step has (0.5 → one): every label
    /// of one axis alike.
    pub fn label(&self, v: f64) -> String {
        let d = (-self.exponent).max(0) as usize;
        let s = format!("{v:.d$}");
        if s.trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            s.trim_start_matches('-').to_string()
        } else {
            s
        }
    }

    pub fn labels(&self) -> Vec<String> {
        self.values().into_iter().map(|v| self.label(v)).collect()
    }
}

/// The width in px of `text` at `font_size` px: DejaVu Sans's advance
/// widths (what librsvg falls back to for Helvetica and sans-serif; wider
/// than Helvetica or Arial, so a margin sized by it holds the label in
/// either), grouped by character; bold adds a tenth.
pub fn text_width(text: &str, font_size: f64, bold: bool) -> f64 {
    let em: f64 = text
        .chars()
        .map(|c| match c {
            'i' | 'j' | 'l' | '\'' | '|' => 0.28,
            ' ' | '.' | ',' | ':' | ';' | '!' | '·' | 'I' => 0.32,
            'f' | 't' | 'r' | '(' | ')' | '[' | ']' | '/' | '-' => 0.41,
            'm' | 'w' | 'M' | 'W' | '%' | '—' | '@' => 1.0,
            '×' | '+' | '=' | '<' | '>' | '–' | '−' => 0.84,
            'A'..='Z' => 0.74,
            _ => 0.64,
        })
        .sum();
    em * font_size * if bold { 1.1 } else { 1.0 }
}

/// `text` broken at spaces into lines no wider than `max_width` px (a word
/// longer than that gets a line of its own).
pub fn wrap(text: &str, font_size: f64, bold: bool, max_width: f64) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split(' ') {
        match lines.last_mut() {
            Some(line) if text_width(&format!("{line} {word}"), font_size, bold) <= max_width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels_inside(lo: f64, hi: f64, n: usize) -> Vec<String> {
        Ticks::inside(lo, hi, n).labels()
    }

    #[test]
    fn a_span_picks_its_unit() {
        assert_eq!(TimeUnit::for_span(14_160_209.18), SECONDS);
        assert_eq!(TimeUnit::for_span(40_000.0), MILLISECONDS);
        assert_eq!(TimeUnit::for_span(999.9), MICROSECONDS);
        assert_eq!(TimeUnit::for_span(300.0), MICROSECONDS);
        assert_eq!(TimeUnit::for_span(1_000.0), MILLISECONDS);
        assert_eq!(TimeUnit::for_span(0.0), MICROSECONDS);
    }

    #[test]
    fn a_14_s_span_ticks_every_2_s() {
        let unit = TimeUnit::for_span(14_160_209.18);
        assert_eq!(format!("time ({})", unit.name), "time (s)");
        assert_eq!(
            labels_inside(0.0, unit.of(14_160_209.18), 10),
            ["0", "2", "4", "6", "8", "10", "12", "14"]
        );
    }

    #[test]
    fn short_spans_tick_in_ms_and_us() {
        let ms = TimeUnit::for_span(40_000.0);
        assert_eq!(
            labels_inside(0.0, ms.of(40_000.0), 10),
            ["0", "5", "10", "15", "20", "25", "30", "35", "40"]
        );
        let us = TimeUnit::for_span(300.0);
        assert_eq!(
            labels_inside(0.0, us.of(300.0), 10),
            ["0", "50", "100", "150", "200", "250", "300"]
        );
        assert_eq!(
            labels_inside(0.0, 174.41624, 10),
            ["0", "20", "40", "60", "80", "100", "120", "140", "160"]
        );
    }

    #[test]
    fn fractional_steps_label_alike() {
        assert_eq!(
            labels_inside(0.0, 1.3, 10),
            ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0", "1.2"]
        );
        assert_eq!(
            labels_inside(0.0, 0.07, 10),
            ["0.00", "0.01", "0.02", "0.03", "0.04", "0.05", "0.06", "0.07"]
        );
        assert_eq!(labels_inside(2.3, 5.0, 4), ["3", "4", "5"]);
        // A span of nothing still gets a tick.
        assert_eq!(labels_inside(0.0, 0.0, 10), ["0.0"]);
    }

    #[test]
    fn a_value_axis_grows_to_round_ends() {
        let t = Ticks::covering(0.0, 446.289, 5);
        assert_eq!(t.labels(), ["0", "100", "200", "300", "400", "500"]);
        let t = Ticks::covering(0.0, 446.289, 10);
        assert_eq!(
            t.labels(),
            ["0", "50", "100", "150", "200", "250", "300", "350", "400", "450"]
        );
        let t = Ticks::covering(0.0, 24.4, 6);
        assert_eq!(t.labels(), ["0", "5", "10", "15", "20", "25"]);
        let t = Ticks::covering(0.0, 1.88, 5);
        assert_eq!(t.labels(), ["0.0", "0.5", "1.0", "1.5", "2.0"]);
        assert_eq!((t.lo(), t.hi(), t.step()), (0.0, 2.0, 0.5));
        // 0–60 % bubble in steps of 10, not 12.
        let t = Ticks::covering(0.0, 50.2, 6);
        assert_eq!(t.labels(), ["0", "10", "20", "30", "40", "50", "60"]);
        // Exactly on a tick: no extra step above it.
        assert_eq!(
            Ticks::covering(0.0, 100.0, 5).labels().last().unwrap(),
            "100"
        );
        // One value: one step around it.
        assert_eq!(Ticks::covering(4.0, 4.0, 5).labels(), ["4.0", "4.2"]);
    }

    #[test]
    fn numbers_keep_their_significant_digits() {
        assert_eq!(sig(14.160_209_18, 4), "14.16");
        assert_eq!(sig(174.416_24, 4), "174.4");
        assert_eq!(sig(80.405_99, 4), "80.41");
        assert_eq!(sig(405.72, 3), "406");
        assert_eq!(sig(9.043, 3), "9.04");
        assert_eq!(sig(11.991, 3), "12.0");
        assert_eq!(sig(57.0, 4), "57.00");
        assert_eq!(sig(0.001_234_5, 3), "0.00123");
        assert_eq!(sig(9.9996, 4), "10.00");
        assert_eq!(sig(123_456.0, 3), "123456");
        assert_eq!(sig(-0.0001, 2), "-0.00010");
        assert_eq!(sig(-0.000_01, 1), "-0.00001");
        assert_eq!(sig(0.0, 4), "0");
        assert_eq!(short(57.0, 4), "57");
        assert_eq!(short(39.200_000_000_000_045, 4), "39.2");
        assert_eq!(short(1200.0, 2), "1200");
        assert_eq!(duration(14_160_209.18), "14.16 s");
        assert_eq!(duration(174_416.24), "174.4 ms");
        assert_eq!(duration(300.0), "300.0 µs");
        assert_eq!(duration(7_646_263.75), "7.646 s");
    }

    #[test]
    fn text_is_measured_and_wrapped() {
        assert!((text_width("10", 10.0, false) - 12.8).abs() < 1e-9);
        assert!(text_width("W", 12.0, true) > text_width("W", 12.0, false));
        // "aa aa" is 28.8 px at 10 px, "aa aa aa" 44.8.
        assert_eq!(wrap("aa aa aa", 10.0, false, 30.0), ["aa aa", "aa"]);
        assert_eq!(wrap("one", 10.0, false, 1.0), ["one"]);
    }
}
