//! RabbitMQ: queue depth and rates, from the management HTTP API or, for the ready count of
//! one queue, from AMQP itself (a passive queue declare, over lapin).
//!
//! Measures ([`Measure`]): `Backlog` (ready + unacknowledged, the default: messages taken by a
//! consumer but not yet acknowledged are work not yet done, and AMQP alone cannot see them),
//! `Ready`, `PublishRate`, `DeliverRate` and `AckRate` (messages per second, management API). One queue,
//! or every queue of a vhost whose name matches `queueRegex`, combined by `aggregate`
//! (sum, max, avg).
//!
//! The connection Secret's keys: `managementUrl` (`http(s)://user:pass@host:15672`), `amqpUrl`
//! (or `host`, KEDA's name for it: `amqp(s)://user:pass@host:5672/vhost`; a URL's path names
//! the vhost, as KEDA reads it), and optionally
//! `ca.crt`, `tls.crt`, `tls.key`. With a management URL every measure is served from it;
//! with only an AMQP URL, only `Ready` of one queue can be (and is).
//!
//! After a broker restart the AMQP connection is re-opened on the next fetch, with exponential
//! backoff ([`RECONNECT_BACKOFF_MIN`] to [`RECONNECT_BACKOFF_MAX`]) while it stays down; HTTP
//! requests reconnect by themselves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::secret::{SecretData, SecretRef, TlsMaterial, optional_string};
use super::{Query, Result, Source, SourceError};

/// Per-request timeout when the metric sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before re-opening a failed AMQP connection.
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between AMQP reconnection attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Secret key of the AMQP URL.
pub const KEY_AMQP_URL: &str = "amqpUrl";
/// Alternative Secret key of the AMQP URL (KEDA's).
pub const KEY_HOST: &str = "host";
/// Secret key of the management API URL.
pub const KEY_MANAGEMENT_URL: &str = "managementUrl";

/// What to measure of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Measure {
    /// Ready plus unacknowledged messages: all work not yet done.
    #[default]
    Backlog,
    /// Messages ready for delivery.
    Ready,
    /// Messages published per second.
    PublishRate,
    /// Messages delivered (or fetched with basic.get) per second.
    DeliverRate,
    /// Messages acknowledged per second: the work done (0 for consumers that do not ack).
    AckRate,
    /// Messages published since the queue was declared (a counter, not a load: a DrainTime
    /// metric reads it to measure the arrival rate over its polls when the broker's own rate
    /// reads 0.0 between two statistics samples).
    Published,
}

/// How to combine the queues a `queueRegex` matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    #[default]
    Sum,
    Max,
    Avg,
}

/// A RabbitMQ metric as a ScaledTarget spells it. Exactly one of `queue` and `queueRegex`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitMqConfig {
    /// Secret (same namespace) with `managementUrl` and/or `amqpUrl`, and optionally `ca.crt`,
    /// `tls.crt`, `tls.key`.
    pub connection_secret_ref: SecretRef,
    /// One queue by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Every queue of the vhost whose whole name matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_regex: Option<String>,
    /// How to combine the queues `queueRegex` matches (default sum).
    #[serde(default)]
    pub aggregate: Aggregate,
    /// The virtual host. Unset: the one the connection Secret's URL names
    /// (`amqp://u:p@host/vhost`, `http://u:p@host:15672/vhost`, as KEDA reads them), else `/`.
    /// Set, it must agree with a URL that names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<String>,
    /// What to measure (default Backlog).
    #[serde(default)]
    pub measure: Measure,
    /// Per-request timeout with its unit, e.g. `5s` (the default) or `800ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub timeout: Option<String>,
    /// The value "no queue matches" (and a queue without statistics yet) stands for, e.g. `0`
    /// for a `queueRegex` over queues that come and go. Unset (the default), it is no data: a
    /// failed metric, never 0. A named queue that does not exist stays an error either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_as: Option<f64>,
}

impl RabbitMqConfig {
    /// Resolves the configuration with the data of its connection Secret.
    pub fn resolve(&self, secret: &SecretData) -> Result<RabbitMqQuery> {
        let (connection, url_vhost) = RabbitConnection::from_secret(secret)
            .map_err(|e| super::secret::in_secret(e, &self.connection_secret_ref.name, secret))?;
        let vhost = match (&self.vhost, url_vhost) {
            (Some(set), Some(url)) if *set != url => {
                return Err(SourceError::Config(format!(
                    "vhost {set:?} conflicts with the vhost {url:?} the connection secret's URL \
                     names: remove one of them"
                )));
            }
            (Some(set), _) => set.clone(),
            (None, Some(url)) => url,
            (None, None) => "/".into(),
        };
        let target = match (&self.queue, &self.queue_regex) {
            (Some(q), None) if !q.is_empty() => QueueSelector::Name(q.clone()),
            (None, Some(r)) => {
                // Anchored: the whole name must match, as users expect of "orders-.*".
                regex::Regex::new(&format!("^(?:{r})$"))
                    .map_err(|e| SourceError::Config(format!("queueRegex {r:?}: {e}")))?;
                QueueSelector::Regex(r.clone())
            }
            _ => {
                return Err(SourceError::Config(
                    "set exactly one of queue and queueRegex".into(),
                ));
            }
        };
        if connection.management_url.is_none() {
            let what_to_do = match (&target, self.measure) {
                (QueueSelector::Name(_), Measure::Ready) => None,
                (QueueSelector::Regex(_), _) => Some(format!(
                    "queueRegex lists queues through the management API: add \
                     {KEY_MANAGEMENT_URL} to the connection secret"
                )),
                (_, Measure::Backlog) => Some(format!(
                    "measure Backlog (the default) counts unacknowledged messages too, which \
                     only the management API gives: add {KEY_MANAGEMENT_URL} to the connection \
                     secret, or set measure: Ready to count ready messages over AMQP"
                )),
                (_, _) => Some(format!(
                    "rate measures come from the management API: add {KEY_MANAGEMENT_URL} to \
                     the connection secret"
                )),
            };
            if let Some(what_to_do) = what_to_do {
                return Err(SourceError::Config(what_to_do));
            }
        }
        Ok(RabbitMqQuery {
            connection,
            target,
            aggregate: self.aggregate,
            vhost,
            measure: self.measure,
            timeout: match &self.timeout {
                Some(t) => super::parse_duration(t)?,
                None => DEFAULT_TIMEOUT,
            },
        })
    }

    /// Reads the connection Secret from `namespace` and resolves.
    pub async fn resolve_with(&self, secrets: &super::Secrets, namespace: &str) -> Result<Query> {
        let data = secrets
            .data(namespace, &self.connection_secret_ref.name)
            .await?;
        self.resolve(&data).map(Query::RabbitMq)
    }
}

/// Where a broker is and how to reach it; shared by all queries to it. `Debug` prints no
/// password.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RabbitConnection {
    /// `amqp(s)://...`
    pub amqp_url: Option<String>,
    /// `http(s)://user:pass@host:port`
    pub management_url: Option<String>,
    /// CA and client certificate, for amqps and https.
    pub tls: TlsMaterial,
}

impl std::fmt::Debug for RabbitConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitConnection")
            .field(
                "amqp_url",
                &self.amqp_url.as_deref().map(without_credentials),
            )
            .field(
                "management_url",
                &self.management_url.as_deref().map(without_credentials),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

/// The vhost a URL's path names: the path without its leading `/`, percent-decoded; `None`
/// for no path or `/` alone.
fn path_vhost(url: &reqwest::Url) -> Option<String> {
    let path = url.path().strip_prefix('/').unwrap_or(url.path());
    (!path.is_empty()).then(|| {
        percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// A management URL's path as KEDA reads it: the last segment names the vhost
/// (percent-decoded, `%2F` is `/`; `None` when empty), and the segments before it are a path
/// prefix the API is served under (a reverse proxy's, or RabbitMQ's `management.path_prefix`):
/// `/rabbitmq/orders` is vhost `orders` under `/rabbitmq`. Empty segments are dropped from the
/// prefix, as Go's `path.Join` drops them.
fn management_path(url: &reqwest::Url) -> (String, Option<String>) {
    let mut segments: Vec<&str> = url.path().split('/').collect();
    let last = segments.pop().unwrap_or("");
    let prefix: String = segments
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| format!("/{s}"))
        .collect();
    let vhost = (!last.is_empty()).then(|| {
        percent_encoding::percent_decode_str(last)
            .decode_utf8_lossy()
            .into_owned()
    });
    (prefix, vhost)
}

/// `scheme://host:port` of a URL, credentials and path left out.
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}:{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        ),
        Err(_) => "<invalid URL>".into(),
    }
}

impl RabbitConnection {
    /// Reads the connection from a Secret's data (keys in the module doc).
    pub fn from_secret_data(data: &SecretData) -> Result<Self> {
        Self::from_secret(data).map(|(connection, _)| connection)
    }

    /// [`Self::from_secret_data`], and the vhost its URLs name, if any, as KEDA reads them: the
    /// path of the AMQP URL, or the last segment of the management URL's path
    /// (percent-decoded, `%2f` is `/`). The segments before it stay as the management API's
    /// prefix: requests go to `<scheme>://<host><prefix>/api/...`.
    pub fn from_secret(data: &SecretData) -> Result<(Self, Option<String>)> {
        let amqp_url = match optional_string(data, KEY_AMQP_URL)? {
            Some(url) => Some(url),
            None => optional_string(data, KEY_HOST)?,
        };
        let management = optional_string(data, KEY_MANAGEMENT_URL)?;
        if amqp_url.is_none() && management.is_none() {
            return Err(SourceError::Config(format!(
                "the connection secret needs {KEY_MANAGEMENT_URL} or {KEY_AMQP_URL}"
            )));
        }
        let mut vhosts = Vec::new();
        if let Some(url) = &amqp_url {
            url.parse::<lapin::uri::AMQPUri>().map_err(|e| {
                SourceError::Config(format!("{KEY_AMQP_URL} is not an AMQP URL: {e}"))
            })?;
            if let Some(v) = reqwest::Url::parse(url).ok().and_then(|u| path_vhost(&u)) {
                vhosts.push((KEY_AMQP_URL, v));
            }
        }
        let management_url = match &management {
            Some(url) => match reqwest::Url::parse(url) {
                Ok(mut u) if matches!(u.scheme(), "http" | "https") => {
                    let (prefix, vhost) = management_path(&u);
                    if let Some(v) = vhost {
                        vhosts.push((KEY_MANAGEMENT_URL, v));
                    }
                    u.set_path(&prefix);
                    Some(u.as_str().trim_end_matches('/').to_string())
                }
                _ => {
                    return Err(SourceError::Config(format!(
                        "{KEY_MANAGEMENT_URL} is not an http(s) URL"
                    )));
                }
            },
            None => None,
        };
        if let [(a, x), (b, y)] = vhosts.as_slice()
            && x != y
        {
            return Err(SourceError::Config(format!(
                "{a} names vhost {x:?} and {b} names vhost {y:?}: they must agree"
            )));
        }
        let connection = Self {
            amqp_url,
            management_url,
            tls: TlsMaterial::from_secret_data(data)?,
        };
        Ok((connection, vhosts.into_iter().next().map(|(_, v)| v)))
    }

    /// The address queries load (management API if any, else AMQP), without credentials.
    pub fn upstream(&self) -> String {
        self.management_url
            .as_deref()
            .or(self.amqp_url.as_deref())
            .map(without_credentials)
            .unwrap_or_default()
    }
}

/// Which queues a query covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueSelector {
    /// One queue.
    Name(String),
    /// Every queue whose whole name matches.
    Regex(String),
}

/// A resolved RabbitMQ query: part of [`Query`], the collector's dedupe key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RabbitMqQuery {
    pub connection: RabbitConnection,
    pub target: QueueSelector,
    pub aggregate: Aggregate,
    pub vhost: String,
    pub measure: Measure,
    pub timeout: Duration,
}

impl RabbitMqQuery {
    /// `vhost/queue measure`, for logs.
    pub fn describe(&self) -> String {
        match &self.target {
            QueueSelector::Name(q) => format!("{}/{q} {:?}", self.vhost, self.measure),
            QueueSelector::Regex(r) => {
                format!(
                    "{}/~{r} {:?} {:?}",
                    self.vhost, self.aggregate, self.measure
                )
            }
        }
    }
}

/// What a passive queue declare tells: the ready count and the consumer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    pub ready: u32,
    pub consumers: u32,
}

/// One broker: an HTTP client for its management API and AMQP connections (one per vhost),
/// shared by every query to it.
pub struct Broker {
    connection: RabbitConnection,
    http: Option<ManagementApi>,
    amqp: tokio::sync::Mutex<HashMap<String, AmqpState>>,
    /// Management answers by (vhost, queue): the measures of one queue asked for within
    /// [`SHARE_WINDOW`] share one request (a DrainTime metric reads four).
    recent: std::sync::Mutex<HashMap<(String, Option<String>), RecentStats>>,
    /// Management API requests sent.
    requests: std::sync::atomic::AtomicU64,
}

/// A management request shared by the measures that ask within [`SHARE_WINDOW`] of its start.
pub const SHARE_WINDOW: Duration = Duration::from_millis(500);

type SharedStats = futures::future::Shared<BoxFuture<'static, Result<Arc<Vec<QueueStats>>>>>;

struct RecentStats {
    started: Instant,
    answer: SharedStats,
}

#[derive(Clone)]
struct ManagementApi {
    client: reqwest::Client,
    /// The management URL without credentials.
    base: reqwest::Url,
    credentials: Option<(String, String)>,
}

#[derive(Default)]
struct AmqpState {
    open: Option<(lapin::Connection, lapin::Channel)>,
    /// While the broker is down: no attempt before this instant.
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Broker {
    /// A broker handle; connects lazily, on the first fetch.
    pub fn new(connection: RabbitConnection) -> Result<Self> {
        crate::install_crypto_provider();
        let http = match &connection.management_url {
            Some(url) => {
                let mut base = reqwest::Url::parse(url)
                    .map_err(|e| SourceError::Config(format!("{KEY_MANAGEMENT_URL}: {e}")))?;
                let credentials = (!base.username().is_empty()).then(|| {
                    (
                        percent_decode(base.username()),
                        percent_decode(base.password().unwrap_or("")),
                    )
                });
                let _ = base.set_username("");
                let _ = base.set_password(None);
                let builder = reqwest::Client::builder().connect_timeout(DEFAULT_TIMEOUT);
                let client = connection.tls.apply(builder)?.build().map_err(|e| {
                    SourceError::Config(format!("HTTP client: {}", super::error_chain(&e)))
                })?;
                Some(ManagementApi {
                    client,
                    base,
                    credentials,
                })
            }
            None => None,
        };
        Ok(Self {
            connection,
            http,
            amqp: Default::default(),
            recent: Default::default(),
            requests: Default::default(),
        })
    }

    /// Management API requests this broker handle has sent.
    pub fn management_requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`Self::queue_stats`], shared with any request for the same queue (or vhost) started
    /// less than [`SHARE_WINDOW`] ago.
    async fn shared_queue_stats(
        &self,
        vhost: &str,
        queue: Option<&str>,
        timeout: Duration,
    ) -> Result<Arc<Vec<QueueStats>>> {
        let api = self.http.clone().ok_or_else(|| {
            SourceError::Config(format!("no {KEY_MANAGEMENT_URL} in the connection secret"))
        })?;
        let answer = {
            let mut recent = self.recent.lock().expect("recent stats");
            let now = Instant::now();
            recent.retain(|_, r| now.duration_since(r.started) < SHARE_WINDOW);
            let key = (vhost.to_string(), queue.map(str::to_string));
            match recent.get(&key) {
                Some(r) => r.answer.clone(),
                None => {
                    self.requests
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let (vhost, queue) = key.clone();
                    let answer = async move {
                        queue_stats(&api, &vhost, queue.as_deref(), timeout)
                            .await
                            .map(Arc::new)
                    }
                    .boxed()
                    .shared();
                    recent.insert(
                        key,
                        RecentStats {
                            started: now,
                            answer: answer.clone(),
                        },
                    );
                    answer
                }
            }
        };
        answer.await
    }

    /// Ready and consumer counts of `queue` by a passive declare (which creates nothing).
    pub async fn amqp_counts(
        &self,
        vhost: &str,
        queue: &str,
        timeout: Duration,
    ) -> Result<QueueCounts> {
        let url = self.connection.amqp_url.as_deref().ok_or_else(|| {
            SourceError::Config(format!("no {KEY_AMQP_URL} in the connection secret"))
        })?;
        let mut states = self.amqp.lock().await;
        let state = states.entry(vhost.to_string()).or_default();
        let channel = match &state.open {
            Some((conn, channel)) if conn.status().connected() && channel.status().connected() => {
                channel.clone()
            }
            _ => {
                state.open = None;
                let now = Instant::now();
                if let Some(at) = state.retry_at.filter(|at| *at > now) {
                    return Err(SourceError::Unreachable(format!(
                        "AMQP connection down, next attempt in {:?}",
                        at - now
                    )));
                }
                match tokio::time::timeout(timeout, self.open_amqp(url, vhost)).await {
                    Ok(Ok(open)) => {
                        let channel = open.1.clone();
                        state.open = Some(open);
                        state.retry_at = None;
                        state.backoff = Duration::ZERO;
                        channel
                    }
                    failed => {
                        state.backoff =
                            (state.backoff * 2).clamp(RECONNECT_BACKOFF_MIN, RECONNECT_BACKOFF_MAX);
                        state.retry_at = Some(now + state.backoff);
                        return Err(match failed {
                            Ok(Err(e)) => amqp_error(&e),
                            _ => SourceError::Timeout(timeout),
                        });
                    }
                }
            }
        };
        let options = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declare = channel.queue_declare(queue.into(), options, Default::default());
        match tokio::time::timeout(timeout, declare).await {
            Ok(Ok(q)) => Ok(QueueCounts {
                ready: q.message_count(),
                consumers: q.consumer_count(),
            }),
            Ok(Err(e)) => {
                // A failed passive declare closes the channel (404): open a new one next time.
                state.open = None;
                Err(amqp_error(&e))
            }
            Err(_) => {
                state.open = None;
                Err(SourceError::Timeout(timeout))
            }
        }
    }

    async fn open_amqp(
        &self,
        url: &str,
        vhost: &str,
    ) -> lapin::Result<(lapin::Connection, lapin::Channel)> {
        use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
        let mut uri: lapin::uri::AMQPUri = url
            .parse()
            .map_err(|e: String| lapin::Error::from(std::io::Error::other(e)))?;
        uri.vhost = vhost.to_string();
        let tls =
            OwnedTLSConfig {
                cert_chain: self.connection.tls.ca_pem.clone(),
                identity: self.connection.tls.client.as_ref().map(|(cert, key)| {
                    OwnedIdentity::PKCS8 {
                        pem: cert.clone().into_bytes(),
                        key: key.clone().into_bytes(),
                    }
                }),
            };
        let properties = lapin::ConnectionProperties::default().with_connection_name("ebb".into());
        let connection = lapin::Connection::connect_uri_with_config(
            uri,
            properties,
            tls,
            lapin::runtime::default_runtime()?,
        )
        .await?;
        let channel = connection.create_channel().await?;
        Ok((connection, channel))
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn amqp_error(e: &lapin::Error) -> SourceError {
    let message = super::error_chain(e);
    if message.contains("NOT_FOUND") {
        SourceError::NotFound(message)
    } else if message.contains("ACCESS_REFUSED") || message.contains("NOT_ALLOWED") {
        SourceError::Auth(message)
    } else {
        SourceError::Unreachable(message)
    }
}

/// Per-queue statistics from the management API: one queue, or all of the vhost.
async fn queue_stats(
    api: &ManagementApi,
    vhost: &str,
    queue: Option<&str>,
    timeout: Duration,
) -> Result<Vec<QueueStats>> {
    let mut url = api.base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .map_err(|_| SourceError::Config(format!("{KEY_MANAGEMENT_URL} cannot be a base")))?;
        segments.pop_if_empty().extend(["api", "queues", vhost]);
        if let Some(q) = queue {
            segments.push(q);
        }
    }
    // Only the fields we read: a vhost may hold thousands of queues.
    url.query_pairs_mut().append_pair(
        "columns",
        "name,messages,messages_ready,messages_unacknowledged,\
         message_stats.publish,message_stats.publish_details.rate,\
         message_stats.deliver_get_details.rate,message_stats.ack_details.rate",
    );
    let mut request = api.client.get(url).timeout(timeout);
    if let Some((user, password)) = &api.credentials {
        request = request.basic_auth(user, Some(password));
    }
    let response = request
        .send()
        .await
        .map_err(|e| SourceError::from_reqwest(&e, timeout))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let what = match queue {
            Some(q) => format!("queue {q:?} in vhost {vhost:?}: {body}"),
            None => format!("vhost {vhost:?}: {body}"),
        };
        return Err(SourceError::from_status(status.as_u16(), what));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| SourceError::from_reqwest(&e, timeout))?;
    let parsed = match queue {
        Some(_) => serde_json::from_slice::<QueueStats>(&bytes).map(|q| vec![q]),
        None => serde_json::from_slice::<Vec<QueueStats>>(&bytes),
    };
    parsed.map_err(|e| SourceError::Protocol(format!("management API answer: {e}")))
}

/// The fields of the management API's queue object that we read.
#[derive(Debug, Deserialize)]
struct QueueStats {
    name: String,
    /// Ready plus unacknowledged, as the broker counts them.
    messages: Option<u64>,
    messages_ready: Option<u64>,
    messages_unacknowledged: Option<u64>,
    message_stats: Option<MessageStats>,
}

#[derive(Debug, Default, Deserialize)]
struct MessageStats {
    publish: Option<f64>,
    publish_details: Option<RateDetails>,
    deliver_get_details: Option<RateDetails>,
    ack_details: Option<RateDetails>,
}

#[derive(Debug, Deserialize)]
struct RateDetails {
    rate: f64,
}

impl QueueStats {
    fn measure(&self, measure: Measure) -> Result<f64> {
        let missing = || {
            SourceError::NoData(format!(
                "the broker has no statistics for queue {:?} yet",
                self.name
            ))
        };
        let stats = self.message_stats.as_ref();
        // No message_stats (or no details) on an existing queue means no traffic: 0/s is the
        // truth there, unlike a missing count.
        let rate = |details: Option<&RateDetails>| details.map_or(0.0, |d| d.rate);
        // The broker sends the total and its two parts together; an answer that carries only
        // the total and one part (as KEDA's scaler tests do) gives the other by difference.
        let (total, ready, unacked) = (
            self.messages,
            self.messages_ready,
            self.messages_unacknowledged,
        );
        Ok(match measure {
            Measure::Backlog => match (ready, unacked, total) {
                (Some(r), Some(u), _) => (r + u) as f64,
                (_, _, Some(t)) => t as f64,
                _ => return Err(missing()),
            },
            Measure::Ready => match (ready, unacked, total) {
                (Some(r), _, _) => r as f64,
                (None, Some(u), Some(t)) => t.saturating_sub(u) as f64,
                _ => return Err(missing()),
            },
            Measure::PublishRate => rate(stats.and_then(|s| s.publish_details.as_ref())),
            Measure::DeliverRate => rate(stats.and_then(|s| s.deliver_get_details.as_ref())),
            Measure::AckRate => rate(stats.and_then(|s| s.ack_details.as_ref())),
            // A counter read as 0 and then as its value would be a burst that never was.
            Measure::Published => stats.and_then(|s| s.publish).ok_or_else(missing)?,
        })
    }
}

/// Combines per-queue values; no queue is no data. Each value is finite (counts, and rates the
/// JSON parser read), but a sum of huge rates can overflow to +Inf: that is no data too.
fn aggregate(values: &[f64], how: Aggregate) -> Result<f64> {
    if values.is_empty() {
        return Err(SourceError::NoData("no queue matches".into()));
    }
    let combined = match how {
        Aggregate::Sum => values.iter().sum(),
        Aggregate::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Aggregate::Avg => values.iter().sum::<f64>() / values.len() as f64,
    };
    super::finite(combined, "the queues' statistics")
}

/// A RabbitMQ query as a [`Source`].
pub struct RabbitMqSource {
    broker: std::sync::Arc<Broker>,
    query: RabbitMqQuery,
    /// Compiled once from `query.target` when it is a regex.
    regex: Option<regex::Regex>,
}

impl RabbitMqSource {
    /// A source for `query` on `broker` (see [`super::Connections`]).
    pub fn new(broker: std::sync::Arc<Broker>, query: RabbitMqQuery) -> Self {
        let regex = match &query.target {
            QueueSelector::Regex(r) => regex::Regex::new(&format!("^(?:{r})$")).ok(),
            QueueSelector::Name(_) => None,
        };
        Self {
            broker,
            query,
            regex,
        }
    }

    /// Measures once.
    pub async fn measure(&self) -> Result<f64> {
        let q = &self.query;
        match &q.target {
            QueueSelector::Name(name) if self.broker.http.is_none() => {
                // resolve() allows AMQP only for Ready.
                let counts = self.broker.amqp_counts(&q.vhost, name, q.timeout).await?;
                Ok(counts.ready as f64)
            }
            QueueSelector::Name(name) => {
                let stats = self
                    .broker
                    .shared_queue_stats(&q.vhost, Some(name), q.timeout)
                    .await?;
                let values = stats
                    .iter()
                    .map(|s| s.measure(q.measure))
                    .collect::<Result<Vec<_>>>()?;
                aggregate(&values, q.aggregate)
            }
            QueueSelector::Regex(r) => {
                let regex = self.regex.as_ref().ok_or_else(|| {
                    SourceError::Config(format!("queueRegex {r:?} is not a regular expression"))
                })?;
                let stats = self
                    .broker
                    .shared_queue_stats(&q.vhost, None, q.timeout)
                    .await?;
                let values = stats
                    .iter()
                    .filter(|s| regex.is_match(&s.name))
                    .map(|s| s.measure(q.measure))
                    .collect::<Result<Vec<_>>>()?;
                aggregate(&values, q.aggregate)
            }
        }
    }
}

impl Source for RabbitMqSource {
    fn fetch(&self) -> BoxFuture<'_, Result<f64>> {
        self.measure().boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::secret::data;

    fn config() -> RabbitMqConfig {
        serde_yaml::from_str("connectionSecretRef: {name: rabbit}\nqueue: orders\n").unwrap()
    }

    #[test]
    fn defaults_are_backlog_sum_and_the_root_vhost() {
        let c = config();
        assert_eq!((c.empty_as, c.timeout), (None, None));
        let c: RabbitMqConfig = serde_yaml::from_str(
            "connectionSecretRef: {name: r}\nqueueRegex: 'jobs-.*'\nemptyAs: 0\n",
        )
        .unwrap();
        assert_eq!(c.empty_as, Some(0.0));
        let c = config();
        assert_eq!(
            (c.measure, c.aggregate, c.vhost.as_deref()),
            (Measure::Backlog, Aggregate::Sum, None)
        );
        let ok = data(&[("managementUrl", "http://guest:guest@127.0.0.1:15672")]);
        assert_eq!(c.resolve(&ok).unwrap().vhost, "/");
        let c: RabbitMqConfig = serde_yaml::from_str(
            "connectionSecretRef: {name: r}\nqueueRegex: 'orders-.*'\naggregate: max\nmeasure: PublishRate\n",
        )
        .unwrap();
        assert_eq!(
            (c.measure, c.aggregate),
            (Measure::PublishRate, Aggregate::Max)
        );
    }

    /// KEDA users' URLs name the vhost in their path: it is honoured, taken off the management
    /// API's base, and a `vhost` that says otherwise is refused.
    #[test]
    fn the_vhost_a_url_names_is_honoured_and_a_conflict_refused() {
        let resolve = |c: &RabbitMqConfig, pairs: &[(&str, &str)]| c.resolve(&data(pairs));
        let q = resolve(
            &config(),
            &[("managementUrl", "http://u:p@rabbit:15672/orders")],
        )
        .unwrap();
        assert_eq!(q.vhost, "orders");
        assert_eq!(
            q.connection.management_url.as_deref(),
            Some("http://u:p@rabbit:15672")
        );
        // AMQP alone serves the ready count.
        let ready = RabbitMqConfig {
            measure: Measure::Ready,
            ..config()
        };
        let q = resolve(&ready, &[("host", "amqp://u:p@rabbit:5672/billing%2Feu")]).unwrap();
        assert_eq!(q.vhost, "billing/eu");
        let root = resolve(&ready, &[("amqpUrl", "amqp://u:p@rabbit:5672/%2f")]).unwrap();
        assert_eq!(root.vhost, "/");
        // Set and named alike: fine; differently: refused, naming both.
        let set = |v: &str| RabbitMqConfig {
            vhost: Some(v.into()),
            ..config()
        };
        let url = [("managementUrl", "http://u:p@rabbit:15672/orders")];
        assert_eq!(resolve(&set("orders"), &url).unwrap().vhost, "orders");
        let err = resolve(&set("billing"), &url).unwrap_err().to_string();
        assert!(
            err.contains(r#"vhost "billing" conflicts with the vhost "orders""#),
            "{err}"
        );
        let err = resolve(
            &config(),
            &[
                ("managementUrl", "http://u:p@rabbit:15672/orders"),
                ("amqpUrl", "amqp://u:p@rabbit:5672/billing"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("they must agree"), "{err}");
    }

    /// `getVhostAndPathFromURLTestData` of kedacore/keda `pkg/scalers/rabbitmq_scaler_test.go`
    /// (at 8b4f083c): a management URL's path, KEDA's `vhostName`, and the vhost path and path
    /// prefix KEDA requests under. ebb requests under the same prefix and vhost, except that a
    /// `vhost` that differs from the one the URL names is refused where KEDA overrides it.
    #[test]
    fn a_management_url_reads_as_keda_reads_it_vhost_last_and_a_prefix_before() {
        const ROOT: &str = "/%2F";
        #[rustfmt::skip]
        let cases: &[(&str, &str, &str, &str)] = &[
            // (URL path after the host's `/`, vhostName, KEDA's vhost path, KEDA's prefix)
            ("myVhost", "", "/myVhost", ""),
            ("%2FmyVhost", "", "/%2FmyVhost", ""),
            ("/", "", ROOT, ""),
            ("//", "", ROOT, ""),
            ("/%2F", "", ROOT, ""),
            ("", "", ROOT, ""),
            ("sub1/myVhost", "", "/myVhost", "/sub1"),
            ("sub1/", "overridenVhost", "/overridenVhost", "/sub1"),
            ("myVhost", "overridenVhost", "/overridenVhost", ""),
            ("sub1/%2FmyVhost", "", "/%2FmyVhost", "/sub1"),
            ("sub1/", "", ROOT, "/sub1"),
            ("sub1/", "myVhost", "/myVhost", "/sub1"),
            ("sub1//", "", ROOT, "/sub1"),
            ("sub1/%2F", "", ROOT, "/sub1"),
            ("sub1/sub2/myVhost", "", "/myVhost", "/sub1/sub2"),
            ("sub1/sub2/myVhost", "overridenVhost", "/overridenVhost", "/sub1/sub2"),
            ("sub1/sub2/%2FmyVhost", "", "/%2FmyVhost", "/sub1/sub2"),
            ("sub1/sub2/", "", ROOT, "/sub1/sub2"),
            ("sub1/sub2/", "myVhost", "/myVhost", "/sub1/sub2"),
            ("sub1/myVhost", "overridenVhost", "/overridenVhost", "/sub1"),
            ("sub1/sub2//", "", ROOT, "/sub1/sub2"),
            ("sub1/sub2/%2F", "", ROOT, "/sub1/sub2"),
        ];
        for &(path, vhost_name, keda_vhost, keda_prefix) in cases {
            let url = format!("http://u:p@rabbit:15672/{path}");
            let config = RabbitMqConfig {
                vhost: (!vhost_name.is_empty()).then(|| vhost_name.to_string()),
                ..config()
            };
            let case = format!("{path:?} with vhostName {vhost_name:?}");
            let resolved = config.resolve(&data(&[("managementUrl", &url)]));
            let named = management_path(&reqwest::Url::parse(&url).unwrap()).1;
            if let (Some(named), false) = (&named, vhost_name.is_empty())
                && named != vhost_name
            {
                let err = resolved.unwrap_err().to_string();
                assert!(err.contains("conflicts"), "{case}: {err}");
                continue;
            }
            let q = resolved.unwrap_or_else(|e| panic!("{case}: {e}"));
            let keda_vhost = percent_encoding::percent_decode_str(&keda_vhost[1..])
                .decode_utf8_lossy()
                .into_owned();
            assert_eq!(q.vhost, keda_vhost, "{case}");
            assert_eq!(
                q.connection.management_url.as_deref(),
                Some(format!("http://u:p@rabbit:15672{keda_prefix}").as_str()),
                "{case}"
            );
        }
    }

    #[test]
    fn backlog_without_a_management_url_is_refused() {
        let amqp_only = data(&[("amqpUrl", "amqp://guest:guest@127.0.0.1:5672/%2f")]);
        let err = config().resolve(&amqp_only).unwrap_err();
        assert!(
            matches!(&err, SourceError::Config(m) if m.contains("unacknowledged")
                && m.contains("add managementUrl") && m.contains("or set measure: Ready")),
            "{err}"
        );
        let ready = RabbitMqConfig {
            measure: Measure::Ready,
            ..config()
        };
        assert!(ready.resolve(&amqp_only).is_ok());
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let ok = data(&[("managementUrl", "http://guest:guest@127.0.0.1:15672")]);
        let both = RabbitMqConfig {
            queue_regex: Some("x".into()),
            ..config()
        };
        let bad_regex = RabbitMqConfig {
            queue: None,
            queue_regex: Some("(".into()),
            ..config()
        };
        for c in [both, bad_regex] {
            assert!(matches!(c.resolve(&ok), Err(SourceError::Config(_))));
        }
        assert!(matches!(
            config().resolve(&data(&[])),
            Err(SourceError::Config(_))
        ));
        let q = config().resolve(&ok).unwrap();
        assert_eq!(q.connection.upstream(), "http://127.0.0.1:15672");
        assert!(!format!("{q:?}").contains("guest"));
    }

    #[test]
    fn measures_and_aggregates() {
        let q: QueueStats = serde_json::from_str(
            r#"{"name":"a","messages_ready":32,"messages_unacknowledged":5,
                "message_stats":{"publish_details":{"rate":2.5}}}"#,
        )
        .unwrap();
        assert_eq!(q.measure(Measure::Backlog), Ok(37.0));
        assert_eq!(q.measure(Measure::Ready), Ok(32.0));
        assert_eq!(q.measure(Measure::PublishRate), Ok(2.5));
        assert_eq!(q.measure(Measure::DeliverRate), Ok(0.0));
        // No counter is no data, not 0 (the next reading would be a burst that never was).
        assert!(matches!(
            q.measure(Measure::Published),
            Err(SourceError::NoData(_))
        ));
        let counted: QueueStats =
            serde_json::from_str(r#"{"name":"c","message_stats":{"publish":1234}}"#).unwrap();
        assert_eq!(counted.measure(Measure::Published), Ok(1234.0));
        let fresh: QueueStats = serde_json::from_str(r#"{"name":"b"}"#).unwrap();
        assert!(matches!(
            fresh.measure(Measure::Backlog),
            Err(SourceError::NoData(_))
        ));
        assert_eq!(aggregate(&[1.0, 5.0, 3.0], Aggregate::Sum), Ok(9.0));
        assert_eq!(aggregate(&[1.0, 5.0, 3.0], Aggregate::Max), Ok(5.0));
        assert_eq!(aggregate(&[1.0, 5.0, 3.0], Aggregate::Avg), Ok(3.0));
        assert!(matches!(
            aggregate(&[], Aggregate::Sum),
            Err(SourceError::NoData(_))
        ));
        // A rate beyond f64 does not parse, and rates that overflow together are no data.
        assert!(serde_json::from_str::<RateDetails>(r#"{"rate":1e400}"#).is_err());
        for how in [Aggregate::Sum, Aggregate::Avg] {
            assert!(matches!(
                aggregate(&[f64::MAX, f64::MAX], how),
                Err(SourceError::NoData(_))
            ));
        }
        assert_eq!(percent_decode("p%40ss"), "p@ss");
    }
}
