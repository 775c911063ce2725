//! What the demo tests share.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::Command;

/// Runs `tailor-demo` with `args` against the tailor binaries (built first) and returns what
/// it printed (stdout, stderr); panics with its output when it fails.
pub fn run_demo(args: &[&str]) -> (String, String) {
    let bins = tailor_e2e::cargo::build_tailor_binaries().unwrap();
    let dir = bins["tailor-recommender"].parent().unwrap().to_path_buf();
    let out = Command::new(env!("CARGO_BIN_EXE_tailor-demo"))
        .args(args)
        .env("TAILOR_BIN_DIR", &dir)
        .output()
        .expect("tailor-demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "tailor-demo {} failed ({}):\n{stdout}\n{stderr}",
        args.join(" "),
        out.status
    );
    (stdout, stderr)
}
