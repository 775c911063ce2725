//! `tailor-recommender backtest --prometheus-url`: a live workload's own history, read from a
//! real Prometheus backfilled with the simulator's history generator, scored as trace files
//! are; and the ways it is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use serde_json::Value;
use tailor_e2e::Prometheus as PromServer;
use tailor_e2e::sim::history::{
    HistoryContainer, ReplicaSetOwner, generate, openmetrics, replicaset_owners,
};
use tailor_e2e::sim::usage::{Model, PodUsage, Trace};

const MI: f64 = 1024.0 * 1024.0;
const GI: f64 = 1024.0 * MI;
const DAY: i64 = 86_400;
const STEP: i64 = 60;

fn constant(cpu: f64, memory: &str) -> Model {
    PodUsage::parse(&format!(
        r#"{{"*": {{"model": "constant", "cpu": {cpu}, "memory": "{memory}"}}}}"#
    ))
    .unwrap()
    .model("app")
    .unwrap()
    .clone()
}

fn bin(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tailor-recommender"))
        .arg("backtest")
        .args(args)
        .env_remove("TAILOR_PROMETHEUS_URL")
        // No cluster to read, whatever the machine has.
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_live_workloads_history_is_backtested_without_its_neighbours() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let end = now / STEP * STEP;
    // Four days and half an hour: the hourly decisions do not fall on the last step, nor on
    // the one after it, which the binary sees too if a minute passes before it runs (a range
    // selector includes its start in Prometheus 2).
    let start = end - 4 * DAY - 1800;

    // Deployment shop/api, two pods of one ReplicaSet, container "app".
    // api-7f9c-a: 0.3 cores; 400 MiB for two days, then 800 MiB (the trace loops after six
    // days, beyond the window). Limits 2 cores and 2 GiB, requests 0.5 and 1 GiB.
    let step_up = Trace::parse(
        "step-up",
        &format!(
            "timestamp,cpu_cores,memory_bytes\n0,0.3,{}\n{},0.3,{}\n{},0.3,{}\n",
            400.0 * MI,
            2 * DAY,
            800.0 * MI,
            4 * DAY,
            800.0 * MI
        ),
    )
    .unwrap();
    let a = HistoryContainer {
        trace: Some(Arc::new(step_up)),
        cpu: (Some(0.5), Some(2.0)),
        memory: (Some(GI), Some(2.0 * GI)),
        ..HistoryContainer::new(
            "shop",
            "api-7f9c-a",
            "app",
            Model::Trace {
                path: PathBuf::from("step-up.csv"),
                time_scale: 1.0,
                noise: 0.0,
            },
            ("ReplicaSet", "api-7f9c"),
        )
    };
    // api-7f9c-b: 0.2 cores and 600 MiB, requests only (1 core, 3 GiB): its request is the
    // provisioned memory, api-7f9c-a's CPU limit the provisioned CPU.
    let b = HistoryContainer {
        cpu: (Some(1.0), None),
        memory: (Some(3.0 * GI), None),
        ..HistoryContainer::new(
            "shop",
            "api-7f9c-b",
            "app",
            constant(0.2, "600Mi"),
            ("ReplicaSet", "api-7f9c"),
        )
    };
    // Neighbours that must not be read: Deployment shop/api-worker (its pods share the prefix
    // and the container name) and Deployment api in another namespace, with the same names.
    let worker = HistoryContainer {
        cpu: (Some(3.0), Some(4.0)),
        memory: (Some(5.0 * GI), Some(6.0 * GI)),
        ..HistoryContainer::new(
            "shop",
            "api-worker-5d6e-a",
            "app",
            constant(3.0, "5Gi"),
            ("ReplicaSet", "api-worker-5d6e"),
        )
    };
    let staging = HistoryContainer {
        cpu: (Some(3.0), Some(4.0)),
        memory: (Some(5.0 * GI), Some(6.0 * GI)),
        ..HistoryContainer::new(
            "staging",
            "api-7f9c-a",
            "app",
            constant(3.0, "5Gi"),
            ("ReplicaSet", "api-7f9c"),
        )
    };
    let mut series = generate(&[a, b, worker, staging], start, end, STEP);
    // The working set the trace should hold: the highest of the two pods at each step.
    let mut expected_memory: BTreeMap<i64, f64> = BTreeMap::new();
    for s in series.iter().filter(|s| {
        s.metric == "container_memory_working_set_bytes"
            && s.labels["namespace"] == "shop"
            && s.labels["pod"].starts_with("api-7f9c-")
    }) {
        for (t, v) in &s.samples {
            let m = expected_memory.entry(*t).or_default();
            *m = m.max(*v);
        }
    }
    let rs = |namespace: &str, name: &str, owner: &str| ReplicaSetOwner {
        namespace: namespace.into(),
        replicaset: name.into(),
        owner_kind: "Deployment".into(),
        owner_name: owner.into(),
    };
    series.extend(replicaset_owners(
        &[
            rs("shop", "api-7f9c", "api"),
            rs("shop", "api-worker-5d6e", "api-worker"),
            rs("staging", "api-7f9c", "api"),
        ],
        start,
        end,
        STEP,
    ));
    let text = openmetrics(&series);
    assert!(
        text.contains("kube_pod_container_resource_limits{")
            && text.contains("kube_pod_container_resource_requests{")
            && text.contains("kube_pod_owner{")
            && text.contains("kube_replicaset_owner{"),
        "the generator emits the kube-state-metrics series the backtest reads"
    );
    let prom = PromServer::backfilled(&text).await.unwrap();
    let live = |extra: &[&str]| {
        let mut args = vec![
            "--prometheus-url",
            prom.url(),
            "--namespace",
            "shop",
            "--workload",
            "Deployment/api",
        ];
        args.extend_from_slice(extra);
        bin(&args)
    };

    let (ok, json, err) = live(&["-o", "json"]);
    assert!(ok, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("1 trace(s) scored, 0 skipped"), "{err}");
    let v: Value = serde_json::from_str(&json).unwrap();
    let traces = v["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "one container, one trace: {json}");
    let trace = &traces[0];
    assert_eq!(trace["trace"], "shop/Deployment/api/app");

    // Every policy scored, over the three days after the warmup.
    let scores: BTreeMap<&str, &Value> = trace["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["policy"].as_str().unwrap(), s))
        .collect();
    assert_eq!(
        scores.keys().copied().collect::<Vec<_>>(),
        ["krr", "provisioned", "tailor", "vpa"]
    );
    for (policy, s) in &scores {
        let days = s["scored_days"].as_f64().unwrap();
        assert!((3.0..=3.05).contains(&days), "{policy}: {days}");
        for measure in ["memory_slack", "cpu_slack", "cpu_over"] {
            let x = s[measure].as_f64();
            assert!(
                x.is_some_and(|x| (0.0..=1.0).contains(&x)),
                "{policy} {measure}: {s}"
            );
        }
    }

    // Decisions: hourly from the first step with both CPU and memory (the rate needs two
    // samples) plus 24 h of warmup, to the end; more only where a kill made a policy decide
    // again at once.
    let first = (start + STEP + DAY) as f64;
    let decisions = trace["decisions"].as_array().unwrap();
    let of = |policy: &str| {
        decisions
            .iter()
            .filter(|d| d["policy"] == policy)
            .collect::<Vec<_>>()
    };
    let hourly: Vec<f64> = (0..)
        .map(|k| first + 3600.0 * k as f64)
        .take_while(|t| *t <= end as f64)
        .collect();
    assert_eq!(hourly.len(), 73);
    for policy in ["tailor", "vpa", "krr", "provisioned"] {
        let times: Vec<f64> = of(policy)
            .iter()
            .map(|d| d["time"].as_f64().unwrap())
            .collect();
        let on_the_hour: Vec<f64> = times
            .iter()
            .copied()
            .filter(|t| (t - first).rem_euclid(3600.0) == 0.0)
            .collect();
        assert_eq!(on_the_hour, hourly, "{policy}: {times:?}");
        let ooms = scores[policy]["oom_events"].as_u64().unwrap() as usize;
        assert_eq!(times.len(), hourly.len() + ooms, "{policy}: {times:?}");
        // A kill can only be the step up from 600 to 800 MiB, at the start of the third day.
        assert!(
            times
                .iter()
                .filter(|t| (*t - first).rem_euclid(3600.0) != 0.0)
                .all(|t| *t == (start + 2 * DAY) as f64),
            "{policy}: {times:?}"
        );
    }
    // KRR sizes memory at the peak x 1.15, 690 MiB after two days at 600 MiB: one kill.
    assert_eq!(scores["krr"]["oom_events"], 1);

    // Provisioned: the highest limit over the pods, or a pod's request where it has no limit
    // (2 cores from api-7f9c-a's limit, 3 GiB from api-7f9c-b's request). The neighbours'
    // 4 cores and 6 GiB are not read.
    for d in of("provisioned") {
        assert_eq!(d["cpu_cores"].as_f64(), Some(2.0), "{d}");
        assert_eq!(d["memory_bytes"].as_f64(), Some(3.0 * GI), "{d}");
    }
    let provisioned = scores["provisioned"];
    assert_eq!(provisioned["oom_events"], 0);
    // Its memory slack is 1 - used / 3 GiB over the scored time, the working set being the
    // higher pod's: 600 MiB, then 800 MiB from the third day.
    let scored: Vec<f64> = expected_memory
        .range(start + STEP + DAY..=end)
        .map(|(_, m)| 1.0 - m / (3.0 * GI))
        .collect();
    let slack = scored.iter().sum::<f64>() / scored.len() as f64;
    assert!(
        (0.75..0.77).contains(&slack),
        "600 MiB for a day, 800 MiB for two: {slack}"
    );
    let got = provisioned["memory_slack"].as_f64().unwrap();
    assert!((got - slack).abs() < 0.005, "{got} vs {slack}");
    // CPU: 0.3 cores (the busier pod) of 2.
    let cpu_slack = provisioned["cpu_slack"].as_f64().unwrap();
    assert!((cpu_slack - 0.85).abs() < 0.01, "{cpu_slack}");
    assert_eq!(provisioned["cpu_over"].as_f64(), Some(0.0));

    // tailor: sized on 600 MiB before the step, so at most the one kill at the step, after
    // which it follows; tighter than the provisioned sizes, and never near the neighbours'
    // 5 GiB.
    let tailor = scores["tailor"];
    let ooms = tailor["oom_events"].as_u64().unwrap();
    assert!(ooms <= 1, "{tailor}");
    let tailor_slack = tailor["memory_slack"].as_f64().unwrap();
    assert!(tailor_slack > 0.0 && tailor_slack < got, "{tailor}");
    let memory: Vec<f64> = of("tailor")
        .iter()
        .filter_map(|d| d["memory_bytes"].as_f64())
        .collect();
    let (first_mem, last_mem) = (memory[0], *memory.last().unwrap());
    assert!(
        (600.0 * MI..1200.0 * MI).contains(&first_mem),
        "sized on 600 MiB: {}",
        first_mem / MI
    );
    assert!(
        (800.0 * MI..1600.0 * MI).contains(&last_mem),
        "sized on 800 MiB: {}",
        last_mem / MI
    );
    let cpu = of("tailor")
        .last()
        .and_then(|d| d["cpu_cores"].as_f64())
        .unwrap();
    assert!((0.3..1.0).contains(&cpu), "sized on 0.3 cores: {cpu}");

    // The table names the trace; one row per policy and the overall rows.
    let (ok, table, err) = live(&["--policy", "tailor,provisioned"]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("shop/Deployment/api/app"))
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert!(
        rows.iter().any(|l| l.contains("provisioned")) && rows.iter().any(|l| l.contains("tailor")),
        "{table}"
    );

    // A shorter window reads less: two days leave one after the warmup.
    let (ok, csv, err) = live(&["--window", "2d", "-o", "csv"]);
    assert!(ok, "{err}");
    let row = csv
        .lines()
        .find(|l| l.starts_with("shop/Deployment/api/app,provisioned,"))
        .unwrap();
    let at = |column: &str| {
        let i = csv
            .lines()
            .next()
            .unwrap()
            .split(',')
            .position(|c| c == column)
            .unwrap();
        row.split(',').nth(i).unwrap()
    };
    let days: f64 = at("scored_days").parse().unwrap();
    assert!((0.95..=1.01).contains(&days), "{row}");
    assert_eq!(at("recorded_oom_kills"), "0", "{row}");

    // A workload without pods, with the kind and name as given.
    let (ok, _, err) = bin(&[
        "--prometheus-url",
        prom.url(),
        "-n",
        "shop",
        "--workload",
        "Deployment/ghost",
    ]);
    assert!(!ok);
    assert!(
        err.contains("no pods of Deployment shop/ghost in the last 14d")
            && err.contains("kube_pod_owner"),
        "{err}"
    );
    // A StatefulSet named like the Deployment has no pods either: kinds are not mixed up.
    let (ok, _, err) = bin(&[
        "--prometheus-url",
        prom.url(),
        "-n",
        "shop",
        "--workload",
        "statefulset/api",
    ]);
    assert!(!ok);
    assert!(err.contains("no pods of StatefulSet shop/api"), "{err}");
}

/// What the backtest of Deployment shop/api (Prometheus down) says on stderr when `extra`
/// arguments make it refuse to run.
fn refused_for_api(extra: &[&str]) -> String {
    let mut args = vec![
        "--prometheus-url",
        "http://127.0.0.1:9",
        "-n",
        "shop",
        "--workload",
        "Deployment/api",
    ];
    args.extend_from_slice(extra);
    let (ok, _, err) = bin(&args);
    assert!(!ok, "{extra:?} is refused");
    err
}

#[test]
fn a_live_backtest_is_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9";

    // One source, not both, not none.
    let (ok, _, err) = bin(&[
        "--trace",
        dir.path().to_str().unwrap(),
        "--prometheus-url",
        url,
        "-n",
        "shop",
        "--workload",
        "Deployment/api",
    ]);
    assert!(!ok);
    assert!(
        err.contains("'--trace <TRACE>' cannot be used with '--prometheus-url"),
        "{err}"
    );
    let (ok, _, err) = bin(&[]);
    assert!(!ok);
    assert!(
        err.contains("--trace") && err.contains("--prometheus-url"),
        "{err}"
    );
    // The namespace and the workload are needed with a URL, and only there.
    let (ok, _, err) = bin(&["--prometheus-url", url, "--workload", "Deployment/api"]);
    assert!(!ok);
    assert!(err.contains("--namespace"), "{err}");
    let (ok, _, err) = bin(&["--prometheus-url", url, "-n", "shop"]);
    assert!(!ok);
    assert!(err.contains("--workload"), "{err}");
    let (ok, _, err) = bin(&[
        "--trace",
        dir.path().to_str().unwrap(),
        "--workload",
        "Deployment/api",
    ]);
    assert!(!ok);
    assert!(err.contains("--prometheus-url"), "{err}");

    // The sane bounds on samples must be sane themselves.
    for (flag, value, reason) in [
        (
            "--max-memory-sample",
            "banana",
            "--max-memory-sample must be a positive quantity",
        ),
        (
            "--max-memory-sample",
            "0",
            "--max-memory-sample must be a positive quantity",
        ),
        (
            "--max-cpu-sample",
            "-1",
            "--max-cpu-sample must be a positive number of cores",
        ),
    ] {
        let err = refused_for_api(&[&format!("{flag}={value}")]);
        assert!(err.contains(reason), "{flag} {value}: {err}");
    }

    // KIND/NAME, with a kind whose pods can be found.
    for (workload, reason) in [
        ("api", "--workload \"api\": expected KIND/NAME"),
        ("Pod/x", "kind \"Pod\" is not supported"),
        ("Deployment/", "expected KIND/NAME"),
    ] {
        let (ok, _, err) = bin(&[
            "--prometheus-url",
            url,
            "-n",
            "shop",
            "--workload",
            workload,
        ]);
        assert!(!ok, "{workload}");
        assert!(err.contains(reason), "{workload}: {err}");
        assert!(
            err.contains("Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob"),
            "the accepted kinds are named: {err}"
        );
    }
    let err = refused_for_api(&["--window", "a fortnight"]);
    assert!(err.contains("--window"), "{err}");

    // Nothing listens there: the URL is named, no panic.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (ok, out, err) = bin(&[
        "--prometheus-url",
        &dead,
        "-n",
        "shop",
        "--workload",
        "Deployment/api",
    ]);
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("Prometheus unavailable") && err.contains(&dead),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // Something that is not Prometheus answers: garbage, said so.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let garbage = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let body = "<html>not prometheus</html>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let (ok, _, err) = bin(&[
        "--prometheus-url",
        &garbage,
        "-n",
        "shop",
        "--workload",
        "Deployment/api",
    ]);
    assert!(!ok);
    assert!(
        err.contains("Prometheus answered garbage") && err.contains(&garbage),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
