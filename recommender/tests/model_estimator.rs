//! CPU and memory targets, bounds, the memory floor and its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use tailor_recommender::model::estimator::*;
use tailor_recommender::model::heap::{HeapHint, HeapSize, Runtime, floor};
use tailor_recommender::model::history::ContainerHistory;

const MI: f64 = 1024.0 * 1024.0;
const GI: f64 = 1024.0 * MI;
const DAY: f64 = 86_400.0;
const HOUR: f64 = 3600.0;

/// A week of one-minute samples from `cpu(t)` and `memory(t)`.
fn week(cpu: impl Fn(f64) -> f64, memory: impl Fn(f64) -> f64) -> ContainerHistory {
    let mut h = ContainerHistory::default();
    let mut t = 0.0;
    while t <= 7.0 * DAY {
        h.add_cpu(t, cpu(t));
        h.add_memory(t, memory(t));
        t += 60.0;
    }
    h
}

fn est(h: &ContainerHistory, policy: &Policy, heap: Option<f64>, current: Current) -> Estimate {
    match estimate(h, policy, heap, &current, &Settings::default()) {
        Verdict::Estimate(e) => e,
        Verdict::NotEnoughHistory(m) => panic!("no estimate: {m}"),
    }
}

#[test]
fn cpu_is_the_percentile_with_margin() {
    let h = week(
        |t| {
            if (t / 60.0) as i64 % 20 == 0 {
                2.0
            } else {
                0.5
            }
        },
        |_| 300.0 * MI,
    );
    let e = est(&h, &Policy::default(), None, Current::default());
    // p90 of a distribution with 5% at 2 cores and 95% at 0.5: the 0.5 bucket end, + 15%.
    assert!((575..=610).contains(&e.target.cpu), "{:?}", e.target);
    assert!(e.lower.cpu <= e.target.cpu && e.target.cpu <= e.upper.cpu);
    assert_eq!(e.peak.cpu, 2000);
    assert!(!e.low_confidence);
}

#[test]
fn memory_never_below_the_peak_with_its_margin() {
    // Spiky: 200 MiB, with a 1 GiB spike for 10 minutes once.
    let spiky = week(
        |_| 0.1,
        |t| {
            if (3.0 * DAY..3.0 * DAY + 600.0).contains(&t) {
                GI
            } else {
                200.0 * MI
            }
        },
    );
    let e = est(&spiky, &Policy::default(), None, Current::default());
    assert!(e.target.memory as f64 >= 1.1 * GI, "{}", e.target.memory);
    assert_eq!(e.reason, MemoryReason::Peak);
    assert!(e.floor as f64 >= 1.1 * GI);
    assert!(
        e.lower.memory >= e.floor,
        "the lower bound respects the floor"
    );
    // Leaking: the latest value is the peak.
    let leaking = week(|_| 0.1, |t| 100.0 * MI + t / DAY * 50.0 * MI);
    let e = est(&leaking, &Policy::default(), None, Current::default());
    assert!(e.floor as f64 >= (1.1 * 450.0 * MI).floor());
    assert!(e.target.memory >= e.floor);
}

#[test]
fn a_jump_to_a_new_high_widens_the_margin_over_the_peak() {
    // 1 GiB for three days, then a step to 1.3 GiB: a 30% jump after the first day.
    let stepped = week(|_| 0.1, |t| if t < 3.0 * DAY { GI } else { 1.3 * GI });
    let e = est(&stepped, &Policy::default(), None, Current::default());
    assert!((e.peak_margin - 0.3).abs() < 0.01, "{}", e.peak_margin);
    assert_eq!(e.reason, MemoryReason::Peak);
    assert!(e.floor as f64 >= 1.3 * 1.3 * GI, "{}", e.floor);
    // Capped by maxGrowthMargin, never below peakMargin.
    let capped = Policy {
        max_growth_margin: 0.2,
        ..Policy::default()
    };
    let e = est(&stepped, &capped, None, Current::default());
    assert!((e.peak_margin - 0.2).abs() < 1e-9, "{}", e.peak_margin);
    let off = Policy {
        max_growth_margin: 0.0,
        ..Policy::default()
    };
    let e = est(&stepped, &off, None, Current::default());
    assert!((e.peak_margin - 0.15).abs() < 1e-9, "{}", e.peak_margin);
    let floor = e.floor as f64;
    assert!(
        (1.3 * 1.15 * GI..1.3 * 1.15 * GI + 16.0 * MI).contains(&floor),
        "{floor}"
    );
    // A flat workload keeps peakMargin.
    let flat = week(|_| 0.1, |_| GI);
    let e = est(&flat, &Policy::default(), None, Current::default());
    assert_eq!(e.peak_margin, 0.15);
}

#[test]
fn steady_memory_follows_the_percentile() {
    let h = week(
        |_| 0.1,
        |t| 500.0 * MI + ((t / 60.0) as i64 % 100) as f64 * MI,
    );
    let e = est(
        &h,
        &Policy {
            peak_margin: 0.0,
            ..Policy::default()
        },
        None,
        Current::default(),
    );
    assert_eq!(e.reason, MemoryReason::Percentile);
    assert!(e.target.memory as f64 >= 1.15 * 594.0 * MI);
}

#[test]
fn a_jvm_with_low_usage_keeps_heap_plus_overhead() {
    let h = week(|_| 0.2, |_| 400.0 * MI);
    let heap = floor(
        &HeapHint {
            runtime: Runtime::Jvm,
            size: HeapSize::Bytes(3.0 * GI),
            source: "-Xmx3g".into(),
        },
        None,
    );
    let e = est(&h, &Policy::default(), Some(heap), Current::default());
    assert!(e.target.memory as f64 >= 3.75 * GI, "{}", e.target.memory);
    assert_eq!(e.reason, MemoryReason::HeapHint);
    assert_eq!(e.floor, e.target.memory);
}

#[test]
fn an_oom_kill_raises_the_recommendation() {
    let mut h = week(|_| 0.2, |_| 400.0 * MI);
    let before = est(&h, &Policy::default(), None, Current::default());
    h.add_oom(6.0 * DAY, 450.0 * MI);
    let after = est(&h, &Policy::default(), None, Current::default());
    assert_eq!(after.reason, MemoryReason::Oom);
    assert_eq!(
        after.target.memory,
        round_memory(550.0 * MI),
        "limit + 100 MiB beats x1.2"
    );
    assert!(after.target.memory > before.target.memory);
    h.add_oom(6.5 * DAY, 2.0 * GI);
    let big = est(&h, &Policy::default(), None, Current::default());
    assert_eq!(
        big.target.memory,
        round_memory(2.4 * GI),
        "x1.2 beats +100 MiB"
    );
}

#[test]
fn a_guard_raise_is_a_floor_for_the_window() {
    let mut h = week(|_| 0.2, |_| 400.0 * MI);
    let before = est(&h, &Policy::default(), None, Current::default());
    // The guard raised the limit to 600 MiB: no recommendation below it.
    h.add_guard_raise(6.0 * DAY, 600.0 * MI);
    let after = est(&h, &Policy::default(), None, Current::default());
    assert!(before.target.memory < round_memory(600.0 * MI));
    assert_eq!(after.reason, MemoryReason::GuardRaise);
    assert_eq!(after.target.memory, round_memory(600.0 * MI));
    assert_eq!(after.floor, after.target.memory);
    // Once it leaves the window, the usage decides again.
    h.expire(6.5 * DAY);
    let later = est(&h, &Policy::default(), None, Current::default());
    assert_ne!(later.reason, MemoryReason::GuardRaise);
    assert!(later.target.memory < round_memory(600.0 * MI));
}

#[test]
fn little_history_gives_nothing_or_no_decrease() {
    let mut h = ContainerHistory::default();
    for i in 0..10 {
        h.add_cpu(i as f64 * 60.0, 0.1);
        h.add_memory(i as f64 * 60.0, 100.0 * MI);
    }
    assert!(matches!(
        estimate(&h, &Policy::default(), None, &Current::default(), &Settings::default()),
        Verdict::NotEnoughHistory(m) if m.contains("10 CPU and 10 memory samples")
    ));
    // Six hours: a recommendation, but low confidence and never below the current requests.
    let mut h = ContainerHistory::default();
    for i in 0..360 {
        h.add_cpu(i as f64 * 60.0, 0.1);
        h.add_memory(i as f64 * 60.0, 100.0 * MI);
    }
    let e = est(
        &h,
        &Policy::default(),
        None,
        Current {
            cpu: Some(1.0),
            memory: Some(GI),
        },
    );
    assert!(e.low_confidence);
    assert_eq!(
        e.target,
        Amounts {
            cpu: 1000,
            memory: GI as i64
        }
    );
    assert!(
        e.upper.cpu > 2 * round_cpu(0.115),
        "wide bounds with little history: {:?}",
        e.upper
    );
    // Increases are still recommended.
    let e = est(
        &h,
        &Policy::default(),
        None,
        Current {
            cpu: Some(0.05),
            memory: Some(50.0 * MI),
        },
    );
    assert!(e.target.cpu > 50 && e.target.memory as f64 > 100.0 * MI);
}

#[test]
fn min_and_max_allowed_cap_and_uncapped_keeps_the_rest() {
    let h = week(|_| 3.0, |_| 4.0 * GI);
    let policy = Policy {
        max_allowed: Limits {
            cpu: Some(2.0),
            memory: Some(2.0 * GI),
        },
        min_allowed: Limits {
            cpu: Some(0.5),
            memory: None,
        },
        ..Policy::default()
    };
    let e = est(&h, &policy, None, Current::default());
    assert_eq!(
        e.target,
        Amounts {
            cpu: 2000,
            memory: 2 * GI as i64
        }
    );
    assert!(e.uncapped.cpu > 3000 && e.uncapped.memory as f64 > 4.0 * GI);
    let idle = week(|_| 0.0, |_| 0.0);
    let e = est(&idle, &policy, None, Current::default());
    assert_eq!(e.target.cpu, 500, "minAllowed");
    assert_eq!(e.target.memory, 32 * MI as i64, "the per-container minimum");
}

#[test]
fn rounding_is_upward_and_coarser_for_larger_values() {
    assert_eq!(round_cpu(0.0123), 13);
    assert_eq!(round_cpu(0.2501), 255);
    assert_eq!(round_cpu(1.234), 1240);
    assert_eq!(round_cpu(0.25), 250);
    assert_eq!(round_memory(100.0 * MI + 1.0), 101 * MI as i64);
    assert_eq!(round_memory(GI + 1.0), (GI + 16.0 * MI) as i64);
    assert_eq!(round_memory(GI), GI as i64);
}

#[test]
fn confidence_narrows_bounds_as_history_grows() {
    let e = est(
        &week(|t| 0.2 + 0.1 * (t / HOUR).sin(), |_| 300.0 * MI),
        &Policy::default(),
        None,
        Current::default(),
    );
    assert!(e.confidence > 6.9, "{}", e.confidence);
    assert!((e.upper.cpu as f64) < 1.3 * e.target.cpu as f64, "{:?}", e);
}
