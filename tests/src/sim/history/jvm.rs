//! The JVM heap series of an application's own metrics endpoint (Micrometer or client_java),
//! which the recommender reads for the heap floor. Not served by the simulator: only backfilled.

use std::collections::BTreeMap;

use super::Series;

/// How an application exposes its JVM's heap ceiling.
#[derive(Debug, Clone, PartialEq)]
pub enum JvmHeapMetrics {
    /// Micrometer (Spring Boot): `jvm_memory_max_bytes{area="heap",id=<pool>}`, one series per
    /// memory pool; `-1` where the pool has no ceiling of its own (G1's eden and survivor).
    Micrometer(Vec<(String, f64)>),
    /// The Prometheus client_java / JMX exporter: `jvm_memory_bytes_max{area="heap"}`.
    ClientJava(f64),
}

/// The JVM heap series of one pod (applications expose metrics per pod: without
/// `container`, the scrape adds no `container` label).
#[derive(Debug, Clone, PartialEq)]
pub struct JvmHeap {
    /// Namespace.
    pub namespace: String,
    /// Pod.
    pub pod: String,
    /// The `container` label, if the scrape configuration adds one.
    pub container: Option<String>,
    /// The series.
    pub metrics: JvmHeapMetrics,
    /// When the pod reported them `(from, to)`, unix seconds; `None`: the whole window.
    pub lifetime: Option<(i64, i64)>,
}

/// The JVM heap series of `heaps` from `start` to `end` every `step` seconds, with an
/// `area="nonheap"` series beside them (which must not count as heap), as the libraries do.
pub fn jvm_heap(heaps: &[JvmHeap], start: i64, end: i64, step: i64) -> Vec<Series> {
    let step = step.max(1);
    let mut out = Vec::new();
    for h in heaps {
        let (from, to) = h.lifetime.unwrap_or((start, end));
        let times: Vec<i64> = (0..)
            .map(|i| start + i * step)
            .take_while(|t| *t <= end)
            .filter(|t| (from..=to).contains(t))
            .collect();
        let labels = |area: &str| {
            let mut l = BTreeMap::from([
                ("namespace", h.namespace.clone()),
                ("pod", h.pod.clone()),
                ("area", area.to_owned()),
                ("instance", format!("{}:8080", h.pod)),
            ]);
            if let Some(c) = &h.container {
                l.insert("container", c.clone());
            }
            l
        };
        let constant = |v: f64| times.iter().map(|t| (*t, v)).collect::<Vec<_>>();
        match &h.metrics {
            JvmHeapMetrics::Micrometer(pools) => {
                for (id, max) in pools
                    .iter()
                    .map(|(id, max)| (id.as_str(), *max))
                    .chain([("Metaspace", 512.0 * 1024.0 * 1024.0)])
                {
                    let mut l = labels(if id == "Metaspace" { "nonheap" } else { "heap" });
                    l.insert("id", id.to_owned());
                    out.push(Series {
                        metric: "jvm_memory_max_bytes",
                        labels: l,
                        samples: constant(max),
                    });
                }
            }
            JvmHeapMetrics::ClientJava(max) => {
                for (area, v) in [("heap", *max), ("nonheap", -1.0)] {
                    out.push(Series {
                        metric: "jvm_memory_bytes_max",
                        labels: labels(area),
                        samples: constant(v),
                    });
                }
            }
        }
    }
    out
}
