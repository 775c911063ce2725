//! The configuration files of the real node: containerd's, the kubelet's, the CNI network.
//!
//! What this machine needs (each found by a failure; see `docs/simulator.md`):
//! - containerd `restrict_oom_score_adj`: without `CAP_SYS_RESOURCE`, runc cannot give a sandbox
//!   or a Guaranteed container a negative `oom_score_adj`; containerd clamps it to its own;
//! - a loopback-only CNI network: containerd reports `NetworkReady` (the Node goes Ready)
//!   without a pod network, so pods use `hostNetwork: true`;
//! - kubelet `failCgroupV1: false` on a cgroup v1 host, the cgroupfs driver, `--containerd` for
//!   cAdvisor.

use std::path::Path;

/// The image every real-node pod runs (and the pod sandbox): `hack/real-node.sh image`.
pub const IMAGE: &str = "localhost/tailor-workload:1";

/// containerd's `config.toml` (schema version 2: Debian's containerd 1.6).
pub fn containerd_toml(dir: &Path, runc: &Path, cni_bin: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "{runc}"
        Root = "{d}/runc-root"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni}"
    conf_dir = "{d}/cni"
"#,
        runc = runc.display(),
        cni = cni_bin.display(),
    )
}

/// The CNI network: loopback only.
pub const CNI_CONFLIST: &str =
    r#"{"cniVersion":"0.4.0","name":"tailor-lo","plugins":[{"type":"loopback"}]}"#;

/// The `KubeletConfiguration`.
pub fn kubelet_yaml(dir: &Path, port: u16, healthz_port: u16) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://{d}/containerd/containerd.sock
address: 127.0.0.1
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {healthz_port}
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
failSwapOn: false
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
podLogsDir: {d}/pod-logs
"#
    )
}
