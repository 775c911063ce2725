//! The mirror against a real API server: the updater's ResizeStates appear in their
//! VerticalAutoscalers' status (and follow every update), beside the recommender's own fields
//! and without fighting them; a ResizeState of another uid is ignored; fields an updater from
//! before ResizeStates left in the status are taken over or released.
//!
//! The recommender runs whole (`controller::run`) against a Prometheus that refuses
//! connections: it writes its own conditions (`HistoryUnavailable`) and no recommendation.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_crds::{ResizeState, VerticalAutoscalerStatus};
use tailor_e2e::ControlPlane;
use tailor_recommender::controller::{self, Options};
use tailor_recommender::mirror::FIELD_MANAGER;
use tailor_recommender::prometheus::{Config, Prometheus};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "shop";

struct Env {
    cp: ControlPlane,
    task: tokio::task::JoinHandle<()>,
}

impl Env {
    async fn start() -> Self {
        let cp = ControlPlane::start().await.unwrap();
        Api::<k8s_openapi::api::core::v1::Namespace>::all(cp.client())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap(),
            )
            .await
            .unwrap();
        let port = tailor_e2e::free_port().unwrap();
        let prometheus = Prometheus::new(Config {
            url: format!("http://127.0.0.1:{port}"),
            retries: 0,
            timeout: Duration::from_secs(2),
            ..Config::default()
        })
        .unwrap();
        let task = tokio::spawn(controller::run(
            cp.client(),
            std::sync::Arc::new(prometheus),
            Options {
                refresh: Duration::from_secs(600),
                ..Options::default()
            },
            std::sync::Arc::new(tailor_recommender::metrics::Metrics::new()),
        ));
        Self { cp, task }
    }

    fn vas(&self) -> Api<VerticalAutoscaler> {
        Api::namespaced(self.cp.client(), NS)
    }

    /// A VerticalAutoscaler; returns its uid.
    async fn va(&self, name: &str) -> String {
        let va: VerticalAutoscaler = serde_json::from_value(json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": name},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}},
        }))
        .unwrap();
        let va = self
            .vas()
            .create(&PostParams::default(), &va)
            .await
            .unwrap();
        va.metadata.uid.unwrap()
    }

    /// Writes a ResizeState as the updater does (server-side apply, `tailor-updater`).
    async fn state(&self, name: &str, uid: &str, spec: Value) {
        let mut spec = spec;
        spec["verticalAutoscalerUid"] = json!(uid);
        let state = json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "ResizeState",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        });
        Api::<ResizeState>::namespaced(self.cp.client(), NS)
            .patch(
                name,
                &PatchParams::apply("tailor-updater").force(),
                &Patch::Apply(state),
            )
            .await
            .unwrap();
    }

    async fn wait(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&VerticalAutoscalerStatus) -> bool,
    ) -> VerticalAutoscaler {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let v = self.vas().get(name).await.unwrap();
            let status = v.status.clone().unwrap_or_default();
            if check(&status) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: not {what}: {:#?}",
                v.status
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn cond(type_: &str, status: &str, reason: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": format!("{type_} {reason}"),
           "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1})
}

fn pending(container: &str) -> Value {
    json!({"containerName": container, "from": "1Gi", "to": "512Mi", "id": format!("id-{container}"),
           "since": "2026-01-01T00:00:00Z", "pods": [{"name": "web-0", "uid": "p0"}]})
}

fn record(pod: &str) -> Value {
    json!({"pod": pod, "podUid": format!("uid-{pod}"), "time": "2026-01-01T00:00:00Z", "outcome": "Applied"})
}

/// The condition `type_` of a status: (status, reason).
fn condition<'a>(s: &'a VerticalAutoscalerStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// The status fields `manager` owns, as the API server's managedFields say.
fn owned_by(va: &VerticalAutoscaler, manager: &str) -> String {
    va.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(manager))
        .map(|m| serde_json::to_string(&m.fields_v1).unwrap())
        .collect()
}

/// An object the recommender has written, and its ResizeState with a pending approval, mirrored.
async fn mirrored_object(env: &Env, name: &str) -> (String, VerticalAutoscaler) {
    let uid = env.va(name).await;
    env.wait(name, "written by the recommender", |s| {
        condition(s, "HistoryUnavailable") == Some(("True", "PrometheusError"))
    })
    .await;
    env.state(
        name,
        &uid,
        json!({"pendingApprovals": [pending("app")],
               "conditions": [cond("AwaitingApproval", "True", "MemoryDecreaseHeld"),
                              cond("ResizeDeferred", "False", "NoneDeferred")],
               "lastResizes": [record("web-0")]}),
    )
    .await;
    let va = env
        .wait(name, "mirrored", |s| {
            s.pending_approvals.len() == 1 && condition(s, "AwaitingApproval").is_some()
        })
        .await;
    (uid, va)
}

#[tokio::test]
async fn resize_states_are_mirrored_beside_the_recommenders_own_fields() {
    let env = Env::start().await;
    let (_, va) = mirrored_object(&env, "web").await;
    let s = va.status.as_ref().unwrap();
    assert_eq!(s.pending_approvals[0].id, "id-app");
    assert_eq!(s.pending_approval_count, Some(1));
    assert_eq!(s.last_resizes[0].pod, "web-0");
    assert_eq!(
        condition(s, "AwaitingApproval"),
        Some(("True", "MemoryDecreaseHeld"))
    );
    assert_eq!(
        condition(s, "ResizeDeferred"),
        Some(("False", "NoneDeferred"))
    );
    // Beside the recommender's own conditions, each field under its own manager.
    assert_eq!(
        condition(s, "HistoryUnavailable"),
        Some(("True", "PrometheusError"))
    );
    let mirror = owned_by(&va, FIELD_MANAGER);
    let recommender = owned_by(&va, "tailor-recommender");
    for field in [
        "f:pendingApprovals",
        "f:lastResizes",
        "\"k:{\\\"type\\\":\\\"AwaitingApproval\\\"}\"",
    ] {
        assert!(mirror.contains(field), "the mirror owns {field}: {mirror}");
        assert!(!recommender.contains(field), "{recommender}");
    }
    assert!(recommender.contains("HistoryUnavailable"), "{recommender}");
    assert!(!mirror.contains("HistoryUnavailable"), "{mirror}");
    env.task.abort();
}

#[tokio::test]
async fn the_mirror_follows_every_update_and_the_recommender_leaves_it_alone() {
    let env = Env::start().await;
    let (uid, _) = mirrored_object(&env, "web").await;
    // Updates follow: the approval goes, a condition appears, the records grow.
    env.state(
        "web",
        &uid,
        json!({"conditions": [cond("AwaitingApproval", "False", "NothingToApprove"),
                              cond("ResizeDeferred", "False", "NoneDeferred"),
                              cond("RecommendationStale", "True", "RecommendationStale")],
               "lastResizes": [record("web-1"), record("web-0")]}),
    )
    .await;
    env.wait("web", "following the update", |s| {
        s.pending_approvals.is_empty()
            && s.pending_approval_count == Some(0)
            && condition(s, "AwaitingApproval") == Some(("False", "NothingToApprove"))
            && condition(s, "RecommendationStale").is_some()
            && s.last_resizes.len() == 2
    })
    .await;
    // The recommender's next write leaves the mirrored fields alone...
    env.vas()
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"recommenderPolicy": {"cpu": {"margin": 0.2}}}})),
        )
        .await
        .unwrap();
    let va = env
        .wait("web", "recomputed", |s| s.observed_generation == Some(2))
        .await;
    let s = va.status.as_ref().unwrap();
    assert!(condition(s, "RecommendationStale").is_some(), "{s:#?}");
    assert_eq!(s.last_resizes.len(), 2);
    // ... and conditions the updater drops go, the recommender's stay.
    env.state(
        "web",
        &uid,
        json!({"conditions": [cond("AwaitingApproval", "False", "NothingToApprove")],
               "lastResizes": [record("web-1"), record("web-0")]}),
    )
    .await;
    let va = env
        .wait("web", "without RecommendationStale", |s| {
            condition(s, "RecommendationStale").is_none()
                && condition(s, "ResizeDeferred").is_none()
        })
        .await;
    let s = va.status.as_ref().unwrap();
    assert!(condition(s, "HistoryUnavailable").is_some(), "{s:#?}");
    assert!(condition(s, "RecommendationProvided").is_some(), "{s:#?}");
    env.task.abort();
}

#[tokio::test]
async fn a_resize_state_of_another_uid_is_ignored() {
    let env = Env::start().await;
    let uid = env.va("again").await;
    env.wait("again", "written by the recommender", |s| {
        condition(s, "HistoryUnavailable").is_some()
    })
    .await;
    // Left by an object deleted and created again under the same name.
    env.state(
        "again",
        "uid-of-the-deleted-one",
        json!({"pendingApprovals": [pending("app")],
               "conditions": [cond("AwaitingApproval", "True", "MemoryDecreaseHeld")]}),
    )
    .await;
    // The mirror had its chance: another object's state, written after, is mirrored...
    let other = env.va("other").await;
    env.state(
        "other",
        &other,
        json!({"conditions": [cond("ResizeInfeasible", "True", "Infeasible")]}),
    )
    .await;
    env.wait("other", "mirrored", |s| {
        condition(s, "ResizeInfeasible").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // ... this one is not.
    let s = env.vas().get("again").await.unwrap().status.unwrap();
    assert!(s.pending_approvals.is_empty(), "{s:#?}");
    assert!(condition(&s, "AwaitingApproval").is_none(), "{s:#?}");
    // The object's own (the updater writes it under the new uid) is.
    env.state(
        "again",
        &uid,
        json!({"conditions": [cond("AwaitingApproval", "False", "NothingToApprove")]}),
    )
    .await;
    env.wait("again", "mirrored once its uid", |s| {
        condition(s, "AwaitingApproval") == Some(("False", "NothingToApprove"))
    })
    .await;
    env.task.abort();
}

#[tokio::test]
async fn fields_an_older_updater_wrote_into_status_are_taken_over_or_released() {
    let env = Env::start().await;
    let uid = env.va("old").await;
    // What an updater from before ResizeStates wrote into the status itself.
    let old = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "status": {"pendingApprovals": [pending("app")], "pendingApprovalCount": 1,
                   "conditions": [cond("AwaitingApproval", "True", "MemoryDecreaseHeld"),
                                  cond("RecommendationStale", "True", "RecommendationStale")],
                   "lastResizes": [record("web-0")]},
    });
    env.vas()
        .patch_status(
            "old",
            &PatchParams::apply("tailor-updater").force(),
            &Patch::Apply(old),
        )
        .await
        .unwrap();
    env.wait("old", "written by the recommender", |s| {
        condition(s, "HistoryUnavailable").is_some()
    })
    .await;
    // The new updater's first record: the approval was used, the same record is kept.
    env.state(
        "old",
        &uid,
        json!({"conditions": [cond("AwaitingApproval", "False", "NothingToApprove")],
               "lastResizes": [record("web-0")]}),
    )
    .await;
    let va = env
        .wait("old", "taken over", |s| {
            s.pending_approvals.is_empty()
                && condition(s, "RecommendationStale").is_none()
                && condition(s, "AwaitingApproval") == Some(("False", "NothingToApprove"))
        })
        .await;
    let s = va.status.as_ref().unwrap();
    assert_eq!(s.last_resizes.len(), 1, "{s:#?}");
    assert_eq!(s.pending_approval_count, Some(0));
    assert!(condition(s, "HistoryUnavailable").is_some(), "{s:#?}");
    assert_eq!(owned_by(&va, "tailor-updater"), "", "released");
    env.task.abort();
}
