//! Why the planner does not do what a recommendation asks. Every such reason leaves the planner
//! as a [`Declined`] in [`PodPlan::declined`](super::PodPlan), so the actuator can surface it (the
//! reason's [`DeclineReason::as_str`] is the Event reason). This file is the list.
//!
//! Declines (the recommendation asks for a change that is not made, or not in full):
//!
//! | reason | when | what is left as it is |
//! | --- | --- | --- |
//! | `InvalidPodResources` | a request or limit in the pod is not a readable quantity | the pod |
//! | `BestEffort` | the pod has no request or limit (it may not gain any) | the pod |
//! | `QosChange` | the resize would change the pod's QoS class | the pod |
//! | `NoRecommendation` | a sized container has no recommendation | the container |
//! | `RecommendationForMissingContainer` | the recommendation names a container the pod does not have | nothing to do |
//! | `PolicyForMissingContainer` | `resourcePolicy.containerPolicies` names a container the pod does not have | nothing to do |
//! | `InvalidRecommendation` | a target, bound, floor or `minAllowed`/`maxAllowed` is unreadable | the resource |
//! | `MissingTarget` | the recommendation has no target for a sized resource | the resource |
//! | `HpaConflict` | an HPA scales the workload on the resource | the resource |
//! | `GuaranteedRequestsOnly` | a Guaranteed pod under `controlledValues: RequestsOnly` | the resource |
//! | `RequestCappedAtLimit` | `RequestsOnly`: the target is above the limit; the request stops at the limit | the rest of the increase |
//! | `LimitBelowFloor` | `RequestsOnly`: the memory limit, which stays, is below the memory floor | the limit |
//! | `MemoryDecreaseNever` | a memory decrease under `memoryDecrease: Never` | the container's memory |
//! | `ResizePolicyNotRequired` | a memory limit decrease under `memoryDecrease: RestartContainer` for a container whose memory `resizePolicy` is `NotRequired` | the container's memory |
//!
//! Not declines (nothing is refused; nothing to surface):
//! - the request is at the target, or inside the bounds and closer to it than `minChange`
//!   (recorded as a [`Note`](super::Note));
//! - the container's policy is `mode: Off`, or the resource is not in `controlledResources`;
//! - a derived limit held under its cap (see `limits.rs`; recorded as a note);
//! - the pod is being deleted, is not Running, its last resize is not observed yet, or one is in
//!   progress: waits, reported as [`Skip`](super::Skip);
//! - a memory decrease held for approval: [`PodPlan::held`](super::PodPlan).

use k8s_openapi::api::core::v1::PodSpec;
use tailor_crds::v1alpha1::ResourceName;

use super::PodInput;

/// Why the planner declines (part of) a change. The names are stable: they are Event reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeclineReason {
    /// A request or limit in the pod is not a readable quantity; the pod is left alone.
    InvalidPodResources,
    /// The pod is BestEffort: it may not gain requests or limits.
    BestEffort,
    /// The resize would change the pod's QoS class (the API server forbids it).
    QosChange,
    /// A sized container has no recommendation.
    NoRecommendation,
    /// The recommendation names a container the pod does not have.
    RecommendationForMissingContainer,
    /// A `containerPolicies` entry names a container the pod does not have.
    PolicyForMissingContainer,
    /// A quantity in the recommendation or the container policy is unreadable.
    InvalidRecommendation,
    /// The recommendation has no target for a sized resource.
    MissingTarget,
    /// An HPA scales the workload on this resource.
    HpaConflict,
    /// A Guaranteed pod under `RequestsOnly`: requests cannot move without limits.
    GuaranteedRequestsOnly,
    /// `RequestsOnly`: the request stops at the limit, below the target.
    RequestCappedAtLimit,
    /// `RequestsOnly`: the memory limit (which stays) is below the memory floor.
    LimitBelowFloor,
    /// `memoryDecrease: Never` and the memory would go down.
    MemoryDecreaseNever,
    /// `memoryDecrease: RestartContainer`, but the container's memory `resizePolicy` is
    /// `NotRequired` (immutable after creation).
    ResizePolicyNotRequired,
}

impl DeclineReason {
    /// Every reason, in the order of the table above.
    pub const ALL: [Self; 14] = [
        Self::InvalidPodResources,
        Self::BestEffort,
        Self::QosChange,
        Self::NoRecommendation,
        Self::RecommendationForMissingContainer,
        Self::PolicyForMissingContainer,
        Self::InvalidRecommendation,
        Self::MissingTarget,
        Self::HpaConflict,
        Self::GuaranteedRequestsOnly,
        Self::RequestCappedAtLimit,
        Self::LimitBelowFloor,
        Self::MemoryDecreaseNever,
        Self::ResizePolicyNotRequired,
    ];

    /// The stable CamelCase name (an Event reason).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPodResources => "InvalidPodResources",
            Self::BestEffort => "BestEffort",
            Self::QosChange => "QosChange",
            Self::NoRecommendation => "NoRecommendation",
            Self::RecommendationForMissingContainer => "RecommendationForMissingContainer",
            Self::PolicyForMissingContainer => "PolicyForMissingContainer",
            Self::InvalidRecommendation => "InvalidRecommendation",
            Self::MissingTarget => "MissingTarget",
            Self::HpaConflict => "HpaConflict",
            Self::GuaranteedRequestsOnly => "GuaranteedRequestsOnly",
            Self::RequestCappedAtLimit => "RequestCappedAtLimit",
            Self::LimitBelowFloor => "LimitBelowFloor",
            Self::MemoryDecreaseNever => "MemoryDecreaseNever",
            Self::ResizePolicyNotRequired => "ResizePolicyNotRequired",
        }
    }
}

impl std::fmt::Display for DeclineReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One declined change: which container (and resource), why, and a sentence for a person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declined {
    /// The container (for the `...ForMissingContainer` reasons: the name given).
    pub container: String,
    /// The resource, when the decline is about one.
    pub resource: Option<ResourceName>,
    /// Why.
    pub reason: DeclineReason,
    /// What is left as it is and why, for an Event message.
    pub message: String,
}

impl Declined {
    /// A decline of `container`'s `resource` (or the whole container).
    pub fn new(
        container: &str,
        resource: Option<ResourceName>,
        reason: DeclineReason,
        message: impl Into<String>,
    ) -> Self {
        Self {
            container: container.to_owned(),
            resource,
            reason,
            message: message.into(),
        }
    }
}

/// The containers named by the recommendation or the resource policy that the pod does not
/// have. Init containers are not resized, so a name that is one of them counts as missing.
pub(super) fn missing_containers(input: &PodInput<'_>, spec: &PodSpec) -> Vec<Declined> {
    let has = |name: &str| spec.containers.iter().any(|c| c.name == name);
    let init = |name: &str| {
        spec.init_containers
            .iter()
            .flatten()
            .any(|c| c.name == name)
    };
    let why = |name: &str| {
        if init(name) {
            format!("{name} is an init container of this pod; init containers are not resized")
        } else {
            format!("this pod has no container {name}")
        }
    };
    let mut out = Vec::new();
    for r in input.recommendation {
        let name = r.container_name.as_str();
        if !has(name) {
            out.push(Declined::new(
                name,
                None,
                DeclineReason::RecommendationForMissingContainer,
                format!(
                    "the recommendation is for container {name}, but {}",
                    why(name)
                ),
            ));
        }
    }
    for p in &input.spec.resource_policy.container_policies {
        let name = p.container_name.as_str();
        if name != "*" && !has(name) {
            out.push(Declined::new(
                name,
                None,
                DeclineReason::PolicyForMissingContainer,
                format!(
                    "resourcePolicy.containerPolicies names container {name}, but {}",
                    why(name)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_camel_case_and_match_the_variants() {
        let names: std::collections::BTreeSet<&str> =
            DeclineReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), DeclineReason::ALL.len());
        for r in DeclineReason::ALL {
            let name = r.as_str();
            assert_eq!(format!("{r:?}"), name);
            assert!(
                name.chars().next().is_some_and(char::is_uppercase),
                "{name}"
            );
            assert!(name.chars().all(char::is_alphanumeric), "{name}");
        }
    }
}
