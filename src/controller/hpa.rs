//! Mode Hpa: the autoscaling/v2 HPA that ebb owns for a ScaledTarget. Its external metrics point
//! at ebb's API (metric name = the ScaledTarget's metric name, selector
//! `ebb.dev/scaledtarget=<name>`); its bounds and behavior are the ScaledTarget's.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec, MetricTarget,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Resource;
use kube::api::ObjectMeta;

use crate::crd::{SCALED_TARGET_LABEL, ScaledTarget, TargetType};

/// The owned HPA's name for a ScaledTarget.
pub fn hpa_name(st: &ScaledTarget) -> String {
    format!("ebb-{}", st.metadata.name.as_deref().unwrap_or_default())
}

/// The HPA ebb wants for `st`, owned by it (garbage-collected with it).
pub fn desired_hpa(st: &ScaledTarget) -> HorizontalPodAutoscaler {
    desired_hpa_with(st, &BTreeMap::new())
}

/// [`desired_hpa`] with learned AverageValue targets by metric name (`spec.adaptive`) in place
/// of the static ones.
pub fn desired_hpa_with(
    st: &ScaledTarget,
    learned: &BTreeMap<String, Quantity>,
) -> HorizontalPodAutoscaler {
    let name = st.metadata.name.clone().unwrap_or_default();
    let spec = &st.spec;
    let metrics = spec
        .metrics
        .iter()
        .map(|m| MetricSpec {
            type_: "External".into(),
            external: Some(ExternalMetricSource {
                metric: MetricIdentifier {
                    name: m.name.clone(),
                    selector: Some(LabelSelector {
                        match_labels: Some(
                            [(SCALED_TARGET_LABEL.to_string(), name.clone())].into(),
                        ),
                        ..Default::default()
                    }),
                },
                target: match m.target.type_ {
                    TargetType::Value => MetricTarget {
                        type_: "Value".into(),
                        value: m.target.value.clone(),
                        ..Default::default()
                    },
                    TargetType::AverageValue => MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: learned
                            .get(&m.name)
                            .cloned()
                            .or_else(|| m.target.average_value.clone()),
                        ..Default::default()
                    },
                },
            }),
            ..Default::default()
        })
        .collect();
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some(hpa_name(st)),
            namespace: st.metadata.namespace.clone(),
            labels: Some([(SCALED_TARGET_LABEL.to_string(), name)].into()),
            owner_references: st.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some(spec.target_ref.api_version.clone()),
                kind: spec.target_ref.kind.clone(),
                name: spec.target_ref.name.clone(),
            },
            min_replicas: Some(spec.min_replicas),
            max_replicas: spec.max_replicas,
            metrics: Some(metrics),
            behavior: spec.behavior.clone(),
        },
        status: None,
    }
}

/// The AverageValue targets of `hpa` for the metrics in `pending` whose value lies in the
/// metric's range (what a learned target may be): kept while the metric's learning state
/// waits for its backfill.
pub fn kept_targets(
    hpa: &HorizontalPodAutoscaler,
    pending: &BTreeMap<String, (f64, f64)>,
) -> Vec<(String, Quantity)> {
    hpa.spec
        .metrics
        .iter()
        .flatten()
        .filter_map(|m| {
            let e = m.external.as_ref()?;
            let (lo, hi) = pending.get(&e.metric.name)?;
            let q = e.target.average_value.as_ref()?;
            let v = crate::crd::milli_value(&q.0).ok()? as f64 / 1000.0;
            (*lo - 1e-3 <= v && v <= *hi + 1e-3).then(|| (e.metric.name.clone(), q.clone()))
        })
        .collect()
}

/// Whether `hpa` is the one ebb owns for `st`.
pub fn owned_by(hpa: &HorizontalPodAutoscaler, st: &ScaledTarget) -> bool {
    let uid = st.metadata.uid.as_deref();
    hpa.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

/// Whether `hpa` scales the workload `st` targets.
pub fn targets_same_workload(hpa: &HorizontalPodAutoscaler, st: &ScaledTarget) -> bool {
    let r = &hpa.spec.scale_target_ref;
    let t = &st.spec.target_ref;
    r.kind == t.kind
        && r.name == t.name
        && group(r.api_version.as_deref().unwrap_or("")) == group(&t.api_version)
}

fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}
