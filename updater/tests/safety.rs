//! The updater's safety guarantees (docs/updater.md, "Safety guarantees"): the
//! `tailor-updater` binary against a real API server and the node simulator.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tailor_crds::resize_state::ResizeStateSpec;
use tailor_crds::v1alpha1::ResizeOutcome;

use common::{Env, applied, condition, container, spec_value};

fn generation(p: &Pod) -> i64 {
    p.metadata.generation.unwrap_or(0)
}

async fn set_spec(env: &Env, va: &str, spec: serde_json::Value) {
    env.vas()
        .patch(
            va,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await
        .unwrap();
}

/// Asserts that `check` holds for every pod named, for `secs` seconds.
async fn stays(env: &Env, pods: &[String], secs: u64, what: &str, check: impl Fn(&Pod) -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        for name in pods {
            let p = env.pods().get(name).await.unwrap();
            assert!(
                check(&p),
                "pod {name}: {what}: {:#?}",
                p.spec.map(|s| s.containers)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_stale_or_foreign_recommendation_is_never_applied() {
    let env = Env::start(1, "16", "64Gi", 0.2).await;
    let c = container(
        "app",
        json!({"cpu": "500m", "memory": "256Mi"}),
        json!({"cpu": "1", "memory": "256Mi"}),
    );
    let a = env.workload("a", 1, json!([c])).await;
    let b = env.workload("b", 1, json!([c])).await;
    env.va("v", "a", json!({})).await;
    let updater = env.updater("u1", &[]);
    updater.wait_ready().await;
    let rec =
        |cpu: &str| json!([{"containerName": "app", "target": {"cpu": cpu, "memory": "256Mi"}}]);
    env.recommend("v", rec("750m")).await;
    env.wait_pod(&a[0], "at 750m", |p| {
        applied(p, "app", "requests", "cpu", "750m")
    })
    .await;
    // Each resize's Event names its own values (not the first one's text again).
    env.recommend("v", rec("900m")).await;
    env.wait_pod(&a[0], "at 900m", |p| {
        applied(p, "app", "requests", "cpu", "900m")
    })
    .await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let notes: Vec<String> = env
            .events("Pod", &a[0])
            .await
            .into_iter()
            .filter(|e| e.0 == "Resizing")
            .map(|e| e.1)
            .collect();
        if notes.iter().any(|n| n.contains("500m -> 750m"))
            && notes.iter().any(|n| n.contains("750m -> 900m"))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Resizing events: {notes:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The object now targets b; the recommendation is still a's (the recommender could not
    // recompute: Prometheus is down). b's pods keep their values, and the object says why.
    set_spec(
        &env,
        "v",
        json!({"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "b"}}),
    )
    .await;
    let state = env
        .wait_state("v", "RecommendationStale", |s| {
            condition(s, "RecommendationStale").is_some()
        })
        .await;
    let (status, _, message) = condition(&state, "RecommendationStale").unwrap();
    assert_eq!(status, "True");
    assert!(message.contains("StatefulSet/a"), "{message}");
    stays(&env, &b, 4, "not resized with a's recommendation", |p| {
        generation(p) == 1
    })
    .await;

    // A spec change that alters the recommendation (a bigger heap) makes it stale too, even
    // for the same target.
    let current = env.vas().get("v").await.unwrap();
    env.recommend_for(
        "v",
        current.metadata.generation.unwrap(),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "b"}),
        rec("600m"),
    )
    .await;
    env.wait_pod(&b[0], "at 600m", |p| {
        applied(p, "app", "requests", "cpu", "600m")
    })
    .await;
    env.wait_state("v", "no longer stale", |s| {
        condition(s, "RecommendationStale").is_none()
    })
    .await;
    set_spec(
        &env,
        "v",
        json!({"resourcePolicy": {"containerPolicies": [{"containerName": "app", "heap": {"maxHeap": "1Gi"}}]}}),
    )
    .await;
    env.wait_state("v", "stale after the spec change", |s| {
        condition(s, "RecommendationStale").is_some_and(|c| c.2.contains("generation"))
    })
    .await;
    // The old recommendation, written again as a recommender that kept it would: not applied.
    env.recommend_for(
        "v",
        current.metadata.generation.unwrap(),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "b"}),
        rec("300m"),
    )
    .await;
    stays(&env, &b, 4, "kept at 600m", |p| {
        spec_value(p, "app", "requests", "cpu").as_deref() == Some("600m")
    })
    .await;
}

#[tokio::test]
async fn switching_to_off_or_deleting_the_object_stops_patches_within_a_second() {
    let env = Env::start(1, "32", "64Gi", 0.2).await;
    let c = container(
        "app",
        json!({"cpu": "500m", "memory": "256Mi"}),
        json!({"cpu": "1", "memory": "256Mi"}),
    );
    let pods = env.workload("k", 6, json!([c])).await;
    let gone = env.workload("g", 6, json!([c])).await;
    env.va("k", "k", json!({})).await;
    env.va("g", "g", json!({})).await;
    // One patch a second, so a workload's pass takes six.
    let updater = env.updater(
        "u1",
        &["--max-resizes-per-second", "1", "--resize-burst", "1"],
    );
    updater.wait_ready().await;
    let rec = json!([{"containerName": "app", "target": {"cpu": "750m", "memory": "256Mi"}}]);
    env.recommend("k", rec.clone()).await;
    let resized = |names: &[String]| {
        let names = names.to_vec();
        let env = &env;
        async move {
            let mut n = 0;
            for name in &names {
                if generation(&env.pods().get(name).await.unwrap()) > 1 {
                    n += 1;
                }
            }
            n
        }
    };
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while resized(&pods).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no resize issued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set_spec(&env, "k", json!({"updatePolicy": {"updateMode": "Off"}})).await;
    let at_switch = resized(&pods).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = resized(&pods).await;
    // At one patch a second: at most the one already past its check when the switch landed,
    // and one more if the watch brings the change late on a loaded machine (without the
    // re-check all six go).
    assert!(
        after <= at_switch + 2,
        "{after} pods resized after Off ({at_switch} when it was set)"
    );

    env.recommend("g", rec).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while resized(&gone).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no resize issued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.vas()
        .delete("g", &DeleteParams::default())
        .await
        .unwrap();
    let at_delete = resized(&gone).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = resized(&gone).await;
    assert!(
        after <= at_delete + 2,
        "{after} pods resized after the delete ({at_delete} when it was deleted)"
    );
}

fn pending_ids(state: &ResizeStateSpec) -> Vec<(String, Vec<String>, bool)> {
    state
        .pending_approvals
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                p.pods.iter().map(|r| r.name.clone()).collect(),
                p.approved == Some(true),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_approval_covers_the_pods_it_was_given_for_and_nothing_after() {
    let env = Env::start(1, "16", "64Gi", 0.2).await;
    let c = container(
        "app",
        json!({"cpu": "250m", "memory": "512Mi"}),
        json!({"cpu": "250m", "memory": "512Mi"}),
    );
    let pods = env.workload("m", 2, json!([c.clone()])).await;
    env.va("m", "m", json!({})).await;
    let updater = env.updater("u1", &[]);
    updater.wait_ready().await;
    env.recommend(
        "m",
        json!([{"containerName": "app", "target": {"cpu": "250m", "memory": "400Mi"}}]),
    )
    .await;
    let state = env
        .wait_state("m", "a pending approval", |s| !pending_ids(s).is_empty())
        .await;
    let (id, covered, approved) = pending_ids(&state).remove(0);
    assert_eq!(covered, pods, "the approval names the pods it covers");
    assert!(!approved);
    env.annotate("m", "tailor.dev/approve-memory-decrease", &id)
        .await;
    for p in &pods {
        env.wait_pod(p, "cut to 400Mi", |p| {
            applied(p, "app", "limits", "memory", "400Mi")
        })
        .await;
    }
    env.wait_state("m", "nothing pending", |s| pending_ids(s).is_empty())
        .await;

    // A rollout brings a pod back at the template's 512Mi: the same cut, a new pod. The
    // annotation still carries the old id, which must not approve it.
    env.pods()
        .delete(&pods[0], &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while env.pods().get_opt(&pods[0]).await.unwrap().is_some() {
        assert!(tokio::time::Instant::now() < deadline, "pod not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sts = env
        .pods()
        .get(&pods[1])
        .await
        .unwrap()
        .metadata
        .owner_references;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": pods[0], "labels": {"app": "m"}, "ownerReferences": sts},
        "spec": {"containers": [c]},
    }))
    .unwrap();
    env.pods()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    env.wait_pod(&pods[0], "Running and Ready", common::ready)
        .await;
    let state = env
        .wait_state("m", "a new pending approval", |s| {
            !pending_ids(s).is_empty()
        })
        .await;
    let (new_id, covered, approved) = pending_ids(&state).remove(0);
    assert_ne!(new_id, id, "a later identical cut has a new id");
    assert_eq!(covered, [pods[0].clone()]);
    assert!(!approved);
    stays(&env, &pods[..1], 5, "not cut without a new approval", |p| {
        spec_value(p, "app", "limits", "memory").as_deref() == Some("512Mi")
    })
    .await;
}

#[tokio::test]
async fn a_memory_decrease_the_kubelet_refuses_is_taken_back_once() {
    let env = Env::start(1, "16", "64Gi", 0.2).await;
    let c = container(
        "app",
        json!({"cpu": "250m", "memory": "512Mi"}),
        json!({"cpu": "250m", "memory": "512Mi"}),
    );
    // The process uses 300Mi, more than the cut leaves it.
    let usage = json!({"app": {"model": "constant", "cpu": 0.1, "memory": "300Mi"}});
    let pods = env
        .workload_annotated(
            "r",
            1,
            json!([c]),
            json!({"sim.tailor.dev/usage": usage.to_string()}),
        )
        .await;
    env.va("r", "r", json!({})).await;
    let updater = env.updater("u1", &[]);
    updater.wait_ready().await;
    env.recommend(
        "r",
        json!([{"containerName": "app", "target": {"cpu": "250m", "memory": "200Mi"}}]),
    )
    .await;
    let state = env
        .wait_state("r", "a pending approval", |s| !pending_ids(s).is_empty())
        .await;
    let id = pending_ids(&state).remove(0).0;
    env.annotate("r", "tailor.dev/approve-memory-decrease", &id)
        .await;
    // The cut is sent, refused (usage above it), and taken back.
    let mut state = env
        .wait_state("r", "the resize Reverted", |s| {
            s.last_resizes
                .first()
                .is_some_and(|r| r.outcome == ResizeOutcome::Reverted)
        })
        .await;
    let record = state.last_resizes.remove(0);
    let usage = record.containers[0]
        .refused_usage
        .clone()
        .expect("usage kept");
    assert_eq!(usage.0, "300Mi");
    env.wait_pod(&pods[0], "back at 512Mi", |p| {
        spec_value(p, "app", "limits", "memory").as_deref() == Some("512Mi")
            && applied(p, "app", "limits", "memory", "512Mi")
    })
    .await;
    let note = env
        .wait_event("VerticalAutoscaler", "r", "MemoryDecreaseReverted")
        .await;
    assert!(note.contains("300Mi"), "{note}");
    env.wait_event("Pod", &pods[0], "MemoryDecreaseReverted")
        .await;
    // The cut is never applied later, and not tried again under the used approval: the
    // memory stays, and the pod waits for a new approval.
    stays(&env, &pods, 6, "kept at 512Mi", |p| {
        spec_value(p, "app", "limits", "memory").as_deref() == Some("512Mi")
            && applied(p, "app", "limits", "memory", "512Mi")
    })
    .await;
    let pending = pending_ids(&env.state("r").await);
    assert!(
        pending.iter().all(|(i, _, approved)| *i != id && !approved),
        "{pending:?}"
    );
    // One refusal is one error and one revert in the metrics, however many passes see it.
    let errors = updater
        .metric("tailor_updater_resizes_total{outcome=\"error\"")
        .await;
    let reverted = updater
        .metric("tailor_updater_resizes_total{outcome=\"reverted\"")
        .await;
    assert_eq!(
        (errors, reverted),
        (1.0, 1.0),
        "{}",
        updater.metrics().await
    );
}

/// Installs the stand-in for upstream VPA's CRD and waits until it is served.
async fn install_vpa_crd(env: &Env) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/vpa-crd.yaml");
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let api = kube::Api::<CustomResourceDefinition>::all(env.cp.client());
    api.create(&PostParams::default(), &crd).await.unwrap();
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let served = api
            .get("verticalpodautoscalers.autoscaling.k8s.io")
            .await
            .unwrap()
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
        if served {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "VPA CRD not established"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn one_autoscaler_acts_on_a_workload() {
    let env = Env::start(1, "16", "64Gi", 0.2).await;
    install_vpa_crd(&env).await;
    let c = container(
        "app",
        json!({"cpu": "500m", "memory": "256Mi"}),
        json!({"cpu": "1", "memory": "256Mi"}),
    );
    let w = env.workload("w", 2, json!([c])).await;
    let v = env.workload("v", 1, json!([c])).await;
    // Two objects on w: the older acts. (Creation times have a resolution of a second.)
    env.va("first", "w", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.va("second", "w", json!({})).await;
    // An upstream VPA in an updating mode on v, older than the VerticalAutoscaler on v.
    let vpa: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "autoscaling.k8s.io/v1", "kind": "VerticalPodAutoscaler",
        "metadata": {"name": "upstream", "namespace": env.ns},
        "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "v"},
                 "updatePolicy": {"updateMode": "Recreate"}},
    }))
    .unwrap();
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("autoscaling.k8s.io", "v1", "VerticalPodAutoscaler"),
        "verticalpodautoscalers",
    );
    kube::Api::<kube::api::DynamicObject>::namespaced_with(env.cp.client(), &env.ns, &resource)
        .create(&PostParams::default(), &vpa)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    env.va("beside-vpa", "v", json!({})).await;
    let updater = env.updater("u1", &[]);
    updater.wait_ready().await;
    let rec =
        |cpu: &str| json!([{"containerName": "app", "target": {"cpu": cpu, "memory": "256Mi"}}]);
    env.recommend("second", rec("900m")).await;
    env.recommend("first", rec("700m")).await;
    env.recommend("beside-vpa", rec("900m")).await;
    for p in &w {
        env.wait_pod(p, "at the older object's 700m", |p| {
            applied(p, "app", "requests", "cpu", "700m")
        })
        .await;
    }
    let second = env
        .wait_state("second", "AutoscalerConflict", |s| {
            condition(s, "AutoscalerConflict").is_some()
        })
        .await;
    let (status, reason, message) = condition(&second, "AutoscalerConflict").unwrap();
    assert_eq!((status, reason), ("True", "AnotherAutoscaler"));
    assert!(message.contains("VerticalAutoscaler/first"), "{message}");
    let beside = env
        .wait_state("beside-vpa", "AutoscalerConflict", |s| {
            condition(s, "AutoscalerConflict").is_some()
        })
        .await;
    let message = condition(&beside, "AutoscalerConflict").unwrap().2;
    assert!(
        message.contains("VerticalPodAutoscaler/upstream"),
        "{message}"
    );
    assert!(condition(&env.state("first").await, "AutoscalerConflict").is_none());
    stays(&env, &w, 3, "never at the younger object's 900m", |p| {
        spec_value(p, "app", "requests", "cpu").as_deref() == Some("700m")
    })
    .await;
    stays(&env, &v, 1, "left to the VPA", |p| generation(p) == 1).await;
}

#[tokio::test]
async fn every_declined_change_is_reported() {
    let env = Env::start(1, "16", "64Gi", 0.2).await;
    let c = container(
        "app",
        json!({"cpu": "500m", "memory": "512Mi"}),
        json!({"cpu": "1", "memory": "512Mi"}),
    );
    env.workload("d", 1, json!([c])).await;
    // RestartContainer asked for a container whose memory resizePolicy is NotRequired, and a
    // policy for a container the pods do not have.
    env.va(
        "d",
        "d",
        json!({"updatePolicy": {"memoryDecrease": "RestartContainer"},
               "resourcePolicy": {"containerPolicies": [{"containerName": "ghost", "mode": "Off"}]}}),
    )
    .await;
    let updater = env.updater("u1", &[]);
    updater.wait_ready().await;
    env.recommend(
        "d",
        json!([{"containerName": "app", "target": {"cpu": "500m", "memory": "256Mi"}}]),
    )
    .await;
    let note = env
        .wait_event("VerticalAutoscaler", "d", "ResizePolicyNotRequired")
        .await;
    assert!(note.contains("container app"), "{note}");
    let note = env
        .wait_event("VerticalAutoscaler", "d", "PolicyForMissingContainer")
        .await;
    assert!(note.contains("ghost"), "{note}");
}
