//! Reading a workload's usage history: only what is new since the last pass, and what the
//! updater learned (the usage the kubelet named when it refused a memory decrease, the memory
//! guard's raises).

use std::collections::BTreeMap;
use std::time::Instant;

use tailor_crds::quantity::memory_bytes;
use tailor_crds::v1alpha1::{ResizeOutcome, VerticalAutoscaler};

use super::{Cached, Context};
use crate::model::heap::{MeasuredHeaps, MeasuredKey};
use crate::model::history::{ContainerHistory, Pass, Unsettled, UsageSink};
use crate::prometheus::HistoryError;

/// Reads the workload's history: only what is new since the last pass for pods already read,
/// the whole window for pods not seen before (a new rollout) or without a previous pass. CPU
/// samples in a startup boost's window are left out (`boosts`: container -> duration, see
/// [`startup_boosts`]).
///
/// Every read of one object evaluates its queries on the grid of multiples of the step, and
/// settles the points up to `history_overlap` before `end` into the history for good; later
/// points are kept aside ([`Unsettled`]) and read again by the next pass ([`Pass`]), so
/// samples that reach Prometheus late are not lost and none is counted twice. `cached` is left as it was: on an error the
/// caller keeps it, and the next pass reads from where it ended.
pub(super) async fn read_history(
    ctx: &Context,
    ns: &str,
    (kind, name): (&str, &str),
    (start, end, window): (f64, f64, f64),
    cached: Option<&Cached>,
    boosts: &BTreeMap<String, Option<f64>>,
) -> Result<Cached, HistoryError> {
    let step = ctx.prometheus.config().step.as_secs_f64().max(1.0);
    // With a previous pass, only pods that existed since then can have new samples: the
    // ownership query looks back that far, not over the whole window.
    let (mut histories, mut heaps, known, previous, lookback) = match cached {
        Some(c) => {
            let since = (end - c.settled).max(0.0) + 2.0 * step;
            (
                c.histories.clone(),
                c.heaps.clone(),
                c.pods.clone(),
                Some(c.settled),
                since.max(300.0).min(window),
            )
        }
        None => (
            BTreeMap::new(),
            MeasuredHeaps::default(),
            Default::default(),
            None,
            window,
        ),
    };
    let overlap = ctx.options.history_overlap.as_secs_f64();
    let pass = Pass::plan(previous, (start, end), overlap, step);
    let recent: std::collections::BTreeSet<String> = ctx
        .prometheus
        .workload_pods(ns, kind, name, end, lookback)
        .await?
        .into_iter()
        .collect();
    let old: Vec<String> = recent
        .iter()
        .filter(|p| known.contains_key(*p))
        .cloned()
        .collect();
    let new: Vec<String> = recent
        .iter()
        .filter(|p| !known.contains_key(*p))
        .cloned()
        .collect();
    let mut unsettled = Unsettled::default();
    let mut sink = UsageSink {
        settled: pass.settled,
        histories: &mut histories,
        unsettled: &mut unsettled,
    };
    let beat = || tailor_runtime::health::global().heartbeat("recommender", Instant::now());
    beat();
    for (pods, since) in [(&old, pass.known_from), (&new, pass.new_from)] {
        ctx.prometheus
            .read_usage(&mut sink, ns, pods, (since, end), boosts)
            .await?;
        beat();
    }
    for h in histories.values_mut() {
        h.expire(start);
    }
    // JVM heap ceilings: from the previous pass's settled point for pods already read (a
    // ceiling read twice is the same ceiling), the whole window for new ones.
    let heaps_since = previous.unwrap_or(start).max(start);
    for (pods, since) in [(&old, heaps_since), (&new, start)] {
        let read = ctx.prometheus.jvm_heaps(ns, pods, since, end).await?;
        add_heaps(&mut heaps, ns, read);
        beat();
    }
    heaps.expire(start);
    let mut pods = known;
    remember_pods(&mut pods, recent, (start, end));
    Ok(Cached {
        target: (kind.to_owned(), name.to_owned()),
        window,
        boosts: boosts.clone(),
        pods,
        histories,
        unsettled,
        heaps,
        settled: pass.settled,
    })
}

/// The pods a pass found (`recent`) are seen at `end`; pods not seen since `start` (the
/// window's beginning) are forgotten: none of their samples is in the window any more, and
/// without this the names of every pod a workload ever had would pile up. A pod forgotten
/// cannot come back as new and be read twice: only pods with samples since the last pass are
/// found. Pure.
pub(super) fn remember_pods(
    known: &mut BTreeMap<String, f64>,
    recent: std::collections::BTreeSet<String>,
    (start, end): (f64, f64),
) {
    for pod in recent {
        known.insert(pod, end);
    }
    known.retain(|_, seen| *seen >= start);
}

/// Adds the JVM heap ceilings `read` from the pods of `ns` to `heaps`.
pub(super) fn add_heaps(
    heaps: &mut MeasuredHeaps,
    ns: &str,
    read: Vec<crate::prometheus::JvmHeap>,
) {
    for h in read {
        let key = MeasuredKey {
            pod: h.pod,
            container: h.container,
            metric: h.metric,
        };
        for (t, bytes) in h.samples {
            if !heaps.add(key.clone(), t, bytes) {
                tracing::debug!(namespace = ns, pod = %key.pod, metric = %key.metric, bytes, "JVM heap metric is not a positive number; ignored");
            }
        }
    }
}

/// Each container policy's startup CPU boost duration in seconds, by `containerName` (`*`
/// included); `None` for a policy without one (or with an unreadable one: the webhook gives
/// no boost for it either).
pub(super) fn startup_boosts(va: &VerticalAutoscaler) -> BTreeMap<String, Option<f64>> {
    va.spec
        .resource_policy
        .container_policies
        .iter()
        .map(|p| {
            let seconds = p
                .startup_boost
                .as_ref()
                .and_then(|b| crate::spec::parse_duration(&b.cpu.duration).ok());
            (p.container_name.clone(), seconds)
        })
        .collect()
}

/// The history with what the updater learned in the window and recorded in its status:
/// - the memory usage the kubelet reported when it refused one of the updater's memory
///   decreases (`status.lastResizes`, outcome `Reverted`): an observation like any sample, so
///   the floor stays above it;
/// - the limits the live memory guard raised to (`status.memoryGuardRaises`): the estimator's
///   `GuardRaise` term, so no recommendation cuts back below a raise.
pub(super) fn with_updater_evidence<'a>(
    h: &'a ContainerHistory,
    va: &VerticalAutoscaler,
    container: &str,
    since: f64,
) -> std::borrow::Cow<'a, ContainerHistory> {
    let status = va.status.as_ref();
    let seconds = |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
        t.0.as_millisecond() as f64 / 1000.0
    };
    let refused: Vec<(f64, f64)> = status
        .map(|s| s.last_resizes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|r| r.outcome == ResizeOutcome::Reverted)
        .flat_map(|r| {
            let t = seconds(&r.time);
            r.containers
                .iter()
                .filter(|c| c.container_name == container)
                .filter_map(move |c| {
                    Some((t, memory_bytes(c.refused_usage.as_ref()?).ok()? as f64))
                })
        })
        .filter(|(t, _)| *t >= since)
        .collect();
    let raised: Vec<(f64, f64)> = status
        .map(|s| s.memory_guard_raises.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|r| r.container_name == container)
        .filter_map(|r| Some((seconds(&r.time), memory_bytes(&r.to).ok()? as f64)))
        .filter(|(t, _)| *t >= since)
        .collect();
    if refused.is_empty() && raised.is_empty() {
        return std::borrow::Cow::Borrowed(h);
    }
    let mut h = h.clone();
    for (t, bytes) in refused {
        h.add_memory(t, bytes);
    }
    for (t, bytes) in raised {
        h.add_guard_raise(t, bytes);
    }
    std::borrow::Cow::Owned(h)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::remember_pods;

    #[test]
    fn pods_not_seen_within_the_window_are_forgotten() {
        let mut known: BTreeMap<String, f64> =
            [("old".to_owned(), 100.0), ("kept".to_owned(), 900.0)].into();
        let recent: BTreeSet<String> = ["new".to_owned(), "kept".to_owned()].into();
        remember_pods(&mut known, recent, (500.0, 1000.0));
        let expected: BTreeMap<String, f64> =
            [("kept".to_owned(), 1000.0), ("new".to_owned(), 1000.0)].into();
        assert_eq!(known, expected);
    }
}
