//! `make demo-real-node`'s non-interactive mode: the demo's workloads on a real kubelet +
//! containerd + runc reach the expected outcome, and the printed cgroup files show it: CPU
//! lowered live (same containerID, a smaller CFS quota), memory raised live (a larger
//! `memory.limit_in_bytes`), memory lowered through a restart (a new containerID, restartCount
//! 1), the ManualApproval cut pending. The node is gone afterwards.
//!
//! Needs the real node (root, `make test-deps`); `TAILOR_REAL_NODE=skip` skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use tailor_e2e::real_node::{self, Requirement};

/// The printed change blocks of the pods whose name starts with `prefix`: the line
/// `cgroups of pod NAME changed: ...` and the indented lines after it.
fn blocks(stdout: &str, prefix: &str) -> Vec<String> {
    stdout
        .split("\ncgroups of pod ")
        .skip(1)
        .filter(|b| b.starts_with(prefix))
        .map(|b| {
            let mut lines = b.lines();
            let head = lines.next().unwrap_or_default();
            let body = lines.take_while(|l| l.starts_with("  "));
            std::iter::once(head)
                .chain(body)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The line of `file` in a block, if its value changed.
fn changed<'a>(block: &'a str, file: &str) -> Option<&'a str> {
    block
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(file))
        .filter(|l| !l.ends_with("(same)"))
}

/// The two numbers of `file`'s line `file  B (...) -> A (...)`.
fn before_after(line: &str) -> (i64, i64) {
    let (b, a) = line.split_once(" -> ").unwrap();
    let first_number = |s: &str| {
        s.split_whitespace()
            .find_map(|w| w.parse::<i64>().ok())
            .unwrap()
    };
    (first_number(b), first_number(a))
}

#[test]
fn demo_on_a_real_node_reaches_the_expected_outcome() {
    if real_node::requirement() == Requirement::Skip {
        eprintln!("real-node tests skipped ({}=skip)", real_node::SWITCH);
        return;
    }
    let (stdout, stderr) = common::run_demo(&["--real-node", "--ci", "--timeout", "150"]);
    for line in [
        "scaled by 0.05",
        "(HeapHint)",
        "(Oom)",
        "awaiting approval: app memory 1Gi ->",
        "demo: as expected",
    ] {
        assert!(
            stdout.contains(line) || stderr.contains(line),
            "{line:?} missing:\n{stdout}\n{stderr}"
        );
    }
    let shown = |what: &str, ok: bool| assert!(ok, "{what} not shown:\n{stdout}");

    // web-api: CPU lowered live: same container, a smaller quota.
    let web = blocks(&stdout, "web-api-");
    shown("web-api's live CPU cut", web.len() == 2);
    for b in &web {
        assert!(b.contains("resized live, same container"), "{b}");
        assert!(b.contains("restartCount: 0 -> 0"), "{b}");
        let (before, after) = before_after(changed(b, "cpu.cfs_quota_us").expect(b));
        assert!(after > 0 && after < before, "{b}");
    }
    // worker: memory raised live.
    let worker = blocks(&stdout, "worker-");
    shown("worker's live memory increase", worker.len() == 2);
    for b in &worker {
        assert!(b.contains("resized live, same container"), "{b}");
        let (before, after) = before_after(changed(b, "memory.limit_in_bytes").expect(b));
        assert_eq!(before, 512 << 20, "{b}");
        assert!(after > before, "{b}");
    }
    // orders: memory lowered through a restart, one container per pod.
    let orders = blocks(&stdout, "orders-");
    shown("orders' restarts", orders.len() == 2);
    for b in &orders {
        assert!(b.contains("container restarted into new limits"), "{b}");
        assert!(b.contains("restartCount: 0 -> 1"), "{b}");
        let (before, after) = before_after(changed(b, "memory.limit_in_bytes").expect(b));
        assert!(after < before, "{b}");
    }
    // reports (Off) never changes.
    shown(
        "nothing for reports",
        blocks(&stdout, "reports-").is_empty(),
    );

    // Torn down: the containers' cgroups printed for reading by hand are gone.
    let dirs: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("cd "))
        .filter_map(|l| l.split(" && ").next())
        .collect();
    assert_eq!(dirs.len(), 16, "{stdout}");
    for d in dirs {
        assert!(!std::path::Path::new(d).exists(), "{d} left behind");
    }
}
