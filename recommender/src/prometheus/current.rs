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
    /// The share of the last two minutes in which every task of the container waited for
    /// memory (cgroup v2 PSI `full`); 0 where cAdvisor does not export it.
    pub stalled: f64,
}

type ContainerKey = (String, String, String);

impl Prometheus {
    /// The working set of every container in the cluster whose working set is at least `share`
    /// of its memory limit (cAdvisor's, the cgroup's own; else kube-state-metrics'), with its
    /// memory stall share where cAdvisor exports it: the live memory guard's read, two
    /// queries. A value that is not a finite, non-negative number is an error.
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
        let cgroup = self.selector(&n.memory_limit, &containers);
        let limits = self.selector(
            &n.limits,
            &["resource=\"memory\"".to_owned(), containers[0].clone()],
        );
        let by = "max by (namespace, pod, container)";
        let query = format!(
            "{by} ({memory}) >= on (namespace, pod, container) ({share} * ({by} ({cgroup} > 0) or {by} ({limits})))"
        );
        let sets = self.by_container(&query, at, "working set").await?;
        if sets.is_empty() {
            return Ok(Vec::new());
        }
        let stalled = self.selector(&n.memory_stalled, &containers);
        let stalls = self
            .by_container(
                &format!("{by} (rate({stalled}[2m]))"),
                at,
                "memory stall rate",
            )
            .await?;
        Ok(sets
            .into_iter()
            .map(|((namespace, pod, container), bytes)| {
                let key = (namespace, pod, container);
                let stalled = stalls.get(&key).copied().unwrap_or(0.0).min(1.0);
                let (namespace, pod, container) = key;
                WorkingSet {
                    namespace,
                    pod,
                    container,
                    bytes,
                    stalled,
                }
            })
            .collect())
    }

    /// An instant query's values by (namespace, pod, container); `what` names them in errors.
    async fn by_container(
        &self,
        query: &str,
        at: f64,
        what: &str,
    ) -> Result<BTreeMap<ContainerKey, f64>, HistoryError> {
        let mut out = BTreeMap::new();
        for s in self.query(query, at).await? {
            let Some(&(_, v)) = s.samples.first() else {
                continue;
            };
            let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
            let key = (label("namespace"), label("pod"), label("container"));
            if !v.is_finite() || v < 0.0 {
                return Err(HistoryError::Malformed(format!(
                    "{what} of {}/{} container {:?} is {v}",
                    key.0, key.1, key.2
                )));
            }
            out.insert(key, v);
        }
        Ok(out)
    }
}
