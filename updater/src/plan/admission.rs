//! Sizing a pod at its creation. A new pod is a fresh process: giving it the recommended
//! resources disturbs nothing, above or below the template. So the rules of a resize apply
//! (controlled containers and resources, `minAllowed`/`maxAllowed`, limits per
//! `controlledValues` and their cap, the template's QoS class kept, resources an HPA scales on
//! left alone, declines named) with three differences:
//!
//! - no `minChange`: the target goes as it is;
//! - no memory-decrease route: memory below the template needs no approval or restart;
//! - memory never below the recommendation's floor, even when `maxAllowed` is lower.
//!
//! The pod is read as submitted (no status yet). What it returns is a [`PodPlan`] whose
//! `changes` are the containers' new resources, `from` the template's. [`patch`] turns it into
//! the JSON Patch an admission webhook answers with: only the `cpu` and `memory` keys of the
//! changed containers are written (other resources stay), and the annotation
//! [`SIZED_ANNOTATION`] records what the template asked for, the recommendation used, and any
//! startup boost given (see [`super::boost`]).

use serde_json::{Value, json};
use tailor_crds::quantity::{format_cpu_millis, format_memory_bytes};

use super::container::Mode;
use super::resources::Amounts;
use super::{PodInput, PodPlan, plan_containers, read_resources};

/// The pod annotation that records a sizing at creation: the VerticalAutoscaler, the
/// generation its recommendation was computed for, and each changed container's resources as
/// the template gave them.
pub const SIZED_ANNOTATION: &str = "tailor.dev/sized-at-admission";

/// The pod annotation that says why a pod was not sized at creation, or not fully, when a person
/// can fix it (a stale recommendation, a declined change). The updater turns it into an Event
/// on the pod once the pod exists.
pub const NOTE_ANNOTATION: &str = "tailor.dev/sizing-note";

/// Sizes a pod being created. Never fails: every reason to leave (part of) it as submitted is
/// in the plan.
pub fn size(input: &PodInput<'_>) -> PodPlan {
    match read_resources(input.pod) {
        Ok(pod) => plan_containers(input, Mode::Admission, &pod),
        Err(plan) => *plan,
    }
}

/// The recommendation a sizing used: its VerticalAutoscaler and the generation it was computed
/// for (`status.recommendation.observedGeneration`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source<'a> {
    /// The VerticalAutoscaler's name.
    pub verticalautoscaler: &'a str,
    /// The generation the recommendation was computed for.
    pub generation: Option<i64>,
}

fn quantities(a: &Amounts) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(m) = a.cpu {
        out.push(("cpu", format_cpu_millis(m).0));
    }
    if let Some(b) = a.memory {
        out.push(("memory", format_memory_bytes(b).0));
    }
    out
}

fn as_object(q: &[(&'static str, String)]) -> Value {
    Value::Object(q.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect())
}

/// The JSON Patch (RFC 6902) that sizes `pod` as `plan` says, or an empty one when nothing
/// changes. `add` creates a missing map and replaces an existing key, so it serves both.
pub fn patch(
    pod: &k8s_openapi::api::core::v1::Pod,
    plan: &PodPlan,
    source: &Source<'_>,
) -> Vec<Value> {
    let Some(spec) = pod.spec.as_ref().filter(|_| plan.resizes()) else {
        return Vec::new();
    };
    let mut ops = Vec::new();
    let mut original = serde_json::Map::new();
    for change in &plan.changes {
        let Some(i) = spec
            .containers
            .iter()
            .position(|c| c.name == change.container)
        else {
            continue;
        };
        let resources = spec.containers[i].resources.as_ref();
        let base = format!("/spec/containers/{i}/resources");
        if resources.is_none() {
            ops.push(json!({"op": "add", "path": base, "value": {}}));
        }
        for (part, to, exists) in [
            (
                "requests",
                &change.to.requests,
                resources.is_some_and(|r| r.requests.is_some()),
            ),
            (
                "limits",
                &change.to.limits,
                resources.is_some_and(|r| r.limits.is_some()),
            ),
        ] {
            let q = quantities(to);
            if q.is_empty() {
                continue;
            }
            if exists {
                for (k, v) in &q {
                    ops.push(
                        json!({"op": "add", "path": format!("{base}/{part}/{k}"), "value": v}),
                    );
                }
            } else {
                ops.push(
                    json!({"op": "add", "path": format!("{base}/{part}"), "value": as_object(&q)}),
                );
            }
        }
        original.insert(
            change.container.clone(),
            json!({"requests": as_object(&quantities(&change.from.requests)),
                   "limits": as_object(&quantities(&change.from.limits))}),
        );
    }
    let mut record = json!({
        "verticalAutoscaler": source.verticalautoscaler,
        "generation": source.generation,
        "original": original,
    });
    if !plan.boosted.is_empty() {
        let boosts: serde_json::Map<String, Value> = plan
            .boosted
            .iter()
            .map(|g| {
                (
                    g.container.clone(),
                    super::boost::record(g.boosted, g.target, g.duration),
                )
            })
            .collect();
        record["boost"] = Value::Object(boosts);
    }
    annotate(pod, &mut ops, SIZED_ANNOTATION, &record.to_string());
    ops
}

/// Adds the annotation `key: value` to the JSON Patch `ops` of `pod` (creating the map when the
/// pod has none and `ops` does not create it already).
pub fn annotate(
    pod: &k8s_openapi::api::core::v1::Pod,
    ops: &mut Vec<Value>,
    key: &str,
    value: &str,
) {
    let map = json!({"op": "add", "path": "/metadata/annotations", "value": {}});
    if pod.metadata.annotations.is_none() && !ops.contains(&map) {
        ops.push(map);
    }
    // `/` in a key is `~1` in a JSON Pointer.
    let key = key.replace('~', "~0").replace('/', "~1");
    ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": value}));
}
