//! Minimal source configurations for the ScaledTarget schema.
//!
//! REPLACE AT MERGE: these mirror the shapes the `source` layer defines (`source::prometheus::
//! PrometheusConfig`, `source::rabbitmq::RabbitMqConfig`, `source::secret::SecretRef`); once that
//! layer lands on main, `crd` re-exports its types instead and this file goes. The YAML shape is
//! the one in design.md, so the swap changes no manifest.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to a Secret in the ScaledTarget's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
}

/// A PromQL query whose result is the metric's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusConfig {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    pub address: String,
    /// An instant query; the sum of the returned samples is the value.
    pub query: String,
    /// Secret with a bearer token or basic credentials and an optional CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_ref: Option<SecretRef>,
    /// Query timeout (Go duration, e.g. `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The value to use when the query returns no samples; unset: no data (never zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_as: Option<f64>,
}

/// How several queues matched by `queueRegex` combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// Sum over the queues.
    Sum,
    /// The largest queue.
    Max,
    /// The mean over the queues.
    Avg,
}

/// What is measured on a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum Measure {
    /// Ready plus unacknowledged messages.
    #[default]
    Backlog,
    /// Ready messages.
    Ready,
    /// Messages published per second.
    PublishRate,
    /// Messages delivered per second.
    DeliverRate,
}

/// A RabbitMQ queue (or a set of queues) whose depth or rate is the metric's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RabbitMqConfig {
    /// Secret holding the amqp(s):// and management http(s):// URLs.
    pub connection_secret_ref: SecretRef,
    /// One queue by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Queues whose name matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_regex: Option<String>,
    /// How the queues matched by `queueRegex` combine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// Virtual host.
    #[serde(default = "default_vhost")]
    pub vhost: String,
    /// What is measured.
    #[serde(default)]
    pub measure: Measure,
}

fn default_vhost() -> String {
    "/".into()
}
