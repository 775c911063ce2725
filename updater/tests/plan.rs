//! The planner on pods and recommendations built in memory (it is pure).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod plan_support;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use plan_support::*;
use proptest::prelude::*;
use serde_json::{Value, json};
use tailor_crds::v1alpha1::{ContainerRecommendation, ResourceName};
use tailor_updater::plan::memory::Approved;
use tailor_updater::plan::resources::{ContainerResources, Qos, qos};
use tailor_updater::plan::{DeclineReason, PodPlan, Skip, resize_patch};

#[test]
fn cpu_moves_both_ways_beyond_min_change() {
    let p = pod(json!([container(
        "app",
        json!({"cpu": "500m", "memory": "256Mi"}),
        json!({})
    )]));
    let s = spec(json!({}));
    let up = plan(
        &p,
        &s,
        &[rec(
            "app",
            json!({"cpu": "1", "memory": "256Mi"}),
            json!({}),
        )],
    );
    assert_eq!(up.changes.len(), 1);
    assert_eq!(
        up.changes[0].to.requests,
        amounts(Some(1000), Some(256 * MI))
    );
    assert!(!up.restarts());
    let down = plan(
        &p,
        &s,
        &[rec(
            "app",
            json!({"cpu": "200m", "memory": "256Mi"}),
            json!({}),
        )],
    );
    assert_eq!(down.changes[0].to.requests.cpu, Some(200));
    // 4% away and inside the bounds: left alone, with the reason.
    let small = plan(
        &p,
        &s,
        &[rec(
            "app",
            json!({"cpu": "520m", "memory": "256Mi"}),
            json!({"lowerBound": {"cpu": "400m"}, "upperBound": {"cpu": "700m"}}),
        )],
    );
    assert!(!small.resizes());
    assert!(
        small.notes.iter().any(|n| n.reason.contains("minChange")),
        "{small:?}"
    );
    // 4% away but the request lies outside the bounds: resized.
    let outside = plan(
        &p,
        &s,
        &[rec(
            "app",
            json!({"cpu": "520m", "memory": "256Mi"}),
            json!({"lowerBound": {"cpu": "510m"}, "upperBound": {"cpu": "700m"}}),
        )],
    );
    assert_eq!(outside.changes[0].to.requests.cpu, Some(520));
}

#[test]
fn guaranteed_pods_keep_requests_equal_to_limits() {
    let p = pod(json!([container(
        "app",
        json!({"cpu": "1", "memory": "1Gi"}),
        json!({"cpu": "1", "memory": "1Gi"})
    )]));
    let plan = plan(
        &p,
        &spec(json!({})),
        &[rec("app", json!({"cpu": "2", "memory": "2Gi"}), json!({}))],
    );
    let to = plan.changes[0].to;
    assert_eq!(to.requests, amounts(Some(2000), Some(2048 * MI)));
    assert_eq!(to.limits, to.requests);
    assert_eq!(qos([&to]), Qos::Guaranteed);
}

#[test]
fn limits_keep_their_ratio_or_stay() {
    let p = pod(json!([container(
        "app",
        json!({"cpu": "100m", "memory": "100Mi"}),
        json!({"cpu": "200m", "memory": "300Mi"})
    )]));
    let r = [rec(
        "app",
        json!({"cpu": "300m", "memory": "200Mi"}),
        json!({}),
    )];
    let scaled = plan(&p, &spec(json!({})), &r);
    assert_eq!(
        scaled.changes[0].to.limits,
        amounts(Some(600), Some(600 * MI))
    );
    let only = plan(
        &p,
        &spec(json!({"resourcePolicy": {"containerPolicies": [
            {"containerName": "*", "controlledValues": "RequestsOnly"}]}})),
        &r,
    );
    let to = only.changes[0].to;
    assert_eq!(to.limits, amounts(Some(200), Some(300 * MI)));
    // The CPU request is capped at the limit, and the cap is noted.
    assert_eq!(to.requests, amounts(Some(200), Some(200 * MI)));
    assert!(
        only.declined
            .iter()
            .any(|d| d.reason == DeclineReason::RequestCappedAtLimit)
    );
    // A memory limit in proportion is rounded up to whole MiB.
    let p = pod(json!([container(
        "app",
        json!({"cpu": "250m", "memory": "384Mi"}),
        json!({"memory": "512Mi"})
    )]));
    let r = [rec(
        "app",
        json!({"cpu": "250m", "memory": "526Mi"}),
        json!({}),
    )];
    let to = plan(&p, &spec(json!({})), &r).changes[0].to;
    // 526Mi x 512/384 = 701.33Mi
    assert_eq!(to.limits, amounts(None, Some(702 * MI)));
}

#[test]
fn a_burstable_pod_never_becomes_guaranteed() {
    // RequestsOnly would raise both requests to their limits: the pod would turn Guaranteed.
    let p = pod(json!([container(
        "app",
        json!({"cpu": "100m", "memory": "100Mi"}),
        json!({"cpu": "200m", "memory": "200Mi"})
    )]));
    let plan = plan(
        &p,
        &spec(json!({"resourcePolicy": {"containerPolicies": [
            {"containerName": "*", "controlledValues": "RequestsOnly"}]}})),
        &[rec("app", json!({"cpu": "1", "memory": "1Gi"}), json!({}))],
    );
    assert_eq!(plan.skip, Some(Skip::QosChange));
    assert!(!plan.resizes());
}

#[test]
fn best_effort_terminating_and_busy_pods_are_skipped() {
    let s = spec(json!({}));
    let r = [rec("app", json!({"cpu": "1", "memory": "1Gi"}), json!({}))];
    let best_effort = pod(json!([{"name": "app", "image": "x"}]));
    assert_eq!(plan(&best_effort, &s, &r).skip, Some(Skip::BestEffort));
    let base = pod(json!([container("app", json!({"cpu": "100m"}), json!({}))]));
    let mut terminating = base.clone();
    terminating.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
    );
    assert_eq!(plan(&terminating, &s, &r).skip, Some(Skip::Terminating));
    let mut pending = base.clone();
    pending.status.as_mut().unwrap().phase = Some("Pending".into());
    assert_eq!(
        plan(&pending, &s, &r).skip,
        Some(Skip::NotRunning("Pending".into()))
    );
    let mut unsynced = base.clone();
    unsynced.metadata.generation = Some(2);
    assert_eq!(plan(&unsynced, &s, &r).skip, Some(Skip::NotSynced));
    let mut busy = base.clone();
    busy.status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(
            serde_json::from_value(json!({"type": "PodResizeInProgress", "status": "True"}))
                .unwrap(),
        );
    assert_eq!(plan(&busy, &s, &r).skip, Some(Skip::InProgress));
    // Deferred is not in progress: the planner compares with the spec, which already asks.
    let mut deferred = base;
    deferred
        .status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(
            serde_json::from_value(
                json!({"type": "PodResizePending", "status": "True", "reason": "Deferred"}),
            )
            .unwrap(),
        );
    assert!(plan(&deferred, &s, &r).skip.is_none());
}

#[test]
fn memory_decreases_are_held_for_approval_while_cpu_goes_live() {
    let p = pod(json!([container(
        "app",
        json!({"cpu": "1", "memory": "1Gi"}),
        json!({"cpu": "1", "memory": "1Gi"})
    )]));
    let s = spec(json!({}));
    let r = [rec(
        "app",
        json!({"cpu": "2", "memory": "512Mi"}),
        json!({}),
    )];
    let held = plan(&p, &s, &r);
    assert_eq!(held.held.len(), 1);
    assert_eq!((held.held[0].from, held.held[0].to), (1024 * MI, 512 * MI));
    assert_eq!(
        held.changes[0].to.requests,
        amounts(Some(2000), Some(1024 * MI))
    );
    assert_eq!(held.changes[0].to.limits, held.changes[0].to.requests);
    // Approved: the decrease joins the resize, under the approval's id.
    let approved = [Approved {
        container: "app".into(),
        from: 1024 * MI,
        to: 512 * MI,
        id: "a1".into(),
    }];
    let go = plan_with(&p, &s, &r, &BTreeSet::new(), &approved);
    assert!(go.held.is_empty());
    assert_eq!(go.changes[0].to.limits.memory, Some(512 * MI));
    assert_eq!(go.changes[0].approval.as_deref(), Some("a1"));
    // Never: memory stays.
    let never = plan(
        &p,
        &spec(json!({"updatePolicy": {"memoryDecrease": "Never"}})),
        &r,
    );
    assert!(never.held.is_empty());
    assert_eq!(never.changes[0].to.limits.memory, Some(1024 * MI));
}

#[test]
fn restart_container_decreases_need_the_restart_policy() {
    let mut c = container(
        "app",
        json!({"cpu": "1", "memory": "1Gi"}),
        json!({"cpu": "1", "memory": "1Gi"}),
    );
    let s = spec(json!({"updatePolicy": {"memoryDecrease": "RestartContainer"}}));
    let r = [rec(
        "app",
        json!({"cpu": "1", "memory": "512Mi"}),
        json!({}),
    )];
    let without = plan(&pod(json!([c.clone()])), &s, &r);
    assert!(!without.resizes());
    assert!(without.declined.iter().any(|d| {
        d.reason == DeclineReason::ResizePolicyNotRequired && d.message.contains("resizePolicy")
    }));
    c["resizePolicy"] = json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
    let with = plan(&pod(json!([c])), &s, &r);
    assert!(with.restarts());
    assert_eq!(with.changes[0].to.limits.memory, Some(512 * MI));
}

#[test]
fn memory_never_goes_below_the_floor() {
    // maxAllowed pulls the target under the floor: the decrease stops at the floor.
    let p = pod(json!([container(
        "app",
        json!({"memory": "4Gi"}),
        json!({})
    )]));
    let s = spec(json!({"resourcePolicy": {"containerPolicies": [
        {"containerName": "app", "maxAllowed": {"memory": "1Gi"}}]}}));
    let r = [rec(
        "app",
        json!({"memory": "1Gi"}),
        json!({"memoryFloor": {"value": "3Gi", "reason": "HeapHint"}}),
    )];
    let plan = plan(&p, &s, &r);
    assert_eq!(plan.changes[0].to.requests.memory, Some(3072 * MI));
    // A pod under its floor is raised even when the change is small.
    let p = pod(json!([container(
        "app",
        json!({"memory": "2900Mi"}),
        json!({})
    )]));
    let r = [rec(
        "app",
        json!({"memory": "3000Mi"}),
        json!({"memoryFloor": {"value": "3000Mi", "reason": "Peak"}}),
    )];
    let up = super_plan(&p, &r);
    assert_eq!(up.changes[0].to.requests.memory, Some(3000 * MI));
}

fn super_plan(p: &Pod, r: &[ContainerRecommendation]) -> PodPlan {
    plan(p, &spec(json!({})), r)
}

#[test]
fn policy_mode_controlled_resources_and_hpa_are_respected() {
    let p = pod(json!([
        container("app", json!({"cpu": "100m", "memory": "100Mi"}), json!({})),
        container("side", json!({"cpu": "100m", "memory": "100Mi"}), json!({}))
    ]));
    let r = [
        rec("app", json!({"cpu": "1", "memory": "1Gi"}), json!({})),
        rec("side", json!({"cpu": "1", "memory": "1Gi"}), json!({})),
    ];
    let s = spec(json!({"resourcePolicy": {"containerPolicies": [
        {"containerName": "side", "mode": "Off"},
        {"containerName": "*", "controlledResources": ["cpu"]}]}}));
    let plan1 = plan(&p, &s, &r);
    assert_eq!(plan1.changes.len(), 1, "{plan1:?}");
    assert_eq!(plan1.changes[0].container, "app");
    assert_eq!(
        plan1.changes[0].to.requests,
        amounts(Some(1000), Some(100 * MI))
    );
    let blocked = BTreeSet::from([ResourceName::Cpu]);
    let plan2 = plan_with(&p, &spec(json!({})), &r, &blocked, &[]);
    assert!(plan2.changes.iter().all(|c| c.to.requests.cpu == Some(100)));
    assert!(
        plan2
            .changes
            .iter()
            .all(|c| c.to.requests.memory == Some(1024 * MI))
    );
    assert!(
        plan2
            .declined
            .iter()
            .any(|d| d.reason == DeclineReason::HpaConflict && d.message.contains("HPA"))
    );
}

#[test]
fn the_patch_carries_every_changed_container_and_the_precondition() {
    let p = pod(json!([container(
        "app",
        json!({"cpu": "100m"}),
        json!({"cpu": "200m"})
    )]));
    let plan = plan(
        &p,
        &spec(json!({})),
        &[rec("app", json!({"cpu": "250m"}), json!({}))],
    );
    assert_eq!(
        resize_patch(&plan, Some("42")),
        json!({"metadata": {"resourceVersion": "42"}, "spec": {"containers": [
            {"name": "app", "resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "500m"}}}]}})
    );
}

fn quantity_cpu(m: i64) -> String {
    format!("{m}m")
}

/// Amounts from small to the top of the range (`i64::MAX`).
fn any_amount() -> impl Strategy<Value = i64> {
    prop_oneof![1i64..10_000, 1i64..(1 << 40), 1i64..=i64::MAX]
}

/// 0: no limit; 1: limit == request; r: limit = request x r (saturating).
fn with_limit(req: i64, ratio: u32) -> Option<i64> {
    (ratio > 0).then(|| req.saturating_mul(i64::from(ratio)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]
    /// Whatever the pod and the recommendation: nothing overflows, the QoS class stays, limits
    /// never fall below requests, a derived limit stays under its cap, memory never falls below
    /// the floor, and limits are never removed.
    #[test]
    fn invariants_hold(
        cpu_req in any_amount(), cpu_ratio in 0u32..=1000, mem_req in any_amount(),
        mem_ratio in 0u32..=1000, cpu_t in any_amount(), mem_t in any_amount(),
        floor in prop::option::of(any_amount()),
        max_allowed in prop::option::of((any_amount(), any_amount())),
        decrease in 0u8..3, only in any::<bool>(),
    ) {
        let (cl, ml) = (with_limit(cpu_req, cpu_ratio), with_limit(mem_req, mem_ratio));
        let mut limits = serde_json::Map::new();
        if let Some(c) = cl { limits.insert("cpu".into(), json!(quantity_cpu(c))); }
        if let Some(m) = ml { limits.insert("memory".into(), json!(m.to_string())); }
        let p = pod(json!([container("app", json!({"cpu": quantity_cpu(cpu_req), "memory": mem_req.to_string()}), Value::Object(limits))]));
        let policy = ["Never", "ManualApproval", "RestartContainer"][decrease as usize];
        let values = if only { "RequestsOnly" } else { "RequestsAndLimits" };
        let mut cp = json!({"containerName": "*", "controlledValues": values});
        if let Some((c, m)) = max_allowed {
            cp["maxAllowed"] = json!({"cpu": quantity_cpu(c), "memory": m.to_string()});
        }
        let s = spec(json!({"updatePolicy": {"memoryDecrease": policy},
                            "resourcePolicy": {"containerPolicies": [cp]}}));
        let extra = floor.map_or(json!({}), |f| json!({"memoryFloor": {"value": f.to_string(), "reason": "Peak"}}));
        let r = [rec("app", json!({"cpu": quantity_cpu(cpu_t), "memory": mem_t.to_string()}), extra)];
        let plan = plan(&p, &s, &r);
        let before = ContainerResources {
            requests: amounts(Some(cpu_req), Some(mem_req)),
            limits: amounts(cl, ml),
        };
        if plan.skip == Some(Skip::QosChange) {
            prop_assert!(plan.changes.is_empty());
        }
        for c in &plan.changes {
            prop_assert_eq!(qos([&c.to]), qos([&before]));
            for res in [ResourceName::Cpu, ResourceName::Memory] {
                prop_assert_eq!(c.to.limits.get(res).is_some(), before.limits.get(res).is_some());
                let (Some(l), Some(q)) = (c.to.limits.get(res), c.to.requests.get(res)) else { continue };
                prop_assert!(l >= q, "limit {} < request {}", l, q);
                // The cap: within max(current limit, request x 10) and, with maxAllowed,
                // within max(current limit, maxAllowed, request).
                let old = before.limits.get(res).unwrap_or(0);
                prop_assert!(l <= old.max(q.saturating_mul(10)), "{:?} limit {} over 10 x {} (was {})", res, l, q, old);
                if let Some((mc, mm)) = max_allowed {
                    let m = match res { ResourceName::Cpu => mc, ResourceName::Memory => mm };
                    prop_assert!(l <= old.max(m).max(q), "{:?} limit {} over maxAllowed {} (was {})", res, l, m, old);
                }
            }
            let (old, new) = (before.requests.memory.unwrap(), c.to.requests.memory.unwrap());
            if new < old {
                prop_assert!(new >= floor.unwrap_or(0), "memory {} below the floor", new);
                prop_assert!(decrease != 0, "Never lowered memory");
            }
            if let (Some(old), Some(new)) = (before.limits.memory, c.to.limits.memory) {
                // No approval and no RestartContainer policy here: a limit is never cut.
                prop_assert!(new >= old, "memory limit cut from {} to {}", old, new);
            }
        }
    }
}

#[test]
fn a_wide_ratio_does_not_run_away() {
    // request 1Mi / limit 1Gi to a 512Mi request: in proportion that is a 512Gi limit.
    let p = pod(json!([container(
        "app",
        json!({"cpu": "1m", "memory": "1Mi"}),
        json!({"cpu": "2", "memory": "1Gi"})
    )]));
    let r = [rec(
        "app",
        json!({"cpu": "500m", "memory": "512Mi"}),
        json!({}),
    )];
    let to = plan(&p, &spec(json!({})), &r).changes[0].to;
    assert_eq!(to.requests, amounts(Some(500), Some(512 * MI)));
    // Capped at 10 x the request; 1m / 2 cores (x2000) to 500m would be 1000 cores.
    assert_eq!(to.limits, amounts(Some(5000), Some(5 * 1024 * MI)));
    assert_eq!(qos([&to]), Qos::Burstable);
    // maxAllowed caps it lower, never under the new request.
    let s = spec(json!({"resourcePolicy": {"containerPolicies": [
        {"containerName": "*", "maxAllowed": {"cpu": "800m", "memory": "2Gi"}}]}}));
    let to = plan(&p, &s, &r).changes[0].to;
    assert_eq!(to.limits, amounts(Some(2000), Some(2048 * MI)));
    // A current limit above maxAllowed is kept, not cut.
    let s = spec(json!({"resourcePolicy": {"containerPolicies": [
        {"containerName": "*", "maxAllowed": {"cpu": "600m", "memory": "600Mi"}}]}}));
    let to = plan(&p, &s, &r).changes[0].to;
    assert_eq!(to.limits, amounts(Some(2000), Some(1024 * MI)));
}

#[test]
fn limits_at_the_top_of_the_range_do_not_overflow() {
    // A limit near i64::MAX that is not a whole MiB: rounding the proportion up would overflow.
    let top = i64::MAX;
    let p = pod(json!([container(
        "app",
        json!({"cpu": "1m", "memory": "1"}),
        json!({"cpu": quantity_cpu(top), "memory": (top - 1).to_string()})
    )]));
    let r = [rec("app", json!({"cpu": "2m", "memory": "2"}), json!({}))];
    let to = plan(&p, &spec(json!({})), &r).changes[0].to;
    assert_eq!(to.requests, amounts(Some(2), Some(2)));
    assert_eq!(to.limits, amounts(Some(top), Some(top - 1)));
}

#[test]
fn resize_state_names_the_kubelet_condition_and_its_time() {
    use tailor_updater::plan::resources::ResizeStatus;
    let with = |conditions: Value| -> Pod {
        let mut p = pod(json!([container("app", json!({"cpu": "1"}), json!({}))]));
        let mut v = serde_json::to_value(&p).unwrap();
        v["status"]["conditions"] = conditions;
        p = serde_json::from_value(v).unwrap();
        p
    };
    let at = "2026-11-28T10:00:00Z";
    let epoch = 1_795_860_000;
    let cases = [
        (json!([]), None),
        (
            json!([{"type": "PodResizePending", "status": "True", "reason": "Infeasible", "lastTransitionTime": at}]),
            Some(("infeasible", Some(epoch))),
        ),
        (
            json!([{"type": "PodResizePending", "status": "True", "reason": "Deferred", "lastTransitionTime": at}]),
            Some(("deferred", Some(epoch))),
        ),
        (
            json!([{"type": "PodResizeInProgress", "status": "True", "reason": "Error", "message": "oom"}]),
            Some(("error", None)),
        ),
        (
            json!([{"type": "PodResizeInProgress", "status": "True", "lastTransitionTime": at}]),
            Some(("in_progress", Some(epoch))),
        ),
        (
            json!([{"type": "PodResizeInProgress", "status": "False", "lastTransitionTime": at}]),
            None,
        ),
    ];
    for (conditions, want) in cases {
        let p = with(conditions.clone());
        assert_eq!(ResizeStatus::of(&p).state(), want, "{conditions}");
    }
}
