//! Leader election with a `coordination.k8s.io/v1` Lease: one replica writes, fenced; the
//! others wait. The semantics are client-go's `leaderelection`:
//!
//! - Every replica tries to acquire or renew the Lease every retry period. Updates carry the
//!   Lease's resourceVersion, so two candidates can never both win.
//! - A holder's lease runs out a lease duration after *this* replica last saw the Lease record
//!   change, by this replica's monotonic clock; the holder's `renewTime` is never compared with
//!   the local wall clock.
//! - A leader that has not renewed within the renew deadline (shorter than the lease duration)
//!   stops writing: its [`Fence`] stops holding at that moment, and the work is stopped at the
//!   next retry. Each Lease request is cut off at the same deadline, so a hanging API server
//!   cannot keep a stale leader writing.
//! - On shutdown the leader releases the Lease (no holder, `leaseDurationSeconds: 1`), so a
//!   standby takes over within a retry period rather than a lease duration.

mod fence;
mod timing;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

pub use fence::Fence;
use timing::{Observed, Record};
pub use timing::{Timing, TimingArgs, parse_duration};

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Lease duration, renew deadline and retry period.
    pub timing: Timing,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// What one attempt to acquire or renew found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This replica holds the Lease.
    Held,
    /// Another replica holds it and its lease has not run out.
    Other(String),
    /// The Lease changed between reading and writing it; try again.
    Conflict,
}

/// One replica's view of one Lease.
struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    observed: Observed,
}

impl Elector {
    fn new(client: kube::Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: Observed::default(),
        }
    }

    /// Notes the Lease as seen now (see [`Observed`]).
    fn observe(&mut self, lease: &Lease) {
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Record {
            holder: spec.holder_identity.unwrap_or_default(),
            renew_time: spec.renew_time.map(|t| t.0.to_string()).unwrap_or_default(),
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        };
        let duration = spec
            .lease_duration_seconds
            .map_or(self.cfg.timing.lease_duration, |s| {
                std::time::Duration::from_secs(u64::try_from(s).unwrap_or(0))
            });
        self.observed.observe(record, duration, Instant::now());
    }

    /// The spec this replica writes to hold the Lease.
    fn ours(&self, transitions: i32, acquired: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.cfg.identity.clone()),
            lease_duration_seconds: Some(self.cfg.timing.lease_seconds()),
            acquire_time: acquired.or_else(|| Some(now())),
            renew_time: Some(now()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew.
    async fn try_hold(&mut self, leading: bool) -> Result<Attempt, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.ours(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Held)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.cfg.identity;
        if !ours && !holder.is_empty() && !self.observed.expired(Instant::now()) {
            return Ok(Attempt::Other(holder));
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
        let acquired = (ours && leading).then_some(spec.acquire_time).flatten();
        lease.spec = Some(self.ours(transitions, acquired));
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(Attempt::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// One round: acquire or renew, each request cut off at the renew deadline; extend the
    /// fence on success, step down when the deadline passed or another replica holds the Lease.
    async fn round(&mut self, leader: &watch::Sender<bool>, fence: &Fence) {
        let (name, timing) = (self.cfg.name.clone(), self.cfg.timing);
        let started = Instant::now();
        let mut leading = *leader.borrow();
        if leading && !fence.holds_at(started) {
            tracing::warn!(lease = %name, "stepping down: not renewed within the renew deadline");
            step_down(leader, fence);
            leading = false;
        }
        let deadline = match fence.deadline() {
            Some(until) if leading => until,
            _ => started + timing.renew_deadline,
        };
        let attempt = tokio::time::timeout_at(deadline, self.try_hold(leading)).await;
        match &attempt {
            Ok(Ok(_)) => crate::health::global().api_ok(),
            Ok(Err(e)) => {
                crate::health::global().api_failed(&e.to_string(), std::time::Instant::now());
            }
            Err(_) => crate::health::global()
                .api_failed("a Lease request timed out", std::time::Instant::now()),
        }
        match attempt {
            Ok(Ok(Attempt::Held)) => {
                fence.extend_to(started + timing.renew_deadline);
                if !leading && fence.holds() {
                    tracing::info!(lease = %name, identity = %self.cfg.identity, "became leader");
                    let _ = leader.send(true);
                }
            }
            Ok(Ok(Attempt::Other(holder))) => {
                if leading {
                    tracing::warn!(lease = %name, %holder, "lost the lease to another replica");
                    step_down(leader, fence);
                }
            }
            Ok(Ok(Attempt::Conflict)) => {
                tracing::debug!(lease = %name, "the lease changed while updating it; retrying");
            }
            Ok(Err(e)) => tracing::warn!(lease = %name, error = %e, "lease request failed"),
            Err(_) => {
                let after = deadline.saturating_duration_since(started);
                tracing::warn!(lease = %name, ?after, "lease request timed out");
            }
        }
        if *leader.borrow() && !fence.holds() {
            tracing::warn!(lease = %name, "stepping down: not renewed within the renew deadline");
            step_down(leader, fence);
        }
    }

    /// Gives the Lease up if this replica holds it: no holder, a lease of 1 second, so that a
    /// standby takes it at its next retry.
    async fn release(&mut self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        spec.acquire_time = Some(now());
        lease.spec = Some(spec);
        self.api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await?;
        Ok(true)
    }
}

fn step_down(leader: &watch::Sender<bool>, fence: &Fence) {
    fence.revoke();
    let _ = leader.send(false);
}

/// Runs the election forever, publishing whether this replica leads and keeping `fence`
/// holding only while it may write.
pub async fn elect(
    client: kube::Client,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    fence: Fence,
) {
    let retry = cfg.timing.retry_period;
    let mut elector = Elector::new(client, cfg);
    loop {
        elector.round(&leader, &fence).await;
        tokio::time::sleep(retry).await;
    }
}

/// Releases the Lease if `cfg.identity` holds it, within the renew deadline. Returns whether
/// it was released.
pub async fn release(client: kube::Client, cfg: LeaseConfig) -> bool {
    let (name, deadline) = (cfg.name.clone(), cfg.timing.renew_deadline);
    let mut elector = Elector::new(client, cfg);
    match tokio::time::timeout(deadline, elector.release()).await {
        Ok(Ok(released)) => {
            if released {
                tracing::info!(lease = %name, "released the lease");
            }
            released
        }
        Ok(Err(e)) => {
            tracing::warn!(lease = %name, error = %e, "could not release the lease");
            false
        }
        Err(_) => {
            tracing::warn!(lease = %name, "could not release the lease in time");
            false
        }
    }
}

/// Runs `work` while this replica leads; stops it (drops the future) when leadership is lost,
/// and starts it again when it is regained.
pub async fn while_leading<F, Fut>(mut leader: watch::Receiver<bool>, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        while !*leader.borrow_and_update() {
            if leader.changed().await.is_err() {
                return;
            }
        }
        let lost = async {
            loop {
                if leader.changed().await.is_err() || !*leader.borrow() {
                    return;
                }
            }
        };
        tokio::select! {
            () = work() => return,
            () = lost => tracing::info!("no longer leader: stopped writing"),
        }
    }
}

/// Runs `work` under leader election (when `config` is given) or at once, until `shutdown`
/// completes (its output is returned) or `work` ends (`None`). `work` gets the [`Fence`] its
/// writers check before each write ([`Fence::always`] without election); `on_leader` is told
/// each time this replica gains or loses the lease. On shutdown the work is stopped first, then
/// the Lease is released.
pub async fn lead<F, Fut, S>(
    client: kube::Client,
    config: Option<LeaseConfig>,
    on_leader: impl Fn(bool),
    shutdown: S,
    mut work: F,
) -> Option<S::Output>
where
    F: FnMut(Fence) -> Fut,
    Fut: std::future::Future<Output = ()>,
    S: std::future::Future,
{
    let Some(config) = config else {
        on_leader(true);
        return tokio::select! {
            () = work(Fence::always()) => None,
            s = shutdown => Some(s),
        };
    };
    let fence = Fence::new();
    let (tx, rx) = watch::channel(false);
    let mut leader_rx = rx.clone();
    let track = async {
        on_leader(false);
        while leader_rx.changed().await.is_ok() {
            on_leader(*leader_rx.borrow());
        }
    };
    let elected = async {
        tokio::join!(
            elect(client.clone(), config.clone(), tx, fence.clone()),
            track
        );
    };
    let working = while_leading(rx, || work(fence.clone()));
    let out = tokio::select! {
        () = elected => None,
        () = working => None,
        s = shutdown => Some(s),
    };
    // The work and the election have been dropped: nothing writes any more.
    fence.revoke();
    on_leader(false);
    release(client, config).await;
    out
}
