//! The `tailor-recommender run` binary: admin endpoints, leader Lease, graceful shutdown, and
//! clear errors for bad flags.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tailor_e2e::{ControlPlane, Prometheus as PromServer, free_port};

#[tokio::test]
async fn run_serves_admin_endpoints_takes_the_lease_and_stops_on_sigterm() {
    let bin = env!("CARGO_BIN_EXE_tailor-recommender");
    let cp = ControlPlane::start().await.unwrap();
    let prom = PromServer::backfilled("# EOF\n").await.unwrap();
    let port = free_port().unwrap();
    let log_path = cp.dir().join("recommender.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tokio::process::Command::new(bin)
        .args([
            "run",
            "--prometheus-url",
            prom.url(),
            "--admin-addr",
            &format!("127.0.0.1:{port}"),
            "--lease-namespace",
            "default",
            "--identity",
            "replica-1",
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .stderr(log.try_clone().unwrap())
        .stdout(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dump = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = reqwest::get(format!("{base}/readyz"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        let metrics = reqwest::get(format!("{base}/metrics"))
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        let leading = metrics
            && reqwest::get(format!("{base}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
                .contains("tailor_recommender_leader 1");
        if ready == 200 && leading {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not ready (last status {ready}):\n{}",
            dump()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("tailor_recommender_leader 1"), "{metrics}");
    let lease = Api::<Lease>::namespaced(cp.client(), "default")
        .get("tailor-recommender")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("replica-1")
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn bad_flags_are_reported() {
    let bin = env!("CARGO_BIN_EXE_tailor-recommender");
    let out = std::process::Command::new(bin)
        .args(["run", "--prometheus-url", "prometheus:9090"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must start with http:// or https://"),
        "{stderr}"
    );
    let out = std::process::Command::new(bin)
        .args(["run"])
        .env_remove("TAILOR_PROMETHEUS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prometheus-url"));
}
