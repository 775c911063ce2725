//! The live memory guard on a real kubelet: a process whose memory climbs past its container's
//! limit has the limit raised live (the cgroup follows, the container is not restarted) before
//! the kernel OOM-kills it; the same climb with the guard off is OOM-killed by the kernel. The
//! updater reads working sets from a real Prometheus scraping the kubelet's cAdvisor, whose
//! figures trail the process by up to its housekeeping interval (10 s), so the climb is slow
//! enough for that: 0.5 MiB a second through the last 10% below the limit.
//!
//! Needs the real node (root, `make test-deps`); `TAILOR_REAL_NODE=skip` skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod real_node_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tailor_crds::quantity::memory_bytes;
use tailor_e2e::prometheus::{Prometheus, PrometheusOptions};

use real_node_support::*;

const MI: i64 = 1 << 20;

fn limit(p: &Pod) -> i64 {
    let q = p.spec.as_ref().unwrap().containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .cloned()
        .unwrap();
    memory_bytes(&q).unwrap()
}

fn oom_killed(p: &Pod) -> bool {
    let s = status(p);
    s.restart_count > 0
        && s.last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_guard_raises_a_climbing_container_before_the_kernel_kills_it() {
    let Some((bins, cp, node)) = start().await else {
        return;
    };
    let env = Env {
        cp: &cp,
        node: &node,
        ns: cp.namespace("guard").await.unwrap(),
    };
    let prom = Prometheus::start(PrometheusOptions {
        scrape_targets: vec![node.scrape_target()],
        scrape_interval: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    // 128Mi limits, NotRequired: a raise is live.
    let spec = || container(("100m", "64Mi"), ("200m", "128Mi"), false);
    let guarded = env.workload("guarded", 1, spec()).await;
    let unguarded = env.workload("unguarded", 1, spec()).await;
    env.va(
        "guarded",
        json!({"updateMode": "InPlace", "memoryGuard": {"minIntervalSeconds": 5}}),
    )
    .await;
    env.va(
        "unguarded",
        json!({"updateMode": "InPlace", "memoryGuard": {"enabled": false}}),
    )
    .await;
    // The recommendation is what the pods have: nothing else to resize.
    for va in ["guarded", "unguarded"] {
        env.recommend(va, "100m", "64Mi").await;
    }
    let before = env.pods().get(&guarded[0]).await.unwrap();
    let _updater = updater_with(
        &cp,
        &bins["tailor-updater"],
        prom.url(),
        &["--memory-guard-interval-seconds", "1"],
    );

    // Both climb from 100Mi to 140Mi, half a MiB a second.
    let mut mib = 100;
    while mib <= 140 {
        for pod in [&guarded[0], &unguarded[0]] {
            node.set_load(&env.ns, pod, "app", 10, mib * MI).unwrap();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        mib += 1;
    }

    // The kernel kills the unguarded one at its 128Mi limit.
    let p = env
        .wait_pod(&unguarded[0], "OOM-killed by the kernel", oom_killed)
        .await;
    assert_eq!(limit(&p), 128 * MI, "nothing raised the unguarded limit");

    // The guarded one was raised live above 140Mi and never restarted; the cgroup follows.
    let p = env
        .wait_pod(&guarded[0], "raised and applied", |p| {
            limit(p) > 140 * MI
                && condition(p, "PodResizeInProgress").is_none()
                && condition(p, "PodResizePending").is_none()
        })
        .await;
    assert_eq!(status(&p).restart_count, 0, "{:?}", p.status);
    assert_eq!(status(&p).container_id, status(&before).container_id);
    let applied_limit = number(&applied(&p).3, false);
    assert!(applied_limit > 140 * MI, "applied {applied_limit}");
    assert_eq!(
        env.cgroup(&p, "memory", "memory.limit_in_bytes"),
        applied_limit.to_string()
    );
    let state = env
        .wait_state("guarded", "a raise recorded", |s| {
            !s.memory_guard_raises.is_empty()
        })
        .await;
    let first = state.memory_guard_raises.last().unwrap();
    assert_eq!(first.from.0, "128Mi");
    let usage = memory_bytes(&first.usage).unwrap();
    assert!(
        (128 * MI * 9 / 10..=128 * MI).contains(&usage),
        "raised at {usage} bytes: above 90% of the limit, below it"
    );
    // Holding 140Mi, it keeps running.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let p = env.pods().get(&guarded[0]).await.unwrap();
        assert_eq!(status(&p).restart_count, 0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
