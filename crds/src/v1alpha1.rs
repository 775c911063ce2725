//! `tailor.dev/v1alpha1`: the `VerticalAutoscaler` custom resource.
//!
//! The shape follows upstream `autoscaling.k8s.io/v1 VerticalPodAutoscaler` where the two
//! overlap (`targetRef`, `updatePolicy.updateMode`, `resourcePolicy.containerPolicies[]` with
//! `minAllowed`, `maxAllowed`, `controlledResources`, `controlledValues`, and
//! `status.recommendation.containerRecommendations[]` with `target`, `lowerBound`,
//! `upperBound`, `uncappedTarget`), so VPA users recognise every field. tailor's additions
//! (memory-decrease routing, the recommender policy, the memory floor and its evidence,
//! pending approvals) are additive.
//!
//! Validation lives in the schema, so the API server rejects a malformed object with a message
//! naming the problem: enums, patterns and CEL rules (`x-kubernetes-validations`).

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::memory_guard::{MemoryGuard, MemoryGuardRaise};

/// The API group of every tailor resource.
pub const GROUP: &str = "tailor.dev";
/// The annotation that approves exactly one pending memory decrease, by its id.
pub const APPROVE_MEMORY_DECREASE_ANNOTATION: &str = "tailor.dev/approve-memory-decrease";

/// Workload kinds a `targetRef` may name, with their API versions.
pub const SUPPORTED_TARGETS: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "ReplicaSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
];

/// Condition types written to `status.conditions`.
pub mod condition {
    /// A recommendation is present in `status.recommendation`.
    pub const RECOMMENDATION_PROVIDED: &str = "RecommendationProvided";
    /// The recommendation rests on little history; its bounds are wide.
    pub const LOW_CONFIDENCE: &str = "LowConfidence";
    /// `targetRef` resolves to no running pod.
    pub const NO_PODS_MATCHED: &str = "NoPodsMatched";
    /// The usage history could not be read (Prometheus down, answering garbage, ...).
    pub const HISTORY_UNAVAILABLE: &str = "HistoryUnavailable";
    /// The object asks for something tailor will not do (unsupported target, HPA conflict, ...).
    pub const CONFIG_UNSUPPORTED: &str = "ConfigUnsupported";
    /// The kubelet deferred a resize (it does not fit the node now); it is retried.
    pub const RESIZE_DEFERRED: &str = "ResizeDeferred";
    /// The kubelet declared a resize infeasible; it is not retried for the same target.
    pub const RESIZE_INFEASIBLE: &str = "ResizeInfeasible";
    /// A memory decrease waits in `status.pendingApprovals` for a person.
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    /// The recommendation was computed for an earlier spec or another target; the updater
    /// does not act on it until the recommender writes a current one. Written only while true.
    pub const RECOMMENDATION_STALE: &str = "RecommendationStale";
    /// Another autoscaler (an older VerticalAutoscaler, or an upstream VerticalPodAutoscaler
    /// in an updating mode) already sizes this workload's pods; this one does not act.
    /// Written only while true.
    pub const AUTOSCALER_CONFLICT: &str = "AutoscalerConflict";

    /// Every condition type, in the order they are documented.
    pub const ALL: &[&str] = &[
        RECOMMENDATION_PROVIDED,
        LOW_CONFIDENCE,
        NO_PODS_MATCHED,
        HISTORY_UNAVAILABLE,
        CONFIG_UNSUPPORTED,
        RESIZE_DEFERRED,
        RESIZE_INFEASIBLE,
        AWAITING_APPROVAL,
        RECOMMENDATION_STALE,
        AUTOSCALER_CONFLICT,
    ];
}

const TARGET_KIND_RULE: &str = "(self.apiVersion == 'apps/v1' && self.kind in ['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet']) || (self.apiVersion == 'batch/v1' && self.kind in ['Job', 'CronJob']) || (self.apiVersion.contains('.') && self.apiVersion.contains('/'))";
const TARGET_KIND_MESSAGE: &str = "targetRef must name a Deployment, StatefulSet, DaemonSet or ReplicaSet (apps/v1), or a Job or CronJob (batch/v1); custom resources are accepted as group/version and reported ConfigUnsupported when tailor cannot resolve their pods";

/// A `VerticalAutoscaler` sizes the CPU and memory of one workload's containers.
///
/// The recommender writes `status.recommendation` for every object; the updater sizes new pods
/// at creation when `updatePolicy.updateMode` is `Initial` or `InPlace`, and resizes running
/// pods in place only when it is `InPlace`.
// Each `printcolumn(...)` repeats `type_ = "string"`; clippy reads that as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "tailor.dev",
    version = "v1alpha1",
    kind = "VerticalAutoscaler",
    plural = "verticalautoscalers",
    shortname = "va",
    doc = "A VerticalAutoscaler sizes the CPU and memory of one workload's containers from their usage history, sizes new pods at creation (updateMode Initial or InPlace) and resizes running pods in place (InPlace).",
    category = "tailor",
    namespaced,
    status = "VerticalAutoscalerStatus",
    derive = "PartialEq",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.updatePolicy.updateMode"
    ),
    printcolumn(
        name = "CPU",
        type_ = "string",
        json_path = ".status.recommendation.containerRecommendations[0].target.cpu",
        description = "CPU target of the first container"
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".status.recommendation.containerRecommendations[0].target.memory",
        description = "Memory target of the first container"
    ),
    printcolumn(
        name = "Provided",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"RecommendationProvided\")].status"
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.pendingApprovalCount",
        description = "Memory decreases awaiting approval"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct VerticalAutoscalerSpec {
    /// The workload whose pods are sized.
    pub target_ref: TargetRef,

    /// Whether and how recommendations are applied to running pods.
    #[serde(default)]
    pub update_policy: UpdatePolicy,

    /// How recommendations are computed from usage history.
    #[serde(default)]
    pub recommender_policy: RecommenderPolicy,

    /// Per-container bounds and switches.
    #[serde(default)]
    pub resource_policy: ResourcePolicy,
}

/// A reference to the workload controller, as in `autoscaling/v1 CrossVersionObjectReference`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(TARGET_KIND_RULE).message(TARGET_KIND_MESSAGE))]
pub struct TargetRef {
    /// API version of the referent, e.g. `apps/v1`.
    #[schemars(length(min = 1))]
    pub api_version: String,
    /// Kind of the referent, e.g. `Deployment`.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Name of the referent, in the VerticalAutoscaler's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// `Off` only recommends; `Initial` sizes pods when they are created; `InPlace` does that and
/// resizes running pods too. None of them ever evicts a pod.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum UpdateMode {
    /// Recommend only: status and metrics are written, pods are never touched. The default, so
    /// that nothing changes until someone has reviewed the recommendations.
    #[default]
    Off,
    /// Size pods when they are created (the admission webhook), never resize a running pod.
    Initial,
    /// Size pods when they are created, and resize running pods through the `resize`
    /// subresource.
    InPlace,
}

impl UpdateMode {
    /// Whether pods are sized at creation (`Initial` and `InPlace`).
    pub fn sizes_new_pods(self) -> bool {
        matches!(self, Self::Initial | Self::InPlace)
    }
}

/// What the updater does with a recommendation below the current memory limit.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum MemoryDecrease {
    /// Hold the decrease in `status.pendingApprovals` until a person approves it.
    #[default]
    ManualApproval,
    /// Apply it by restarting the container, only where the container's memory
    /// `resizePolicy` is `RestartContainer`.
    RestartContainer,
    /// Never lower memory.
    Never,
}

/// What the updater does with a resource that a HorizontalPodAutoscaler also scales on.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HpaConflict {
    /// Leave that resource alone and report `ConfigUnsupported`.
    #[default]
    Skip,
    /// Resize it anyway (the HPA's utilization target moves with every resize).
    Resize,
}

/// Whether and how recommendations are applied.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpdatePolicy {
    /// `Off` (recommend only, the default), `Initial` (size pods when they are created) or
    /// `InPlace` (size them when they are created, and resize running pods).
    #[serde(default)]
    pub update_mode: UpdateMode,

    /// How memory decreases are applied: `ManualApproval` (default), `RestartContainer` or `Never`.
    #[serde(default)]
    pub memory_decrease: MemoryDecrease,

    /// Hysteresis: relative differences between the current and recommended values below these
    /// are left alone.
    #[serde(default)]
    pub min_change: MinChange,

    /// Container restarts caused by resizes that may be under way at once in this workload; the
    /// next one starts only after the last restarted pod is Ready.
    #[serde(default = "default_max_concurrent_restarts")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1").message("maxConcurrentRestarts must be at least 1"))]
    pub max_concurrent_restarts: i32,

    /// `Skip` (default): a resource a HorizontalPodAutoscaler scales this workload on is not
    /// resized. `Resize`: resize it anyway.
    #[serde(default)]
    pub hpa_conflict: HpaConflict,

    /// The live memory guard (`InPlace` only; on by default): raises a container's memory
    /// limit live when its working set nears it.
    #[serde(default)]
    pub memory_guard: MemoryGuard,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            update_mode: UpdateMode::default(),
            memory_decrease: MemoryDecrease::default(),
            min_change: MinChange::default(),
            max_concurrent_restarts: default_max_concurrent_restarts(),
            hpa_conflict: HpaConflict::default(),
            memory_guard: MemoryGuard::default(),
        }
    }
}

fn default_max_concurrent_restarts() -> i32 {
    1
}

/// Relative change thresholds, as fractions (0.1 is 10%).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MinChange {
    /// Smallest relative CPU change acted upon.
    #[serde(default = "default_min_change")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.0 && self <= 10.0").message("minChange.cpu must be a fraction between 0 and 10 (0.1 is 10%)"))]
    pub cpu: f64,
    /// Smallest relative memory change acted upon.
    #[serde(default = "default_min_change")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.0 && self <= 10.0").message("minChange.memory must be a fraction between 0 and 10 (0.1 is 10%)"))]
    pub memory: f64,
}

impl Default for MinChange {
    fn default() -> Self {
        Self {
            cpu: default_min_change(),
            memory: default_min_change(),
        }
    }
}

fn default_min_change() -> f64 {
    0.1
}

/// How recommendations are computed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecommenderPolicy {
    /// How far back usage history is read, as a Prometheus duration (`14d`, `36h`, `2w`).
    /// Default 14d: a weekly peak is seen twice before it can leave the window.
    #[serde(default = "default_history_window")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h|d|w|y))+$"))]
    pub history_window: String,

    /// CPU target = percentile of per-sample usage x (1 + margin).
    #[serde(default)]
    pub cpu: CpuPolicy,

    /// Memory target = max(percentile x (1 + margin), peak x (1 + peak margin), heap hint, OOM
    /// bump); the peak margin is peakMargin, or the workload's largest jump to a new high in the
    /// window, up to maxGrowthMargin.
    #[serde(default)]
    pub memory: MemoryPolicy,

    /// After an OOM kill the memory target is at least the limit at the kill x ratio, and at
    /// least minBump above it.
    #[serde(default)]
    pub oom_bump: OomBump,
}

impl Default for RecommenderPolicy {
    fn default() -> Self {
        Self {
            history_window: default_history_window(),
            cpu: CpuPolicy::default(),
            memory: MemoryPolicy::default(),
            oom_bump: OomBump::default(),
        }
    }
}

fn default_history_window() -> String {
    "14d".to_owned()
}

/// CPU percentile and safety margin.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuPolicy {
    /// Percentile of usage samples, in (0, 1]. Default 0.9.
    #[serde(default = "default_cpu_percentile")]
    #[x_kube(validation = kube::core::Rule::new("self > 0.0 && self <= 1.0").message("cpu.percentile must be in (0, 1], e.g. 0.9 for p90"))]
    pub percentile: f64,
    /// Fraction added on top of the percentile, >= 0. Default 0.15.
    #[serde(default = "default_margin")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.0").message("cpu.margin must be >= 0"))]
    pub margin: f64,
}

impl Default for CpuPolicy {
    fn default() -> Self {
        Self {
            percentile: default_cpu_percentile(),
            margin: default_margin(),
        }
    }
}

fn default_cpu_percentile() -> f64 {
    0.9
}

fn default_margin() -> f64 {
    0.15
}

/// Memory percentile, margins over it and over the observed peak.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryPolicy {
    /// Percentile of working-set samples, in (0, 1]. Default 0.95.
    #[serde(default = "default_memory_percentile")]
    #[x_kube(validation = kube::core::Rule::new("self > 0.0 && self <= 1.0").message("memory.percentile must be in (0, 1], e.g. 0.95 for p95"))]
    pub percentile: f64,
    /// Fraction added on top of the percentile, >= 0. Default 0.15.
    #[serde(default = "default_margin")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.0").message("memory.margin must be >= 0"))]
    pub margin: f64,
    /// Fraction added on top of the observed peak, >= 0; the result is the memory floor.
    /// Default 0.15.
    #[serde(default = "default_peak_margin")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.0").message("memory.peakMargin must be >= 0"))]
    pub peak_margin: f64,
    /// The most the margin over the peak grows to after the workload jumped to a new high: a
    /// workload whose hourly peak once rose 30% above everything before it in the window gets
    /// a 30% margin. Jumps in the window's first day are not counted. 0 turns it off.
    /// Default 0.5.
    #[serde(default = "default_max_growth_margin")]
    #[x_kube(validation = kube::core::Rule::new("self >= 0.0 && self <= 10.0").message("memory.maxGrowthMargin must be between 0 and 10"))]
    pub max_growth_margin: f64,
}

impl Default for MemoryPolicy {
    fn default() -> Self {
        Self {
            percentile: default_memory_percentile(),
            margin: default_margin(),
            peak_margin: default_peak_margin(),
            max_growth_margin: default_max_growth_margin(),
        }
    }
}

fn default_memory_percentile() -> f64 {
    0.95
}

fn default_peak_margin() -> f64 {
    0.15
}

fn default_max_growth_margin() -> f64 {
    0.5
}

/// The memory bump after an OOM kill, as in upstream VPA.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OomBump {
    /// Multiplier applied to the memory limit at the kill, >= 1. Default 1.2.
    #[serde(default = "default_oom_ratio")]
    #[x_kube(validation = kube::core::Rule::new("self >= 1.0").message("oomBump.ratio must be >= 1"))]
    pub ratio: f64,
    /// Smallest absolute bump over the limit at the kill. Default 100Mi.
    #[serde(default = "default_oom_min_bump")]
    #[schemars(schema_with = "crate::schema::quantity")]
    pub min_bump: Option<Quantity>,
}

impl Default for OomBump {
    fn default() -> Self {
        Self {
            ratio: default_oom_ratio(),
            min_bump: default_oom_min_bump(),
        }
    }
}

fn default_oom_ratio() -> f64 {
    1.2
}

fn default_oom_min_bump() -> Option<Quantity> {
    Some(Quantity("100Mi".to_owned()))
}

/// Per-container policies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicy {
    /// One entry per container name; `*` applies to containers without an entry of their own.
    /// Container names must be unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["containerName".into()]))]
    #[x_kube(validation = kube::core::Rule::new("self.all(p, self.exists_one(q, q.containerName == p.containerName))").message("containerPolicies must not name the same container twice"))]
    pub container_policies: Vec<ContainerPolicy>,
}

/// Whether tailor sizes a container.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ContainerMode {
    /// Recommend for and resize this container.
    #[default]
    Auto,
    /// Neither recommend for nor resize this container.
    Off,
}

/// A resource tailor can size.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[serde(rename_all = "lowercase")]
pub enum ResourceName {
    /// CPU, in cores.
    Cpu,
    /// Memory, in bytes.
    Memory,
}

/// Which values of a container's resources tailor changes.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ControlledValues {
    /// Requests, and limits in proportion to them (the ratio limit/request is kept).
    #[default]
    RequestsAndLimits,
    /// Requests only; limits stay as they are.
    RequestsOnly,
}

/// Policy for one container (or `*`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!has(self.minAllowed) || !has(self.maxAllowed) || !has(self.minAllowed.cpu) || !has(self.maxAllowed.cpu) || quantity(string(self.minAllowed.cpu)).compareTo(quantity(string(self.maxAllowed.cpu))) <= 0").message("minAllowed.cpu must not exceed maxAllowed.cpu"))]
#[x_kube(validation = kube::core::Rule::new("!has(self.minAllowed) || !has(self.maxAllowed) || !has(self.minAllowed.memory) || !has(self.maxAllowed.memory) || quantity(string(self.minAllowed.memory)).compareTo(quantity(string(self.maxAllowed.memory))) <= 0").message("minAllowed.memory must not exceed maxAllowed.memory"))]
pub struct ContainerPolicy {
    /// The container's name, or `*` for every container without its own entry.
    #[schemars(length(min = 1, max = 253))]
    pub container_name: String,

    /// `Auto` (default) or `Off` (neither recommended for nor resized).
    #[serde(default)]
    pub mode: ContainerMode,

    /// Recommendations are never below these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_allowed: Option<Resources>,

    /// Recommendations are never above these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allowed: Option<Resources>,

    /// The resources tailor sizes. Default: cpu and memory.
    #[serde(default = "default_controlled_resources")]
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub controlled_resources: Vec<ResourceName>,

    /// `RequestsAndLimits` (default): limits move in proportion to requests.
    /// `RequestsOnly`: limits are left as they are.
    #[serde(default)]
    pub controlled_values: ControlledValues,

    /// Where the memory floor learns the process's heap ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap: Option<HeapPolicy>,

    /// More CPU while the container starts: given at creation, taken back live (no restart)
    /// once the pod has been Ready for the boost's duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_boost: Option<StartupBoost>,
}

/// A boost at startup, per resource (CPU only).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StartupBoost {
    /// The CPU boost.
    pub cpu: CpuBoost,
}

/// How much CPU a starting container gets, and for how long.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.factor) != has(self.value)").message("startupBoost.cpu needs exactly one of factor and value"))]
pub struct CpuBoost {
    /// The CPU target times this (above 1, at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = kube::core::Rule::new("self > 1.0 && self <= 100.0").message("startupBoost.cpu.factor must be above 1 and at most 100"))]
    pub factor: Option<f64>,
    /// This much CPU (when above the target; otherwise the target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::quantity")]
    pub value: Option<Quantity>,
    /// How long the boost lasts once the pod is Ready, as a duration (`30s`, `5m`).
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub duration: String,
}

impl ContainerPolicy {
    /// A policy for `container_name` with every other field at its default.
    pub fn new(container_name: impl Into<String>) -> Self {
        Self {
            container_name: container_name.into(),
            mode: ContainerMode::default(),
            min_allowed: None,
            max_allowed: None,
            controlled_resources: default_controlled_resources(),
            controlled_values: ControlledValues::default(),
            heap: None,
            startup_boost: None,
        }
    }
}

impl ResourcePolicy {
    /// The policy for `container`: its own entry, else `*`, else the defaults.
    pub fn for_container(&self, container: &str) -> ContainerPolicy {
        self.container_policies
            .iter()
            .find(|p| p.container_name == container)
            .or_else(|| {
                self.container_policies
                    .iter()
                    .find(|p| p.container_name == "*")
            })
            .cloned()
            .unwrap_or_else(|| ContainerPolicy::new(container))
    }
}

impl ContainerPolicy {
    /// Whether tailor sizes `resource` of this container at all.
    pub fn controls(&self, resource: ResourceName) -> bool {
        self.mode == ContainerMode::Auto && self.controlled_resources.contains(&resource)
    }
}

fn default_controlled_resources() -> Vec<ResourceName> {
    vec![ResourceName::Cpu, ResourceName::Memory]
}

/// How a container's heap ceiling is learned.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HeapSource {
    /// Detect it: JVM `-Xmx`/`-XX:MaxRAMPercentage`/`-XX:MaxRAM` in the command, args,
    /// `JAVA_TOOL_OPTIONS`/`JAVA_OPTS`/`JDK_JAVA_OPTIONS`; `GOMEMLIMIT`; Node's
    /// `--max-old-space-size`; the pod annotation; JVM heap metrics.
    #[default]
    Auto,
    /// Use `maxHeap` as given.
    Explicit,
    /// No heap hint for this container.
    Off,
}

/// The heap hint: the memory floor is at least heap + overhead.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self.source != 'Explicit' || has(self.maxHeap)").message("heap.maxHeap is required when heap.source is Explicit"))]
pub struct HeapPolicy {
    /// `Auto` (default), `Explicit` (use `maxHeap`) or `Off`.
    #[serde(default)]
    pub source: HeapSource,
    /// The heap ceiling, with `source: Explicit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::quantity")]
    pub max_heap: Option<Quantity>,
    /// Memory the process needs beyond its heap (metaspace, threads, buffers). Unset: the
    /// recommender's default for the runtime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::quantity")]
    pub overhead: Option<Quantity>,
}

/// CPU and memory amounts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU, e.g. `250m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::quantity")]
    pub cpu: Option<Quantity>,
    /// Memory, e.g. `512Mi` or `2G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::quantity")]
    pub memory: Option<Quantity>,
}

/// What the recommender and the updater observed and decided.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VerticalAutoscalerStatus {
    /// The `metadata.generation` this status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The latest recommendation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommendation: Option<Recommendation>,

    /// Memory decreases held for a person's approval.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["containerName".into()]))]
    pub pending_approvals: Vec<PendingApproval>,

    /// The number of entries in `pendingApprovals` (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_approval_count: Option<i32>,

    /// `RecommendationProvided`, `LowConfidence`, `NoPodsMatched`, `HistoryUnavailable`,
    /// `ConfigUnsupported`, `ResizeDeferred`, `ResizeInfeasible`, `AwaitingApproval`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The most recent resizes, newest first (at most 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub last_resizes: Vec<ResizeRecord>,

    /// The memory guard's most recent raises, newest first (at most 20); the recommender
    /// keeps the memory floor above the working set that prompted each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub memory_guard_raises: Vec<MemoryGuardRaise>,
}

/// The recommended resources, per container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// The `metadata.generation` of the VerticalAutoscaler whose spec this recommendation was
    /// computed from. The updater acts only on a recommendation computed for the current
    /// generation (condition `RecommendationStale` otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The workload this recommendation was computed for. The updater acts only when it is
    /// the object's current `spec.targetRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<TargetRef>,
    /// One entry per container.
    #[serde(default)]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["containerName".into()]))]
    pub container_recommendations: Vec<ContainerRecommendation>,
}

/// The recommendation for one container, with the evidence behind it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecommendation {
    /// The container's name.
    pub container_name: String,
    /// The recommended requests.
    pub target: Resources,
    /// Below this the container is considered under-provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_bound: Option<Resources>,
    /// Above this the container is considered over-provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_bound: Option<Resources>,
    /// The target before `minAllowed`/`maxAllowed` were applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncapped_target: Option<Resources>,
    /// The lowest memory tailor will set, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_floor: Option<MemoryFloor>,
    /// Usage samples the recommendation was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<i64>,
    /// How much time the history covers, as a duration (`7d2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_span: Option<String>,
    /// The highest usage seen in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_peak: Option<Resources>,
}

/// Why the memory target is what it is: the term of the memory rule that won.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FloorReason {
    /// The working-set percentile x (1 + margin).
    Percentile,
    /// The observed peak x (1 + the peak margin).
    Peak,
    /// The heap ceiling + overhead.
    HeapHint,
    /// The limit at the last OOM kill x ratio.
    #[serde(rename = "OOM")]
    Oom,
    /// The highest limit the live memory guard raised to in the window.
    MemoryGuard,
}

/// The memory floor: the lowest memory tailor will set for a container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemoryFloor {
    /// The floor.
    #[schemars(schema_with = "crate::schema::quantity")]
    pub value: Quantity,
    /// The term that set it.
    pub reason: FloorReason,
    /// The margin over the observed peak in force: `memory.peakMargin`, or more after a jump to
    /// a new high in the window (at most `memory.maxGrowthMargin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_margin: Option<f64>,
}

/// A memory decrease held until a person approves it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    /// The container.
    pub container_name: String,
    /// The current memory limit (or request, where no limit is set).
    #[schemars(schema_with = "crate::schema::quantity")]
    pub from: Quantity,
    /// The memory it would be lowered to.
    #[schemars(schema_with = "crate::schema::quantity")]
    pub to: Quantity,
    /// Approves exactly this decrease: `kubectl annotate va NAME tailor.dev/approve-memory-decrease=ID`.
    /// Derived from the container and the values, so a new recommendation gets a new id.
    #[schemars(length(min = 1))]
    pub id: String,
    /// When the decrease was first held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The pods whose cut this approval covers: exactly the pods holding it when the id was
    /// made (the id is derived from them). Pods created later need an approval of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodRef>,
    /// Set once a person has approved this id; the cut then goes ahead on `pods` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
}

/// A pod by name and uid (a pod recreated under the same name is another pod).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
}

/// The outcome of one resize.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResizeOutcome {
    /// The kubelet applied it.
    Applied,
    /// Applied by restarting the container.
    Restarted,
    /// Sent; the kubelet has not finished.
    InProgress,
    /// The kubelet deferred it.
    Deferred,
    /// The kubelet declared it infeasible.
    Infeasible,
    /// The kubelet reported an error applying it.
    Failed,
    /// A memory decrease the kubelet refused (usage was above the new limit) was taken back:
    /// the updater restored the limit in force, so the kubelet does not apply the cut later at
    /// a moment nobody chose.
    Reverted,
    /// The pod was deleted before the resize finished.
    PodDeleted,
}

/// A summary of one resize.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResizeRecord {
    /// The pod.
    pub pod: String,
    /// The pod's uid (a pod recreated under the same name does not inherit the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// When the resize was sent.
    pub time: Time,
    /// What happened.
    pub outcome: ResizeOutcome,
    /// Per container: the requests before and after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerResize>,
}

/// One container's part of a resize.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResize {
    /// The container.
    pub container_name: String,
    /// Requests before.
    pub from: Resources,
    /// Requests after.
    pub to: Resources,
    /// The approval id that allowed this memory decrease, when one did. An approval is used
    /// once: the updater does not report it as stale later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<String>,
    /// The container's memory usage the kubelet reported when it refused a memory decrease
    /// (outcome `Reverted`); the recommender keeps its floor above it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::quantity")]
    pub refused_usage: Option<Quantity>,
}
