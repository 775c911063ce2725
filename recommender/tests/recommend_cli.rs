//! `tailor-recommender recommend`: a one-shot report from Prometheus and read access, for
//! namespaces without VerticalAutoscalers too.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "support/ksm.rs"]
mod ksm;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tailor_e2e::sim::history::{
    HistoryContainer, ReplicaSetOwner, generate, openmetrics, replicaset_owners,
};
use tailor_e2e::sim::usage::{PodUsage, container_seed};
use tailor_e2e::{ControlPlane, Prometheus as PromServer};

const MI: f64 = 1024.0 * 1024.0;

#[tokio::test]
async fn recommend_prints_a_report_for_workloads_without_verticalautoscalers() {
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap(),
        )
        .await
        .unwrap();
    let template = |name: &str| json!({"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "app", "image": "i"}]}}});
    let d: Deployment =
        serde_json::from_value(json!({"metadata": {"name": "api"}, "spec": template("api")}))
            .unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), "shop")
        .create(&pp, &d)
        .await
        .unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "api-1a", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": d.metadata.uid.unwrap(), "controller": true}]}, "spec": template("api")})).unwrap();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), "shop")
        .create(&pp, &rs)
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "api-1a-x", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-1a", "uid": rs.metadata.uid.unwrap(), "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "i", "resources": {"requests": {"cpu": "2", "memory": "4Gi"}}}]}})).unwrap();
    Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&pp, &pod)
        .await
        .unwrap();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (step, end) = (60, now / 60 * 60);
    let start = end - 2 * 86_400;
    let model: Value = json!({"*": {"model": "constant", "cpu": 0.25, "memory": "600Mi"}});
    let c = HistoryContainer {
        namespace: "shop".into(),
        pod: "api-1a-x".into(),
        uid: String::new(),
        pod_ip: String::new(),
        container: "app".into(),
        image: "i".into(),
        node: "n".into(),
        host_ip: "10.0.0.2".into(),
        model: PodUsage::parse(&model.to_string())
            .unwrap()
            .model("app")
            .unwrap()
            .clone(),
        seed: container_seed(1, "shop", "api-1a-x", "app"),
        trace: None,
        cpu: (Some(2.0), None),
        memory: (Some(4096.0 * MI), None),
        owner: Some(("ReplicaSet".into(), "api-1a".into())),
        lifetime: None,
        oom_kills: vec![],
    };
    let mut series = generate(&[c], start, end, step);
    series.extend(replicaset_owners(
        &[ReplicaSetOwner {
            namespace: "shop".into(),
            replicaset: "api-1a".into(),
            owner_kind: "Deployment".into(),
            owner_name: "api".into(),
        }],
        start,
        end,
        step,
    ));
    let prom = PromServer::backfilled(&openmetrics(&series)).await.unwrap();

    let bin = env!("CARGO_BIN_EXE_tailor-recommender");
    let run = |output: &str| {
        std::process::Command::new(bin)
            .args([
                "recommend",
                "--prometheus-url",
                prom.url(),
                "-n",
                "shop",
                "-o",
                output,
            ])
            .env("KUBECONFIG", cp.kubeconfig())
            .output()
            .unwrap()
    };
    let out = run("json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("[1/1] shop/Deployment/api"),
        "progress on stderr"
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r["workload"], "Deployment/api");
    assert_eq!(r["container"], "app");
    assert_eq!(r["verticalautoscaler"], Value::Null);
    assert_eq!(r["cpu_request_millicores"], 2000);
    assert_eq!(r["memory_request_bytes"], 4096 * 1048576_i64);
    let cpu = r["cpu_recommended_millicores"].as_i64().unwrap();
    assert!((250..=320).contains(&cpu), "{cpu}");
    let mem = r["memory_recommended_bytes"].as_i64().unwrap() as f64;
    assert!((660.0 * MI..760.0 * MI).contains(&mem), "{mem}");
    assert!(r["floor_reason"].is_string());

    let csv = String::from_utf8(run("csv").stdout).unwrap();
    assert!(csv.starts_with("namespace,workload,verticalautoscaler,container,"));
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("shop,Deployment/api,,app,2000,")
    );
    let table = String::from_utf8(run("table").stdout).unwrap();
    assert!(table.starts_with("NAMESPACE"), "{table}");
    assert!(
        table.contains("Deployment/api")
            && table.contains(&format!("{:+.0}%", (cpu as f64 / 2000.0 - 1.0) * 100.0)),
        "{table}"
    );
}

/// The one-shot report (default step 60 s) and the running recommender's computation (step
/// 120 s) agree on an OOM-killed workload whose kube-state-metrics is scraped every 120 s.
#[tokio::test]
async fn recommend_and_the_controller_agree_on_an_oom_kill_at_other_steps() {
    use std::sync::Arc;
    use tailor_crds::quantity::memory_bytes;
    use tailor_crds::v1alpha1::{
        FloorReason, TargetRef, VerticalAutoscaler, VerticalAutoscalerSpec,
    };
    use tailor_recommender::controller::{self, Context, Options};

    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client();
    let pp = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap(),
        )
        .await
        .unwrap();
    let template = json!({"selector": {"matchLabels": {"app": "worker"}}, "template": {"metadata": {"labels": {"app": "worker"}}, "spec": {"containers": [{"name": "app", "image": "i"}]}}});
    let d: Deployment =
        serde_json::from_value(json!({"metadata": {"name": "worker"}, "spec": template})).unwrap();
    let d = Api::<Deployment>::namespaced(client.clone(), "shop")
        .create(&pp, &d)
        .await
        .unwrap();
    let rs: ReplicaSet = serde_json::from_value(json!({"metadata": {"name": "worker-5c8d", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "worker", "uid": d.metadata.uid.unwrap(), "controller": true}]}, "spec": template})).unwrap();
    let rs = Api::<ReplicaSet>::namespaced(client.clone(), "shop")
        .create(&pp, &rs)
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "worker-5c8d-q7m2x", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "worker-5c8d", "uid": rs.metadata.uid.unwrap(), "controller": true}]},
        "spec": {"containers": [{"name": "app", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}}]}})).unwrap();
    Api::<Pod>::namespaced(client.clone(), "shop")
        .create(&pp, &pod)
        .await
        .unwrap();
    let c = ksm::cluster("shop", "worker-5c8d", "worker-5c8d-q7m2x", 120);
    let prom = PromServer::backfilled(&openmetrics(&c.series))
        .await
        .unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tailor-recommender"))
        .args([
            "recommend",
            "--prometheus-url",
            prom.url(),
            "-n",
            "shop",
            "-o",
            "json",
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .iter()
        .find(|r| r["workload"] == "Deployment/worker" && r["container"] == "app")
        .unwrap_or_else(|| panic!("{rows:?}"));

    let pods = Api::<Pod>::namespaced(client.clone(), "shop")
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "shop")
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .items;
    let ctx = Context::from_lists(
        client,
        Arc::new(ksm::client(prom.url(), 120)),
        Options::default(),
        pods,
        rss,
        vec![],
    );
    let mut va = VerticalAutoscaler::new(
        "worker",
        VerticalAutoscalerSpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "worker".into(),
            },
            update_policy: Default::default(),
            recommender_policy: Default::default(),
            resource_policy: Default::default(),
        },
    );
    va.metadata.namespace = Some("shop".into());
    let outcome = controller::compute(&ctx, &va).await;
    let rec = outcome
        .recommendation
        .and_then(|r| {
            r.container_recommendations
                .into_iter()
                .find(|c| c.container_name == "app")
        })
        .unwrap_or_else(|| panic!("{:?}", outcome.conditions));
    let floor = rec.memory_floor.unwrap();
    let target = memory_bytes(rec.target.memory.as_ref().unwrap()).unwrap();

    assert_eq!(floor.reason, FloorReason::Oom, "controller at step 120");
    assert_eq!(row["floor_reason"], "OOM", "recommend at step 60: {row}");
    assert_eq!(row["memory_recommended_bytes"], target, "{row}");
    // The floor is the bumped limit: 512Mi x 1.2.
    let floor = memory_bytes(&floor.value).unwrap() as f64;
    let bumped = ksm::LIMIT * 1.2;
    assert!(
        floor >= bumped && floor < bumped + 2.0 * MI,
        "floor {} MiB",
        floor / MI
    );
}
