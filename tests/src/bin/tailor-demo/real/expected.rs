//! What the demo expects on the real node: the simulator demo's outcome where it applies, and
//! the cgroup changes that show it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kube::ResourceExt;
use tailor_crds::v1alpha1::condition;
use tailor_e2e::prometheus::Prometheus;
use tailor_e2e::real_node::NODE_NAME;

use super::cgroups::{Change, Watch};
use crate::expected::{self, Snapshot, pod_value};
use crate::history::cores;
use crate::workloads::Workload;
use crate::{NS, now};

/// The original requests of workload `name`'s container.
fn original_cpu(list: &[Workload], name: &str) -> String {
    list.iter()
        .find(|w| w.name == name)
        .and_then(|w| w.container["resources"]["requests"]["cpu"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The changes recorded for `pod`.
fn changes<'a>(all: &'a [Change], pod: &str) -> Vec<&'a Change> {
    all.iter().filter(|c| c.pod == pod).collect()
}

/// A change of `file` in the same container, for which `moved(before, after)` holds.
fn live(all: &[Change], pod: &str, file: &str, moved: fn(i64, i64) -> bool) -> bool {
    changes(all, pod).iter().any(|c| {
        c.before.container_id == c.after.container_id
            && c.before.restart_count == c.after.restart_count
            && matches!(
                (c.before.number(file), c.after.number(file)),
                (Some(b), Some(a)) if moved(b, a)
            )
    })
}

/// The cgroup evidence: CPU lowered live (web-api), memory raised live (worker), CPU raised
/// live (batch), memory lowered through a restart (orders).
fn cgroup_changes(s: &Snapshot, all: &[Change], missing: &mut Vec<String>) {
    let lower = |b: i64, a: i64| a >= 0 && (b < 0 || a < b);
    let higher = |b: i64, a: i64| a > b;
    for p in s.of("web-api") {
        let name = p.name_any();
        if !live(all, &name, "cpu.cfs_quota_us", lower) && !live(all, &name, "cpu.max", lower) {
            missing.push(format!("{name}: no live CPU quota cut seen in its cgroup"));
        }
    }
    for p in s.of("worker") {
        let name = p.name_any();
        if !live(all, &name, "memory.limit_in_bytes", higher)
            && !live(all, &name, "memory.max", higher)
        {
            missing.push(format!(
                "{name}: no live memory limit increase seen in its cgroup"
            ));
        }
    }
    for p in s.of("batch") {
        let name = p.name_any();
        if !live(all, &name, "cpu.shares", higher) && !live(all, &name, "cpu.weight", higher) {
            missing.push(format!(
                "{name}: no live CPU weight increase seen in its cgroup"
            ));
        }
    }
    for p in s.of("orders") {
        let name = p.name_any();
        let restarted = changes(all, &name).iter().any(|c| {
            c.before.container_id != c.after.container_id
                && c.after.restart_count == c.before.restart_count + 1
        });
        if !restarted {
            missing.push(format!("{name}: no restart into new limits seen"));
        }
    }
}

/// batch's CPU request raised (it fits this node).
fn batch(s: &Snapshot, list: &[Workload], missing: &mut Vec<String>) {
    let original = cores(&serde_json::Value::String(original_cpu(list, "batch")));
    for p in s.of("batch") {
        let now =
            pod_value(p, "requests", "cpu").and_then(|q| cores(&serde_json::Value::String(q)));
        if now <= original {
            missing.push(format!("{}: CPU not raised yet", p.name_any()));
        }
    }
    if s.va_condition("batch", condition::RESIZE_INFEASIBLE) {
        missing.push("batch: Infeasible on this node".into());
    }
}

/// Every pod has live cAdvisor series from the kubelet, labelled as kube-prometheus labels
/// them.
async fn scraped(s: &Snapshot, prom: &Prometheus, missing: &mut Vec<String>) {
    let q = format!(
        "count by (pod) (container_cpu_usage_seconds_total{{job=\"kubelet\", metrics_path=\"/metrics/cadvisor\", node=\"{NODE_NAME}\", namespace=\"{NS}\", container=\"app\"}})"
    );
    let pods: Vec<String> = match prom.query(&q, now()).await {
        Ok(r) => r
            .into_iter()
            .filter_map(|x| x.metric.get("pod").cloned())
            .collect(),
        Err(e) => {
            missing.push(format!("Prometheus: {e}"));
            return;
        }
    };
    for p in &s.pods {
        if !pods.contains(&p.name_any()) {
            missing.push(format!(
                "{}: no cAdvisor series from the kubelet",
                p.name_any()
            ));
        }
    }
}

/// What the real-node demo expects; `Ok(())` when all holds, else what does not yet.
/// `original`: the pods' UIDs when they started.
pub async fn real(
    (client, prom): (&kube::Client, &Prometheus),
    list: &[Workload],
    original: &BTreeMap<String, String>,
    watch: &Mutex<Watch>,
) -> Result<(), Vec<String>> {
    let s = Snapshot::read(client).await.map_err(|e| vec![e])?;
    let mut missing = Vec::new();
    scraped(&s, prom, &mut missing).await;
    expected::recommendations(&s, &mut missing);
    expected::web_api(&s, (original, &original_cpu(list, "web-api")), &mut missing);
    expected::orders(&s, &mut missing);
    expected::reports(&s, &mut missing);
    expected::worker(&s, &mut missing);
    batch(&s, list, &mut missing);
    match watch.lock() {
        Ok(w) => cgroup_changes(&s, &w.changes, &mut missing),
        Err(_) => missing.push("the cgroup watch failed".into()),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}
