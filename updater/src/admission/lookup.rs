//! What the webhook reads, from caches every replica keeps (leader or not): the
//! VerticalAutoscalers, ResizeStates (pending approvals), HorizontalPodAutoscalers, and the
//! metadata of ReplicaSets and Jobs (to find a pod's workload). A ReplicaSet or Job created a
//! moment ago may not be cached yet when its first pods arrive; it is then read from the API
//! server (a GET with a one-second timeout). Likewise the gate, before it denies a memory cut,
//! reads the namespace's ResizeStates from the API server: an approval written a moment ago
//! may not be cached yet, and a person's approved cut must not be refused for that.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use tailor_crds::resize_state::ResizeState;
use tailor_crds::v1alpha1::{PendingApproval, ResourceName, VerticalAutoscaler};
use tailor_runtime::workload::{Owners, controller_of};

use crate::plan::guard::{self, Claimant};

/// The caches, and a client for what they miss.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // kube's Store is not Debug
pub struct Lookup {
    pub client: kube::Client,
    pub vas: Store<VerticalAutoscaler>,
    pub states: Store<ResizeState>,
    pub hpas: Store<HorizontalPodAutoscaler>,
    pub owners: Owners,
    /// The namespaces watched; nothing elsewhere is read.
    pub scope: tailor_runtime::Scope,
}

/// The futures that keep a [`Lookup`] current.
pub type Watches = Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>;

impl Lookup {
    /// The caches of the namespaces in `scope` and the watches that fill them (run each in a
    /// task).
    pub fn start(client: kube::Client, scope: tailor_runtime::Scope) -> (Self, Watches) {
        use tailor_runtime::cache_scoped;
        let (vas, va_run) = cache_scoped::<VerticalAutoscaler>(&scope, &client);
        let (states, state_run) = cache_scoped::<ResizeState>(&scope, &client);
        let (hpas, hpa_run) = cache_scoped::<HorizontalPodAutoscaler>(&scope, &client);
        let (replicasets, rs_run) = cache_scoped::<PartialObjectMeta<ReplicaSet>>(&scope, &client);
        let (jobs, job_run) = cache_scoped::<PartialObjectMeta<Job>>(&scope, &client);
        let lookup = Self {
            client,
            vas,
            states,
            hpas,
            owners: Owners { replicasets, jobs },
            scope,
        };
        let watches: Watches = vec![
            Box::pin(va_run),
            Box::pin(state_run),
            Box::pin(hpa_run),
            Box::pin(rs_run),
            Box::pin(job_run),
        ];
        (lookup, watches)
    }

    /// Waits until every cache has listed once.
    pub async fn synced(&self) {
        let _ = tokio::join!(
            self.vas.wait_until_ready(),
            self.states.wait_until_ready(),
            self.hpas.wait_until_ready(),
            self.owners.replicasets.wait_until_ready(),
            self.owners.jobs.wait_until_ready(),
        );
    }

    /// The controller owner of the ReplicaSet or Job `name` in `ns`: from the cache, else read.
    async fn parent(&self, kind: &str, ns: &str, name: &str) -> Option<(String, String)> {
        let cached = match kind {
            "ReplicaSet" => self
                .owners
                .replicasets
                .get(&ObjectRef::new(name).within(ns))
                .map(|o| controller_of(o.metadata.owner_references.as_ref())),
            "Job" => self
                .owners
                .jobs
                .get(&ObjectRef::new(name).within(ns))
                .map(|o| controller_of(o.metadata.owner_references.as_ref())),
            _ => return None,
        };
        if let Some(parent) = cached {
            return parent;
        }
        let read = async {
            match kind {
                "ReplicaSet" => Api::<ReplicaSet>::namespaced(self.client.clone(), ns)
                    .get_metadata_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .map(|o| o.metadata),
                _ => Api::<Job>::namespaced(self.client.clone(), ns)
                    .get_metadata_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .map(|o| o.metadata),
            }
        };
        let meta = tokio::time::timeout(Duration::from_secs(1), read)
            .await
            .ok()
            .flatten()?;
        controller_of(meta.owner_references.as_ref())
    }

    /// The workload (kind, name) a pod being created in `ns` belongs to: a Deployment through
    /// its ReplicaSet, a CronJob through its Job, any other controller directly.
    pub async fn workload_of(&self, ns: &str, pod: &Pod) -> Option<(String, String)> {
        let (kind, name) = controller_of(pod.metadata.owner_references.as_ref())?;
        match self.parent(&kind, ns, &name).await {
            Some((pk, pn)) if matches!(pk.as_str(), "Deployment" | "CronJob") => Some((pk, pn)),
            _ => Some((kind, name)),
        }
    }

    /// The VerticalAutoscaler that sizes the workload's new pods: of those in `ns` targeting
    /// it with `Initial` or `InPlace`, the oldest (the updater's one-owner rule).
    pub fn autoscaler_for(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
    ) -> Option<Arc<VerticalAutoscaler>> {
        let sizing: Vec<Arc<VerticalAutoscaler>> = self
            .vas
            .state()
            .into_iter()
            .filter(|v| v.namespace().as_deref() == Some(ns))
            .filter(|v| v.spec.target_ref.kind == kind && v.spec.target_ref.name == name)
            .filter(|v| v.spec.update_policy.update_mode.sizes_new_pods())
            .collect();
        let claimants: Vec<Claimant> = sizing.iter().map(|v| claimant(v)).collect();
        let oldest = claimants
            .iter()
            .position(|c| guard::owner(c, &claimants).is_none())?;
        sizing.into_iter().nth(oldest)
    }

    /// Resources an HPA scales the autoscaler's workload on (left alone), unless it opts in.
    pub fn blocked(&self, va: &VerticalAutoscaler) -> BTreeSet<ResourceName> {
        let hpas = self.hpas.state();
        crate::plan::hpa::blocked_for(va, hpas.iter().map(AsRef::as_ref)).0
    }

    /// Every pending approval in `ns`, from the cached ResizeStates of live VerticalAutoscalers.
    pub fn pending_in(&self, ns: &str) -> Vec<PendingApproval> {
        let states = self.states.state();
        let vas = self.vas.state();
        pending(
            states.iter().map(AsRef::as_ref),
            vas.iter().map(AsRef::as_ref),
            ns,
        )
    }

    /// Every pending approval in `ns`, read from the API server (a second each at most), for
    /// when the caches may trail a ResizeState written a moment ago. `None` if a read failed.
    pub async fn pending_read(&self, ns: &str) -> Option<Vec<PendingApproval>> {
        let params = kube::api::ListParams::default();
        let states = Api::<ResizeState>::namespaced(self.client.clone(), ns);
        let vas = Api::<VerticalAutoscaler>::namespaced(self.client.clone(), ns);
        let read = async { tokio::try_join!(states.list(&params), vas.list(&params)) };
        let (states, vas) = tokio::time::timeout(Duration::from_secs(1), read)
            .await
            .ok()?
            .ok()?;
        Some(pending(states.items.iter(), vas.items.iter(), ns))
    }
}

/// The pending approvals of the ResizeStates in `ns` whose VerticalAutoscaler (same name,
/// same uid) is among `vas`.
fn pending<'a>(
    states: impl Iterator<Item = &'a ResizeState>,
    vas: impl Iterator<Item = &'a VerticalAutoscaler> + Clone,
    ns: &str,
) -> Vec<PendingApproval> {
    states
        .filter(|s| s.namespace().as_deref() == Some(ns))
        .filter(|s| {
            vas.clone().any(|v| {
                v.namespace().as_deref() == Some(ns)
                    && v.name_any() == s.name_any()
                    && v.uid().as_deref() == Some(&s.spec.vertical_autoscaler_uid)
            })
        })
        .flat_map(|s| s.spec.pending_approvals.clone())
        .collect()
}

fn claimant(v: &VerticalAutoscaler) -> Claimant {
    Claimant {
        name: format!("VerticalAutoscaler/{}", v.name_any()),
        uid: v.uid().unwrap_or_default(),
        created: v
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |t| t.0.as_second()),
    }
}
