//! The controller's Prometheus metrics: what each ScaledTarget looks like now (`ebb_scaledtarget_*`
//! and `ebb_scaling_actions_total`), the controller's own work (`ebb_controller_*`, read from
//! [`ControllerStats`] at scrape time) and which replica leads (`ebb_leader`).
//!
//! Per-target series are handles kept in the target's state ([`TargetSeries`]): labels are
//! built once, when a target first polls on the leader (or its spec changes); a poll then only
//! stores into atomics. Dropping the handles removes the series from their families, so a
//! deleted target, or one this replica no longer leads, leaves no series behind.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::leader::Leadership;
use super::stats::ControllerStats;
use crate::crd::{ScaledTarget, ScaledTargetStatus, TargetType, milli_value};

type F64Gauge = Gauge<f64, AtomicU64>;

/// `{namespace, scaledtarget}`. Shared strings: a target's label sets all point at one copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TargetLabels {
    pub namespace: Arc<String>,
    pub scaledtarget: Arc<String>,
}

/// `{namespace, scaledtarget, metric}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct MetricLabels {
    #[prometheus(flatten)]
    pub target: TargetLabels,
    pub metric: String,
}

/// `{namespace, scaledtarget, metric, type}`: a target's `type` (Value or AverageValue) says
/// whether it compares with the reading itself or with the reading per replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TargetTypeLabels {
    #[prometheus(flatten)]
    pub metric: MetricLabels,
    pub r#type: &'static str,
}

/// `{namespace, scaledtarget, kind}`: `kind` is current, desired, min or max.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReplicaLabels {
    #[prometheus(flatten)]
    pub target: TargetLabels,
    pub kind: &'static str,
}

/// `{namespace, scaledtarget, mode, target}`: `target` is `Kind/name` of the scaled workload.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct InfoLabels {
    #[prometheus(flatten)]
    pub scaled: TargetLabels,
    pub mode: &'static str,
    pub target: String,
}

/// `{namespace, scaledtarget, direction}`: `direction` is up or down.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ActionLabels {
    #[prometheus(flatten)]
    pub target: TargetLabels,
    pub direction: &'static str,
}

/// The per-ScaledTarget families.
#[derive(Debug, Clone, Default)]
struct TargetFamilies {
    metric_value: Family<MetricLabels, F64Gauge>,
    metric_target: Family<TargetTypeLabels, F64Gauge>,
    metric_learned_target: Family<TargetTypeLabels, F64Gauge>,
    replicas: Family<ReplicaLabels, Gauge>,
    fallback: Family<TargetLabels, Gauge>,
    paused: Family<TargetLabels, Gauge>,
    stalled: Family<TargetLabels, Gauge>,
    info: Family<InfoLabels, Gauge>,
    actions: Family<ActionLabels, Counter>,
}

/// `{kind, reason}` of a failed poll: `kind` is transient or permanent (`super::errors`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// `{result}` of an escalation: delivered, failed (every attempt failed) or dropped (the queue
/// was full, or the same escalation was already on its way).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EscalationLabels {
    pub result: &'static str,
}

/// Every metric of the controller. Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct ControllerMetrics {
    /// Counters of the controller's work, exposed at scrape time.
    pub stats: Arc<ControllerStats>,
    targets: TargetFamilies,
    errors: Family<ErrorLabels, Counter>,
    escalations: Family<EscalationLabels, Counter>,
    escalation_attempts: Counter,
}

impl ControllerMetrics {
    /// Counts a failed poll.
    pub fn reconcile_error(&self, kind: &'static str, reason: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { kind, reason })
            .inc();
    }

    /// Counts an escalation's outcome: delivered, failed or dropped.
    pub fn escalation(&self, result: &'static str) {
        self.escalations
            .get_or_create(&EscalationLabels { result })
            .inc();
    }

    /// Counts one call of an escalation webhook (an escalation may take several).
    pub fn escalation_attempt(&self) {
        self.escalation_attempts.inc();
    }

    /// The count of `ebb_escalations_total{result}` (tests).
    pub fn escalations(&self, result: &'static str) -> u64 {
        self.escalations
            .get_or_create(&EscalationLabels { result })
            .get()
    }

    /// The count of `ebb_reconcile_errors_total{kind, reason}` (tests).
    pub fn reconcile_errors(&self, kind: &'static str, reason: &'static str) -> u64 {
        self.errors
            .get_or_create(&ErrorLabels { kind, reason })
            .get()
    }

    /// Registers everything in `registry` (ebb's, prefix `ebb`); `identity` and `leadership`
    /// make `ebb_leader{identity}`.
    pub fn register(&self, registry: &mut Registry, identity: &str, leadership: Leadership) {
        let t = &self.targets;
        crate::telemetry::register!(registry;
            "scaledtarget_metric_value" => t.metric_value,
                "A ScaledTarget metric's last reading (NaN when it failed)";
            "scaledtarget_metric_target" => t.metric_target,
                "A ScaledTarget metric's target from the spec (per replica for AverageValue)";
            "scaledtarget_metric_learned_target" => t.metric_learned_target,
                "A ScaledTarget metric's target learned from history, where one is in use";
            "scaledtarget_replicas" => t.replicas,
                "Replicas of a ScaledTarget's workload: current, desired, min and max";
            "scaledtarget_fallback" => t.fallback,
                "1 while a ScaledTarget holds its fallback replica count";
            "scaledtarget_paused" => t.paused,
                "1 while a ScaledTarget is paused by annotation";
            "scaledtarget_stalled" => t.stalled,
                "1 while the pods of a ScaledTarget's last scale-up are not Ready past the budget (ScalingStalled)";
            "scaledtarget_info" => t.info,
                "1 per ScaledTarget, with its mode and workload";
            "scaling_actions" => t.actions,
                "Replica changes applied (Direct, paused-replicas) or reported (Shadow)";
            "reconcile_errors" => self.errors,
                "Polls that failed, by kind (transient: backed off; permanent: Ready=False) and reason";
            "escalations" => self.escalations,
                "Escalations by result: delivered, failed (every attempt failed) or dropped";
            "escalation_attempts" => self.escalation_attempts,
                "Calls of escalation webhooks, retries included";
        );
        // Every result from the start: no escalation yet reads 0, not absent.
        for result in ["delivered", "failed", "dropped"] {
            let _ = self.escalations.get_or_create(&EscalationLabels { result });
        }
        registry.register_collector(Box::new(StatsCollector(self.stats.clone())));
        registry.register_collector(Box::new(LeaderCollector {
            identity: identity.to_string(),
            leadership,
        }));
    }
}

/// `ebb_controller_*` from the lock-free counters, read when Prometheus scrapes.
#[derive(Debug)]
struct StatsCollector(Arc<ControllerStats>);

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.snapshot();
        let counter = |v| prometheus_client::metrics::counter::ConstCounter::new(v);
        counter(s.polls).encode(encoder.encode_descriptor(
            "controller_polls",
            "Polls (reconciles) of ScaledTargets run",
            None,
            MetricType::Counter,
        )?)?;
        counter(s.kube_requests).encode(encoder.encode_descriptor(
            "controller_kube_requests",
            "Requests to the Kubernetes API from the decision loop (watches not included)",
            None,
            MetricType::Counter,
        )?)?;
        encoder
            .encode_descriptor(
                "controller_poll_lag_seconds",
                "How late polls start past their interval",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                s.lag_sum_seconds,
                s.lag_count,
                &s.lag_buckets,
                None,
            )
    }
}

/// `ebb_leader{identity}`: 1 while this replica holds the Lease.
#[derive(Debug)]
struct LeaderCollector {
    identity: String,
    leadership: Leadership,
}

impl Collector for LeaderCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(
            "leader",
            "1 while this replica holds the leader-election Lease and acts",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("identity", self.identity.as_str())];
        ConstGauge::new(i64::from(self.leadership.is_leader()))
            .encode(metric.encode_family(&labels)?)
    }
}

struct MetricSeries {
    /// With the target's type; `labels.metric` are the reading's labels.
    labels: TargetTypeLabels,
    value: F64Gauge,
    /// Created when a learned target first shows.
    learned: Option<F64Gauge>,
}

/// One ScaledTarget's series (see the module docs).
pub(crate) struct TargetSeries {
    families: TargetFamilies,
    target: TargetLabels,
    /// The spec generation the spec-derived series were built for.
    generation: Option<Option<i64>>,
    metrics: Vec<MetricSeries>,
    info: Option<InfoLabels>,
    current: Gauge,
    desired: Gauge,
    min: Gauge,
    max: Gauge,
    fallback: Gauge,
    paused: Gauge,
    stalled: Gauge,
    up: Counter,
    down: Counter,
}

impl TargetSeries {
    /// The series of `st`, with the spec-derived ones current.
    pub(crate) fn new(metrics: &ControllerMetrics, st: &ScaledTarget) -> Self {
        let f = metrics.targets.clone();
        let target = TargetLabels {
            namespace: Arc::new(st.namespace().unwrap_or_default()),
            scaledtarget: Arc::new(st.name_any()),
        };
        let replicas = |kind| {
            f.replicas.get_or_create_owned(&ReplicaLabels {
                target: target.clone(),
                kind,
            })
        };
        let actions = |direction| {
            f.actions.get_or_create_owned(&ActionLabels {
                target: target.clone(),
                direction,
            })
        };
        let mut series = Self {
            current: replicas("current"),
            desired: replicas("desired"),
            min: replicas("min"),
            max: replicas("max"),
            fallback: f.fallback.get_or_create_owned(&target),
            paused: f.paused.get_or_create_owned(&target),
            stalled: f.stalled.get_or_create_owned(&target),
            up: actions("up"),
            down: actions("down"),
            generation: None,
            metrics: Vec::new(),
            info: None,
            target,
            families: f,
        };
        series.sync(st);
        series
    }

    /// Rebuilds what depends on the spec (metric names and targets, mode, bounds) when the
    /// generation changed; a no-op otherwise.
    pub(crate) fn sync(&mut self, st: &ScaledTarget) {
        if self.generation == Some(st.metadata.generation) {
            return;
        }
        self.generation = Some(st.metadata.generation);
        self.remove_spec_series();
        let f = &self.families;
        for (m, _) in st.spec.shown_metrics() {
            let labels = TargetTypeLabels {
                metric: MetricLabels {
                    target: self.target.clone(),
                    metric: m.name.clone(),
                },
                r#type: match m.target.type_ {
                    TargetType::Value => "Value",
                    TargetType::AverageValue => "AverageValue",
                    TargetType::DrainTime => "DrainTime",
                },
            };
            let target = m
                .target
                .quantity()
                .and_then(|q| milli_value(&q.0).ok())
                .map_or(f64::NAN, |milli| milli as f64 / 1000.0);
            f.metric_target.get_or_create(&labels).set(target);
            self.metrics.push(MetricSeries {
                value: f.metric_value.get_or_create_owned(&labels.metric),
                labels,
                learned: None,
            });
        }
        let t = &st.spec.target_ref;
        let info = InfoLabels {
            scaled: self.target.clone(),
            mode: st.spec.mode.as_str(),
            target: format!("{}/{}", t.kind, t.name),
        };
        f.info.get_or_create(&info).set(1);
        self.info = Some(info);
        self.min.set(st.spec.min_replicas.into());
        self.max.set(st.spec.max_replicas.into());
    }

    /// One poll's outcome: each metric's reading (`None`: it failed) and the status written.
    pub(crate) fn observe(
        &mut self,
        readings: impl IntoIterator<Item = Option<f64>>,
        status: &ScaledTargetStatus,
    ) {
        for (i, (series, reading)) in self.metrics.iter_mut().zip(readings).enumerate() {
            series.value.set(reading.unwrap_or(f64::NAN));
            let learned = status
                .metrics
                .get(i)
                .and_then(|m| m.learned_target.as_ref());
            if let Some(milli) = learned.and_then(|q| milli_value(&q.0).ok()) {
                let f = &self.families.metric_learned_target;
                series
                    .learned
                    .get_or_insert_with(|| f.get_or_create_owned(&series.labels))
                    .set(milli as f64 / 1000.0);
            }
        }
        if let Some(n) = status.current_replicas {
            self.current.set(n.into());
        }
        if let Some(n) = status.desired_replicas {
            self.desired.set(n.into());
        }
        let holds = |type_: &str| {
            let on = status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True");
            i64::from(on)
        };
        self.fallback
            .set(holds(crate::engine::conditions::FALLBACK));
        self.paused.set(holds(crate::engine::conditions::PAUSED));
        self.stalled
            .set(holds(crate::engine::conditions::SCALING_STALLED));
    }

    /// Counts a replica change from `from` to `to`.
    pub(crate) fn scaled(&self, from: i32, to: i32) {
        if to > from {
            self.up.inc();
        } else if to < from {
            self.down.inc();
        }
    }

    fn remove_spec_series(&mut self) {
        let f = &self.families;
        for m in self.metrics.drain(..) {
            f.metric_value.remove(&m.labels.metric);
            f.metric_target.remove(&m.labels);
            f.metric_learned_target.remove(&m.labels);
        }
        if let Some(info) = self.info.take() {
            f.info.remove(&info);
        }
    }
}

impl Drop for TargetSeries {
    fn drop(&mut self) {
        self.remove_spec_series();
        let f = &self.families;
        for kind in ["current", "desired", "min", "max"] {
            f.replicas.remove(&ReplicaLabels {
                target: self.target.clone(),
                kind,
            });
        }
        for direction in ["up", "down"] {
            f.actions.remove(&ActionLabels {
                target: self.target.clone(),
                direction,
            });
        }
        f.fallback.remove(&self.target);
        f.paused.remove(&self.target);
        f.stalled.remove(&self.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled_target(generation: i64, metrics: &[&str]) -> ScaledTarget {
        let metrics: Vec<_> = metrics
            .iter()
            .map(|name| {
                serde_json::json!({
                    "name": name,
                    "rabbitmq": { "connectionSecretRef": { "name": "r" }, "queue": "q" },
                    "target": { "type": "AverageValue", "averageValue": "1500m" }
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ebb.dev/v1alpha1",
            "kind": "ScaledTarget",
            "metadata": { "name": "w", "namespace": "n", "generation": generation },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "w" },
                "mode": "Direct",
                "maxReplicas": 5,
                "metrics": metrics
            }
        }))
        .unwrap()
    }

    fn exposition(metrics: &ControllerMetrics) -> String {
        let mut registry = Registry::with_prefix("ebb");
        metrics.register(&mut registry, "me", Leadership::fixed(true));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn target_series_follow_the_spec_and_vanish_with_the_target() {
        let metrics = ControllerMetrics::default();
        let mut series = TargetSeries::new(&metrics, &scaled_target(1, &["backlog"]));
        series.observe(
            [Some(42.0)],
            &ScaledTargetStatus {
                current_replicas: Some(2),
                desired_replicas: Some(3),
                ..Default::default()
            },
        );
        series.scaled(2, 3);
        let text = exposition(&metrics);
        for line in [
            r#"ebb_scaledtarget_metric_value{namespace="n",scaledtarget="w",metric="backlog"} 42.0"#,
            r#"ebb_scaledtarget_metric_target{namespace="n",scaledtarget="w",metric="backlog",type="AverageValue"} 1.5"#,
            r#"ebb_scaledtarget_replicas{namespace="n",scaledtarget="w",kind="desired"} 3"#,
            r#"ebb_scaledtarget_replicas{namespace="n",scaledtarget="w",kind="max"} 5"#,
            r#"ebb_scaledtarget_info{namespace="n",scaledtarget="w",mode="Direct",target="Deployment/w"} 1"#,
            r#"ebb_scaling_actions_total{namespace="n",scaledtarget="w",direction="up"} 1"#,
            r#"ebb_leader{identity="me"} 1"#,
            "ebb_controller_polls_total 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }

        // A new generation renames the metric: the old name's series go.
        series.sync(&scaled_target(2, &["depth"]));
        let text = exposition(&metrics);
        assert!(!text.contains(r#"metric="backlog""#), "{text}");
        assert!(text.contains(r#"metric="depth""#), "{text}");
        assert!(
            text.contains(r#"direction="up"} 1"#),
            "counters survive a spec change"
        );

        drop(series);
        let text = exposition(&metrics);
        assert!(!text.contains(r#"scaledtarget="w""#), "{text}");
    }
}
