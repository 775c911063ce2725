//! Who writes what of a VerticalAutoscaler's status: the recommender alone patches it (the
//! updater applies the recommendation written there); the updater records to its ResizeState,
//! which the recommender mirrors into the status.

use std::time::{Duration, Instant};

use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tailor_e2e::ControlPlane;
use tailor_e2e::process::ServerProcess;

use super::{TIMEOUT, api_for, apply, assert_allowed, assert_forbidden};

/// The updater creates and patches its ResizeStates (server-side apply, as it writes them),
/// and deletes none (they go with their VerticalAutoscaler); the recommender reads them only.
pub async fn resize_states_are_written_by_the_updater_alone(
    ns: &str,
    uid: &Value,
    updater: &kube::Client,
    recommender: &kube::Client,
) -> anyhow::Result<()> {
    let state = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "ResizeState",
        "metadata": { "name": "web", "namespace": ns, "ownerReferences": [{
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler", "name": "web",
            "uid": uid, "controller": true }] },
        "spec": { "verticalAutoscalerUid": uid, "conditions": [{ "type": "AwaitingApproval",
            "status": "False", "reason": "NothingToApprove", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z" }] }
    });
    let apply = PatchParams::apply("tailor-updater").force();
    let states = api_for(updater, &state).await?;
    assert_allowed(
        states.patch("web", &apply, &Patch::Apply(&state)).await,
        "updater creates a ResizeState",
    );
    let mut changed = state.clone();
    changed["spec"]["conditions"][0]["status"] = json!("True");
    assert_allowed(
        states.patch("web", &apply, &Patch::Apply(&changed)).await,
        "updater patches a ResizeState",
    );
    assert_allowed(
        states.list(&ListParams::default()).await,
        "updater lists ResizeStates",
    );
    assert_forbidden(
        states.delete("web", &DeleteParams::default()).await,
        "updater deletes a ResizeState",
    );
    let read_only = api_for(recommender, &state).await?;
    assert_allowed(
        read_only.list(&ListParams::default()).await,
        "recommender lists ResizeStates",
    );
    assert_allowed(read_only.get("web").await, "recommender gets a ResizeState");
    assert_forbidden(
        read_only
            .patch(
                "web",
                &PatchParams::apply("tailor-recommender").force(),
                &Patch::Apply(&state),
            )
            .await,
        "recommender patches a ResizeState",
    );
    Ok(())
}

/// An `InPlace` VerticalAutoscaler whose recommendation was computed for an earlier spec (as
/// a test writes it, not the recommender): the updater reports it stale.
pub async fn stale_object(cp: &ControlPlane) -> anyhow::Result<Value> {
    let ns = cp.namespace("stale").await?;
    stale_object_in(cp, &ns).await
}

/// [`stale_object`] in the namespace `ns`.
pub async fn stale_object_in(cp: &ControlPlane, ns: &str) -> anyhow::Result<Value> {
    let va = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "metadata": { "name": "web", "namespace": ns },
        "spec": { "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
                  "updatePolicy": { "updateMode": "InPlace" } }
    });
    let stored = apply(&cp.client(), &va).await?;
    let stale = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "status": { "recommendation": { "observedGeneration": 0,
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
            "containerRecommendations": [{ "containerName": "app", "target": { "cpu": "1" } }] } }
    });
    api_for(&cp.client(), &va)
        .await?
        .patch_status(
            "web",
            &PatchParams::apply("tailor-deploy-test").force(),
            &Patch::Apply(stale),
        )
        .await?;
    Ok(stored)
}

/// Waits until the updater (with its token) has recorded `va` as stale in its ResizeState and
/// the recommender (with its token) has mirrored that into the status.
pub async fn recorded_and_mirrored(
    cp: &ControlPlane,
    va: &Value,
    running: &[(&str, ServerProcess)],
) -> anyhow::Result<()> {
    let stale = |o: &Value, path: &str| {
        o.pointer(path)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "RecommendationStale"))
    };
    let mut state = va.clone();
    state["kind"] = json!("ResizeState");
    let (vas, states) = (
        api_for(&cp.client(), va).await?,
        api_for(&cp.client(), &state).await?,
    );
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let recorded = states
            .get_opt("web")
            .await?
            .map(serde_json::to_value)
            .transpose()?;
        let object = serde_json::to_value(vas.get("web").await?)?;
        let recorded = recorded.is_some_and(|r| stale(&r, "/spec/conditions"));
        if recorded && stale(&object, "/status/conditions") {
            return Ok(());
        }
        let logs: Vec<String> = running
            .iter()
            .map(|(name, p)| format!("{name}:\n{}", p.log_tail(20)))
            .collect();
        assert!(
            Instant::now() < deadline,
            "not recorded ({recorded}) and mirrored after {TIMEOUT:?}: {object:#}\n{}",
            logs.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
