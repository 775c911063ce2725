//! Usage traces in the CSV format of the shared trace sets, read strictly: pure parsing, no
//! file access (the caller passes the text and a name for messages).
//!
//! ```text
//! timestamp,cpu_cores,memory_bytes,cpu_limit_cores,memory_limit_bytes
//! 1375308176,0.2553,1340026880,2,8589934592
//! ```
//!
//! `timestamp` (seconds), `cpu_cores` and `memory_bytes` are required; the two limit columns may
//! be missing or empty. Columns may come in any order. Every problem is reported with the file
//! and line: a missing column, a malformed, NaN, infinite or negative number, a timestamp that
//! repeats or goes back. A gap (more than twice the trace's usual interval between two rows) is
//! kept as a gap: nothing is assumed about usage inside it.

use std::fmt;

use super::history::OomKill;

/// One row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Seconds.
    pub time: f64,
    /// Cores used over the interval.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    /// The provisioned CPU, where the trace says.
    pub cpu_limit: Option<f64>,
    /// The provisioned memory, where the trace says.
    pub memory_limit: Option<f64>,
}

/// A parsed trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    /// The name used in messages (usually the file path).
    pub name: String,
    /// The rows, in strictly increasing time.
    pub samples: Vec<Sample>,
    /// The usual interval between rows (the median), seconds.
    pub interval: f64,
    /// The OOM kills recorded with the usage (a live workload's, from kube-state-metrics), each
    /// with the memory limit in force, in time order; none for a trace file.
    pub ooms: Vec<OomKill>,
}

/// A problem in a trace, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// The trace's name.
    pub file: String,
    /// 1-based line, 0 for the whole file.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for TraceError {}

const REQUIRED: [&str; 3] = ["timestamp", "cpu_cores", "memory_bytes"];

impl Trace {
    /// Parses `text`; `name` appears in errors.
    pub fn parse(name: &str, text: &str) -> Result<Self, TraceError> {
        let err = |line: usize, message: String| TraceError {
            file: name.to_owned(),
            line,
            message,
        };
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((header_at, header)) = lines.next() else {
            return Err(err(0, "empty: no header".into()));
        };
        let columns = Columns::read(header).map_err(|m| err(header_at + 1, m))?;
        let mut samples: Vec<Sample> = Vec::new();
        for (i, line) in lines {
            let sample = columns.row(line).map_err(|m| err(i + 1, m))?;
            if let Some(prev) = samples.last() {
                follows(prev, &sample).map_err(|m| err(i + 1, m))?;
            }
            samples.push(sample);
        }
        if samples.len() < 2 {
            return Err(err(
                0,
                format!("{} row(s): a trace needs at least two", samples.len()),
            ));
        }
        let mut deltas: Vec<f64> = samples.windows(2).map(|w| w[1].time - w[0].time).collect();
        deltas.sort_by(f64::total_cmp);
        let interval = deltas[deltas.len() / 2];
        Ok(Self {
            name: name.to_owned(),
            samples,
            interval,
            ooms: Vec::new(),
        })
    }

    /// Whether the step from row `i - 1` to row `i` is a gap (more than twice the interval).
    pub fn gap_before(&self, i: usize) -> bool {
        i > 0
            && i < self.samples.len()
            && self.samples[i].time - self.samples[i - 1].time > 2.0 * self.interval
    }

    /// How long row `i` stands for: the interval, or less where the next row comes sooner; the
    /// last row and a row before a gap stand for one interval.
    pub fn weight(&self, i: usize) -> f64 {
        match self.samples.get(i + 1) {
            Some(next) if !self.gap_before(i + 1) => next.time - self.samples[i].time,
            _ => self.interval,
        }
    }
}

/// Where each column of a trace file is.
struct Columns {
    count: usize,
    time: usize,
    cpu: usize,
    memory: usize,
    cpu_limit: Option<usize>,
    memory_limit: Option<usize>,
}

impl Columns {
    /// Reads the header; `Err` names the missing columns.
    fn read(header: &str) -> Result<Self, String> {
        let columns: Vec<&str> = header.split(',').map(str::trim).collect();
        let index = |c: &str| columns.iter().position(|h| *h == c);
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|c| index(c).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "missing column(s) {} (header: {header})",
                missing.join(", ")
            ));
        }
        Ok(Self {
            count: columns.len(),
            time: index("timestamp").unwrap_or_default(),
            cpu: index("cpu_cores").unwrap_or_default(),
            memory: index("memory_bytes").unwrap_or_default(),
            cpu_limit: index("cpu_limit_cores"),
            memory_limit: index("memory_limit_bytes"),
        })
    }

    /// One row; `Err` says what is wrong with it.
    fn row(&self, line: &str) -> Result<Sample, String> {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != self.count {
            return Err(format!(
                "{} fields where the header has {}",
                fields.len(),
                self.count
            ));
        }
        let number = |at: usize, what: &str| -> Result<f64, String> {
            let raw = fields[at];
            let v: f64 = raw
                .parse()
                .map_err(|_| format!("{what}: {raw:?} is not a number"))?;
            if !v.is_finite() {
                return Err(format!("{what}: {raw} is not a finite number"));
            }
            if v < 0.0 {
                return Err(format!("{what}: {raw} is negative"));
            }
            Ok(v)
        };
        let optional = |at: Option<usize>, what: &str| -> Result<Option<f64>, String> {
            match at {
                Some(a) if !fields[a].is_empty() => number(a, what).map(Some),
                _ => Ok(None),
            }
        };
        Ok(Sample {
            time: number(self.time, "timestamp")?,
            cpu: number(self.cpu, "cpu_cores")?,
            memory: number(self.memory, "memory_bytes")?,
            cpu_limit: optional(self.cpu_limit, "cpu_limit_cores")?,
            memory_limit: optional(self.memory_limit, "memory_limit_bytes")?,
        })
    }
}

/// Whether `sample` may follow `prev`: its timestamp neither repeats nor goes back.
fn follows(prev: &Sample, sample: &Sample) -> Result<(), String> {
    if sample.time == prev.time {
        return Err(format!("timestamp {} repeats", sample.time));
    }
    if sample.time < prev.time {
        return Err(format!(
            "timestamp {} goes back (the previous row has {})",
            sample.time, prev.time
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "timestamp,cpu_cores,memory_bytes,cpu_limit_cores,memory_limit_bytes\n";

    #[test]
    fn reads_rows_limits_and_the_interval() {
        let t = Trace::parse(
            "a.csv",
            &format!("{HEADER}0,0.5,100,2,8589934592\n60,0.25,200,,\n120,1,300,2,\n"),
        )
        .unwrap();
        assert_eq!(t.samples.len(), 3);
        assert_eq!(t.interval, 60.0);
        assert_eq!(t.samples[0].cpu_limit, Some(2.0));
        assert_eq!(t.samples[0].memory_limit, Some(8589934592.0));
        assert_eq!(t.samples[1].cpu_limit, None);
        assert_eq!(t.samples[2].memory, 300.0);
    }

    #[test]
    fn columns_may_be_reordered_and_limits_left_out() {
        let t = Trace::parse(
            "b.csv",
            "memory_bytes,timestamp,cpu_cores\n5,10,1\n6,20,2\n",
        )
        .unwrap();
        assert_eq!(t.samples[1].time, 20.0);
        assert_eq!(t.samples[1].memory, 6.0);
        assert_eq!(t.samples[1].cpu_limit, None);
    }

    #[test]
    fn every_problem_names_the_file_and_line() {
        let cases = [
            ("", 0, "empty"),
            (
                "timestamp,cpu_cores\n0,1\n",
                1,
                "missing column(s) memory_bytes",
            ),
            (&format!("{HEADER}0,1,1,,\n0,1,1,,\n") as &str, 3, "repeats"),
            (&format!("{HEADER}60,1,1,,\n0,1,1,,\n"), 3, "goes back"),
            (
                &format!("{HEADER}0,1,1,,\n60,NaN,1,,\n"),
                3,
                "not a finite number",
            ),
            (
                &format!("{HEADER}0,1,1,,\n60,inf,1,,\n"),
                3,
                "not a finite number",
            ),
            (&format!("{HEADER}0,1,-5,,\n60,1,1,,\n"), 2, "negative"),
            (&format!("{HEADER}0,1,x,,\n60,1,1,,\n"), 2, "not a number"),
            (
                &format!("{HEADER}0,1,1\n60,1,1,,\n"),
                2,
                "3 fields where the header has 5",
            ),
            (&format!("{HEADER}0,1,1,,\n"), 0, "at least two"),
        ];
        for (text, line, message) in cases {
            let e = Trace::parse("t.csv", text).unwrap_err();
            assert_eq!((e.file.as_str(), e.line), ("t.csv", line), "{text:?}: {e}");
            assert!(e.message.contains(message), "{text:?}: {e}");
            assert!(e.to_string().starts_with("t.csv"), "{e}");
        }
    }

    #[test]
    fn gaps_are_found_and_not_weighted_as_usage() {
        // 60 s rows with a 10-minute hole after the third.
        let t = Trace::parse(
            "g.csv",
            &format!("{HEADER}0,1,1,,\n60,1,1,,\n120,1,1,,\n720,1,1,,\n780,1,1,,\n"),
        )
        .unwrap();
        assert_eq!(t.interval, 60.0);
        assert!(!t.gap_before(1));
        assert!(t.gap_before(3));
        // The row before the hole stands for one interval, not for the 600 s hole.
        assert_eq!(t.weight(2), 60.0);
        assert_eq!(t.weight(0), 60.0);
        let total: f64 = (0..t.samples.len()).map(|i| t.weight(i)).sum();
        assert_eq!(total, 300.0);
    }

    #[test]
    fn the_shared_trace_format_parses() {
        // The first rows of a Bitbrains file, as shipped.
        let text = "timestamp,cpu_cores,memory_bytes,cpu_limit_cores,memory_limit_bytes\n1375308176,0.2553,1340026880,2,8589934592\n1375308476,0.2300,1185409433,2,8589934592\n";
        let t = Trace::parse("bitbrains/1.csv", text).unwrap();
        assert_eq!(t.interval, 300.0);
        assert_eq!(t.samples[1].cpu, 0.23);
    }
}
