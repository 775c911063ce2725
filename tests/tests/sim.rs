//! The node simulator against a real kube-apiserver: scheduling, running pods, in-place resize
//! as the kubelet does it, OOM kills and CPU throttling.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_e2e::ControlPlane;
use tailor_e2e::sim::config::SimConfig;
use tailor_e2e::sim::runtime::{self, SimHandle};

const WAIT: Duration = Duration::from_secs(30);

async fn sim(cp: &ControlPlane, nodes: usize, cpu: &str, memory: &str) -> SimHandle {
    let mut config = SimConfig::uniform(nodes, cpu, memory);
    config.tick_seconds = 0.2;
    config.actuation_delay_seconds = 0.5;
    // Long enough that a test passing proves the event-driven retry, not the timer.
    config.deferred_retry_seconds = 600.0;
    config.deferred_retry_period_seconds = 600.0;
    runtime::start(cp.client(), config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

fn pod(name: &str, containers: Value, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": containers},
    }))
    .unwrap()
}

fn container(name: &str, requests: Value, limits: Value) -> Value {
    json!({"name": name, "image": format!("example/{name}:1"), "resources": {"requests": requests, "limits": limits}})
}

/// Creates a pod and waits until the simulator runs it.
async fn run_pod(api: &Api<Pod>, name: &str, containers: Value, annotations: Value) -> Pod {
    api.create(&PostParams::default(), &pod(name, containers, annotations))
        .await
        .unwrap();
    wait_for(api, name, "Running", running).await
}

/// Sends a resize of one container through the `resize` subresource.
async fn resize(api: &Api<Pod>, pod: &str, container: &str, resources: Value) -> Pod {
    api.patch_resize(
        pod,
        &PatchParams::default(),
        &resize_patch(container, resources),
    )
    .await
    .unwrap()
}

async fn wait_for(api: &Api<Pod>, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(p) = api.get(name).await
            && check(&p)
        {
            return p;
        }
        if tokio::time::Instant::now() > deadline {
            let p = api.get(name).await.ok();
            panic!(
                "{name}: not {what} after {WAIT:?}: {:#?}",
                p.and_then(|p| p.status)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition<'a>(p: &'a Pod, type_: &str) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

fn cstatus<'a>(p: &'a Pod, name: &str) -> &'a k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name == name)
        .unwrap()
}

fn actual(p: &Pod, container: &str, kind: &str, resource: &str) -> Option<String> {
    let r = cstatus(p, container).resources.as_ref()?;
    let list = if kind == "limits" {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    };
    list?.get(resource).map(|q| q.0.clone())
}

fn resize_patch(container: &str, resources: Value) -> Patch<Value> {
    Patch::Strategic(json!({"spec": {"containers": [{"name": container, "resources": resources}]}}))
}

async fn events(cp: &ControlPlane, ns: &str, pod: &str) -> Vec<(String, String)> {
    Api::<Event>::namespaced(cp.client(), ns)
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

async fn wait_event(cp: &ControlPlane, ns: &str, pod: &str, reason: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some((_, m)) = events(cp, ns, pod)
            .await
            .into_iter()
            .find(|(r, _)| r == reason)
        {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {reason} event for {pod}: {:?}",
            events(cp, ns, pod).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn pods_are_scheduled_and_run_like_on_a_kubelet() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("run").await.unwrap();
    let _sim = sim(&cp, 2, "2", "4Gi").await;
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    // Two pods of 1500m do not fit one 2-core node: first-fit puts them on different nodes.
    for name in ["a", "b"] {
        api.create(
            &PostParams::default(),
            &pod(
                name,
                json!([container(
                    "app",
                    json!({"cpu": "1500m", "memory": "1Gi"}),
                    json!({"cpu": "2", "memory": "2Gi"})
                )]),
                json!({}),
            ),
        )
        .await
        .unwrap();
    }
    let a = wait_for(&api, "a", "Running", running).await;
    let b = wait_for(&api, "b", "Running", running).await;
    let (na, nb) = (
        a.spec.as_ref().unwrap().node_name.clone().unwrap(),
        b.spec.as_ref().unwrap().node_name.clone().unwrap(),
    );
    assert_ne!(na, nb, "first fit by requests");
    let s = a.status.as_ref().unwrap();
    assert_eq!(s.qos_class.as_deref(), Some("Burstable"));
    assert_eq!(s.observed_generation, Some(1));
    assert_eq!(condition(&a, "Ready").unwrap().status, "True");
    let c = cstatus(&a, "app");
    assert!(c.ready && c.started == Some(true));
    assert_eq!(c.restart_count, 0);
    assert_eq!(c.allocated_resources.as_ref().unwrap()["cpu"].0, "1500m");
    assert_eq!(
        actual(&a, "app", "limits", "memory").as_deref(),
        Some("2Gi")
    );

    // A third pod fits nowhere and stays pending; deleting one makes room.
    api.create(
        &PostParams::default(),
        &pod(
            "c",
            json!([container("app", json!({"cpu": "1"}), json!({}))]),
            json!({}),
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        api.get("c")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .is_none()
    );
    api.delete("a", &DeleteParams::default()).await.unwrap();
    wait_for(&api, "c", "Running", running).await;
    // Graceful deletion completes: the simulated kubelet removes the pod.
    let deadline = tokio::time::Instant::now() + WAIT;
    while api.get_opt("a").await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "pod a not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn live_cpu_resize_keeps_uid_and_restart_count() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("cpu").await.unwrap();
    let _sim = sim(&cp, 1, "4", "8Gi").await;
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    let created = api
        .create(
            &PostParams::default(),
            &pod(
                "web",
                json!([container(
                    "app",
                    json!({"cpu": "500m", "memory": "256Mi"}),
                    json!({"cpu": "1", "memory": "512Mi"})
                )]),
                json!({}),
            ),
        )
        .await
        .unwrap();
    wait_for(&api, "web", "Running", running).await;
    for (cpu, limit) in [("1", "2"), ("250m", "500m")] {
        let patched = api
            .patch_resize(
                "web",
                &PatchParams::default(),
                &resize_patch(
                    "app",
                    json!({"requests": {"cpu": cpu}, "limits": {"cpu": limit}}),
                ),
            )
            .await
            .unwrap();
        let generation = patched.metadata.generation.unwrap();
        let done = wait_for(&api, "web", "resized", |p| {
            p.status.as_ref().and_then(|s| s.observed_generation) >= Some(generation)
                && condition(p, "PodResizeInProgress").is_none()
                && actual(p, "app", "requests", "cpu").as_deref() == Some(cpu)
        })
        .await;
        assert_eq!(done.metadata.uid, created.metadata.uid);
        assert_eq!(
            cstatus(&done, "app").restart_count,
            0,
            "a live resize restarts nothing"
        );
        assert_eq!(
            actual(&done, "app", "limits", "cpu").as_deref(),
            Some(limit)
        );
        assert_eq!(
            cstatus(&done, "app").allocated_resources.as_ref().unwrap()["cpu"].0,
            cpu
        );
    }
    let started = wait_event(&cp, &ns, "web", "ResizeStarted").await;
    assert!(
        started.starts_with("Pod resize started: {\"containers\""),
        "{started}"
    );
    wait_event(&cp, &ns, "web", "ResizeCompleted").await;
}

#[tokio::test]
async fn deferred_resize_is_accepted_after_another_pod_leaves_and_infeasible_is_reported() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("defer").await.unwrap();
    let _sim = sim(&cp, 1, "2", "4Gi").await;
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    for (name, cpu) in [("grow", "500m"), ("other", "1")] {
        api.create(
            &PostParams::default(),
            &pod(
                name,
                json!([container(
                    "app",
                    json!({"cpu": cpu, "memory": "128Mi"}),
                    json!({})
                )]),
                json!({}),
            ),
        )
        .await
        .unwrap();
        wait_for(&api, name, "Running", running).await;
    }
    // 1500m + 1000m > 2000m: fits the node in principle, not now.
    resize(&api, "grow", "app", json!({"requests": {"cpu": "1500m"}})).await;
    let deferred = wait_for(&api, "grow", "Deferred", |p| {
        condition(p, "PodResizePending").is_some_and(|c| c.reason.as_deref() == Some("Deferred"))
    })
    .await;
    let c = condition(&deferred, "PodResizePending").unwrap();
    assert_eq!(
        c.message.as_deref(),
        Some("Node didn't have enough resource: cpu, requested: 1500, used: 1000, capacity: 2000")
    );
    assert_eq!(c.observed_generation, Some(2));
    assert_eq!(
        deferred.status.as_ref().unwrap().observed_generation,
        Some(2)
    );
    assert_eq!(
        actual(&deferred, "app", "requests", "cpu").as_deref(),
        Some("500m"),
        "nothing applied"
    );
    assert!(
        wait_event(&cp, &ns, "grow", "ResizeDeferred")
            .await
            .contains("\"error\":\"Node didn't have enough resource: cpu")
    );

    api.delete("other", &DeleteParams::default()).await.unwrap();
    wait_for(&api, "grow", "resized after the other pod left", |p| {
        condition(p, "PodResizePending").is_none()
            && condition(p, "PodResizeInProgress").is_none()
            && actual(p, "app", "requests", "cpu").as_deref() == Some("1500m")
    })
    .await;

    // Above allocatable: can never fit.
    resize(&api, "grow", "app", json!({"requests": {"cpu": "3"}})).await;
    let infeasible = wait_for(&api, "grow", "Infeasible", |p| {
        condition(p, "PodResizePending").is_some_and(|c| c.reason.as_deref() == Some("Infeasible"))
    })
    .await;
    assert_eq!(
        condition(&infeasible, "PodResizePending")
            .unwrap()
            .message
            .as_deref(),
        Some("Node didn't have enough capacity: cpu, requested: 3000, capacity: 2000")
    );
    wait_event(&cp, &ns, "grow", "ResizeInfeasible").await;
}

#[tokio::test]
async fn restart_container_policy_restarts_exactly_the_resized_container() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("restart").await.unwrap();
    let _sim = sim(&cp, 1, "4", "8Gi").await;
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    let mut app = container(
        "app",
        json!({"cpu": "250m", "memory": "512Mi"}),
        json!({"memory": "512Mi"}),
    );
    app["resizePolicy"] = json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}, {"resourceName": "cpu", "restartPolicy": "NotRequired"}]);
    let sidecar = container(
        "sidecar",
        json!({"cpu": "50m", "memory": "64Mi"}),
        json!({"memory": "64Mi"}),
    );
    let usage = json!({"*": {"model": "constant", "cpu": 0.01, "memory": "50Mi"}}).to_string();
    run_pod(
        &api,
        "db",
        json!([app, sidecar]),
        json!({"sim.tailor.dev/usage": usage}),
    )
    .await;
    api.patch_resize(
        "db",
        &PatchParams::default(),
        &resize_patch(
            "app",
            json!({"requests": {"memory": "256Mi"}, "limits": {"memory": "256Mi"}}),
        ),
    )
    .await
    .unwrap();
    let done = wait_for(&api, "db", "resized", |p| {
        actual(p, "app", "limits", "memory").as_deref() == Some("256Mi")
            && condition(p, "PodResizeInProgress").is_none()
    })
    .await;
    assert_eq!(cstatus(&done, "app").restart_count, 1);
    assert_eq!(
        cstatus(&done, "sidecar").restart_count,
        0,
        "only the resized container restarts"
    );
    let t = cstatus(&done, "app")
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_ne!(t.reason.as_deref(), Some("OOMKilled"));
    assert!(
        wait_event(&cp, &ns, "db", "Killing")
            .await
            .contains("Container app resize requires restart")
    );
}

#[tokio::test]
async fn memory_limit_decrease_below_usage_ends_in_error_and_changes_nothing() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("error").await.unwrap();
    let _sim = sim(&cp, 1, "4", "8Gi").await;
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    let usage = json!({"app": {"model": "constant", "cpu": 0.1, "memory": "300Mi"}}).to_string();
    run_pod(
        &api,
        "jvm",
        json!([container(
            "app",
            json!({"cpu": "250m", "memory": "512Mi"}),
            json!({"memory": "512Mi"})
        )]),
        json!({"sim.tailor.dev/usage": usage}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // usage sampled
    api.patch_resize(
        "jvm",
        &PatchParams::default(),
        &resize_patch(
            "app",
            json!({"requests": {"memory": "200Mi"}, "limits": {"memory": "200Mi"}}),
        ),
    )
    .await
    .unwrap();
    let errored = wait_for(&api, "jvm", "in Error", |p| {
        condition(p, "PodResizeInProgress").is_some_and(|c| c.reason.as_deref() == Some("Error"))
    })
    .await;
    let message = condition(&errored, "PodResizeInProgress")
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert!(
        message.starts_with("cannot decrease memory limits: "),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "memory limit ({}) below current usage ({})",
            200 << 20,
            300 << 20
        )),
        "{message}"
    );
    assert!(condition(&errored, "PodResizePending").is_none());
    assert_eq!(
        actual(&errored, "app", "limits", "memory").as_deref(),
        Some("512Mi"),
        "nothing applied"
    );
    assert_eq!(cstatus(&errored, "app").restart_count, 0);
    wait_event(&cp, &ns, "jvm", "ResizeError").await;
}

#[tokio::test]
async fn usage_above_the_memory_limit_is_oom_killed_and_cpu_above_the_limit_is_throttled() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("oom").await.unwrap();
    let sim = sim(&cp, 1, "4", "8Gi").await;
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    // Leaks 100Mi per simulated second from 100Mi: crosses its 256Mi limit within 2 s.
    let usage = json!({"app": {"model": "leak", "cpu": 0.8, "memory": "100Mi", "bytesPerHour": 100.0 * 1048576.0 * 3600.0}}).to_string();
    api.create(
        &PostParams::default(),
        &pod(
            "leaky",
            json!([container(
                "app",
                json!({"cpu": "200m", "memory": "128Mi"}),
                json!({"cpu": "200m", "memory": "256Mi"})
            )]),
            json!({"sim.tailor.dev/usage": usage}),
        ),
    )
    .await
    .unwrap();
    let killed = wait_for(&api, "leaky", "OOM-killed", |p| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|c| c[0].restart_count >= 1)
    })
    .await;
    let t = cstatus(&killed, "app")
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"));
    assert_eq!(t.exit_code, 137);

    // CPU demand 0.8 over a 0.2 limit: usage capped, throttled periods grow.
    let usage = json!({"app": {"model": "constant", "cpu": 0.8, "memory": "100Mi"}}).to_string();
    run_pod(
        &api,
        "busy",
        json!([container(
            "app",
            json!({"cpu": "200m", "memory": "128Mi"}),
            json!({"cpu": "200m", "memory": "256Mi"})
        )]),
        json!({"sim.tailor.dev/usage": usage}),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let body = reqwest::get(format!("http://{}/metrics/cadvisor", sim.metrics_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |metric: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(metric) && l.contains("pod=\"busy\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{metric} missing:\n{body}"))
    };
    let periods = value("container_cpu_cfs_periods_total{");
    let throttled = value("container_cpu_cfs_throttled_periods_total{");
    assert!(
        throttled >= 0.9 * periods && throttled <= periods && periods >= 10.0,
        "throttled {throttled} of {periods}"
    );
    // Each 100 ms period allows 20 ms of CPU at a 200m limit (periods are exposed floored).
    let cpu = value("container_cpu_usage_seconds_total{");
    assert!(
        cpu > 0.0 && cpu <= (periods + 1.0) * 0.1 * 0.2,
        "usage {cpu} capped at the limit over {periods} periods"
    );
    let ksm = reqwest::get(format!("http://{}/metrics/kube-state", sim.metrics_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        ksm.lines().any(
            |l| l.starts_with("kube_pod_container_status_last_terminated_reason{")
                && l.contains("pod=\"leaky\"")
                && l.contains("reason=\"OOMKilled\"")
        ),
        "{ksm}"
    );
}

#[tokio::test]
async fn malformed_usage_annotation_is_reported_and_the_pod_still_runs() {
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("bad").await.unwrap();
    let _sim = sim(&cp, 1, "4", "8Gi").await;
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    run_pod(
        &api,
        "odd",
        json!([container(
            "app",
            json!({"cpu": "100m", "memory": "64Mi"}),
            json!({})
        )]),
        json!({"sim.tailor.dev/usage": "{\"app\": {\"model\": \"sine\"}}"}),
    )
    .await;
    let message = wait_event(&cp, &ns, "odd", "InvalidUsageModel").await;
    assert!(
        message.contains("unknown variant `sine`") && message.contains("default model"),
        "{message}"
    );
}

#[tokio::test]
async fn prometheus_scrapes_metrics_that_match_the_simulated_usage() {
    use tailor_e2e::prometheus::{Prometheus, PrometheusOptions};
    let cp = ControlPlane::start().await.unwrap();
    let ns = cp.namespace("scrape").await.unwrap();
    let sim = sim(&cp, 1, "4", "8Gi").await;
    let api = Api::<Pod>::namespaced(cp.client(), &ns);
    // A ReplicaSet of a Deployment owns the pod (no controller-manager runs: both are written here).
    let rs: k8s_openapi::api::apps::v1::ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "steady-7d9f", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
            "name": "steady", "uid": "00000000-0000-0000-0000-000000000001", "controller": true}]},
        "spec": {"selector": {"matchLabels": {"app": "steady"}},
                 "template": {"metadata": {"labels": {"app": "steady"}}, "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}},
    }))
    .unwrap();
    let rs = Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(cp.client(), &ns)
        .create(&PostParams::default(), &rs)
        .await
        .unwrap();
    let usage = json!({"app": {"model": "constant", "cpu": 0.25, "memory": "300Mi"}}).to_string();
    let mut steady = pod(
        "steady",
        json!([container(
            "app",
            json!({"cpu": "500m", "memory": "512Mi"}),
            json!({"cpu": "1", "memory": "1Gi"})
        )]),
        json!({"sim.tailor.dev/usage": usage}),
    );
    steady.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "steady-7d9f".into(),
            uid: rs.metadata.uid.clone().unwrap(),
            controller: Some(true),
            block_owner_deletion: None,
        },
    ]);
    api.create(&PostParams::default(), &steady).await.unwrap();
    wait_for(&api, "steady", "Running", running).await;
    let prom = Prometheus::start(PrometheusOptions {
        scrape_targets: sim.scrape_targets(),
        scrape_interval: Duration::from_secs(1),
        ..Default::default()
    })
    .await
    .unwrap();
    let sel = format!("namespace=\"{ns}\",pod=\"steady\",container=\"app\"");
    // Both endpoints scraped (a loaded machine can miss the first scrapes).
    let deadline = tokio::time::Instant::now() + WAIT;
    let now = loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let mut scraped = true;
        for metric in [
            "container_memory_working_set_bytes",
            "kube_pod_container_status_restarts_total",
        ] {
            let found = prom.query(&format!("{metric}{{{sel}}}"), now).await;
            scraped &= found.is_ok_and(|r| r.len() == 1);
        }
        if scraped {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus did not scrape the simulator"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let one = |q: &str| {
        let prom = &prom;
        let q = q.to_owned();
        async move {
            let r = prom.query(&q, now).await.unwrap();
            assert_eq!(r.len(), 1, "{q}: {r:?}");
            r[0].value.1.parse::<f64>().unwrap()
        }
    };
    // Exact for gauges the model holds constant.
    assert_eq!(
        one(&format!("container_memory_working_set_bytes{{{sel}}}")).await,
        300.0 * 1048576.0
    );
    assert_eq!(
        one(&format!("container_spec_memory_limit_bytes{{{sel}}}")).await,
        1024.0 * 1048576.0
    );
    assert_eq!(
        one(&format!(
            "kube_pod_container_resource_requests{{{sel},resource=\"cpu\"}}"
        ))
        .await,
        0.5
    );
    assert_eq!(
        one(&format!(
            "kube_pod_container_resource_limits{{{sel},resource=\"memory\"}}"
        ))
        .await,
        1024.0 * 1048576.0
    );
    assert_eq!(
        one(&format!(
            "kube_pod_container_status_restarts_total{{{sel}}}"
        ))
        .await,
        0.0
    );
    // The CPU rate within 10% of the model (scrapes and ticks are not aligned).
    // The counter grows at the modelled rate: within 10% over at least 5 s of scrapes (the
    // simulator's 200 ms ticks and the scrapes are not aligned).
    let deadline = tokio::time::Instant::now() + WAIT;
    let rate = loop {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let raw = prom
            .query_range(
                &format!("container_cpu_usage_seconds_total{{{sel}}}"),
                t - 60.0,
                t,
                1.0,
            )
            .await
            .unwrap();
        let samples: Vec<(f64, f64)> = raw
            .first()
            .map(|s| {
                s.values
                    .iter()
                    .map(|(t, v)| (*t, v.parse().unwrap()))
                    .collect()
            })
            .unwrap_or_default();
        if let (Some(first), Some(last)) = (samples.first(), samples.last())
            && last.0 - first.0 >= 5.0
        {
            break (last.1 - first.1) / (last.0 - first.0);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "too few scrapes: {samples:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!((rate - 0.25).abs() <= 0.025, "cpu rate {rate}");
    // Ownership, as kube-state-metrics reports it.
    assert_eq!(
        one(&format!("kube_pod_owner{{namespace=\"{ns}\",pod=\"steady\",owner_kind=\"ReplicaSet\",owner_name=\"steady-7d9f\",owner_is_controller=\"true\"}}")).await,
        1.0
    );
    assert_eq!(
        one(&format!("kube_replicaset_owner{{namespace=\"{ns}\",replicaset=\"steady-7d9f\",owner_kind=\"Deployment\",owner_name=\"steady\"}}")).await,
        1.0
    );
    // Throttling only above the limit: none here.
    assert_eq!(
        one(&format!(
            "container_cpu_cfs_throttled_periods_total{{{sel}}}"
        ))
        .await,
        0.0
    );
}

#[tokio::test]
async fn the_tailor_sim_binary_registers_its_nodes_and_rejects_a_bad_config() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;
    let bin = env!("CARGO_BIN_EXE_tailor-sim");
    let dir = tempfile::tempdir().unwrap();

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "nodes:\n  - {name: a, cpu: lots, memory: 1Gi}\n").unwrap();
    let out = std::process::Command::new(bin)
        .args(["--config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nodes[0].cpu") && stderr.contains("\"lots\""),
        "{stderr}"
    );

    let cp = ControlPlane::start().await.unwrap();
    let good = dir.path().join("sim.yaml");
    std::fs::write(
        &good,
        "nodes:\n  - {name: bin, count: 2, cpu: '2', memory: 4Gi, labels: {zone: a}}\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(bin)
        .args([
            "--config",
            good.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let nodes = Api::<Node>::all(cp.client());
    let leases = Api::<Lease>::namespaced(cp.client(), "kube-node-lease");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ready: Vec<_> = nodes
            .list(&ListParams::default().labels("zone=a"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.type_ == "Ready"
                                && c.status == "True"
                                && c.reason.as_deref() == Some("KubeletReady")
                        })
                    })
            })
            .collect();
        let lease = leases.get_opt("bin-1").await.unwrap();
        if ready.len() == 2
            && let Some(lease) = lease
        {
            let n = &ready[0];
            assert_eq!(
                n.status.as_ref().unwrap().allocatable.as_ref().unwrap()["cpu"].0,
                "2"
            );
            let spec = lease.spec.unwrap();
            assert_eq!(spec.holder_identity.as_deref(), Some("bin-1"));
            assert_eq!(spec.lease_duration_seconds, Some(40));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes not registered by the binary"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().await.unwrap();
}
