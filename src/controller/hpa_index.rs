//! The HPAs in the controller's scope, from a watch: what mode Hpa needs on every poll (its own
//! HPA's generation and status, and whether another HPA scales the same workload) without a
//! request.
//!
//! Listing a namespace's HPAs on every poll costs one request per target per interval and
//! transfers every HPA of the namespace each time: quadratic in the number of targets (5,000
//! targets in one namespace would move 5,000 HPAs per poll). The index keeps each HPA once
//! (managed fields dropped) and finds those of a workload by key.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;

use super::hpa;
use super::watched::{Index, Watched};
use crate::crd::ScaledTarget;

type Name = (String, String);
/// (namespace, kind, name) of the scaled workload.
type Workload = (String, String, String);

#[derive(Default)]
struct State {
    by_name: HashMap<Name, Arc<HorizontalPodAutoscaler>>,
    by_workload: HashMap<Workload, BTreeSet<String>>,
}

impl State {
    fn workload(h: &HorizontalPodAutoscaler) -> Workload {
        let r = &h.spec.scale_target_ref;
        (
            h.namespace().unwrap_or_default(),
            r.kind.clone(),
            r.name.clone(),
        )
    }

    fn remove(&mut self, name: &Name) {
        if let Some(old) = self.by_name.remove(name) {
            let w = Self::workload(&old);
            if let Some(names) = self.by_workload.get_mut(&w) {
                names.remove(&name.1);
                if names.is_empty() {
                    self.by_workload.remove(&w);
                }
            }
        }
    }
}

/// What the index keeps of an HPA: all but its managed fields and the metric values it last
/// read (ebb reads its own values from its store; of the HPA's status only the counts, the
/// scale time and the conditions), with each list no longer than it is. A list deserialized
/// in place keeps the spare room it grew into: the HPA's metrics, 808 bytes each inline, took
/// four slots for one metric (3 KiB an HPA, 5,000 HPAs 16 MiB).
fn compact(h: &mut HorizontalPodAutoscaler) {
    h.metadata.managed_fields = None;
    if let Some(metrics) = h.spec.metrics.as_mut() {
        metrics.shrink_to_fit();
    }
    if let Some(status) = h.status.as_mut() {
        status.current_metrics = None;
        if let Some(conditions) = status.conditions.as_mut() {
            conditions.shrink_to_fit();
        }
    }
    for rules in h
        .spec
        .behavior
        .iter_mut()
        .flat_map(|b| [b.scale_up.as_mut(), b.scale_down.as_mut()])
        .flatten()
    {
        if let Some(policies) = rules.policies.as_mut() {
            policies.shrink_to_fit();
        }
    }
}

impl Index<HorizontalPodAutoscaler> for State {
    fn apply(&mut self, mut h: HorizontalPodAutoscaler) {
        compact(&mut h);
        let name = (h.namespace().unwrap_or_default(), h.name_any());
        self.remove(&name);
        self.by_workload
            .entry(Self::workload(&h))
            .or_default()
            .insert(name.1.clone());
        self.by_name.insert(name, Arc::new(h));
    }

    fn delete(&mut self, h: &HorizontalPodAutoscaler) {
        self.remove(&(h.namespace().unwrap_or_default(), h.name_any()));
    }
}

/// What mode Hpa needs to know of the HPAs around one ScaledTarget.
pub struct HpaView {
    /// ebb's HPA for the target, if it exists and is owned by it.
    pub ours: Option<Arc<HorizontalPodAutoscaler>>,
    /// An HPA ebb does not own that scales the same workload (or that `ebb.dev/adopt-hpa`
    /// names while it scales another one).
    pub foreign: Option<Arc<HorizontalPodAutoscaler>>,
    /// The HPA `ebb.dev/adopt-hpa` names, on the same workload, not owned yet: ebb takes it
    /// over (it is `ours` too).
    pub adopting: bool,
}

impl HpaView {
    /// The view of `st` among `hpas` (the HPAs of its namespace, or at least those of its
    /// workload and its own).
    pub fn of<'a>(
        st: &ScaledTarget,
        hpas: impl IntoIterator<Item = &'a Arc<HorizontalPodAutoscaler>>,
    ) -> Self {
        let name = hpa::hpa_name(st);
        let adopt = hpa::adopted_hpa(st);
        let mut view = Self {
            ours: None,
            foreign: None,
            adopting: false,
        };
        for h in hpas {
            let same_workload = hpa::targets_same_workload(h, st);
            if hpa::owned_by(h, st) {
                if h.name_any() == name {
                    view.ours = Some(h.clone());
                }
            } else if adopt == Some(h.name_any().as_str()) && same_workload {
                view.ours = Some(h.clone());
                view.adopting = true;
            } else if view.foreign.is_none()
                && (same_workload || adopt == Some(h.name_any().as_str()))
            {
                view.foreign = Some(h.clone());
            }
        }
        view
    }
}

/// The watched HPAs; lookups answer `None` until the first list is complete.
pub struct HpaIndex {
    watched: Arc<Watched<State>>,
    task: tokio::task::AbortHandle,
}

impl Drop for HpaIndex {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HpaIndex {
    /// Starts watching the HPAs of `namespace` (all namespaces when `None`).
    pub fn start(client: kube::Client, namespace: Option<&str>) -> Self {
        let api = match namespace {
            Some(ns) => Api::<HorizontalPodAutoscaler>::namespaced(client, ns),
            None => Api::<HorizontalPodAutoscaler>::all(client),
        };
        let watched = Arc::new(Watched::new(State::default()));
        let task = tokio::spawn({
            let watched = watched.clone();
            async move {
                let events = watcher::watcher(api, watcher::Config::default().any_semantic());
                watched
                    .follow(events, State::default, |_| false, "HPAs")
                    .await;
            }
        })
        .abort_handle();
        Self { watched, task }
    }

    /// The view of `st`, or `None` while the watch is not complete (list instead).
    pub fn view(&self, st: &ScaledTarget) -> Option<HpaView> {
        let state = self.watched.read()?;
        let ns = st.namespace().unwrap_or_default();
        let t = &st.spec.target_ref;
        let workload = (ns.clone(), t.kind.clone(), t.name.clone());
        let own = state.by_name.get(&(ns.clone(), hpa::hpa_name(st)));
        let same_workload = state
            .by_workload
            .get(&workload)
            .into_iter()
            .flatten()
            .filter_map(|n| state.by_name.get(&(ns.clone(), n.clone())));
        Some(HpaView::of(st, own.into_iter().chain(same_workload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa(name: &str, workload: &str) -> HorizontalPodAutoscaler {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "namespace": "n" },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": workload },
                "maxReplicas": 3
            }
        }))
        .unwrap()
    }

    #[test]
    fn the_index_keeps_an_hpa_compact_and_its_spec_whole() {
        // Parsed from text, as a watch parses it (a `Value`'s arrays have a known length).
        let json = serde_json::json!({
            "metadata": { "name": "h", "namespace": "n",
                          "managedFields": [{ "manager": "kube-controller-manager" }] },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "w" },
                "maxReplicas": 3,
                "metrics": [{ "type": "External", "external": {
                    "metric": { "name": "m" },
                    "target": { "type": "AverageValue", "averageValue": "10" } } }]
            },
            "status": {
                "desiredReplicas": 2,
                "currentMetrics": [{ "type": "External", "external": {
                    "metric": { "name": "m" }, "current": { "averageValue": "12" } } }],
                "conditions": [{ "type": "ScalingLimited", "status": "False" }]
            }
        });
        let parse = || serde_json::from_str::<HorizontalPodAutoscaler>(&json.to_string()).unwrap();
        let mut h = parse();
        let spec = h.spec.clone();
        assert!(
            h.spec.metrics.as_ref().unwrap().capacity() > 1,
            "serde grows by four"
        );
        let mut s = State::default();
        s.apply(parse());
        let kept = &s.by_name[&("n".to_owned(), "h".to_owned())];
        assert_eq!(kept.spec, spec);
        assert_eq!(kept.spec.metrics.as_ref().unwrap().capacity(), 1);
        assert!(kept.metadata.managed_fields.is_none());
        let status = kept.status.as_ref().unwrap();
        assert_eq!(status.desired_replicas, 2);
        assert!(status.current_metrics.is_none());
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
        h.status = None;
        s.apply(h);
        assert!(
            s.by_name[&("n".to_owned(), "h".to_owned())]
                .status
                .is_none()
        );
    }

    #[test]
    fn the_index_follows_an_hpa_that_moves_to_another_workload_and_goes() {
        let mut s = State::default();
        s.apply(hpa("h", "a"));
        s.apply(hpa("h", "b"));
        let key = |w: &str| ("n".to_owned(), "Deployment".to_owned(), w.to_owned());
        assert!(!s.by_workload.contains_key(&key("a")));
        assert_eq!(s.by_workload[&key("b")].len(), 1);
        s.remove(&("n".into(), "h".into()));
        assert!(s.by_workload.is_empty() && s.by_name.is_empty());
    }
}
