//! Mode Hpa: the autoscaling/v2 HPA that ebb owns for a ScaledTarget. Its external metrics point
//! at ebb's API (metric name = the ScaledTarget's metric name, selector
//! `ebb.dev/scaledtarget=<name>`); its bounds and behavior are the ScaledTarget's.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::Resource;
use kube::api::ObjectMeta;

use crate::crd::{SCALED_TARGET_LABEL, ScaledTarget, TargetType};
use crate::engine::learning::LearnedBehavior;

/// The owned HPA's name for a ScaledTarget.
pub fn hpa_name(st: &ScaledTarget) -> String {
    match adopted_hpa(st) {
        Some(name) => name.to_string(),
        None => format!("ebb-{}", st.metadata.name.as_deref().unwrap_or_default()),
    }
}

/// The HPA `ebb.dev/adopt-hpa` names, if any: ebb's HPA for `st` then has its name.
pub fn adopted_hpa(st: &ScaledTarget) -> Option<&str> {
    st.metadata
        .annotations
        .as_ref()?
        .get(crate::crd::ADOPT_HPA_ANNOTATION)
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
}

/// The HPA ebb wants for `st`, owned by it (garbage-collected with it).
pub fn desired_hpa(st: &ScaledTarget) -> HorizontalPodAutoscaler {
    desired_hpa_with(st, &BTreeMap::new(), None)
}

/// [`desired_hpa`] with what `spec.adaptive` learned: AverageValue targets by metric name in
/// place of the static ones, the scale-down window and both tolerances
/// ([`LearnedBehavior`]). As in modes Direct and
/// Shadow, a window the behavior sets explicitly still holds when it is longer, and an explicit
/// tolerance stays. (`tolerance` needs the HPAConfigurableTolerance feature of Kubernetes; an
/// API server without it drops the field and keeps its cluster-wide 10 %.)
pub fn desired_hpa_with(
    st: &ScaledTarget,
    learned: &BTreeMap<String, Quantity>,
    scale_down: Option<LearnedBehavior>,
) -> HorizontalPodAutoscaler {
    let name = st.metadata.name.clone().unwrap_or_default();
    let spec = &st.spec;
    let metrics = spec
        .decided_metrics()
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
                    // DrainTime: ebb serves the work (msg/s); the HPA divides it by the
                    // per-pod throughput (learned, else the set one).
                    TargetType::AverageValue | TargetType::DrainTime => MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: learned
                            .get(&m.name)
                            .cloned()
                            .or_else(|| m.target.quantity().cloned()),
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
            min_replicas: Some(spec.active_min_replicas()),
            max_replicas: spec.max_replicas,
            metrics: Some(metrics),
            behavior: behavior_with(spec.behavior.as_deref().cloned(), scale_down),
        },
        status: None,
    }
}

fn behavior_with(
    behavior: Option<HorizontalPodAutoscalerBehavior>,
    learned: Option<LearnedBehavior>,
) -> Option<HorizontalPodAutoscalerBehavior> {
    let Some(learned) = learned else {
        return behavior;
    };
    let mut behavior = behavior.unwrap_or_default();
    // The HPA reads a tolerance to three decimals.
    let quantity = |tolerance: f64| Quantity(format!("{tolerance:.3}"));
    let down = behavior.scale_down.get_or_insert_with(Default::default);
    down.stabilization_window_seconds =
        Some(learned.scale_down_window(down.stabilization_window_seconds));
    if down.tolerance.is_none() {
        down.tolerance = Some(quantity(learned.scale_down_tolerance(None)));
    }
    let up = behavior.scale_up.get_or_insert_with(Default::default);
    if up.tolerance.is_none() {
        up.tolerance = Some(quantity(learned.scale_up_tolerance(None)));
    }
    Some(behavior)
}

/// What ebb reads of an HPA, and all it keeps of one (the watch's index holds thousands): a
/// whole object with one metric took 6.4 KiB as parsed (docs/peers.md, "Memory per target").
/// An adoption, the one write that needs the whole object, reads it first.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaFacts {
    pub name: String,
    /// The workload it scales.
    pub scale_target_ref: CrossVersionObjectReference,
    /// The uid of its controlling owner.
    pub controller_uid: Option<String>,
    /// A hash of its spec (defaults filled in): unchanged since ebb's last apply?
    pub spec_hash: u64,
    /// The AverageValue target of each External metric, by metric name.
    pub average_values: Vec<(String, Quantity)>,
    /// What the HPA controller last wrote, when it has.
    pub status: Option<HpaStatusFacts>,
}

/// What ebb reads of an HPA's status.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaStatusFacts {
    pub current_replicas: Option<i32>,
    pub desired_replicas: i32,
    pub last_scale_time: Option<Time>,
    /// Its `ScalingLimited` condition, when it has one.
    pub scaling_limited: Option<ScalingLimited>,
}

/// What ebb repeats of an HPA's `ScalingLimited` condition in the ScaledTarget's status (the
/// condition as read is 120 bytes inline and three more strings, in each of 5,000 HPAs).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingLimited {
    /// Its status is `True`.
    pub limited: bool,
    pub reason: Option<Box<str>>,
    pub message: Option<Box<str>>,
}

impl HpaFacts {
    pub fn of(hpa: &HorizontalPodAutoscaler) -> Self {
        let average_values = hpa
            .spec
            .metrics
            .iter()
            .flatten()
            .filter_map(|m| {
                let e = m.external.as_ref()?;
                Some((e.metric.name.clone(), e.target.average_value.clone()?))
            })
            .collect();
        Self {
            name: hpa.metadata.name.clone().unwrap_or_default(),
            scale_target_ref: hpa.spec.scale_target_ref.clone(),
            controller_uid: hpa
                .metadata
                .owner_references
                .iter()
                .flatten()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone()),
            spec_hash: super::json_hash(&hpa.spec),
            average_values,
            status: hpa.status.as_ref().map(|s| HpaStatusFacts {
                current_replicas: s.current_replicas,
                desired_replicas: s.desired_replicas,
                last_scale_time: s.last_scale_time.clone(),
                scaling_limited: s
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == crate::engine::conditions::SCALING_LIMITED)
                    .map(|c| ScalingLimited {
                        limited: c.status == "True",
                        reason: c.reason.as_deref().map(Into::into),
                        message: c.message.as_deref().map(Into::into),
                    }),
            }),
        }
    }
}

/// The AverageValue targets of `hpa` for the metrics in `pending` whose value lies in the
/// metric's range (what a learned target may be): kept while the metric's learning state
/// waits for its backfill.
pub fn kept_targets(
    hpa: &HpaFacts,
    pending: &BTreeMap<String, (f64, f64)>,
) -> Vec<(String, Quantity)> {
    hpa.average_values
        .iter()
        .filter(|(name, q)| {
            let Some((lo, hi)) = pending.get(name) else {
                return false;
            };
            let Ok(milli) = crate::crd::milli_value(&q.0) else {
                return false;
            };
            let v = milli as f64 / 1000.0;
            *lo - 1e-3 <= v && v <= *hi + 1e-3
        })
        .cloned()
        .collect()
}

/// Whether `hpa` is the one ebb owns for `st`.
pub fn owned_by(hpa: &HpaFacts, st: &ScaledTarget) -> bool {
    hpa.controller_uid.is_some() && hpa.controller_uid.as_deref() == st.metadata.uid.as_deref()
}

/// Whether `hpa` scales the workload `st` targets.
pub fn targets_same_workload(hpa: &HpaFacts, st: &ScaledTarget) -> bool {
    let r = &hpa.scale_target_ref;
    let t = &st.spec.target_ref;
    r.kind == t.kind
        && r.name == t.name
        && group(r.api_version.as_deref().unwrap_or("")) == group(&t.api_version)
}

fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingRules;

    fn with_down(window: Option<i32>, tolerance: Option<&str>) -> HorizontalPodAutoscalerBehavior {
        HorizontalPodAutoscalerBehavior {
            scale_down: Some(HPAScalingRules {
                stabilization_window_seconds: window,
                tolerance: tolerance.map(|t| Quantity(t.into())),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_learned_behavior_goes_on_the_hpa_under_what_the_behavior_sets() {
        let learned = LearnedBehavior {
            window_seconds: 600,
            tolerance: 0.0421,
        };
        let down = |b: Option<HorizontalPodAutoscalerBehavior>| {
            behavior_with(b, Some(learned)).unwrap().scale_down.unwrap()
        };
        // Nothing set: the learned values.
        let d = down(None);
        assert_eq!(d.stabilization_window_seconds, Some(600));
        assert_eq!(d.tolerance, Some(Quantity("0.042".into())));
        // An explicit window holds when longer, and an explicit tolerance stays.
        let d = down(Some(with_down(Some(900), Some("0.2"))));
        assert_eq!(d.stabilization_window_seconds, Some(900));
        assert_eq!(d.tolerance, Some(Quantity("0.2".into())));
        assert_eq!(
            down(Some(with_down(Some(60), None))).stabilization_window_seconds,
            Some(600)
        );
        // Scale-ups: half the learned band (not the HPA's 10 %), unless the behavior sets one.
        let up = |b: Option<HorizontalPodAutoscalerBehavior>| {
            behavior_with(b, Some(learned)).unwrap().scale_up.unwrap()
        };
        assert_eq!(up(None).tolerance, Some(Quantity("0.021".into())));
        let explicit = HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules {
                tolerance: Some(Quantity("0.05".into())),
                stabilization_window_seconds: Some(30),
                ..Default::default()
            }),
            ..Default::default()
        };
        let u = up(Some(explicit));
        assert_eq!(u.tolerance, Some(Quantity("0.05".into())));
        assert_eq!(u.stabilization_window_seconds, Some(30));
        // Not learning (a metric that does not learn): the behavior as written.
        let b = Some(with_down(Some(60), None));
        assert_eq!(behavior_with(b.clone(), None), b);
    }
}
