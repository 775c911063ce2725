//! `make demo`'s non-interactive mode: the whole system (API server, simulator, Prometheus with a
//! week of history, the recommender and the updater) reaches the expected outcome, and every
//! query of the alert rules and dashboards evaluates against the demo's Prometheus.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::Command;

#[test]
fn demo_reaches_the_expected_outcome() {
    let bins = tailor_e2e::cargo::build_tailor_binaries().unwrap();
    let dir = bins["tailor-recommender"].parent().unwrap().to_path_buf();
    let out = Command::new(env!("CARGO_BIN_EXE_tailor-demo"))
        .args(["--ci", "--timeout", "180"])
        .env("TAILOR_BIN_DIR", &dir)
        .output()
        .expect("tailor-demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tailor-demo --ci failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
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
