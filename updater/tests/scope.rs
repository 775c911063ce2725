//! `tailor-updater --namespaces` and `--exclude-namespaces` on the simulator: the same
//! workload, VerticalAutoscaler and recommendation in two namespaces, and only the one in scope
//! is resized, recorded (ResizeState) and reported (Events); the webhook sizes new pods in
//! scope only and its gate lets a person's memory cut elsewhere through unread.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use common::admission::sized;
use common::{Env, applied, container};

fn app() -> Value {
    json!([container(
        "app",
        json!({"cpu": "500m", "memory": "256Mi"}),
        json!({"cpu": "1", "memory": "512Mi"})
    )])
}

fn cpu(value: &str) -> Value {
    json!([{"containerName": "app", "target": {"cpu": value, "memory": "256Mi"}}])
}

/// In `env.ns` and in a second namespace: the StatefulSet `w` of one pod and its `InPlace`
/// VerticalAutoscaler. Returns the second namespace.
async fn twins(env: &mut Env) -> String {
    let a = env.ns.clone();
    let b = env.cp.namespace("other").await.unwrap();
    for ns in [&b, &a] {
        env.ns = ns.clone();
        env.workload("w", 1, app()).await;
        env.va("w", "w", json!({})).await;
    }
    b
}

/// Writes the recommendation `cpu` in `env.ns` and in `other`.
async fn recommend_both(env: &mut Env, other: &str, value: &str) {
    let own = env.ns.clone();
    for ns in [other, own.as_str()] {
        env.ns = ns.to_owned();
        env.recommend("w", cpu(value)).await;
    }
}

/// Nothing happened in `ns`: its pod is as created, the updater wrote no record and no Event.
async fn untouched(env: &mut Env, ns: &str, log: &str) {
    let own = std::mem::replace(&mut env.ns, ns.to_owned());
    let pod = env.pods().get("w-0").await.unwrap();
    assert_eq!(
        pod.metadata.generation,
        Some(1),
        "the pod outside the scope was resized:\n{log}"
    );
    assert!(
        env.states().get_opt("w").await.unwrap().is_none(),
        "a ResizeState was written outside the scope"
    );
    let events = env.events("Pod", "w-0").await;
    assert!(events.is_empty(), "Events outside the scope: {events:?}");
    let events = env.events("VerticalAutoscaler", "w").await;
    assert!(events.is_empty(), "Events outside the scope: {events:?}");
    env.ns = own;
}

#[tokio::test]
async fn only_the_namespaces_in_scope_are_resized() {
    let mut env = Env::start(1, "8", "32Gi", 0.2).await;
    let other = twins(&mut env).await;
    let a = env.ns.clone();

    // --namespaces a: a's pod is resized, b's is not.
    let mut updater = env.updater("only", &[&format!("--namespaces={a}")]);
    updater.wait_ready().await;
    recommend_both(&mut env, &other, "750m").await;
    env.wait_pod("w-0", "resized to 750m", |p| {
        applied(p, "app", "requests", "cpu", "750m")
    })
    .await;
    env.wait_state("w", "recorded", |s| !s.last_resizes.is_empty())
        .await;
    // A few resyncs (2 s) later, b is still as it was.
    tokio::time::sleep(Duration::from_secs(5)).await;
    untouched(&mut env, &other, &updater.process.log_tail(40)).await;
    assert!(
        updater
            .process
            .log_tail(400)
            .contains(&format!("watching only namespaces {a}")),
        "the scope is not logged:\n{}",
        updater.process.log_tail(40)
    );
    updater.kill();

    // --exclude-namespaces b: the same.
    let updater = env.updater("except", &[&format!("--exclude-namespaces={other}")]);
    updater.wait_ready().await;
    recommend_both(&mut env, &other, "900m").await;
    env.wait_pod("w-0", "resized to 900m", |p| {
        applied(p, "app", "requests", "cpu", "900m")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    untouched(&mut env, &other, &updater.process.log_tail(40)).await;
}

/// Both webhook configurations of the test's updater sent requests of `nss`.
async fn register_for_both(env: &Env, nss: &[&str]) {
    let name = env.webhook_name();
    let selector: LabelSelector = serde_json::from_value(json!({"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": nss}]}))
    .unwrap();
    let pp = PostParams::default();
    let mutating = Api::<MutatingWebhookConfiguration>::all(env.cp.client());
    let mut m = mutating.get(&name).await.unwrap();
    m.webhooks.as_mut().unwrap()[0].namespace_selector = Some(selector.clone());
    mutating.replace(&name, &pp, &m).await.unwrap();
    let validating = Api::<ValidatingWebhookConfiguration>::all(env.cp.client());
    let mut v = validating.get(&name).await.unwrap();
    v.webhooks.as_mut().unwrap()[0].namespace_selector = Some(selector);
    validating.replace(&name, &pp, &v).await.unwrap();
}

/// Waits until a dry-run pod create in `env.ns` reaches the size webhook (answered "not
/// managed" more than `before` times).
async fn wait_called(env: &Env, updater: &common::Updater, before: f64) {
    let probe: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"generateName": "probe-"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let _ = env.pods().create(&dry, &probe).await;
        let now = updater
            .metric("tailor_admission_requests_total{webhook=\"size\",outcome=\"not_managed\"}")
            .await;
        if now > before {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API server never called the size webhook for {}",
            env.ns
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn the_webhook_serves_the_namespaces_in_scope_only() {
    let mut env = Env::start(1, "8", "32Gi", 0.2).await;
    let a = env.ns.clone();
    let b = env.cp.namespace("other").await.unwrap();
    let scope = format!("--namespaces={a}");
    let (updater, _) = env.webhook_updater("webhook", &[&scope]).await;
    // Both webhooks registered for b too: the API server calls the updater for b, and the
    // updater itself must leave b alone.
    register_for_both(&env, &[&a, &b]).await;
    env.ns = b.clone();
    let before = updater
        .metric("tailor_admission_requests_total{webhook=\"size\",outcome=\"not_managed\"}")
        .await;
    wait_called(&env, &updater, before).await;

    // An Initial VerticalAutoscaler with a recommendation in both, then the pods.
    for ns in [&b, &a] {
        env.ns = ns.clone();
        env.va("w", "w", json!({"updatePolicy": {"updateMode": "Initial"}}))
            .await;
        env.recommend("w", cpu("750m")).await;
        // The webhook's caches hold the recommendation before the pod is created.
        tokio::time::sleep(Duration::from_millis(500)).await;
        env.workload("w", 1, app()).await;
    }
    let pod = env.pods().get("w-0").await.unwrap();
    assert!(sized(&pod), "the pod in scope was not sized: {pod:?}");
    env.ns = b.clone();
    let pod = env.pods().get("w-0").await.unwrap();
    assert!(!sized(&pod), "the pod outside the scope was sized");
    assert_eq!(
        common::spec_value(&pod, "app", "requests", "cpu").as_deref(),
        Some("500m")
    );
    assert!(
        updater
            .metric("tailor_admission_requests_total{webhook=\"size\",outcome=\"sized\"}")
            .await
            >= 1.0
    );

    // A person's memory cut of an annotated pod, with no approval pending: the gate denies it
    // in scope and, knowing nothing of b, lets it through there.
    let cut = |ns: &str| {
        let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(env.cp.client(), ns);
        async move {
            pods.patch(
                "w-0",
                &PatchParams::default(),
                &Patch::Merge(
                    json!({"metadata": {"annotations": {"tailor.dev/approve-memory-decrease": "0000000000"}}}),
                ),
            )
            .await
            .unwrap();
            let resize = json!({"spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "384Mi"}}}]}});
            pods.patch_resize("w-0", &PatchParams::default(), &Patch::Strategic(resize))
                .await
        }
    };
    let denied = cut(&a).await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
        "the gate let an unapproved cut through in scope: {denied:?}"
    );
    let allowed = cut(&b).await;
    assert!(
        allowed.is_ok(),
        "the gate refused a cut outside the scope: {allowed:?}"
    );
}
