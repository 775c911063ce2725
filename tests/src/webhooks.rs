//! tailor's admission webhooks registered by URL on loopback, for one namespace (as the
//! manifests register them by Service for every namespace but the excluded ones): the size
//! webhook (pods CREATE) and the memory gate's webhook (pods/resize UPDATE).

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use serde_json::json;

fn only(namespaces: &[&str]) -> serde_json::Value {
    json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}]})
}

/// The MutatingWebhookConfiguration `name` sending pod creates in `namespaces` to
/// `https://127.0.0.1:{port}/size` (`failurePolicy: Ignore`, 2 s, no caBundle: the updater's
/// self-managed certificates set it).
pub fn size(name: &str, port: u16, namespaces: &[&str]) -> MutatingWebhookConfiguration {
    let config = json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "size.tailor.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/size")},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods"], "scope": "Namespaced"}],
            "failurePolicy": "Ignore", "timeoutSeconds": 2, "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "reinvocationPolicy": "Never",
            "namespaceSelector": only(namespaces),
        }],
    });
    serde_json::from_value(config).unwrap_or_default()
}

/// The ValidatingWebhookConfiguration `name` sending resizes of annotated pods in `namespace`
/// to `https://127.0.0.1:{port}/gate` (`failurePolicy: Fail`).
pub fn gate(name: &str, port: u16, namespace: &str) -> ValidatingWebhookConfiguration {
    let config = json!({
        "metadata": {"name": name},
        "webhooks": [{
            "name": "gate.tailor.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/gate")},
            "rules": [{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                       "resources": ["pods/resize"], "scope": "Namespaced"}],
            "failurePolicy": "Fail", "timeoutSeconds": 5, "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "namespaceSelector": only(&[namespace]),
            "matchConditions": [{"name": "approval-annotated", "expression":
                "has(oldObject.metadata.annotations) && 'tailor.dev/approve-memory-decrease' in oldObject.metadata.annotations"}],
        }],
    });
    serde_json::from_value(config).unwrap_or_default()
}
