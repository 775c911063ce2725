//! Usage traces for the backtest: per container name, the highest use over the pods at each step.

use std::collections::BTreeMap;

use super::{HistoryError, Prometheus, Series, container_matchers, container_of};
use crate::model::trace::{Sample, Trace};

impl Prometheus {
    /// One usage trace per container name of `pods` in `[start, end]`, for the backtest: at
    /// each step the highest use over the pods (CPU: the per-pod `rate()` of the counter;
    /// memory: the highest working set within the step) and, as the provisioned sizes, the
    /// highest limit over the pods, or the request where a pod's container has no limit.
    /// Steps without both CPU and memory use are left out (gaps); `NaN`, infinite and
    /// negative values are dropped. The traces are named after the container (the caller
    /// renames them), sorted by time, with the query step as their interval; containers
    /// without any usage give none.
    pub async fn usage_traces(
        &self,
        namespace: &str,
        pods: &[String],
        start: f64,
        end: f64,
    ) -> Result<Vec<(String, Trace)>, HistoryError> {
        if pods.is_empty() || end < start {
            return Ok(Vec::new());
        }
        let step = self.config.step.as_secs_f64().max(1.0);
        let n = &self.config.names;
        // Per container and time (milliseconds, exact for the query's timestamps).
        let mut points: BTreeMap<String, BTreeMap<i64, Point>> = BTreeMap::new();
        let mut raise = |s: &Series, field: fn(&mut Point) -> &mut Option<f64>| {
            let steps = points.entry(container_of(s)).or_default();
            for (t, v) in &s.samples {
                if !v.is_finite() || *v < 0.0 || !t.is_finite() {
                    continue;
                }
                let slot = field(steps.entry((t * 1000.0).round() as i64).or_default());
                // Batches of pods are combined by taking the highest.
                *slot = Some(slot.map_or(*v, |old| old.max(*v)));
            }
        };
        for batch in pods.chunks(self.config.pod_batch.max(1)) {
            let base = container_matchers(namespace, batch);
            // Per pod as the recommender reads them, then the highest over the pods.
            let (cpu_q, mem_q) = self.usage_queries(&base);
            let cpu_q = format!("max by (container) ({cpu_q})");
            for s in self.query_range(&cpu_q, start, end, step).await? {
                raise(&s, |p| &mut p.cpu);
            }
            let mem_q = format!("max by (container) ({mem_q})");
            for s in self.query_range(&mem_q, start, end, step).await? {
                raise(&s, |p| &mut p.memory);
            }
            // A pod's limit, or its request where it has no limit; the highest over the pods.
            let mut sized = base.clone();
            sized.push("resource=~\"cpu|memory\"".to_owned());
            let limits = self.selector(&n.limits, &sized);
            let requests = self.selector(&n.requests, &sized);
            let size_q = format!(
                "max by (container, resource) (max by (pod, container, resource) ({limits}) or max by (pod, container, resource) ({requests}))"
            );
            for s in self.query_range(&size_q, start, end, step).await? {
                match s.labels.get("resource").map(String::as_str) {
                    Some("cpu") => raise(&s, |p| &mut p.cpu_limit),
                    Some("memory") => raise(&s, |p| &mut p.memory_limit),
                    _ => {}
                }
            }
        }
        Ok(points
            .into_iter()
            .filter_map(|(container, steps)| {
                let samples: Vec<Sample> = steps
                    .into_iter()
                    .filter_map(|(ms, p)| {
                        Some(Sample {
                            time: ms as f64 / 1000.0,
                            cpu: p.cpu?,
                            memory: p.memory?,
                            cpu_limit: p.cpu_limit,
                            memory_limit: p.memory_limit,
                        })
                    })
                    .collect();
                (!samples.is_empty()).then(|| {
                    let trace = Trace {
                        name: container.clone(),
                        samples,
                        interval: step,
                        ooms: Vec::new(),
                    };
                    (container, trace)
                })
            })
            .collect())
    }
}

/// What one step of a container's usage trace has seen so far.
#[derive(Debug, Default)]
struct Point {
    cpu: Option<f64>,
    memory: Option<f64>,
    cpu_limit: Option<f64>,
    memory_limit: Option<f64>,
}
