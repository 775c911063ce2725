//! When pods became Ready (kube-state-metrics' `kube_pod_status_ready_time`): where a startup
//! boost's window ends, so its CPU samples stay out of the history.

use std::collections::BTreeMap;

use super::{HistoryError, Prometheus, exact_alternation, quote};

impl Prometheus {
    /// When each of `pods` last became Ready (Unix seconds) within `[start, end]`.
    pub(super) async fn ready_times(
        &self,
        namespace: &str,
        pods: &[String],
        (start, end): (f64, f64),
    ) -> Result<BTreeMap<String, f64>, HistoryError> {
        let base = vec![
            format!("namespace={}", quote(namespace)),
            format!("pod=~{}", exact_alternation(pods)),
        ];
        let selector = self.selector(&self.config.names.ready_time, &base);
        let range = ((end - start).max(0.0) + self.config.step.as_secs_f64()).ceil() as i64;
        let query = format!(
            "max by (pod) (last_over_time({selector}[{}s]))",
            range.max(1)
        );
        Ok(self
            .query(&query, end)
            .await?
            .into_iter()
            .filter_map(|s| {
                let (_, v) = s.samples.last()?;
                Some((s.labels.get("pod")?.clone(), *v))
            })
            .filter(|(_, v)| v.is_finite() && *v > 0.0)
            .collect())
    }
}
