//! The admission webhook on a real API server with the real Deployment and ReplicaSet
//! controllers: new pods sized at creation (`Initial` and `InPlace`, QoS classes kept, `Off`
//! never mutated), a rollout under a pending approval, the webhook down, certificate rotation,
//! and the memory gate's approval check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::time::Duration;

use common::admission::{qos, sized};
use common::{Env, restart_count, spec_value};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn burstable(cpu: &str, memory: &str, limit: &str) -> serde_json::Value {
    json!([{"name": "app", "image": "busybox",
            "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": limit}}}])
}

fn target(cpu: &str, memory: &str, floor: &str) -> serde_json::Value {
    json!([{"containerName": "app", "target": {"cpu": cpu, "memory": memory},
            "memoryFloor": {"value": floor, "reason": "Peak"}}])
}

/// An `Initial` VerticalAutoscaler recommending 250m/200Mi for a Deployment `web` of one pod at
/// 100m/128Mi (limit 256Mi); waits until that pod is created sized.
async fn sized_web(env: &Env) {
    env.deployment_va(
        "web",
        "web",
        json!({"updatePolicy": {"updateMode": "Initial"}}),
    )
    .await;
    env.recommend("web", target("250m", "200Mi", "150Mi")).await;
    env.deployment("web", 1, burstable("100m", "128Mi", "256Mi"))
        .await;
    env.wait_deployment("web", 1, "sized", sized).await;
}

fn request(p: &Pod, resource: &str) -> Option<String> {
    spec_value(p, "app", "requests", resource)
}

fn limit(p: &Pod, resource: &str) -> Option<String> {
    spec_value(p, "app", "limits", resource)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_out_sizes_the_new_pods_at_creation_and_initial_never_resizes_a_running_one() {
    let env = Env::with_controllers(1, "8", "16Gi").await;
    let (updater, _) = env.webhook_updater("a", &[]).await;
    env.deployment("web", 1, burstable("100m", "128Mi", "256Mi"))
        .await;
    let first = env
        .wait_deployment("web", 1, "at the template", |_| true)
        .await;
    let first = first[0].metadata.name.clone().unwrap();

    env.deployment_va(
        "web",
        "web",
        json!({"updatePolicy": {"updateMode": "Initial"}}),
    )
    .await;
    env.recommend("web", target("250m", "200Mi", "150Mi")).await;
    env.patch_deployment("web", json!({"spec": {"replicas": 3}}))
        .await;
    let pods = env.wait_deployment("web", 3, "", |_| true).await;
    let new: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.name.as_deref() != Some(first.as_str()))
        .collect();
    assert_eq!(new.len(), 2);
    for p in &new {
        assert!(sized(p), "{:?} not sized", p.metadata.name);
        assert_eq!(request(p, "cpu").as_deref(), Some("250m"));
        assert_eq!(request(p, "memory").as_deref(), Some("200Mi"));
        // The limit keeps its ratio to the request (x2).
        assert_eq!(limit(p, "memory").as_deref(), Some("400Mi"));
        assert_eq!(qos(p), "Burstable");
        assert_eq!(restart_count(p, "app"), 0);
        let record: serde_json::Value = serde_json::from_str(
            &p.metadata.annotations.as_ref().unwrap()[common::admission::SIZED],
        )
        .unwrap();
        assert_eq!(record["verticalAutoscaler"], "web");
        assert_eq!(record["original"]["app"]["requests"]["memory"], "128Mi");
    }
    // Initial: the pod that was running keeps the template's values, and nothing is resized.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let running = env.pods().get(&first).await.unwrap();
    assert!(!sized(&running));
    assert_eq!(request(&running, "cpu").as_deref(), Some("100m"));
    assert_eq!(request(&running, "memory").as_deref(), Some("128Mi"));
    assert_eq!(
        updater
            .metric("tailor_updater_resizes_total{outcome=\"issued\"")
            .await,
        0.0
    );
    assert!(
        updater
            .metric("tailor_admission_requests_total{webhook=\"size\",outcome=\"sized\"}")
            .await
            >= 2.0
    );
    assert!(
        updater
            .metric("tailor_admission_duration_seconds_count{webhook=\"size\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guaranteed_stays_guaranteed_off_is_never_mutated_and_stale_is_not_sized_and_said() {
    let env = Env::with_controllers(1, "8", "16Gi").await;
    let (_updater, _) = env.webhook_updater("a", &[]).await;
    let guaranteed = json!([{"name": "app", "image": "busybox",
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                      "limits": {"cpu": "500m", "memory": "512Mi"}}}]);
    for (name, mode) in [("db", "InPlace"), ("batch", "Off"), ("stale", "Initial")] {
        env.deployment_va(name, name, json!({"updatePolicy": {"updateMode": mode}}))
            .await;
        env.recommend(name, target("300m", "384Mi", "300Mi")).await;
    }
    // A spec change after the recommendation: it is no longer current.
    env.vas()
        .patch(
            "stale",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"updatePolicy": {"minChange": {"cpu": 0.2}}}})),
        )
        .await
        .unwrap();
    for name in ["db", "batch", "stale"] {
        env.deployment(name, 2, guaranteed.clone()).await;
    }
    let db = env.wait_deployment("db", 2, "sized", sized).await;
    for p in &db {
        assert_eq!(request(p, "cpu").as_deref(), Some("300m"));
        assert_eq!(limit(p, "cpu").as_deref(), Some("300m"));
        assert_eq!(request(p, "memory").as_deref(), Some("384Mi"));
        assert_eq!(limit(p, "memory").as_deref(), Some("384Mi"));
        assert_eq!(qos(p), "Guaranteed");
    }
    for p in env.wait_deployment("batch", 2, "", |_| true).await {
        assert_eq!(p.metadata.annotations, None, "Off: not touched at all");
        assert_eq!(request(&p, "memory").as_deref(), Some("512Mi"));
    }
    for p in env.wait_deployment("stale", 2, "", |_| true).await {
        assert!(!sized(&p), "{:?} was sized", p.metadata.name);
        assert_eq!(request(&p, "memory").as_deref(), Some("512Mi"));
        // Why, on the pod: its annotation, then an Event once the pod exists.
        let note = &p.metadata.annotations.as_ref().unwrap()["tailor.dev/sizing-note"];
        assert!(note.contains("generation"), "{note}");
        let name = p.metadata.name.clone().unwrap();
        env.wait_event("Pod", &name, "NotSizedAtCreation").await;
    }
    env.wait_event("VerticalAutoscaler", "stale", "AdmissionSkipped")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_under_a_pending_approval_leaves_nothing_to_approve() {
    let env = Env::with_controllers(1, "8", "16Gi").await;
    env.deployment("api", 2, burstable("200m", "256Mi", "512Mi"))
        .await;
    env.wait_deployment("api", 2, "", |_| true).await;
    env.deployment_va("api", "api", json!({})).await;
    env.recommend("api", target("200m", "192Mi", "150Mi")).await;
    let (updater, _) = env.webhook_updater("a", &[]).await;
    updater.wait_ready().await;
    // The cut waits for a person.
    env.wait_state("api", "holding the cut for approval", |s| {
        !s.pending_approvals.is_empty()
    })
    .await;
    // A rollout: the new pods are created at the recommended memory.
    env.patch_deployment(
        "api",
        json!({"spec": {"template": {"metadata": {"annotations": {"rollout": "2"}}}}}),
    )
    .await;
    let pods = env.wait_deployment("api", 2, "sized", sized).await;
    for p in &pods {
        assert_eq!(request(p, "memory").as_deref(), Some("192Mi"));
        assert_eq!(limit(p, "memory").as_deref(), Some("384Mi"));
        assert_eq!(restart_count(p, "app"), 0);
    }
    env.wait_state("api", "with nothing left to approve", |s| {
        s.pending_approvals.is_empty()
    })
    .await;
    assert_eq!(
        updater
            .metric("tailor_updater_resizes_total{outcome=\"issued\"")
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_webhook_down_pods_start_at_the_template_and_are_resized_live() {
    let env = Env::with_controllers(1, "8", "16Gi").await;
    env.deployment_va("web", "web", json!({})).await;
    env.recommend("web", target("300m", "256Mi", "200Mi")).await;
    let (mut updater, _) = env.webhook_updater("a", &[]).await;
    updater.kill();
    // The configurations stay registered; the webhook does not answer.
    env.deployment("web", 1, burstable("100m", "128Mi", "256Mi"))
        .await;
    let pods = env.wait_deployment("web", 1, "", |_| true).await;
    assert!(!sized(&pods[0]));
    assert_eq!(request(&pods[0], "memory").as_deref(), Some("128Mi"));
    // An updater without the webhook resizes it live: CPU and memory up.
    let updater = env.updater("b", &[]);
    updater.wait_ready().await;
    let name = pods[0].metadata.name.clone().unwrap();
    let p = env
        .wait_pod(&name, "resized live", |p| {
            common::applied(p, "app", "requests", "memory", "256Mi")
                && common::applied(p, "app", "requests", "cpu", "300m")
        })
        .await;
    assert_eq!(restart_count(&p, "app"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_keeps_the_webhook_serving() {
    let env = Env::with_controllers(1, "8", "16Gi").await;
    let (updater, port) = env
        .webhook_updater("a", &["--webhook-cert-validity-seconds=60"])
        .await;
    let first = env.webhook_secret().await;
    let first_cert = first.data.as_ref().unwrap()["tls.crt"].clone();
    sized_web(&env).await;
    assert_eq!(served_certificate(port).await, pem_der(&first_cert.0));
    // Renewed once a third of its 60 s is left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let renewed = loop {
        let now = env.webhook_secret().await;
        let cert = now.data.as_ref().unwrap()["tls.crt"].clone();
        if cert != first_cert {
            break cert;
        }
        assert!(tokio::time::Instant::now() < deadline, "never renewed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // New connections get the renewed certificate (within a check interval), and new pods are
    // still sized.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while served_certificate(port).await != pem_der(&renewed.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    env.patch_deployment("web", json!({"spec": {"replicas": 3}}))
        .await;
    env.wait_deployment("web", 3, "sized", sized).await;
    assert!(
        updater
            .metric("tailor_admission_requests_total{webhook=\"size\",outcome=\"sized\"}")
            .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_takes_only_a_pending_approval_id_for_that_pod() {
    let env = Env::start(1, "8", "16Gi", 0.2).await;
    let names = env
        .workload_annotated(
            "db",
            1,
            burstable("200m", "256Mi", "512Mi"),
            json!({"tailor.dev/approve-memory-decrease": "not-an-id"}),
        )
        .await;
    env.va("db", "db", json!({})).await;
    env.recommend("db", target("200m", "192Mi", "150Mi")).await;
    let (_updater, _) = env.webhook_updater("a", &[]).await;
    let state = env
        .wait_state("db", "holding the cut", |s| !s.pending_approvals.is_empty())
        .await;
    let id = state.pending_approvals[0].id.clone();
    let pod = &names[0];
    let resize = |limit: &str| {
        json!({"spec": {"containers": [{"name": "app",
            "resources": {"requests": {"memory": "192Mi"}, "limits": {"memory": limit}}}]}})
    };
    let lower = |limit: &'static str| {
        let pods = env.pods();
        let body = resize(limit);
        let pod = pod.clone();
        async move {
            pods.patch_subresource(
                "resize",
                &pod,
                &PatchParams::default(),
                &Patch::Strategic(body),
            )
            .await
        }
    };
    // Any value but a pending id is refused.
    let e = lower("384Mi").await.unwrap_err().to_string();
    assert!(e.contains("no pending approval with id not-an-id"), "{e}");
    // The pending id, for this pod: allowed down to its value, not below.
    env.pods()
        .patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"tailor.dev/approve-memory-decrease": id}}}),
            ),
        )
        .await
        .unwrap();
    let e = lower("300Mi").await.unwrap_err().to_string();
    assert!(e.contains("no pending approval"), "{e}");
    // At once: where the webhook's cache trails the ResizeState read above, it reads the
    // namespace's pending approvals from the API server before it denies.
    lower("384Mi")
        .await
        .expect("the approved cut passes the gate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_boosted_pod_keeps_its_boost_until_ready_plus_duration_then_one_live_resize() {
    let env = Env::with_controllers(1, "8", "16Gi").await;
    let (updater, _) = env.webhook_updater("a", &[]).await;
    env.deployment_va(
        "web",
        "web",
        json!({"updatePolicy": {"updateMode": "Initial"},
               "resourcePolicy": {"containerPolicies": [{"containerName": "app",
                   "startupBoost": {"cpu": {"factor": 2.0, "duration": "8s"}}}]}}),
    )
    .await;
    env.recommend("web", target("250m", "200Mi", "150Mi")).await;
    env.deployment("web", 1, burstable("100m", "128Mi", "256Mi"))
        .await;
    let pods = env.wait_deployment("web", 1, "sized", sized).await;
    let p = &pods[0];
    let name = p.metadata.name.clone().unwrap();
    assert_eq!(request(p, "cpu").as_deref(), Some("500m"), "boosted x2");
    assert_eq!(request(p, "memory").as_deref(), Some("200Mi"));
    let ready_at = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.clone())
        .expect("Ready since")
        .0
        .as_second();
    // Still boosted a few seconds into its duration.
    let wait = (ready_at + 4) as f64 - common::unix_now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let p = env.pods().get(&name).await.unwrap();
    assert_eq!(
        request(&p, "cpu").as_deref(),
        Some("500m"),
        "boost taken back early"
    );
    // Then one live resize to the target, even under Initial.
    let p = env
        .wait_pod(&name, "back at the target", |p| {
            common::applied(p, "app", "requests", "cpu", "250m")
        })
        .await;
    assert!(
        common::unix_now() >= (ready_at + 8) as f64,
        "taken back before Ready + 8 s"
    );
    assert_eq!(restart_count(&p, "app"), 0);
    assert_eq!(request(&p, "memory").as_deref(), Some("200Mi"));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        updater
            .metric("tailor_updater_resizes_total{outcome=\"issued\"")
            .await,
        1.0,
        "exactly one resize: the boost taken back"
    );
}

/// A CA, and serving certificates for 127.0.0.1 signed by it (PEM).
struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes a new serving certificate and key into `dir` (tls.crt, tls.key).
    fn serve_into(&self, dir: &std::path::Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // The kubelet updates a mounted Secret by swapping a directory link; a rename is as
        // atomic.
        for (name, pem) in [("tls.key", key.serialize_pem()), ("tls.crt", cert.pem())] {
            let tmp = dir.join(format!(".{name}"));
            std::fs::write(&tmp, pem).unwrap();
            std::fs::rename(&tmp, dir.join(name)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_files_are_served_as_they_are_renewed() {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use kube::api::{Api, PostParams};

    let env = Env::with_controllers(1, "8", "16Gi").await;
    let trusted = TestCa::new("trusted");
    let dir = tempfile::tempdir().unwrap();
    trusted.serve_into(dir.path());
    let port = tailor_e2e::free_port().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let cert_dir = dir.path().display().to_string();
    let updater = env.updater(
        "a",
        &[
            "--webhook-certs=files",
            "--webhook-addr",
            &addr,
            "--webhook-cert-dir",
            &cert_dir,
        ],
    );
    // As cert-manager's CA injector would: the CA in the caBundle.
    let mut config = tailor_e2e::webhooks::size(&env.webhook_name(), port, &[&env.ns]);
    for w in config.webhooks.iter_mut().flatten() {
        w.client_config.ca_bundle = Some(ByteString(trusted.pem().into_bytes()));
    }
    Api::<MutatingWebhookConfiguration>::all(env.cp.client())
        .create(&PostParams::default(), &config)
        .await
        .unwrap();
    env.wait_webhook_called(&updater).await;
    sized_web(&env).await;

    // Renewed (here by another CA, to tell the two apart): new connections get the new
    // certificate within the 10 s the files are re-read in. The API server's open connections
    // keep the one they were made with, as TLS does.
    let other = TestCa::new("other");
    other.serve_into(dir.path());
    wait_served(port, &other, "the renewed certificate").await;
    assert!(
        !served_by(port, &trusted).await,
        "the old one is no longer served"
    );
    // And back: new pods are sized through new connections too.
    trusted.serve_into(dir.path());
    wait_served(port, &trusted, "the certificate of the trusted CA again").await;
    env.patch_deployment("web", json!({"spec": {"replicas": 3}}))
        .await;
    env.wait_deployment("web", 3, "sized", sized).await;
}

/// Whether a new TLS connection to the webhook at `port` verifies against `ca` alone.
async fn served_by(port: u16, ca: &TestCa) -> bool {
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    // Any HTTP answer (a GET is not allowed) means the handshake verified.
    client
        .get(format!("https://127.0.0.1:{port}/size"))
        .send()
        .await
        .is_ok()
}

async fn wait_served(port: u16, ca: &TestCa, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !served_by(port, ca).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} is not served"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The certificate a new TLS connection to the webhook at `port` is served (DER).
async fn served_certificate(port: u16) -> Vec<u8> {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let response = client
        .get(format!("https://127.0.0.1:{port}/size"))
        .send()
        .await
        .unwrap();
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .unwrap();
    info.peer_certificate().unwrap().to_vec()
}

/// The first certificate of a PEM text, as DER.
fn pem_der(pem: &[u8]) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}
