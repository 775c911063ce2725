//! The planner: a pod, its VerticalAutoscaler's recommendation and policy in; a resize plan, or
//! the reasons for leaving (part of) the pod alone, out. Pure: no kube client, no HTTP, no
//! clock; integer arithmetic only, checked or saturating, so no input can overflow or panic.
//!
//! Where each rule lives:
//! - [`plan_pod`] (this file): which pods are planned at all (Running, not being deleted, last
//!   resize observed and finished, resources readable, not BestEffort); all of a pod's
//!   containers in one resize; a resize that would change the pod's QoS class is declined for
//!   the whole pod.
//! - `container.rs`: when a container's resource moves (bounds, `minChange`, the memory
//!   floor), its new request (`minAllowed`/`maxAllowed`), Guaranteed and `RequestsOnly`.
//! - [`limits`]: how a limit follows its request (`RequestsAndLimits`), and its cap.
//! - [`memory`]: what happens to a memory decrease.
//! - [`declined`]: every reason a change is declined ([`PodPlan::declined`]), and what is not
//!   a decline.
//! - [`approval`]: approval ids and the workload's pending approvals.
//! - [`admission`]: sizing a pod at its creation (the same rules, without `minChange` or the
//!   memory-decrease route: nothing runs yet).
//! - [`workload`]: which of a workload's planned resizes go now (restart pacing, Infeasible).
//! - [`boost`]: the startup CPU boost: given at creation, taken back once the pod has been Ready
//!   for its duration.
//! - [`gate`]: the memory gate's check of a person's approval annotation on a pod.
//! - [`memory_guard`]: the live memory guard: a container near its memory limit is raised
//!   before the kernel OOM-kills it.
//! - [`refused`]: a memory decrease the kubelet refused, and taking it back.
//! - [`guard`]: when the updater may act at all (a current recommendation, one owner per
//!   workload) and the re-check before each patch.
//! - [`usage`]: a memory decrease that restarts a container never goes below its usage now.
//! - [`hpa`]: which resources an HPA scales the workload on.
//! - [`resources`]: reading a pod's resources, QoS class and resize state.

pub mod admission;
pub mod approval;
pub mod boost;
mod container;
pub mod declined;
pub mod gate;
pub mod guard;
pub mod hpa;
pub mod limits;
pub mod memory;
pub mod memory_guard;
pub mod refused;
pub mod resources;
pub mod usage;
pub mod workload;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use tailor_crds::v1alpha1::{ContainerRecommendation, ResourceName, VerticalAutoscalerSpec};

use container::{Mode, plan_container};
pub use declined::{DeclineReason, Declined};
use memory::Approved;
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
    /// Now (Unix seconds): whether a startup boost is over.
    pub now: i64,
    /// Only take back startup boosts that are over, nothing else (`updateMode: Initial`).
    pub unboost_only: bool,
}

/// Why a whole pod is left alone. `Terminating`, `NotRunning`, `NotSynced` and `InProgress`
/// are waits; `BestEffort`, `QosChange` and `Invalid` are declines and also listed, per
/// container, in [`PodPlan::declined`].
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

/// Why one resource of one container is left as it is (or its limit held under the cap) when
/// nothing is refused: it is at the target, or close enough to it. Refusals are [`Declined`].
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
    /// Resources left as they are because nothing needs doing, with reasons.
    pub notes: Vec<Note>,
    /// Every change the recommendation asks for that is not made, or not in full, with the
    /// reason (see [`declined`]).
    pub declined: Vec<Declined>,
    /// Startup boosts given at creation (admission only).
    pub boosted: Vec<boost::Given>,
    /// The memory guard's raises, when the plan is the guard's (see [`memory_guard`]).
    pub guard: Vec<memory_guard::Raise>,
}

impl PodPlan {
    fn skipped(skip: Skip) -> Self {
        Self {
            skip: Some(skip),
            ..Self::default()
        }
    }

    fn decline(
        &mut self,
        container: &str,
        resource: Option<ResourceName>,
        reason: DeclineReason,
        message: impl Into<String>,
    ) {
        self.declined
            .push(Declined::new(container, resource, reason, message));
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

/// A pod the planner may resize, read.
struct Readable<'a> {
    spec: &'a PodSpec,
    current: Vec<ContainerResources>,
    init: Vec<ContainerResources>,
    qos: Qos,
}

/// The pod read for planning, or the plan that leaves it alone (a wait, or a decline).
fn readable(pod: &Pod) -> Result<Readable<'_>, Box<PodPlan>> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(Box::new(PodPlan::skipped(Skip::Terminating)));
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    if phase != "Running" {
        return Err(Box::new(PodPlan::skipped(Skip::NotRunning(phase))));
    }
    let resize = ResizeStatus::of(pod);
    if !resize.synced {
        return Err(Box::new(PodPlan::skipped(Skip::NotSynced)));
    }
    if resize.in_progress.is_some() {
        return Err(Box::new(PodPlan::skipped(Skip::InProgress)));
    }
    read_resources(pod)
}

/// The pod's resources and QoS class, or the plan that declines an unreadable one.
fn read_resources(pod: &Pod) -> Result<Readable<'_>, Box<PodPlan>> {
    let Some(spec) = pod.spec.as_ref() else {
        // Never from the API server (a pod always has a spec); nothing to name a container by.
        return Err(Box::new(PodPlan::skipped(Skip::Invalid("no spec".into()))));
    };
    let mut unreadable = Vec::new();
    let mut read = |c: &Container| {
        ContainerResources::read(c.resources.as_ref()).unwrap_or_else(|e| {
            unreadable.push(Declined::new(
                &c.name,
                Some(e.resource),
                DeclineReason::InvalidPodResources,
                format!(
                    "container {}: {}; the pod is not resized",
                    c.name, e.message
                ),
            ));
            ContainerResources::default()
        })
    };
    let current: Vec<ContainerResources> = spec.containers.iter().map(&mut read).collect();
    let init: Vec<ContainerResources> = spec.init_containers.iter().flatten().map(read).collect();
    if !unreadable.is_empty() {
        let what: Vec<&str> = unreadable.iter().map(|d| d.message.as_str()).collect();
        return Err(Box::new(PodPlan {
            skip: Some(Skip::Invalid(what.join("; "))),
            declined: unreadable,
            ..PodPlan::default()
        }));
    }
    let qos = resources::qos(current.iter().chain(&init));
    Ok(Readable {
        spec,
        current,
        init,
        qos,
    })
}

/// Plans one pod. Never fails: every reason to do nothing, or less, is in the plan.
pub fn plan_pod(input: &PodInput<'_>) -> PodPlan {
    let pod = match readable(input.pod) {
        Ok(pod) => pod,
        Err(plan) => return *plan,
    };
    plan_containers(input, Mode::Resize, &pod)
}

/// Plans every container of a readable pod, keeping its QoS class.
fn plan_containers(input: &PodInput<'_>, mode: Mode, pod: &Readable<'_>) -> PodPlan {
    if pod.qos == Qos::BestEffort {
        return best_effort(input, pod.spec);
    }
    let mut plan = PodPlan::default();
    let mut planned = pod.current.clone();
    let containers = pod.spec.containers.iter().zip(&pod.current);
    for ((container, cur), new) in containers.zip(planned.iter_mut()) {
        plan_container((input, mode), pod.qos, container, cur, new, &mut plan);
    }
    plan.declined
        .extend(declined::missing_containers(input, pod.spec));
    if !plan.changes.is_empty() && resources::qos(planned.iter().chain(&pod.init)) != pod.qos {
        return qos_change(plan, pod, &planned);
    }
    plan
}

/// A BestEffort pod: declined for each container that has a recommendation.
fn best_effort(input: &PodInput<'_>, spec: &PodSpec) -> PodPlan {
    let mut plan = PodPlan::skipped(Skip::BestEffort);
    for c in &spec.containers {
        if input
            .recommendation
            .iter()
            .any(|r| r.container_name == c.name)
        {
            plan.decline(
                &c.name,
                None,
                DeclineReason::BestEffort,
                "the pod is BestEffort (no requests or limits) and may not gain any; set requests in the pod template to have it sized",
            );
        }
    }
    plan
}

/// The resize would change the pod's QoS class: nothing is resized, and the containers that
/// would flip are named.
fn qos_change(plan: PodPlan, pod: &Readable<'_>, planned: &[ContainerResources]) -> PodPlan {
    let to = resources::qos(planned.iter().chain(&pod.init));
    let mut out = PodPlan {
        skip: Some(Skip::QosChange),
        notes: plan.notes,
        declined: plan.declined,
        ..PodPlan::default()
    };
    let containers = pod.spec.containers.iter().zip(&pod.current).zip(planned);
    let flipped: Vec<&str> = containers
        .filter(|((_, cur), new)| cur.guaranteed() != new.guaranteed())
        .map(|((c, _), _)| c.name.as_str())
        .collect();
    let named: Vec<&str> = if flipped.is_empty() {
        plan.changes.iter().map(|c| c.container.as_str()).collect()
    } else {
        flipped
    };
    for name in named {
        out.decline(
            name,
            None,
            DeclineReason::QosChange,
            format!(
                "the resize would make the {:?} pod {to:?} (requests equal to limits in every container or not), which the API server forbids; the pod is not resized",
                pod.qos
            ),
        );
    }
    out
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
