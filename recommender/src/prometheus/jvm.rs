//! JVM heap ceilings from the applications' own metrics, when they expose them (none is the
//! usual case).

use super::{HistoryError, Prometheus, container_of, exact_alternation, quote};

/// The heap ceiling a JVM reported over a period.
#[derive(Debug, Clone, PartialEq)]
pub struct JvmHeap {
    /// Pod.
    pub pod: String,
    /// The series' `container` label; empty when it has none (the usual case: applications
    /// expose metrics per pod).
    pub container: String,
    /// The metric it was read from.
    pub metric: String,
    /// `(t, bytes)`: the largest ceiling (summed over the heap's pools) in the stretch of at
    /// most [`JVM_HEAP_RESOLUTION`] seconds that ends at `t`. Not validated: values may be
    /// `NaN` or infinite.
    pub samples: Vec<(f64, f64)>,
}

/// The longest stretch of time one JVM heap value covers, seconds: a ceiling is forgotten at
/// most this long after it was last reported before the window.
pub const JVM_HEAP_RESOLUTION: f64 = 3600.0;

/// The label naming the metric a JVM heap came from in the union of the metrics' queries.
const METRIC_LABEL: &str = "metric";

impl Prometheus {
    /// The heap ceiling the JVMs of `pods` reported in `(since, end]`: per pod and `container`
    /// label, the largest value in each stretch of at most [`JVM_HEAP_RESOLUTION`] seconds,
    /// summed over the heap's memory pools; pools whose ceiling is undefined (`-1`) are left
    /// out. One query per batch of pods for all the configured metrics; pods that expose none
    /// give nothing.
    pub async fn jvm_heaps(
        &self,
        namespace: &str,
        pods: &[String],
        since: f64,
        end: f64,
    ) -> Result<Vec<JvmHeap>, HistoryError> {
        let names = &self.config.names.jvm_heap_max;
        let total = end - since;
        if pods.is_empty() || names.is_empty() || !total.is_finite() || total <= 0.0 {
            return Ok(Vec::new());
        }
        // Stretches that tile the period: each evaluation of the range query covers the
        // stretch before it, so no sample is read twice.
        let stretches = (total / JVM_HEAP_RESOLUTION).ceil().max(1.0);
        let range_s = (total / stretches).ceil().max(1.0);
        let first = end - (stretches - 1.0) * range_s;
        let mut out = Vec::new();
        for batch in pods.chunks(self.config.pod_batch.max(1)) {
            let q = self.jvm_heap_query(namespace, batch, range_s as i64);
            for s in self.query_range(&q, first, end, range_s).await? {
                let (Some(pod), Some(metric)) = (s.labels.get("pod"), s.labels.get(METRIC_LABEL))
                else {
                    continue;
                };
                out.push(JvmHeap {
                    pod: pod.clone(),
                    container: container_of(&s),
                    metric: metric.clone(),
                    samples: s.samples,
                });
            }
        }
        Ok(out)
    }

    /// The query of [`Self::jvm_heaps`]: per metric, each pool's largest value in the stretch
    /// (once per pool however many targets scrape it), undefined (`-1`) pools dropped, the
    /// pools summed and the result labelled with the metric; the metrics' results joined.
    fn jvm_heap_query(&self, namespace: &str, pods: &[String], range_s: i64) -> String {
        self.config
            .names
            .jvm_heap_max
            .iter()
            .map(|metric| {
                let sel = self.selector(
                    metric,
                    &[
                        format!("namespace={}", quote(namespace)),
                        format!("pod=~{}", exact_alternation(pods)),
                        "area=\"heap\"".to_owned(),
                    ],
                );
                format!(
                    "label_replace(sum by (namespace, pod, container) (max by (namespace, pod, container, id) (max_over_time({sel}[{range_s}s])) > 0), \"{METRIC_LABEL}\", {}, \"\", \"\")",
                    quote(metric)
                )
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Config, MetricNames};
    use super::*;

    #[test]
    fn jvm_heap_query_unites_the_metrics_and_drops_undefined_pools() {
        let prom = Prometheus::new(Config {
            names: MetricNames {
                extra_matchers: "cluster=\"prod\"".into(),
                ..MetricNames::default()
            },
            ..Config::default()
        })
        .unwrap();
        let q = prom.jvm_heap_query("shop", &["api-1".into(), "api-2".into()], 3600);
        assert_eq!(
            q,
            "label_replace(sum by (namespace, pod, container) (max by (namespace, pod, container, id) (max_over_time(jvm_memory_max_bytes{namespace=\"shop\",pod=~\"api-1|api-2\",area=\"heap\",cluster=\"prod\"}[3600s])) > 0), \"metric\", \"jvm_memory_max_bytes\", \"\", \"\") or label_replace(sum by (namespace, pod, container) (max by (namespace, pod, container, id) (max_over_time(jvm_memory_bytes_max{namespace=\"shop\",pod=~\"api-1|api-2\",area=\"heap\",cluster=\"prod\"}[3600s])) > 0), \"metric\", \"jvm_memory_bytes_max\", \"\", \"\")"
        );
    }
}
