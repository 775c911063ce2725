//! `tailor-recommender backtest`: gets usage traces, runs the pure backtest
//! ([`crate::model::backtest`]) on each and renders the scores. The traces come from files
//! (`--trace PATH`: files that cannot be read or parsed are reported with file and line and
//! left out; the others are scored) or from a live workload's own history in Prometheus
//! (`--prometheus-url`: one trace per container, the highest use over the workload's pods at
//! each step, with their limits as the provisioned sizes and the OOM kills kube-state-metrics
//! recorded; [`cluster`] sets tailor up as the recommender in the cluster would).

pub mod cluster;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::Output;
use crate::model::backtest::{self, Decision, Options, PolicyKind, Score};
use crate::model::history::OomKill;
use crate::model::trace::Trace;
use crate::prometheus::{Prometheus, WORKLOAD_KINDS};
use tailor_crds::v1alpha1::RecommenderPolicy;

/// The scores of one trace.
#[derive(Debug, Clone)]
pub struct TraceResult {
    /// The trace's path.
    pub trace: String,
    /// One per policy.
    pub scores: Vec<Score>,
    /// Every decision.
    pub decisions: Vec<Decision>,
    /// The OOM kills recorded with the trace.
    pub recorded_ooms: Vec<OomKill>,
}

/// Every `.csv` file under `path` (or `path` itself), sorted.
pub fn trace_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries {
            let p = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "csv") {
                out.push(p);
            }
        }
    }
    out.sort();
    if out.is_empty() {
        return Err(format!("{}: no .csv trace files", path.display()));
    }
    Ok(out)
}

/// Backtests every file; returns the results and the problems (one line each).
pub fn run_files(
    files: &[PathBuf],
    policies: &[PolicyKind],
    options: &Options,
) -> (Vec<TraceResult>, Vec<String>) {
    let mut results = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        match Trace::parse(&name, &text) {
            Ok(trace) => results.push(score(&trace, policies, options)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (results, problems)
}

/// A `recommenderPolicy` in JSON, with defaults for what is left out. A field the API does not
/// know is an error (the API server would drop it without a word; here it is a typo).
pub fn parse_policy(json: &str) -> Result<RecommenderPolicy, String> {
    let given: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let policy: RecommenderPolicy =
        serde_json::from_value(given.clone()).map_err(|e| e.to_string())?;
    let known = serde_json::to_value(&policy).map_err(|e| e.to_string())?;
    fn unknown(given: &serde_json::Value, known: &serde_json::Value, path: &str) -> Option<String> {
        let (serde_json::Value::Object(g), serde_json::Value::Object(k)) = (given, known) else {
            return None;
        };
        g.iter().find_map(|(key, v)| {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match k.get(key) {
                None => Some(at),
                Some(known) => unknown(v, known, &at),
            }
        })
    }
    match unknown(&given, &known, "") {
        Some(field) => Err(format!("unknown field {field:?}")),
        None => Ok(policy),
    }
}

/// Backtests one trace.
pub fn score(trace: &Trace, policies: &[PolicyKind], options: &Options) -> TraceResult {
    let (scores, decisions) = backtest::run(trace, policies, options);
    TraceResult {
        trace: trace.name.clone(),
        scores,
        decisions,
        recorded_ooms: trace.ooms.clone(),
    }
}

/// A workload whose own history is backtested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// One of [`WORKLOAD_KINDS`].
    pub kind: &'static str,
    /// Name.
    pub name: String,
}

impl Workload {
    /// `KIND/NAME` (the kind in any case, e.g. `Deployment/api` or `deployment/api`) in
    /// `namespace`.
    pub fn parse(namespace: &str, text: &str) -> Result<Self, String> {
        let expected = || {
            format!(
                "expected KIND/NAME with KIND one of {} (e.g. Deployment/api)",
                WORKLOAD_KINDS.join(", ")
            )
        };
        let Some((kind, name)) = text.split_once('/') else {
            return Err(format!("--workload {text:?}: {}", expected()));
        };
        let Some(kind) = WORKLOAD_KINDS
            .iter()
            .copied()
            .find(|k| k.eq_ignore_ascii_case(kind.trim()))
        else {
            return Err(format!(
                "--workload {text:?}: kind {kind:?} is not supported; {}",
                expected()
            ));
        };
        let name = name.trim();
        if name.is_empty() || name.contains('/') {
            return Err(format!("--workload {text:?}: {}", expected()));
        }
        if namespace.trim().is_empty() {
            return Err("--namespace: must not be empty".into());
        }
        Ok(Self {
            namespace: namespace.trim().to_owned(),
            kind,
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// The usage traces of `workload` in the `window` seconds before `end` (unix seconds), one
/// per container with its name, the trace named `NAMESPACE/KIND/NAME/CONTAINER`: its pods
/// (earlier rollouts included) from kube-state-metrics' ownership series, their usage and
/// limits from [`Prometheus::usage_traces`], their OOM kills from [`Prometheus::oom_kills`]
/// (as the recommender reads them; a kill whose limit kube-state-metrics does not have gets
/// the trace's peak, as the recommender gives it the history's). A workload without pods or
/// usage in the window is an error.
pub async fn live_traces(
    prom: &Prometheus,
    workload: &Workload,
    end: f64,
    window: f64,
) -> Result<Vec<(String, Trace)>, String> {
    let start = end - window;
    let pods = prom
        .workload_pods(
            &workload.namespace,
            workload.kind,
            &workload.name,
            end,
            window,
        )
        .await
        .map_err(|e| e.to_string())?;
    let names = &prom.config().names;
    if pods.is_empty() {
        let owners = match workload.kind {
            "Deployment" => format!("{} and {}", names.replicaset_owner, names.pod_owner),
            "CronJob" => format!("{} and {}", names.job_owner, names.pod_owner),
            _ => names.pod_owner.clone(),
        };
        return Err(format!(
            "no pods of {workload} in the last {} according to {owners} (check the name, the \
             namespace and that this Prometheus scrapes kube-state-metrics)",
            crate::spec::format_duration(window)
        ));
    }
    let traces = prom
        .usage_traces(&workload.namespace, &pods, start, end)
        .await
        .map_err(|e| e.to_string())?;
    if traces.is_empty() {
        return Err(format!(
            "no usage of the {} pod(s) of {workload} in the last {} in {} and {}",
            pods.len(),
            crate::spec::format_duration(window),
            names.cpu,
            names.memory
        ));
    }
    let kills = prom
        .oom_kills(&workload.namespace, &pods, start, end)
        .await
        .map_err(|e| e.to_string())?;
    Ok(traces
        .into_iter()
        .map(|(container, mut trace)| {
            trace.name = format!(
                "{}/{}/{}/{container}",
                workload.namespace, workload.kind, workload.name
            );
            let peak = trace.samples.iter().map(|s| s.memory).fold(0.0, f64::max);
            trace.ooms = kills
                .iter()
                .filter(|k| k.container == container)
                .map(|k| OomKill {
                    time: k.time,
                    limit: k.limit.unwrap_or(peak),
                })
                .collect();
            (container, trace)
        })
        .collect())
}

/// A score, as rendered.
#[derive(Debug, Clone, Serialize)]
struct ScoreRow<'a> {
    trace: &'a str,
    policy: &'static str,
    oom_events: u32,
    /// The trace's recorded OOM kills (the same for every policy; not in `oom_events`).
    recorded_oom_kills: usize,
    memory_slack: Option<f64>,
    cpu_slack: Option<f64>,
    cpu_over: Option<f64>,
    changes_per_day: Option<f64>,
    memory_cuts_per_day: Option<f64>,
    guard_raises: u32,
    guard_raises_per_day: Option<f64>,
    scored_days: f64,
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn row<'a>(trace: &'a str, recorded: usize, s: &Score) -> ScoreRow<'a> {
    ScoreRow {
        trace,
        policy: s.policy.name(),
        oom_events: s.oom_events,
        recorded_oom_kills: recorded,
        memory_slack: finite(s.memory_slack),
        cpu_slack: finite(s.cpu_slack),
        cpu_over: finite(s.cpu_over),
        changes_per_day: finite(s.changes_per_day),
        memory_cuts_per_day: finite(s.memory_cuts_per_day),
        guard_raises: s.guard_raises,
        guard_raises_per_day: finite(s.guard_raises_per_day),
        scored_days: s.scored_seconds / 86_400.0,
    }
}

/// The overall score of each policy: OOM events and guard raises summed, the other measures
/// averaged over the traces where they exist.
pub fn overall(results: &[TraceResult], policies: &[PolicyKind]) -> Vec<Score> {
    policies
        .iter()
        .map(|p| {
            let scores: Vec<&Score> = results
                .iter()
                .flat_map(|r| r.scores.iter().filter(|s| s.policy == *p))
                .collect();
            let mean = |f: fn(&Score) -> f64| {
                let v: Vec<f64> = scores
                    .iter()
                    .map(|s| f(s))
                    .filter(|v| v.is_finite())
                    .collect();
                if v.is_empty() {
                    f64::NAN
                } else {
                    v.iter().sum::<f64>() / v.len() as f64
                }
            };
            Score {
                policy: *p,
                oom_events: scores.iter().map(|s| s.oom_events).sum(),
                memory_slack: mean(|s| s.memory_slack),
                cpu_slack: mean(|s| s.cpu_slack),
                cpu_over: mean(|s| s.cpu_over),
                changes_per_day: mean(|s| s.changes_per_day),
                memory_cuts_per_day: mean(|s| s.memory_cuts_per_day),
                guard_raises: scores.iter().map(|s| s.guard_raises).sum(),
                guard_raises_per_day: mean(|s| s.guard_raises_per_day),
                scored_seconds: scores.iter().map(|s| s.scored_seconds).sum(),
            }
        })
        .collect()
}

fn per_day(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

/// Writes the report.
pub fn render(
    results: &[TraceResult],
    policies: &[PolicyKind],
    output: Output,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let total = overall(results, policies);
    match output {
        Output::Json => render_json(results, &total, out),
        Output::Csv => render_csv(results, &total, out),
        Output::Table => render_table(results, &total, out),
    }
}

/// The rows of every trace and policy, then the overall rows.
fn rows<'a>(results: &'a [TraceResult], total: &[Score]) -> Vec<ScoreRow<'a>> {
    let recorded = results.iter().map(|r| r.recorded_ooms.len()).sum();
    results
        .iter()
        .flat_map(|r| {
            let n = r.recorded_ooms.len();
            r.scores.iter().map(move |s| row(&r.trace, n, s))
        })
        .chain(total.iter().map(|s| row("(all)", recorded, s)))
        .collect()
}

/// JSON: the overall scores, and per trace its scores and every decision.
fn render_json(
    results: &[TraceResult],
    total: &[Score],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    #[derive(Serialize)]
    struct DecisionRow {
        time: f64,
        policy: &'static str,
        cpu_cores: Option<f64>,
        memory_bytes: Option<f64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        memory_floor_bytes: Option<f64>,
        applied_cpu_cores: Option<f64>,
        applied_memory_bytes: Option<f64>,
        after_oom: bool,
        guard_raise: bool,
    }
    #[derive(Serialize)]
    struct Kill {
        time: f64,
        memory_limit_bytes: f64,
    }
    #[derive(Serialize)]
    struct PerTrace<'a> {
        trace: &'a str,
        scores: Vec<ScoreRow<'a>>,
        recorded_ooms: Vec<Kill>,
        decisions: Vec<DecisionRow>,
    }
    #[derive(Serialize)]
    struct Report<'a> {
        overall: Vec<ScoreRow<'a>>,
        traces: Vec<PerTrace<'a>>,
    }
    let recorded = results.iter().map(|r| r.recorded_ooms.len()).sum();
    let report = Report {
        overall: total.iter().map(|s| row("(all)", recorded, s)).collect(),
        traces: results
            .iter()
            .map(|r| PerTrace {
                trace: &r.trace,
                scores: (r.scores.iter())
                    .map(|s| row(&r.trace, r.recorded_ooms.len(), s))
                    .collect(),
                recorded_ooms: (r.recorded_ooms.iter())
                    .map(|k| Kill {
                        time: k.time,
                        memory_limit_bytes: k.limit,
                    })
                    .collect(),
                decisions: r
                    .decisions
                    .iter()
                    .map(|d| DecisionRow {
                        time: d.time,
                        policy: d.policy.name(),
                        cpu_cores: d.cpu,
                        memory_bytes: d.memory,
                        memory_floor_bytes: d.memory_floor,
                        applied_cpu_cores: d.applied_cpu,
                        applied_memory_bytes: d.applied_memory,
                        after_oom: d.after_oom,
                        guard_raise: d.guard_raise,
                    })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}

/// CSV: a row per trace and policy, then the overall rows.
fn render_csv(
    results: &[TraceResult],
    total: &[Score],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    writeln!(
        out,
        "trace,policy,oom_events,memory_slack,cpu_slack,cpu_over,changes_per_day,memory_cuts_per_day,guard_raises,guard_raises_per_day,scored_days,recorded_oom_kills"
    )?;
    let opt = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.6}"));
    for r in rows(results, total) {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{:.3},{}",
            r.trace,
            r.policy,
            r.oom_events,
            opt(r.memory_slack),
            opt(r.cpu_slack),
            opt(r.cpu_over),
            opt(r.changes_per_day),
            opt(r.memory_cuts_per_day),
            r.guard_raises,
            opt(r.guard_raises_per_day),
            r.scored_days,
            r.recorded_oom_kills
        )?;
    }
    Ok(())
}

/// An aligned table: a row per trace and policy, then the overall rows.
fn render_table(
    results: &[TraceResult],
    total: &[Score],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let header = format!(
        "{:<44} {:<12} {:>6} {:>9} {:>10} {:>10} {:>10} {:>12} {:>9} {:>11}",
        "TRACE",
        "POLICY",
        "OOMS",
        "RECORDED",
        "MEM SLACK",
        "CPU SLACK",
        "CPU OVER",
        "CHANGES/DAY",
        "CUTS/DAY",
        "RAISES/DAY"
    );
    writeln!(out, "{header}")?;
    let line = |out: &mut dyn Write, r: ScoreRow<'_>| {
        // The end of a long path: the folder and file say which trace.
        let n = r.trace.chars().count();
        let name: String = r.trace.chars().skip(n.saturating_sub(44)).collect();
        writeln!(
            out,
            "{:<44} {:<12} {:>6} {:>9} {:>10} {:>10} {:>10} {:>12} {:>9} {:>11}",
            name,
            r.policy,
            r.oom_events,
            r.recorded_oom_kills,
            pct(r.memory_slack),
            pct(r.cpu_slack),
            pct(r.cpu_over),
            per_day(r.changes_per_day),
            per_day(r.memory_cuts_per_day),
            per_day(r.guard_raises_per_day)
        )
    };
    for r in rows(results, total) {
        line(out, r)?;
    }
    Ok(())
}
