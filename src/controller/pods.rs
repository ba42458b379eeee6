//! The pods of each target's workload, from one pod watch (all namespaces, or the controller's
//! one), kept as what `engine::stall` judges: when each was created and became Ready, and
//! what its status says is wrong ([`pod_state`]). Only that is kept, not the objects.
//!
//! A workload's pods are the ones its scale selector matches (`replicas::ReplicaCache::
//! selector`). Until the first list is complete, or when pods cannot be listed (RBAC), there
//! are no pods to judge and stalls are not looked for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::Api;
use kube::runtime::watcher;

use super::watched::{Index, Watched};
use crate::api::selector::Selector;
use crate::engine::stall::{Pattern, PodState};

/// What is kept of one pod.
struct KeptPod {
    labels: BTreeMap<String, String>,
    state: PodState,
}

/// namespace -> the pods kept there.
///
/// A workload's pods are found through the labels its selector pins (`app=worker`): each
/// namespace indexes its pods by label key and value, so that a poll looks at its own
/// workload's pods and not at every pod of the namespace (5,000 targets in one namespace
/// would otherwise scan the whole namespace 5,000 times per interval).
#[derive(Default)]
pub struct PodIndex {
    by_namespace: HashMap<String, NamespacePods>,
}

#[derive(Default)]
struct NamespacePods {
    /// uid -> pod.
    pods: HashMap<String, KeptPod>,
    /// label key -> value -> uids of the pods with that label.
    by_label: HashMap<String, HashMap<String, HashSet<String>>>,
}

impl NamespacePods {
    fn insert(&mut self, pod: KeptPod) {
        let uid = pod.state.uid.clone();
        self.remove(&uid);
        for (key, value) in &pod.labels {
            self.by_label
                .entry(key.clone())
                .or_default()
                .entry(value.clone())
                .or_default()
                .insert(uid.clone());
        }
        self.pods.insert(uid, pod);
    }

    fn remove(&mut self, uid: &str) {
        let Some(pod) = self.pods.remove(uid) else {
            return;
        };
        for (key, value) in &pod.labels {
            if let Some(values) = self.by_label.get_mut(key) {
                if let Some(uids) = values.get_mut(value) {
                    uids.remove(uid);
                    if uids.is_empty() {
                        values.remove(value);
                    }
                }
                if values.is_empty() {
                    self.by_label.remove(key);
                }
            }
        }
    }

    /// The pods `selector` matches: among the fewest pods that carry a label it pins, else
    /// (a selector that pins none) among all.
    fn selected<'a>(&'a self, selector: &Selector) -> Vec<&'a KeptPod> {
        let mut fewest: Option<&HashSet<String>> = None;
        for requirement in selector.requirements() {
            let Some(value) = selector.required_value(&requirement.key) else {
                continue;
            };
            let Some(uids) = self
                .by_label
                .get(&requirement.key)
                .and_then(|v| v.get(value))
            else {
                return Vec::new();
            };
            if fewest.is_none_or(|f| uids.len() < f.len()) {
                fewest = Some(uids);
            }
        }
        let matches = |p: &&KeptPod| selector.matches(&p.labels);
        match fewest {
            Some(uids) => uids
                .iter()
                .filter_map(|uid| self.pods.get(uid))
                .filter(matches)
                .collect(),
            None => self.pods.values().filter(matches).collect(),
        }
    }
}

impl PodIndex {
    /// The pods in `namespace` that `selector` matches, in name order.
    pub fn pods_of(&self, namespace: &str, selector: &Selector) -> Vec<PodState> {
        let mut pods: Vec<PodState> = self
            .by_namespace
            .get(namespace)
            .map(|ns| ns.selected(selector))
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.state.clone())
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        pods
    }
}

impl FromIterator<Pod> for PodIndex {
    fn from_iter<I: IntoIterator<Item = Pod>>(pods: I) -> Self {
        let mut index = Self::default();
        for pod in pods {
            index.apply(pod);
        }
        index
    }
}

impl Index<Pod> for PodIndex {
    fn apply(&mut self, pod: Pod) {
        let (Some(ns), Some(state)) = (pod.metadata.namespace.clone(), pod_state(&pod)) else {
            return;
        };
        let labels = pod.metadata.labels.unwrap_or_default();
        self.by_namespace
            .entry(ns)
            .or_default()
            .insert(KeptPod { labels, state });
    }

    fn delete(&mut self, pod: &Pod) {
        if let (Some(ns), Some(uid)) = (&pod.metadata.namespace, &pod.metadata.uid)
            && let Some(pods) = self.by_namespace.get_mut(ns)
        {
            pods.remove(uid);
            if pods.pods.is_empty() {
                self.by_namespace.remove(ns);
            }
        }
    }
}

/// The pod watch and its index.
pub struct PodCache {
    watched: Arc<Watched<PodIndex>>,
    task: tokio::task::AbortHandle,
}

impl Drop for PodCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodCache {
    /// Starts the watch (of `namespace`, else of all) on the current runtime.
    pub fn start(client: kube::Client, namespace: Option<&str>) -> Self {
        let watched = Arc::new(Watched::new(PodIndex::default()));
        let api = match namespace {
            Some(ns) => Api::<Pod>::namespaced(client, ns),
            None => Api::<Pod>::all(client),
        };
        let task = tokio::spawn({
            let watched = watched.clone();
            async move {
                let events = watcher::watcher(api, watcher::Config::default().any_semantic());
                let refused = |e: &watcher::Error| {
                    matches!(
                        e,
                        watcher::Error::InitialListFailed(kube::Error::Api(s))
                            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                            if s.code == 403
                    )
                };
                watched
                    .follow(events, PodIndex::default, refused, "pods")
                    .await;
            }
        });
        Self {
            watched,
            task: task.abort_handle(),
        }
    }

    /// The pods in `namespace` that `selector` matches, in name order; `None` while the
    /// watch cannot say.
    pub fn pods_of(&self, namespace: &str, selector: &Selector) -> Option<Vec<PodState>> {
        Some(self.watched.read()?.pods_of(namespace, selector))
    }
}

/// What `pod` says, as `engine::stall` reads it (times in Unix milliseconds). `None` for a
/// pod without a uid or creation time (not one the API server returned).
pub fn pod_state(pod: &Pod) -> Option<PodState> {
    let meta = &pod.metadata;
    let created = meta.creation_timestamp.as_ref()?.0.as_millisecond();
    let status = pod.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
    };
    let ready = condition("Ready").filter(|c| c.status == "True");
    let ready_since = ready.map(|c| {
        c.last_transition_time
            .as_ref()
            .map_or(created, |t| t.0.as_millisecond())
    });
    let problem = if ready.is_some() {
        None
    } else {
        Some(diagnose(pod))
    };
    Some(PodState {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone()?,
        created,
        ready_since,
        problem,
        terminating: meta.deletion_timestamp.is_some(),
    })
}

/// Why a pod that is not Ready is not, from its status: the scheduler's verdict first, then
/// each container's (init containers first), then the Ready condition's own words.
fn diagnose(pod: &Pod) -> (Pattern, String) {
    let Some(status) = pod.status.as_ref() else {
        return (Pattern::Unknown, "no status yet".into());
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    {
        let message = c.message.clone().unwrap_or_default();
        return match c.reason.as_deref() {
            Some("Unschedulable") => (Pattern::Unschedulable, message),
            other => (
                Pattern::Unknown,
                format!(
                    "not scheduled ({}): {message}",
                    other.unwrap_or("no reason")
                ),
            ),
        };
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    let mut running_unready = None;
    for c in containers {
        if let Some(found) = container_problem(c) {
            return found;
        }
        if c.state.as_ref().is_some_and(|s| s.running.is_some()) && !c.ready {
            running_unready.get_or_insert(c.name.clone());
        }
    }
    let ready = conditions.iter().find(|c| c.type_ == "Ready");
    let words = |c: Option<&k8s_openapi::api::core::v1::PodCondition>| {
        c.map(|c| {
            format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("NotReady"),
                c.message.as_deref().unwrap_or("")
            )
        })
    };
    if let Some(name) = running_unready {
        return (
            Pattern::ReadinessProbe,
            format!("container {name} runs but is not ready (readiness probe failing)"),
        );
    }
    let phase = status.phase.as_deref().unwrap_or("Unknown");
    let why = status
        .reason
        .clone()
        .map(|r| format!("{r}: {}", status.message.as_deref().unwrap_or("")))
        .or_else(|| words(ready))
        .unwrap_or_else(|| "its status says no more".into());
    (Pattern::Unknown, format!("{phase}, not Ready: {why}"))
}

/// A container's own report of a known pattern.
fn container_problem(c: &ContainerStatus) -> Option<(Pattern, String)> {
    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
    let last_terminated = c.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    let oom = last_terminated.is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
        || c.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"));
    let said = |reason: &str| {
        let message = waiting.and_then(|w| w.message.as_deref()).unwrap_or("");
        format!(
            "container {}: {reason}{}{message} (restarts {})",
            c.name,
            if message.is_empty() { "" } else { ": " },
            c.restart_count
        )
    };
    if oom {
        return Some((Pattern::OomKilled, said("OOMKilled")));
    }
    let reason = waiting?.reason.as_deref()?;
    let pattern = match reason {
        "CrashLoopBackOff" => Pattern::CrashLoopBackOff,
        "ImagePullBackOff" | "ErrImagePull" | "InvalidImageName" | "ErrImageNeverPull" => {
            Pattern::ImagePull
        }
        "CreateContainerConfigError" | "CreateContainerError" => {
            Pattern::CreateContainerConfigError
        }
        // ContainerCreating, PodInitializing: starting, not stuck.
        _ => return None,
    };
    Some((pattern, said(reason)))
}

#[cfg(test)]
mod tests {
    //! Pods as the API server returns them (the shapes kubelet and the scheduler write).
    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "worker-7d9-x2", "namespace": "n", "uid": "u1",
                "creationTimestamp": "2026-12-03T10:00:00Z",
                "labels": { "app": "worker" }
            },
            "spec": { "containers": [{ "name": "app", "image": "worker:1" }] },
            "status": status
        }))
        .unwrap()
    }

    fn pattern_of(status: serde_json::Value) -> (Pattern, String) {
        pod_state(&pod(status)).unwrap().problem.unwrap()
    }

    #[test]
    fn a_ready_pod_has_its_ready_time_and_no_problem() {
        let p = pod_state(&pod(serde_json::json!({
            "phase": "Running",
            "conditions": [
                { "type": "PodScheduled", "status": "True" },
                { "type": "Ready", "status": "True", "lastTransitionTime": "2026-12-03T10:00:42Z" }
            ]
        })))
        .unwrap();
        assert_eq!(p.ready_since.unwrap() - p.created, 42_000);
        assert_eq!(p.problem, None);
        assert!(!p.terminating);
    }

    #[test]
    fn each_known_pattern_is_read_from_the_status_kubelet_and_the_scheduler_write() {
        let (p, m) = pattern_of(serde_json::json!({
            "phase": "Pending",
            "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
            }]
        }));
        assert_eq!(p, Pattern::Unschedulable);
        assert!(m.contains("didn't match Pod's node affinity"), "{m}");
        let waiting = |reason: &str, message: &str| {
            serde_json::json!({
                "phase": "Pending",
                "conditions": [
                    { "type": "PodScheduled", "status": "True" },
                    { "type": "Ready", "status": "False", "reason": "ContainersNotReady" }
                ],
                "containerStatuses": [{
                    "name": "app", "image": "worker:1", "imageID": "", "ready": false,
                    "restartCount": 4,
                    "state": { "waiting": { "reason": reason, "message": message } }
                }]
            })
        };
        let (p, m) = pattern_of(waiting(
            "CrashLoopBackOff",
            "back-off 1m20s restarting failed container",
        ));
        assert_eq!(p, Pattern::CrashLoopBackOff);
        assert!(
            m.starts_with("container app: CrashLoopBackOff: back-off"),
            "{m}"
        );
        assert!(m.ends_with("(restarts 4)"), "{m}");
        assert_eq!(
            pattern_of(waiting("ImagePullBackOff", "Back-off pulling image")).0,
            Pattern::ImagePull
        );
        assert_eq!(
            pattern_of(waiting("ErrImagePull", "not found")).0,
            Pattern::ImagePull
        );
        assert_eq!(
            pattern_of(waiting(
                "CreateContainerConfigError",
                "secret \"db\" not found"
            ))
            .0,
            Pattern::CreateContainerConfigError
        );
        // OOMKilled shows as the last termination of a crash-looping container.
        let mut oom = waiting("CrashLoopBackOff", "back-off");
        oom["containerStatuses"][0]["lastState"] =
            serde_json::json!({ "terminated": { "reason": "OOMKilled", "exitCode": 137 } });
        assert_eq!(pattern_of(oom).0, Pattern::OomKilled);
        // Running but not ready: the readiness probe.
        let (p, m) = pattern_of(serde_json::json!({
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "False", "reason": "ContainersNotReady" }],
            "containerStatuses": [{
                "name": "app", "image": "worker:1", "imageID": "", "ready": false,
                "restartCount": 0, "state": { "running": {} }
            }]
        }));
        assert_eq!(p, Pattern::ReadinessProbe);
        assert!(m.contains("container app runs but is not ready"), "{m}");
        // Still creating: nothing known, in its own words.
        let (p, m) = pattern_of(waiting("ContainerCreating", ""));
        assert_eq!(p, Pattern::Unknown);
        assert!(
            m.starts_with("Pending, not Ready: ContainersNotReady"),
            "{m}"
        );
    }

    #[test]
    fn the_index_finds_a_workload_s_pods_by_its_selector() {
        let mut index = PodIndex::default();
        let mut other = pod(serde_json::json!({ "phase": "Pending" }));
        other.metadata.uid = Some("u2".into());
        other.metadata.name = Some("api-1".into());
        other.metadata.labels = Some([("app".to_string(), "api".to_string())].into());
        index.apply(pod(serde_json::json!({ "phase": "Pending" })));
        index.apply(other.clone());
        let selector = Selector::parse("app=worker").unwrap();
        let names = |index: &PodIndex| -> Vec<String> {
            index
                .pods_of("n", &selector)
                .into_iter()
                .map(|p| p.name)
                .collect()
        };
        assert_eq!(names(&index), ["worker-7d9-x2"]);
        index.delete(&pod(serde_json::json!({})));
        assert!(names(&index).is_empty());
        index.delete(&other);
        assert!(index.by_namespace.is_empty());
    }

    /// The label index answers as a scan of the namespace would, for selectors that pin
    /// labels and ones that do not, as pods come, change their labels and go.
    #[test]
    fn the_label_index_answers_as_a_scan_of_the_namespace_would() {
        let labelled = |i: usize, labels: &[(&str, &str)]| {
            let mut p = pod(serde_json::json!({ "phase": "Running" }));
            p.metadata.uid = Some(format!("u{i}"));
            p.metadata.name = Some(format!("pod-{i:02}"));
            p.metadata.labels = Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            p
        };
        let mut index = PodIndex::default();
        let mut kept: BTreeMap<usize, Pod> = BTreeMap::new();
        let apps = ["worker", "api", "web"];
        let tiers = ["a", "b"];
        for i in 0..30 {
            let p = labelled(i, &[("app", apps[i % 3]), ("tier", tiers[i % 2])]);
            index.apply(p.clone());
            kept.insert(i, p);
        }
        // Relabel some, delete others.
        for i in (0..30).step_by(4) {
            let p = labelled(i, &[("app", "api"), ("canary", "yes")]);
            index.apply(p.clone());
            kept.insert(i, p);
        }
        for i in (1..30).step_by(5) {
            index.delete(&kept.remove(&i).unwrap());
        }
        for selector in [
            "app=worker",
            "app=api,tier=b",
            "app in (web),tier!=a",
            "app=api,canary",
            "app notin (api)",
            "tier",
            "!canary",
            "app=nothing",
            "",
        ] {
            let selector = Selector::parse(selector).unwrap();
            let scanned: Vec<String> = kept
                .values()
                .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap()))
                .map(|p| p.metadata.name.clone().unwrap())
                .collect();
            let found: Vec<String> = index
                .pods_of("n", &selector)
                .into_iter()
                .map(|p| p.name)
                .collect();
            assert_eq!(found, scanned, "{selector:?}");
        }
        for p in kept.values() {
            index.delete(p);
        }
        assert!(index.by_namespace.is_empty());
    }
}
