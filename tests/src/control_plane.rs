//! A real `etcd` + `kube-apiserver` per test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tempfile::TempDir;

use crate::assets::{KUBE_MINOR, kube_assets};
use crate::process::ServerProcess;
use crate::{HarnessError, Result, free_port};

const START_ATTEMPTS: usize = 3;
const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(90);
const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);
/// The field manager the harness applies objects with.
pub const FIELD_MANAGER: &str = "tailor-e2e";

/// How a control plane is started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Write an audit log of every write request (Metadata level: who, what, when, the
    /// response code) to [`ControlPlane::audit_log`].
    pub audit: bool,
}

/// The audit policy of [`Options::audit`]: every write, no reads.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    verbs: [create, update, patch, delete, deletecollection]
";

/// A running control plane: etcd, kube-apiserver, an admin client, and the tailor CRDs.
///
/// Dropping it stops both processes and deletes the data directory (fields drop in order).
pub struct ControlPlane {
    controllers: Option<ServerProcess>,
    apiserver: ServerProcess,
    /// The binary and flags kube-apiserver runs with, to start it again.
    apiserver_command: (PathBuf, Vec<String>),
    etcd: ServerProcess,
    client: kube::Client,
    url: String,
    version: String,
    kubeconfig: PathBuf,
    dir: TempDir,
}

struct Credentials {
    ca_pem: String,
    token: String,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver on free ports, waits for readiness, installs the CRDs
    /// and waits until they are Established.
    pub async fn start() -> Result<Self> {
        Self::start_with(Options::default()).await
    }

    /// [`ControlPlane::start`] with `options`.
    pub async fn start_with(options: Options) -> Result<Self> {
        let assets = kube_assets()?;
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(&assets, &options).await {
                Ok(cp) => {
                    install_crds(&cp.client).await?;
                    return Ok(cp);
                }
                // A port taken between choosing and binding it: try again with new ones.
                Err(e @ HarnessError::Startup { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::Other("control plane did not start".into())))
    }

    async fn try_start(assets: &Path, options: &Options) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tailor-cp-")
            .tempdir()
            .map_err(HarnessError::io("create control plane dir"))?;
        let creds = write_credentials(dir.path())?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            "--name=default".into(),
            format!("--data-dir={}", dir.path().join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        let mut etcd = ServerProcess::spawn(
            "etcd",
            &assets.join("etcd"),
            &etcd_args,
            &dir.path().join("etcd.log"),
        )?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| HarnessError::Other(format!("http client: {e}")))?;
        wait_ready(&mut etcd, ETCD_READY_TIMEOUT, || {
            let http = http.clone();
            let url = format!("{etcd_url}/health");
            async move {
                let body = http.get(url).send().await.ok()?.text().await.ok()?;
                body.contains("\"health\":\"true\"").then_some(())
            }
        })
        .await?;

        let port = free_port()?;
        let d = |name: &str| dir.path().join(name).display().to_string();
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--etcd-prefix=/tailor-{port}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", d("certs")),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            // No controller-manager creates the `default` ServiceAccount in test namespaces.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
            "--v=0".into(),
        ];
        if options.audit {
            let policy = dir.path().join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY)
                .map_err(HarnessError::io(format!("write {}", policy.display())))?;
            args.push(format!("--audit-policy-file={}", policy.display()));
            args.push(format!("--audit-log-path={}", d("audit.log")));
        }
        let mut apiserver = ServerProcess::spawn(
            "kube-apiserver",
            &assets.join("kube-apiserver"),
            &args,
            &dir.path().join("kube-apiserver.log"),
        )?;
        let apiserver_command = (assets.join("kube-apiserver"), args);
        let url = format!("https://127.0.0.1:{port}");
        apiserver_ready(&mut apiserver, &url, creds.ca_pem.as_bytes(), &creds.token).await?;

        let kubeconfig = dir.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, &url, &dir.path().join("ca.crt"), &creds.token)?;
        let client = client_from_kubeconfig(&kubeconfig).await?;
        let version = client
            .apiserver_version()
            .await
            .map_err(|e| apiserver.startup_error(format!("version: {e}")))?
            .git_version;
        if !version.starts_with(&format!("{KUBE_MINOR}.")) {
            return Err(HarnessError::Other(format!(
                "kube-apiserver reports {version}; the tests need {KUBE_MINOR}.x (see hack/test-binaries.sh)"
            )));
        }
        eprintln!(
            "tailor-e2e: kube-apiserver {version} ready at {url} (etcd {etcd_url}), kubeconfig {}",
            kubeconfig.display()
        );
        Ok(Self {
            controllers: None,
            apiserver,
            apiserver_command,
            etcd,
            client,
            url,
            version,
            kubeconfig,
            dir,
        })
    }

    /// Stops kube-apiserver (SIGTERM), leaves it down for `down`, and starts it again on the
    /// same port with the same flags and etcd: what clients see of an API server restart
    /// (connections cut, watches ended, requests refused, then a fresh server).
    pub async fn restart_apiserver(&mut self, down: Duration) -> Result<()> {
        self.apiserver.stop(Duration::from_secs(10));
        tokio::time::sleep(down).await;
        let (binary, args) = &self.apiserver_command;
        let log = self.dir.path().join("kube-apiserver-restarted.log");
        self.apiserver = ServerProcess::spawn("kube-apiserver", binary, args, &log)?;
        let ca = std::fs::read(self.dir.path().join("ca.crt"))
            .map_err(HarnessError::io("read the test CA"))?;
        let tokens = std::fs::read_to_string(self.dir.path().join("tokens.csv"))
            .map_err(HarnessError::io("read the token file"))?;
        let token = tokens.split(',').next().unwrap_or_default();
        apiserver_ready(&mut self.apiserver, &self.url, &ca, token).await?;
        self.client
            .apiserver_version()
            .await
            .map_err(|e| HarnessError::Other(format!("after the restart: {e}")))?;
        Ok(())
    }

    /// Starts kube-controller-manager with the Deployment and ReplicaSet controllers only, so
    /// that Deployments create, scale and roll out their pods as on a cluster. (The tests that
    /// create pods themselves, for StatefulSets, run without it.)
    pub async fn start_workload_controllers(&mut self) -> Result<()> {
        let binary = crate::assets::controller_manager()?;
        let args = vec![
            format!("--kubeconfig={}", self.kubeconfig.display()),
            "--controllers=deployment-controller,replicaset-controller".into(),
            "--leader-elect=false".into(),
            "--secure-port=0".into(),
            "--concurrent-deployment-syncs=10".into(),
            "--concurrent-replicaset-syncs=10".into(),
            "--kube-api-qps=500".into(),
            "--kube-api-burst=1000".into(),
            "--v=0".into(),
        ];
        let log = self.dir.path().join("kube-controller-manager.log");
        let process = ServerProcess::spawn("kube-controller-manager", &binary, &args, &log)?;
        self.controllers = Some(process);
        Ok(())
    }

    /// An admin (`system:masters`) client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// The API server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The API server's `gitVersion`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// A kubeconfig for the admin user (for `kubectl` or the binaries under test).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The data directory (logs, certificates, etcd data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The audit log (JSON lines) of a control plane started with [`Options::audit`].
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// The process ids of etcd and kube-apiserver.
    pub fn pids(&self) -> [u32; 2] {
        [self.etcd.pid(), self.apiserver.pid()]
    }

    /// Creates a namespace with a unique name starting with `prefix`, and waits until it is
    /// usable.
    pub async fn namespace(&self, prefix: &str) -> Result<String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| HarnessError::Other(format!("create namespace {name}: {e}")))?;
        Ok(name)
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.url)
            .field("version", &self.version)
            .field("dir", &self.dir.path())
            .field("apiserver", &self.apiserver)
            .field("etcd", &self.etcd)
            .finish_non_exhaustive()
    }
}

/// Applies every tailor CRD (server-side apply) and waits until each is Established.
pub async fn install_crds(client: &kube::Client) -> Result<()> {
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    for crd in tailor_crds::crd::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| HarnessError::Other(format!("apply CRD {name}: {e}")))?;
        tokio::time::timeout(
            CRD_ESTABLISHED_TIMEOUT,
            await_condition(api.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .map_err(|_| {
            HarnessError::Other(format!(
                "CRD {name} not Established after {CRD_ESTABLISHED_TIMEOUT:?}"
            ))
        })?
        .map_err(|e| HarnessError::Other(format!("watch CRD {name}: {e}")))?;
    }
    Ok(())
}

/// Registers a Node `name` (4 cores, 8 GiB, 110 pods) that no kubelet runs: pods bound to it
/// can be created and resized through the API.
pub async fn create_node(client: &kube::Client, name: &str) -> Result<()> {
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name } },
        "status": { "capacity": { "cpu": "4", "memory": "8Gi", "pods": "110" },
                    "allocatable": { "cpu": "4", "memory": "8Gi", "pods": "110" } }
    }))
    .map_err(|e| HarnessError::Other(format!("node {name}: {e}")))?;
    Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
        .create(&kube::api::PostParams::default(), &node)
        .await
        .map_err(|e| HarnessError::Other(format!("create node {name}: {e}")))?;
    Ok(())
}

/// A client from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client> {
    let kubeconfig = Kubeconfig::read_from(path)
        .map_err(|e| HarnessError::Other(format!("read {}: {e}", path.display())))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| HarnessError::Other(format!("kubeconfig {}: {e}", path.display())))?;
    kube::Client::try_from(config).map_err(|e| HarnessError::Other(format!("client: {e}")))
}

/// Waits until kube-apiserver at `url` answers `/readyz` with 200 for the admin `token`.
async fn apiserver_ready(
    apiserver: &mut ServerProcess,
    url: &str,
    ca_pem: &[u8],
    token: &str,
) -> Result<()> {
    let ca = reqwest::Certificate::from_pem(ca_pem)
        .map_err(|e| HarnessError::Other(format!("test CA: {e}")))?;
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| HarnessError::Other(format!("https client: {e}")))?;
    wait_ready(apiserver, APISERVER_READY_TIMEOUT, || {
        let req = https.get(format!("{url}/readyz")).bearer_auth(token);
        async move {
            let resp = req.send().await.ok()?;
            resp.status().is_success().then_some(())
        }
    })
    .await
}

async fn wait_ready<F, Fut>(
    process: &mut ServerProcess,
    timeout: Duration,
    mut probe: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.exited() {
            return Err(process.startup_error(format!("exited with {status}")));
        }
        if probe().await.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(process.startup_error(format!("not ready after {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_credentials(dir: &Path) -> Result<Credentials> {
    let tls = |e: rcgen::Error| HarnessError::Other(format!("generate test certificates: {e}"));
    let ca_key = KeyPair::generate().map_err(tls)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tailor-test-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls)?;

    let serving_key = KeyPair::generate().map_err(tls)?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])
    .map_err(tls)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let serving_cert = serving.signed_by(&serving_key, &ca).map_err(tls)?;
    let sa_key = KeyPair::generate().map_err(tls)?;

    let token = random_token();
    let ca_pem = ca.pem();
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents)
            .map_err(HarnessError::io(format!("write {}", path.display())))
    };
    write("ca.crt", &ca_pem)?;
    write("apiserver.crt", &serving_cert.pem())?;
    write("apiserver.key", &serving_key.serialize_pem())?;
    write("sa.key", &sa_key.serialize_pem())?;
    write("sa.pub", &sa_key.public_key_pem())?;
    write(
        "tokens.csv",
        &format!("{token},tailor-admin,tailor-admin,\"system:masters\"\n"),
    )?;
    Ok(Credentials { ca_pem, token })
}

fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

fn write_kubeconfig(path: &Path, url: &str, ca: &Path, token: &str) -> Result<()> {
    let yaml = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: tailor-test
  cluster:
    server: {url}
    certificate-authority: {ca}
users:
- name: tailor-admin
  user:
    token: {token}
contexts:
- name: tailor-test
  context:
    cluster: tailor-test
    user: tailor-admin
    namespace: default
current-context: tailor-test
",
        ca = ca.display()
    );
    std::fs::write(path, yaml).map_err(HarnessError::io(format!("write {}", path.display())))
}
