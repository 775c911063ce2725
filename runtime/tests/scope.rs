//! Namespace scoping against a real API server: `--exclude-namespaces` as a cluster-wide watch
//! with a `metadata.namespace!=` field selector (for built-in and custom resources alike),
//! `--namespaces` as one watch per namespace merged into one store, which needs nothing but a
//! Role in each of those namespaces.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tailor_e2e::ControlPlane;
use tailor_runtime::{Scope, cache_scoped};

const WAIT: Duration = Duration::from_secs(20);

fn list(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// Three namespaces, `<p>-a`, `<p>-b` and `<p>-c`, each with the ConfigMap `first`.
async fn namespaces(cp: &ControlPlane) -> [String; 3] {
    let mut out = Vec::new();
    for _ in 0..3 {
        let ns = cp.namespace("scope").await.unwrap();
        config_map(cp, &ns, "first").await;
        out.push(ns);
    }
    out.try_into().unwrap()
}

async fn config_map(cp: &ControlPlane, ns: &str, name: &str) {
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<ConfigMap>::namespaced(cp.client(), ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

/// `namespace/name` of everything in `store`, sorted.
fn names<K: Resource + Clone>(store: &Store<K>) -> Vec<String>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let mut out: Vec<String> = store
        .state()
        .iter()
        .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
        .collect();
    out.sort();
    out
}

/// Waits until `store` holds exactly `want` (of the namespaces in `within`).
async fn wait_for<K: Resource + Clone>(store: &Store<K>, within: &[String], want: &[String])
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let have: Vec<String> = names(store)
            .into_iter()
            .filter(|n| within.iter().any(|ns| n.starts_with(&format!("{ns}/"))))
            .collect();
        if have == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "store holds {have:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a cache of ConfigMaps in `scope` and checks what it holds as objects come and go in
/// the three namespaces, `b` being out of scope.
async fn config_maps_of(
    cp: &ControlPlane,
    client: kube::Client,
    scope: Scope,
    [a, b, c]: &[String; 3],
) {
    let (store, run) = cache_scoped::<ConfigMap>(&scope, &client);
    let task = tokio::spawn(run);
    tokio::time::timeout(WAIT, store.wait_until_ready())
        .await
        .expect("the scoped cache lists")
        .unwrap();
    let all = [a.clone(), b.clone(), c.clone()];
    wait_for(&store, &all, &[format!("{a}/first"), format!("{c}/first")]).await;
    for ns in [a, b, c] {
        config_map(cp, ns, "second").await;
    }
    Api::<ConfigMap>::namespaced(cp.client(), a)
        .delete("first", &DeleteParams::default())
        .await
        .unwrap();
    let want = [
        format!("{a}/second"),
        format!("{c}/first"),
        format!("{c}/second"),
    ];
    wait_for(&store, &all, &want).await;
    // b's objects never arrive, not even later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_for(&store, &all, &want).await;
    task.abort();
}

#[tokio::test]
async fn excluded_namespaces_are_left_out_by_a_field_selector() {
    let cp = ControlPlane::start().await.unwrap();
    let nss = namespaces(&cp).await;
    let scope = Scope::new(&[], &list(&[&nss[1]])).unwrap();
    config_maps_of(&cp, cp.client(), scope.clone(), &nss).await;

    // The field selector works on custom resources too (VerticalAutoscalers, read as dynamic
    // objects as the updater reads upstream VPAs).
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tailor.dev", "v1alpha1", "VerticalAutoscaler"),
        "verticalautoscalers",
    );
    for ns in &nss {
        let va: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}},
        }))
        .unwrap();
        Api::<DynamicObject>::namespaced_with(cp.client(), ns, &resource)
            .create(&PostParams::default(), &va)
            .await
            .unwrap();
    }
    let writer = reflector::store::Writer::<DynamicObject>::new(resource.clone());
    let store = writer.as_reader();
    let events = scope.watcher(
        &cp.client(),
        &resource,
        watcher::Config::default(),
        store.clone(),
    );
    let task = tokio::spawn(futures::StreamExt::for_each(
        reflector::reflector(writer, events).default_backoff(),
        |_| std::future::ready(()),
    ));
    wait_for(
        &store,
        &nss,
        &[format!("{}/web", nss[0]), format!("{}/web", nss[2])],
    )
    .await;
    task.abort();
}

#[tokio::test]
async fn listed_namespaces_are_watched_each_with_a_role_there_only() {
    let cp = ControlPlane::start().await.unwrap();
    let nss = namespaces(&cp).await;
    // A user who may read ConfigMaps in a and c only.
    let user = "scoped-reader";
    for ns in [&nss[0], &nss[2]] {
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "read", "namespace": ns},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
        });
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "read", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        });
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(cp.client(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(role).unwrap(),
            )
            .await
            .unwrap();
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(cp.client(), ns)
            .create(
                &PostParams::default(),
                &serde_json::from_value(binding).unwrap(),
            )
            .await
            .unwrap();
    }
    let kubeconfig = Kubeconfig::read_from(cp.kubeconfig()).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
    config.auth_info.impersonate = Some(user.to_owned());
    let client = kube::Client::try_from(config).unwrap();
    // The user cannot list cluster-wide, so a cluster-wide cache would never be ready.
    let forbidden = Api::<ConfigMap>::all(client.clone())
        .list(&Default::default())
        .await;
    assert!(
        matches!(forbidden, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{forbidden:?}"
    );
    let scope = Scope::new(&list(&[&nss[0], &nss[2]]), &[]).unwrap();
    config_maps_of(&cp, client, scope, &nss).await;
}
