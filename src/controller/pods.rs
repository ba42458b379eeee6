//! The pods of each target's workload, from one pod watch (all namespaces, or the controller's
//! one), kept as what `engine::stall` judges: when each was created and became Ready, and
//! what its status says is wrong ([`pod_state`]). Only that is kept, not the objects.
//!
//! A workload's pods are the ones its scale selector matches (`replicas::ReplicaCache::
//! selector`). Until the first list is complete, or when pods cannot be listed (RBAC), there
//! are no pods to judge and stalls are not looked for.

use std::collections::{BTreeMap, HashMap};
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

/// namespace -> uid -> pod.
#[derive(Default)]
pub struct PodIndex {
    by_namespace: HashMap<String, HashMap<String, KeptPod>>,
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
            .insert(state.uid.clone(), KeptPod { labels, state });
    }

    fn delete(&mut self, pod: &Pod) {
        if let (Some(ns), Some(uid)) = (&pod.metadata.namespace, &pod.metadata.uid)
            && let Some(pods) = self.by_namespace.get_mut(ns)
        {
            pods.remove(uid);
            if pods.is_empty() {
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
        let index = self.watched.read()?;
        let mut pods: Vec<PodState> = index
            .by_namespace
            .get(namespace)
            .into_iter()
            .flat_map(|pods| pods.values())
            .filter(|p| selector.matches(&p.labels))
            .map(|p| p.state.clone())
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Some(pods)
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
                .by_namespace
                .get("n")
                .into_iter()
                .flat_map(|p| p.values())
                .filter(|p| selector.matches(&p.labels))
                .map(|p| p.state.name.clone())
                .collect()
        };
        assert_eq!(names(&index), ["worker-7d9-x2"]);
        index.delete(&pod(serde_json::json!({})));
        assert!(names(&index).is_empty());
        index.delete(&other);
        assert!(index.by_namespace.is_empty());
    }
}
