//! One reflector store fed by several namespaces' watches.
//!
//! A store's writer takes one list at a time: `Init`, `InitApply`s, `InitDone` replace its
//! whole content. Several namespaces' watches cannot each send theirs, or one namespace's list
//! would drop the others' objects. So the merged stream sends one list, of every namespace's
//! objects, once each namespace has listed (the store is then ready); later, when one
//! namespace lists again (its watch was lost), it sends that namespace's listed objects as
//! `Apply` and a `Delete` for each of the namespace's stored objects that is gone.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, BoxStream, Stream, StreamExt};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::Event;

/// An object's namespace and name.
type Key = (String, String);

fn key<K: kube::Resource>(o: &K) -> Key {
    (o.namespace().unwrap_or_default(), o.name_any())
}

/// One namespace's watch.
struct Source<K> {
    namespace: String,
    /// A list in progress: the objects listed so far.
    listing: Option<Vec<K>>,
    /// Until the store is ready: the namespace's objects once it has listed, kept current.
    objects: Option<HashMap<Key, K>>,
}

struct Merge<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    sources: Vec<Source<K>>,
    /// Whether the merged list was sent.
    ready: bool,
    /// The store the merged stream feeds.
    store: Store<K>,
}

impl<K> Merge<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// What the store is sent for `event` of the namespace `i`'s watch.
    fn step(&mut self, i: usize, event: Event<K>) -> Vec<Event<K>> {
        let ready = self.ready;
        let Some(source) = self.sources.get_mut(i) else {
            return Vec::new();
        };
        match event {
            Event::Init => {
                source.listing = Some(Vec::new());
                Vec::new()
            }
            Event::InitApply(o) => {
                source.listing.get_or_insert_with(Vec::new).push(o);
                Vec::new()
            }
            Event::InitDone => {
                let listed = source.listing.take().unwrap_or_default();
                if ready {
                    self.relisted(i, listed)
                } else {
                    source.objects = Some(listed.into_iter().map(|o| (key(&o), o)).collect());
                    self.start()
                }
            }
            Event::Apply(o) if ready => vec![Event::Apply(o)],
            Event::Delete(o) if ready => vec![Event::Delete(o)],
            Event::Apply(o) => {
                if let Some(objects) = &mut source.objects {
                    objects.insert(key(&o), o);
                }
                Vec::new()
            }
            Event::Delete(o) => {
                if let Some(objects) = &mut source.objects {
                    objects.remove(&key(&o));
                }
                Vec::new()
            }
        }
    }

    /// Once every namespace has listed: one list of all their objects, which makes the store
    /// ready.
    fn start(&mut self) -> Vec<Event<K>> {
        if self.sources.iter().any(|s| s.objects.is_none()) {
            return Vec::new();
        }
        self.ready = true;
        let mut out = vec![Event::Init];
        for source in &mut self.sources {
            let objects = source.objects.take().unwrap_or_default();
            out.extend(objects.into_values().map(Event::InitApply));
        }
        out.push(Event::InitDone);
        out
    }

    /// Namespace `i` listed again: its objects as listed, and those stored but gone deleted.
    fn relisted(&self, i: usize, listed: Vec<K>) -> Vec<Event<K>> {
        let Some(ns) = self.sources.get(i).map(|s| s.namespace.as_str()) else {
            return Vec::new();
        };
        let kept: HashSet<Key> = listed.iter().map(key).collect();
        let gone: Vec<Event<K>> = self
            .store
            .state()
            .into_iter()
            .filter(|o| o.namespace().as_deref() == Some(ns) && !kept.contains(&key(o.as_ref())))
            .map(|o| Event::Delete(o.as_ref().clone()))
            .collect();
        listed.into_iter().map(Event::Apply).chain(gone).collect()
    }
}

/// The events of every `(namespace, watch)` of `sources`, for the writer of `store`.
pub(super) fn merge<K>(
    sources: Vec<(String, BoxStream<'static, Event<K>>)>,
    store: Store<K>,
) -> impl Stream<Item = Event<K>> + Send + 'static
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let mut namespaces = Vec::new();
    let mut streams = Vec::new();
    for (i, (ns, events)) in sources.into_iter().enumerate() {
        namespaces.push(Source {
            namespace: ns,
            listing: None,
            objects: None,
        });
        streams.push(events.map(move |e| (i, e)).boxed());
    }
    let state = Merge {
        sources: namespaces,
        ready: false,
        store,
    };
    stream::select_all(streams)
        .scan(state, |state, (i, event)| {
            std::future::ready(Some(state.step(i, event)))
        })
        .flat_map(stream::iter)
}

#[cfg(test)]
mod tests {
    use futures::channel::mpsc::{UnboundedSender, unbounded};
    use futures::{FutureExt, StreamExt};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;
    use kube::runtime::reflector::{self, Store};
    use kube::runtime::watcher::Event;

    fn cm(ns: &str, name: &str) -> ConfigMap {
        let mut o = ConfigMap::default();
        o.metadata.namespace = Some(ns.to_owned());
        o.metadata.name = Some(name.to_owned());
        o
    }

    fn names(store: &Store<ConfigMap>) -> Vec<String> {
        let mut out: Vec<String> = store
            .state()
            .iter()
            .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
            .collect();
        out.sort();
        out
    }

    fn send(tx: &UnboundedSender<Event<ConfigMap>>, events: Vec<Event<ConfigMap>>) {
        for e in events {
            tx.unbounded_send(e).unwrap();
        }
    }

    #[test]
    fn namespaces_list_into_one_store_and_relist_only_their_own_objects() {
        let (a_tx, a_rx) = unbounded();
        let (b_tx, b_rx) = unbounded();
        let (store, writer) = reflector::store::<ConfigMap>();
        let merged = super::merge(
            vec![("a".into(), a_rx.boxed()), ("b".into(), b_rx.boxed())],
            store.clone(),
        );
        let mut applied = Vec::new();
        let mut stream =
            reflector::reflector(writer, merged.map(Ok::<_, kube::runtime::watcher::Error>))
                .boxed();
        let mut drain = |applied: &mut Vec<String>| {
            while let Some(Some(Ok(e))) = stream.next().now_or_never() {
                if let Event::Apply(o) | Event::InitApply(o) = e {
                    applied.push(format!("{}/{}", o.namespace().unwrap(), o.name_any()));
                }
            }
        };
        let ready = |s: &Store<ConfigMap>| s.wait_until_ready().now_or_never().is_some();

        send(
            &a_tx,
            vec![
                Event::Init,
                Event::InitApply(cm("a", "one")),
                Event::InitDone,
            ],
        );
        send(&b_tx, vec![Event::Init, Event::InitApply(cm("b", "two"))]);
        drain(&mut applied);
        assert!(!ready(&store), "ready before every namespace listed");
        // a changes while b still lists; b's list is done.
        send(
            &a_tx,
            vec![
                Event::Apply(cm("a", "three")),
                Event::Delete(cm("a", "one")),
            ],
        );
        send(
            &b_tx,
            vec![Event::InitApply(cm("b", "four")), Event::InitDone],
        );
        drain(&mut applied);
        assert!(ready(&store));
        assert_eq!(names(&store), ["a/three", "b/four", "b/two"]);
        applied.sort();
        assert_eq!(applied, ["a/three", "b/four", "b/two"]);

        // a lists again: three is gone, five is new; b's objects stay.
        applied.clear();
        send(
            &a_tx,
            vec![
                Event::Init,
                Event::InitApply(cm("a", "five")),
                Event::InitDone,
            ],
        );
        drain(&mut applied);
        assert_eq!(names(&store), ["a/five", "b/four", "b/two"]);
        assert_eq!(applied, ["a/five"]);
        // Changes pass through.
        send(&b_tx, vec![Event::Delete(cm("b", "two"))]);
        send(&a_tx, vec![Event::Apply(cm("a", "six"))]);
        drain(&mut applied);
        assert_eq!(names(&store), ["a/five", "a/six", "b/four"]);
    }
}
