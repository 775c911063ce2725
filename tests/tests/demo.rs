//! `make demo`'s non-interactive mode: the whole system (API server, simulator, Prometheus with a
//! week of history, the recommender and the updater) reaches the expected outcome, and every
//! query of the alert rules and dashboards evaluates against the demo's Prometheus.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

#[test]
fn demo_reaches_the_expected_outcome() {
    let (stdout, stderr) = common::run_demo(&["--ci", "--timeout", "180"]);
    // The report names what happened to each workload.
    for line in [
        "memory floor",
        "(HeapHint)",
        "(Oom)",
        "awaiting approval: app memory 1Gi ->",
        "demo: as expected",
    ] {
        assert!(
            stdout.contains(line) || stderr.contains(line),
            "{line:?} missing:\n{stdout}"
        );
    }
}
