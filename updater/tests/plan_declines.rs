//! Every change the planner does not make comes out of it as a decline, with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod plan_support;

use std::collections::BTreeSet;

use plan_support::*;
use serde_json::json;
use tailor_crds::v1alpha1::ResourceName;
use tailor_updater::plan::{DeclineReason, Declined, PodPlan, Skip};

/// The declines of `plan` as (container, resource, reason).
fn reasons(plan: &PodPlan) -> Vec<(&str, Option<ResourceName>, DeclineReason)> {
    plan.declined
        .iter()
        .map(|d: &Declined| {
            assert!(!d.message.is_empty(), "{d:?}");
            (d.container.as_str(), d.resource, d.reason)
        })
        .collect()
}

fn burstable(name: &str) -> serde_json::Value {
    container(
        name,
        json!({"cpu": "100m", "memory": "100Mi"}),
        json!({"cpu": "200m", "memory": "200Mi"}),
    )
}

fn guaranteed(name: &str) -> serde_json::Value {
    container(
        name,
        json!({"cpu": "1", "memory": "1Gi"}),
        json!({"cpu": "1", "memory": "1Gi"}),
    )
}

#[test]
fn an_unreadable_quantity_in_the_pod_names_the_container_and_resource() {
    let p = pod(json!([
        burstable("app"),
        container("side", json!({"cpu": "100m", "memory": "lots"}), json!({}))
    ]));
    let plan = plan(
        &p,
        &spec(json!({})),
        &[rec("app", json!({"cpu": "1"}), json!({}))],
    );
    assert!(matches!(&plan.skip, Some(Skip::Invalid(m)) if m.contains("lots")));
    assert_eq!(
        reasons(&plan),
        [(
            "side",
            Some(ResourceName::Memory),
            DeclineReason::InvalidPodResources
        )]
    );
}

#[test]
fn a_best_effort_pod_is_never_given_resources() {
    let p = pod(json!([{"name": "app", "image": "x"}]));
    let plan = plan(
        &p,
        &spec(json!({})),
        &[rec("app", json!({"cpu": "1", "memory": "1Gi"}), json!({}))],
    );
    assert!(!plan.resizes());
    assert_eq!(reasons(&plan), [("app", None, DeclineReason::BestEffort)]);
}

#[test]
fn a_change_of_qos_class_is_declined_for_the_pod() {
    // RequestsOnly raises both requests to their limits: the pod would turn Guaranteed.
    let p = pod(json!([burstable("app")]));
    let plan = plan(
        &p,
        &spec(json!({"resourcePolicy": {"containerPolicies": [
            {"containerName": "*", "controlledValues": "RequestsOnly"}]}})),
        &[rec("app", json!({"cpu": "1", "memory": "1Gi"}), json!({}))],
    );
    assert_eq!(plan.skip, Some(Skip::QosChange));
    assert!(!plan.resizes());
    let r = reasons(&plan);
    assert!(
        r.contains(&("app", None, DeclineReason::QosChange)),
        "{r:?}"
    );
}

#[test]
fn missing_recommendations_and_unknown_containers_are_declined() {
    let p = pod(json!([
        burstable("app"),
        burstable("side"),
        burstable("off")
    ]));
    let s = spec(json!({"resourcePolicy": {"containerPolicies": [
        {"containerName": "off", "mode": "Off"},
        {"containerName": "ghost", "mode": "Off"},
        {"containerName": "*"}]}}));
    let plan = plan(
        &p,
        &s,
        &[
            rec("app", json!({"cpu": "150m", "memory": "150Mi"}), json!({})),
            rec("gone", json!({"cpu": "1"}), json!({})),
        ],
    );
    // app is still resized; `off` is off by policy, which is no decline.
    assert_eq!(plan.changes.len(), 1);
    assert_eq!(plan.changes[0].container, "app");
    assert_eq!(
        reasons(&plan),
        [
            ("side", None, DeclineReason::NoRecommendation),
            (
                "gone",
                None,
                DeclineReason::RecommendationForMissingContainer
            ),
            ("ghost", None, DeclineReason::PolicyForMissingContainer),
        ]
    );
}

#[test]
fn an_unreadable_or_missing_target_is_declined_per_resource() {
    let p = pod(json!([burstable("app")]));
    let bad = plan(
        &p,
        &spec(json!({})),
        &[rec(
            "app",
            json!({"cpu": "a lot", "memory": "150Mi"}),
            json!({}),
        )],
    );
    assert_eq!(
        reasons(&bad),
        [(
            "app",
            Some(ResourceName::Cpu),
            DeclineReason::InvalidRecommendation
        )]
    );
    assert_eq!(bad.changes[0].to.requests.memory, Some(150 * MI));
    let bad_policy = plan(
        &p,
        &spec(json!({"resourcePolicy": {"containerPolicies": [
            {"containerName": "*", "maxAllowed": {"memory": "huge"}}]}})),
        &[rec(
            "app",
            json!({"cpu": "150m", "memory": "150Mi"}),
            json!({}),
        )],
    );
    assert_eq!(
        reasons(&bad_policy),
        [(
            "app",
            Some(ResourceName::Memory),
            DeclineReason::InvalidRecommendation
        )]
    );
    let missing = plan(
        &p,
        &spec(json!({})),
        &[rec("app", json!({"cpu": "150m"}), json!({}))],
    );
    assert_eq!(
        reasons(&missing),
        [(
            "app",
            Some(ResourceName::Memory),
            DeclineReason::MissingTarget
        )]
    );
}

#[test]
fn an_hpa_on_a_resource_is_declined() {
    let p = pod(json!([burstable("app")]));
    let plan = plan_with(
        &p,
        &spec(json!({})),
        &[rec(
            "app",
            json!({"cpu": "1", "memory": "150Mi"}),
            json!({}),
        )],
        &BTreeSet::from([ResourceName::Cpu]),
        &[],
    );
    assert_eq!(
        reasons(&plan),
        [("app", Some(ResourceName::Cpu), DeclineReason::HpaConflict)]
    );
}

#[test]
fn requests_only_declines_what_it_cannot_do() {
    let only = |extra: serde_json::Value| {
        let mut s = json!({"resourcePolicy": {"containerPolicies": [
            {"containerName": "*", "controlledValues": "RequestsOnly"}]}});
        merge(&mut s, extra);
        spec(s)
    };
    // Guaranteed: requests cannot move without limits.
    let g = plan(
        &pod(json!([guaranteed("app")])),
        &only(json!({})),
        &[rec("app", json!({"cpu": "2", "memory": "2Gi"}), json!({}))],
    );
    assert!(!g.resizes());
    assert_eq!(
        reasons(&g),
        [
            (
                "app",
                Some(ResourceName::Cpu),
                DeclineReason::GuaranteedRequestsOnly
            ),
            (
                "app",
                Some(ResourceName::Memory),
                DeclineReason::GuaranteedRequestsOnly
            ),
        ]
    );
    // Burstable: the CPU request stops at the limit; the memory limit is under the floor.
    let p = pod(json!([container(
        "app",
        json!({"cpu": "100m", "memory": "100Mi"}),
        json!({"cpu": "200m", "memory": "200Mi"})
    )]));
    let b = plan(
        &p,
        &only(json!({})),
        &[rec(
            "app",
            json!({"cpu": "150m", "memory": "300Mi"}),
            json!({"memoryFloor": {"value": "300Mi", "reason": "Peak"}}),
        )],
    );
    assert_eq!(
        reasons(&b),
        [(
            "app",
            Some(ResourceName::Memory),
            DeclineReason::LimitBelowFloor
        )]
    );
    assert_eq!(b.changes[0].to.requests, amounts(Some(150), Some(200 * MI)));
    assert_eq!(b.changes[0].to.limits, amounts(Some(200), Some(200 * MI)));
    let c = plan(
        &p,
        &only(json!({})),
        &[rec(
            "app",
            json!({"cpu": "300m", "memory": "150Mi"}),
            json!({}),
        )],
    );
    assert_eq!(
        reasons(&c),
        [(
            "app",
            Some(ResourceName::Cpu),
            DeclineReason::RequestCappedAtLimit
        )]
    );
}

#[test]
fn memory_decreases_that_may_not_go_are_declined() {
    let r = [rec(
        "app",
        json!({"cpu": "1", "memory": "512Mi"}),
        json!({}),
    )];
    let never = plan(
        &pod(json!([guaranteed("app")])),
        &spec(json!({"updatePolicy": {"memoryDecrease": "Never"}})),
        &r,
    );
    assert_eq!(
        reasons(&never),
        [(
            "app",
            Some(ResourceName::Memory),
            DeclineReason::MemoryDecreaseNever
        )]
    );
    let restart = plan(
        &pod(json!([guaranteed("app")])),
        &spec(json!({"updatePolicy": {"memoryDecrease": "RestartContainer"}})),
        &r,
    );
    assert!(!restart.resizes());
    assert_eq!(
        reasons(&restart),
        [(
            "app",
            Some(ResourceName::Memory),
            DeclineReason::ResizePolicyNotRequired
        )]
    );
    // Held for approval is not a decline: it is in `held`.
    let held = plan(&pod(json!([guaranteed("app")])), &spec(json!({})), &r);
    assert_eq!(held.held.len(), 1);
    assert!(held.declined.is_empty(), "{:?}", held.declined);
}

#[test]
fn nothing_to_do_is_not_a_decline() {
    let p = pod(json!([burstable("app")]));
    // At the target, and within minChange.
    let plan = plan(
        &p,
        &spec(json!({})),
        &[rec(
            "app",
            json!({"cpu": "100m", "memory": "104Mi"}),
            json!({}),
        )],
    );
    assert!(!plan.resizes());
    assert!(plan.declined.is_empty(), "{:?}", plan.declined);
    assert_eq!(plan.notes.len(), 2);
}

#[test]
fn the_docs_list_every_decline_reason() {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/updater.md"),
    )
    .unwrap();
    for r in DeclineReason::ALL {
        assert!(
            docs.contains(&format!("`{}`", r.as_str())),
            "docs/updater.md does not list {r}"
        );
    }
}
