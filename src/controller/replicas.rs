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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher;

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
    /// Counts as of a write's answer (`revision` is its resourceVersion).
    pub fn written(spec: i32, status: i32, revision: Option<&str>) -> Self {
        Self {
            spec,
            status,
            revision: revision.and_then(|r| r.parse().ok()),
        }
    }
}

/// Where a kind keeps its counts (JSON pointers).
#[derive(Clone, Debug, PartialEq, Eq)]
struct ScalePaths {
    spec: String,
    status: String,
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
        }
    }

    fn counts(&self, obj: &DynamicObject) -> Option<((String, String), Counts)> {
        let read = |p: &str| obj.data.pointer(p).and_then(|v| v.as_i64()).unwrap_or(0) as i32;
        let key = (obj.metadata.namespace.clone()?, obj.metadata.name.clone()?);
        let counts = Counts {
            spec: read(&self.spec),
            status: read(&self.status),
            revision: obj
                .metadata
                .resource_version
                .as_deref()
                .and_then(|r| r.parse().ok()),
        };
        Some((key, counts))
    }
}

#[derive(Default)]
struct Watched {
    /// (namespace, name) -> counts; complete once `synced`.
    objects: RwLock<HashMap<(String, String), Counts>>,
    synced: AtomicBool,
}

/// What the cache knows of one target.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The counts, as of the last event.
    Counts(Counts),
    /// The watch is complete and the object is not there.
    Missing,
}

/// The watches, one per target kind, started on first use.
pub struct ReplicaCache {
    client: kube::Client,
    /// Watch this namespace only (a namespace-scoped controller), or all.
    namespace: Mutex<Option<String>>,
    /// One per kind asked for. A kind that cannot be watched (paths unknown, list refused)
    /// stays here unsynced, so its lookups go to `/scale`.
    kinds: Mutex<HashMap<String, Arc<Watched>>>,
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

    /// The counts of `namespace/name` of kind `ar`, or `None` when the cache cannot say
    /// (read `/scale`). The first lookup of a kind starts its watch.
    pub fn get(&self, ar: &ApiResource, namespace: &str, name: &str) -> Option<Lookup> {
        let watched = {
            let mut kinds = self.kinds.lock().expect("kinds");
            match kinds.get(&ar.api_version_kind()) {
                Some(w) => w.clone(),
                None => {
                    let w = Arc::new(Watched::default());
                    kinds.insert(ar.api_version_kind(), w.clone());
                    self.start(ar.clone(), w.clone());
                    w
                }
            }
        };
        if !watched.synced.load(Ordering::Acquire) {
            return None;
        }
        let objects = watched.objects.read().expect("objects");
        Some(
            objects
                .get(&(namespace.to_owned(), name.to_owned()))
                .map_or(Lookup::Missing, |c| Lookup::Counts(*c)),
        )
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
            insert_newer(
                &mut w.objects.write().expect("objects"),
                (namespace.to_owned(), name.to_owned()),
                counts,
            );
        }
    }

    fn start(&self, ar: ApiResource, watched: Arc<Watched>) {
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
            follow(api, paths, &watched, &key).await;
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

fn insert_newer(objects: &mut HashMap<(String, String), Counts>, key: (String, String), c: Counts) {
    match objects.get(&key) {
        Some(old) if matches!((old.revision, c.revision), (Some(o), Some(n)) if o > n) => {}
        _ => {
            objects.insert(key, c);
        }
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
    })
}

/// Keeps `watched` up to date from the watch until it is refused for good (then reads fall
/// back to `/scale`, since `synced` is cleared).
async fn follow(api: Api<DynamicObject>, paths: ScalePaths, watched: &Watched, kind: &str) {
    let mut events = std::pin::pin!(watcher::watcher(
        api,
        watcher::Config::default().any_semantic()
    ));
    let mut listing: Option<HashMap<(String, String), Counts>> = None;
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing = Some(HashMap::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                if let (Some(l), Some((k, c))) = (listing.as_mut(), paths.counts(&obj)) {
                    l.insert(k, c);
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(l) = listing.take() {
                    *watched.objects.write().expect("objects") = l;
                }
                watched.synced.store(true, Ordering::Release);
            }
            Ok(watcher::Event::Apply(obj)) => {
                if let Some((k, c)) = paths.counts(&obj) {
                    insert_newer(&mut watched.objects.write().expect("objects"), k, c);
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                if let Some((k, _)) = paths.counts(&obj) {
                    watched.objects.write().expect("objects").remove(&k);
                }
            }
            Err(e) => {
                // A refused list will not be granted by retrying: fall back to `/scale`.
                let refused = matches!(
                    &e,
                    watcher::Error::InitialListFailed(kube::Error::Api(s))
                        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                        if s.code == 403 || s.code == 404 || s.code == 405
                );
                watched.synced.store(false, Ordering::Release);
                if refused {
                    tracing::info!(%kind, error = %e, "cannot watch: replicas read from /scale on every poll");
                    return;
                }
                tracing::debug!(%kind, error = %e, "replica watch interrupted; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
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
        };
        let (key, c) = paths.counts(&obj).unwrap();
        assert_eq!(key, ("n".into(), "w".into()));
        assert_eq!((c.spec, c.status, c.revision), (3, 0, Some(42)));
    }

    #[test]
    fn an_older_event_does_not_overwrite_a_newer_write() {
        let mut objects = HashMap::new();
        let key = ("n".to_owned(), "w".to_owned());
        insert_newer(&mut objects, key.clone(), Counts::written(5, 2, Some("10")));
        insert_newer(&mut objects, key.clone(), Counts::written(2, 2, Some("9")));
        assert_eq!(objects[&key].spec, 5);
        insert_newer(&mut objects, key.clone(), Counts::written(4, 5, Some("11")));
        assert_eq!(objects[&key].spec, 4);
    }
}
