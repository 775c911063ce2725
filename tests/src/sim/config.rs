//! The simulator's configuration file (YAML).
//!
//! ```yaml
//! seed: 1                      # usage noise; same seed, same usage
//! schedulerName: tailor-sim    # schedule only pods asking for this scheduler; omit: every unscheduled pod
//! tickSeconds: 1               # how often usage is sampled and limits enforced
//! actuationDelaySeconds: 1     # PodResizeInProgress lasts this long
//! deferredRetrySeconds: 30     # first timer retry of deferred resizes (also retried on pod changes)
//! deferredRetryPeriodSeconds: 180  # later timer retries, after any retry
//! podSyncBackoffSeconds: 10    # a pod whose resize failed is synced again this long after
//! nodes:
//!   - name: sim                # count > 1 names them sim-0, sim-1, ...
//!     count: 3
//!     cpu: "4"
//!     memory: 8Gi
//!     pods: 110
//!     labels: { zone: a }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Deserialize;

use super::kubelet::Amounts;

/// A malformed configuration; the message names the field.
#[derive(Debug, thiserror::Error)]
#[error("simulator config: {0}")]
pub struct ConfigError(pub String);

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimConfig {
    /// Seed of the usage noise.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Schedule only pods with this `spec.schedulerName`; `None`: every unscheduled pod.
    #[serde(default)]
    pub scheduler_name: Option<String>,
    /// Usage sampling and limit enforcement period.
    #[serde(default = "default_tick")]
    pub tick_seconds: f64,
    /// How long `PodResizeInProgress` lasts for an admitted resize.
    #[serde(default = "default_actuation")]
    pub actuation_delay_seconds: f64,
    /// First timer retry of deferred resizes (the kubelet: 30 s).
    #[serde(default = "default_deferred_retry")]
    pub deferred_retry_seconds: f64,
    /// Later timer retries, counted from the last retry (the kubelet: 3 min).
    #[serde(default = "default_deferred_retry_period")]
    pub deferred_retry_period_seconds: f64,
    /// How long after a failed resize actuation (a memory limit below usage) the kubelet syncs
    /// the pod again: its pod workers' back-off (10 s, plus up to 50% jitter on a kubelet).
    #[serde(default = "default_pod_sync_backoff")]
    pub pod_sync_backoff_seconds: f64,
    /// Node groups.
    pub nodes: Vec<NodeGroup>,
}

/// One or more identical nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGroup {
    /// The name, or the prefix with `count > 1`.
    pub name: String,
    /// How many.
    #[serde(default = "one")]
    pub count: usize,
    /// Allocatable CPU.
    pub cpu: Quantity,
    /// Allocatable memory.
    pub memory: Quantity,
    /// Maximum pods.
    #[serde(default = "default_pods")]
    pub pods: usize,
    /// Extra node labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A node as the simulator runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Allocatable (= capacity).
    pub allocatable: Amounts,
    /// Maximum pods.
    pub pods: usize,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

fn default_seed() -> u64 {
    1
}
fn default_tick() -> f64 {
    1.0
}
fn default_actuation() -> f64 {
    1.0
}
fn default_deferred_retry() -> f64 {
    30.0
}
fn default_deferred_retry_period() -> f64 {
    180.0
}
fn default_pod_sync_backoff() -> f64 {
    10.0
}
fn one() -> usize {
    1
}
fn default_pods() -> usize {
    110
}

impl SimConfig {
    /// Parses and validates YAML.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// A config with `count` nodes of `cpu`/`memory` named `sim-N`.
    pub fn uniform(count: usize, cpu: &str, memory: &str) -> Self {
        Self {
            seed: default_seed(),
            scheduler_name: None,
            tick_seconds: default_tick(),
            actuation_delay_seconds: default_actuation(),
            deferred_retry_seconds: default_deferred_retry(),
            deferred_retry_period_seconds: default_deferred_retry_period(),
            pod_sync_backoff_seconds: default_pod_sync_backoff(),
            nodes: vec![NodeGroup {
                name: "sim".into(),
                count,
                cpu: Quantity(cpu.into()),
                memory: Quantity(memory.into()),
                pods: default_pods(),
                labels: BTreeMap::new(),
            }],
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError(format!("{name} must be a number > 0, got {v}")))
            }
        };
        positive("tickSeconds", self.tick_seconds)?;
        positive("deferredRetrySeconds", self.deferred_retry_seconds)?;
        positive(
            "deferredRetryPeriodSeconds",
            self.deferred_retry_period_seconds,
        )?;
        positive("podSyncBackoffSeconds", self.pod_sync_backoff_seconds)?;
        if !(self.actuation_delay_seconds.is_finite() && self.actuation_delay_seconds >= 0.0) {
            return Err(ConfigError(format!(
                "actuationDelaySeconds must be a number >= 0, got {}",
                self.actuation_delay_seconds
            )));
        }
        if self.nodes.is_empty() {
            return Err(ConfigError(
                "nodes: at least one node group is required".into(),
            ));
        }
        self.node_specs().map(|_| ())
    }

    /// Every node, expanded from the groups. Errors name the group and field.
    pub fn node_specs(&self) -> Result<Vec<NodeSpec>, ConfigError> {
        let mut out = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, g) in self.nodes.iter().enumerate() {
            let at = |field: &str| format!("nodes[{i}].{field}");
            if g.name.is_empty() {
                return Err(ConfigError(format!("{}: must not be empty", at("name"))));
            }
            if g.count == 0 {
                return Err(ConfigError(format!("{}: must be at least 1", at("count"))));
            }
            let cpu = tailor_crds::quantity::cpu_millis(&g.cpu)
                .map_err(|e| ConfigError(format!("{}: {e}", at("cpu"))))?;
            let memory = tailor_crds::quantity::memory_bytes(&g.memory)
                .map_err(|e| ConfigError(format!("{}: {e}", at("memory"))))?;
            for n in 0..g.count {
                let name = if g.count == 1 {
                    g.name.clone()
                } else {
                    format!("{}-{n}", g.name)
                };
                if !seen.insert(name.clone()) {
                    return Err(ConfigError(format!(
                        "{}: node {name:?} is defined twice",
                        at("name")
                    )));
                }
                out.push(NodeSpec {
                    name,
                    allocatable: Amounts::new(cpu, memory),
                    pods: g.pods,
                    labels: g.labels.clone(),
                });
            }
        }
        Ok(out)
    }

    /// [`Self::tick_seconds`] as a duration.
    pub fn tick(&self) -> Duration {
        Duration::from_secs_f64(self.tick_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_expands_node_groups() {
        let c = SimConfig::from_yaml(
            "seed: 7\nschedulerName: tailor-sim\nnodes:\n  - {name: big, cpu: '8', memory: 16Gi}\n  - {name: small, count: 2, cpu: 1500m, memory: 2G, pods: 10}\n",
        )
        .unwrap();
        let nodes = c.node_specs().unwrap();
        let names: Vec<_> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["big", "small-0", "small-1"]);
        assert_eq!(nodes[1].allocatable, Amounts::new(1500, 2_000_000_000));
        assert_eq!(nodes[1].pods, 10);
        assert_eq!(c.seed, 7);
        assert_eq!(c.tick_seconds, 1.0);
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, wanted) in [
            ("nodes: []", "nodes: at least one"),
            (
                "nodes:\n  - {name: a, cpu: x, memory: 1Gi}",
                "nodes[0].cpu: invalid quantity \"x\"",
            ),
            (
                "nodes:\n  - {name: a, cpu: '1', memory: -1Gi}",
                "nodes[0].memory",
            ),
            (
                "nodes:\n  - {name: a, cpu: '1', memory: 1Gi, count: 0}",
                "nodes[0].count",
            ),
            (
                "nodes:\n  - {name: a, cpu: '1', memory: 1Gi}\n  - {name: a, cpu: '1', memory: 1Gi}",
                "defined twice",
            ),
            (
                "tickSeconds: 0\nnodes:\n  - {name: a, cpu: '1', memory: 1Gi}",
                "tickSeconds",
            ),
            (
                "nodes:\n  - {name: a, cpu: '1', memory: 1Gi, gpus: 1}",
                "unknown field `gpus`",
            ),
        ] {
            let e = SimConfig::from_yaml(yaml).unwrap_err().to_string();
            assert!(e.contains(wanted), "{yaml}: {e}");
        }
    }
}
