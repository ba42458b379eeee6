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

/// Registers metric handles, one `"name" => handle, "help";` entry each (each handle is
/// cloned: the caller keeps its own). The one way ebb's components register their metrics.
macro_rules! register {
    ($registry:expr; $($name:literal => $metric:expr, $help:literal;)+) => {{
        let registry: &mut prometheus_client::registry::Registry = $registry;
        $(registry.register($name, $help, $metric.clone());)+
    }};
}
pub(crate) use register;

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

/// Metrics of the collector (`ebb_collect_*`).
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
    /// A registry with prefix `ebb` holding the source, collector and process metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ebb");
        let sources = SourceMetrics::default();
        let collect = CollectMetrics::default();
        register!(&mut registry;
            "source_query_duration_seconds" => sources.query_duration,
                "Latency of upstream metric queries";
            "source_errors" => sources.errors,
                "Failed upstream metric queries by error kind";
            "source_value_age_seconds" => sources.value_age,
                "Age of the oldest cached value: seconds since its last successful fetch";
            "collect_upstream_queries" => collect.upstream_queries,
                "Queries sent upstream, after deduplication";
            "collect_distinct_queries" => collect.distinct_queries,
                "Distinct queries being polled";
            "collect_subscriptions" => collect.subscriptions,
                "Subscribers to the polled queries";
            "collect_skipped" => collect.skipped,
                "Fetches skipped because the previous fetch of the same query was still running";
        );
        registry.register_collector(Box::new(ProcessCollector));
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

    /// The OpenMetrics text exposition of every registered metric, written into `out`.
    pub fn encode_into(&self, out: &mut dyn std::fmt::Write) -> std::fmt::Result {
        prometheus_client::encoding::text::encode(&mut &mut *out, &self.registry)
    }

    /// The exposition as a String (tests, one-off reads).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        self.encode_into(&mut out)
            .expect("writing to a String cannot fail");
        out
    }
}

/// `ebb_process_*`, read from `/proc/self` when Prometheus scrapes (nothing in between). No
/// series where `/proc` is missing.
#[derive(Debug)]
struct ProcessCollector;

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    threads: u64,
}

impl ProcessStats {
    /// Parses `/proc/self/stat`: fields after the command name (which may hold spaces and
    /// parentheses, hence the last `)`), numbered from 3 as in proc(5).
    fn parse(stat: &str, ticks_per_second: f64, page_size: u64) -> Option<Self> {
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks_per_second,
            threads: field(20)?,
            resident_bytes: field(24)? * page_size,
        })
    }

    fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // SAFETY: sysconf only reads configuration values.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        Self::parse(&stat, ticks.max(1) as f64, page.max(1) as u64)
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
        ConstCounter::new(p.cpu_seconds).encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time of the ebb process",
            None,
            MetricType::Counter,
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory of the ebb process",
                p.resident_bytes,
            ),
            ("process_threads", "Threads of the ebb process", p.threads),
            (
                "process_open_fds",
                "Open file descriptors of the ebb process",
                open_fds,
            ),
        ] {
            ConstGauge::new(value as i64).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)?;
        }
        Ok(())
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
        assert!(
            text.contains("ebb_process_resident_memory_bytes "),
            "{text}"
        );
        assert!(text.contains("ebb_process_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn proc_stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (ebb (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 \
                    1234 123456789 2048 18446744073709551615";
        let p = ProcessStats::parse(stat, 100.0, 4096).unwrap();
        assert_eq!(
            p,
            ProcessStats {
                cpu_seconds: 3.0,
                resident_bytes: 2048 * 4096,
                threads: 7,
            }
        );
        assert_eq!(ProcessStats::parse("garbage", 100.0, 4096), None);
    }
}
