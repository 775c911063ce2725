//! The kube-state-metrics series the recommender and the dashboards read, rendered on each
//! scrape from the API server's pods and ReplicaSets in the demo's namespace, with the names
//! and labels kube-state-metrics uses (the simulator serves the same for its pods; no
//! kube-state-metrics runs here).

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};

use crate::history::{cores, quantity};
use crate::{Error, NS};

/// The exporter's server; stops when dropped.
pub struct KubeState {
    task: tokio::task::JoinHandle<()>,
    pub address: String,
}

impl Drop for KubeState {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `/metrics` on a free loopback port.
pub async fn serve(client: kube::Client) -> Result<KubeState, Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let app = Router::new()
        .route("/metrics", get(handler))
        .with_state(client);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("demo: kube-state exporter stopped: {e}");
        }
    });
    Ok(KubeState { task, address })
}

async fn handler(State(client): State<kube::Client>) -> impl IntoResponse {
    match render(&client).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            body,
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `namespace`, `pod`, `uid` of a pod (escaped, as label text).
fn pod_labels(m: &ObjectMeta) -> String {
    format!(
        "namespace=\"{}\",pod=\"{}\",uid=\"{}\"",
        esc(m.namespace.as_deref().unwrap_or_default()),
        esc(m.name.as_deref().unwrap_or_default()),
        esc(m.uid.as_deref().unwrap_or_default())
    )
}

fn family(out: &mut String, name: &str, kind: &str) {
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

async fn render(client: &kube::Client) -> Result<String, Error> {
    let lp = ListParams::default();
    let pods = Api::<Pod>::namespaced(client.clone(), NS).list(&lp).await?;
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), NS)
        .list(&lp)
        .await?;
    let mut out = String::new();
    resources(&mut out, &pods.items);
    statuses(&mut out, &pods.items);
    family(&mut out, "kube_pod_owner", "gauge");
    for p in &pods.items {
        owner(
            &mut out,
            "kube_pod_owner",
            &pod_labels(&p.metadata),
            &p.metadata,
        );
    }
    family(&mut out, "kube_replicaset_owner", "gauge");
    for r in &rss.items {
        let labels = format!(
            "namespace=\"{}\",replicaset=\"{}\"",
            esc(r.metadata.namespace.as_deref().unwrap_or_default()),
            esc(r.metadata.name.as_deref().unwrap_or_default())
        );
        owner(&mut out, "kube_replicaset_owner", &labels, &r.metadata);
    }
    Ok(out)
}

fn owner(out: &mut String, name: &str, labels: &str, m: &ObjectMeta) {
    let o = m
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    let (kind, owner) = o.map_or(("<none>", "<none>"), |o| (o.kind.as_str(), o.name.as_str()));
    let _ = writeln!(
        out,
        "{name}{{{labels},owner_kind=\"{}\",owner_name=\"{}\",owner_is_controller=\"{}\"}} 1",
        esc(kind),
        esc(owner),
        o.is_some()
    );
}

/// `kube_pod_container_resource_requests` and `_limits`, from the pods' specs.
fn resources(out: &mut String, pods: &[Pod]) {
    for (name, limits) in [
        ("kube_pod_container_resource_requests", false),
        ("kube_pod_container_resource_limits", true),
    ] {
        family(out, name, "gauge");
        for p in pods {
            let Some(spec) = &p.spec else { continue };
            let node = spec.node_name.as_deref().unwrap_or_default();
            for c in &spec.containers {
                let Some(m) = resource_map(c, limits) else {
                    continue;
                };
                let labels = format!(
                    "{},container=\"{}\",node=\"{}\"",
                    pod_labels(&p.metadata),
                    esc(&c.name),
                    esc(node)
                );
                let value = |q: &Quantity, cpu: bool| {
                    let v = serde_json::Value::String(q.0.clone());
                    if cpu { cores(&v) } else { quantity(&v) }
                };
                if let Some(v) = m.get("cpu").and_then(|q| value(q, true)) {
                    let _ = writeln!(out, "{name}{{{labels},resource=\"cpu\",unit=\"core\"}} {v}");
                }
                if let Some(v) = m.get("memory").and_then(|q| value(q, false)) {
                    let _ = writeln!(
                        out,
                        "{name}{{{labels},resource=\"memory\",unit=\"byte\"}} {v}"
                    );
                }
            }
        }
    }
}

fn resource_map(
    c: &Container,
    limits: bool,
) -> Option<&std::collections::BTreeMap<String, Quantity>> {
    let r = c.resources.as_ref()?;
    if limits {
        r.limits.as_ref()
    } else {
        r.requests.as_ref()
    }
}

/// `kube_pod_container_status_restarts_total` and `_last_terminated_reason`.
fn statuses(out: &mut String, pods: &[Pod]) {
    let each = |out: &mut String, f: &dyn Fn(&mut String, &str, &ContainerStatus)| {
        for p in pods {
            let statuses = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref());
            for s in statuses.into_iter().flatten() {
                let labels = format!("{},container=\"{}\"", pod_labels(&p.metadata), esc(&s.name));
                f(out, &labels, s);
            }
        }
    };
    family(out, "kube_pod_container_status_restarts_total", "counter");
    each(out, &|out, labels, s| {
        let _ = writeln!(
            out,
            "kube_pod_container_status_restarts_total{{{labels}}} {}",
            s.restart_count
        );
    });
    family(
        out,
        "kube_pod_container_status_last_terminated_reason",
        "gauge",
    );
    each(out, &|out, labels, s| {
        let reason = s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .and_then(|t| t.reason.as_deref());
        if let Some(reason) = reason {
            let _ = writeln!(
                out,
                "kube_pod_container_status_last_terminated_reason{{{labels},reason=\"{}\"}} 1",
                esc(reason)
            );
        }
    });
}
