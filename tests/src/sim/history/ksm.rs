//! The kube-state-metrics series of the history, labelled as the live scrape of the
//! simulator's kube-state-metrics endpoint labels them (`job="kube-state-metrics"`, its
//! `instance`, and the series' own labels as kube-state-metrics v2 exposes them).

use std::collections::BTreeMap;

use super::{HistoryContainer, Series, Window, labels};
use crate::sim::config::NodeSpec;
use crate::sim::metrics::{POD_PHASES, node_resources};
use crate::sim::scrape;

/// A ReplicaSet and its controlling owner, for `kube_replicaset_owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetOwner {
    /// Namespace.
    pub namespace: String,
    /// ReplicaSet.
    pub replicaset: String,
    /// Owner kind (`Deployment`).
    pub owner_kind: String,
    /// Owner name.
    pub owner_name: String,
}

/// A node, for `kube_node_status_capacity` and `kube_node_status_allocatable` (equal, as in
/// the simulator).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryNode {
    /// Name.
    pub name: String,
    /// CPU, cores.
    pub cpu: f64,
    /// Memory, bytes.
    pub memory: f64,
    /// Pods.
    pub pods: f64,
}

impl HistoryNode {
    /// A simulated node.
    pub fn from_spec(spec: &NodeSpec) -> Self {
        let [(_, _, cpu), (_, _, memory), (_, _, pods)] = node_resources(spec);
        Self {
            name: spec.name.clone(),
            cpu,
            memory,
            pods,
        }
    }
}

fn constant(times: &[i64], v: f64) -> Vec<(i64, f64)> {
    times.iter().map(|t| (*t, v)).collect()
}

/// The container's own series: restarts, last terminated reason, requests and limits.
pub(super) fn container(c: &HistoryContainer, times: &[i64]) -> Vec<Series> {
    let mut out = vec![Series {
        metric: "kube_pod_container_status_restarts_total",
        labels: c.container_labels(),
        samples: times
            .iter()
            .map(|t| (*t, c.oom_kills.iter().filter(|k| **k <= *t).count() as f64))
            .collect(),
    }];
    if let Some(first) = c.oom_kills.iter().min() {
        let mut l = c.container_labels();
        l.insert("reason", "OOMKilled".into());
        out.push(Series {
            metric: "kube_pod_container_status_last_terminated_reason",
            labels: l,
            samples: times
                .iter()
                .filter(|t| *t >= first)
                .map(|t| (*t, 1.0))
                .collect(),
        });
    }
    for (metric, (cpu, mem)) in [
        (
            "kube_pod_container_resource_requests",
            (c.cpu.0, c.memory.0),
        ),
        ("kube_pod_container_resource_limits", (c.cpu.1, c.memory.1)),
    ] {
        for (resource, unit, v) in [("cpu", "core", cpu), ("memory", "byte", mem)] {
            if let Some(v) = v {
                let mut l = c.container_labels();
                l.insert("node", c.node.clone());
                l.insert("resource", resource.into());
                l.insert("unit", unit.into());
                out.push(Series {
                    metric,
                    labels: l,
                    samples: constant(times, v),
                });
            }
        }
    }
    out.retain(|s| !s.samples.is_empty());
    out
}

/// The pod's series: owner, phase (Running), labels, info and ready time (Ready since the
/// pod's first sample).
pub(super) fn pod(c: &HistoryContainer, times: &[i64]) -> Vec<Series> {
    let (kind, name, controller) = match &c.owner {
        Some((kind, name)) => (kind.clone(), name.clone(), "true"),
        None => ("<none>".to_owned(), "<none>".to_owned(), "false"),
    };
    let with = |extra: Vec<(&'static str, String)>| {
        let mut l = c.pod_labels();
        l.extend(labels(extra));
        l
    };
    let mut out = vec![Series {
        metric: "kube_pod_owner",
        labels: with(vec![
            ("owner_kind", kind.clone()),
            ("owner_name", name.clone()),
            ("owner_is_controller", controller.to_owned()),
        ]),
        samples: constant(times, 1.0),
    }];
    for phase in POD_PHASES {
        out.push(Series {
            metric: "kube_pod_status_phase",
            labels: with(vec![("phase", phase.to_owned())]),
            samples: constant(times, if phase == "Running" { 1.0 } else { 0.0 }),
        });
    }
    out.push(Series {
        metric: "kube_pod_labels",
        labels: c.pod_labels(),
        samples: constant(times, 1.0),
    });
    out.push(Series {
        metric: "kube_pod_info",
        labels: with(vec![
            ("host_ip", c.host_ip.clone()),
            ("pod_ip", c.pod_ip.clone()),
            ("node", c.node.clone()),
            ("created_by_kind", kind),
            ("created_by_name", name),
            ("host_network", "false".to_owned()),
        ]),
        samples: constant(times, 1.0),
    });
    out.push(Series {
        metric: "kube_pod_status_ready_time",
        labels: c.pod_labels(),
        samples: constant(times, times[0] as f64),
    });
    out
}

fn ksm(extra: Vec<(&'static str, String)>) -> BTreeMap<&'static str, String> {
    labels(extra.into_iter().chain(scrape::ksm_labels()))
}

/// `kube_replicaset_owner` for `replicasets` over the window, every `interval` seconds.
pub fn replicaset_owners(
    replicasets: &[ReplicaSetOwner],
    start: i64,
    end: i64,
    interval: i64,
) -> Vec<Series> {
    let times: Vec<i64> = Window::new(start, end, interval).times().collect();
    replicasets
        .iter()
        .map(|r| Series {
            metric: "kube_replicaset_owner",
            labels: ksm(vec![
                ("namespace", r.namespace.clone()),
                ("replicaset", r.replicaset.clone()),
                ("owner_kind", r.owner_kind.clone()),
                ("owner_name", r.owner_name.clone()),
                ("owner_is_controller", "true".to_owned()),
            ]),
            samples: constant(&times, 1.0),
        })
        .collect()
}

/// `kube_node_status_capacity` and `kube_node_status_allocatable` (`resource` `cpu`/`core`,
/// `memory`/`byte`, `pods`/`integer`) for `nodes` over the window, every `interval` seconds.
pub fn node_status(nodes: &[HistoryNode], start: i64, end: i64, interval: i64) -> Vec<Series> {
    let times: Vec<i64> = Window::new(start, end, interval).times().collect();
    let mut out = Vec::new();
    for metric in ["kube_node_status_capacity", "kube_node_status_allocatable"] {
        for n in nodes {
            for (resource, unit, v) in [
                ("cpu", "core", n.cpu),
                ("memory", "byte", n.memory),
                ("pods", "integer", n.pods),
            ] {
                out.push(Series {
                    metric,
                    labels: ksm(vec![
                        ("node", n.name.clone()),
                        ("resource", resource.to_owned()),
                        ("unit", unit.to_owned()),
                    ]),
                    samples: constant(&times, v),
                });
            }
        }
    }
    out
}
