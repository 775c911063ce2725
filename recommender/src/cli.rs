//! `tailor-recommender recommend`: recommendations without installing anything. Needs only
//! Prometheus and read access to the cluster. Uses the VerticalAutoscalers it finds, or, in
//! namespaces without any, every Deployment, StatefulSet, DaemonSet and CronJob with default
//! policies.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use tailor_crds::quantity::{cpu_millis, memory_bytes};
use tailor_crds::v1alpha1::{
    ContainerRecommendation, FloorReason, TargetRef, VerticalAutoscaler, VerticalAutoscalerSpec,
    condition,
};

use crate::controller::{self, Context, Options};
use crate::model::estimator::Current;
use crate::prometheus::Prometheus;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// An aligned table.
    Table,
    /// JSON, one object per container.
    Json,
    /// CSV with a header.
    Csv,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Row {
    /// Namespace.
    pub namespace: String,
    /// `Kind/name` of the workload.
    pub workload: String,
    /// The VerticalAutoscaler, if one exists.
    pub verticalautoscaler: Option<String>,
    /// Container.
    pub container: String,
    /// Current CPU request, millicores.
    pub cpu_request_millicores: Option<i64>,
    /// Recommended CPU, millicores.
    pub cpu_recommended_millicores: Option<i64>,
    /// Current memory request, bytes.
    pub memory_request_bytes: Option<i64>,
    /// Recommended memory, bytes.
    pub memory_recommended_bytes: Option<i64>,
    /// The memory floor's reason.
    pub floor_reason: Option<String>,
    /// Why there is no recommendation, if there is none.
    pub note: Option<String>,
}

/// Every object `api` lists; the error names what could not be listed.
pub(crate) async fn list<K>(api: Api<K>) -> Result<Vec<K>, String>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("list {}: {e}", K::plural(&())))
}

/// The metadata of every object `api` lists.
pub(crate) async fn list_meta<K>(api: Api<K>) -> Result<Vec<PartialObjectMeta<K>>, String>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list_metadata(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("list {}: {e}", K::plural(&())))
}

fn scoped<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn percent(new: Option<i64>, old: Option<i64>) -> String {
    match (new, old) {
        (Some(n), Some(o)) if o > 0 => format!("{:+.0}%", (n as f64 / o as f64 - 1.0) * 100.0),
        _ => "-".into(),
    }
}

fn show_cpu(m: Option<i64>) -> String {
    m.map_or("-".into(), |m| {
        tailor_crds::quantity::format_cpu_millis(m).0
    })
}

fn show_memory(b: Option<i64>) -> String {
    b.map_or("-".into(), |b| {
        let mi = b as f64 / 1048576.0;
        if mi >= 1024.0 {
            format!("{:.2}Gi", mi / 1024.0)
        } else {
            format!("{mi:.0}Mi")
        }
    })
}

/// What the report reads from the cluster: the VerticalAutoscalers, the objects that resolve
/// workloads to pods, and every workload (namespace, kind, name).
#[derive(Default)]
struct Listed {
    vas: Vec<VerticalAutoscaler>,
    pods: Vec<Pod>,
    rss: Vec<PartialObjectMeta<ReplicaSet>>,
    jobs: Vec<PartialObjectMeta<Job>>,
    workloads: Vec<(String, &'static str, String)>,
}

async fn names<K>(
    client: &kube::Client,
    scope: Option<&str>,
) -> Result<Vec<(String, String)>, String>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Ok(list_meta(scoped::<K>(client, scope))
        .await?
        .into_iter()
        .map(|d| (d.namespace().unwrap_or_default(), d.name_any()))
        .collect())
}

/// Lists what the report needs in each scope (a namespace, or all when `None`).
async fn list_all(
    client: &kube::Client,
    scopes: &[Option<&str>],
    progress: &mut dyn Write,
) -> Result<Listed, String> {
    let mut l = Listed::default();
    for &scope in scopes {
        let _ = writeln!(
            progress,
            "listing objects in {}",
            scope.unwrap_or("all namespaces")
        );
        l.vas
            .extend(list(scoped::<VerticalAutoscaler>(client, scope)).await?);
        l.pods.extend(list(scoped::<Pod>(client, scope)).await?);
        l.rss
            .extend(list_meta(scoped::<ReplicaSet>(client, scope)).await?);
        l.jobs
            .extend(list_meta(scoped::<Job>(client, scope)).await?);
        let kinds = [
            ("Deployment", names::<Deployment>(client, scope).await?),
            ("StatefulSet", names::<StatefulSet>(client, scope).await?),
            ("DaemonSet", names::<DaemonSet>(client, scope).await?),
            ("CronJob", names::<CronJob>(client, scope).await?),
        ];
        for (kind, found) in kinds {
            l.workloads
                .extend(found.into_iter().map(|(ns, name)| (ns, kind, name)));
        }
    }
    Ok(l)
}

/// A VerticalAutoscaler with default policies for each workload of a namespace that has none.
fn implied(
    vas: &[VerticalAutoscaler],
    workloads: &[(String, &str, String)],
) -> Vec<VerticalAutoscaler> {
    let with_vas: std::collections::BTreeSet<String> =
        vas.iter().filter_map(|v| v.namespace()).collect();
    workloads
        .iter()
        .filter(|(ns, _, _)| !with_vas.contains(ns))
        .map(|(ns, kind, name)| {
            let api_version = if *kind == "CronJob" {
                "batch/v1"
            } else {
                "apps/v1"
            };
            let mut va = VerticalAutoscaler::new(
                name,
                VerticalAutoscalerSpec {
                    target_ref: TargetRef {
                        api_version: api_version.into(),
                        kind: (*kind).into(),
                        name: name.clone(),
                    },
                    update_policy: Default::default(),
                    recommender_policy: Default::default(),
                    resource_policy: Default::default(),
                },
            );
            va.metadata.namespace = Some(ns.clone());
            va
        })
        .collect()
}

/// Why an object has no (or a doubtful) recommendation: the first failing condition, else
/// low confidence.
fn note_of(outcome: &controller::Outcome) -> Option<String> {
    let failing = [
        condition::HISTORY_UNAVAILABLE,
        condition::CONFIG_UNSUPPORTED,
        condition::NO_PODS_MATCHED,
    ];
    let on = |t: &str| {
        outcome
            .conditions
            .iter()
            .find(move |(ct, on, _, _)| *on && *ct == t)
    };
    failing
        .iter()
        .find_map(|t| on(t).map(|(t, _, _, m)| format!("{t}: {m}")))
        .or_else(|| on(condition::LOW_CONFIDENCE).map(|(_, _, _, m)| m.clone()))
}

fn floor_reason(r: &ContainerRecommendation) -> Option<String> {
    let reason = match r.memory_floor.as_ref()?.reason {
        FloorReason::Percentile => "Percentile",
        FloorReason::Peak => "Peak",
        FloorReason::HeapHint => "HeapHint",
        FloorReason::Oom => "OOM",
        FloorReason::MemoryGuard => "MemoryGuard",
    };
    Some(reason.to_owned())
}

/// One row per container: those running now, then those only recommended.
fn rows_of(
    va: &VerticalAutoscaler,
    outcome: controller::Outcome,
    current: &BTreeMap<String, Current>,
) -> Vec<Row> {
    let note = note_of(&outcome);
    let recs: BTreeMap<String, ContainerRecommendation> = outcome
        .recommendation
        .map(|r| {
            r.container_recommendations
                .into_iter()
                .map(|c| (c.container_name.clone(), c))
                .collect()
        })
        .unwrap_or_default();
    let mut containers: Vec<String> = current.keys().cloned().collect();
    containers.extend(recs.keys().filter(|k| !current.contains_key(*k)).cloned());
    if containers.is_empty() {
        containers.push("-".into());
    }
    let target = &va.spec.target_ref;
    containers
        .into_iter()
        .map(|c| {
            let (cur, rec) = (current.get(&c), recs.get(&c));
            Row {
                namespace: va.namespace().unwrap_or_default(),
                workload: format!("{}/{}", target.kind, target.name),
                verticalautoscaler: va.metadata.uid.is_some().then(|| va.name_any()),
                container: c.clone(),
                cpu_request_millicores: cur
                    .and_then(|x| x.cpu)
                    .map(|v| (v * 1000.0).round() as i64),
                cpu_recommended_millicores: rec
                    .and_then(|r| r.target.cpu.as_ref())
                    .and_then(|q| cpu_millis(q).ok()),
                memory_request_bytes: cur.and_then(|x| x.memory).map(|v| v as i64),
                memory_recommended_bytes: rec
                    .and_then(|r| r.target.memory.as_ref())
                    .and_then(|q| memory_bytes(q).ok()),
                floor_reason: rec.and_then(floor_reason),
                note: match rec {
                    None => note.clone().or_else(|| Some("no recommendation".into())),
                    Some(_) => note.clone(),
                },
            }
        })
        .collect()
}

/// Computes the report for `namespaces` (all when empty): list, compute each object as the
/// running recommender would, one row per container.
pub async fn recommend(
    client: kube::Client,
    prometheus: Prometheus,
    namespaces: &[String],
    progress: &mut dyn Write,
) -> Result<Vec<Row>, String> {
    let scopes: Vec<Option<&str>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let listed = list_all(&client, &scopes, progress).await?;
    // Namespaces with VerticalAutoscalers use them; the others get default policies.
    let mut vas = listed.vas;
    vas.extend(implied(&vas, &listed.workloads));
    let ctx = Context::from_lists(
        client,
        Arc::new(prometheus),
        Options::default(),
        listed.pods,
        listed.rss,
        listed.jobs,
    );
    let total = vas.len();
    let mut rows = Vec::new();
    for (i, va) in vas.iter().enumerate() {
        let ns = va.namespace().unwrap_or_default();
        let target = &va.spec.target_ref;
        let _ = writeln!(
            progress,
            "[{}/{total}] {ns}/{}/{}",
            i + 1,
            target.kind,
            target.name
        );
        let outcome = controller::compute(&ctx, va).await;
        let current = ctx.current_requests(&ns, &target.kind, &target.name);
        rows.extend(rows_of(va, outcome, &current));
    }
    Ok(rows)
}

/// Writes the report.
pub fn render(rows: &[Row], output: Output, out: &mut dyn Write) -> std::io::Result<()> {
    match output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, rows).map_err(std::io::Error::other)?;
            writeln!(out)
        }
        Output::Csv => render_csv(rows, out),
        Output::Table => render_table(rows, out),
    }
}

/// One line per row, RFC 4180 quoting.
fn render_csv(rows: &[Row], out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "namespace,workload,verticalautoscaler,container,cpu_request_millicores,cpu_recommended_millicores,memory_request_bytes,memory_recommended_bytes,floor_reason,note"
    )?;
    let f = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let q = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    for r in rows {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{}",
            q(&r.namespace),
            q(&r.workload),
            q(r.verticalautoscaler.as_deref().unwrap_or("")),
            q(&r.container),
            f(r.cpu_request_millicores),
            f(r.cpu_recommended_millicores),
            f(r.memory_request_bytes),
            f(r.memory_recommended_bytes),
            q(r.floor_reason.as_deref().unwrap_or("")),
            q(r.note.as_deref().unwrap_or(""))
        )?;
    }
    Ok(())
}

/// Aligned columns, for a person.
fn render_table(rows: &[Row], out: &mut dyn Write) -> std::io::Result<()> {
    let header = [
        "NAMESPACE",
        "WORKLOAD",
        "CONTAINER",
        "CPU NOW",
        "CPU REC",
        "CHANGE",
        "MEMORY NOW",
        "MEMORY REC",
        "CHANGE",
        "FLOOR",
        "NOTE",
    ];
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.namespace.clone(),
                r.workload.clone(),
                r.container.clone(),
                show_cpu(r.cpu_request_millicores),
                show_cpu(r.cpu_recommended_millicores),
                percent(r.cpu_recommended_millicores, r.cpu_request_millicores),
                show_memory(r.memory_request_bytes),
                show_memory(r.memory_recommended_bytes),
                percent(r.memory_recommended_bytes, r.memory_request_bytes),
                r.floor_reason.clone().unwrap_or_else(|| "-".into()),
                r.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(
        out,
        "{}",
        line(header.iter().map(|s| s.to_string()).collect())
    )?;
    for row in table {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}
