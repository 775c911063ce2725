//! The report printed once the system has acted: per workload, the recommendation and its
//! floor, the pods' resources, the resizes done and the memory decreases awaiting approval.

use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use tailor_crds::v1alpha1::{Resources, VerticalAutoscaler};

use crate::expected::{pod_value, restarts};
use crate::workloads::Workload;
use crate::{Error, NS};

pub async fn report(client: &kube::Client, list: &[Workload]) -> Result<String, Error> {
    let vas = Api::<VerticalAutoscaler>::namespaced(client.clone(), NS);
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await?;
    let mut out = String::new();
    for w in list {
        let va = vas.get(w.name).await?;
        let pods: Vec<&Pod> = pods
            .items
            .iter()
            .filter(|p| p.labels().get("app").map(String::as_str) == Some(w.name))
            .collect();
        workload(&mut out, w, &va, &pods)?;
    }
    Ok(out)
}

fn workload(
    out: &mut String,
    w: &Workload,
    va: &VerticalAutoscaler,
    pods: &[&Pod],
) -> Result<(), Error> {
    let mode = serde_json::to_value(va.spec.update_policy.update_mode)?;
    writeln!(
        out,
        "\n{} {} ({}): {}",
        w.kind,
        w.name,
        mode.as_str().unwrap_or("?"),
        w.what
    )?;
    let status = va.status.clone().unwrap_or_default();
    let q = |v: &Option<Quantity>| v.as_ref().map_or("-".to_owned(), |q| q.0.clone());
    for c in status
        .recommendation
        .iter()
        .flat_map(|r| &r.container_recommendations)
    {
        let floor = c.memory_floor.as_ref().map_or("-".to_owned(), |f| {
            format!("{} ({:?})", f.value.0, f.reason)
        });
        writeln!(
            out,
            "  recommendation for {}: cpu {}, memory {}; memory floor {}",
            c.container_name,
            q(&c.target.cpu),
            q(&c.target.memory),
            floor
        )?;
    }
    for p in pods {
        let v = |part, resource| pod_value(p, part, resource).unwrap_or_else(|| "-".into());
        writeln!(
            out,
            "  pod {}: requests cpu {} memory {}, limits cpu {} memory {}, restarts {}",
            p.name_any(),
            v("requests", "cpu"),
            v("requests", "memory"),
            v("limits", "cpu"),
            v("limits", "memory"),
            restarts(p)
        )?;
    }
    let f = |a: &Resources| format!("cpu {} memory {}", q(&a.cpu), q(&a.memory));
    for r in &status.last_resizes {
        let changes: Vec<String> = r
            .containers
            .iter()
            .map(|c| format!("{}: {} -> {}", c.container_name, f(&c.from), f(&c.to)))
            .collect();
        writeln!(
            out,
            "  resized {}: {:?} ({})",
            r.pod,
            r.outcome,
            changes.join("; ")
        )?;
    }
    for a in &status.pending_approvals {
        writeln!(
            out,
            "  awaiting approval: {} memory {} -> {}\n    approve: kubectl -n {NS} annotate verticalautoscaler {} tailor.dev/approve-memory-decrease={} --overwrite",
            a.container_name, a.from.0, a.to.0, w.name, a.id
        )?;
    }
    Ok(())
}
