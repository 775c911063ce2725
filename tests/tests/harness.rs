//! The harness leaves nothing behind: servers stop and directories vanish when their owner is
//! dropped, also when the test that owns them panics.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tailor_e2e::{ControlPlane, Prometheus};

fn assert_gone(pids: &[u32], dir: &Path) {
    for pid in pids {
        assert_eq!(
            kill(Pid::from_raw(*pid as i32), None),
            Err(Errno::ESRCH),
            "process {pid} still exists"
        );
    }
    assert!(!dir.exists(), "{} still exists", dir.display());
}

#[tokio::test]
async fn dropping_the_servers_stops_them_and_removes_their_directories() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let prom = Prometheus::backfilled("# EOF\n").await?;
    let (mut pids, dirs) = (
        cp.pids().to_vec(),
        [cp.dir().to_owned(), prom.dir().to_owned()],
    );
    pids.push(prom.pid());
    for pid in &pids {
        assert_eq!(
            kill(Pid::from_raw(*pid as i32), None),
            Ok(()),
            "process {pid} runs"
        );
    }
    // Two control planes at once do not share anything.
    let other = ControlPlane::start().await?;
    assert_ne!(other.url(), cp.url());
    assert_ne!(other.dir(), cp.dir());
    drop(other);

    drop(cp);
    drop(prom);
    for dir in &dirs {
        assert_gone(&pids, dir);
    }
    Ok(())
}

#[tokio::test]
async fn a_panicking_test_still_tears_down() -> anyhow::Result<()> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let cp = ControlPlane::start().await.expect("control plane");
        let prom = Prometheus::backfilled("# EOF\n").await.expect("prometheus");
        let mut pids = cp.pids().to_vec();
        pids.push(prom.pid());
        let _ = tx.send((pids, [cp.dir().to_owned(), prom.dir().to_owned()]));
        panic!("the test body fails while the servers run");
    });
    let err = task.await.expect_err("the task panics");
    assert!(err.is_panic());
    let (pids, dirs) = rx.await?;
    for dir in &dirs {
        assert_gone(&pids, dir);
    }
    Ok(())
}
