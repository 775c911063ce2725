//! `tailor.dev/v1alpha1`: the `ResizeState` custom resource, the updater's own record of one
//! VerticalAutoscaler.
//!
//! The updater applies `status.recommendation` of a VerticalAutoscaler, so whoever may patch
//! `verticalautoscalers/status` drives it. That verb belongs to the recommender alone; the
//! updater writes what it has to say (pending approvals, the last resizes, its conditions) here
//! instead: one ResizeState per VerticalAutoscaler, with the same name and namespace, owned by
//! it (garbage-collected with it). The recommender mirrors it into the VerticalAutoscaler's
//! status, where `kubectl describe`, dashboards and kube-state-metrics read it.
//!
//! A ResizeState holds bookkeeping only: writing one cannot make the updater resize to anything
//! but a recommendation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::v1alpha1::{MemoryGuardRaise, PendingApproval, ResizeRecord, condition};

/// The reason of the `ConfigUnsupported` condition the updater writes for an HPA conflict (the
/// recommender writes `ConfigUnsupported` with other reasons).
pub const HPA_CONFLICT_REASON: &str = "HpaConflict";

/// The condition types only the updater writes.
pub const UPDATER_CONDITIONS: &[&str] = &[
    condition::RESIZE_DEFERRED,
    condition::RESIZE_INFEASIBLE,
    condition::AWAITING_APPROVAL,
    condition::RECOMMENDATION_STALE,
    condition::AUTOSCALER_CONFLICT,
];

/// Whether the updater writes this condition: one of [`UPDATER_CONDITIONS`], or
/// `ConfigUnsupported` for an HPA conflict.
pub fn updater_condition(c: &Condition) -> bool {
    UPDATER_CONDITIONS.contains(&c.type_.as_str())
        || (c.type_ == condition::CONFIG_UNSUPPORTED && c.reason == HPA_CONFLICT_REASON)
}

/// The updater's record of one VerticalAutoscaler: what it holds for approval, what it resized,
/// and its conditions. Written by the updater only (server-side apply, field manager
/// `tailor-updater`); mirrored by the recommender into the VerticalAutoscaler's status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "tailor.dev",
    version = "v1alpha1",
    kind = "ResizeState",
    plural = "resizestates",
    doc = "A ResizeState is the updater's record of the VerticalAutoscaler of the same name: memory decreases held for approval, the last resizes and the updater's conditions. The recommender mirrors it into the VerticalAutoscaler's status.",
    category = "tailor",
    namespaced,
    derive = "PartialEq",
    derive = "Default",
    printcolumn(
        name = "Awaiting",
        type_ = "string",
        json_path = ".spec.conditions[?(@.type==\"AwaitingApproval\")].status",
        description = "A memory decrease awaits approval"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ResizeStateSpec {
    /// The uid of the VerticalAutoscaler this record belongs to. A record of another uid (left
    /// by an object deleted and created again under the same name) is ignored.
    #[schemars(length(min = 1))]
    pub vertical_autoscaler_uid: String,

    /// Memory decreases held for a person's approval (the VerticalAutoscaler's
    /// `status.pendingApprovals`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["containerName".into()]))]
    pub pending_approvals: Vec<PendingApproval>,

    /// The updater's conditions: `ResizeDeferred`, `ResizeInfeasible`, `AwaitingApproval`,
    /// `RecommendationStale`, `AutoscalerConflict`, `ConfigUnsupported` (reason `HpaConflict`).
    /// Their `observedGeneration` is the VerticalAutoscaler's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The most recent resizes, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub last_resizes: Vec<ResizeRecord>,

    /// The memory guard's most recent raises, newest first (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub memory_guard_raises: Vec<MemoryGuardRaise>,
}
