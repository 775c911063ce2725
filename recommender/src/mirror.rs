//! The mirror: each ResizeState into its VerticalAutoscaler's status.
//!
//! The updater applies `status.recommendation`, so only the recommender may patch
//! `verticalautoscalers/status`. The updater writes what it has to say (pending approvals, the
//! last resizes, its conditions) to a ResizeState of the same name instead, and this step
//! copies it into the object's status, where `kubectl describe`, the dashboards and
//! kube-state-metrics read it. A ResizeState whose `verticalAutoscalerUid` is not the object's
//! (left by an object deleted and created again) is ignored.
//!
//! It applies only the fields it mirrors, under a field manager of its own ([`FIELD_MANAGER`]):
//! the recommender's own status applies (`tailor-recommender`: the recommendation, the
//! observed generation, its conditions) never touch them, nor they those (`conditions` is a
//! map keyed by type). It writes only when the status differs from the ResizeState.
//!
//! The pure part ([`mirrored`], [`shown`], [`legacy_fields`]) decides; [`run`] watches and
//! writes.

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tailor_crds::resize_state::{ResizeState, updater_condition};
use tailor_crds::v1alpha1::{
    MemoryGuardRaise, PendingApproval, ResizeRecord, VerticalAutoscaler, VerticalAutoscalerStatus,
};
use tailor_runtime::lease::Fence;
use tokio::sync::mpsc;

/// The field manager of the mirrored fields of a VerticalAutoscaler's status.
pub const FIELD_MANAGER: &str = "tailor-recommender-mirror";

/// The field manager under which updaters from before ResizeStates wrote these fields into the
/// status themselves. Once the object has a ResizeState, what that manager still owns there is
/// released (the mirror owns what is current).
pub const LEGACY_UPDATER: &str = "tailor-updater";

/// Objects to look at: a VerticalAutoscaler or its ResizeState changed.
pub type Key = ObjectRef<VerticalAutoscaler>;

/// The mirrored part of a VerticalAutoscaler's status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mirrored {
    /// `status.pendingApprovals`.
    pub pending_approvals: Vec<PendingApproval>,
    /// `status.pendingApprovalCount`.
    pub pending_approval_count: Option<i32>,
    /// The updater's conditions, by type.
    pub conditions: Vec<Condition>,
    /// `status.lastResizes`.
    pub last_resizes: Vec<ResizeRecord>,
    /// `status.memoryGuardRaises`.
    pub memory_guard_raises: Vec<MemoryGuardRaise>,
}

fn by_type(mut conditions: Vec<Condition>) -> Vec<Condition> {
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    conditions
}

/// What `va`'s status should show of `state`; `None` when `state` belongs to another object
/// (another uid). Pure.
pub fn mirrored(va: &VerticalAutoscaler, state: &ResizeState) -> Option<Mirrored> {
    let uid = va.meta().uid.as_deref()?;
    if state.spec.vertical_autoscaler_uid != uid {
        return None;
    }
    let spec = &state.spec;
    Some(Mirrored {
        pending_approvals: spec.pending_approvals.clone(),
        pending_approval_count: Some(
            i32::try_from(spec.pending_approvals.len()).unwrap_or(i32::MAX),
        ),
        conditions: by_type(spec.conditions.clone()),
        last_resizes: spec.last_resizes.clone(),
        memory_guard_raises: spec.memory_guard_raises.clone(),
    })
}

/// What `va`'s status shows now of the mirrored fields. Pure.
pub fn shown(va: &VerticalAutoscaler) -> Mirrored {
    let status = va.status.clone().unwrap_or_default();
    Mirrored {
        pending_approvals: status.pending_approvals,
        pending_approval_count: status.pending_approval_count,
        conditions: by_type(
            status
                .conditions
                .into_iter()
                .filter(updater_condition)
                .collect(),
        ),
        last_resizes: status.last_resizes,
        memory_guard_raises: status.memory_guard_raises,
    }
}

/// Keeps of `va`'s `managedFields` only who wrote what how (what [`legacy_fields`] reads), not
/// the fields each manager owns: those are often larger than the rest of the object.
pub fn slim_managed_fields(va: &mut VerticalAutoscaler) {
    for m in va.meta_mut().managed_fields.iter_mut().flatten() {
        m.fields_v1 = None;
    }
}

/// Whether an updater from before ResizeStates still owns fields of `va`'s status. Pure.
pub fn legacy_fields(va: &VerticalAutoscaler) -> bool {
    va.meta().managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(LEGACY_UPDATER)
            && m.subresource.as_deref() == Some("status")
            && m.operation.as_deref() == Some("Apply")
    })
}

/// The server-side apply patch of the status holding `m`.
fn status_patch(m: Mirrored) -> serde_json::Value {
    let status = VerticalAutoscalerStatus {
        pending_approvals: m.pending_approvals,
        pending_approval_count: m.pending_approval_count,
        conditions: m.conditions,
        last_resizes: m.last_resizes,
        memory_guard_raises: m.memory_guard_raises,
        ..Default::default()
    };
    json!({
        "apiVersion": VerticalAutoscaler::api_version(&()),
        "kind": VerticalAutoscaler::kind(&()),
        "status": status,
    })
}

struct Mirror {
    client: kube::Client,
    vas: Store<VerticalAutoscaler>,
    states: Store<ResizeState>,
    fence: Fence,
}

impl Mirror {
    /// Applies `patch` to `va`'s status as `manager`, if this replica may still write; whether
    /// it was written.
    async fn apply(
        &self,
        va: &VerticalAutoscaler,
        manager: &str,
        patch: serde_json::Value,
    ) -> bool {
        if !self.fence.holds() {
            tracing::info!(va = %va.name_any(), "not the leader any more: mirror not written");
            return false;
        }
        let ns = va.namespace().unwrap_or_default();
        let api: Api<VerticalAutoscaler> = Api::namespaced(self.client.clone(), &ns);
        let params = PatchParams::apply(manager).force();
        match api
            .patch_status(&va.name_any(), &params, &Patch::Apply(patch))
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(va = %format!("{ns}/{}", va.name_any()), manager, error = %e, "status not mirrored");
                false
            }
        }
    }

    /// Mirrors one object's ResizeState, if it has one of its uid.
    async fn mirror(&self, key: &Key) {
        let Some(va) = self.vas.get(key) else { return };
        let state_key = ObjectRef::<ResizeState>::new(&key.name)
            .within(key.namespace.as_deref().unwrap_or_default());
        let Some(state) = self.states.get(&state_key) else {
            return;
        };
        let Some(want) = mirrored(&va, &state) else {
            tracing::debug!(va = %key, "ResizeState of another uid: not mirrored");
            return;
        };
        let legacy = legacy_fields(&va);
        if !legacy && shown(&va) == want {
            return;
        }
        let mirrored = self.apply(&va, FIELD_MANAGER, status_patch(want)).await;
        if legacy && mirrored {
            // Applying nothing releases what the old updater owned: what the mirror now owns
            // too stays, the rest (stale entries) goes.
            let nothing = json!({
                "apiVersion": VerticalAutoscaler::api_version(&()),
                "kind": VerticalAutoscaler::kind(&()),
            });
            self.apply(&va, LEGACY_UPDATER, nothing).await;
        }
    }
}

/// Runs the mirror until dropped. `keys` carries the objects to look at: those whose
/// VerticalAutoscaler changed (sent by the recommender's own watch of them, through `queue`);
/// the mirror sends there those whose ResizeState changed.
pub fn run(
    client: kube::Client,
    (vas, scope): (Store<VerticalAutoscaler>, &tailor_runtime::Scope),
    fence: Fence,
    (queue, keys): (mpsc::UnboundedSender<Key>, mpsc::UnboundedReceiver<Key>),
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (states, writer) = reflector::store::<ResizeState>();
    let events = scope.watcher(&client, &(), watcher::Config::default(), states.clone());
    let watch = reflector::reflector(writer, events.modify(|s| s.managed_fields_mut().clear()))
        .default_backoff()
        .applied_objects()
        .for_each(move |state| {
            tailor_runtime::report_watch("ResizeState", &state);
            if let Ok(s) = state {
                let key = Key::new(&s.name_any()).within(&s.namespace().unwrap_or_default());
                let _ = queue.send(key);
            }
            std::future::ready(())
        });
    let mirror = std::sync::Arc::new(Mirror {
        client,
        vas,
        states,
        fence,
    });
    let work = async move {
        // Not `vas.wait_until_ready()`: the controller waits on that cache, and kube-runtime
        // wakes only one of several tasks waiting on the same cache. Until it is filled, an
        // object is not found here; every object listed into it is sent here after.
        let _ = mirror.states.wait_until_ready().await;
        tailor_runtime::queue::run(
            keys,
            4,
            |key: Key| {
                let mirror = mirror.clone();
                async move { mirror.mirror(&key).await }
            },
            |_| {},
        )
        .await;
    };
    async move {
        tokio::join!(watch, work);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tailor_crds::resize_state::ResizeState;
    use tailor_crds::v1alpha1::VerticalAutoscaler;

    use super::{Mirrored, legacy_fields, mirrored, shown};

    fn cond(type_: &str, reason: &str) -> serde_json::Value {
        json!({"type": type_, "status": "True", "reason": reason, "message": "m",
               "lastTransitionTime": "2026-01-01T00:00:00Z"})
    }

    fn va(status: serde_json::Value, managers: serde_json::Value) -> VerticalAutoscaler {
        serde_json::from_value(json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "managedFields": managers},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
            "status": status,
        }))
        .unwrap()
    }

    fn state(uid: &str) -> ResizeState {
        serde_json::from_value(json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "ResizeState",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"verticalAutoscalerUid": uid,
                     "conditions": [cond("ResizeDeferred", "Deferred"), cond("AwaitingApproval", "NothingToApprove")],
                     "lastResizes": [{"pod": "web-0", "time": "2026-01-01T00:00:00Z", "outcome": "Applied"}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_state_of_the_objects_uid_is_mirrored_with_its_count() {
        let va = va(json!({}), json!([]));
        let want = mirrored(&va, &state("u1")).unwrap();
        assert_eq!(want.pending_approval_count, Some(0));
        assert_eq!(want.last_resizes.len(), 1);
        let types: Vec<&str> = want.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["AwaitingApproval", "ResizeDeferred"]);
        assert_ne!(shown(&va), want);
        assert!(mirrored(&va, &state("u0")).is_none(), "another uid");
    }

    #[test]
    fn the_status_shows_only_the_updaters_conditions_in_any_order() {
        let status = json!({
            "pendingApprovalCount": 0,
            "conditions": [cond("ResizeDeferred", "Deferred"), cond("RecommendationProvided", "Computed"),
                           cond("ConfigUnsupported", "UnsupportedTarget"), cond("AwaitingApproval", "NothingToApprove")],
            "lastResizes": [{"pod": "web-0", "time": "2026-01-01T00:00:00Z", "outcome": "Applied"}],
        });
        let va = va(status, json!([]));
        assert_eq!(shown(&va), mirrored(&va, &state("u1")).unwrap());
        assert_eq!(shown(&self::va(json!({}), json!([]))), Mirrored::default());
    }

    #[test]
    fn fields_of_an_updater_from_before_resize_states_are_found() {
        let entry = |manager: &str, subresource: &str| {
            json!({"manager": manager, "operation": "Apply", "subresource": subresource,
                   "apiVersion": "tailor.dev/v1alpha1", "fieldsType": "FieldsV1", "fieldsV1": {}})
        };
        assert!(legacy_fields(&va(
            json!({}),
            json!([entry("tailor-updater", "status")])
        )));
        // As the cache keeps it: without the fields each manager owns.
        let mut cached = va(json!({}), json!([entry("tailor-updater", "status")]));
        super::slim_managed_fields(&mut cached);
        assert!(
            cached
                .metadata
                .managed_fields
                .iter()
                .flatten()
                .all(|m| m.fields_v1.is_none())
        );
        assert!(legacy_fields(&cached));
        assert!(!legacy_fields(&va(
            json!({}),
            json!([
                entry("tailor-recommender", "status"),
                entry("tailor-updater", "")
            ])
        )));
    }
}
