//! The `tailor-updater` process: a restart mid-resize completes the work without a second patch,
//! only the leader of two replicas writes, and `--dry-run` changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use serde_json::json;
use tailor_crds::v1alpha1::ResizeOutcome;

use common::{Env, applied, container, spec_value};

#[tokio::test]
async fn an_updater_killed_mid_resize_is_replaced_without_a_second_patch() {
    // A slow kubelet: 6 s between the patch and the change.
    let env = Env::start(1, "8", "32Gi", 6.0).await;
    let pods = env.plain_workload(1).await;
    let mut first = env.updater("u1", &[]);
    first.wait_ready().await;
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    let p = env
        .wait_pod(&pods[0], "patched", |p| {
            spec_value(p, "app", "requests", "cpu").as_deref() == Some("1")
        })
        .await;
    assert_eq!(p.metadata.generation, Some(2));
    assert_eq!(
        common::actual(&p, "app", "requests", "cpu").as_deref(),
        Some("500m"),
        "the resize finished too fast to test"
    );
    first.kill();
    let second = env.updater("u2", &[]);
    second.wait_ready().await;
    let p = env
        .wait_pod(&pods[0], "resized", |p| {
            applied(p, "app", "requests", "cpu", "1")
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p2 = env.pods().get(&pods[0]).await.unwrap();
    assert_eq!(
        p.metadata.generation,
        Some(2),
        "patched again after the restart"
    );
    assert_eq!(
        p2.metadata.generation,
        Some(2),
        "patched again after the restart"
    );
    assert_eq!(
        second
            .metric("tailor_updater_resizes_total{outcome=\"issued\"")
            .await,
        0.0
    );
    // The new process finishes the record the first one started.
    env.wait_state("w", "recording the resize as Applied", |s| {
        s.last_resizes
            .first()
            .is_some_and(|r| r.outcome == ResizeOutcome::Applied)
    })
    .await;
}

#[tokio::test]
async fn of_two_updaters_only_the_leader_writes_and_the_standby_takes_over() {
    let env = Env::start(1, "8", "32Gi", 0.3).await;
    let pods = env.plain_workload(2).await;
    let mut a = env.updater("a", &[]);
    let mut b = env.updater("b", &[]);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let (leader, standby) = loop {
        let (la, lb) = (
            a.metric("tailor_updater_leader").await,
            b.metric("tailor_updater_leader").await,
        );
        if la + lb == 1.0 {
            break if la == 1.0 { ("a", "b") } else { ("b", "a") };
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no single leader: a={la} b={lb}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    for p in &pods {
        env.wait_pod(p, "resized", |p| applied(p, "app", "requests", "cpu", "1"))
            .await;
    }
    for p in &pods {
        let events = env.events("Pod", p).await;
        let ours: Vec<_> = events.iter().filter(|e| e.0 == "Resizing").collect();
        assert_eq!(ours.len(), 1, "{events:?}");
        assert_eq!(ours[0].2, leader, "written by the standby: {events:?}");
    }
    let (lead, stand) = if leader == "a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(
        stand
            .metric("tailor_updater_resizes_total{outcome=\"issued\"")
            .await,
        0.0
    );
    assert_eq!(stand.metric("tailor_updater_api_requests_total").await, 0.0);
    // The leader dies; the standby takes the lease and acts.
    lead.kill();
    stand.wait_ready().await;
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "2", "memory": "256Mi"}}]),
    )
    .await;
    for p in &pods {
        env.wait_pod(p, "resized by the new leader", |p| {
            applied(p, "app", "requests", "cpu", "2")
        })
        .await;
        let events = env.events("Pod", p).await;
        assert!(
            events.iter().any(|e| e.0 == "Resizing" && e.2 == standby),
            "{events:?}"
        );
    }
}

#[tokio::test]
async fn dry_run_records_what_it_would_do_and_changes_nothing() {
    let env = Env::start(1, "8", "32Gi", 0.3).await;
    let pods = env
        .workload(
            "w",
            1,
            json!([container(
                "app",
                json!({"cpu": "1", "memory": "1Gi"}),
                json!({"cpu": "1", "memory": "1Gi"})
            )]),
        )
        .await;
    env.va("w", "w", json!({})).await;
    let updater = env.updater("u1", &["--dry-run"]);
    updater.wait_ready().await;
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "2", "memory": "512Mi"}}]),
    )
    .await;
    let note = env.wait_event("Pod", &pods[0], "DryRunResize").await;
    assert!(note.contains("cpu request 1 -> 2"), "{note}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = env.pods().get(&pods[0]).await.unwrap();
    assert_eq!(p.metadata.generation, Some(1), "dry run resized the pod");
    assert!(
        env.states().get_opt("w").await.unwrap().is_none(),
        "dry run wrote a ResizeState"
    );
    assert!(
        updater
            .metric("tailor_updater_resizes_total{outcome=\"dry_run\"")
            .await
            >= 1.0
    );
    // Recorded once, not on every pass.
    let events = env.events("Pod", &pods[0]).await;
    assert_eq!(
        events.iter().filter(|e| e.0 == "DryRunResize").count(),
        1,
        "{events:?}"
    );
    // SIGTERM stops it cleanly (no SIGKILL needed within the grace period).
    let mut updater = updater;
    updater.process.stop(Duration::from_secs(10));
    let status = updater.process.exited().expect("stopped");
    assert!(
        status.success(),
        "exit status {status:?}:\n{}",
        updater.process.log_tail(20)
    );
}
