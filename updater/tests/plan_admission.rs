//! Sizing a pod at its creation (`plan::admission`): the resize rules without `minChange` or
//! the memory-decrease route, memory never below the floor, on pods built in memory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod plan_support;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use plan_support::*;
use serde_json::{Value, json};
use tailor_crds::v1alpha1::{ContainerRecommendation, ResourceName, VerticalAutoscalerSpec};
use tailor_updater::plan::admission::size;
use tailor_updater::plan::resources::{Qos, qos};
use tailor_updater::plan::{DeclineReason, PodInput, PodPlan, Skip};

/// A pod as submitted: no status.
fn new_pod(containers: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": "w-", "namespace": "ns"},
        "spec": {"containers": containers},
    }))
    .unwrap()
}

fn sized(pod: &Pod, spec: &VerticalAutoscalerSpec, recs: &[ContainerRecommendation]) -> PodPlan {
    sized_with(pod, spec, recs, &BTreeSet::new())
}

fn sized_with(
    pod: &Pod,
    spec: &VerticalAutoscalerSpec,
    recs: &[ContainerRecommendation],
    blocked: &BTreeSet<ResourceName>,
) -> PodPlan {
    size(&PodInput {
        pod,
        spec,
        recommendation: recs,
        blocked,
        approved: &[],
        now: 0,
        unboost_only: false,
    })
}

#[test]
fn a_new_pod_gets_the_target_both_ways_without_min_change_or_approval() {
    let p = new_pod(json!([container(
        "app",
        json!({"cpu": "500m", "memory": "1Gi"}),
        json!({"cpu": "1", "memory": "2Gi"})
    )]));
    // ManualApproval (the default) and a 4% CPU change: both go at creation.
    let plan = sized(
        &p,
        &spec(json!({})),
        &[rec(
            "app",
            json!({"cpu": "520m", "memory": "512Mi"}),
            json!({}),
        )],
    );
    assert!(plan.skip.is_none(), "{plan:?}");
    assert!(plan.held.is_empty(), "no approval at creation: {plan:?}");
    let c = &plan.changes[0];
    assert_eq!(c.to.requests, amounts(Some(520), Some(512 * MI)));
    // Limits keep their ratio to the requests (RequestsAndLimits).
    assert_eq!(c.to.limits, amounts(Some(1040), Some(1024 * MI)));
    assert_eq!(c.approval, None);
    // The same on a running pod holds the memory cut and leaves the CPU (minChange).
    let running = plan_support::plan(
        &pod(json!([container(
            "app",
            json!({"cpu": "500m", "memory": "1Gi"}),
            json!({"cpu": "1", "memory": "2Gi"})
        )])),
        &spec(json!({})),
        &[rec(
            "app",
            json!({"cpu": "520m", "memory": "512Mi"}),
            json!({}),
        )],
    );
    assert!(
        !running.resizes() && !running.held.is_empty(),
        "{running:?}"
    );
}

#[test]
fn memory_never_goes_below_the_floor_even_under_max_allowed() {
    let p = new_pod(json!([container(
        "app",
        json!({"cpu": "500m", "memory": "1Gi"}),
        json!({})
    )]));
    let s = spec(json!({"resourcePolicy": {"containerPolicies": [
        {"containerName": "app", "maxAllowed": {"memory": "256Mi"}, "minAllowed": {"cpu": "300m"}}]}}));
    let plan = sized(
        &p,
        &s,
        &[rec(
            "app",
            json!({"cpu": "100m", "memory": "600Mi"}),
            json!({"memoryFloor": {"value": "400Mi", "reason": "HeapHint"}}),
        )],
    );
    let to = plan.changes[0].to.requests;
    assert_eq!(to.cpu, Some(300), "minAllowed");
    assert_eq!(to.memory, Some(400 * MI), "maxAllowed, then the floor");
}

#[test]
fn the_qos_class_and_the_policy_are_kept() {
    // Guaranteed: requests and limits move together.
    let g = new_pod(json!([container(
        "app",
        json!({"cpu": "1", "memory": "1Gi"}),
        json!({"cpu": "1", "memory": "1Gi"})
    )]));
    let plan = sized(
        &g,
        &spec(json!({})),
        &[rec(
            "app",
            json!({"cpu": "2", "memory": "512Mi"}),
            json!({}),
        )],
    );
    let to = plan.changes[0].to;
    assert_eq!(to.requests, to.limits);
    assert_eq!(qos([&to]), Qos::Guaranteed);
    // mode Off, controlledResources and an HPA-scaled resource.
    let two = new_pod(json!([
        container("app", json!({"cpu": "500m", "memory": "256Mi"}), json!({})),
        container("side", json!({"cpu": "100m", "memory": "64Mi"}), json!({}))
    ]));
    let s = spec(json!({"resourcePolicy": {"containerPolicies": [
        {"containerName": "side", "mode": "Off"},
        {"containerName": "app", "controlledResources": ["cpu", "memory"]}]}}));
    let recs = [
        rec("app", json!({"cpu": "1", "memory": "512Mi"}), json!({})),
        rec("side", json!({"cpu": "1", "memory": "512Mi"}), json!({})),
    ];
    let plan = sized_with(&two, &s, &recs, &BTreeSet::from([ResourceName::Cpu]));
    assert_eq!(plan.changes.len(), 1, "{plan:?}");
    assert_eq!(plan.changes[0].container, "app");
    assert_eq!(
        plan.changes[0].to.requests,
        amounts(Some(500), Some(512 * MI)),
        "CPU left to the HPA"
    );
    assert!(
        plan.declined
            .iter()
            .any(|d| d.reason == DeclineReason::HpaConflict)
    );
}

#[test]
fn what_cannot_be_sized_is_left_as_submitted_and_said() {
    // No recommendation for the container.
    let p = new_pod(json!([container(
        "app",
        json!({"cpu": "500m", "memory": "256Mi"}),
        json!({})
    )]));
    let plan = sized(&p, &spec(json!({})), &[]);
    assert!(!plan.resizes());
    assert!(
        plan.declined
            .iter()
            .any(|d| d.reason == DeclineReason::NoRecommendation)
    );
    // BestEffort: may not gain requests.
    let be = new_pod(json!([{"name": "app", "image": "x"}]));
    let plan = sized(
        &be,
        &spec(json!({})),
        &[rec("app", json!({"cpu": "1", "memory": "1Gi"}), json!({}))],
    );
    assert_eq!(plan.skip, Some(Skip::BestEffort));
    assert!(!plan.resizes());
}

/// Applies `ops` to `pod` as the API server applies an admission webhook's JSON Patch.
fn apply(pod: &Pod, ops: &[Value]) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap();
    let p: json_patch::Patch = serde_json::from_value(Value::Array(ops.to_vec())).unwrap();
    json_patch::patch(&mut doc, &p).unwrap();
    serde_json::from_value(doc).unwrap()
}

#[test]
fn the_patch_writes_cpu_and_memory_only_and_records_the_template() {
    let p = new_pod(json!([
        {"name": "sidecar", "image": "x"},
        {"name": "app", "image": "x", "resources": {
            "requests": {"cpu": "500m", "memory": "1Gi", "ephemeral-storage": "1Gi"},
            "limits": {"memory": "2Gi"}}},
        {"name": "bare", "image": "x", "resources": {"limits": {"memory": "128Mi"}}}
    ]));
    let s = spec(
        json!({"resourcePolicy": {"containerPolicies": [{"containerName": "sidecar", "mode": "Off"}]}}),
    );
    let recs = [
        rec("app", json!({"cpu": "250m", "memory": "600Mi"}), json!({})),
        rec("bare", json!({"cpu": "100m", "memory": "128Mi"}), json!({})),
    ];
    let plan = sized(&p, &s, &recs);
    let source = tailor_updater::plan::admission::Source {
        verticalautoscaler: "w",
        generation: Some(3),
    };
    let ops = tailor_updater::plan::admission::patch(&p, &plan, &source);
    let out = apply(&p, &ops);
    let spec = out.spec.as_ref().unwrap();
    let res = |i: usize| spec.containers[i].resources.clone().unwrap_or_default();
    let q = |m: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
             k: &str| { m.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone()) };
    assert_eq!(spec.containers[0].resources, None, "mode Off: untouched");
    let app = res(1);
    assert_eq!(q(&app.requests, "cpu").as_deref(), Some("250m"));
    assert_eq!(q(&app.requests, "memory").as_deref(), Some("600Mi"));
    assert_eq!(
        q(&app.requests, "ephemeral-storage").as_deref(),
        Some("1Gi"),
        "other resources stay"
    );
    assert_eq!(
        q(&app.limits, "memory").as_deref(),
        Some("1200Mi"),
        "the limit keeps its ratio"
    );
    // A container with limits only gains requests.
    let bare = res(2);
    assert_eq!(q(&bare.requests, "cpu").as_deref(), Some("100m"));
    let note = &out.metadata.annotations.as_ref().unwrap()
        [tailor_updater::plan::admission::SIZED_ANNOTATION];
    let note: Value = serde_json::from_str(note).unwrap();
    assert_eq!(note["verticalAutoscaler"], "w");
    assert_eq!(note["generation"], 3);
    assert_eq!(note["original"]["app"]["requests"]["memory"], "1Gi");
    assert_eq!(note["original"]["app"]["limits"]["memory"], "2Gi");
    assert!(note["original"].get("sidecar").is_none(), "{note}");
    // Nothing to change: no patch at all.
    let again = sized(&out, &s, &recs);
    assert!(
        tailor_updater::plan::admission::patch(&out, &again, &source).is_empty(),
        "{again:?}"
    );
}

/// The startup boost: given at creation and recorded, left alone while on, taken back (without
/// `minChange`) once the pod has been Ready for its duration; under `Initial` that is the only
/// change made to a running pod.
#[test]
fn a_startup_boost_is_given_kept_while_on_then_taken_back() {
    let p = new_pod(json!([container(
        "app",
        json!({"cpu": "100m", "memory": "128Mi"}),
        json!({"memory": "256Mi"})
    )]));
    let policy = |mode: &str| {
        spec(
            json!({"updatePolicy": {"updateMode": mode, "minChange": {"cpu": 5.0}},
            "resourcePolicy": {"containerPolicies": [{"containerName": "app",
                "startupBoost": {"cpu": {"factor": 2.0, "duration": "60s"}}}]}}),
        )
    };
    let recs = [rec(
        "app",
        json!({"cpu": "250m", "memory": "200Mi"}),
        json!({}),
    )];
    let plan = sized(&p, &policy("InPlace"), &recs);
    assert_eq!(
        plan.changes[0].to.requests,
        amounts(Some(500), Some(200 * MI))
    );
    let source = tailor_updater::plan::admission::Source {
        verticalautoscaler: "w",
        generation: Some(1),
    };
    let created = apply(
        &p,
        &tailor_updater::plan::admission::patch(&p, &plan, &source),
    );
    let given = tailor_updater::plan::boost::given(&created);
    assert_eq!(given.len(), 1);
    assert_eq!(
        (given[0].boosted, given[0].target, given[0].duration),
        (500, 250, 60)
    );

    // Running, Ready since t=1000, with the recommendation's memory changed since.
    let mut running =
        pod(serde_json::to_value(&created.spec.as_ref().unwrap().containers).unwrap());
    running.metadata.annotations = created.metadata.annotations.clone();
    let ready =
        json!({"type": "Ready", "status": "True", "lastTransitionTime": "1970-01-01T00:16:40Z"});
    running.status.as_mut().unwrap().conditions =
        Some(vec![serde_json::from_value(ready).unwrap()]);
    let recs = [rec(
        "app",
        json!({"cpu": "250m", "memory": "300Mi"}),
        json!({}),
    )];
    let at = |now: i64, mode: &str| {
        tailor_updater::plan::plan_pod(&PodInput {
            pod: &running,
            spec: &policy(mode),
            recommendation: &recs,
            blocked: &BTreeSet::new(),
            approved: &[],
            now,
            unboost_only: mode == "Initial",
        })
    };
    // On: the CPU stays (the memory increase goes under InPlace).
    let on = at(1059, "InPlace");
    assert_eq!(on.changes[0].to.requests.cpu, Some(500), "{on:?}");
    assert!(
        on.notes.iter().any(|n| n.reason.contains("startup boost")),
        "{on:?}"
    );
    assert!(at(1059, "Initial").changes.is_empty());
    // Over: back to the target although minChange (500%) would keep it.
    let over = at(1060, "InPlace");
    assert_eq!(
        over.changes[0].to.requests,
        amounts(Some(250), Some(300 * MI))
    );
    // Initial: the CPU only.
    let initial = at(1060, "Initial");
    assert_eq!(
        initial.changes[0].to.requests,
        amounts(Some(250), Some(200 * MI))
    );
    assert!(!initial.changes[0].restarts);
}
