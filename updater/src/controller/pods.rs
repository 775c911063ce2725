//! What the updater keeps of a pod, and OOM kills after a resize.

use k8s_openapi::api::core::v1::Pod;
use kube::{Resource, ResourceExt};
use tailor_crds::v1alpha1::{ResizeRecord, VerticalAutoscaler};

use super::events::Kind;
use super::{Context, object_ref};

/// The updater's [`tailor_runtime::packed::Slim`]: [`slim`].
pub(crate) struct Slimmed;

impl tailor_runtime::packed::Slim for Slimmed {
    fn slim(pod: &mut Pod) {
        slim(pod);
    }
}

/// A pod as the updater's cache keeps it: slimmed and packed; [`PackedPod::unpack`] gives the
/// slim `Pod` the planner reads.
///
/// [`PackedPod::unpack`]: tailor_runtime::packed::PackedPod::unpack
pub(crate) type CachedPod = tailor_runtime::packed::PackedPod<Slimmed>;

/// Keeps only what the planner and the actuator read of a cached pod: identity and owners, the
/// admission webhook's boost record and sizing note, the containers' names, resources and resize policies, and the status fields that say where
/// a resize stands. On a large cluster the pod cache is most of the process's memory.
pub(super) fn slim(pod: &mut Pod) {
    use crate::plan::admission::{NOTE_ANNOTATION, SIZED_ANNOTATION};
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus,
    };
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = kube::api::ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        generation: meta.generation,
        owner_references: meta.owner_references,
        deletion_timestamp: meta.deletion_timestamp,
        // Only a sizing record with a startup boost, which the planner takes back, and a
        // sizing note, which becomes an Event.
        annotations: meta
            .annotations
            .map(|a| {
                a.into_iter()
                    .filter(|(k, v)| {
                        (k == SIZED_ANNOTATION && v.contains("\"boost\"")) || k == NOTE_ANNOTATION
                    })
                    .collect::<std::collections::BTreeMap<_, _>>()
            })
            .filter(|a| !a.is_empty()),
        ..Default::default()
    };
    let slim = |c: Container| Container {
        name: c.name,
        resources: c.resources,
        resize_policy: c.resize_policy,
        ..Default::default()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        containers: spec.containers.into_iter().map(slim).collect(),
        init_containers: spec
            .init_containers
            .map(|cs| cs.into_iter().map(slim).collect()),
        node_name: spec.node_name,
        ..Default::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        observed_generation: status.observed_generation,
        qos_class: status.qos_class,
        conditions: status.conditions.map(|cs| {
            cs.into_iter()
                .filter(|c| {
                    matches!(
                        c.type_.as_str(),
                        "Ready" | "PodResizePending" | "PodResizeInProgress"
                    )
                })
                .collect()
        }),
        container_statuses: status.container_statuses.map(|ss| {
            ss.into_iter()
                .map(|s| ContainerStatus {
                    name: s.name,
                    resources: s.resources,
                    restart_count: s.restart_count,
                    ready: s.ready,
                    // Only what OOM kills after a resize need.
                    last_state: s.last_state.and_then(|l| {
                        let t = l
                            .terminated
                            .filter(|t| t.reason.as_deref() == Some("OOMKilled"))?;
                        Some(ContainerState {
                            terminated: Some(ContainerStateTerminated {
                                reason: t.reason,
                                finished_at: t.finished_at,
                                exit_code: t.exit_code,
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                    }),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
}

/// How long after a resize an OOM kill is blamed on it.
const OOM_AFTER_RESIZE: i64 = 24 * 3600;

/// Counts and reports, once each, OOM kills of the pod's containers that happened after tailor
/// resized the pod (within a day) and after this process started.
pub(super) fn oom_kills_after(
    ctx: &Context,
    va: &VerticalAutoscaler,
    pod: &Pod,
    record: &ResizeRecord,
) {
    let resized = record.time.0.as_second();
    let uid = pod.uid().unwrap_or_default();
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    for s in statuses {
        let Some(t) = s.last_state.as_ref().and_then(|l| l.terminated.as_ref()) else {
            continue;
        };
        if t.reason.as_deref() != Some("OOMKilled") {
            continue;
        }
        let Some(at) = t.finished_at.as_ref().map(|f| f.0.as_second()) else {
            continue;
        };
        if at < resized || at > resized + OOM_AFTER_RESIZE || at < ctx.started {
            continue;
        }
        let key = format!("oom/{uid}/{}/{}", s.name, s.restart_count);
        if !ctx.first_time(key) {
            continue;
        }
        let ns = va.namespace().unwrap_or_default();
        ctx.metrics.oom_after_resize(&ns, &va.name_any(), &s.name);
        let limit = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.containers.iter().find(|c| c.name == s.name))
            .and_then(|c| {
                c.resources
                    .as_ref()?
                    .limits
                    .as_ref()?
                    .get("memory")
                    .cloned()
            })
            .map_or_else(|| "none".to_owned(), |q| q.0);
        let note = format!(
            "container {} was OOM-killed {} min after tailor resized the pod (memory limit {limit}); the recommender raises the floor after an OOM kill",
            s.name,
            (at - resized) / 60
        );
        ctx.event(
            object_ref(pod),
            Kind::Warning,
            "OOMKilledAfterResize",
            note.clone(),
        );
        ctx.event(
            object_ref(va),
            Kind::Warning,
            "OOMKilledAfterResize",
            format!("pod {}: {note}", pod.name_any()),
        );
    }
}

/// Says on the pod, once, why the admission webhook did not size it (fully): the note it left
/// in the pod's annotation, since a pod has no name or uid yet when it is admitted.
pub(super) fn sizing_note(ctx: &Context, pod: &CachedPod) {
    let Some(note) = pod
        .annotations()
        .get(crate::plan::admission::NOTE_ANNOTATION)
    else {
        return;
    };
    let key = format!("sizing-note/{}", pod.uid().unwrap_or_default());
    if pod.meta().deletion_timestamp.is_some() {
        // Going: forget it, so the record does not grow with every such pod.
        ctx.memory().reported.remove(&key);
        return;
    }
    ctx.event_once(
        key,
        object_ref(pod),
        Kind::Warning,
        "NotSizedAtCreation",
        note.clone(),
    );
}
