//! Metric sources: one module per upstream (Prometheus, RabbitMQ) behind one small trait,
//! [`Source`], that yields one number or a typed [`SourceError`].
//!
//! Three kinds of types live here:
//! - the **configuration** a user writes in a ScaledTarget ([`PrometheusConfig`],
//!   [`RabbitMqConfig`]: serde + JSON schema, camelCase), which names Secrets but holds none;
//! - the **resolved query** ([`Query`]): the configuration with its Secret read, so it holds
//!   everything needed to fetch. It is hashable and is the dedupe key of the collector: two
//!   ScaledTargets that ask the same thing of the same upstream with the same credentials share
//!   one upstream query per interval;
//! - the **sources** themselves ([`prometheus::PrometheusSource`], [`rabbitmq::RabbitMqSource`]),
//!   built from a [`Query`] by [`Connections`], which shares HTTP clients and AMQP connections per
//!   upstream.
//!
//! "No data" (an empty result, NaN, ±Inf) is an error, [`SourceError::NoData`], never a zero: KEDA
//! users have been scaled to the minimum at peak because an empty result read as 0. A metric may
//! say explicitly what empty means (`emptyAs`); that is applied when the value is read
//! ([`apply_empty_as`]), so the cached upstream result stays the truth.

pub mod prometheus;
pub mod rabbitmq;
pub mod secret;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

pub use prometheus::{
    HeaderValueFrom, PrometheusAuth, PrometheusConfig, PrometheusHeader, PrometheusQuery,
    SecretKeyRef,
};
pub use rabbitmq::{Aggregate, Measure, RabbitMqConfig, RabbitMqQuery};
pub use secret::{SecretAccess, SecretData, SecretRef, Secrets, TlsMaterial};

/// Why a source gave no value. The variant name is the `kind` label of
/// `ebb_source_errors_total` (see [`SourceError::kind`]). Cloneable, so the collector can cache
/// it next to the values.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SourceError {
    /// The query ran but returned nothing (an empty vector, no matching queue, NaN, ±Inf).
    #[error("no data: {0}")]
    NoData(String),
    /// The upstream could not be reached (connection refused, DNS, reset, broker down).
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// No answer within the query's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The upstream answered with an HTTP error status.
    #[error("HTTP {status}: {message}")]
    Http { status: u16, message: String },
    /// A Prometheus query returned more than one series where one number is needed.
    #[error(
        "the query returned {series} series, one is needed: use an aggregation such as \
         sum(...), max(...) or avg(...) to reduce it to one"
    )]
    Ambiguous { series: usize },
    /// The upstream refused the credentials (HTTP 401/403, AMQP access refused).
    #[error("authentication refused: {0}")]
    Auth(String),
    /// The upstream rejected the query itself (bad PromQL, wrong result type).
    #[error("query rejected: {0}")]
    Query(String),
    /// The queue (or vhost) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The Secret a metric names does not exist in the target's namespace.
    #[error("{0}")]
    SecretNotFound(String),
    /// The Secret lies outside the namespaces ebb may read Secrets in.
    #[error("{0}")]
    SecretRestricted(String),
    /// The metric's configuration or its Secret is unusable (missing key, bad PEM, bad regex).
    #[error("configuration: {0}")]
    Config(String),
    /// The upstream failed on its side (Prometheus `internal` or `unavailable` errors).
    #[error("upstream failed: {0}")]
    Upstream(String),
    /// The upstream answered something we could not understand.
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl SourceError {
    /// The variant name, used as the `kind` label in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoData(_) => "NoData",
            Self::Unreachable(_) => "Unreachable",
            Self::Timeout(_) => "Timeout",
            Self::Http { .. } => "Http",
            Self::Ambiguous { .. } => "Ambiguous",
            Self::Auth(_) => "Auth",
            Self::Query(_) => "Query",
            Self::NotFound(_) => "NotFound",
            Self::SecretNotFound(_) => "SecretNotFound",
            Self::SecretRestricted(_) => "SecretRestricted",
            Self::Config(_) => "Config",
            Self::Upstream(_) => "Upstream",
            Self::Protocol(_) => "Protocol",
        }
    }

    /// The reason of the `SourcesHealthy=False` condition it makes: what to look at.
    pub fn reason(&self) -> &'static str {
        use crate::engine::conditions as cond;
        match self {
            Self::NoData(_) => cond::NO_DATA,
            Self::Unreachable(_) => cond::SOURCE_UNREACHABLE,
            Self::Timeout(_) => cond::SOURCE_TIMEOUT,
            Self::Http { .. } | Self::Upstream(_) | Self::Protocol(_) => cond::SOURCE_ERROR,
            Self::Ambiguous { .. } => cond::AMBIGUOUS_QUERY,
            Self::Auth(_) => cond::AUTHENTICATION_REFUSED,
            Self::Query(_) => cond::QUERY_REJECTED,
            Self::NotFound(_) => cond::NOT_FOUND_UPSTREAM,
            Self::SecretNotFound(_) => cond::SECRET_NOT_FOUND,
            Self::SecretRestricted(_) => cond::SECRET_RESTRICTED,
            Self::Config(_) => cond::INVALID_CONFIGURATION,
        }
    }

    /// Maps an HTTP error status: 401/403 are [`SourceError::Auth`], the rest
    /// [`SourceError::Http`].
    pub(crate) fn from_status(status: u16, message: impl Into<String>) -> Self {
        match status {
            401 | 403 => Self::Auth(format!("HTTP {status}: {}", message.into())),
            404 => Self::NotFound(message.into()),
            _ => Self::Http {
                status,
                message: message.into(),
            },
        }
    }

    /// Maps a transport error of reqwest (the HTTP client under both HTTP sources).
    pub(crate) fn from_reqwest(e: &reqwest::Error, timeout: Duration) -> Self {
        if e.is_timeout() {
            Self::Timeout(timeout)
        } else if let Some(status) = e.status() {
            Self::from_status(status.as_u16(), e.to_string())
        } else if e.is_connect() || e.is_request() {
            Self::Unreachable(error_chain(e))
        } else {
            Self::Protocol(error_chain(e))
        }
    }
}

/// `e: cause: cause`, for messages that would otherwise hide the useful part.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Result alias of this layer.
pub type Result<T, E = SourceError> = std::result::Result<T, E>;

/// Past points as `(unix seconds, value)`, oldest first.
pub type Points = Vec<(i64, f64)>;

/// A metric source: fetches the current value of one resolved query.
///
/// Implementations time out on their own (the timeout is part of the query), never turn a
/// failure into a number, and yield only finite numbers ([`finite`]).
pub trait Source: Send + Sync {
    /// Fetches the current value.
    fn fetch(&self) -> BoxFuture<'_, Result<f64>>;

    /// Past values at `step` from `start` to `end` (Unix seconds) as `(unix seconds, value)`,
    /// for sources that keep history (Prometheus); `None` for those that do not (RabbitMQ).
    fn history(
        &self,
        _start: i64,
        _end: i64,
        _step: Duration,
    ) -> Option<BoxFuture<'_, Result<Points>>> {
        None
    }
}

/// Which kind of upstream a query goes to; the `source` label in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    Prometheus,
    RabbitMq,
}

impl SourceKind {
    /// Lower-case name for labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prometheus => "prometheus",
            Self::RabbitMq => "rabbitmq",
        }
    }
}

/// A resolved query: everything needed to fetch one value, Secrets included. Its `Hash`/`Eq`
/// identity (source kind, address, query or queue spec, credentials) is the collector's
/// dedupe key. `Debug` never prints secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    Prometheus(PrometheusQuery),
    RabbitMq(RabbitMqQuery),
}

impl Query {
    /// Which kind of upstream this goes to.
    pub fn kind(&self) -> SourceKind {
        match self {
            Self::Prometheus(_) => SourceKind::Prometheus,
            Self::RabbitMq(_) => SourceKind::RabbitMq,
        }
    }

    /// The upstream it loads (Prometheus address, RabbitMQ management or AMQP address, without
    /// credentials): the unit of bounded concurrency in the collector.
    pub fn upstream(&self) -> String {
        match self {
            Self::Prometheus(q) => q.address.clone(),
            Self::RabbitMq(q) => q.connection.upstream(),
        }
    }

    /// How long one fetch may take (the query's own timeout).
    pub fn timeout(&self) -> Duration {
        match self {
            Self::Prometheus(q) => q.timeout,
            Self::RabbitMq(q) => q.timeout,
        }
    }

    /// A short human description (no secrets) for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Prometheus(q) => format!("prometheus {} {}", q.address, q.query),
            Self::RabbitMq(q) => format!("rabbitmq {} {}", q.connection.upstream(), q.describe()),
        }
    }
}

/// `value` if it is finite; NaN and ±Inf are [`SourceError::NoData`]: no replica count can be
/// derived from them (+Inf would scale to the maximum, -Inf to the minimum). `what` names the
/// value's origin in the message.
pub fn finite(value: f64, what: &str) -> Result<f64> {
    if value.is_finite() {
        return Ok(value);
    }
    // Spelled as Prometheus does.
    let spelled = if value.is_nan() {
        "NaN"
    } else if value > 0.0 {
        "+Inf"
    } else {
        "-Inf"
    };
    Err(SourceError::NoData(format!("{what} returned {spelled}")))
}

/// Applies a metric's explicit `emptyAs`: [`SourceError::NoData`] becomes that value; every
/// other outcome passes through. Without `emptyAs`, no data stays an error.
pub fn apply_empty_as(result: Result<f64>, empty_as: Option<f64>) -> Result<f64> {
    match (result, empty_as) {
        (Err(SourceError::NoData(_)), Some(v)) => Ok(v),
        (r, _) => r,
    }
}

/// Builds sources from queries, sharing one HTTP client per (address, credentials) and one
/// AMQP connection per broker, so that many queries to one upstream reuse its connections.
#[derive(Default)]
pub struct Connections {
    prometheus: Mutex<HashMap<(String, PrometheusAuth), prometheus_http_query::Client>>,
    /// Held weakly: a broker lives as long as a source uses it.
    rabbitmq: Mutex<HashMap<rabbitmq::RabbitConnection, Weak<rabbitmq::Broker>>>,
}

impl Connections {
    /// An empty set of connections.
    pub fn new() -> Self {
        Self::default()
    }

    /// The source for `query`; fails only on unusable configuration (bad PEM, bad URL).
    pub fn source_for(&self, query: &Query) -> Result<Arc<dyn Source>> {
        match query {
            Query::Prometheus(q) => {
                let client = {
                    let mut clients = self.prometheus.lock().expect("connections lock");
                    match clients.get(&(q.address.clone(), q.auth.clone())) {
                        Some(c) => c.clone(),
                        None => {
                            let c = prometheus::client(&q.address, &q.auth)?;
                            clients.insert((q.address.clone(), q.auth.clone()), c.clone());
                            c
                        }
                    }
                };
                Ok(Arc::new(prometheus::PrometheusSource::new(client, q)))
            }
            Query::RabbitMq(q) => {
                let broker = {
                    let mut brokers = self.rabbitmq.lock().expect("connections lock");
                    // Brokers no source uses any more are gone (their AMQP connections closed).
                    brokers.retain(|_, b| b.strong_count() > 0);
                    match brokers.get(&q.connection).and_then(Weak::upgrade) {
                        Some(b) => b,
                        None => {
                            let b = Arc::new(rabbitmq::Broker::new(q.connection.clone())?);
                            brokers.insert(q.connection.clone(), Arc::downgrade(&b));
                            b
                        }
                    }
                };
                Ok(Arc::new(rabbitmq::RabbitMqSource::new(broker, q.clone())))
            }
        }
    }

    /// RabbitMQ management API requests sent by the brokers in use.
    pub fn rabbitmq_management_requests(&self) -> u64 {
        let brokers = self.rabbitmq.lock().expect("connections lock");
        brokers
            .values()
            .filter_map(Weak::upgrade)
            .map(|b| b.management_requests())
            .sum()
    }
}

/// Parses a Kubernetes-style duration: `500ms`, `5s`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let bad = || {
        SourceError::Config(format!(
            "invalid duration {s:?}: use a number with a unit, e.g. 500ms, 5s, 2m, 1h"
        ))
    };
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        // KEDA reads a bare `timeout: "1000"` as milliseconds; a copied setting must not
        // silently mean 1000 seconds here.
        return Err(SourceError::Config(format!(
            "invalid duration {s:?}: a number needs a unit, {s}ms or {s}s (KEDA reads a bare \
             timeout as milliseconds)"
        )));
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        // A bare number is refused, naming the units (KEDA's timeouts are milliseconds).
        let bare = parse_duration("1000").unwrap_err().to_string();
        assert!(bare.contains("1000ms or 1000s"), "{bare}");
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        for bad in ["", "5x", "-1s", "0s", "s"] {
            assert!(
                matches!(parse_duration(bad), Err(SourceError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn empty_as_only_replaces_no_data() {
        let no_data = || Err(SourceError::NoData("empty".into()));
        assert_eq!(apply_empty_as(no_data(), Some(0.0)), Ok(0.0));
        assert!(apply_empty_as(no_data(), None).is_err());
        let down = Err(SourceError::Unreachable("refused".into()));
        assert_eq!(apply_empty_as(down.clone(), Some(0.0)), down);
        assert_eq!(apply_empty_as(Ok(3.0), Some(0.0)), Ok(3.0));
    }

    #[test]
    fn only_finite_numbers_are_values() {
        assert_eq!(finite(-2.5, "q"), Ok(-2.5));
        for (v, spelled) in [
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(
                finite(v, "q"),
                Err(SourceError::NoData(format!("q returned {spelled}")))
            );
        }
    }

    #[test]
    fn the_ambiguous_error_suggests_an_aggregation() {
        let msg = SourceError::Ambiguous { series: 2 }.to_string();
        assert!(msg.contains("2 series") && msg.contains("sum("), "{msg}");
        assert_eq!(SourceError::Ambiguous { series: 2 }.kind(), "Ambiguous");
    }
}
