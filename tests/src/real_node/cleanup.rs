//! Tearing a real node down: what the kubelet and containerd leave on the machine.
//!
//! The same steps run when a [`super::RealNode`] is dropped and, at the next start, for the
//! leftovers of a run that was killed: every process is identified by the node's directory in
//! its command line (never by name alone), pods by the `kubepods` cgroups that only the
//! kubelet creates, mounts by their place under the node's directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Host sysctls the kubelet sets while it runs (`setupKernelTunables`, plus the keys quota).
pub const KUBELET_SYSCTLS: [&str; 6] = [
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

const SYSCTLS_FILE: &str = "sysctl.saved";
const PIDS_DIR: &str = "pids";

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key.replace('.', "/"))
}

/// Saves the current values of [`KUBELET_SYSCTLS`] into `dir`.
pub fn save_sysctls(dir: &Path) -> std::io::Result<()> {
    let mut out = String::new();
    for key in KUBELET_SYSCTLS {
        let value = std::fs::read_to_string(sysctl_path(key))?;
        out.push_str(&format!("{key}={}\n", value.trim()));
    }
    std::fs::write(dir.join(SYSCTLS_FILE), out)
}

/// Records the pid of a process the node started.
pub fn record_pid(dir: &Path, name: &str, pid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join(PIDS_DIR))?;
    std::fs::write(dir.join(PIDS_DIR).join(name), pid.to_string())
}

/// Everything a node in `dir` may have left: processes, containers, mounts, cgroups, files
/// at fixed paths, host sysctls; then `dir` itself. Best effort: problems are printed.
pub fn teardown(dir: &Path) {
    let marker = dir.display().to_string();
    kill_recorded(dir, &marker);
    kill_matching(|cmdline| cmdline.contains("containerd-shim") && cmdline.contains(&marker));
    kill_kubepods();
    unmount_under(dir);
    remove_kubepods_cgroups();
    remove_fixed_paths(dir);
    restore_sysctls(dir);
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("real-node: remove {}: {e}", dir.display());
    }
}

fn cmdline(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(String::from_utf8_lossy(&raw).replace('\0', " "))
}

/// The recorded kubelet and containerd, if still alive and still ours (the command line names
/// the node's directory: a recycled pid is left alone).
fn kill_recorded(dir: &Path, marker: &str) {
    let Ok(entries) = std::fs::read_dir(dir.join(PIDS_DIR)) else {
        return;
    };
    let pids: Vec<i32> = entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter_map(|s| s.trim().parse().ok())
        .filter(|pid| cmdline(*pid).is_some_and(|c| c.contains(marker)))
        .collect();
    terminate(&pids);
}

fn kill_matching(matches: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let pids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| cmdline(*pid).is_some_and(|c| matches(&c)))
        .collect();
    terminate(&pids);
}

/// SIGTERM, then SIGKILL to those still alive after 5 s.
fn terminate(pids: &[i32]) {
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline
        && pids
            .iter()
            .any(|p| kill(Pid::from_raw(*p), None).is_ok() && !zombie(*p))
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in pids {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

/// The roots of the kubelet's pod cgroups in every mounted hierarchy.
fn kubepods_roots() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut roots: Vec<PathBuf> = entries
        .filter_map(|e| Some(e.ok()?.path().join("kubepods")))
        .filter(|p| p.is_dir())
        .collect();
    let unified = Path::new("/sys/fs/cgroup/kubepods");
    if unified.is_dir() {
        roots.push(unified.to_owned());
    }
    roots
}

/// Every directory under `root`, deepest first.
fn subtree(root: &Path) -> Vec<PathBuf> {
    let mut all = vec![root.to_owned()];
    let mut i = 0;
    while i < all.len() {
        if let Ok(entries) = std::fs::read_dir(&all[i]) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    all.push(e.path());
                }
            }
        }
        i += 1;
    }
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    all
}

/// Kills what still runs in a pod cgroup (containers whose shim is gone).
fn kill_kubepods() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let pids: Vec<i32> = kubepods_roots()
            .iter()
            .flat_map(|r| subtree(r))
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    let prefix = dir.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    points.dedup();
    for m in points {
        let status = std::process::Command::new("umount")
            .args(["-l", m])
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("real-node: umount -l {m} failed");
        }
    }
}

fn remove_kubepods_cgroups() {
    for root in kubepods_roots() {
        for d in subtree(&root) {
            if let Err(e) = std::fs::remove_dir(&d) {
                eprintln!("real-node: rmdir {}: {e}", d.display());
            }
        }
    }
}

/// What the kubelet and containerd create at fixed paths: log symlinks into the node's
/// directory, the device-plugin socket, and directories (removed only when empty).
fn remove_fixed_paths(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir("/var/log/containers") {
        for e in entries.flatten() {
            if std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_file("/var/lib/kubelet/device-plugins/kubelet.sock");
    for d in [
        "/var/lib/kubelet/device-plugins",
        "/var/lib/kubelet",
        "/var/log/containers",
        "/var/log/pods",
        "/run/containerd/runc/k8s.io",
        "/run/containerd/runc",
        "/run/containerd/fifo",
        "/run/containerd/s",
        "/run/containerd",
    ] {
        let _ = std::fs::remove_dir(d);
    }
}

fn restore_sysctls(dir: &Path) {
    let Ok(saved) = std::fs::read_to_string(dir.join(SYSCTLS_FILE)) else {
        return;
    };
    for line in saved.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !KUBELET_SYSCTLS.contains(&key) {
            continue;
        }
        let path = sysctl_path(key);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current.trim() != value
            && let Err(e) = std::fs::write(&path, value)
        {
            eprintln!("real-node: restore {key}={value}: {e}");
        }
    }
}
