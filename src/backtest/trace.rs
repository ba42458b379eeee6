//! Trace reader: a CSV with a timestamp column and a value column, placed on a regular grid.
//!
//! - A header is detected (a first row whose time field is not a timestamp); columns are chosen
//!   by name or 0-based index, else the time column is the first whose header looks like a time
//!   (`period`, `time`, `timestamp`, `date`, `ts`) or column 0, and the value column the first
//!   other column.
//! - Timestamps: `YYYY-MM-DD HH:MM:SS`, RFC 3339, `YYYY-MM-DDTHH:MM:SS` (UTC), or Unix seconds.
//! - Rows are sorted by time; duplicate timestamps are an error. The step is the most common
//!   difference between consecutive timestamps; samples sit on the grid from the first one and
//!   grid points without a sample are missing (`None`), never zero.
//! - An empty value field (or `NA`, `NaN`) is a missing sample too.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime};

/// Errors of the trace reader; each names the file, and where it applies the line and field.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A field could not be parsed.
    #[error("{path}:{line}: field {field:?}: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column name (or index).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A named column is not in the header.
    #[error("{path}: no column {column:?} (columns: {columns})")]
    NoColumn {
        /// The file.
        path: PathBuf,
        /// The column asked for.
        column: String,
        /// The header's columns.
        columns: String,
    },
    /// The file has no data rows.
    #[error("{path}: the trace has no data rows")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Two rows have the same timestamp.
    #[error("{path}:{line}: duplicate timestamp {timestamp} (first at line {first_line})")]
    Duplicate {
        /// The file.
        path: PathBuf,
        /// Line of the second row.
        line: usize,
        /// Line of the first row.
        first_line: usize,
        /// The timestamp, as Unix seconds.
        timestamp: i64,
    },
    /// Two samples fall on the same grid point, or the grid would be absurdly long.
    #[error("{path}:{line}: {message}")]
    Grid {
        /// The file.
        path: PathBuf,
        /// The offending line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Result alias of the trace reader.
pub type Result<T> = std::result::Result<T, TraceError>;

/// Which columns to read (names or 0-based indices); `None` chooses as the module docs say.
#[derive(Debug, Clone, Default)]
pub struct TraceOptions {
    /// The timestamp column.
    pub time_column: Option<String>,
    /// The value column.
    pub value_column: Option<String>,
}

/// A load series on a regular grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Unix seconds of step 0.
    pub start: i64,
    /// Step length in seconds.
    pub step_seconds: i64,
    /// The value at each step; `None` where the trace has no sample.
    pub values: Vec<Option<f64>>,
}

impl Trace {
    /// Number of grid steps.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the trace has no steps.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of missing grid points.
    pub fn missing(&self) -> usize {
        self.values.iter().filter(|v| v.is_none()).count()
    }

    /// The same load on a coarser grid of `seconds` (a multiple of the step): each new step
    /// holds the load of its steps, estimated as their known mean times their number (so a
    /// missing minute does not read as an hour with less load); missing when none is known.
    /// `None` when `seconds` is not a positive multiple of the step.
    pub fn aggregate(&self, seconds: i64) -> Option<Trace> {
        if seconds <= 0 || self.step_seconds <= 0 || seconds % self.step_seconds != 0 {
            return None;
        }
        let per = (seconds / self.step_seconds) as usize;
        // Buckets aligned to multiples of `seconds` since the epoch (whole hours, days).
        let start = self.start.div_euclid(seconds) * seconds;
        let skip = ((self.start - start) / self.step_seconds) as usize;
        let mut values = Vec::with_capacity((self.values.len() + skip).div_ceil(per));
        let padded = std::iter::repeat_n(None, skip).chain(self.values.iter().copied());
        let padded: Vec<Option<f64>> = padded.collect();
        for chunk in padded.chunks(per) {
            let known: Vec<f64> = chunk.iter().flatten().copied().collect();
            values.push(
                (!known.is_empty())
                    .then(|| known.iter().sum::<f64>() / known.len() as f64 * per as f64),
            );
        }
        Some(Trace {
            start,
            step_seconds: seconds,
            values,
        })
    }
}

/// Where the shared traces live: `$EBB_TRACES_DIR`, else `../shared/traces` beside the crate
/// (the main checkout's layout), else `/work/shared/traces`. Used by tests and benches.
pub fn traces_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EBB_TRACES_DIR") {
        return PathBuf::from(dir);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/traces");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/traces")
}

/// The shared WorldCup 98 trace (requests per minute).
pub fn worldcup_trace_path() -> PathBuf {
    traces_dir().join("worldcup98-requests-per-minute.csv")
}

/// Longest grid accepted (about 19 years of minutes, a few hundred MB at most): protects against a stray timestamp.
pub const MAX_STEPS: i64 = 10_000_000;

/// Read and grid a trace file.
pub fn read_trace(path: &Path, opts: &TraceOptions) -> Result<Trace> {
    let text = std::fs::read(path).map_err(|source| TraceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_trace(&String::from_utf8_lossy(&text), path, opts)
}

/// Parse and grid trace text; `path` only names the source in errors.
pub fn parse_trace(text: &str, path: &Path, opts: &TraceOptions) -> Result<Trace> {
    let field_err = |line: usize, field: &str, message: String| TraceError::Field {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((first_no, first)) = lines.next() else {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    };
    let first_fields = split(first);
    // A header row: its would-be time field is not a timestamp.
    let guess_time = opts
        .time_column
        .as_deref()
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(0);
    let has_header = first_fields
        .get(guess_time)
        .is_none_or(|f| parse_time(f).is_none());
    let names: Vec<String> = if has_header {
        first_fields.iter().map(|s| s.to_string()).collect()
    } else {
        (0..first_fields.len()).map(|i| i.to_string()).collect()
    };
    let find = |want: &str| -> Result<usize> {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(want))
            .or_else(|| want.parse::<usize>().ok().filter(|&i| i < names.len()))
            .ok_or_else(|| TraceError::NoColumn {
                path: path.to_path_buf(),
                column: want.to_string(),
                columns: names.join(","),
            })
    };
    let time_col = match &opts.time_column {
        Some(c) => find(c)?,
        None => names
            .iter()
            .position(|n| {
                let n = n.to_ascii_lowercase();
                ["period", "time", "timestamp", "date", "datetime", "ts"].contains(&n.as_str())
            })
            .unwrap_or(0),
    };
    let value_col = match &opts.value_column {
        Some(c) => find(c)?,
        None => (0..names.len())
            .find(|&i| i != time_col)
            .ok_or_else(|| TraceError::NoColumn {
                path: path.to_path_buf(),
                column: "<value>".to_string(),
                columns: names.join(","),
            })?,
    };
    let time_name = names[time_col].clone();
    let value_name = names[value_col].clone();

    // (timestamp, value, line)
    let mut rows: Vec<(i64, Option<f64>, usize)> = Vec::new();
    let data_rows = if has_header {
        None
    } else {
        Some((first_no, first))
    };
    for (no, line) in data_rows.into_iter().chain(lines) {
        let fields = split(line);
        let t_field = fields
            .get(time_col)
            .ok_or_else(|| field_err(no, &time_name, "missing field".into()))?;
        let t = parse_time(t_field)
            .ok_or_else(|| field_err(no, &time_name, format!("not a timestamp: {t_field:?}")))?;
        let v_field = fields.get(value_col).copied().unwrap_or("");
        let v = parse_value(v_field).map_err(|m| field_err(no, &value_name, m))?;
        rows.push((t, v, no));
    }
    if rows.is_empty() {
        return Err(TraceError::Empty {
            path: path.to_path_buf(),
        });
    }
    rows.sort_by_key(|r| (r.0, r.2));
    for w in rows.windows(2) {
        if w[0].0 == w[1].0 {
            return Err(TraceError::Duplicate {
                path: path.to_path_buf(),
                line: w[1].2,
                first_line: w[0].2,
                timestamp: w[1].0,
            });
        }
    }
    let step = most_common_delta(&rows).unwrap_or(60);
    let start = rows[0].0;
    let span = (rows[rows.len() - 1].0 - start) / step + 1;
    if span > MAX_STEPS {
        return Err(TraceError::Grid {
            path: path.to_path_buf(),
            line: rows[rows.len() - 1].2,
            message: format!(
                "the grid of {step}s steps would have {span} points (max {MAX_STEPS})"
            ),
        });
    }
    let mut values: Vec<Option<f64>> = vec![None; span as usize];
    let mut line_at: Vec<usize> = vec![0; span as usize];
    for &(t, v, no) in &rows {
        // Nearest grid point; a sample off the grid by half a step or more collides.
        let k = ((t - start) as f64 / step as f64).round() as usize;
        let k = k.min(values.len() - 1);
        if line_at[k] != 0 {
            return Err(TraceError::Grid {
                path: path.to_path_buf(),
                line: no,
                message: format!(
                    "sample falls on the same {step}s grid point as line {}",
                    line_at[k]
                ),
            });
        }
        line_at[k] = no;
        values[k] = v;
    }
    Ok(Trace {
        start,
        step_seconds: step,
        values,
    })
}

fn split(line: &str) -> Vec<&str> {
    line.split(',')
        .map(|f| f.trim().trim_matches('"'))
        .collect()
}

/// Unix seconds of a timestamp field.
pub fn parse_time(s: &str) -> Option<i64> {
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S") {
        return Some(t.and_utc().timestamp());
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S") {
        return Some(t.and_utc().timestamp());
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp());
    }
    // Bounded so that differences between timestamps cannot overflow.
    const LIMIT: i64 = 1_000_000_000_000_000;
    if let Ok(t) = s.parse::<i64>() {
        return (t.abs() < LIMIT).then_some(t);
    }
    match s.parse::<f64>() {
        Ok(t) if t.is_finite() && t.abs() < LIMIT as f64 => Some(t.round() as i64),
        _ => None,
    }
}

fn parse_value(s: &str) -> std::result::Result<Option<f64>, String> {
    if s.is_empty() || s.eq_ignore_ascii_case("na") || s.eq_ignore_ascii_case("nan") {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(Some(v)),
        Ok(v) => Err(format!("not a finite non-negative number: {v}")),
        Err(_) => Err(format!("not a number: {s:?}")),
    }
}

/// The most common positive difference between consecutive timestamps (ties: the smallest).
fn most_common_delta(rows: &[(i64, Option<f64>, usize)]) -> Option<i64> {
    let mut deltas: Vec<i64> = rows.windows(2).map(|w| w[1].0 - w[0].0).collect();
    deltas.sort_unstable();
    let mut best: Option<(i64, usize)> = None;
    for run in deltas.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(_, n)| run.len() > n) {
            best = Some((run[0], run.len()));
        }
    }
    best.map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn aggregation_sums_aligned_buckets_and_estimates_missing_points() {
        use super::Trace;
        // 00:58 .. 02:01 in minutes: a partial first hour, a gap, a partial last hour.
        let mut values: Vec<Option<f64>> = (0..64).map(|_| Some(2.0)).collect();
        values[10] = None; // 01:08 missing: the hour still counts 60 minutes of 2
        let t = Trace {
            start: 3 * 86_400 + 58 * 60,
            step_seconds: 60,
            values,
        };
        let h = t.aggregate(3600).unwrap();
        assert_eq!(h.start, 3 * 86_400);
        assert_eq!(h.step_seconds, 3600);
        assert_eq!(h.values, vec![Some(120.0), Some(120.0), Some(120.0)]);
        let all_missing = Trace {
            start: 0,
            step_seconds: 60,
            values: vec![None; 60],
        };
        assert_eq!(all_missing.aggregate(3600).unwrap().values, vec![None]);
        assert!(t.aggregate(90).is_none(), "not a multiple of the step");
        assert!(t.aggregate(0).is_none());
    }

    use super::*;

    fn parse(text: &str) -> Result<Trace> {
        parse_trace(text, Path::new("t.csv"), &TraceOptions::default())
    }

    #[test]
    fn worldcup_format_with_gap_and_unsorted_rows() {
        let t = parse(
            "period,count\n1998-04-30 21:32:00,16\n1998-04-30 21:30:00,2\n1998-04-30 21:31:00,11\n1998-04-30 21:35:00,5\n",
        )
        .unwrap();
        assert_eq!(t.step_seconds, 60);
        assert_eq!(
            t.values,
            vec![Some(2.0), Some(11.0), Some(16.0), None, None, Some(5.0)]
        );
        assert_eq!(t.missing(), 2);
    }

    #[test]
    fn headerless_unix_seconds() {
        let t = parse("0,1\n10,2\n20,3\n40,4\n").unwrap();
        assert_eq!(t.step_seconds, 10);
        assert_eq!(
            t.values,
            vec![Some(1.0), Some(2.0), Some(3.0), None, Some(4.0)]
        );
    }

    #[test]
    fn named_columns() {
        let opts = TraceOptions {
            time_column: Some("when".into()),
            value_column: Some("rps".into()),
        };
        let text = "host,when,rps\na,2024-01-01T00:00:00Z,5\nb,2024-01-01T00:01:00Z,7\n";
        let t = parse_trace(text, Path::new("x.csv"), &opts).unwrap();
        assert_eq!(t.values, vec![Some(5.0), Some(7.0)]);
        let opts = TraceOptions {
            time_column: None,
            value_column: Some("nope".into()),
        };
        let err = parse_trace(text, Path::new("x.csv"), &opts).unwrap_err();
        assert!(err.to_string().contains("no column \"nope\""), "{err}");
    }

    #[test]
    fn malformed_row_names_file_line_and_field() {
        let err =
            parse("period,count\n1998-04-30 21:30:00,2\n1998-04-30 21:31:00,x1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv:3: field \"count\": not a number: \"x1\""
        );
        let err = parse("period,count\nyesterday,2\n").unwrap_err();
        assert!(
            err.to_string().starts_with("t.csv:2: field \"period\""),
            "{err}"
        );
        let err = parse("period,count\n1998-04-30 21:30:00,-2\n").unwrap_err();
        assert!(err.to_string().contains("non-negative"), "{err}");
    }

    #[test]
    fn empty_and_duplicates_are_errors() {
        assert!(matches!(parse(""), Err(TraceError::Empty { .. })));
        assert!(matches!(
            parse("period,count\n"),
            Err(TraceError::Empty { .. })
        ));
        let err =
            parse("period,count\n1998-04-30 21:30:00,2\n1998-04-30 21:30:00,3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.csv:3: duplicate timestamp 893971800 (first at line 2)"
        );
    }

    #[test]
    fn empty_value_is_missing_not_zero() {
        let t = parse("ts,v\n0,1\n60,\n120,3\n").unwrap();
        assert_eq!(t.values, vec![Some(1.0), None, Some(3.0)]);
    }
}
