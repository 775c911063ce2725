//! The installable manifests, `deploy/kustomize/base` (and its overlay
//! `deploy/kustomize/cert-manager`) and the Helm chart `deploy/helm/tailor`:
//!
//! - both render the same objects with default values (and the overlay what the chart renders
//!   with `webhook.certificates=cert-manager`), and the chart's CRD copies hold what
//!   `deploy/crds/` holds;
//! - the admission webhook's Service, configurations and certificates fit together (module
//!   `webhook`): with the webhook down pods are still created, and the gate webhook only sees
//!   the resizes that matter;
//! - RBAC grants no writes on pods, only `patch` on `pods/resize` to the updater; the
//!   Deployments are locked down; the chart's values map to the binaries' real flags;
//! - a real kube-apiserver accepts every object (server-side apply, strict field validation);
//!   `helm install` works the two documented ways;
//! - the memory-decrease gate denies an unapproved memory-limit cut and nothing else;
//! - the ServiceAccounts' tokens can do what the binaries need and no more (only the
//!   recommender may patch VerticalAutoscaler status: the updater applies what is written
//!   there; the updater writes its webhook Secret and the caBundle of its own webhook
//!   configurations only), and the binaries run with them and with the manifests' flags (ready,
//!   holding their Lease, the updater recording to its ResizeState and the recommender
//!   mirroring that, the updater making and serving its webhook certificate).
//!
//! `helm` and `kustomize` come from `$TAILOR_TOOLS` or from `hack/tools.sh`, which builds them
//! from the Go module proxy once and caches them. The ServiceMonitor and PrometheusRule CRDs
//! are not part of a bare API server, nor are cert-manager's Issuer and Certificate: the tests
//! install subsets of them from `tests/fixtures/` (strict schema for the fields tailor writes),
//! so those objects are applied like every other.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{Scope, pinned_kind};
use kube::runtime::wait::{await_condition, conditions};
use serde::Deserialize;
use serde_json::{Value, json};
use tailor_e2e::ControlPlane;
use tailor_e2e::control_plane::client_from_kubeconfig;
use tailor_e2e::process::ServerProcess;

#[path = "deploy/scoped.rs"]
mod scoped;
#[path = "deploy/status_writer.rs"]
mod status_writer;
#[path = "deploy/webhook.rs"]
mod webhook;

const RELEASE: &str = "tailor";
const NAMESPACE: &str = "tailor-system";
const CHART: &str = "deploy/helm/tailor";
const BASE: &str = "deploy/kustomize/base";
const CERT_MANAGER: &str = "deploy/kustomize/cert-manager";
const CERT_MANAGER_VALUES: &str = "--set=webhook.certificates=cert-manager";
const CRD_SOURCES: &str = "deploy/crds";
const CRD_COPIES: &str = "deploy/helm/tailor/crds";
const CRD_COPY_HEADER: &str =
    "# Copied from deploy/crds/ by hack/sync-chart-crds.sh. Do not edit.\n";
const VA_CRD: &str = "verticalautoscalers.tailor.dev";
const STATE_CRD: &str = "resizestates.tailor.dev";
const CRDS: [&str; 2] = [VA_CRD, STATE_CRD];
const GATE: &str = "tailor-memory-decrease-gate";
const APPROVAL: &str = "tailor.dev/approve-memory-decrease";
const FIELD_MANAGER: &str = "tailor-deploy-test";
const TIMEOUT: Duration = Duration::from_secs(60);

/// apiVersion, kind, namespace ("" for cluster-scoped objects), name.
type Key = (String, String, String, String);

/// Every object the manifests install with default values.
const EXPECTED: &[(&str, &str, &str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
        "",
        "tailor",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
        "",
        "tailor",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicy",
        "",
        GATE,
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
        "",
        GATE,
    ),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "",
        VA_CRD,
    ),
    (
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "",
        STATE_CRD,
    ),
    ("apps/v1", "Deployment", NAMESPACE, "tailor-recommender"),
    ("apps/v1", "Deployment", NAMESPACE, "tailor-updater"),
    (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        NAMESPACE,
        "tailor",
    ),
    ("v1", "ConfigMap", NAMESPACE, "tailor-dashboards"),
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        NAMESPACE,
        "tailor-recommender",
    ),
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        NAMESPACE,
        "tailor-updater",
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        NAMESPACE,
        "tailor-recommender",
    ),
    (
        "policy/v1",
        "PodDisruptionBudget",
        NAMESPACE,
        "tailor-updater",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "",
        "tailor-recommender",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "",
        "tailor-updater",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "",
        "tailor-recommender",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "",
        "tailor-updater",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        NAMESPACE,
        "tailor-recommender-leader-election",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        NAMESPACE,
        "tailor-updater-leader-election",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        NAMESPACE,
        "tailor-recommender-leader-election",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        NAMESPACE,
        "tailor-updater-leader-election",
    ),
    ("v1", "Namespace", "", NAMESPACE),
    ("v1", "Service", NAMESPACE, "tailor-recommender-metrics"),
    ("v1", "Service", NAMESPACE, "tailor-updater-metrics"),
    ("v1", "Service", NAMESPACE, "tailor-webhook"),
    ("v1", "ServiceAccount", NAMESPACE, "tailor-recommender"),
    ("v1", "ServiceAccount", NAMESPACE, "tailor-updater"),
];

/// With self-managed webhook certificates (the default) only: the updater's grants on its
/// Secret and on the webhook configurations.
const SELF_MANAGED_ONLY: &[(&str, &str, &str, &str)] = &[
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "",
        "tailor-updater-webhook-certs",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "",
        "tailor-updater-webhook-certs",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        NAMESPACE,
        "tailor-updater-webhook-certs",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        NAMESPACE,
        "tailor-updater-webhook-certs",
    ),
];

/// With cert-manager issuing the webhook's certificate only.
const CERT_MANAGER_ONLY: &[(&str, &str, &str, &str)] = &[
    (
        "cert-manager.io/v1",
        "Certificate",
        NAMESPACE,
        "tailor-webhook",
    ),
    (
        "cert-manager.io/v1",
        "Issuer",
        NAMESPACE,
        "tailor-selfsigned",
    ),
];

/// The objects expected with self-managed webhook certificates or with cert-manager.
fn expected(cert_manager: bool) -> BTreeSet<Key> {
    let extra = if cert_manager {
        CERT_MANAGER_ONLY
    } else {
        SELF_MANAGED_ONLY
    };
    EXPECTED
        .iter()
        .chain(extra)
        .map(|(a, k, n, m)| (a.to_string(), k.to_string(), n.to_string(), m.to_string()))
        .collect()
}

// --- tools and rendering ----------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

const TOOLS_HINT: &str = "run hack/tools.sh (it builds helm and kustomize from the Go module proxy once and \
     caches them), or export TAILOR_TOOLS=$(hack/tools.sh)";

/// The directory holding `helm` and `kustomize`.
fn tools() -> &'static Path {
    static TOOLS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match TOOLS.get_or_init(find_tools) {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    }
}

fn find_tools() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("TAILOR_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let out = Command::new(repo().join("hack/tools.sh"))
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run hack/tools.sh: {e}; {TOOLS_HINT}"))?;
            if !out.status.success() {
                return Err(format!(
                    "hack/tools.sh failed ({}); {TOOLS_HINT}",
                    out.status
                ));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    for bin in ["helm", "kustomize"] {
        if !dir.join(bin).is_file() {
            return Err(format!("{} has no {bin}: {TOOLS_HINT}", dir.display()));
        }
    }
    Ok(dir)
}

/// Runs `cmd` in the repository; its stdout, or its stderr as the error.
fn run(mut cmd: Command) -> Result<String, String> {
    let out = cmd
        .current_dir(repo())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// `helm args...` with its own empty configuration, cache and data directories.
fn helm(args: &[&str]) -> Result<String, String> {
    let home = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(tools().join("helm"));
    cmd.args(args)
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"));
    run(cmd)
}

/// `helm template` of the chart as the release `tailor` in `tailor-system`, CRDs included.
fn helm_template(extra: &[&str]) -> Result<String, String> {
    let mut args = vec![
        "template",
        RELEASE,
        CHART,
        "--namespace",
        NAMESPACE,
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

fn kustomize_build(dir: &str) -> String {
    let mut cmd = Command::new(tools().join("kustomize"));
    cmd.args(["build", dir]);
    run(cmd).unwrap_or_else(|e| panic!("{e}"))
}

/// The documents of a YAML stream (empty ones dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("bad YAML: {e}\n{yaml}")))
        .filter(|v| !v.is_null())
        .collect()
}

fn kustomize_objects() -> Vec<Value> {
    documents(&kustomize_build(BASE))
}

fn helm_objects(extra: &[&str]) -> Vec<Value> {
    documents(&helm_template(extra).unwrap_or_else(|e| panic!("{e}")))
}

fn key(o: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (
        s(&o["apiVersion"]),
        s(&o["kind"]),
        s(&o["metadata"]["namespace"]),
        s(&o["metadata"]["name"]),
    )
}

fn by_key(objects: &[Value], source: &str) -> BTreeMap<Key, Value> {
    let mut out = BTreeMap::new();
    for o in objects {
        let k = key(o);
        assert!(
            out.insert(k.clone(), o.clone()).is_none(),
            "{source} renders {k:?} twice"
        );
    }
    out
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Where `a` and `b` differ, as JSON paths.
fn differences(a: &Value, b: &Value, path: &str, names: (&str, &str), out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}/{k}");
                match (x.get(k), y.get(k)) {
                    (Some(x), Some(y)) => differences(x, y, &p, names, out),
                    (Some(_), None) => out.push(format!("{p}: only in {}", names.0)),
                    (None, Some(_)) => out.push(format!("{p}: only in {}", names.1)),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                differences(x, y, &format!("{path}/{i}"), names, out);
            }
        }
        _ if a != b && a.to_string().len() + b.to_string().len() > 400 => {
            out.push(format!("{path}: {} and {} differ", names.0, names.1));
        }
        _ if a != b => out.push(format!("{path}: {} {a} vs {} {b}", names.0, names.1)),
        _ => {}
    }
}

/// The fields of `expected` that `actual` lacks or holds with another value.
fn missing(expected: &Value, actual: &Value, path: &str, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(a) => missing(v, a, &format!("{path}/{k}"), out),
                    None => out.push(format!("{path}/{k}: dropped by the server")),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                missing(x, y, &format!("{path}/{i}"), out);
            }
        }
        _ if expected != actual => out.push(format!("{path}: sent {expected}, stored {actual}")),
        _ => {}
    }
}

// --- the API server ---------------------------------------------------------------------

async fn api_for(client: &kube::Client, obj: &Value) -> anyhow::Result<Api<DynamicObject>> {
    let (api_version, kind, namespace, name) = key(obj);
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let gvk = GroupVersionKind::gvk(group, version, &kind);
    // A CRD that was just Established can take a moment to appear in discovery.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (resource, caps) = loop {
        match pinned_kind(client, &gvk).await {
            Ok(found) => break found,
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("discover {api_version} {kind}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    Ok(match caps.scope {
        Scope::Namespaced => {
            if namespace.is_empty() {
                bail!("{kind} {name} is namespaced but has no namespace");
            }
            Api::namespaced_with(client.clone(), &namespace, &resource)
        }
        Scope::Cluster => {
            if !namespace.is_empty() {
                bail!("{kind} {name} is cluster-scoped but has namespace {namespace}");
            }
            Api::all_with(client.clone(), &resource)
        }
    })
}

/// Server-side apply with strict field validation; returns the stored object.
async fn apply(client: &kube::Client, obj: &Value) -> anyhow::Result<Value> {
    let api = api_for(client, obj).await?;
    let (_, kind, namespace, name) = key(obj);
    let params = PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_strict();
    let stored = api
        .patch(&name, &params, &Patch::Apply(obj))
        .await
        .with_context(|| format!("apply {kind} {namespace}/{name}"))?;
    Ok(serde_json::to_value(stored)?)
}

async fn wait_established(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    tokio::time::timeout(
        TIMEOUT,
        await_condition(api, name, conditions::is_crd_established()),
    )
    .await
    .with_context(|| format!("CRD {name} not Established"))??;
    Ok(())
}

/// The ServiceMonitor and PrometheusRule CRD subsets of `tests/fixtures/`.
async fn install_service_monitor_crd(client: &kube::Client) -> anyhow::Result<()> {
    for (file, name) in [
        (
            "fixtures/servicemonitor-crd.yaml",
            "servicemonitors.monitoring.coreos.com",
        ),
        (
            "fixtures/prometheusrule-crd.yaml",
            "prometheusrules.monitoring.coreos.com",
        ),
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let crd: Value = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        apply(client, &crd).await?;
        wait_established(client, name).await?;
    }
    Ok(())
}

/// Applies `objects` (CRDs first, then Namespaces, then the rest) and returns what the server
/// stored, in that order.
async fn apply_all(client: &kube::Client, objects: &[Value]) -> anyhow::Result<Vec<Value>> {
    install_service_monitor_crd(client).await?;
    let mut ordered: Vec<&Value> = objects.iter().collect();
    ordered.sort_by_key(|o| match o["kind"].as_str() {
        Some("CustomResourceDefinition") => 0,
        Some("Namespace") => 1,
        _ => 2,
    });
    let mut stored = Vec::new();
    for obj in ordered {
        let out = apply(client, obj).await?;
        if obj["kind"] == "CustomResourceDefinition" {
            wait_established(client, &key(obj).3).await?;
        }
        stored.push(out);
    }
    Ok(stored)
}

/// A token of a ServiceAccount, from the TokenRequest API.
async fn token(cp: &ControlPlane, namespace: &str, name: &str) -> anyhow::Result<String> {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    let out = Api::<ServiceAccount>::namespaced(cp.client(), namespace)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for {namespace}/{name}"))?;
    Ok(out.status.context("TokenRequest without status")?.token)
}

/// Writes a kubeconfig for the control plane that authenticates with `token`.
fn kubeconfig_with_token(cp: &ControlPlane, token: &str, file: &str) -> anyhow::Result<PathBuf> {
    let admin = Kubeconfig::read_from(cp.kubeconfig())?;
    let ca = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority.clone())
        .context("admin kubeconfig without certificate-authority")?;
    let path = cp.dir().join(file);
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: token
  user:
    token: {token}
contexts:
- name: test
  context:
    cluster: test
    user: token
current-context: test
",
            url = cp.url()
        ),
    )?;
    Ok(path)
}

/// A client authenticated as ServiceAccount `namespace/name`.
async fn service_account_client(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
) -> anyhow::Result<kube::Client> {
    let token = token(cp, namespace, name).await?;
    let path = kubeconfig_with_token(cp, &token, &format!("{namespace}-{name}.kubeconfig"))?;
    Ok(client_from_kubeconfig(&path).await?)
}

/// The admin client impersonating `user`.
async fn impersonating(cp: &ControlPlane, user: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(cp.kubeconfig())?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.auth_info.impersonate = Some(user.to_owned());
    Ok(kube::Client::try_from(config)?)
}

/// A Burstable pod bound to node-a: `app` with a 512Mi memory limit, `sidecar` with a memory
/// request and no limit.
async fn create_pod(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
    annotations: Value,
) -> anyhow::Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "annotations": annotations },
        "spec": {
            "nodeName": "node-a",
            "containers": [
                { "name": "app", "image": "registry.example/app:1",
                  "resources": { "requests": { "cpu": "100m", "memory": "128Mi" },
                                 "limits": { "cpu": "200m", "memory": "512Mi" } } },
                { "name": "sidecar", "image": "registry.example/sidecar:1",
                  "resources": { "requests": { "cpu": "50m", "memory": "64Mi" } } }
            ]
        }
    }))?;
    Api::<Pod>::namespaced(cp.client(), namespace)
        .create(&PostParams::default(), &pod)
        .await?;
    Ok(())
}

fn resize(container: &str, resources: Value) -> Patch<Value> {
    Patch::Strategic(json!({
        "spec": { "containers": [{ "name": container, "resources": resources }] }
    }))
}

fn memory_limit_patch(value: &str) -> Patch<Value> {
    resize("app", json!({ "limits": { "memory": value } }))
}

async fn stored_memory_limit(cp: &ControlPlane, namespace: &str, pod: &str) -> String {
    let pod = Api::<Pod>::namespaced(cp.client(), namespace)
        .get(pod)
        .await
        .unwrap();
    pod.spec.unwrap().containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[track_caller]
fn assert_allowed<T>(result: Result<T, kube::Error>, what: &str) {
    if let Err(e) = result {
        panic!("{what}: expected success, got {e}");
    }
}

// --- rendering ----------------------------------------------------------------------------

/// `kustomize build dir` and `helm template` with `values` render exactly `expected`, and the
/// same objects field by field; returns the chart's objects.
fn assert_same_renders(
    dir: &str,
    values: &[&str],
    expected: &BTreeSet<Key>,
) -> BTreeMap<Key, Value> {
    let kustomize = by_key(&documents(&kustomize_build(dir)), dir);
    let helm = by_key(&helm_objects(values), "helm");
    let rendered: BTreeSet<Key> = kustomize.keys().cloned().collect();
    assert_eq!(
        &rendered, expected,
        "kustomize build {dir} renders other objects than expected"
    );
    let rendered: BTreeSet<Key> = helm.keys().cloned().collect();
    assert_eq!(
        &rendered, expected,
        "helm {values:?} renders other objects than expected"
    );

    let mut diffs = Vec::new();
    for (k, a) in &kustomize {
        differences(
            a,
            &helm[k],
            &format!("{} {}/{}", k.1, k.2, k.3),
            ("kustomize", "helm"),
            &mut diffs,
        );
    }
    assert!(
        diffs.is_empty(),
        "kustomize build {dir} and helm {values:?} render different objects:\n{}",
        diffs.join("\n")
    );
    helm
}

#[test]
fn kustomize_and_helm_render_the_same_objects() {
    let helm = assert_same_renders(BASE, &[], &expected(false));

    // No Helm bookkeeping labels leak into the objects.
    for (k, o) in &helm {
        let labels = o["metadata"]["labels"].as_object();
        for label in labels.into_iter().flat_map(|l| l.keys()) {
            assert!(
                !label.starts_with("helm.sh/") && label != "app.kubernetes.io/managed-by",
                "{k:?} carries {label}"
            );
        }
    }
}

#[test]
fn cert_manager_overlay_and_helm_render_the_same_objects() {
    let helm = assert_same_renders(CERT_MANAGER, &[CERT_MANAGER_VALUES], &expected(true));
    let objects: Vec<Value> = helm.into_values().collect();
    webhook::assert_cert_manager(&objects);
    // Everything else is the base's.
    let overlay = by_key(&documents(&kustomize_build(CERT_MANAGER)), CERT_MANAGER);
    let base = by_key(&kustomize_objects(), BASE);
    for (k, o) in &overlay {
        let changed = matches!(
            k.1.as_str(),
            "MutatingWebhookConfiguration"
                | "ValidatingWebhookConfiguration"
                | "Certificate"
                | "Issuer"
        ) || k.3 == "tailor-updater" && k.1 == "Deployment";
        if !changed {
            assert_eq!(Some(o), base.get(k), "the overlay changes {k:?}");
        }
    }
}

/// The CRD files of a directory (its `kustomization.yaml` left out), by name.
fn crd_files(dir: &str) -> BTreeMap<String, String> {
    let entries = std::fs::read_dir(repo().join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// `kustomize build` of a kustomization holding the one file `source`.
fn kustomize_build_one(name: &str, source: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), source).unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!("resources:\n  - {name}\n"),
    )
    .unwrap();
    kustomize_build(&dir.path().display().to_string())
}

#[test]
fn chart_crd_copies_equal_deploy_crds() {
    let (sources, copies) = (crd_files(CRD_SOURCES), crd_files(CRD_COPIES));
    let hint = "run hack/sync-chart-crds.sh after `make crds`";
    assert_eq!(
        sources.keys().collect::<Vec<_>>(),
        copies.keys().collect::<Vec<_>>(),
        "{CRD_COPIES} holds other files than {CRD_SOURCES} ({hint})"
    );
    let base = by_key(&kustomize_objects(), "kustomize");
    let mut names = BTreeSet::new();
    for (name, source) in &sources {
        let copy = &copies[name];
        let mut diffs = Vec::new();
        differences(
            &Value::Array(documents(source)),
            &Value::Array(documents(copy)),
            "",
            ("deploy/crds", "the chart"),
            &mut diffs,
        );
        assert!(
            diffs.is_empty(),
            "{CRD_COPIES}/{name} differs from {CRD_SOURCES}/{name} ({hint}):\n{}",
            diffs.join("\n")
        );
        // Written the way `kustomize build` writes it: strings such as `Off` quoted, since Helm
        // reads YAML 1.1, where a plain Off is the boolean false.
        let kustomized = format!("{CRD_COPY_HEADER}{}", kustomize_build_one(name, source));
        assert!(
            *copy == kustomized,
            "{CRD_COPIES}/{name} is not `kustomize build` of {CRD_SOURCES}/{name}: {hint}"
        );
        // The base takes the CRD from deploy/crds itself.
        let crd = &documents(source)[0];
        let crd_name = crd["metadata"]["name"].as_str().unwrap().to_owned();
        let rendered = base.values().find(|o| {
            o["kind"] == "CustomResourceDefinition" && o["metadata"]["name"] == crd_name.as_str()
        });
        assert!(
            rendered == Some(crd),
            "the base does not render {CRD_SOURCES}/{name}"
        );
        names.insert(crd_name);
    }
    assert_eq!(names, CRDS.iter().map(|c| c.to_string()).collect());
}

#[test]
fn rbac_grants_no_pod_writes_and_workloads_are_locked_down() {
    let objects = kustomize_objects();
    let read_only = ["get", "list", "watch"];
    let mut resize_grants = Vec::new();
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        for rule in role["rules"].as_array().unwrap() {
            let (groups, resources, verbs) = (
                strings(&rule["apiGroups"]),
                strings(&rule["resources"]),
                strings(&rule["verbs"]),
            );
            for list in [&groups, &resources, &verbs] {
                assert!(!list.iter().any(|s| s == "*"), "{name}: wildcard in {rule}");
            }
            if !groups.iter().any(String::is_empty) {
                continue;
            }
            for resource in &resources {
                match resource.as_str() {
                    "pods" => assert!(
                        verbs.iter().all(|v| read_only.contains(&v.as_str())),
                        "{name} may write pods: {rule}"
                    ),
                    "pods/resize" => {
                        assert_eq!(verbs, ["patch"], "{name}: {rule}");
                        resize_grants.push(name.to_owned());
                    }
                    r if r.starts_with("pods/") => panic!("{name} is granted {r}: {rule}"),
                    _ => {}
                }
            }
        }
    }
    assert_eq!(
        resize_grants,
        ["tailor-updater"],
        "only the updater resizes pods"
    );

    for component in ["recommender", "updater"] {
        let name = format!("tailor-{component}");
        let deployment = find(&objects, "Deployment", &name);
        let spec = &deployment["spec"];
        let pod = &spec["template"]["spec"];
        let container = &pod["containers"][0];
        let args = strings(&container["args"]);
        let what = format!("Deployment {name}");
        assert_eq!(spec["replicas"], 2, "{what}");
        assert_eq!(pod["serviceAccountName"], name.as_str(), "{what}");
        assert_eq!(
            container["command"],
            json!([format!("/usr/local/bin/{name}")]),
            "{what}"
        );
        assert_eq!(args[0], "run", "{what}");
        for flag in ["--leader-election=true", "--admin-addr=0.0.0.0:8080"] {
            assert!(
                args.iter().any(|a| a == flag),
                "{what} lacks {flag}: {args:?}"
            );
        }
        assert!(
            args.iter().any(|a| a.starts_with("--log=")),
            "{what}: {args:?}"
        );
        if component == "updater" {
            assert!(args.iter().any(|a| a == "--dry-run=false"), "{args:?}");
        } else {
            assert!(
                args.iter().any(|a| a.starts_with("--prometheus-url=http")),
                "{args:?}"
            );
        }
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{what}"
        );
        let sc = &container["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][kind][resource].is_string(),
                    "{what} lacks {kind}.{resource}"
                );
            }
        }
        let mut ports = vec![json!({ "name": "admin", "containerPort": 8080, "protocol": "TCP" })];
        if component == "updater" {
            ports.push(json!({ "name": "webhook", "containerPort": 9443, "protocol": "TCP" }));
        }
        assert_eq!(container["ports"], Value::Array(ports), "{what}");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(container[probe]["httpGet"]["port"], "admin", "{what}");
        }

        let selector = &spec["selector"]["matchLabels"];
        let labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(
                labels.get(k),
                Some(v),
                "{what}: selector {k} not on the pods"
            );
        }
        let pdb = find(&objects, "PodDisruptionBudget", &name);
        assert_eq!(pdb["spec"]["maxUnavailable"], 1);
        assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);

        let service = find(&objects, "Service", &format!("{name}-metrics"));
        assert_eq!(&service["spec"]["selector"], selector);
        assert_eq!(
            service["spec"]["ports"],
            json!([{ "name": "metrics", "port": 8080, "targetPort": "admin", "protocol": "TCP" }])
        );
        let monitor = find(&objects, "ServiceMonitor", &name);
        let service_labels = service["metadata"]["labels"].as_object().unwrap();
        for (k, v) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(service_labels.get(k), Some(v), "ServiceMonitor {name}: {k}");
        }
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
        assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    }

    let binding = find(&objects, "ValidatingAdmissionPolicyBinding", GATE);
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"],
        json!({ "matchLabels": { "tailor.dev/memory-gate": "enabled" } })
    );

    webhook::assert_self_managed(&objects);
}

/// The file flags name files the Deployment mounts.
fn assert_files_mounted(deployment: &Value, flags: &[&str]) {
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    let mounts = container["volumeMounts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    let mut files = BTreeSet::new();
    for mount in &mounts {
        let volume = volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("mount of a missing volume: {mount}"));
        let source = if volume["secret"].is_object() {
            &volume["secret"]
        } else {
            &volume["configMap"]
        };
        for item in source["items"].as_array().unwrap() {
            files.insert(format!(
                "{}/{}",
                mount["mountPath"].as_str().unwrap(),
                item["path"].as_str().unwrap()
            ));
        }
    }
    for flag in flags {
        let prefix = format!("{flag}=");
        let arg = args
            .iter()
            .find(|a| a.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        let file = &arg[prefix.len()..];
        assert!(
            files.contains(file),
            "{flag} names {file}, mounted: {files:?}"
        );
    }
}

#[test]
fn helm_values_map_to_the_flags() {
    let objects = helm_objects(&[
        "--set=prometheus.url=https://thanos.example:10902",
        "--set=prometheus.bearerToken.secretName=prom-token",
        "--set=prometheus.bearerToken.key=tok",
        "--set=prometheus.ca.configMapName=prom-ca",
        "--set=prometheus.insecureSkipVerify=true",
        "--set-string=prometheus.extraMatchers=cluster=\"prod\"",
        "--set=updater.dryRun=true",
        "--set=logLevel=debug",
        "--set=leaderElection.enabled=false",
        "--set=recommender.replicas=1",
        "--set=updater.replicas=1",
        "--set=serviceMonitor.enabled=false",
        "--set=memoryGate.enabled=false",
        "--set=namespace.create=false",
        "--set=image.repository=registry.example/tailor",
        "--set=image.tag=dev",
        "--set=image.pullPolicy=Always",
        "--set=recommender.resources.limits.memory=1Gi",
    ]);
    let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
    for gone in [
        "ServiceMonitor",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "Namespace",
    ] {
        assert!(!kinds.contains(gone), "{gone} rendered although disabled");
    }
    let recommender = find(&objects, "Deployment", "tailor-recommender");
    let updater = find(&objects, "Deployment", "tailor-updater");
    let args = |d: &Value| strings(&d["spec"]["template"]["spec"]["containers"][0]["args"]);
    let (r, u) = (args(recommender), args(updater));
    for flag in [
        "--prometheus-url=https://thanos.example:10902",
        "--prometheus-token-file=/etc/tailor/prometheus/token/token",
        "--prometheus-ca-file=/etc/tailor/prometheus/ca/ca.crt",
        "--prometheus-insecure-skip-verify",
        "--prometheus-extra-matchers=cluster=\"prod\"",
        "--log=debug",
        "--leader-election=false",
    ] {
        assert!(
            r.iter().any(|a| a == flag),
            "recommender lacks {flag}: {r:?}"
        );
        // The updater reads the working set from the same Prometheus.
        assert!(u.iter().any(|a| a == flag), "updater lacks {flag}: {u:?}");
    }
    assert!(u.iter().any(|a| a == "--dry-run=true"), "{u:?}");
    for deployment in [recommender, updater] {
        assert_files_mounted(
            deployment,
            &["--prometheus-token-file", "--prometheus-ca-file"],
        );
    }
    let pod = &recommender["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"][0]["secret"],
        json!({ "secretName": "prom-token", "items": [{ "key": "tok", "path": "token" }] })
    );
    assert_eq!(pod["volumes"][1]["configMap"]["name"], "prom-ca");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/tailor:dev");
    assert_eq!(container["imagePullPolicy"], "Always");
    assert_eq!(container["resources"]["limits"]["memory"], "1Gi");

    let basic = helm_objects(&[
        "--set=prometheus.basicAuth.user=reader",
        "--set=prometheus.basicAuth.passwordSecretName=prom-basic",
        "--set=prometheus.ca.secretName=prom-ca",
    ]);
    let recommender = find(&basic, "Deployment", "tailor-recommender");
    let r = args(recommender);
    assert!(r.iter().any(|a| a == "--prometheus-user=reader"), "{r:?}");
    assert!(!r.iter().any(|a| a.starts_with("--prometheus-token-file")));
    assert_files_mounted(
        recommender,
        &["--prometheus-password-file", "--prometheus-ca-file"],
    );

    for (values, message) in [
        (
            vec![
                "--set=prometheus.bearerToken.secretName=a",
                "--set=prometheus.basicAuth.user=u",
                "--set=prometheus.basicAuth.passwordSecretName=p",
            ],
            "either bearerToken or basicAuth",
        ),
        (
            vec!["--set=prometheus.basicAuth.user=u"],
            "needs prometheus.basicAuth.passwordSecretName",
        ),
        (
            vec![
                "--set=prometheus.ca.secretName=a",
                "--set=prometheus.ca.configMapName=b",
            ],
            "either secretName or configMapName",
        ),
        (
            vec!["--set=leaderElection.enabled=false"],
            "leaderElection.enabled=false needs",
        ),
    ] {
        match helm_template(&values) {
            Err(e) => assert!(e.contains(message), "{values:?}: {e}"),
            Ok(_) => panic!("{values:?} must be refused"),
        }
    }
}

#[test]
fn helm_webhook_values_map_to_the_objects_and_flags() {
    let args = |objects: &[Value]| {
        strings(
            &find(objects, "Deployment", "tailor-updater")["spec"]["template"]["spec"]["containers"]
                [0]["args"],
        )
    };
    let objects = helm_objects(&[
        "--set=webhook.port=10443",
        "--set=webhook.timeoutSeconds=5",
        "--set=webhook.certValiditySeconds=86400",
        "--set=webhook.namespaceExclusions={kube-system,monitoring}",
    ]);
    let u = args(&objects);
    for flag in [
        "--webhook-addr=0.0.0.0:10443",
        "--webhook-cert-validity-seconds=86400",
        "--webhook-certs=self-managed",
    ] {
        assert!(u.iter().any(|a| a == flag), "updater lacks {flag}: {u:?}");
    }
    let container = &find(&objects, "Deployment", "tailor-updater")["spec"]["template"]["spec"]["containers"]
        [0];
    assert_eq!(
        container["ports"][1],
        json!({ "name": "webhook", "containerPort": 10443, "protocol": "TCP" })
    );
    let size = &find(&objects, "MutatingWebhookConfiguration", "tailor")["webhooks"][0];
    assert_eq!(size["timeoutSeconds"], 5);
    // The release namespace is always left out.
    assert_eq!(
        size["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["kube-system", "monitoring", NAMESPACE])
    );

    // Disabled: no webhook objects, and the updater serves none.
    let objects = helm_objects(&["--set=webhook.enabled=false"]);
    let u = args(&objects);
    assert!(u.iter().any(|a| a == "--webhook-certs=none"), "{u:?}");
    assert!(
        !u.iter()
            .any(|a| a.starts_with("--webhook-") && a != "--webhook-certs=none"),
        "{u:?}"
    );
    let rendered = by_key(&objects, "helm");
    let mut expected = expected(false);
    for (a, k, n, m) in EXPECTED.iter().chain(SELF_MANAGED_ONLY) {
        if k.contains("Webhook") || m.contains("webhook") {
            expected.remove(&(a.to_string(), k.to_string(), n.to_string(), m.to_string()));
        }
    }
    assert_eq!(
        rendered.keys().cloned().collect::<BTreeSet<Key>>(),
        expected,
        "helm renders other objects than expected with webhook.enabled=false"
    );
    let container = &find(&objects, "Deployment", "tailor-updater")["spec"]["template"]["spec"]["containers"]
        [0];
    assert_eq!(container["ports"].as_array().unwrap().len(), 1);

    // cert-manager with the Prometheus secrets: the webhook's Secret is mounted next to them.
    let objects = helm_objects(&[
        CERT_MANAGER_VALUES,
        "--set=prometheus.bearerToken.secretName=prom-token",
        "--set=prometheus.ca.configMapName=prom-ca",
    ]);
    webhook::assert_cert_manager(&objects);
    assert_files_mounted(
        find(&objects, "Deployment", "tailor-updater"),
        &["--prometheus-token-file", "--prometheus-ca-file"],
    );

    match helm_template(&["--set=webhook.certificates=vault"]) {
        Err(e) => assert!(
            e.contains("webhook.certificates must be self-managed or cert-manager"),
            "{e}"
        ),
        Ok(_) => panic!("webhook.certificates=vault must be refused"),
    }
}

// --- the API server -------------------------------------------------------------------------

#[tokio::test]
async fn rendered_objects_are_accepted_by_the_api_server() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    apply_and_read_back(&client, &kustomize_objects()).await?;
    // The cert-manager overlay over it, with subsets of cert-manager's CRDs.
    webhook::install_cert_manager_crds(&client).await?;
    apply_and_read_back(&client, &documents(&kustomize_build(CERT_MANAGER))).await?;
    Ok(())
}

/// Applies `objects`, then reads them back: everything sent is stored (nothing pruned or
/// rewritten).
async fn apply_and_read_back(client: &kube::Client, objects: &[Value]) -> anyhow::Result<()> {
    apply_all(client, objects).await?;
    let mut problems = Vec::new();
    for obj in objects {
        let (_, kind, namespace, name) = key(obj);
        let stored = api_for(client, obj).await?.get(&name).await;
        match stored {
            Ok(stored) => missing(
                obj,
                &serde_json::to_value(stored)?,
                &format!("{kind} {namespace}/{name}"),
                &mut problems,
            ),
            Err(e) => problems.push(format!("{kind} {namespace}/{name}: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}

#[tokio::test]
async fn helm_install_works_as_documented() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    // The harness installs the CRDs from the Rust types; here they must come from the chart.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in CRDS {
        crds.delete(crd, &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + TIMEOUT;
    for crd in CRDS {
        while crds.get_opt(crd).await?.is_some() {
            assert!(Instant::now() < deadline, "CRD {crd} not deleted");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    install_service_monitor_crd(&client).await?;
    let kubeconfig = cp.kubeconfig().display().to_string();
    let kc = ["--kubeconfig", kubeconfig.as_str()];
    let install = |extra: &[&str]| {
        let mut args = vec!["install", RELEASE, CHART, "--namespace", NAMESPACE];
        args.extend_from_slice(&kc);
        args.extend_from_slice(extra);
        helm(&args).unwrap_or_else(|e| panic!("{e}"))
    };

    // 1. Helm creates the namespace; the chart does not render it.
    install(&["--create-namespace", "--set", "namespace.create=false"]);
    for crd in CRDS {
        wait_established(&client, crd).await?;
    }
    let crd = serde_json::to_value(crds.get(VA_CRD).await?)?;
    let update_mode = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"]["updatePolicy"]["properties"]["updateMode"];
    assert_eq!(
        update_mode["default"], "Off",
        "the CRD as Helm read it: {update_mode}"
    );
    for obj in helm_objects(&[]) {
        let (_, kind, namespace, name) = key(&obj);
        if kind == "Namespace" {
            continue;
        }
        api_for(&client, &obj)
            .await?
            .get(&name)
            .await
            .with_context(|| format!("{kind} {namespace}/{name} after helm install"))?;
    }

    // 2. The namespace exists; the chart takes it over with its labels.
    helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        &kubeconfig,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    install(&["--take-ownership"]);
    let ns = Api::<Namespace>::all(client.clone()).get(NAMESPACE).await?;
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted"),
        "{labels:?}"
    );
    let release = helm(&[
        "status",
        RELEASE,
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        &kubeconfig,
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(release.contains("STATUS: deployed"), "{release}");
    Ok(())
}

#[tokio::test]
async fn memory_gate_denies_unapproved_memory_limit_cuts() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    apply_all(&client, &kustomize_objects()).await?;
    tailor_e2e::control_plane::create_node(&cp.client(), "node-a").await?;

    // alice may resize pods (and nothing else that matters here).
    let rbac: Vec<Value> = vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": "resizer" },
            "rules": [
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"] },
                { "apiGroups": [""], "resources": ["pods/resize"], "verbs": ["patch"] }
            ]
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": "resizer-alice" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "resizer" },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice" }]
        }),
    ];
    for obj in &rbac {
        apply(&client, obj).await?;
    }

    let gated = cp.namespace("gated").await?;
    Api::<Namespace>::all(client.clone())
        .patch(
            &gated,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "labels": { "tailor.dev/memory-gate": "enabled" } } }),
            ),
        )
        .await?;
    let open = cp.namespace("open").await?;
    // The sizing webhook is registered but nothing serves it: pods are created as submitted
    // (failurePolicy Ignore).
    create_pod(&cp, &gated, "plain", json!({})).await?;
    create_pod(&cp, &gated, "approved", json!({ APPROVAL: "yes" })).await?;
    create_pod(&cp, &open, "plain", json!({})).await?;
    create_pod(&cp, &open, "approved", json!({ APPROVAL: "yes" })).await?;

    let alice = impersonating(&cp, "alice").await?;
    let alice_gated = Api::<Pod>::namespaced(alice.clone(), &gated);

    // The policy takes effect once the API server has loaded and compiled it (its status,
    // with type-checking warnings, is written by kube-controller-manager, which the test
    // control plane lacks): probe with dry runs until the gate answers. A policy that does not
    // compile denies with another message and fails below.
    let deadline = Instant::now() + TIMEOUT;
    let denial = loop {
        let probe = alice_gated
            .patch_resize(
                "plain",
                &PatchParams::default().dry_run(),
                &memory_limit_patch("256Mi"),
            )
            .await;
        match probe {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains(GATE) => break s,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the gate does not deny after {TIMEOUT:?}; last answer {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    for needle in [
        "lowering the memory limit of container(s) app needs approval",
        APPROVAL,
    ] {
        assert!(denial.message.contains(needle), "{}", denial.message);
    }
    assert_eq!(denial.reason, "Forbidden");

    // A real (not dry-run) cut is denied too, and nothing changes.
    let cut = resize_pod(&alice_gated, "plain", &memory_limit_patch("256Mi")).await;
    assert_forbidden(cut, "alice lowers app's memory limit in a gated namespace");
    assert_eq!(stored_memory_limit(&cp, &gated, "plain").await, "512Mi");

    // Not a memory-limit cut: a memory request cut without a limit, a CPU change, an increase.
    assert_allowed(
        resize_pod(
            &alice_gated,
            "plain",
            &resize("sidecar", json!({ "requests": { "memory": "32Mi" } })),
        )
        .await,
        "alice lowers the memory request of a container without a limit",
    );
    assert_allowed(
        resize_pod(
            &alice_gated,
            "plain",
            &resize("app", json!({ "limits": { "cpu": "300m" } })),
        )
        .await,
        "alice raises a CPU limit",
    );
    assert_allowed(
        resize_pod(&alice_gated, "plain", &memory_limit_patch("768Mi")).await,
        "alice raises the memory limit",
    );
    assert_eq!(stored_memory_limit(&cp, &gated, "plain").await, "768Mi");
    // The same quantity written another way is no cut.
    assert_allowed(
        resize_pod(&alice_gated, "plain", &memory_limit_patch("805306368")).await,
        "alice rewrites 768Mi in bytes",
    );

    // The updater's ServiceAccount may cut.
    let updater = service_account_client(&cp, NAMESPACE, "tailor-updater").await?;
    assert_allowed(
        resize_pod(
            &Api::<Pod>::namespaced(updater.clone(), &gated),
            "plain",
            &memory_limit_patch("256Mi"),
        )
        .await,
        "tailor-updater lowers the memory limit",
    );
    assert_eq!(stored_memory_limit(&cp, &gated, "plain").await, "256Mi");

    // Another ServiceAccount with the same rights may not.
    Api::<ServiceAccount>::namespaced(client.clone(), &gated)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": "tailor-updater" } }))?,
        )
        .await?;
    apply(
        &client,
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": "resizer-impostor" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "resizer" },
            "subjects": [{ "kind": "ServiceAccount", "name": "tailor-updater", "namespace": gated }]
        }),
    )
    .await?;
    let impostor = service_account_client(&cp, &gated, "tailor-updater").await?;
    assert_forbidden(
        resize_pod(
            &Api::<Pod>::namespaced(impostor, &gated),
            "plain",
            &memory_limit_patch("128Mi"),
        )
        .await,
        "a ServiceAccount named tailor-updater in another namespace lowers the limit",
    );

    // Sidecars (restartable init containers) are gated too.
    let with_sidecar: Pod = serde_json::from_value(json!({
        "metadata": { "name": "sidecar" },
        "spec": {
            "nodeName": "node-a",
            "initContainers": [
                { "name": "proxy", "image": "registry.example/proxy:1", "restartPolicy": "Always",
                  "resources": { "requests": { "memory": "64Mi" }, "limits": { "memory": "256Mi" } } }
            ],
            "containers": [
                { "name": "app", "image": "registry.example/app:1",
                  "resources": { "requests": { "memory": "64Mi" } } }
            ]
        }
    }))?;
    Api::<Pod>::namespaced(client.clone(), &gated)
        .create(&PostParams::default(), &with_sidecar)
        .await?;
    let cut_sidecar = Patch::Strategic(json!({
        "spec": { "initContainers": [{ "name": "proxy", "resources": { "limits": { "memory": "128Mi" } } }] }
    }));
    match resize_pod(&alice_gated, "sidecar", &cut_sidecar).await {
        Err(kube::Error::Api(s)) if s.code == 403 => assert!(
            s.message.contains("container(s) proxy needs approval"),
            "{}",
            s.message
        ),
        other => panic!("alice lowers a sidecar's memory limit: expected 403, got {other:?}"),
    }

    // The gate webhook sees only the resizes its matchConditions let through, by someone
    // other than the updater of an annotated pod in a gated namespace: none of the above
    // reached it (it is not running here, and fails closed). The updater's cut of an annotated
    // pod does not reach it either...
    assert_allowed(
        resize_pod(
            &Api::<Pod>::namespaced(updater, &gated),
            "approved",
            &memory_limit_patch("384Mi"),
        )
        .await,
        "tailor-updater lowers the memory limit of an annotated pod",
    );
    // ...nor one in a namespace without the label...
    assert_allowed(
        resize_pod(
            &Api::<Pod>::namespaced(alice.clone(), &open),
            "approved",
            &memory_limit_patch("256Mi"),
        )
        .await,
        "alice lowers the memory limit of an annotated pod in a namespace without the label",
    );
    assert_eq!(stored_memory_limit(&cp, &open, "approved").await, "256Mi");
    // ...but alice's cut of an annotated pod in the gated namespace must pass the webhook,
    // which does not answer.
    match resize_pod(&alice_gated, "approved", &memory_limit_patch("256Mi")).await {
        Err(kube::Error::Api(s)) => assert!(
            s.message.contains("gate.tailor.dev"),
            "not refused by the webhook: {s:?}"
        ),
        other => panic!(
            "alice lowers an annotated pod's memory limit with the gate webhook down: {other:?}"
        ),
    }
    assert_eq!(stored_memory_limit(&cp, &gated, "approved").await, "384Mi");

    // Without the webhook, the policy alone lets anyone allowed to resize it cut an annotated
    // pod.
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .delete("tailor", &DeleteParams::default())
        .await?;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match resize_pod(&alice_gated, "approved", &memory_limit_patch("256Mi")).await {
            Ok(_) => break,
            Err(kube::Error::Api(s))
                if s.message.contains("gate.tailor.dev") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("alice lowers the memory limit of an approved pod: {e}"),
        }
    }
    assert_eq!(stored_memory_limit(&cp, &gated, "approved").await, "256Mi");

    // Namespaces without the label are not gated.
    assert_allowed(
        resize_pod(
            &Api::<Pod>::namespaced(alice, &open),
            "plain",
            &memory_limit_patch("256Mi"),
        )
        .await,
        "alice lowers the memory limit in a namespace without the label",
    );
    assert_eq!(stored_memory_limit(&cp, &open, "plain").await, "256Mi");
    Ok(())
}

#[tokio::test]
async fn service_accounts_can_do_what_the_binaries_need_and_no_more() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client();
    apply_all(&client, &kustomize_objects()).await?;
    tailor_e2e::control_plane::create_node(&cp.client(), "node-a").await?;
    let ns = cp.namespace("work").await?;
    create_pod(&cp, &ns, "web", json!({})).await?;
    let va = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "metadata": { "name": "web", "namespace": ns },
        "spec": { "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" } }
    });
    let uid = apply(&client, &va).await?["metadata"]["uid"].clone();

    let updater = service_account_client(&cp, NAMESPACE, "tailor-updater").await?;
    let recommender = service_account_client(&cp, NAMESPACE, "tailor-recommender").await?;
    // What the recommender writes, and what a forged recommendation would look like: the
    // updater applies it (within the object's bounds) to the pods.
    let recommendation = json!({
        "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
        "status": { "observedGeneration": 1, "recommendation": {
            "observedGeneration": 1,
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
            "containerRecommendations": [{ "containerName": "app", "target": { "cpu": "4" } }] } }
    });

    for (who, sa) in [("updater", &updater), ("recommender", &recommender)] {
        let pods = Api::<Pod>::namespaced(sa.clone(), &ns);
        assert_allowed(
            Api::<Pod>::all(sa.clone())
                .list(&ListParams::default())
                .await,
            &format!("{who} lists pods"),
        );
        let pod = pods.get("web").await?;
        assert_forbidden(
            pods.patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
            )
            .await,
            &format!("{who} patches a pod"),
        );
        assert_forbidden(
            pods.replace("web", &PostParams::default(), &pod).await,
            &format!("{who} updates a pod"),
        );
        assert_forbidden(
            pods.delete("web", &DeleteParams::default()).await,
            &format!("{who} deletes a pod"),
        );
        assert_forbidden(
            pods.patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "message": "x" } })),
            )
            .await,
            &format!("{who} patches pod status"),
        );
        let vas = api_for(sa, &va).await?;
        assert_allowed(
            vas.list(&ListParams::default()).await,
            &format!("{who} lists VerticalAutoscalers"),
        );
        assert_allowed(
            vas.get("web").await,
            &format!("{who} gets a VerticalAutoscaler"),
        );
        // Whoever may patch the status writes the recommendation the updater applies: the
        // recommender alone, by server-side apply (as it writes) or any other patch.
        let own_manager = PatchParams::apply(&format!("tailor-{who}")).force();
        let applied = vas
            .patch_status("web", &own_manager, &Patch::Apply(recommendation.clone()))
            .await;
        let merged = vas
            .patch_status(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": { "observedGeneration": 1 } })),
            )
            .await;
        if who == "recommender" {
            assert_allowed(applied, "recommender applies VerticalAutoscaler status");
            assert_allowed(merged, "recommender patches VerticalAutoscaler status");
        } else {
            assert_forbidden(
                applied,
                "updater writes a recommendation into VerticalAutoscaler status",
            );
            assert_forbidden(merged, "updater patches VerticalAutoscaler status");
        }
        assert_forbidden(
            vas.replace_status("web", &PostParams::default(), &vas.get("web").await?)
                .await,
            &format!("{who} updates VerticalAutoscaler status"),
        );
        assert_forbidden(
            vas.patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "updatePolicy": { "updateMode": "InPlace" } } })),
            )
            .await,
            &format!("{who} patches a VerticalAutoscaler's spec"),
        );

        // Its own Lease in tailor-system, and no other.
        let own = format!("tailor-{who}");
        let other = if who == "updater" {
            "tailor-recommender"
        } else {
            "tailor-updater"
        };
        let leases = Api::<Lease>::namespaced(sa.clone(), NAMESPACE);
        let lease: Lease = serde_json::from_value(json!({ "metadata": { "name": own } }))?;
        let created = leases.create(&PostParams::default(), &lease).await;
        assert_allowed(created, &format!("{who} creates its Lease"));
        let mut lease = leases.get(&own).await?;
        lease.spec = Some(serde_json::from_value(json!({ "holderIdentity": "a" }))?);
        assert_allowed(
            leases.replace(&own, &PostParams::default(), &lease).await,
            &format!("{who} renews its Lease"),
        );
        assert_forbidden(leases.get(other).await, &format!("{who} reads {other}"));
        let elsewhere: Lease = serde_json::from_value(json!({ "metadata": { "name": own } }))?;
        assert_forbidden(
            Api::<Lease>::namespaced(sa.clone(), &ns)
                .create(&PostParams::default(), &elsewhere)
                .await,
            &format!("{who} creates a Lease outside tailor-system"),
        );
    }

    status_writer::resize_states_are_written_by_the_updater_alone(
        &ns,
        &uid,
        &updater,
        &recommender,
    )
    .await?;
    webhook::certificate_rbac(&cp, &updater, &recommender).await?;

    // Only the updater resizes.
    let resize_cpu = resize("app", json!({ "requests": { "cpu": "150m" } }));
    assert_forbidden(
        resize_pod(
            &Api::<Pod>::namespaced(recommender.clone(), &ns),
            "web",
            &resize_cpu,
        )
        .await,
        "recommender resizes a pod",
    );
    assert_allowed(
        resize_pod(
            &Api::<Pod>::namespaced(updater.clone(), &ns),
            "web",
            &resize_cpu,
        )
        .await,
        "updater resizes a pod",
    );

    // The updater reads HPAs and writes events.k8s.io Events.
    let hpas =
        Api::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>::all(updater.clone());
    assert_allowed(
        hpas.list(&ListParams::default()).await,
        "updater lists HPAs",
    );
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": { "name": "web.test", "namespace": ns },
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "tailor-updater",
        "reportingInstance": "tailor-updater-0",
        "action": "Resize",
        "reason": "Resizing",
        "type": "Normal",
        "regarding": { "apiVersion": "v1", "kind": "Pod", "name": "web", "namespace": ns }
    }))?;
    assert_allowed(
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(updater.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await,
        "updater creates an Event",
    );
    Ok(())
}

/// Patches `pod`'s `resize` subresource with `patch`.
async fn resize_pod(api: &Api<Pod>, pod: &str, patch: &Patch<Value>) -> kube::Result<Pod> {
    api.patch_resize(pod, &PatchParams::default(), patch).await
}

// --- the binaries -------------------------------------------------------------------------

/// `tailor-recommender` and `tailor-updater`, built (or found up to date) by cargo.
fn binaries() -> &'static BTreeMap<String, PathBuf> {
    static BINARIES: OnceLock<Result<BTreeMap<String, PathBuf>, String>> = OnceLock::new();
    match BINARIES.get_or_init(tailor_e2e::cargo::build_tailor_binaries) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

/// The container's args with the addresses a test can use.
fn local_args(
    container: &Value,
    (admin_port, webhook_port): (u16, u16),
    prometheus: &str,
) -> Vec<String> {
    strings(&container["args"])
        .into_iter()
        .map(|a| {
            if a.starts_with("--admin-addr=") {
                format!("--admin-addr=127.0.0.1:{admin_port}")
            } else if a.starts_with("--webhook-addr=") {
                format!("--webhook-addr=127.0.0.1:{webhook_port}")
            } else if a.starts_with("--prometheus-url=") {
                format!("--prometheus-url={prometheus}")
            } else {
                a
            }
        })
        .collect()
}

#[test]
fn binaries_accept_every_rendered_flag() {
    let renders = [
        helm_objects(&[]),
        helm_objects(&[
            "--set=prometheus.bearerToken.secretName=t",
            "--set=prometheus.ca.secretName=c",
            "--set=prometheus.insecureSkipVerify=true",
            "--set-string=prometheus.extraMatchers=cluster=\"prod\"",
            "--set=updater.dryRun=true",
            "--set=logLevel=debug",
            "--set=leaderElection.enabled=false",
            "--set=recommender.replicas=1",
            "--set=updater.replicas=1",
        ]),
        helm_objects(&[
            "--set=prometheus.basicAuth.user=u",
            "--set=prometheus.basicAuth.passwordSecretName=p",
            "--set=prometheus.ca.configMapName=c",
        ]),
        helm_objects(&[CERT_MANAGER_VALUES]),
        helm_objects(&["--set=webhook.enabled=false"]),
    ];
    for objects in &renders {
        for name in ["tailor-recommender", "tailor-updater"] {
            let container =
                &find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0];
            let mut args = strings(&container["args"]);
            // clap parses (and refuses unknown flags and bad values) up to --help, then prints
            // the help and exits 0; nothing runs.
            args.push("--help".into());
            let mut cmd = Command::new(&binaries()[name]);
            cmd.args(&args);
            if let Err(e) = run(cmd) {
                panic!("{name} refuses the rendered args {args:?}: {e}");
            }
        }
    }
}

/// Starts the binary `name` of the rendered `objects` as its Deployment runs it (its
/// ServiceAccount's token, its args, the downward API's env) and waits until it is ready and
/// holds its Lease; returns it and its webhook port.
async fn start_binary(
    cp: &ControlPlane,
    objects: &[Value],
    (component, name): (&str, &'static str),
    prometheus: &str,
    http: &reqwest::Client,
) -> anyhow::Result<(ServerProcess, u16)> {
    let pod = &find(objects, "Deployment", name)["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let sa = pod["serviceAccountName"].as_str().unwrap();
    // The pod's name and namespace come from the downward API, as in a cluster.
    let mut env = Vec::new();
    let identity = format!("{name}-7d9f-test");
    for var in container["env"].as_array().unwrap() {
        let field = var["valueFrom"]["fieldRef"]["fieldPath"].as_str();
        let value = match field {
            Some("metadata.name") => identity.clone(),
            Some("metadata.namespace") => NAMESPACE.to_owned(),
            _ => var["value"].as_str().unwrap_or_default().to_owned(),
        };
        env.push((var["name"].as_str().unwrap().to_owned(), value));
    }
    let token = token(cp, NAMESPACE, sa).await?;
    let kubeconfig = kubeconfig_with_token(cp, &token, &format!("{sa}.kubeconfig"))?;
    env.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    let port = tailor_e2e::free_port()?;
    let webhook_port = tailor_e2e::free_port()?;
    let args = local_args(container, (port, webhook_port), prometheus);
    let bins = binaries();
    let mut process = ServerProcess::spawn_with_env(
        name,
        &bins[name],
        &args,
        &env,
        &cp.dir().join(format!("{name}.log")),
    )?;
    wait_leading(cp, &mut process, container, (component, name), port, http).await?;
    Ok((process, webhook_port))
}

/// Waits until the binary `name` (`component`, admin `port`, `container` rendered) is ready,
/// answers its probes and holds its Lease.
async fn wait_leading(
    cp: &ControlPlane,
    process: &mut ServerProcess,
    container: &Value,
    (component, name): (&str, &str),
    port: u16,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    let identity = format!("{name}-7d9f-test");
    let base = format!("http://127.0.0.1:{port}");
    let leader = format!("tailor_{component}_leader 1");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = process.exited() {
            panic!("{name} exited with {status}:\n{}", process.log_tail(30));
        }
        let ready = match http.get(format!("{base}/readyz")).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        };
        let metrics = match http.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // Line by line: the metric's HELP text says "1 on the replica that writes".
        if ready && metrics.lines().any(|l| l.trim() == leader) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not ready and leading after {TIMEOUT:?} with its ServiceAccount:\n{}",
            process.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let status = http.get(format!("{base}{path}")).send().await?.status();
        assert!(status.is_success(), "{name} {probe} {path}: {status}");
    }
    let lease = Api::<Lease>::namespaced(cp.client(), NAMESPACE)
        .get_opt(name)
        .await?;
    assert_eq!(
        lease
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .as_deref(),
        Some(identity.as_str()),
        "{name}'s Lease in {NAMESPACE}:\n{}",
        process.log_tail(30)
    );
    Ok(())
}

#[tokio::test]
async fn binaries_run_with_the_manifests_rbac_and_flags() -> anyhow::Result<()> {
    let objects = kustomize_objects();
    let cp = ControlPlane::start().await?;
    apply_all(&cp.client(), &objects).await?;
    let prometheus = tailor_e2e::Prometheus::backfilled("# EOF\n").await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    // An object the updater has something to say about: its recommendation is stale.
    let va = status_writer::stale_object(&cp).await?;

    let mut running = Vec::new();
    let mut updater_webhook_port = 0;
    for (component, name) in [
        ("recommender", "tailor-recommender"),
        ("updater", "tailor-updater"),
    ] {
        let (process, webhook_port) =
            start_binary(&cp, &objects, (component, name), prometheus.url(), &http).await?;
        if component == "updater" {
            updater_webhook_port = webhook_port;
        }
        running.push((name, process));
    }
    // Both at work with their own tokens: the updater records to the ResizeState, the
    // recommender mirrors that into the status.
    status_writer::recorded_and_mirrored(&cp, &va, &running).await?;
    // The updater made its webhook certificates with its token and serves them.
    let updater_log = || {
        running
            .iter()
            .find(|(name, _)| *name == "tailor-updater")
            .map(|(_, p)| p.log_tail(30))
            .unwrap_or_default()
    };
    webhook::certificates_made_and_served(&cp, updater_webhook_port, updater_log).await?;
    for (name, mut process) in running {
        let log = process.log_tail(200);
        assert!(
            !log.contains("forbidden") && !log.contains("Forbidden"),
            "{name} was refused something:\n{log}"
        );
        process.stop(Duration::from_secs(5));
    }
    Ok(())
}
