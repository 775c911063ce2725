//! `tailor-demo` (`make demo`): the whole system on one machine.
//!
//! Starts a real kube-apiserver and etcd, the node simulator with three nodes, five sample
//! workloads, a real Prometheus backfilled with a week of their history (the same usage models
//! the simulator runs, so history and live scrapes join up) and scraping them live, then the
//! `tailor-recommender` and `tailor-updater` binaries. It prints the recommendations with their
//! floor reasons, the resizes done and the memory decreases waiting for approval, and how to
//! look around; then stays up until Ctrl-C.
//!
//! `--ci` runs the same setup without waiting for a person: it checks the expected outcome and
//! that every PromQL expression of the alert rules and dashboards evaluates against the demo's
//! Prometheus, and exits non-zero on any failure.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tailor_crds::v1alpha1::{FloorReason, VerticalAutoscaler, condition};
use tailor_e2e::process::ServerProcess;
use tailor_e2e::prometheus::{Prometheus, PrometheusOptions, ScrapeTarget};
use tailor_e2e::sim::config::SimConfig;
use tailor_e2e::sim::history::{HistoryContainer, ReplicaSetOwner, write_openmetrics};
use tailor_e2e::sim::usage::{PodUsage, container_seed};
use tailor_e2e::sim::{self};
use tailor_e2e::{ControlPlane, free_port};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs tailor end to end on this machine.
#[derive(Debug, Parser)]
struct Args {
    /// Check the expected outcome and the dashboards' and alerts' queries, then exit.
    #[arg(long)]
    ci: bool,
    /// Days of backfilled history.
    #[arg(long, default_value_t = 7)]
    days: i64,
    /// How long to wait for the expected outcome, seconds.
    #[arg(long, default_value_t = 240)]
    timeout: u64,
}

const NS: &str = "demo";
const MI: f64 = 1024.0 * 1024.0;
/// Resolution of the backfilled history, seconds.
const STEP: i64 = 120;

/// One sample workload.
struct Workload {
    name: &'static str,
    kind: &'static str,
    replicas: usize,
    what: &'static str,
    container: Value,
    usage: Value,
    va: Value,
    /// OOM kills in the history, hours ago.
    oom_hours_ago: Vec<i64>,
}

fn workloads() -> Vec<Workload> {
    vec![
        Workload {
            name: "web-api",
            kind: "Deployment",
            replicas: 2,
            what: "web API with a daily CPU cycle, over-provisioned: CPU goes down live, the memory cut waits for approval",
            container: json!({"name": "app", "image": "example/app:1",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}}),
            usage: json!({"app": {"model": "daily", "cpu": {"min": 0.1, "max": 0.45},
                "memory": {"min": "330Mi", "max": "400Mi"}, "noise": 0.05}}),
            va: json!({"updatePolicy": {"updateMode": "InPlace"}}),
            oom_hours_ago: vec![],
        },
        Workload {
            name: "orders",
            kind: "StatefulSet",
            replicas: 2,
            what: "JVM service started with -Xmx2g whose heap has grown to 1Gi so far: memory goes down through a container restart, one pod at a time, never below the 2g heap + overhead",
            container: json!({"name": "app", "image": "example/app:1",
                "command": ["java", "-Xmx2g", "-jar", "/app/orders.jar"],
                "resources": {"requests": {"cpu": "500m", "memory": "3Gi"}, "limits": {"cpu": "1", "memory": "3Gi"}},
                "resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]}),
            usage: json!({"app": {"model": "jvm", "cpu": 0.2, "heapMax": "1Gi", "nonHeap": "200Mi",
                "growSeconds": 600}}),
            va: json!({"updatePolicy": {"updateMode": "InPlace", "memoryDecrease": "RestartContainer"}}),
            oom_hours_ago: vec![],
        },
        Workload {
            name: "reports",
            kind: "Deployment",
            replicas: 1,
            what: "over-provisioned service in recommendation-only mode (Off): never touched",
            container: json!({"name": "app", "image": "example/app:1",
                "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "4Gi"}}}),
            usage: json!({"app": {"model": "constant", "cpu": 0.05, "memory": "150Mi", "noise": 0.05}}),
            va: json!({"updatePolicy": {"updateMode": "Off"}}),
            oom_hours_ago: vec![],
        },
        Workload {
            name: "worker",
            kind: "Deployment",
            replicas: 2,
            what: "memory-spiky worker OOM-killed two days ago: memory goes up live, above the OOM bump",
            container: json!({"name": "app", "image": "example/app:1",
                "resources": {"requests": {"cpu": "250m", "memory": "384Mi"}, "limits": {"memory": "512Mi"}}}),
            usage: json!({"app": {"model": "spikes", "cpu": 0.1, "memory": "200Mi", "spikeCpu": 0.3,
                "spikeMemory": "250Mi", "everySeconds": 3600, "durationSeconds": 300, "noise": 0.05}}),
            va: json!({"updatePolicy": {"updateMode": "InPlace"}}),
            oom_hours_ago: vec![48],
        },
        Workload {
            name: "batch",
            kind: "Deployment",
            replicas: 1,
            what: "CPU-hungry job that needs more than a node has: the kubelet declares the resize Infeasible; it is surfaced and not retried",
            container: json!({"name": "app", "image": "example/app:1",
                "resources": {"requests": {"cpu": "4", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}}),
            usage: json!({"app": {"model": "constant", "cpu": 7.6, "memory": "700Mi", "noise": 0.02}}),
            va: json!({"updatePolicy": {"updateMode": "InPlace", "memoryDecrease": "Never"}}),
            oom_hours_ago: vec![],
        },
    ]
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory of the tailor binaries: `TAILOR_BIN_DIR`, else next to this one.
fn binary(name: &str) -> Result<PathBuf, Error> {
    let dir = match std::env::var_os("TAILOR_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or("no directory for the binaries")?,
    };
    let path = dir.join(name);
    if !path.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build -p {name}` (same profile as tailor-demo) or set TAILOR_BIN_DIR",
            path.display()
        )
        .into());
    }
    Ok(path)
}

fn step(msg: &str) {
    eprintln!("demo: {msg}");
}

/// Creates the workload's controller objects and pods; returns the pod names and the
/// ReplicaSet (for Deployments).
async fn create(
    client: &kube::Client,
    w: &Workload,
) -> Result<(Vec<String>, Option<String>), Error> {
    let labels = json!({"app": w.name});
    let template = json!({"metadata": {"labels": labels}, "spec": {"containers": [w.container]}});
    let pod_annotations = json!({"sim.tailor.dev/usage": w.usage.to_string()});
    let pp = PostParams::default();
    let (owner, rs_name, names) = if w.kind == "Deployment" {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": w.name},
            "spec": {"replicas": w.replicas, "selector": {"matchLabels": labels}, "template": template},
        }))?;
        let d = Api::<Deployment>::namespaced(client.clone(), NS)
            .create(&pp, &d)
            .await?;
        let rs_name = format!("{}-6d4f9c", w.name);
        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": rs_name, "labels": labels},
            "spec": {"replicas": w.replicas, "selector": {"matchLabels": labels}, "template": template},
        }))?;
        rs.metadata.owner_references = d.controller_owner_ref(&()).map(|o| vec![o]);
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), NS)
            .create(&pp, &rs)
            .await?;
        let names = (0..w.replicas)
            .map(|i| format!("{rs_name}-{}", ["x7k2p", "m4q9t", "b8n3v"][i % 3]))
            .collect();
        (rs.controller_owner_ref(&()), Some(rs_name), names)
    } else {
        let s: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": w.name},
            "spec": {"replicas": w.replicas, "serviceName": w.name, "selector": {"matchLabels": labels}, "template": template},
        }))?;
        let s = Api::<StatefulSet>::namespaced(client.clone(), NS)
            .create(&pp, &s)
            .await?;
        let names = (0..w.replicas).map(|i| format!("{}-{i}", w.name)).collect();
        (s.controller_owner_ref(&()), None, names)
    };
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    for name in &names {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "annotations": pod_annotations},
            "spec": {"containers": [w.container]},
        }))?;
        pod.metadata.owner_references = owner.clone().map(|o| vec![o]);
        pods.create(&pp, &pod).await?;
    }
    Ok((names, rs_name))
}

fn quantity(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    if let Ok(b) = tailor_crds::quantity::memory_bytes(
        &k8s_openapi::apimachinery::pkg::api::resource::Quantity(s.into()),
    ) {
        return Some(b as f64);
    }
    None
}

/// History of every demo pod over the window, in the simulator's models.
fn history(
    list: &[Workload],
    pods: &BTreeMap<&'static str, (Vec<String>, Option<String>)>,
    nodes: &BTreeMap<String, String>,
    end: i64,
) -> Result<(Vec<HistoryContainer>, Vec<ReplicaSetOwner>), Error> {
    let mut containers = Vec::new();
    let mut replicasets = Vec::new();
    for w in list {
        let (names, rs) = &pods[w.name];
        let usage = PodUsage::parse(&w.usage.to_string())?;
        let model = usage.model("app").cloned().ok_or("no model for app")?;
        let res = &w.container["resources"];
        let cpu = |kind: &str| {
            res[kind]["cpu"].as_str().and_then(|s| {
                tailor_crds::quantity::cpu_millis(
                    &k8s_openapi::apimachinery::pkg::api::resource::Quantity(s.into()),
                )
                .ok()
                .map(|m| m as f64 / 1000.0)
            })
        };
        if let Some(rs) = rs {
            replicasets.push(ReplicaSetOwner {
                namespace: NS.into(),
                replicaset: rs.clone(),
                owner_kind: "Deployment".into(),
                owner_name: w.name.into(),
            });
        }
        for (i, pod) in names.iter().enumerate() {
            let owner = match rs {
                Some(rs) => ("ReplicaSet".to_owned(), rs.clone()),
                None => (w.kind.to_owned(), w.name.to_owned()),
            };
            containers.push(HistoryContainer {
                namespace: NS.into(),
                pod: pod.clone(),
                container: "app".into(),
                image: "example/app:1".into(),
                node: nodes.get(pod).cloned().unwrap_or_else(|| "sim-0".into()),
                model: model.clone(),
                seed: container_seed(1, NS, pod, "app"),
                trace: None,
                cpu: (cpu("requests"), cpu("limits")),
                memory: (
                    quantity(&res["requests"]["memory"]),
                    quantity(&res["limits"]["memory"]),
                ),
                owner: Some(owner),
                lifetime: None,
                // The first pod carries the workload's OOM kills.
                oom_kills: if i == 0 {
                    w.oom_hours_ago.iter().map(|h| end - h * 3600).collect()
                } else {
                    vec![]
                },
            });
        }
    }
    Ok((containers, replicasets))
}

fn cond<'a>(
    va: &'a VerticalAutoscaler,
    t: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    va.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

fn pod_value(p: &Pod, part: &str, resource: &str) -> Option<String> {
    let c = p.spec.as_ref()?.containers.first()?;
    let r = c.resources.as_ref()?;
    let m = if part == "requests" {
        r.requests.as_ref()?
    } else {
        r.limits.as_ref()?
    };
    m.get(resource).map(|q| q.0.clone())
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|ss| ss.first())
        .map_or(0, |s| s.restart_count)
}

/// What the demo expects, checked against the cluster; `Ok(())` when all holds, else what does
/// not yet.
async fn expected(
    client: &kube::Client,
    original: &BTreeMap<String, String>,
) -> Result<(), Vec<String>> {
    let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), NS);
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let mut missing = Vec::new();
    let get_va = |name: &'static str| {
        let vas = vas.clone();
        async move { vas.get(name).await.ok() }
    };
    let list = match pods.list(&ListParams::default()).await {
        Ok(l) => l.items,
        Err(e) => return Err(vec![format!("pods: {e}")]),
    };
    let of = |prefix: &str| -> Vec<&Pod> {
        list.iter()
            .filter(|p| p.labels().get("app").map(String::as_str) == Some(prefix))
            .collect()
    };
    for name in ["web-api", "orders", "reports", "worker", "batch"] {
        match get_va(name).await {
            Some(va)
                if cond(&va, condition::RECOMMENDATION_PROVIDED)
                    .is_some_and(|c| c.status == "True") => {}
            _ => missing.push(format!("{name}: no recommendation yet")),
        }
    }
    // web-api: CPU lowered live, no restart, same pod; the memory cut waits for approval.
    for p in of("web-api") {
        if pod_value(p, "requests", "cpu").as_deref() == Some("1") {
            missing.push(format!("{}: CPU not lowered yet", p.name_any()));
        }
        if restarts(p) != 0 {
            missing.push(format!("{}: restarted", p.name_any()));
        }
        if original.get(&p.name_any()).map(String::as_str) != p.uid().as_deref() {
            missing.push(format!("{}: recreated", p.name_any()));
        }
    }
    match get_va("web-api").await {
        Some(va) if cond(&va, condition::AWAITING_APPROVAL).is_some_and(|c| c.status == "True") => {
        }
        _ => missing.push("web-api: memory decrease not awaiting approval".into()),
    }
    // orders: lowered through one restart per pod, to at least the JVM floor.
    if let Some(va) = get_va("orders").await {
        let rec = va.status.as_ref().and_then(|s| s.recommendation.as_ref());
        let floor = rec
            .and_then(|r| r.container_recommendations.first())
            .and_then(|c| c.memory_floor.as_ref());
        match floor {
            Some(f) if f.reason == FloorReason::HeapHint => {
                for p in of("orders") {
                    let limit = pod_value(p, "limits", "memory")
                        .and_then(|q| quantity(&Value::String(q)))
                        .unwrap_or(0.0);
                    let floor = quantity(&Value::String(f.value.0.clone())).unwrap_or(f64::MAX);
                    if limit >= 3072.0 * MI {
                        missing.push(format!("{}: memory not lowered yet", p.name_any()));
                    } else if limit < floor {
                        missing.push(format!(
                            "{}: memory {limit} below the floor {floor}",
                            p.name_any()
                        ));
                    } else if restarts(p) != 1 {
                        missing.push(format!(
                            "{}: {} restarts, expected 1",
                            p.name_any(),
                            restarts(p)
                        ));
                    }
                }
            }
            _ => missing.push("orders: no HeapHint floor".into()),
        }
    }
    // reports: Off, never touched.
    for p in of("reports") {
        if p.metadata.generation != Some(1) {
            missing.push(format!("{}: an Off workload was resized", p.name_any()));
        }
    }
    // worker: floor from the OOM kill, memory raised live.
    if let Some(va) = get_va("worker").await {
        let reason = va
            .status
            .as_ref()
            .and_then(|s| s.recommendation.as_ref())
            .and_then(|r| r.container_recommendations.first())
            .and_then(|c| c.memory_floor.as_ref())
            .map(|f| f.reason);
        if reason != Some(FloorReason::Oom) {
            missing.push(format!("worker: floor reason {reason:?}, expected OOM"));
        }
    }
    for p in of("worker") {
        let limit = pod_value(p, "limits", "memory");
        if limit.as_deref() == Some("512Mi") {
            missing.push(format!("{}: memory not raised yet", p.name_any()));
        }
        if restarts(p) != 0 {
            missing.push(format!("{}: restarted", p.name_any()));
        }
    }
    // batch: more CPU than a node has; the kubelet says Infeasible and the object shows it.
    match get_va("batch").await {
        Some(va) if cond(&va, condition::RESIZE_INFEASIBLE).is_some_and(|c| c.status == "True") => {
        }
        _ => missing.push("batch: no ResizeInfeasible condition".into()),
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

/// The report printed once the system has acted.
async fn report(client: &kube::Client, list: &[Workload]) -> Result<String, Error> {
    let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), NS);
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?;
    let mut out = String::new();
    use std::fmt::Write as _;
    for w in list {
        let va = vas.get(w.name).await?;
        let mode = serde_json::to_value(va.spec.update_policy.update_mode)?;
        writeln!(
            out,
            "\n{} {} ({}): {}",
            w.kind,
            w.name,
            mode.as_str().unwrap_or("?"),
            w.what
        )?;
        let status = va.status.clone().unwrap_or_default();
        for c in status
            .recommendation
            .iter()
            .flat_map(|r| &r.container_recommendations)
        {
            let q = |v: &Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                v.as_ref().map_or("-".to_owned(), |q| q.0.clone())
            };
            let floor = c.memory_floor.as_ref().map_or("-".to_owned(), |f| {
                format!("{} ({:?})", f.value.0, f.reason)
            });
            writeln!(
                out,
                "  recommendation for {}: cpu {}, memory {}; memory floor {}",
                c.container_name,
                q(&c.target.cpu),
                q(&c.target.memory),
                floor
            )?;
        }
        for p in pods
            .items
            .iter()
            .filter(|p| p.labels().get("app").map(String::as_str) == Some(w.name))
        {
            writeln!(
                out,
                "  pod {}: requests cpu {} memory {}, limits cpu {} memory {}, restarts {}",
                p.name_any(),
                pod_value(p, "requests", "cpu").unwrap_or_else(|| "-".into()),
                pod_value(p, "requests", "memory").unwrap_or_else(|| "-".into()),
                pod_value(p, "limits", "cpu").unwrap_or_else(|| "-".into()),
                pod_value(p, "limits", "memory").unwrap_or_else(|| "-".into()),
                restarts(p)
            )?;
        }
        for r in &status.last_resizes {
            let changes: Vec<String> = r
                .containers
                .iter()
                .map(|c| {
                    let f = |a: &tailor_crds::v1alpha1::Resources| {
                        format!(
                            "cpu {} memory {}",
                            a.cpu.as_ref().map_or("-", |q| q.0.as_str()),
                            a.memory.as_ref().map_or("-", |q| q.0.as_str())
                        )
                    };
                    format!("{}: {} -> {}", c.container_name, f(&c.from), f(&c.to))
                })
                .collect();
            writeln!(
                out,
                "  resized {}: {:?} ({})",
                r.pod,
                r.outcome,
                changes.join("; ")
            )?;
        }
        for a in &status.pending_approvals {
            writeln!(
                out,
                "  awaiting approval: {} memory {} -> {}\n    approve: kubectl -n {NS} annotate verticalautoscaler {} tailor.dev/approve-memory-decrease={} --overwrite",
                a.container_name, a.from.0, a.to.0, w.name, a.id
            )?;
        }
    }
    Ok(out)
}

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
    "tailor_updater_resize_started_timestamp_seconds",
    "tailor_updater_pending_approval_since_timestamp_seconds",
];

/// Series kube-state-metrics serves with `deploy/kube-state-metrics/verticalautoscaler-crs.yaml`;
/// the demo runs no kube-state-metrics (the simulator serves the pod series).
const FROM_KSM_CONFIG: &str = "kube_tailor_verticalautoscaler_";

/// What the query check found: expressions evaluated, those with data now, and the empty ones.
struct Checked {
    total: usize,
    with_data: usize,
    empty: Vec<String>,
}

/// Evaluates every expression of the rules and dashboards against the demo's Prometheus: each
/// must evaluate and read only series the demo's Prometheus holds (apart from those that exist
/// only on trouble and those of the kube-state-metrics config). Dashboard expressions that
/// return nothing right now (a throttling or OOM rate in a healthy minute) are listed.
async fn check_queries(prom: &Prometheus) -> Result<Checked, Vec<String>> {
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

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let started = Instant::now();
    let recommender_bin = binary("tailor-recommender")?;
    let updater_bin = binary("tailor-updater")?;

    step("starting kube-apiserver and etcd");
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let mut config = SimConfig::uniform(3, "8", "32Gi");
    config.tick_seconds = 1.0;
    config.actuation_delay_seconds = 1.0;
    let sim = sim::runtime::start(client.clone(), config, "127.0.0.1:0".parse()?).await?;
    step(&format!(
        "node simulator: 3 nodes, metrics on {}",
        sim.metrics_addr()
    ));

    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let list = workloads();
    let mut pods = BTreeMap::new();
    for w in &list {
        pods.insert(w.name, create(&client, w).await?);
    }
    // Wait until the simulator runs every pod.
    let pod_api = Api::<Pod>::namespaced(client.clone(), NS);
    let total: usize = list.iter().map(|w| w.replicas).sum();
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let l = pod_api.list(&ListParams::default()).await?.items;
        let running: Vec<Pod> = l
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .collect();
        if running.len() == total {
            break running;
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {total} pods running", running.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let nodes: BTreeMap<String, String> = running
        .iter()
        .filter_map(|p| Some((p.name_any(), p.spec.as_ref()?.node_name.clone()?)))
        .collect();
    let original: BTreeMap<String, String> = running
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect();
    step(&format!("{total} pods running in namespace {NS}"));

    // A week of history, ending where the live scrapes begin.
    let end = (now() as i64) / STEP * STEP - STEP;
    let start = end - args.days * 86_400;
    let (containers, replicasets) = history(&list, &pods, &nodes, end)?;
    let dir = tempfile::Builder::new().prefix("tailor-demo-").tempdir()?;
    let om = dir.path().join("history.om");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&om)?);
        write_openmetrics(&containers, &replicasets, (start, end, STEP), &mut file)?;
        file.flush()?;
    }
    let recommender_port = free_port()?;
    let updater_port = free_port()?;
    let target = |job: &str, address: String, path: &str| ScrapeTarget {
        job: job.into(),
        address,
        metrics_path: path.into(),
    };
    step(&format!(
        "backfilling Prometheus with {} days of history",
        args.days
    ));
    let prom = Prometheus::start(PrometheusOptions {
        backfill_file: Some(om.clone()),
        scrape_targets: vec![
            target(
                "kubelet",
                sim.metrics_addr().to_string(),
                "/metrics/cadvisor",
            ),
            target(
                "kube-state-metrics",
                sim.metrics_addr().to_string(),
                "/metrics/kube-state",
            ),
            target(
                "tailor-recommender",
                format!("127.0.0.1:{recommender_port}"),
                "/metrics",
            ),
            target(
                "tailor-updater",
                format!("127.0.0.1:{updater_port}"),
                "/metrics",
            ),
        ],
        scrape_interval: Duration::from_secs(5),
        rule_files: vec![root().join("deploy/prometheus/tailor.rules.yaml")],
        ..Default::default()
    })
    .await?;
    std::fs::remove_file(&om)?;

    // The VerticalAutoscalers.
    let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), NS);
    for w in &list {
        let mut spec =
            json!({"targetRef": {"apiVersion": "apps/v1", "kind": w.kind, "name": w.name}});
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), w.va.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        let va: VerticalAutoscaler = serde_json::from_value(json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": w.name}, "spec": spec,
        }))?;
        vas.create(&PostParams::default(), &va).await?;
    }

    let env = vec![(
        "KUBECONFIG".to_owned(),
        cp.kubeconfig().display().to_string(),
    )];
    let recommender_log = dir.path().join("recommender.log");
    let updater_log = dir.path().join("updater.log");
    let strings = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut recommender = ServerProcess::spawn_with_env(
        "tailor-recommender",
        &recommender_bin,
        &strings(&[
            "run",
            "--prometheus-url",
            prom.url(),
            "--admin-addr",
            &format!("127.0.0.1:{recommender_port}"),
            "--leader-election",
            "false",
            "--refresh-seconds",
            "30",
            "--history-step-seconds",
            &STEP.to_string(),
        ]),
        &env,
        &recommender_log,
    )?;
    let mut updater = ServerProcess::spawn_with_env(
        "tailor-updater",
        &updater_bin,
        &strings(&[
            "run",
            "--admin-addr",
            &format!("127.0.0.1:{updater_port}"),
            "--leader-election",
            "false",
            "--resync-seconds",
            "10",
        ]),
        &env,
        &updater_log,
    )?;
    step("recommender and updater started; waiting for them to act");

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let outcome = loop {
        match expected(&client, &original).await {
            Ok(()) => break Ok(()),
            Err(missing) if Instant::now() > deadline => break Err(missing),
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    let text = report(&client, &list).await?;
    println!("tailor demo: what happened{text}");
    if let Err(missing) = &outcome {
        eprintln!("\ndemo: NOT as expected after {} s:", args.timeout);
        for m in missing {
            eprintln!("  - {m}");
        }
        eprintln!("recommender log:\n{}", recommender.log_tail(20));
        eprintln!("updater log:\n{}", updater.log_tail(20));
    }
    println!(
        "\nLook around (ready after {:.0} s):\n  export KUBECONFIG={}\n  kubectl -n {NS} get verticalautoscalers\n  kubectl -n {NS} get verticalautoscaler web-api -o yaml\n  kubectl -n {NS} get events --sort-by=.lastTimestamp\n  Prometheus: {}  (alerts: {}/alerts)\n  recommender metrics: http://127.0.0.1:{recommender_port}/metrics\n  updater metrics: http://127.0.0.1:{updater_port}/metrics",
        started.elapsed().as_secs_f64(),
        cp.kubeconfig().display(),
        prom.url(),
        prom.url()
    );

    if args.ci {
        if let Err(missing) = outcome {
            return Err(format!("{} expectation(s) not met: {missing:?}", missing.len()).into());
        }
        // Let Prometheus scrape tailor's metrics a few times, then evaluate every query.
        tokio::time::sleep(Duration::from_secs(12)).await;
        match check_queries(&prom).await {
            Ok(c) => {
                println!(
                    "\n{} PromQL expressions of the alert rules and dashboards evaluate against the demo's Prometheus and read only series it holds; {} return data now (alerts stay empty while nothing is wrong). Dashboard queries empty right now:",
                    c.total, c.with_data
                );
                for e in &c.empty {
                    println!("  {e}");
                }
            }
            Err(failures) => {
                for f in &failures {
                    eprintln!("  - {f}");
                }
                return Err(format!("{} query check(s) failed", failures.len()).into());
            }
        }
        println!(
            "demo: as expected ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        recommender.stop(Duration::from_secs(5));
        updater.stop(Duration::from_secs(5));
        return Ok(());
    }
    println!("\nPress Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    recommender.stop(Duration::from_secs(5));
    updater.stop(Duration::from_secs(5));
    Ok(())
}
