//! Which workload a pod belongs to, from the reflector caches: a Deployment through its
//! ReplicaSets, a CronJob through its Jobs, any other kind directly. Only controller owner
//! references count, and names match exactly (a neighbour sharing a name prefix is not ours).

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::index::OwnerIndex;

/// The controller owner of an object: (kind, name).
pub fn controller_of(refs: Option<&Vec<OwnerReference>>) -> Option<(String, String)> {
    refs.and_then(|r| r.iter().find(|o| o.controller == Some(true)))
        .map(|o| (o.kind.clone(), o.name.clone()))
}

/// The (kind, name) of each cached object in `namespace` whose controller is `kind`/`name`.
fn children<K: Resource<DynamicType = ()>>(
    cached: &[Arc<K>],
    (namespace, kind, name): (&str, &str, &str),
) -> Vec<(String, String)> {
    cached
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .filter(|o| {
            controller_of(o.meta().owner_references.as_ref())
                .is_some_and(|(k, n)| k == kind && n == name)
        })
        .filter_map(|o| Some((K::kind(&()).into_owned(), o.meta().name.clone()?)))
        .collect()
}

/// Resolves pods to workloads from ReplicaSet and Job metadata caches.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // kube's Store is not Debug
pub struct Owners {
    /// ReplicaSet metadata.
    pub replicasets: Store<PartialObjectMeta<ReplicaSet>>,
    /// Job metadata.
    pub jobs: Store<PartialObjectMeta<Job>>,
}

impl Owners {
    /// The workload (kind, name) the pod belongs to, following ReplicaSet -> Deployment and
    /// Job -> CronJob where the intermediate object has such an owner.
    pub fn workload_of<P: Resource>(&self, pod: &P) -> Option<(String, String)> {
        let ns = pod.meta().namespace.clone()?;
        let (kind, name) = controller_of(pod.meta().owner_references.as_ref())?;
        let parent = match kind.as_str() {
            "ReplicaSet" => self
                .replicasets
                .get(&ObjectRef::new(&name).within(&ns))
                .and_then(|rs| controller_of(rs.metadata.owner_references.as_ref())),
            "Job" => self
                .jobs
                .get(&ObjectRef::new(&name).within(&ns))
                .and_then(|j| controller_of(j.metadata.owner_references.as_ref())),
            _ => None,
        };
        match parent {
            Some((pk, pn)) if matches!(pk.as_str(), "Deployment" | "CronJob") => Some((pk, pn)),
            _ => Some((kind, name)),
        }
    }

    /// Whether the pod belongs to the workload `kind`/`name` (in the pod's namespace).
    pub fn owns<P: Resource>(&self, kind: &str, name: &str, pod: &P) -> bool {
        let Some((k, n)) = controller_of(pod.meta().owner_references.as_ref()) else {
            return false;
        };
        if k == kind && n == name {
            return true;
        }
        let ns = pod.meta().namespace.clone().unwrap_or_default();
        let parent = match (kind, k.as_str()) {
            ("Deployment", "ReplicaSet") => self
                .replicasets
                .get(&ObjectRef::new(&n).within(&ns))
                .and_then(|rs| controller_of(rs.metadata.owner_references.as_ref())),
            ("CronJob", "Job") => self
                .jobs
                .get(&ObjectRef::new(&n).within(&ns))
                .and_then(|j| controller_of(j.metadata.owner_references.as_ref())),
            _ => None,
        };
        parent.is_some_and(|(pk, pn)| pk == kind && pn == name)
    }

    /// The pods of `kind`/`name` in `namespace` that are not being deleted: the pods `index`
    /// files under the workload, or under its ReplicaSets (a Deployment) or Jobs (a CronJob),
    /// each checked against the cache. In order of owner and name.
    pub fn pods<P>(
        &self,
        pods: &Store<P>,
        index: &OwnerIndex,
        namespace: &str,
        kind: &str,
        name: &str,
    ) -> Vec<Arc<P>>
    where
        P: crate::Object,
        P::DynamicType: Default,
    {
        let mut owners = vec![(kind.to_owned(), name.to_owned())];
        let owner = (namespace, kind, name);
        match kind {
            "Deployment" => owners.extend(children(&self.replicasets.state(), owner)),
            "CronJob" => owners.extend(children(&self.jobs.state(), owner)),
            _ => {}
        }
        owners
            .iter()
            .flat_map(|(k, n)| index.owned_by(namespace, k, n))
            .filter_map(|pod| pods.get(&ObjectRef::new(&pod).within(namespace)))
            .filter(|p| p.meta().deletion_timestamp.is_none())
            .filter(|p| self.owns(kind, name, p.as_ref()))
            .collect()
    }
}
