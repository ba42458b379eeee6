//! The replica counts of scale targets, kept from a watch instead of a GET of `/scale` on every
//! poll of every target.
//!
//! At 5,000 targets polled every 15 s, that GET alone is over 300 requests per second on the API
//! server, most of them answering "unchanged". A watch per target kind (all namespaces, or the
//! controller's one) costs one list and then one event per change. Only what a decision needs
//! is kept: `spec.replicas` and `status.replicas` at the kind's scale paths, not the objects.
//!
//! A kind is watched when its scale paths are known: the built-in scalable kinds
//! (`.spec.replicas` / `.status.replicas`), or a custom resource whose CRD can be read. Until
//! the first list is complete, and for kinds that cannot be listed (RBAC grants `/scale` but
//! not `list`/`watch` on them) or whose paths are unknown, [`ReplicaCache::get`] answers
//! `None` and the poll reads `/scale` as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;

use super::watched::{Index, Watched};
use crate::api::selector::Selector;

/// The counts of one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// `scale.spec.replicas`.
    pub spec: i32,
    /// `scale.status.replicas`.
    pub status: i32,
    /// The object's resourceVersion as a number (etcd's revision), where it parses: a write's
    /// own answer is not overwritten by an older watch event.
    revision: Option<u64>,
}

impl Counts {
    /// Counts as read (from `/scale` or a write's answer; `revision` is its resourceVersion).
    pub fn new(spec: i32, status: i32, revision: Option<&str>) -> Self {
        Self {
            spec,
            status,
            revision: revision.and_then(|r| r.parse().ok()),
        }
    }

    /// The counts a `/scale` answer gives (a read's, or a write's).
    pub fn of_scale(scale: &k8s_openapi::api::autoscaling::v1::Scale) -> Self {
        Self::new(
            scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            scale.status.as_ref().map_or(0, |s| s.replicas),
            scale.metadata.resource_version.as_deref(),
        )
    }

    /// The resourceVersion the counts were read at, where known: a write made from them is
    /// conditional on it.
    pub fn resource_version(&self) -> Option<String> {
        self.revision.map(|r| r.to_string())
    }
}

/// Where a kind keeps its counts (JSON pointers).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ScalePaths {
    spec: String,
    status: String,
    /// The label selector of the workload's pods: a LabelSelector object (built-in kinds'
    /// `.spec.selector`) or a selector string (a CRD's `labelSelectorPath`).
    selector: Option<String>,
}

impl ScalePaths {
    /// From a CRD's `.spec.replicas`-style path (`specReplicasPath`) to a JSON pointer.
    fn pointer(path: &str) -> String {
        path.trim_start_matches('.')
            .split('.')
            .fold(String::new(), |p, s| p + "/" + s)
    }

    fn standard() -> Self {
        Self {
            spec: "/spec/replicas".into(),
            status: "/status/replicas".into(),
            selector: Some("/spec/selector".into()),
        }
    }

    /// The workload's pod selector, where it can be read and parsed.
    fn selector(&self, obj: &DynamicObject) -> Option<Selector> {
        let value = obj.data.pointer(self.selector.as_deref()?)?;
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            object => label_selector_string(object)?,
        };
        Selector::parse(&text).ok()
    }

    fn counts(&self, obj: &DynamicObject) -> Option<((String, String), Counts)> {
        let read = |p: &str| obj.data.pointer(p).and_then(|v| v.as_i64()).unwrap_or(0) as i32;
        let key = (obj.metadata.namespace.clone()?, obj.metadata.name.clone()?);
        let counts = Counts::new(
            read(&self.spec),
            read(&self.status),
            obj.metadata.resource_version.as_deref(),
        );
        Some((key, counts))
    }
}

/// A LabelSelector object (`matchLabels`, `matchExpressions`) in the string form.
fn label_selector_string(v: &serde_json::Value) -> Option<String> {
    let mut terms: Vec<String> = Vec::new();
    for (k, v) in v
        .get("matchLabels")
        .and_then(|m| m.as_object())
        .into_iter()
        .flatten()
    {
        terms.push(format!("{k}={}", v.as_str()?));
    }
    for e in v
        .get("matchExpressions")
        .and_then(|m| m.as_array())
        .into_iter()
        .flatten()
    {
        let key = e.get("key")?.as_str()?;
        let values = || -> Option<String> {
            let vs: Option<Vec<&str>> = e
                .get("values")?
                .as_array()?
                .iter()
                .map(|v| v.as_str())
                .collect();
            Some(vs?.join(","))
        };
        terms.push(match e.get("operator")?.as_str()? {
            "In" => format!("{key} in ({})", values()?),
            "NotIn" => format!("{key} notin ({})", values()?),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    Some(terms.join(","))
}

/// (namespace, name) -> counts (and pod selector), read at one kind's scale paths.
struct CountsIndex {
    paths: ScalePaths,
    objects: HashMap<(String, String), Counts>,
    selectors: HashMap<(String, String), Arc<Selector>>,
}

impl CountsIndex {
    fn new(paths: ScalePaths) -> Self {
        Self {
            paths,
            objects: HashMap::new(),
            selectors: HashMap::new(),
        }
    }

    /// Inserts unless what is there is newer (by revision).
    fn insert_newer(&mut self, key: (String, String), c: Counts) {
        match self.objects.get(&key) {
            Some(old) if matches!((old.revision, c.revision), (Some(o), Some(n)) if o > n) => {}
            _ => {
                self.objects.insert(key, c);
            }
        }
    }
}

impl Index<DynamicObject> for CountsIndex {
    fn apply(&mut self, obj: DynamicObject) {
        if let Some((k, c)) = self.paths.counts(&obj) {
            match self.paths.selector(&obj) {
                Some(sel) if self.selectors.get(&k).is_none_or(|old| **old != sel) => {
                    self.selectors.insert(k.clone(), Arc::new(sel));
                }
                Some(_) => {}
                None => {
                    self.selectors.remove(&k);
                }
            }
            self.insert_newer(k, c);
        }
    }

    fn delete(&mut self, obj: &DynamicObject) {
        if let Some((k, _)) = self.paths.counts(obj) {
            self.objects.remove(&k);
            self.selectors.remove(&k);
        }
    }
}

type WatchedKind = Watched<CountsIndex>;

/// The watches, one per target kind, started on first use.
pub struct ReplicaCache {
    client: kube::Client,
    /// Watch this namespace only (a namespace-scoped controller), or all.
    namespace: Mutex<Option<String>>,
    /// One per kind asked for. A kind that cannot be watched (paths unknown, list refused)
    /// stays here unsynced, so its lookups go to `/scale`.
    kinds: Mutex<HashMap<String, Arc<WatchedKind>>>,
    /// The watch tasks, stopped with the cache.
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for ReplicaCache {
    fn drop(&mut self) {
        for t in self.tasks.lock().expect("tasks").drain(..) {
            t.abort();
        }
    }
}

impl ReplicaCache {
    /// An empty cache; nothing is watched until asked for.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            namespace: Mutex::default(),
            kinds: Mutex::default(),
            tasks: Mutex::default(),
        }
    }

    /// Limits the watches to one namespace (before the first lookup).
    pub fn restrict_to(&self, namespace: &str) {
        *self.namespace.lock().expect("namespace") = Some(namespace.into());
    }

    /// The counts of `namespace/name` of kind `ar`, or `None` when the cache cannot say (not
    /// watched, not listed yet, or not seen yet: read `/scale`). The first lookup of a kind
    /// starts its watch.
    pub fn get(&self, ar: &ApiResource, namespace: &str, name: &str) -> Option<Counts> {
        let watched = {
            let mut kinds = self.kinds.lock().expect("kinds");
            match kinds.get(&ar.api_version_kind()) {
                Some(w) => w.clone(),
                None => {
                    // Paths are learned by the watch task; its first list replaces this.
                    let w = Arc::new(Watched::new(CountsIndex::new(ScalePaths::standard())));
                    kinds.insert(ar.api_version_kind(), w.clone());
                    self.start(ar.clone(), w.clone());
                    w
                }
            }
        };
        let index = watched.read()?;
        index
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .copied()
    }

    /// The pod selector of `namespace/name` of kind `ar`, when its watch has it.
    pub fn selector(&self, ar: &ApiResource, namespace: &str, name: &str) -> Option<Arc<Selector>> {
        let watched = self
            .kinds
            .lock()
            .expect("kinds")
            .get(&ar.api_version_kind())?
            .clone();
        let index = watched.read()?;
        index
            .selectors
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Records the answer of ebb's own write, so that a poll soon after sees it even if the
    /// watch event is still on its way (an older event does not overwrite it).
    pub fn wrote(&self, ar: &ApiResource, namespace: &str, name: &str, counts: Counts) {
        if let Some(w) = self
            .kinds
            .lock()
            .expect("kinds")
            .get(&ar.api_version_kind())
        {
            w.write()
                .insert_newer((namespace.to_owned(), name.to_owned()), counts);
        }
    }

    fn start(&self, ar: ApiResource, watched: Arc<WatchedKind>) {
        let client = self.client.clone();
        let namespace = self.namespace.lock().expect("namespace").clone();
        let key = ar.api_version_kind();
        let task = tokio::spawn(async move {
            // Unknown paths: never synced, so every lookup reads `/scale`.
            let Some(paths) = scale_paths(&client, &ar).await else {
                tracing::info!(kind = %key, "scale paths unknown: replicas read from /scale on every poll");
                return;
            };
            let api = match &namespace {
                Some(ns) => Api::<DynamicObject>::namespaced_with(client, ns, &ar),
                None => Api::<DynamicObject>::all_with(client, &ar),
            };
            let events = watcher::watcher(api, watcher::Config::default().any_semantic());
            // A refused list will not be granted by retrying: read `/scale` instead.
            let refused = |e: &watcher::Error| {
                matches!(
                    e,
                    watcher::Error::InitialListFailed(kube::Error::Api(s))
                        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                        if s.code == 403 || s.code == 404 || s.code == 405
                )
            };
            watched
                .follow(events, || CountsIndex::new(paths.clone()), refused, &key)
                .await;
        });
        self.tasks.lock().expect("tasks").push(task.abort_handle());
    }
}

trait KindKey {
    fn api_version_kind(&self) -> String;
}

impl KindKey for ApiResource {
    fn api_version_kind(&self) -> String {
        format!("{}/{}", self.api_version, self.kind)
    }
}

/// Where `ar` keeps its counts: standard for the built-in scalable kinds, from the CRD for
/// custom resources; `None` when unknown.
async fn scale_paths(client: &kube::Client, ar: &ApiResource) -> Option<ScalePaths> {
    if ar.group.is_empty() || ar.group == "apps" {
        return Some(ScalePaths::standard());
    }
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = crds
        .get(&format!("{}.{}", ar.plural, ar.group))
        .await
        .ok()?;
    let version = crd.spec.versions.iter().find(|v| v.name == ar.version)?;
    let scale = version.subresources.as_ref()?.scale.as_ref()?;
    Some(ScalePaths {
        spec: ScalePaths::pointer(&scale.spec_replicas_path),
        status: ScalePaths::pointer(&scale.status_replicas_path),
        selector: scale
            .label_selector_path
            .as_deref()
            .map(ScalePaths::pointer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_paths_become_json_pointers() {
        assert_eq!(ScalePaths::pointer(".spec.replicas"), "/spec/replicas");
        assert_eq!(
            ScalePaths::pointer(".spec.workers.count"),
            "/spec/workers/count"
        );
    }

    #[test]
    fn counts_are_read_at_the_kinds_paths_and_missing_reads_zero() {
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "x/v1", "kind": "W",
            "metadata": { "name": "w", "namespace": "n", "resourceVersion": "42" },
            "spec": { "size": 3 }
        }))
        .unwrap();
        let paths = ScalePaths {
            spec: "/spec/size".into(),
            status: "/status/replicas".into(),
            selector: None,
        };
        let (key, c) = paths.counts(&obj).unwrap();
        assert_eq!(key, ("n".into(), "w".into()));
        assert_eq!((c.spec, c.status, c.revision), (3, 0, Some(42)));
    }

    #[test]
    fn a_workload_s_pod_selector_is_read_from_its_label_selector_or_selector_string() {
        let deployment: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "w", "namespace": "n" },
            "spec": { "replicas": 2, "selector": {
                "matchLabels": { "app": "worker" },
                "matchExpressions": [
                    { "key": "tier", "operator": "In", "values": ["a", "b"] },
                    { "key": "canary", "operator": "DoesNotExist" }
                ]
            } }
        }))
        .unwrap();
        let sel = ScalePaths::standard().selector(&deployment).unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert!(sel.matches(&labels(&[("app", "worker"), ("tier", "b")])));
        assert!(!sel.matches(&labels(&[("app", "worker"), ("tier", "c")])));
        assert!(!sel.matches(&labels(&[
            ("app", "worker"),
            ("tier", "a"),
            ("canary", "1")
        ])));
        let custom: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "x/v1", "kind": "W",
            "metadata": { "name": "w", "namespace": "n" },
            "status": { "selector": "app=queue-worker" }
        }))
        .unwrap();
        let paths = ScalePaths {
            spec: "/spec/size".into(),
            status: "/status/replicas".into(),
            selector: Some(ScalePaths::pointer(".status.selector")),
        };
        let sel = paths.selector(&custom).unwrap();
        assert!(sel.matches(&labels(&[("app", "queue-worker")])));
    }

    #[test]
    fn an_older_event_does_not_overwrite_a_newer_write() {
        let mut index = CountsIndex::new(ScalePaths::standard());
        let key = ("n".to_owned(), "w".to_owned());
        index.insert_newer(key.clone(), Counts::new(5, 2, Some("10")));
        index.insert_newer(key.clone(), Counts::new(2, 2, Some("9")));
        assert_eq!(index.objects[&key].spec, 5);
        index.insert_newer(key.clone(), Counts::new(4, 5, Some("11")));
        assert_eq!(index.objects[&key].spec, 4);
    }
}
