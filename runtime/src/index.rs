//! The objects of each controller owner, kept from a watch's events beside its cache, so that a
//! workload's pods are found by looking up their owners rather than by going through every pod
//! of the cluster for every object reconciled (at 50,000 pods and 2,500 objects, that was most
//! of both controllers' CPU at rest).
//!
//! The index maps (namespace, the controller owner's kind, its name) to the names of the objects
//! it owns. It follows the watch as kube's reflector does: an applied object is filed under its
//! controller owner, a deleted one removed; a relist builds a new index that replaces the old
//! one when the list is complete, so lookups never see a half-listed cluster. An object whose
//! controller owner changes (an orphan adopted) may stay filed under its old owner too: lookups
//! check each object's owner in the cache, so such an entry is skipped, and it goes at the next
//! relist.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::watcher;

use crate::workload::controller_of;

/// (namespace, owner kind, owner name).
type Owner = (String, String, String);

#[derive(Default)]
struct State {
    live: HashMap<Owner, BTreeSet<String>>,
    /// The index a relist is building.
    building: Option<HashMap<Owner, BTreeSet<String>>>,
}

/// The objects of each controller owner (see the module documentation). Cheap to clone: the
/// clones share one index.
#[derive(Clone, Default)]
#[allow(missing_debug_implementations)]
pub struct OwnerIndex(Arc<RwLock<State>>);

fn owner_of<K: Resource>(obj: &K) -> Option<(Owner, String)> {
    let meta = obj.meta();
    let (kind, name) = controller_of(meta.owner_references.as_ref())?;
    Some((
        (meta.namespace.clone().unwrap_or_default(), kind, name),
        meta.name.clone()?,
    ))
}

fn file(map: &mut HashMap<Owner, BTreeSet<String>>, owner: Owner, name: String) {
    map.entry(owner).or_default().insert(name);
}

impl OwnerIndex {
    /// An index of `objects` (a cache filled from a list, not a watch).
    pub fn of<'a, K: Resource + 'a>(objects: impl IntoIterator<Item = &'a K>) -> Self {
        let index = Self::default();
        if let Ok(mut state) = index.0.write() {
            for (owner, name) in objects.into_iter().filter_map(owner_of) {
                file(&mut state.live, owner, name);
            }
        }
        index
    }

    fn state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows one event of the watch behind the cache.
    pub fn observe<K: Resource>(&self, event: &watcher::Event<K>) {
        let mut state = self.state();
        match event {
            watcher::Event::Init => state.building = Some(HashMap::new()),
            watcher::Event::InitApply(obj) => {
                if let (Some(building), Some((owner, name))) =
                    (state.building.as_mut(), owner_of(obj))
                {
                    file(building, owner, name);
                }
            }
            watcher::Event::InitDone => {
                if let Some(built) = state.building.take() {
                    state.live = built;
                }
            }
            watcher::Event::Apply(obj) => {
                if let Some((owner, name)) = owner_of(obj) {
                    file(&mut state.live, owner, name);
                }
            }
            watcher::Event::Delete(obj) => {
                if let Some((owner, name)) = owner_of(obj)
                    && let Some(names) = state.live.get_mut(&owner)
                {
                    names.remove(&name);
                    if names.is_empty() {
                        state.live.remove(&owner);
                    }
                }
            }
        }
    }

    /// The names of the objects in `namespace` whose controller owner is `kind`/`name`.
    pub fn owned_by(&self, namespace: &str, kind: &str, name: &str) -> Vec<String> {
        let state = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (namespace.to_owned(), kind.to_owned(), name.to_owned());
        state
            .live
            .get(&key)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::OwnerIndex;

    fn pod(name: &str, owner: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner, "uid": "u", "controller": true}]},
        }))
        .unwrap()
    }

    #[test]
    fn objects_are_filed_under_their_controller_and_removed_when_deleted() {
        let index = OwnerIndex::default();
        index.observe(&Event::Apply(pod("a-1", "a")));
        index.observe(&Event::Apply(pod("a-2", "a")));
        index.observe(&Event::Apply(pod("b-1", "b")));
        assert_eq!(index.owned_by("shop", "ReplicaSet", "a"), ["a-1", "a-2"]);
        assert!(index.owned_by("other", "ReplicaSet", "a").is_empty());
        index.observe(&Event::Delete(pod("a-1", "a")));
        assert_eq!(index.owned_by("shop", "ReplicaSet", "a"), ["a-2"]);
        let free: Pod =
            serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "shop"}}))
                .unwrap();
        index.observe(&Event::Apply(free));
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_is_complete() {
        let index = OwnerIndex::default();
        index.observe(&Event::Apply(pod("a-1", "a")));
        index.observe(&Event::<Pod>::Init);
        index.observe(&Event::InitApply(pod("a-2", "a")));
        assert_eq!(
            index.owned_by("shop", "ReplicaSet", "a"),
            ["a-1"],
            "the old index until the list is complete"
        );
        index.observe(&Event::<Pod>::InitDone);
        assert_eq!(
            index.owned_by("shop", "ReplicaSet", "a"),
            ["a-2"],
            "a-1 went while unwatched"
        );
        let listed = OwnerIndex::of(&[pod("c-1", "c")]);
        assert_eq!(listed.owned_by("shop", "ReplicaSet", "c"), ["c-1"]);
    }
}
