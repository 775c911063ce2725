//! How a kube-prometheus stack scrapes the simulator, in one place: the live scrape targets
//! ([`super::runtime::SimHandle::scrape_targets`]) and the backfilled history
//! ([`super::history`]) put the same labels on the same series, so history and live data are
//! one series per container.
//!
//! - cAdvisor: one target per node, as the kubelet ServiceMonitor of kube-prometheus
//!   (`job="kubelet"`, `instance="<node IP>:10250"`, `node`, `metrics_path="/metrics/cadvisor"`,
//!   `endpoint="https-metrics"`, `service="kubelet"`); the simulator serves one node's
//!   containers at `/metrics/cadvisor?node=<name>`.
//! - kube-state-metrics: one target (`job="kube-state-metrics"`, `instance="<its pod IP>:8443"`;
//!   kube-prometheus drops the target's `pod`, `service`, `endpoint` and `namespace` labels).

/// The `job` of the cAdvisor series.
pub const KUBELET_JOB: &str = "kubelet";
/// The kubelet's cAdvisor endpoint.
pub const CADVISOR_PATH: &str = "/metrics/cadvisor";
/// The kubelet's port, in the cAdvisor series' `instance`.
pub const KUBELET_PORT: u16 = 10250;
/// The `job` of the kube-state-metrics series.
pub const KSM_JOB: &str = "kube-state-metrics";
/// The simulator's kube-state-metrics endpoint.
pub const KSM_PATH: &str = "/metrics/kube-state";
/// The `instance` of the kube-state-metrics series: the address of a kube-state-metrics pod
/// behind kube-rbac-proxy.
pub const KSM_INSTANCE: &str = "10.244.255.2:8443";

/// The address of the `index`-th simulated node (its pods' `hostIP`).
pub fn node_ip(index: usize) -> String {
    format!("10.0.{}.{}", index / 250, index % 250 + 2)
}

/// The labels the scrape puts on every cAdvisor series of `node` (address `node_ip`),
/// `job` included.
pub fn kubelet_labels(node: &str, node_ip: &str) -> Vec<(&'static str, String)> {
    vec![
        ("job", KUBELET_JOB.to_owned()),
        ("instance", format!("{node_ip}:{KUBELET_PORT}")),
        ("node", node.to_owned()),
        ("metrics_path", CADVISOR_PATH.to_owned()),
        ("endpoint", "https-metrics".to_owned()),
        ("service", "kubelet".to_owned()),
    ]
}

/// The labels the scrape puts on every kube-state-metrics series, `job` included.
pub fn ksm_labels() -> Vec<(&'static str, String)> {
    vec![
        ("job", KSM_JOB.to_owned()),
        ("instance", KSM_INSTANCE.to_owned()),
    ]
}
