//! Leader election with a `coordination.k8s.io/v1` Lease: one replica writes, the others wait.
//!
//! The holder renews the Lease every `duration / 3`; a candidate takes it over once it has not
//! been renewed for `duration`. Updates use the Lease's resourceVersion, so two candidates can
//! never both win. A leader that fails to renew before its own lease would expire steps down.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
}

fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn expired(spec: &LeaseSpec, duration: Duration) -> bool {
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let secs = spec
        .lease_duration_seconds
        .map_or(duration.as_secs_f64(), f64::from);
    let age = now().duration_since(renewed.0).as_secs_f64();
    age > secs
}

/// One attempt to acquire or renew. Returns whether this replica holds the lease.
async fn try_hold(api: &Api<Lease>, cfg: &LeaseConfig, leading: bool) -> Result<bool, kube::Error> {
    let seconds = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    let mine = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(seconds),
        acquire_time: acquired.or_else(|| Some(MicroTime(now()))),
        renew_time: Some(MicroTime(now())),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(mine(0, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let ours = holder == cfg.identity;
            if !ours && !expired(&spec, cfg.duration) && !holder.is_empty() {
                return Ok(false);
            }
            let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
            let acquired = if ours && leading {
                spec.acquire_time
            } else {
                None
            };
            lease.spec = Some(mine(transitions, acquired));
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                // Someone else updated it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Runs the election forever, publishing whether this replica leads.
pub async fn elect(client: kube::Client, cfg: LeaseConfig, leader: watch::Sender<bool>) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let renew = cfg.duration / 3;
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        let leading = *leader.borrow();
        match try_hold(&api, &cfg, leading).await {
            Ok(true) => {
                last_renewal = tokio::time::Instant::now();
                if !leading {
                    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
                    let _ = leader.send(true);
                }
            }
            Ok(false) => {
                if leading {
                    tracing::warn!(lease = %cfg.name, "lost the lease to another replica");
                    let _ = leader.send(false);
                }
            }
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "lease update failed");
                // Step down before the lease could have expired for the others.
                if leading && last_renewal.elapsed() > cfg.duration * 2 / 3 {
                    tracing::warn!(lease = %cfg.name, "stepping down: could not renew in time");
                    let _ = leader.send(false);
                }
            }
        }
        tokio::time::sleep(renew).await;
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

/// Runs `work` under leader election (when `config` is given) or at once, telling
/// `on_leader` each time this replica gains or loses the lease.
pub async fn lead<F, Fut>(
    client: kube::Client,
    config: Option<LeaseConfig>,
    on_leader: impl Fn(bool),
    mut work: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(config) = config else {
        on_leader(true);
        work().await;
        return;
    };
    let (tx, rx) = watch::channel(false);
    let mut leader_rx = rx.clone();
    let track = async move {
        on_leader(false);
        while leader_rx.changed().await.is_ok() {
            on_leader(*leader_rx.borrow());
        }
    };
    tokio::join!(
        elect(client, config, tx),
        while_leading(rx, &mut work),
        track
    );
}
