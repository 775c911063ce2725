//! What tailor's two binaries share at run time: leader election through a Lease, the admin
//! server (`/metrics`, `/healthz`, `/readyz`) and the namespaces they watch ([`Scope`]).

pub mod admin;
pub mod health;
pub mod index;
pub mod lease;
pub mod packed;
pub mod queue;
pub mod scope;
pub mod workload;

pub use scope::{Scope, ScopeArgs};

/// Waits for SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn shutdown_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
    }
}

/// A replica identity when none is given: the host name (the pod name in a cluster) and the
/// process id.
pub fn default_identity(program: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| program.to_owned());
    format!("{host}-{}", std::process::id())
}

/// An object type the caches hold: what kube's watchers and reflectors ask of it.
pub trait Object:
    kube::Resource<DynamicType: Clone + Eq + std::hash::Hash + Send + Sync>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: kube::Resource<DynamicType: Clone + Eq + std::hash::Hash + Send + Sync>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A cache of every `K` the client can list: the store, and the future that keeps it current
/// (a watch with kube's default back-off). Run the future in a task of its own.
pub fn cache<K>(
    api: kube::Api<K>,
) -> (
    kube::runtime::reflector::Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Object,
    K::DynamicType: Default,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (store, writer) = reflector::store();
    let run = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(observe::<K>);
    (store, run)
}

/// A cache of every `K` in `scope` (see [`Scope::watcher`]): the store, and the future that
/// keeps it current. Run the future in a task of its own.
pub fn cache_scoped<K>(
    scope: &Scope,
    client: &kube::Client,
) -> (
    kube::runtime::reflector::Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Object,
    K::Scope: kube::core::NamespaceScope,
    K::DynamicType: Default,
{
    cache_scoped_with(scope, client, drop_managed_fields)
}

/// Drops an object's `managedFields`: nothing tailor caches reads them, and on objects written
/// by several managers they are often larger than the rest of the metadata.
pub fn drop_managed_fields<K: kube::Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// [`cache_scoped`], each object passed through `slim` before it is stored: what a binary
/// does not read of an object costs it no memory.
pub fn cache_scoped_with<K>(
    scope: &Scope,
    client: &kube::Client,
    slim: fn(&mut K),
) -> (
    kube::runtime::reflector::Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Object,
    K::Scope: kube::core::NamespaceScope,
    K::DynamicType: Default,
{
    cache_following(scope, client, slim, |_| {})
}

/// [`cache_scoped`] with an [`index::OwnerIndex`] of what it holds, kept from the same watch.
pub fn cache_indexed<K>(
    scope: &Scope,
    client: &kube::Client,
) -> (
    kube::runtime::reflector::Store<K>,
    index::OwnerIndex,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Object,
    K::Scope: kube::core::NamespaceScope,
    K::DynamicType: Default,
{
    let index = index::OwnerIndex::default();
    let follows = index.clone();
    let (store, run) = cache_following(scope, client, drop_managed_fields, move |event| {
        follows.observe(event);
    });
    (store, index, run)
}

/// A cache of `K` in `scope`, each object slimmed as it arrives, and `follow` called with
/// each event of its watch once the cache has taken it.
fn cache_following<K>(
    scope: &Scope,
    client: &kube::Client,
    slim: fn(&mut K),
    follow: impl Fn(&kube::runtime::watcher::Event<K>) + Send + 'static,
) -> (
    kube::runtime::reflector::Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Object,
    K::Scope: kube::core::NamespaceScope,
    K::DynamicType: Default,
{
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let (store, writer) = reflector::store();
    let events = scope.watcher(
        client,
        &K::DynamicType::default(),
        watcher::Config::default(),
        store.clone(),
    );
    let run = reflector::reflector(writer, events.modify(slim))
        .default_backoff()
        .for_each(move |item| {
            if let Ok(event) = &item {
                follow(event);
            }
            observe::<K>(item)
        });
    (store, run)
}

/// What a cache's watch gave (see [`report_watch`]).
fn observe<K: kube::Resource>(
    item: Result<kube::runtime::watcher::Event<K>, kube::runtime::watcher::Error>,
) -> std::future::Ready<()>
where
    K::DynamicType: Default,
{
    report_watch(&K::kind(&K::DynamicType::default()), &item);
    std::future::ready(())
}

/// What a watch of `kind` gave: an item is an answer of the API server; an error is logged at
/// warn (an expired resource version, which the watch recovers from by listing again, at info)
/// and counts against the API server's reachability ([`health`]).
pub fn report_watch<T>(kind: &str, item: &Result<T, kube::runtime::watcher::Error>) {
    match item {
        Ok(_) => health::global().api_ok(),
        Err(e) if expired(e) => {
            tracing::info!(%kind, error = %e, "watch expired; listing again");
        }
        Err(e) => {
            tracing::warn!(%kind, error = %e, "watch failed; retrying with back-off");
            health::global().api_failed(&e.to_string(), std::time::Instant::now());
        }
    }
}

/// Whether a watch error is `410 Gone` (the resource version is too old).
fn expired(e: &kube::runtime::watcher::Error) -> bool {
    use kube::runtime::watcher::Error;
    match e {
        Error::WatchError(s) => s.code == 410,
        Error::InitialListFailed(kube::Error::Api(s))
        | Error::WatchStartFailed(kube::Error::Api(s))
        | Error::WatchFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
}

/// Logs to stderr with a tracing `EnvFilter` (e.g. `info,tailor_updater=debug`).
pub fn init_logging(filter: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .init();
}
