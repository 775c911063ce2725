//! The live memory guard's part of the API: `spec.updatePolicy.memoryGuard` (the policy) and
//! the record of each raise (a ResizeState's `memoryGuardRaises`, mirrored into the
//! VerticalAutoscaler's status), which the planner and the recommender read as evidence.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The live memory guard (`InPlace` only): when a container's working set comes within
/// `threshold` of its memory limit, the updater raises the limit live, to the working set x
/// (1 + `step`), before the kernel would OOM-kill the container, without waiting for the
/// recommender. It never lowers anything.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryGuard {
    /// Whether the guard watches this workload's containers (`InPlace` only). Default true.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The share of its memory limit a container's working set must reach for a raise.
    #[serde(default = "default_threshold")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.5 && self <= 0.99").message("memoryGuard.threshold must be a fraction between 0.5 and 0.99 (0.9 is 90% of the limit)"))]
    pub threshold: f64,
    /// How far above the working set the limit is raised: to working set x (1 + step). The
    /// default, 0.5, is the recommender's default `maxGrowthMargin`: the most room it gives a
    /// workload that reached a new high.
    #[serde(default = "default_step")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.05 && self <= 4.0").message("memoryGuard.step must be a fraction between 0.05 and 4 (0.5 raises the limit to 150% of the working set)"))]
    pub step: f64,
    /// The least time between two raises of one pod.
    #[serde(default = "default_min_interval_seconds")]
    #[x_kube(validation = kube::core::Rule::new("self >= 5").message("memoryGuard.minIntervalSeconds must be at least 5"))]
    pub min_interval_seconds: i64,
    /// Whether the guard may raise a container whose memory `resizePolicy` is
    /// `RestartContainer` (the raise restarts it). Default false: such a container is reported
    /// (Event `MemoryGuardNeedsRestart`) and left alone.
    #[serde(default)]
    pub allow_restart: bool,
}

impl Default for MemoryGuard {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            threshold: default_threshold(),
            step: default_step(),
            min_interval_seconds: default_min_interval_seconds(),
            allow_restart: false,
        }
    }
}

fn default_enabled() -> bool {
    true
}

fn default_threshold() -> f64 {
    0.9
}

fn default_step() -> f64 {
    0.5
}

fn default_min_interval_seconds() -> i64 {
    60
}

/// One raise by the memory guard.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryGuardRaise {
    /// The pod.
    pub pod: String,
    /// The pod's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// The container.
    pub container_name: String,
    /// When the raise was sent.
    pub time: Time,
    /// The container's working set that prompted it.
    #[schemars(schema_with = "crate::schema::quantity")]
    pub usage: Quantity,
    /// The memory limit before.
    #[schemars(schema_with = "crate::schema::quantity")]
    pub from: Quantity,
    /// The memory limit after.
    #[schemars(schema_with = "crate::schema::quantity")]
    pub to: Quantity,
}
