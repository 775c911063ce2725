//! The resize scenarios. Each asserts what the real kubelet v1.35 does; the simulator must do
//! the same.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::support::*;

const SETTLE: Duration = Duration::from_secs(30);

fn summary(limits: (&str, &str), requests: (&str, &str), generation: i64) -> String {
    format!(
        r#"{{"containers":[{{"name":"c1","resources":{{"limits":{{"cpu":"{}","memory":"{}"}},"requests":{{"cpu":"{}","memory":"{}"}}}}}}],"generation":{generation}"#,
        limits.0, limits.1, requests.0, requests.1
    )
}

/// Two resources as the resize patch writes them.
fn resources(requests: (&str, &str), limits: (&str, &str)) -> serde_json::Value {
    json!({"requests": {"cpu": requests.0, "memory": requests.1},
           "limits": {"cpu": limits.0, "memory": limits.1}})
}

/// An in-place resize that the node applies without a restart: generation + 1 at once,
/// then `PodResizeInProgress` (no reason) with the new requests allocated and the old
/// resources applied, then the new resources, no condition, the same container; Events
/// `ResizeStarted` and `ResizeCompleted` with the kubelet's summary.
async fn in_place(
    t: &Target<'_>,
    pod: &str,
    from: ((&'static str, &'static str), (&'static str, &'static str)),
    to: ((&'static str, &'static str), (&'static str, &'static str)),
) {
    let before = t.run_pod(pod, &[Ctr::new(from.0, from.1)]).await;
    let id = cstatus(&before, "c1").container_id.clone();
    let old = parse([from.0.0, from.0.1, from.1.0, from.1.1]);
    let new = parse([to.0.0, to.0.1, to.1.0, to.1.1]);
    let rec = t.record(pod).await;
    let resized = t.resize(pod, "c1", resources(to.0, to.1)).await;
    assert_eq!(
        resized.metadata.generation,
        Some(2),
        "the resize bumps the generation"
    );
    let done = t
        .wait_for(pod, "resized", SETTLE, |p| {
            observed_generation(p) == Some(2)
                && resize_conditions(p).is_empty()
                && applied(p, "c1") == new
        })
        .await;
    assert_eq!(
        allocated(&done, "c1"),
        [new[0], new[1], -1, -1],
        "allocatedResources: requests only"
    );
    assert_eq!(cstatus(&done, "c1").restart_count, 0);
    assert_eq!(cstatus(&done, "c1").container_id, id, "same container");

    // The step in between, as the kubelet writes it. The simulator always writes it; the
    // real kubelet's status manager may merge it with the next write when the resize is done
    // before it syncs (seen once on a loaded machine), so there it is checked when written.
    let versions = rec.versions(&done).await;
    let Some(step) = versions
        .iter()
        .map(|(_, p)| p)
        .find(|p| condition(p, "PodResizeInProgress").is_some())
    else {
        assert_eq!(t.kind, Kind::Real, "no PodResizeInProgress seen");
        eprintln!("real node: {pod}: no PodResizeInProgress write seen (merged with the next)");
        return check_events_and_cgroups(t, pod, &done, to, new).await;
    };
    let c = condition(step, "PodResizeInProgress").unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
        ("True", None, None)
    );
    assert_eq!(c.observed_generation, Some(2));
    assert_eq!(observed_generation(step), Some(2));
    assert_eq!(
        allocated(step, "c1"),
        [new[0], new[1], -1, -1],
        "allocated at once"
    );
    assert_eq!(applied(step, "c1"), old, "applied later");
    assert!(condition(step, "PodResizePending").is_none());
    check_events_and_cgroups(t, pod, &done, to, new).await;
}

/// The Events of a finished in-place resize, and (real node) the cgroup files.
async fn check_events_and_cgroups(
    t: &Target<'_>,
    pod: &str,
    done: &Pod,
    to: ((&'static str, &'static str), (&'static str, &'static str)),
    new: [i64; 4],
) {
    let started = t.wait_event(pod, "ResizeStarted", SETTLE).await;
    assert_eq!(
        started,
        [format!("Pod resize started: {}}}", summary(to.1, to.0, 2))]
    );
    // The real kubelet sometimes records a second ResizeCompleted for the same generation
    // naming the resources from before; the one for the new resources is always there.
    let completed = t.wait_event(pod, "ResizeCompleted", SETTLE).await;
    let want = format!("Pod resize completed: {}}}", summary(to.1, to.0, 2));
    assert!(completed.contains(&want), "{completed:?} lacks {want:?}");
    for c in &completed {
        assert_matches(
            "ResizeCompleted",
            r#"Pod resize completed: \{"containers":\[.*\],"generation":2\}"#,
            c,
        );
    }

    if let Some(real) = t.real {
        let id = cstatus(done, "c1").container_id.clone().unwrap();
        let quota = real.cgroup_value("cpu", &id, "cpu.cfs_quota_us").unwrap();
        assert_eq!(quota, (new[2] * 100).to_string(), "cpu.cfs_quota_us");
        let limit = real
            .cgroup_value("memory", &id, "memory.limit_in_bytes")
            .unwrap();
        assert_eq!(limit, new[3].to_string(), "memory.limit_in_bytes");
    }
}

pub async fn cpu_up(t: &Target<'_>) {
    in_place(
        t,
        "cpu-up",
        (("100m", "64Mi"), ("200m", "128Mi")),
        (("200m", "64Mi"), ("400m", "128Mi")),
    )
    .await;
}

pub async fn cpu_down(t: &Target<'_>) {
    in_place(
        t,
        "cpu-down",
        (("200m", "64Mi"), ("400m", "128Mi")),
        (("50m", "64Mi"), ("100m", "128Mi")),
    )
    .await;
}

pub async fn memory_up(t: &Target<'_>) {
    in_place(
        t,
        "memory-up",
        (("50m", "64Mi"), ("100m", "128Mi")),
        (("50m", "128Mi"), ("100m", "256Mi")),
    )
    .await;
}

pub async fn memory_down(t: &Target<'_>) {
    in_place(
        t,
        "memory-down",
        (("50m", "128Mi"), ("100m", "256Mi")),
        (("50m", "64Mi"), ("100m", "100Mi")),
    )
    .await;
}

const BELOW_USAGE: &str = r#"cannot decrease memory limits: (\[)?attempting to set (pod|container "c1") memory limit \(104857600\) below current usage \(\d+\)(, attempting to set container "c1" memory limit \(104857600\) below current usage \(\d+\)\])?"#;

/// A memory limit cut below what the container uses (`NotRequired`): nothing is applied;
/// `PodResizeInProgress` without a reason first, reason `Error` on a later pod sync (usually
/// after the kubelet's 10-15 s back-off; the real kubelet has also been seen to run it within a
/// second), a `ResizeError` Event; applied once usage falls.
pub async fn memory_limit_below_usage(t: &Target<'_>) {
    let pod = "below-usage";
    t.run_pod(
        pod,
        &[Ctr::new(("100m", "64Mi"), ("200m", "256Mi")).load(150 * MI)],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the workload holds its memory
    let rec = t.record(pod).await;
    t.resize(pod, "c1", json!({"limits": {"memory": "100Mi"}}))
        .await;
    let errored = t
        .wait_for(pod, "in Error", Duration::from_secs(60), |p| {
            condition(p, "PodResizeInProgress")
                .is_some_and(|c| c.reason.as_deref() == Some("Error"))
        })
        .await;
    let c = condition(&errored, "PodResizeInProgress").unwrap();
    assert_eq!(c.observed_generation, Some(2));
    assert_matches(
        "Error message",
        BELOW_USAGE,
        c.message.as_deref().unwrap_or(""),
    );
    assert_eq!(
        applied(&errored, "c1"),
        parse(["100m", "64Mi", "200m", "256Mi"]),
        "nothing applied"
    );
    assert_eq!(
        allocated(&errored, "c1"),
        requests_only("100m", "64Mi"),
        "limits are not allocated"
    );
    assert_eq!(cstatus(&errored, "c1").restart_count, 0);

    let versions = rec.versions(&errored).await;
    let first = versions
        .iter()
        .find(|(_, p)| condition(p, "PodResizeInProgress").is_some())
        .expect("PodResizeInProgress seen");
    assert_eq!(
        condition(&first.1, "PodResizeInProgress").unwrap().reason,
        None,
        "plain first"
    );
    let error_at = versions
        .iter()
        .find(|(_, p)| condition(p, "PodResizeInProgress").is_some_and(|c| c.reason.is_some()))
        .expect("Error seen")
        .0;
    // Later than the plain condition: on a later pod sync, which the real kubelet may run at
    // once (an event on the pod) or at its periodic resync, seconds later.
    let waited = error_at - first.0;
    assert!(
        waited > Duration::ZERO,
        "reason Error on a later pod sync, came after {waited:?}"
    );

    let errors = t.wait_event(pod, "ResizeError", SETTLE).await;
    let head = regex::escape(&summary(("200m", "100Mi"), ("100m", "64Mi"), 2));
    for e in &errors {
        assert_matches(
            "ResizeError event",
            &format!(
                r#"Pod resize error: {head},"error":"{}"\}}"#,
                BELOW_USAGE.replace('"', r#"\\""#)
            ),
            e,
        );
    }

    // Usage falls: a later retry applies the limit.
    t.set_load(pod, "c1", 10, 16 * MI).await;
    let done = t
        .wait_for(
            pod,
            "resized after usage fell",
            Duration::from_secs(60),
            |p| resize_conditions(p).is_empty(),
        )
        .await;
    assert_eq!(
        applied(&done, "c1"),
        parse(["100m", "64Mi", "200m", "100Mi"])
    );
    assert_eq!(cstatus(&done, "c1").restart_count, 0);
    t.wait_event(pod, "ResizeCompleted", SETTLE).await;
}

/// More than the node has: `PodResizePending` reason `Infeasible` with the capacity message,
/// nothing allocated; resizing back clears it.
async fn infeasible(
    t: &Target<'_>,
    pod: &str,
    to: ((&'static str, &'static str), (&'static str, &'static str)),
    resource: &str,
    requested: i64,
) {
    // The message names the node's capacity (on a real node more than allocatable, which
    // also leaves out the eviction threshold).
    let (cpu, memory) = t.capacity().await;
    let capacity = if resource == "cpu" { cpu } else { memory };
    let from = (("100m", "64Mi"), ("200m", "128Mi"));
    t.run_pod(pod, &[Ctr::new(from.0, from.1)]).await;
    t.resize(pod, "c1", resources(to.0, to.1)).await;
    let pending = t
        .wait_for(pod, "Infeasible", SETTLE, |p| {
            condition(p, "PodResizePending").is_some() && observed_generation(p) == Some(2)
        })
        .await;
    let c = condition(&pending, "PodResizePending").unwrap();
    let message = format!(
        "Node didn't have enough capacity: {resource}, requested: {requested}, capacity: {capacity}"
    );
    assert_eq!(
        (c.reason.as_deref(), c.message.as_deref()),
        (Some("Infeasible"), Some(message.as_str()))
    );
    assert_eq!(c.observed_generation, Some(2));
    assert_eq!(observed_generation(&pending), Some(2));
    assert!(condition(&pending, "PodResizeInProgress").is_none());
    let old = parse([from.0.0, from.0.1, from.1.0, from.1.1]);
    assert_eq!(allocated(&pending, "c1"), [old[0], old[1], -1, -1]);
    assert_eq!(applied(&pending, "c1"), old);
    let events = t.wait_event(pod, "ResizeInfeasible", SETTLE).await;
    assert_eq!(
        events,
        [format!(
            r#"Pod resize Infeasible: {},"error":"{message}"}}"#,
            summary(to.1, to.0, 2)
        )]
    );

    // Back to what is allocated: cleared at the next sync, nothing in progress.
    let rec = t.record(pod).await;
    t.resize(pod, "c1", resources(from.0, from.1)).await;
    let back = t
        .wait_for(pod, "cleared", SETTLE, |p| {
            observed_generation(p) == Some(3) && resize_conditions(p).is_empty()
        })
        .await;
    assert_eq!(applied(&back, "c1"), old);
    assert!(
        rec.versions(&back)
            .await
            .iter()
            .all(|(_, p)| condition(p, "PodResizeInProgress").is_none()),
        "no PodResizeInProgress for a resize back to the allocation"
    );
}

pub async fn infeasible_cpu(t: &Target<'_>) {
    infeasible(
        t,
        "infeasible-cpu",
        (("64", "64Mi"), ("64", "128Mi")),
        "cpu",
        64000,
    )
    .await;
}

pub async fn infeasible_memory(t: &Target<'_>) {
    infeasible(
        t,
        "infeasible-memory",
        (("100m", "100Gi"), ("200m", "100Gi")),
        "memory",
        100 << 30,
    )
    .await;
}

/// Room taken by another pod: `Deferred` with the admission message; retried (and applied)
/// as soon as the other pod leaves. Runs alone on the node: it counts the node's requests.
pub async fn deferred_then_retried(t: &Target<'_>) {
    let (cpu, _) = t.allocatable().await;
    t.run_pod("deferred", &[Ctr::new(("100m", "64Mi"), ("800m", "128Mi"))])
        .await;
    let filler = cpu - 100 - 300;
    let filler_cpu: &'static str = Box::leak(format!("{filler}m").into_boxed_str());
    t.run_pod(
        "filler",
        &[Ctr::new((filler_cpu, "16Mi"), (filler_cpu, "64Mi"))],
    )
    .await;
    t.resize("deferred", "c1", json!({"requests": {"cpu": "800m"}}))
        .await;
    let pending = t
        .wait_for("deferred", "Deferred", SETTLE, |p| {
            condition(p, "PodResizePending").is_some()
        })
        .await;
    let c = condition(&pending, "PodResizePending").unwrap();
    let message = format!(
        "Node didn't have enough resource: cpu, requested: 800, used: {filler}, capacity: {cpu}"
    );
    assert_eq!(
        (c.reason.as_deref(), c.message.as_deref()),
        (Some("Deferred"), Some(message.as_str()))
    );
    assert_eq!(c.observed_generation, Some(2));
    assert_eq!(allocated(&pending, "c1"), requests_only("100m", "64Mi"));
    let events = t.wait_event("deferred", "ResizeDeferred", SETTLE).await;
    assert_eq!(
        events,
        [format!(
            r#"Pod resize Deferred: {},"error":"{message}"}}"#,
            summary(("800m", "128Mi"), ("800m", "64Mi"), 2)
        )]
    );

    t.delete("filler").await;
    let done = t
        .wait_for("deferred", "resized", SETTLE, |p| {
            resize_conditions(p).is_empty()
                && applied(p, "c1") == parse(["800m", "64Mi", "800m", "128Mi"])
        })
        .await;
    assert_eq!(allocated(&done, "c1"), requests_only("800m", "64Mi"));
    t.wait_event("deferred", "ResizeCompleted", SETTLE).await;
}

/// `RestartContainer` for memory: the container is replaced with the new limits (new
/// container, restart count + 1, the old one's end in `lastState`); a CPU resize of the same
/// container (`NotRequired`) keeps it.
pub async fn restart_container(t: &Target<'_>) {
    let pod = "restart";
    let before = t
        .run_pod(
            pod,
            &[Ctr::new(("100m", "64Mi"), ("200m", "128Mi")).restart_on_memory()],
        )
        .await;
    let id = cstatus(&before, "c1").container_id.clone();
    let rec = t.record(pod).await;
    t.resize(pod, "c1", resources(("100m", "96Mi"), ("200m", "192Mi")))
        .await;
    let new = parse(["100m", "96Mi", "200m", "192Mi"]);
    let done = t
        .wait_for(pod, "restarted", SETTLE, |p| {
            resize_conditions(p).is_empty()
                && applied(p, "c1") == new
                && cstatus(p, "c1")
                    .state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some())
        })
        .await;
    let s = cstatus(&done, "c1");
    assert_eq!(s.restart_count, 1);
    assert_ne!(s.container_id, id, "a new container");
    let last = s
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(
        (last.reason.as_deref(), last.exit_code),
        (Some("Error"), 143),
        "ended by SIGTERM"
    );
    assert_eq!(last.container_id, id, "the old container's end");
    assert_eq!(allocated(&done, "c1"), [new[0], new[1], -1, -1]);
    assert!(
        rec.versions(&done)
            .await
            .iter()
            .any(|(_, p)| condition(p, "PodResizeInProgress").is_some()),
        "PodResizeInProgress while restarting"
    );
    t.wait_event(pod, "ResizeCompleted", SETTLE).await;

    t.resize(
        pod,
        "c1",
        json!({"requests": {"cpu": "150m"}, "limits": {"cpu": "300m"}}),
    )
    .await;
    let cpu = t
        .wait_for(pod, "cpu resized", SETTLE, |p| {
            observed_generation(p) == Some(3)
                && resize_conditions(p).is_empty()
                && applied(p, "c1")[0] == 150
        })
        .await;
    assert_eq!(
        cstatus(&cpu, "c1").restart_count,
        1,
        "a cpu resize keeps the container"
    );
    assert_eq!(cstatus(&cpu, "c1").container_id, s.container_id);
}

/// `RestartContainer` and a memory limit below usage: not refused (the usage check covers
/// in-place changes only); the container restarts with the smaller limit, the resize
/// completes, and the workload is OOM-killed into `CrashLoopBackOff`.
pub async fn restart_container_below_usage(t: &Target<'_>) {
    let pod = "restart-below";
    t.run_pod(
        pod,
        &[Ctr::new(("100m", "64Mi"), ("200m", "256Mi"))
            .load(150 * MI)
            .restart_on_memory()],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rec = t.record(pod).await;
    t.resize(pod, "c1", json!({"limits": {"memory": "100Mi"}}))
        .await;
    let done = t
        .wait_for(pod, "resized", SETTLE, |p| {
            observed_generation(p) == Some(2)
                && resize_conditions(p).is_empty()
                && applied(p, "c1") == parse(["100m", "64Mi", "200m", "100Mi"])
        })
        .await;
    assert!(cstatus(&done, "c1").restart_count >= 1);
    let crashing = t
        .wait_for(pod, "in CrashLoopBackOff", Duration::from_secs(90), |p| {
            let s = cstatus(p, "c1");
            s.state
                .as_ref()
                .and_then(|st| st.waiting.as_ref())
                .and_then(|w| w.reason.as_deref())
                == Some("CrashLoopBackOff")
                && s.last_state
                    .as_ref()
                    .and_then(|l| l.terminated.as_ref())
                    .and_then(|t| t.reason.as_deref())
                    == Some("OOMKilled")
        })
        .await;
    assert!(cstatus(&crashing, "c1").restart_count >= 2);
    assert!(
        rec.versions(&crashing)
            .await
            .iter()
            .all(|(_, p)| condition(p, "PodResizeInProgress").is_none_or(|c| c.reason.is_none())),
        "never reason Error"
    );
    t.wait_event(pod, "ResizeCompleted", SETTLE).await;
}

/// Resources change only through `resize`: a plain patch of the pod is refused.
pub async fn plain_patch_refused(t: &Target<'_>) {
    let pod = "plain";
    t.run_pod(pod, &[Ctr::new(("100m", "64Mi"), ("200m", "128Mi"))])
        .await;
    let result = t
        .pods()
        .patch(
            pod,
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "c1", "resources": {"requests": {"cpu": "150m"}}}]}})),
        )
        .await;
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{}", s.message);
            assert!(
                s.message
                    .contains("spec: Forbidden: pod updates may not change fields"),
                "{}",
                s.message
            );
        }
        other => panic!("a plain resource patch must be refused, got {other:?}"),
    }
    assert_eq!(
        t.pods().get(pod).await.unwrap().metadata.generation,
        Some(1)
    );
}
