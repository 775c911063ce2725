//! Finding the binaries the tests run.

use std::path::{Path, PathBuf};

use crate::{HarnessError, Result};

/// The Kubernetes minor version the tests require.
pub const KUBE_MINOR: &str = "v1.35";

/// The directory holding `kube-apiserver` and `etcd`: `$KUBEBUILDER_ASSETS` (the envtest
/// convention). `make test` sets it from `hack/test-binaries.sh`.
pub fn kube_assets() -> Result<PathBuf> {
    kube_assets_in(std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from))
}

fn kube_assets_in(dir: Option<PathBuf>) -> Result<PathBuf> {
    let hint = "run the tests with `make test`, or export KUBEBUILDER_ASSETS=$(hack/test-binaries.sh) \
                (it builds kube-apiserver and etcd from the Go module proxy once and caches them)";
    let dir = dir.ok_or_else(|| {
        HarnessError::MissingBinary(format!("KUBEBUILDER_ASSETS is not set: {hint}"))
    })?;
    for bin in ["kube-apiserver", "etcd"] {
        if !dir.join(bin).is_file() {
            return Err(HarnessError::MissingBinary(format!(
                "{} has no {bin}: {hint}",
                dir.display()
            )));
        }
    }
    Ok(dir)
}

/// `kube-controller-manager`, for the tests that need the real Deployment and ReplicaSet
/// controllers: in `$TAILOR_CONTROLLER_MANAGER` (a directory), else in `$KUBEBUILDER_ASSETS`.
/// `make test` sets the first from `hack/controller-manager.sh`.
pub fn controller_manager() -> Result<PathBuf> {
    let hint = "run the tests with `make test`, or export TAILOR_CONTROLLER_MANAGER=$(hack/controller-manager.sh) \
                (it builds kube-controller-manager from the Go module proxy once and caches it)";
    let dirs = [
        std::env::var_os("TAILOR_CONTROLLER_MANAGER"),
        std::env::var_os("KUBEBUILDER_ASSETS"),
    ];
    dirs.into_iter()
        .flatten()
        .map(|d| PathBuf::from(d).join("kube-controller-manager"))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            HarnessError::MissingBinary(format!("no kube-controller-manager found: {hint}"))
        })
}

/// `name` from `$PATH` (Debian's `prometheus` package installs `prometheus` and `promtool`).
pub fn prometheus_binary(name: &str) -> Result<PathBuf> {
    find_in_path(name).ok_or_else(|| {
        HarnessError::MissingBinary(format!(
            "{name} is not on PATH: run `hack/install-prometheus.sh` (installs Debian's prometheus package) or `make test`"
        ))
    })
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_assets_say_how_to_get_them() {
        let unset = kube_assets_in(None).unwrap_err().to_string();
        assert!(unset.contains("KUBEBUILDER_ASSETS is not set"), "{unset}");
        assert!(unset.contains("hack/test-binaries.sh"), "{unset}");

        let empty = tempfile::tempdir().unwrap();
        let missing = kube_assets_in(Some(empty.path().to_owned()))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("has no kube-apiserver"), "{missing}");
        assert!(missing.contains("make test"), "{missing}");
    }

    #[test]
    fn missing_prometheus_says_how_to_get_it() {
        let e = prometheus_binary("prometheus-that-does-not-exist")
            .unwrap_err()
            .to_string();
        assert!(e.contains("hack/install-prometheus.sh"), "{e}");
    }
}
