//! The backfilled history: every demo pod over the window, in the simulator's usage models.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;
use tailor_e2e::sim::history::{HistoryContainer, ReplicaSetOwner, write_openmetrics};
use tailor_e2e::sim::usage::{PodUsage, container_seed};

use crate::setup::Created;
use crate::workloads::Workload;
use crate::{Error, NS, STEP};

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

/// History of every demo pod over the window, in the simulator's models.
fn containers(
    list: &[Workload],
    created: &BTreeMap<&'static str, Created>,
    nodes: &BTreeMap<String, String>,
    end: i64,
) -> Result<(Vec<HistoryContainer>, Vec<ReplicaSetOwner>), Error> {
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
        for (i, pod) in c.pods.iter().enumerate() {
            let owner = match &c.replicaset {
                Some(rs) => ("ReplicaSet".to_owned(), rs.clone()),
                None => (w.kind.to_owned(), w.name.to_owned()),
            };
            containers.push(HistoryContainer {
                namespace: NS.into(),
                pod: pod.clone(),
                container: "app".into(),
                image: w.container["image"]
                    .as_str()
                    .unwrap_or("example/app:1")
                    .into(),
                node: nodes.get(pod).cloned().unwrap_or_else(|| "sim-0".into()),
                model: model.clone(),
                seed: container_seed(1, NS, pod, "app"),
                trace: None,
                cpu: (cores(&res["requests"]["cpu"]), cores(&res["limits"]["cpu"])),
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

/// Writes `days` of history ending at `end` into `dir` as OpenMetrics text; returns the file.
pub fn write(
    dir: &Path,
    list: &[Workload],
    created: &BTreeMap<&'static str, Created>,
    nodes: &BTreeMap<String, String>,
    (days, end): (i64, i64),
) -> Result<PathBuf, Error> {
    let start = end - days * 86_400;
    let (containers, replicasets) = containers(list, created, nodes, end)?;
    let om = dir.join("history.om");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&om)?);
    write_openmetrics(&containers, &replicasets, (start, end, STEP), &mut file)?;
    file.flush()?;
    Ok(om)
}
