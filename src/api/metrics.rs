//! The API server's own Prometheus metrics, under the prefix `ebb_api_`.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a served request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// The Kubernetes verb: `list` for values, `get` for discovery and health.
    pub verb: &'static str,
    /// The HTTP status code.
    pub code: u16,
}

type DurationFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// Request duration and in-flight requests.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    pub request_duration_seconds: DurationFamily,
    pub requests_in_flight: Gauge<i64, AtomicI64>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        fn histogram() -> Histogram {
            // 100 µs .. ~1.6 s: values are served from memory, a slow request is a review.
            Histogram::new(exponential_buckets(0.0001, 2.0, 15))
        }
        Self {
            request_duration_seconds: Family::new_with_constructor(histogram),
            requests_in_flight: Gauge::default(),
        }
    }
}

impl ApiMetrics {
    /// Registers the metrics under `<registry prefix>_api_` (`ebb_api_` in ebb's registry).
    pub fn register(&self, registry: &mut Registry) {
        crate::telemetry::register!(registry.sub_registry_with_prefix("api");
            "request_duration_seconds" => self.request_duration_seconds,
                "Time to answer a request, by verb and status code";
            "requests_in_flight" => self.requests_in_flight,
                "Requests being answered";
        );
    }
}
