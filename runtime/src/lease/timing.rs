//! The three durations of leader election (client-go's `LeaseDuration`, `RenewDeadline`,
//! `RetryPeriod`), their flags, and when a holder's lease has run out.

use std::time::Duration;

use tokio::time::Instant;

/// How long a Lease lasts, how long a leader may go without renewing it, how often to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a standby waits, from when it last saw the Lease record change, before it
    /// takes the Lease over.
    pub lease_duration: Duration,
    /// How long a leader keeps writing after its last successful renewal. Shorter than the
    /// lease duration, so it stops before a standby can take over.
    pub renew_deadline: Duration,
    /// How often each replica tries to acquire or renew the Lease.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's defaults: 15 s, 10 s, 2 s.
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// Checks that retry period < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("--leader-elect-retry-period must be positive".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--leader-elect-renew-deadline ({:?}) must be shorter than --leader-elect-lease-duration ({:?}): a leader must stop writing before a standby may take over",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period >= self.renew_deadline {
            return Err(format!(
                "--leader-elect-retry-period ({:?}) must be shorter than --leader-elect-renew-deadline ({:?}): a leader must get to retry a renewal before it gives up",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// The lease duration written into the Lease, in whole seconds, rounded up (standbys wait
    /// at least as long as this replica assumes).
    pub fn lease_seconds(&self) -> i32 {
        // A float-to-int `as` cast saturates.
        (self.lease_duration.as_secs_f64().ceil() as i32).max(1)
    }
}

/// The leader election timing flags, shared by both binaries.
#[derive(Debug, Clone, clap::Args)]
pub struct TimingArgs {
    /// How long a standby waits, from when it last saw the Lease change, before it takes the
    /// Lease over (e.g. 15s, 1m; a bare number is seconds).
    #[arg(
        long = "leader-elect-lease-duration",
        alias = "lease-duration-seconds",
        env = "TAILOR_LEASE_DURATION_SECONDS",
        default_value = "15s",
        value_parser = parse_duration
    )]
    pub lease_duration: Duration,
    /// How long the leader keeps writing without a successful renewal; it stops writing after
    /// it. Must be shorter than the lease duration.
    #[arg(
        long = "leader-elect-renew-deadline",
        env = "TAILOR_LEASE_RENEW_DEADLINE",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub renew_deadline: Duration,
    /// How often each replica tries to acquire or renew the Lease. Must be shorter than the
    /// renew deadline.
    #[arg(
        long = "leader-elect-retry-period",
        env = "TAILOR_LEASE_RETRY_PERIOD",
        default_value = "2s",
        value_parser = parse_duration
    )]
    pub retry_period: Duration,
}

impl TimingArgs {
    /// The validated timing.
    pub fn timing(&self) -> Result<Timing, String> {
        let timing = Timing {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        };
        timing.validate()?;
        Ok(timing)
    }
}

/// A duration as in Go (`1m30s`, `1.5s`, `500ms`, `2h`), or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration (e.g. 15s, 500ms, 1m30s, or seconds)");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).map_err(|_| bad());
    }
    let mut total = 0.0;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..split].parse().map_err(|_| bad())?;
        let unit_end = rest[split..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .map_or(rest.len(), |i| split + i);
        let scale = match &rest[split..unit_end] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// What this replica last saw of the Lease record, and when by its own monotonic clock.
///
/// A holder's lease runs out `leaseDurationSeconds` after this replica last saw the record
/// change (holder, renewTime or resourceVersion), never by comparing the holder's renewTime
/// with this replica's wall clock: the two clocks may disagree by any amount.
#[derive(Debug, Default)]
pub(crate) struct Observed {
    record: Option<Record>,
    at: Option<Instant>,
    duration: Duration,
}

/// The parts of a Lease whose change shows that its holder is alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub holder: String,
    pub renew_time: String,
    pub resource_version: String,
}

impl Observed {
    /// Notes the record seen at `now`, lasting `duration`; the clock restarts only when the
    /// record differs from the one seen before.
    pub fn observe(&mut self, record: Record, duration: Duration, now: Instant) {
        if self.record.as_ref() != Some(&record) {
            self.record = Some(record);
            self.at = Some(now);
        }
        self.duration = duration;
    }

    /// Whether the record has not changed for its lease duration.
    pub fn expired(&self, now: Instant) -> bool {
        self.at
            .is_none_or(|at| now.saturating_duration_since(at) >= self.duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, renew: &str, rv: &str) -> Record {
        Record {
            holder: holder.into(),
            renew_time: renew.into(),
            resource_version: rv.into(),
        }
    }

    #[test]
    fn expiry_runs_from_when_the_record_last_changed_here() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut o = Observed::default();
        assert!(o.expired(t0), "nothing seen yet");
        // The holder's renewTime may be far in the past or future by our clock: irrelevant.
        o.observe(rec("a", "2001-01-01T00:00:00Z", "1"), s(15), t0);
        assert!(!o.expired(t0 + s(14)));
        // The same record seen again does not restart the clock.
        o.observe(rec("a", "2001-01-01T00:00:00Z", "1"), s(15), t0 + s(10));
        assert!(o.expired(t0 + s(15)));
        // A renewal (new renewTime and resourceVersion) restarts it.
        o.observe(rec("a", "2001-01-01T00:00:02Z", "2"), s(15), t0 + s(16));
        assert!(!o.expired(t0 + s(30)));
        assert!(o.expired(t0 + s(31)));
        // A released Lease lasts its 1 second.
        o.observe(rec("", "2001-01-01T00:00:03Z", "3"), s(1), t0 + s(40));
        assert!(o.expired(t0 + s(41)));
    }

    #[test]
    fn durations_parse_like_go_and_bare_seconds() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("15").unwrap(), ms(15_000));
        assert_eq!(parse_duration("15s").unwrap(), ms(15_000));
        assert_eq!(parse_duration("1.5s").unwrap(), ms(1_500));
        assert_eq!(parse_duration("500ms").unwrap(), ms(500));
        assert_eq!(parse_duration("1m30s").unwrap(), ms(90_000));
        assert_eq!(parse_duration("2h").unwrap(), ms(7_200_000));
        for bad in ["", "s", "15x", "-1", "1..5s", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn timing_is_validated_with_the_flag_names() {
        assert_eq!(Timing::default().validate(), Ok(()));
        let s = Duration::from_secs;
        let t = Timing {
            lease_duration: s(10),
            renew_deadline: s(10),
            retry_period: s(2),
        };
        let e = t.validate().unwrap_err();
        assert!(e.contains("--leader-elect-renew-deadline"), "{e}");
        let t = Timing {
            lease_duration: s(15),
            renew_deadline: s(2),
            retry_period: s(2),
        };
        let e = t.validate().unwrap_err();
        assert!(e.contains("--leader-elect-retry-period"), "{e}");
        let t = Timing {
            lease_duration: Duration::from_millis(2_500),
            ..Timing::default()
        };
        assert_eq!(t.lease_seconds(), 3);
    }
}
