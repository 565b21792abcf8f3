//! The one text-grid formatter: one row per device, one column per step,
//! `.` for an idle step. Used by `wgpipe plan`, by validation and deadlock
//! messages (a marked cell is drawn `[1F0]` and its row ends `<-- here`), and
//! by tests.

use std::collections::HashSet;
use std::fmt::Write;

use crate::schedule::Schedule;

/// Renders `s` as a device × step grid; `marks` are (device, step) cells to
/// point at.
pub fn render(s: &Schedule, marks: &[(usize, usize)]) -> String {
    let steps = s
        .steps()
        .max(marks.iter().map(|&(_, step)| step + 1).max().unwrap_or(0));
    let cell_text = |d: usize, step: usize| -> String {
        match s.rows.get(d).and_then(|r| r.get(step)) {
            Some(Some(a)) => a.to_string(),
            Some(None) => ".".to_string(),
            None => String::new(),
        }
    };
    let mut width = steps.saturating_sub(1).to_string().len();
    for (_, _, a) in s.actions() {
        width = width.max(a.to_string().len());
    }
    let label_width = format!("dev {}", s.rows.len().saturating_sub(1))
        .len()
        .max(4)
        + 1;

    // Each row is drawn to its own last cell or mark (past that it would be
    // blanks, trimmed): rows × the widest row would be quadratic in a CSV's
    // size, and every validation error draws the grid.
    let marked: HashSet<(usize, usize)> = marks.iter().copied().collect();
    let mut row_end: Vec<usize> = s.rows.iter().map(Vec::len).collect();
    for &(d, step) in marks {
        if let Some(end) = row_end.get_mut(d) {
            *end = (*end).max(step + 1);
        }
    }

    let mut out = String::new();
    let _ = write!(out, "{:<label_width$}", "step");
    for step in 0..steps {
        let _ = write!(out, " {step:>width$} ");
    }
    trim_end(&mut out);
    out.push('\n');
    for (d, &end) in row_end.iter().enumerate() {
        let _ = write!(out, "{:<label_width$}", format!("dev {d}"));
        let mut marked_row = false;
        for step in 0..end {
            let text = cell_text(d, step);
            if marked.contains(&(d, step)) {
                marked_row = true;
                let _ = write!(out, "[{text:>width$}]");
            } else {
                let _ = write!(out, " {text:>width$} ");
            }
        }
        trim_end(&mut out);
        if marked_row {
            out.push_str("  <-- here");
        }
        out.push('\n');
    }
    out
}

fn trim_end(s: &mut String) {
    let len = s.trim_end().len();
    s.truncate(len);
}

#[cfg(test)]
mod tests {
    use crate::schedule::{Schedule, ScheduleKind};

    #[test]
    fn gpipe_forward_grid_shows_idle_steps() {
        let s = Schedule::generate(ScheduleKind::Gpipe, 2, 2, 1, true).unwrap();
        let g = super::render(&s, &[(1, 2)]);
        assert_eq!(
            g,
            "step     0    1    2\ndev 0  0F0  0F1\ndev 1    .  1F0 [1F1]  <-- here\n"
        );
    }
}
