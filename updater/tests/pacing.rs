//! Restart pacing, Deferred and Infeasible resizes: the `tailor-updater` binary against a real
//! API server and the node simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use kube::api::DeleteParams;
use serde_json::json;
use tailor_crds::v1alpha1::condition;

use common::{Env, applied, condition, container, ready, restart_count, spec_value};

#[tokio::test]
async fn restart_container_decreases_go_one_pod_at_a_time_and_wait_for_ready() {
    let env = Env::start(1, "16", "64Gi", 0.3).await;
    let mut c = container(
        "app",
        json!({"cpu": "500m", "memory": "2Gi"}),
        json!({"cpu": "500m", "memory": "2Gi"}),
    );
    c["resizePolicy"] = json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
    // Not Ready for 3 s after each start.
    c["readinessProbe"] = json!({"tcpSocket": {"port": 8080}, "initialDelaySeconds": 3});
    let pods = env.workload("cache", 3, json!([c])).await;
    env.va(
        "cache",
        "cache",
        json!({"updatePolicy": {"memoryDecrease": "RestartContainer", "maxConcurrentRestarts": 1}}),
    )
    .await;
    // Restart cuts need the working set: the simulator's default usage is half the requests.
    let prom = env.prometheus().await;
    for p in &pods {
        env.wait_scraped(&prom, p).await;
    }
    let _updater = {
        let u = env.updater("u1", &["--prometheus-url", prom.url()]);
        u.wait_ready().await;
        u
    };
    env.recommend(
        "cache",
        json!([{"containerName": "app", "target": {"cpu": "500m", "memory": "1Gi"}}]),
    )
    .await;

    let start = tokio::time::Instant::now();
    let mut restarted_at: Vec<Option<Duration>> = vec![None; pods.len()];
    loop {
        let mut disrupted = Vec::new();
        let mut done = 0;
        for (i, name) in pods.iter().enumerate() {
            let p = env.pods().get(name).await.unwrap();
            let resizing = spec_value(&p, "app", "limits", "memory")
                != common::actual(&p, "app", "limits", "memory");
            if !ready(&p) || resizing {
                disrupted.push(name.clone());
            }
            if restart_count(&p, "app") > 0 && restarted_at[i].is_none() {
                restarted_at[i] = Some(start.elapsed());
            }
            if applied(&p, "app", "limits", "memory", "1Gi") && ready(&p) {
                assert_eq!(
                    restart_count(&p, "app"),
                    1,
                    "{name} restarted more than once"
                );
                done += 1;
            }
        }
        assert!(
            disrupted.len() <= 1,
            "more than one pod disrupted at once: {disrupted:?}"
        );
        if done == pods.len() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not all pods resized: {restarted_at:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Each restart waited for the previous pod's readiness delay.
    let mut times: Vec<Duration> = restarted_at.into_iter().map(Option::unwrap).collect();
    times.sort();
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(2500),
            "restarts too close: {times:?}"
        );
    }
}

#[tokio::test]
async fn deferred_resizes_complete_when_room_appears_and_infeasible_ones_wait_for_a_new_recommendation()
 {
    let env = Env::start(1, "2", "8Gi", 0.3).await;
    let hog = env
        .workload(
            "hog",
            1,
            json!([container(
                "app",
                json!({"cpu": "1200m", "memory": "256Mi"}),
                json!({})
            )]),
        )
        .await;
    let app = env
        .workload(
            "app",
            1,
            json!([container(
                "app",
                json!({"cpu": "300m", "memory": "256Mi"}),
                json!({})
            )]),
        )
        .await;
    env.va("app", "app", json!({})).await;
    let updater = env.updater("u1", &[]);
    updater.wait_ready().await;

    // 1200m + 1 CPU does not fit the 2-CPU node now: Deferred.
    env.recommend(
        "app",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    let state = env
        .wait_state("app", "ResizeDeferred", |s| {
            condition(s, condition::RESIZE_DEFERRED).is_some_and(|c| c.0 == "True")
        })
        .await;
    assert!(
        condition(&state, condition::RESIZE_DEFERRED)
            .unwrap()
            .2
            .contains("app-0")
    );
    env.wait_event("VerticalAutoscaler", "app", "ResizeDeferred")
        .await;
    // Another pod leaves the node: the kubelet retries and the resize completes.
    env.pods()
        .delete(&hog[0], &DeleteParams::default())
        .await
        .unwrap();
    env.wait_pod(&app[0], "resized after room appeared", |p| {
        applied(p, "app", "requests", "cpu", "1")
    })
    .await;
    env.wait_state("app", "no longer deferred", |s| {
        condition(s, condition::RESIZE_DEFERRED).is_some_and(|c| c.0 == "False")
    })
    .await;

    // 3 CPUs can never fit a 2-CPU node: Infeasible, surfaced, not retried.
    env.recommend(
        "app",
        json!([{"containerName": "app", "target": {"cpu": "3", "memory": "256Mi"}}]),
    )
    .await;
    let state = env
        .wait_state("app", "ResizeInfeasible", |s| {
            condition(s, condition::RESIZE_INFEASIBLE).is_some_and(|c| c.0 == "True")
        })
        .await;
    assert!(
        condition(&state, condition::RESIZE_INFEASIBLE)
            .unwrap()
            .2
            .contains("capacity"),
        "{state:?}"
    );
    let note = env
        .wait_event("VerticalAutoscaler", "app", "ResizeInfeasible")
        .await;
    assert!(note.contains("not retried"), "{note}");
    let generation = env.pods().get(&app[0]).await.unwrap().metadata.generation;
    tokio::time::sleep(Duration::from_secs(6)).await; // three resync periods
    let p = env.pods().get(&app[0]).await.unwrap();
    assert_eq!(
        p.metadata.generation, generation,
        "an infeasible resize was patched again"
    );
    assert_eq!(
        common::actual(&p, "app", "requests", "cpu").as_deref(),
        Some("1")
    );
    // A new recommendation is tried.
    env.recommend(
        "app",
        json!([{"containerName": "app", "target": {"cpu": "1500m", "memory": "256Mi"}}]),
    )
    .await;
    env.wait_pod(&app[0], "resized to the new recommendation", |p| {
        applied(p, "app", "requests", "cpu", "1500m")
    })
    .await;
    env.wait_state("app", "no longer infeasible", |s| {
        condition(s, condition::RESIZE_INFEASIBLE).is_some_and(|c| c.0 == "False")
    })
    .await;
    assert!(
        updater
            .metric("tailor_updater_resizes_total{outcome=\"infeasible\"")
            .await
            >= 1.0
    );
}
