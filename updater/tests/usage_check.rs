//! A memory decrease that restarts a container never goes below what the container uses now:
//! `tailor-updater` reads the working set from a real Prometheus scraping the node simulator
//! right before the patch, and holds the cut (Warning `MemoryDecreaseHeld`) while usage is
//! above it or unknown.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

use common::{Env, applied, container, restart_count};

fn untouched(p: &Pod) {
    assert!(
        applied(p, "app", "limits", "memory", "512Mi"),
        "{:?}",
        p.spec
    );
    assert_eq!(restart_count(p, "app"), 0);
}

#[tokio::test]
async fn a_restart_cut_waits_until_the_container_uses_less_than_the_new_limit() {
    let env = Env::start(1, "16", "64Gi", 0.3).await;
    let prom = env.prometheus().await;
    let pod = env.restarting_workload("tight", "512Mi", "300Mi").await;
    let updater = env.updater(
        "u1",
        &[
            "--prometheus-url",
            prom.url(),
            "--usage-window-seconds",
            "5",
        ],
    );
    updater.wait_ready().await;
    env.wait_scraped(&prom, &pod).await;
    // A recommendation below what the process uses now (as a stale one can be).
    env.recommend(
        "tight",
        json!([{"containerName": "app", "target": {"cpu": "250m", "memory": "256Mi"}}]),
    )
    .await;
    let note = env
        .wait_event("VerticalAutoscaler", "tight", "MemoryDecreaseHeld")
        .await;
    assert!(
        note.contains("container app uses 300Mi now, more than its new memory 256Mi"),
        "{note}"
    );
    env.wait_event("Pod", &pod, "MemoryDecreaseHeld").await;
    untouched(&env.pods().get(&pod).await.unwrap());
    assert!(
        updater
            .metric(
                "tailor_updater_resizes_total{outcome=\"held_below_usage\",resource=\"memory\"}"
            )
            .await
            >= 1.0,
        "{}",
        updater.metrics().await
    );

    // Usage falls below the cut: the next try restarts the container into it.
    env.set_usage(&pod, "200Mi").await;
    let p = env
        .wait_pod(&pod, "restarted into 256Mi", |p| {
            applied(p, "app", "limits", "memory", "256Mi")
        })
        .await;
    assert_eq!(restart_count(&p, "app"), 1);
}

#[tokio::test]
async fn a_restart_cut_is_held_while_usage_cannot_be_read() {
    let env = Env::start(1, "16", "64Gi", 0.3).await;
    let pod = env.restarting_workload("blind", "512Mi", "100Mi").await;
    // A live CPU change elsewhere still goes: only restart cuts need usage.
    let live = env
        .workload(
            "live",
            1,
            json!([container(
                "app",
                json!({"cpu": "250m", "memory": "256Mi"}),
                json!({"memory": "256Mi"})
            )]),
        )
        .await;
    env.va("live", "live", json!({})).await;
    // Prometheus is down: nothing listens at its address.
    let down = format!("http://127.0.0.1:{}", tailor_e2e::free_port().unwrap());
    let updater = env.updater("u1", &["--prometheus-url", &down]);
    updater.wait_ready().await;
    env.recommend(
        "blind",
        json!([{"containerName": "app", "target": {"cpu": "250m", "memory": "256Mi"}}]),
    )
    .await;
    env.recommend(
        "live",
        json!([{"containerName": "app", "target": {"cpu": "500m", "memory": "256Mi"}}]),
    )
    .await;
    let note = env
        .wait_event("VerticalAutoscaler", "blind", "MemoryDecreaseHeld")
        .await;
    assert!(
        note.contains("what the container uses now is unknown: Prometheus unavailable"),
        "{note}"
    );
    env.wait_pod(&live[0], "CPU raised live", |p| {
        applied(p, "app", "requests", "cpu", "500m")
    })
    .await;
    // Held across back-offs: still untouched after several tries.
    tokio::time::sleep(Duration::from_secs(5)).await;
    untouched(&env.pods().get(&pod).await.unwrap());
    assert!(
        updater
            .metric(
                "tailor_updater_resizes_total{outcome=\"held_usage_unknown\",resource=\"memory\"}"
            )
            .await
            >= 2.0,
        "{}",
        updater.metrics().await
    );
    drop(updater);

    // Without a Prometheus at all, the same: held, and the Event says what to set.
    let updater = env.updater("u2", &[]);
    updater.wait_ready().await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let events = env.events("VerticalAutoscaler", "blind").await;
        if events
            .iter()
            .any(|e| e.0 == "MemoryDecreaseHeld" && e.1.contains("--prometheus-url"))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    untouched(&env.pods().get(&pod).await.unwrap());
}
