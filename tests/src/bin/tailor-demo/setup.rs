//! Creating the demo's objects: the namespace, each workload's controller objects and pods (no
//! controllers run: the demo writes what they would), and the VerticalAutoscalers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_e2e::sim::usage::USAGE_ANNOTATION;

use crate::workloads::Workload;
use crate::{Error, NS};

/// A workload's pods and, for a Deployment, its ReplicaSet.
pub struct Created {
    pub pods: Vec<String>,
    pub replicaset: Option<String>,
}

/// The spec of one pod from its name and its container.
pub type PodSpec<'a> = &'a dyn Fn(&str, &Value) -> Result<Value, Error>;

pub async fn namespace(client: &kube::Client) -> Result<(), Error> {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// Creates the workload's controller objects and pods (`pod_spec` gives each pod's spec).
pub async fn create(
    client: &kube::Client,
    w: &Workload,
    pod_spec: PodSpec<'_>,
) -> Result<Created, Error> {
    let labels = json!({"app": w.name});
    let template = json!({"metadata": {"labels": labels}, "spec": {"containers": [w.container]}});
    let pod_annotations = json!({USAGE_ANNOTATION: w.usage.to_string()});
    let pp = PostParams::default();
    let (owner, replicaset, names): (_, _, Vec<String>) = if w.kind == "Deployment" {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": w.name},
            "spec": {"replicas": w.replicas, "selector": {"matchLabels": labels}, "template": template},
        }))?;
        let d = Api::<Deployment>::namespaced(client.clone(), NS)
            .create(&pp, &d)
            .await?;
        let rs_name = format!("{}-6d4f9c", w.name);
        let mut rs: ReplicaSet = serde_json::from_value(json!({
            "metadata": {"name": rs_name, "labels": labels},
            "spec": {"replicas": w.replicas, "selector": {"matchLabels": labels}, "template": template},
        }))?;
        rs.metadata.owner_references = d.controller_owner_ref(&()).map(|o| vec![o]);
        let rs = Api::<ReplicaSet>::namespaced(client.clone(), NS)
            .create(&pp, &rs)
            .await?;
        let names = (0..w.replicas)
            .map(|i| format!("{rs_name}-{}", ["x7k2p", "m4q9t", "b8n3v"][i % 3]))
            .collect();
        (rs.controller_owner_ref(&()), Some(rs_name), names)
    } else {
        let s: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": w.name},
            "spec": {"replicas": w.replicas, "serviceName": w.name, "selector": {"matchLabels": labels}, "template": template},
        }))?;
        let s = Api::<StatefulSet>::namespaced(client.clone(), NS)
            .create(&pp, &s)
            .await?;
        let names = (0..w.replicas).map(|i| format!("{}-{i}", w.name)).collect();
        (s.controller_owner_ref(&()), None, names)
    };
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    for name in &names {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "annotations": pod_annotations},
            "spec": pod_spec(name, &w.container)?,
        }))?;
        pod.metadata.owner_references = owner.clone().map(|o| vec![o]);
        pods.create(&pp, &pod).await?;
    }
    Ok(Created {
        pods: names,
        replicaset,
    })
}

/// One VerticalAutoscaler per workload, with its policy.
pub async fn verticalautoscalers(client: &kube::Client, list: &[Workload]) -> Result<(), Error> {
    let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), NS);
    for w in list {
        let mut spec =
            json!({"targetRef": {"apiVersion": "apps/v1", "kind": w.kind, "name": w.name}});
        if let (Some(s), Some(extra)) = (spec.as_object_mut(), w.va.as_object()) {
            for (k, v) in extra {
                s.insert(k.clone(), v.clone());
            }
        }
        let va: VerticalAutoscaler = serde_json::from_value(json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": w.name}, "spec": spec,
        }))?;
        vas.create(&PostParams::default(), &va).await?;
    }
    Ok(())
}

/// Waits until `total` pods run (and, with `ready`, are Ready); returns them.
pub async fn wait_running(
    client: &kube::Client,
    total: usize,
    ready: bool,
    timeout: Duration,
) -> Result<Vec<Pod>, Error> {
    let pod_api = Api::<Pod>::namespaced(client.clone(), NS);
    let deadline = Instant::now() + timeout;
    loop {
        let l = pod_api.list(&ListParams::default()).await?.items;
        let running: Vec<Pod> = l
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter(|p| !ready || crate::expected::pod_condition(p, "Ready"))
            .collect();
        if running.len() == total {
            return Ok(running);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {total} pods running after {timeout:?}",
                running.len()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Pod name to UID.
pub fn uids(running: &[Pod]) -> BTreeMap<String, String> {
    running
        .iter()
        .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
        .collect()
}
