//! cAdvisor and kube-state-metrics series for the simulated pods, in the names and labels
//! real clusters use, rendered from the state on each scrape (Prometheus text format 0.0.4).
//!
//! - `/metrics/cadvisor`: `container_cpu_usage_seconds_total`, `container_memory_working_set_bytes`,
//!   `container_memory_rss`, `container_spec_memory_limit_bytes`, `container_cpu_cfs_periods_total`,
//!   `container_cpu_cfs_throttled_periods_total`; labels `namespace`, `pod`, `container`, `image`,
//!   `node`. `?node=<name>`: that node's containers only (one kubelet's endpoint).
//! - `/metrics/kube-state`: `kube_pod_container_resource_requests` / `_limits` (`resource`,
//!   `unit`), `kube_pod_container_status_restarts_total`,
//!   `kube_pod_container_status_last_terminated_reason`, `kube_pod_owner`,
//!   `kube_pod_status_ready_time`, `kube_pod_status_phase`, `kube_pod_labels`, `kube_pod_info`,
//!   `kube_replicaset_owner`, `kube_node_status_capacity` / `_allocatable` (`resource`, `unit`).
//! - `/metrics`: both.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::state::{RSS_SHARE, SimState};

type Shared = Arc<Mutex<SimState>>;

/// Serves the metrics until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, state: Shared) {
    let app = Router::new()
        .route("/metrics/cadvisor", get(cadvisor_handler))
        .route("/metrics/kube-state", get(kube_state_handler))
        .route("/metrics", get(all_handler))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

fn text(body: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

fn with_state(state: &Shared, f: impl FnOnce(&SimState, &mut String)) -> String {
    let mut out = String::new();
    let s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&s, &mut out);
    out
}

/// `?node=<name>`: one node's containers (node names need no escaping).
async fn cadvisor_handler(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
) -> impl IntoResponse {
    let node = query.as_deref().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("node="))
            .map(str::to_owned)
    });
    text(with_state(&state, |s, out| {
        cadvisor_of(s, node.as_deref(), out);
    }))
}

async fn kube_state_handler(State(state): State<Shared>) -> impl IntoResponse {
    text(with_state(&state, kube_state))
}

async fn all_handler(State(state): State<Shared>) -> impl IntoResponse {
    text(with_state(&state, |s, out| {
        cadvisor(s, out);
        kube_state(s, out);
    }))
}

/// Escapes a label value.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Renders the cAdvisor series.
pub fn cadvisor(s: &SimState, out: &mut String) {
    cadvisor_of(s, None, out);
}

/// Renders the cAdvisor series of `node`'s containers (`None`: every node's).
pub fn cadvisor_of(s: &SimState, node: Option<&str>, out: &mut String) {
    let mut pods: Vec<_> = s
        .pods()
        .filter(|p| p.rejected.is_none() && node.is_none_or(|n| n == p.node))
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    type Value = fn(&super::state::ContainerSim) -> Option<f64>;
    let series: [(&str, &str, &str, Value); 6] = [
        (
            "container_cpu_usage_seconds_total",
            "counter",
            "Cumulative cpu time consumed in seconds.",
            |c| Some(c.cpu_seconds),
        ),
        (
            "container_memory_working_set_bytes",
            "gauge",
            "Current working set of the container in bytes.",
            |c| Some(c.usage.memory.round()),
        ),
        (
            "container_memory_rss",
            "gauge",
            "Size of RSS in bytes.",
            |c| Some((c.usage.memory * RSS_SHARE).round()),
        ),
        (
            "container_spec_memory_limit_bytes",
            "gauge",
            "Memory limit for the container.",
            |c| Some(c.actual.memory_limit.unwrap_or(0) as f64),
        ),
        (
            "container_cpu_cfs_periods_total",
            "counter",
            "Number of elapsed enforcement period intervals.",
            |c| c.actual.cpu_limit.map(|_| c.cfs_periods.floor()),
        ),
        (
            "container_cpu_cfs_throttled_periods_total",
            "counter",
            "Number of throttled period intervals.",
            |c| c.actual.cpu_limit.map(|_| c.cfs_throttled.floor()),
        ),
    ];
    for (name, kind, help, value) in series {
        family(out, name, kind, help);
        for p in &pods {
            // A container waiting out its back-off has no cgroup: cAdvisor reports nothing.
            for c in p.containers.iter().filter(|c| c.waiting_until.is_none()) {
                if let Some(v) = value(c) {
                    let _ = writeln!(
                        out,
                        "{name}{{namespace=\"{}\",pod=\"{}\",container=\"{}\",image=\"{}\",node=\"{}\"}} {v}",
                        esc(&p.namespace),
                        esc(&p.name),
                        esc(&c.name),
                        esc(&c.image),
                        esc(&p.node)
                    );
                }
            }
        }
    }
}

/// Renders the kube-state-metrics series.
pub fn kube_state(s: &SimState, out: &mut String) {
    let mut pods: Vec<_> = s.pods().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for (name, help, limits) in [
        (
            "kube_pod_container_resource_requests",
            "The number of requested request resource by a container.",
            false,
        ),
        (
            "kube_pod_container_resource_limits",
            "The number of requested limit resource by a container.",
            true,
        ),
    ] {
        family(out, name, "gauge", help);
        for p in &pods {
            for c in &p.containers {
                let (cpu, mem) = if limits {
                    (c.desired.cpu_limit, c.desired.memory_limit)
                } else {
                    (c.desired.cpu_request, c.desired.memory_request)
                };
                let labels = format!(
                    "namespace=\"{}\",pod=\"{}\",uid=\"{}\",container=\"{}\",node=\"{}\"",
                    esc(&p.namespace),
                    esc(&p.name),
                    esc(&p.uid),
                    esc(&c.name),
                    esc(&p.node)
                );
                if let Some(m) = cpu {
                    let _ = writeln!(
                        out,
                        "{name}{{{labels},resource=\"cpu\",unit=\"core\"}} {}",
                        m as f64 / 1000.0
                    );
                }
                if let Some(b) = mem {
                    let _ = writeln!(
                        out,
                        "{name}{{{labels},resource=\"memory\",unit=\"byte\"}} {b}"
                    );
                }
            }
        }
    }
    family(
        out,
        "kube_pod_container_status_restarts_total",
        "counter",
        "The number of container restarts per container.",
    );
    for p in &pods {
        for c in &p.containers {
            let _ = writeln!(
                out,
                "kube_pod_container_status_restarts_total{{namespace=\"{}\",pod=\"{}\",uid=\"{}\",container=\"{}\"}} {}",
                esc(&p.namespace),
                esc(&p.name),
                esc(&p.uid),
                esc(&c.name),
                c.restart_count
            );
        }
    }
    family(
        out,
        "kube_pod_container_status_last_terminated_reason",
        "gauge",
        "Describes the last reason the container was in terminated state.",
    );
    for p in &pods {
        for c in &p.containers {
            if let Some(t) = &c.last_terminated {
                let _ = writeln!(
                    out,
                    "kube_pod_container_status_last_terminated_reason{{namespace=\"{}\",pod=\"{}\",uid=\"{}\",container=\"{}\",reason=\"{}\"}} 1",
                    esc(&p.namespace),
                    esc(&p.name),
                    esc(&p.uid),
                    esc(&c.name),
                    t.reason
                );
            }
        }
    }
    family(
        out,
        "kube_pod_owner",
        "gauge",
        "Information about the Pod's owner.",
    );
    for p in &pods {
        let (kind, owner) = p
            .owner
            .clone()
            .unwrap_or_else(|| ("<none>".into(), "<none>".into()));
        let _ = writeln!(
            out,
            "kube_pod_owner{{namespace=\"{}\",pod=\"{}\",uid=\"{}\",owner_kind=\"{}\",owner_name=\"{}\",owner_is_controller=\"{}\"}} 1",
            esc(&p.namespace),
            esc(&p.name),
            esc(&p.uid),
            esc(&kind),
            esc(&owner),
            p.owner.is_some()
        );
    }
    family(
        out,
        "kube_pod_status_ready_time",
        "gauge",
        "Readiness achieved time in unix timestamp for a pod.",
    );
    for p in &pods {
        if let Some(t) = p.ready_since() {
            let _ = writeln!(
                out,
                "kube_pod_status_ready_time{{namespace=\"{}\",pod=\"{}\",uid=\"{}\"}} {}",
                esc(&p.namespace),
                esc(&p.name),
                esc(&p.uid),
                t.floor()
            );
        }
    }
    family(
        out,
        "kube_replicaset_owner",
        "gauge",
        "Information about the ReplicaSet's owner.",
    );
    let mut rs: Vec<_> = s.replicaset_owners().collect();
    rs.sort_by(|a, b| a.0.cmp(b.0));
    for ((ns, name), owner) in rs {
        let (kind, owner_name) = owner
            .clone()
            .unwrap_or_else(|| ("<none>".into(), "<none>".into()));
        let _ = writeln!(
            out,
            "kube_replicaset_owner{{namespace=\"{}\",replicaset=\"{}\",owner_kind=\"{}\",owner_name=\"{}\",owner_is_controller=\"{}\"}} 1",
            esc(ns),
            esc(name),
            esc(&kind),
            esc(&owner_name),
            owner.is_some()
        );
    }
    pods_and_nodes(s, out);
}

/// `kube_pod_status_phase`, `kube_pod_labels`, `kube_pod_info` and the nodes' capacity and
/// allocatable, as kube-state-metrics v2 exposes them (without `--metric-labels-allowlist`:
/// `kube_pod_labels` has no `label_*`).
fn pods_and_nodes(s: &SimState, out: &mut String) {
    let mut pods: Vec<_> = s.pods().collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let pod = |p: &super::state::PodSim| {
        format!(
            "namespace=\"{}\",pod=\"{}\",uid=\"{}\"",
            esc(&p.namespace),
            esc(&p.name),
            esc(&p.uid)
        )
    };
    family(
        out,
        "kube_pod_status_phase",
        "gauge",
        "The pods current phase.",
    );
    for p in &pods {
        let current = if p.rejected.is_some() {
            "Failed"
        } else {
            "Running"
        };
        for phase in POD_PHASES {
            let v = u8::from(phase == current);
            let _ = writeln!(
                out,
                "kube_pod_status_phase{{{},phase=\"{phase}\"}} {v}",
                pod(p)
            );
        }
    }
    family(
        out,
        "kube_pod_labels",
        "gauge",
        "Kubernetes labels converted to Prometheus labels.",
    );
    for p in &pods {
        let _ = writeln!(out, "kube_pod_labels{{{}}} 1", pod(p));
    }
    family(out, "kube_pod_info", "gauge", "Information about pod.");
    for p in &pods {
        let (kind, name) = p
            .owner
            .clone()
            .unwrap_or_else(|| ("<none>".into(), "<none>".into()));
        let host_ip = s.node_ip(&p.node).unwrap_or_default();
        let _ = writeln!(
            out,
            "kube_pod_info{{{},host_ip=\"{host_ip}\",pod_ip=\"{}\",node=\"{}\",created_by_kind=\"{}\",created_by_name=\"{}\",host_network=\"false\"}} 1",
            pod(p),
            esc(p.pod_ip()),
            esc(&p.node),
            esc(&kind),
            esc(&name)
        );
    }
    for (name, help) in [
        (
            "kube_node_status_capacity",
            "The capacity for different resources of a node.",
        ),
        (
            "kube_node_status_allocatable",
            "The allocatable for different resources of a node that are available for scheduling.",
        ),
    ] {
        family(out, name, "gauge", help);
        for (spec, _) in s.nodes() {
            for (resource, unit, v) in node_resources(spec) {
                let _ = writeln!(
                    out,
                    "{name}{{node=\"{}\",resource=\"{resource}\",unit=\"{unit}\"}} {v}",
                    esc(&spec.name)
                );
            }
        }
    }
}

/// The phases of `kube_pod_status_phase`, one series each (1 for the pod's).
pub const POD_PHASES: [&str; 5] = ["Pending", "Succeeded", "Failed", "Unknown", "Running"];

/// `(resource, unit, value)` of a node's capacity (= allocatable in the simulator).
pub fn node_resources(spec: &super::config::NodeSpec) -> [(&'static str, &'static str, f64); 3] {
    [
        ("cpu", "core", spec.allocatable.cpu as f64 / 1000.0),
        ("memory", "byte", spec.allocatable.memory as f64),
        ("pods", "integer", spec.pods as f64),
    ]
}
