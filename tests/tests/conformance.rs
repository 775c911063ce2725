//! The node simulator against a real kubelet: the same resize scenarios, the same assertions.
//!
//! Each scenario (in `conformance/scenarios.rs`) is one function taking the node it runs on.
//! `sim_*` run it against `tailor-sim`; `real_node_conformance` runs every scenario against a
//! real kubelet v1.35 + containerd + runc on this machine (concurrently, each in its own
//! namespace; the one that counts the node's requests alone at the end). The real node needs
//! root and `make test-deps`; `TAILOR_REAL_NODE=skip` skips it (see the README).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

#[path = "conformance/scenarios.rs"]
mod scenarios;
#[path = "conformance/support.rs"]
mod support;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures::FutureExt;
use support::{Kind, Target};
use tailor_e2e::ControlPlane;
use tailor_e2e::real_node::{self, RealNode, Requirement};
use tailor_e2e::sim::config::SimConfig;
use tailor_e2e::sim::runtime;

/// A scenario, by name.
type Scenario = for<'a> fn(&'a Target<'a>) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

macro_rules! scenario {
    ($f:path) => {
        (stringify!($f), (|t| Box::pin($f(t))) as Scenario)
    };
}

/// Every scenario that can share the node with the others.
fn concurrent() -> Vec<(&'static str, Scenario)> {
    vec![
        scenario!(scenarios::cpu_up),
        scenario!(scenarios::cpu_down),
        scenario!(scenarios::memory_up),
        scenario!(scenarios::memory_down),
        scenario!(scenarios::memory_limit_below_usage),
        scenario!(scenarios::infeasible_cpu),
        scenario!(scenarios::infeasible_memory),
        scenario!(scenarios::restart_container),
        scenario!(scenarios::restart_container_below_usage),
        scenario!(scenarios::plain_patch_refused),
    ]
}

/// The simulator configured as in the other simulator tests, one node of 2 CPUs and 8 GiB.
async fn on_sim(prefix: &str, scenario: Scenario) {
    let cp = ControlPlane::start().await.unwrap();
    let mut config = SimConfig::uniform(1, "2", "8Gi");
    config.tick_seconds = 0.2;
    config.actuation_delay_seconds = 0.5;
    // Long enough that a test passing proves the event-driven retry, not the timer.
    config.deferred_retry_seconds = 600.0;
    config.deferred_retry_period_seconds = 600.0;
    let _sim = runtime::start(cp.client(), config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let target = Target {
        kind: Kind::Sim,
        client: cp.client(),
        ns: cp.namespace(prefix).await.unwrap(),
        node: "sim".into(),
        real: None,
    };
    scenario(&target).await;
}

macro_rules! sim_test {
    ($name:ident, $f:path) => {
        #[tokio::test]
        async fn $name() {
            on_sim(&stringify!($name).replace('_', "-"), |t| Box::pin($f(t))).await;
        }
    };
}

sim_test!(sim_cpu_up, scenarios::cpu_up);
sim_test!(sim_cpu_down, scenarios::cpu_down);
sim_test!(sim_memory_up, scenarios::memory_up);
sim_test!(sim_memory_down, scenarios::memory_down);
sim_test!(
    sim_memory_limit_below_usage,
    scenarios::memory_limit_below_usage
);
sim_test!(sim_infeasible_cpu, scenarios::infeasible_cpu);
sim_test!(sim_infeasible_memory, scenarios::infeasible_memory);
sim_test!(sim_deferred_then_retried, scenarios::deferred_then_retried);
sim_test!(sim_restart_container, scenarios::restart_container);
sim_test!(
    sim_restart_container_below_usage,
    scenarios::restart_container_below_usage
);
sim_test!(sim_plain_patch_refused, scenarios::plain_patch_refused);

async fn run_caught(name: &str, f: impl Future<Output = ()>) -> Option<String> {
    match AssertUnwindSafe(f).catch_unwind().await {
        Ok(()) => {
            eprintln!("real node: {name} passed");
            None
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Some(format!("{name}: {why}"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_node_conformance() {
    if real_node::requirement() == Requirement::Skip {
        eprintln!("real-node tests skipped ({}=skip)", real_node::SWITCH);
        return;
    }
    let cp = ControlPlane::start().await.unwrap();
    let node = RealNode::start(&cp).await.unwrap_or_else(|e| panic!("{e}"));
    let mut targets = Vec::new();
    for (name, _) in concurrent() {
        let prefix = name.rsplit("::").next().unwrap().replace('_', "-");
        targets.push(Target {
            kind: Kind::Real,
            client: cp.client(),
            ns: cp.namespace(&prefix).await.unwrap(),
            node: node.name().into(),
            real: Some(&node),
        });
    }
    let runs = concurrent()
        .into_iter()
        .zip(&targets)
        .map(|((name, f), t)| run_caught(name, f(t)));
    let mut failures: Vec<String> = futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect();
    // Alone on the node: it counts the requests of every pod there.
    for t in &targets {
        let _ = t
            .pods()
            .delete_collection(&Default::default(), &Default::default())
            .await;
    }
    let alone = Target {
        kind: Kind::Real,
        client: cp.client(),
        ns: cp.namespace("deferred").await.unwrap(),
        node: node.name().into(),
        real: Some(&node),
    };
    wait_node_empty(&cp).await;
    failures.extend(
        run_caught(
            "deferred_then_retried",
            scenarios::deferred_then_retried(&alone),
        )
        .await,
    );
    assert!(
        failures.is_empty(),
        "{} of 11 scenarios failed on the real node (kubelet log: {}/logs/kubelet.log):\n{}",
        failures.len(),
        node.dir().display(),
        failures.join("\n\n")
    );
}

/// Until the kubelet has removed every pod of the other scenarios.
async fn wait_node_empty(cp: &ControlPlane) {
    let pods = kube::Api::<k8s_openapi::api::core::v1::Pod>::all(cp.client());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let list = pods.list(&Default::default()).await.unwrap();
        if list.items.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("pods of other scenarios still on the node after 60 s");
}
