//! The fence a leader's writers check immediately before each write.
//!
//! A leader renews its Lease every retry period. Each successful renewal, started at `t`, lets
//! it write until `t + renew deadline` by its own monotonic clock. The renew deadline is shorter
//! than the lease duration, and a standby measures the lease duration from the moment it saw the
//! renewal (which is after `t`), so a leader that cannot renew stops writing before any other
//! replica may take over, whatever the two clocks' wall times say.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

/// Whether this replica may write now. Cheap to clone and to check.
#[derive(Clone)]
pub struct Fence(Option<Arc<Deadline>>);

/// Until when writes are allowed: nanoseconds after `origin`, 0 when they are not.
#[derive(Debug)]
struct Deadline {
    origin: Instant,
    until: AtomicU64,
}

impl Fence {
    /// A fence that always holds: for a single replica run without leader election.
    pub fn always() -> Self {
        Self(None)
    }

    /// A fence that does not hold until leader election extends it.
    pub fn new() -> Self {
        Self(Some(Arc::new(Deadline {
            origin: Instant::now(),
            until: AtomicU64::new(0),
        })))
    }

    /// Whether writes are allowed now: the last successful renewal is less than the renew
    /// deadline ago (monotonic clock). Check it immediately before each write.
    pub fn holds(&self) -> bool {
        self.holds_at(Instant::now())
    }

    /// Whether writes are allowed at `now`.
    pub fn holds_at(&self, now: Instant) -> bool {
        match &self.0 {
            None => true,
            Some(d) => match d.until() {
                Some(until) => now < until,
                None => false,
            },
        }
    }

    /// Until when writes are allowed; `None` when they are not, or always are.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.as_ref().and_then(|d| d.until())
    }

    /// Allows writes until `until` (never shortens an allowance already given).
    pub(crate) fn extend_to(&self, until: Instant) {
        if let Some(d) = &self.0 {
            let nanos = until.saturating_duration_since(d.origin).as_nanos();
            let nanos = u64::try_from(nanos).unwrap_or(u64::MAX).max(1);
            d.until.fetch_max(nanos, Ordering::AcqRel);
        }
    }

    /// Stops writes at once.
    pub(crate) fn revoke(&self) {
        if let Some(d) = &self.0 {
            d.until.store(0, Ordering::Release);
        }
    }
}

impl Deadline {
    fn until(&self) -> Option<Instant> {
        match self.until.load(Ordering::Acquire) {
            0 => None,
            n => Some(self.origin + std::time::Duration::from_nanos(n)),
        }
    }
}

impl Default for Fence {
    /// [`Fence::always`]: without leader election every write is allowed.
    fn default() -> Self {
        Self::always()
    }
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("Fence(always)"),
            Some(_) => write!(f, "Fence(holds: {})", self.holds()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn always_holds() {
        let f = Fence::always();
        assert!(f.holds());
        assert!(
            f.clone()
                .holds_at(Instant::now() + Duration::from_secs(3600))
        );
        assert_eq!(f.deadline(), None);
    }

    #[test]
    fn holds_only_before_the_deadline_and_until_revoked() {
        let f = Fence::new();
        let now = Instant::now();
        assert!(!f.holds_at(now), "not held before the first renewal");
        f.extend_to(now + Duration::from_secs(10));
        let seen_by_a_clone = f.clone();
        assert!(seen_by_a_clone.holds_at(now + Duration::from_secs(9)));
        assert!(!seen_by_a_clone.holds_at(now + Duration::from_secs(10)));
        // A late answer to an older attempt never shortens the allowance.
        f.extend_to(now + Duration::from_secs(5));
        assert!(f.holds_at(now + Duration::from_secs(9)));
        f.revoke();
        assert!(!seen_by_a_clone.holds_at(now));
        assert_eq!(f.deadline(), None);
    }
}
