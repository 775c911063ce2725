//! The query check of `--ci`: every PromQL expression of the alert rules and the dashboards
//! evaluates against the demo's Prometheus and reads only series it holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use tailor_e2e::prometheus::Prometheus;

use crate::{Error, NS, now, root};

/// Every `expr` in a Grafana dashboard, with its variables filled in.
fn dashboard_exprs(path: &Path) -> Result<Vec<String>, Error> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                for (k, x) in m {
                    // Template variable queries are label_values(), not PromQL.
                    if k != "templating" {
                        walk(x, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&v, &mut out);
    Ok(out
        .into_iter()
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.replace("$__rate_interval", "1m")
                .replace("${__range}", "1h")
                .replace("$__range", "1h")
                .replace("$__interval", "30s")
                .replace("$namespace", NS)
                .replace("$verticalautoscaler", "web-api")
                .replace("$container", "app")
        })
        .collect())
}

fn rule_exprs(path: &Path) -> Result<Vec<String>, Error> {
    let v: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path)?)?;
    let mut out = Vec::new();
    for g in v["groups"].as_sequence().into_iter().flatten() {
        for r in g["rules"].as_sequence().into_iter().flatten() {
            if let Some(e) = r["expr"].as_str() {
                out.push(e.to_owned());
            }
        }
    }
    Ok(out)
}

/// Metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphabetic() || bytes[i] == '_' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == '_' || bytes[i] == ':')
            {
                i += 1;
            }
            let word: String = bytes[start..i].iter().collect();
            if ["tailor_", "kube_", "container_"]
                .iter()
                .any(|p| word.starts_with(p))
            {
                names.insert(word);
            }
        } else if bytes[i] == '"' {
            // Skip strings (label values).
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                i += 1;
            }
            i += 1;
        } else {
            i += 1;
        }
    }
    names
}

/// Series that exist only when something goes wrong; an expression reading only these may
/// return nothing in a healthy demo.
const ONLY_ON_TROUBLE: &[&str] = &[
    "tailor_updater_oom_kills_after_resize_total",
    "tailor_updater_memory_guard_raises_total",
    "tailor_updater_resize_started_timestamp_seconds",
    "tailor_updater_pending_approval_since_timestamp_seconds",
];

/// Series kube-state-metrics serves with `deploy/kube-state-metrics/verticalautoscaler-crs.yaml`;
/// the demo runs no kube-state-metrics (the simulator serves the pod series).
const FROM_KSM_CONFIG: &str = "kube_tailor_verticalautoscaler_";

/// What the query check found: expressions evaluated, those with data now, and the empty ones.
pub struct Checked {
    pub total: usize,
    pub with_data: usize,
    pub empty: Vec<String>,
}

/// Evaluates every expression of the rules and dashboards against the demo's Prometheus: each
/// must evaluate and read only series the demo's Prometheus holds (apart from those that exist
/// only on trouble and those of the kube-state-metrics config). Dashboard expressions that
/// return nothing right now (a throttling or OOM rate in a healthy minute) are listed.
pub async fn check_queries(prom: &Prometheus) -> Result<Checked, Vec<String>> {
    let mut failures = Vec::new();
    let mut exprs = Vec::new();
    let root = root();
    let sources = [
        ("rules", root.join("deploy/prometheus/tailor.rules.yaml")),
        ("fleet", root.join("deploy/grafana/tailor-fleet.json")),
        ("workload", root.join("deploy/grafana/tailor-workload.json")),
    ];
    for (what, path) in &sources {
        let list = if *what == "rules" {
            rule_exprs(path)
        } else {
            dashboard_exprs(path)
        };
        match list {
            Ok(l) if !l.is_empty() => exprs.extend(l.into_iter().map(|e| (*what, e))),
            Ok(_) => failures.push(format!("{}: no expressions", path.display())),
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    let t = now();
    let mut with_data = 0;
    let mut empty = Vec::new();
    let mut known: BTreeMap<String, bool> = BTreeMap::new();
    for (what, e) in &exprs {
        let names = metric_names(e);
        for n in &names {
            if !known.contains_key(n) {
                let present = prom
                    .query(&format!("count({n})"), t)
                    .await
                    .map(|r| !r.is_empty())
                    .unwrap_or(false)
                    || prom
                        .query(&format!("count(last_over_time({n}[8d]))"), t)
                        .await
                        .map(|r| !r.is_empty())
                        .unwrap_or(false);
                known.insert(n.clone(), present);
            }
        }
        match prom.query(e, t).await {
            Err(err) => failures.push(format!("{what}: {e}\n    does not evaluate: {err}")),
            Ok(result) => {
                let absent: Vec<&String> = names
                    .iter()
                    .filter(|n| {
                        !known[*n]
                            && !ONLY_ON_TROUBLE.contains(&n.as_str())
                            && !n.starts_with(FROM_KSM_CONFIG)
                    })
                    .collect();
                if !absent.is_empty() {
                    failures.push(format!("{what}: {e}\n    reads series the demo's Prometheus does not have: {absent:?}"));
                }
                if result.is_empty() {
                    if *what != "rules" {
                        let one_line = e.split_whitespace().collect::<Vec<_>>().join(" ");
                        empty.push(format!("{what}: {one_line}"));
                    }
                } else {
                    with_data += 1;
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(Checked {
            total: exprs.len(),
            with_data,
            empty,
        })
    } else {
        Err(failures)
    }
}

/// Lets Prometheus scrape tailor's metrics a few times, then evaluates every query and prints
/// what it found.
pub async fn check_and_print(prom: &Prometheus) -> Result<(), Error> {
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    match check_queries(prom).await {
        Ok(c) => {
            println!(
                "\n{} PromQL expressions of the alert rules and dashboards evaluate against the demo's Prometheus and read only series it holds; {} return data now (alerts stay empty while nothing is wrong). Dashboard queries empty right now:",
                c.total, c.with_data
            );
            for e in &c.empty {
                println!("  {e}");
            }
            Ok(())
        }
        Err(failures) => {
            for f in &failures {
                eprintln!("  - {f}");
            }
            Err(format!("{} query check(s) failed", failures.len()).into())
        }
    }
}
