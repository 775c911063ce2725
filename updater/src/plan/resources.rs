//! A container's CPU and memory as the planner sees them: exact integers (millicores, bytes)
//! read from the pod spec and status, the pod's QoS class, and where a resize stands.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tailor_crds::quantity::{cpu_millis, memory_bytes};
use tailor_crds::v1alpha1::ResourceName;

/// CPU (millicores) and memory (bytes); `None` where the value is not set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Amounts {
    /// Millicores.
    pub cpu: Option<i64>,
    /// Bytes.
    pub memory: Option<i64>,
}

impl Amounts {
    /// The amount of `resource`.
    pub fn get(&self, resource: ResourceName) -> Option<i64> {
        match resource {
            ResourceName::Cpu => self.cpu,
            ResourceName::Memory => self.memory,
        }
    }

    /// Sets the amount of `resource`.
    pub fn set(&mut self, resource: ResourceName, value: Option<i64>) {
        match resource {
            ResourceName::Cpu => self.cpu = value,
            ResourceName::Memory => self.memory = value,
        }
    }

    /// Reads `cpu` and `memory` from a requests or limits map.
    pub fn from_map(map: Option<&BTreeMap<String, Quantity>>) -> Result<Self, String> {
        Self::read(map).map_err(|e| e.message)
    }

    /// Reads `cpu` and `memory` from a requests or limits map, naming the unreadable resource.
    pub fn read(map: Option<&BTreeMap<String, Quantity>>) -> Result<Self, Unreadable> {
        let Some(map) = map else {
            return Ok(Self::default());
        };
        let one = |resource: ResourceName| {
            let (key, parse): (&str, fn(&Quantity) -> _) = match resource {
                ResourceName::Cpu => ("cpu", cpu_millis),
                ResourceName::Memory => ("memory", memory_bytes),
            };
            map.get(key)
                .map(|q| {
                    parse(q).map_err(|e| Unreadable {
                        resource,
                        message: format!("{key} {:?}: {e}", q.0),
                    })
                })
                .transpose()
        };
        Ok(Self {
            cpu: one(ResourceName::Cpu)?,
            memory: one(ResourceName::Memory)?,
        })
    }
}

/// A request or limit that is not a readable quantity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unreadable {
    /// The resource.
    pub resource: ResourceName,
    /// What is wrong with it.
    pub message: String,
}

/// A container's requests and limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ContainerResources {
    /// Requests.
    pub requests: Amounts,
    /// Limits.
    pub limits: Amounts,
}

impl ContainerResources {
    /// Reads a `ResourceRequirements` (spec or status).
    pub fn of(r: Option<&ResourceRequirements>) -> Result<Self, String> {
        Self::read(r).map_err(|e| e.message)
    }

    /// Reads a `ResourceRequirements` (spec or status), naming the unreadable resource.
    pub fn read(r: Option<&ResourceRequirements>) -> Result<Self, Unreadable> {
        Ok(Self {
            requests: Amounts::read(r.and_then(|r| r.requests.as_ref()))?,
            limits: Amounts::read(r.and_then(|r| r.limits.as_ref()))?,
        })
    }

    /// Whether requests equal limits for both CPU and memory, all set (a Guaranteed container).
    pub fn guaranteed(&self) -> bool {
        [ResourceName::Cpu, ResourceName::Memory]
            .iter()
            .all(|&r| self.limits.get(r).is_some() && self.limits.get(r) == self.requests.get(r))
    }

    /// Whether any CPU or memory request or limit is set.
    pub fn any_set(&self) -> bool {
        self.requests != Amounts::default() || self.limits != Amounts::default()
    }
}

/// The pod's quality-of-service class, from its CPU and memory requests and limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qos {
    /// Every container has requests == limits for CPU and memory.
    Guaranteed,
    /// Some request or limit is set, and the pod is not Guaranteed.
    Burstable,
    /// No request or limit at all.
    BestEffort,
}

/// The QoS class of a pod whose containers (init containers included) have these resources.
pub fn qos<'a>(containers: impl IntoIterator<Item = &'a ContainerResources>) -> Qos {
    let mut all_guaranteed = true;
    let mut any = false;
    for c in containers {
        all_guaranteed &= c.guaranteed();
        any |= c.any_set();
    }
    match (any, all_guaranteed) {
        (false, _) => Qos::BestEffort,
        (true, true) => Qos::Guaranteed,
        (true, false) => Qos::Burstable,
    }
}

/// Whether changing `resource` restarts the container (its resizePolicy is `RestartContainer`).
/// Without a policy the default is `NotRequired`.
pub fn restarts_on(container: &Container, resource: ResourceName) -> bool {
    let name = match resource {
        ResourceName::Cpu => "cpu",
        ResourceName::Memory => "memory",
    };
    container.resize_policy.as_ref().is_some_and(|ps| {
        ps.iter()
            .any(|p| p.resource_name == name && p.restart_policy == "RestartContainer")
    })
}

/// A pod resize condition (`PodResizePending` or `PodResizeInProgress`) as the kubelet wrote it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResizeCondition {
    /// `Deferred`, `Infeasible`, `Error` or empty.
    pub reason: String,
    /// The kubelet's message.
    pub message: String,
    /// When the condition became true, in Unix seconds, when the kubelet says.
    pub since: Option<i64>,
}

/// Where a pod's resize stands, from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResizeStatus {
    /// `PodResizePending`, when present.
    pub pending: Option<ResizeCondition>,
    /// `PodResizeInProgress`, when present.
    pub in_progress: Option<ResizeCondition>,
    /// The kubelet has observed the pod's current generation.
    pub synced: bool,
    /// Every container's status `resources` equal its spec resources.
    pub actuated: bool,
}

impl ResizeStatus {
    /// Reads the resize state of a pod.
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.as_ref();
        let condition = |t: &str| {
            status
                .and_then(|s| s.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|c| c.type_ == t && c.status == "True"))
                .map(|c| ResizeCondition {
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                    since: c.last_transition_time.as_ref().map(|t| t.0.as_second()),
                })
        };
        let generation = pod.metadata.generation.unwrap_or(1);
        let synced = status
            .and_then(|s| s.observed_generation)
            .is_none_or(|g| g >= generation);
        let actuated = pod.spec.as_ref().is_some_and(|spec| {
            spec.containers.iter().all(|c| {
                let applied = status
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|ss| ss.iter().find(|s| s.name == c.name))
                    .map(|s| ContainerResources::of(s.resources.as_ref()));
                let desired = ContainerResources::of(c.resources.as_ref());
                match (applied, desired) {
                    (Some(Ok(a)), Ok(d)) => a == d,
                    _ => false,
                }
            })
        });
        Self {
            pending: condition("PodResizePending"),
            in_progress: condition("PodResizeInProgress"),
            synced,
            actuated,
        }
    }

    /// Nothing is pending or in progress and the runtime runs what the spec asks.
    pub fn complete(&self) -> bool {
        self.pending.is_none() && self.in_progress.is_none() && self.synced && self.actuated
    }

    /// The kubelet declared the resize infeasible.
    pub fn infeasible(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|c| c.reason == "Infeasible")
    }

    /// The kubelet deferred the resize.
    pub fn deferred(&self) -> bool {
        self.pending
            .as_ref()
            .is_some_and(|c| c.reason == "Deferred")
    }

    /// Actuation failed (`PodResizeInProgress` with reason `Error`).
    pub fn error(&self) -> Option<&ResizeCondition> {
        self.in_progress.as_ref().filter(|c| c.reason == "Error")
    }

    /// The state of an unfinished resize, for metrics: `infeasible`, `deferred`, `error` or
    /// `in_progress`, with when the kubelet set the condition. `None` when nothing is under way.
    pub fn state(&self) -> Option<(&'static str, Option<i64>)> {
        if let Some(p) = &self.pending {
            let state = if self.infeasible() {
                "infeasible"
            } else {
                "deferred"
            };
            return Some((state, p.since));
        }
        let c = self.in_progress.as_ref()?;
        let state = if c.reason == "Error" {
            "error"
        } else {
            "in_progress"
        };
        Some((state, c.since))
    }
}

/// Whether the pod's `Ready` condition is True.
pub fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether the pod has ended for good: phase `Failed` (evicted pods among them) or
/// `Succeeded`. Such a pod is never Ready again and never resized.
pub fn terminal(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Failed" || p == "Succeeded")
}

/// The sum of the containers' restart counts.
pub fn restarts(pod: &Pod) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|ss| {
            ss.iter()
                .fold(0i64, |n, s| n.saturating_add(i64::from(s.restart_count)))
        })
        .unwrap_or(0)
}
