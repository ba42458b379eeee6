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
//!
//! Multi-tenant backends need more on every request, instant and range alike: extra `headers`
//! (a literal value or a key of the same Secret), `tenant` (Mimir's, Cortex's and Loki's
//! `X-Scope-OrgID`) and `queryParameters` (Thanos' `partial_response`, `dedup`, ...). They are
//! part of the resolved query, so two metrics that differ only there are never deduplicated
//! into one upstream query.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use kube::KubeSchema;
use kube::core::{Message, Rule};
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
/// The header `tenant` sets: the tenant of Mimir, Cortex and Loki.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";
/// Headers ebb's HTTP client sets itself (lower case): a metric may not set them.
/// `Authorization` is refused only when the Secret gives a bearer token or basic auth.
pub const RESERVED_HEADERS: [&str; 5] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
];
/// Query parameters ebb sets itself on instant and range queries: a metric may not set them.
pub const RESERVED_PARAMETERS: [&str; 6] = ["query", "time", "timeout", "start", "end", "step"];

/// A Prometheus metric as a ScaledTarget spells it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.headers) || has(self.authSecretRef) || self.headers.all(h, !has(h.valueFrom))")
    .message("headers: valueFrom reads a key of the authSecretRef Secret: set authSecretRef"))]
#[x_kube(validation = tenant_conflict_rule())]
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
    /// Extra headers on every request (instant and range queries), e.g. a tenant's token:
    /// each a literal `value` or `valueFrom.secretKeyRef.key`, a key of the `authSecretRef`
    /// Secret. `Authorization` only when that Secret holds no `bearerToken` or
    /// `username`/`password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(h, self.exists_one(g, g.name.lowerAscii() == h.name.lowerAscii()))")
        .message("headers: a header name is given more than once (names are case-insensitive)"))]
    pub headers: Option<Vec<PrometheusHeader>>,
    /// Extra query parameters on every request (instant and range queries), e.g. Thanos'
    /// `partial_response: "false"` or `dedup: "true"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend(
        "maxProperties" = 16,
        "additionalProperties" = { "type": "string", "maxLength": 1024 }
    ))]
    #[x_kube(validation = reserved_parameters_rule())]
    pub query_parameters: Option<BTreeMap<String, String>>,
    /// The tenant of a multi-tenant backend (Mimir, Cortex, Loki): sent as the `X-Scope-OrgID`
    /// header, e.g. `team-a` or, to query several, `team-a|team-b`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub tenant: Option<String>,
}

/// An extra request header: exactly one of `value` and `valueFrom`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.value) != has(self.valueFrom)")
    .message(Message::Expression("'headers: ' + self.name + ' needs exactly one of value and valueFrom'".into())))]
#[x_kube(validation = reserved_header_rule())]
#[serde(rename_all = "camelCase")]
pub struct PrometheusHeader {
    /// The header's name, e.g. `X-Scope-OrgID` (case does not matter).
    #[schemars(
        length(min = 1, max = 128),
        regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
    )]
    pub name: String,
    /// A literal value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub value: Option<String>,
    /// Where the value is read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<HeaderValueFrom>,
}

/// Where a header's value is read from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValueFrom {
    /// A key of the metric's `authSecretRef` Secret.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of the metric's `authSecretRef` Secret (one Secret per metric: it names no other).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The key, e.g. `tenantToken`.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The CEL list of `names`, e.g. `['query', 'time']`.
fn cel_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Admission: not a header that ebb's HTTP client sets ([`RESERVED_HEADERS`]). A rule on
/// each header, not on the list: the API server estimates a message built from a filtered
/// list beyond its CEL cost budget.
fn reserved_header_rule() -> Rule {
    Rule::new(format!(
        "!(self.name.lowerAscii() in {})",
        cel_list(&RESERVED_HEADERS)
    ))
    .message(Message::Expression(format!(
        "'headers: ' + self.name + \"{RESERVED_HEADER_WHY}\""
    )))
}

/// Admission: no query parameter that ebb sets ([`RESERVED_PARAMETERS`]).
fn reserved_parameters_rule() -> Rule {
    let reserved = cel_list(&RESERVED_PARAMETERS);
    Rule::new(format!("self.all(k, !(k in {reserved}))")).message(Message::Expression(format!(
        "'queryParameters: ' + self.filter(k, k in {reserved})[0] + \"{}\"",
        reserved_parameter_why()
    )))
}

/// Admission: `tenant` and an explicit `X-Scope-OrgID` header are not both set.
fn tenant_conflict_rule() -> Rule {
    Rule::new(format!(
        "!has(self.tenant) || !has(self.headers) || self.headers.all(h, h.name.lowerAscii() != '{}')",
        TENANT_HEADER.to_ascii_lowercase()
    ))
    .message(TENANT_CONFLICT)
}

/// Why a reserved header is refused (after its name), at admission and when resolved.
const RESERVED_HEADER_WHY: &str = " is set by ebb's HTTP client: remove it";
/// Why `tenant` and an `X-Scope-OrgID` header conflict.
const TENANT_CONFLICT: &str =
    "tenant sets the X-Scope-OrgID header: set it with tenant or in headers, not both";

/// Why a reserved query parameter is refused (after its name), at admission and when resolved.
fn reserved_parameter_why() -> String {
    format!(
        " is set by ebb on every query ({}): remove it",
        RESERVED_PARAMETERS.join(", ")
    )
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
        let secret = self.auth_secret_ref.as_ref().zip(secret);
        Ok(PrometheusQuery {
            address,
            query: self.query.clone(),
            headers: self.request_headers(secret, &auth)?,
            parameters: self.request_parameters()?,
            auth,
            timeout: match &self.timeout {
                Some(t) => super::parse_duration(t)?,
                None => DEFAULT_TIMEOUT,
            },
        })
    }

    /// `headers` and `tenant` as request headers, sorted by name. A value read from the
    /// Secret is marked sensitive: `Debug` prints it as `Sensitive`.
    fn request_headers(
        &self,
        secret: Option<(&SecretRef, &SecretData)>,
        auth: &PrometheusAuth,
    ) -> Result<Vec<(HeaderName, HeaderValue)>> {
        let invalid_value = |name: &str| {
            SourceError::Config(format!(
                "headers: the value of {name} holds characters an HTTP header cannot carry \
                 (control characters or line breaks)"
            ))
        };
        let mut headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
        for header in self.headers.iter().flatten() {
            let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
                SourceError::Config(format!(
                    "headers: {:?} is not an HTTP header name",
                    header.name
                ))
            })?;
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(SourceError::Config(format!(
                    "headers: {}{RESERVED_HEADER_WHY}",
                    header.name
                )));
            }
            if name == http::header::AUTHORIZATION && auth.authorization().is_some() {
                return Err(SourceError::Config(format!(
                    "headers: {} conflicts with the {KEY_BEARER_TOKEN} or \
                     {KEY_USERNAME}/{KEY_PASSWORD} of the authSecretRef Secret: keep one",
                    header.name
                )));
            }
            if self.tenant.is_some() && name.as_str().eq_ignore_ascii_case(TENANT_HEADER) {
                return Err(SourceError::Config(TENANT_CONFLICT.into()));
            }
            let value = match (&header.value, &header.value_from) {
                (Some(literal), None) => {
                    HeaderValue::from_str(literal).map_err(|_| invalid_value(&header.name))?
                }
                (None, Some(from)) => {
                    let key = &from.secret_key_ref.key;
                    let Some((secret_ref, data)) = secret else {
                        return Err(SourceError::Config(format!(
                            "headers: {} reads secret key {key:?}, but authSecretRef names no \
                             Secret",
                            header.name
                        )));
                    };
                    let in_secret = |e| super::secret::in_secret(e, &secret_ref.name, data);
                    let text = optional_string(data, key)
                        .map_err(in_secret)?
                        .ok_or_else(|| {
                            in_secret(SourceError::Config(format!(
                                "headers: {} reads key {key:?}, which the secret does not hold",
                                header.name
                            )))
                        })?;
                    let mut value = HeaderValue::from_str(&text)
                        .map_err(|_| in_secret(invalid_value(&header.name)))?;
                    value.set_sensitive(true);
                    value
                }
                _ => {
                    return Err(SourceError::Config(format!(
                        "headers: {} needs exactly one of value and valueFrom",
                        header.name
                    )));
                }
            };
            if headers.iter().any(|(known, _)| *known == name) {
                return Err(SourceError::Config(format!(
                    "headers: {} is given more than once (names are case-insensitive)",
                    header.name
                )));
            }
            headers.push((name, value));
        }
        if let Some(tenant) = &self.tenant {
            let value = HeaderValue::from_str(tenant).map_err(|_| {
                SourceError::Config(format!(
                    "tenant {tenant:?} holds characters an HTTP header cannot carry"
                ))
            })?;
            headers.push((HeaderName::from_static("x-scope-orgid"), value));
        }
        // Sorted by name: equal sets of headers are one dedupe key whatever their order.
        headers.sort_by(|(a, _), (b, _)| a.as_str().cmp(b.as_str()));
        Ok(headers)
    }

    /// `queryParameters` as request parameters, sorted by name.
    fn request_parameters(&self) -> Result<Vec<(&'static str, String)>> {
        self.query_parameters
            .iter()
            .flatten()
            .map(|(name, value)| {
                if name.is_empty() {
                    return Err(SourceError::Config(
                        "queryParameters: a parameter has an empty name".into(),
                    ));
                }
                if RESERVED_PARAMETERS.contains(&name.as_str()) {
                    return Err(SourceError::Config(format!(
                        "queryParameters: {name}{}",
                        reserved_parameter_why()
                    )));
                }
                Ok((parameter_name(name), value.clone()))
            })
            .collect()
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
    /// Extra headers (`headers` and `tenant`), sorted by name; values from a Secret are
    /// sensitive (`Debug` prints `Sensitive`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Extra query parameters, sorted by name.
    pub parameters: Vec<(&'static str, String)>,
    /// Per-query timeout.
    pub timeout: Duration,
}

/// `name` as the `&'static str` prometheus-http-query takes for a parameter name. Each
/// distinct name is allocated once for the life of the process and never freed: names are few
/// (`dedup`, `partial_response`, ...), and re-resolving a metric allocates nothing new.
fn parameter_name(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().expect("parameter names lock");
    if let Some(known) = names.get(name) {
        return known;
    }
    let name: &'static str = Box::leak(name.into());
    names.insert(name);
    name
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
    headers: Vec<(HeaderName, HeaderValue)>,
    parameters: Vec<(&'static str, String)>,
    timeout: Duration,
}

/// The two request builders of prometheus-http-query, which take the same extras.
trait WithExtras: Sized {
    fn with_header(self, name: HeaderName, value: HeaderValue) -> Self;
    fn with_parameter(self, name: &'static str, value: &str) -> Self;
}

impl WithExtras for prometheus_http_query::InstantQueryBuilder {
    fn with_header(self, name: HeaderName, value: HeaderValue) -> Self {
        self.header(name, value)
    }
    fn with_parameter(self, name: &'static str, value: &str) -> Self {
        self.query(name, value)
    }
}

impl WithExtras for prometheus_http_query::RangeQueryBuilder {
    fn with_header(self, name: HeaderName, value: HeaderValue) -> Self {
        self.header(name, value)
    }
    fn with_parameter(self, name: &'static str, value: &str) -> Self {
        self.query(name, value)
    }
}

impl PrometheusSource {
    /// A source for `query` through `client` (see [`super::Connections`]).
    pub fn new(client: prometheus_http_query::Client, query: &PrometheusQuery) -> Self {
        Self {
            client,
            query: query.query.clone(),
            headers: query.headers.clone(),
            parameters: query.parameters.clone(),
            timeout: query.timeout,
        }
    }

    /// The metric's headers and query parameters on a request, instant or range: one place,
    /// so the history backfill asks as the live value does.
    fn with_extras<B: WithExtras>(&self, request: B) -> B {
        let request = self.headers.iter().fold(request, |r, (name, value)| {
            r.with_header(name.clone(), value.clone())
        });
        self.parameters
            .iter()
            .fold(request, |r, (name, value)| r.with_parameter(name, value))
    }

    /// A source for `query` with a client of its own, for one-off use (`ebb backtest
    /// --prometheus`); the collector shares clients through [`super::Connections`].
    pub fn connect(query: &PrometheusQuery) -> Result<Self> {
        Ok(Self::new(client(&query.address, &query.auth)?, query))
    }

    /// Runs the instant query once.
    pub async fn instant(&self) -> Result<f64> {
        let request = self
            .with_extras(self.client.query(&self.query))
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
                .with_extras(self.client.query_range(
                    &self.query,
                    chunk_start,
                    chunk_end,
                    step_s as f64,
                ))
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
            ..Default::default()
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

    fn literal(name: &str, value: &str) -> PrometheusHeader {
        PrometheusHeader {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from_secret(name: &str, key: &str) -> PrometheusHeader {
        PrometheusHeader {
            name: name.into(),
            value: None,
            value_from: Some(HeaderValueFrom {
                secret_key_ref: SecretKeyRef { key: key.into() },
            }),
        }
    }

    fn parameters(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn headers_tenant_and_parameters_resolve_with_secret_values_hidden() {
        let config = PrometheusConfig {
            headers: Some(vec![
                literal("X-Team", "orders"),
                from_secret("X-Tenant-Token", "tenantToken"),
            ]),
            tenant: Some("team-a|team-b".into()),
            query_parameters: parameters(&[("partial_response", "false"), ("dedup", "true")]),
            ..config()
        };
        let secret = data(&[("bearerToken", "t0k"), ("tenantToken", "tt-s3cret\n")]);
        let q = config.resolve(Some(&secret)).unwrap();
        let headers: Vec<(&str, &[u8], bool)> = q
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes(), v.is_sensitive()))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-scope-orgid", &b"team-a|team-b"[..], false),
                ("x-team", b"orders", false),
                ("x-tenant-token", b"tt-s3cret", true),
            ]
        );
        assert_eq!(
            q.parameters,
            [
                ("dedup", "true".to_string()),
                ("partial_response", "false".to_string())
            ]
        );
        // The Secret's value is in neither Debug of the query nor its description.
        let shown = format!("{q:?} {}", Query::Prometheus(q.clone()).describe());
        assert!(!shown.contains("tt-s3cret"), "{shown}");
        assert!(
            shown.contains("Sensitive") && shown.contains("orders"),
            "{shown}"
        );
        // Authorization is the metric's own when the Secret gives no bearer or basic auth.
        let custom = PrometheusConfig {
            headers: Some(vec![from_secret("Authorization", "apiKey")]),
            ..self::config()
        };
        let q = custom
            .resolve(Some(&data(&[("apiKey", "ApiKey k3y")])))
            .unwrap();
        assert_eq!(q.headers[0].0, http::header::AUTHORIZATION);
    }

    #[test]
    fn each_unusable_header_or_parameter_is_refused_by_name() {
        let bearer = data(&[("bearerToken", "t0k"), ("tenantToken", "bad\u{7f}value")]);
        let headers = |list: Vec<PrometheusHeader>| PrometheusConfig {
            headers: Some(list),
            ..config()
        };
        let neither = PrometheusHeader {
            value: None,
            ..literal("X-Empty", "")
        };
        let both = PrometheusHeader {
            value: Some("v".into()),
            ..from_secret("X-Both", "tenantToken")
        };
        let mut cases = vec![
            (headers(vec![literal("X Bad", "v")]), "headers: \"X Bad\" is not an HTTP header name".to_string()),
            (headers(vec![literal("Host", "v")]), format!("headers: Host{RESERVED_HEADER_WHY}")),
            (headers(vec![literal("content-type", "v")]), format!("headers: content-type{RESERVED_HEADER_WHY}")),
            (
                headers(vec![literal("Authorization", "Bearer x")]),
                "headers: Authorization conflicts with the bearerToken or username/password of the authSecretRef Secret: keep one".into(),
            ),
            (headers(vec![literal("X-A", "1"), literal("x-a", "2")]), "headers: x-a is given more than once (names are case-insensitive)".into()),
            (
                PrometheusConfig {
                    tenant: Some("team-a".into()),
                    ..headers(vec![literal("x-scope-orgid", "team-b")])
                },
                TENANT_CONFLICT.into(),
            ),
            (headers(vec![neither]), "headers: X-Empty needs exactly one of value and valueFrom".into()),
            (headers(vec![both]), "headers: X-Both needs exactly one of value and valueFrom".into()),
            (
                headers(vec![from_secret("X-Token", "nope")]),
                "secret auth (keys: bearerToken, tenantToken): headers: X-Token reads key \"nope\", which the secret does not hold".into(),
            ),
            (
                headers(vec![from_secret("X-Token", "tenantToken")]),
                "secret auth (keys: bearerToken, tenantToken): headers: the value of X-Token holds characters an HTTP header cannot carry (control characters or line breaks)".into(),
            ),
            (headers(vec![literal("X-Line", "a\nb")]), "headers: the value of X-Line holds characters an HTTP header cannot carry (control characters or line breaks)".into()),
            (
                PrometheusConfig {
                    tenant: Some("a\nb".into()),
                    ..config()
                },
                "tenant \"a\\nb\" holds characters an HTTP header cannot carry".into(),
            ),
        ];
        for reserved in RESERVED_PARAMETERS {
            cases.push((
                PrometheusConfig {
                    query_parameters: parameters(&[("dedup", "true"), (reserved, "x")]),
                    ..config()
                },
                format!(
                    "queryParameters: {reserved} is set by ebb on every query (query, time, timeout, start, end, step): remove it"
                ),
            ));
        }
        for (config, message) in cases {
            let err = config.resolve(Some(&bearer)).unwrap_err();
            assert_eq!(err, SourceError::Config(message));
            assert_eq!(
                err.reason(),
                crate::engine::conditions::INVALID_CONFIGURATION
            );
            assert!(!err.to_string().contains("t0k"), "{err}");
        }
        // A key read from no Secret at all.
        let no_secret = PrometheusConfig {
            auth_secret_ref: None,
            ..headers(vec![from_secret("X-Token", "tenantToken")])
        };
        assert_eq!(
            no_secret.resolve(None),
            Err(SourceError::Config(
                "headers: X-Token reads secret key \"tenantToken\", but authSecretRef names no Secret".into()
            ))
        );
    }

    #[test]
    fn metrics_that_differ_only_in_tenant_headers_or_parameters_are_distinct_queries() {
        use std::hash::{BuildHasher, RandomState};
        let hasher = RandomState::new();
        let key = |c: PrometheusConfig| {
            let q = Query::Prometheus(c.resolve(None).unwrap());
            let hash = hasher.hash_one(&q);
            (q, hash)
        };
        let base = PrometheusConfig {
            auth_secret_ref: None,
            ..config()
        };
        let tenant = |t: &str| PrometheusConfig {
            tenant: Some(t.into()),
            ..base.clone()
        };
        assert_eq!(key(tenant("a")), key(tenant("a")));
        assert_ne!(key(tenant("a")).0, key(tenant("b")).0);
        assert_ne!(key(tenant("a")).0, key(base.clone()).0);
        let with_headers = |list: Vec<PrometheusHeader>| PrometheusConfig {
            headers: Some(list),
            ..base.clone()
        };
        // The order headers are written in does not make another query; their values do.
        assert_eq!(
            key(with_headers(vec![literal("X-A", "1"), literal("X-B", "2")])),
            key(with_headers(vec![literal("x-b", "2"), literal("X-A", "1")])),
        );
        assert_ne!(
            key(with_headers(vec![literal("X-A", "1")])).0,
            key(with_headers(vec![literal("X-A", "2")])).0
        );
        let with_parameters = |pairs: &[(&str, &str)]| PrometheusConfig {
            query_parameters: parameters(pairs),
            ..base.clone()
        };
        assert_ne!(
            key(with_parameters(&[("dedup", "true")])).0,
            key(with_parameters(&[("dedup", "false")])).0
        );
    }

    #[test]
    fn a_parameter_name_is_kept_once() {
        let first = parameter_name(&String::from("max_source_resolution"));
        let again = parameter_name(&String::from("max_source_resolution"));
        assert!(std::ptr::eq(first, again));
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
