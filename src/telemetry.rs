//! ebb's own telemetry: tracing setup and the Prometheus metrics ebb exposes about itself.
//!
//! One [`Telemetry`] is built at start-up and passed down (no globals). Each component's
//! metrics are a plain struct of metric handles ([`SourceMetrics`], [`CollectMetrics`]),
//! registered under the `ebb_` prefix; components that come later register theirs through
//! [`Telemetry::registry_mut`] before the `Telemetry` is shared. [`Telemetry::encode`] renders
//! the OpenMetrics text that `/metrics` serves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Label set `{source}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct SourceLabels {
    /// `prometheus` or `rabbitmq`.
    pub source: &'static str,
}

/// Label set `{source, kind}`: `kind` is a [`crate::source::SourceError`] variant name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    pub source: &'static str,
    pub kind: &'static str,
}

type HistogramFamily = Family<SourceLabels, Histogram, fn() -> Histogram>;

/// Metrics of the upstream queries (`ebb_source_*`).
#[derive(Clone)]
pub struct SourceMetrics {
    /// `ebb_source_query_duration_seconds{source}`: latency of each upstream query.
    pub query_duration: HistogramFamily,
    /// `ebb_source_errors_total{source,kind}`: failed queries by error kind.
    pub errors: Family<ErrorLabels, Counter>,
    /// `ebb_source_value_age_seconds{source}`: age of the oldest cached value (time since its
    /// last successful fetch), refreshed by the collector's scheduler.
    pub value_age: Family<SourceLabels, Gauge<f64, AtomicU64>>,
}

/// Metrics of the collector (`ebb_collect_*`) and the history (`ebb_history_*`).
#[derive(Clone, Default)]
pub struct CollectMetrics {
    /// `ebb_collect_upstream_queries_total{source}`: queries sent upstream (after dedupe).
    pub upstream_queries: Family<SourceLabels, Counter>,
    /// `ebb_collect_distinct_queries`: distinct queries being polled.
    pub distinct_queries: Gauge,
    /// `ebb_collect_subscriptions`: subscribers to those queries (metrics of ScaledTargets).
    pub subscriptions: Gauge,
    /// `ebb_collect_skipped_total`: fetches skipped because the previous one of the same query
    /// was still running (an upstream slower than the interval).
    pub skipped: Counter,
    /// `ebb_history_bytes`: memory held by the history ring buffers.
    pub history_bytes: Gauge,
}

fn query_duration_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for SourceMetrics {
    fn default() -> Self {
        Self {
            query_duration: Family::new_with_constructor(query_duration_histogram),
            errors: Family::default(),
            value_age: Family::default(),
        }
    }
}

/// The registry with every metric of ebb, and the handles of this layer's metrics.
pub struct Telemetry {
    registry: Registry,
    pub sources: SourceMetrics,
    pub collect: CollectMetrics,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// A registry with prefix `ebb` holding the source and collector metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ebb");
        let sources = SourceMetrics::default();
        let collect = CollectMetrics::default();
        registry.register(
            "source_query_duration_seconds",
            "Latency of upstream metric queries",
            sources.query_duration.clone(),
        );
        registry.register(
            "source_errors",
            "Failed upstream metric queries by error kind",
            sources.errors.clone(),
        );
        registry.register(
            "source_value_age_seconds",
            "Age of the oldest cached value: seconds since its last successful fetch",
            sources.value_age.clone(),
        );
        registry.register(
            "collect_upstream_queries",
            "Queries sent upstream, after deduplication",
            collect.upstream_queries.clone(),
        );
        registry.register(
            "collect_distinct_queries",
            "Distinct queries being polled",
            collect.distinct_queries.clone(),
        );
        registry.register(
            "collect_subscriptions",
            "Subscribers to the polled queries",
            collect.subscriptions.clone(),
        );
        registry.register(
            "collect_skipped",
            "Fetches skipped because the previous fetch of the same query was still running",
            collect.skipped.clone(),
        );
        registry.register(
            "history_bytes",
            "Memory held by the history ring buffers",
            collect.history_bytes.clone(),
        );
        Self {
            registry,
            sources,
            collect,
        }
    }

    /// For components that register their own metrics before the telemetry is shared.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The OpenMetrics text exposition of every registered metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Sets up logging: `RUST_LOG`-style filter from the environment (default `info`), plain text
/// or one JSON object per line. Idempotent: a second call changes nothing.
pub fn init_tracing(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_under_the_ebb_prefix() {
        let t = Telemetry::new();
        t.sources
            .errors
            .get_or_create(&ErrorLabels {
                source: "prometheus",
                kind: "NoData",
            })
            .inc();
        t.sources
            .query_duration
            .get_or_create(&SourceLabels {
                source: "prometheus",
            })
            .observe(0.02);
        let text = t.encode();
        assert!(
            text.contains(r#"ebb_source_errors_total{source="prometheus",kind="NoData"} 1"#),
            "{text}"
        );
        assert!(text.contains("ebb_source_query_duration_seconds_count{source=\"prometheus\"} 1"));
        assert!(text.contains("# TYPE ebb_collect_distinct_queries gauge"));
    }
}
