//! What the planner's tests share: pods, specs and recommendations built in memory.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests may panic

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tailor_crds::v1alpha1::{ContainerRecommendation, ResourceName, VerticalAutoscalerSpec};
use tailor_updater::plan::memory::Approved;
use tailor_updater::plan::resources::Amounts;
use tailor_updater::plan::{PodInput, PodPlan, plan_pod};

pub const MI: i64 = 1 << 20;

pub fn pod(containers: Value) -> Pod {
    let statuses: Vec<Value> = containers
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            json!({"name": c["name"], "image": "x", "imageID": "", "ready": true,
                        "restartCount": 0, "resources": c["resources"]})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "generation": 1, "uid": "u1"},
        "spec": {"containers": containers},
        "status": {"phase": "Running", "observedGeneration": 1, "containerStatuses": statuses,
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap()
}

pub fn container(name: &str, requests: Value, limits: Value) -> Value {
    json!({"name": name, "image": "x", "resources": {"requests": requests, "limits": limits}})
}

pub fn spec(extra: Value) -> VerticalAutoscalerSpec {
    let mut s = json!({"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"},
                       "updatePolicy": {"updateMode": "InPlace"}});
    merge(&mut s, extra);
    serde_json::from_value(s).unwrap()
}

pub fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

pub fn rec(name: &str, target: Value, extra: Value) -> ContainerRecommendation {
    let mut r = json!({"containerName": name, "target": target});
    merge(&mut r, extra);
    serde_json::from_value(r).unwrap()
}

pub fn plan(pod: &Pod, spec: &VerticalAutoscalerSpec, recs: &[ContainerRecommendation]) -> PodPlan {
    plan_with(pod, spec, recs, &BTreeSet::new(), &[])
}

pub fn plan_with(
    pod: &Pod,
    spec: &VerticalAutoscalerSpec,
    recs: &[ContainerRecommendation],
    blocked: &BTreeSet<ResourceName>,
    approved: &[Approved],
) -> PodPlan {
    plan_pod(&PodInput {
        pod,
        spec,
        recommendation: recs,
        blocked,
        approved,
        now: 0,
        unboost_only: false,
    })
}

pub fn amounts(cpu: Option<i64>, memory: Option<i64>) -> Amounts {
    Amounts { cpu, memory }
}
