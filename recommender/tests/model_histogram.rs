//! Decaying histograms: percentiles, decay, garbage, overflow.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use tailor_recommender::model::histogram::*;

#[test]
fn percentiles_err_high_by_at_most_one_bucket() {
    let mut h = DecayingHistogram::cpu();
    for i in 1..=1000 {
        assert!(h.add(i as f64 / 1000.0, 1.0, 0.0));
    }
    for p in [0.5, 0.9, 0.95, 0.99] {
        let got = h.percentile(p).unwrap();
        assert!(got >= p - 1e-9 && got <= p * 1.051 + 0.001, "p{p}: {got}");
    }
}

#[test]
fn recent_samples_weigh_more() {
    let mut h = DecayingHistogram::memory();
    // Two days ago: 1 GiB; now: 100 MiB; equal counts.
    for _ in 0..100 {
        h.add(1024.0 * 1048576.0, 1.0, 0.0);
        h.add(100.0 * 1048576.0, 1.0, 2.0 * 86_400.0);
    }
    // Recent samples have 4x the weight: p75 is within the recent mass.
    let p75 = h.percentile(0.75).unwrap();
    assert!(p75 < 110.0 * 1048576.0, "{p75}");
    assert!(h.percentile(0.95).unwrap() > 1000.0 * 1048576.0);
}

#[test]
fn garbage_is_ignored_and_weights_never_overflow() {
    let mut h = DecayingHistogram::cpu();
    assert!(!h.add(f64::NAN, 1.0, 0.0));
    assert!(!h.add(f64::INFINITY, 1.0, 0.0));
    assert!(!h.add(-1.0, 1.0, 0.0));
    assert!(!h.add(1.0, 1.0, f64::NAN));
    assert!(h.is_empty());
    assert_eq!(h.percentile(0.9), None);
    // A year of hourly samples with a 1-day half-life: 2^365 would overflow without rescaling.
    for hour in 0..(365 * 24) {
        h.add(0.5, 1.0, hour as f64 * 3600.0);
    }
    let p = h.percentile(0.9).unwrap();
    assert!(p.is_finite() && (0.5..0.53).contains(&p), "{p}");
}
