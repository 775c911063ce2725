//! The live memory guard's I/O (the rule is [`crate::plan::memory_guard`]):
//!
//! - **scan** (every `--memory-guard-interval-seconds`, on the leader): one query reads the
//!   working set of every container in the cluster at half its memory limit or more (below any
//!   threshold the policy allows), a second their memory stall share where cAdvisor exports
//!   it (cgroup v2); for the pods of `InPlace` VerticalAutoscalers with the guard
//!   on, it reads the node's free memory (allocatable, less the requests of the pods on it) and
//!   keeps what it found, then puts their VerticalAutoscalers on the work queue;
//! - **plan** (in the reconcile's plan step): a pod the scan found hot is planned by the guard,
//!   whose raise takes the place of the ordinary plan for that pass;
//! - **record** (after the patch): the raise is counted, told in a `MemoryGuardRaised` Event on
//!   the pod and the object, and written to the ResizeState's `memoryGuardRaises`, which the
//!   planner and the recommender read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use tailor_crds::quantity::{format_memory_bytes, memory_bytes};
use tailor_crds::v1alpha1::{MemoryGuardRaise, UpdateMode};
use tokio::sync::mpsc::UnboundedSender;

use super::events::Kind;
use super::observe::Workload;
use super::{Context, Key, now, object_ref, uid_of};
use crate::plan::PodPlan;
use crate::plan::memory_guard::{self, GuardInput};
use crate::plan::resources::{ContainerResources, terminal};

/// The share of its memory limit at which a container's working set is read: below the least
/// threshold the policy allows (0.5).
const SCAN_SHARE: f64 = 0.5;

/// What the last scan found of one pod.
#[derive(Clone, Debug)]
pub(super) struct Hot {
    /// Each hot container's working set (bytes).
    sets: BTreeMap<String, f64>,
    /// Each hot container's memory stall share, where exported.
    stalls: BTreeMap<String, f64>,
    /// The node's free memory (bytes), when it could be read.
    node_free: Option<i64>,
    /// When.
    at: Instant,
}

/// Scans every `every` while this replica leads, until dropped.
pub(super) async fn run(ctx: Arc<Context>, queue: UnboundedSender<Key>, every: Duration) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if ctx.options.fence.holds() {
            scan(&ctx, &queue, every).await;
        }
    }
}

/// One scan: read, keep what is hot for the guarded pods, queue their objects.
async fn scan(ctx: &Context, queue: &UnboundedSender<Key>, every: Duration) {
    let Some(source) = &ctx.options.usage else {
        return;
    };
    let at = super::now().0.as_millisecond() as f64 / 1000.0;
    ctx.metrics.request("prometheus");
    let sets = match source.prometheus.hot_working_sets(SCAN_SHARE, at).await {
        Ok(sets) => sets,
        Err(e) => {
            ctx.metrics.guard_scanned(false);
            tracing::warn!(error = %e, "memory guard: cannot read working sets");
            return;
        }
    };
    ctx.metrics.guard_scanned(true);
    type Readings = (BTreeMap<String, f64>, BTreeMap<String, f64>);
    let mut by_pod: BTreeMap<(String, String), Readings> = BTreeMap::new();
    for s in sets {
        let (sets, stalls) = by_pod.entry((s.namespace, s.pod)).or_default();
        sets.insert(s.container.clone(), s.bytes);
        stalls.insert(s.container, s.stalled);
    }
    let mut guarded_pods = Vec::new();
    for ((ns, name), readings) in by_pod {
        let Some(pod) = ctx.pods.get(&ObjectRef::new(&name).within(&ns)) else {
            continue;
        };
        let pod = Arc::new(pod.unpack());
        let keys = guarded(ctx, &pod);
        if !keys.is_empty() {
            guarded_pods.push((pod, readings, keys));
        }
    }
    let free = nodes_free(ctx, guarded_pods.iter().map(|(p, _, _)| pod_node(p))).await;
    let mut found = Vec::new();
    for (pod, (sets, stalls), keys) in guarded_pods {
        let hot = Hot {
            sets,
            stalls,
            node_free: free.get(&pod_node(&pod)).copied().flatten(),
            at: Instant::now(),
        };
        found.push((uid_of(pod.as_ref()), hot, keys));
    }
    let mut memory = ctx.memory();
    memory.hot.retain(|_, h| h.at.elapsed() < every * 2);
    for (uid, hot, keys) in found {
        memory.hot.insert(uid, hot);
        for k in keys {
            let _ = queue.send(k);
        }
    }
}

/// The `InPlace` objects with the guard on whose workload `pod` belongs to.
fn guarded(ctx: &Context, pod: &Pod) -> Vec<Key> {
    super::watch::objects_of(ctx, pod)
        .into_iter()
        .filter(|(ns, name)| {
            ctx.vas
                .get(&ObjectRef::new(name).within(ns))
                .is_some_and(|va| {
                    let p = &va.spec.update_policy;
                    p.update_mode == UpdateMode::InPlace && p.memory_guard.enabled
                })
        })
        .collect()
}

fn pod_node(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// Each of `nodes`' allocatable memory less the memory requests of the pods on it (one pass
/// over the pod cache); `None` for a node that cannot be read.
async fn nodes_free(
    ctx: &Context,
    nodes: impl Iterator<Item = String>,
) -> HashMap<String, Option<i64>> {
    let mut free: HashMap<String, Option<i64>> = HashMap::new();
    for node in nodes {
        if !node.is_empty() && !free.contains_key(&node) {
            let allocatable = allocatable_memory(ctx, &node).await;
            free.insert(node, allocatable);
        }
    }
    for packed in ctx.pods.state() {
        let Some(Some(room)) = free.get_mut(packed.node_name().unwrap_or_default()) else {
            continue;
        };
        let p = packed.unpack();
        if terminal(&p) {
            continue;
        }
        let requested: i64 = p
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .filter_map(|c| ContainerResources::of(c.resources.as_ref()).ok())
            .filter_map(|r| r.requests.memory)
            .sum();
        *room -= requested;
    }
    free
}

/// The node's allocatable memory; `None` when it cannot be read.
async fn allocatable_memory(ctx: &Context, node: &str) -> Option<i64> {
    ctx.metrics.request("get");
    match Api::<Node>::all(ctx.client.clone()).get_opt(node).await {
        Ok(Some(n)) => n
            .status
            .and_then(|s| s.allocatable)
            .and_then(|a| a.get("memory").cloned())
            .and_then(|q| memory_bytes(&q).ok()),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(node, error = %e, "memory guard: cannot read the node");
            None
        }
    }
}

/// The guard's plan for `pod` when the last scan found it hot (and not long ago), in place of
/// the ordinary `plan`; declines are told once each.
pub(super) fn plan(ctx: &Context, w: &Workload, pod: &Pod, plan: PodPlan) -> PodPlan {
    let Some(every) = ctx.options.usage.as_ref().and_then(|u| u.guard_every) else {
        return plan;
    };
    let uid = uid_of(pod);
    let hot = ctx.memory().hot.get(&uid).cloned();
    let Some(hot) = hot.filter(|h| h.at.elapsed() < every * 2) else {
        return plan;
    };
    let last_raise = w
        .status
        .memory_guard_raises
        .iter()
        .filter(|r| r.pod_uid.as_deref() == Some(uid.as_str()))
        .map(|r| r.time.0.as_second())
        .max();
    let guard = memory_guard::plan(&GuardInput {
        pod,
        spec: &w.va.spec,
        working_sets: &hot.sets,
        stalls: &hot.stalls,
        last_raise,
        node_free: hot.node_free,
        now: now().0.as_second(),
    });
    for (container, why, note) in &guard.declined {
        let key = format!("guard/{uid}/{container}/{}", why.as_str());
        if ctx.first_time(key) {
            ctx.metrics.guard_declined(why.as_str());
            ctx.event(object_ref(pod), Kind::Warning, why.as_str(), note.clone());
            let note = format!("pod {}: {note}", pod.name_any());
            ctx.event(object_ref(w.va.as_ref()), Kind::Warning, why.as_str(), note);
        }
    }
    if guard.plan.resizes() {
        guard.plan
    } else {
        plan
    }
}

/// A guard raise the API server accepted: counted, told, and its records.
pub(super) fn raised(
    ctx: &Context,
    w: &Workload,
    pod: &Pod,
    plan: &PodPlan,
) -> Vec<MemoryGuardRaise> {
    if plan.guard.is_empty() {
        return Vec::new();
    }
    ctx.memory().hot.remove(&uid_of(pod));
    let time = now();
    let mut out = Vec::new();
    for r in &plan.guard {
        let threshold = w.va.spec.update_policy.memory_guard.threshold;
        let note = format!(
            "container {} uses {} of its {} memory limit (at least {:.0}%): raised live to {} before the kernel OOM-kills it",
            r.container,
            mib(r.usage),
            mib(r.from),
            threshold * 100.0,
            mib(r.to)
        );
        tracing::info!(pod = %format!("{}/{}", w.key.0, pod.name_any()), container = %r.container, usage = r.usage, from = r.from, to = r.to, "memory guard raised a limit");
        ctx.metrics.guard_raised(&w.key.0, &w.key.1, &r.container);
        ctx.event(
            object_ref(pod),
            Kind::Normal,
            "MemoryGuardRaised",
            note.clone(),
        );
        let note = format!("pod {}: {note}", pod.name_any());
        ctx.event(
            object_ref(w.va.as_ref()),
            Kind::Normal,
            "MemoryGuardRaised",
            note,
        );
        out.push(MemoryGuardRaise {
            pod: pod.name_any(),
            pod_uid: Some(uid_of(pod)),
            container_name: r.container.clone(),
            time: time.clone(),
            usage: format_memory_bytes(r.usage),
            from: format_memory_bytes(r.from),
            to: format_memory_bytes(r.to),
        });
    }
    out
}

fn mib(bytes: i64) -> String {
    format_memory_bytes(bytes).0
}
