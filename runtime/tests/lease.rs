//! Leader election on a real API server: one leader at a time, and a standby takes over when
//! the leader stops renewing, after the old leader's fence stopped holding.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use tailor_e2e::ControlPlane;
use tailor_runtime::lease::{Fence, LeaseConfig, Timing, elect};
use tokio::sync::watch;

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "tailor-recommender".into(),
        namespace: "default".into(),
        identity: identity.into(),
        timing: Timing {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
        },
    }
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_standby_takes_over() {
    let cp = ControlPlane::start().await.unwrap();
    let (a_tx, a_rx) = watch::channel(false);
    let (b_tx, b_rx) = watch::channel(false);
    let (a_fence, b_fence) = (Fence::new(), Fence::new());
    let a = tokio::spawn(elect(cp.client(), config("a"), a_tx, a_fence.clone()));
    let b = tokio::spawn(elect(cp.client(), config("b"), b_tx, b_fence.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !(*a_rx.borrow() ^ *b_rx.borrow()) {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Stable: exactly one leads for several renewals.
    for _ in 0..30 {
        assert!(*a_rx.borrow() ^ *b_rx.borrow(), "exactly one leader");
        assert!(a_fence.holds() ^ b_fence.holds(), "exactly one fence holds");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (leader, leader_fence, standby_rx, standby_name) = if *a_rx.borrow() {
        (a, a_fence, b_rx, "b")
    } else {
        (b, b_fence, a_rx, "a")
    };
    leader.abort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !*standby_rx.borrow() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby did not take over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The old leader's fence (renew deadline 2 s) ran out before the standby could take over
    // (lease duration 3 s from when it last saw the Lease change).
    assert!(!leader_fence.holds(), "two replicas may write");
    let lease = Api::<Lease>::namespaced(cp.client(), "default")
        .get("tailor-recommender")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(standby_name));
    assert_eq!(spec.lease_transitions, Some(1));
}
