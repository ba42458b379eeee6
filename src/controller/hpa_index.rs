//! The HPAs in the controller's scope, from a watch: what mode Hpa needs on every poll (its own
//! HPA's generation and status, and whether another HPA scales the same workload) without a
//! request.
//!
//! Listing a namespace's HPAs on every poll costs one request per target per interval and
//! transfers every HPA of the namespace each time: quadratic in the number of targets (5,000
//! targets in one namespace would move 5,000 HPAs per poll). The index keeps each HPA once
//! (managed fields dropped) and finds those of a workload by key.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::watcher;

use super::hpa;
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

    fn insert(&mut self, mut h: HorizontalPodAutoscaler) {
        h.metadata.managed_fields = None;
        let name = (h.namespace().unwrap_or_default(), h.name_any());
        self.remove(&name);
        self.by_workload
            .entry(Self::workload(&h))
            .or_default()
            .insert(name.1.clone());
        self.by_name.insert(name, Arc::new(h));
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

/// What mode Hpa needs to know of the HPAs around one ScaledTarget.
pub struct HpaView {
    /// ebb's HPA for the target, if it exists and is owned by it.
    pub ours: Option<Arc<HorizontalPodAutoscaler>>,
    /// An HPA ebb does not own that scales the same workload.
    pub foreign: Option<Arc<HorizontalPodAutoscaler>>,
}

impl HpaView {
    /// The view of `st` among `hpas` (the HPAs of its namespace, or at least those of its
    /// workload and its own).
    pub fn of<'a>(
        st: &ScaledTarget,
        hpas: impl IntoIterator<Item = &'a Arc<HorizontalPodAutoscaler>>,
    ) -> Self {
        let name = hpa::hpa_name(st);
        let mut view = Self {
            ours: None,
            foreign: None,
        };
        for h in hpas {
            if hpa::owned_by(h, st) {
                if h.name_any() == name {
                    view.ours = Some(h.clone());
                }
            } else if view.foreign.is_none() && hpa::targets_same_workload(h, st) {
                view.foreign = Some(h.clone());
            }
        }
        view
    }
}

/// The watched HPAs; lookups answer `None` until the first list is complete.
pub struct HpaIndex {
    state: Arc<RwLock<State>>,
    synced: Arc<AtomicBool>,
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
        let state = Arc::new(RwLock::new(State::default()));
        let synced = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(follow(api, state.clone(), synced.clone())).abort_handle();
        Self {
            state,
            synced,
            task,
        }
    }

    /// The view of `st`, or `None` while the watch is not complete (list instead).
    pub fn view(&self, st: &ScaledTarget) -> Option<HpaView> {
        if !self.synced.load(Ordering::Acquire) {
            return None;
        }
        let ns = st.namespace().unwrap_or_default();
        let state = self.state.read().expect("hpas");
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

async fn follow(
    api: Api<HorizontalPodAutoscaler>,
    state: Arc<RwLock<State>>,
    synced: Arc<AtomicBool>,
) {
    let mut events = std::pin::pin!(watcher::watcher(
        api,
        watcher::Config::default().any_semantic()
    ));
    let mut listing: Option<State> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(State::default()),
            Ok(watcher::Event::InitApply(h)) => {
                if let Some(l) = listing.as_mut() {
                    l.insert(h);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(l) = listing.take() {
                    *state.write().expect("hpas") = l;
                }
                synced.store(true, Ordering::Release);
            }
            Ok(watcher::Event::Apply(h)) => state.write().expect("hpas").insert(h),
            Ok(watcher::Event::Delete(h)) => {
                let name = (h.namespace().unwrap_or_default(), h.name_any());
                state.write().expect("hpas").remove(&name);
            }
            Err(e) => {
                // Until the watch is back, polls list (and see what the watch would miss).
                synced.store(false, Ordering::Release);
                tracing::debug!(error = %e, "HPA watch interrupted; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
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
    fn the_index_follows_an_hpa_that_moves_to_another_workload_and_goes() {
        let mut s = State::default();
        s.insert(hpa("h", "a"));
        s.insert(hpa("h", "b"));
        let key = |w: &str| ("n".to_owned(), "Deployment".to_owned(), w.to_owned());
        assert!(!s.by_workload.contains_key(&key("a")));
        assert_eq!(s.by_workload[&key("b")].len(), 1);
        s.remove(&("n".into(), "h".into()));
        assert!(s.by_workload.is_empty() && s.by_name.is_empty());
    }
}
