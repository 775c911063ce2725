//! The recommender controller against a real API server and a real Prometheus that
//! misbehaves: partial answers never lower a recommendation, and after an outage each object
//! reads on from where it stopped instead of its whole window again.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tailor_crds::quantity::{cpu_millis, memory_bytes};
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_e2e::fault::{FaultProxy, Mode};
use tailor_e2e::prometheus::PrometheusOptions;
use tailor_e2e::sim::history::{
    HistoryContainer, ReplicaSetOwner, generate, openmetrics, replicaset_owners,
};
use tailor_e2e::sim::usage::PodUsage;
use tailor_e2e::{ControlPlane, Prometheus as PromServer};
use tailor_recommender::controller::{self, Options};
use tailor_recommender::metrics::Metrics;
use tailor_recommender::prometheus::{Config, Prometheus};

const GI: i64 = 1 << 30;
const STEP: i64 = 60;
const WAIT: Duration = Duration::from_secs(60);

/// Two days of `shop/web` (Deployment -> ReplicaSet web-aaa -> pod web-aaa-1, 300-500 MiB,
/// 0.1-0.6 cores a day), ending now.
fn history() -> String {
    history_of(
        r#"{"*": {"model": "daily", "cpu": {"min": 0.1, "max": 0.6}, "memory": {"min": "300Mi", "max": "500Mi"}}}"#,
    )
}

/// Two days of `shop/web` with the usage model `models` (pod usage JSON), ending now.
fn history_of(models: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now / STEP * STEP;
    let start = end - 2 * 86_400;
    let models = PodUsage::parse(models).unwrap();
    let c = HistoryContainer::new(
        "shop",
        "web-aaa-1",
        "app",
        models.model("app").unwrap().clone(),
        ("ReplicaSet", "web-aaa"),
    );
    let mut series = generate(&[c], start, end, STEP);
    series.extend(replicaset_owners(
        &[ReplicaSetOwner {
            namespace: "shop".into(),
            replicaset: "web-aaa".into(),
            owner_kind: "Deployment".into(),
            owner_name: "web".into(),
        }],
        start,
        end,
        STEP,
    ));
    openmetrics(&series)
}

/// The workload and its VerticalAutoscaler `web`.
async fn workload(client: &kube::Client) -> Api<VerticalAutoscaler> {
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap(),
        )
        .await
        .unwrap();
    let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}});
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    }))
    .unwrap();
    let deploy = Api::<Deployment>::namespaced(client.clone(), "shop")
        .create(&pp, &deploy)
        .await
        .unwrap();
    let owner = |kind: &str, name: &str, uid: &Option<String>| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}]);
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-aaa", "ownerReferences": owner("Deployment", "web", &deploy.metadata.uid)},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    }))
    .unwrap();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), "shop")
        .create(&pp, &rs)
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-aaa-1", "labels": {"app": "web"}, "ownerReferences": owner("ReplicaSet", "web-aaa", &rs.metadata.uid)},
        "spec": {"containers": [{"name": "app", "image": "example/app:1",
            "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]},
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&pp, &pod)
        .await
        .unwrap();
    let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), "shop");
    let va: VerticalAutoscaler = serde_json::from_value(json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "metadata": {"name": "web"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
    }))
    .unwrap();
    vas.create(&pp, &va).await.unwrap();
    vas
}

fn prometheus(url: &str) -> Arc<Prometheus> {
    Arc::new(
        Prometheus::new(Config {
            url: url.into(),
            retries: 0,
            timeout: Duration::from_secs(5),
            ..Config::default()
        })
        .unwrap(),
    )
}

fn condition(va: &VerticalAutoscaler, type_: &str) -> Option<(String, String, String)> {
    va.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait(
    vas: &Api<VerticalAutoscaler>,
    what: &str,
    check: impl Fn(&VerticalAutoscaler) -> bool,
) -> VerticalAutoscaler {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let va = vas.get("web").await.unwrap();
        if check(&va) {
            return va;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {what}: {:#?}",
            va.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `(cpu millicores, memory bytes)` of the target.
fn target(va: &VerticalAutoscaler) -> Option<(i64, i64)> {
    let rec = va.status.as_ref()?.recommendation.as_ref()?;
    let t = &rec.container_recommendations.first()?.target;
    Some((
        cpu_millis(t.cpu.as_ref()?).ok()?,
        memory_bytes(t.memory.as_ref()?).ok()?,
    ))
}

fn run(
    client: &kube::Client,
    prom: Arc<Prometheus>,
    refresh: Duration,
) -> tokio::task::JoinHandle<()> {
    let options = Options {
        refresh,
        ..Options::default()
    };
    tokio::spawn(controller::run(
        client.clone(),
        prom,
        options,
        Arc::new(Metrics::new()),
    ))
}

#[tokio::test]
async fn partial_history_raises_but_never_lowers_a_recommendation() {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let vas = workload(&client).await;
    // An earlier recommendation: more memory than the history calls for, less CPU.
    vas.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"recommendation": {
            "observedGeneration": 1,
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "containerRecommendations": [{"containerName": "app",
                "target": {"cpu": "100m", "memory": "4Gi"},
                "lowerBound": {"cpu": "100m", "memory": "4Gi"},
                "upperBound": {"cpu": "100m", "memory": "4Gi"}}]}}})),
    )
    .await
    .unwrap();
    let history = history();
    // A remote-read store that is down: every answer carries a warning.
    let partial = PromServer::start(PrometheusOptions {
        backfill: Some(history.clone()),
        remote_read: vec!["http://127.0.0.1:9/api/v1/read".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let task = run(&client, prometheus(partial.url()), Duration::from_secs(600));
    let va = wait(&vas, "held for partial history", |va| {
        condition(va, "HistoryUnavailable").is_some_and(|c| c.1 == "PartialHistory")
    })
    .await;
    task.abort();
    let (status, _, message) = condition(&va, "HistoryUnavailable").unwrap();
    assert_eq!(status, "True");
    assert!(
        message.contains("remote_read") && message.contains("held: app"),
        "{message}"
    );
    let (cpu, memory) = target(&va).unwrap();
    assert_eq!(memory, 4 * GI, "the memory cut is held");
    assert!(cpu > 100, "the CPU raise passes: {cpu}m");

    // The same history without the warning: the cut is made.
    let healthy = PromServer::backfilled(&history).await.unwrap();
    let task = run(&client, prometheus(healthy.url()), Duration::from_secs(2));
    let va = wait(&vas, "lowered from whole history", |va| {
        condition(va, "HistoryUnavailable").is_some_and(|c| c.0 == "False")
    })
    .await;
    task.abort();
    let (_, memory) = target(&va).unwrap();
    assert!(memory < GI, "lowered once the history is whole: {memory}");
}

#[tokio::test]
async fn what_a_partial_answer_gave_is_read_again_not_kept() {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let vas = workload(&client).await;
    // The partial answer lacks the daily spikes to 1.9 GiB that the whole history has.
    let partial = PromServer::start(PrometheusOptions {
        backfill: Some(history_of(
            r#"{"*": {"model": "constant", "cpu": 0.2, "memory": "400Mi"}}"#,
        )),
        remote_read: vec!["http://127.0.0.1:9/api/v1/read".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let whole = PromServer::backfilled(&history_of(
        r#"{"*": {"model": "spikes", "cpu": 0.2, "memory": "400Mi", "spikeMemory": "1500Mi", "everySeconds": 86400, "durationSeconds": 900}}"#,
    ))
    .await
    .unwrap();
    let proxy = FaultProxy::start(partial.url().trim_start_matches("http://"))
        .await
        .unwrap();
    let prom = prometheus(&format!("http://{}", proxy.address()));
    let task = run(&client, prom, Duration::from_secs(2));
    wait(&vas, "computed from the partial answer", |va| {
        condition(va, "HistoryUnavailable").is_some_and(|c| c.1 == "PartialHistory")
            && target(va).is_some()
    })
    .await;
    // The same Prometheus address, whole answers from now on.
    proxy.set_upstream(whole.url().trim_start_matches("http://"));
    let va = wait(&vas, "computed from whole answers", |va| {
        condition(va, "HistoryUnavailable").is_some_and(|c| c.0 == "False")
    })
    .await;
    task.abort();
    let (_, memory) = target(&va).unwrap();
    assert!(
        memory >= 1900 * (1 << 20),
        "the spikes the partial answer lacked are read: {memory}"
    );
}

#[tokio::test]
async fn after_an_outage_history_is_read_on_not_again_whole() {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let vas = workload(&client).await;
    let server = PromServer::backfilled(&history()).await.unwrap();
    let upstream = server.url().trim_start_matches("http://").to_owned();
    let proxy = FaultProxy::start(&upstream).await.unwrap();
    let prom = prometheus(&format!("http://{}", proxy.address()));
    let task = run(&client, prom.clone(), Duration::from_secs(2));
    wait(&vas, "recommended", |va| target(va).is_some()).await;
    let first_pass = prom.stats().samples.load(Ordering::SeqCst);
    assert!(
        first_pass > 2 * 2880,
        "the whole window: {first_pass} samples"
    );

    // Down for a few passes.
    proxy.set(Mode::Down);
    wait(&vas, "HistoryUnavailable", |va| {
        condition(va, "HistoryUnavailable").is_some_and(|c| c.0 == "True")
    })
    .await;
    let va = vas.get("web").await.unwrap();
    let (_, reason, message) = condition(&va, "HistoryUnavailable").unwrap();
    assert_eq!(reason, "PrometheusError");
    assert!(
        target(&va).is_some(),
        "the previous recommendation is kept: {message}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = prom.stats().samples.load(Ordering::SeqCst);

    // Back: the next passes read the gap, not the two days again.
    proxy.set(Mode::Pass);
    wait(&vas, "history read again", |va| {
        condition(va, "HistoryUnavailable").is_some_and(|c| c.0 == "False")
    })
    .await;
    let after = prom.stats().samples.load(Ordering::SeqCst);
    task.abort();
    assert!(
        after - before < first_pass / 20,
        "{} samples read after the outage, against {first_pass} for the whole window",
        after - before
    );
}

#[tokio::test]
async fn after_an_api_server_restart_the_caches_resync_and_objects_are_computed() {
    let mut cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let vas = workload(&client).await;
    let server = PromServer::backfilled(&history()).await.unwrap();
    let task = run(&client, prometheus(server.url()), Duration::from_secs(2));
    wait(&vas, "recommended", |va| target(va).is_some()).await;

    cp.restart_apiserver(Duration::from_secs(5)).await.unwrap();
    // An object made after the restart is computed: only a recommender whose watches came
    // back sees it.
    let later: VerticalAutoscaler = serde_json::from_value(json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "metadata": {"name": "later"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
    }))
    .unwrap();
    vas.create(&PostParams::default(), &later).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let va = loop {
        let va = vas.get("later").await.unwrap();
        if target(&va).is_some() {
            break va;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not recommended: {:#?}",
            va.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    task.abort();
    assert_eq!(
        condition(&va, "HistoryUnavailable").unwrap().0,
        "False",
        "{:?}",
        va.status
    );
}
