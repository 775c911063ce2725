//! How a limit follows its request under `controlledValues: RequestsAndLimits` in a Burstable
//! pod (a Guaranteed container's limit is its request; under `RequestsOnly` limits stay). This
//! file is the whole rule:
//!
//! 1. **In proportion.** new limit = current limit x new request / current request, rounded
//!    up (memory: to a whole MiB, so `701Mi` rather than `735401302`), never below the new
//!    request. Without a current request (or with one of 0) the limit only rises to the new
//!    request.
//! 2. **Capped.** The limit never exceeds the ceiling
//!    `max(current limit, min(new request x MAX_LIMIT_RATIO, maxAllowed))` (10 x; `maxAllowed`
//!    of the container's policy, when set). A wide ratio therefore does not run away: request
//!    1Mi / limit 1Gi resized to a 512Mi request gets a 5Gi limit, not 512Gi; request 1m /
//!    limit 2 resized to 500m gets 5, not 1000. The cap never lowers a limit below its current
//!    value (that would be a memory decrease nobody asked for) nor below the new request.
//! 3. **Exact.** Integer arithmetic only (i128 for the proportion, checked or saturating
//!    elsewhere); a value past `i64::MAX` stops there.
//!
//! Limits are never added or removed, so the QoS class only changes if every request ends up
//! equal to its limit; the caller checks the whole pod for that.

use tailor_crds::v1alpha1::ResourceName;

/// A derived limit is at most this many times its request (unless the current limit is
/// already higher, which is kept).
pub const MAX_LIMIT_RATIO: i64 = 10;

/// Bytes in a MiB.
const MIB: i64 = 1024 * 1024;

/// A limit derived from a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Derived {
    /// The new limit.
    pub limit: i64,
    /// The cap held it below the proportion (the ceiling it stopped at).
    pub capped_at: Option<i64>,
}

/// `value * num / den`, rounded up, without overflow (saturates at `i64::MAX`).
pub fn scale(value: i64, num: i64, den: i64) -> i64 {
    if den <= 0 {
        return value;
    }
    let v = (i128::from(value) * i128::from(num) + i128::from(den) - 1) / i128::from(den);
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `value` rounded up to a whole MiB; `value` itself where that would overflow.
pub(super) fn round_up_mib(value: i64) -> i64 {
    if value % MIB == 0 {
        return value;
    }
    value
        .checked_div(MIB)
        .and_then(|m| m.checked_add(1))
        .and_then(|m| m.checked_mul(MIB))
        .unwrap_or(value)
}

/// The new limit of `resource` when its request moves from `request` to `want`, given the
/// current `limit` and the policy's `max_allowed`.
pub fn derive(
    resource: ResourceName,
    request: Option<i64>,
    limit: i64,
    want: i64,
    max_allowed: Option<i64>,
) -> Derived {
    let proportional = match request {
        Some(req) if req > 0 => scale(limit, want, req).max(want),
        _ => limit.max(want),
    };
    let rounded = if resource == ResourceName::Memory && proportional != limit {
        round_up_mib(proportional)
    } else {
        proportional
    };
    let by_ratio = want.saturating_mul(MAX_LIMIT_RATIO);
    let ceiling = limit.max(max_allowed.map_or(by_ratio, |m| m.min(by_ratio)));
    let limit = rounded.min(ceiling).max(want);
    Derived {
        limit,
        capped_at: (limit < rounded).then_some(limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MI: i64 = MIB;
    const GI: i64 = 1024 * MIB;

    fn mem(request: i64, limit: i64, want: i64, max: Option<i64>) -> i64 {
        derive(ResourceName::Memory, Some(request), limit, want, max).limit
    }

    #[test]
    fn a_wide_ratio_is_capped_at_ten_times_the_request() {
        // 1Mi / 1Gi to 512Mi: the proportion would be 512Gi.
        let d = derive(ResourceName::Memory, Some(MI), GI, 512 * MI, None);
        assert_eq!(d.limit, 5 * GI);
        assert_eq!(d.capped_at, Some(5 * GI));
        // 1m / 2 cores to 500m: the proportion would be 1000 cores.
        let d = derive(ResourceName::Cpu, Some(1), 2000, 500, None);
        assert_eq!(d.limit, 5000);
        assert_eq!(d.capped_at, Some(5000));
    }

    #[test]
    fn ordinary_ratios_are_kept_and_rounded_up_to_mib() {
        assert_eq!(mem(100 * MI, 300 * MI, 200 * MI, None), 600 * MI);
        // 526Mi x 512/384 = 701.33Mi
        assert_eq!(mem(384 * MI, 512 * MI, 526 * MI, None), 702 * MI);
        let cpu = derive(ResourceName::Cpu, Some(100), 200, 300, None);
        assert_eq!(
            cpu,
            Derived {
                limit: 600,
                capped_at: None
            }
        );
    }

    #[test]
    fn max_allowed_caps_a_rise_but_never_cuts_the_current_limit() {
        assert_eq!(mem(100 * MI, 200 * MI, 400 * MI, Some(500 * MI)), 500 * MI);
        // The current limit is already above maxAllowed: it stays.
        assert_eq!(mem(100 * MI, GI, 200 * MI, Some(500 * MI)), GI);
        // Never below the new request, even when maxAllowed is lower (the memory floor).
        assert_eq!(mem(100 * MI, 200 * MI, 600 * MI, Some(500 * MI)), 600 * MI);
    }

    #[test]
    fn a_ratio_above_the_cap_keeps_the_current_limit_and_scales_down_in_proportion() {
        // 100m / 4 (x40) up to 200m: 8 would be x40; the current 4 stays.
        let up = derive(ResourceName::Cpu, Some(100), 4000, 200, None);
        assert_eq!(up.limit, 4000);
        // Down to 50m: in proportion, 2.
        assert_eq!(
            derive(ResourceName::Cpu, Some(100), 4000, 50, None).limit,
            2000
        );
    }

    #[test]
    fn nothing_overflows_at_the_top_of_the_range() {
        let top = i64::MAX;
        // A limit next to i64::MAX that is not a whole MiB: the rounding would overflow.
        assert_eq!(mem(1, top - 1, top - 2, None), top);
        assert_eq!(mem(MI, top, top, None), top);
        assert_eq!(mem(1, top, 1, None), top);
        assert_eq!(
            derive(ResourceName::Cpu, Some(1), 1000, top, None).limit,
            top
        );
        assert_eq!(scale(top, top, 1), top);
    }
}
