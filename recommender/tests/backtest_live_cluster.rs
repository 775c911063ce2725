//! `tailor-recommender backtest --prometheus-url` replays tailor as it runs in the cluster: with
//! the VerticalAutoscaler's policy and heap floor read from a real API server, and the OOM kills
//! kube-state-metrics recorded in a real Prometheus, its last decision is the recommendation
//! `tailor-recommender recommend` computes for the same workload; without the cluster it says
//! so and goes on.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_e2e::sim::history::{
    HistoryContainer, JvmHeap, JvmHeapMetrics, ReplicaSetOwner, generate, jvm_heap, openmetrics,
    replicaset_owners,
};
use tailor_e2e::sim::usage::PodUsage;
use tailor_e2e::{ControlPlane, Prometheus as PromServer};

const MI: f64 = 1024.0 * 1024.0;
const GI: f64 = 1024.0 * MI;
const HOUR: i64 = 3600;
const STEP: i64 = 60;

/// Deployment `name` in `ns` with ReplicaSet `{name}-1a` and its pod `{name}-1a-x`, whose
/// container `app` is `container` (name, image and resources added).
async fn deployment(client: &kube::Client, ns: &str, name: &str, container: Value) {
    let pp = PostParams::default();
    let template = json!({"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "i"}]}}});
    let d: Deployment =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": template})).unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&pp, &d)
        .await
        .unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": format!("{name}-1a"), "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": d.metadata.uid.unwrap(), "controller": true}]}, "spec": template})).unwrap();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
        .create(&pp, &rs)
        .await
        .unwrap();
    let mut c = container;
    c["name"] = json!("app");
    c["image"] = json!("example/app:1");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("{name}-1a-x"), "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{name}-1a"), "uid": rs.metadata.uid.unwrap(), "controller": true}]},
        "spec": {"containers": [c]}})).unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&pp, &pod)
        .await
        .unwrap();
}

/// The history of Deployment `name`'s pod `{name}-1a-x`, container `app`: constant use, the
/// given requests and limits, and OOM kills at `kills`.
fn usage(
    ns: &str,
    name: &str,
    (cpu, memory): (f64, &str),
    sizes: ((f64, f64), (f64, f64)),
    kills: Vec<i64>,
) -> HistoryContainer {
    let model = PodUsage::parse(
        &json!({"*": {"model": "constant", "cpu": cpu, "memory": memory}}).to_string(),
    )
    .unwrap();
    HistoryContainer {
        cpu: (Some(sizes.0.0), Some(sizes.0.1)),
        memory: (Some(sizes.1.0), Some(sizes.1.1)),
        oom_kills: kills,
        ..HistoryContainer::new(
            ns,
            &format!("{name}-1a-x"),
            "app",
            model.model("app").unwrap().clone(),
            ("ReplicaSet", &format!("{name}-1a")),
        )
    }
}

fn run(args: &[&str], kubeconfig: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tailor-recommender"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("TAILOR_PROMETHEUS_URL")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap()
}

/// The live backtest of `workload` in `ns` as JSON, and its stderr.
fn backtest(
    url: &str,
    ns: &str,
    workload: &str,
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> (Value, String) {
    let mut args = vec![
        "backtest",
        "--prometheus-url",
        url,
        "-n",
        ns,
        "--workload",
        workload,
        "-o",
        "json",
    ];
    args.extend_from_slice(extra);
    let out = run(&args, kubeconfig);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (serde_json::from_slice(&out.stdout).unwrap(), err)
}

/// tailor's last decision (not a guard raise): (millicores, bytes, floor bytes).
fn last_tailor(v: &Value) -> (i64, i64, i64) {
    let traces = v["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{v}");
    let d = traces[0]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|d| d["policy"] == "tailor" && d["guard_raise"] == false)
        .unwrap();
    let int = |x: &Value| {
        let f = x.as_f64().unwrap();
        assert_eq!(f.fract(), 0.0, "{d}");
        f as i64
    };
    (
        (d["cpu_cores"].as_f64().unwrap() * 1000.0).round() as i64,
        int(&d["memory_bytes"]),
        int(&d["memory_floor_bytes"]),
    )
}

#[tokio::test]
async fn the_last_tailor_decision_is_the_recommendation_of_the_recommender() {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let pp = PostParams::default();
    for ns in ["shop", "batch"] {
        Api::<Namespace>::all(client.clone())
            .create(
                &pp,
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    // shop/orders: a JVM started with -Xmx2g in JAVA_TOOL_OPTIONS whose image's entrypoint
    // overrides it with 3g, as its heap metric tells; its VerticalAutoscaler has a CPU margin
    // of its own.
    deployment(
        &client,
        "shop",
        "orders",
        json!({
            "command": ["java", "-jar", "/app/orders.jar"],
            "env": [{"name": "JAVA_TOOL_OPTIONS", "value": "-Xmx2g"}],
            "resources": {"requests": {"cpu": "1", "memory": "4Gi"}, "limits": {"memory": "6Gi"}},
        }),
    )
    .await;
    let va: VerticalAutoscaler = serde_json::from_value(json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "metadata": {"name": "orders", "namespace": "shop"},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orders"},
                 "recommenderPolicy": {"historyWindow": "7d", "cpu": {"margin": 0.4}}},
    }))
    .unwrap();
    Api::<VerticalAutoscaler>::namespaced(client.clone(), "shop")
        .create(&pp, &va)
        .await
        .unwrap();
    // batch/worker: 400 MiB under a 512 MiB limit, OOM-killed once (no VerticalAutoscaler in
    // its namespace: default policies).
    deployment(&client, "batch", "worker", json!({
        "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    }))
    .await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now / STEP * STEP;
    let start = end - 3 * 24 * HOUR;
    // After the warmup, between two decisions and two steps.
    let kill = start + 30 * HOUR + 17 * 60 + 20;
    let mut series = generate(
        &[
            usage(
                "shop",
                "orders",
                (0.3, "1Gi"),
                ((1.0, 2.0), (4.0 * GI, 6.0 * GI)),
                vec![],
            ),
            usage(
                "batch",
                "worker",
                (0.2, "400Mi"),
                ((0.25, 1.0), (256.0 * MI, 512.0 * MI)),
                vec![kill],
            ),
        ],
        start,
        end,
        STEP,
    );
    series.extend(jvm_heap(
        &[JvmHeap {
            namespace: "shop".into(),
            pod: "orders-1a-x".into(),
            container: None,
            metrics: JvmHeapMetrics::ClientJava(3.0 * GI),
            lifetime: None,
        }],
        start,
        end,
        STEP,
    ));
    let rs = |ns: &str, name: &str| ReplicaSetOwner {
        namespace: ns.into(),
        replicaset: format!("{name}-1a"),
        owner_kind: "Deployment".into(),
        owner_name: name.into(),
    };
    series.extend(replicaset_owners(
        &[rs("shop", "orders"), rs("batch", "worker")],
        start,
        end,
        STEP,
    ));
    let prom = PromServer::backfilled(&openmetrics(&series)).await.unwrap();
    let kubeconfig = cp.kubeconfig();

    // What the recommender computes now.
    let out = run(
        &[
            "recommend",
            "--prometheus-url",
            prom.url(),
            "-n",
            "shop",
            "-n",
            "batch",
            "-o",
            "json",
        ],
        kubeconfig,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let rec = |workload: &str| {
        let r = rows
            .iter()
            .find(|r| r["workload"] == workload && r["container"] == "app")
            .unwrap_or_else(|| panic!("{rows:?}"));
        (
            r["cpu_recommended_millicores"].as_i64().unwrap(),
            r["memory_recommended_bytes"].as_i64().unwrap(),
            r["floor_reason"].as_str().unwrap().to_owned(),
        )
    };
    let (orders_cpu, orders_memory, reason) = rec("Deployment/orders");
    assert_eq!(reason, "HeapHint");
    // The measured 3 GiB heap (above the 2g flag) and its overhead; 0.3 cores x 1.4.
    assert!(
        (3.0 * GI..4.0 * GI).contains(&(orders_memory as f64)),
        "{orders_memory}"
    );
    assert!((410..=430).contains(&orders_cpu), "{orders_cpu}");
    let (worker_cpu, worker_memory, reason) = rec("Deployment/worker");
    assert_eq!(reason, "OOM");
    // 512 MiB x 1.2, rounded up to a MiB; 0.2 cores x 1.15 (in the histogram's bucket).
    assert_eq!(worker_memory, 615 * 1048576);
    assert!((225..=250).contains(&worker_cpu), "{worker_cpu}");

    // The backtest's last tailor decision is that recommendation, to the byte and the
    // millicore.
    let (v, err) = backtest(prom.url(), "shop", "Deployment/orders", kubeconfig, &[]);
    assert!(
        err.contains("shop/Deployment/orders/app: tailor as VerticalAutoscaler shop/orders sets it up: its recommenderPolicy, heap floor ")
            && err.contains("jvm_memory_bytes_max"),
        "{err}"
    );
    assert!(!err.contains("not applied"), "{err}");
    let (cpu, memory, floor) = last_tailor(&v);
    assert_eq!((cpu, memory), (orders_cpu, orders_memory), "{err}");
    assert_eq!(floor, orders_memory);

    let (v, err) = backtest(prom.url(), "batch", "Deployment/worker", kubeconfig, &[]);
    assert!(
        err.contains("batch/Deployment/worker/app: ")
            && err.contains(", 1 recorded OOM kill(s)")
            && err.contains("heap hints not applied: no VerticalAutoscaler in batch targets Deployment/worker; tailor replays with the default recommenderPolicy"),
        "{err}"
    );
    assert_eq!(
        last_tailor(&v),
        (worker_cpu, worker_memory, worker_memory),
        "{err}"
    );
    // The recorded kill is reported with the limit in force, and is no would-be kill.
    let trace = &v["traces"][0];
    let recorded = trace["recorded_ooms"].as_array().unwrap();
    assert_eq!(recorded.len(), 1, "{trace}");
    assert_eq!(recorded[0]["memory_limit_bytes"].as_f64(), Some(512.0 * MI));
    let at = recorded[0]["time"].as_f64().unwrap();
    assert!(
        (kill as f64..(kill + STEP) as f64).contains(&at),
        "{at} vs {kill}"
    );
    for s in trace["scores"].as_array().unwrap() {
        assert_eq!(s["recorded_oom_kills"], 1, "{s}");
        if s["policy"] == "tailor" {
            assert_eq!(s["oom_events"], 0, "{s}");
        }
    }
    // Every recommender reacts to it: at the first decision after it, KRR is at 1.25 x the
    // limit.
    let krr = trace["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["policy"] == "krr" && d["time"].as_f64().unwrap() > at)
        .map(|d| d["memory_bytes"].as_f64().unwrap())
        .next()
        .unwrap();
    assert!(krr >= 1.25 * 512.0 * MI, "{}", krr / MI);

    // Without the cluster the kills are still read, but not the heap hint: one line says so.
    let (v, err) = backtest(
        prom.url(),
        "batch",
        "Deployment/worker",
        kubeconfig,
        &["--no-cluster"],
    );
    assert!(
        err.contains("heap hints not applied: --no-cluster;"),
        "{err}"
    );
    assert_eq!(last_tailor(&v).1, worker_memory);
    let (v, err) = backtest(
        prom.url(),
        "shop",
        "Deployment/orders",
        kubeconfig,
        &["--no-cluster"],
    );
    let notes: Vec<&str> = err.lines().filter(|l| l.contains("heap hints")).collect();
    assert_eq!(
        notes,
        ["heap hints not applied: --no-cluster; tailor replays with the default recommenderPolicy"],
        "{err}"
    );
    let (cpu, memory, _) = last_tailor(&v);
    // Sized on the 1 GiB of use with its margin, far below the heap, and on 0.3 cores x 1.15.
    assert!(
        (1.15 * GI..1.25 * GI).contains(&(memory as f64)),
        "{} MiB: {err}",
        memory as f64 / MI
    );
    assert!((340..=350).contains(&cpu), "{cpu}");
    // A kubeconfig that leads nowhere: the same, with the reason.
    let (v, err) = backtest(
        prom.url(),
        "shop",
        "Deployment/orders",
        &cp.dir().join("missing-kubeconfig"),
        &["--tailor-policy", r#"{"cpu": {"margin": 0.4}}"#],
    );
    let notes: Vec<&str> = err.lines().filter(|l| l.contains("heap hints")).collect();
    assert_eq!(notes.len(), 1, "{err}");
    assert!(
        notes[0].starts_with("heap hints not applied: no cluster to read (")
            && notes[0].ends_with("; tailor replays with the --tailor-policy"),
        "{err}"
    );
    assert_eq!(last_tailor(&v).0, orders_cpu, "the policy given is used");
    assert_eq!(last_tailor(&v).1, memory);
}
