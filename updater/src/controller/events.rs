//! Events, best effort and off the reconcile's path: a bounded queue drained by two senders, so
//! a burst of resizes costs a small record per Event rather than a task each. While resizes are
//! being sent (or wait for the rate limit) the senders wait, each Event at most [`YIELD_MAX`]
//! after it was raised: in a burst the API server's capacity goes to the resizes first, and the
//! Events follow.
//!
//! An Event repeats (its `series.count` goes up) only when everything a person reads is the
//! same: the object, the type, the reason **and the note**. (kube's `Recorder` merges on the
//! reason alone, so a later resize's Event kept the text of the first one.)

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Mutex, mpsc, watch};

use crate::metrics::Metrics;

/// Events queued at most; beyond that they are dropped and counted
/// (`tailor_updater_api_requests_total{verb="event_dropped"}`).
const QUEUE: usize = 20_000;

/// How long an Event waits at most, from when it was raised, for the resizes being sent.
const YIELD_MAX: Duration = Duration::from_secs(30);

/// How long an Event may be repeated (a series) rather than created again.
const SERIES_TTL: Duration = Duration::from_secs(600);

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Normal,
    Warning,
}

/// One Event waiting to be sent.
#[derive(Clone, Debug)]
struct Queued {
    regarding: ObjectReference,
    kind: Kind,
    reason: String,
    note: String,
    raised: Instant,
}

/// What makes two Events the same.
type SeriesKey = (String, String, String, Kind, String, String);

/// The sending side, held by the reconciles.
pub(crate) struct Events {
    tx: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
    /// Resizes being sent.
    resizing: Arc<watch::Sender<usize>>,
}

/// Held while a resize is being sent (see [`Events::resizing`]).
pub(crate) struct Resizing(Arc<watch::Sender<usize>>);

impl Drop for Resizing {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Events {
    /// A queue, and the future that sends what it receives (run it until shutdown).
    pub(crate) fn new(
        client: kube::Client,
        reporter: (String, String),
        metrics: Arc<Metrics>,
    ) -> (Self, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let resizing = Arc::new(watch::Sender::new(0));
        let sender = Sender {
            client,
            reporter,
            resizing: resizing.subscribe(),
            metrics: metrics.clone(),
            rx: Mutex::new(rx),
            series: Mutex::new(HashMap::new()),
        };
        let run = async move {
            let sender = Arc::new(sender);
            let (a, b) = (sender.clone(), sender);
            tokio::join!(a.drain(), b.drain());
        };
        (
            Self {
                tx,
                metrics,
                resizing,
            },
            run,
        )
    }

    /// Marks a resize being sent until the guard is dropped: Events wait meanwhile.
    pub(crate) fn resizing(&self) -> Resizing {
        self.resizing.send_modify(|n| *n += 1);
        Resizing(self.resizing.clone())
    }

    /// Publishes an Event without holding up the reconcile.
    pub(crate) fn send(&self, regarding: ObjectReference, kind: Kind, reason: &str, note: String) {
        let item = Queued {
            regarding,
            kind,
            reason: reason.to_owned(),
            note: truncate(&note, 1000),
            raised: Instant::now(),
        };
        if self.tx.try_send(item).is_err() {
            self.metrics.request("event_dropped");
            tracing::debug!(reason, "event queue full: event dropped");
        }
    }
}

struct Sender {
    client: kube::Client,
    /// (reporting controller, reporting instance).
    reporter: (String, String),
    metrics: Arc<Metrics>,
    resizing: watch::Receiver<usize>,
    rx: Mutex<mpsc::Receiver<Queued>>,
    series: Mutex<HashMap<SeriesKey, (String, i32, Instant)>>,
}

impl Sender {
    async fn drain(&self) {
        loop {
            let next = self.rx.lock().await.recv().await;
            let Some(item) = next else { return };
            let left = YIELD_MAX.saturating_sub(item.raised.elapsed());
            let mut resizing = self.resizing.clone();
            let _ = tokio::time::timeout(left, resizing.wait_for(|n| *n == 0)).await;
            self.metrics.request("event");
            if let Err(e) = self.publish(&item).await {
                tracing::debug!(error = %e, reason = %item.reason, "event not recorded");
            }
        }
    }

    async fn publish(&self, item: &Queued) -> Result<(), kube::Error> {
        let r = &item.regarding;
        let ns = r.namespace.clone().unwrap_or_else(|| "default".to_owned());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key: SeriesKey = (
            r.kind.clone().unwrap_or_default(),
            ns.clone(),
            r.uid.clone().or_else(|| r.name.clone()).unwrap_or_default(),
            item.kind,
            item.reason.clone(),
            item.note.clone(),
        );
        let now = k8s_openapi::jiff::Timestamp::now();
        let repeat = {
            let mut series = self.series.lock().await;
            series.retain(|_, (_, _, at)| at.elapsed() < SERIES_TTL);
            series.get_mut(&key).map(|(name, count, at)| {
                *count += 1;
                *at = Instant::now();
                (name.clone(), *count)
            })
        };
        if let Some((name, count)) = repeat {
            let series = EventSeries {
                count,
                last_observed_time: MicroTime(now),
            };
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "series": series })),
            )
            .await?;
            return Ok(());
        }
        let name = format!(
            "{}.{:x}",
            r.name.as_deref().unwrap_or("tailor-updater"),
            now.as_nanosecond()
        );
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            action: Some("Resize".into()),
            reason: Some(item.reason.clone()),
            note: Some(item.note.clone()),
            regarding: Some(r.clone()),
            reporting_controller: Some(self.reporter.0.clone()),
            reporting_instance: Some(self.reporter.1.clone()),
            type_: Some(
                match item.kind {
                    Kind::Normal => "Normal",
                    Kind::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        };
        api.create(&PostParams::default(), &event).await?;
        self.series
            .lock()
            .await
            .insert(key, (name, 1, Instant::now()));
        Ok(())
    }
}

/// `s` cut to at most `max` bytes (at a character boundary), marked when cut.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
