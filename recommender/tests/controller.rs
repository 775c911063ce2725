//! The recommender controller against a real API server and a real Prometheus backfilled with
//! the simulator's history: recommendations and conditions in VerticalAutoscaler status, and
//! the updater's ResizeState mirrored there.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tailor_crds::quantity::{cpu_millis, memory_bytes};
use tailor_crds::v1alpha1::{FloorReason, VerticalAutoscaler};
use tailor_e2e::sim::history::{
    HistoryContainer, JvmHeap, JvmHeapMetrics, ReplicaSetOwner, generate, jvm_heap, openmetrics,
    replicaset_owners,
};
use tailor_e2e::sim::usage::PodUsage;
use tailor_e2e::{ControlPlane, Prometheus as PromServer};
use tailor_recommender::controller::{self, Options};
use tailor_recommender::prometheus::{Config, Prometheus};

const MI: f64 = 1024.0 * 1024.0;
const GI: f64 = 1024.0 * MI;
const DAY: i64 = 86_400;
const STEP: i64 = 60;
const WAIT: Duration = Duration::from_secs(60);

fn history(
    pod: &str,
    owner: (&str, &str),
    model: Value,
    lifetime: Option<(i64, i64)>,
) -> HistoryContainer {
    let models = PodUsage::parse(&json!({"*": model}).to_string()).unwrap();
    HistoryContainer {
        cpu: (Some(0.5), Some(1.0)),
        memory: (Some(512.0 * MI), Some(8.0 * GI)),
        lifetime,
        ..HistoryContainer::new(
            "shop",
            pod,
            "app",
            models.model("app").unwrap().clone(),
            owner,
        )
    }
}

fn workload(kind: &str, name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "serviceName": name,
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
    })
}

fn owner_ref(kind: &str, name: &str, uid: &str) -> Value {
    json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid, "controller": true}])
}

fn pod(name: &str, owner: Value, args: Value, memory_request: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": owner},
        "spec": {"containers": [{"name": "app", "image": "example/app:1", "args": args,
            "resources": {"requests": {"cpu": "500m", "memory": memory_request}}}]},
    }))
    .unwrap()
}

fn va(name: &str, target: Value) -> VerticalAutoscaler {
    serde_json::from_value(json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "metadata": {"name": name}, "spec": {"targetRef": target},
    }))
    .unwrap()
}

fn cond<'a>(va: &'a VerticalAutoscaler, type_: &str) -> Option<(&'a str, &'a str)> {
    va.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.message.as_str()))
}

async fn wait_va(
    api: &Api<VerticalAutoscaler>,
    name: &str,
    what: &str,
    check: impl Fn(&VerticalAutoscaler) -> bool,
) -> VerticalAutoscaler {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let v = api.get(name).await.unwrap();
        if check(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: not {what}: {:#?}",
            v.status
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn recommendations_and_conditions_are_written_for_every_object() {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let ns = "shop";
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let pp = PostParams::default();
    // web: Deployment -> ReplicaSet web-bbb -> pod; an earlier rollout web-aaa peaked at 1524 MiB.
    let deploy = Api::<Deployment>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &serde_json::from_value(workload("Deployment", "web")).unwrap(),
        )
        .await
        .unwrap();
    let mut rs: ReplicaSet = serde_json::from_value(workload("ReplicaSet", "web-bbb")).unwrap();
    rs.metadata.owner_references = serde_json::from_value(owner_ref(
        "Deployment",
        "web",
        deploy.metadata.uid.as_deref().unwrap(),
    ))
    .unwrap();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .create(&pp, &rs)
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    pods.create(
        &pp,
        &pod(
            "web-bbb-1",
            owner_ref("ReplicaSet", "web-bbb", rs.metadata.uid.as_deref().unwrap()),
            json!([]),
            "512Mi",
        ),
    )
    .await
    .unwrap();
    // jvm: a StatefulSet pod started with -Xmx3g that uses 400 MiB.
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &serde_json::from_value(workload("StatefulSet", "jvm")).unwrap(),
        )
        .await
        .unwrap();
    pods.create(
        &pp,
        &pod(
            "jvm-0",
            owner_ref("StatefulSet", "jvm", sts.metadata.uid.as_deref().unwrap()),
            json!(["-Xmx3g", "-jar", "app.jar"]),
            "1Gi",
        ),
    )
    .await
    .unwrap();
    // young: three hours of history only, currently requesting 2 GiB.
    let young = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(
            &pp,
            &serde_json::from_value(workload("StatefulSet", "young")).unwrap(),
        )
        .await
        .unwrap();
    pods.create(
        &pp,
        &pod(
            "young-0",
            owner_ref(
                "StatefulSet",
                "young",
                young.metadata.uid.as_deref().unwrap(),
            ),
            json!([]),
            "2Gi",
        ),
    )
    .await
    .unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now / STEP * STEP;
    let start = end - 8 * DAY;
    let mut series = generate(
        &[
            history(
                "web-aaa-1",
                ("ReplicaSet", "web-aaa"),
                json!({"model": "spikes", "cpu": 0.2, "memory": "500Mi", "spikeMemory": "1Gi", "everySeconds": 86400, "durationSeconds": 900}),
                Some((start, start + 3 * DAY)),
            ),
            history(
                "web-bbb-1",
                ("ReplicaSet", "web-bbb"),
                json!({"model": "daily", "cpu": {"min": 0.1, "max": 0.6}, "memory": {"min": "300Mi", "max": "500Mi"}}),
                Some((start + 3 * DAY + STEP, end)),
            ),
            history(
                "jvm-0",
                ("StatefulSet", "jvm"),
                json!({"model": "constant", "cpu": 0.2, "memory": "400Mi"}),
                None,
            ),
            history(
                "young-0",
                ("StatefulSet", "young"),
                json!({"model": "constant", "cpu": 0.1, "memory": "100Mi"}),
                Some((end - 3 * 3600, end)),
            ),
        ],
        start,
        end,
        STEP,
    );
    let rs_owner = |rs: &str| ReplicaSetOwner {
        namespace: ns.into(),
        replicaset: rs.into(),
        owner_kind: "Deployment".into(),
        owner_name: "web".into(),
    };
    series.extend(replicaset_owners(
        &[rs_owner("web-aaa"), rs_owner("web-bbb")],
        start,
        end,
        STEP,
    ));
    let server = PromServer::backfilled(&openmetrics(&series)).await.unwrap();
    let prom = std::sync::Arc::new(
        Prometheus::new(Config {
            url: server.url().into(),
            retries: 0,
            timeout: Duration::from_secs(20),
            ..Config::default()
        })
        .unwrap(),
    );

    let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), ns);
    for (name, target) in [
        (
            "web",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}),
        ),
        (
            "jvm",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "jvm"}),
        ),
        (
            "young",
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "young"}),
        ),
        (
            "ghost",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "ghost"}),
        ),
        (
            "rollout",
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"}),
        ),
    ] {
        vas.create(&pp, &va(name, target)).await.unwrap();
    }
    // A long refresh: everything below is triggered by object changes.
    let options = Options {
        refresh: Duration::from_secs(600),
        ..Options::default()
    };
    let metrics = std::sync::Arc::new(tailor_recommender::metrics::Metrics::new());
    let task = tokio::spawn(controller::run(
        client.clone(),
        prom.clone(),
        options,
        metrics.clone(),
    ));

    // web: both rollouts count; the earlier rollout's 1524 MiB peak sets the floor.
    let web = wait_va(&vas, "web", "recommended", |v| {
        cond(v, "RecommendationProvided").is_some_and(|c| c.0 == "True")
    })
    .await;
    let rec = &web
        .status
        .as_ref()
        .unwrap()
        .recommendation
        .as_ref()
        .unwrap()
        .container_recommendations[0];
    assert_eq!(rec.container_name, "app");
    let memory = memory_bytes(rec.target.memory.as_ref().unwrap()).unwrap() as f64;
    assert!(
        memory >= (500.0 + 1024.0) * MI * 1.1,
        "floor above the earlier rollout's peak: {memory}"
    );
    let floor = rec.memory_floor.as_ref().unwrap();
    assert_eq!(floor.reason, FloorReason::Peak);
    let margin = floor.peak_margin.unwrap();
    assert!((0.15..=0.5).contains(&margin), "peak margin {margin}");
    let cpu = cpu_millis(rec.target.cpu.as_ref().unwrap()).unwrap();
    assert!((400..=800).contains(&cpu), "cpu {cpu}");
    assert!(rec.samples.unwrap() > 20_000);
    assert_eq!(rec.history_span.as_deref(), Some("8d"));
    assert_eq!(cond(&web, "LowConfidence").unwrap().0, "False");
    assert_eq!(cond(&web, "HistoryUnavailable").unwrap().0, "False");
    assert_eq!(web.status.as_ref().unwrap().observed_generation, Some(1));

    // Exported for Grafana.
    let text = metrics.encode();
    let floor_series = format!(
        "tailor_recommendation_memory_bytes{{namespace=\"shop\",verticalautoscaler=\"web\",container=\"app\",bound=\"floor\"}} {}",
        memory_bytes(&floor.value).unwrap()
    );
    assert!(
        text.contains(&floor_series),
        "{floor_series} missing:\n{text}"
    );
    assert!(text.contains("tailor_recommendation_memory_floor_reason{namespace=\"shop\",verticalautoscaler=\"web\",container=\"app\",reason=\"Peak\"} 1"));
    assert!(text.contains(&format!("tailor_recommendation_cpu_cores{{namespace=\"shop\",verticalautoscaler=\"web\",container=\"app\",bound=\"target\"}} {}", cpu as f64 / 1000.0)));
    // The live pod (the earlier rollout's pods are only history) and its requests, for the
    // dashboards' joins and savings.
    for series in [
        "tailor_workload_pods{namespace=\"shop\",verticalautoscaler=\"web\"} 1",
        "tailor_pod_info{namespace=\"shop\",pod=\"web-bbb-1\",verticalautoscaler=\"web\"} 1",
        "tailor_workload_requests_cpu_cores{namespace=\"shop\",verticalautoscaler=\"web\",container=\"app\"} 0.5",
    ] {
        assert!(text.contains(series), "{series} missing:\n{text}");
    }
    assert!(!text.contains("pod=\"web-aaa-1\""), "{text}");

    // jvm: never below heap + overhead.
    let jvm = wait_va(&vas, "jvm", "recommended", |v| {
        cond(v, "RecommendationProvided").is_some_and(|c| c.0 == "True")
    })
    .await;
    let rec = &jvm
        .status
        .as_ref()
        .unwrap()
        .recommendation
        .as_ref()
        .unwrap()
        .container_recommendations[0];
    assert!(memory_bytes(rec.target.memory.as_ref().unwrap()).unwrap() as f64 >= 3.75 * GI);
    assert_eq!(
        rec.memory_floor.as_ref().unwrap().reason,
        FloorReason::HeapHint
    );

    // young: low confidence, and no decrease below the 2 GiB it requests.
    let y = wait_va(&vas, "young", "recommended", |v| {
        cond(v, "RecommendationProvided").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(cond(&y, "LowConfidence").unwrap().0, "True");
    let rec = &y
        .status
        .as_ref()
        .unwrap()
        .recommendation
        .as_ref()
        .unwrap()
        .container_recommendations[0];
    assert!(memory_bytes(rec.target.memory.as_ref().unwrap()).unwrap() as f64 >= 2.0 * GI);

    assert!(metrics.is_ready(), "ready after the first pass");

    // ghost: no pods; rollout: unsupported. Neither stops the others.
    let g = wait_va(&vas, "ghost", "NoPodsMatched", |v| {
        cond(v, "NoPodsMatched").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(cond(&g, "RecommendationProvided").unwrap().0, "False");
    let r = wait_va(&vas, "rollout", "ConfigUnsupported", |v| {
        cond(v, "ConfigUnsupported").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert!(
        cond(&r, "ConfigUnsupported")
            .unwrap()
            .1
            .contains("argoproj.io/v1alpha1/Rollout")
    );

    // A spec change is acted on at once, not at the next refresh, and reads only the new
    // samples: the history of the first pass is kept.
    let samples = |p: &Prometheus| p.stats().samples.load(std::sync::atomic::Ordering::Relaxed);
    let before_change = samples(&prom);
    vas.patch(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            json!({"spec": {"recommenderPolicy": {"memory": {"peakMargin": 1.0}}}}),
        ),
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let web = wait_va(&vas, "web", "recomputed", |v| {
        v.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let read = samples(&prom) - before_change;
    assert!(
        read < 1_000,
        "an incremental read, not the whole window again: {read} samples"
    );
    let rec = &web
        .status
        .as_ref()
        .unwrap()
        .recommendation
        .as_ref()
        .unwrap()
        .container_recommendations[0];
    assert!(memory_bytes(rec.target.memory.as_ref().unwrap()).unwrap() as f64 >= 2.0 * 1524.0 * MI);

    // The recommendation says which spec and which target it was computed for.
    let bound = web
        .status
        .as_ref()
        .unwrap()
        .recommendation
        .as_ref()
        .unwrap();
    assert_eq!(bound.observed_generation, Some(2));
    assert_eq!(bound.target_ref.as_ref(), Some(&web.spec.target_ref));

    // The updater took back a memory decrease the kubelet refused at 4Gi of usage and wrote
    // it to its ResizeState (it may not write the status): the recommender mirrors the record
    // into the status and keeps its floor above that usage, as above any peak.
    let refused = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "ResizeState",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"verticalAutoscalerUid": web.metadata.uid,
            "conditions": [{"type": "AwaitingApproval", "status": "False", "reason": "NothingToApprove",
                            "message": "no memory decrease waits for approval",
                            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string()}],
            "lastResizes": [{"pod": "web-x", "podUid": "u-1",
            "time": k8s_openapi::jiff::Timestamp::now().to_string(), "outcome": "Reverted",
            "containers": [{"containerName": "app", "from": {"memory": "6Gi"}, "to": {"memory": "3Gi"},
                            "refusedUsage": "4Gi"}]}]},
    });
    Api::<tailor_crds::ResizeState>::namespaced(client.clone(), ns)
        .patch(
            "web",
            &kube::api::PatchParams::apply("tailor-updater").force(),
            &kube::api::Patch::Apply(refused),
        )
        .await
        .unwrap();
    let web = wait_va(&vas, "web", "a floor above the refused usage", |v| {
        memory_rec(v, "app").0 >= 2.0 * 4.0 * GI
    })
    .await;
    assert_eq!(memory_rec(&web, "app").1, FloorReason::Peak);
    let status = web.status.as_ref().unwrap();
    assert_eq!(status.last_resizes[0].pod, "web-x", "mirrored");
    assert_eq!(
        cond(&web, "AwaitingApproval").map(|c| c.0),
        Some("False"),
        "mirrored"
    );
    assert_eq!(status.pending_approval_count, Some(0));
    assert_eq!(cond(&web, "RecommendationProvided").unwrap().0, "True");

    // The live memory guard raised the container's limit to 12Gi: the recommender reads the
    // raise from the status (mirrored from the ResizeState) and never recommends below it.
    let raised = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "ResizeState",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"verticalAutoscalerUid": web.metadata.uid,
            "lastResizes": status.last_resizes,
            "memoryGuardRaises": [{"pod": "web-x", "podUid": "u-1", "containerName": "app",
                "time": k8s_openapi::jiff::Timestamp::now().to_string(),
                "usage": "7Gi", "from": "8Gi", "to": "12Gi"}]},
    });
    Api::<tailor_crds::ResizeState>::namespaced(client.clone(), ns)
        .patch(
            "web",
            &kube::api::PatchParams::apply("tailor-updater").force(),
            &kube::api::Patch::Apply(raised),
        )
        .await
        .unwrap();
    let web = wait_va(&vas, "web", "a floor at the guard's raise", |v| {
        memory_rec(v, "app").0 >= 12.0 * GI
    })
    .await;
    assert_eq!(memory_rec(&web, "app").1, FloorReason::MemoryGuard);
    assert_eq!(
        web.status.as_ref().unwrap().memory_guard_raises[0].to.0,
        "12Gi",
        "mirrored"
    );

    // Prometheus goes away: HistoryUnavailable, and the recommendation is kept.
    let before = web.status.as_ref().unwrap().recommendation.clone();
    drop(server);
    vas.patch(
        "web",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"recommenderPolicy": {"cpu": {"margin": 0.2}}}})),
    )
    .await
    .unwrap();
    let web = wait_va(&vas, "web", "HistoryUnavailable", |v| {
        cond(v, "HistoryUnavailable").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert!(
        cond(&web, "HistoryUnavailable")
            .unwrap()
            .1
            .contains("Prometheus unavailable")
    );
    assert_eq!(web.status.as_ref().unwrap().recommendation, before);
    assert_eq!(cond(&web, "RecommendationProvided").unwrap().0, "True");
    // Kept, it still says it was computed for the earlier spec: the updater does not apply it
    // to the new one.
    assert_eq!(web.status.as_ref().unwrap().observed_generation, Some(3));
    assert_eq!(
        web.status
            .as_ref()
            .unwrap()
            .recommendation
            .as_ref()
            .unwrap()
            .observed_generation,
        Some(2)
    );
    task.abort();
}

fn memory_rec(va: &VerticalAutoscaler, container: &str) -> (f64, FloorReason) {
    let rec = va
        .status
        .as_ref()
        .unwrap()
        .recommendation
        .as_ref()
        .unwrap()
        .container_recommendations
        .iter()
        .find(|r| r.container_name == container)
        .unwrap_or_else(|| panic!("no recommendation for {container}: {:#?}", va.status));
    (
        memory_bytes(rec.target.memory.as_ref().unwrap()).unwrap() as f64,
        rec.memory_floor.as_ref().unwrap().reason,
    )
}

#[tokio::test]
async fn jvm_heap_metrics_in_prometheus_set_the_memory_floor() {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let ns = "shop";
    let pp = PostParams::default();
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let statefulsets = Api::<StatefulSet>::namespaced(client.clone(), ns);
    // spring: one container, no heap flag it can see (the image's entrypoint sets it).
    // sidecar: a proxy beside a JVM whose heap is a percentage of its limit.
    // off: like spring, with heap hints turned off.
    for (name, containers) in [
        (
            "spring",
            json!([{"name": "app", "image": "example/app:1", "args": ["-jar", "app.jar"],
                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]),
        ),
        (
            "sidecar",
            json!([
                {"name": "proxy", "image": "example/proxy:1",
                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
                {"name": "app", "image": "example/app:1",
                 "env": [{"name": "JAVA_TOOL_OPTIONS", "value": "-XX:MaxRAMPercentage=75"}],
                 "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}},
            ]),
        ),
        (
            "off",
            json!([{"name": "app", "image": "example/app:1",
                    "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]),
        ),
    ] {
        let sts = statefulsets
            .create(
                &pp,
                &serde_json::from_value(workload("StatefulSet", name)).unwrap(),
            )
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-0"),
                         "ownerReferences": owner_ref("StatefulSet", name, sts.metadata.uid.as_deref().unwrap())},
            "spec": {"containers": containers},
        }))
        .unwrap();
        pods.create(&pp, &pod).await.unwrap();
    }

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now / STEP * STEP;
    let start = end - 2 * DAY;
    let usage = |pod: &str, container: &str, memory: &str| {
        let models = PodUsage::parse(
            &json!({"*": {"model": "constant", "cpu": 0.1, "memory": memory}}).to_string(),
        )
        .unwrap();
        HistoryContainer {
            cpu: (Some(0.5), Some(1.0)),
            memory: (Some(512.0 * MI), Some(8.0 * GI)),
            ..HistoryContainer::new(
                ns,
                pod,
                container,
                models.model(container).unwrap().clone(),
                ("StatefulSet", pod.trim_end_matches("-0")),
            )
        }
    };
    let mut series = generate(
        &[
            usage("spring-0", "app", "400Mi"),
            usage("sidecar-0", "proxy", "40Mi"),
            usage("sidecar-0", "app", "400Mi"),
            usage("off-0", "app", "400Mi"),
        ],
        start,
        end,
        STEP,
    );
    // 3 GiB of heap spread over two pools, a third pool without a ceiling (-1).
    let micrometer = || {
        JvmHeapMetrics::Micrometer(vec![
            ("PS Eden Space".into(), GI),
            ("PS Old Gen".into(), 2.0 * GI),
            ("PS Survivor Space".into(), -1.0),
        ])
    };
    let heap = |pod: &str, metrics| JvmHeap {
        namespace: ns.into(),
        pod: pod.into(),
        container: None,
        metrics,
        lifetime: None,
    };
    series.extend(jvm_heap(
        &[
            heap("spring-0", micrometer()),
            heap("sidecar-0", JvmHeapMetrics::ClientJava(3.0 * GI)),
            heap("off-0", micrometer()),
        ],
        start,
        end,
        STEP,
    ));
    let server = PromServer::backfilled(&openmetrics(&series)).await.unwrap();
    let prom = std::sync::Arc::new(
        Prometheus::new(Config {
            url: server.url().into(),
            retries: 0,
            timeout: Duration::from_secs(20),
            ..Config::default()
        })
        .unwrap(),
    );
    let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), ns);
    for name in ["spring", "sidecar", "off"] {
        let mut v = va(
            name,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name}),
        );
        if name == "off" {
            v.spec.resource_policy.container_policies = serde_json::from_value(
                json!([{"containerName": "app", "heap": {"source": "Off"}}]),
            )
            .unwrap();
        }
        vas.create(&pp, &v).await.unwrap();
    }
    let metrics = std::sync::Arc::new(tailor_recommender::metrics::Metrics::new());
    let task = tokio::spawn(controller::run(
        client.clone(),
        prom.clone(),
        Options {
            refresh: Duration::from_secs(600),
            ..Options::default()
        },
        metrics.clone(),
    ));
    let recommended = |name: &'static str| {
        let vas = vas.clone();
        async move {
            wait_va(&vas, name, "recommended", |v| {
                cond(v, "RecommendationProvided").is_some_and(|c| c.0 == "True")
            })
            .await
        }
    };

    // 3 GiB of heap + max(256 MiB, 25%) beside it, though the JVM uses 400 MiB.
    let spring = recommended("spring").await;
    let (memory, reason) = memory_rec(&spring, "app");
    assert!(memory >= 3.75 * GI, "spring: {memory}");
    assert_eq!(reason, FloorReason::HeapHint);

    // The measured 3 GiB beats the 75% of the command line (a 1 GiB floor) and belongs to the
    // JVM container, not to the proxy beside it.
    let sidecar = recommended("sidecar").await;
    let (memory, reason) = memory_rec(&sidecar, "app");
    assert!(memory >= 3.75 * GI, "sidecar app: {memory}");
    assert_eq!(reason, FloorReason::HeapHint);
    let (memory, reason) = memory_rec(&sidecar, "proxy");
    assert!(memory < 256.0 * MI, "proxy: {memory}");
    assert_ne!(reason, FloorReason::HeapHint);

    // heap.source: Off ignores the metric.
    let off = recommended("off").await;
    let (memory, reason) = memory_rec(&off, "app");
    assert!(memory < GI, "off: {memory}");
    assert_ne!(reason, FloorReason::HeapHint);
    assert!(metrics.encode().contains("tailor_recommendation_memory_floor_reason{namespace=\"shop\",verticalautoscaler=\"spring\",container=\"app\",reason=\"HeapHint\"} 1"));
    task.abort();
}
