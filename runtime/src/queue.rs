//! The work queue both controllers use: keys in, work out, at most `limit` at a time and never
//! two at once for the same key. A key that arrives while its work runs is run once more
//! afterwards; keys that arrive while waiting merge into one run.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

use futures::StreamExt;
use tokio::sync::mpsc;

/// What the queue tells its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A key arrived.
    Received,
    /// The work of a key finished.
    Done,
    /// Nothing runs or waits any more.
    Idle,
}

/// Runs `work` for the keys received until the channel closes and the work is done.
pub async fn run<K, F, Fut>(
    mut keys: mpsc::UnboundedReceiver<K>,
    limit: usize,
    work: F,
    mut progress: impl FnMut(Progress),
) where
    K: Clone + Eq + Hash,
    F: Fn(K) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (mut queued, mut active, mut again) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut backlog = VecDeque::new();
    let mut running = futures::stream::FuturesUnordered::new();
    let limit = limit.max(1);
    loop {
        tokio::select! {
            Some(key) = keys.recv() => {
                progress(Progress::Received);
                if active.contains(&key) {
                    again.insert(key);
                } else if queued.insert(key.clone()) {
                    backlog.push_back(key);
                }
            }
            Some(key) = running.next(), if !running.is_empty() => {
                progress(Progress::Done);
                active.remove(&key);
                if again.remove(&key) && queued.insert(key.clone()) {
                    backlog.push_back(key);
                }
                if backlog.is_empty() && running.is_empty() {
                    progress(Progress::Idle);
                }
            }
            else => return,
        }
        while running.len() < limit
            && let Some(key) = backlog.pop_front()
        {
            queued.remove(&key);
            active.insert(key.clone());
            let run = work(key.clone());
            running.push(async move {
                run.await;
                key
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn keys_merge_run_once_more_and_never_twice_at_once() {
        let (tx, rx) = mpsc::unbounded_channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(Mutex::new(HashSet::new()));
        for k in ["a", "a", "b", "a"] {
            tx.send(k).unwrap();
        }
        let tx2 = tx.clone();
        drop(tx);
        let (l, r) = (log.clone(), running.clone());
        let mut idles = 0;
        let mut sent_again = false;
        let mut tx2 = Some(tx2);
        run(
            rx,
            4,
            move |k: &'static str| {
                let (l, r) = (l.clone(), r.clone());
                async move {
                    assert!(r.lock().unwrap().insert(k), "{k} twice at once");
                    tokio::task::yield_now().await;
                    l.lock().unwrap().push(k);
                    r.lock().unwrap().remove(k);
                }
            },
            |p| {
                if p == Progress::Idle {
                    idles += 1;
                    // Once idle, one more key, then close the channel.
                    if !sent_again {
                        sent_again = true;
                        if let Some(tx) = tx2.take() {
                            tx.send("a").unwrap();
                        }
                    }
                }
            },
        )
        .await;
        let mut log = log.lock().unwrap().clone();
        log.sort_unstable();
        // The second and third "a" arrive while the first runs: they merge into one more run;
        // the "a" sent once idle runs too.
        assert_eq!(log, ["a", "a", "a", "b"]);
        assert_eq!(idles, 2);
    }
}
