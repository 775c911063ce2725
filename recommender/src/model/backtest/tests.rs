//! The backtest engine on small made-up traces.

use super::policies::VpaPolicy;
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

/// The memory tailor has in force after two days flat at 1 GiB, sampled every 5 minutes.
fn applied_after_two_flat_days() -> f64 {
    let t = trace((0..578).map(|i| (f64::from(i) * 300.0, 0.2, GIB)), ",");
    let (_, decisions) = run(&t, &[PolicyKind::Tailor], &Options::default());
    decisions.last().and_then(|d| d.applied_memory).unwrap()
}

/// Two days flat at 1 GiB every 5 minutes; from 10 minutes into the third day (between two
/// hourly decisions) the samples of `tail`; then a day flat at 1 GiB again.
fn flat_then(tail: &[f64]) -> Trace {
    let rows = (0..578)
        .map(|_| GIB)
        .chain(tail.iter().copied())
        .chain((0..288).map(|_| GIB))
        .enumerate()
        .map(|(i, m)| (i as f64 * 300.0, 0.2, m));
    trace(rows, ",")
}

fn with_guard(guard: Guard) -> Options {
    Options {
        guard,
        ..Options::default()
    }
}

/// tailor's score and decisions, and its guard raises (time, memory in force after).
fn tailor(t: &Trace, options: &Options) -> (Score, Vec<Decision>, Vec<(f64, f64)>) {
    let (scores, decisions) = run(t, &[PolicyKind::Tailor], options);
    let raises = decisions
        .iter()
        .filter(|d| d.guard_raise)
        .map(|d| (d.time, d.applied_memory.unwrap()))
        .collect();
    (scores[0].clone(), decisions, raises)
}

#[test]
fn a_ramp_seen_above_the_threshold_is_saved_by_the_guard_and_killed_without() {
    let m = applied_after_two_flat_days();
    // 1 GiB is below 90% of what is in force: the flat days raise nothing.
    assert!(GIB < 0.9 * m, "{m}");
    // 95% of the memory in force, then 5% above it: within use x 1.5.
    let t = flat_then(&[0.95 * m, 1.05 * m]);
    let (score, decisions, raises) = tailor(&t, &Options::default());
    assert_eq!(score.oom_events, 0, "{score:?}");
    // Raised once, after the first sample, to 1.425 m (1.05 m is below 90% of that).
    assert_eq!(raises.len(), 1, "{raises:?}");
    assert_eq!(score.guard_raises, 1);
    assert!((raises[0].1 - 1.425 * m).abs() < 1.0, "{raises:?}");
    // The raise is in force from the next sample on, not for the one that prompted it.
    assert_eq!(raises[0].0, 578.0 * 300.0);
    // No decision after the raise undoes it (the peak with its margin is below it: 1.05 m x
    // 1.21), so the estimator keeps the raise as a floor and nothing is cut.
    for d in decisions.iter().filter(|d| d.time > raises[0].0) {
        assert!(d.applied_memory.unwrap() >= raises[0].1, "{d:?}");
    }
    assert_eq!(score.memory_cuts_per_day, 0.0, "{score:?}");
    assert!(score.guard_raises_per_day > 0.0);

    // Without the guard the second sample is a kill.
    let (score, _, raises) = tailor(&t, &with_guard(Guard::off()));
    assert_eq!(score.oom_events, 1, "{score:?}");
    assert!(raises.is_empty());
    assert_eq!(score.guard_raises, 0);
    assert!(score.guard_raises_per_day.is_nan());
}

#[test]
fn a_jump_from_below_the_threshold_over_the_limit_is_still_a_kill() {
    let m = applied_after_two_flat_days();
    // From 1 GiB (below 90% of m) straight to 1.3 m in one sample: nothing to see before.
    let t = flat_then(&[1.3 * m]);
    let (score, _, raises) = tailor(&t, &Options::default());
    assert_eq!(score.oom_events, 1, "{score:?}");
    assert!(raises.is_empty(), "{raises:?}");
    // Even a guard that raises 10-fold is too late for it.
    let eager = Guard {
        step: 9.0,
        ..Guard::default()
    };
    assert_eq!(tailor(&t, &with_guard(eager)).0.oom_events, 1);
}

#[test]
fn the_guard_waits_its_min_interval_and_never_lowers_the_memory() {
    let m = applied_after_two_flat_days();
    let t = flat_then(&[0.95 * m, 1.3 * m, 1.8 * m]);
    // Every sample above the threshold raises: no kill, three raises.
    let (score, decisions, raises) = tailor(&t, &Options::default());
    assert_eq!((score.oom_events, raises.len()), (0, 3), "{raises:?}");
    // Each raise is above what was in force before it.
    let mut in_force = 0.0;
    for d in &decisions {
        let applied = d.applied_memory.unwrap_or(0.0);
        if d.guard_raise {
            assert!(applied > in_force, "{d:?} after {in_force}");
        }
        in_force = applied;
    }
    // Ten minutes between raises: the second sample (5 minutes after the first raise) is not
    // raised for, and the third, above the first raise, is a kill.
    let slow = Guard {
        min_interval: 600.0,
        ..Guard::default()
    };
    let (score, _, raises) = tailor(&t, &with_guard(slow));
    assert_eq!((score.oom_events, raises.len()), (1, 1), "{raises:?}");
    assert_eq!(score.guard_raises, 1);
}

#[test]
fn only_tailor_has_a_guard() {
    let m = applied_after_two_flat_days();
    let t = flat_then(&[0.95 * m, 1.05 * m]);
    let (scores, decisions) = run(&t, &PolicyKind::ALL, &Options::default());
    for s in &scores[1..] {
        assert_eq!(s.guard_raises, 0, "{s:?}");
        assert!(s.guard_raises_per_day.is_nan(), "{s:?}");
    }
    assert!(
        decisions
            .iter()
            .all(|d| !d.guard_raise || d.policy == PolicyKind::Tailor)
    );
    assert_eq!(scores[0].guard_raises, 1);
}

#[test]
fn a_recorded_kill_is_learned_at_its_time_by_every_policy_and_not_scored() {
    // Three days flat at 0.2 cores and 1 GiB; a kill recorded under a 1.5 GiB limit ten
    // minutes into the third day (the scrape before it never showed the spike).
    let kill = 2.0 * DAY + 600.0;
    let mut t = trace(
        (0..864).map(|i| (f64::from(i) * 300.0, 0.2, GIB)),
        "2,4294967296",
    );
    let (_, before) = run(&t, &PolicyKind::ALL, &Options::default());
    t.ooms = vec![OomKill {
        time: kill,
        limit: 1.5 * GIB,
    }];
    let (scores, decisions) = run(&t, &PolicyKind::ALL, &Options::default());
    for s in &scores {
        assert_eq!(
            s.oom_events, 0,
            "a recorded kill is not a would-be kill: {s:?}"
        );
    }
    // The same decision points: no decision is taken at the recorded kill.
    assert_eq!(decisions.len(), before.len());
    assert!(decisions.iter().all(|d| !d.after_oom));
    let memory = |ds: &[Decision], p: PolicyKind, at: f64| {
        ds.iter()
            .find(|d| d.policy == p && d.time == at)
            .and_then(|d| d.memory)
            .unwrap()
    };
    // Before the kill, nothing changes; at the first decision after it every recommender
    // reacts: tailor's OOM bump (1.5 GiB x 1.2, rounded up to 16 MiB), KRR's 1.25 x the limit
    // at the last kill, VPA's peak of max(used + 100 MiB, used x 1.2).
    let (last_before, first_after) = (2.0 * DAY, 2.0 * DAY + 3600.0);
    for p in [PolicyKind::Tailor, PolicyKind::Vpa, PolicyKind::Krr] {
        assert_eq!(
            memory(&decisions, p, last_before),
            memory(&before, p, last_before),
            "{p:?}"
        );
        assert!(
            memory(&decisions, p, first_after) > memory(&before, p, first_after) + 0.4 * GIB,
            "{p:?}"
        );
    }
    let tailor = decisions
        .iter()
        .rfind(|d| d.policy == PolicyKind::Tailor)
        .unwrap();
    let bump = 1.8 * GIB;
    assert!(
        (bump..bump + 16.0 * MI).contains(&tailor.memory_floor.unwrap()),
        "{tailor:?}"
    );
    assert_eq!(tailor.memory, tailor.memory_floor, "{tailor:?}");
    assert!(memory(&decisions, PolicyKind::Krr, first_after) >= 1.25 * 1.5 * GIB);
    // The provisioned sizes are the trace's, kill or not.
    assert_eq!(
        memory(&decisions, PolicyKind::Provisioned, first_after),
        memory(&before, PolicyKind::Provisioned, first_after)
    );
}

#[test]
fn tailor_never_goes_below_its_heap_floor() {
    // Two days flat at 1 GiB, under a 3 GiB heap floor: every recommendation is the floor.
    let t = trace((0..578).map(|i| (f64::from(i) * 300.0, 0.2, GIB)), ",");
    let floor = 3.0 * GIB;
    let options = Options {
        tailor_heap_floor: Some(floor),
        ..Options::default()
    };
    let (_, decisions) = run(&t, &[PolicyKind::Tailor, PolicyKind::Krr], &options);
    let of = |p: PolicyKind| decisions.iter().filter(move |d| d.policy == p);
    assert!(of(PolicyKind::Tailor).count() > 20);
    for d in of(PolicyKind::Tailor) {
        assert_eq!(d.memory, Some(floor), "{d:?}");
        assert_eq!(d.memory_floor, Some(floor), "{d:?}");
    }
    // The heap floor is tailor's: KRR sizes on the usage.
    assert!(of(PolicyKind::Krr).all(|d| d.memory.is_some_and(|m| m < 1.2 * GIB)));
}
