//! Leader election between two `tailor-updater` processes on a real API server: a leader that
//! was paused past its lease makes no write once it resumes (writes counted in the API server's
//! audit log, each process under its own ServiceAccount), a leader stopped with SIGTERM hands
//! the Lease over at once, and inconsistent timing flags are refused.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tailor_e2e::control_plane::{ControlPlane, Options};
use tailor_e2e::process::ServerProcess;

use common::{Env, Updater, applied};

const LEASE: &str = "tailor-updater";

/// Starts `tailor-updater run` as `identity`, with `kubeconfig`, the lease `timing`
/// (duration in seconds, renew deadline, retry period) and `extra` flags.
fn updater(
    env: &Env,
    identity: &str,
    kubeconfig: &Path,
    timing: [&str; 3],
    extra: &[&str],
) -> Updater {
    let port = tailor_e2e::free_port().unwrap();
    let admin = format!("127.0.0.1:{port}");
    let mut args = vec![
        "run",
        "--admin-addr",
        &admin,
        "--lease-namespace",
        "default",
        "--identity",
        identity,
        "--resync-seconds",
        "1",
        "--backoff-seconds",
        "2",
        "--log",
        "info,tailor_updater=debug,tailor_runtime=debug",
    ];
    args.extend_from_slice(extra);
    let log = env.cp.dir().join(format!("updater-{identity}.log"));
    let process = ServerProcess::spawn_with_env(
        "tailor-updater",
        &PathBuf::from(env!("CARGO_BIN_EXE_tailor-updater")),
        &args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        &[
            ("KUBECONFIG", kubeconfig.display().to_string()),
            // The environment rather than flags: binaries without the renew deadline and retry
            // period flags (before fencing) run these tests too and fail them.
            ("TAILOR_LEASE_DURATION_SECONDS", timing[0].into()),
            ("TAILOR_LEASE_RENEW_DEADLINE", timing[1].into()),
            ("TAILOR_LEASE_RETRY_PERIOD", timing[2].into()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
        &log,
    )
    .unwrap();
    Updater { process, port, log }
}

/// A ServiceAccount `name` in the test namespace, bound to cluster-admin, and a kubeconfig with
/// its token: the audit log names the process that wrote.
async fn service_account(env: &Env, name: &str) -> PathBuf {
    let client = env.cp.client();
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &env.ns);
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-{name}", env.ns)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": env.ns}],
    }))
    .unwrap();
    Api::<ClusterRoleBinding>::all(client)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let token: TokenRequest = sas
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .unwrap();
    let token = token.status.unwrap().token;
    let path = env.cp.dir().join(format!("kubeconfig-{name}"));
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {name}
  user:
    token: {token}
contexts:
- name: test
  context: {{cluster: test, user: {name}, namespace: default}}
current-context: test
",
        server = env.cp.url(),
        ca = env.cp.dir().join("ca.crt").display(),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The writes `account` made to pods, VerticalAutoscalers and ResizeStates (any subresource,
/// any response), from the audit log: (resource/subresource, name, response code).
fn writes(env: &Env, account: &str) -> Vec<(String, String, i64)> {
    let user = format!("system:serviceaccount:{}:{account}", env.ns);
    let text = std::fs::read_to_string(env.cp.audit_log()).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == "ResponseComplete" && e["user"]["username"] == user.as_str())
        .filter(|e| {
            ["pods", "verticalautoscalers", "resizestates"]
                .contains(&e["objectRef"]["resource"].as_str().unwrap_or(""))
        })
        .map(|e| {
            let r = &e["objectRef"];
            (
                format!(
                    "{} {}/{}",
                    e["verb"].as_str().unwrap_or(""),
                    r["resource"].as_str().unwrap_or(""),
                    r["subresource"].as_str().unwrap_or("")
                ),
                r["name"].as_str().unwrap_or("").to_owned(),
                e["responseStatus"]["code"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

async fn holder(env: &Env) -> Option<String> {
    Api::<Lease>::namespaced(env.cp.client(), "default")
        .get_opt(LEASE)
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

/// Waits until `check` holds, polling every 100 ms for `limit`.
async fn until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {what} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(u: &Updater, sig: Signal) {
    kill(Pid::from_raw(u.process.pid() as i32), sig).unwrap();
}

#[tokio::test]
async fn a_leader_paused_past_its_lease_makes_no_write_after_resuming() {
    let cp = ControlPlane::start_with(Options { audit: true })
        .await
        .unwrap();
    let env = Env::on(cp, 1, "64", "64Gi", 0.2).await;
    let pods = env.plain_workload(6).await;
    let (ka, kb) = (
        service_account(&env, "updater-a").await,
        service_account(&env, "updater-b").await,
    );
    // One resize a second: the leader is still working through the pods when it is paused.
    let timing = ["3", "2s", "500ms"];
    let paced = ["--max-resizes-per-second", "1", "--resize-burst", "1"];
    let a = updater(&env, "a", &ka, timing, &paced);
    a.wait_ready().await;
    let b = updater(&env, "b", &kb, timing, &paced);
    until("b up as a standby", common::WAIT, || async {
        b.metrics().await.contains("tailor_updater_leader 0")
    })
    .await;
    assert_eq!(holder(&env).await.as_deref(), Some("a"));

    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    let resizes = |who: &str| {
        writes(&env, who)
            .into_iter()
            .filter(|w| w.0 == "patch pods/resize")
            .count()
    };
    until("2 pods resized by a", common::WAIT, || async {
        resizes("updater-a") >= 2
    })
    .await;
    signal(&a, Signal::SIGSTOP);
    let paused = tokio::time::Instant::now();
    // While a is paused: a new recommendation, which a would act on with what it knew.
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "2", "memory": "256Mi"}}]),
    )
    .await;
    until("b holding the lease", common::WAIT, || async {
        holder(&env).await.as_deref() == Some("b")
    })
    .await;
    until("a resize by b", common::WAIT, || async {
        resizes("updater-b") >= 1
    })
    .await;
    let before = writes(&env, "updater-a");
    eprintln!(
        "b took over {:?} after a was paused; a's writes before resuming: {}",
        paused.elapsed(),
        before.len()
    );
    signal(&a, Signal::SIGCONT);
    for p in &pods {
        env.wait_pod(p, "resized to the new recommendation", |p| {
            applied(p, "app", "requests", "cpu", "2")
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = writes(&env, "updater-a");
    let late = &after[before.len()..];
    assert!(
        late.is_empty(),
        "the old leader wrote after it resumed: {late:?}\n{}",
        a.process.log_tail(40)
    );
    assert!(
        a.process.log_tail(400).contains("stepping down"),
        "{}",
        a.process.log_tail(40)
    );
    assert!(a.metrics().await.contains("tailor_updater_leader 0"));
    assert_eq!(holder(&env).await.as_deref(), Some("b"));
    eprintln!(
        "a's fenced writes: {}",
        a.metric("tailor_updater_api_requests_total{verb=\"fenced\"")
            .await
    );
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_releases_the_lease_to_the_standby_at_once() {
    let env = Env::start(1, "8", "32Gi", 0.2).await;
    let pods = env.plain_workload(1).await;
    // A long lease: without the release the standby would wait 20 s.
    let timing = ["20", "5s", "500ms"];
    let mut a = updater(&env, "a", env.cp.kubeconfig(), timing, &[]);
    a.wait_ready().await;
    let b = updater(&env, "b", env.cp.kubeconfig(), timing, &[]);
    until("b up as a standby", common::WAIT, || async {
        b.metrics().await.contains("tailor_updater_leader 0")
    })
    .await;
    let stopped = tokio::time::Instant::now();
    a.process.stop(Duration::from_secs(10));
    let status = a.process.exited().expect("a stopped");
    assert!(status.success(), "{status:?}:\n{}", a.process.log_tail(20));
    until("b holding the lease", Duration::from_secs(20), || async {
        holder(&env).await.as_deref() == Some("b")
    })
    .await;
    let took = stopped.elapsed();
    eprintln!("b took over {took:?} after the SIGTERM");
    assert!(took < Duration::from_secs(3), "took over after {took:?}");
    b.wait_ready().await;
    env.recommend(
        "w",
        json!([{"containerName": "app", "target": {"cpu": "1", "memory": "256Mi"}}]),
    )
    .await;
    env.wait_pod(&pods[0], "resized by b", |p| {
        applied(p, "app", "requests", "cpu", "1")
    })
    .await;
}

#[test]
fn inconsistent_lease_timing_is_refused() {
    let bin = env!("CARGO_BIN_EXE_tailor-updater");
    for (flags, expected) in [
        (
            [
                "--leader-elect-lease-duration",
                "10s",
                "--leader-elect-renew-deadline",
                "10s",
            ],
            "--leader-elect-renew-deadline (10s) must be shorter than --leader-elect-lease-duration (10s)",
        ),
        (
            [
                "--lease-duration-seconds",
                "15",
                "--leader-elect-retry-period",
                "10s",
            ],
            "--leader-elect-retry-period (10s) must be shorter than --leader-elect-renew-deadline (10s)",
        ),
        (
            ["--leader-elect-retry-period", "soon", "--identity", "x"],
            "\"soon\" is not a duration",
        ),
    ] {
        let out = std::process::Command::new(bin)
            .arg("run")
            .args(flags)
            .env("KUBECONFIG", "/nonexistent")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{flags:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{flags:?}: {stderr}");
    }
}
