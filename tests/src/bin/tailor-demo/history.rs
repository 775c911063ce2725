//! The backfilled history: every demo pod over the window, in the simulator's usage models,
//! every [`INTERVAL`] seconds with the labels of the live scrape (see
//! `tailor_e2e::sim::scrape`), written in two parts: the days up to when it is written, then,
//! right before Prometheus starts, the minutes since, so that it ends where the live scrape
//! begins.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use serde_json::Value;
use tailor_e2e::prometheus::BackfillUntilStart;
use tailor_e2e::sim::history::{
    HistoryContainer, HistoryNode, Inventory, ReplicaSetOwner, Window, write_openmetrics,
};
use tailor_e2e::sim::usage::{PodUsage, container_seed};

use crate::setup::Created;
use crate::workloads::Workload;
use crate::{Error, INTERVAL, NS, now};

/// Bytes of a memory quantity string.
pub fn quantity(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    tailor_crds::quantity::memory_bytes(&Quantity(s.into()))
        .ok()
        .map(|b| b as f64)
}

/// Cores of a CPU quantity string.
pub fn cores(v: &Value) -> Option<f64> {
    let s = v.as_str()?;
    tailor_crds::quantity::cpu_millis(&Quantity(s.into()))
        .ok()
        .map(|m| m as f64 / 1000.0)
}

/// A running pod's node, UID, IP and its node's IP.
struct PodFacts {
    node: String,
    uid: String,
    pod_ip: String,
    host_ip: String,
}

fn pod_facts(running: &[Pod]) -> BTreeMap<String, PodFacts> {
    running
        .iter()
        .map(|p| {
            let status = p.status.as_ref();
            let facts = PodFacts {
                node: p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_else(|| "sim-0".into()),
                uid: p.uid().unwrap_or_default(),
                pod_ip: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
                host_ip: status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
            };
            (p.name_any(), facts)
        })
        .collect()
}

/// History of every demo pod over the window, in the simulator's models; OOM kills counted
/// back from `end`.
fn containers(
    list: &[Workload],
    created: &BTreeMap<&'static str, Created>,
    running: &[Pod],
    end: i64,
) -> Result<(Vec<HistoryContainer>, Vec<ReplicaSetOwner>), Error> {
    let facts = pod_facts(running);
    let mut containers = Vec::new();
    let mut replicasets = Vec::new();
    for w in list {
        let c = created.get(w.name).ok_or("workload not created")?;
        let usage = PodUsage::parse(&w.usage.to_string())?;
        let model = usage.model("app").cloned().ok_or("no model for app")?;
        let res = &w.container["resources"];
        if let Some(rs) = &c.replicaset {
            replicasets.push(ReplicaSetOwner {
                namespace: NS.into(),
                replicaset: rs.clone(),
                owner_kind: "Deployment".into(),
                owner_name: w.name.into(),
            });
        }
        let owner = match &c.replicaset {
            Some(rs) => ("ReplicaSet".to_owned(), rs.clone()),
            None => (w.kind.to_owned(), w.name.to_owned()),
        };
        for (i, pod) in c.pods.iter().enumerate() {
            let f = facts
                .get(pod)
                .ok_or_else(|| format!("pod {pod} not running"))?;
            containers.push(HistoryContainer {
                uid: f.uid.clone(),
                pod_ip: f.pod_ip.clone(),
                image: w.container["image"]
                    .as_str()
                    .unwrap_or("example/app:1")
                    .into(),
                node: f.node.clone(),
                host_ip: f.host_ip.clone(),
                seed: container_seed(1, NS, pod, "app"),
                cpu: (cores(&res["requests"]["cpu"]), cores(&res["limits"]["cpu"])),
                memory: (
                    quantity(&res["requests"]["memory"]),
                    quantity(&res["limits"]["memory"]),
                ),
                // The first pod carries the workload's OOM kills.
                oom_kills: if i == 0 {
                    w.oom_hours_ago.iter().map(|h| end - h * 3600).collect()
                } else {
                    vec![]
                },
                ..HistoryContainer::new(NS, pod, "app", model.clone(), (&owner.0, &owner.1))
            });
        }
    }
    Ok((containers, replicasets))
}

/// The demo's history: `days` up to now, every [`INTERVAL`] seconds.
pub struct History {
    containers: Vec<HistoryContainer>,
    replicasets: Vec<ReplicaSetOwner>,
    nodes: Vec<HistoryNode>,
    /// The first sample.
    pub start: i64,
    /// The last sample of the first part.
    pub end: i64,
}

impl History {
    /// The history of the running pods of `list` (and of `nodes`) over the `days` up to now.
    pub fn new(
        list: &[Workload],
        created: &BTreeMap<&'static str, Created>,
        running: &[Pod],
        nodes: Vec<HistoryNode>,
        days: i64,
    ) -> Result<Self, Error> {
        let end = (now() as i64) / INTERVAL * INTERVAL;
        let (containers, replicasets) = containers(list, created, running, end)?;
        Ok(Self {
            containers,
            replicasets,
            nodes,
            start: end - days * 86_400,
            end,
        })
    }

    fn inventory(&self) -> Inventory<'_> {
        Inventory {
            containers: &self.containers,
            replicasets: &self.replicasets,
            nodes: &self.nodes,
        }
    }

    /// Writes the first part, up to [`History::end`], into `dir` as OpenMetrics text; returns
    /// the file.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, Error> {
        let om = dir.join("history.om");
        let mut file = std::io::BufWriter::new(std::fs::File::create(&om)?);
        let window = Window::new(self.start, self.end, INTERVAL);
        write_openmetrics(&self.inventory(), window, &mut file)?;
        file.flush()?;
        Ok(om)
    }

    /// The second part, made when Prometheus is about to start: from after [`History::end`]
    /// up to then.
    pub fn until_start(self: Arc<Self>) -> BackfillUntilStart {
        BackfillUntilStart(Arc::new(move || {
            let until = (now() as i64) / INTERVAL * INTERVAL;
            let window = Window::new(self.start, until, INTERVAL).from(self.end + INTERVAL);
            let mut out = Vec::new();
            write_openmetrics(&self.inventory(), window, &mut out).map_err(|e| e.to_string())?;
            String::from_utf8(out).map_err(|e| e.to_string())
        }))
    }
}
