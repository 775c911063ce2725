//! The VerticalAutoscaler API on a real kube-apiserver: the CRD is accepted, valid objects
//! round-trip with defaults, malformed ones are rejected with a message naming the problem; the
//! updater's ResizeState is accepted beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_crds::v1alpha1::*;
use tailor_e2e::ControlPlane;

fn q(s: &str) -> Quantity {
    Quantity(s.to_owned())
}

fn minimal(name: &str) -> Value {
    json!({
        "apiVersion": "tailor.dev/v1alpha1",
        "kind": "VerticalAutoscaler",
        "metadata": { "name": name },
        "spec": { "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" } }
    })
}

fn dynamic(cp: &ControlPlane, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        cp.client(),
        ns,
        &ApiResource::erase::<VerticalAutoscaler>(&()),
    )
}

#[tokio::test]
async fn crd_is_accepted_and_established() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    assert!(
        cp.version().starts_with("v1.35."),
        "server version {}",
        cp.version()
    );
    let crd = Api::<CustomResourceDefinition>::all(cp.client())
        .get("verticalautoscalers.tailor.dev")
        .await?;
    let status = crd.status.unwrap_or_default();
    let conditions = status.conditions.unwrap_or_default();
    for wanted in ["Established", "NamesAccepted"] {
        let c = conditions
            .iter()
            .find(|c| c.type_ == wanted)
            .unwrap_or_else(|| panic!("no {wanted} condition: {conditions:?}"));
        assert_eq!(c.status, "True", "{wanted}: {c:?}");
    }
    let names = status.accepted_names.expect("accepted names");
    assert_eq!(names.kind, "VerticalAutoscaler");
    assert_eq!(names.short_names, Some(vec!["va".to_owned()]));
    Ok(())
}

#[tokio::test]
async fn resize_states_round_trip_owned_by_their_object() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let ns = cp.namespace("state").await?;
    let va: VerticalAutoscaler = serde_json::from_value(minimal("web"))?;
    let va = Api::<VerticalAutoscaler>::namespaced(cp.client(), &ns)
        .create(&PostParams::default(), &va)
        .await?;
    let uid = va.metadata.uid.clone().unwrap();
    let states = Api::<tailor_crds::ResizeState>::namespaced(cp.client(), &ns);
    let state = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "ResizeState",
        "metadata": { "name": "web", "ownerReferences": [{ "apiVersion": "tailor.dev/v1alpha1",
            "kind": "VerticalAutoscaler", "name": "web", "uid": uid, "controller": true }] },
        "spec": { "verticalAutoscalerUid": uid,
            "pendingApprovals": [{ "containerName": "app", "from": "1Gi", "to": "512Mi", "id": "3f9a1c07d2",
                                   "pods": [{ "name": "web-0", "uid": "p0" }] }],
            "conditions": [{ "type": "AwaitingApproval", "status": "True", "reason": "MemoryDecreaseHeld",
                             "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z" }],
            "lastResizes": [{ "pod": "web-0", "podUid": "p0", "time": "2026-01-01T00:00:00Z",
                              "outcome": "Applied" }] }
    });
    let params = PatchParams::apply("tailor-updater").validation_strict();
    let stored = states.patch("web", &params, &Patch::Apply(&state)).await?;
    assert_eq!(stored.spec.pending_approvals[0].id, "3f9a1c07d2");
    assert_eq!(stored.spec.last_resizes[0].outcome, ResizeOutcome::Applied);
    let owner = &stored.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.uid.as_str(), owner.controller),
        (uid.as_str(), Some(true))
    );
    // The uid of the object it belongs to is required; ten records at most.
    let mut without = state.clone();
    without["spec"]
        .as_object_mut()
        .unwrap()
        .remove("verticalAutoscalerUid");
    let err = states
        .patch("web", &params, &Patch::Apply(&without))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("verticalAutoscalerUid"), "{err}");
    let mut long = state.clone();
    long["spec"]["lastResizes"] = Value::Array(vec![state["spec"]["lastResizes"][0].clone(); 11]);
    let err = states
        .patch("web", &params, &Patch::Apply(&long))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("lastResizes"), "{err}");
    Ok(())
}

#[tokio::test]
async fn valid_objects_round_trip_with_defaults_applied() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let ns = cp.namespace("api").await?;
    let api: Api<VerticalAutoscaler> = Api::namespaced(cp.client(), &ns);

    // A minimal object: every default is filled in by the API server.
    let created = dynamic(&cp, &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(minimal("minimal"))?,
        )
        .await?;
    let raw = serde_json::to_value(&created)?;
    let spec = &raw["spec"];
    assert_eq!(spec["updatePolicy"]["updateMode"], "Off");
    assert_eq!(spec["updatePolicy"]["memoryDecrease"], "ManualApproval");
    assert_eq!(
        spec["updatePolicy"]["minChange"],
        json!({"cpu": 0.1, "memory": 0.1})
    );
    assert_eq!(spec["updatePolicy"]["maxConcurrentRestarts"], 1);
    assert_eq!(spec["updatePolicy"]["hpaConflict"], "Skip");
    assert_eq!(
        spec["updatePolicy"]["memoryGuard"],
        json!({"enabled": true, "threshold": 0.9, "step": 0.5, "minIntervalSeconds": 60,
               "allowRestart": false})
    );
    assert_eq!(spec["recommenderPolicy"]["historyWindow"], "14d");
    assert_eq!(
        spec["recommenderPolicy"]["cpu"],
        json!({"percentile": 0.9, "margin": 0.15})
    );
    assert_eq!(
        spec["recommenderPolicy"]["memory"],
        json!({"percentile": 0.95, "margin": 0.15, "peakMargin": 0.15, "maxGrowthMargin": 0.5})
    );
    assert_eq!(
        spec["recommenderPolicy"]["oomBump"],
        json!({"ratio": 1.2, "minBump": "100Mi"})
    );
    let typed = api.get("minimal").await?;
    assert_eq!(typed.spec.update_policy, UpdatePolicy::default());
    assert_eq!(typed.spec.recommender_policy, RecommenderPolicy::default());

    // Defaults inside a container policy.
    let mut with_policy = minimal("container-defaults");
    with_policy["spec"]["resourcePolicy"] =
        json!({"containerPolicies": [{"containerName": "app"}]});
    let created = dynamic(&cp, &ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(with_policy)?,
        )
        .await?;
    let policy = &serde_json::to_value(&created)?["spec"]["resourcePolicy"]["containerPolicies"][0];
    assert_eq!(policy["mode"], "Auto");
    assert_eq!(policy["controlledResources"], json!(["cpu", "memory"]));
    assert_eq!(policy["controlledValues"], "RequestsAndLimits");

    // A fully specified object comes back exactly as sent.
    let mut full = VerticalAutoscaler::new(
        "full",
        VerticalAutoscalerSpec {
            target_ref: TargetRef {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "db".into(),
            },
            update_policy: UpdatePolicy {
                update_mode: UpdateMode::InPlace,
                memory_decrease: MemoryDecrease::RestartContainer,
                min_change: MinChange {
                    cpu: 0.05,
                    memory: 0.2,
                },
                max_concurrent_restarts: 2,
                hpa_conflict: HpaConflict::Resize,
                memory_guard: MemoryGuard {
                    enabled: false,
                    threshold: 0.8,
                    step: 0.5,
                    min_interval_seconds: 300,
                    allow_restart: true,
                },
            },
            recommender_policy: RecommenderPolicy {
                history_window: "14d".into(),
                cpu: CpuPolicy {
                    percentile: 0.95,
                    margin: 0.1,
                },
                memory: MemoryPolicy {
                    percentile: 0.99,
                    margin: 0.2,
                    peak_margin: 0.05,
                    max_growth_margin: 0.25,
                },
                oom_bump: OomBump {
                    ratio: 1.5,
                    min_bump: Some(q("256Mi")),
                },
            },
            resource_policy: ResourcePolicy {
                container_policies: vec![
                    ContainerPolicy {
                        min_allowed: Some(Resources {
                            cpu: Some(q("100m")),
                            memory: Some(q("256Mi")),
                        }),
                        max_allowed: Some(Resources {
                            cpu: Some(q("4")),
                            memory: Some(q("8Gi")),
                        }),
                        controlled_values: ControlledValues::RequestsOnly,
                        heap: Some(HeapPolicy {
                            source: HeapSource::Explicit,
                            max_heap: Some(q("2Gi")),
                            overhead: Some(q("512Mi")),
                        }),
                        ..ContainerPolicy::new("db")
                    },
                    ContainerPolicy {
                        mode: ContainerMode::Off,
                        controlled_resources: vec![ResourceName::Cpu],
                        ..ContainerPolicy::new("*")
                    },
                ],
            },
        },
    );
    let created = api.create(&PostParams::default(), &full).await?;
    assert_eq!(created.spec, full.spec);

    // The status subresource holds every status field, and printer columns show them.
    full.status = Some(VerticalAutoscalerStatus {
        observed_generation: Some(1),
        recommendation: Some(Recommendation {
            observed_generation: Some(1),
            target_ref: Some(full.spec.target_ref.clone()),
            container_recommendations: vec![ContainerRecommendation {
                container_name: "db".into(),
                target: Resources {
                    cpu: Some(q("250m")),
                    memory: Some(q("3Gi")),
                },
                lower_bound: Some(Resources {
                    cpu: Some(q("200m")),
                    memory: Some(q("2560Mi")),
                }),
                upper_bound: Some(Resources {
                    cpu: Some(q("1")),
                    memory: Some(q("4Gi")),
                }),
                uncapped_target: Some(Resources {
                    cpu: Some(q("250m")),
                    memory: Some(q("3Gi")),
                }),
                memory_floor: Some(MemoryFloor {
                    value: q("2560Mi"),
                    reason: FloorReason::HeapHint,
                    peak_margin: Some(0.15),
                }),
                samples: Some(11520),
                history_span: Some("8d".into()),
                observed_peak: Some(Resources {
                    cpu: Some(q("900m")),
                    memory: Some(q("2300Mi")),
                }),
            }],
        }),
        pending_approvals: vec![PendingApproval {
            container_name: "db".into(),
            from: q("4Gi"),
            to: q("3Gi"),
            id: "db-4Gi-3Gi-0123abcd".into(),
            since: None,
            pods: vec![tailor_crds::v1alpha1::PodRef {
                name: "db-0".into(),
                uid: "9d1f0c7e-0000-4000-8000-000000000001".into(),
            }],
            approved: None,
        }],
        pending_approval_count: Some(1),
        conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: condition::RECOMMENDATION_PROVIDED.into(),
            status: "True".into(),
            reason: "Computed".into(),
            message: "recommendation from 8d of history".into(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-02T03:04:05Z".parse()?,
            ),
            observed_generation: Some(1),
        }],
        last_resizes: vec![],
        memory_guard_raises: vec![MemoryGuardRaise {
            pod: "db-0".into(),
            pod_uid: Some("9d1f0c7e-0000-4000-8000-000000000001".into()),
            container_name: "db".into(),
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                "2026-01-02T03:04:05Z".parse()?,
            ),
            usage: q("3700Mi"),
            from: q("4Gi"),
            to: q("4625Mi"),
        }],
    });
    let patched = api
        .patch_status(
            "full",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": full.status })),
        )
        .await?;
    assert_eq!(patched.status, full.status);
    assert_eq!(api.get("full").await?.status, full.status);

    let table = printer_columns(&cp, &ns, "full").await?;
    assert_eq!(
        table.0,
        [
            "Name", "Mode", "CPU", "Memory", "Provided", "Pending", "Age"
        ],
        "columns"
    );
    assert_eq!(
        &table.1[..6],
        [
            json!("full"),
            json!("InPlace"),
            json!("250m"),
            json!("3Gi"),
            json!("True"),
            json!(1)
        ]
    );
    Ok(())
}

/// The column names and the first row of `kubectl get va NAME`.
async fn printer_columns(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
) -> anyhow::Result<(Vec<String>, Vec<Value>)> {
    let req = http::Request::get(format!(
        "/apis/tailor.dev/v1alpha1/namespaces/{ns}/verticalautoscalers/{name}"
    ))
    .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
    .body(Vec::new())?;
    let table: Value = serde_json::from_str(&cp.client().request_text(req).await?)?;
    let columns = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let cells = table["rows"][0]["cells"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Ok((columns, cells))
}

/// One malformed object per validation rule, each with the text the server must answer.
fn malformed_cases() -> Vec<(&'static str, Value, &'static [&'static str])> {
    let with = |path: &[&str], value: Value| {
        let mut obj = minimal("bad");
        let mut cursor = &mut obj["spec"];
        for key in &path[..path.len() - 1] {
            cursor = &mut cursor[*key];
        }
        cursor[*path.last().expect("path")] = value;
        obj
    };
    let container = |policy: Value| with(&["resourcePolicy", "containerPolicies"], json!([policy]));
    vec![
        (
            "unknown updateMode",
            with(&["updatePolicy", "updateMode"], json!("Auto")),
            &[
                "spec.updatePolicy.updateMode",
                "Unsupported value: \"Auto\"",
            ],
        ),
        (
            "unknown memoryDecrease",
            with(&["updatePolicy", "memoryDecrease"], json!("Sometimes")),
            &["spec.updatePolicy.memoryDecrease", "Unsupported value"],
        ),
        (
            "cpu percentile 0",
            with(&["recommenderPolicy", "cpu", "percentile"], json!(0)),
            &[
                "spec.recommenderPolicy.cpu.percentile",
                "cpu.percentile must be in (0, 1]",
            ],
        ),
        (
            "memory percentile above 1",
            with(&["recommenderPolicy", "memory", "percentile"], json!(1.5)),
            &[
                "spec.recommenderPolicy.memory.percentile",
                "memory.percentile must be in (0, 1]",
            ],
        ),
        (
            "negative cpu margin",
            with(&["recommenderPolicy", "cpu", "margin"], json!(-0.1)),
            &[
                "spec.recommenderPolicy.cpu.margin",
                "cpu.margin must be >= 0",
            ],
        ),
        (
            "negative memory peakMargin",
            with(&["recommenderPolicy", "memory", "peakMargin"], json!(-1)),
            &[
                "spec.recommenderPolicy.memory.peakMargin",
                "memory.peakMargin must be >= 0",
            ],
        ),
        (
            "memory maxGrowthMargin above 10",
            with(
                &["recommenderPolicy", "memory", "maxGrowthMargin"],
                json!(11),
            ),
            &[
                "spec.recommenderPolicy.memory.maxGrowthMargin",
                "memory.maxGrowthMargin must be between 0 and 10",
            ],
        ),
        (
            "minAllowed.cpu above maxAllowed.cpu",
            container(
                json!({"containerName": "app", "minAllowed": {"cpu": "2"}, "maxAllowed": {"cpu": "1500m"}}),
            ),
            &[
                "spec.resourcePolicy.containerPolicies[0]",
                "minAllowed.cpu must not exceed maxAllowed.cpu",
            ],
        ),
        (
            "minAllowed.memory above maxAllowed.memory",
            container(
                json!({"containerName": "app", "minAllowed": {"memory": "2Gi"}, "maxAllowed": {"memory": "2G"}}),
            ),
            &[
                "spec.resourcePolicy.containerPolicies[0]",
                "minAllowed.memory must not exceed maxAllowed.memory",
            ],
        ),
        (
            "duplicate container names",
            with(
                &["resourcePolicy", "containerPolicies"],
                json!([{"containerName": "app"}, {"containerName": "app"}]),
            ),
            &["spec.resourcePolicy.containerPolicies", "Duplicate value"],
        ),
        (
            "targetRef to a Pod",
            with(
                &["targetRef"],
                json!({"apiVersion": "v1", "kind": "Pod", "name": "p"}),
            ),
            &[
                "spec.targetRef",
                "targetRef must name a Deployment, StatefulSet, DaemonSet or ReplicaSet",
            ],
        ),
        (
            "targetRef to an apps/v1 kind that is no workload",
            with(
                &["targetRef"],
                json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "name": "p"}),
            ),
            &["spec.targetRef", "targetRef must name a Deployment"],
        ),
        (
            "missing targetRef",
            json!({"apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler", "metadata": {"name": "bad"}, "spec": {}}),
            &["spec.targetRef", "Required value"],
        ),
        (
            "malformed historyWindow",
            with(&["recommenderPolicy", "historyWindow"], json!("a week")),
            &["spec.recommenderPolicy.historyWindow", "should match"],
        ),
        (
            "malformed quantity",
            container(json!({"containerName": "app", "maxAllowed": {"memory": "12XB"}})),
            &[
                "spec.resourcePolicy.containerPolicies[0].maxAllowed.memory",
                "should match",
            ],
        ),
        (
            "negative quantity",
            container(json!({"containerName": "app", "minAllowed": {"cpu": "-1"}})),
            &[
                "spec.resourcePolicy.containerPolicies[0].minAllowed.cpu",
                "should match",
            ],
        ),
        (
            "OOM bump ratio below 1",
            with(&["recommenderPolicy", "oomBump", "ratio"], json!(0.5)),
            &[
                "spec.recommenderPolicy.oomBump.ratio",
                "oomBump.ratio must be >= 1",
            ],
        ),
        (
            "explicit heap without maxHeap",
            container(json!({"containerName": "jvm", "heap": {"source": "Explicit"}})),
            &[
                "spec.resourcePolicy.containerPolicies[0].heap",
                "heap.maxHeap is required when heap.source is Explicit",
            ],
        ),
        (
            "maxConcurrentRestarts 0",
            with(&["updatePolicy", "maxConcurrentRestarts"], json!(0)),
            &[
                "spec.updatePolicy.maxConcurrentRestarts",
                "maxConcurrentRestarts must be at least 1",
            ],
        ),
        (
            "unknown controlled resource",
            container(json!({"containerName": "app", "controlledResources": ["gpu"]})),
            &["controlledResources[0]", "Unsupported value: \"gpu\""],
        ),
        (
            "negative minChange",
            with(&["updatePolicy", "minChange", "cpu"], json!(-0.1)),
            &[
                "spec.updatePolicy.minChange.cpu",
                "minChange.cpu must be a fraction between 0 and 10",
            ],
        ),
        (
            "memory guard threshold of 1",
            with(&["updatePolicy", "memoryGuard", "threshold"], json!(1.0)),
            &[
                "spec.updatePolicy.memoryGuard.threshold",
                "memoryGuard.threshold must be a fraction between 0.5 and 0.99",
            ],
        ),
        (
            "memory guard step of 0",
            with(&["updatePolicy", "memoryGuard", "step"], json!(0)),
            &["memoryGuard.step must be a fraction between 0.05 and 4"],
        ),
        (
            "memory guard interval of 1 s",
            with(
                &["updatePolicy", "memoryGuard", "minIntervalSeconds"],
                json!(1),
            ),
            &["memoryGuard.minIntervalSeconds must be at least 5"],
        ),
    ]
}

#[tokio::test]
async fn malformed_objects_are_rejected_with_a_message_naming_the_problem() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let ns = cp.namespace("invalid").await?;
    let api = dynamic(&cp, &ns);
    let mut failures = Vec::new();
    let cases = malformed_cases();
    assert!(cases.len() >= 8);
    for (what, obj, wanted) in cases {
        match api
            .create(&PostParams::default(), &serde_json::from_value(obj)?)
            .await
        {
            Ok(_) => failures.push(format!("{what}: accepted")),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 {
                    failures.push(format!("{what}: HTTP {} {}", status.code, status.message));
                }
                for text in wanted {
                    if !status.message.contains(text) {
                        failures.push(format!(
                            "{what}: message lacks {text:?}: {}",
                            status.message
                        ));
                    }
                }
            }
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Nothing malformed was stored.
    assert!(api.list(&Default::default()).await?.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn custom_resource_targets_pass_the_schema() -> anyhow::Result<()> {
    // Custom workload kinds are not rejected by the schema; the controllers report
    // ConfigUnsupported for those they cannot resolve.
    let cp = ControlPlane::start().await?;
    let ns = cp.namespace("custom").await?;
    let mut obj = minimal("rollout");
    obj["spec"]["targetRef"] =
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "web"});
    dynamic(&cp, &ns)
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?;
    Ok(())
}
