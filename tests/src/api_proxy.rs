//! A fault-injecting proxy in front of a [`ControlPlane`]'s API server: clients talk plain HTTP
//! to it with the admin token ([`ApiProxy::kubeconfig`]), and it forwards to the API server over
//! TLS, streaming answers (watches included), unless a [`Rule`] matches the request. Rules
//! answer 429 with `Retry-After`, a 5xx, hang past any client timeout, cut a watch stream after
//! a while, or end a watch with `410 Gone` (an `ERROR` event whose status is `Expired`, as the
//! API server does when the resource version is too old). Every request is logged with what
//! the proxy did, so a test can count, for example, the resizes that reached the server.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::{ControlPlane, HarnessError, Result};

/// What a matching rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Answers with this status (a Kubernetes `Status` body) and, if set, `Retry-After` seconds.
    Status(u16, Option<u64>),
    /// Holds the request this long unanswered, then answers 504.
    Hang(Duration),
    /// Forwards a watch but ends its stream after this long.
    CutWatchAfter(Duration),
    /// Ends a watch with an `ERROR` event `410 Expired` (the client must list again).
    Gone,
    /// Forwards the request, then answers the client 500 instead of the server's answer (the
    /// write happened, the client does not know it).
    ForwardThenFail,
}

/// A fault: requests it matches get `action`, at most `times` times (`None`: always).
#[derive(Debug, Clone)]
pub struct Rule {
    /// The method, or any.
    pub method: Option<Method>,
    /// A part of the path (`/leases/`, `/pods`), or its end (`/resize`) with `suffix`.
    pub path_contains: String,
    /// Whether the path must end with `path_contains`.
    pub suffix: bool,
    /// Watches only (`Some(true)`), non-watches only (`Some(false)`) or both.
    pub watch: Option<bool>,
    /// What to do.
    pub action: Action,
    /// How many more requests it applies to.
    pub times: Option<u32>,
}

impl Rule {
    /// A rule for every request whose path contains `path`.
    pub fn on(path: &str, action: Action) -> Self {
        Self {
            method: None,
            path_contains: path.to_owned(),
            suffix: false,
            watch: None,
            action,
            times: None,
        }
    }

    /// A rule for every request whose path ends with `path` (a subresource: `/resize`).
    pub fn ending(path: &str, action: Action) -> Self {
        Self {
            suffix: true,
            ..Self::on(path, action)
        }
    }

    /// Only for `method`.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only watches (`true`) or only other requests (`false`).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = Some(watch);
        self
    }

    /// At most `n` times.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, method: &Method, path: &str, watch: bool) -> bool {
        self.times != Some(0)
            && self.method.as_ref().is_none_or(|m| m == method)
            && if self.suffix {
                path.ends_with(&self.path_contains)
            } else {
                path.contains(&self.path_contains)
            }
            && self.watch.is_none_or(|w| w == watch)
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Logged {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// The fault applied, if any.
    pub fault: Option<Action>,
    /// The status the client got (0 when the stream was cut or the request hung).
    pub status: u16,
}

#[derive(Debug)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Logged>>,
}

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct ApiProxy {
    shared: Arc<Shared>,
    url: String,
    kubeconfig: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ApiProxy {
    /// A proxy on a free loopback port in front of `cp`'s API server, and a kubeconfig for it
    /// (written next to the control plane's own).
    pub async fn start(cp: &ControlPlane) -> Result<Self> {
        let ca = std::fs::read(cp.dir().join("ca.crt"))
            .map_err(HarnessError::io("read the API server CA"))?;
        let ca = reqwest::Certificate::from_pem(&ca)
            .map_err(|e| HarnessError::Other(format!("API server CA: {e}")))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .map_err(|e| HarnessError::Other(format!("proxy client: {e}")))?;
        let shared = Arc::new(Shared {
            upstream: cp.url().trim_end_matches('/').to_owned(),
            http,
            rules: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(HarnessError::io("bind the API proxy"))?;
        let address = listener
            .local_addr()
            .map_err(HarnessError::io("API proxy address"))?;
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let url = format!("http://{address}");
        let kubeconfig = cp
            .dir()
            .join(format!("kubeconfig-proxy-{}", address.port()));
        let admin = std::fs::read_to_string(cp.kubeconfig())
            .map_err(HarnessError::io("read the kubeconfig"))?;
        let proxied = admin
            .lines()
            .map(|l| {
                let t = l.trim_start();
                if t.starts_with("server:") {
                    format!("    server: {url}")
                } else if t.starts_with("certificate-authority") {
                    String::new()
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&kubeconfig, proxied)
            .map_err(HarnessError::io("write the proxy kubeconfig"))?;
        Ok(Self {
            shared,
            url,
            kubeconfig,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kubeconfig for the admin user through the proxy.
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// A client through the proxy.
    pub async fn client(&self) -> Result<kube::Client> {
        crate::control_plane::client_from_kubeconfig(&self.kubeconfig).await
    }

    /// Adds a fault; the first matching rule applies.
    pub fn add(&self, rule: Rule) {
        lock(&self.shared.rules).push(rule);
    }

    /// Removes every fault: everything passes through from now on.
    pub fn clear(&self) {
        lock(&self.shared.rules).clear();
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        lock(&self.shared.log).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The first rule matching, used up by one.
fn fault(shared: &Shared, method: &Method, path: &str, watch: bool) -> Option<Action> {
    let mut rules = lock(&shared.rules);
    let rule = rules.iter_mut().find(|r| r.matches(method, path, watch))?;
    if let Some(n) = rule.times.as_mut() {
        *n -= 1;
    }
    Some(rule.action.clone())
}

fn record(shared: &Shared, method: &Method, uri: &str, fault: Option<Action>, status: u16) {
    lock(&shared.log).push(Logged {
        method: method.clone(),
        uri: uri.to_owned(),
        fault,
        status,
    });
}

fn status_body(code: u16, reason: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("injected by the test proxy: {reason}"), "reason": reason, "code": code,
    })
    .to_string()
}

fn status(code: u16, retry_after: Option<u64>) -> Response {
    let reason = match code {
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    let mut resp = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        status_body(code, reason),
    )
        .into_response();
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    resp
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let watch = uri.contains("watch=true") || uri.contains("watch=1");
    let action = fault(&shared, &method, req.uri().path(), watch);
    match action.clone() {
        Some(Action::Status(code, after)) => {
            record(&shared, &method, &uri, action, code);
            status(code, after)
        }
        Some(Action::Hang(d)) => {
            record(&shared, &method, &uri, action, 0);
            tokio::time::sleep(d).await;
            status(504, None)
        }
        Some(Action::Gone) => {
            record(&shared, &method, &uri, action, 200);
            let event = serde_json::json!({
                "type": "ERROR",
                "object": serde_json::from_str::<serde_json::Value>(&status_body(410, "Expired")).unwrap_or_default(),
            });
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                format!("{event}\n"),
            )
                .into_response()
        }
        other => forward(&shared, req, &method, &uri, other).await,
    }
}

async fn forward(
    shared: &Shared,
    req: Request,
    method: &Method,
    uri: &str,
    action: Option<Action>,
) -> Response {
    let headers: HeaderMap = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(_) => return status(400, None),
    };
    let mut out = shared
        .http
        .request(method.clone(), format!("{}{uri}", shared.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    let resp = match out.send().await {
        Ok(r) => r,
        Err(_) => {
            record(shared, method, uri, action, 502);
            return status(502, None);
        }
    };
    if action == Some(Action::ForwardThenFail) {
        record(shared, method, uri, action, 500);
        return status(500, None);
    }
    let code = resp.status().as_u16();
    record(shared, method, uri, action.clone(), code);
    let mut builder = Response::builder().status(code);
    for (name, value) in resp.headers() {
        if name != header::TRANSFER_ENCODING
            && name != header::CONTENT_LENGTH
            && name != header::CONNECTION
        {
            builder = builder.header(name, value);
        }
    }
    let cut = match action {
        Some(Action::CutWatchAfter(d)) => Some(tokio::time::Instant::now() + d),
        _ => None,
    };
    let stream = futures::stream::unfold(Some(resp), move |resp| async move {
        let mut resp = resp?;
        let next = match cut {
            Some(at) => match tokio::time::timeout_at(at, resp.chunk()).await {
                Ok(c) => c,
                // Cut: the stream ends mid-watch, as when a connection drops.
                Err(_) => return None,
            },
            None => resp.chunk().await,
        };
        match next {
            Ok(Some(chunk)) => Some((Ok::<Bytes, std::io::Error>(chunk), Some(resp))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    builder
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| status(502, None))
}
