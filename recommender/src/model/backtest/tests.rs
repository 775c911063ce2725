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
