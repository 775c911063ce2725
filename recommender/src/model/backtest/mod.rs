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
//! - churn: applied changes per day, and memory cuts per day;
//! - the live memory guard ([`Guard`], tailor only, on unless turned off): after a sample above
//!   its threshold the memory in force is raised from the next sample on; raises per day.
//!
//! OOM kills recorded with the trace ([`Trace::ooms`], a live workload's) are evidence of use
//! up to the limit in force, whatever each policy would have applied: every policy is told of
//! each at its time, with that limit, as it would learn of it in a cluster, and reacts at its
//! next decision. They are not scored as would-be kills.
//!
//! Policies: `tailor` (the real estimator with [`Options::tailor_policy`]), `vpa` (upstream
//! VPA's recommender as in the reference: decaying histograms, P90 x 1.15, daily memory peaks,
//! OOM bump, confidence bounds), `krr` (Robusta KRR `simple`: CPU p95, memory peak x 1.15, 14
//! days) and `provisioned` (the trace's own limits).

mod guard;
mod policies;
#[cfg(test)]
mod tests;

use super::estimator::{Policy, Settings};
use super::history::OomKill;
use super::trace::{Sample, Trace};
use policies::{Provisioned, Rec, Recommender, Target};

pub use guard::Guard;

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
    /// The heap floor tailor's estimator gets (heap ceiling + overhead, bytes), as the
    /// recommender computes it from the container's heap hints; `None` without one.
    pub tailor_heap_floor: Option<f64>,
    /// The live memory guard, modelled for tailor.
    pub guard: Guard,
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
            tailor_heap_floor: None,
            guard: Guard::default(),
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
    /// Not a decision of the policy but a raise by the live memory guard: `memory` is what the
    /// guard raised to, in force from the next sample on; `cpu` and `memory_floor` are `None`.
    pub guard_raise: bool,
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
    /// Raises by the live memory guard (not counted in the changes).
    pub guard_raises: u32,
    /// Guard raises per day; NaN where the guard is not modelled.
    pub guard_raises_per_day: f64,
    /// Seconds of usage scored (with something applied).
    pub scored_seconds: f64,
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
    /// Whether the guard is modelled for this policy.
    guarded: bool,
    guard_raises: u32,
    last_raise: Option<f64>,
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
        // Decisions due before this sample see only earlier samples and recorded kills.
        while s.time >= next_decision {
            replay.recorded_ooms(|t| t < next_decision);
            for i in 0..policies.len() {
                replay.decide(i, next_decision, false);
            }
            next_decision += options.decision_interval;
        }
        replay.recorded_ooms(|t| t <= s.time);
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
    /// The trace's recorded OOM kills not yet told, latest first.
    recorded: Vec<OomKill>,
}

impl<'a> Replay<'a> {
    fn new(trace: &Trace, policies: &'a [PolicyKind], options: &'a Options) -> Self {
        let models = policies
            .iter()
            .map(|p| policies::model(*p, options, trace.interval))
            .collect();
        Self {
            policies,
            options,
            models,
            provisioned: Provisioned::default(),
            tallies: policies
                .iter()
                .map(|p| Tally {
                    guarded: *p == PolicyKind::Tailor && options.guard.enabled,
                    ..Tally::default()
                })
                .collect(),
            decisions: Vec::new(),
            recorded: {
                let mut r = trace.ooms.clone();
                r.sort_by(|a, b| b.time.total_cmp(&a.time));
                r
            },
        }
    }

    /// Tells every policy of the recorded OOM kills whose time passes `due`, with the limit in
    /// force at each.
    fn recorded_ooms(&mut self, due: impl Fn(f64) -> bool) {
        while let Some(kill) = self.recorded.pop_if(|k| due(k.time)) {
            for model in self.models.iter_mut().flatten() {
                model.oom(kill.time, kill.limit);
            }
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
            guard_raise: false,
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
        self.guard(i, s);
        false
    }

    /// The live memory guard after sample `s` (not a kill): when the use is above the
    /// threshold, the memory in force is raised from the next sample on, and the policy told.
    fn guard(&mut self, i: usize, s: &Sample) {
        let t = &mut self.tallies[i];
        let Some(m) = t.memory.filter(|_| t.guarded) else {
            return;
        };
        let max_allowed = self.options.tailor_policy.max_allowed.memory;
        let Some(to) = self
            .options
            .guard
            .raise(s.time, s.memory, m, t.last_raise, max_allowed)
        else {
            return;
        };
        t.memory = Some(to);
        t.guard_raises += 1;
        t.last_raise = Some(s.time);
        if let Some(model) = self.models[i].as_mut() {
            model.guard_raise(s.time, to);
        }
        self.decisions.push(Decision {
            time: s.time,
            policy: self.policies[i],
            cpu: None,
            memory: Some(to),
            memory_floor: None,
            applied_cpu: t.cpu,
            applied_memory: t.memory,
            after_oom: false,
            guard_raise: true,
        });
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
            guard_raises: self.guard_raises,
            guard_raises_per_day: if self.guarded {
                ratio(f64::from(self.guard_raises), days)
            } else {
                f64::NAN
            },
            scored_seconds: self.memory_time.max(self.cpu_time),
        }
    }
}
