//! Prometheus: an instant query that must come down to one number, and range queries for the
//! history backfill, over prometheus-http-query.
//!
//! One number means a scalar, or an instant vector with exactly one sample. More series is
//! [`SourceError::Ambiguous`] (with a hint to aggregate), never "the first one"; no series or a
//! NaN or ±Inf sample is [`SourceError::NoData`], never 0. Each query has its own timeout, enforced on
//! our side (the request is dropped) and passed to Prometheus (which stops evaluating).
//!
//! Credentials come from the Secret named by `authSecretRef`, keys: `bearerToken`, or
//! `username` and `password` (basic); `ca.crt` (a CA to trust), `tls.crt` and `tls.key` (a
//! client certificate).

use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use prometheus_http_query::response::Data;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::secret::{SecretData, SecretRef, TlsMaterial, optional_string};
use super::{Query, Result, Source, SourceError};

/// Per-query timeout when the metric sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Range queries fetch up to this many points per request (Prometheus refuses more than
/// 11,000 points per series).
pub const MAX_POINTS_PER_RANGE_QUERY: i64 = 10_000;
/// Secret key of a bearer token.
pub const KEY_BEARER_TOKEN: &str = "bearerToken";
/// Secret key of the basic-auth user name.
pub const KEY_USERNAME: &str = "username";
/// Secret key of the basic-auth password.
pub const KEY_PASSWORD: &str = "password";

/// A Prometheus metric as a ScaledTarget spells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusConfig {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// A PromQL expression that returns a scalar or exactly one series, e.g.
    /// `sum(rate(http_requests_total{service="orders"}[1m]))`.
    pub query: String,
    /// Secret (same namespace) with `bearerToken` or `username`/`password`, and optionally
    /// `ca.crt`, `tls.crt`, `tls.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretRef>,
    /// Per-query timeout with its unit, e.g. `5s` (the default) or `800ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub timeout: Option<String>,
    /// The value an empty result stands for. Unset (the default), an empty result is "no
    /// data": a failed metric, never 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_as: Option<f64>,
}

impl PrometheusConfig {
    /// Resolves the configuration with the data of its `authSecretRef` Secret (`None` when it
    /// names none).
    pub fn resolve(&self, secret: Option<&SecretData>) -> Result<PrometheusQuery> {
        let auth = match (&self.auth_secret_ref, secret) {
            (None, _) => PrometheusAuth::default(),
            (Some(r), Some(data)) => PrometheusAuth::from_secret_data(data)
                .map_err(|e| super::secret::in_secret(e, &r.name, data))?,
            (Some(r), None) => {
                return Err(SourceError::Config(format!(
                    "authSecretRef {} was not read",
                    r.name
                )));
            }
        };
        let address = self.address.trim_end_matches('/').to_string();
        match reqwest::Url::parse(&address) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err(SourceError::Config(format!(
                    "address {address:?} is not an http(s) URL"
                )));
            }
        }
        if self.query.trim().is_empty() {
            return Err(SourceError::Config("query is empty".into()));
        }
        Ok(PrometheusQuery {
            address,
            query: self.query.clone(),
            auth,
            timeout: match &self.timeout {
                Some(t) => super::parse_duration(t)?,
                None => DEFAULT_TIMEOUT,
            },
        })
    }

    /// Reads the `authSecretRef` Secret from `namespace` and resolves.
    pub async fn resolve_with(&self, secrets: &super::Secrets, namespace: &str) -> Result<Query> {
        let data = match &self.auth_secret_ref {
            Some(r) => Some(secrets.data(namespace, &r.name).await?),
            None => None,
        };
        self.resolve(data.as_ref()).map(Query::Prometheus)
    }
}

/// How to authenticate to Prometheus. `Debug` prints no secret.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct PrometheusAuth {
    /// `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Basic auth user and password.
    pub basic: Option<(String, String)>,
    /// CA and client certificate.
    pub tls: TlsMaterial,
}

impl std::fmt::Debug for PrometheusAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusAuth")
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "basic",
                &self.basic.as_ref().map(|(u, _)| (u, "<redacted>")),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

impl PrometheusAuth {
    /// Reads the credentials from a Secret's data (keys in the module doc).
    pub fn from_secret_data(data: &SecretData) -> Result<Self> {
        let bearer_token = optional_string(data, KEY_BEARER_TOKEN)?;
        let basic = match (
            optional_string(data, KEY_USERNAME)?,
            optional_string(data, KEY_PASSWORD)?,
        ) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => {
                return Err(SourceError::Config(format!(
                    "basic auth needs both {KEY_USERNAME} and {KEY_PASSWORD}"
                )));
            }
        };
        if bearer_token.is_some() && basic.is_some() {
            return Err(SourceError::Config(format!(
                "the secret holds both {KEY_BEARER_TOKEN} and {KEY_USERNAME}/{KEY_PASSWORD}: keep one"
            )));
        }
        Ok(Self {
            bearer_token,
            basic,
            tls: TlsMaterial::from_secret_data(data)?,
        })
    }

    fn authorization(&self) -> Option<String> {
        use base64::Engine as _;
        if let Some(token) = &self.bearer_token {
            Some(format!("Bearer {token}"))
        } else {
            self.basic.as_ref().map(|(u, p)| {
                let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                format!("Basic {encoded}")
            })
        }
    }
}

/// A resolved Prometheus query: part of [`Query`], the collector's dedupe key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrometheusQuery {
    /// Base URL, without a trailing slash.
    pub address: String,
    /// The PromQL expression.
    pub query: String,
    /// Credentials.
    pub auth: PrometheusAuth,
    /// Per-query timeout.
    pub timeout: Duration,
}

/// A client for one Prometheus with one set of credentials (shared by all its queries).
pub(crate) fn client(
    address: &str,
    auth: &PrometheusAuth,
) -> Result<prometheus_http_query::Client> {
    crate::install_crypto_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = auth.authorization() {
        let mut value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
            SourceError::Config("credentials hold invalid header characters".into())
        })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let builder = reqwest::Client::builder()
        .default_headers(headers)
        .connect_timeout(DEFAULT_TIMEOUT)
        .pool_max_idle_per_host(32);
    let http = auth
        .tls
        .apply(builder)?
        .build()
        .map_err(|e| SourceError::Config(format!("HTTP client: {}", super::error_chain(&e))))?;
    prometheus_http_query::Client::from(http, address)
        .map_err(|e| SourceError::Config(format!("address {address:?}: {e}")))
}

/// A Prometheus instant query as a [`Source`].
pub struct PrometheusSource {
    client: prometheus_http_query::Client,
    query: String,
    timeout: Duration,
}

impl PrometheusSource {
    /// A source for `query` through `client` (see [`super::Connections`]).
    pub fn new(client: prometheus_http_query::Client, query: &PrometheusQuery) -> Self {
        Self {
            client,
            query: query.query.clone(),
            timeout: query.timeout,
        }
    }

    /// A source for `query` with a client of its own, for one-off use (`ebb backtest
    /// --prometheus`); the collector shares clients through [`super::Connections`].
    pub fn connect(query: &PrometheusQuery) -> Result<Self> {
        Ok(Self::new(client(&query.address, &query.auth)?, query))
    }

    /// Runs the instant query once.
    pub async fn instant(&self) -> Result<f64> {
        let request = self
            .client
            .query(&self.query)
            .timeout(self.timeout.as_millis() as i64)
            .get();
        match tokio::time::timeout(self.timeout, request).await {
            Err(_) => Err(SourceError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(map_error(e, self.timeout)),
            Ok(Ok(result)) => one_value(result.data()),
        }
    }

    /// The query's values at `step` from `start` to `end` (Unix seconds, inclusive), as
    /// `(unix seconds, value)` in time order, samples that are not finite (NaN, ±Inf) left out; split into requests of at
    /// most [`MAX_POINTS_PER_RANGE_QUERY`] points. A query returning no series gives no points;
    /// more than one series is [`SourceError::Ambiguous`].
    pub async fn range(&self, start: i64, end: i64, step: Duration) -> Result<Vec<(i64, f64)>> {
        let step_s = (step.as_secs() as i64).max(1);
        // History may be long: give each range request more time than an instant query.
        let timeout = self.timeout.max(Duration::from_secs(30));
        let mut points = Vec::new();
        for (chunk_start, chunk_end) in range_chunks(start, end, step_s) {
            let request = self
                .client
                .query_range(&self.query, chunk_start, chunk_end, step_s as f64)
                .timeout(timeout.as_millis() as i64)
                .get();
            let result = match tokio::time::timeout(timeout, request).await {
                Err(_) => return Err(SourceError::Timeout(timeout)),
                Ok(Err(e)) => return Err(map_error(e, timeout)),
                Ok(Ok(result)) => result,
            };
            match result.data() {
                Data::Matrix(series) if series.len() > 1 => {
                    return Err(SourceError::Ambiguous {
                        series: series.len(),
                    });
                }
                Data::Matrix(series) => points.extend(series.iter().flat_map(|s| {
                    s.samples()
                        .iter()
                        .filter(|p| p.value().is_finite())
                        .map(|p| (p.timestamp() as i64, p.value()))
                })),
                Data::Scalar(_) | Data::Vector(_) => {
                    return Err(SourceError::Protocol(
                        "a range query did not return a matrix".into(),
                    ));
                }
            }
        }
        Ok(points)
    }
}

/// The `(start, end)` of each request that covers the steps `start, start + step, ..., end`
/// (Unix seconds, inclusive), at most [`MAX_POINTS_PER_RANGE_QUERY`] steps each. Every chunk
/// starts on the grid of `start`, so together they ask exactly the steps of one query.
fn range_chunks(start: i64, end: i64, step_s: i64) -> impl Iterator<Item = (i64, i64)> {
    let span = step_s * (MAX_POINTS_PER_RANGE_QUERY - 1);
    std::iter::successors(Some(start), move |chunk_start| {
        Some(chunk_start + span + step_s)
    })
    .take_while(move |chunk_start| *chunk_start <= end)
    .map(move |chunk_start| (chunk_start, end.min(chunk_start + span)))
}

impl Source for PrometheusSource {
    fn fetch(&self) -> BoxFuture<'_, Result<f64>> {
        self.instant().boxed()
    }

    fn history(
        &self,
        start: i64,
        end: i64,
        step: Duration,
    ) -> Option<BoxFuture<'_, Result<super::Points>>> {
        Some(self.range(start, end, step).boxed())
    }
}

/// One number from an instant query's result.
pub fn one_value(data: &Data) -> Result<f64> {
    let value = match data {
        Data::Scalar(sample) => sample.value(),
        Data::Vector(v) if v.is_empty() => {
            return Err(SourceError::NoData("the query returned no series".into()));
        }
        Data::Vector(v) if v.len() > 1 => return Err(SourceError::Ambiguous { series: v.len() }),
        Data::Vector(v) => v[0].sample().value(),
        Data::Matrix(_) => {
            return Err(SourceError::Query(
                "the query returned a range vector: make it an instant vector, e.g. \
                 rate(x[1m]) or last_over_time(x[1m])"
                    .into(),
            ));
        }
    };
    super::finite(value, "the query")
}

fn map_error(e: prometheus_http_query::Error, timeout: Duration) -> SourceError {
    use prometheus_http_query::Error;
    match e {
        Error::Client(c) => match c.inner() {
            Some(inner) => SourceError::from_reqwest(inner, timeout),
            None => SourceError::Protocol(c.to_string()),
        },
        Error::Prometheus(p) if p.is_timeout() || p.is_canceled() => SourceError::Timeout(timeout),
        Error::Prometheus(p) if p.is_bad_data() || p.is_execution() => {
            SourceError::Query(p.message().to_string())
        }
        Error::Prometheus(p) => SourceError::Upstream(p.to_string()),
        other => SourceError::Config(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::secret::data;

    fn config() -> PrometheusConfig {
        PrometheusConfig {
            address: "http://prom:9090/".into(),
            query: "sum(up)".into(),
            auth_secret_ref: Some(SecretRef {
                name: "auth".into(),
            }),
            timeout: Some("800ms".into()),
            empty_as: None,
        }
    }

    #[test]
    fn resolves_bearer_and_basic_credentials() {
        let q = config()
            .resolve(Some(&data(&[("bearerToken", "t0k\n")])))
            .unwrap();
        assert_eq!(q.address, "http://prom:9090");
        assert_eq!(q.timeout, Duration::from_millis(800));
        assert_eq!(q.auth.authorization().as_deref(), Some("Bearer t0k"));
        assert!(!format!("{q:?}").contains("t0k"));

        let q = config()
            .resolve(Some(&data(&[("username", "u"), ("password", "p")])))
            .unwrap();
        assert_eq!(q.auth.authorization().as_deref(), Some("Basic dTpw"));
    }

    #[test]
    fn unusable_credentials_are_config_errors() {
        for pairs in [
            &[("username", "u")][..],
            &[("bearerToken", "t"), ("username", "u"), ("password", "p")][..],
        ] {
            assert!(matches!(
                config().resolve(Some(&data(pairs))),
                Err(SourceError::Config(_))
            ));
        }
        assert!(matches!(
            config().resolve(None),
            Err(SourceError::Config(_))
        ));
        let bad_address = PrometheusConfig {
            address: "prom:9090".into(),
            auth_secret_ref: None,
            ..config()
        };
        assert!(matches!(
            bad_address.resolve(None),
            Err(SourceError::Config(_))
        ));
    }

    #[test]
    fn the_config_reads_camel_case_yaml() {
        let c: PrometheusConfig = serde_yaml::from_str(
            "address: http://p:9090\nquery: sum(x)\nauthSecretRef: {name: s}\nemptyAs: 0\n",
        )
        .unwrap();
        assert_eq!(c.auth_secret_ref.unwrap().name, "s");
        assert_eq!(c.empty_as, Some(0.0));
    }

    #[test]
    fn range_chunks_cover_every_step_once_within_the_point_limit() {
        let limit = MAX_POINTS_PER_RANGE_QUERY;
        let steps = |(a, b): (i64, i64)| (b - a) / 60 + 1;
        // One request up to the limit, two just past it.
        let one: Vec<_> = range_chunks(0, (limit - 1) * 60, 60).collect();
        assert_eq!(one, vec![(0, (limit - 1) * 60)]);
        let two: Vec<_> = range_chunks(0, limit * 60, 60).collect();
        assert_eq!(two, vec![(0, (limit - 1) * 60), (limit * 60, limit * 60)]);
        // 12,000 steps (over Prometheus' 11,000): each chunk within the limit, each next to
        // the one before on the grid, together every step.
        let (start, end) = (1_700_000_000, 1_700_000_000 + 11_999 * 60);
        let chunks: Vec<_> = range_chunks(start, end, 60).collect();
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().all(|&c| steps(c) <= limit));
        assert_eq!(
            (chunks[0].0, chunks[1].0, chunks[1].1),
            (start, chunks[0].1 + 60, end)
        );
        assert_eq!(chunks.iter().map(|&c| steps(c)).sum::<i64>(), 12_000);
        // One step; an empty range (end before start) asks nothing.
        assert_eq!(range_chunks(60, 60, 60).collect::<Vec<_>>(), vec![(60, 60)]);
        assert_eq!(range_chunks(120, 60, 60).count(), 0);
    }

    #[test]
    fn one_value_needs_exactly_one_number() {
        let parse = |json: &str| serde_json::from_str::<Data>(json).unwrap();
        let scalar = parse(r#"{"resultType":"scalar","result":[1700000000,"4.5"]}"#);
        assert_eq!(one_value(&scalar), Ok(4.5));
        let empty = parse(r#"{"resultType":"vector","result":[]}"#);
        assert!(matches!(one_value(&empty), Err(SourceError::NoData(_))));
        // Prometheus spells the non-finite floats NaN, +Inf and -Inf; none is a value.
        for spelled in ["NaN", "+Inf", "-Inf"] {
            let vector = parse(&format!(
                r#"{{"resultType":"vector","result":[{{"metric":{{}},"value":[1,"{spelled}"]}}]}}"#
            ));
            assert_eq!(
                one_value(&vector),
                Err(SourceError::NoData(format!("the query returned {spelled}")))
            );
            let scalar = parse(&format!(
                r#"{{"resultType":"scalar","result":[1700000000,"{spelled}"]}}"#
            ));
            assert!(matches!(one_value(&scalar), Err(SourceError::NoData(_))));
        }
        let two = parse(
            r#"{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}"#,
        );
        assert_eq!(one_value(&two), Err(SourceError::Ambiguous { series: 2 }));
    }
}
