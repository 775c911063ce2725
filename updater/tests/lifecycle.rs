//! Pods that vanish before or during their resize, and OOM kills after a resize: the
//! `tailor-updater` binary against a real API server and the node simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;
use tailor_crds::v1alpha1::ResizeOutcome;

use common::{Env, applied, container, restart_count};

#[tokio::test]
async fn pods_deleted_before_or_during_their_resize_are_let_go() {
    // Resizes take 3 s to actuate, so one can be caught half way.
    let env = Env::start(1, "16", "64Gi", 3.0).await;
    let c = container(
        "app",
        json!({"cpu": "500m", "memory": "256Mi"}),
        json!({"cpu": "1", "memory": "256Mi"}),
    );
    let pods = env.workload("gone", 3, json!([c])).await;
    env.va("gone", "gone", json!({})).await;
    // One resize every 5 s: the second pod's patch waits 5 s, the third's 10 s.
    let updater = env.updater(
        "u1",
        &["--max-resizes-per-second", "0.2", "--resize-burst", "1"],
    );
    updater.wait_ready().await;
    env.recommend(
        "gone",
        json!([{"containerName": "app", "target": {"cpu": "750m", "memory": "256Mi"}}]),
    )
    .await;

    // Whichever pod is resized first (`during`) is deleted while the kubelet is still at it;
    // one of the two still waiting for their patch (`before`) is deleted too; the last one
    // (`kept`) keeps its place in line.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let during = loop {
        let mut first = None;
        for name in &pods {
            let p = env.pods().get(name).await.unwrap();
            if p.metadata.generation == Some(2) {
                first = Some(name.clone());
            }
        }
        if let Some(f) = first {
            break f;
        }
        assert!(tokio::time::Instant::now() < deadline, "no resize issued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut waiting = Vec::new();
    for name in pods.iter().filter(|n| **n != during) {
        let p = env.pods().get(name).await.unwrap();
        waiting.push((p.metadata.generation == Some(1), name.clone()));
    }
    // A pod not patched yet goes before its patch; with one patch every 5 s there is one.
    waiting.sort();
    let before = waiting
        .iter()
        .rev()
        .find(|(unpatched, _)| *unpatched)
        .map(|(_, n)| n.clone())
        .expect("a pod still waiting for its patch");
    let kept = waiting
        .iter()
        .map(|(_, n)| n.clone())
        .find(|n| *n != before)
        .expect("a third pod");
    for name in [&during, &before] {
        env.pods()
            .delete(name, &DeleteParams::default().grace_period(0))
            .await
            .unwrap();
    }
    env.wait_pod(&kept, "CPU raised", |p| {
        applied(p, "app", "requests", "cpu", "750m")
    })
    .await;
    // The patch for `before` found no pod: counted, no failure reported, no back-off.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while updater
        .metric("tailor_updater_resizes_total{outcome=\"vanished\",resource=\"cpu\"}")
        .await
        < 1.0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no vanished resize counted:\n{}\n{}",
            updater.metrics().await,
            updater.process.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The record of `during` says what happened, and nothing is left waiting for it.
    let state = env
        .wait_state("gone", "the deleted pod's resize recorded", |s| {
            s.last_resizes
                .iter()
                .any(|r| r.pod == during && r.outcome == ResizeOutcome::PodDeleted)
                && s.last_resizes
                    .iter()
                    .any(|r| r.pod == kept && r.outcome == ResizeOutcome::Applied)
        })
        .await;
    let records = &state.last_resizes;
    assert!(
        records.iter().all(|r| r.pod != before),
        "a resize of the pod deleted before its patch was recorded: {records:?}"
    );
    let failures: Vec<_> = env
        .events("VerticalAutoscaler", "gone")
        .await
        .into_iter()
        .filter(|e| e.0 == "ResizeFailed")
        .collect();
    assert!(failures.is_empty(), "{failures:?}");
    let metrics = updater.metrics().await;
    assert!(
        !metrics.contains("tailor_updater_resize_started_timestamp_seconds{"),
        "an unfinished resize is still reported:\n{metrics}"
    );
}

#[tokio::test]
async fn an_oom_kill_after_a_resize_is_counted_and_reported_once() {
    let env = Env::start(1, "16", "64Gi", 0.3).await;
    let prom = env.prometheus().await;
    let pod = env.restarting_workload("tight", "512Mi", "100Mi").await;
    let updater = env.updater("u1", &["--prometheus-url", prom.url()]);
    updater.wait_ready().await;
    env.wait_scraped(&prom, &pod).await;
    // The container uses 100Mi: the cut to 200Mi goes, through a restart.
    env.recommend(
        "tight",
        json!([{"containerName": "app", "target": {"cpu": "250m", "memory": "200Mi"}}]),
    )
    .await;
    env.wait_pod(&pod, "restarted into 200Mi", |p| {
        applied(p, "app", "limits", "memory", "200Mi") && restart_count(p, "app") == 1
    })
    .await;
    // Then the process needs more than before: OOM-killed under the new limit.
    env.set_usage(&pod, "256Mi").await;
    env.wait_pod(&pod, "OOM-killed after the resize", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|ss| ss.first())
            .and_then(|s| s.last_state.as_ref()?.terminated.as_ref()?.reason.clone())
            .as_deref()
            == Some("OOMKilled")
    })
    .await;
    let note = env
        .wait_event("VerticalAutoscaler", "tight", "OOMKilledAfterResize")
        .await;
    assert!(note.contains("container app was OOM-killed"), "{note}");
    assert!(note.contains("200Mi"), "{note}");
    env.wait_event("Pod", &pod, "OOMKilledAfterResize").await;
    // Counted once per kill, however many passes see it.
    let counted = |m: &str| {
        m.lines()
            .filter(|l| {
                l.starts_with("tailor_updater_oom_kills_after_resize_total{")
                    && l.contains("verticalautoscaler=\"tight\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = env.pods().get(&pod).await.unwrap();
    let kills = f64::from(restart_count(&p, "app") - 1);
    let metrics = updater.metrics().await;
    let n = counted(&metrics);
    assert!(n >= 1.0, "{metrics}");
    // Restarts: one for the resize, the rest OOM kills; each seen at most once (a kill after
    // the last pass may not be counted yet).
    assert!(n <= kills, "{n} counted, {kills} kills:\n{metrics}");
}
