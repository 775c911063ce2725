//! The chart with `namespaces` or `excludeNamespaces`: both binaries get the flag; with
//! `namespaces` their grants on namespaced resources come from a Role and RoleBinding in each
//! listed namespace (the updater's ClusterRole keeps `get` on nodes, the recommender has none),
//! and both webhooks are called for those namespaces only; with `excludeNamespaces` RBAC stays
//! cluster-wide and the webhooks leave them out. On a real API server, the scoped binaries run
//! with nothing but those grants: an object in scope is recorded and mirrored, the same object
//! elsewhere is not touched.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use tailor_e2e::ControlPlane;

use super::{
    NAMESPACE, api_for, apply_all, assert_allowed, assert_forbidden, binaries, by_key, find,
    helm_objects, helm_template, run, service_account_client, start_binary, status_writer, strings,
};

/// The rendered args of the Deployment `name`.
fn args(objects: &[Value], name: &str) -> Vec<String> {
    strings(&find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["args"])
}

/// `(kind, namespace, name)` of the RBAC objects rendered.
fn rbac(objects: &[Value]) -> Vec<(String, String, String)> {
    let mut out: Vec<(String, String, String)> = by_key(objects, "helm")
        .into_keys()
        .filter(|k| k.0 == "rbac.authorization.k8s.io/v1")
        .map(|k| (k.1, k.2, k.3))
        .collect();
    out.sort();
    out
}

/// The `namespaceSelector` of the only webhook of the configuration `kind`.
fn selector(objects: &[Value], kind: &str) -> Value {
    find(objects, kind, "tailor")["webhooks"][0]["namespaceSelector"].clone()
}

fn set(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| format!("--set={v}")).collect()
}

fn render(values: &[&str]) -> Vec<Value> {
    let values = set(values);
    helm_objects(&values.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn helm_namespaces_render_roles_flags_and_webhook_selectors() {
    let objects = render(&["namespaces={shop,web}"]);
    for name in ["tailor-recommender", "tailor-updater"] {
        let a = args(&objects, name);
        assert!(
            a.iter().any(|f| f == "--namespaces=shop,web"),
            "{name}: {a:?}"
        );
        assert!(
            !a.iter().any(|f| f.starts_with("--exclude-namespaces")),
            "{a:?}"
        );
    }
    let have = rbac(&objects);
    let t = |k: &str, ns: &str, n: &str| (k.to_owned(), ns.to_owned(), n.to_owned());
    for ns in ["shop", "web"] {
        for name in ["tailor-recommender", "tailor-updater"] {
            for kind in ["Role", "RoleBinding"] {
                assert!(
                    have.contains(&t(kind, ns, name)),
                    "no {kind} {ns}/{name}: {have:?}"
                );
            }
        }
    }
    assert!(
        !have.contains(&t("ClusterRole", "", "tailor-recommender")),
        "{have:?}"
    );
    assert!(!have.contains(&t("ClusterRoleBinding", "", "tailor-recommender")));
    // The updater's ClusterRole: nodes only.
    let cluster = &find(&objects, "ClusterRole", "tailor-updater")["rules"];
    assert_eq!(
        cluster,
        &json!([{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}])
    );
    // The Role holds what the ClusterRole holds unscoped, and binds the release's account.
    let unscoped = helm_objects(&[]);
    let mut all = find(&unscoped, "ClusterRole", "tailor-updater")["rules"].clone();
    all.as_array_mut().unwrap().pop();
    let role = objects
        .iter()
        .find(|o| {
            o["kind"] == "Role"
                && o["metadata"]["namespace"] == "web"
                && o["metadata"]["name"] == "tailor-updater"
        })
        .unwrap();
    assert_eq!(role["rules"], all);
    let binding = objects
        .iter()
        .find(|o| {
            o["kind"] == "RoleBinding"
                && o["metadata"]["namespace"] == "shop"
                && o["metadata"]["name"] == "tailor-recommender"
        })
        .unwrap();
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "tailor-recommender", "namespace": NAMESPACE}])
    );
    let name_in =
        json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop", "web"]});
    let size = selector(&objects, "MutatingWebhookConfiguration");
    assert!(
        size["matchExpressions"]
            .as_array()
            .unwrap()
            .contains(&name_in),
        "{size}"
    );
    let gate = selector(&objects, "ValidatingWebhookConfiguration");
    assert_eq!(gate["matchExpressions"], json!([name_in]), "{gate}");
    assert_eq!(
        gate["matchLabels"],
        json!({"tailor.dev/memory-gate": "enabled"})
    );
}

#[test]
fn helm_exclude_namespaces_keep_cluster_roles_and_leave_them_out_of_the_webhooks() {
    let objects = render(&["excludeNamespaces={batch,legacy}"]);
    for name in ["tailor-recommender", "tailor-updater"] {
        let a = args(&objects, name);
        assert!(
            a.iter().any(|f| f == "--exclude-namespaces=batch,legacy"),
            "{name}: {a:?}"
        );
        assert!(!a.iter().any(|f| f.starts_with("--namespaces")), "{a:?}");
    }
    assert_eq!(rbac(&objects), rbac(&helm_objects(&[])), "RBAC changed");
    let size = selector(&objects, "MutatingWebhookConfiguration");
    assert_eq!(
        size["matchExpressions"],
        json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                "values": ["kube-system", NAMESPACE, "batch", "legacy"]}])
    );
    let gate = selector(&objects, "ValidatingWebhookConfiguration");
    assert_eq!(
        gate["matchExpressions"],
        json!([{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["batch", "legacy"]}])
    );
    // Unscoped: no flag, and the gate selects by its label alone.
    let plain = helm_objects(&[]);
    for name in ["tailor-recommender", "tailor-updater"] {
        assert!(!args(&plain, name).iter().any(|f| f.contains("namespaces")));
    }
    assert!(selector(&plain, "ValidatingWebhookConfiguration")["matchExpressions"].is_null());
}

#[test]
fn helm_refuses_both_scopes_and_bad_names_and_binaries_accept_the_flags() {
    for (values, message) in [
        (
            vec!["namespaces={a}", "excludeNamespaces={b}"],
            "cannot be used together",
        ),
        (vec!["namespaces={Shop}"], "not a namespace name"),
        (vec!["excludeNamespaces={-x}"], "not a namespace name"),
    ] {
        let values = set(&values);
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        match helm_template(&values) {
            Err(e) => assert!(e.contains(message), "{values:?}: {e}"),
            Ok(_) => panic!("{values:?} must be refused"),
        }
    }
    for objects in [
        render(&["namespaces={a,b}"]),
        render(&["excludeNamespaces={x}"]),
    ] {
        for name in ["tailor-recommender", "tailor-updater"] {
            let mut a = args(&objects, name);
            a.push("--help".into());
            let mut cmd = std::process::Command::new(&binaries()[name]);
            cmd.args(&a);
            if let Err(e) = run(cmd) {
                panic!("{name} refuses the rendered args {a:?}: {e}");
            }
        }
    }
    // Both flags at once: clap refuses, naming both.
    let mut cmd = std::process::Command::new(&binaries()["tailor-updater"]);
    cmd.args(["run", "--namespaces=a", "--exclude-namespaces=b"]);
    let e = run(cmd).unwrap_err();
    assert!(
        e.contains("--namespaces") && e.contains("--exclude-namespaces"),
        "{e}"
    );
}

/// What each ServiceAccount may list: in the scoped namespaces, and nowhere else.
async fn grants(cp: &ControlPlane, scoped: &[&String], outside: &str) -> anyhow::Result<()> {
    for sa in ["tailor-recommender", "tailor-updater"] {
        let client = service_account_client(cp, NAMESPACE, sa).await?;
        let params = ListParams::default();
        for ns in scoped {
            let pods = Api::<Pod>::namespaced(client.clone(), ns)
                .list(&params)
                .await;
            assert_allowed(pods, &format!("{sa} lists pods in {ns}"));
        }
        let pods = Api::<Pod>::namespaced(client.clone(), outside)
            .list(&params)
            .await;
        assert_forbidden(pods, &format!("{sa} lists pods in {outside}"));
        let pods = Api::<Pod>::all(client.clone()).list(&params).await;
        assert_forbidden(pods, &format!("{sa} lists pods cluster-wide"));
        let va = json!({"apiVersion": "tailor.dev/v1alpha1", "kind": "VerticalAutoscaler",
                        "metadata": {"name": "x", "namespace": outside}});
        let vas = api_for(&client, &va).await?.list(&params).await;
        assert_forbidden(vas, &format!("{sa} lists VerticalAutoscalers in {outside}"));
        let nodes = Api::<Node>::all(client.clone()).get_opt("none").await;
        if sa == "tailor-updater" {
            assert_allowed(nodes, "the updater gets a node");
        } else {
            assert_forbidden(nodes, "the recommender gets a node");
        }
    }
    Ok(())
}

#[tokio::test]
async fn scoped_binaries_run_with_roles_in_their_namespaces_only() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let (a, b) = (cp.namespace("scoped").await?, cp.namespace("scoped").await?);
    let outside = cp.namespace("outside").await?;
    let objects = render(&[&format!("namespaces={{{a},{b}}}")]);
    apply_all(&cp.client(), &objects).await?;
    grants(&cp, &[&a, &b], &outside).await?;

    let inside = status_writer::stale_object_in(&cp, &a).await?;
    let elsewhere = status_writer::stale_object_in(&cp, &outside).await?;
    let before = api_for(&cp.client(), &elsewhere).await?.get("web").await?;
    let prometheus = tailor_e2e::Prometheus::backfilled("# EOF\n").await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut running = Vec::new();
    for component in ["recommender", "updater"] {
        let name = if component == "updater" {
            "tailor-updater"
        } else {
            "tailor-recommender"
        };
        let (process, _) =
            start_binary(&cp, &objects, (component, name), prometheus.url(), &http).await?;
        running.push((name, process));
    }
    status_writer::recorded_and_mirrored(&cp, &inside, &running).await?;
    // A few resyncs later, the object outside is as the test wrote it: no record, no status.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = api_for(&cp.client(), &elsewhere).await?.get("web").await?;
    assert_eq!(
        before.metadata.resource_version, after.metadata.resource_version,
        "the object outside the scope was written: {:#?}",
        after.data["status"]
    );
    let mut state = elsewhere.clone();
    state["kind"] = json!("ResizeState");
    assert!(
        api_for(&cp.client(), &state)
            .await?
            .get_opt("web")
            .await?
            .is_none(),
        "a ResizeState was written outside the scope"
    );
    for (name, mut process) in running {
        let log = process.log_tail(200);
        assert!(
            !log.contains("forbidden") && !log.contains("Forbidden"),
            "{name} was refused something:\n{log}"
        );
        assert!(
            log.contains(&format!("watching only namespaces {a}, {b}")),
            "{name}:\n{log}"
        );
        process.stop(Duration::from_secs(5));
    }
    Ok(())
}
