//! Step 5, record: the updater's record of the object (pending approvals, its conditions, the
//! last resizes), written to its ResizeState with server-side apply only when it changed (by
//! [`super::writer`], a moment later, so that changes close together go in one write), and
//! the metrics of held decreases. The object's status is the recommender's: it mirrors the
//! ResizeState there.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::{Resource, ResourceExt};
use tailor_crds::quantity::format_memory_bytes;
use tailor_crds::resize_state::{
    HPA_CONFLICT_REASON, ResizeState, ResizeStateSpec, updater_condition,
};
use tailor_crds::v1alpha1::{
    APPROVE_MEMORY_DECREASE_ANNOTATION, MemoryGuardRaise, PendingApproval, ResizeRecord,
    ResourceName, VerticalAutoscaler, VerticalAutoscalerStatus, condition,
};

use super::act::Acted;
use super::events::truncate;
use super::follow::Followed;
use super::observe::{Idle, Workload};
use super::{Context, GUARD_RAISES, LAST_RESIZES, Planned, now, uid_of, va_key};
use crate::metrics::HeldDecrease;
use crate::plan::approval::{self, Pending};

/// A condition the updater writes: type, status, reason, message.
type Cond = (&'static str, &'static str, &'static str, String);

fn cond(type_: &'static str, on: bool, reason: &'static str, message: String) -> Cond {
    (type_, if on { "True" } else { "False" }, reason, message)
}

/// An object the updater leaves alone: its pending approvals go, and only the conditions that
/// say why it is left alone stay (each written only while true).
pub(super) fn idle(ctx: &Context, idle: &Idle) {
    if ctx.options.dry_run {
        return;
    }
    let conditions: Vec<Cond> = idle
        .conditions
        .iter()
        .map(|(t, reason, message)| cond(t, true, reason, message.clone()))
        .collect();
    let records = idle.status.last_resizes.clone();
    if idle.status.pending_approvals.is_empty() && same_conditions(&idle.status, &conditions) {
        return;
    }
    let raises = idle.status.memory_guard_raises.clone();
    let record = Record {
        pending: Vec::new(),
        conditions,
        records,
        raises,
    };
    write(ctx, &idle.va, &idle.status, record);
}

/// Step 5.
pub(super) fn record(
    ctx: &Context,
    w: &Workload,
    followed: Followed,
    planned: &Planned,
    acted: Acted,
) {
    let (ns, name) = (&w.key.0, &w.key.1);
    let mut records = acted.records;
    let older: Vec<ResizeRecord> = followed
        .records
        .into_iter()
        .filter(|r| !records_new_pod(&records, r))
        .collect();
    records.extend(older);
    records.truncate(LAST_RESIZES);
    let pending = approval::pending(&uid_of(w.va.as_ref()), &acted.cuts, &w.grants);
    let stamp = now();
    let pending_status: Vec<PendingApproval> = pending
        .iter()
        .map(|p| p.to_status(&w.status.pending_approvals, &stamp))
        .collect();
    held_metrics(ctx, w, &pending, &pending_status);
    let mut conditions = vec![
        resize_condition(
            condition::RESIZE_DEFERRED,
            &followed.deferred,
            ("Deferred", "NoneDeferred"),
            "no resize is deferred",
            "",
        ),
        resize_condition(
            condition::RESIZE_INFEASIBLE,
            &followed.infeasible,
            ("Infeasible", "NoneInfeasible"),
            "no resize is infeasible",
            "; resizes stop until the recommendation changes",
        ),
        awaiting(ns, name, &pending),
    ];
    if planned.selection.stopped_infeasible && followed.infeasible.is_empty() {
        conditions[1].1 = "True";
    }
    conditions.extend(hpa_condition(w));
    let mut raises = acted.raises;
    raises.extend(w.status.memory_guard_raises.iter().cloned());
    raises.truncate(GUARD_RAISES);
    let unchanged = w.status.pending_approvals == pending_status
        && w.status.last_resizes == records
        && w.status.memory_guard_raises == raises
        && same_conditions(&w.status, &conditions);
    if unchanged {
        return;
    }
    let record = Record {
        pending: pending_status,
        conditions,
        records,
        raises,
    };
    write(ctx, &w.va, &w.status, record);
}

/// Whether `r` is an older record of a pod that has a new one.
fn records_new_pod(new: &[ResizeRecord], r: &ResizeRecord) -> bool {
    new.iter().any(|n| match (&n.pod_uid, &r.pod_uid) {
        (Some(a), Some(b)) => a == b,
        _ => n.pod == r.pod,
    })
}

fn resize_condition(
    type_: &'static str,
    lines: &[String],
    (on, off): (&'static str, &'static str),
    none: &str,
    suffix: &str,
) -> Cond {
    if lines.is_empty() {
        cond(type_, false, off, none.into())
    } else {
        cond(type_, true, on, format!("{}{suffix}", lines.join("; ")))
    }
}

/// `AwaitingApproval`, with the command that approves each held decrease.
fn awaiting(ns: &str, name: &str, pending: &[Pending]) -> Cond {
    let lines: Vec<String> = pending
        .iter()
        .filter(|p| !p.approved)
        .map(|p| {
            format!(
                "container {} memory limit {} -> {} in {} pod(s): kubectl annotate va {name} -n {ns} {APPROVE_MEMORY_DECREASE_ANNOTATION}={} --overwrite",
                p.container,
                format_memory_bytes(p.from).0,
                format_memory_bytes(p.to).0,
                p.pods.len(),
                p.id
            )
        })
        .collect();
    if lines.is_empty() {
        cond(
            condition::AWAITING_APPROVAL,
            false,
            "NothingToApprove",
            "no memory decrease waits for approval".into(),
        )
    } else {
        cond(
            condition::AWAITING_APPROVAL,
            true,
            "MemoryDecreaseHeld",
            lines.join("; "),
        )
    }
}

/// `ConfigUnsupported` (reason `HpaConflict`) while an HPA scales the workload on a resource.
fn hpa_condition(w: &Workload) -> Option<Cond> {
    if w.hpa_names.is_empty() {
        return None;
    }
    let names: Vec<&str> = w
        .blocked
        .iter()
        .map(|r| {
            if *r == ResourceName::Cpu {
                "cpu"
            } else {
                "memory"
            }
        })
        .collect();
    let target = &w.va.spec.target_ref;
    Some(cond(
        condition::CONFIG_UNSUPPORTED,
        true,
        HPA_CONFLICT_REASON,
        format!(
            "HorizontalPodAutoscaler {} scales {}/{} on {}: tailor leaves {} alone (set updatePolicy.hpaConflict: Resize to resize it anyway)",
            w.hpa_names.join(", "),
            target.kind,
            target.name,
            names.join(" and "),
            names.join(" and ")
        ),
    ))
}

fn held_metrics(ctx: &Context, w: &Workload, pending: &[Pending], status: &[PendingApproval]) {
    let (ns, name) = (&w.key.0, &w.key.1);
    ctx.metrics
        .pending(ns, name, pending.iter().filter(|p| !p.approved).count());
    let now_s = now().0.as_second();
    let held: Vec<HeldDecrease> = pending
        .iter()
        .zip(status)
        .filter(|(p, _)| !p.approved)
        .map(|(p, s)| HeldDecrease {
            container: p.container.clone(),
            id: p.id.clone(),
            from: format_memory_bytes(p.from).0,
            to: format_memory_bytes(p.to).0,
            since: s.since.as_ref().map_or(now_s, |t| t.0.as_second()),
        })
        .collect();
    ctx.metrics.held(ns, name, &held);
}

/// Whether the updater's conditions in `status` are exactly `conditions`.
fn same_conditions(status: &VerticalAutoscalerStatus, conditions: &[Cond]) -> bool {
    let mine: Vec<&Condition> = status
        .conditions
        .iter()
        .filter(|c| updater_condition(c))
        .collect();
    mine.len() == conditions.len()
        && conditions.iter().all(|c| {
            mine.iter()
                .any(|o| o.type_ == c.0 && o.status == c.1 && o.reason == c.2 && o.message == c.3)
        })
}

/// The ResizeState holding `spec`: named as the object, owned by it (garbage-collected with
/// it). Pure.
fn resize_state(va: &VerticalAutoscaler, spec: ResizeStateSpec) -> ResizeState {
    let mut state = ResizeState::new(&va.name_any(), spec);
    state.metadata.namespace = va.namespace();
    state.metadata.owner_references = Some(vec![OwnerReference {
        api_version: VerticalAutoscaler::api_version(&()).into_owned(),
        kind: VerticalAutoscaler::kind(&()).into_owned(),
        name: va.name_any(),
        uid: uid_of(va),
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    state
}

/// The conditions as written: a condition keeps its transition time while its status stays.
fn conditions_at(
    va: &VerticalAutoscaler,
    previous: &VerticalAutoscalerStatus,
    conditions: Vec<Cond>,
) -> Vec<Condition> {
    let stamp = now();
    conditions
        .into_iter()
        .map(|(type_, status_, reason, message)| Condition {
            last_transition_time: previous
                .conditions
                .iter()
                .find(|c| c.type_ == type_ && c.status == status_)
                .map_or_else(|| stamp.clone(), |c| c.last_transition_time.clone()),
            type_: type_.to_owned(),
            status: status_.to_owned(),
            reason: reason.to_owned(),
            message: truncate(&message, 32_000),
            observed_generation: va.metadata.generation,
        })
        .collect()
}

/// What a ResizeState holds.
struct Record {
    pending: Vec<PendingApproval>,
    conditions: Vec<Cond>,
    records: Vec<ResizeRecord>,
    raises: Vec<MemoryGuardRaise>,
}

/// Whether a record must be written at once rather than after [`super::writer::DELAY`]: it
/// holds what the pods and the object cannot tell a next leader, or what a person waits for.
/// That is a resize just issued (a record of a pod, or of a time, the last one did not have),
/// a refused cut taken back (`Reverted`, with the usage the floor must stay above), a memory
/// guard raise, or a change of the pending approvals. What only follows resizes under way (an
/// outcome, a condition) can wait and go with the next change. Pure.
fn urgent(previous: &VerticalAutoscalerStatus, record: &Record) -> bool {
    use tailor_crds::v1alpha1::ResizeOutcome;
    let known = |r: &ResizeRecord| {
        previous
            .last_resizes
            .iter()
            .find(|p| p.pod_uid == r.pod_uid && p.pod == r.pod && p.time == r.time)
    };
    let new_record = record.records.iter().any(|r| match known(r) {
        None => true,
        Some(p) => r.outcome == ResizeOutcome::Reverted && p.outcome != ResizeOutcome::Reverted,
    });
    new_record
        || previous.memory_guard_raises != record.raises
        || previous.pending_approvals != record.pending
}

/// The updater's record of the object, for its ResizeState (created if absent; fields it
/// leaves out are dropped; nothing else writes a ResizeState): the truth for the next
/// reconcile at once, written by [`super::writer`] at once if [`urgent`], else a moment later.
fn write(
    ctx: &Context,
    va: &VerticalAutoscaler,
    previous: &VerticalAutoscalerStatus,
    record: Record,
) {
    let now = urgent(previous, &record);
    let spec = ResizeStateSpec {
        vertical_autoscaler_uid: uid_of(va),
        pending_approvals: record.pending,
        conditions: conditions_at(va, previous, record.conditions),
        last_resizes: record.records,
        memory_guard_raises: record.raises,
    };
    let state = resize_state(va, spec.clone());
    let key = va_key(va);
    ctx.memory().written.insert(key.clone(), spec);
    ctx.writes.mark(key, state, now);
}

#[cfg(test)]
mod tests {
    use tailor_crds::resize_state::ResizeStateSpec;
    use tailor_crds::v1alpha1::{
        ResizeOutcome, ResizeRecord, VerticalAutoscaler, VerticalAutoscalerStatus,
    };

    use super::{Record, urgent};

    fn resize(pod: &str, at: &str, outcome: ResizeOutcome) -> ResizeRecord {
        serde_json::from_value(serde_json::json!({
            "pod": pod, "podUid": format!("uid-{pod}"), "time": at,
            "outcome": serde_json::to_value(outcome).unwrap(), "containers": [],
        }))
        .unwrap()
    }

    fn record(records: Vec<ResizeRecord>) -> Record {
        Record {
            pending: Vec::new(),
            conditions: Vec::new(),
            records,
            raises: Vec::new(),
        }
    }

    #[test]
    fn new_resizes_and_reverts_are_written_at_once_progress_waits() {
        let t1 = "2026-12-01T07:00:00Z";
        let before = VerticalAutoscalerStatus {
            last_resizes: vec![resize("a", t1, ResizeOutcome::InProgress)],
            ..Default::default()
        };
        let progressed = record(vec![resize("a", t1, ResizeOutcome::Applied)]);
        assert!(!urgent(&before, &progressed), "an outcome can wait");
        let issued = record(vec![
            resize("b", t1, ResizeOutcome::InProgress),
            resize("a", t1, ResizeOutcome::Applied),
        ]);
        assert!(urgent(&before, &issued), "a resize just issued");
        let again = record(vec![resize(
            "a",
            "2026-12-01T07:05:00Z",
            ResizeOutcome::InProgress,
        )]);
        assert!(urgent(&before, &again), "a new resize of the same pod");
        let reverted = record(vec![resize("a", t1, ResizeOutcome::Reverted)]);
        assert!(urgent(&before, &reverted), "a refused cut taken back");
        assert!(!urgent(&before, &record(before.last_resizes.clone())));
    }

    #[test]
    fn a_resize_state_is_named_and_owned_as_its_object() {
        let va: VerticalAutoscaler = serde_json::from_value(serde_json::json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
        }))
        .unwrap();
        let spec = ResizeStateSpec {
            vertical_autoscaler_uid: "u1".into(),
            ..Default::default()
        };
        let state = serde_json::to_value(super::resize_state(&va, spec)).unwrap();
        assert_eq!(
            state,
            serde_json::json!({
                "apiVersion": "tailor.dev/v1alpha1", "kind": "ResizeState",
                "metadata": {"name": "web", "namespace": "shop", "ownerReferences": [{
                    "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
                    "name": "web", "uid": "u1", "controller": true}]},
                "spec": {"verticalAutoscalerUid": "u1"},
            })
        );
    }
}
