//! How one container of a pod is planned. This file is the rule for requests:
//!
//! - Only resources the container's policy controls (`mode: Auto`, `controlledResources`) are
//!   sized; a container without a recommendation, a resource an HPA scales on, and an
//!   unreadable or missing target are declined (see `declined.rs`).
//! - The target is clamped to `minAllowed`/`maxAllowed`. A memory decrease stops at the
//!   recommendation's memory floor, even when `maxAllowed` is lower.
//! - A resource moves only when its current request lies outside the recommendation's bounds,
//!   differs from the target by at least `minChange`, or (memory) is below the floor;
//!   otherwise a [`Note`] says why not.
//! - The QoS class is kept: a Guaranteed container's request and limit move together (under
//!   `RequestsOnly` they cannot: declined); in a Burstable pod, `RequestsAndLimits` moves the
//!   limit with the request (`limits.rs`), `RequestsOnly` keeps the limit and stops the request
//!   at it (declined for the rest, `LimitBelowFloor` when a memory limit is under the floor).
//!   Whether the pod as a whole keeps its class is checked by the caller.
//! - Memory changes then take their route (`memory.rs`): applied, held for approval, or
//!   declined, in which case the container's memory stays as it is.

use k8s_openapi::api::core::v1::Container;
use tailor_crds::quantity::{cpu_millis, format_cpu_millis, format_memory_bytes, memory_bytes};
use tailor_crds::v1alpha1::{
    ContainerPolicy, ContainerRecommendation, ControlledValues, ResourceName, Resources,
};

use super::memory::{self, Route};
use super::resources::{self, ContainerResources, Qos};
use super::{ContainerChange, DeclineReason, Note, PodInput, PodPlan, approval, boost, limits};

fn amount(r: Option<&Resources>, resource: ResourceName) -> Result<Option<i64>, String> {
    let Some(q) = r.and_then(|r| match resource {
        ResourceName::Cpu => r.cpu.as_ref(),
        ResourceName::Memory => r.memory.as_ref(),
    }) else {
        return Ok(None);
    };
    match resource {
        ResourceName::Cpu => cpu_millis(q),
        ResourceName::Memory => memory_bytes(q),
    }
    .map(Some)
    .map_err(|e| e.to_string())
}

/// `cpu` or `memory`.
fn resource_name(resource: ResourceName) -> &'static str {
    match resource {
        ResourceName::Cpu => "cpu",
        ResourceName::Memory => "memory",
    }
}

/// An amount as a quantity (`250m`, `512Mi`), for messages.
fn show(resource: ResourceName, value: i64) -> String {
    match resource {
        ResourceName::Cpu => format_cpu_millis(value).0,
        ResourceName::Memory => format_memory_bytes(value).0,
    }
}

/// The new request for one resource, or the reason (a [`Note`]) to leave it.
fn decide(
    resource: ResourceName,
    current: Option<i64>,
    target: i64,
    rec: &ContainerRecommendation,
    min_change: f64,
    floor: Option<i64>,
) -> Result<Result<i64, String>, String> {
    let Some(cur) = current else {
        return Ok(Ok(target));
    };
    let lower = amount(rec.lower_bound.as_ref(), resource)?;
    let upper = amount(rec.upper_bound.as_ref(), resource)?;
    let mut target = target;
    if resource == ResourceName::Memory && target < cur {
        // Never below the floor, even when maxAllowed is lower.
        target = target.max(floor.unwrap_or(0));
    }
    if target == cur {
        return Ok(Err("at the target".into()));
    }
    let below_floor = resource == ResourceName::Memory && floor.is_some_and(|f| cur < f);
    let outside = lower.is_some_and(|l| cur < l) || upper.is_some_and(|u| cur > u);
    let relative = if cur > 0 {
        target.abs_diff(cur) as f64 / cur as f64
    } else {
        f64::INFINITY
    };
    if below_floor || outside || relative >= min_change {
        Ok(Ok(target))
    } else {
        Ok(Err(format!(
            "within the bounds and {:.1}% from the target (minChange {:.0}%)",
            relative * 100.0,
            min_change * 100.0
        )))
    }
}

fn clamp(value: i64, min: Option<i64>, max: Option<i64>) -> i64 {
    let v = min.map_or(value, |m| value.max(m));
    max.map_or(v, |m| v.min(m))
}

/// Whether a running container is resized, or a new one sized at creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    /// A running container: `minChange` and the memory-decrease route apply.
    Resize,
    /// A container not started yet: the target goes as it is (nothing runs to disturb), and
    /// memory never below the floor.
    Admission,
}

/// What a container's planning needs.
struct Cx<'a> {
    input: &'a PodInput<'a>,
    qos: Qos,
    policy: &'a ContainerPolicy,
    rec: &'a ContainerRecommendation,
    name: &'a str,
    mode: Mode,
}

/// Plans one container into `new` (a copy of `cur`), adding its change, if any, to `plan`.
pub(super) fn plan_container(
    (input, mode): (&PodInput<'_>, Mode),
    qos: Qos,
    container: &Container,
    cur: &ContainerResources,
    new: &mut ContainerResources,
    plan: &mut PodPlan,
) {
    let name = container.name.as_str();
    let policy = input.spec.resource_policy.for_container(name);
    let unboosting = mode == Mode::Resize && boost_over(input, name);
    let sized: Vec<ResourceName> = [ResourceName::Cpu, ResourceName::Memory]
        .into_iter()
        .filter(|&r| policy.controls(r))
        .filter(|&r| !input.unboost_only || (unboosting && r == ResourceName::Cpu))
        .collect();
    if sized.is_empty() {
        // `mode: Off`, or nothing in `controlledResources`: the policy says so; not a decline.
        return;
    }
    let Some(rec) = input
        .recommendation
        .iter()
        .find(|r| r.container_name == name)
    else {
        plan.decline(
            name,
            None,
            DeclineReason::NoRecommendation,
            format!("no recommendation for container {name} yet; it is left as it is"),
        );
        return;
    };
    let cx = Cx {
        input,
        qos,
        policy: &policy,
        rec,
        name,
        mode,
    };
    for resource in sized {
        plan_resource(&cx, resource, cur, new, plan);
    }
    let approval = match mode {
        Mode::Resize if !input.unboost_only => route_memory(&cx, container, cur, new, plan),
        _ => None,
    };
    if new != cur {
        let mut change = ContainerChange {
            container: name.to_owned(),
            from: *cur,
            to: *new,
            restarts: false,
            approval,
        };
        change.restarts = [ResourceName::Cpu, ResourceName::Memory]
            .into_iter()
            .any(|r| change.changes(r) && resources::restarts_on(container, r));
        plan.changes.push(change);
    }
}

/// A resource's recommendation and policy, read.
struct Wanted {
    target: Option<i64>,
    min: Option<i64>,
    max: Option<i64>,
    floor: Option<i64>,
}

fn wanted(cx: &Cx<'_>, resource: ResourceName) -> Result<Wanted, String> {
    let floor = match resource {
        ResourceName::Memory => cx
            .rec
            .memory_floor
            .as_ref()
            .map(|f| memory_bytes(&f.value).map_err(|e| format!("memoryFloor: {e}")))
            .transpose()?,
        ResourceName::Cpu => None,
    };
    Ok(Wanted {
        target: amount(Some(&cx.rec.target), resource).map_err(|e| format!("target: {e}"))?,
        min: amount(cx.policy.min_allowed.as_ref(), resource)
            .map_err(|e| format!("minAllowed: {e}"))?,
        max: amount(cx.policy.max_allowed.as_ref(), resource)
            .map_err(|e| format!("maxAllowed: {e}"))?,
        floor,
    })
}

/// Plans one resource of one container into `new`.
fn plan_resource(
    cx: &Cx<'_>,
    resource: ResourceName,
    cur: &ContainerResources,
    new: &mut ContainerResources,
    plan: &mut PodPlan,
) {
    let decline = |plan: &mut PodPlan, reason, message: String| {
        plan.decline(cx.name, Some(resource), reason, message);
    };
    let what = resource_name(resource);
    if cx.input.blocked.contains(&resource) {
        let message = format!(
            "an HPA scales this workload on {what}; it is left to the HPA (updatePolicy.hpaConflict: Resize opts in)"
        );
        return decline(plan, DeclineReason::HpaConflict, message);
    }
    let w = match wanted(cx, resource) {
        Ok(w) => w,
        Err(e) => {
            let message = format!("unreadable {what} in the recommendation or policy: {e}");
            return decline(plan, DeclineReason::InvalidRecommendation, message);
        }
    };
    let Some(target) = w.target else {
        let message = format!("the recommendation has no {what} target");
        return decline(plan, DeclineReason::MissingTarget, message);
    };
    let mut target = clamp(target, w.min, w.max);
    let mut min_change = match (cx.mode, resource) {
        (Mode::Admission, _) => 0.0,
        (Mode::Resize, ResourceName::Cpu) => cx.input.spec.update_policy.min_change.cpu,
        (Mode::Resize, ResourceName::Memory) => cx.input.spec.update_policy.min_change.memory,
    };
    if resource == ResourceName::Cpu {
        match startup_boost(cx, target, plan) {
            Boost::None => {}
            Boost::Give(boosted) => target = boosted,
            Boost::On(until) => {
                let reason = match until
                    .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t).ok())
                {
                    Some(t) => format!("startup boost until {t}"),
                    None => "startup boost until the pod is Ready, then for its duration".into(),
                };
                return plan.notes.push(Note {
                    container: cx.name.to_owned(),
                    resource,
                    reason,
                });
            }
            // Back to the target, however close the boost is to it.
            Boost::Over => min_change = 0.0,
        }
    }
    if cx.mode == Mode::Admission && resource == ResourceName::Memory {
        // A new process: never below the floor, even when maxAllowed is lower.
        target = target.max(w.floor.unwrap_or(0));
    }
    let cur_req = cur.requests.get(resource);
    match decide(resource, cur_req, target, cx.rec, min_change, w.floor) {
        Ok(Ok(want)) => apply(cx, resource, want, &w, cur, new, plan),
        Ok(Err(reason)) => plan.notes.push(Note {
            container: cx.name.to_owned(),
            resource,
            reason,
        }),
        Err(e) => {
            let message = format!("unreadable {what} bounds in the recommendation: {e}");
            decline(plan, DeclineReason::InvalidRecommendation, message);
        }
    }
}

/// What the startup boost does to a container's CPU.
enum Boost {
    /// No boost (none configured, or none given at creation).
    None,
    /// At creation: this much CPU instead of the target.
    Give(i64),
    /// Running, boost still on (until this time, once the pod is Ready): leave the CPU.
    On(Option<i64>),
    /// Running, boost over: back to the target.
    Over,
}

/// Whether the boost this container was given at creation is over.
fn boost_over(input: &PodInput<'_>, container: &str) -> bool {
    boost::given(input.pod)
        .iter()
        .any(|g| g.container == container && !boost::on(input.pod, g.duration, input.now))
}

fn startup_boost(cx: &Cx<'_>, target: i64, plan: &mut PodPlan) -> Boost {
    match cx.mode {
        Mode::Resize => {
            let given = boost::given(cx.input.pod);
            let Some(g) = given.iter().find(|g| g.container == cx.name) else {
                return Boost::None;
            };
            match boost::until(cx.input.pod, g.duration) {
                Some(end) if cx.input.now >= end => Boost::Over,
                end => Boost::On(end),
            }
        }
        Mode::Admission => {
            let Some(b) = cx.policy.startup_boost.as_ref() else {
                return Boost::None;
            };
            let duration = tailor_recommender::spec::parse_duration(&b.cpu.duration)
                .map_err(|e| format!("startupBoost.cpu.duration: {e}"));
            match (boost::boosted(target, &b.cpu), duration) {
                (Ok(boosted), Ok(seconds)) => {
                    plan.boosted.push(boost::Given {
                        container: cx.name.to_owned(),
                        boosted,
                        target,
                        duration: seconds.ceil() as i64,
                    });
                    Boost::Give(boosted)
                }
                (Err(e), _) | (_, Err(e)) => {
                    let message = format!("the startup boost is not given: {e}");
                    plan.decline(
                        cx.name,
                        Some(ResourceName::Cpu),
                        DeclineReason::InvalidRecommendation,
                        message,
                    );
                    Boost::None
                }
            }
        }
    }
}

/// Sets `resource`'s new request (`want`) and limit in `new`, keeping the QoS class.
fn apply(
    cx: &Cx<'_>,
    resource: ResourceName,
    want: i64,
    w: &Wanted,
    cur: &ContainerResources,
    new: &mut ContainerResources,
    plan: &mut PodPlan,
) {
    let (name, what) = (cx.name, resource_name(resource));
    let cur_lim = cur.limits.get(resource);
    if cx.qos == Qos::Guaranteed {
        if cx.policy.controlled_values == ControlledValues::RequestsOnly {
            plan.decline(
                name,
                Some(resource),
                DeclineReason::GuaranteedRequestsOnly,
                format!("Guaranteed pod with controlledValues RequestsOnly: the {what} request cannot move without its limit"),
            );
            return;
        }
        new.requests.set(resource, Some(want));
        new.limits.set(resource, Some(want));
        return;
    }
    match (cx.policy.controlled_values, cur_lim) {
        (_, None) => new.requests.set(resource, Some(want)),
        (ControlledValues::RequestsOnly, Some(lim)) => {
            let floor = w
                .floor
                .filter(|&f| resource == ResourceName::Memory && lim < f);
            if let Some(f) = floor {
                plan.decline(
                    name,
                    Some(resource),
                    DeclineReason::LimitBelowFloor,
                    format!(
                        "the memory limit {} is below the memory floor {} and controlledValues RequestsOnly keeps limits; the request stops at the limit (raise the limit in the pod template, or use RequestsAndLimits)",
                        show(resource, lim),
                        show(resource, f)
                    ),
                );
            } else if want > lim {
                plan.decline(
                    name,
                    Some(resource),
                    DeclineReason::RequestCappedAtLimit,
                    format!(
                        "the {what} target {} is above the limit {} and controlledValues RequestsOnly keeps limits; the request stops at the limit",
                        show(resource, want),
                        show(resource, lim)
                    ),
                );
            }
            let capped = want.min(lim);
            if Some(capped) != cur.requests.get(resource) {
                new.requests.set(resource, Some(capped));
            }
        }
        (ControlledValues::RequestsAndLimits, Some(lim)) => {
            let d = limits::derive(resource, cur.requests.get(resource), lim, want, w.max);
            if let Some(at) = d.capped_at {
                plan.notes.push(Note {
                    container: name.to_owned(),
                    resource,
                    reason: format!(
                        "limit capped at {}: a derived limit stays within max(current limit, min(request x {}, maxAllowed))",
                        show(resource, at),
                        limits::MAX_LIMIT_RATIO
                    ),
                });
            }
            new.requests.set(resource, Some(want));
            new.limits.set(resource, Some(d.limit));
        }
    }
}

/// Routes the container's memory change (see [`memory`]); returns the approval it goes ahead
/// under. A held or declined change leaves memory as it is.
fn route_memory(
    cx: &Cx<'_>,
    container: &Container,
    cur: &ContainerResources,
    new: &mut ContainerResources,
    plan: &mut PodPlan,
) -> Option<String> {
    let route = memory::route(
        cx.name,
        cur,
        new,
        cx.input.spec.update_policy.memory_decrease,
        resources::restarts_on(container, ResourceName::Memory),
        cx.input.approved,
    );
    match route {
        Route::Unchanged | Route::Apply => return None,
        Route::ApplyApproved(id) => return Some(id),
        Route::Hold { from, to } => plan.held.push(approval::Cut {
            container: cx.name.to_owned(),
            from,
            to,
            approved: None,
        }),
        Route::Decline(reason, message) => {
            plan.decline(cx.name, Some(ResourceName::Memory), reason, message);
        }
    }
    new.requests.memory = cur.requests.memory;
    new.limits.memory = cur.limits.memory;
    None
}
