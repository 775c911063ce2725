//! Reading the VerticalAutoscaler spec into the model's terms: durations, per-container
//! policy selection, and quantity conversion. Pure.

use tailor_crds::quantity::{cpu_millis, memory_bytes};
use tailor_crds::v1alpha1::{
    ContainerMode, ContainerPolicy, RecommenderPolicy, ResourceName, Resources,
    VerticalAutoscalerSpec,
};

use crate::model::estimator::{Limits, Policy};

/// Parses a Prometheus-style duration (`8d`, `36h`, `1h30m`, `2w`, `500ms`) into seconds.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let err = || format!("duration {text:?}: expected e.g. 8d, 36h, 1h30m, 2w");
    let mut total = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(err());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        if digits == 0 {
            return Err(err());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| err())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 604_800.0,
            "y" => 31_536_000.0,
            _ => return Err(err()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats seconds as a short duration (`7d2h`, `5h30m`, `45m`).
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as i64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h{m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d{h}h"),
    }
}

/// The policy entry for `container`: its own, else `*`, else the defaults.
pub fn container_policy(spec: &VerticalAutoscalerSpec, container: &str) -> ContainerPolicy {
    spec.resource_policy.for_container(container)
}

/// Whether tailor recommends for `container` at all.
pub fn is_controlled(policy: &ContainerPolicy) -> bool {
    policy.mode == ContainerMode::Auto && !policy.controlled_resources.is_empty()
}

/// Whether `resource` is controlled for the container.
pub fn controls(policy: &ContainerPolicy, resource: ResourceName) -> bool {
    policy.controlled_resources.contains(&resource)
}

fn limits(r: Option<&Resources>) -> Result<Limits, String> {
    let Some(r) = r else {
        return Ok(Limits::default());
    };
    Ok(Limits {
        cpu: r
            .cpu
            .as_ref()
            .map(|q| cpu_millis(q).map(|m| m as f64 / 1000.0))
            .transpose()
            .map_err(|e| e.to_string())?,
        memory: r
            .memory
            .as_ref()
            .map(|q| memory_bytes(q).map(|b| b as f64))
            .transpose()
            .map_err(|e| e.to_string())?,
    })
}

/// The model policy for one container. Errors name the offending value.
pub fn model_policy(
    spec: &VerticalAutoscalerSpec,
    container: &ContainerPolicy,
) -> Result<Policy, String> {
    recommender_policy(
        &spec.recommender_policy,
        container.min_allowed.as_ref(),
        container.max_allowed.as_ref(),
    )
}

/// The model policy from a `recommenderPolicy` and a container's `minAllowed`/`maxAllowed`.
pub fn recommender_policy(
    rp: &RecommenderPolicy,
    min_allowed: Option<&Resources>,
    max_allowed: Option<&Resources>,
) -> Result<Policy, String> {
    // The CRD's validation rules, again: the policy may come from elsewhere (`backtest`).
    let check = |name: &str, v: f64, ok: fn(f64) -> bool, what: &str| {
        if v.is_finite() && ok(v) {
            Ok(v)
        } else {
            Err(format!("{name} must be {what}, not {v}"))
        }
    };
    let fraction = |v: f64| v > 0.0 && v <= 1.0;
    let margin = |v: f64| v >= 0.0;
    Ok(Policy {
        cpu_percentile: check("cpu.percentile", rp.cpu.percentile, fraction, "in (0, 1]")?,
        cpu_margin: check("cpu.margin", rp.cpu.margin, margin, ">= 0")?,
        memory_percentile: check(
            "memory.percentile",
            rp.memory.percentile,
            fraction,
            "in (0, 1]",
        )?,
        memory_margin: check("memory.margin", rp.memory.margin, margin, ">= 0")?,
        peak_margin: check("memory.peakMargin", rp.memory.peak_margin, margin, ">= 0")?,
        oom_ratio: check("oomBump.ratio", rp.oom_bump.ratio, |v| v >= 1.0, ">= 1")?,
        max_growth_margin: check(
            "memory.maxGrowthMargin",
            rp.memory.max_growth_margin,
            |v| (0.0..=10.0).contains(&v),
            "between 0 and 10",
        )?,
        oom_min_bump: rp
            .oom_bump
            .min_bump
            .as_ref()
            .map(|q| memory_bytes(q).map(|b| b as f64))
            .transpose()
            .map_err(|e| format!("oomBump.minBump: {e}"))?
            .unwrap_or(0.0),
        min_allowed: limits(min_allowed).map_err(|e| format!("minAllowed: {e}"))?,
        max_allowed: limits(max_allowed).map_err(|e| format!("maxAllowed: {e}"))?,
    })
}
