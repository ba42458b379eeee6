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

#[derive(Default)]
struct State {
    by_name: HashMap<Name, Arc<HpaFacts>>,
    /// The HPAs of each workload, by a hash of its (namespace, kind, name), sorted by name:
    /// nearly always one. A key of three strings (and a list of names to look up again) was
    /// about 200 bytes an HPA; a lookup checks each HPA's workload and namespace instead
    /// ([`State::on_workload`]).
    by_workload: HashMap<u64, Vec<Arc<HpaFacts>>>,
}

/// The key of a workload in [`State::by_workload`].
fn workload_key(namespace: &str, kind: &str, name: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (namespace, kind, name).hash(&mut h);
    h.finish()
}

impl State {
    fn key_of(namespace: &str, h: &HpaFacts) -> u64 {
        workload_key(
            namespace,
            &h.scale_target_ref.kind,
            &h.scale_target_ref.name,
        )
    }

    fn remove(&mut self, name: &Name) {
        if let Some(old) = self.by_name.remove(name) {
            let key = Self::key_of(&name.0, &old);
            if let Some(hpas) = self.by_workload.get_mut(&key) {
                hpas.retain(|h| !Arc::ptr_eq(h, &old));
                if hpas.is_empty() {
                    self.by_workload.remove(&key);
                }
            }
        }
    }

    /// The HPAs of `namespace` that scale the workload (`kind`, `name`) (any API group: the
    /// caller compares groups).
    fn on_workload<'a>(
        &'a self,
        namespace: &'a str,
        kind: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Arc<HpaFacts>> + 'a {
        self.by_workload
            .get(&workload_key(namespace, kind, name))
            .into_iter()
            .flatten()
            .filter(move |h| {
                let r = &h.scale_target_ref;
                r.kind == kind
                    && r.name == name
                    // Another namespace's HPA with the same key: not the one indexed here.
                    && self
                        .by_name
                        .get(&(namespace.to_owned(), h.name.clone()))
                        .is_some_and(|same| Arc::ptr_eq(same, h))
            })
    }
}

impl Index<HorizontalPodAutoscaler> for State {
    fn apply(&mut self, h: HorizontalPodAutoscaler) {
        let namespace = h.namespace().unwrap_or_default();
        let h = Arc::new(HpaFacts::of(&h));
        let name = (namespace, h.name.clone());
        self.remove(&name);
        let hpas = self
            .by_workload
            .entry(Self::key_of(&name.0, &h))
            .or_default();
        let at = hpas.partition_point(|other| other.name < h.name);
        hpas.reserve_exact(1);
        hpas.insert(at, h.clone());
        self.by_name.insert(name, h);
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
        let own = state.by_name.get(&(ns.clone(), hpa::hpa_name(st)));
        let same_workload = state.on_workload(&ns, &t.kind, &t.name);
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
        assert!(limited.limited && limited.message.is_none());
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
        let on = |s: &State, w: &str| -> Vec<String> {
            s.on_workload("n", "Deployment", w)
                .map(|h| h.name.clone())
                .collect()
        };
        assert!(on(&s, "a").is_empty());
        assert_eq!(on(&s, "b"), ["h"]);
        s.remove(&("n".into(), "h".into()));
        assert!(s.by_workload.is_empty() && s.by_name.is_empty());
        // Two on one workload, each once, in order; one goes, the other stays.
        for name in ["z", "g", "z"] {
            s.apply(hpa(name, "c"));
        }
        assert_eq!(on(&s, "c"), ["g", "z"]);
        // The same workload's name in another namespace is another workload.
        let mut elsewhere = hpa("y", "c");
        elsewhere.metadata.namespace = Some("m".into());
        s.apply(elsewhere);
        assert_eq!(on(&s, "c"), ["g", "z"]);
        s.remove(&("n".into(), "g".into()));
        assert_eq!(on(&s, "c"), ["z"]);
        assert_eq!(
            s.on_workload("m", "Deployment", "c")
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>(),
            ["y"]
        );
    }
}
