//! The recommender with a namespace scope against a real API server: objects in scope get
//! their status written (its own conditions, and the updater's ResizeState mirrored), an
//! identical object outside the scope never does, with `--namespaces` (one watch per
//! namespace) and with `--exclude-namespaces` (a field selector).
//!
//! As in the mirror's tests, Prometheus refuses connections: the recommender writes
//! `HistoryUnavailable` and no recommendation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tailor_crds::ResizeState;
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_e2e::ControlPlane;
use tailor_recommender::controller::{self, Options};
use tailor_recommender::prometheus::{Config, Prometheus};
use tailor_runtime::Scope;

const WAIT: Duration = Duration::from_secs(30);

/// The VerticalAutoscaler `name` in `ns` and its ResizeState with one resize recorded.
async fn object(cp: &ControlPlane, ns: &str, name: &str) {
    let va: VerticalAutoscaler = serde_json::from_value(json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "metadata": {"name": name},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
    }))
    .unwrap();
    let va = Api::<VerticalAutoscaler>::namespaced(cp.client(), ns)
        .create(&PostParams::default(), &va)
        .await
        .unwrap();
    let state = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "ResizeState",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"verticalAutoscalerUid": va.metadata.uid,
                 "lastResizes": [{"pod": "web-0", "podUid": "p0", "time": "2026-01-01T00:00:00Z",
                                  "outcome": "Applied"}]},
    });
    Api::<ResizeState>::namespaced(cp.client(), ns)
        .patch(
            name,
            &PatchParams::apply("tailor-updater").force(),
            &Patch::Apply(state),
        )
        .await
        .unwrap();
}

/// Whether the recommender wrote its conditions and mirrored the ResizeState.
fn written(va: &VerticalAutoscaler) -> bool {
    va.status.as_ref().is_some_and(|s| {
        !s.last_resizes.is_empty()
            && s.conditions
                .iter()
                .any(|c| c.type_ == "HistoryUnavailable" && c.status == "True")
    })
}

async fn get(cp: &ControlPlane, ns: &str, name: &str) -> VerticalAutoscaler {
    Api::<VerticalAutoscaler>::namespaced(cp.client(), ns)
        .get(name)
        .await
        .unwrap()
}

/// Runs the recommender in `scope` over the object `name` in each of `nss`; checks that those
/// in scope are written and the others never.
async fn run_in(cp: &ControlPlane, scope: Scope, nss: &[String], name: &str) {
    for ns in nss {
        object(cp, ns, name).await;
    }
    let port = tailor_e2e::free_port().unwrap();
    let prometheus = Prometheus::new(Config {
        url: format!("http://127.0.0.1:{port}"),
        retries: 0,
        timeout: Duration::from_secs(2),
        ..Config::default()
    })
    .unwrap();
    let task = tokio::spawn(controller::run(
        cp.client(),
        std::sync::Arc::new(prometheus),
        Options {
            refresh: Duration::from_secs(1),
            scope: scope.clone(),
            ..Options::default()
        },
        std::sync::Arc::new(tailor_recommender::metrics::Metrics::new()),
    ));
    let (inside, outside): (Vec<&String>, Vec<&String>) =
        nss.iter().partition(|ns| scope.contains(ns));
    assert!(!inside.is_empty() && !outside.is_empty());
    for ns in inside {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let va = get(cp, ns, name).await;
            if written(&va) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{ns}/{name} in {scope}: not written: {:#?}",
                va.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Several refreshes (1 s) later, the others are still as created.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for ns in outside {
        let va = get(cp, ns, name).await;
        assert!(
            va.status.is_none(),
            "{ns}/{name} is outside {scope} but got a status: {:#?}",
            va.status
        );
    }
    task.abort();
}

#[tokio::test]
async fn only_objects_in_scope_get_a_status() {
    let cp = ControlPlane::start().await.unwrap();
    let mut nss = Vec::new();
    for _ in 0..3 {
        nss.push(cp.namespace("scope").await.unwrap());
    }
    let only = Scope::new(&[nss[0].clone(), nss[2].clone()], &[]).unwrap();
    run_in(&cp, only, &nss, "web").await;
    let except = Scope::new(&[], &[nss[1].clone()]).unwrap();
    run_in(&cp, except, &nss, "api").await;
}
