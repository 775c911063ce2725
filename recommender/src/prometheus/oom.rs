//! OOM kills from kube-state-metrics, found the same way whatever the query step and however
//! often kube-state-metrics is scraped.
//!
//! 1. The restart counter per pod, container and `uid`, as the highest value in the `oom_window`
//!    before each point of a grid of query steps (`max_over_time`: a counter only grows, so that
//!    is its latest value, and the window spans several scrapes however sparse they are). The
//!    grid is fixed to multiples of the step, so every pass sees the same points.
//! 2. A restart is where that value grows from one point to the next; a drop (a new pod with the
//!    same name) only starts again from the lower value. Its first scrape lies between the two
//!    points, and so does that scrape's last terminated reason: points where no
//!    `reason="OOMKilled"` sample lies between are dropped without further reading.
//! 3. For each remaining restart, the raw samples of both series between the two points: the
//!    kill is the first scrape that shows the higher count, and it counts only if that same
//!    scrape reports `OOMKilled`. A crash after an earlier OOM kill is therefore not taken for
//!    another one. The kill's time is that scrape's timestamp, so a kill read again by a later
//!    pass is the same kill.
//! 4. The memory limit (or request, where no limit was set) in force at the last point before
//!    the kill.

use std::collections::BTreeMap;

use super::{HistoryError, Prometheus, Series, exact_alternation, quote};
use crate::model::history::ContainerHistory;

/// Pod, container and `uid` of a series (empty strings where a label is missing).
type Key = (String, String, String);

fn key_of(s: &Series) -> Key {
    let label = |name: &str| s.labels.get(name).cloned().unwrap_or_default();
    (label("pod"), label("container"), label("uid"))
}

/// Milliseconds, so timestamps of the same sample compare exactly.
fn ms(t: f64) -> i64 {
    (t * 1000.0).round() as i64
}

/// An OOM kill as kube-state-metrics recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedKill {
    /// The pod.
    pub pod: String,
    /// The container.
    pub container: String,
    /// The first scrape that shows it, unix seconds.
    pub time: f64,
    /// The memory limit (or request, where no limit was set) in force before it, bytes, where
    /// kube-state-metrics has it.
    pub limit: Option<f64>,
}

/// A restart seen between two points of the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Restart {
    /// The pod, container and `uid`.
    pub key: (String, String, String),
    /// The grid point at which the higher count was first seen.
    pub seen: f64,
    /// The count at the point before (0 for a pod first seen after the grid's first point).
    pub before: f64,
}

/// The restarts in `counts` (the restart counter per pod, container and `uid` on a grid
/// starting at `first`) at points where `oom` (the same grid: an `OOMKilled` reason sample lay
/// in the step before) has a sample. A series' first point counts as a restart only when it is
/// not the grid's first point (the pod appeared later) and its count is above 0.
pub fn restarts(counts: &[Series], oom: &[Series], first: f64) -> Vec<Restart> {
    let oom: BTreeMap<Key, std::collections::BTreeSet<i64>> = oom
        .iter()
        .map(|s| (key_of(s), s.samples.iter().map(|(t, _)| ms(*t)).collect()))
        .collect();
    let mut out = Vec::new();
    for s in counts {
        let key = key_of(s);
        let Some(reasons) = oom.get(&key) else {
            continue;
        };
        let mut samples: Vec<(f64, f64)> = s
            .samples
            .iter()
            .copied()
            .filter(|(t, v)| t.is_finite() && v.is_finite())
            .collect();
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut before = match samples.first() {
            Some((t, _)) if ms(*t) > ms(first) => 0.0,
            Some((_, v)) => *v,
            None => continue,
        };
        for (t, v) in samples {
            if v > before && reasons.contains(&ms(t)) {
                out.push(Restart {
                    key: key.clone(),
                    seen: t,
                    before,
                });
            }
            before = v;
        }
    }
    out
}

/// The OOM kills among the raw samples of one restart: the times of the scrapes whose count
/// is above every count before them (starting from `before`) and that report `OOMKilled` at the
/// same timestamp. `restarts` may hold several series (duplicate kube-state-metrics replicas).
pub fn kills(restarts: &[(f64, f64)], oom_reason_times: &[f64], before: f64) -> Vec<f64> {
    let reasons: std::collections::BTreeSet<i64> =
        oom_reason_times.iter().map(|t| ms(*t)).collect();
    let mut samples: Vec<(f64, f64)> = restarts
        .iter()
        .copied()
        .filter(|(t, v)| t.is_finite() && v.is_finite())
        .collect();
    samples.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut high = before;
    let mut out = Vec::new();
    for (t, v) in samples {
        if v > high {
            high = v;
            if reasons.contains(&ms(t)) {
                out.push(t);
            }
        }
    }
    out
}

/// The value in force before `t`: the last sample before it, or else the first one.
fn before(samples: &[(f64, f64)], t: f64) -> Option<f64> {
    samples
        .iter()
        .filter(|(st, v)| *st < t && v.is_finite())
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .or_else(|| {
            samples
                .iter()
                .filter(|(_, v)| v.is_finite())
                .min_by(|a, b| a.0.total_cmp(&b.0))
        })
        .map(|(_, v)| *v)
}

impl Prometheus {
    /// The window the restart counter and the limits are read over: `oom_window`, at least
    /// four steps, whole seconds.
    pub fn oom_window(&self) -> f64 {
        let step = self.config.step.as_secs_f64().max(1.0);
        self.config.oom_window.as_secs_f64().max(4.0 * step).ceil()
    }

    /// Adds the OOM kills of the containers matched by `base` (namespace, pods, containers)
    /// whose first scrape after the kill lies in `[start - window, end]` to `out`, each with
    /// the memory limit (or request) in force before it; where neither is known, the
    /// container's memory peak so far.
    pub(super) async fn ooms(
        &self,
        base: &[String],
        start: f64,
        end: f64,
        step: f64,
        out: &mut BTreeMap<String, ContainerHistory>,
    ) -> Result<(), HistoryError> {
        for kill in self.kills_of(base, start, end, step).await? {
            let h = out.entry(kill.container).or_default();
            if let Some(limit) = kill.limit.or_else(|| h.memory_peak()) {
                h.add_oom(kill.time, limit);
            }
        }
        Ok(())
    }

    /// The OOM kills of the containers of `pods` in `namespace` whose first scrape after the
    /// kill lies in `[start, end]`, read as the recommender reads them (at the configured
    /// step), in time order.
    pub async fn oom_kills(
        &self,
        namespace: &str,
        pods: &[String],
        start: f64,
        end: f64,
    ) -> Result<Vec<RecordedKill>, HistoryError> {
        let step = self.config.step.as_secs_f64().max(1.0);
        let mut out = Vec::new();
        for batch in pods.chunks(self.config.pod_batch.max(1)) {
            let base = super::container_matchers(namespace, batch);
            out.extend(self.kills_of(&base, start, end, step).await?);
        }
        out.retain(|k| (start..=end).contains(&k.time));
        out.sort_by(|a, b| a.time.total_cmp(&b.time));
        Ok(out)
    }

    /// The OOM kills of the containers matched by `base` whose first scrape after the kill
    /// lies in `[start - window, end]`.
    async fn kills_of(
        &self,
        base: &[String],
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<RecordedKill>, HistoryError> {
        let n = &self.config.names;
        let window = self.oom_window();
        let (w, step_s) = (window as i64, step.ceil() as i64);
        // A grid of whole steps, so every pass (and every start) sees the same points.
        let first = ((start - window) / step).floor() * step;
        let last = (end / step).ceil() * step;
        let counter = self.selector(&n.restarts, base);
        let mut oom = base.to_vec();
        oom.push("reason=\"OOMKilled\"".into());
        let reason = self.selector(&n.terminated_reason, &oom);
        let by = "max by (pod, container, uid)";
        let counts = self
            .query_range(
                &format!("{by} (max_over_time({counter}[{w}s]))"),
                first,
                last,
                step,
            )
            .await?;
        if !counts.iter().any(|s| grows(&s.samples)) {
            return Ok(Vec::new());
        }
        let reasons = self
            .query_range(
                &format!("{by} (max_over_time({reason}[{step_s}s]))"),
                first,
                last,
                step,
            )
            .await?;
        let found = restarts(&counts, &reasons, first);
        if found.is_empty() {
            return Ok(Vec::new());
        }
        let limits = self.memory_limits(base, (first, last, step), w).await?;
        let mut out = Vec::new();
        for r in found {
            for t in self.confirm(base, &r, step_s).await? {
                let (pod, container, _) = &r.key;
                out.push(RecordedKill {
                    pod: pod.clone(),
                    container: container.clone(),
                    time: t,
                    limit: limits
                        .get(&(pod.clone(), container.clone()))
                        .and_then(|samples| before(samples, t)),
                });
            }
        }
        Ok(out)
    }

    /// The raw samples of the restart counter and of the `OOMKilled` reason of `r`'s
    /// container in the step before `r.seen`, and the kills among them.
    async fn confirm(
        &self,
        base: &[String],
        r: &Restart,
        step_s: i64,
    ) -> Result<Vec<f64>, HistoryError> {
        let n = &self.config.names;
        let (pod, container, uid) = &r.key;
        let sel = self.selector(
            "",
            &[
                format!(
                    "__name__=~{}",
                    exact_alternation(&[n.restarts.clone(), n.terminated_reason.clone()])
                ),
                base[0].clone(),
                format!("pod={}", quote(pod)),
                format!("container={}", quote(container)),
                format!("uid={}", quote(uid)),
                "reason=~\"|OOMKilled\"".into(),
            ],
        );
        let data = self
            .post(
                "query",
                &[
                    ("query", format!("{sel}[{step_s}s]")),
                    ("time", r.seen.to_string()),
                ],
            )
            .await?;
        let (mut counts, mut reasons) = (Vec::new(), Vec::new());
        for s in self.series(data, "matrix")? {
            if s.labels.get("__name__") == Some(&n.restarts) {
                counts.extend(s.samples);
            } else {
                reasons.extend(s.samples.iter().map(|(t, _)| *t));
            }
        }
        Ok(kills(&counts, &reasons, r.before))
    }

    /// The memory limit of each pod's container over the grid, or its request where it has no
    /// limit, as the latest value in the `window_s` before each point.
    async fn memory_limits(
        &self,
        base: &[String],
        (first, last, step): (f64, f64, f64),
        window_s: i64,
    ) -> Result<BTreeMap<(String, String), Vec<(f64, f64)>>, HistoryError> {
        let n = &self.config.names;
        let mut sized = base.to_vec();
        sized.push("resource=\"memory\"".into());
        let mut limits = BTreeMap::new();
        for metric in [&n.requests, &n.limits] {
            let sel = self.selector(metric, &sized);
            let q = format!("max by (pod, container) (last_over_time({sel}[{window_s}s]))");
            for s in self.query_range(&q, first, last, step).await? {
                let (pod, container, _) = key_of(&s);
                // Limits come second and replace requests where both exist.
                limits.insert((pod, container), s.samples);
            }
        }
        Ok(limits)
    }
}

/// Whether a counter series changes at all (or starts above 0), before anything else is read.
fn grows(samples: &[(f64, f64)]) -> bool {
    samples.windows(2).any(|w| w[0].1 != w[1].1) || samples.first().is_some_and(|(_, v)| *v > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(pod: &str, samples: &[(f64, f64)]) -> Series {
        Series {
            labels: [("pod", pod), ("container", "app"), ("uid", "u")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            samples: samples.to_vec(),
        }
    }

    #[test]
    fn a_restart_is_where_the_count_grows_with_an_oom_reason_in_the_step() {
        let counts = [
            series("a", &[(0.0, 0.0), (60.0, 0.0), (120.0, 1.0), (180.0, 1.0)]),
            // A crash without an OOM reason in its step.
            series("b", &[(0.0, 2.0), (60.0, 3.0)]),
            // Appeared after the grid's first point, already restarted.
            series("c", &[(120.0, 1.0), (180.0, 1.0)]),
            // Recreated under the same name: the drop is no restart, the growth after it is.
            series("d", &[(0.0, 4.0), (60.0, 0.0), (120.0, 1.0)]),
        ];
        let oom = [
            series("a", &[(120.0, 1.0), (180.0, 1.0)]),
            series("b", &[(0.0, 1.0)]),
            series("c", &[(120.0, 1.0)]),
            series("d", &[(0.0, 1.0), (120.0, 1.0)]),
        ];
        let found: Vec<(String, f64, f64)> = restarts(&counts, &oom, 0.0)
            .into_iter()
            .map(|r| (r.key.0, r.seen, r.before))
            .collect();
        assert_eq!(
            found,
            [
                ("a".into(), 120.0, 0.0),
                ("c".into(), 120.0, 0.0),
                ("d".into(), 120.0, 0.0)
            ]
        );
    }

    #[test]
    fn a_kill_is_the_first_scrape_with_the_higher_count_and_an_oom_reason() {
        // Two kube-state-metrics replicas; the kill shows at 75 first.
        let counts = [(60.0, 1.0), (75.0, 2.0), (70.0, 1.0), (85.0, 2.0)];
        assert_eq!(kills(&counts, &[45.0, 60.0, 75.0, 85.0], 1.0), [75.0]);
        // The reason samples before the restart are an earlier OOM kill's: a crash.
        assert!(kills(&counts, &[45.0, 60.0, 70.0], 1.0).is_empty());
        // Nothing grew.
        assert!(kills(&counts, &[75.0], 2.0).is_empty());
    }

    #[test]
    fn the_limit_is_the_one_before_the_kill() {
        let limits = [(0.0, 512.0), (60.0, 512.0), (120.0, 1024.0)];
        assert_eq!(before(&limits, 100.0), Some(512.0));
        assert_eq!(before(&limits, 120.0), Some(512.0));
        assert_eq!(before(&limits, -10.0), Some(512.0));
        assert_eq!(before(&[], 10.0), None);
    }
}
