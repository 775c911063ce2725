//! What the recommender keeps of a cached pod: identity and owners (to find a workload's pods),
//! whether it is being deleted, the heap-ceiling annotations, and each container's name,
//! resources, command, arguments and literal environment values (requests for the metrics,
//! flags such as `-Xmx` and `GOMEMLIMIT` for the heap hints). Status, volumes, labels, managed
//! fields and everything else are dropped as the pod arrives: on a large cluster the pod cache
//! is most of the process's memory.

use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};

use super::HEAP_ANNOTATION;

/// The recommender's [`tailor_runtime::packed::Slim`]: [`slim`].
pub struct Slimmed;

impl tailor_runtime::packed::Slim for Slimmed {
    fn slim(pod: &mut Pod) {
        slim(pod);
    }
}

/// A pod as the recommender's cache keeps it: slimmed and packed as it is read.
pub type CachedPod = tailor_runtime::packed::PackedPod<Slimmed>;

/// Slims `pod` to what the recommender reads.
pub fn slim(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = kube::api::ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        owner_references: meta.owner_references,
        deletion_timestamp: meta.deletion_timestamp,
        annotations: meta
            .annotations
            .map(|a| {
                a.into_iter()
                    .filter(|(k, _)| k.starts_with(HEAP_ANNOTATION))
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
            .filter(|a| !a.is_empty()),
        ..Default::default()
    };
    let slim = |c: Container| Container {
        name: c.name,
        resources: c.resources,
        command: c.command,
        args: c.args,
        env: c
            .env
            .map(|env| {
                env.into_iter()
                    .filter(|e| e.value.is_some())
                    .map(|e| EnvVar {
                        name: e.name,
                        value: e.value,
                        value_from: None,
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|env| !env.is_empty()),
        ..Default::default()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        containers: spec.containers.into_iter().map(slim).collect(),
        ..Default::default()
    });
    pod.status = None;
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    use super::slim;

    #[test]
    fn a_slim_pod_keeps_what_the_recommender_reads() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u1",
                "labels": {"app": "web"},
                "annotations": {"tailor.dev/heap-max.app": "2Gi", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-aaa", "uid": "r1", "controller": true}],
                "managedFields": [{"manager": "kubectl"}],
            },
            "spec": {
                "containers": [{
                    "name": "app", "image": "example/app:1",
                    "command": ["java"], "args": ["-Xmx2g", "-jar", "app.jar"],
                    "env": [{"name": "GOMEMLIMIT", "value": "1GiB"}, {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                }],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "nodeName": "n1",
            },
            "status": {"phase": "Running"},
        }))
        .unwrap_or_default();
        slim(&mut pod);
        assert_eq!(
            serde_json::to_value(&pod).unwrap_or_default(),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "web-1", "namespace": "shop", "uid": "u1",
                    "annotations": {"tailor.dev/heap-max.app": "2Gi"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-aaa", "uid": "r1", "controller": true}],
                },
                "spec": {"containers": [{
                    "name": "app", "command": ["java"], "args": ["-Xmx2g", "-jar", "app.jar"],
                    "env": [{"name": "GOMEMLIMIT", "value": "1GiB"}],
                    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}},
                }]},
            })
        );
    }
}
