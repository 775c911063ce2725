//! `tailor-recommender backtest` as a user runs it: trace files in a folder, every output
//! format, bad files reported with file and line and left out.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::Command;

const HEADER: &str = "timestamp,cpu_cores,memory_bytes,cpu_limit_cores,memory_limit_bytes\n";
const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Three days at 5 minutes: 0.5 core and 1 GiB, with an hour at 2 GiB on the third day;
/// provisioned 2 cores and 4 GiB.
fn steady() -> String {
    let mut text = String::from(HEADER);
    for i in 0..864 {
        let t = i * 300;
        let memory = if (2 * 86_400..2 * 86_400 + 3600).contains(&t) {
            2.0 * GIB
        } else {
            GIB
        };
        text.push_str(&format!("{t},0.5,{memory},2,4294967296\n"));
    }
    text
}

fn backtest(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tailor-recommender"))
        .arg("backtest")
        .arg("--trace")
        .arg(dir)
        .args(args)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_folder_of_traces_is_scored_and_bad_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("set")).unwrap();
    std::fs::write(dir.path().join("set/steady.csv"), steady()).unwrap();
    std::fs::write(
        dir.path().join("set/broken.csv"),
        format!("{HEADER}0,1,1,,\n60,NaN,1,,\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a trace").unwrap();

    // Table: one row per policy and the overall rows; the bad file named with its line.
    let (ok, table, err) = backtest(dir.path(), &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("broken.csv:3: cpu_cores: NaN is not a finite number"),
        "{err}"
    );
    assert!(err.contains("1 trace(s) scored, 1 skipped"), "{err}");
    for policy in ["tailor", "vpa", "krr", "provisioned"] {
        assert_eq!(
            table.lines().filter(|l| l.contains(policy)).count(),
            2,
            "{policy}:\n{table}"
        );
    }
    // Provisioned leaves 75% of CPU idle.
    let provisioned = table
        .lines()
        .find(|l| l.starts_with("(all)") && l.contains("provisioned"))
        .unwrap();
    assert!(provisioned.contains("75.0%"), "{provisioned}");

    // JSON: the scores and every decision, so anyone can score them again.
    let (ok, json, err) = backtest(dir.path(), &["-o", "json", "--policy", "tailor,krr"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let trace = &v["traces"][0];
    assert!(trace["trace"].as_str().unwrap().ends_with("steady.csv"));
    assert_eq!(trace["scores"].as_array().unwrap().len(), 2);
    let decisions = trace["decisions"].as_array().unwrap();
    // Hourly for two days after a day of warmup, for two policies (plus any after a kill).
    assert!(decisions.len() >= 2 * 47, "{}", decisions.len());
    let first = &decisions[0];
    assert_eq!(first["time"], 86_400.0);
    assert!(first["memory_bytes"].as_f64().unwrap() >= GIB);
    assert_eq!(v["overall"].as_array().unwrap().len(), 2);
    // The hour at 2 GiB is above what both recommended after two days at 1 GiB: one kill each.
    for s in trace["scores"].as_array().unwrap() {
        assert_eq!(s["oom_events"], 1, "{s}");
    }

    // CSV: a header and a row per trace and policy, plus the overall rows.
    let (ok, csv, err) = backtest(dir.path(), &["-o", "csv", "--decision-interval", "30m"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("trace,policy,oom_events,memory_slack"));
    assert_eq!(lines.len(), 1 + 4 + 4);
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.csv"), steady()).unwrap();
    let (ok, _, err) = backtest(dir.path(), &["--policy", "goldilocks"]);
    assert!(!ok);
    assert!(err.contains("unknown policy \"goldilocks\""), "{err}");
    let (ok, _, err) = backtest(dir.path(), &["--decision-interval", "soon"]);
    assert!(!ok);
    assert!(err.contains("--decision-interval"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let (ok, _, err) = backtest(empty.path(), &[]);
    assert!(!ok);
    assert!(err.contains("no .csv trace files"), "{err}");
    // Only bad traces: nothing to score is an error.
    std::fs::write(empty.path().join("bad.csv"), "timestamp,cpu_cores\n0,1\n").unwrap();
    let (ok, _, err) = backtest(empty.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains("bad.csv:1: missing column(s) memory_bytes"),
        "{err}"
    );
}

/// Five days at 5 minutes: 1 GiB, 1.3 GiB from day 2, 1.6 GiB for an hour on day 4.
fn jumping() -> String {
    let mut text = String::from(HEADER);
    for i in 0..(5 * 288) {
        let t = i * 300;
        let memory = match t {
            _ if (4 * 86_400..4 * 86_400 + 3600).contains(&t) => 1.6 * GIB,
            _ if t >= 2 * 86_400 => 1.3 * GIB,
            _ => GIB,
        };
        text.push_str(&format!("{t},0.5,{memory},2,4294967296\n"));
    }
    text
}

fn tailor_ooms(dir: &std::path::Path, args: &[&str]) -> u64 {
    let mut all = vec!["--policy", "tailor", "-o", "json"];
    all.extend_from_slice(args);
    let (ok, json, err) = backtest(dir, &all);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["overall"][0]["oom_events"].as_u64().unwrap()
}

#[test]
fn tailor_runs_with_the_given_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("jumping.csv"), jumping()).unwrap();
    // The first jump (30%) is a kill for any margin; with the default policy the margin over
    // the peak grows to 30%, which covers the second (1.6 GiB is 23% over 1.3).
    assert_eq!(tailor_ooms(dir.path(), &[]), 1);
    // Without the growth margin, 1.3 GiB x 1.15 is below 1.6 GiB: a second kill.
    assert_eq!(
        tailor_ooms(
            dir.path(),
            &["--tailor-policy", r#"{"memory": {"maxGrowthMargin": 0}}"#]
        ),
        2
    );
    // Every decision says what it applied, and which ones followed a kill.
    let (ok, json, err) = backtest(dir.path(), &["--policy", "tailor", "-o", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let decisions = v["traces"][0]["decisions"].as_array().unwrap();
    let after_oom: Vec<_> = decisions
        .iter()
        .filter(|d| d["after_oom"] == true)
        .collect();
    assert_eq!(after_oom.len(), 1);
    let applied = after_oom[0]["applied_memory_bytes"].as_f64().unwrap();
    assert!(applied >= 1.3 * 1.3 * GIB, "{}", after_oom[0]);
    assert!(after_oom[0]["memory_floor_bytes"].as_f64().unwrap() >= 1.3 * 1.3 * GIB);

    // Bad policies are refused, naming the problem.
    for (policy, message) in [
        (
            r#"{"memory": {"peakmargin": 0.2}}"#,
            "unknown field \"memory.peakmargin\"",
        ),
        (
            r#"{"memory": {"peakMargin": -1}}"#,
            "memory.peakMargin must be >= 0",
        ),
        (r#"{"historyWindow": "two weeks"}"#, "historyWindow"),
        ("{", "--tailor-policy: EOF"),
    ] {
        let (ok, _, err) = backtest(dir.path(), &["--tailor-policy", policy]);
        assert!(!ok, "{policy}");
        assert!(err.contains(message), "{policy}: {err}");
    }
}

/// Five days at 5 minutes at 1 GiB; on day 3 a ramp over four samples to 1.4 GiB for an
/// hour.
fn ramping() -> String {
    let mut text = String::from(HEADER);
    for i in 0..(5 * 288) {
        let t = i * 300;
        let memory = match t - 3 * 86_400 {
            0 => 1.1 * GIB,
            300 => 1.2 * GIB,
            600 => 1.3 * GIB,
            900..3600 => 1.4 * GIB,
            _ => GIB,
        };
        text.push_str(&format!("{t},0.5,{memory},2,4294967296\n"));
    }
    text
}

#[test]
fn the_memory_guard_is_on_by_default_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ramping.csv"), ramping()).unwrap();
    let score = |args: &[&str]| {
        let mut all = vec!["--policy", "tailor,krr", "-o", "json"];
        all.extend_from_slice(args);
        let (ok, json, err) = backtest(dir.path(), &all);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["overall"].as_array().unwrap().clone()
    };
    // The first step (1.1 GiB) is within 1 GiB x 1.15 and above 90% of it: the guard raises
    // to 1.65 GiB, and the ramp stays below that.
    let on = score(&[]);
    assert_eq!(on[0]["oom_events"], 0, "{on:?}");
    assert!(on[0]["guard_raises"].as_u64().unwrap() >= 1, "{on:?}");
    assert!(on[0]["guard_raises_per_day"].as_f64().unwrap() > 0.0);
    // KRR has no guard.
    assert_eq!(on[1]["guard_raises"], 0);
    assert!(on[1]["guard_raises_per_day"].is_null());
    // Without it, the ramp is a kill.
    let off = score(&["--memory-guard=false"]);
    assert_eq!(off[0]["oom_events"], 1, "{off:?}");
    assert_eq!(off[0]["guard_raises"], 0);
    // The table has the column.
    let (ok, table, err) = backtest(dir.path(), &[]);
    assert!(ok, "{err}");
    assert!(
        table.lines().next().unwrap().ends_with("RAISES/DAY"),
        "{table}"
    );

    // Bad settings are refused, naming the flag.
    for (args, message) in [
        (
            &["--guard-threshold", "1"][..],
            "--guard-threshold: must be above 0 and below 1",
        ),
        (
            &["--guard-threshold", "NaN"],
            "--guard-threshold: must be above 0 and below 1",
        ),
        (
            &["--guard-step", "-0.1"],
            "--guard-step: must be a finite number >= 0",
        ),
        (&["--guard-min-interval", "soon"], "--guard-min-interval"),
    ] {
        let (ok, _, err) = backtest(dir.path(), args);
        assert!(!ok, "{args:?}");
        assert!(err.contains(message), "{args:?}: {err}");
    }
}
