//! The HPAs in the controller's scope, from a watch: what mode Hpa needs on every poll (its own
//! HPA's generation and status, and whether another HPA scales the same workload) without a
//! request.
//!
//! Listing a namespace's HPAs on every poll costs one request per target per interval and
//! transfers every HPA of the namespace each time: quadratic in the number of targets (5,000
//! targets in one namespace would move 5,000 HPAs per poll). The index keeps what ebb reads of
//! each HPA once ([`HpaFacts`]) and finds those of a workload by key.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;

use super::hpa::{self, HpaFacts};
use super::watched::{Index, Watched};
use crate::crd::ScaledTarget;

type Name = (String, String);
/// (namespace, kind, name) of the scaled workload.
type Workload = (String, String, String);

#[derive(Default)]
struct State {
    by_name: HashMap<Name, Arc<HpaFacts>>,
    /// Sorted names, as long as they are: nearly always one (a `BTreeSet` node is 11 slots).
    by_workload: HashMap<Workload, Vec<String>>,
}

impl State {
    fn workload(namespace: &str, h: &HpaFacts) -> Workload {
        let r = &h.scale_target_ref;
        (namespace.to_owned(), r.kind.clone(), r.name.clone())
    }

    fn remove(&mut self, name: &Name) {
        if let Some(old) = self.by_name.remove(name) {
            let w = Self::workload(&name.0, &old);
            if let Some(names) = self.by_workload.get_mut(&w) {
                if let Ok(i) = names.binary_search(&name.1) {
                    names.remove(i);
                }
                if names.is_empty() {
                    self.by_workload.remove(&w);
                }
            }
        }
    }
}

impl Index<HorizontalPodAutoscaler> for State {
    fn apply(&mut self, h: HorizontalPodAutoscaler) {
        let namespace = h.namespace().unwrap_or_default();
        let h = HpaFacts::of(&h);
        let name = (namespace.clone(), h.name.clone());
        self.remove(&name);
        let names = self
            .by_workload
            .entry(Self::workload(&namespace, &h))
            .or_default();
        if let Err(i) = names.binary_search(&name.1) {
            names.reserve_exact(1);
            names.insert(i, name.1.clone());
        }
        self.by_name.insert(name, Arc::new(h));
    }

    fn delete(&mut self, h: &HorizontalPodAutoscaler) {
        self.remove(&(h.namespace().unwrap_or_default(), h.name_any()));
    }
}

/// What mode Hpa needs to know of the HPAs around one ScaledTarget.
pub struct HpaView {
    /// ebb's HPA for the target, if it exists and is owned by it.
    pub ours: Option<Arc<HpaFacts>>,
    /// An HPA ebb does not own that scales the same workload (or that `ebb.dev/adopt-hpa`
    /// names while it scales another one).
    pub foreign: Option<Arc<HpaFacts>>,
    /// The HPA `ebb.dev/adopt-hpa` names, on the same workload, not owned yet: ebb takes it
    /// over (it is `ours` too).
    pub adopting: bool,
}

impl HpaView {
    /// The view of `st` among `hpas` (the HPAs of its namespace, or at least those of its
    /// workload and its own).
    pub fn of<'a>(st: &ScaledTarget, hpas: impl IntoIterator<Item = &'a Arc<HpaFacts>>) -> Self {
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
                if h.name == name {
                    view.ours = Some(h.clone());
                }
            } else if adopt == Some(h.name.as_str()) && same_workload {
                view.ours = Some(h.clone());
                view.adopting = true;
            } else if view.foreign.is_none() && (same_workload || adopt == Some(h.name.as_str())) {
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
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

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
    fn the_index_keeps_what_ebb_reads_of_an_hpa() {
        let json = serde_json::json!({
            "metadata": { "name": "h", "namespace": "n", "labels": { "team": "a" },
                          "ownerReferences": [
                              { "apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u0" },
                              { "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
                                "name": "st", "uid": "u1", "controller": true }],
                          "managedFields": [{ "manager": "kube-controller-manager" }] },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "w" },
                "maxReplicas": 3,
                "metrics": [
                    { "type": "External", "external": {
                        "metric": { "name": "m", "selector": { "matchLabels": { "a": "b" } } },
                        "target": { "type": "AverageValue", "averageValue": "10" } } },
                    { "type": "External", "external": {
                        "metric": { "name": "v" },
                        "target": { "type": "Value", "value": "3" } } }]
            },
            "status": {
                "currentReplicas": 1,
                "desiredReplicas": 2,
                "currentMetrics": [{ "type": "External", "external": {
                    "metric": { "name": "m" }, "current": { "averageValue": "12" } } }],
                "conditions": [
                    { "type": "AbleToScale", "status": "True" },
                    { "type": "ScalingLimited", "status": "True", "reason": "TooManyReplicas" }]
            }
        });
        let h: HorizontalPodAutoscaler = serde_json::from_value(json).unwrap();
        let mut s = State::default();
        s.apply(h.clone());
        let kept = &s.by_name[&("n".to_owned(), "h".to_owned())];
        assert_eq!(kept.name, "h");
        assert_eq!(kept.scale_target_ref.name, "w");
        assert_eq!(kept.controller_uid.as_deref(), Some("u1"));
        assert_eq!(kept.spec_hash, crate::controller::json_hash(&h.spec));
        assert_eq!(
            kept.average_values,
            [("m".to_owned(), Quantity("10".into()))]
        );
        let status = kept.status.as_ref().unwrap();
        assert_eq!(
            (status.current_replicas, status.desired_replicas),
            (Some(1), 2)
        );
        let limited = status.scaling_limited.as_ref().unwrap();
        assert_eq!(limited.reason.as_deref(), Some("TooManyReplicas"));
        // What the HPA controller writes leaves the spec's hash alone.
        let mut moved = h.clone();
        moved.status.as_mut().unwrap().desired_replicas = 3;
        s.apply(moved);
        let kept = &s.by_name[&("n".to_owned(), "h".to_owned())];
        assert_eq!(kept.spec_hash, crate::controller::json_hash(&h.spec));
        assert_eq!(kept.status.as_ref().unwrap().desired_replicas, 3);
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
        // Two on one workload, each once, in order; one goes, the other stays.
        for name in ["z", "g", "z"] {
            s.apply(hpa(name, "c"));
        }
        assert_eq!(s.by_workload[&key("c")], ["g", "z"]);
        s.remove(&("n".into(), "g".into()));
        assert_eq!(s.by_workload[&key("c")], ["z"]);
    }
}
