//! CSV form of a schedule: one row per device, cells are actions (`1F0`),
//! an empty cell is a deliberate idle step. An optional first line
//! `# wgpipe schedule name=… devices=… virtual=… microbatches=…` keeps the
//! metadata; without it (a hand-written file) devices = number of rows,
//! v and M are the smallest that hold every action, and the name is the
//! file's. Other lines starting with `#` are comments.

use std::path::Path;

use crate::schedule::{Action, Schedule, ScheduleError};

/// The CSV text of `s`.
pub fn to_csv(s: &Schedule) -> String {
    let mut out = format!(
        "# wgpipe schedule name={} devices={} virtual={} microbatches={}\n",
        s.name, s.devices, s.virtual_stages, s.microbatches
    );
    for row in &s.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|c| c.map(|a| a.to_string()).unwrap_or_default())
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Parses CSV text; `origin` names it in errors (a path) and is the default name.
pub fn from_csv(text: &str, origin: &str) -> Result<Schedule, ScheduleError> {
    let mut meta: Option<(String, usize, usize, usize)> = None;
    let mut rows: Vec<Vec<Option<Action>>> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if let Some(comment) = line.trim_start().strip_prefix('#') {
            if let Some(fields) = comment.trim().strip_prefix("wgpipe schedule") {
                meta = Some(parse_meta(fields, origin, i + 1)?);
            }
            continue;
        }
        let mut row = Vec::new();
        if !line.trim().is_empty() {
            for (j, cell) in line.split(',').enumerate() {
                if cell.trim().is_empty() {
                    row.push(None);
                } else {
                    let a = cell.parse::<Action>().map_err(|e| ScheduleError::CsvCell {
                        path: origin.to_string(),
                        line: i + 1,
                        cell: j + 1,
                        source: Box::new(e.into()),
                    })?;
                    row.push(Some(a));
                }
            }
        }
        rows.push(row);
    }
    while rows.last().is_some_and(Vec::is_empty) {
        rows.pop();
    }
    if rows.is_empty() {
        return Err(ScheduleError::CsvFormat {
            path: origin.into(),
            reason: "it has no rows; write one row of actions per device".into(),
        });
    }
    let (name, devices, virtual_stages, microbatches) = match meta {
        Some(m) => m,
        None => {
            let p = rows.len();
            let all = rows.iter().flatten().flatten();
            // Saturating: a cell may name stage or microbatch usize::MAX;
            // validation then says it is out of range.
            let v = (all.clone())
                .map(|a| (a.stage / p).saturating_add(1))
                .max()
                .unwrap_or(1);
            let m = (all.map(|a| a.microbatch.saturating_add(1)))
                .max()
                .unwrap_or(1);
            (default_name(origin), p, v, m)
        }
    };
    Ok(Schedule {
        name,
        devices,
        virtual_stages,
        microbatches,
        rows,
        feedback: 0,
    })
}

fn default_name(origin: &str) -> String {
    Path::new(origin)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| origin.to_string())
}

fn parse_meta(
    fields: &str,
    origin: &str,
    line: usize,
) -> Result<(String, usize, usize, usize), ScheduleError> {
    let bad = |reason: String| ScheduleError::CsvFormat {
        path: origin.into(),
        reason: format!("line {line}: {reason}"),
    };
    let (mut name, mut p, mut v, mut m) = (None, None, None, None);
    for field in fields.split_whitespace() {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| bad(format!("\"{field}\" is not key=value")))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| bad(format!("{key}={value} is not a whole number")))
        };
        match key {
            "name" => name = Some(value.to_string()),
            "devices" => p = Some(number()?),
            "virtual" => v = Some(number()?),
            "microbatches" => m = Some(number()?),
            _ => {
                return Err(bad(format!(
                    "unknown field \"{key}\"; expected name, devices, virtual, microbatches"
                )));
            }
        }
    }
    match (name, p, v, m) {
        (Some(n), Some(p), Some(v), Some(m)) => Ok((n, p, v, m)),
        _ => Err(bad(
            "the header needs name=, devices=, virtual= and microbatches=".into(),
        )),
    }
}

/// Reads a schedule from a CSV file.
pub fn load(path: &Path) -> Result<Schedule, ScheduleError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScheduleError::Io {
        op: "read",
        path: path.into(),
        source,
    })?;
    from_csv(&text, &path.display().to_string())
}

/// Writes `s` as CSV to `path`, refusing a directory.
pub fn save(s: &Schedule, path: &Path) -> Result<(), ScheduleError> {
    write_file(path, to_csv(s).as_bytes())
}

/// Writes `bytes` to the file `path` atomically ([`crate::io::write_atomic_with`]);
/// a directory there is refused.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ScheduleError> {
    let io_error = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::IsADirectory => ScheduleError::OutputIsDirectory { path: path.into() },
        _ => ScheduleError::Io {
            op: "write",
            path: path.into(),
            source,
        },
    };
    crate::io::write_atomic_with(
        path,
        |tmp| std::fs::write(tmp, bytes).map_err(io_error),
        io_error,
    )
}
