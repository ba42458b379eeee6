//! The controller's Prometheus metrics: what each ScaledTarget looks like now (`ebb_scaledtarget_*`
//! and `ebb_scaling_actions_total`), the controller's own work (`ebb_controller_*`, read from
//! [`ControllerStats`] at scrape time) and which replica leads (`ebb_leader`).
//!
//! Per-target series are rows of plain values, encoded when Prometheus scrapes; a handle kept in
//! the target's state ([`TargetSeries`]) owns its row. The row is made when a target first polls
//! on the leader and follows its spec's generation; a poll stores into it. Dropping the handle
//! removes the row, so a deleted target, or one this replica no longer leads, leaves no series
//! behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::leader::Leadership;
use super::stats::ControllerStats;
use crate::crd::{ScaledTarget, ScaledTargetStatus, TargetType, milli_value};

/// One ScaledTarget's series as plain values, encoded when Prometheus scrapes
/// ([`TargetsCollector`]): a row is a few hundred bytes where a family entry per series (ten
/// or more a target, each with its own label set and atomic) was over a kilobyte and a half.
#[derive(Debug, Default)]
struct TargetRow {
    namespace: String,
    name: String,
    mode: &'static str,
    /// `Kind/name` of the scaled workload.
    workload: String,
    min: i64,
    max: i64,
    current: Option<i64>,
    desired: Option<i64>,
    fallback: bool,
    paused: bool,
    stalled: bool,
    up: u64,
    down: u64,
    metrics: Vec<MetricRow>,
}

#[derive(Debug)]
struct MetricRow {
    name: String,
    /// The target's `type` (Value, AverageValue, DrainTime): whether it compares with the
    /// reading itself or with the reading per replica.
    type_: &'static str,
    /// The spec's target (NaN when it does not parse).
    target: f64,
    /// The last reading (NaN when it failed; absent before the first).
    value: Option<f64>,
    /// The learned target, once one shows.
    learned: Option<f64>,
}

/// A row, shared by its [`TargetSeries`] and the table.
type SharedRow = Arc<Mutex<TargetRow>>;

/// Every target's row, by the id its [`TargetSeries`] holds. Each row has its own lock: a
/// scrape takes the table's only to copy out the list, so a poll storing its reading waits at
/// most for one row's lines, never for a whole scrape (60,000 lines, tens of milliseconds, at
/// 5,000 targets; a poll waits while it holds the targets' lock).
#[derive(Debug, Default)]
struct TargetTable {
    rows: Mutex<HashMap<u64, SharedRow>>,
    next_id: AtomicU64,
}

impl TargetTable {
    /// The rows as they are now, each to be locked in turn.
    fn snapshot(&self) -> Vec<SharedRow> {
        self.rows
            .lock()
            .expect("target rows")
            .values()
            .cloned()
            .collect()
    }
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
    targets: Arc<TargetTable>,
    errors: Family<ErrorLabels, Counter>,
    escalations: Family<EscalationLabels, Counter>,
    escalation_attempts: Counter,
    resumed_after_outage: Counter,
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

    /// Counts the targets polled at once because the API server answers again after an
    /// outage they backed off through (`super::recovery`).
    pub fn resumed_after_outage(&self, targets: usize) {
        self.resumed_after_outage.inc_by(targets as u64);
    }

    /// The count of `ebb_resumed_after_outage_total` (tests).
    pub fn resumed_after_outage_count(&self) -> u64 {
        self.resumed_after_outage.get()
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
        crate::telemetry::register!(registry;
            "reconcile_errors" => self.errors,
                "Polls that failed, by kind (transient: backed off; permanent: Ready=False) and reason";
            "escalations" => self.escalations,
                "Escalations by result: delivered, failed (every attempt failed) or dropped";
            "escalation_attempts" => self.escalation_attempts,
                "Calls of escalation webhooks, retries included";
            "resumed_after_outage" => self.resumed_after_outage,
                "Targets polled at once when the API server answered again after an outage they backed off through";
        );
        // Every result from the start: no escalation yet reads 0, not absent.
        for result in ["delivered", "failed", "dropped"] {
            let _ = self.escalations.get_or_create(&EscalationLabels { result });
        }
        registry.register_collector(Box::new(TargetsCollector(self.targets.clone())));
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

/// `ebb_scaledtarget_*` and `ebb_scaling_actions_total` from the target rows, one family after
/// another, each row locked only while its lines are written.
#[derive(Debug)]
struct TargetsCollector(Arc<TargetTable>);

impl Collector for TargetsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let table = self.0.snapshot();
        let rows = || table.iter().map(|r| r.lock().expect("target row"));
        let gauge = MetricType::Gauge;
        fn target(r: &TargetRow) -> [(&str, &str); 2] {
            [("namespace", &r.namespace), ("scaledtarget", &r.name)]
        }
        fn per_metric<'a>(r: &'a TargetRow, m: &'a MetricRow) -> [(&'a str, &'a str); 3] {
            let [ns, st] = target(r);
            [ns, st, ("metric", &m.name)]
        }
        fn typed<'a>(r: &'a TargetRow, m: &'a MetricRow) -> [(&'a str, &'a str); 4] {
            let [ns, st, metric] = per_metric(r, m);
            [ns, st, metric, ("type", m.type_)]
        }

        let mut e = encoder.encode_descriptor(
            "scaledtarget_metric_value",
            "A ScaledTarget metric's last reading (NaN when it failed)",
            None,
            gauge,
        )?;
        for row in rows() {
            let r = &*row;
            for m in &r.metrics {
                if let Some(v) = m.value {
                    ConstGauge::new(v).encode(e.encode_family(&per_metric(r, m))?)?;
                }
            }
        }
        let mut e = encoder.encode_descriptor(
            "scaledtarget_metric_target",
            "A ScaledTarget metric's target from the spec (per replica for AverageValue)",
            None,
            gauge,
        )?;
        for row in rows() {
            let r = &*row;
            for m in &r.metrics {
                ConstGauge::new(m.target).encode(e.encode_family(&typed(r, m))?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "scaledtarget_metric_learned_target",
            "A ScaledTarget metric's target learned from history, where one is in use",
            None,
            gauge,
        )?;
        for row in rows() {
            let r = &*row;
            for m in &r.metrics {
                if let Some(v) = m.learned {
                    ConstGauge::new(v).encode(e.encode_family(&typed(r, m))?)?;
                }
            }
        }
        let mut e = encoder.encode_descriptor(
            "scaledtarget_replicas",
            "Replicas of a ScaledTarget's workload: current, desired, min and max",
            None,
            gauge,
        )?;
        for row in rows() {
            let r = &*row;
            let counts = [
                ("current", r.current),
                ("desired", r.desired),
                ("min", Some(r.min)),
                ("max", Some(r.max)),
            ];
            for (kind, n) in counts {
                if let Some(n) = n {
                    let [ns, st] = target(r);
                    ConstGauge::new(n).encode(e.encode_family(&[ns, st, ("kind", kind)])?)?;
                }
            }
        }
        type Flag = (&'static str, &'static str, fn(&TargetRow) -> bool);
        let flags: [Flag; 3] = [
            (
                "scaledtarget_fallback",
                "1 while a ScaledTarget holds its fallback replica count",
                |r| r.fallback,
            ),
            (
                "scaledtarget_paused",
                "1 while a ScaledTarget is paused by annotation",
                |r| r.paused,
            ),
            (
                "scaledtarget_stalled",
                "1 while the pods of a ScaledTarget's last scale-up are not Ready past the budget (ScalingStalled)",
                |r| r.stalled,
            ),
        ];
        for (name, help, flag) in flags {
            let mut e = encoder.encode_descriptor(name, help, None, gauge)?;
            for row in rows() {
                let r = &*row;
                ConstGauge::new(i64::from(flag(r))).encode(e.encode_family(&target(r))?)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "scaledtarget_info",
            "1 per ScaledTarget, with its mode and workload",
            None,
            gauge,
        )?;
        for row in rows() {
            let r = &*row;
            let [ns, st] = target(r);
            let labels = [ns, st, ("mode", r.mode), ("target", r.workload.as_str())];
            ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
        }
        let mut e = encoder.encode_descriptor(
            "scaling_actions",
            "Replica changes applied (Direct, paused-replicas) or reported (Shadow)",
            None,
            MetricType::Counter,
        )?;
        for row in rows() {
            let r = &*row;
            for (direction, n) in [("up", r.up), ("down", r.down)] {
                let [ns, st] = target(r);
                ConstCounter::new(n).encode(e.encode_family(&[
                    ns,
                    st,
                    ("direction", direction),
                ])?)?;
            }
        }
        Ok(())
    }
}

/// One ScaledTarget's series (see the module docs): a handle on its row, which goes when the
/// handle is dropped.
pub(crate) struct TargetSeries {
    table: Arc<TargetTable>,
    id: u64,
    row: SharedRow,
    /// The spec generation the spec-derived values were taken from.
    generation: Option<Option<i64>>,
}

impl TargetSeries {
    /// The series of `st`, with the spec-derived ones current.
    pub(crate) fn new(metrics: &ControllerMetrics, st: &ScaledTarget) -> Self {
        let table = metrics.targets.clone();
        let id = table.next_id.fetch_add(1, Ordering::Relaxed);
        let row = TargetRow {
            namespace: st.namespace().unwrap_or_default(),
            name: st.name_any(),
            ..Default::default()
        };
        let row = Arc::new(Mutex::new(row));
        table
            .rows
            .lock()
            .expect("target rows")
            .insert(id, row.clone());
        let mut series = Self {
            table,
            id,
            row,
            generation: None,
        };
        series.sync(st);
        series
    }

    /// Takes what depends on the spec (metric names and targets, mode, bounds) when the
    /// generation changed; a no-op otherwise.
    pub(crate) fn sync(&mut self, st: &ScaledTarget) {
        if self.generation == Some(st.metadata.generation) {
            return;
        }
        self.generation = Some(st.metadata.generation);
        let metrics = st
            .spec
            .shown_metrics()
            .map(|(m, _)| MetricRow {
                name: m.name.clone(),
                type_: match m.target.type_ {
                    TargetType::Value => "Value",
                    TargetType::AverageValue => "AverageValue",
                    TargetType::DrainTime => "DrainTime",
                },
                target: m
                    .target
                    .quantity()
                    .and_then(|q| milli_value(&q.0).ok())
                    .map_or(f64::NAN, |milli| milli as f64 / 1000.0),
                value: None,
                learned: None,
            })
            .collect();
        let t = &st.spec.target_ref;
        let workload = format!("{}/{}", t.kind, t.name);
        self.with(|row| {
            row.metrics = metrics;
            row.mode = st.spec.mode.as_str();
            row.workload = workload;
            row.min = st.spec.min_replicas.into();
            row.max = st.spec.max_replicas.into();
        });
    }

    /// One poll's outcome: each metric's reading (`None`: it failed) and the status written.
    pub(crate) fn observe(
        &mut self,
        readings: impl IntoIterator<Item = Option<f64>>,
        status: &ScaledTargetStatus,
    ) {
        let holds = |type_: &str| {
            status
                .conditions
                .iter()
                .any(|c| c.type_ == type_ && c.status == "True")
        };
        self.with(|row| {
            for (i, (m, reading)) in row.metrics.iter_mut().zip(readings).enumerate() {
                m.value = Some(reading.unwrap_or(f64::NAN));
                let learned = status
                    .metrics
                    .get(i)
                    .and_then(|m| m.learned_target.as_ref())
                    .and_then(|q| milli_value(&q.0).ok());
                if let Some(milli) = learned {
                    m.learned = Some(milli as f64 / 1000.0);
                }
            }
            if let Some(n) = status.current_replicas {
                row.current = Some(n.into());
            }
            if let Some(n) = status.desired_replicas {
                row.desired = Some(n.into());
            }
            row.fallback = holds(crate::engine::conditions::FALLBACK);
            row.paused = holds(crate::engine::conditions::PAUSED);
            row.stalled = holds(crate::engine::conditions::SCALING_STALLED);
        });
    }

    fn with(&self, f: impl FnOnce(&mut TargetRow)) {
        f(&mut self.row.lock().expect("target row"));
    }

    /// Counts a replica change from `from` to `to`.
    pub(crate) fn scaled(&self, from: i32, to: i32) {
        self.with(|row| {
            if to > from {
                row.up += 1;
            } else if to < from {
                row.down += 1;
            }
        });
    }
}

impl Drop for TargetSeries {
    fn drop(&mut self) {
        self.table
            .rows
            .lock()
            .expect("target rows")
            .remove(&self.id);
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
        // Nothing read yet: no value, no replica counts (not zeros).
        let text = exposition(&metrics);
        assert!(!text.contains("ebb_scaledtarget_metric_value{"), "{text}");
        assert!(!text.contains(r#"kind="desired""#), "{text}");
        assert!(text.contains(r#"kind="max"} 5"#), "{text}");
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
