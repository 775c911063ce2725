//! The history check of `--ci`: what a tool reading Prometheus the way kube-prometheus users do
//! sees. Every container has ONE cAdvisor series under `job="kubelet"` and every pod ONE
//! series of each kube-state-metrics family under `job="kube-state-metrics"` (the backfilled
//! history and the live scrape carry the same labels), each from the first sample of the
//! history to now, a sample per scrape interval, without a gap longer than two scrape
//! intervals where the history meets the live scrape; and KRR's queries (`rate(...[75s])`, `max_over_time(...[7d])`) have data over
//! the whole window.

use std::collections::BTreeMap;

use tailor_e2e::prometheus::Prometheus;

use crate::{Error, INTERVAL, NS, now};

/// A family checked: its selector, the labels naming one of its series, and its job.
struct Family {
    selector: String,
    key: &'static [&'static str],
    job: &'static str,
}

fn families() -> Vec<Family> {
    let ns = |metric: &str| format!("{metric}{{namespace=\"{NS}\"}}");
    let container = &["namespace", "pod", "container"][..];
    let mut out: Vec<Family> = [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_rss",
        "container_spec_memory_limit_bytes",
    ]
    .iter()
    .map(|m| Family {
        selector: ns(m),
        key: container,
        job: "kubelet",
    })
    .collect();
    let ksm: [(&str, &'static [&'static str]); 7] = [
        ("kube_pod_owner", &["namespace", "pod"]),
        ("kube_pod_info", &["namespace", "pod"]),
        ("kube_pod_labels", &["namespace", "pod"]),
        ("kube_pod_status_phase", &["namespace", "pod", "phase"]),
        ("kube_pod_container_status_restarts_total", container),
        (
            "kube_pod_container_resource_requests",
            &["namespace", "pod", "container", "resource"],
        ),
        ("kube_replicaset_owner", &["namespace", "replicaset"]),
    ];
    out.extend(ksm.into_iter().map(|(m, key)| Family {
        selector: ns(m),
        key,
        job: "kube-state-metrics",
    }));
    out.push(Family {
        selector: "kube_node_status_capacity".into(),
        key: &["node", "resource"],
        job: "kube-state-metrics",
    });
    out
}

/// One series per key of `f` over `(start, end)`, under `f.job`; the number of series.
async fn one_series_each(
    prom: &Prometheus,
    f: &Family,
    (start, end): (f64, f64),
    failures: &mut Vec<String>,
) -> usize {
    let series = match prom.series(&[&f.selector], start, end).await {
        Ok(s) => s,
        Err(e) => {
            failures.push(format!("{}: {e}", f.selector));
            return 0;
        }
    };
    let mut by_key: BTreeMap<Vec<&str>, Vec<&BTreeMap<String, String>>> = BTreeMap::new();
    for s in &series {
        let key = f
            .key
            .iter()
            .map(|k| s.get(*k).map_or("", String::as_str))
            .collect();
        by_key.entry(key).or_default().push(s);
    }
    if by_key.is_empty() {
        failures.push(format!("{}: no series", f.selector));
    }
    for (key, list) in &by_key {
        let jobs: Vec<_> = list.iter().map(|s| s.get("job")).collect();
        if list.len() != 1 || jobs != [Some(&f.job.to_owned())] {
            failures.push(format!(
                "{} {key:?}: {} series (want one, job={:?}): {list:?}",
                f.selector,
                list.len(),
                f.job
            ));
        }
    }
    series.len()
}

/// Each series of `f` starts at the history's start, holds at least a sample per scrape
/// interval of the history, has no gap longer than two scrape intervals over the three hours
/// up to a minute after the live scrape began (where the two parts of the history and the live
/// scrape meet), and goes on to now. Returns the longest gap seen.
async fn spans(
    prom: &Prometheus,
    f: &Family,
    (start, live_from, t): (i64, f64, f64),
    failures: &mut Vec<String>,
) -> f64 {
    let sel = &f.selector;
    let interval = INTERVAL as f64;
    let history_samples = ((live_from - start as f64) / interval).floor();
    let queries = [
        (
            "first sample",
            format!("timestamp({sel})"),
            start as f64 + interval / 2.0,
        ),
        (
            "samples",
            format!("count_over_time({sel}[{}s])", t as i64 - start + 60),
            t,
        ),
        (
            "longest gap",
            format!("max_over_time((time() - timestamp({sel}))[3h:5s])"),
            live_from + 60.0,
        ),
        ("last sample", format!("timestamp({sel})"), t),
    ];
    let mut longest: f64 = 0.0;
    for (what, q, at) in &queries {
        let result = match prom.query(q, *at).await {
            Ok(r) if !r.is_empty() => r,
            Ok(_) => {
                failures.push(format!("{q} at {at:.0}: empty"));
                continue;
            }
            Err(e) => {
                failures.push(format!("{q}: {e}"));
                continue;
            }
        };
        for s in result {
            let v: f64 = s.value.1.parse().unwrap_or(f64::NAN);
            let ok = match *what {
                "first sample" => v == start as f64,
                "samples" => v >= history_samples,
                "longest gap" => {
                    longest = longest.max(v);
                    v <= 2.0 * interval
                }
                _ => v >= t - 120.0,
            };
            if !ok {
                failures.push(format!("{sel} {:?}: {what} {v} (history from {start}, live from {live_from:.0}, now {t:.0})", s.metric));
            }
        }
    }
    longest
}

/// KRR's queries over the history: `rate(...[75s])` of every container at every hour of the
/// window, and `max_over_time(...[7d])`.
async fn krr(prom: &Prometheus, start: i64, t: f64, failures: &mut Vec<String>) -> usize {
    let sel = format!("job=\"kubelet\",namespace=\"{NS}\",container!=\"\"");
    let rate = format!("rate(container_cpu_usage_seconds_total{{{sel}}}[75s])");
    let from = (start + 3600) as f64;
    let steps = ((t - from) / 3600.0).floor() as usize + 1;
    match prom.query_range(&rate, from, t, 3600.0).await {
        Ok(r) if !r.is_empty() => {
            for s in r.iter().filter(|s| s.values.len() != steps) {
                failures.push(format!(
                    "{rate}: {} of {steps} hourly points for {:?}",
                    s.values.len(),
                    s.metric
                ));
            }
        }
        Ok(_) => failures.push(format!("{rate}: empty")),
        Err(e) => failures.push(format!("{rate}: {e}")),
    }
    let max = format!("max_over_time(container_memory_working_set_bytes{{{sel}}}[7d])");
    match prom.query(&max, t).await {
        Ok(r) if !r.is_empty() && r.iter().all(|s| s.value.1 != "0") => {}
        other => failures.push(format!("{max}: {other:?}")),
    }
    steps
}

/// Runs every check; prints what was found or fails naming each failure.
pub async fn check_and_print(prom: &Prometheus, start: i64, live_from: f64) -> Result<(), Error> {
    let t = now();
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    let mut longest: f64 = 0.0;
    for f in families() {
        let n = one_series_each(prom, &f, (start as f64, t), &mut failures).await;
        longest = longest.max(spans(prom, &f, (start, live_from, t), &mut failures).await);
        lines.push(format!("  {} (job {}): {n} series", f.selector, f.job));
    }
    let hours = krr(prom, start, t, &mut failures).await;
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("  - {f}");
        }
        return Err(format!("{} history check(s) failed", failures.len()).into());
    }
    println!(
        "\nhistory and live scrape: one series per container and pod, each from the history's start ({:.1} days ago) to now, longest gap {longest:.0} s; rate(...[75s]) has data at each of {hours} hours:\n{}",
        (t - start as f64) / 86_400.0,
        lines.join("\n")
    );
    Ok(())
}
