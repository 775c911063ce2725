//! Builds the tailor binaries from a test, so a test never runs stale ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Builds (or finds up to date) `tailor-recommender` and `tailor-updater` with the cargo that
/// runs the tests, in the same profile and target directory, and returns their paths.
pub fn build_tailor_binaries() -> Result<BTreeMap<String, PathBuf>, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    // Cargo runs tests with the test crate's CARGO_PKG_*, CARGO_MANIFEST_DIR, ... set. Build
    // scripts that track those (ring's does) would see a changed environment and rebuild, here
    // and again in the next ordinary build: pass only the user's settings.
    let keep = [
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_",
        "CARGO_PROFILE_",
        "CARGO_TERM_",
        "CARGO_NET_",
        "CARGO_HTTP_",
        "CARGO_REGISTRIES_",
        "CARGO_REGISTRY_",
        "CARGO_INCREMENTAL",
    ];
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && !keep.iter().any(|k| name.starts_with(k)))
            || name == "OUT_DIR"
        {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.args([
        "build",
        "--message-format=json-render-diagnostics",
        "-p",
        "tailor-recommender",
        "-p",
        "tailor-updater",
        "--bins",
    ])
    .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
    .stdin(Stdio::null())
    .stderr(Stdio::inherit());
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed ({})", out.status));
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
            && ["tailor-recommender", "tailor-updater"].contains(&name)
        {
            found.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    if found.len() != 2 {
        return Err(format!("cargo built {found:?}, not both binaries"));
    }
    Ok(found)
}

/// The arguments of `tailor-updater run` for a test: its admin port, `identity`, a Lease in
/// `default` with short timings (3 s lease, 2 s renew deadline, 500 ms retry), a 2 s resync and
/// back-off, and debug logs.
pub fn updater_test_args(identity: &str, admin_port: u16) -> Vec<String> {
    [
        "run",
        "--admin-addr",
        &format!("127.0.0.1:{admin_port}"),
        "--lease-namespace",
        "default",
        "--lease-duration-seconds",
        "3",
        "--leader-elect-renew-deadline",
        "2s",
        "--leader-elect-retry-period",
        "500ms",
        "--identity",
        identity,
        "--resync-seconds",
        "2",
        "--backoff-seconds",
        "2",
        "--log",
        "info,tailor_updater=debug",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}
