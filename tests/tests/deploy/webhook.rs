//! The admission webhook's objects: the Service every updater replica serves it behind, the
//! Mutating- and ValidatingWebhookConfigurations `tailor`, and where the serving certificate
//! comes from (the updater itself in the base, cert-manager in the overlay):
//!
//! - the configurations send what the updater serves (`/size`, `/gate`) to the Service, which
//!   reaches the updater's `webhook` port; pods are never refused when tailor is down
//!   (`failurePolicy: Ignore`), and the gate only sees the requests that matter;
//! - with self-managed certificates the updater's flags, its RBAC and the objects agree (the
//!   Secret, the configurations, the Service's names), and its token may write that Secret and
//!   those two configurations and nothing else of their kinds;
//! - with cert-manager the Certificate's Secret is mounted where the updater reads it, the CA
//!   injector is pointed at that Certificate, and the updater is granted neither.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_e2e::ControlPlane;

use super::{
    GATE, NAMESPACE, TIMEOUT, apply, assert_allowed, assert_forbidden, find, strings,
    wait_established,
};

pub const SECRET: &str = "tailor-webhook-tls";
const CONFIGURATION: &str = "tailor";
const SERVICE: &str = "tailor-webhook";
const UPDATER_USER: &str = "system:serviceaccount:tailor-system:tailor-updater";
const SERVICE_NAMES: [&str; 2] = [
    "tailor-webhook.tailor-system.svc",
    "tailor-webhook.tailor-system.svc.cluster.local",
];

/// The updater container's args.
fn updater_args(objects: &[Value]) -> Vec<String> {
    let updater = find(objects, "Deployment", "tailor-updater");
    strings(&updater["spec"]["template"]["spec"]["containers"][0]["args"])
}

/// The value of `--flag=` in `args`, if given.
fn flag<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().find_map(|a| a.strip_prefix(prefix.as_str()))
}

/// What both certificate sources share: the Service, the two configurations, the port.
fn assert_configurations(objects: &[Value]) {
    let deployment = find(objects, "Deployment", "tailor-updater");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = updater_args(objects);

    // The webhook listens on the container port named `webhook`, which the Service targets.
    let port = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "webhook")
        .unwrap_or_else(|| panic!("no webhook port: {}", container["ports"]));
    assert_eq!(
        flag(&args, "--webhook-addr"),
        Some(format!("0.0.0.0:{}", port["containerPort"]).as_str()),
        "{args:?}"
    );
    assert_eq!(flag(&args, "--updater-username"), Some(UPDATER_USER));
    let service = find(objects, "Service", SERVICE);
    assert_eq!(service["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"],
        "the webhook Service selects the updater's pods"
    );
    assert_eq!(
        service["spec"]["ports"],
        json!([{ "name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP" }])
    );

    let client_config = |path: &str| json!({ "service": { "name": SERVICE, "namespace": NAMESPACE, "path": path, "port": 443 } });
    let mutating = find(objects, "MutatingWebhookConfiguration", CONFIGURATION);
    let webhooks = mutating["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1, "{mutating}");
    let size = &webhooks[0];
    assert_eq!(size["name"], "size.tailor.dev");
    // No caBundle: the updater or cert-manager's CA injector writes it.
    assert_eq!(size["clientConfig"], client_config("/size"));
    assert_eq!(
        size["rules"],
        json!([{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                 "resources": ["pods"], "scope": "Namespaced" }])
    );
    // Pods are created as submitted whenever the webhook does not answer in time.
    assert_eq!(size["failurePolicy"], "Ignore");
    assert_eq!(size["timeoutSeconds"], 2);
    assert_eq!(size["sideEffects"], "None");
    assert_eq!(size["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(size["reinvocationPolicy"], "Never");
    assert_eq!(
        size["namespaceSelector"],
        json!({ "matchExpressions": [{ "key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                       "values": ["kube-system", NAMESPACE] }] })
    );

    let validating = find(objects, "ValidatingWebhookConfiguration", CONFIGURATION);
    let webhooks = validating["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 1, "{validating}");
    let gate = &webhooks[0];
    assert_eq!(gate["name"], "gate.tailor.dev");
    assert_eq!(gate["clientConfig"], client_config("/gate"));
    assert_eq!(
        gate["rules"],
        json!([{ "apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"],
                 "resources": ["pods/resize"], "scope": "Namespaced" }])
    );
    assert_eq!(gate["failurePolicy"], "Fail");
    assert_eq!(gate["timeoutSeconds"], 5);
    assert_eq!(gate["sideEffects"], "None");
    assert_eq!(gate["admissionReviewVersions"], json!(["v1"]));
    // The namespaces of the memory gate's policy.
    let binding = find(objects, "ValidatingAdmissionPolicyBinding", GATE);
    assert_eq!(
        gate["namespaceSelector"],
        binding["spec"]["matchResources"]["namespaceSelector"]
    );
    let conditions: Vec<&str> = gate["matchConditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["expression"].as_str().unwrap())
        .collect();
    assert_eq!(
        conditions,
        [
            format!("request.userInfo.username != '{UPDATER_USER}'").as_str(),
            "has(oldObject.metadata.annotations) && \
             'tailor.dev/approve-memory-decrease' in oldObject.metadata.annotations",
        ]
    );
}

/// The rules of every Role and ClusterRole bound to the updater, with the role's kind.
fn updater_rules(objects: &[Value]) -> Vec<(String, Value)> {
    let mut roles = BTreeSet::new();
    for binding in objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" || o["kind"] == "ClusterRoleBinding")
    {
        let to_updater = binding["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["kind"] == "ServiceAccount" && s["name"] == "tailor-updater");
        if to_updater {
            let role = &binding["roleRef"];
            roles.insert((
                role["kind"].as_str().unwrap().to_owned(),
                role["name"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let mut rules = Vec::new();
    for (kind, name) in roles {
        for rule in find(objects, &kind, &name)["rules"].as_array().unwrap() {
            rules.push((kind.clone(), rule.clone()));
        }
    }
    rules
}

/// The base: the updater makes the certificates, and its flags, RBAC and objects agree.
pub fn assert_self_managed(objects: &[Value]) {
    assert_configurations(objects);
    let args = updater_args(objects);
    assert_eq!(flag(&args, "--webhook-certs"), Some("self-managed"));
    assert_eq!(flag(&args, "--webhook-secret"), Some(SECRET));
    assert_eq!(flag(&args, "--webhook-configurations"), Some(CONFIGURATION));
    assert_eq!(
        flag(&args, "--webhook-names"),
        Some(SERVICE_NAMES.join(",").as_str())
    );
    assert_eq!(
        flag(&args, "--webhook-cert-validity-seconds"),
        Some("31536000")
    );
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        let annotations = &find(objects, kind, CONFIGURATION)["metadata"]["annotations"];
        assert!(annotations.is_null(), "{kind}: {annotations}");
    }

    let rules = updater_rules(objects);
    let granted = |resource: &str| -> Vec<(String, Value)> {
        rules
            .iter()
            .filter(|(_, r)| strings(&r["resources"]).iter().any(|x| x == resource))
            .cloned()
            .collect()
    };
    // Secrets: in the updater's namespace only, create, and get/update of the one Secret.
    let secrets = granted("secrets");
    assert_eq!(
        secrets.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        [
            json!({ "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] }),
            json!({ "apiGroups": [""], "resources": ["secrets"], "resourceNames": [SECRET],
                    "verbs": ["get", "update"] }),
        ]
    );
    assert!(
        secrets.iter().all(|(kind, _)| kind == "Role"),
        "{secrets:?}"
    );
    let role = find(objects, "Role", "tailor-updater-webhook-certs");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    // The two configurations named by --webhook-configurations, get and update only.
    for resource in [
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
    ] {
        let grants = granted(resource);
        assert_eq!(grants.len(), 1, "{resource}: {grants:?}");
        let (_, rule) = &grants[0];
        assert_eq!(rule["resourceNames"], json!([CONFIGURATION]), "{rule}");
        assert_eq!(rule["verbs"], json!(["get", "update"]), "{rule}");
    }
}

/// The overlay: cert-manager issues the certificate, the updater reads the mounted Secret.
pub fn assert_cert_manager(objects: &[Value]) {
    assert_configurations(objects);
    let args = updater_args(objects);
    assert_eq!(flag(&args, "--webhook-certs"), Some("files"));
    for gone in [
        "--webhook-secret",
        "--webhook-configurations",
        "--webhook-names",
        "--webhook-cert-validity-seconds",
    ] {
        assert_eq!(flag(&args, gone), None, "{args:?}");
    }
    let dir = flag(&args, "--webhook-cert-dir").expect("--webhook-cert-dir");

    let certificate = find(objects, "Certificate", "tailor-webhook");
    let spec = &certificate["spec"];
    assert_eq!(certificate["metadata"]["namespace"], NAMESPACE);
    assert_eq!(spec["dnsNames"], json!(SERVICE_NAMES));
    let issuer = find(
        objects,
        "Issuer",
        spec["issuerRef"]["name"].as_str().unwrap(),
    );
    assert_eq!(spec["issuerRef"]["kind"], "Issuer");
    assert_eq!(issuer["metadata"]["namespace"], NAMESPACE);
    assert_eq!(issuer["spec"], json!({ "selfSigned": {} }));

    // The Certificate's Secret, mounted read-only where --webhook-cert-dir points.
    let pod = &find(objects, "Deployment", "tailor-updater")["spec"]["template"]["spec"];
    let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}: {mounts:?}"));
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let secret_name = spec["secretName"].clone();
    assert_eq!(secret_name, SECRET);
    assert_eq!(
        volume["secret"],
        json!({ "secretName": secret_name, "items": [
            { "key": "tls.crt", "path": "tls.crt" }, { "key": "tls.key", "path": "tls.key" }] })
    );

    // cert-manager's CA injector fills both caBundles from that Certificate.
    let injected = format!("{NAMESPACE}/tailor-webhook");
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(
            find(objects, kind, CONFIGURATION)["metadata"]["annotations"],
            json!({ "cert-manager.io/inject-ca-from": injected }),
            "{kind}"
        );
    }

    // The updater writes neither Secrets nor webhook configurations.
    for (kind, rule) in updater_rules(objects) {
        for resource in strings(&rule["resources"]) {
            assert!(
                ![
                    "secrets",
                    "mutatingwebhookconfigurations",
                    "validatingwebhookconfigurations"
                ]
                .contains(&resource.as_str()),
                "{kind} grants the updater {resource}: {rule}"
            );
        }
    }
}

/// The Issuer and Certificate CRD subsets of `tests/fixtures/`.
pub async fn install_cert_manager_crds(client: &kube::Client) -> anyhow::Result<()> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cert-manager-crds.yaml");
    for crd in super::documents(&std::fs::read_to_string(&path)?) {
        apply(client, &crd).await?;
        wait_established(client, crd["metadata"]["name"].as_str().unwrap()).await?;
    }
    Ok(())
}

/// The updater's token may create, read and update its Secret and update the caBundle of the
/// configurations `tailor`, and nothing else of those kinds; the recommender's none of it.
pub async fn certificate_rbac(
    cp: &ControlPlane,
    updater: &kube::Client,
    recommender: &kube::Client,
) -> anyhow::Result<()> {
    let admin = cp.client();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": SECRET, "namespace": NAMESPACE },
        "type": "kubernetes.io/tls",
        "data": { "tls.crt": "", "tls.key": "" }
    }))?;
    let secrets = Api::<Secret>::namespaced(updater.clone(), NAMESPACE);
    assert_allowed(
        secrets.create(&PostParams::default(), &secret).await,
        "updater creates its webhook Secret",
    );
    let mut stored = secrets.get(SECRET).await?;
    stored
        .data
        .get_or_insert_default()
        .insert("ca.crt".into(), ByteString(b"x".to_vec()));
    assert_allowed(
        secrets
            .replace(SECRET, &PostParams::default(), &stored)
            .await,
        "updater updates its webhook Secret",
    );
    assert_forbidden(
        secrets.delete(SECRET, &DeleteParams::default()).await,
        "updater deletes its webhook Secret",
    );
    assert_forbidden(
        secrets.list(&ListParams::default()).await,
        "updater lists Secrets",
    );
    let mut other = secret.clone();
    other.metadata.name = Some("someone-elses".into());
    Api::<Secret>::namespaced(admin.clone(), NAMESPACE)
        .create(&PostParams::default(), &other)
        .await?;
    assert_forbidden(
        secrets.get("someone-elses").await,
        "updater reads another Secret",
    );
    let elsewhere = cp.namespace("secrets").await?;
    let mut outside = secret.clone();
    outside.metadata.namespace = Some(elsewhere.clone());
    assert_forbidden(
        Api::<Secret>::namespaced(updater.clone(), &elsewhere)
            .create(&PostParams::default(), &outside)
            .await,
        "updater creates a Secret outside tailor-system",
    );
    assert_forbidden(
        Api::<Secret>::namespaced(recommender.clone(), NAMESPACE)
            .get(SECRET)
            .await,
        "recommender reads the webhook Secret",
    );

    // Another configuration of each kind, as some other webhook would install it.
    let other_webhook = |kind: &str| {
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
            "metadata": { "name": "someone-elses" },
            "webhooks": [{ "name": "other.example.com", "admissionReviewVersions": ["v1"],
                "sideEffects": "None", "failurePolicy": "Ignore",
                "clientConfig": { "url": "https://other.example.com/" } }]
        })
    };
    macro_rules! configurations {
        ($kind:ty, $name:literal) => {
            apply(&admin, &other_webhook($name)).await?;
            let api = Api::<$kind>::all(updater.clone());
            let mut own = api.get(CONFIGURATION).await?;
            for w in own.webhooks.iter_mut().flatten() {
                w.client_config.ca_bundle = Some(ByteString(b"bundle".to_vec()));
            }
            assert_allowed(
                api.replace(CONFIGURATION, &PostParams::default(), &own).await,
                concat!("updater updates the caBundle of ", $name, " tailor"),
            );
            assert_forbidden(
                api.get("someone-elses").await,
                concat!("updater reads another ", $name),
            );
            let mut theirs = Api::<$kind>::all(admin.clone()).get("someone-elses").await?;
            theirs.metadata.managed_fields = None;
            assert_forbidden(
                api.replace("someone-elses", &PostParams::default(), &theirs).await,
                concat!("updater updates another ", $name),
            );
            assert_forbidden(
                api.patch(
                    CONFIGURATION,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "metadata": { "labels": { "x": "y" } } })),
                )
                .await,
                concat!("updater patches ", $name, " tailor"),
            );
            assert_forbidden(
                api.delete(CONFIGURATION, &DeleteParams::default()).await,
                concat!("updater deletes ", $name, " tailor"),
            );
            assert_forbidden(
                api.list(&ListParams::default()).await,
                concat!("updater lists ", $name, "s"),
            );
            let mut copy = own.clone();
            copy.metadata = kube::api::ObjectMeta {
                name: Some("tailor-copy".into()),
                ..Default::default()
            };
            assert_forbidden(
                api.create(&PostParams::default(), &copy).await,
                concat!("updater creates a ", $name),
            );
            assert_forbidden(
                Api::<$kind>::all(recommender.clone())
                    .replace(CONFIGURATION, &PostParams::default(), &own)
                    .await,
                concat!("recommender updates ", $name, " tailor"),
            );
        };
    }
    configurations!(MutatingWebhookConfiguration, "MutatingWebhookConfiguration");
    configurations!(
        ValidatingWebhookConfiguration,
        "ValidatingWebhookConfiguration"
    );
    Ok(())
}

/// The updater, run with the base's flags and its token, made its certificates: the Secret
/// holds them, both configurations carry its CA, and the webhook it serves on `port` presents
/// a certificate for the Service's name that this CA verifies, and answers a review.
pub async fn certificates_made_and_served(
    cp: &ControlPlane,
    port: u16,
    log: impl Fn() -> String,
) -> anyhow::Result<()> {
    let secrets = Api::<Secret>::namespaced(cp.client(), NAMESPACE);
    let mutating = Api::<MutatingWebhookConfiguration>::all(cp.client());
    let validating = Api::<ValidatingWebhookConfiguration>::all(cp.client());
    let deadline = Instant::now() + TIMEOUT;
    let ca = loop {
        let ca = secrets
            .get_opt(SECRET)
            .await?
            .and_then(|s| s.data)
            .and_then(|d| d.get("ca.crt").cloned());
        let bundles: Vec<Option<ByteString>> = mutating
            .get(CONFIGURATION)
            .await?
            .webhooks
            .into_iter()
            .flatten()
            .map(|w| w.client_config.ca_bundle)
            .chain(
                validating
                    .get(CONFIGURATION)
                    .await?
                    .webhooks
                    .into_iter()
                    .flatten()
                    .map(|w| w.client_config.ca_bundle),
            )
            .collect();
        if let Some(ca) = ca
            && bundles.len() == 2
            && bundles.iter().all(|b| b.as_ref() == Some(&ca))
        {
            break ca;
        }
        assert!(
            Instant::now() < deadline,
            "no Secret {SECRET} with ca.crt in both caBundles after {TIMEOUT:?} \
             (bundles set: {bundles:?}):\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca.0)?)
        .resolve(
            SERVICE_NAMES[0],
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .timeout(Duration::from_secs(5))
        .build()?;
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0e4a7c1d", "operation": "CREATE", "name": "web", "namespace": "default",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "userInfo": { "username": "alice" },
            "object": { "apiVersion": "v1", "kind": "Pod",
                "metadata": { "name": "web", "namespace": "default" },
                "spec": { "containers": [{ "name": "app", "image": "registry.example/app:1" }] } }
        }
    });
    let url = format!("https://{}:{port}/size", SERVICE_NAMES[0]);
    let answer: Value = https.post(&url).json(&review).send().await?.json().await?;
    assert_eq!(
        answer["response"]["uid"], "0e4a7c1d",
        "the webhook's answer: {answer}"
    );
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    Ok(())
}
