//! Container usage history: peaks, expiry, garbage samples, OOM kills, guard raises.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

const HOUR: f64 = 3600.0;
use tailor_recommender::model::history::*;

#[test]
fn peaks_expire_with_the_window() {
    let mut h = ContainerHistory::default();
    h.add_memory(0.0, 900.0);
    h.add_memory(10.0 * HOUR, 500.0);
    h.add_memory(20.0 * HOUR, 400.0);
    assert_eq!(h.memory_peak(), Some(900.0));
    h.expire(5.0 * HOUR);
    assert_eq!(h.memory_peak(), Some(500.0));
    assert_eq!(h.span(), 15.0 * HOUR);
}

#[test]
fn garbage_samples_are_rejected_and_counted() {
    let mut h = ContainerHistory::default();
    h.add_cpu(0.0, f64::NAN);
    h.add_cpu(0.0, f64::INFINITY);
    h.add_memory(0.0, -5.0);
    h.add_memory(f64::NAN, 5.0);
    h.add_cpu(1.0, 0.5);
    assert_eq!(h.rejected(), 4);
    assert_eq!(h.samples(), 1);
    assert_eq!(h.cpu_peak(), Some(0.5));
    assert_eq!(h.memory_peak(), None);
}

#[test]
fn oom_kills_are_kept_in_order_without_duplicates() {
    let mut h = ContainerHistory::default();
    h.add_oom(20.0, 512.0);
    h.add_oom(10.0, 256.0);
    h.add_oom(20.0, 512.0);
    assert_eq!(
        h.last_oom(),
        Some(OomKill {
            time: 20.0,
            limit: 512.0
        })
    );
    h.expire(30.0);
    assert_eq!(h.last_oom(), None);
}

#[test]
fn guard_raises_keep_their_highest_limit_until_they_leave_the_window() {
    let mut h = ContainerHistory::default();
    assert_eq!(h.guard_raise_peak(), None);
    h.add_guard_raise(10.0, 700.0);
    h.add_guard_raise(20.0, 600.0);
    h.add_guard_raise(25.0, f64::NAN);
    assert_eq!(h.guard_raise_peak(), Some(700.0));
    h.expire(15.0);
    assert_eq!(h.guard_raise_peak(), Some(600.0));
    h.expire(30.0);
    assert_eq!(h.guard_raise_peak(), None);
}

#[test]
fn the_largest_jump_to_a_new_high_after_the_first_day() {
    let mut h = ContainerHistory::default();
    assert_eq!(h.memory_peak_jump(24.0 * HOUR), None);
    // The first day ramps from 100 to 1000: not counted.
    for (hour, v) in [(0.0, 100.0), (5.0, 1000.0)] {
        h.add_memory(hour * HOUR, v);
    }
    // Later: a jump to 1200 (20%), a dip, then 1260 (5% over 1200).
    for (hour, v) in [(30.0, 900.0), (40.0, 1200.0), (50.0, 800.0), (60.0, 1260.0)] {
        h.add_memory(hour * HOUR, v);
    }
    let j = h.memory_peak_jump(24.0 * HOUR).unwrap();
    assert!((j - 1.2).abs() < 1e-9, "{j}");
    // No settling time: the first day's ramp is the largest jump.
    assert!((h.memory_peak_jump(0.0).unwrap() - 10.0).abs() < 1e-9);
    // Once the 1000 expires, the window starts at the 900 hour: its first day holds the jump
    // to 1200, only 1260 over 1200 is left.
    h.expire(30.0 * HOUR);
    let j = h.memory_peak_jump(24.0 * HOUR).unwrap();
    assert!((j - 1.05).abs() < 1e-9, "{j}");
    // A window without a new high after its first day has no jump.
    h.expire(59.0 * HOUR);
    assert_eq!(h.memory_peak_jump(24.0 * HOUR), None);
}

#[test]
fn a_pass_reads_again_the_overlap_and_settles_every_point_once() {
    use tailor_recommender::model::history::Pass;
    let first = Pass::plan(None, (10.5, 1000.0), 300.0, 60.0);
    assert_eq!(
        first,
        Pass {
            known_from: 60.0,
            new_from: 60.0,
            settled: 660.0
        }
    );
    // The next pass reads from the point after the settled one; pods new to it from the first
    // grid point in its window.
    let second = Pass::plan(Some(660.0), (100.0, 1100.0), 300.0, 60.0);
    assert_eq!(
        second,
        Pass {
            known_from: 720.0,
            new_from: 120.0,
            settled: 780.0
        }
    );
    // A pass too soon to settle anything new keeps the settled point.
    assert_eq!(
        Pass::plan(Some(660.0), (100.0, 900.0), 300.0, 60.0).settled,
        660.0
    );
    // Without an overlap, everything read is settled.
    assert_eq!(Pass::plan(None, (0.0, 1000.0), 0.0, 60.0).settled, 960.0);
    // A window that moved past the settled point: from its first grid point.
    assert_eq!(
        Pass::plan(Some(660.0), (5000.0, 9000.0), 300.0, 60.0).known_from,
        5040.0
    );

    // Passes at uneven times: every grid point up to the last settled one is settled by
    // exactly one pass, and every point read is read by a pass that starts after the
    // previous settled point.
    let (step, overlap) = (60.0, 300.0);
    let mut settled_by = std::collections::BTreeMap::<i64, u32>::new();
    let mut previous = None;
    let mut end = 10_000.3;
    for gap in [37.0, 61.0, 5.0, 600.0, 119.0, 1.0, 3600.0, 59.9, 240.0] {
        end += gap;
        let pass = Pass::plan(previous, (end - 7200.0, end), overlap, step);
        if let Some(p) = previous {
            assert!(pass.known_from > p, "{pass:?} after {p}");
            assert!(pass.settled >= p);
        }
        let mut t = pass.known_from;
        while t <= pass.settled {
            assert_eq!(t % step, 0.0, "on the grid");
            *settled_by.entry(t.round() as i64).or_default() += 1;
            t += step;
        }
        assert!(pass.settled <= end - overlap);
        previous = Some(pass.settled);
    }
    let points: Vec<i64> = settled_by.keys().copied().collect();
    assert!(settled_by.values().all(|n| *n == 1), "{settled_by:?}");
    assert!(
        points.windows(2).all(|w| w[1] - w[0] == 60),
        "a gap in the settled points: {points:?}"
    );
}
