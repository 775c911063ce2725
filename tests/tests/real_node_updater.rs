//! `tailor-updater` on a real kubelet: live CPU and memory changes keep the container and reach
//! its cgroup, a `ManualApproval` memory cut waits for its approval, `RestartContainer` cuts
//! restart one container at a time and never into less memory than the container uses (read
//! from a real Prometheus scraping the kubelet's cAdvisor), and an Infeasible resize is
//! surfaced.
//!
//! Needs the real node (root, `make test-deps`); `TAILOR_REAL_NODE=skip` skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod real_node_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tailor_e2e::prometheus::{Prometheus, PrometheusOptions};

use real_node_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn updater_resizes_pods_of_a_real_kubelet() {
    let Some((bins, cp, node)) = start().await else {
        return;
    };
    let env = Env {
        cp: &cp,
        node: &node,
        ns: cp.namespace("updater").await.unwrap(),
    };

    let web = env
        .workload(
            "web",
            1,
            container(("100m", "64Mi"), ("200m", "128Mi"), false),
        )
        .await;
    let db = env
        .workload(
            "db",
            1,
            container(("100m", "128Mi"), ("100m", "128Mi"), false),
        )
        .await;
    let jvm = env
        .workload(
            "jvm",
            2,
            container(("100m", "128Mi"), ("200m", "256Mi"), true),
        )
        .await;
    let tight = env
        .workload(
            "tight",
            1,
            container(("100m", "128Mi"), ("100m", "128Mi"), false),
        )
        .await;
    let big = env
        .workload(
            "big",
            1,
            container(("100m", "64Mi"), ("200m", "128Mi"), false),
        )
        .await;
    env.va("web", json!({"updateMode": "InPlace"})).await;
    env.va("db", json!({"updateMode": "InPlace"})).await;
    env.va(
        "jvm",
        json!({"updateMode": "InPlace", "memoryDecrease": "RestartContainer"}),
    )
    .await;
    env.va("big", json!({"updateMode": "InPlace"})).await;
    let ids = |p: &Pod| (status(p).container_id.clone(), status(p).restart_count);
    let web0 = env.pods().get(&web[0]).await.unwrap();
    let db0 = env.pods().get(&db[0]).await.unwrap();
    // The updater reads working sets before a memory decrease that restarts a container: a
    // Prometheus scraping the kubelet's cAdvisor endpoint, as in a kube-prometheus cluster.
    let prom = Prometheus::start(PrometheusOptions {
        scrape_targets: vec![node.scrape_target()],
        scrape_interval: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut updater = updater(&cp, &bins["tailor-updater"], prom.url());

    // CPU and memory up, then CPU down: live, same container, the cgroup follows.
    env.recommend("web", "300m", "96Mi").await;
    let p = env
        .wait_pod(&web[0], "resized up", |p| {
            is(p, ("300m", "96Mi", "600m", "192Mi"))
        })
        .await;
    assert_eq!(ids(&p), ids(&web0), "same container, no restart");
    assert_eq!(env.cgroup(&p, "cpu", "cpu.cfs_quota_us"), "60000");
    assert_eq!(
        env.cgroup(&p, "memory", "memory.limit_in_bytes"),
        (192u64 << 20).to_string()
    );
    env.recommend("web", "50m", "96Mi").await;
    let p = env
        .wait_pod(&web[0], "CPU lowered", |p| {
            is(p, ("50m", "96Mi", "100m", "192Mi"))
        })
        .await;
    assert_eq!(ids(&p), ids(&web0));
    assert_eq!(env.cgroup(&p, "cpu", "cpu.cfs_quota_us"), "10000");

    // ManualApproval: the cut waits, then the approved one applies live.
    env.recommend("db", "100m", "64Mi").await;
    let state = env
        .wait_state("db", "holding the cut", |s| !s.pending_approvals.is_empty())
        .await;
    assert_eq!(
        state_condition(&state, "AwaitingApproval").map(|c| c.0),
        Some("True")
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        is(
            &env.pods().get(&db[0]).await.unwrap(),
            ("100m", "128Mi", "100m", "128Mi")
        ),
        "held"
    );
    let id = state.pending_approvals[0].id.clone();
    env.vas()
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tailor.dev/approve-memory-decrease": id}}}),
            ),
        )
        .await
        .unwrap();
    let p = env
        .wait_pod(&db[0], "lowered after approval", |p| {
            is(p, ("100m", "64Mi", "100m", "64Mi"))
        })
        .await;
    assert_eq!(ids(&p), ids(&db0), "live");
    assert_eq!(
        env.cgroup(&p, "memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );

    // RestartContainer: each pod's container restarts into the new limit, one at a time.
    for n in &jvm {
        working_set_at_least(&prom, &env.ns, n, 1).await;
    }
    env.recommend("jvm", "100m", "64Mi").await;
    let mut restarted = Vec::new();
    for n in &jvm {
        let p = env
            .wait_pod(n, "restarted into 64Mi", |p| {
                is(p, ("100m", "64Mi", "200m", "128Mi")) && status(p).ready
            })
            .await;
        assert_eq!(status(&p).restart_count, 1);
        let s = status(&p);
        let ended = s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .and_then(|t| t.finished_at.clone())
            .unwrap()
            .0;
        let started = s
            .state
            .as_ref()
            .and_then(|st| st.running.as_ref())
            .and_then(|r| r.started_at.clone())
            .unwrap()
            .0;
        restarted.push((ended, started));
    }
    restarted.sort();
    assert!(
        restarted[1].0 >= restarted[0].1,
        "one at a time: {restarted:?}"
    );

    // A restart into less memory than the container uses now is held; it goes once usage
    // falls below the new limit.
    node.set_load(&env.ns, &jvm[0], "app", 10, 110 << 20)
        .unwrap();
    working_set_at_least(&prom, &env.ns, &jvm[0], 100 << 20).await;
    env.recommend("jvm", "100m", "48Mi").await;
    let note = wait_event(&env, "jvm", "MemoryDecreaseHeld").await;
    assert!(
        note.contains(&format!("pod {}:", jvm[0]))
            && note.contains("more than its new memory 96Mi"),
        "{note}"
    );
    let p = env.pods().get(&jvm[0]).await.unwrap();
    assert!(
        is(&p, ("100m", "64Mi", "200m", "128Mi")),
        "{:?}",
        applied(&p)
    );
    assert_eq!(status(&p).restart_count, 1, "not restarted");
    node.set_load(&env.ns, &jvm[0], "app", 10, 16 << 20)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let p = env.pods().get(&jvm[0]).await.unwrap();
        if is(&p, ("100m", "48Mi", "200m", "96Mi")) && status(&p).ready {
            assert_eq!(status(&p).restart_count, 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not restarted into 96Mi: {:?}",
            applied(&p)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A cut below what the process uses: the kubelet refuses it (reason Error, one sync
    // later) and would apply it whenever usage drops. The updater takes it back at once.
    node.set_load(&env.ns, &tight[0], "app", 10, 100 << 20)
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.va("tight", json!({"updateMode": "InPlace"})).await;
    env.recommend("tight", "100m", "48Mi").await;
    let state = env
        .wait_state("tight", "holding the cut", |s| {
            !s.pending_approvals.is_empty()
        })
        .await;
    let id = state.pending_approvals[0].id.clone();
    env.vas()
        .patch(
            "tight",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tailor.dev/approve-memory-decrease": id}}}),
            ),
        )
        .await
        .unwrap();
    let status = env
        .wait_state("tight", "the refused cut Reverted", |s| {
            s.last_resizes
                .first()
                .is_some_and(|r| r.outcome == tailor_crds::v1alpha1::ResizeOutcome::Reverted)
        })
        .await;
    // (The usage the kubelet names in its message can trail the process: it has named 0, and
    // less than the refused limit, while the process was still growing. It is kept when
    // positive; the simulator's test checks the value.)
    // The used approval approves nothing more: the same cut needs a new one.
    assert!(
        status
            .pending_approvals
            .iter()
            .all(|p| p.id != id && p.approved != Some(true)),
        "{:?}",
        status.pending_approvals
    );
    let tight0 = env
        .wait_pod(&tight[0], "back at 128Mi", |p| {
            is(p, ("100m", "128Mi", "100m", "128Mi"))
        })
        .await;
    // Usage drops: the kubelet has nothing left to apply, so the cut never happens.
    node.set_load(&env.ns, &tight[0], "app", 10, 16 << 20)
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        let p = env.pods().get(&tight[0]).await.unwrap();
        assert!(
            is(&p, ("100m", "128Mi", "100m", "128Mi")),
            "{:?}",
            applied(&p)
        );
        assert_eq!(
            env.cgroup(&p, "memory", "memory.limit_in_bytes"),
            (128u64 << 20).to_string()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(ids(&env.pods().get(&tight[0]).await.unwrap()), ids(&tight0));

    // Infeasible: surfaced on the VerticalAutoscaler, the pod untouched.
    env.recommend("big", "64", "64Mi").await;
    env.wait_state("big", "ResizeInfeasible", |s| {
        state_condition(s, "ResizeInfeasible").is_some_and(|c| c.0 == "True")
    })
    .await;
    let p = env.pods().get(&big[0]).await.unwrap();
    assert_eq!(number(&applied(&p).0, true), 100);
    updater.stop(Duration::from_secs(5));
}
