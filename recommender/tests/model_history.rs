//! Container usage history: peaks, expiry, garbage samples, OOM kills.
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
