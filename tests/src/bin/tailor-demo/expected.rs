//! What the demo expects, checked against the cluster: each check adds what does not hold yet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::Value;
use tailor_crds::v1alpha1::{FloorReason, MemoryFloor, VerticalAutoscaler, condition};

use crate::history::quantity;
use crate::{MI, NS};

/// The demo's pods and VerticalAutoscalers, read once per check.
pub struct Snapshot {
    pub pods: Vec<Pod>,
    pub vas: BTreeMap<String, VerticalAutoscaler>,
}

impl Snapshot {
    pub async fn read(client: &kube::Client) -> Result<Self, String> {
        let pods = Api::<Pod>::namespaced(client.clone(), NS)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("pods: {e}"))?
            .items;
        let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), NS)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("verticalautoscalers: {e}"))?
            .items
            .into_iter()
            .map(|v| (v.name_any(), v))
            .collect();
        Ok(Self { pods, vas })
    }

    /// The pods of workload `app`.
    pub fn of(&self, app: &str) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|p| p.labels().get("app").map(String::as_str) == Some(app))
            .collect()
    }

    /// Whether `va`'s condition `t` is True.
    pub fn va_condition(&self, va: &str, t: &str) -> bool {
        self.vas
            .get(va)
            .and_then(|v| cond(v, t))
            .is_some_and(|c| c.status == "True")
    }

    /// The memory floor of `va`'s first container.
    pub fn floor(&self, va: &str) -> Option<&MemoryFloor> {
        self.vas
            .get(va)?
            .status
            .as_ref()?
            .recommendation
            .as_ref()?
            .container_recommendations
            .first()?
            .memory_floor
            .as_ref()
    }
}

pub fn cond<'a>(va: &'a VerticalAutoscaler, t: &str) -> Option<&'a Condition> {
    va.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)
}

pub fn pod_condition(p: &Pod, t: &str) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == t && c.status == "True"))
}

/// A request or limit of the pod's first container in its spec.
pub fn pod_value(p: &Pod, part: &str, resource: &str) -> Option<String> {
    let c = p.spec.as_ref()?.containers.first()?;
    let r = c.resources.as_ref()?;
    let m = if part == "requests" {
        r.requests.as_ref()?
    } else {
        r.limits.as_ref()?
    };
    m.get(resource).map(|q| q.0.clone())
}

pub fn container_status(p: &Pod) -> Option<&ContainerStatus> {
    p.status.as_ref()?.container_statuses.as_ref()?.first()
}

pub fn restarts(p: &Pod) -> i32 {
    container_status(p).map_or(0, |s| s.restart_count)
}

pub fn bytes(q: Option<String>) -> Option<f64> {
    quantity(&Value::String(q?))
}

/// Every workload has a recommendation.
pub fn recommendations(s: &Snapshot, missing: &mut Vec<String>) {
    for name in ["web-api", "orders", "reports", "worker", "batch"] {
        if !s.va_condition(name, condition::RECOMMENDATION_PROVIDED) {
            missing.push(format!("{name}: no recommendation yet"));
        }
    }
}

/// web-api: CPU lowered live from `cpu` (no restart, same pod); the memory cut waits for
/// approval.
pub fn web_api(
    s: &Snapshot,
    (original, cpu): (&BTreeMap<String, String>, &str),
    missing: &mut Vec<String>,
) {
    for p in s.of("web-api") {
        if pod_value(p, "requests", "cpu").as_deref() == Some(cpu) {
            missing.push(format!("{}: CPU not lowered yet", p.name_any()));
        }
        if restarts(p) != 0 {
            missing.push(format!("{}: restarted", p.name_any()));
        }
        if original.get(&p.name_any()).map(String::as_str) != p.uid().as_deref() {
            missing.push(format!("{}: recreated", p.name_any()));
        }
    }
    if !s.va_condition("web-api", condition::AWAITING_APPROVAL) {
        missing.push("web-api: memory decrease not awaiting approval".into());
    }
}

/// orders: memory lowered through one restart per pod, to at least the JVM floor.
pub fn orders(s: &Snapshot, missing: &mut Vec<String>) {
    let Some(f) = s
        .floor("orders")
        .filter(|f| f.reason == FloorReason::HeapHint)
    else {
        missing.push("orders: no HeapHint floor".into());
        return;
    };
    let floor = quantity(&Value::String(f.value.0.clone())).unwrap_or(f64::MAX);
    for p in s.of("orders") {
        let limit = bytes(pod_value(p, "limits", "memory")).unwrap_or(0.0);
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

/// reports: Off, never touched.
pub fn reports(s: &Snapshot, missing: &mut Vec<String>) {
    for p in s.of("reports") {
        if p.metadata.generation != Some(1) {
            missing.push(format!("{}: an Off workload was resized", p.name_any()));
        }
    }
}

/// worker: floor from the OOM kill, memory raised live.
pub fn worker(s: &Snapshot, missing: &mut Vec<String>) {
    let reason = s.floor("worker").map(|f| f.reason);
    if reason != Some(FloorReason::Oom) {
        missing.push(format!("worker: floor reason {reason:?}, expected OOM"));
    }
    for p in s.of("worker") {
        if pod_value(p, "limits", "memory").as_deref() == Some("512Mi") {
            missing.push(format!("{}: memory not raised yet", p.name_any()));
        }
        if restarts(p) != 0 {
            missing.push(format!("{}: restarted", p.name_any()));
        }
    }
}

/// What the simulator demo expects; `Ok(())` when all holds, else what does not yet.
/// `original`: the pods' UIDs when they started.
pub async fn sim(
    client: &kube::Client,
    original: &BTreeMap<String, String>,
) -> Result<(), Vec<String>> {
    let s = Snapshot::read(client).await.map_err(|e| vec![e])?;
    let mut missing = Vec::new();
    recommendations(&s, &mut missing);
    web_api(&s, (original, "1"), &mut missing);
    orders(&s, &mut missing);
    reports(&s, &mut missing);
    worker(&s, &mut missing);
    // batch: more CPU than a node has; the kubelet says Infeasible and the object shows it.
    if !s.va_condition("batch", condition::RESIZE_INFEASIBLE) {
        missing.push("batch: no ResizeInfeasible condition".into());
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}
