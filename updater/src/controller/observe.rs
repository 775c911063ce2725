//! Step 1, observe: the object and its pods from the watch caches, and whether the updater may
//! act on them at all ([`crate::plan::guard`] holds the rules).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;
use tailor_crds::resize_state::{ResizeState, ResizeStateSpec, updater_condition};
use tailor_crds::v1alpha1::{
    APPROVE_MEMORY_DECREASE_ANNOTATION, ContainerRecommendation, Recommendation, ResizeOutcome,
    ResourceName, SUPPORTED_TARGETS, VerticalAutoscaler, VerticalAutoscalerStatus, condition,
};
use tailor_runtime::workload::controller_of;

use super::events::Kind;
use super::{Context, Key, object_ref, uid_of};
use crate::plan::approval::{self, Grant};
use crate::plan::guard::{self, Claimant, Snapshot};

/// What observing an object found.
pub(super) enum Observed {
    /// The object is gone.
    Gone,
    /// The updater does not act on it now; the conditions say why (empty: nothing to say).
    Idle(Box<Idle>),
    /// The updater acts on it.
    Active(Box<Workload>),
}

/// An object the updater leaves alone, and the conditions it writes about it (each only while
/// true: `RecommendationStale`, `AutoscalerConflict`).
pub(super) struct Idle {
    pub va: Arc<VerticalAutoscaler>,
    pub status: VerticalAutoscalerStatus,
    pub conditions: Vec<(&'static str, &'static str, String)>,
}

/// An `InPlace` object with a current recommendation, and everything the later steps read.
pub(super) struct Workload {
    pub key: Key,
    pub va: Arc<VerticalAutoscaler>,
    /// The status, with the updater's own fields as it last wrote them (see [`merged_status`]).
    pub status: VerticalAutoscalerStatus,
    pub recommendation: Vec<ContainerRecommendation>,
    pub pods: Vec<Arc<Pod>>,
    /// Resources an HPA scales the workload on, and the HPAs.
    pub blocked: BTreeSet<ResourceName>,
    pub hpa_names: Vec<String>,
    /// Approvals granted, each for its pods.
    pub grants: Vec<Grant>,
    /// When the current recommendation was first seen (for the applied-after histogram).
    pub recommended_at: Instant,
    /// What decides a patch, as observed; re-checked before each one.
    pub snapshot: Snapshot,
}

/// The object as the pre-patch check compares it.
pub(super) fn snapshot(va: &VerticalAutoscaler) -> Snapshot {
    Snapshot {
        uid: uid_of(va),
        generation: va.metadata.generation,
        mode: va.spec.update_policy.update_mode,
        recommendation: va
            .status
            .as_ref()
            .and_then(|s| s.recommendation.as_ref())
            .map(decisive)
            .unwrap_or_default(),
        approvals: approval_ids(va),
    }
}

/// What of a recommendation decides a resize: its binding and, per container, the target, the
/// bounds and the floor. The evidence (samples, history span, peaks) changes with every
/// recommender pass and decides nothing, so it does not cancel a planned patch.
fn decisive(r: &Recommendation) -> String {
    let containers: Vec<_> = r
        .container_recommendations
        .iter()
        .map(|c| {
            (
                &c.container_name,
                &c.target,
                &c.lower_bound,
                &c.upper_bound,
                c.memory_floor.as_ref().map(|f| &f.value),
            )
        })
        .collect();
    serde_json::to_string(&(r.observed_generation, &r.target_ref, containers)).unwrap_or_default()
}

fn approval_ids(va: &VerticalAutoscaler) -> Vec<String> {
    va.annotations()
        .get(APPROVE_MEMORY_DECREASE_ANNOTATION)
        .map(|v| approval::annotation_ids(v))
        .unwrap_or_default()
}

/// Forgets an object that is gone.
pub(super) fn forget(ctx: &Context, key: &Key) {
    ctx.metrics.pending(&key.0, &key.1, 0);
    ctx.metrics.held(&key.0, &key.1, &[]);
    ctx.metrics.unfinished(&key.0, &key.1, &[]);
    ctx.writes.forget(key);
    let mut memory = ctx.memory();
    memory.recommendations.remove(key);
    memory.written.remove(key);
    memory.first_seen.retain(|(k, _, _), _| k != key);
}

/// The object's status with the updater's own fields (pending approvals, last resizes, its
/// conditions) taken, of the records of this object's uid, from the first there is of:
///
/// 1. what this process last wrote (the watch cache may not show it yet);
/// 2. the object's ResizeState in the watch cache;
/// 3. the object's status as it is: mirrored from a ResizeState since deleted, or written by
///    an updater from before ResizeStates (its first write moves them to a ResizeState).
///
/// Only the recommendation is ever taken from the status the recommender writes. Pure.
fn merged_status(
    va: &VerticalAutoscaler,
    written: Option<&ResizeStateSpec>,
    state: Option<&ResizeState>,
) -> VerticalAutoscalerStatus {
    let mut status = va.status.clone().unwrap_or_default();
    let uid = uid_of(va);
    let mine = written
        .filter(|w| w.vertical_autoscaler_uid == uid)
        .or_else(|| {
            state
                .map(|s| &s.spec)
                .filter(|s| s.vertical_autoscaler_uid == uid)
        });
    if let Some(mine) = mine {
        status.pending_approvals = mine.pending_approvals.clone();
        status.last_resizes = mine.last_resizes.clone();
        status.memory_guard_raises = mine.memory_guard_raises.clone();
        status.conditions.retain(|c| !updater_condition(c));
        status.conditions.extend(mine.conditions.iter().cloned());
    }
    status
}

/// [`merged_status`] from this process's memory and the ResizeState cache.
fn current_status(ctx: &Context, key: &Key, va: &VerticalAutoscaler) -> VerticalAutoscalerStatus {
    let written = ctx.memory().written.get(key).cloned();
    let state = ctx.states.get(&ObjectRef::new(&key.1).within(&key.0));
    merged_status(va, written.as_ref(), state.as_deref())
}

/// Step 1.
pub(super) fn observe(ctx: &Context, key: &Key) -> Observed {
    let Some(va) = ctx.vas.get(&ObjectRef::new(&key.1).within(&key.0)) else {
        return Observed::Gone;
    };
    let status = current_status(ctx, key, &va);
    let idle = |status: VerticalAutoscalerStatus, conditions| {
        let (ns, name) = key;
        ctx.metrics.pending(ns, name, 0);
        ctx.metrics.held(ns, name, &[]);
        ctx.metrics.unfinished(ns, name, &[]);
        Observed::Idle(Box::new(Idle {
            va: va.clone(),
            status,
            conditions,
        }))
    };
    let target = &va.spec.target_ref;
    let supported = SUPPORTED_TARGETS
        .iter()
        .any(|(v, k)| *v == target.api_version && *k == target.kind);
    // `Initial` pods are sized at creation; the updater only takes back their startup boosts.
    if !va.spec.update_policy.update_mode.sizes_new_pods() || !supported {
        return idle(status, Vec::new());
    }
    let Some(recommendation) = status.recommendation.clone() else {
        return idle(status, Vec::new());
    };
    if let Some(why) = guard::stale(va.metadata.generation, target, &recommendation) {
        return idle(
            status,
            vec![(condition::RECOMMENDATION_STALE, "RecommendationStale", why)],
        );
    }
    let pods: Vec<Arc<Pod>> = ctx
        .owners
        .pods(
            &ctx.pods,
            &ctx.pod_index,
            &key.0,
            &target.kind,
            &target.name,
        )
        .iter()
        .map(|p| Arc::new(p.unpack()))
        .collect();
    if let Some(owner) = owner_instead(ctx, &va, &pods) {
        let why = format!(
            "{} (older) already sizes these pods; this VerticalAutoscaler does not act while it does",
            owner.name
        );
        return idle(
            status,
            vec![(condition::AUTOSCALER_CONFLICT, "AnotherAutoscaler", why)],
        );
    }
    let (blocked, hpa_names) = hpa_conflict(ctx, &va);
    let grants = grants(ctx, &va, &status);
    let recommended_at = recommended_at(ctx, key, &va);
    Observed::Active(Box::new(Workload {
        key: key.clone(),
        snapshot: snapshot(&va),
        recommendation: recommendation.container_recommendations,
        va,
        status,
        pods,
        blocked,
        hpa_names,
        grants,
        recommended_at,
    }))
}

/// Resources an HPA scales the workload on, unless the object says to resize them anyway.
fn hpa_conflict(ctx: &Context, va: &VerticalAutoscaler) -> (BTreeSet<ResourceName>, Vec<String>) {
    let hpas = ctx.hpas.state();
    crate::plan::hpa::blocked_for(va, hpas.iter().map(AsRef::as_ref))
}

/// The approvals in the annotation that match a pending entry; the others are reported once
/// as stale (unless an earlier resize used them).
fn grants(ctx: &Context, va: &VerticalAutoscaler, status: &VerticalAutoscalerStatus) -> Vec<Grant> {
    let ids = approval_ids(va);
    let (mut granted, stale) = approval::approvals(&ids, &status.pending_approvals);
    // A pod whose approved cut the kubelet refused (and the updater took back) is out of the
    // approval: trying again later is the cut at a moment nobody chose. It needs a new one.
    for grant in &mut granted {
        grant.pods.retain(|pod| {
            !status.last_resizes.iter().any(|r| {
                r.outcome == ResizeOutcome::Reverted
                    && r.pod_uid.as_deref() == Some(pod.uid.as_str())
                    && r.containers
                        .iter()
                        .any(|c| c.approval.as_deref() == Some(grant.approved.id.as_str()))
            })
        });
    }
    granted.retain(|g| !g.pods.is_empty());
    let used: HashSet<&str> = status
        .last_resizes
        .iter()
        .flat_map(|r| r.containers.iter().filter_map(|c| c.approval.as_deref()))
        .collect();
    for id in stale {
        if used.contains(id.as_str()) || ctx.memory().applied_approvals.contains(&id) {
            continue;
        }
        ctx.event_once(
            format!("stale/{}/{id}", uid_of(va)),
            object_ref(va),
            Kind::Warning,
            "StaleApproval",
            format!(
                "approval {id} matches no pending memory decrease: it approves nothing (a newer recommendation, or other pods, have a new id; see status.pendingApprovals)"
            ),
        );
    }
    granted
}

/// When the current recommendation was first seen.
fn recommended_at(ctx: &Context, key: &Key, va: &VerticalAutoscaler) -> Instant {
    let print = snapshot(va).recommendation;
    let mut memory = ctx.memory();
    let entry = memory
        .recommendations
        .entry(key.clone())
        .or_insert_with(|| (print.clone(), Instant::now()));
    if entry.0 != print {
        *entry = (print, Instant::now());
    }
    entry.1
}

/// The controllers of a pod, up the chain (`ReplicaSet/x`, `Deployment/y`, ...).
fn chain(ctx: &Context, pod: &Pod, out: &mut HashSet<(String, String)>) {
    let ns = pod.namespace().unwrap_or_default();
    let Some((kind, name)) = controller_of(pod.metadata.owner_references.as_ref()) else {
        return;
    };
    let parent = match kind.as_str() {
        "ReplicaSet" => ctx
            .owners
            .replicasets
            .get(&ObjectRef::new(&name).within(&ns))
            .and_then(|rs| controller_of(rs.metadata.owner_references.as_ref())),
        "Job" => ctx
            .owners
            .jobs
            .get(&ObjectRef::new(&name).within(&ns))
            .and_then(|j| controller_of(j.metadata.owner_references.as_ref())),
        _ => None,
    };
    out.insert((kind, name));
    if let Some(p) = parent {
        out.insert(p);
    }
}

/// The older autoscaler that acts on these pods instead of `va`, if any: another `InPlace`
/// VerticalAutoscaler, or an upstream VerticalPodAutoscaler in an updating mode, whose target
/// is one of the pods' controllers.
fn owner_instead(ctx: &Context, va: &VerticalAutoscaler, pods: &[Arc<Pod>]) -> Option<Claimant> {
    let mut controllers = HashSet::new();
    for pod in pods {
        chain(ctx, pod, &mut controllers);
    }
    if controllers.is_empty() {
        return None;
    }
    let ns = va.namespace();
    let mut others: Vec<Claimant> = ctx
        .vas
        .state()
        .iter()
        .filter(|o| o.namespace() == ns && o.spec.update_policy.update_mode.sizes_new_pods())
        .filter(|o| {
            let t = &o.spec.target_ref;
            controllers.contains(&(t.kind.clone(), t.name.clone()))
        })
        .map(|o| claimant("VerticalAutoscaler", o.as_ref()))
        .collect();
    if let Some(vpas) = &ctx.vpas {
        others.extend(
            vpas.state()
                .iter()
                .filter(|v| v.namespace() == ns && updating_vpa(v))
                .filter(|v| vpa_target(v).is_some_and(|t| controllers.contains(&t)))
                .map(|v| claimant("VerticalPodAutoscaler", v.as_ref())),
        );
    }
    guard::owner(&claimant("VerticalAutoscaler", va), &others).cloned()
}

fn claimant<K: kube::Resource>(kind: &str, obj: &K) -> Claimant {
    let meta = obj.meta();
    Claimant {
        name: format!("{kind}/{}", meta.name.clone().unwrap_or_default()),
        uid: meta.uid.clone().unwrap_or_default(),
        created: meta
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second()),
    }
}

/// An upstream VPA acts on pods unless its `updatePolicy.updateMode` is `Off` (its default is
/// an updating mode).
fn updating_vpa(vpa: &DynamicObject) -> bool {
    vpa.data
        .pointer("/spec/updatePolicy/updateMode")
        .and_then(|m| m.as_str())
        .is_none_or(|m| m != "Off")
}

fn vpa_target(vpa: &DynamicObject) -> Option<(String, String)> {
    let t = vpa.data.pointer("/spec/targetRef")?;
    Some((
        t.get("kind")?.as_str()?.to_owned(),
        t.get("name")?.as_str()?.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use tailor_crds::resize_state::{ResizeState, ResizeStateSpec};
    use tailor_crds::v1alpha1::{Recommendation, VerticalAutoscaler, VerticalAutoscalerStatus};

    use super::merged_status;

    fn cond(type_: &str, reason: &str) -> Condition {
        serde_json::from_value(serde_json::json!({"type": type_, "status": "True",
            "reason": reason, "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}))
        .unwrap()
    }

    /// An object of uid `u1` whose status holds a recommendation, the recommender's condition,
    /// and updater fields as an older updater (or the mirror) left them.
    fn va() -> VerticalAutoscaler {
        let mut va: VerticalAutoscaler = serde_json::from_value(serde_json::json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
        }))
        .unwrap();
        va.status = Some(VerticalAutoscalerStatus {
            recommendation: Some(Recommendation::default()),
            conditions: vec![
                cond("RecommendationProvided", "Computed"),
                cond("AwaitingApproval", "FromStatus"),
            ],
            ..Default::default()
        });
        va
    }

    fn spec(uid: &str, reason: &str) -> ResizeStateSpec {
        ResizeStateSpec {
            vertical_autoscaler_uid: uid.into(),
            conditions: vec![cond("ResizeDeferred", reason)],
            ..Default::default()
        }
    }

    fn reasons(status: &VerticalAutoscalerStatus) -> Vec<&str> {
        status
            .conditions
            .iter()
            .map(|c| c.reason.as_str())
            .collect()
    }

    #[test]
    fn the_updaters_fields_come_from_what_it_wrote_then_its_resize_state_then_the_status() {
        let va = va();
        let state = ResizeState::new("web", spec("u1", "FromState"));
        let written = spec("u1", "Written");
        let merged = merged_status(&va, Some(&written), Some(&state));
        assert_eq!(reasons(&merged), ["Computed", "Written"]);
        let merged = merged_status(&va, None, Some(&state));
        assert_eq!(reasons(&merged), ["Computed", "FromState"]);
        let merged = merged_status(&va, None, None);
        assert_eq!(reasons(&merged), ["Computed", "FromStatus"]);
        // The recommendation is always the status's.
        assert_eq!(merged.recommendation, Some(Recommendation::default()));
    }

    #[test]
    fn records_of_another_uid_are_ignored() {
        let va = va();
        let state = ResizeState::new("web", spec("u0", "FromState"));
        let written = spec("u0", "Written");
        let merged = merged_status(&va, Some(&written), Some(&state));
        assert_eq!(reasons(&merged), ["Computed", "FromStatus"]);
    }
}
