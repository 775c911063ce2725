//! The webhook's metrics, registered with the updater's (see [`crate::metrics`]).
//!
//! | metric | labels | what |
//! | --- | --- | --- |
//! | `tailor_admission_requests_total` | `webhook` = `size`, `gate`; `outcome` | admission requests answered, by outcome: `sized`, `unchanged`, `not_managed`, `no_recommendation`, `declined`, `not_ready`, `invalid` (size); `allowed`, `denied`, `not_ready`, `invalid` (gate) |
//! | `tailor_admission_duration_seconds` | `webhook` | time to answer, from the request read to the response built |
//! | `tailor_admission_certificate_expiry_timestamp_seconds` | | when the serving certificate in use expires (self-managed certificates) |

use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    webhook: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: String,
}

/// The webhook's metrics, and whether it is ready to answer.
#[derive(Debug)]
pub struct AdmissionMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<WebhookLabels, Histogram>,
    expiry: Gauge,
    /// The webhook is enabled and its caches or certificate are not ready yet.
    waiting: AtomicBool,
}

/// Every (webhook, outcome) a request can be counted under.
const OUTCOMES: &[(&str, &[&str])] = &[
    (
        "size",
        &[
            "sized",
            "unchanged",
            "not_managed",
            "no_recommendation",
            "declined",
            "not_ready",
            "invalid",
        ],
    ),
    ("gate", &["allowed", "denied", "not_ready", "invalid"]),
];

impl Default for AdmissionMetrics {
    /// The metrics, every series present from the start (at 0), so that rates and ratios over
    /// them are defined before the first request, and with the webhook off.
    fn default() -> Self {
        let m = Self {
            requests: Family::default(),
            // 100 µs to ~1.6 s.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 15))
            }),
            expiry: Gauge::default(),
            waiting: AtomicBool::new(false),
        };
        for (webhook, outcomes) in OUTCOMES {
            for outcome in *outcomes {
                let labels = RequestLabels {
                    webhook: (*webhook).to_owned(),
                    outcome: (*outcome).to_owned(),
                };
                let _ = m.requests.get_or_create(&labels);
            }
            let _ = m.duration.get_or_create(&WebhookLabels {
                webhook: (*webhook).to_owned(),
            });
        }
        m
    }
}

impl AdmissionMetrics {
    /// Registers the metrics with `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tailor_admission_requests",
            "Admission requests answered, by webhook and outcome",
            self.requests.clone(),
        );
        registry.register(
            "tailor_admission_duration_seconds",
            "Time to answer an admission request",
            self.duration.clone(),
        );
        registry.register(
            "tailor_admission_certificate_expiry_timestamp_seconds",
            "When the webhook's serving certificate expires",
            self.expiry.clone(),
        );
    }

    /// Counts one answer and its duration.
    pub fn answered(&self, webhook: &str, outcome: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                webhook: webhook.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.duration
            .get_or_create(&WebhookLabels {
                webhook: webhook.to_owned(),
            })
            .observe(seconds);
    }

    /// Sets when the serving certificate expires.
    pub fn certificate_expires(&self, unix: i64) {
        self.expiry.set(unix);
    }

    /// Sets whether the webhook still waits for its caches or certificate.
    pub fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }

    /// Whether the webhook still waits.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }
}
