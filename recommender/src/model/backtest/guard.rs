//! The live memory guard, modelled at the trace's own resolution (tailor only: VPA and KRR
//! have no such thing).
//!
//! In a cluster (Kubernetes 1.35 and later, `InPlace` mode) tailor's updater watches each
//! container's working set against its memory limit at every scrape. When the use is above
//! `threshold` x the limit, it raises the limit live to use x (1 + `step`): never lower than
//! the limit in force, never above `maxAllowed`, at most once per `min_interval` per pod.
//!
//! Here, after a scored sample whose use is above `threshold` x the memory in force (and not
//! above it: that is a kill), the memory in force becomes max(in force, use x (1 + `step`))
//! from the next sample on, not for the sample that triggered it: a jump from below the
//! threshold to above the limit between two samples is still a kill. The policy is told of the
//! raise at once (the estimator keeps the memory at least at the raise for its window), so its
//! next decision does not cut back below it.

/// The guard's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Guard {
    /// Whether the guard is modelled at all.
    pub enabled: bool,
    /// Raise when the use is above this share of the memory in force, in (0, 1).
    pub threshold: f64,
    /// Raise to use x (1 + `step`), >= 0.
    pub step: f64,
    /// Seconds from one raise to the next of the same container, >= 0.
    pub min_interval: f64,
}

impl Default for Guard {
    fn default() -> Self {
        Self {
            enabled: true,
            threshold: 0.9,
            step: 0.5,
            min_interval: 60.0,
        }
    }
}

impl Guard {
    /// The guard turned off.
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// Refuses settings the guard cannot run with, naming the setting (`threshold`, `step`,
    /// `min-interval`).
    pub fn check(&self) -> Result<(), String> {
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(format!(
                "threshold: must be above 0 and below 1, not {}",
                self.threshold
            ));
        }
        if !(self.step.is_finite() && self.step >= 0.0) {
            return Err(format!(
                "step: must be a finite number >= 0, not {}",
                self.step
            ));
        }
        if !(self.min_interval.is_finite() && self.min_interval >= 0.0) {
            return Err(format!(
                "min-interval: must be a finite number of seconds >= 0, not {}",
                self.min_interval
            ));
        }
        Ok(())
    }

    /// What the guard raises the memory to after a sample of `used` bytes at `t` with
    /// `applied` bytes in force, its last raise at `last` and `max_allowed` as the ceiling;
    /// `None` when it leaves the memory alone.
    pub fn raise(
        &self,
        t: f64,
        used: f64,
        applied: f64,
        last: Option<f64>,
        max_allowed: Option<f64>,
    ) -> Option<f64> {
        if !self.enabled || used <= self.threshold * applied || used > applied {
            return None;
        }
        if last.is_some_and(|l| t - l < self.min_interval) {
            return None;
        }
        let to = used * (1.0 + self.step);
        let to = max_allowed.map_or(to, |m| to.min(m));
        (to > applied).then_some(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

    #[test]
    fn bad_settings_are_refused_with_the_setting_named() {
        assert!(Guard::default().check().is_ok());
        for (guard, what) in [
            (0.0, 0.2, 60.0),
            (1.0, 0.2, 60.0),
            (f64::NAN, 0.2, 60.0),
            (0.9, -0.1, 60.0),
            (0.9, f64::NAN, 60.0),
            (0.9, f64::INFINITY, 60.0),
            (0.9, 0.2, -1.0),
            (0.9, 0.2, f64::NAN),
        ]
        .map(|(threshold, step, min_interval)| Guard {
            enabled: true,
            threshold,
            step,
            min_interval,
        })
        .into_iter()
        .zip([
            "threshold",
            "threshold",
            "threshold",
            "step",
            "step",
            "step",
            "min-interval",
            "min-interval",
        ]) {
            let err = guard.check().unwrap_err();
            assert!(err.starts_with(what), "{guard:?}: {err}");
        }
    }

    #[test]
    fn raises_above_the_threshold_only_and_never_lowers() {
        let g = Guard::default();
        // At or below 90% of the memory in force: nothing.
        assert_eq!(g.raise(0.0, 0.9 * GIB, GIB, None, None), None);
        // Above: use x 1.5.
        let to = g.raise(0.0, 0.95 * GIB, GIB, None, None).unwrap();
        assert!((to - 1.425 * GIB).abs() < 1.0, "{to}");
        // Above the memory in force is a kill, not the guard's.
        assert_eq!(g.raise(0.0, 1.01 * GIB, GIB, None, None), None);
        // No step: use x 1 is below what is in force, so nothing (never lower).
        let flat = Guard {
            step: 0.0,
            ..g.clone()
        };
        assert_eq!(flat.raise(0.0, 0.95 * GIB, GIB, None, None), None);
        // maxAllowed caps the raise; at the cap, nothing.
        assert_eq!(
            g.raise(0.0, 0.95 * GIB, GIB, None, Some(1.1 * GIB)),
            Some(1.1 * GIB)
        );
        assert_eq!(g.raise(0.0, 0.95 * GIB, GIB, None, Some(GIB)), None);
        // Turned off: nothing.
        assert_eq!(Guard::off().raise(0.0, 0.95 * GIB, GIB, None, None), None);
    }

    #[test]
    fn the_min_interval_is_respected() {
        let g = Guard {
            min_interval: 300.0,
            ..Guard::default()
        };
        assert_eq!(g.raise(1000.0, 0.95 * GIB, GIB, Some(800.0), None), None);
        assert!(
            g.raise(1100.0, 0.95 * GIB, GIB, Some(800.0), None)
                .is_some()
        );
    }
}
