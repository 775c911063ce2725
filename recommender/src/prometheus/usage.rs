//! Reading usage history: per container, the CPU rate and the highest working set in each
//! step, bounded by the sane maxima, and OOM kills, into the model's history (settled samples)
//! or aside (samples recent enough to change, see [`crate::model::history::Pass`]).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use super::{HistoryError, Prometheus, Series, exact_alternation, quote};
use crate::model::history::{ContainerHistory, Unsettled, Usage, UsageSink};

impl Prometheus {
    /// The usage history of `pods` in `[start, end]`, per container name.
    pub async fn history(
        &self,
        namespace: &str,
        pods: &[String],
        start: f64,
        end: f64,
    ) -> Result<BTreeMap<String, ContainerHistory>, HistoryError> {
        let mut out = BTreeMap::new();
        self.extend_history(&mut out, namespace, pods, start, end)
            .await?;
        for h in out.values_mut() {
            h.expire(start);
        }
        Ok(out)
    }

    /// Adds the samples of `pods` in `[start, end]` to `out` (per container name). Nothing is
    /// expired: the caller decides the window.
    pub async fn extend_history(
        &self,
        out: &mut BTreeMap<String, ContainerHistory>,
        namespace: &str,
        pods: &[String],
        start: f64,
        end: f64,
    ) -> Result<(), HistoryError> {
        self.extend_history_boosted(out, namespace, pods, (start, end), &BTreeMap::new())
            .await
    }

    /// [`Prometheus::extend_history`], leaving out the CPU samples of each startup boost's
    /// window (see [`Prometheus::read_usage`]).
    pub async fn extend_history_boosted(
        &self,
        out: &mut BTreeMap<String, ContainerHistory>,
        namespace: &str,
        pods: &[String],
        (start, end): (f64, f64),
        boosts: &BTreeMap<String, Option<f64>>,
    ) -> Result<(), HistoryError> {
        let mut unsettled = Unsettled::default();
        let mut sink = UsageSink {
            settled: f64::INFINITY,
            histories: out,
            unsettled: &mut unsettled,
        };
        self.read_usage(&mut sink, namespace, pods, (start, end), boosts)
            .await
    }

    /// Reads the usage samples and OOM kills of `pods` in `[start, end]` into `sink` (per
    /// container name; OOM kills, the same kill however often read, into its histories).
    /// Nothing is expired: the caller decides the window. CPU samples of each startup boost's
    /// window are left out: `boosts` holds each container policy's boost duration in seconds
    /// by `containerName` (`*` for the others; `None`: no boost). For a boosted container, a
    /// pod's CPU samples before the time it became Ready plus that duration are left out. A pod
    /// with no Ready time (kube-state-metrics before 2.8, or never Ready) keeps its samples.
    pub async fn read_usage(
        &self,
        sink: &mut UsageSink<'_>,
        namespace: &str,
        pods: &[String],
        (start, end): (f64, f64),
        boosts: &BTreeMap<String, Option<f64>>,
    ) -> Result<(), HistoryError> {
        if pods.is_empty() || end < start {
            return Ok(());
        }
        let step = self.config.step.as_secs_f64().max(1.0);
        for batch in pods.chunks(self.config.pod_batch.max(1)) {
            let base = container_matchers(namespace, batch);
            let (cpu_q, mem_q) = self.usage_queries(&base);
            let ready = if boosts.values().all(Option::is_none) {
                BTreeMap::new()
            } else {
                self.ready_times(namespace, batch, (start, end)).await?
            };
            for s in self.query_range(&cpu_q, start, end, step).await? {
                let container = container_of(&s);
                let duration = match boosts.get(&container) {
                    Some(d) => *d,
                    None => boosts.get("*").copied().flatten(),
                };
                let boost_end = duration.and_then(|d| {
                    let pod = s.labels.get("pod")?;
                    Some(ready.get(pod)? + d)
                });
                for (t, v) in self.bounded(&s, self.config.max_cpu_cores, "CPU") {
                    if boost_end.is_none_or(|e| t >= e) {
                        sink.add(&container, Usage::Cpu, t, v);
                    }
                }
            }
            for s in self.query_range(&mem_q, start, end, step).await? {
                let container = container_of(&s);
                for (t, v) in self.bounded(&s, self.config.max_memory_bytes, "memory") {
                    sink.add(&container, Usage::Memory, t, v);
                }
            }
            self.ooms(&base, start, end, step, sink.histories).await?;
        }
        Ok(())
    }

    /// The samples of `s` up to `max`; finite ones above are garbage (a counter reset read as
    /// a huge rate, a broken exporter): left out, counted, and logged. NaN and infinities go
    /// on to the history, which refuses and counts them itself.
    fn bounded(&self, s: &Series, max: f64, what: &str) -> Vec<(f64, f64)> {
        type Samples = Vec<(f64, f64)>;
        let (kept, over): (Samples, Samples) = s
            .samples
            .iter()
            .partition(|(_, v)| !(v.is_finite() && *v > max));
        if let Some((t, v)) = over.first() {
            self.stats
                .rejected
                .fetch_add(over.len() as u64, Ordering::Relaxed);
            tracing::warn!(
                pod = s.labels.get("pod").map(String::as_str).unwrap_or_default(),
                container = %container_of(s),
                samples = over.len(),
                first_at = t,
                value = v,
                bound = max,
                "{what} usage samples above the sane bound left out"
            );
        }
        kept
    }

    /// The per-pod and container usage expressions over `base`: CPU as the `rate()` of the
    /// counter, memory as the highest working set within each step (so short peaks are not
    /// stepped over).
    pub(super) fn usage_queries(&self, base: &[String]) -> (String, String) {
        let n = &self.config.names;
        let step_s = self.config.step.as_secs_f64().max(1.0).ceil() as i64;
        let rate_s = self.config.rate_window.as_secs().max(1);
        let cpu = self.selector(&n.cpu, base);
        let memory = self.selector(&n.memory, base);
        (
            format!("sum by (pod, container) (rate({cpu}[{rate_s}s]))"),
            format!("max by (pod, container) (max_over_time({memory}[{step_s}s]))"),
        )
    }
}

/// Matchers for the containers of `pods` in `namespace` (not the pause container).
pub(super) fn container_matchers(namespace: &str, pods: &[String]) -> Vec<String> {
    vec![
        format!("namespace={}", quote(namespace)),
        format!("pod=~{}", exact_alternation(pods)),
        "container!=\"\"".to_owned(),
        "container!=\"POD\"".to_owned(),
    ]
}

pub(super) fn container_of(s: &Series) -> String {
    s.labels.get("container").cloned().unwrap_or_default()
}
