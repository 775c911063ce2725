//! The live memory guard: raise a container's memory limit before the kernel OOM-kills it.
//! Pure: the working sets, the node's free memory and the clock come in. This file is the whole
//! rule.
//!
//! A memory increase is applied live (under `NotRequired` it never restarts), so the updater
//! need not wait for the recommender when a container nears its limit. For a pod of an
//! `InPlace` VerticalAutoscaler whose `updatePolicy.memoryGuard` is enabled, for each container
//! whose memory tailor controls (`mode: Auto`, memory in `controlledResources`) and which has a
//! memory limit `L` (the spec's: what was last asked, never less than what runs), with `U` its
//! working set read this pass and `S` the share of the last two minutes in which all its tasks
//! waited for memory (PSI `full`, where cAdvisor exports it; else 0):
//!
//! ```text
//! hot        U >= threshold x L,  or  S >= 0.1 and U >= L / 2   (stalled: the kernel is
//!                                      already reclaiming to keep it under its limit)
//! usage      U* = min(U, L), or for a stalled container max(U*, threshold x L): the
//!            kernel keeps a working set at or below its limit, so a reading above it is
//!            garbage and raises no further than (1 + step) x L
//! limit      L' = min(U* x (1 + step), cap), rounded up to a whole MiB      (only if L' > L)
//! cap        maxAllowed.memory x L / R   (the limit a request at maxAllowed would get;
//!                                          none without maxAllowed)
//! request    Guaranteed: R' = L' (the class must not change)
//!            Burstable, RequestsAndLimits: R' = R x L' / L, if the increase fits the
//!              node's free memory; else R stays (a limit needs no room on the node)
//!            Burstable, RequestsOnly: R stays
//! ```
//!
//! and nothing is lowered, ever. A Guaranteed container whose raise does not fit the node's
//! free memory is raised as far as it fits. The pod is left alone while it is not Running, a
//! resize is in progress or unobserved, or its last raise was less than `minIntervalSeconds`
//! ago (a wait, not a decline). Declines, each an Event reason: `MemoryGuardNeedsRestart` (the
//! container's memory `resizePolicy` is `RestartContainer` and `allowRestart` is false),
//! `MemoryGuardAtMaxAllowed` (the cap leaves no room above `L`), `MemoryGuardNoRoom`
//! (Guaranteed, and the node has no free memory). All hot containers of a pod go in one
//! resize.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use tailor_crds::quantity::memory_bytes;
use tailor_crds::v1alpha1::{ControlledValues, ResourceName, VerticalAutoscalerSpec};

use super::limits::{round_up_mib, scale};
use super::resources::{self, ContainerResources, Qos};
use super::{ContainerChange, PodPlan};

/// The memory stall share from which a container counts as hot (10% of the time, every task
/// waiting for memory).
pub const STALLED: f64 = 0.1;

/// What the guard is given for one pod.
#[derive(Clone, Copy, Debug)]
pub struct GuardInput<'a> {
    /// The pod, as last read.
    pub pod: &'a Pod,
    /// Its VerticalAutoscaler's spec.
    pub spec: &'a VerticalAutoscalerSpec,
    /// Each container's working set (bytes), read this pass.
    pub working_sets: &'a BTreeMap<String, f64>,
    /// Each container's memory stall share (0..1), where exported.
    pub stalls: &'a BTreeMap<String, f64>,
    /// When the guard last raised this pod (Unix seconds).
    pub last_raise: Option<i64>,
    /// The node's allocatable memory less the requests of the pods on it (bytes); `None`:
    /// unknown, requests of Burstable containers stay.
    pub node_free: Option<i64>,
    /// Now (Unix seconds).
    pub now: i64,
}

/// One container raised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raise {
    /// The container.
    pub container: String,
    /// Its working set (bytes).
    pub usage: i64,
    /// The memory limit before and after (bytes).
    pub from: i64,
    /// The new memory limit.
    pub to: i64,
}

/// Why the guard leaves a hot container as it is. The names are Event reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuardDecline {
    /// Its memory `resizePolicy` is `RestartContainer` and `allowRestart` is false.
    NeedsRestart,
    /// `maxAllowed` leaves no room above the limit.
    AtMaxAllowed,
    /// Guaranteed, and the node has no free memory for the request.
    NoRoom,
}

impl GuardDecline {
    /// The Event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NeedsRestart => "MemoryGuardNeedsRestart",
            Self::AtMaxAllowed => "MemoryGuardAtMaxAllowed",
            Self::NoRoom => "MemoryGuardNoRoom",
        }
    }
}

/// What the guard decided for a pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GuardPlan {
    /// The resize (memory only; [`PodPlan::guard`] names the raises); empty: none.
    pub plan: PodPlan,
    /// Hot containers left as they are: the container, why, and a sentence for a person.
    pub declined: Vec<(String, GuardDecline, String)>,
}

/// The guard's decision for one pod.
pub fn plan(input: &GuardInput<'_>) -> GuardPlan {
    let guard = &input.spec.update_policy.memory_guard;
    if !guard.enabled || !ready_for(input) {
        return GuardPlan::default();
    }
    let Some(spec) = input.pod.spec.as_ref() else {
        return GuardPlan::default();
    };
    let Ok(current) = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| ContainerResources::of(c.resources.as_ref()))
        .collect::<Result<Vec<_>, _>>()
    else {
        return GuardPlan::default();
    };
    let qos = resources::qos(&current);
    let mut out = GuardPlan::default();
    let mut room = input.node_free;
    for (c, cur) in spec.containers.iter().zip(&current) {
        match raise(input, qos, c, cur, &mut room) {
            Some(Ok((change, raise))) => {
                out.plan.changes.push(change);
                out.plan.guard.push(raise);
            }
            Some(Err((why, note))) => out.declined.push((c.name.clone(), why, note)),
            None => {}
        }
    }
    out
}

/// Whether the pod may be raised now: Running, no resize under way or unobserved, and not
/// raised within the minimum interval.
fn ready_for(input: &GuardInput<'_>) -> bool {
    let pod = input.pod;
    let running = pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let resize = resources::ResizeStatus::of(pod);
    let interval = input.spec.update_policy.memory_guard.min_interval_seconds;
    let rested = input
        .last_raise
        .is_none_or(|t| input.now.saturating_sub(t) >= interval);
    running && resize.synced && resize.in_progress.is_none() && rested
}

type Decided = Result<(ContainerChange, Raise), (GuardDecline, String)>;

/// One container: `None` when it is not hot (or not the guard's).
fn raise(
    input: &GuardInput<'_>,
    qos: Qos,
    c: &Container,
    cur: &ContainerResources,
    room: &mut Option<i64>,
) -> Option<Decided> {
    let guard = &input.spec.update_policy.memory_guard;
    let policy = input.spec.resource_policy.for_container(&c.name);
    if !policy.controls(ResourceName::Memory) {
        return None;
    }
    let limit = cur.limits.memory.filter(|l| *l > 0)?;
    let usage = *input.working_sets.get(&c.name)?;
    let stalled =
        input.stalls.get(&c.name).is_some_and(|s| *s >= STALLED) && usage >= limit as f64 / 2.0;
    if !usage.is_finite() || (usage < guard.threshold * limit as f64 && !stalled) {
        return None;
    }
    let effective = if stalled {
        usage.min(limit as f64).max(guard.threshold * limit as f64)
    } else {
        usage.min(limit as f64)
    };
    let usage = usage.min(limit as f64).ceil() as i64;
    let request = cur.requests.memory;
    let wanted = round_up_mib((effective * (1.0 + guard.step)).ceil() as i64);
    if wanted <= limit {
        return None;
    }
    let max_allowed = policy
        .max_allowed
        .as_ref()
        .and_then(|m| m.memory.as_ref())
        .and_then(|q| memory_bytes(q).ok());
    let cap = max_allowed.map(|m| match request {
        Some(r) if r > 0 => scale(m, limit, r),
        _ => m,
    });
    let mut to = cap.map_or(wanted, |cap| wanted.min(cap));
    if to <= limit {
        let note = format!(
            "container {} uses {} of its {} memory limit; maxAllowed leaves no room to raise it",
            c.name,
            mib(usage),
            mib(limit)
        );
        return Some(Err((GuardDecline::AtMaxAllowed, note)));
    }
    if resources::restarts_on(c, ResourceName::Memory) && !guard.allow_restart {
        let note = format!(
            "container {} uses {} of its {} memory limit; raising it would restart the container (memory resizePolicy RestartContainer) and memoryGuard.allowRestart is false",
            c.name,
            mib(usage),
            mib(limit)
        );
        return Some(Err((GuardDecline::NeedsRestart, note)));
    }
    let mut next = *cur;
    if qos == Qos::Guaranteed {
        let grow = room.map_or(to - limit, |free| (to - limit).min(free.max(0)));
        if grow <= 0 {
            let note = format!(
                "container {} uses {} of its {} memory limit; the pod is Guaranteed, so its request must rise too, and its node has no free memory",
                c.name,
                mib(usage),
                mib(limit)
            );
            return Some(Err((GuardDecline::NoRoom, note)));
        }
        to = limit + grow;
        next.requests.memory = Some(to);
        *room = room.map(|free| free - grow);
    } else if policy.controlled_values == ControlledValues::RequestsAndLimits
        && let (Some(r), Some(free)) = (request, *room)
    {
        let r2 = scale(r, to, limit).max(r);
        if r2 - r <= free {
            next.requests.memory = Some(r2);
            *room = Some(free - (r2 - r));
        }
    }
    next.limits.memory = Some(to);
    let change = ContainerChange {
        container: c.name.clone(),
        from: *cur,
        to: next,
        restarts: resources::restarts_on(c, ResourceName::Memory),
        approval: None,
    };
    let raised = Raise {
        container: c.name.clone(),
        usage,
        from: limit,
        to,
    };
    Some(Ok((change, raised)))
}

fn mib(bytes: i64) -> String {
    tailor_crds::quantity::format_memory_bytes(bytes).0
}
