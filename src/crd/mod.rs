//! The ScaledTarget custom resource (`ebb.dev/v1alpha1`, short name `st`): how users configure
//! ebb. Declared once, here: the OpenAPI schema comes from these types, cross-field rules are CEL
//! (`x-kubernetes-validations`) that the API server enforces, and `ebb crd` prints the result
//! (`deploy/crd.yaml` is checked against it by `tests/crd_manifest.rs`).

mod quantity;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::engine::adaptive::AdaptiveConfig;
pub use crate::engine::slo::SloConfig;
pub use crate::source::prometheus::PrometheusConfig;
pub use crate::source::rabbitmq::{Measure, RabbitMqConfig};
pub use crate::source::secret::SecretRef;
pub use quantity::{QuantityError, from_milli, milli_value};

/// Annotation that pauses a ScaledTarget: `"true"` freezes scaling where it is.
pub const PAUSED_ANNOTATION: &str = "ebb.dev/paused";
/// Annotation that pauses a ScaledTarget at a fixed replica count (ebb scales there once, then
/// holds).
pub const PAUSED_REPLICAS_ANNOTATION: &str = "ebb.dev/paused-replicas";
/// Mode Hpa: take over this existing HPA of the same workload instead of refusing it
/// (KEDA's transfer-hpa-ownership): the HPA object stays, so its controller's memory of recent
/// recommendations does too and the replica count does not jump.
pub const ADOPT_HPA_ANNOTATION: &str = "ebb.dev/adopt-hpa";
/// Label on objects ebb owns and on the external metrics it serves: the ScaledTarget's name.
pub const SCALED_TARGET_LABEL: &str = "ebb.dev/scaledtarget";

/// Desired scaling of one workload by ebb.
// The printer columns name conditions of `engine::conditions` (attributes take no constants;
// tests/crd_manifest.rs checks that they agree).
// The printer columns repeat `type_ = ...`, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[kube(
    group = "ebb.dev",
    version = "v1alpha1",
    kind = "ScaledTarget",
    namespaced,
    shortname = "st",
    status = "Box<ScaledTargetStatus>",
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetRef.name"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicas"),
    printcolumn(
        name = "Current",
        type_ = "integer",
        json_path = ".status.currentReplicas"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Active\")].status"
    ),
    printcolumn(
        name = "Fallback",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Fallback\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("minReplicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("!has(self.idleReplicas) || self.idleReplicas == 0")
    .message("idleReplicas: only 0 is supported (the HPA would scale any other idle count back up to minReplicas)"))]
#[x_kube(validation = Rule::new("self.metrics.all(m, self.metrics.exists_one(n, n.name == m.name))")
    .message("metric names must be unique"))]
#[x_kube(validation = Rule::new("!has(self.fallback) || self.fallback.replicas <= self.maxReplicas")
    .message("fallback.replicas must not exceed maxReplicas"))]
#[x_kube(validation = Rule::new("!has(self.formula) || self.metrics.all(m, m.name != self.formula.name)")
    .message("formula.name must differ from every metric's name"))]
#[x_kube(validation = Rule::new("!has(self.formula) || self.metrics.all(m, m.target.type != 'DrainTime' && !has(m.slo))")
    .message("with a formula the metrics are its inputs: target type DrainTime and slo belong to a metric that scales on its own"))]
#[serde(rename_all = "camelCase")]
pub struct ScaledTargetSpec {
    /// The workload to scale: anything with a `/scale` subresource.
    pub target_ref: TargetRef,
    /// How ebb acts on the workload.
    #[serde(default)]
    pub mode: Mode,
    /// Lower bound while the target is active; 0 allows scale to zero (every mode: ebb owns
    /// 0 <-> 1, the HPA or ebb's own decisions the rest).
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    /// Replicas while idle, below minReplicas: only 0 (scale to zero with a floor of
    /// minReplicas while active), as KEDA's idleReplicaCount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 0))]
    pub idle_replicas: Option<i32>,
    /// Scale to zero: seconds every metric must stay at or below its activation after the
    /// last activity before the workload goes to zero (default 300, as KEDA's cooldownPeriod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub cooldown_seconds: Option<i32>,
    /// Scale to zero: no scale to zero within this many seconds of the target's creation
    /// (default 0, as KEDA's initialCooldownPeriod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 604800))]
    pub initial_cooldown_seconds: Option<i32>,
    /// Upper bound.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// How often metrics are read and a decision is made (Go duration, at least 1s, at most 1h).
    #[serde(default = "default_polling_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')")
        .message("pollingInterval must be a duration between 1s and 1h, e.g. 15s"))]
    pub polling_interval: kube::core::Duration,
    /// The load signals; the one asking for the most replicas wins. With a `formula`, they are
    /// its inputs and only the formula scales.
    #[schemars(length(min = 1, max = 16))]
    pub metrics: Vec<Metric>,
    /// A composite metric computed from the metrics (KEDA's scalingModifiers): the only one
    /// that scales when set. Learning, activation and the backtest treat it as any metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub formula: Option<Box<FormulaMetric>>,
    /// Thresholds learned from history (`docs/adaptive.md`), for AverageValue metrics. Absent:
    /// off (the plain HPA algorithm); `{}`: on with the defaults. The seasonal forecast is part
    /// of it (`forecast`, on by default), looking `startupDelaySeconds` plus one polling
    /// interval ahead: there is no separate forecast section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(
        validation = Rule::new("self.minHeadroom >= 0.0 && self.minHeadroom <= self.maxHeadroom")
            .message("adaptive: need 0 <= minHeadroom <= maxHeadroom"),
        validation = Rule::new("self.minTolerance >= 0.0 && self.minTolerance <= self.maxTolerance && self.maxTolerance < 1.0")
            .message("adaptive: need 0 <= minTolerance <= maxTolerance < 1 (a tolerance of 1 would never scale down)"),
        validation = Rule::new("self.minScaleDownWindowSeconds <= self.maxScaleDownWindowSeconds")
            .message("adaptive: need minScaleDownWindowSeconds <= maxScaleDownWindowSeconds"),
        validation = Rule::new("self.maxScaleDownWindowSeconds <= 86400 && self.startupDelaySeconds <= 3600")
            .message("adaptive: maxScaleDownWindowSeconds is at most 86400 (1 day) and startupDelaySeconds at most 3600 (1 hour)"),
        validation = Rule::new("self.underProvisionRisk > 0.0 && self.underProvisionRisk <= 0.5")
            .message("adaptive: underProvisionRisk must be in (0, 0.5], e.g. 0.005 for 0.5 %")
    )]
    pub adaptive: Option<Box<AdaptiveConfig>>,
    /// Stabilization windows and rate-limit policies, in the HPA v2 shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Box<HorizontalPodAutoscalerBehavior>>,
    /// What to do when every source keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Fallback>,
    /// Who to tell when ebb cannot keep up or keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<Box<Escalation>>,
}

fn default_min_replicas() -> i32 {
    1
}

/// Seconds of quiet before scale to zero when `cooldownSeconds` is not set.
pub const DEFAULT_COOLDOWN_SECONDS: i32 = 300;

fn default_polling_interval() -> kube::core::Duration {
    std::time::Duration::from_secs(15).into()
}

/// The workload a ScaledTarget scales.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the workload, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind of the workload, e.g. `Deployment`.
    pub kind: String,
    /// Name of the workload, in the ScaledTarget's namespace.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// How ebb acts on the workload.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
pub enum Mode {
    /// ebb owns an autoscaling/v2 HPA that reads ebb's external metrics.
    #[default]
    Hpa,
    /// ebb scales the workload's `/scale` itself.
    Direct,
    /// ebb decides and reports, and changes nothing.
    Shadow,
}

impl Mode {
    /// The mode's name as written in the spec.
    pub fn as_str(&self) -> &'static str {
        match self {
            Mode::Hpa => "Hpa",
            Mode::Direct => "Direct",
            Mode::Shadow => "Shadow",
        }
    }
}

impl Metric {
    /// What "no data" stands for, when the user said (`emptyAs` of its source).
    pub fn empty_as(&self) -> Option<f64> {
        self.prometheus
            .as_ref()
            .and_then(|p| p.empty_as)
            .or(self.rabbitmq.as_ref().and_then(|r| r.empty_as))
    }

    /// A DrainTime metric's other reads (`None` for other targets).
    pub fn queue_signals(&self) -> Option<QueueSignalMetrics> {
        if self.target.type_ != TargetType::DrainTime {
            return None;
        }
        let derived = |suffix: &str| Metric {
            name: format!("{}-{suffix}", self.name),
            arrival_rate: None,
            served_rate: None,
            slo: None,
            ..self.clone()
        };
        if let Some(r) = &self.rabbitmq {
            let measure = |measure| {
                Box::new(RabbitMqConfig {
                    measure,
                    ..(**r).clone()
                })
            };
            let with = |suffix: &str, m| Metric {
                rabbitmq: Some(measure(m)),
                ..derived(suffix)
            };
            return Some(QueueSignalMetrics {
                arrival: with("arrival", Measure::PublishRate),
                served: Some(with("served", Measure::DeliverRate)),
                waiting: (r.measure != Measure::Ready).then(|| with("waiting", Measure::Ready)),
                published: Some(with("published", Measure::Published)),
            });
        }
        let prometheus = |p: &PrometheusConfig, suffix: &str| Metric {
            prometheus: Some(Box::new(p.clone())),
            ..derived(suffix)
        };
        Some(QueueSignalMetrics {
            arrival: prometheus(self.arrival_rate.as_ref()?, "arrival"),
            served: self.served_rate.as_ref().map(|p| prometheus(p, "served")),
            waiting: None,
            published: None,
        })
    }

    /// The SLO signal as a metric of its own (read through the same collector, so an SLO
    /// query shared by several metrics or targets is fetched once).
    pub fn slo_signal(&self) -> Option<Metric> {
        let slo = self.slo.as_ref()?;
        Some(Metric {
            name: format!("{}-slo", self.name),
            prometheus: Some(Box::new(slo.prometheus.clone())),
            rabbitmq: None,
            target: self.target.clone(),
            activation: None,
            slo: None,
            arrival_rate: None,
            served_rate: None,
        })
    }
}

/// One load signal: exactly one source and a target.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.prometheus), has(self.rabbitmq)].filter(x, x).size() == 1")
    .message("each metric needs exactly one source: set prometheus or rabbitmq, not both"))]
#[x_kube(validation = Rule::new("!has(self.slo) || self.target.type == 'AverageValue'")
    .message("slo learns a per-pod target: it needs target type AverageValue"))]
#[x_kube(validation = Rule::new("self.target.type != 'DrainTime' || has(self.rabbitmq) || has(self.arrivalRate)")
    .message("target type DrainTime on a Prometheus metric needs arrivalRate: a query of the messages arriving per second"))]
#[x_kube(validation = Rule::new("(!has(self.arrivalRate) && !has(self.servedRate)) || (self.target.type == 'DrainTime' && has(self.prometheus))")
    .message("arrivalRate and servedRate are read only by target type DrainTime on a Prometheus metric (a RabbitMQ queue gives its own rates)"))]
#[x_kube(validation = Rule::new("self.target.type != 'DrainTime' || !has(self.rabbitmq) || !has(self.rabbitmq.measure) || self.rabbitmq.measure in ['Backlog', 'Ready']")
    .message("target type DrainTime reads the queue's backlog: rabbitmq.measure must be Backlog (the default) or Ready"))]
#[x_kube(validation = Rule::new("(!(has(self.prometheus) && has(self.prometheus.timeout)) || self.prometheus.timeout.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$')) && (!(has(self.rabbitmq) && has(self.rabbitmq.timeout)) || self.rabbitmq.timeout.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$')) && (!(has(self.arrivalRate) && has(self.arrivalRate.timeout)) || self.arrivalRate.timeout.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$')) && (!(has(self.servedRate) && has(self.servedRate.timeout)) || self.servedRate.timeout.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$')) && (!(has(self.slo) && has(self.slo.prometheus) && has(self.slo.prometheus.timeout)) || self.slo.prometheus.timeout.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$'))")
    .message("a timeout needs a unit, e.g. 1500ms or 5s: a bare number is refused (KEDA reads timeout: \"1000\" as milliseconds)"))]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    /// The metric's name; also its external metric name in mode Hpa.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// A Prometheus query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<Box<PrometheusConfig>>,
    /// A RabbitMQ queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rabbitmq: Option<Box<RabbitMqConfig>>,
    /// What the value is compared against.
    pub target: MetricTarget,
    /// The value at or below which this metric counts as idle (default 0: any value above
    /// zero is activity). A target may scale to zero only while every metric is idle; one
    /// above its activation wakes it. Distinct from the scaling target: activation 50 with
    /// an AverageValue of 10 leaves a queue of 40 at zero replicas, and a queue of 60 starts
    /// one pod and then the HPA takes over. A DrainTime metric compares its backlog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<f64>,
    /// Learn the per-pod target from an SLO signal (with `spec.adaptive` on): the highest load
    /// per pod at which the SLO held, with a margin (`docs/adaptive.md`, "SLO target").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<Box<MetricSlo>>,
    /// Target type DrainTime on a Prometheus metric (whose `query` is the backlog): the
    /// messages arriving per second, e.g. `sum(rate(kafka_topic_partition_current_offset[1m]))`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_rate: Option<Box<PrometheusConfig>>,
    /// Target type DrainTime on a Prometheus metric: the messages served (completed) per second,
    /// from which the per-pod throughput is learned. Without it the set throughput holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_rate: Option<Box<PrometheusConfig>>,
}

/// A composite metric: an expression over the ScaledTarget's metrics, with its own target and
/// activation (`docs/controller.md`, "Formula").
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("self.target.type in ['Value', 'AverageValue']")
    .message("formula.target: type Value or AverageValue"))]
#[serde(rename_all = "camelCase")]
pub struct FormulaMetric {
    /// Its name: its external metric name in mode Hpa and its entry in status.
    #[serde(default = "default_formula_name")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// CEL syntax over the metrics' names, a `-` in a name written `_`: numbers, `+ - * /`,
    /// comparisons, `&& || !`, `c ? a : b`, `min(..)`, `max(..)`. E.g. `orders / max(workers, 1)`,
    /// `backlog > 100 && lag_seconds > 30 ? backlog : 0`. It has no value when an input has
    /// none or it divides by zero (then fallback applies, as for any metric).
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new("self.matches('^[-+*/()<>=!?:&|,._ \\t\\n0-9a-zA-Z]+$')")
        .message("formula.expression: only numbers, metric names (a - written _), + - * / ( ) comparisons && || ! ?: min() max()"))]
    pub expression: String,
    /// What the formula's value is compared against.
    pub target: MetricTarget,
    /// The formula's value at or below which the target counts as idle (scale to zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<f64>,
}

fn default_formula_name() -> String {
    "formula".into()
}

impl FormulaMetric {
    /// The formula as a metric with no source of its own: what the decision sees.
    pub fn as_metric(&self) -> Metric {
        Metric {
            name: self.name.clone(),
            prometheus: None,
            rabbitmq: None,
            target: self.target.clone(),
            activation: self.activation,
            slo: None,
            arrival_rate: None,
            served_rate: None,
        }
    }

    /// The formula parsed over `metrics` (its inputs).
    pub fn parse(
        &self,
        metrics: &[Metric],
    ) -> Result<crate::engine::formula::Formula, crate::engine::formula::FormulaError> {
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        crate::engine::formula::Formula::parse(&self.expression, &names)
    }
}

/// The reads a DrainTime metric needs besides its backlog, as metrics of their own (read
/// through the same collector, so they are deduplicated like any query).
#[derive(Debug, Clone)]
pub struct QueueSignalMetrics {
    /// Messages arriving per second.
    pub arrival: Metric,
    /// Messages served per second, when known.
    pub served: Option<Metric>,
    /// Messages waiting for a consumer, when it differs from the metric itself (a RabbitMQ
    /// backlog counts the unacknowledged too); `None`: the backlog is what waits.
    pub waiting: Option<Metric>,
    /// Messages published so far (a counter), when the source keeps one.
    pub published: Option<Metric>,
}

/// An SLO signal and how the per-pod target is learned from it.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("self.allowedViolations > 0.0 && self.allowedViolations < 0.5")
    .message("slo: allowedViolations must be in (0, 0.5), e.g. 0.01"))]
#[x_kube(validation = Rule::new("self.margin >= 0.0 && self.margin < 1.0")
    .message("slo: margin must be in [0, 1), e.g. 0.1"))]
#[x_kube(validation = Rule::new("self.minTargetRatio > 0.0 && self.minTargetRatio <= 1.0 && self.maxTargetRatio >= 1.0")
    .message("slo: need 0 < minTargetRatio <= 1 <= maxTargetRatio"))]
#[serde(rename_all = "camelCase")]
pub struct MetricSlo {
    /// A query for the SLO signal (one series), e.g. a p99 latency in seconds:
    /// `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[1m])))`.
    pub prometheus: PrometheusConfig,
    /// Objective, allowed violations, margin and bounds.
    #[serde(flatten)]
    pub learn: SloConfig,
}

/// The kind of target, as in the HPA v2 `MetricTarget` (external metrics: no Utilization).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum TargetType {
    /// The metric's total against `value`.
    Value,
    /// The metric's total divided by the replica count against `averageValue`.
    AverageValue,
    /// A queue scaled on its work: `ceil((arrivals/s + backlog / drainSeconds) / throughput
    /// per pod)`, the throughput set by `throughputPerPod` and learned (`docs/queues.md`).
    DrainTime,
}

/// What a metric's value is compared against.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[x_kube(validation = Rule::new("self.type == 'Value' ? (has(self.value) && !has(self.averageValue)) : self.type == 'AverageValue' ? (has(self.averageValue) && !has(self.value)) : (!has(self.value) && !has(self.averageValue))")
    .message("target type Value needs value, type AverageValue needs averageValue (and not the other), type DrainTime neither"))]
#[x_kube(validation = Rule::new("self.type == 'DrainTime' ? (has(self.drainSeconds) && has(self.throughputPerPod)) : !(has(self.drainSeconds) || has(self.throughputPerPod) || has(self.learnThroughput) || has(self.minThroughputPerPod) || has(self.maxThroughputPerPod))")
    .message("target type DrainTime needs drainSeconds and throughputPerPod; the drain and throughput fields belong to type DrainTime only"))]
#[serde(rename_all = "camelCase")]
pub struct MetricTarget {
    /// Value or AverageValue.
    #[serde(rename = "type")]
    pub type_: TargetType,
    /// The target total (type Value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self))")
        .message("value must be a Kubernetes quantity, e.g. 100, 1.5k, 250m"))]
    #[schemars(schema_with = "bounded_quantity")]
    pub value: Option<Quantity>,
    /// The target per replica (type AverageValue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self))")
        .message("averageValue must be a Kubernetes quantity, e.g. 100, 1.5k, 250m"))]
    #[schemars(schema_with = "bounded_quantity")]
    pub average_value: Option<Quantity>,
    /// Type DrainTime: any backlog should be gone within this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub drain_seconds: Option<i32>,
    /// Type DrainTime: messages per second one pod gets through; in force until one is
    /// learned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("throughputPerPod must be a positive Kubernetes quantity, e.g. 10, 2.5, 500m"))]
    #[schemars(schema_with = "bounded_quantity")]
    pub throughput_per_pod: Option<Quantity>,
    /// Type DrainTime: learn the per-pod throughput from the served rate while messages wait
    /// (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learn_throughput: Option<bool>,
    /// Type DrainTime: the least learned throughput (default a quarter of `throughputPerPod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("minThroughputPerPod must be a positive Kubernetes quantity"))]
    #[schemars(schema_with = "bounded_quantity")]
    pub min_throughput_per_pod: Option<Quantity>,
    /// Type DrainTime: the most learned throughput (default four times `throughputPerPod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))")
        .message("maxThroughputPerPod must be a positive Kubernetes quantity"))]
    #[schemars(schema_with = "bounded_quantity")]
    pub max_throughput_per_pod: Option<Quantity>,
}

/// The schema of an optional target quantity: an integer or a string, as upstream's Quantity,
/// of at most 64 characters. Without a bound on its length the API server estimates the
/// `isQuantity()` rule over a string as long as a request, beyond its CEL cost budget.
fn bounded_quantity(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "nullable": true,
        "x-kubernetes-int-or-string": true,
        "maxLength": 64,
    })
}

impl MetricTarget {
    /// The engine's view of this target, in milli-units.
    pub fn to_engine(&self) -> Result<crate::engine::Target, QuantityError> {
        let q = |v: &Option<Quantity>| {
            v.as_ref()
                .ok_or(QuantityError::Missing)
                .and_then(|q| milli_value(&q.0))
        };
        Ok(match self.type_ {
            TargetType::Value => crate::engine::Target::Value(q(&self.value)?),
            TargetType::AverageValue => {
                crate::engine::Target::AverageValue(q(&self.average_value)?)
            }
            // The work (msg/s) per pod against the throughput per pod.
            TargetType::DrainTime => {
                crate::engine::Target::AverageValue(q(&self.throughput_per_pod)?)
            }
        })
    }

    /// Type DrainTime: the machine's view of the drain time and throughput.
    pub fn drain_spec(&self) -> Result<Option<crate::engine::drain::DrainSpec>, QuantityError> {
        if self.type_ != TargetType::DrainTime {
            return Ok(None);
        }
        let per_second = |q: &Quantity| milli_value(&q.0).map(|m| m as f64 / 1000.0);
        let throughput = per_second(
            self.throughput_per_pod
                .as_ref()
                .ok_or(QuantityError::Missing)?,
        )?;
        let bound = |q: &Option<Quantity>, default: f64| q.as_ref().map_or(Ok(default), per_second);
        let learn = if self.learn_throughput.unwrap_or(true) {
            let lo = bound(&self.min_throughput_per_pod, throughput / 4.0)?;
            let hi = bound(&self.max_throughput_per_pod, throughput * 4.0)?;
            Some((lo.min(throughput), hi.max(throughput)))
        } else {
            None
        };
        Ok(Some(crate::engine::drain::DrainSpec {
            drain_seconds: f64::from(self.drain_seconds.unwrap_or(60).max(1)),
            throughput,
            learn,
        }))
    }

    /// The target's quantity as written (DrainTime: the set throughput per pod).
    pub fn quantity(&self) -> Option<&Quantity> {
        match self.type_ {
            TargetType::Value => self.value.as_ref(),
            TargetType::AverageValue => self.average_value.as_ref(),
            TargetType::DrainTime => self.throughput_per_pod.as_ref(),
        }
    }
}

/// What to do when every source fails: never read a failure as zero load.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Fallback {
    /// Consecutive polls in which every metric failed before fallback starts.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: i32,
    /// Replicas to run in fallback if that is more than the current count (never fewer).
    #[schemars(range(min = 0))]
    pub replicas: i32,
}

fn default_failure_threshold() -> i32 {
    3
}

/// Escalation to a human: a webhook called (rate-limited) when ebb cannot cope.
#[derive(KubeSchema, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    /// Secret with key `url`, optional `headers` (one `Name: value` per line) and optional
    /// `timeoutSeconds` (default 10).
    pub webhook_secret_ref: SecretRef,
    /// Least time between two calls for the same ScaledTarget (Go duration).
    #[serde(default = "default_min_escalation_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('0s')")
        .message("minInterval must be a non-negative duration, e.g. 15m"))]
    pub min_interval: kube::core::Duration,
    /// Consecutive failed scaling attempts before escalating.
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1))]
    pub failure_threshold: i32,
}

fn default_min_escalation_interval() -> kube::core::Duration {
    std::time::Duration::from_secs(15 * 60).into()
}

/// What ebb observed and did.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaledTargetStatus {
    /// Ready, Active, Fallback, Paused, ScalingLimited.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The workload's replica count at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// The count ebb decided on at the last poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When ebb last changed the replica count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// The owned HPA (mode Hpa).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_name: Option<String>,
    /// Per-metric readings.
    #[serde(default)]
    pub metrics: Vec<MetricStatus>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What ebb learned of the workload itself (not of one metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<WorkloadLearned>,
}

/// What ebb learned of a workload from its pods.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadLearned {
    /// Pod created -> Ready, learned from the workload's own pods: the stall budget is twice
    /// this (at least 30 s).
    pub startup_delay_seconds: f64,
    /// What it rests on, e.g. "0.9 quantile of the last 12 pod starts".
    pub basis: String,
}

/// One metric's last reading.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricStatus {
    /// The metric's name.
    pub name: String,
    /// The last value read; absent when the source failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Quantity>,
    /// The target from the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Quantity>,
    /// The learned target (AverageValue metrics with `spec.adaptive` on): the static target
    /// over one plus the learned headroom; the static target itself while the history is
    /// short. In mode Hpa, the owned HPA's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned_target: Option<Quantity>,
    /// The learned values behind it, as of the last `LearnedChanged` Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<Box<LearnedStatus>>,
    /// When the value was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
    /// Why there is no value, when the source failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The learned values of one metric (`engine::adaptive::Learned`) as status shows them: each
/// value with its basis (`Static` while the history is short, `History`, or `HourOfDay(h)`).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LearnedStatus {
    /// Extra capacity over the reactive recommendation (fraction of the load).
    pub headroom: f64,
    /// Where the headroom comes from.
    pub headroom_basis: String,
    /// Relative band inside which a scale-down waits.
    pub tolerance: f64,
    /// Where the tolerance comes from.
    pub tolerance_basis: String,
    /// Scale-down stabilization window.
    pub scale_down_window_seconds: u64,
    /// Where the window comes from.
    pub scale_down_window_basis: String,
    /// Measured noise of one reading (fraction), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<f64>,
    /// Period found in the history (`Daily`, `Weekly`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Growth samples behind the headroom.
    pub growth_samples: u64,
    /// Whether the history spans the 14 days the risk is calibrated from (docs/adaptive.md,
    /// "Calibration"): before that, the share of polls short of capacity may stray from the
    /// `underProvisionRisk` asked.
    #[serde(default)]
    pub risk_calibrated: bool,
    /// What the polls short of capacity so far added to the headroom (ln of the factor on
    /// 1 + headroom; two decimals): above 0 when the learned histograms alone fell short more
    /// often than `underProvisionRisk`, below 0 when they over-protected. Resumed after a
    /// restart.
    #[serde(default)]
    pub risk_correction: f64,
    /// The per-pod target learned from the SLO signal (metrics with `slo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloStatus>,
}

/// The SLO-learned per-pod target (`engine::slo::SloTarget`) as status shows it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SloStatus {
    /// Load per pod aimed for (before the headroom).
    pub target: f64,
    /// `Static` (history short), `Knee` (under the load where the SLO broke) or `HeldUpTo`
    /// (the SLO held at every load seen).
    pub basis: String,
    /// Load per pod above which the SLO broke, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knee: Option<f64>,
    /// Paired readings behind it.
    pub samples: u64,
}

impl From<&crate::engine::slo::SloTarget> for SloStatus {
    fn from(t: &crate::engine::slo::SloTarget) -> Self {
        let r = |x: f64| (x * 1e4).round() / 1e4;
        Self {
            target: r(t.target),
            basis: t.basis.as_str().to_string(),
            knee: t.knee.map(r),
            samples: t.samples,
        }
    }
}

impl SloStatus {
    /// Back to the engine's value (to resume after a restart); `None` for an unknown basis.
    pub fn to_engine(&self) -> Option<crate::engine::slo::SloTarget> {
        use crate::engine::slo::SloBasis;
        let basis = [SloBasis::Static, SloBasis::Knee, SloBasis::HeldUpTo]
            .into_iter()
            .find(|b| b.as_str() == self.basis)?;
        Some(crate::engine::slo::SloTarget {
            target: self.target,
            basis,
            knee: self.knee,
            samples: self.samples,
        })
    }
}

impl From<&crate::engine::adaptive::Learned> for LearnedStatus {
    fn from(l: &crate::engine::adaptive::Learned) -> Self {
        // Four decimals: what a reader needs, and no status write for float noise.
        let r = |x: f64| (x * 1e4).round() / 1e4;
        Self {
            headroom: r(l.headroom),
            headroom_basis: format!("{:?}", l.headroom_basis),
            tolerance: r(l.tolerance),
            tolerance_basis: format!("{:?}", l.tolerance_basis),
            scale_down_window_seconds: l.scale_down_window_seconds,
            scale_down_window_basis: format!("{:?}", l.scale_down_window_basis),
            noise: l.noise.map(r),
            period: l.period.map(|p| format!("{p:?}")),
            growth_samples: l.growth_samples,
            risk_calibrated: l.calibrated,
            // Two decimals: it moves by a ten-thousandth on most polls.
            risk_correction: (l.risk_correction * 100.0).round() / 100.0,
            slo: None,
        }
    }
}

/// The CRD as YAML: what `ebb crd` prints and `deploy/crd.yaml` holds.
pub fn crd_yaml() -> String {
    serde_yaml::to_string(&ScaledTarget::crd()).expect("a CRD serializes to YAML")
}

/// Creates or updates the CRD on the cluster (server-side apply) and waits until the API server
/// serves it. Tests and `ebb serve --install-crd` use it; production installs `deploy/`.
pub async fn install(client: &kube::Client) -> Result<(), kube::Error> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = ScaledTarget::crd();
    let name = crd.metadata.name.clone().unwrap_or_default();
    crds.patch(
        &name,
        &PatchParams::apply("ebb").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    // Established within seconds on a healthy API server; the bound only stops a hang.
    let established = await_condition(crds, &name, conditions::is_crd_established());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), established).await;
    Ok(())
}

impl ScaledTargetSpec {
    /// Every metric shown in status and served by the external metrics API, with its index
    /// among [`Self::decided_metrics`]: the metrics (a formula's inputs decide nothing), then
    /// the formula.
    pub fn shown_metrics(
        &self,
    ) -> impl Iterator<Item = (std::borrow::Cow<'_, Metric>, Option<usize>)> {
        let formula = self.formula.is_some();
        self.metrics
            .iter()
            .enumerate()
            .map(move |(i, m)| (std::borrow::Cow::Borrowed(m), (!formula).then_some(i)))
            .chain(
                self.formula
                    .iter()
                    .map(|f| (std::borrow::Cow::Owned(f.as_metric()), Some(0))),
            )
    }

    /// The metrics that decide, in order: the formula alone when set, else every metric.
    pub fn decided_metrics(&self) -> std::borrow::Cow<'_, [Metric]> {
        match &self.formula {
            Some(f) => std::borrow::Cow::Owned(vec![f.as_metric()]),
            None => std::borrow::Cow::Borrowed(&self.metrics),
        }
    }

    /// Whether the workload may go to zero while idle (`minReplicas: 0`, or `idleReplicas:
    /// 0`).
    pub fn scales_to_zero(&self) -> bool {
        self.min_replicas == 0 || self.idle_replicas == Some(0)
    }

    /// The lower bound while active: the owned HPA's minReplicas (the HPA cannot hold 0).
    pub fn active_min_replicas(&self) -> i32 {
        if self.scales_to_zero() {
            self.min_replicas.max(1)
        } else {
            self.min_replicas
        }
    }

    /// The engine's view of the bounds and behavior. Behavior fields the engine cannot read
    /// (an unknown policy type, a tolerance that is not a quantity) are left at their defaults;
    /// the API server's schema for `behavior` is upstream's, so that is rare.
    pub fn engine_spec(&self) -> crate::engine::hpa::HpaSpec {
        crate::engine::hpa::HpaSpec {
            min_replicas: self.active_min_replicas(),
            max_replicas: self.max_replicas,
            behavior: self
                .behavior
                .as_deref()
                .map(|b| Box::new(engine_behavior(b))),
            config: Default::default(),
        }
    }

    /// The polling interval as a std duration (the schema keeps it positive).
    pub fn polling_interval(&self) -> std::time::Duration {
        self.polling_interval.into()
    }
}

fn engine_behavior(b: &HorizontalPodAutoscalerBehavior) -> crate::engine::Behavior {
    use crate::engine::{Policy, ScalingRules, SelectPolicy};
    use k8s_openapi::api::autoscaling::v2::HPAScalingRules;
    let rules = |r: &Option<HPAScalingRules>| {
        let Some(r) = r else {
            return ScalingRules::default();
        };
        ScalingRules {
            stabilization_window_seconds: r.stabilization_window_seconds,
            select_policy: r.select_policy.as_deref().and_then(|s| match s {
                "Max" => Some(SelectPolicy::Max),
                "Min" => Some(SelectPolicy::Min),
                "Disabled" => Some(SelectPolicy::Disabled),
                _ => None,
            }),
            policies: r
                .policies
                .iter()
                .flatten()
                .filter_map(|p| match p.type_.as_str() {
                    "Pods" => Some(Policy::Pods {
                        value: p.value,
                        period_seconds: p.period_seconds,
                    }),
                    "Percent" => Some(Policy::Percent {
                        value: p.value,
                        period_seconds: p.period_seconds,
                    }),
                    _ => None,
                })
                .collect(),
            tolerance: r
                .tolerance
                .as_ref()
                .and_then(|q| milli_value(&q.0).ok())
                .map(|m| m as f64 / 1000.0),
        }
    };
    crate::engine::Behavior {
        scale_up: rules(&b.scale_up),
        scale_down: rules(&b.scale_down),
    }
}

impl ScaledTarget {
    /// Gives back the spare room of the lists read from JSON, for an object kept for long
    /// (the watch's copy): serde grows a list it reads to four slots, so one metric's status
    /// (352 bytes inline) held 1.4 KiB.
    pub fn shrink_to_fit(&mut self) {
        self.spec.metrics.shrink_to_fit();
        if let Some(status) = &mut self.status {
            status.conditions.shrink_to_fit();
            status.metrics.shrink_to_fit();
        }
    }

    /// The pause the annotations ask for: `None` when not paused.
    pub fn pause(&self) -> Option<crate::engine::target::Pause> {
        use crate::engine::target::Pause;
        let a = self.metadata.annotations.as_ref()?;
        if let Some(n) = a
            .get(PAUSED_REPLICAS_ANNOTATION)
            .and_then(|v| v.trim().parse().ok())
        {
            return Some(Pause::At(n));
        }
        a.get(PAUSED_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            .then_some(Pause::Frozen)
    }

    /// What the decision machine needs of this ScaledTarget (`engine::target`), free of
    /// Kubernetes types; what was learned before a restart is resumed from its status.
    pub fn machine_spec(&self) -> crate::engine::target::TargetSpec {
        self.machine_spec_with(self.status.as_deref())
    }

    /// [`Self::machine_spec`] resuming from `status` (the controller keeps the status apart
    /// from the watched object).
    pub fn machine_spec_with(
        &self,
        status: Option<&ScaledTargetStatus>,
    ) -> crate::engine::target::TargetSpec {
        use crate::engine::target::{
            EscalationSpec, FallbackSpec, IdleSpec, MetricSpec, Mode as M, TargetSpec,
        };
        let spec = &self.spec;
        let adaptive = spec.adaptive.clone().filter(|c| c.enabled);
        let uid = self.metadata.uid.clone().unwrap_or_default();
        TargetSpec {
            mode: match spec.mode {
                Mode::Hpa => M::Hpa,
                Mode::Direct => M::Direct,
                Mode::Shadow => M::Shadow,
            },
            hpa: spec.engine_spec(),
            interval: (spec.polling_interval().as_millis() as i64).max(1),
            metrics: spec
                .decided_metrics()
                .iter()
                .map(|m| MetricSpec {
                    name: m.name.clone(),
                    target: m
                        .target
                        .to_engine()
                        .and_then(|t| m.target.drain_spec().map(|_| t))
                        .map_err(|e| e.to_string()),
                    drain: m.target.drain_spec().ok().flatten().map(Box::new),
                    activation: m.activation.unwrap_or(0.0),
                    learn: adaptive
                        .as_ref()
                        .and_then(|config| self.learn_spec(m, config, &uid, status))
                        .map(Box::new),
                })
                .collect(),
            formula: spec
                .formula
                .as_ref()
                .map(|f| Box::new(f.parse(&spec.metrics).map_err(|e| e.to_string()))),
            adaptive,
            fallback: spec.fallback.as_ref().map(|f| FallbackSpec {
                failure_threshold: f.failure_threshold.max(1) as u32,
                replicas: f.replicas,
            }),
            escalation: spec.escalation.as_ref().map(|e| {
                Box::new(EscalationSpec {
                    failure_threshold: e.failure_threshold.max(1) as u32,
                    min_interval: std::time::Duration::from(e.min_interval).as_millis() as i64,
                })
            }),
            idle: spec.scales_to_zero().then(|| {
                Box::new(IdleSpec {
                    cooldown: i64::from(spec.cooldown_seconds.unwrap_or(DEFAULT_COOLDOWN_SECONDS))
                        * 1000,
                    initial_cooldown: i64::from(spec.initial_cooldown_seconds.unwrap_or(0)) * 1000,
                    created: self
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_millisecond()),
                })
            }),
            pause: self.pause(),
            revision: self.metadata.generation.map(|g| (uid.clone(), g)),
        }
    }

    /// How metric `m` learns: AverageValue metrics with a positive target only.
    fn learn_spec(
        &self,
        m: &Metric,
        config: &AdaptiveConfig,
        uid: &str,
        status: Option<&ScaledTargetStatus>,
    ) -> Option<crate::engine::learning::LearnSpec> {
        if m.target.type_ != TargetType::AverageValue {
            return None;
        }
        let milli = milli_value(&m.target.average_value.as_ref()?.0).ok()?;
        if milli <= 0 {
            return None;
        }
        Some(crate::engine::learning::LearnSpec {
            name: m.name.clone(),
            static_target: milli as f64 / 1000.0,
            slo: m.slo.as_ref().map(|s| s.learn.clone()),
            resume_slo: previous_learned(status, &m.name).and_then(|l| l.slo.as_ref()?.to_engine()),
            resume_risk_correction: previous_learned(status, &m.name)
                .map_or(0.0, |l| l.risk_correction),
            backfill: m.prometheus.is_some(),
            fingerprint: format!(
                "{uid}|{}",
                serde_json::to_string(&(m, config)).unwrap_or_default()
            ),
        })
    }
}

/// What metric `metric` had learned by `status` (to resume from after a restart).
fn previous_learned<'a>(
    status: Option<&'a ScaledTargetStatus>,
    metric: &str,
) -> Option<&'a LearnedStatus> {
    status?
        .metrics
        .iter()
        .find(|s| s.name == metric)?
        .learned
        .as_deref()
}

/// `shop/web`: a ScaledTarget with one Prometheus metric, as JSON (tests).
#[cfg(test)]
pub(crate) fn example_json() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
            "maxReplicas": 3,
            "metrics": [{ "name": "m", "prometheus": { "address": "http://p", "query": "q" },
                          "target": { "type": "Value", "value": "1" } }]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_scaled_target_holds_no_spare_list_slots() {
        let condition = |t: &str| {
            serde_json::json!({ "type": t, "status": "True", "reason": "R", "message": "m",
                                "lastTransitionTime": "2026-12-04T10:00:00Z" })
        };
        let conditions = [
            "Ready",
            "Active",
            "Fallback",
            "ScalingLimited",
            "SourcesHealthy",
        ]
        .map(condition);
        // Read from text, as the watch reads it (a JSON value tells serde the lists' lengths).
        let mut text = example_json();
        text["status"] = serde_json::json!({
            "conditions": conditions,
            "metrics": [{ "name": "m", "value": "2" }]
        });
        let text = text.to_string();
        let mut st: ScaledTarget = serde_json::from_str(&text).unwrap();
        let spare = |st: &ScaledTarget| {
            let status = st.status.as_ref().unwrap();
            (st.spec.metrics.capacity() - st.spec.metrics.len())
                + (status.conditions.capacity() - status.conditions.len())
                + (status.metrics.capacity() - status.metrics.len())
        };
        assert!(spare(&st) > 0, "serde left no spare slots to give back");
        let before = st.clone();
        st.shrink_to_fit();
        assert_eq!(spare(&st), 0);
        assert_eq!(st.spec, before.spec);
        assert_eq!(st.status, before.status);
    }
}
