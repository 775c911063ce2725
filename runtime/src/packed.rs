//! A pod as the watch caches keep it: what a binary reads of it, packed.
//!
//! A `k8s_openapi` `Pod` costs about 2.4 KiB of struct before any of its strings, and each
//! container another 2.1 KiB, however few of their fields are set: a cache of 50,000 slimmed
//! pods was about 300 MiB. A [`PackedPod`] keeps the metadata (what lookups and owner
//! resolution read), the node name, and the rest of the slimmed pod as compact JSON, about
//! 1.5 KiB in all. [`PackedPod::unpack`] gives the `Pod` back for the few pods a reconcile
//! plans.
//!
//! The pod is slimmed ([`Slim`]) and packed as it is read from the API server: a
//! `PackedPod` deserializes from a pod's JSON, so the watch delivers packed pods and the full
//! pod exists only while one event is read.

use std::borrow::Cow;
use std::marker::PhantomData;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ObjectMeta;
use serde::{Deserialize, Deserializer};

/// What a binary keeps of a pod: a function that drops the rest.
pub trait Slim: 'static {
    /// Drops what the binary does not read.
    fn slim(pod: &mut Pod);
}

/// A slimmed pod, packed (see the module documentation).
pub struct PackedPod<S> {
    metadata: ObjectMeta,
    node_name: Option<String>,
    /// The slimmed pod without its metadata, as JSON.
    body: Box<[u8]>,
    slim: PhantomData<fn() -> S>,
}

impl<S: Slim> PackedPod<S> {
    /// Slims and packs a pod.
    pub fn pack(mut pod: Pod) -> Result<Self, serde_json::Error> {
        S::slim(&mut pod);
        let metadata = std::mem::take(&mut pod.metadata);
        let node_name = pod.spec.as_mut().and_then(|s| s.node_name.take());
        let body = serde_json::to_vec(&pod)?.into_boxed_slice();
        Ok(Self {
            metadata,
            node_name,
            body,
            slim: PhantomData,
        })
    }
}

impl<S> PackedPod<S> {
    /// The slimmed pod. Its body was written by [`PackedPod::pack`] and reads back; if it
    /// ever did not, the pod comes back with its metadata only (no containers: nothing is
    /// planned for it) and the error is logged.
    pub fn unpack(&self) -> Pod {
        let mut pod = serde_json::from_slice::<Pod>(&self.body).unwrap_or_else(|e| {
            tracing::error!(pod = ?self.metadata.name, error = %e, "a cached pod did not unpack");
            Pod::default()
        });
        pod.metadata = self.metadata.clone();
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name.clone_from(&self.node_name);
        }
        pod
    }

    /// The node the pod is bound to.
    pub fn node_name(&self) -> Option<&str> {
        self.node_name.as_deref()
    }

    /// The bytes the packed part takes (for tests and benchmarks).
    pub fn packed_len(&self) -> usize {
        self.body.len()
    }
}

impl<S> Clone for PackedPod<S> {
    fn clone(&self) -> Self {
        Self {
            metadata: self.metadata.clone(),
            node_name: self.node_name.clone(),
            body: self.body.clone(),
            slim: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for PackedPod<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedPod")
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("node_name", &self.node_name)
            .field("packed_bytes", &self.body.len())
            .finish()
    }
}

impl<'de, S: Slim> Deserialize<'de> for PackedPod<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pod = Pod::deserialize(d)?;
        Self::pack(pod).map_err(serde::de::Error::custom)
    }
}

impl<S> kube::Resource for PackedPod<S> {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("Pod")
    }
    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("")
    }
    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }
    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("pods")
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use kube::Resource;
    use serde_json::json;

    use super::{PackedPod, Slim};

    /// Keeps containers' names and resources, drops labels and images.
    struct Test;
    impl Slim for Test {
        fn slim(pod: &mut Pod) {
            pod.metadata.labels = None;
            for c in pod.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
                c.image = None;
            }
        }
    }

    fn pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-a", "uid": "r1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "example/app:1",
                     "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                       "resources": {"requests": {"cpu": "100m"}}}]}
        })
    }

    #[test]
    fn a_packed_pod_reads_from_json_slimmed_and_unpacks_to_the_slim_pod() {
        let packed: PackedPod<Test> = serde_json::from_value(pod()).unwrap();
        assert_eq!(packed.meta().name.as_deref(), Some("web-1"));
        assert_eq!(packed.meta().labels, None, "slimmed as it was read");
        assert_eq!(packed.node_name(), Some("n1"));
        let mut expected: Pod = serde_json::from_value(pod()).unwrap();
        Test::slim(&mut expected);
        assert_eq!(packed.unpack(), expected);
        assert_eq!(packed.clone().unpack(), expected);
    }

    #[test]
    fn a_packed_pod_is_smaller_than_the_struct() {
        let packed: PackedPod<Test> = serde_json::from_value(pod()).unwrap();
        let full = std::mem::size_of::<Pod>()
            + std::mem::size_of::<k8s_openapi::api::core::v1::Container>();
        let packed_size = std::mem::size_of::<PackedPod<Test>>() + packed.packed_len();
        assert!(
            packed_size * 4 < full,
            "packed {packed_size} bytes against {full} bytes of struct"
        );
    }

    #[test]
    fn it_is_the_pod_resource() {
        use kube::Resource as _;
        assert_eq!(PackedPod::<Test>::plural(&()), "pods");
        assert_eq!(
            PackedPod::<Test>::url_path(&(), Some("shop")),
            "/api/v1/namespaces/shop/pods"
        );
    }
}
