//! What runs beside the demo on the real node, every [`PERIOD`]: each container's load from its
//! pod's usage model (the simulator's annotation and models, sampled as the simulator samples
//! them), and the watch of the containers' cgroup files.

use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tailor_e2e::real_node::RealNode;
use tailor_e2e::sim::usage::{PodUsage, USAGE_ANNOTATION, container_seed};

use super::cgroups::{Watch, print_change};
use crate::{Error, NS, now};

/// How often loads are written and cgroups read.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Writes every container's load and records cgroup changes (printing them) for ever; returns
/// only on an error.
pub async fn drive(node: &RealNode, client: &kube::Client, watch: &Mutex<Watch>) -> Error {
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    let mut failures = 0;
    loop {
        match pods.list(&ListParams::default()).await {
            Ok(list) => {
                failures = 0;
                for p in &list.items {
                    if let Err(e) = load(node, p) {
                        return e;
                    }
                    let change = watch.lock().map_or(None, |mut w| w.observe(node, p));
                    if let Some(c) = change {
                        print!("{}", print_change(&c));
                    }
                }
            }
            // The API server may be briefly busy on a loaded machine; it is not gone.
            Err(e) if failures < 10 => {
                failures += 1;
                eprintln!("demo: listing pods for their loads: {e}");
            }
            Err(e) => return format!("listing pods for their loads: {e}").into(),
        }
        tokio::time::sleep(PERIOD).await;
    }
}

/// Writes the load of each container of `p`: its model sampled now, since the container started
/// (a restart starts it again, as in the simulator).
fn load(node: &RealNode, p: &Pod) -> Result<(), Error> {
    let name = p.name_any();
    let Some(text) = p.annotations().get(USAGE_ANNOTATION) else {
        return Ok(());
    };
    let usage = PodUsage::parse(text)?;
    let now = now();
    for c in p.spec.iter().flat_map(|s| &s.containers) {
        let Some(model) = usage.model(&c.name) else {
            continue;
        };
        let started = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|ss| ss.iter().find(|s| s.name == c.name))
            .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.as_ref())
            .map_or(now, |t| t.0.as_second() as f64);
        let u = model.sample(
            now,
            now - started,
            container_seed(1, NS, &name, &c.name),
            None,
        );
        node.set_load(
            NS,
            &name,
            &c.name,
            (u.cpu * 1000.0).round() as i64,
            u.memory.round() as i64,
        )?;
    }
    Ok(())
}
