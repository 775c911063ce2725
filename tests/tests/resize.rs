//! The pod `resize` subresource on a real kube-apiserver: a bound pod's resources change in
//! place, and the server refuses a resize that would change the pod's QoS class.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tailor_e2e::ControlPlane;

async fn bound_pod(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    resources: serde_json::Value,
) -> anyhow::Result<Pod> {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "nodeName": "node-a",
            "containers": [{ "name": "app", "image": "registry.example/app:1", "resources": resources }]
        }
    }))?;
    Ok(Api::<Pod>::namespaced(cp.client(), ns)
        .create(&PostParams::default(), &pod)
        .await?)
}

fn resources_patch(resources: serde_json::Value) -> serde_json::Value {
    json!({ "spec": { "containers": [{ "name": "app", "resources": resources }] } })
}

#[tokio::test]
async fn bound_pod_is_resized_through_the_resize_subresource() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let ns = cp.namespace("resize").await?;
    tailor_e2e::control_plane::create_node(&cp.client(), "node-a").await?;
    let created = bound_pod(
        &cp,
        &ns,
        "web",
        json!({ "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "200m", "memory": "256Mi" } }),
    )
    .await?;
    assert_eq!(created.metadata.generation, Some(1));
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);

    // A plain patch of the pod's resources is refused: they change only through `resize`.
    let plain = pods
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(resources_patch(json!({ "requests": { "cpu": "150m" } }))),
        )
        .await;
    match plain {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{}", s.message),
        other => panic!("plain resource patch must be refused, got {other:?}"),
    }

    let resized = pods
        .patch_resize(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(resources_patch(json!({
                "requests": { "cpu": "300m", "memory": "192Mi" },
                "limits": { "cpu": "600m", "memory": "384Mi" }
            }))),
        )
        .await?;
    assert_eq!(
        resized.metadata.uid, created.metadata.uid,
        "same pod, not recreated"
    );
    assert_eq!(
        resized.metadata.generation,
        Some(2),
        "a resize bumps the generation"
    );
    let res = resized.spec.as_ref().expect("spec").containers[0]
        .resources
        .clone()
        .expect("resources");
    let requests = res.requests.expect("requests");
    let limits = res.limits.expect("limits");
    assert_eq!(requests["cpu"].0, "300m");
    assert_eq!(requests["memory"].0, "192Mi");
    assert_eq!(limits["cpu"].0, "600m");
    assert_eq!(limits["memory"].0, "384Mi");
    // And the change is stored, not only echoed.
    let stored = pods.get("web").await?;
    assert_eq!(
        stored.spec.expect("spec").containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .expect("requests")["cpu"]
            .0,
        "300m"
    );
    Ok(())
}

#[tokio::test]
async fn resize_that_would_change_the_qos_class_is_rejected() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let ns = cp.namespace("qos").await?;
    tailor_e2e::control_plane::create_node(&cp.client(), "node-a").await?;
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);

    // Guaranteed: lowering only the CPU request would make it Burstable.
    let guaranteed = json!({ "cpu": "500m", "memory": "256Mi" });
    bound_pod(
        &cp,
        &ns,
        "guaranteed",
        json!({ "requests": guaranteed, "limits": guaranteed }),
    )
    .await?;
    // Burstable: making requests == limits for both resources would make it Guaranteed.
    bound_pod(
        &cp,
        &ns,
        "burstable",
        json!({ "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "cpu": "200m", "memory": "256Mi" } }),
    )
    .await?;

    for (pod, resources) in [
        ("guaranteed", json!({ "requests": { "cpu": "250m" } })),
        (
            "burstable",
            json!({ "requests": { "cpu": "200m", "memory": "256Mi" } }),
        ),
    ] {
        let result = pods
            .patch_resize(
                pod,
                &PatchParams::default(),
                &Patch::Strategic(resources_patch(resources)),
            )
            .await;
        match result {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{pod}: {}", s.message);
                assert!(
                    s.message
                        .contains("Pod QOS Class may not change as a result of resizing"),
                    "{pod}: {}",
                    s.message
                );
            }
            other => panic!("{pod}: QoS-changing resize must be rejected, got {other:?}"),
        }
        // Nothing changed.
        assert_eq!(pods.get(pod).await?.metadata.generation, Some(1), "{pod}");
    }
    Ok(())
}
