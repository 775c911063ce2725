//! What the admission tests share: a control plane with the real Deployment and ReplicaSet
//! controllers, the updater serving its webhook on loopback with self-managed certificates,
//! and the webhook configurations registered by URL (as a cluster registers them by Service).

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tailor_crds::v1alpha1::VerticalAutoscaler;
use tailor_e2e::ControlPlane;

use super::{Env, Updater, WAIT, ready};

/// The annotation a sizing at creation leaves on the pod.
pub const SIZED: &str = "tailor.dev/sized-at-admission";

impl Env {
    /// [`Env::start`] with kube-controller-manager's Deployment and ReplicaSet controllers.
    pub async fn with_controllers(nodes: usize, cpu: &str, memory: &str) -> Self {
        let mut cp = ControlPlane::start().await.expect("control plane starts");
        cp.start_workload_controllers()
            .await
            .expect("kube-controller-manager starts");
        Self::on(cp, nodes, cpu, memory, 0.2).await
    }

    /// The webhook configurations' name for this test.
    pub fn webhook_name(&self) -> String {
        format!("tailor-{}", self.ns)
    }

    /// Starts the updater with its webhook on a loopback port (self-managed certificates for
    /// 127.0.0.1, kept in a Secret of the updater's namespace), registers both webhooks by URL
    /// for this namespace, and waits until the API server calls the size webhook.
    pub async fn webhook_updater(&self, identity: &str, extra: &[&str]) -> (Updater, u16) {
        let port = tailor_e2e::free_port().unwrap();
        let name = self.webhook_name();
        let addr = format!("127.0.0.1:{port}");
        let secret = format!("webhook-{}", self.ns);
        let mut args = vec![
            "--webhook-certs=self-managed",
            "--webhook-addr",
            &addr,
            "--webhook-names=127.0.0.1,localhost",
            "--webhook-configurations",
            &name,
            "--webhook-secret",
            &secret,
            "--webhook-cert-check-seconds=2",
            "--updater-username=system:serviceaccount:tailor-system:tailor-updater",
        ];
        args.extend_from_slice(extra);
        let updater = self.updater(identity, &args);
        self.register_webhooks(port).await;
        self.wait_webhook_called(&updater).await;
        (updater, port)
    }

    /// Registers the size and gate webhooks at `https://127.0.0.1:{port}` for this namespace
    /// (no caBundle: the updater sets it), unless they exist.
    pub async fn register_webhooks(&self, port: u16) {
        let name = self.webhook_name();
        let mutating = tailor_e2e::webhooks::size(&name, port, &[&self.ns]);
        let validating = tailor_e2e::webhooks::gate(&name, port, &self.ns);
        let pp = PostParams::default();
        let client = self.cp.client();
        let m = Api::<MutatingWebhookConfiguration>::all(client.clone());
        if m.get_opt(&name).await.unwrap().is_none() {
            m.create(&pp, &mutating).await.unwrap();
        }
        let v = Api::<ValidatingWebhookConfiguration>::all(client);
        if v.get_opt(&name).await.unwrap().is_none() {
            v.create(&pp, &validating).await.unwrap();
        }
    }

    /// Waits until a dry-run pod create reaches the size webhook (its caBundle set, the API
    /// server's view of it current, the updater's caches synced).
    pub async fn wait_webhook_called(&self, updater: &Updater) {
        let probe: Pod = serde_json::from_value(json!({
            "metadata": {"generateName": "probe-"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        let dry = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let _ = self.pods().create(&dry, &probe).await;
            if updater
                .metric("tailor_admission_requests_total{webhook=\"size\",outcome=\"not_managed\"}")
                .await
                > 0.0
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the API server never called the size webhook:\n{}",
                updater.process.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The Secret holding the self-managed certificates.
    pub async fn webhook_secret(&self) -> Secret {
        Api::<Secret>::namespaced(self.cp.client(), "default")
            .get(&format!("webhook-{}", self.ns))
            .await
            .unwrap()
    }

    /// A Deployment `name` with `replicas` pods of `containers` (and pod `annotations`).
    pub async fn deployment(&self, name: &str, replicas: i32, containers: Value) {
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": containers,
                                           "terminationGracePeriodSeconds": 0}}},
        }))
        .unwrap();
        Api::<Deployment>::namespaced(self.cp.client(), &self.ns)
            .create(&PostParams::default(), &d)
            .await
            .unwrap();
    }

    /// Patches the Deployment `name` (a merge patch).
    pub async fn patch_deployment(&self, name: &str, patch: Value) {
        Api::<Deployment>::namespaced(self.cp.client(), &self.ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// The Deployment's pods that are not being deleted.
    pub async fn deployment_pods(&self, name: &str) -> Vec<Pod> {
        self.pods()
            .list(&ListParams::default().labels(&format!("app={name}")))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Waits until the Deployment has exactly `n` pods, all Ready, that satisfy `check`.
    pub async fn wait_deployment(
        &self,
        name: &str,
        n: usize,
        what: &str,
        check: impl Fn(&Pod) -> bool,
    ) -> Vec<Pod> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let pods = self.deployment_pods(name).await;
            if pods.len() == n && pods.iter().all(|p| ready(p) && check(p)) {
                return pods;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}: not {n} ready pods {what}: {:#?}",
                pods.iter()
                    .map(|p| (
                        p.metadata.name.clone(),
                        p.spec.as_ref().map(|s| s.containers[0].resources.clone())
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A VerticalAutoscaler for the Deployment `target`, with `spec` merged in.
    pub async fn deployment_va(&self, name: &str, target: &str, spec: Value) -> VerticalAutoscaler {
        self.va_for(name, ("Deployment", target), spec).await
    }
}

/// Whether the pod was sized at creation.
pub fn sized(p: &Pod) -> bool {
    p.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(SIZED))
}

/// The pod's QoS class.
pub fn qos(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.qos_class.clone())
        .unwrap_or_default()
}
