//! The live memory guard's rule (`plan/memory_guard.rs`): pure, pods built in memory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod plan_support;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tailor_updater::plan::memory_guard::{GuardDecline, GuardInput, GuardPlan, Raise, plan};

use plan_support::{MI, container, pod, spec};

const NOW: i64 = 1_800_000_000;

fn burstable(limit: &str) -> Pod {
    pod(json!([container(
        "app",
        json!({"cpu": "100m", "memory": "256Mi"}),
        json!({"memory": limit})
    )]))
}

fn guaranteed(memory: &str) -> Pod {
    let both = json!({"cpu": "500m", "memory": memory});
    pod(json!([container("app", both.clone(), both)]))
}

fn run(
    p: &Pod,
    extra: Value,
    usage_mib: f64,
    node_free: Option<i64>,
    last: Option<i64>,
) -> GuardPlan {
    run_stalled(p, extra, usage_mib, 0.0, (node_free, last))
}

fn run_stalled(
    p: &Pod,
    extra: Value,
    usage_mib: f64,
    stall: f64,
    (node_free, last): (Option<i64>, Option<i64>),
) -> GuardPlan {
    let s = spec(extra);
    let sets: BTreeMap<String, f64> = [("app".to_owned(), usage_mib * MI as f64)].into();
    let stalls: BTreeMap<String, f64> = [("app".to_owned(), stall)].into();
    plan(&GuardInput {
        pod: p,
        spec: &s,
        working_sets: &sets,
        stalls: &stalls,
        last_raise: last,
        node_free,
        now: NOW,
    })
}

fn limit_to(g: &GuardPlan) -> Option<i64> {
    g.plan.changes.first().and_then(|c| c.to.limits.memory)
}

fn request_to(g: &GuardPlan) -> Option<i64> {
    g.plan.changes.first().and_then(|c| c.to.requests.memory)
}

#[test]
fn below_the_threshold_nothing_happens() {
    let g = run(&burstable("512Mi"), json!({}), 460.0, None, None);
    assert!(
        g.plan.guard.is_empty() && g.plan.changes.is_empty(),
        "{g:?}"
    );
}

#[test]
fn at_the_threshold_the_limit_rises_to_usage_plus_step_and_the_request_stays_without_node_room() {
    // 470Mi of 512Mi is above 0.9: the limit goes to 470 x 1.5 = 705Mi.
    let g = run(&burstable("512Mi"), json!({}), 470.0, None, None);
    assert_eq!(
        g.plan.guard,
        vec![Raise {
            container: "app".into(),
            usage: 470 * MI,
            from: 512 * MI,
            to: 705 * MI
        }]
    );
    assert_eq!(limit_to(&g), Some(705 * MI));
    assert_eq!(
        request_to(&g),
        Some(256 * MI),
        "the request needs node room it is not known to have"
    );
    assert!(!g.plan.restarts());
}

#[test]
fn a_container_stalled_on_memory_is_hot_below_the_threshold() {
    // 300Mi of 512Mi, but every task waited for memory 20% of the time: raised as if at the
    // threshold (0.9 x 512 x 1.5 = 691.2 -> 692Mi).
    let g = run_stalled(&burstable("512Mi"), json!({}), 300.0, 0.2, (None, None));
    assert_eq!(limit_to(&g), Some(692 * MI));
    assert_eq!(g.plan.guard[0].usage, 300 * MI);
    // A little stall, or a stall far below the limit (node pressure, not the limit's): nothing.
    let little = run_stalled(&burstable("512Mi"), json!({}), 300.0, 0.05, (None, None));
    assert!(little.plan.changes.is_empty());
    let far = run_stalled(&burstable("512Mi"), json!({}), 200.0, 0.5, (None, None));
    assert!(far.plan.changes.is_empty());
}

#[test]
fn a_reading_above_the_limit_raises_no_further_than_the_limit_would() {
    // The kernel keeps a working set at or below its limit: 1e18 bytes is garbage, read as
    // the limit itself (512 x 1.5 = 768Mi), not a limit of an exabyte.
    let g = run(&burstable("512Mi"), json!({}), 1e18 / MI as f64, None, None);
    assert_eq!(limit_to(&g), Some(768 * MI));
    assert_eq!(g.plan.guard[0].usage, 512 * MI);
}

#[test]
fn with_room_on_the_node_the_request_follows_in_proportion() {
    let g = run(&burstable("512Mi"), json!({}), 470.0, Some(4096 * MI), None);
    assert_eq!(limit_to(&g), Some(705 * MI));
    assert_eq!(request_to(&g), Some(352 * MI + MI / 2));
    // Too little room for the request: the limit alone rises.
    let g = run(&burstable("512Mi"), json!({}), 470.0, Some(10 * MI), None);
    assert_eq!(
        (limit_to(&g), request_to(&g)),
        (Some(705 * MI), Some(256 * MI))
    );
}

#[test]
fn requests_only_raises_the_limit_alone() {
    let extra = json!({"resourcePolicy": {"containerPolicies": [{"containerName": "app", "controlledValues": "RequestsOnly"}]}});
    let g = run(&burstable("512Mi"), extra, 470.0, Some(4096 * MI), None);
    assert_eq!(
        (limit_to(&g), request_to(&g)),
        (Some(705 * MI), Some(256 * MI))
    );
}

#[test]
fn guaranteed_keeps_its_class_and_is_raised_as_far_as_the_node_has_room() {
    let g = run(
        &guaranteed("512Mi"),
        json!({}),
        470.0,
        Some(4096 * MI),
        None,
    );
    assert_eq!(
        (limit_to(&g), request_to(&g)),
        (Some(705 * MI), Some(705 * MI))
    );
    let g = run(&guaranteed("512Mi"), json!({}), 470.0, Some(32 * MI), None);
    assert_eq!(
        (limit_to(&g), request_to(&g)),
        (Some(544 * MI), Some(544 * MI))
    );
    let g = run(&guaranteed("512Mi"), json!({}), 470.0, Some(0), None);
    assert!(g.plan.changes.is_empty());
    assert_eq!(g.declined[0].1, GuardDecline::NoRoom);
}

#[test]
fn max_allowed_caps_the_raise_and_at_the_cap_it_is_declined() {
    // maxAllowed 300Mi of request: the limit a 300Mi request gets is 512 x 300/256 = 600Mi.
    let capped = |m: &str| json!({"resourcePolicy": {"containerPolicies": [{"containerName": "app", "maxAllowed": {"memory": m}}]}});
    let g = run(&burstable("512Mi"), capped("270Mi"), 470.0, None, None);
    assert_eq!(limit_to(&g), Some(540 * MI));
    let g = run(&burstable("512Mi"), capped("256Mi"), 470.0, None, None);
    assert!(g.plan.changes.is_empty());
    assert_eq!(g.declined[0].1, GuardDecline::AtMaxAllowed);
    assert!(g.declined[0].2.contains("maxAllowed"), "{:?}", g.declined);
}

#[test]
fn a_restarting_container_is_declined_unless_restarts_are_allowed() {
    let mut c = container(
        "app",
        json!({"memory": "256Mi"}),
        json!({"memory": "512Mi"}),
    );
    c["resizePolicy"] = json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
    let p = pod(json!([c]));
    let g = run(&p, json!({}), 470.0, None, None);
    assert!(g.plan.changes.is_empty());
    assert_eq!(g.declined[0].1, GuardDecline::NeedsRestart);
    let g = run(
        &p,
        json!({"updatePolicy": {"memoryGuard": {"allowRestart": true}}}),
        470.0,
        None,
        None,
    );
    assert_eq!(limit_to(&g), Some(705 * MI));
    assert!(g.plan.restarts());
}

#[test]
fn off_disabled_or_uncontrolled_memory_and_no_limit_are_left_alone() {
    let cases = [
        json!({"updatePolicy": {"memoryGuard": {"enabled": false}}}),
        json!({"resourcePolicy": {"containerPolicies": [{"containerName": "app", "mode": "Off"}]}}),
        json!({"resourcePolicy": {"containerPolicies": [{"containerName": "*", "controlledResources": ["cpu"]}]}}),
    ];
    for extra in cases {
        let g = run(&burstable("512Mi"), extra.clone(), 500.0, None, None);
        assert!(
            g.plan.changes.is_empty() && g.declined.is_empty(),
            "{extra}: {g:?}"
        );
    }
    let unlimited = pod(json!([container(
        "app",
        json!({"memory": "256Mi"}),
        json!({})
    )]));
    assert!(
        run(&unlimited, json!({}), 5000.0, None, None)
            .plan
            .changes
            .is_empty()
    );
}

#[test]
fn the_minimum_interval_and_a_resize_under_way_wait() {
    let p = burstable("512Mi");
    assert!(
        run(&p, json!({}), 470.0, None, Some(NOW - 30))
            .plan
            .changes
            .is_empty()
    );
    assert!(
        !run(&p, json!({}), 470.0, None, Some(NOW - 60))
            .plan
            .changes
            .is_empty()
    );
    let mut busy = p.clone();
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
    assert!(
        run(&busy, json!({}), 470.0, None, None)
            .plan
            .changes
            .is_empty()
    );
}

#[test]
fn the_guard_never_lowers_anything() {
    // Usage far above the limit, a tiny step, any threshold: every raise is at least the limit,
    // and requests never fall.
    for (usage, threshold, step) in [(470.0, 0.9, 0.05), (2000.0, 0.5, 0.05), (490.0, 0.95, 0.05)] {
        let extra =
            json!({"updatePolicy": {"memoryGuard": {"threshold": threshold, "step": step}}});
        for node_free in [None, Some(0), Some(64 * MI)] {
            for p in [burstable("512Mi"), guaranteed("512Mi")] {
                let g = run(&p, extra.clone(), usage, node_free, None);
                for c in &g.plan.changes {
                    assert!(c.to.limits.memory >= c.from.limits.memory, "{c:?}");
                    assert!(c.to.requests.memory >= c.from.requests.memory, "{c:?}");
                    assert_eq!(c.to.requests.cpu, c.from.requests.cpu);
                    assert_eq!(c.to.limits.cpu, c.from.limits.cpu);
                }
            }
        }
    }
}
