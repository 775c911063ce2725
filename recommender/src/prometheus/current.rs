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
