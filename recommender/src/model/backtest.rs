//! Walk-forward backtest of recommendation policies on a usage trace. Pure: the trace comes in
//! parsed, the results go out as values.
//!
//! At each decision point (every `decision_interval` after `warmup`) each policy sees only the
//! samples before it and recommends CPU and memory. What an updater would apply follows
//! tailor's updater rule ([`next_value`]): a resource changes when the target moved by at least
//! `min_change`, when the applied value is outside the recommendation's bounds or below its
//! floor; a cut stops at the floor. The usage until the next decision is scored against what is
//! applied:
//!
//! - memory: a would-be OOM kill for each run of consecutive samples above the applied memory
//!   (counted once per run); the policy is told of the kill at once, with the memory in force,
//!   as it would learn of it in a cluster, and decides again right away;
//! - slack: `1 - used / applied`, averaged over time (samples weighted by the time they stand
//!   for; gaps in the trace count for nothing);
//! - CPU: slack likewise, and the share of samples above the applied CPU;
//! - churn: applied changes per day, and memory cuts per day.
//!
//! Policies: `tailor` (the real estimator with [`Options::tailor_policy`]), `vpa` (upstream
//! VPA's recommender as in the reference: decaying histograms, P90 x 1.15, daily memory peaks,
//! OOM bump, confidence bounds), `krr` (Robusta KRR `simple`: CPU p95, memory peak x 1.15, 14 days) and `provisioned`
//! (the trace's own limits).

use std::collections::VecDeque;

use super::estimator::{self, Current, Policy, Settings, Verdict};
use super::histogram::DecayingHistogram;
use super::history::ContainerHistory;
use super::trace::{Sample, Trace};

const MI: f64 = 1024.0 * 1024.0;
const DAY: f64 = 86_400.0;

/// A policy under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// tailor's estimator with the default policy.
    Tailor,
    /// Upstream VPA's recommender.
    Vpa,
    /// Robusta KRR `simple`.
    Krr,
    /// The trace's own limits.
    Provisioned,
}

impl PolicyKind {
    /// Every policy, in report order.
    pub const ALL: [PolicyKind; 4] = [Self::Tailor, Self::Vpa, Self::Krr, Self::Provisioned];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tailor => "tailor",
            Self::Vpa => "vpa",
            Self::Krr => "krr",
            Self::Provisioned => "provisioned",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// How the backtest walks.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Seconds between decisions.
    pub decision_interval: f64,
    /// Seconds of history before the first decision.
    pub warmup: f64,
    /// The relative change below which the updater leaves a resource alone.
    pub min_change: f64,
    /// tailor's history window, seconds.
    pub tailor_window: f64,
    /// tailor's policy (a VerticalAutoscaler's `recommenderPolicy`, as the estimator reads it).
    pub tailor_policy: Policy,
    /// tailor's estimator settings.
    pub settings: Settings,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            decision_interval: 3600.0,
            warmup: DAY,
            min_change: 0.1,
            tailor_window: 14.0 * DAY,
            tailor_policy: Policy::default(),
            settings: Settings::default(),
        }
    }
}

/// One decision of one policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Seconds (the trace's clock).
    pub time: f64,
    /// The policy.
    pub policy: PolicyKind,
    /// Recommended cores, when the policy had one.
    pub cpu: Option<f64>,
    /// Recommended bytes.
    pub memory: Option<f64>,
    /// The memory floor the policy reported (tailor), bytes.
    pub memory_floor: Option<f64>,
    /// The cores in force after the decision (what the updater would have applied).
    pub applied_cpu: Option<f64>,
    /// The bytes in force after the decision.
    pub applied_memory: Option<f64>,
    /// Taken at a would-be OOM kill rather than on the decision interval.
    pub after_oom: bool,
}

/// The score of one policy on one trace.
#[derive(Clone, Debug, PartialEq)]
pub struct Score {
    /// The policy.
    pub policy: PolicyKind,
    /// Would-be OOM kills.
    pub oom_events: u32,
    /// Mean memory slack (0..1) over the scored time.
    pub memory_slack: f64,
    /// Mean CPU slack (0..1) over the scored time.
    pub cpu_slack: f64,
    /// Share of scored samples whose CPU use is above the applied CPU.
    pub cpu_over: f64,
    /// Applied changes per day.
    pub changes_per_day: f64,
    /// Applied memory decreases per day (each a restart or an approval with tailor).
    pub memory_cuts_per_day: f64,
    /// Seconds of usage scored (with something applied).
    pub scored_seconds: f64,
}

/// One resource of a recommendation: the target, and the bounds and floor that tell the
/// updater when to act.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Target {
    value: f64,
    /// Act when the applied value is outside `[lower, upper]` (tailor's updater rule).
    bounds: Option<(f64, f64)>,
    /// Act when the applied value is below this, and never go below it (memory).
    floor: Option<f64>,
}

impl Target {
    fn bare(value: f64) -> Self {
        Self {
            value,
            ..Self::default()
        }
    }
}

/// What a policy recommends: cores and bytes, `None` for a resource it cannot recommend yet.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Rec {
    cpu: Option<Target>,
    memory: Option<Target>,
}

impl Rec {
    fn bare(cpu: Option<f64>, memory: Option<f64>) -> Self {
        Self {
            cpu: cpu.map(Target::bare),
            memory: memory.map(Target::bare),
        }
    }
}

/// A policy's state.
trait Recommender {
    fn observe(&mut self, t: f64, cpu: f64, memory: f64, weight: f64);
    fn oom(&mut self, t: f64, memory_in_force: f64);
    fn recommend(&mut self, now: f64, applied: (Option<f64>, Option<f64>)) -> Rec;
}

struct TailorPolicy {
    history: ContainerHistory,
    window: f64,
    policy: Policy,
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

    fn recommend(&mut self, now: f64, applied: (Option<f64>, Option<f64>)) -> Rec {
        self.history.expire(now - self.window);
        let current = Current {
            cpu: applied.0,
            memory: applied.1,
        };
        match estimator::estimate(&self.history, &self.policy, None, &current, &self.settings) {
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
struct VpaPolicy {
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
    fn new() -> Self {
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
struct Provisioned {
    last: Rec,
}

impl Provisioned {
    fn see(&mut self, cpu_limit: Option<f64>, memory_limit: Option<f64>) {
        self.last = Rec::bare(cpu_limit, memory_limit);
    }
}

/// The value the updater would apply, following its rule (`updater/src/plan/mod.rs`,
/// `decide`): a memory decrease stops at the floor; the updater acts when there is nothing
/// applied yet, when the applied value is below the floor or outside the bounds, or when the
/// target is at least `min_change` away.
fn next_value(applied: Option<f64>, target: Option<Target>, min_change: f64) -> Option<f64> {
    let t = target.filter(|t| t.value.is_finite() && t.value > 0.0)?;
    let Some(cur) = applied else {
        return Some(t.value);
    };
    let floor = t.floor.unwrap_or(0.0);
    let value = if t.value < cur {
        t.value.max(floor)
    } else {
        t.value
    };
    if value == cur {
        return None;
    }
    let outside = t.bounds.is_some_and(|(lo, up)| cur < lo || cur > up);
    let relative = if cur > 0.0 {
        (value - cur).abs() / cur
    } else {
        f64::INFINITY
    };
    (cur < floor || outside || relative >= min_change).then_some(value)
}

/// What one policy has applied, and its running score.
#[derive(Default)]
struct Tally {
    cpu: Option<f64>,
    memory: Option<f64>,
    changes: u32,
    memory_cuts: u32,
    in_oom: bool,
    oom_events: u32,
    memory_slack: f64,
    memory_time: f64,
    cpu_slack: f64,
    cpu_time: f64,
    cpu_over: u32,
    cpu_samples: u32,
}

impl Tally {
    /// Applies a recommendation as the updater would.
    fn apply(&mut self, rec: &Rec, min_change: f64) {
        let cpu = next_value(self.cpu, rec.cpu, min_change);
        let memory = next_value(self.memory, rec.memory, min_change);
        if cpu.is_some() || memory.is_some() {
            self.changes += 1;
        }
        if let (Some(new), Some(old)) = (memory, self.memory)
            && new < old
        {
            self.memory_cuts += 1;
        }
        self.cpu = cpu.or(self.cpu);
        self.memory = memory.or(self.memory);
    }
}

/// Backtests `policies` on `trace`; returns one score per policy (in the order given) and every
/// decision.
pub fn run(
    trace: &Trace,
    policies: &[PolicyKind],
    options: &Options,
) -> (Vec<Score>, Vec<Decision>) {
    let Some(first) = trace.samples.first() else {
        return (Vec::new(), Vec::new());
    };
    let mut replay = Replay::new(trace, policies, options);
    let scored_from = first.time + options.warmup;
    let mut next_decision = scored_from;
    for (idx, s) in trace.samples.iter().enumerate() {
        replay.provisioned.see(s.cpu_limit, s.memory_limit);
        // Decisions due before this sample see only earlier samples.
        while s.time >= next_decision {
            for i in 0..policies.len() {
                replay.decide(i, next_decision, false);
            }
            next_decision += options.decision_interval;
        }
        let weight = trace.weight(idx);
        for i in 0..policies.len() {
            if s.time >= scored_from && replay.score(i, s, weight) {
                // A would-be kill: the policy has seen the sample and decided again.
                continue;
            }
            if let Some(model) = replay.models[i].as_mut() {
                model.observe(s.time, s.cpu, s.memory, weight);
            }
        }
    }
    let scores = policies
        .iter()
        .zip(&replay.tallies)
        .map(|(p, t)| t.score(*p))
        .collect();
    (scores, replay.decisions)
}

/// The policies replayed over one trace: their models, what each has applied, and the
/// decisions so far.
struct Replay<'a> {
    policies: &'a [PolicyKind],
    options: &'a Options,
    /// `None` for `provisioned`, which reads the trace's limits.
    models: Vec<Option<Box<dyn Recommender>>>,
    provisioned: Provisioned,
    tallies: Vec<Tally>,
    decisions: Vec<Decision>,
}

impl<'a> Replay<'a> {
    fn new(trace: &Trace, policies: &'a [PolicyKind], options: &'a Options) -> Self {
        let mut settings = options.settings.clone();
        settings.sample_interval = trace.interval;
        let models = policies
            .iter()
            .map(|p| -> Option<Box<dyn Recommender>> {
                match p {
                    PolicyKind::Tailor => Some(Box::new(TailorPolicy {
                        history: ContainerHistory::default(),
                        window: options.tailor_window,
                        policy: options.tailor_policy.clone(),
                        settings: settings.clone(),
                    })),
                    PolicyKind::Vpa => Some(Box::new(VpaPolicy::new())),
                    PolicyKind::Krr => Some(Box::new(KrrPolicy {
                        window: VecDeque::new(),
                        last_oom: None,
                    })),
                    PolicyKind::Provisioned => None,
                }
            })
            .collect();
        Self {
            policies,
            options,
            models,
            provisioned: Provisioned {
                last: Rec::default(),
            },
            tallies: policies.iter().map(|_| Tally::default()).collect(),
            decisions: Vec::new(),
        }
    }

    /// Policy `i` recommends at `now`; what the updater would apply is recorded.
    fn decide(&mut self, i: usize, now: f64, after_oom: bool) {
        let tally = &mut self.tallies[i];
        let rec = match self.models[i].as_mut() {
            Some(m) => m.recommend(now, (tally.cpu, tally.memory)),
            None => self.provisioned.last,
        };
        tally.apply(&rec, self.options.min_change);
        self.decisions.push(Decision {
            time: now,
            policy: self.policies[i],
            cpu: rec.cpu.map(|t| t.value),
            memory: rec.memory.map(|t| t.value),
            memory_floor: rec.memory.and_then(|t| t.floor),
            applied_cpu: tally.cpu,
            applied_memory: tally.memory,
            after_oom,
        });
    }

    /// Scores sample `s` against what policy `i` has applied. On the first sample of a
    /// would-be OOM kill the policy is told, sees the sample and decides again at once: then
    /// `true`.
    fn score(&mut self, i: usize, s: &Sample, weight: f64) -> bool {
        let t = &mut self.tallies[i];
        if let Some(m) = t.memory {
            t.memory_slack += weight * (1.0 - s.memory / m).max(0.0);
            t.memory_time += weight;
            if s.memory <= m {
                t.in_oom = false;
            } else if !t.in_oom {
                t.in_oom = true;
                t.oom_events += 1;
                if let Some(model) = self.models[i].as_mut() {
                    model.oom(s.time, m);
                    model.observe(s.time, s.cpu, s.memory, weight);
                }
                self.decide(i, s.time, true);
                return true;
            }
        }
        if let Some(c) = t.cpu {
            t.cpu_slack += weight * (1.0 - s.cpu / c).max(0.0);
            t.cpu_time += weight;
            t.cpu_samples += 1;
            if s.cpu > c {
                t.cpu_over += 1;
            }
        }
        false
    }
}

impl Tally {
    /// The averages of what was tallied (NaN where nothing was scored).
    fn score(&self, policy: PolicyKind) -> Score {
        let ratio = |n: f64, d: f64| if d > 0.0 { n / d } else { f64::NAN };
        let days = self.memory_time.max(self.cpu_time) / DAY;
        Score {
            policy,
            oom_events: self.oom_events,
            memory_slack: ratio(self.memory_slack, self.memory_time),
            cpu_slack: ratio(self.cpu_slack, self.cpu_time),
            cpu_over: ratio(f64::from(self.cpu_over), f64::from(self.cpu_samples)),
            changes_per_day: ratio(f64::from(self.changes), days),
            memory_cuts_per_day: ratio(f64::from(self.memory_cuts), days),
            scored_seconds: self.memory_time.max(self.cpu_time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(rows: impl Iterator<Item = (f64, f64, f64)>, limits: &str) -> Trace {
        let mut text =
            String::from("timestamp,cpu_cores,memory_bytes,cpu_limit_cores,memory_limit_bytes\n");
        for (t, c, m) in rows {
            text.push_str(&format!("{t},{c},{m},{limits}\n"));
        }
        Trace::parse("test.csv", &text).unwrap()
    }

    const GIB: f64 = 1024.0 * MI;

    #[test]
    fn a_flat_workload_is_scored_without_ooms_and_with_little_slack() {
        // Three days at 5 minutes, flat 0.5 core and 1 GiB, provisioned 2 cores / 4 GiB.
        let t = trace(
            (0..864).map(|i| (f64::from(i) * 300.0, 0.5, GIB)),
            "2,4294967296",
        );
        let (scores, decisions) = run(&t, &PolicyKind::ALL, &Options::default());
        for s in &scores {
            assert_eq!(s.oom_events, 0, "{s:?}");
        }
        let by = |p: PolicyKind| scores.iter().find(|s| s.policy == p).unwrap();
        // Provisioned: 75% of memory and CPU idle.
        assert!((by(PolicyKind::Provisioned).memory_slack - 0.75).abs() < 1e-9);
        assert!((by(PolicyKind::Provisioned).cpu_slack - 0.75).abs() < 1e-9);
        // The recommenders sit a margin above the usage.
        for p in [PolicyKind::Tailor, PolicyKind::Vpa, PolicyKind::Krr] {
            let s = by(p);
            assert!(s.memory_slack > 0.0 && s.memory_slack < 0.3, "{s:?}");
            // KRR's CPU is the bare p95: no slack on a flat line.
            assert!(s.cpu_slack >= 0.0 && s.cpu_slack < 0.3, "{s:?}");
            assert_eq!(s.cpu_over, 0.0, "{s:?}");
            // One change when the first recommendation arrives, then nothing to change.
            assert!(s.changes_per_day < 1.0, "{s:?}");
        }
        // Decisions hourly after a day of warmup, for each policy.
        let tailor: Vec<_> = decisions
            .iter()
            .filter(|d| d.policy == PolicyKind::Tailor)
            .collect();
        assert_eq!(tailor[0].time, DAY);
        assert_eq!(tailor[1].time - tailor[0].time, 3600.0);
    }

    #[test]
    fn a_run_above_the_memory_is_one_oom_and_the_policy_learns_of_it() {
        // Two days at 1 GiB, then memory steps up to 3 GiB for an hour, every day.
        let rows = (0..(5 * 288)).map(|i| {
            let t = f64::from(i) * 300.0;
            let stepped = t > 2.0 * DAY && (t % DAY) < 3600.0;
            (t, 0.2, if stepped { 3.0 * GIB } else { GIB })
        });
        let t = trace(rows, ",");
        let (scores, decisions) = run(
            &t,
            &[PolicyKind::Tailor, PolicyKind::Krr],
            &Options::default(),
        );
        for s in &scores {
            // The first step is a kill; the bump after it covers the later steps.
            assert_eq!(s.oom_events, 1, "{s:?}");
        }
        // Each policy decided again at the kill.
        let at_kill = decisions.iter().filter(|d| d.after_oom).count();
        assert_eq!(at_kill, 2);
        assert!(
            decisions
                .iter()
                .all(|d| d.after_oom == (d.time > 2.0 * DAY && d.time % 3600.0 != 0.0))
        );
        // tailor raised memory above 3 GiB right after the kill (the OOM bump).
        let after = decisions
            .iter()
            .find(|d| d.policy == PolicyKind::Tailor && d.after_oom)
            .unwrap();
        assert!(after.memory.unwrap() >= 1.2 * GIB, "{after:?}");
        assert_eq!(after.applied_memory, after.memory, "{after:?}");
        assert!(after.memory_floor.unwrap() >= 1.2 * GIB, "{after:?}");
    }

    #[test]
    fn gaps_are_not_scored_and_provisioned_without_limits_scores_nothing() {
        // A day, a week-long hole, a day.
        let rows = (0..288)
            .map(|i| (f64::from(i) * 300.0, 0.3, GIB))
            .chain((0..288).map(|i| (9.0 * DAY + f64::from(i) * 300.0, 0.3, GIB)));
        let t = trace(rows, ",");
        let (scores, _) = run(
            &t,
            &[PolicyKind::Tailor, PolicyKind::Provisioned],
            &Options::default(),
        );
        let tailor = &scores[0];
        // Scored: the second day only (the first is warmup), not the hole.
        assert!((tailor.scored_seconds - DAY).abs() <= 300.0, "{tailor:?}");
        assert_eq!(scores[1].scored_seconds, 0.0);
        assert!(scores[1].memory_slack.is_nan());
    }

    #[test]
    fn min_change_keeps_small_moves_from_being_applied() {
        let mut t = Tally::default();
        t.apply(&Rec::bare(Some(1.0), Some(GIB)), 0.1);
        t.apply(&Rec::bare(Some(1.05), Some(1.05 * GIB)), 0.1);
        assert_eq!((t.cpu, t.memory, t.changes), (Some(1.0), Some(GIB), 1));
        t.apply(&Rec::bare(Some(1.2), Some(1.05 * GIB)), 0.1);
        assert_eq!((t.cpu, t.memory, t.changes), (Some(1.2), Some(GIB), 2));
    }

    #[test]
    fn tailor_is_applied_as_its_updater_acts() {
        let rec = |value: f64, bounds: (f64, f64), floor: Option<f64>| Rec {
            cpu: None,
            memory: Some(Target {
                value,
                bounds: Some(bounds),
                floor,
            }),
        };
        let mut t = Tally {
            memory: Some(GIB),
            ..Tally::default()
        };
        // 5% up, within the bounds: left alone.
        t.apply(&rec(1.05 * GIB, (0.9 * GIB, 1.2 * GIB), None), 0.1);
        assert_eq!(t.memory, Some(GIB));
        // 5% up, but the applied value is below the floor: applied.
        t.apply(
            &rec(1.05 * GIB, (0.9 * GIB, 1.2 * GIB), Some(1.02 * GIB)),
            0.1,
        );
        assert_eq!(t.memory, Some(1.05 * GIB));
        // 5% down, but the applied value is above the upper bound: applied.
        t.apply(&rec(GIB, (0.9 * GIB, 1.01 * GIB), None), 0.1);
        assert_eq!(t.memory, Some(GIB));
        // A large cut stops at the floor.
        t.apply(
            &rec(0.5 * GIB, (0.4 * GIB, 0.6 * GIB), Some(0.8 * GIB)),
            0.1,
        );
        assert_eq!(t.memory, Some(0.8 * GIB));
        assert_eq!(t.changes, 3);
        assert_eq!(t.memory_cuts, 2);
    }

    #[test]
    fn vpa_bounds_widen_with_little_history() {
        let mut vpa = VpaPolicy::new();
        let flat = |vpa: &mut VpaPolicy, from: f64, days: f64| {
            let mut t = from;
            while t < from + days * DAY {
                vpa.observe(t, 0.5, GIB, 300.0);
                t += 300.0;
            }
        };
        flat(&mut vpa, 0.0, 1.0);
        let one_day = vpa.recommend(DAY, (None, None)).memory.unwrap();
        let (lower, upper) = one_day.bounds.unwrap();
        // One day of evidence: upper = P95 x 1.15 x 2.
        assert!(upper / one_day.value > 1.9, "{one_day:?}");
        assert!(lower <= one_day.value);
        flat(&mut vpa, DAY, 7.0);
        let week = vpa.recommend(8.0 * DAY, (None, None)).memory.unwrap();
        let (_, upper) = week.bounds.unwrap();
        // Eight days: x (1 + 1/8).
        assert!(upper / week.value < 1.2, "{week:?}");
    }

    #[test]
    fn policy_names_round_trip() {
        for p in PolicyKind::ALL {
            assert_eq!(PolicyKind::parse(p.name()), Some(p));
        }
        assert_eq!(PolicyKind::parse("goldilocks"), None);
    }
}
