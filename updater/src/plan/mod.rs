//! The planner: a pod, its VerticalAutoscaler's recommendation and policy in; a resize plan, or
//! the reasons for leaving the pod alone, out. Pure: no kube client, no HTTP, no clock.
//!
//! - [`plan_pod`]: one pod. All its containers in one resize; acts on a resource only when the
//!   current request lies outside the recommendation's bounds, differs from the target by at
//!   least `minChange`, or (memory) is below the floor; keeps the QoS class; moves limits in
//!   proportion (`RequestsAndLimits`) or leaves them (`RequestsOnly`), never below requests.
//! - [`memory`]: what happens to a memory decrease.
//! - [`approval`]: approval ids and the workload's pending approvals.
//! - [`workload`]: which of a workload's planned resizes go now (restart pacing, Infeasible).
//! - [`refused`]: a memory decrease the kubelet refused, and taking it back.
//! - [`guard`]: when the updater may act at all (a current recommendation, one owner per
//!   workload) and the re-check before each patch.

pub mod approval;
pub mod guard;
pub mod hpa;
pub mod memory;
pub mod refused;
pub mod resources;
pub mod workload;

/// Bytes in a MiB.
const MIB: i64 = 1024 * 1024;
use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;
use tailor_crds::quantity::{cpu_millis, memory_bytes};
use tailor_crds::v1alpha1::{
    ContainerRecommendation, ControlledValues, ResourceName, Resources, VerticalAutoscalerSpec,
};

use memory::{Approved, Route};
use resources::{Amounts, ContainerResources, Qos, ResizeStatus};

/// What the planner is given for one pod.
#[derive(Clone, Copy, Debug)]
pub struct PodInput<'a> {
    /// The pod, as last read.
    pub pod: &'a Pod,
    /// The VerticalAutoscaler's spec.
    pub spec: &'a VerticalAutoscalerSpec,
    /// `status.recommendation.containerRecommendations`.
    pub recommendation: &'a [ContainerRecommendation],
    /// Resources an HPA scales this workload on (left alone).
    pub blocked: &'a BTreeSet<ResourceName>,
    /// Memory decreases a person approved.
    pub approved: &'a [Approved],
}

/// Why a whole pod is left alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    /// The pod is being deleted.
    Terminating,
    /// The pod is not Running.
    NotRunning(String),
    /// A BestEffort pod has no requests to size (and may not gain any).
    BestEffort,
    /// The kubelet has not yet observed the pod's latest resize.
    NotSynced,
    /// A resize is being actuated.
    InProgress,
    /// The resize would change the QoS class, which the API server forbids.
    QosChange,
    /// The pod's resources could not be read.
    Invalid(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Terminating => write!(f, "the pod is being deleted"),
            Self::NotRunning(phase) => write!(f, "the pod is {phase}, not Running"),
            Self::BestEffort => write!(f, "BestEffort pods are not resized"),
            Self::NotSynced => write!(f, "the kubelet has not observed the last resize yet"),
            Self::InProgress => write!(f, "a resize is in progress"),
            Self::QosChange => write!(f, "the resize would change the pod's QoS class"),
            Self::Invalid(e) => write!(f, "unreadable resources: {e}"),
        }
    }
}

/// Why one resource of one container is left as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Container name.
    pub container: String,
    /// The resource.
    pub resource: ResourceName,
    /// Why.
    pub reason: String,
}

/// A container's part of a resize.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerChange {
    /// Container name.
    pub container: String,
    /// Resources now (spec).
    pub from: ContainerResources,
    /// Resources after the resize.
    pub to: ContainerResources,
    /// The kubelet restarts the container to apply this (a changed resource's resizePolicy
    /// is `RestartContainer`).
    pub restarts: bool,
    /// The approval a memory decrease in it goes ahead under.
    pub approval: Option<String>,
}

impl ContainerChange {
    /// Whether `resource` changes.
    pub fn changes(&self, resource: ResourceName) -> bool {
        self.from.requests.get(resource) != self.to.requests.get(resource)
            || self.from.limits.get(resource) != self.to.limits.get(resource)
    }
}

/// The plan for one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodPlan {
    /// Set when the whole pod is left alone.
    pub skip: Option<Skip>,
    /// The containers the resize changes; empty: no resize.
    pub changes: Vec<ContainerChange>,
    /// Memory decreases held for approval (not in `changes`).
    pub held: Vec<approval::Cut>,
    /// Resources left as they are, with reasons.
    pub notes: Vec<Note>,
}

impl PodPlan {
    fn skipped(skip: Skip) -> Self {
        Self {
            skip: Some(skip),
            ..Self::default()
        }
    }

    /// Whether the plan resizes the pod.
    pub fn resizes(&self) -> bool {
        !self.changes.is_empty()
    }

    /// Whether the resize restarts a container.
    pub fn restarts(&self) -> bool {
        self.changes.iter().any(|c| c.restarts)
    }

    /// The memory cuts of this plan that went ahead under an approval.
    pub fn approved_cuts(&self) -> impl Iterator<Item = approval::Cut> + '_ {
        self.changes.iter().filter_map(|c| {
            Some(approval::Cut {
                container: c.container.clone(),
                from: c.from.limits.memory?,
                to: c.to.limits.memory?,
                approved: Some(c.approval.clone()?),
            })
        })
    }
}

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

/// `value * num / den`, rounded up, without overflow.
fn scale(value: i64, num: i64, den: i64) -> i64 {
    if den <= 0 {
        return value;
    }
    let v = (i128::from(value) * i128::from(num) + i128::from(den) - 1) / i128::from(den);
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The new request for one resource, or the reason to leave it.
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
        (target - cur).unsigned_abs() as f64 / cur as f64
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

/// Plans one pod. Never fails: every reason to do nothing is in the plan.
pub fn plan_pod(input: &PodInput<'_>) -> PodPlan {
    let pod = input.pod;
    if pod.metadata.deletion_timestamp.is_some() {
        return PodPlan::skipped(Skip::Terminating);
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    if phase != "Running" {
        return PodPlan::skipped(Skip::NotRunning(phase));
    }
    let Some(spec) = pod.spec.as_ref() else {
        return PodPlan::skipped(Skip::Invalid("no spec".into()));
    };
    let resize = ResizeStatus::of(pod);
    if !resize.synced {
        return PodPlan::skipped(Skip::NotSynced);
    }
    if resize.in_progress.is_some() {
        return PodPlan::skipped(Skip::InProgress);
    }
    let read = |c: &k8s_openapi::api::core::v1::Container| {
        ContainerResources::of(c.resources.as_ref())
            .map_err(|e| format!("container {}: {e}", c.name))
    };
    let current: Vec<ContainerResources> = match spec.containers.iter().map(read).collect() {
        Ok(c) => c,
        Err(e) => return PodPlan::skipped(Skip::Invalid(e)),
    };
    let init: Vec<ContainerResources> =
        match spec.init_containers.iter().flatten().map(read).collect() {
            Ok(c) => c,
            Err(e) => return PodPlan::skipped(Skip::Invalid(e)),
        };
    let qos = resources::qos(current.iter().chain(&init));
    if qos == Qos::BestEffort {
        return PodPlan::skipped(Skip::BestEffort);
    }

    let policy = &input.spec.update_policy;
    let mut plan = PodPlan::default();
    let mut planned = current.clone();
    for ((container, cur), new) in spec.containers.iter().zip(&current).zip(planned.iter_mut()) {
        let name = container.name.as_str();
        let cp = input.spec.resource_policy.for_container(name);
        let Some(rec) = input
            .recommendation
            .iter()
            .find(|r| r.container_name == name)
        else {
            continue;
        };
        let mut note = |resource, reason: String| {
            plan.notes.push(Note {
                container: name.to_owned(),
                resource,
                reason,
            });
        };
        for resource in [ResourceName::Cpu, ResourceName::Memory] {
            if !cp.controls(resource) {
                continue;
            }
            if input.blocked.contains(&resource) {
                note(resource, "an HPA scales this workload on it".into());
                continue;
            }
            let parsed = (|| -> Result<_, String> {
                Ok((
                    amount(Some(&rec.target), resource)?,
                    amount(cp.min_allowed.as_ref(), resource)?,
                    amount(cp.max_allowed.as_ref(), resource)?,
                    match resource {
                        ResourceName::Memory => rec
                            .memory_floor
                            .as_ref()
                            .map(|f| memory_bytes(&f.value).map_err(|e| e.to_string()))
                            .transpose()?,
                        ResourceName::Cpu => None,
                    },
                ))
            })();
            let (target, min, max, floor) = match parsed {
                Ok(v) => v,
                Err(e) => {
                    note(resource, format!("unreadable recommendation: {e}"));
                    continue;
                }
            };
            let Some(target) = target else {
                note(resource, "no target in the recommendation".into());
                continue;
            };
            let target = clamp(target, min, max);
            let min_change = match resource {
                ResourceName::Cpu => policy.min_change.cpu,
                ResourceName::Memory => policy.min_change.memory,
            };
            let cur_req = cur.requests.get(resource);
            let want = match decide(resource, cur_req, target, rec, min_change, floor) {
                Ok(Ok(v)) => v,
                Ok(Err(reason)) => {
                    note(resource, reason);
                    continue;
                }
                Err(e) => {
                    note(resource, format!("unreadable bounds: {e}"));
                    continue;
                }
            };
            let cur_lim = cur.limits.get(resource);
            if qos == Qos::Guaranteed {
                if cp.controlled_values == ControlledValues::RequestsOnly {
                    note(
                        resource,
                        "Guaranteed pod with controlledValues RequestsOnly: requests cannot move without limits".into(),
                    );
                    continue;
                }
                new.requests.set(resource, Some(want));
                new.limits.set(resource, Some(want));
                continue;
            }
            match (cp.controlled_values, cur_lim) {
                (_, None) => new.requests.set(resource, Some(want)),
                (ControlledValues::RequestsOnly, Some(lim)) => {
                    if want > lim {
                        note(resource, format!("capped at the limit ({lim})"));
                    }
                    let capped = want.min(lim);
                    if Some(capped) != cur_req {
                        new.requests.set(resource, Some(capped));
                    }
                }
                (ControlledValues::RequestsAndLimits, Some(lim)) => {
                    let mut new_lim = match cur_req {
                        Some(req) if req > 0 => scale(lim, want, req).max(want),
                        _ => lim.max(want),
                    };
                    // A limit in proportion is rounded up to whole MiB: `701Mi`, not
                    // `735401302`. Up, so it never comes closer to the request.
                    if resource == ResourceName::Memory && new_lim % MIB != 0 && new_lim != lim {
                        new_lim = (new_lim / MIB + 1) * MIB;
                    }
                    new.requests.set(resource, Some(want));
                    new.limits.set(resource, Some(new_lim));
                }
            }
        }
        // Memory: routed by the decrease policy.
        let route = memory::route(
            name,
            cur,
            new,
            policy.memory_decrease,
            resources::restarts_on(container, ResourceName::Memory),
            input.approved,
        );
        let mut approval = None;
        match route {
            Route::Unchanged | Route::Apply => {}
            Route::ApplyApproved(id) => approval = Some(id),
            Route::Hold { from, to } => {
                plan.held.push(approval::Cut {
                    container: name.to_owned(),
                    from,
                    to,
                    approved: None,
                });
                new.requests.memory = cur.requests.memory;
                new.limits.memory = cur.limits.memory;
            }
            Route::Skip(reason) => {
                plan.notes.push(Note {
                    container: name.to_owned(),
                    resource: ResourceName::Memory,
                    reason: reason.to_owned(),
                });
                new.requests.memory = cur.requests.memory;
                new.limits.memory = cur.limits.memory;
            }
        }
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
    if !plan.changes.is_empty() && resources::qos(planned.iter().chain(&init)) != qos {
        return PodPlan {
            skip: Some(Skip::QosChange),
            notes: plan.notes,
            ..PodPlan::default()
        };
    }
    plan
}

/// The resize patch body for the `resize` subresource: every changed container's requests and
/// limits for CPU and memory, with the pod's resourceVersion as a precondition.
pub fn resize_patch(plan: &PodPlan, resource_version: Option<&str>) -> serde_json::Value {
    use tailor_crds::quantity::{format_cpu_millis, format_memory_bytes};
    let values = |a: &Amounts| {
        let mut m = serde_json::Map::new();
        if let Some(c) = a.cpu {
            m.insert("cpu".into(), serde_json::json!(format_cpu_millis(c)));
        }
        if let Some(b) = a.memory {
            m.insert("memory".into(), serde_json::json!(format_memory_bytes(b)));
        }
        serde_json::Value::Object(m)
    };
    let containers: Vec<serde_json::Value> = plan
        .changes
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.container,
                "resources": {"requests": values(&c.to.requests), "limits": values(&c.to.limits)},
            })
        })
        .collect();
    let mut patch = serde_json::json!({"spec": {"containers": containers}});
    if let Some(rv) = resource_version {
        patch["metadata"] = serde_json::json!({"resourceVersion": rv});
    }
    patch
}
