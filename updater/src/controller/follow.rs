//! Step 2, follow: where each pod's resize stands by the kubelet's conditions; the records of
//! resizes under way take the pods' state; each outcome is counted once; memory decreases the
//! kubelet refused are found for [`super::act::revert_refused`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use tailor_crds::v1alpha1::{ResizeOutcome, ResizeRecord, ResourceName};

use super::events::Kind;
use super::observe::Workload;
use super::{Context, now, object_ref, pods, uid_of};
use crate::metrics::UnfinishedResize;
use crate::plan::refused::{self, Refusal};
use crate::plan::resources::{self, ResizeStatus};

/// What following found.
pub(super) struct Followed {
    /// `status.lastResizes`, updated.
    pub records: Vec<ResizeRecord>,
    /// Lines for the `ResizeDeferred` and `ResizeInfeasible` conditions.
    pub deferred: Vec<String>,
    pub infeasible: Vec<String>,
    /// Pods (by index) whose memory decrease the kubelet refused, with what it said.
    pub refused: Vec<(usize, Refusal)>,
}

/// The record of this pod: by uid (a pod recreated under the same name is another pod); a
/// record without a uid (written by an older updater) by name.
pub(super) fn record_of<'a>(records: &'a [ResizeRecord], pod: &Pod) -> Option<&'a ResizeRecord> {
    let (uid, name) = (uid_of(pod), pod.name_any());
    records.iter().find(|r| match &r.pod_uid {
        Some(u) => *u == uid,
        None => r.pod == name,
    })
}

/// Step 2.
pub(super) fn follow(ctx: &Context, w: &Workload) -> Followed {
    let mut out = Followed {
        records: w.status.last_resizes.clone(),
        deferred: Vec::new(),
        infeasible: Vec::new(),
        refused: Vec::new(),
    };
    let mut unfinished = Vec::new();
    let mut states_now: HashSet<(String, &'static str)> = HashSet::new();
    for (i, pod) in w.pods.iter().enumerate() {
        let rs = ResizeStatus::of(pod);
        if let Some((state, since)) = rs.state() {
            let uid = uid_of(pod.as_ref());
            states_now.insert((uid.clone(), state));
            let since = since.unwrap_or_else(|| {
                *ctx.memory()
                    .first_seen
                    .entry((w.key.clone(), uid, state))
                    .or_insert(now().0.as_second())
            });
            unfinished.push(UnfinishedResize {
                pod: pod.name_any(),
                state,
                since,
            });
        }
        if let Some(record) = record_of(&w.status.last_resizes, pod) {
            pods::oom_kills_after(ctx, &w.va, pod, record);
        }
        conditions(ctx, w, pod, &rs, &mut out);
        // Only a condition about the pod's current generation: after a revert, the one about
        // the refused cut is not acted on (or counted) again.
        if let Some(refusal) = rs
            .error()
            .filter(|_| rs.synced)
            .and_then(|e| refused::refusal(&e.message))
        {
            out.refused.push((i, refusal));
        }
        count_outcome(ctx, pod, &rs);
    }
    ctx.metrics.unfinished(&w.key.0, &w.key.1, &unfinished);
    // Resizes of pods that are gone are not followed any more.
    {
        let present: HashSet<String> = w.pods.iter().filter_map(|p| p.uid()).collect();
        let mut memory = ctx.memory();
        memory
            .in_flight
            .retain(|uid, f| f.va != w.key || present.contains(uid));
        memory.first_seen.retain(|(va, uid, state), _| {
            *va != w.key || states_now.contains(&(uid.clone(), *state))
        });
    }
    update_records(ctx, &w.pods, &mut out.records);
    out
}

/// The pod's Deferred/Infeasible/Error conditions: condition lines and an Event once each.
fn conditions(ctx: &Context, w: &Workload, pod: &Pod, rs: &ResizeStatus, out: &mut Followed) {
    let uid = uid_of(pod);
    let name = pod.name_any();
    let generation = pod.metadata.generation.unwrap_or(1);
    if let Some(c) = &rs.pending {
        let line = format!("pod {name}: {}", c.message);
        if rs.infeasible() {
            out.infeasible.push(line.clone());
            ctx.event_once(
                format!("infeasible/{uid}/{generation}"),
                object_ref(w.va.as_ref()),
                Kind::Warning,
                "ResizeInfeasible",
                format!("{line}; not retried until the recommendation changes"),
            );
        } else {
            out.deferred.push(line.clone());
            ctx.event_once(
                format!("deferred/{uid}/{generation}"),
                object_ref(w.va.as_ref()),
                Kind::Normal,
                "ResizeDeferred",
                format!("{line}; the kubelet retries it"),
            );
        }
    }
    if let Some(e) = rs.error().filter(|_| rs.synced) {
        ctx.event_once(
            format!("error/{uid}/{generation}"),
            object_ref(w.va.as_ref()),
            Kind::Warning,
            "ResizeError",
            format!("pod {name}: {}", e.message),
        );
        if !ctx.backing_off(&uid) {
            ctx.back_off(&uid);
        }
    }
}

/// Counts the outcome of a resize this process issued, once per pod generation.
fn count_outcome(ctx: &Context, pod: &Pod, rs: &ResizeStatus) {
    let uid = uid_of(pod);
    let generation = pod.metadata.generation.unwrap_or(1);
    let Some(f) = ctx.memory().in_flight.get(&uid).cloned() else {
        return;
    };
    if generation < f.generation {
        return; // the cache does not show the issued resize yet
    }
    let key = |what: &str| format!("{what}-metric/{uid}/{generation}");
    if rs.complete() && rs.synced {
        ctx.memory().in_flight.remove(&uid);
        let outcome = if f.restarts { "restarted" } else { "applied" };
        ctx.metrics.resize(outcome, &f.resources);
        ctx.metrics
            .applied_after(f.recommended_at.elapsed().as_secs_f64());
    } else if rs.infeasible() {
        ctx.memory().in_flight.remove(&uid);
        ctx.metrics.resize("infeasible", &f.resources);
    } else if !rs.synced {
        // The kubelet has not looked at this generation yet: its conditions are older.
    } else if rs.deferred() && ctx.first_time(key("deferred")) {
        ctx.metrics.resize("deferred", &f.resources);
    } else if rs.error().is_some() && ctx.first_time(key("error")) {
        ctx.metrics.resize("error", &f.resources);
    }
}

/// Records of resizes not finished (in progress, deferred, or failed: the kubelet may still
/// apply those later) take the pods' current state.
fn update_records(ctx: &Context, pods: &[Arc<Pod>], records: &mut [ResizeRecord]) {
    let by_uid: HashMap<String, &Arc<Pod>> = pods.iter().map(|p| (uid_of(p.as_ref()), p)).collect();
    let by_name: HashMap<String, &Arc<Pod>> = pods.iter().map(|p| (p.name_any(), p)).collect();
    for record in records {
        if !matches!(
            record.outcome,
            ResizeOutcome::InProgress | ResizeOutcome::Deferred | ResizeOutcome::Failed
        ) {
            continue;
        }
        let pod = match &record.pod_uid {
            Some(uid) => by_uid.get(uid),
            None => by_name.get(&record.pod),
        };
        let Some(pod) = pod else {
            record.outcome = ResizeOutcome::PodDeleted;
            continue;
        };
        // A cached pod older than the resize this process issued says nothing about it.
        let issued = ctx
            .memory()
            .in_flight
            .get(&uid_of(pod.as_ref()))
            .map(|f| f.generation);
        if issued.is_some_and(|g| pod.metadata.generation.unwrap_or(1) < g) {
            continue;
        }
        record.outcome = outcome(pod, record);
    }
}

/// The outcome a record of this pod's resize has now.
fn outcome(pod: &Pod, record: &ResizeRecord) -> ResizeOutcome {
    let rs = ResizeStatus::of(pod);
    let restarts = pod.spec.as_ref().is_some_and(|spec| {
        record.containers.iter().any(|c| {
            spec.containers
                .iter()
                .find(|k| k.name == c.container_name)
                .is_some_and(|k| {
                    (c.from.cpu != c.to.cpu && resources::restarts_on(k, ResourceName::Cpu))
                        || (c.from.memory != c.to.memory
                            && resources::restarts_on(k, ResourceName::Memory))
                })
        })
    });
    if rs.complete() {
        if restarts {
            ResizeOutcome::Restarted
        } else {
            ResizeOutcome::Applied
        }
    } else if rs.infeasible() {
        ResizeOutcome::Infeasible
    } else if rs.deferred() {
        ResizeOutcome::Deferred
    } else if rs.error().is_some() {
        ResizeOutcome::Failed
    } else {
        record.outcome
    }
}
