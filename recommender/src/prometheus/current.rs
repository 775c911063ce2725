//! The working set of one pod's containers now: what the updater checks right before a
//! memory decrease that restarts a container (the new limit must not be below it).

use std::collections::BTreeMap;
use std::time::Duration;

use super::{HistoryError, Prometheus, container_matchers, container_of};

impl Prometheus {
    /// The highest working set of each of `pod`'s containers over the `window` before `at`
    /// (unix seconds), by container name. A container without a sample in the window is
    /// absent; a value that is not a finite, non-negative number is an error.
    pub async fn working_sets(
        &self,
        namespace: &str,
        pod: &str,
        window: Duration,
        at: f64,
    ) -> Result<BTreeMap<String, f64>, HistoryError> {
        let selector = self.selector(
            &self.config.names.memory,
            &container_matchers(namespace, &[pod.to_owned()]),
        );
        let window_s = window.as_secs().max(1);
        let query = format!("max by (container) (max_over_time({selector}[{window_s}s]))");
        let mut out = BTreeMap::new();
        for s in self.query(&query, at).await? {
            let Some(&(_, v)) = s.samples.first() else {
                continue;
            };
            if !v.is_finite() || v < 0.0 {
                return Err(HistoryError::Malformed(format!(
                    "working set of {namespace}/{pod} container {:?} is {v}",
                    container_of(&s)
                )));
            }
            out.insert(container_of(&s), v);
        }
        Ok(out)
    }
}

/// A container's working set, with where it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkingSet {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// Container.
    pub container: String,
    /// Bytes.
    pub bytes: f64,
}

impl Prometheus {
    /// The working set of every container in the cluster whose working set is at least `share`
    /// of its memory limit (kube-state-metrics' limit), in one query: the live memory guard's
    /// read. A value that is not a finite, non-negative number is an error.
    pub async fn hot_working_sets(
        &self,
        share: f64,
        at: f64,
    ) -> Result<Vec<WorkingSet>, HistoryError> {
        let n = &self.config.names;
        let containers = [
            "container!=\"\"".to_owned(),
            "container!=\"POD\"".to_owned(),
        ];
        let memory = self.selector(&n.memory, &containers);
        let limits = self.selector(
            &n.limits,
            &["resource=\"memory\"".to_owned(), containers[0].clone()],
        );
        let by = "max by (namespace, pod, container)";
        let query = format!(
            "{by} ({memory}) >= on (namespace, pod, container) ({share} * {by} ({limits}))"
        );
        let mut out = Vec::new();
        for s in self.query(&query, at).await? {
            let Some(&(_, v)) = s.samples.first() else {
                continue;
            };
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            if !v.is_finite() || v < 0.0 {
                return Err(HistoryError::Malformed(format!(
                    "working set of {}/{} container {:?} is {v}",
                    label("namespace"),
                    label("pod"),
                    label("container")
                )));
            }
            out.push(WorkingSet {
                namespace: label("namespace"),
                pod: label("pod"),
                container: label("container"),
                bytes: v,
            });
        }
        Ok(out)
    }
}
