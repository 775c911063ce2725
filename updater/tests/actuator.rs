//! The `tailor-updater` binary against a real API server and the node simulator: live resizes,
//! held and approved memory decreases, `Never`, HPA conflicts, `Off`, and the memory floor.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, PostParams};
use serde_json::json;
use tailor_crds::v1alpha1::condition;

use common::{Env, applied, condition, container, restart_count, spec_value};

#[tokio::test]
async fn resizes_live_holds_memory_cuts_for_approval_and_respects_policies() {
    let env = Env::start(4, "8", "32Gi", 0.3).await;
    let burstable = || {
        json!([container(
            "app",
            json!({"cpu": "500m", "memory": "256Mi"}),
            json!({"cpu": "1", "memory": "512Mi"})
        )])
    };
    let guaranteed = |mem: &str| {
        json!([container(
            "app",
            json!({"cpu": "1", "memory": mem}),
            json!({"cpu": "1", "memory": mem})
        )])
    };
    let web = env.workload("web", 2, burstable()).await;
    let db = env.workload("db", 1, guaranteed("1Gi")).await;
    let never = env
        .workload(
            "never",
            1,
            json!([container(
                "app",
                json!({"cpu": "500m", "memory": "1Gi"}),
                json!({"memory": "2Gi"})
            )]),
        )
        .await;
    let scaled = env.workload("scaled", 1, burstable()).await;
    let off = env.workload("off", 1, burstable()).await;
    let mut jvm_container = container(
        "app",
        json!({"cpu": "1", "memory": "4Gi"}),
        json!({"cpu": "1", "memory": "4Gi"}),
    );
    jvm_container["resizePolicy"] =
        json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
    jvm_container["args"] = json!(["-Xmx3g", "-jar", "app.jar"]);
    let jvm = env.workload("jvm", 1, json!([jvm_container])).await;
    let uids: Vec<String> = {
        let mut v = Vec::new();
        for p in &web {
            v.push(env.pods().get(p).await.unwrap().metadata.uid.unwrap());
        }
        v
    };

    env.va("web", "web", json!({})).await;
    env.va("db", "db", json!({})).await;
    env.va(
        "never",
        "never",
        json!({"updatePolicy": {"memoryDecrease": "Never"}}),
    )
    .await;
    env.va("scaled", "scaled", json!({})).await;
    env.va("off", "off", json!({"updatePolicy": {"updateMode": "Off"}}))
        .await;
    env.va(
        "jvm",
        "jvm",
        json!({"updatePolicy": {"memoryDecrease": "RestartContainer"}}),
    )
    .await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "metadata": {"name": "scaled"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "scaled"},
                 "minReplicas": 1, "maxReplicas": 4,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]},
    }))
    .unwrap();
    Api::<HorizontalPodAutoscaler>::namespaced(env.cp.client(), &env.ns)
        .create(&PostParams::default(), &hpa)
        .await
        .unwrap();

    // The JVM's restart cut needs its working set read.
    let prom = env.prometheus().await;
    env.wait_scraped(&prom, &jvm[0]).await;
    let mut updater = env.updater("u1", &["--prometheus-url", prom.url()]);
    updater.wait_ready().await;

    env.recommend(
        "web",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "400Mi"}}]),
    )
    .await;
    env.recommend(
        "db",
        json!([{"containerName": "app", "target": {"cpu": "2", "memory": "512Mi"}}]),
    )
    .await;
    env.recommend(
        "never",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    env.recommend(
        "scaled",
        json!([{"containerName": "app", "target": {"cpu": "2", "memory": "400Mi"}}]),
    )
    .await;
    env.recommend(
        "off",
        json!([{"containerName": "app", "target": {"cpu": "2", "memory": "400Mi"}}]),
    )
    .await;
    env.recommend(
        "jvm",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "1Gi"},
                "memoryFloor": {"value": "3584Mi", "reason": "HeapHint"}}]),
    )
    .await;

    // web: CPU and memory up, live; limits keep their ratio; same pods, no restarts.
    for (name, uid) in web.iter().zip(&uids) {
        let p = env
            .wait_pod(name, "resized up", |p| {
                applied(p, "app", "requests", "cpu", "1")
                    && applied(p, "app", "limits", "cpu", "2")
                    && applied(p, "app", "requests", "memory", "400Mi")
                    && applied(p, "app", "limits", "memory", "800Mi")
            })
            .await;
        assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
        assert_eq!(restart_count(&p, "app"), 0);
        assert_eq!(p.status.unwrap().qos_class.as_deref(), Some("Burstable"));
    }
    env.wait_state("web", "recording the resizes as Applied", |s| {
        let r = &s.last_resizes;
        r.len() == 2
            && r.iter()
                .all(|r| r.outcome == tailor_crds::v1alpha1::ResizeOutcome::Applied)
    })
    .await;
    assert!(
        env.events("Pod", &web[0])
            .await
            .iter()
            .any(|e| e.0 == "Resizing" && e.1.contains("cpu request 500m -> 1"))
    );
    env.wait_event("VerticalAutoscaler", "web", "Resizing")
        .await;
    // CPU down, live too.
    env.recommend(
        "web",
        json!([{"containerName": "app", "target": {"cpu": "250m", "memory": "400Mi"}}]),
    )
    .await;
    for (name, uid) in web.iter().zip(&uids) {
        let p = env
            .wait_pod(name, "CPU lowered", |p| {
                applied(p, "app", "requests", "cpu", "250m")
                    && applied(p, "app", "limits", "cpu", "500m")
            })
            .await;
        assert_eq!(p.metadata.uid.as_deref(), Some(uid.as_str()));
        assert_eq!(restart_count(&p, "app"), 0);
    }

    // db: CPU goes live and the pod stays Guaranteed; the memory cut waits for approval.
    let p = env
        .wait_pod(&db[0], "CPU raised", |p| {
            applied(p, "app", "requests", "cpu", "2") && applied(p, "app", "limits", "cpu", "2")
        })
        .await;
    assert_eq!(
        spec_value(&p, "app", "limits", "memory").as_deref(),
        Some("1Gi")
    );
    assert_eq!(p.status.unwrap().qos_class.as_deref(), Some("Guaranteed"));
    let state = env
        .wait_state("db", "holding the memory decrease", |s| {
            !s.pending_approvals.is_empty()
                && condition(s, condition::AWAITING_APPROVAL).is_some_and(|c| c.0 == "True")
        })
        .await;
    let pending = state.pending_approvals[0].clone();
    assert_eq!(
        (
            pending.container_name.as_str(),
            pending.from.0.as_str(),
            pending.to.0.as_str()
        ),
        ("app", "1Gi", "512Mi")
    );
    assert_eq!(state.pending_approvals.len(), 1);
    // All of it in the ResizeState: the updater never writes the object's status.
    let va = env.vas().get("db").await.unwrap();
    let managers: Vec<_> = va
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert!(!managers.contains(&"tailor-updater"), "{managers:?}");
    assert!(
        va.status.as_ref().unwrap().pending_approvals.is_empty(),
        "no recommender runs here to mirror it"
    );
    let metrics = updater.metrics().await;
    assert!(
        metrics.lines().any(|l| l
            .starts_with("tailor_updater_pending_approval_since_timestamp_seconds{")
            && l.contains(&format!("id=\"{}\"", pending.id))
            && l.contains("from=\"1Gi\",to=\"512Mi\"")),
        "{metrics}"
    );
    let (_, _, message) = condition(&state, condition::AWAITING_APPROVAL).unwrap();
    assert!(
        message.contains(&format!(
            "tailor.dev/approve-memory-decrease={}",
            pending.id
        )),
        "{message}"
    );
    // A stale id approves nothing and is reported.
    env.annotate("db", "tailor.dev/approve-memory-decrease", "00000000ff")
        .await;
    let note = env
        .wait_event("VerticalAutoscaler", "db", "StaleApproval")
        .await;
    assert!(note.contains("00000000ff"), "{note}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = env.pods().get(&db[0]).await.unwrap();
    assert_eq!(
        spec_value(&p, "app", "limits", "memory").as_deref(),
        Some("1Gi")
    );
    // The right id applies exactly the held decrease.
    env.annotate("db", "tailor.dev/approve-memory-decrease", &pending.id)
        .await;
    let p = env
        .wait_pod(&db[0], "memory lowered after approval", |p| {
            applied(p, "app", "requests", "memory", "512Mi")
                && applied(p, "app", "limits", "memory", "512Mi")
        })
        .await;
    assert_eq!(p.status.unwrap().qos_class.as_deref(), Some("Guaranteed"));
    env.wait_state("db", "without pending approvals", |s| {
        s.pending_approvals.is_empty()
            && condition(s, condition::AWAITING_APPROVAL).is_some_and(|c| c.0 == "False")
    })
    .await;

    // never: CPU moves, memory never goes down.
    env.wait_pod(&never[0], "CPU raised", |p| {
        applied(p, "app", "requests", "cpu", "1")
    })
    .await;
    // scaled: the HPA scales on CPU; memory moves, CPU stays.
    env.wait_pod(&scaled[0], "memory raised", |p| {
        applied(p, "app", "requests", "memory", "400Mi")
    })
    .await;
    let state = env
        .wait_state("scaled", "reporting the HPA", |s| {
            condition(s, condition::CONFIG_UNSUPPORTED)
                .is_some_and(|c| c.0 == "True" && c.1 == "HpaConflict")
        })
        .await;
    assert!(
        condition(&state, condition::CONFIG_UNSUPPORTED)
            .unwrap()
            .2
            .contains("scaled")
    );
    // jvm: lowered through a restart, to the floor and not to the target.
    let p = env
        .wait_pod(&jvm[0], "memory lowered to the floor", |p| {
            applied(p, "app", "limits", "memory", "3584Mi")
                && applied(p, "app", "requests", "memory", "3584Mi")
        })
        .await;
    assert_eq!(restart_count(&p, "app"), 1);

    // After a few more passes: nothing else happened.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p = env.pods().get(&never[0]).await.unwrap();
    assert_eq!(
        spec_value(&p, "app", "requests", "memory").as_deref(),
        Some("1Gi")
    );
    assert_eq!(
        spec_value(&p, "app", "limits", "memory").as_deref(),
        Some("2Gi")
    );
    let p = env.pods().get(&scaled[0]).await.unwrap();
    assert_eq!(
        spec_value(&p, "app", "requests", "cpu").as_deref(),
        Some("500m")
    );
    let p = env.pods().get(&off[0]).await.unwrap();
    assert_eq!(
        spec_value(&p, "app", "requests", "cpu").as_deref(),
        Some("500m")
    );
    assert_eq!(
        p.metadata.generation,
        Some(1),
        "an Off object's pod was resized"
    );
    assert!(
        condition(&env.state("off").await, condition::AWAITING_APPROVAL).is_none(),
        "the updater wrote a record of an Off object"
    );
    let p = env.pods().get(&jvm[0]).await.unwrap();
    assert_eq!(
        spec_value(&p, "app", "limits", "memory").as_deref(),
        Some("3584Mi")
    );

    let metrics = updater.metrics().await;
    assert!(
        metrics.contains("tailor_updater_resizes_total{outcome=\"applied\",resource=\"cpu\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("tailor_updater_resizes_total{outcome=\"restarted\",resource=\"memory\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tailor_updater_recommendation_to_applied_seconds_count"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("tailor_updater_pending_approval_since_timestamp_seconds{"),
        "{metrics}"
    );

    // The resize records which approval it used, so an updater started later knows the
    // annotation was used: nothing is reported stale and nothing is patched again.
    let record = env
        .state("db")
        .await
        .last_resizes
        .iter()
        .find(|r| r.pod == db[0] && r.containers.iter().any(|c| c.approval.is_some()))
        .cloned()
        .expect("a record of the approved resize");
    assert_eq!(
        record.containers[0].approval.as_deref(),
        Some(pending.id.as_str())
    );
    let generation = env.pods().get(&db[0]).await.unwrap().metadata.generation;
    updater.kill();
    let second = env.updater("u2", &[]);
    second.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stale: Vec<_> = env
        .events("VerticalAutoscaler", "db")
        .await
        .into_iter()
        .filter(|e| e.0 == "StaleApproval" && e.1.contains(&pending.id))
        .collect();
    assert!(
        stale.is_empty(),
        "a used approval was called stale: {stale:?}"
    );
    assert_eq!(
        env.pods().get(&db[0]).await.unwrap().metadata.generation,
        generation
    );
}
