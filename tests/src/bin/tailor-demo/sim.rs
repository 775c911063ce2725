//! `make demo`: the workloads on three simulated nodes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tailor_e2e::ControlPlane;
use tailor_e2e::sim::config::SimConfig;
use tailor_e2e::sim::history::HistoryNode;
use tailor_e2e::sim::{self};

use crate::history::History;
use crate::services::Stack;
use crate::workloads::workloads;
use crate::{Args, Error, NS, expected, finish, setup, step, wait_for};

pub async fn run(args: &Args) -> Result<(), Error> {
    let started = Instant::now();
    step("starting kube-apiserver and etcd");
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    let mut config = SimConfig::uniform(3, "8", "32Gi");
    config.tick_seconds = 1.0;
    config.actuation_delay_seconds = 1.0;
    let sim = sim::runtime::start(client.clone(), config, "127.0.0.1:0".parse()?).await?;
    step(&format!(
        "node simulator: 3 nodes, metrics on {}",
        sim.metrics_addr()
    ));

    setup::namespace(&client).await?;
    let list = workloads();
    let mut created = BTreeMap::new();
    let spec = |_: &str, c: &Value| Ok(json!({"containers": [c]}));
    for w in &list {
        created.insert(w.name, setup::create(&client, w, &spec).await?);
    }
    // Wait until the simulator runs every pod.
    let total: usize = list.iter().map(|w| w.replicas).sum();
    let running = setup::wait_running(&client, total, false, Duration::from_secs(60)).await?;
    let original = setup::uids(&running);
    step(&format!("{total} pods running in namespace {NS}"));

    // A week of history, ending where the live scrapes begin.
    let nodes = sim.with_state(|s| s.nodes().map(|(n, _)| HistoryNode::from_spec(n)).collect());
    let history = History::new(&list, &created, &running, nodes, args.days)?;
    let dir = tempfile::Builder::new().prefix("tailor-demo-").tempdir()?;
    let targets = sim.scrape_targets();
    let stack = Stack::start(&cp, &list, (history, targets), dir.path()).await?;

    let outcome = wait_for(Duration::from_secs(args.timeout), || {
        expected::sim(&client, &original)
    })
    .await;
    finish(args, &cp, &list, &stack, (outcome, started, String::new())).await
}
