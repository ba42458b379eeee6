//! The ScaledTarget controller (kube-runtime): where ebb acts.
//!
//! Every replica watches ScaledTargets and reads their metrics on each poll (the values feed
//! the external metrics API everywhere); only the replica holding the Lease ([`leader`]) writes:
//! the owned HPA (mode Hpa), `/scale` (mode Direct), status, Events and escalations.
//!
//! One poll of one target ([`reconcile`]) is observe -> step -> act: read the metrics through
//! [`MetricReader`] and feed them to the target's decision machine
//! ([`crate::engine::target::TargetMachine`], which decides everything: scaling, learning,
//! fallback, pause, escalation, the next wake-up); take its step at the poll's one clock
//! reading; carry out the step's intents (the owned HPA, `/scale`, Events, escalations: [`Act`])
//! and write status; requeue when the machine wants its next step.

mod backfill;
pub mod errors;
pub mod escalation;
pub mod events;
pub mod hpa;
pub mod hpa_index;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod reader;
pub(crate) mod recovery;
pub mod replicas;
pub mod stats;
mod status;
mod watched;
pub mod writer;

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::{EventSeries, Notice};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::crd::{
    Metric, MetricStatus, PAUSED_REPLICAS_ANNOTATION, ScaledTarget, ScaledTargetStatus, TargetType,
    from_milli,
};
use crate::engine::conditions as cond;
use crate::engine::drain::QueueSignals;
use crate::engine::hpa::Replicas;
use crate::engine::learning::{Change, MetricLearned};
use crate::engine::target::{
    Action as StepAction, Inputs, Mode as TargetMode, Observed, Pause, Step, TargetMachine,
    TargetSpec,
};
use escalation::{EscalationPayload, EscalationQueue, EscalationReason};
use leader::Leadership;
use metrics::{ControllerMetrics, TargetSeries};
pub use reader::{CollectReader, MetricReader, ReadError};
use stats::ControllerStats;
use status::{Conditions, condition};

/// Errors of the controller layer.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The target's kind is not served by the API server.
    #[error("cannot resolve {0}: {1}")]
    UnknownKind(String, kube::Error),
    /// The escalation webhook could not be called.
    #[error("escalation: {0}")]
    Escalation(String),
    /// The lease was lost between the decision and a write: the new leader decides again.
    #[error("the lease was lost before the write; the leader acts")]
    LeaseLost,
    /// The target's kind has no `/scale` subresource.
    #[error("{0} has no /scale subresource")]
    NoScale(String),
    /// The workload's count changed after the decision read it (another writer, or a view
    /// that was behind): the write was refused, and the next poll decides again from the count
    /// there is.
    #[error("the count is {found}, not the {read} the decision started from")]
    CountChanged { read: i32, found: i32 },
}

/// Checked right before each write that acts (`/scale`, the owned HPA): a replica that lost
/// the lease since its decision leaves the action to the new leader.
fn lease_held(ctx: &Context) -> Result<()> {
    if ctx.leadership.is_leader() {
        Ok(())
    } else {
        Err(ControllerError::LeaseLost)
    }
}

/// The controller layer's result.
pub type Result<T, E = ControllerError> = std::result::Result<T, E>;

/// Polls in flight at once. Each holds an API connection and buffers; unbounded, thousands of
/// targets due together open thousands of connections (hundreds of MiB). At a few ms per poll
/// this still runs thousands of polls per second.
pub const MAX_CONCURRENT_POLLS: u16 = 64;

/// Field manager for ebb's writes.
pub const FIELD_MANAGER: &str = "ebb";

/// What one poll remembers about a target between polls.
#[derive(Default)]
struct TargetState {
    /// The object's uid: a recreated ScaledTarget starts afresh.
    uid: Box<str>,
    /// The machine's view of the object, kept while its generation and pause are the same.
    spec: Option<Arc<TargetSpec>>,
    /// Every decision about the target (`engine::target`).
    machine: TargetMachine,
    /// When the next poll is due, and what it was scheduled for (see [`Schedule`]).
    scheduled: Option<Schedule>,
    /// The target's Prometheus series, while this replica leads (removed when dropped).
    series: Option<TargetSeries>,
    /// What this replica last applied to the owned HPA (mode Hpa).
    hpa_applied: Option<AppliedHpa>,
    /// The last status this replica queued, while it leads. Writes are deferred
    /// ([`writer`]), so the object may not show it yet; the next status builds on it. Shared
    /// with the writer until written (one copy, not two: at 5,000 targets a first round of
    /// statuses waiting for the writer is 7 MB a copy). Behind a pointer: most of the time
    /// there is none, and a state is allocated by size class (inline, the status made a state
    /// 1,048 bytes, allocated as 1,280; boxed, 888 in the 896 class).
    status: Option<Arc<ScaledTargetStatus>>,
    /// The object's status as the watch last showed it; the watch's store keeps the object
    /// without it ([`Context::saw_status`]).
    object_status: Option<StoredStatus>,
}

/// A status kept as snappy-compressed JSON. The ScaledTarget watch's store keeps every
/// object, and a status was most of one (a stored object was about 2.8 KB at 5,000 targets in
/// a heap profile; the status's five conditions and the metric's readings, by their sizes,
/// about 1.8 KB of it); a poll reads it back once, a generation change once more.
struct StoredStatus(Box<[u8]>);

impl StoredStatus {
    fn of_json(json: &[u8]) -> Self {
        // Snappy refuses only inputs beyond 4 GiB; etcd holds no object above 1.5 MiB.
        let compressed = snap::raw::Encoder::new()
            .compress_vec(json)
            .expect("a status is far below snappy's input limit");
        Self(compressed.into_boxed_slice())
    }

    fn status(&self) -> Option<ScaledTargetStatus> {
        let json = snap::raw::Decoder::new().decompress_vec(&self.0).ok()?;
        serde_json::from_slice(&json).ok()
    }
}

impl TargetState {
    /// Queues `status` as the last one written (see [`TargetState::status`]).
    fn queue_status(&mut self, status: Arc<ScaledTargetStatus>) {
        self.status = Some(status);
    }

    /// What the status says now: the last one this replica queued, else the object's.
    fn last_status(&self) -> Option<ScaledTargetStatus> {
        match &self.status {
            Some(queued) => Some((**queued).clone()),
            None => self.object_status.as_ref()?.status(),
        }
    }
}

/// The state of `st`, started afresh when the object was recreated (another uid).
fn state_for<'a>(
    targets: &'a mut HashMap<String, Box<TargetState>>,
    st: &ScaledTarget,
) -> &'a mut TargetState {
    let t = targets.entry(key(st)).or_default();
    let uid = st.metadata.uid.as_deref().unwrap_or_default();
    if *t.uid != *uid {
        **t = TargetState {
            uid: uid.into(),
            // Same namespace and name, same series (a first poll lands here too).
            series: t.series.take(),
            ..Default::default()
        };
    }
    t
}

/// The next regular poll of a target and the object it was scheduled for. A wake-up before it
/// with the same object (our own status write, an unrelated edit) does no work.
#[derive(Clone, PartialEq)]
struct Schedule {
    due: std::time::Instant,
    uid: Option<String>,
    generation: Option<i64>,
    paused: Option<Pause>,
}

/// An apply of the owned HPA: it is applied again only when what ebb wants changed, when its
/// spec is no longer what the apply left (a hand edit; HPAs have no `generation` to tell), or
/// when it is gone.
#[derive(Clone, Copy, PartialEq)]
struct AppliedHpa {
    /// Hash of the desired HPA as applied.
    desired: u64,
    /// Hash of the spec the apply returned (defaults filled in by the API server).
    spec: u64,
}

/// A hash of `value`'s JSON form.
pub(crate) fn json_hash(value: &impl serde::Serialize) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(value).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// Shared state of the controller.
pub struct Context {
    /// Kubernetes client.
    pub client: kube::Client,
    /// Events and status writes, off the path of the next decision.
    pub writer: writer::Writer,
    /// Who records the audit trail's Events (one per action, never folded).
    reporter: Reporter,
    /// Where metric values come from.
    pub reader: Arc<dyn MetricReader>,
    /// Whether this replica may act.
    pub leadership: Leadership,
    /// Boxed: a state is over a kilobyte, and a map keeps an eighth of its slots and more
    /// empty (a half after it grows), as large as a full one.
    targets: Mutex<HashMap<String, Box<TargetState>>>,
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
    /// Replica counts of the scale targets, from watches.
    replicas: replicas::ReplicaCache,
    /// The HPAs in the controller's scope (mode Hpa), from a watch started by the run.
    hpas: std::sync::OnceLock<hpa_index::HpaIndex>,
    /// The workloads' pods (stalled scale-ups, the learned startup delay).
    pods: std::sync::OnceLock<pods::PodCache>,
    /// Escalations, delivered by a worker of their own.
    escalations: EscalationQueue,
    /// Counters of the controller's work.
    pub stats: Arc<ControllerStats>,
    metrics: ControllerMetrics,
    /// Where every replica publishes readings for the external metrics API (mode Hpa), and
    /// the API's readiness, which the watch and the first readings decide.
    store: std::sync::OnceLock<(
        Arc<crate::api::store::MetricStore>,
        Arc<crate::api::Readiness>,
    )>,
    /// Bounds the adaptive backfills running at once.
    backfills: Arc<tokio::sync::Semaphore>,
    /// Transient failures in a row per target, for the backoff ([`errors`]).
    failures: errors::Failures,
}

impl Context {
    /// A context for one controller process; `identity` names this replica in Events.
    pub fn new(
        client: kube::Client,
        reader: Arc<dyn MetricReader>,
        leadership: Leadership,
        identity: &str,
    ) -> Arc<Self> {
        Self::with_metrics(
            client,
            reader,
            leadership,
            identity,
            Default::default(),
            Default::default(),
        )
    }

    /// As [`Context::new`], recording into `metrics` (registered by the caller), reading the
    /// escalation webhooks' Secrets within `secret_access` (the reader has its own).
    pub fn with_metrics(
        client: kube::Client,
        reader: Arc<dyn MetricReader>,
        leadership: Leadership,
        identity: &str,
        metrics: ControllerMetrics,
        secret_access: crate::source::SecretAccess,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "ebb".into(),
            instance: Some(identity.into()),
        };
        let events = Arc::new(EventSeries::new(client.clone(), reporter.clone()));
        let escalations = EscalationQueue::start(
            crate::source::Secrets::new(client.clone(), secret_access),
            events.clone(),
            leadership.clone(),
            metrics.clone(),
        );
        Arc::new(Self {
            writer: writer::Writer::start(
                client.clone(),
                events,
                metrics.stats.clone(),
                leadership.clone(),
            ),
            reporter,
            replicas: replicas::ReplicaCache::new(client.clone()),
            hpas: std::sync::OnceLock::new(),
            pods: std::sync::OnceLock::new(),
            client,
            reader,
            leadership,
            targets: Mutex::default(),
            kinds: Mutex::default(),
            escalations,
            stats: metrics.stats.clone(),
            metrics,
            store: std::sync::OnceLock::new(),
            backfills: Arc::new(tokio::sync::Semaphore::new(
                backfill::MAX_CONCURRENT_BACKFILLS,
            )),
            failures: Default::default(),
        })
    }

    /// The target's series, created (or brought up to its spec) on first use.
    fn series<'a>(&self, t: &'a mut TargetState, st: &ScaledTarget) -> &'a mut TargetSeries {
        let series = t
            .series
            .get_or_insert_with(|| TargetSeries::new(&self.metrics, st));
        series.sync(st);
        series
    }

    /// Counts a replica change of `st` in its series.
    fn count_action(&self, st: &ScaledTarget, from: i32, to: i32) {
        let mut targets = self.targets.lock().expect("targets");
        let t = targets.entry(key(st)).or_default();
        self.series(t, st).scaled(from, to);
    }

    /// Lets `target`'s next wake-up poll it, whatever its backoff said
    /// ([`recovery`]: the API server answers again after an outage).
    fn resume(&self, key: &str) {
        if let Some(t) = self.targets.lock().expect("targets").get_mut(key) {
            t.scheduled = None;
        }
    }

    /// Drops what is kept for a ScaledTarget that is gone: its state (and with it its series)
    /// and the values the external metrics API serves for it.
    fn forget(&self, namespace: &str, name: &str) {
        let key = format!("{namespace}/{name}");
        self.targets.lock().expect("targets").remove(&key);
        self.writer.forget(&key);
        self.failures.clear(&key);
        if let Some((store, readiness)) = self.store.get() {
            store.remove(namespace, name);
            readiness.gone(&key);
        }
    }

    /// Publishes every reading into `store` from now on (the API server serves from it), and
    /// tells `readiness` what the ScaledTarget watch lists and which targets have been read.
    pub fn publish_to(
        &self,
        store: Arc<crate::api::store::MetricStore>,
        readiness: Arc<crate::api::Readiness>,
    ) {
        let _ = self.store.set((store, readiness));
    }

    /// Follows the ScaledTarget watch for the API's readiness: the initial list, and targets
    /// that appear or go before every known one has been read.
    fn watched(&self, event: &watcher::Event<ScaledTarget>) {
        let Some((_, readiness)) = self.store.get() else {
            return;
        };
        if readiness.is_ready() {
            return;
        }
        let deleting = |st: &ScaledTarget| st.metadata.deletion_timestamp.is_some();
        match event {
            watcher::Event::Init => readiness.list_started(),
            watcher::Event::InitApply(st) if !deleting(st) => readiness.listed(&key(st)),
            watcher::Event::InitDone => readiness.list_done(),
            watcher::Event::Apply(st) if !deleting(st) => readiness.seen(&key(st)),
            watcher::Event::InitApply(st)
            | watcher::Event::Apply(st)
            | watcher::Event::Delete(st) => readiness.gone(&key(st)),
        }
    }

    /// The target's `/scale` API and its current counts: from the replica watch where it has
    /// them, else read from `/scale`.
    async fn scale_of(&self, st: &ScaledTarget) -> Result<(ScaleApi, replicas::Counts)> {
        let api = self.scale_api(st).await?;
        let ns = st.namespace().unwrap_or_default();
        let name = &st.spec.target_ref.name;
        if let Some(c) = self.replicas.get(&api.kind, &ns, name) {
            self.stats.cached_scale_reads.fetch_add(1, Relaxed);
            return Ok((api, c));
        }
        // Not watched, not listed yet, or not seen yet (a target created a moment ago).
        self.stats.requests(1);
        let counts = replicas::Counts::of_scale(&api.api.get_scale(name).await?);
        Ok((api, counts))
    }

    /// The machine's view of `st`, built again only when its generation or pause changed.
    fn spec_of(&self, st: &ScaledTarget) -> Arc<TargetSpec> {
        let mut targets = self.targets.lock().expect("targets");
        let t = state_for(&mut targets, st);
        let pause = st.pause();
        let generation = st.metadata.generation;
        match &t.spec {
            Some(spec)
                if generation.is_some()
                    && spec.revision.as_ref().map(|r| r.1) == generation
                    && spec.pause == pause =>
            {
                spec.clone()
            }
            _ => {
                let spec = Arc::new(st.machine_spec_with(t.last_status().as_ref()));
                t.spec = Some(spec.clone());
                spec
            }
        }
    }

    /// How long to wait when a wake-up comes before the target's next poll is due for the
    /// same object (our own status write, an unrelated edit): such a wake-up does no work.
    /// Records the poll's lag otherwise.
    fn not_due(
        &self,
        st: &ScaledTarget,
        paused: Option<Pause>,
        started: std::time::Instant,
    ) -> Option<Duration> {
        let targets = self.targets.lock().expect("targets");
        let s = targets.get(&key(st)).and_then(|t| t.scheduled.as_ref())?;
        let same_object = s.uid == st.metadata.uid
            && s.generation == st.metadata.generation
            && s.paused == paused;
        if started < s.due && same_object {
            return Some(s.due - started);
        }
        if started >= s.due {
            self.stats.record_lag(started - s.due);
        }
        None
    }

    /// Schedules the next poll of `st` `after` the poll that started at `started` (wall time
    /// `now`): a regular poll moves to the target's own slot ([`regular_wait`]); the machine
    /// may ask sooner.
    fn schedule(
        &self,
        st: &ScaledTarget,
        paused: Option<Pause>,
        started: std::time::Instant,
        now: Timestamp,
        after: Duration,
    ) -> Action {
        let interval = st.spec.polling_interval();
        let after = if after >= interval {
            let wall = Duration::from_millis(now.as_millisecond().max(0) as u64);
            regular_wait(
                interval,
                st.metadata.uid.as_deref().unwrap_or_default(),
                wall,
            )
        } else {
            after
        };
        self.failures.clear(&key(st));
        let mut targets = self.targets.lock().expect("targets");
        targets.entry(key(st)).or_default().scheduled = Some(Schedule {
            due: started + after,
            uid: st.metadata.uid.clone(),
            generation: st.metadata.generation,
            paused,
        });
        Action::requeue(after.saturating_sub(started.elapsed()))
    }

    /// The pods of `st`'s workload, when the pod watch and the workload's selector say.
    fn workload_pods(
        &self,
        st: &ScaledTarget,
        api: &ScaleApi,
    ) -> Option<Vec<crate::engine::stall::PodState>> {
        let ns = st.namespace().unwrap_or_default();
        let selector = self
            .replicas
            .selector(&api.kind, &ns, &st.spec.target_ref.name)?;
        self.pods.get()?.pods_of(&ns, &selector)
    }

    async fn scale_api(&self, st: &ScaledTarget) -> Result<ScaleApi> {
        let t = &st.spec.target_ref;
        let key = (t.api_version.clone(), t.kind.clone());
        let cached = self.kinds.lock().expect("kinds").get(&key).cloned();
        let ar = match cached {
            Some(ar) => ar,
            None => {
                let (group, version) = t
                    .api_version
                    .rsplit_once('/')
                    .unwrap_or(("", &t.api_version));
                let gvk = GroupVersionKind::gvk(group, version, &t.kind);
                self.stats.requests(1);
                let (ar, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
                    .await
                    .map_err(|e| {
                        ControllerError::UnknownKind(format!("{}/{}", t.api_version, t.kind), e)
                    })?;
                if !caps
                    .subresources
                    .iter()
                    .any(|(sub, _)| sub.plural == "scale")
                {
                    return Err(ControllerError::NoScale(format!(
                        "{}/{}",
                        t.api_version, t.kind
                    )));
                }
                self.kinds.lock().expect("kinds").insert(key, ar.clone());
                ar
            }
        };
        let ns = st.namespace().unwrap_or_default();
        Ok(ScaleApi {
            api: Api::namespaced_with(self.client.clone(), &ns, &ar),
            kind: ar,
        })
    }
}

/// A target's API (for `/scale`) and its kind.
struct ScaleApi {
    api: Api<DynamicObject>,
    kind: ApiResource,
}

/// Runs the controller over all namespaces until the stream of ScaledTargets ends.
pub async fn run(ctx: Arc<Context>) {
    let sts = Api::<ScaledTarget>::all(ctx.client.clone());
    run_on(sts, ctx, None).await
}

/// Where `kubectl apply` (client-side) keeps the object it last applied.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Runs the controller over one namespace (tests, namespace-scoped installs).
pub async fn run_namespaced(ctx: Arc<Context>, namespace: &str) {
    ctx.replicas.restrict_to(namespace);
    let sts = Api::<ScaledTarget>::namespaced(ctx.client.clone(), namespace);
    run_on(sts, ctx, Some(namespace)).await
}

async fn run_on(sts: Api<ScaledTarget>, ctx: Arc<Context>, namespace: Option<&str>) {
    use kube::runtime::controller::Error;
    let _ = ctx
        .hpas
        .set(hpa_index::HpaIndex::start(ctx.client.clone(), namespace));
    let _ = ctx
        .pods
        .set(pods::PodCache::start(ctx.client.clone(), namespace));
    // The ScaledTargets are kept without their managed fields (about a third of a stored object
    // once ebb has written status), the largest share of the controller's memory at scale, and
    // without kubectl's copy of the last applied object (`kubectl apply` without
    // `--server-side` keeps the whole spec again in an annotation), with their lists no
    // longer than they are, and without their status (kept compressed in the target's state).
    // `for_stream` is kube-runtime's `unstable-runtime` API.
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = watcher(sts, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|st| {
            st.managed_fields_mut().clear();
            st.annotations_mut().remove(LAST_APPLIED_ANNOTATION);
            st.shrink_to_fit();
        })
        // The status goes to the target's state (`Context::saw_status`); a deleted object's
        // is dropped with it.
        .map_ok({
            let ctx = ctx.clone();
            move |mut event| {
                match &mut event {
                    watcher::Event::Apply(st) | watcher::Event::InitApply(st) => ctx.saw_status(st),
                    watcher::Event::Delete(st) => st.status = None,
                    watcher::Event::Init | watcher::Event::InitDone => {}
                }
                event
            }
        })
        .inspect_ok({
            let ctx = ctx.clone();
            move |event| ctx.watched(event)
        })
        .reflect(writer)
        .touched_objects();
    Controller::for_stream(objects, reader)
        .reconcile_on(recovery::resumed(ctx.clone()))
        .with_config(kube::runtime::controller::Config::default().concurrency(MAX_CONCURRENT_POLLS))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            let ctx = ctx.clone();
            async move {
                match result {
                    // Deletions do not trigger a poll; the deleted target's next scheduled
                    // poll finds it gone. Forget its state, and with it its series.
                    Err(Error::ObjectNotFound(obj)) => {
                        ctx.forget(&obj.namespace.unwrap_or_default(), &obj.name);
                    }
                    Err(e) => tracing::debug!(error = %e, "reconcile stream"),
                    Ok(_) => {}
                }
            }
        })
        .await;
}

/// Transient errors back off per target; permanent ones say what to fix and wait ([`errors`]).
pub fn error_policy(st: Arc<ScaledTarget>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    errors::error_policy(st, error, ctx)
}

/// The wait from a poll that started at `started` (since the epoch) to the next regular one:
/// the target's own slot, which lies `fnv1a(uid) mod interval` past each multiple of the
/// interval on the wall clock, at most one interval away (never later than a plain interval,
/// so a change is still seen within one interval; moving onto the slot costs at most one
/// early poll).
///
/// Targets created or edited together (an install, a mode change across many, a restart) would
/// otherwise poll in phase for ever and, when their load moves together, act in one wave that
/// the API server must absorb at once. Slots from the uid spread them evenly over the interval
/// and keep them there across restarts and leader changes (every replica computes the same).
fn regular_wait(interval: Duration, uid: &str, started: Duration) -> Duration {
    let period = interval.as_millis().max(1) as u64;
    let slot = uid.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) % period;
    let nominal = started.as_millis() as u64 + period;
    // Distance from the nominal time back to the slot before it, in [0, period).
    let past = (nominal + period - slot) % period;
    Duration::from_millis(period - past)
}

fn key(st: &ScaledTarget) -> String {
    format!("{}/{}", st.namespace().unwrap_or_default(), st.name_any())
}

/// One metric's reading, kept for the decision and the status.
struct Reading {
    value: Result<f64, ReadError>,
}

impl Reading {
    /// The reading as the engine takes it: a finite value or why there is none.
    fn engine(&self) -> crate::engine::target::Reading {
        match &self.value {
            Ok(v) if v.is_finite() => Ok(*v),
            Ok(_) => Err(crate::engine::NoData::SourceFailed),
            Err(e) => Err(e.no_data()),
        }
    }
}

/// A formula's value over the poll's readings, or why it has none (naming the input).
fn formula_reading(
    st: &ScaledTarget,
    formula: &std::result::Result<crate::engine::formula::Formula, String>,
    readings: &[Reading],
    values: &[crate::engine::target::Reading],
) -> Reading {
    use crate::engine::formula::NoValue;
    let value = match formula {
        Err(e) => Err(ReadError::Config(format!("formula: {e}"))),
        Ok(f) => f.evaluate(values).map_err(|e| {
            ReadError::Formula(match e {
                NoValue::Input(i, _) => {
                    let name = st.spec.metrics.get(i).map_or("-", |m| m.name.as_str());
                    match readings.get(i).map(|r| &r.value) {
                        Some(Err(e)) => format!("input {name} has none: {e}"),
                        _ => format!("input {name} is not a number"),
                    }
                }
                NoValue::NotFinite => {
                    "the result is not a finite number (a division by zero?)".into()
                }
            })
        }),
    };
    Reading { value }
}

/// Publishes one poll's values for the external metrics API, stamped with the poll's time. A
/// failed reading is published as a failure, which the API answers with an error: never as 0.
/// `served` holds, where the machine stepped in mode Hpa, the values to serve instead of the
/// readings (raised to the forecast; in fallback, values that hold the count).
fn publish_readings(
    (store, readiness): &(
        Arc<crate::api::store::MetricStore>,
        Arc<crate::api::Readiness>,
    ),
    st: &ScaledTarget,
    readings: &[Reading],
    served: &[crate::engine::target::Reading],
    at: Timestamp,
    interval: Duration,
) {
    use crate::api::store::{MetricValue, Sample};
    let ns = st.namespace().unwrap_or_default();
    let name = st.name_any();
    let timestamp = chrono::DateTime::from_timestamp_millis(at.as_millisecond())
        .unwrap_or_else(chrono::Utc::now);
    for ((metric, decided), reading) in st.spec.shown_metrics().zip(readings) {
        let value = match (decided.and_then(|i| served.get(i)), &reading.value) {
            (Some(Ok(v)), _) => MetricValue::Milli(to_milli(*v)),
            (_, Ok(v)) if v.is_finite() => MetricValue::Milli(to_milli(*v)),
            (_, Ok(v)) => MetricValue::Failed(format!("value {v} is not a number")),
            (_, Err(e)) => MetricValue::Failed(e.to_string()),
        };
        store.publish(
            &ns,
            &metric.name,
            &name,
            Sample {
                labels: Default::default(),
                value,
                timestamp,
                window_seconds: Some(interval.as_secs() as i64),
            },
        );
    }
    readiness.read(&key(st));
}

/// One poll of one ScaledTarget: observe (read the metrics), step (the machine decides), act
/// (the leader carries out the step's intents), report (status).
pub async fn reconcile(st: Arc<ScaledTarget>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let interval = st.spec.polling_interval();
    if st.metadata.deletion_timestamp.is_some() {
        ctx.forget(&st.namespace().unwrap_or_default(), &st.name_any());
        return Ok(Action::await_change());
    }
    let spec = ctx.spec_of(&st);
    if let Some(wait) = ctx.not_due(&st, spec.pause, started) {
        return Ok(Action::requeue(wait));
    }
    ctx.stats.polls.fetch_add(1, Relaxed);
    // The one clock read of this poll: the machine's time, the readings' and status's stamps.
    let now = Timestamp::now();
    let requeue = |after: Duration| ctx.schedule(&st, spec.pause, started, now, after);
    let leader = ctx.leadership.is_leader();
    // Mode Hpa steps on every replica: each serves the values the HPA reads.
    let steps = leader || spec.mode == TargetMode::Hpa;

    let Polled {
        mut readings,
        slo,
        queues,
        scale,
    } = observe_inputs(&ctx, &st, interval, steps).await;
    let counts = scale
        .as_ref()
        .and_then(|s| s.as_ref().ok())
        .map(|(_, c)| *c);
    let values: Vec<_> = readings.iter().map(Reading::engine).collect();
    let workload_pods = scale
        .as_ref()
        .and_then(|s| s.as_ref().ok())
        .and_then(|(api, _)| ctx.workload_pods(&st, api));
    if let Some(formula) = &spec.formula {
        // Shown and served after its inputs; the machine computes it again from `values`.
        readings.push(formula_reading(&st, formula, &readings, &values));
    }
    let inputs = Inputs {
        readings: &values,
        slo: slo.as_deref().unwrap_or_default(),
        queues: &queues,
        pods: counts.map(|c| c.status),
        // The pod watch knows which pods are Ready; `/scale` only which exist.
        ready: workload_pods
            .as_deref()
            .map(|pods| {
                let ready = pods
                    .iter()
                    .filter(|p| p.ready_since.is_some() && !p.terminating);
                ready.count() as i32
            })
            .or(counts.map(|c| c.status)),
        workload_pods: workload_pods.as_deref(),
    };
    let (observed, step) = ctx.step(&st, &spec, now, inputs, counts, steps);
    for job in observed.backfills {
        backfill::spawn(&ctx, &st, job);
    }
    if let Some(store) = ctx.store.get() {
        let served = step.as_ref().map_or(&[][..], |s| &s.served[..]);
        publish_readings(store, &st, &readings, served, now, interval);
    }
    if !leader {
        ctx.standing_by(&st);
        return Ok(requeue(interval));
    }

    let (api, counts) = scale.expect("the leader reads the scale")?;
    let step = step.expect("the leader steps once the scale is read");
    let act = Act {
        st: &st,
        ctx: &ctx,
        spec: &spec,
        step: &step,
        now,
    };
    act.learned_changed(&observed.changes).await;
    let previous = ctx.last_status(&st);
    let mut conditions = Conditions::from_status(previous.as_ref());
    for c in &step.conditions {
        conditions.set(condition(c.type_, c.status, &c.reason, &c.message));
    }
    conditions.set(sources_condition(&st, &readings));
    let mut status = ScaledTargetStatus {
        metrics: metric_statuses(&st, &readings, &ctx.machine_views(&st), &now),
        observed_generation: st.metadata.generation,
        learned: ctx
            .learned_startup(&st)
            .map(|(delay, starts)| crate::crd::WorkloadLearned {
                startup_delay_seconds: delay as f64 / 1000.0,
                basis: format!(
                    "{} quantile of the last {starts} pod starts (created -> Ready)",
                    crate::engine::stall::STARTUP_QUANTILE
                ),
            }),
        last_scale_time: previous.as_ref().and_then(|s| s.last_scale_time.clone()),
        current_replicas: Some(counts.spec),
        desired_replicas: Some(step.desired),
        ..Default::default()
    };
    match spec.mode {
        TargetMode::Hpa => act.hpa(&api, counts, &mut conditions, &mut status).await?,
        TargetMode::Direct | TargetMode::Shadow => act.scale(&api, counts, &mut status).await?,
    }
    if let Some(stall) = &step.stalled {
        act.stalled(stall).await;
    }
    for e in &step.escalations {
        act.escalate(e);
    }
    status.conditions = conditions.into_vec();
    ctx.report(&st, &readings, previous.as_ref(), status).await;

    let next = step.next_wake.map_or(interval, |at| {
        Duration::from_millis((at - now.as_millisecond()).max(1000) as u64)
    });
    Ok(requeue(next))
}

impl Context {
    /// Observe and step the target's machine under one lock (stepping only when `steps` and
    /// the counts were read).
    fn step(
        &self,
        st: &ScaledTarget,
        spec: &TargetSpec,
        now: Timestamp,
        inputs: Inputs<'_>,
        counts: Option<replicas::Counts>,
        steps: bool,
    ) -> (Observed, Option<Step>) {
        let now = now.as_millisecond();
        let mut targets = self.targets.lock().expect("targets");
        let t = state_for(&mut targets, st);
        let observed = t.machine.observe(now, spec, inputs);
        let step = match (steps, counts) {
            (true, Some(c)) => Some(t.machine.step(now, spec, replicas_of(c))),
            _ => None,
        };
        (observed, step)
    }

    /// A standby's poll ends here: only the leader's decisions are exported, so it drops
    /// what it had.
    fn standing_by(&self, st: &ScaledTarget) {
        if let Some(t) = self.targets.lock().expect("targets").get_mut(&key(st)) {
            t.series = None;
            t.status = None;
            t.machine.stand_by();
        }
    }

    /// What the status says now: the last one this replica queued, else the object's.
    fn last_status(&self, st: &ScaledTarget) -> Option<ScaledTargetStatus> {
        let targets = self.targets.lock().expect("targets");
        targets
            .get(&key(st))
            .filter(|t| Some(&*t.uid) == st.metadata.uid.as_deref())
            .and_then(|t| t.last_status())
    }

    /// Takes the status out of a watched object, for the target's state to keep compressed
    /// (the watch's store then keeps the object without it). Once the object shows the status
    /// this replica queued (the write landed: the same JSON), only the object's copy is kept.
    fn saw_status(&self, st: &mut ScaledTarget) {
        let Some(status) = st.status.take() else {
            return;
        };
        let Ok(json) = serde_json::to_vec(&status) else {
            return;
        };
        let mut targets = self.targets.lock().expect("targets");
        let t = state_for(&mut targets, st);
        // The same JSON is what an object read back shows of a write (times to the second);
        // both sides are the same type, so their fields serialize in the same order.
        if t.status
            .as_ref()
            .is_some_and(|queued| serde_json::to_vec(&**queued).is_ok_and(|q| q == json))
        {
            t.status = None;
        }
        t.object_status = Some(StoredStatus::of_json(&json));
    }

    /// The startup delay the machine learned from the workload's pods, and on how many starts.
    fn learned_startup(&self, st: &ScaledTarget) -> Option<(i64, usize)> {
        let targets = self.targets.lock().expect("targets");
        targets.get(&key(st))?.machine.learned_startup_delay()
    }

    /// What the machine knows of each metric, in the spec's order.
    fn machine_views(&self, st: &ScaledTarget) -> Vec<MachineView> {
        let targets = self.targets.lock().expect("targets");
        let t = targets.get(&key(st));
        (0..st.spec.decided_metrics().len())
            .map(|i| MachineView {
                learned: t.and_then(|t| t.machine.learned(i)),
                throughput: t.and_then(|t| t.machine.throughput(i)),
                value: t.and_then(|t| t.machine.value(i)),
            })
            .collect()
    }

    /// The poll's report: the exported series, and the status when it is worth a write
    /// (decisions never read status back; the writer retries a failed write a few times).
    async fn report(
        &self,
        st: &ScaledTarget,
        readings: &[Reading],
        previous: Option<&ScaledTargetStatus>,
        status: ScaledTargetStatus,
    ) {
        {
            let mut targets = self.targets.lock().expect("targets");
            let t = targets.entry(key(st)).or_default();
            let values = readings.iter().map(|r| r.value.as_ref().ok().copied());
            self.series(t, st).observe(values, &status);
        }
        if status::worth_writing(previous, &status) {
            let status = Arc::new(status);
            state_for(&mut self.targets.lock().expect("targets"), st).queue_status(status.clone());
            self.writer.write_status(st, status).await;
        }
    }
}

/// The replica counts as the engine takes them. `/scale` has no ready count; the pods that
/// exist stand in (Value targets only).
fn replicas_of(c: replicas::Counts) -> Replicas {
    Replicas {
        spec: c.spec,
        status: c.status,
        ready: c.status,
    }
}

/// The SLO signals (index-aligned with `spec.metrics`), read only while learning is on and
/// some metric has an `slo`.
type SloSignals = Option<Vec<Option<f64>>>;

/// What a poll read.
struct Polled {
    /// The metrics' readings (a DrainTime metric's backlog).
    readings: Vec<Reading>,
    slo: SloSignals,
    /// DrainTime metrics: the queue's rates and waiting messages.
    queues: Vec<Option<QueueSignals>>,
    /// When the machine steps (or learns from pods): the workload's `/scale` and counts.
    scale: Option<Result<(ScaleApi, replicas::Counts)>>,
}

/// What a poll observes, read concurrently: the metric readings, the SLO signals, the queue
/// signals of DrainTime metrics and, when the machine steps, the workload's `/scale` and
/// counts.
async fn observe_inputs(
    ctx: &Arc<Context>,
    st: &ScaledTarget,
    interval: Duration,
    steps: bool,
) -> Polled {
    let ns = st.namespace().unwrap_or_default();
    let reads = futures::future::join_all(st.spec.metrics.iter().map(|m| {
        let (reader, ns) = (ctx.reader.clone(), ns.clone());
        async move {
            Reading {
                value: reader.read(&ns, m, interval).await,
            }
        }
    }));
    let learning_slo = st.spec.adaptive.as_ref().is_some_and(|c| c.enabled)
        && st.spec.metrics.iter().any(|m| m.slo.is_some());
    let slo = async {
        if !learning_slo {
            return None;
        }
        Some(
            futures::future::join_all(st.spec.metrics.iter().map(|m| {
                let (reader, ns) = (ctx.reader.clone(), ns.clone());
                async move {
                    let signal = m.slo_signal()?;
                    match reader.read(&ns, &signal, interval).await {
                        Ok(v) => Some(v),
                        Err(e) => {
                            // No reading, not a good or a bad one: the SLO rule waits.
                            tracing::debug!(scaledtarget = %key(st), metric = %m.name, error = %e, "slo signal not read");
                            None
                        }
                    }
                }
            }))
            .await,
        )
    };
    let queues = futures::future::join_all(
        st.spec
            .metrics
            .iter()
            .map(|m| read_queue_signals(ctx, &ns, m, interval)),
    );
    let learns_from_pods = learning_slo
        || st
            .spec
            .metrics
            .iter()
            .any(|m| m.target.type_ == TargetType::DrainTime);
    let scale = async {
        if steps || learns_from_pods {
            Some(ctx.scale_of(st).await)
        } else {
            None
        }
    };
    let (readings, slo, queues, scale) = futures::future::join4(reads, slo, queues, scale).await;
    Polled {
        readings,
        slo,
        queues,
        scale,
    }
}

/// A DrainTime metric's reads besides its backlog (`None` for other metrics). A rate that
/// cannot be read is no data; a served rate or waiting count that cannot be read only stops
/// the throughput from learning.
async fn read_queue_signals(
    ctx: &Context,
    ns: &str,
    m: &Metric,
    interval: Duration,
) -> Option<QueueSignals> {
    let q = m.queue_signals()?;
    let read = |metric: Option<Metric>| async move {
        match metric {
            Some(metric) => Some(ctx.reader.read(ns, &metric, interval).await),
            None => None,
        }
    };
    let (arrival, served, waiting, published) = futures::future::join4(
        read(Some(q.arrival)),
        read(q.served),
        read(q.waiting),
        read(q.published),
    )
    .await;
    let arrival = Reading {
        value: arrival.expect("the arrival rate is read"),
    };
    Some(QueueSignals {
        arrival: arrival.engine(),
        served: served.and_then(Result::ok),
        waiting: waiting.and_then(Result::ok),
        published: published.and_then(Result::ok),
    })
}

/// What the machine knows of one metric, for its status.
struct MachineView {
    learned: Option<MetricLearned>,
    /// DrainTime: the per-pod throughput in force, and whether it was learned.
    throughput: Option<(f64, bool)>,
    /// The value decided on (DrainTime: the work, msg/s).
    value: Option<crate::engine::target::Reading>,
}

/// `SourcesHealthy`: True when every metric was read at this poll; else False with the first
/// failing metric's reason and, for each failing metric, what went wrong, so that a bad query,
/// a refused password or a missing Secret is named where the user looks.
fn sources_condition(
    st: &ScaledTarget,
    readings: &[Reading],
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let failing: Vec<(&str, &ReadError)> = st
        .spec
        .metrics
        .iter()
        .zip(readings)
        .filter_map(|(m, r)| Some((m.name.as_str(), r.value.as_ref().err()?)))
        .collect();
    match failing.first() {
        None => condition(
            cond::SOURCES_HEALTHY,
            true,
            cond::ALL_METRICS_READ,
            "every metric was read at the last poll",
        ),
        Some((_, first)) => {
            let each: Vec<String> = failing
                .iter()
                .map(|(name, e)| format!("metric {name}: {e}"))
                .collect();
            condition(
                cond::SOURCES_HEALTHY,
                false,
                first.reason(),
                &each.join("; "),
            )
        }
    }
}

fn metric_statuses(
    st: &ScaledTarget,
    readings: &[Reading],
    views: &[MachineView],
    at: &Timestamp,
) -> Vec<MetricStatus> {
    let quantity_of = |v: f64| Quantity(from_milli(to_milli(v)));
    let unknown = MachineView {
        learned: None,
        throughput: None,
        value: None,
    };
    st.spec
        .shown_metrics()
        .zip(readings)
        .map(|((m, decided), r)| {
            let view = decided.and_then(|i| views.get(i)).unwrap_or(&unknown);
            let drain = m.target.type_ == TargetType::DrainTime;
            // A DrainTime metric shows its work (msg/s) against the throughput per pod.
            let value = match (drain, view.value) {
                (true, Some(v)) => v.ok(),
                _ => r.value.as_ref().ok().copied(),
            };
            let learned_throughput = view.throughput.filter(|(_, learned)| *learned);
            let learned = view.learned.clone();
            MetricStatus {
                name: m.name.clone(),
                value: value.filter(|v| v.is_finite()).map(quantity_of),
                target: m.target.quantity().cloned(),
                learned_target: learned
                    .as_ref()
                    .map(|l| quantity(l.target))
                    .or(learned_throughput.map(|(t, _)| quantity(t))),
                learned: learned.map(|l| {
                    Box::new(crate::crd::LearnedStatus {
                        slo: l.slo.as_ref().map(crate::crd::SloStatus::from),
                        ..crate::crd::LearnedStatus::from(&l.learned)
                    })
                }),
                timestamp: Some(Time(*at)),
                error: r.value.as_ref().err().map(ToString::to_string).or_else(|| {
                    (drain && value.is_none())
                        .then(|| "the queue's arrival rate has no data".into())
                }),
            }
        })
        .collect()
}

fn to_milli(v: f64) -> i64 {
    (v * 1000.0).round().clamp(i64::MIN as f64, i64::MAX as f64) as i64
}

/// A learned target as a quantity, to the milli-unit.
fn quantity(v: f64) -> Quantity {
    Quantity(from_milli((v * 1000.0).round().max(1.0) as i64))
}

/// The leader carrying out one step's intents on the cluster.
struct Act<'a> {
    st: &'a ScaledTarget,
    ctx: &'a Context,
    spec: &'a TargetSpec,
    step: &'a Step,
    now: Timestamp,
}

impl Act<'_> {
    /// An Event per learned value that moved.
    async fn learned_changed(&self, changes: &[Change]) {
        for change in changes {
            let note = format!("metric {}: {}", change.metric, change.message);
            tracing::info!(scaledtarget = %key(self.st), metric = %change.metric, change = %change.message, "learned values changed");
            publish(
                self.ctx,
                self.st,
                EventType::Normal,
                cond::EVENT_LEARNED_CHANGED,
                "Learn",
                note,
            )
            .await;
        }
    }

    fn with_machine<R>(&self, f: impl FnOnce(&mut TargetMachine) -> R) -> R {
        let mut targets = self.ctx.targets.lock().expect("targets");
        f(&mut state_for(&mut targets, self.st).machine)
    }

    /// Mode Hpa: keep the owned HPA in sync with the step (or away while paused); refuse to
    /// fight a foreign one.
    async fn hpa(
        &self,
        api: &ScaleApi,
        counts: replicas::Counts,
        conditions: &mut Conditions,
        status: &mut ScaledTargetStatus,
    ) -> Result<()> {
        let (st, ctx) = (self.st, self.ctx);
        let ns = st.namespace().unwrap_or_default();
        let hpas = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns);
        let name = hpa::hpa_name(st);
        let hpa_index::HpaView {
            ours,
            foreign,
            adopting,
        } = self.hpa_view(&hpas).await?;
        if let Some(foreign) = foreign {
            let message = if hpa::targets_same_workload(&foreign, st) {
                format!(
                    "HPA {} already scales {} {}; ebb does not fight an HPA it does not own (annotate the ScaledTarget with {}: {} to take it over)",
                    foreign.name,
                    st.spec.target_ref.kind,
                    st.spec.target_ref.name,
                    crate::crd::ADOPT_HPA_ANNOTATION,
                    foreign.name
                )
            } else {
                format!(
                    "{} names HPA {}, which scales {} {}, not {} {}: ebb adopts only an HPA of its own workload",
                    crate::crd::ADOPT_HPA_ANNOTATION,
                    foreign.name,
                    foreign.scale_target_ref.kind,
                    foreign.scale_target_ref.name,
                    st.spec.target_ref.kind,
                    st.spec.target_ref.name
                )
            };
            conditions.set(condition(cond::READY, false, cond::FOREIGN_HPA, &message));
            publish(
                ctx,
                st,
                EventType::Warning,
                cond::FOREIGN_HPA,
                "Refuse",
                message,
            )
            .await;
            return Ok(());
        }
        let Some(intent) = &self.step.hpa else {
            return Ok(());
        };
        if !intent.present {
            if ours.is_some() {
                delete_hpa(ctx, &hpas, &name).await?;
            }
            state_for(&mut ctx.targets.lock().expect("targets"), st).hpa_applied = None;
            if let StepAction::PauseAt(n) = self.step.action {
                self.pause_at(n, status).await?;
            }
            return Ok(());
        }
        // Learned targets; a metric still waiting for its backfill keeps the one its HPA has.
        let mut learned_targets: std::collections::BTreeMap<String, Quantity> = intent
            .targets
            .iter()
            .map(|(name, v)| (name.clone(), quantity(*v)))
            .collect();
        if let Some(ours) = &ours {
            learned_targets.extend(hpa::kept_targets(ours, &intent.pending));
        }
        let desired = hpa::desired_hpa_with(st, &learned_targets, intent.behavior);
        if let (true, Some(existing)) = (adopting, &ours) {
            self.adopt(&hpas, &existing.name, &desired).await?;
        }
        let fingerprint = json_hash(&desired);
        let last = state_for(&mut ctx.targets.lock().expect("targets"), st).hpa_applied;
        let in_sync = match (&ours, last) {
            (Some(h), Some(a)) => a.desired == fingerprint && h.spec_hash == a.spec,
            _ => false,
        };
        let hpa_now = if let (true, Some(ours)) = (in_sync, ours) {
            ours
        } else {
            lease_held(ctx)?;
            ctx.stats.requests(1);
            let applied = hpas
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(desired),
                )
                .await?;
            let applied = hpa::HpaFacts::of(&applied);
            state_for(&mut ctx.targets.lock().expect("targets"), st).hpa_applied =
                Some(AppliedHpa {
                    desired: fingerprint,
                    spec: applied.spec_hash,
                });
            Arc::new(applied)
        };
        status.hpa_name = Some(name.clone());
        if let Some(s) = &hpa_now.status {
            status.current_replicas = s.current_replicas;
            status.desired_replicas = Some(s.desired_replicas);
            status.last_scale_time = s.last_scale_time.clone().or(status.last_scale_time.take());
            if let Some(limited) = &s.scaling_limited {
                conditions.set(condition(
                    cond::SCALING_LIMITED,
                    limited.limited,
                    limited.reason.as_deref().unwrap_or("Unknown"),
                    limited.message.as_deref().unwrap_or(""),
                ));
            }
        }
        conditions.set(condition(
            cond::READY,
            true,
            cond::HPA_SYNCED,
            &format!("HPA {name} is in sync"),
        ));
        let to_or_from_zero = matches!(self.step.action, StepAction::Scale { .. });
        if to_or_from_zero {
            // The HPA cannot hold 0 and leaves a workload at 0 alone: ebb writes these moves.
            self.carry_out(api, counts, status).await?;
        }
        if to_or_from_zero || counts.spec == 0 {
            status.desired_replicas = Some(self.step.desired);
        }
        Ok(())
    }

    /// Takes over the HPA `name` (named by `ebb.dev/adopt-hpa`): its spec replaced by ebb's
    /// in one write, owned by the ScaledTarget from then on, its labels and annotations kept.
    /// The object stays, and with it the HPA controller's memory of recent recommendations, so
    /// the count does not jump; the server-side apply that follows takes the fields over.
    async fn adopt(
        &self,
        hpas: &Api<HorizontalPodAutoscaler>,
        name: &str,
        desired: &HorizontalPodAutoscaler,
    ) -> Result<()> {
        let (st, ctx) = (self.st, self.ctx);
        // The index keeps little of an HPA: the write builds on the whole object, read now
        // (a write on a version changed since fails with 409 and is tried again next poll).
        ctx.stats.requests(1);
        let existing = hpas.get(name).await?;
        let mut adopted = desired.clone();
        let meta = &mut adopted.metadata;
        meta.resource_version = existing.metadata.resource_version.clone();
        meta.annotations = existing.metadata.annotations.clone();
        let mut labels = existing.metadata.labels.clone().unwrap_or_default();
        labels.extend(meta.labels.take().unwrap_or_default());
        meta.labels = Some(labels);
        let mut owners = existing
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default();
        owners.extend(meta.owner_references.take().unwrap_or_default());
        meta.owner_references = Some(owners);
        lease_held(ctx)?;
        ctx.stats.requests(1);
        hpas.replace(name, &PostParams::default(), &adopted).await?;
        let message = format!(
            "adopted HPA {name} (scaling {} {} at {} replicas): its spec is ebb's from now on",
            st.spec.target_ref.kind,
            st.spec.target_ref.name,
            existing.status.as_ref().map_or(0, |s| s.desired_replicas)
        );
        tracing::info!(scaledtarget = %key(st), hpa = %name, "adopted HPA");
        record_action(ctx, st, cond::EVENT_ADOPTED_HPA, "Adopt", message).await;
        Ok(())
    }

    /// The HPAs that scale the target's workload: from the watch, else listed.
    async fn hpa_view(&self, hpas: &Api<HorizontalPodAutoscaler>) -> Result<hpa_index::HpaView> {
        if let Some(view) = self.ctx.hpas.get().and_then(|index| index.view(self.st)) {
            return Ok(view);
        }
        // No watch (yet): list the namespace.
        self.ctx.stats.requests(1);
        let listed: Vec<_> = hpas
            .list(&ListParams::default())
            .await?
            .items
            .iter()
            .map(|h| Arc::new(hpa::HpaFacts::of(h)))
            .collect();
        Ok(hpa_index::HpaView::of(self.st, &listed))
    }

    /// Modes Direct and Shadow: carry out the step on `/scale` (Direct) or report it (Shadow).
    /// An owned HPA left from mode Hpa is removed first: it would keep scaling.
    async fn scale(
        &self,
        api: &ScaleApi,
        counts: replicas::Counts,
        status: &mut ScaledTargetStatus,
    ) -> Result<()> {
        let (st, ctx) = (self.st, self.ctx);
        let ns = st.namespace().unwrap_or_default();
        let hpas = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns);
        let view = self.hpa_view(&hpas).await?;
        // An HPA named by ebb.dev/adopt-hpa is adopted in mode Hpa only, never deleted.
        if view.ours.is_some() && !view.adopting {
            delete_hpa(ctx, &hpas, &hpa::hpa_name(st)).await?;
            state_for(&mut ctx.targets.lock().expect("targets"), st).hpa_applied = None;
        }
        self.carry_out(api, counts, status).await
    }

    /// The step's action on `/scale` (every mode: in mode Hpa, ebb's own writes are the
    /// moves to and from zero, which the HPA cannot make), or its report in mode Shadow.
    async fn carry_out(
        &self,
        api: &ScaleApi,
        counts: replicas::Counts,
        status: &mut ScaledTargetStatus,
    ) -> Result<()> {
        let (st, ctx, step) = (self.st, self.ctx, self.step);
        let metric = step
            .metric
            .and_then(|i| st.spec.decided_metrics().get(i).map(|m| m.name.clone()))
            .unwrap_or_else(|| "-".into());
        match step.action {
            StepAction::None => {}
            StepAction::PauseAt(n) => self.pause_at(n, status).await?,
            StepAction::Scale { from, to } => {
                ctx.stats.actions.fetch_add(1, Relaxed);
                let now_ms = self.now.as_millisecond();
                match patch_scale(ctx, api, st, to, counts).await {
                    Ok(()) => {
                        self.with_machine(|m| m.applied(now_ms, self.spec, from, to));
                        audit(ctx, st, from, to, &metric, &step.rule).await;
                        status.last_scale_time = Some(Time(self.now));
                        status.current_replicas = Some(to);
                    }
                    // Not a failure to scale: the new leader decides again.
                    Err(ControllerError::LeaseLost) => return Err(ControllerError::LeaseLost),
                    // Not a failure either: nothing was written, and the next poll decides
                    // from the count there is.
                    Err(e @ ControllerError::CountChanged { .. }) => {
                        tracing::info!(scaledtarget = %key(st), from, to, reason = %e, "not scaled: the count moved");
                    }
                    Err(e) => {
                        let error = e.to_string();
                        let (failures, escalation) = self
                            .with_machine(|m| m.apply_failed(now_ms, self.spec, from, to, &error));
                        let message =
                            format!("scaling {from} -> {to} failed ({failures} in a row): {error}");
                        tracing::warn!(scaledtarget = %key(st), %message, "scale failed");
                        publish(
                            ctx,
                            st,
                            EventType::Warning,
                            cond::EVENT_FAILED_RESCALE,
                            "Scale",
                            message,
                        )
                        .await;
                        if let Some(e) = escalation {
                            self.escalate(&e);
                        }
                        // A missing workload or a forbidden write: Ready=False says what to fix.
                        if errors::is_permanent(&e, st) {
                            return Err(e);
                        }
                    }
                }
            }
            StepAction::Report { from, to } => {
                ctx.stats.actions.fetch_add(1, Relaxed);
                ctx.count_action(st, from, to);
                let note = format!(
                    "would scale {from} -> {to} (metric {metric}, rule {}); mode Shadow changes nothing",
                    step.rule
                );
                tracing::info!(scaledtarget = %key(st), old = from, new = to, metric, rule = %step.rule, "shadow decision");
                record_action(ctx, st, cond::EVENT_SHADOW_DECISION, "Decide", note).await;
            }
        }
        Ok(())
    }

    /// Sets the paused count once, and tells the machine.
    async fn pause_at(&self, n: i32, status: &mut ScaledTargetStatus) -> Result<()> {
        let (st, ctx) = (self.st, self.ctx);
        let (api, counts) = ctx.scale_of(st).await?;
        let current = counts.spec;
        if current != n {
            patch_scale(ctx, &api, st, n, counts).await?;
            audit(
                ctx,
                st,
                current,
                n,
                "paused-replicas",
                PAUSED_REPLICAS_ANNOTATION,
            )
            .await;
            status.last_scale_time = Some(Time(self.now));
            status.current_replicas = Some(n);
        }
        self.with_machine(|m| m.paused_at(n));
        Ok(())
    }

    /// A Warning Event for a scale-up found stalled, with the diagnosis.
    async fn stalled(&self, stall: &crate::engine::stall::Stall) {
        let note = format!(
            "{} of {} pods not Ready after the scale-up: {}: {} (pods {}); adding no replicas",
            stall.not_ready,
            stall.wanted,
            stall.pattern.as_str(),
            stall.message,
            stall.pods.join(", ")
        );
        tracing::warn!(scaledtarget = %key(self.st), pattern = stall.pattern.as_str(), "scale-up stalled: {note}");
        publish(
            self.ctx,
            self.st,
            EventType::Warning,
            cond::SCALING_STALLED,
            "Hold",
            note,
        )
        .await;
    }

    /// Queues an escalation the machine asked for; the queue's worker delivers it, retries
    /// with backoff and records the Event ([`escalation`]). Never waits.
    fn escalate(&self, e: &crate::engine::target::Escalation) {
        let st = self.st;
        let Some(config) = &st.spec.escalation else {
            return;
        };
        let message = match e.reason {
            EscalationReason::AtMaxReplicas => format!(
                "{} is at maxReplicas {} and the metrics ask for {}",
                key(st),
                st.spec.max_replicas,
                e.demanded.unwrap_or(e.desired)
            ),
            EscalationReason::ScalingFailing => format!("{}: scaling keeps failing", key(st)),
            EscalationReason::ScalingStalled(p) => format!(
                "{}: the pods of a scale-up are not Ready ({}); ebb adds no replicas and keeps {}",
                key(st),
                p.as_str(),
                e.current
            ),
        };
        self.ctx.escalations.send(escalation::Job {
            namespace: st.namespace().unwrap_or_default(),
            secret_name: config.webhook_secret_ref.name.clone(),
            regarding: st.object_ref(&()),
            payload: EscalationPayload {
                scaled_target: key(st),
                reason: e.reason,
                message,
                current_replicas: e.current,
                desired_replicas: e.desired,
                demanded_replicas: e.demanded,
                max_replicas: st.spec.max_replicas,
                tried: e.tried.clone(),
                stall: e.stall.as_ref().map(escalation::StallReport::new),
            },
        });
    }
}

async fn delete_hpa(ctx: &Context, hpas: &Api<HorizontalPodAutoscaler>, name: &str) -> Result<()> {
    lease_held(ctx)?;
    ctx.stats.requests(1);
    match hpas.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes `replicas` to the target's `/scale`, on the condition that the workload is still
/// the version `read` came from (its resourceVersion in the patch: the API server refuses the
/// write with 409 Conflict otherwise). A decision made from a count that is no longer there
/// (another writer, a watch that was behind, a new leader's first poll) must not overwrite
/// it: 8 replicas taken down to 6 by a decision that read 5 would skip every scale-down
/// rule. When only the status moved (pods becoming ready bump the version too), the write is
/// made again on the fresh version; when the count moved, it is [`ControllerError::CountChanged`].
async fn patch_scale(
    ctx: &Context,
    api: &ScaleApi,
    st: &ScaledTarget,
    replicas: i32,
    read: replicas::Counts,
) -> Result<()> {
    const ATTEMPTS: usize = 3;
    let ns = st.namespace().unwrap_or_default();
    let name = &st.spec.target_ref.name;
    let mut read = read;
    let mut attempt = 0;
    loop {
        lease_held(ctx)?;
        attempt += 1;
        let mut body = serde_json::json!({ "spec": { "replicas": replicas } });
        if let Some(version) = read.resource_version() {
            body["metadata"] = serde_json::json!({ "resourceVersion": version });
        }
        ctx.stats.requests(1);
        let answer = api
            .api
            .patch_scale(name, &PatchParams::default(), &Patch::Merge(body))
            .await;
        let scale = match answer {
            Ok(scale) => scale,
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => {
                ctx.stats.requests(1);
                let fresh = replicas::Counts::of_scale(&api.api.get_scale(name).await?);
                ctx.replicas.wrote(&api.kind, &ns, name, fresh);
                if fresh.spec != read.spec {
                    return Err(ControllerError::CountChanged {
                        read: read.spec,
                        found: fresh.spec,
                    });
                }
                read = fresh;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        ctx.replicas
            .wrote(&api.kind, &ns, name, replicas::Counts::of_scale(&scale));
        return Ok(());
    }
}

/// The audit trail of one scaling action: an Event on the ScaledTarget and a log line.
async fn audit(ctx: &Context, st: &ScaledTarget, old: i32, new: i32, metric: &str, rule: &str) {
    ctx.count_action(st, old, new);
    tracing::info!(
        scaledtarget = %key(st),
        target = %format!("{}/{}", st.spec.target_ref.kind, st.spec.target_ref.name),
        old, new, metric, rule,
        "scaled"
    );
    let note = format!(
        "scaled {} {} from {old} to {new} (metric {metric}, rule {rule})",
        st.spec.target_ref.kind, st.spec.target_ref.name
    );
    record_action(ctx, st, cond::EVENT_SCALED, "Scale", note).await;
}

/// Creates one Normal Event per action. The audit trail needs each action's own note:
/// [`EventSeries`] folds events with the same reason into a series of the first one, which keeps
/// the first note ("from 1 to 5") and loses the later ones ("from 5 to 4", ...).
async fn record_action(ctx: &Context, st: &ScaledTarget, reason: &str, action: &str, note: String) {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let now = Timestamp::now();
    let ns = st.namespace().unwrap_or_default();
    let event = K8sEvent {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{}.{:x}", st.name_any(), now.as_nanosecond())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some("Normal".into()),
        reason: Some(reason.into()),
        action: Some(action.into()),
        note: Some(note),
        regarding: Some(st.object_ref(&())),
        reporting_controller: Some(ctx.reporter.controller.clone()),
        reporting_instance: ctx.reporter.instance.clone(),
        ..Default::default()
    };
    ctx.writer.create_event(ns, event).await;
}

async fn publish(
    ctx: &Context,
    st: &ScaledTarget,
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    note: String,
) {
    let notice = Notice {
        type_,
        reason,
        action,
        note,
    };
    ctx.writer.publish(notice, st.object_ref(&())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that never answers: for contexts whose reads a test does not reach.
    struct NoReads;

    impl MetricReader for NoReads {
        fn read<'a>(&'a self, _: &'a str, _: &'a Metric, _: Duration) -> reader::ReadFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    /// What the controller keeps per target is a few allocations each, and allocators round
    /// them up to a size class (jemalloc's: ..., 160, 192, 224, 256, 320, 384, 448, 512, 640,
    /// 768, 896, 1,024). At 5,000 targets a step of class is 0.3 to 0.6 MiB; this says when a
    /// field pushes one over.
    #[test]
    fn what_is_kept_per_target_stays_in_its_allocation_class() {
        use std::mem::size_of;
        let size = size_of::<TargetState>();
        assert!(
            size <= 896,
            "TargetState is {size} bytes (TargetMachine {}), over jemalloc's 896-byte class: \
             box a rarely used part",
            size_of::<TargetMachine>()
        );
        // Kept in an `Arc` (two counts, 16 bytes, before the value).
        let in_arc = [
            (
                "ScaledTarget (the watch's store)",
                size_of::<ScaledTarget>() + 16,
                640,
            ),
            (
                "TargetSpec (the machine's view)",
                size_of::<TargetSpec>() + 16,
                192,
            ),
            (
                "HpaFacts (the HPA index)",
                size_of::<hpa::HpaFacts>() + 16,
                256,
            ),
        ];
        for (what, size, class) in in_arc {
            assert!(
                size <= class,
                "{what} is {size} bytes with its Arc, over {class}"
            );
        }
        let metric = size_of::<crate::engine::target::MetricSpec>();
        assert!(metric <= 80, "a MetricSpec is {metric} bytes, over 80");
    }

    #[tokio::test]
    async fn a_queued_status_gives_way_to_the_objects_once_the_write_shows() {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let ctx = Context::new(client, Arc::new(NoReads), Leadership::fixed(true), "t");
        let mut json = crate::crd::example_json();
        json["metadata"]["uid"] = "u1".into();
        json["status"] = serde_json::json!({ "desiredReplicas": 1 });
        let object: ScaledTarget = serde_json::from_value(json).unwrap();
        let queued = |ctx: &Context| {
            let targets = ctx.targets.lock().unwrap();
            targets["shop/web"].status.as_deref().cloned()
        };
        // The watch hands the object's status to the state and keeps the object without it.
        let mut st = object.clone();
        ctx.saw_status(&mut st);
        assert_eq!(st.status, None);
        assert_eq!(ctx.last_status(&st), object.status.as_deref().cloned());
        // A status queued, with a time to the nanosecond; the object does not show it yet.
        let time =
            Time(k8s_openapi::jiff::Timestamp::from_nanosecond(1_700_000_000_123_456_789).unwrap());
        let ours = ScaledTargetStatus {
            desired_replicas: Some(2),
            last_scale_time: Some(time),
            ..Default::default()
        };
        state_for(&mut ctx.targets.lock().unwrap(), &st).queue_status(Arc::new(ours.clone()));
        assert_eq!(ctx.last_status(&st), Some(ours.clone()));
        // Another version of the object without it (an older write, an edit) leaves it queued.
        let mut other = object.clone();
        ctx.saw_status(&mut other);
        assert_eq!(ctx.last_status(&st), Some(ours.clone()));
        assert_eq!(queued(&ctx), Some(ours.clone()));
        // The write landed (read back to the second): one copy, the object's.
        let written: ScaledTargetStatus =
            serde_json::from_value(serde_json::to_value(&ours).unwrap()).unwrap();
        let mut landed = object.clone();
        landed.status = Some(Box::new(written.clone()));
        ctx.saw_status(&mut landed);
        assert_eq!(landed.status, None);
        assert_eq!(queued(&ctx), None);
        assert_eq!(ctx.last_status(&st), Some(written.clone()));
        // What was learned resumes from the status kept apart (after a restart: the first
        // status the watch shows), as it would from the object's.
        let mut json = crate::crd::example_json();
        json["metadata"]["uid"] = "u1".into();
        json["spec"]["adaptive"] = serde_json::json!({});
        json["spec"]["metrics"][0]["target"] =
            serde_json::json!({ "type": "AverageValue", "averageValue": "10" });
        json["status"] = serde_json::json!({ "metrics": [{ "name": "m", "learned": {
            "headroom": 0.2, "headroomBasis": "History", "tolerance": 0.1,
            "toleranceBasis": "Static", "scaleDownWindowSeconds": 300,
            "scaleDownWindowBasis": "Static", "growthSamples": 5000,
            "riskCorrection": -0.25 } }] });
        let mut learned: ScaledTarget = serde_json::from_value(json).unwrap();
        let resumed = |spec: &TargetSpec| {
            spec.metrics[0]
                .learn
                .as_ref()
                .map(|l| l.resume_risk_correction)
        };
        assert_eq!(resumed(&learned.machine_spec()), Some(-0.25));
        ctx.saw_status(&mut learned);
        assert_eq!(learned.status, None);
        assert_eq!(resumed(&learned.machine_spec()), Some(0.0));
        assert_eq!(resumed(&ctx.spec_of(&learned)), Some(-0.25));
        // A recreated object (another uid) does not inherit the status.
        let mut recreated = object.clone();
        recreated.metadata.uid = Some("u2".into());
        assert_eq!(ctx.last_status(&recreated), None);
    }

    #[test]
    fn regular_polls_move_onto_the_targets_slot_and_stay_there() {
        let interval = Duration::from_secs(15);
        let started = Duration::from_millis(1_700_000_000_123);
        let first = regular_wait(interval, "uid-a", started);
        assert!(first > Duration::ZERO && first <= interval);
        // On the slot, the next wait is exactly one interval.
        assert_eq!(regular_wait(interval, "uid-a", started + first), interval);
        // Another uid has another slot; many uids spread over the whole interval.
        let slots: std::collections::BTreeSet<u64> = (0..1000)
            .map(|i| {
                let wait = regular_wait(interval, &format!("uid-{i}"), started);
                ((started + wait).as_millis() % interval.as_millis()) as u64 / 1000
            })
            .collect();
        assert_eq!(
            slots.len(),
            15,
            "every second of the interval holds some slot"
        );
    }
}
