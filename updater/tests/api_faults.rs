//! The `tailor-updater` process behind a proxy that makes the real API server misbehave
//! (`tailor_e2e::api_proxy`), and through a restart of the API server: no resize is issued
//! twice, the caches resync after cut and expired watches, watch errors are logged at warn, a
//! leader that cannot reach the API server steps down and is not ready, and work goes on after
//! the API server comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use axum::http::Method;
use serde_json::json;
use tailor_crds::v1alpha1::ResizeOutcome;
use tailor_e2e::api_proxy::{Action, ApiProxy, Rule};

use common::{Env, Updater, applied, container};

/// Whether `uri` is a pod's `resize` subresource.
fn is_resize(uri: &str) -> bool {
    uri.split('?')
        .next()
        .is_some_and(|p| p.ends_with("/resize"))
}

/// The resize patches that reached the API server, per pod.
fn resizes_reaching(proxy: &ApiProxy, pod: &str) -> usize {
    proxy
        .log()
        .iter()
        .filter(|l| {
            l.method == Method::PATCH
                && l.uri.contains(&format!("/pods/{pod}/resize"))
                && matches!(l.fault, None | Some(Action::ForwardThenFail))
        })
        .count()
}

async fn status(updater: &Updater, path: &str) -> (u16, String) {
    match reqwest::get(format!("http://127.0.0.1:{}{path}", updater.port)).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(_) => (0, String::new()),
    }
}

async fn wait_for(what: &str, updater: &Updater, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {what}:\n{}",
            updater.process.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn resizes_through_a_failing_api_server_are_issued_once() {
    let env = Env::start(1, "8", "32Gi", 0.3).await;
    let pods = env.plain_workload(2).await;
    let proxy = ApiProxy::start(&env.cp).await.unwrap();
    // Every kind of failure on the resize subresource, in turn: busy (429 with Retry-After),
    // broken (500), and a patch that reached the server while the client saw a 500.
    let resize = |action| {
        Rule::ending("/resize", action)
            .method(Method::PATCH)
            .watch(false)
    };
    proxy.add(resize(Action::Status(429, Some(1))).times(2));
    proxy.add(resize(Action::Status(500, None)).times(1));
    proxy.add(resize(Action::ForwardThenFail).times(2));
    // Its records and Events fail too, at first.
    proxy.add(Rule::on("/resizestates/", Action::Status(503, None)).times(2));
    proxy.add(
        Rule::on("/events", Action::Status(500, None))
            .method(Method::POST)
            .times(2),
    );
    let updater = env.updater_via("u1", proxy.kubeconfig(), &[]);
    updater.wait_ready().await;
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    for pod in &pods {
        env.wait_pod(pod, "resized", |p| {
            applied(p, "app", "requests", "cpu", "1")
        })
        .await;
    }
    // Passes go on (resync every 2 s): nothing more is sent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for pod in &pods {
        let p = env.pods().get(pod).await.unwrap();
        assert_eq!(p.metadata.generation, Some(2), "{pod}: one spec change");
        assert_eq!(
            resizes_reaching(&proxy, pod),
            1,
            "{pod}: one resize reached the API server: {:#?}",
            proxy
                .log()
                .iter()
                .filter(|l| is_resize(&l.uri))
                .collect::<Vec<_>>()
        );
    }
    let refused = proxy
        .log()
        .iter()
        .filter(|l| is_resize(&l.uri) && l.fault.is_some())
        .count();
    assert_eq!(
        refused,
        5,
        "every fault was met: {:#?}",
        proxy
            .log()
            .iter()
            .filter(|l| is_resize(&l.uri))
            .collect::<Vec<_>>()
    );
    // The record is written once the API server takes it.
    env.wait_state("w", "recording both resizes, once each", |s| {
        pods.iter().all(|pod| {
            s.last_resizes
                .iter()
                .filter(|r| &r.pod == pod && r.outcome == ResizeOutcome::Applied)
                .count()
                == 1
        })
    })
    .await;
}

#[tokio::test]
async fn cut_and_expired_watches_resync_the_caches_and_warn() {
    let env = Env::start(1, "8", "32Gi", 0.3).await;
    let proxy = ApiProxy::start(&env.cp).await.unwrap();
    // Pod watches cut every 2 s; the first VerticalAutoscaler watches expire (410 Gone) and
    // the first ResizeState watches fail outright.
    proxy.add(
        Rule::on("/pods", Action::CutWatchAfter(Duration::from_secs(2)))
            .watch(true)
            .times(20),
    );
    proxy.add(
        Rule::on("/verticalautoscalers", Action::Gone)
            .watch(true)
            .times(3),
    );
    proxy.add(
        Rule::on("/resizestates", Action::Status(500, None))
            .watch(true)
            .times(3),
    );
    let updater = env.updater_via("u1", proxy.kubeconfig(), &[]);
    updater.wait_ready().await;
    // Made while the watches are being cut: seen all the same.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pods = env.plain_workload(2).await;
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "750m", "memory": "256Mi"}}]),
    )
    .await;
    for pod in &pods {
        env.wait_pod(pod, "resized", |p| {
            applied(p, "app", "requests", "cpu", "750m")
        })
        .await;
    }
    let log = std::fs::read_to_string(&updater.log).unwrap();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("watch failed")).collect();
    assert!(
        failed
            .iter()
            .any(|l| l.contains("WARN") && l.contains("ResizeState")),
        "watch failures at warn: {failed:#?}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("watch expired") && l.contains("VerticalAutoscaler")),
        "the expired watch is logged"
    );
    let cuts = proxy
        .log()
        .iter()
        .filter(|l| matches!(l.fault, Some(Action::CutWatchAfter(_))))
        .count();
    assert!(cuts >= 2, "pod watches were cut {cuts} times");
}

#[tokio::test]
async fn a_leader_that_cannot_reach_the_api_server_steps_down_and_is_not_ready() {
    let env = Env::start(1, "8", "32Gi", 0.3).await;
    let pods = env.plain_workload(1).await;
    let proxy = ApiProxy::start(&env.cp).await.unwrap();
    let cut = env.updater_via(
        "cut",
        proxy.kubeconfig(),
        &[
            "--api-unreachable-seconds",
            "3",
            "--healthz-stall-seconds",
            "3",
        ],
    );
    cut.wait_ready().await;
    let standby = env.updater("standby", &[]);
    assert_eq!(status(&cut, "/healthz").await.0, 200);

    // The API server answers this replica nothing but 503 from now on.
    proxy.add(Rule::on("/", Action::Status(503, None)));
    wait_for("stepped down", &cut, async || {
        cut.metrics().await.contains("tailor_updater_leader 0")
    })
    .await;
    wait_for("not ready", &cut, async || {
        let (code, body) = status(&cut, "/readyz").await;
        code == 503 && body.contains("API server has not answered")
    })
    .await;
    // Alive all the same: nothing is wedged (its work loop stopped with the lead, however
    // long ago), and a restart would not help.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(status(&cut, "/healthz").await.0, 200);
    // The standby takes over and does the work.
    standby.wait_ready().await;
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    env.wait_pod(&pods[0], "resized by the new leader", |p| {
        applied(p, "app", "requests", "cpu", "1")
    })
    .await;
    assert!(
        std::fs::read_to_string(&cut.log)
            .unwrap()
            .contains("stepping down"),
        "the step-down is logged"
    );

    // Reachable again: ready again, as a standby.
    proxy.clear();
    wait_for("ready again", &cut, async || {
        status(&cut, "/readyz").await.0 == 200
    })
    .await;
    assert!(cut.metrics().await.contains("tailor_updater_leader 0"));
}

#[tokio::test]
async fn work_goes_on_after_the_api_server_restarts() {
    let mut env = Env::start(1, "8", "32Gi", 0.3).await;
    let pods = env.plain_workload(1).await;
    let updater = env.updater("u1", &["--api-unreachable-seconds", "2"]);
    updater.wait_ready().await;
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    env.wait_pod(&pods[0], "resized", |p| {
        applied(p, "app", "requests", "cpu", "1")
    })
    .await;

    // While the API server is down, the updater is not ready.
    let unready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poll = {
        let (unready, port) = (unready.clone(), updater.port);
        tokio::spawn(async move {
            loop {
                let url = format!("http://127.0.0.1:{port}/readyz");
                if let Ok(r) = reqwest::get(url).await
                    && r.status().as_u16() == 503
                    && r.text().await.unwrap_or_default().contains("API server")
                {
                    unready.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    env.cp
        .restart_apiserver(Duration::from_secs(5))
        .await
        .unwrap();
    // Objects made after the restart are seen: the caches resynced.
    let c = container("app", json!({"cpu": "500m", "memory": "256Mi"}), json!({}));
    let later = env.workload("later", 1, json!([c])).await;
    env.va("later", "later", json!({})).await;
    env.recommend(
        "later",
        json!([{"containerName": "app", "target": {"cpu": "2", "memory": "256Mi"}}]),
    )
    .await;
    env.wait_pod(&later[0], "resized after the restart", |p| {
        applied(p, "app", "requests", "cpu", "2")
    })
    .await;
    updater.wait_ready().await;
    // The pod resized before the restart is not patched again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let p = env.pods().get(&pods[0]).await.unwrap();
    assert_eq!(
        p.metadata.generation,
        Some(2),
        "patched again after the restart"
    );
    poll.abort();
    assert!(
        unready.load(std::sync::atomic::Ordering::SeqCst),
        "/readyz said the API server was unreachable while it was down"
    );
    let log = std::fs::read_to_string(&updater.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("lease request failed")),
        "the failed requests are logged at warn"
    );
}

#[tokio::test]
async fn a_hung_request_wedges_the_loop_and_healthz_says_so_until_it_ends() {
    let env = Env::start(1, "8", "32Gi", 0.3).await;
    let pods = env.plain_workload(1).await;
    let proxy = ApiProxy::start(&env.cp).await.unwrap();
    let updater = env.updater_via(
        "u1",
        proxy.kubeconfig(),
        &["--healthz-stall-seconds", "3", "--concurrency", "1"],
    );
    updater.wait_ready().await;
    assert_eq!(status(&updater, "/healthz").await.0, 200);
    // The resize hangs 20 s, then gets a 504.
    proxy.add(
        Rule::ending("/resize", Action::Hang(Duration::from_secs(20)))
            .method(Method::PATCH)
            .times(1),
    );
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    wait_for("wedged", &updater, async || {
        let (code, body) = status(&updater, "/healthz").await;
        code == 500 && body.contains("finished none")
    })
    .await;
    // Still ready: a wedge is for the liveness probe (a restart), not for readiness.
    assert_eq!(status(&updater, "/readyz").await.0, 200);
    // Once the request ends, the resize is retried and done, and the loop is healthy again.
    env.wait_pod(&pods[0], "resized after the hang", |p| {
        applied(p, "app", "requests", "cpu", "1")
    })
    .await;
    wait_for("healthy again", &updater, async || {
        status(&updater, "/healthz").await.0 == 200
    })
    .await;
}
