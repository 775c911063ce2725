//! The startup CPU boost (`containerPolicies[].startupBoost.cpu`). This file is the whole rule.
//!
//! - **At creation** the admission webhook gives a container `factor` x its CPU target
//!   (rounded up to a millicore) or `value`, whichever the policy names, never less than the
//!   target, after `minAllowed`/`maxAllowed` (the boost is an explicit choice, so `maxAllowed`
//!   does not cap it). Its limit follows as for any request. The pod's annotation
//!   `tailor.dev/sized-at-admission` records, per boosted container, the boosted CPU, the
//!   target and the duration.
//! - **While the boost is on** (the pod is not Ready yet, or has been Ready for less than the
//!   recorded duration) the updater leaves that container's CPU alone.
//! - **Once it is over** the updater resizes the CPU to the target, live (CPU never restarts a
//!   container unless its resize policy says so, and no approval is involved), without
//!   `minChange` (the boost is never left in place because it is close to the target), also
//!   under `updateMode: Initial`, which otherwise never resizes a running pod.
//!
//! The recommender leaves the samples of the boost window out of the CPU history (see
//! `tailor_recommender::model::history`), so a boost does not raise the target it returns to.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use tailor_crds::quantity::{cpu_millis, format_cpu_millis};
use tailor_crds::v1alpha1::CpuBoost;

use super::admission::SIZED_ANNOTATION;

/// The boosted CPU (millicores) for `target`, or why the policy cannot be read.
pub fn boosted(target: i64, boost: &CpuBoost) -> Result<i64, String> {
    let raised = match (boost.factor, &boost.value) {
        (Some(f), None) if f.is_finite() && f > 1.0 => {
            let v = (target as f64 * f).ceil();
            if v >= i64::MAX as f64 {
                i64::MAX
            } else {
                v as i64
            }
        }
        (None, Some(q)) => cpu_millis(q).map_err(|e| format!("startupBoost.cpu.value: {e}"))?,
        _ => return Err("startupBoost.cpu needs exactly one of factor (above 1) and value".into()),
    };
    Ok(raised.max(target))
}

/// A boost given to one container at creation, as the pod's annotation records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Given {
    /// The container.
    pub container: String,
    /// The CPU it was given (millicores).
    pub boosted: i64,
    /// The target it returns to (millicores).
    pub target: i64,
    /// How long after the pod is Ready (seconds).
    pub duration: i64,
}

/// The boosts recorded on `pod` (none when it was not sized at creation with a boost).
pub fn given(pod: &Pod) -> Vec<Given> {
    let Some(text) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SIZED_ANNOTATION))
    else {
        return Vec::new();
    };
    let Ok(record) = serde_json::from_str::<Value>(text) else {
        return Vec::new();
    };
    let Some(boosts) = record.get("boost").and_then(Value::as_object) else {
        return Vec::new();
    };
    let millis = |v: Option<&Value>| {
        let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(v?.as_str()?.to_owned());
        cpu_millis(&q).ok()
    };
    boosts
        .iter()
        .filter_map(|(container, b)| {
            Some(Given {
                container: container.clone(),
                boosted: millis(b.get("cpu"))?,
                target: millis(b.get("target"))?,
                duration: b.get("durationSeconds")?.as_i64()?.max(0),
            })
        })
        .collect()
}

/// The record of one boost, for the annotation.
pub fn record(boosted: i64, target: i64, duration: i64) -> Value {
    serde_json::json!({
        "cpu": format_cpu_millis(boosted).0,
        "target": format_cpu_millis(target).0,
        "durationSeconds": duration,
    })
}

/// Since when the pod has been Ready (Unix seconds), if it is.
fn ready_since(pod: &Pod) -> Option<i64> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(0, |t| t.0.as_second())
        })
}

/// When a boost of `duration` seconds on `pod` ends (Unix seconds), once the pod is Ready.
pub fn until(pod: &Pod, duration: i64) -> Option<i64> {
    ready_since(pod).map(|since| since.saturating_add(duration))
}

/// Whether a boost of `duration` seconds on `pod` is still on at `now` (Unix seconds): the pod
/// is not Ready, or has been Ready for less than `duration`.
pub fn on(pod: &Pod, duration: i64, now: i64) -> bool {
    until(pod, duration).is_none_or(|end| now < end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn boost(factor: Option<f64>, value: Option<&str>) -> CpuBoost {
        CpuBoost {
            factor,
            value: value.map(|v| Quantity(v.into())),
            duration: "60s".into(),
        }
    }

    #[test]
    fn a_factor_or_a_value_never_below_the_target() {
        assert_eq!(boosted(250, &boost(Some(2.0), None)), Ok(500));
        assert_eq!(boosted(333, &boost(Some(1.5), None)), Ok(500));
        assert_eq!(boosted(250, &boost(None, Some("1"))), Ok(1000));
        assert_eq!(boosted(2000, &boost(None, Some("1"))), Ok(2000));
        assert_eq!(
            boosted(i64::MAX / 2, &boost(Some(100.0), None)),
            Ok(i64::MAX)
        );
        assert!(boosted(250, &boost(None, None)).is_err());
        assert!(boosted(250, &boost(Some(2.0), Some("1"))).is_err());
        assert!(boosted(250, &boost(Some(f64::NAN), None)).is_err());
        assert!(boosted(250, &boost(None, Some("lots"))).is_err());
    }

    fn pod(annotation: Option<Value>, ready_at: Option<&str>) -> Pod {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        if let Some(a) = annotation {
            p["metadata"]["annotations"] = json!({SIZED_ANNOTATION: a.to_string()});
        }
        if let Some(t) = ready_at {
            p["status"] = json!({"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}]});
        }
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn the_recorded_boost_is_read_back() {
        let a = json!({"verticalAutoscaler": "web", "boost": {"app": record(500, 250, 60)}});
        assert_eq!(
            given(&pod(Some(a), None)),
            vec![Given {
                container: "app".into(),
                boosted: 500,
                target: 250,
                duration: 60
            }]
        );
        assert!(given(&pod(Some(json!({"verticalAutoscaler": "web"})), None)).is_empty());
        assert!(given(&pod(None, None)).is_empty());
    }

    #[test]
    fn the_boost_lasts_until_ready_plus_its_duration() {
        // 2026-01-01T00:00:00Z
        let t0 = 1_767_225_600;
        assert!(on(&pod(None, None), 60, t0 + 10_000));
        let ready = pod(None, Some("2026-01-01T00:00:00Z"));
        assert!(on(&ready, 60, t0 + 59));
        assert!(!on(&ready, 60, t0 + 60));
    }
}
