//! The policies under test: tailor's estimator, upstream VPA's recommender, Robusta KRR
//! `simple` and the trace's own limits, each behind [`Recommender`].

use std::collections::VecDeque;

use super::super::estimator::{self, Current, Policy, Settings, Verdict};
use super::super::histogram::DecayingHistogram;
use super::super::history::ContainerHistory;
use super::{DAY, MI, Options, PolicyKind};

/// One resource of a recommendation: the target, and the bounds and floor that tell the
/// updater when to act.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Target {
    pub(super) value: f64,
    /// Act when the applied value is outside `[lower, upper]` (tailor's updater rule).
    pub(super) bounds: Option<(f64, f64)>,
    /// Act when the applied value is below this, and never go below it (memory).
    pub(super) floor: Option<f64>,
}

impl Target {
    pub(super) fn bare(value: f64) -> Self {
        Self {
            value,
            ..Self::default()
        }
    }
}

/// What a policy recommends: cores and bytes, `None` for a resource it cannot recommend yet.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Rec {
    pub(super) cpu: Option<Target>,
    pub(super) memory: Option<Target>,
}

impl Rec {
    pub(super) fn bare(cpu: Option<f64>, memory: Option<f64>) -> Self {
        Self {
            cpu: cpu.map(Target::bare),
            memory: memory.map(Target::bare),
        }
    }
}

/// A policy's state.
pub(super) trait Recommender {
    fn observe(&mut self, t: f64, cpu: f64, memory: f64, weight: f64);
    fn oom(&mut self, t: f64, memory_in_force: f64);
    /// The live memory guard raised the memory in force to `to` bytes.
    fn guard_raise(&mut self, _t: f64, _to: f64) {}
    fn recommend(&mut self, now: f64, applied: (Option<f64>, Option<f64>)) -> Rec;
}

struct TailorPolicy {
    history: ContainerHistory,
    window: f64,
    policy: Policy,
    heap_floor: Option<f64>,
    settings: Settings,
}

impl Recommender for TailorPolicy {
    fn observe(&mut self, t: f64, cpu: f64, memory: f64, _weight: f64) {
        self.history.add_cpu(t, cpu);
        self.history.add_memory(t, memory);
    }

    fn oom(&mut self, t: f64, memory_in_force: f64) {
        self.history.add_oom(t, memory_in_force);
    }

    fn guard_raise(&mut self, t: f64, to: f64) {
        self.history.add_guard_raise(t, to);
    }

    fn recommend(&mut self, now: f64, applied: (Option<f64>, Option<f64>)) -> Rec {
        self.history.expire(now - self.window);
        let current = Current {
            cpu: applied.0,
            memory: applied.1,
        };
        let heap = self.heap_floor;
        match estimator::estimate(&self.history, &self.policy, heap, &current, &self.settings) {
            // The same bounds and floor the updater acts on.
            Verdict::Estimate(e) => Rec {
                cpu: Some(Target {
                    value: e.target.cpu as f64 / 1000.0,
                    bounds: Some((e.lower.cpu as f64 / 1000.0, e.upper.cpu as f64 / 1000.0)),
                    floor: None,
                }),
                memory: Some(Target {
                    value: e.target.memory as f64,
                    bounds: Some((e.lower.memory as f64, e.upper.memory as f64)),
                    floor: Some(e.floor as f64),
                }),
            },
            Verdict::NotEnoughHistory(_) => Rec::default(),
        }
    }
}

/// Upstream VPA: CPU samples weigh 0.1; memory goes in as one peak per 24 h interval; target =
/// P90 x 1.15; minimums 25m and 250 MiB; an OOM records max(used + 100 MiB, used x 1.2) as a
/// peak, used = max(memory at the kill, the interval's peak). Bounds: P50 and P95 x 1.15,
/// widened by confidence `c` (days of history, at most the days the samples cover): lower x
/// (1 + 0.001/c)^-2, upper x (1 + 1/c). Its updater acts outside the bounds or at a change of
/// at least `min_change`, as tailor's does.
pub(super) struct VpaPolicy {
    cpu: DecayingHistogram,
    memory: DecayingHistogram,
    interval_start: Option<f64>,
    interval_peak: f64,
    /// The first sample's time, for the confidence.
    first: Option<f64>,
    last: f64,
    /// Seconds of samples seen (VPA counts one sample a minute).
    sampled: f64,
}

impl VpaPolicy {
    pub(super) fn new() -> Self {
        Self {
            cpu: DecayingHistogram::new(0.01, 1.05, DAY),
            memory: DecayingHistogram::new(10e6, 1.05, DAY),
            interval_start: None,
            interval_peak: 0.0,
            first: None,
            last: 0.0,
            sampled: 0.0,
        }
    }

    fn roll(&mut self, t: f64) {
        let start = *self.interval_start.get_or_insert(t);
        if t - start >= DAY {
            if self.interval_peak > 0.0 {
                self.memory.add(self.interval_peak, 1.0, start + DAY);
            }
            self.interval_start = Some(t);
            self.interval_peak = 0.0;
        }
    }
}

impl Recommender for VpaPolicy {
    fn observe(&mut self, t: f64, cpu: f64, memory: f64, weight: f64) {
        self.roll(t);
        self.first.get_or_insert(t);
        self.last = t;
        self.sampled += weight;
        self.cpu.add(cpu, 0.1, t);
        self.interval_peak = self.interval_peak.max(memory);
    }

    fn oom(&mut self, t: f64, memory_in_force: f64) {
        self.roll(t);
        let used = memory_in_force.max(self.interval_peak);
        self.interval_peak = (used + 100.0 * MI).max(used * 1.2);
    }

    fn recommend(&mut self, now: f64, _applied: (Option<f64>, Option<f64>)) -> Rec {
        let mut memory = self.memory.clone();
        if self.interval_peak > 0.0 {
            memory.add(self.interval_peak, 1.0, now);
        }
        // Confidence in days: the history's span, at most the days the samples cover.
        let span = self.first.map_or(0.0, |f| self.last - f);
        let c = (span.min(self.sampled) / DAY).max(1e-3);
        // As upstream: the confidence multiplier first, the minimum around it.
        let estimate = |h: &DecayingHistogram, p: f64, multiplier: f64, min: f64| {
            h.percentile(p).map(|v| (v * 1.15 * multiplier).max(min))
        };
        let resource = |h: &DecayingHistogram, min: f64| {
            let value = estimate(h, 0.9, 1.0, min)?;
            let lower = estimate(h, 0.5, (1.0 + 0.001 / c).powi(-2), min)?;
            let upper = estimate(h, 0.95, 1.0 + 1.0 / c, min)?;
            Some(Target {
                value,
                bounds: Some((lower.min(value), upper.max(value))),
                floor: None,
            })
        };
        Rec {
            cpu: resource(&self.cpu, 0.025),
            memory: resource(&memory, 250.0 * MI),
        }
    }
}

/// Robusta KRR `simple` over a 14-day window: CPU p95, memory max(peak x 1.15, memory at the
/// last OOM x 1.25); nothing before 100 points and 3 hours.
struct KrrPolicy {
    window: VecDeque<(f64, f64, f64)>,
    last_oom: Option<(f64, f64)>,
}

impl Recommender for KrrPolicy {
    fn observe(&mut self, t: f64, cpu: f64, memory: f64, _weight: f64) {
        self.window.push_back((t, cpu, memory));
    }

    fn oom(&mut self, t: f64, memory_in_force: f64) {
        self.last_oom = Some((t, memory_in_force));
    }

    fn recommend(&mut self, now: f64, _applied: (Option<f64>, Option<f64>)) -> Rec {
        let since = now - 14.0 * DAY;
        while self.window.front().is_some_and(|s| s.0 < since) {
            self.window.pop_front();
        }
        if self.last_oom.is_some_and(|(t, _)| t < since) {
            self.last_oom = None;
        }
        let span = match (self.window.front(), self.window.back()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0.0,
        };
        if self.window.len() < 100 || span < 3.0 * 3600.0 {
            return Rec::default();
        }
        let mut cpu: Vec<f64> = self.window.iter().map(|s| s.1).collect();
        let k = ((cpu.len() as f64 * 0.95).ceil() as usize).clamp(1, cpu.len()) - 1;
        let (_, p95, _) = cpu.select_nth_unstable_by(k, f64::total_cmp);
        let peak = self.window.iter().map(|s| s.2).fold(0.0, f64::max);
        let oom = self.last_oom.map_or(0.0, |(_, m)| m * 1.25);
        Rec::bare(Some(*p95), Some((peak * 1.15).max(oom)))
    }
}

/// The trace's own limits, as of the latest sample.
#[derive(Default)]
pub(super) struct Provisioned {
    pub(super) last: Rec,
}

impl Provisioned {
    pub(super) fn see(&mut self, cpu_limit: Option<f64>, memory_limit: Option<f64>) {
        self.last = Rec::bare(cpu_limit, memory_limit);
    }
}

/// The model of `kind` for a trace sampled every `interval` seconds; `None` for `provisioned`,
/// which reads the trace's limits.
pub(super) fn model(
    kind: PolicyKind,
    options: &Options,
    interval: f64,
) -> Option<Box<dyn Recommender>> {
    match kind {
        PolicyKind::Tailor => Some(Box::new(TailorPolicy {
            history: ContainerHistory::default(),
            window: options.tailor_window,
            policy: options.tailor_policy.clone(),
            heap_floor: options.tailor_heap_floor,
            settings: Settings {
                sample_interval: interval,
                ..options.settings.clone()
            },
        })),
        PolicyKind::Vpa => Some(Box::new(VpaPolicy::new())),
        PolicyKind::Krr => Some(Box::new(KrrPolicy {
            window: VecDeque::new(),
            last_oom: None,
        })),
        PolicyKind::Provisioned => None,
    }
}
