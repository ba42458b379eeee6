//! The in-memory index the external metrics API answers from. Writers (the controller, after
//! each collection round) `publish` and `remove`; readers take a read lock for microseconds and
//! never wait on upstream I/O.
//!
//! Each entry is rendered to its JSON item when published, so a read is a lookup (or a scan
//! of one metric's entries when the selector does not pin a ScaledTarget) and a copy of bytes.
//!
//! A metric whose last fetch failed is stored as a failure, not as 0: a request that matches it
//! gets a 503 Status, which the HPA counts as a failed metric (it then keeps the current scale
//! for that metric instead of scaling in on a value nobody measured).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use chrono::{DateTime, SecondsFormat, Utc};

use super::selector::Selector;

/// The label every entry carries: the name of the ScaledTarget it belongs to. The HPAs ebb owns
/// select on it.
pub const SCALED_TARGET_LABEL: &str = "ebb.dev/scaledtarget";

/// What the last collection of one metric for one ScaledTarget produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricValue {
    /// The value in milli-units (`1500` is served as `"1500m"`, `42000` as `"42"`).
    Milli(i64),
    /// The fetch failed: served as an error, never as a number.
    Failed(String),
}

/// One published value.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Labels served as `metricLabels`; [`SCALED_TARGET_LABEL`] is added by `publish`.
    pub labels: BTreeMap<String, String>,
    pub value: MetricValue,
    pub timestamp: DateTime<Utc>,
    /// The window the value covers, in seconds, when it is an aggregate.
    pub window_seconds: Option<i64>,
}

/// Where a value lives: the namespace of the ScaledTarget and the external metric name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct MetricKey {
    namespace: String,
    metric: String,
}

#[derive(Debug)]
struct Entry {
    /// Sorted by key (a `BTreeMap`'s order).
    labels: Box<[(String, String)]>,
    body: Rendered,
}

#[derive(Debug)]
enum Rendered {
    /// The `ExternalMetricValue` JSON object.
    Item(String),
    Failed(String),
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The `ExternalMetricValueList` JSON document (maybe with no items: the metric exists in
    /// this namespace but nothing matched the selector).
    List(String),
    /// Nothing serves this metric in this namespace.
    UnknownMetric,
    /// A matching ScaledTarget's last fetch failed.
    Failed {
        scaled_target: String,
        reason: String,
    },
}

/// The store: `(namespace, metric)` to entries by ScaledTarget name.
#[derive(Debug, Default)]
pub struct MetricStore {
    metrics: RwLock<HashMap<MetricKey, HashMap<String, Entry>>>,
}

impl MetricStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores (or replaces) the value of `metric` for `scaled_target` in `namespace`.
    pub fn publish(&self, namespace: &str, metric: &str, scaled_target: &str, sample: Sample) {
        let mut labels = sample.labels;
        labels.insert(SCALED_TARGET_LABEL.to_string(), scaled_target.to_string());
        let body = match &sample.value {
            MetricValue::Milli(milli) => Rendered::Item(render_item(
                metric,
                &labels,
                sample.timestamp,
                sample.window_seconds,
                *milli,
            )),
            MetricValue::Failed(reason) => Rendered::Failed(reason.clone()),
        };
        let key = MetricKey {
            namespace: namespace.to_string(),
            metric: metric.to_string(),
        };
        let mut metrics = self.metrics.write().unwrap_or_else(|p| p.into_inner());
        metrics.entry(key).or_default().insert(
            scaled_target.to_string(),
            Entry {
                labels: labels.into_iter().collect(),
                body,
            },
        );
    }

    /// Forgets every metric of `scaled_target` in `namespace` (the ScaledTarget was deleted).
    pub fn remove(&self, namespace: &str, scaled_target: &str) {
        let mut metrics = self.metrics.write().unwrap_or_else(|p| p.into_inner());
        metrics.retain(|key, entries| {
            if key.namespace == namespace {
                entries.remove(scaled_target);
            }
            !entries.is_empty()
        });
    }

    /// Every metric name served in some namespace (sorted, deduplicated).
    pub fn metric_names(&self) -> Vec<String> {
        let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = metrics.keys().map(|k| k.metric.clone()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The values of `metric` in `namespace` whose labels match `selector`.
    pub fn lookup(&self, namespace: &str, metric: &str, selector: &Selector) -> Lookup {
        let metrics = self.metrics.read().unwrap_or_else(|p| p.into_inner());
        // A borrowed key would need a second map type; the two small allocations are cheaper
        // than the serialization they guard.
        let key = MetricKey {
            namespace: namespace.to_string(),
            metric: metric.to_string(),
        };
        let Some(entries) = metrics.get(&key) else {
            return Lookup::UnknownMetric;
        };
        let mut body = String::with_capacity(256);
        body.push_str(
            r#"{"kind":"ExternalMetricValueList","apiVersion":"external.metrics.k8s.io/v1beta1","metadata":{},"items":["#,
        );
        let mut first = true;
        let mut add = |name: &str, entry: &Entry| -> Option<Lookup> {
            if !selector.matches(&*entry.labels) {
                return None;
            }
            match &entry.body {
                Rendered::Item(item) => {
                    if !std::mem::take(&mut first) {
                        body.push(',');
                    }
                    body.push_str(item);
                    None
                }
                Rendered::Failed(reason) => Some(Lookup::Failed {
                    scaled_target: name.to_string(),
                    reason: reason.clone(),
                }),
            }
        };
        match selector.required_value(SCALED_TARGET_LABEL) {
            Some(target) => {
                if let Some(entry) = entries.get(target)
                    && let Some(failed) = add(target, entry)
                {
                    return failed;
                }
            }
            None => {
                // Sorted, so that a list answer does not change order from call to call.
                let mut names: Vec<&String> = entries.keys().collect();
                names.sort_unstable();
                for name in names {
                    if let Some(failed) = add(name, &entries[name]) {
                        return failed;
                    }
                }
            }
        }
        body.push_str("]}");
        Lookup::List(body)
    }
}

/// A Kubernetes Quantity string for a milli-value: `42000` -> `"42"`, `1500` -> `"1500m"`.
pub fn quantity_from_milli(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn render_item(
    metric: &str,
    labels: &BTreeMap<String, String>,
    timestamp: DateTime<Utc>,
    window_seconds: Option<i64>,
    milli: i64,
) -> String {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct ExternalMetricValue<'a> {
        metric_name: &'a str,
        metric_labels: &'a BTreeMap<String, String>,
        timestamp: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        window: Option<i64>,
        value: String,
    }
    let item = ExternalMetricValue {
        metric_name: metric,
        metric_labels: labels,
        timestamp: timestamp.to_rfc3339_opts(SecondsFormat::Secs, true),
        window: window_seconds,
        value: quantity_from_milli(milli),
    };
    serde_json::to_string(&item).expect("strings and integers always serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(value: MetricValue) -> Sample {
        Sample {
            labels: BTreeMap::from([("queue".to_string(), "orders".to_string())]),
            value,
            timestamp: "2026-08-20T12:00:00Z".parse().unwrap(),
            window_seconds: Some(60),
        }
    }

    fn list(store: &MetricStore, ns: &str, metric: &str, selector: &str) -> serde_json::Value {
        match store.lookup(ns, metric, &Selector::parse(selector).unwrap()) {
            Lookup::List(body) => serde_json::from_str(&body).unwrap(),
            other => panic!("expected a list, got {other:?}"),
        }
    }

    #[test]
    fn quantities_are_kubernetes_strings() {
        assert_eq!(quantity_from_milli(42_000), "42");
        assert_eq!(quantity_from_milli(1_500), "1500m");
        assert_eq!(quantity_from_milli(0), "0");
        assert_eq!(quantity_from_milli(-250), "-250m");
    }

    #[test]
    fn a_published_value_is_served_in_the_wire_shape() {
        let store = MetricStore::new();
        store.publish(
            "shop",
            "backlog",
            "orders",
            sample(MetricValue::Milli(42_000)),
        );
        let body = list(&store, "shop", "backlog", "ebb.dev/scaledtarget=orders");
        assert_eq!(
            body,
            serde_json::json!({
                "kind": "ExternalMetricValueList",
                "apiVersion": "external.metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": [{
                    "metricName": "backlog",
                    "metricLabels": { "queue": "orders", "ebb.dev/scaledtarget": "orders" },
                    "timestamp": "2026-08-20T12:00:00Z",
                    "window": 60,
                    "value": "42"
                }]
            })
        );
    }

    #[test]
    fn selectors_pick_entries_and_unknown_metrics_are_told_apart() {
        let store = MetricStore::new();
        store.publish("shop", "backlog", "a", sample(MetricValue::Milli(1)));
        store.publish("shop", "backlog", "b", sample(MetricValue::Milli(2_000)));
        let all = list(&store, "shop", "backlog", "");
        let values: Vec<_> = all["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["value"].clone())
            .collect();
        assert_eq!(values, ["1m", "2"]);
        let none = list(&store, "shop", "backlog", "ebb.dev/scaledtarget=c");
        assert_eq!(none["items"], serde_json::json!([]));
        let not_a = list(&store, "shop", "backlog", "ebb.dev/scaledtarget notin (a)");
        assert_eq!(
            not_a["items"][0]["metricLabels"]["ebb.dev/scaledtarget"],
            "b"
        );
        let selector = Selector::default();
        assert_eq!(
            store.lookup("other", "backlog", &selector),
            Lookup::UnknownMetric
        );
        assert_eq!(
            store.lookup("shop", "rps", &selector),
            Lookup::UnknownMetric
        );
        assert_eq!(store.metric_names(), ["backlog"]);
    }

    #[test]
    fn a_failed_fetch_is_an_error_not_zero() {
        let store = MetricStore::new();
        store.publish("shop", "backlog", "a", sample(MetricValue::Milli(5_000)));
        store.publish(
            "shop",
            "backlog",
            "b",
            sample(MetricValue::Failed("queue gone".into())),
        );
        let selector = Selector::parse("ebb.dev/scaledtarget=b").unwrap();
        assert_eq!(
            store.lookup("shop", "backlog", &selector),
            Lookup::Failed {
                scaled_target: "b".into(),
                reason: "queue gone".into()
            }
        );
        // A list over both must not hide b's failure behind a's value.
        assert!(matches!(
            store.lookup("shop", "backlog", &Selector::default()),
            Lookup::Failed { .. }
        ));
        // A new good value replaces the failure.
        store.publish("shop", "backlog", "b", sample(MetricValue::Milli(0)));
        assert_eq!(
            list(&store, "shop", "backlog", "ebb.dev/scaledtarget=b")["items"][0]["value"],
            "0"
        );
    }

    #[test]
    fn remove_forgets_a_scaled_target_everywhere_in_its_namespace() {
        let store = MetricStore::new();
        store.publish("shop", "backlog", "a", sample(MetricValue::Milli(1)));
        store.publish("shop", "rps", "a", sample(MetricValue::Milli(1)));
        store.publish("other", "rps", "a", sample(MetricValue::Milli(1)));
        store.remove("shop", "a");
        let selector = Selector::default();
        assert_eq!(
            store.lookup("shop", "backlog", &selector),
            Lookup::UnknownMetric
        );
        assert_eq!(
            store.lookup("shop", "rps", &selector),
            Lookup::UnknownMetric
        );
        assert!(matches!(
            store.lookup("other", "rps", &selector),
            Lookup::List(_)
        ));
    }
}
