//! The ResizeState writes, off the reconcile's path and coalesced.
//!
//! A reconcile that changes an object's record puts it in `Memory::written` (the truth for the
//! next reconcile, whatever the watch cache shows) and marks the object here. This writer
//! applies each marked object's latest record, [`AT_ONCE`] at a time: at once when it holds
//! what a next leader could not learn from the pods (a resize just issued, a cut taken back,
//! a guard raise) or a change of the pending approvals, else [`DELAY`] after its first mark,
//! so that the outcomes of a workload's pods completing one after the other go in one write
//! instead of one per pod. The reconcile does not wait for the API server before its slot
//! takes the next object. A write that fails is tried again after [`RETRY`] (unless a
//! newer record replaced it); nothing is written by a replica that no longer leads. A record
//! not yet written when the process ends is lost as one whose write failed was before: the
//! pods' specs and status still say what was done, and the next leader follows them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use tailor_crds::resize_state::ResizeState;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Context, FIELD_MANAGER, Key};

/// How long after its first change an object's record is written (later changes join it).
pub(super) const DELAY: Duration = Duration::from_secs(2);
/// How long after a failed write it is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Writes in flight at once.
const AT_ONCE: usize = 4;

/// A record waiting to be written.
struct Pending {
    due: Instant,
    /// Bumped by every mark: a failed write is retried only if nothing newer came.
    version: u64,
    state: ResizeState,
}

/// The objects whose record waits to be written.
#[derive(Default)]
pub(super) struct Writes {
    pending: Mutex<HashMap<Key, Pending>>,
    next_version: AtomicU64,
    wake: Notify,
}

impl Writes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn version(&self) -> u64 {
        self.next_version.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// `state` is the object's record now: written at once if `urgent`, else at the due time
    /// of an earlier mark still waiting, else [`DELAY`] from now.
    pub(super) fn mark(&self, key: Key, state: ResizeState, urgent: bool) {
        self.mark_at(key, state, urgent, Instant::now());
    }

    fn mark_at(&self, key: Key, state: ResizeState, urgent: bool, now: Instant) {
        let version = self.version();
        let mut pending = self.lock();
        let due = match pending.get(&key) {
            _ if urgent => now,
            Some(p) => p.due,
            None => now + DELAY,
        };
        pending.insert(
            key,
            Pending {
                due,
                version,
                state,
            },
        );
        drop(pending);
        self.wake.notify_one();
    }

    /// Drops what waits for an object that is gone.
    pub(super) fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().len()
    }

    /// The records due now, taken out; or when the next one is due.
    fn take_due(&self, now: Instant) -> Result<Vec<(Key, Pending)>, Option<Instant>> {
        let mut pending = self.lock();
        let due: Vec<Key> = pending
            .iter()
            .filter(|(_, p)| p.due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            return Err(pending.values().map(|p| p.due).min());
        }
        Ok(due
            .into_iter()
            .filter_map(|k| pending.remove(&k).map(|p| (k, p)))
            .collect())
    }

    /// After a failed write: the record waits again, unless a newer one took its place.
    fn retry(&self, key: Key, failed: Pending, now: Instant) {
        let mut pending = self.lock();
        if pending.get(&key).is_none_or(|p| p.version < failed.version) {
            pending.insert(
                key,
                Pending {
                    due: now + RETRY,
                    ..failed
                },
            );
        }
    }
}

/// Writes the records as they fall due, until the future is dropped.
pub(super) async fn run(ctx: Arc<Context>) {
    loop {
        let batch = match ctx.writes.take_due(Instant::now()) {
            Ok(batch) => batch,
            Err(next) => {
                let woken = ctx.writes.wake.notified();
                match next {
                    Some(at) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {}
                            () = woken => {}
                        }
                    }
                    None => woken.await,
                }
                continue;
            }
        };
        futures::stream::iter(batch)
            .for_each_concurrent(AT_ONCE, |(key, pending)| {
                let ctx = ctx.clone();
                async move {
                    if let Err(failed) = write(&ctx, &key, pending).await {
                        ctx.writes.retry(key, failed, Instant::now());
                    }
                }
            })
            .await;
    }
}

/// Applies one record (server-side apply, the updater owning every field it sets).
async fn write(ctx: &Context, key: &Key, pending: Pending) -> Result<(), Pending> {
    if !ctx.options.fence.holds() {
        ctx.metrics.request("fenced");
        return Ok(());
    }
    let api: Api<ResizeState> = Api::namespaced(ctx.client.clone(), &key.0);
    ctx.metrics.request("status");
    match api
        .patch(
            &key.1,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&pending.state),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(va = %format!("{}/{}", key.0, key.1), error = %e, "ResizeState not written; trying again");
            Err(pending)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{DELAY, RETRY, Writes};
    use tailor_crds::resize_state::{ResizeState, ResizeStateSpec};
    use tokio::time::Instant;

    fn state(uid: &str) -> ResizeState {
        ResizeState::new(
            "web",
            ResizeStateSpec {
                vertical_autoscaler_uid: uid.into(),
                ..Default::default()
            },
        )
    }

    fn uids(w: &Writes, at: Instant) -> Vec<String> {
        w.take_due(at)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, p)| p.state.spec.vertical_autoscaler_uid)
            .collect()
    }

    #[test]
    fn marks_coalesce_and_keep_the_first_due_time() {
        let (w, t0) = (Writes::default(), Instant::now());
        let key = ("shop".to_owned(), "web".to_owned());
        w.mark_at(key.clone(), state("a"), false, t0);
        assert_eq!(
            w.take_due(t0).err(),
            Some(Some(t0 + DELAY)),
            "due after the delay"
        );
        w.mark_at(key.clone(), state("b"), false, t0 + DELAY / 2);
        assert_eq!(
            uids(&w, t0 + DELAY),
            ["b"],
            "one write, the latest, at the first due time"
        );
        assert_eq!(w.waiting(), 0);
        assert_eq!(w.take_due(t0 + DELAY).err(), Some(None), "nothing left");
        w.mark_at(key.clone(), state("c"), false, t0);
        w.mark_at(key.clone(), state("d"), true, t0 + DELAY / 4);
        assert_eq!(
            uids(&w, t0 + DELAY / 4),
            ["d"],
            "an urgent record goes at once"
        );
    }

    #[test]
    fn a_failed_write_waits_again_unless_a_newer_record_came() {
        let (w, t0) = (Writes::default(), Instant::now());
        let key = ("shop".to_owned(), "web".to_owned());
        w.mark_at(key.clone(), state("a"), false, t0);
        let mut due = w.take_due(t0 + DELAY).unwrap_or_default();
        let (k, failed) = due.remove(0);
        w.retry(k, failed, t0 + DELAY);
        assert!(uids(&w, t0 + DELAY).is_empty(), "not at once");
        let mut due = w.take_due(t0 + DELAY + RETRY).unwrap_or_default();
        assert_eq!(due.len(), 1, "retried after RETRY");
        let (k, failed) = due.remove(0);
        w.mark_at(key.clone(), state("newer"), false, t0 + DELAY + RETRY);
        w.retry(k, failed, t0 + DELAY + RETRY);
        assert_eq!(
            uids(&w, t0 + 2 * DELAY + RETRY),
            ["newer"],
            "the failed one did not return"
        );
        w.mark_at(key.clone(), state("c"), false, t0);
        w.forget(&key);
        assert_eq!(w.waiting(), 0);
    }
}
