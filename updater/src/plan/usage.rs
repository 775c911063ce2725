//! A memory decrease that restarts a container never goes below what the container uses now.
//!
//! The kubelet checks usage before a live memory-limit decrease (and refuses it, see
//! [`super::refused`]), but not before a `RestartContainer` one: the container restarts into
//! the smaller limit and, if its process needs what it used before, is OOM-killed again and
//! again. So right before such a patch the updater reads each restarting container's working
//! set (its highest over a short recent window) and the patch goes only when, for every
//! container whose memory decreases and restarts,
//!
//! ```text
//! new memory ceiling >= working set now
//! ```
//!
//! where the ceiling is the new limit, or the new request when the container has no limit.
//! A container without a reading, or no reading at all (Prometheus down, not configured), holds
//! the patch: nothing is known to be safe. Nothing else is checked here: a live decrease is
//! the kubelet's to refuse, and CPU never needs it.

use std::collections::BTreeMap;

use super::{ContainerChange, PodPlan};

/// A container whose memory decreases through a restart, and its new ceiling (bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartCut {
    /// Container name.
    pub container: String,
    /// The memory limit after the resize, or the request when there is no limit.
    pub ceiling: i64,
}

/// The container's new memory ceiling when its memory goes down: a lower limit, a limit where
/// there was none, or (no limit) a lower request.
fn lowered(c: &ContainerChange) -> Option<i64> {
    let (from, to) = (&c.from, &c.to);
    match (from.limits.memory, to.limits.memory) {
        (Some(was), Some(now)) => (now < was).then_some(now),
        (None, Some(now)) => Some(now),
        (_, None) => match (from.requests.memory, to.requests.memory) {
            (Some(was), Some(now)) if now < was => Some(now),
            _ => None,
        },
    }
}

/// The memory decreases of `plan` that restart their container.
pub fn restart_cuts(plan: &PodPlan) -> Vec<RestartCut> {
    plan.changes
        .iter()
        .filter(|c| c.restarts)
        .filter_map(|c| {
            Some(RestartCut {
                container: c.container.clone(),
                ceiling: lowered(c)?,
            })
        })
        .collect()
}

/// Why a restart cut is held.
#[derive(Clone, Debug, PartialEq)]
pub enum Hold {
    /// The container uses more than the new ceiling.
    BelowUsage {
        /// Container name.
        container: String,
        /// The new ceiling, bytes.
        ceiling: i64,
        /// The working set, bytes.
        usage: f64,
    },
    /// Usage could not be read; the message says why.
    Unknown(String),
}

/// Whether `cuts` may go, given each container's working set (`Err`: why it is unknown).
pub fn check(
    cuts: &[RestartCut],
    working_sets: Result<&BTreeMap<String, f64>, &str>,
) -> Result<(), Hold> {
    if cuts.is_empty() {
        return Ok(());
    }
    let sets = working_sets.map_err(|why| Hold::Unknown(why.to_owned()))?;
    for cut in cuts {
        let Some(&usage) = sets.get(&cut.container) else {
            return Err(Hold::Unknown(format!(
                "no recent working set for container {}",
                cut.container
            )));
        };
        // Bytes as f64 are exact below 2^53 (8 PiB).
        if usage > cut.ceiling as f64 {
            return Err(Hold::BelowUsage {
                container: cut.container.clone(),
                ceiling: cut.ceiling,
                usage,
            });
        }
    }
    Ok(())
}
