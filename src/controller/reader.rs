//! The controller's seam to metric values: [`MetricReader`].
//!
//! REPLACE AT MERGE: production reads the `collect` layer's deduplicated cache through this
//! trait once that layer lands. Until then [`DirectReader`] asks the sources on each poll:
//! Prometheus instant queries and the RabbitMQ management API. No caching, no auth beyond
//! URL credentials: a stopgap that keeps the controller testable against the real services.

use std::future::Future;
use std::pin::Pin;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;

use crate::crd::Metric;
use crate::crd::source_config::{Measure, PrometheusConfig, RabbitMqConfig};

/// Why a metric has no value. Never read as zero.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// The source failed or could not be reached.
    #[error("source failed: {0}")]
    SourceFailed(String),
    /// The source answered with nothing to read.
    #[error("no data: {0}")]
    Empty(String),
    /// The metric's configuration cannot be used (missing secret key, bad URL).
    #[error("bad configuration: {0}")]
    Config(String),
}

impl ReadError {
    /// The engine's reason for the missing value.
    pub fn no_data(&self) -> crate::engine::NoData {
        match self {
            ReadError::Empty(_) => crate::engine::NoData::Empty,
            _ => crate::engine::NoData::SourceFailed,
        }
    }
}

/// A boxed future, so that readers can be shared as `Arc<dyn MetricReader>`.
pub type ReadFuture<'a> = Pin<Box<dyn Future<Output = Result<f64, ReadError>> + Send + 'a>>;

/// Reads the current value of one metric of a ScaledTarget in `namespace`.
pub trait MetricReader: Send + Sync {
    /// The metric's value now, or why there is none.
    fn read<'a>(&'a self, namespace: &'a str, metric: &'a Metric) -> ReadFuture<'a>;
}

/// Asks the sources directly on every read (see the module doc).
pub struct DirectReader {
    client: kube::Client,
    http: reqwest::Client,
}

impl DirectReader {
    /// A reader that resolves secrets with `client`.
    pub fn new(client: kube::Client) -> Self {
        crate::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .expect("an HTTP client");
        Self { client, http }
    }

    async fn prometheus(&self, p: &PrometheusConfig) -> Result<f64, ReadError> {
        let url = format!("{}/api/v1/query", p.address.trim_end_matches('/'));
        let body: serde_json::Value = self
            .http
            .get(url)
            .query(&[("query", p.query.as_str())])
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| ReadError::SourceFailed(e.to_string()))?
            .json()
            .await
            .map_err(|e| ReadError::SourceFailed(e.to_string()))?;
        let result = &body["data"]["result"];
        let values: Vec<f64> = match body["data"]["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["value"][1].as_str()?.parse().ok())
                .collect(),
            Some("scalar") => result[1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .into_iter()
                .collect(),
            _ => {
                return Err(ReadError::SourceFailed(format!(
                    "unexpected answer: {body}"
                )));
            }
        };
        if values.is_empty() {
            return p.empty_as.ok_or_else(|| {
                ReadError::Empty(format!("query {:?} returned no samples", p.query))
            });
        }
        Ok(values.iter().sum())
    }

    async fn rabbitmq(&self, namespace: &str, r: &RabbitMqConfig) -> Result<f64, ReadError> {
        let secrets = Api::<Secret>::namespaced(self.client.clone(), namespace);
        let name = &r.connection_secret_ref.name;
        let secret = secrets
            .get(name)
            .await
            .map_err(|e| ReadError::Config(format!("secret {name}: {e}")))?;
        let management = secret
            .data
            .as_ref()
            .and_then(|d| d.get("management"))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .ok_or_else(|| ReadError::Config(format!("secret {name} has no key \"management\"")))?;
        let mut url = reqwest::Url::parse(&management)
            .map_err(|e| ReadError::Config(format!("management URL: {e}")))?;
        let (user, password) = (
            url.username().to_string(),
            url.password().map(str::to_string),
        );
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let queue = r
            .queue
            .as_deref()
            .ok_or_else(|| ReadError::Config("queueRegex needs the collect layer".into()))?;
        url.path_segments_mut()
            .map_err(|_| ReadError::Config("management URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(["api", "queues", &r.vhost, queue]);
        let mut request = self.http.get(url);
        if !user.is_empty() {
            request = request.basic_auth(user, password);
        }
        let q: serde_json::Value = request
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| ReadError::SourceFailed(e.to_string()))?
            .json()
            .await
            .map_err(|e| ReadError::SourceFailed(e.to_string()))?;
        let field = |path: &[&str]| {
            path.iter()
                .fold(&q, |v, k| &v[*k])
                .as_f64()
                .ok_or_else(|| ReadError::Empty(format!("queue {queue} has no {}", path.join("."))))
        };
        match r.measure {
            Measure::Backlog => {
                Ok(field(&["messages_ready"])? + field(&["messages_unacknowledged"])?)
            }
            Measure::Ready => field(&["messages_ready"]),
            Measure::PublishRate => field(&["message_stats", "publish_details", "rate"]),
            Measure::DeliverRate => field(&["message_stats", "deliver_get_details", "rate"]),
        }
    }
}

impl MetricReader for DirectReader {
    fn read<'a>(&'a self, namespace: &'a str, metric: &'a Metric) -> ReadFuture<'a> {
        Box::pin(async move {
            match (&metric.prometheus, &metric.rabbitmq) {
                (Some(p), _) => self.prometheus(p).await,
                (None, Some(r)) => self.rabbitmq(namespace, r).await,
                (None, None) => Err(ReadError::Config("the metric has no source".into())),
            }
        })
    }
}
