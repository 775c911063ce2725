//! The live memory guard, end to end: a real API server, the node simulator (which OOM-kills a
//! container whose usage passes its memory limit, as the kernel does) and a real Prometheus
//! scraping it every second as a kube-prometheus cluster's does. A container whose usage ramps
//! past its limit is raised live before the kill; the same ramp with the guard off is killed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tailor_crds::quantity::memory_bytes;

use common::{Env, container, restart_count, spec_value};

/// A StatefulSet `name` of one pod whose container `app` requests 256Mi with a 512Mi limit
/// and uses 100Mi at start, growing steadily to 550Mi over `grow` seconds (then staying: it passes 90% of the limit
/// at 0.8 x `grow` and the limit at 0.92 x `grow`), and
/// its VerticalAutoscaler with `spec`; the recommendation keeps the requests as they are.
async fn ramping(env: &Env, name: &str, grow: u32, spec: serde_json::Value) -> String {
    let usage = json!({"app": {"model": "jvm", "cpu": 0.1, "nonHeap": "100Mi", "heapMax": "450Mi",
                               "growSeconds": grow}});
    let annotations = json!({ (tailor_e2e::sim::usage::USAGE_ANNOTATION): usage.to_string() });
    let c = container(
        "app",
        json!({"cpu": "100m", "memory": "256Mi"}),
        json!({"memory": "512Mi"}),
    );
    let pods = env
        .workload_annotated(name, 1, json!([c]), annotations)
        .await;
    env.va(name, name, spec).await;
    env.recommend(
        name,
        json!([{"containerName": "app", "target": {"cpu": "100m", "memory": "256Mi"}}]),
    )
    .await;
    pods[0].clone()
}

fn limit(p: &Pod) -> i64 {
    memory_bytes(&k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        spec_value(p, "app", "limits", "memory").unwrap(),
    ))
    .unwrap()
}

fn oom_killed(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
        })
}

#[tokio::test]
async fn a_ramp_toward_the_limit_is_raised_live_before_the_kill_and_killed_without_the_guard() {
    let env = Env::start(1, "16", "64Gi", 0.3).await;
    let prom = env.prometheus().await;
    let updater = env.updater(
        "u1",
        &[
            "--prometheus-url",
            prom.url(),
            "--memory-guard-interval-seconds",
            "1",
        ],
    );
    updater.wait_ready().await;
    let guarded = ramping(&env, "guarded", 60, json!({})).await;
    let unguarded = ramping(
        &env,
        "unguarded",
        60,
        json!({"updatePolicy": {"memoryGuard": {"enabled": false}}}),
    )
    .await;

    // Without the guard the kernel (the simulator) kills the container once usage passes 512Mi.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(150);
    let p = loop {
        let p = env.pods().get(&unguarded).await.unwrap();
        if oom_killed(&p) {
            break p;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unguarded pod was not OOM-killed: {:?}",
            p.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    assert_eq!(limit(&p), 512 << 20, "nothing raised the unguarded limit");

    // With it the limit was raised live before that, and the container never restarted.
    let p = env.pods().get(&guarded).await.unwrap();
    assert!(
        limit(&p) > 550 << 20,
        "limit {} is not above the plateau",
        limit(&p)
    );
    assert_eq!(restart_count(&p, "app"), 0, "{:?}", p.status);
    assert!(!oom_killed(&p));
    let note = env.wait_event("Pod", &guarded, "MemoryGuardRaised").await;
    assert!(note.contains("raised live to"), "{note}");
    env.wait_event("VerticalAutoscaler", "guarded", "MemoryGuardRaised")
        .await;
    let state = env
        .wait_state("guarded", "a raise recorded", |s| {
            !s.memory_guard_raises.is_empty()
        })
        .await;
    let raise = &state.memory_guard_raises[0];
    assert_eq!(raise.container_name, "app");
    assert_eq!(raise.from.0, "512Mi");
    let usage = memory_bytes(&raise.usage).unwrap();
    assert!(
        usage >= (512 << 20) * 9 / 10,
        "raised at {usage} bytes, below 90% of the limit"
    );
    assert!(
        updater
            .metric("tailor_updater_memory_guard_raises_total{namespace=")
            .await
            >= 1.0
    );
    assert!(
        updater
            .metric("tailor_updater_memory_guard_scans_total{outcome=\"ok\"}")
            .await
            >= 1.0
    );

    // The guard never lowers anything: it stays raised after the ramp, and the unguarded pod
    // was never touched by it.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let p = env.pods().get(&guarded).await.unwrap();
    assert!(limit(&p) > 550 << 20);
    assert_eq!(restart_count(&p, "app"), 0);
    let raised_unguarded = env.state("unguarded").await.memory_guard_raises;
    assert!(raised_unguarded.is_empty(), "{raised_unguarded:?}");
}
