//! The admission webhook, served by every updater replica (leader or standby), so it stays up
//! through a leader change and scales with the replicas:
//!
//! - `POST /size` (a MutatingWebhookConfiguration on pods, CREATE): sizes a new pod to its
//!   VerticalAutoscaler's recommendation ([`review::size`]); a pod is never refused.
//! - `POST /gate` (a ValidatingWebhookConfiguration on pods/resize, in namespaces with the
//!   memory gate): a person's memory decrease must carry the id of a pending approval that
//!   covers it ([`review::gate`]).
//!
//! Its caches ([`lookup`]) are its own, kept on every replica; until they have listed and a
//! certificate is loaded the replica is not ready, and a request that still arrives is
//! answered "allowed, unchanged". Certificates come from files ([`tls::watch_files`], e.g.
//! cert-manager's Secret mounted) or are self-managed ([`certs`]).

pub mod certs;
pub mod lookup;
pub mod metrics;
pub mod review;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

use crate::controller::events::{Events, Kind};
use crate::metrics::Metrics;
use lookup::Lookup;
use review::{Answer, Outcome};

/// Where the serving certificate comes from.
#[derive(Clone, Debug)]
pub enum Certificates {
    /// `tls.crt` and `tls.key` in a directory, re-read every few seconds.
    Files(std::path::PathBuf),
    /// Made and rotated by tailor.
    SelfManaged(certs::Settings),
}

/// What the webhook server is given.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it listens (HTTPS).
    pub addr: std::net::SocketAddr,
    pub certificates: Certificates,
    /// The updater's user name: its resizes pass the gate.
    pub updater_username: String,
    /// The identity Events are reported under.
    pub identity: String,
    /// The namespaces served: a pod elsewhere is admitted as submitted, unread.
    pub scope: tailor_runtime::Scope,
}

/// A notice is said once per VerticalAutoscaler, reason and text in this long.
const NOTICE_EVERY: Duration = Duration::from_secs(600);

struct Server {
    lookup: Lookup,
    metrics: Arc<Metrics>,
    updater_username: String,
    events: Events,
    said: Mutex<HashMap<(String, &'static str, String), Instant>>,
    synced: std::sync::atomic::AtomicBool,
}

impl Server {
    fn tell(&self, answer: &Answer) {
        let Some(n) = &answer.notice else {
            return;
        };
        let key = (
            n.va.meta().uid.clone().unwrap_or_default(),
            n.reason,
            n.note.clone(),
        );
        {
            let mut said = self.said.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            said.retain(|_, at| now.duration_since(*at) < NOTICE_EVERY);
            if said.contains_key(&key) {
                return;
            }
            said.insert(key, now);
        }
        self.events.send(
            n.va.object_ref(&()),
            Kind::Warning,
            n.reason,
            n.note.clone(),
        );
    }
}

fn reply(response: AdmissionResponse) -> Response {
    axum::Json(response.into_review()).into_response()
}

/// Reads a review; `Err` is the reply to a body that is not one.
fn read(body: &[u8]) -> Result<AdmissionRequest<Pod>, Box<Response>> {
    let bad = |why: String| Box::new((StatusCode::BAD_REQUEST, why).into_response());
    let review: AdmissionReview<Pod> =
        serde_json::from_slice(body).map_err(|e| bad(format!("not an AdmissionReview: {e}")))?;
    review
        .try_into()
        .map_err(|_| bad("an AdmissionReview without a request".to_owned()))
}

/// Answers one review with `decide` (given the request once the caches have listed, `None`
/// before), and counts it.
async fn answer_with<F>(server: &Server, webhook: &'static str, body: &[u8], decide: F) -> Response
where
    F: AsyncFnOnce(Option<&AdmissionRequest<Pod>>, AdmissionResponse) -> Answer,
{
    let started = Instant::now();
    let req = match read(body) {
        Ok(r) => r,
        Err(reply) => {
            let outcome = Outcome::Invalid.as_str();
            server.metrics.admission.answered(webhook, outcome, 0.0);
            return *reply;
        }
    };
    let synced = server.synced.load(std::sync::atomic::Ordering::Relaxed);
    let answer = decide(synced.then_some(&req), AdmissionResponse::from(&req)).await;
    server.tell(&answer);
    let seconds = started.elapsed().as_secs_f64();
    let outcome = answer.outcome.as_str();
    server.metrics.admission.answered(webhook, outcome, seconds);
    reply(answer.response)
}

fn not_ready(response: AdmissionResponse) -> Answer {
    Answer {
        response,
        outcome: Outcome::NotReady,
        notice: None,
    }
}

async fn size(State(server): State<Arc<Server>>, body: Bytes) -> Response {
    answer_with(&server, "size", &body, async |req, admit| match req {
        Some(req) => review::size(&server.lookup, req).await,
        // Not synced: admit as submitted.
        None => not_ready(admit),
    })
    .await
}

async fn gate(State(server): State<Arc<Server>>, body: Bytes) -> Response {
    answer_with(&server, "gate", &body, async |req, admit| match req {
        Some(req) => review::gate(&server.lookup, &server.updater_username, req).await,
        // Not knowing the pending approvals yet, deny: the gate fails closed.
        None => {
            not_ready(admit.deny("tailor's memory gate is starting; try again in a few seconds"))
        }
    })
    .await
}

/// Binds the webhook's address; the replica is not ready until [`run`] has its caches and a
/// certificate.
pub async fn bind(config: &Config, metrics: &Metrics) -> Result<tokio::net::TcpListener, String> {
    metrics.admission.set_waiting(true);
    tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| format!("webhook address {}: {e}", config.addr))
}

/// Serves the webhook on `listener` until dropped.
pub async fn run(
    client: kube::Client,
    config: Config,
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
) {
    let (lookup, watches) = Lookup::start(client.clone(), config.scope.clone());
    let (events, event_sender) = Events::new(
        client.clone(),
        ("tailor-updater-webhook".to_owned(), config.identity.clone()),
        metrics.clone(),
    );
    let server = Arc::new(Server {
        lookup: lookup.clone(),
        metrics: metrics.clone(),
        updater_username: config.updater_username.clone(),
        events,
        said: Mutex::default(),
        synced: std::sync::atomic::AtomicBool::new(false),
    });
    let cert = Arc::new(tls::ServingCert::default());
    let mut tasks = tokio::task::JoinSet::new();
    for w in watches {
        tasks.spawn(w);
    }
    tasks.spawn(event_sender);
    match config.certificates {
        Certificates::Files(dir) => {
            tasks.spawn(tls::watch_files(dir, cert.clone(), Duration::from_secs(10)));
        }
        Certificates::SelfManaged(settings) => {
            tasks.spawn(certs::run(client, settings, cert.clone(), metrics.clone()));
        }
    }
    let ready = {
        let (server, cert, metrics) = (server.clone(), cert.clone(), metrics.clone());
        async move {
            server.lookup.synced().await;
            server
                .synced
                .store(true, std::sync::atomic::Ordering::Relaxed);
            while !cert.loaded() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            metrics.admission.set_waiting(false);
            tracing::info!("admission webhook ready");
        }
    };
    tasks.spawn(ready);
    let app = Router::new()
        .route("/size", post(size))
        .route("/gate", post(gate))
        .with_state(server);
    tracing::info!(addr = %config.addr, "admission webhook listening");
    tasks.spawn(tls::serve(listener, cert, app));
    while tasks.join_next().await.is_some() {}
}
