//! What `/healthz` and `/readyz` know besides a binary's own readiness, for the whole process:
//!
//! - **The API server answers.** Every watch event and every Lease request says whether the API
//!   server answered ([`Health::api_ok`], [`Health::api_failed`]). Once it has failed without a
//!   single answer for `unreachable_after`, `/readyz` says so: a replica that cannot reach the
//!   API server, leader or standby, cannot do its work and is not ready.
//! - **The work loops make progress.** Each work loop reports keys received, keys done and
//!   idleness ([`Health::work`]). A loop with work to do that has finished nothing for
//!   `stall_after` is wedged, and `/healthz` fails, so the kubelet restarts the container. An
//!   idle loop is never wedged, however long it waits.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::queue::Progress;

/// When the process is unwell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long the API server may fail without one answer before `/readyz` fails.
    pub unreachable_after: Duration,
    /// How long a loop with work to do may finish nothing before `/healthz` fails.
    pub stall_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            unreachable_after: Duration::from_secs(60),
            stall_after: Duration::from_secs(600),
        }
    }
}

/// The health flags, shared by both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthArgs {
    /// Seconds the API server may fail without one answer (watches, Lease requests) before
    /// /readyz fails: a replica that cannot reach it cannot do its work, leader or standby.
    #[arg(long, env = "TAILOR_API_UNREACHABLE_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub api_unreachable_seconds: u64,
    /// Seconds a work loop with work to do may finish nothing before /healthz fails (and the
    /// kubelet restarts the container). Longer than the slowest legitimate reconcile.
    #[arg(long, env = "TAILOR_HEALTHZ_STALL_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub healthz_stall_seconds: u64,
}

impl HealthArgs {
    /// Applies the limits to the process's health.
    pub fn apply(&self) {
        global().set_limits(Limits {
            unreachable_after: Duration::from_secs(self.api_unreachable_seconds),
            stall_after: Duration::from_secs(self.healthz_stall_seconds),
        });
    }
}

#[derive(Debug, Default)]
struct Loop {
    /// Since when it has had work without finishing any; `None` when idle.
    busy_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct State {
    limits: Limits,
    /// Since when the API server has failed without an answer, and the last error.
    failing: Option<(Instant, String)>,
    loops: BTreeMap<&'static str, Loop>,
}

/// The process's health; see the module documentation.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

/// The health of this process.
pub fn global() -> &'static Health {
    static HEALTH: OnceLock<Health> = OnceLock::new();
    HEALTH.get_or_init(Health::default)
}

impl Health {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the limits.
    pub fn set_limits(&self, limits: Limits) {
        self.state().limits = limits;
    }

    /// The API server answered.
    pub fn api_ok(&self) {
        self.state().failing = None;
    }

    /// A request to the API server failed with `error` (at `now`).
    pub fn api_failed(&self, error: &str, now: Instant) {
        let mut state = self.state();
        let since = state.failing.as_ref().map_or(now, |(since, _)| *since);
        state.failing = Some((since, error.to_owned()));
    }

    /// Why the API server counts as unreachable at `now`, if it does.
    pub fn unreachable(&self, now: Instant) -> Option<String> {
        let state = self.state();
        let (since, error) = state.failing.as_ref()?;
        let failing = now.saturating_duration_since(*since);
        (failing >= state.limits.unreachable_after).then(|| {
            format!(
                "the API server has not answered for {}s: {error}",
                failing.as_secs()
            )
        })
    }

    /// What the work loop `name` did (at `now`).
    pub fn work(&self, name: &'static str, progress: Progress, now: Instant) {
        let mut state = self.state();
        let l = state.loops.entry(name).or_default();
        match progress {
            Progress::Received => {
                l.busy_since.get_or_insert(now);
            }
            Progress::Done => l.busy_since = Some(now),
            Progress::Idle => l.busy_since = None,
        }
    }

    /// The loop `name`, busy with a long piece of work, made progress within it (at `now`): a
    /// step of a long read done. Nothing for a loop that is idle or unknown.
    pub fn heartbeat(&self, name: &'static str, now: Instant) {
        if let Some(busy) = self
            .state()
            .loops
            .get_mut(name)
            .and_then(|l| l.busy_since.as_mut())
        {
            *busy = now;
        }
    }

    /// Why a work loop counts as wedged at `now`, if one does.
    pub fn wedged(&self, now: Instant) -> Option<String> {
        let state = self.state();
        state.loops.iter().find_map(|(name, l)| {
            let stalled = now.saturating_duration_since(l.busy_since?);
            (stalled >= state.limits.stall_after).then(|| {
                format!(
                    "the {name} loop has had work and finished none for {}s",
                    stalled.as_secs()
                )
            })
        })
    }
}

/// Reports the loop it names idle when created and when dropped: a loop stopped in the middle
/// of its work (its replica lost the lead) is not left looking wedged, and one started again
/// does not inherit the old state.
#[derive(Debug)]
pub struct LoopGuard(&'static str);

impl LoopGuard {
    /// The guard of the loop `name`.
    pub fn new(name: &'static str) -> Self {
        global().work(name, Progress::Idle, Instant::now());
        Self(name)
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        global().work(self.0, Progress::Idle, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        let h = Health::default();
        h.set_limits(Limits {
            unreachable_after: Duration::from_secs(30),
            stall_after: Duration::from_secs(60),
        });
        h
    }

    #[test]
    fn unreachable_only_after_failing_without_an_answer_for_the_limit() {
        let h = health();
        let t0 = Instant::now();
        h.api_failed("connection refused", t0);
        h.api_failed("connection refused", t0 + Duration::from_secs(20));
        assert_eq!(h.unreachable(t0 + Duration::from_secs(29)), None);
        let why = h
            .unreachable(t0 + Duration::from_secs(31))
            .unwrap_or_default();
        assert!(why.contains("31s") && why.contains("refused"), "{why}");
        // One answer clears it; the next failure starts the count again.
        h.api_ok();
        assert_eq!(h.unreachable(t0 + Duration::from_secs(40)), None);
        h.api_failed("timeout", t0 + Duration::from_secs(40));
        assert_eq!(h.unreachable(t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn a_loop_is_wedged_only_with_work_and_nothing_done() {
        let h = health();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        // Idle for ever: fine.
        h.work("updater", Progress::Idle, t0);
        assert_eq!(h.wedged(at(1000)), None);
        // Work arrives and keeps finishing: fine.
        h.work("updater", Progress::Received, at(1000));
        h.work("updater", Progress::Received, at(1030));
        h.work("updater", Progress::Done, at(1050));
        assert_eq!(h.wedged(at(1100)), None);
        // Nothing finished for the limit: wedged.
        let why = h.wedged(at(1111)).unwrap_or_default();
        assert!(why.contains("updater") && why.contains("61s"), "{why}");
        // Idle again: fine.
        h.work("updater", Progress::Idle, at(1112));
        assert_eq!(h.wedged(at(5000)), None);
        // A long piece of work that beats: fine; once it stops beating, wedged.
        h.work("updater", Progress::Received, at(6000));
        h.heartbeat("updater", at(6050));
        h.heartbeat("updater", at(6100));
        assert_eq!(h.wedged(at(6150)), None);
        assert!(h.wedged(at(6161)).is_some());
        // A heartbeat never makes an idle or unknown loop busy.
        h.work("updater", Progress::Idle, at(6200));
        h.heartbeat("updater", at(6201));
        h.heartbeat("other", at(6201));
        assert_eq!(h.wedged(at(9000)), None);
    }
}
