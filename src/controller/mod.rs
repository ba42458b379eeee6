//! The ScaledTarget controller (kube-runtime): where ebb acts.
//!
//! Every replica watches ScaledTargets and reads their metrics on each poll (the values feed
//! the external metrics API everywhere); only the replica holding the Lease ([`leader`]) writes:
//! the owned HPA (mode Hpa), `/scale` (mode Direct), status, Events and escalations.
//!
//! One poll of one target ([`reconcile`]): read the metrics through [`MetricReader`], update
//! the fallback state, ask the engine ([`crate::engine::hpa::decide`]) unless paused, apply the
//! decision (Direct), record it (Event + structured log: the audit trail), escalate when
//! automation cannot cope, write status, and requeue at the next poll.

pub mod adaptive;
pub mod escalation;
pub mod hpa;
pub mod hpa_index;
pub mod leader;
pub mod metrics;
pub mod reader;
pub mod replicas;
pub mod stats;
mod status;
mod watched;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::crd::{
    MetricStatus, Mode, PAUSED_ANNOTATION, PAUSED_REPLICAS_ANNOTATION, ScaledTarget,
    ScaledTargetStatus, from_milli,
};
use crate::engine::MetricSample;
use crate::engine::hpa::{Replicas, ScalingState, decide};
use escalation::{EscalationPayload, EscalationReason, Escalator};
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
    uid: String,
    scaling: ScalingState,
    /// Consecutive polls in which every metric failed.
    failed_polls: i32,
    /// Consecutive polls with a value since fallback began (to leave it).
    ok_polls: i32,
    in_fallback: bool,
    /// Consecutive failed `/scale` writes.
    scale_failures: i32,
    /// The last desired count reported in mode Shadow (one Event per change, not per poll).
    reported: Option<i32>,
    /// Whether the paused-replicas count was applied.
    paused_applied: Option<i32>,
    /// When the next poll is due, and what it was scheduled for (see [`Schedule`]).
    scheduled: Option<Schedule>,
    /// The target's Prometheus series, while this replica leads (removed when dropped).
    series: Option<TargetSeries>,
    /// Thresholds learned from history (`spec.adaptive`), per metric.
    learning: adaptive::Learning,
    /// What this replica last applied to the owned HPA (mode Hpa).
    hpa_applied: Option<AppliedHpa>,
    /// The last status this replica queued, while it leads. Writes are deferred
    /// ([`writer`]), so the object may not show it yet; the next status builds on it.
    status: Option<ScaledTargetStatus>,
}

/// The state of `st`, started afresh when the object was recreated (another uid).
fn state_for<'a>(
    targets: &'a mut HashMap<String, TargetState>,
    st: &ScaledTarget,
) -> &'a mut TargetState {
    let t = targets.entry(key(st)).or_default();
    let uid = st.uid().unwrap_or_default();
    if t.uid != uid {
        *t = TargetState {
            uid,
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
    paused: Option<Option<i32>>,
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
fn json_hash(value: &impl serde::Serialize) -> u64 {
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
    targets: Mutex<HashMap<String, TargetState>>,
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
    /// Replica counts of the scale targets, from watches.
    replicas: replicas::ReplicaCache,
    /// The HPAs in the controller's scope (mode Hpa), from a watch started by the run.
    hpas: std::sync::OnceLock<hpa_index::HpaIndex>,
    escalator: Escalator,
    /// Counters of the controller's work.
    pub stats: Arc<ControllerStats>,
    metrics: ControllerMetrics,
    /// Where every replica publishes readings for the external metrics API (mode Hpa).
    store: std::sync::OnceLock<Arc<crate::api::store::MetricStore>>,
    /// Bounds the adaptive backfills running at once.
    backfills: Arc<tokio::sync::Semaphore>,
}

impl Context {
    /// A context for one controller process; `identity` names this replica in Events.
    pub fn new(
        client: kube::Client,
        reader: Arc<dyn MetricReader>,
        leadership: Leadership,
        identity: &str,
    ) -> Arc<Self> {
        Self::with_metrics(client, reader, leadership, identity, Default::default())
    }

    /// As [`Context::new`], recording into `metrics` (registered by the caller).
    pub fn with_metrics(
        client: kube::Client,
        reader: Arc<dyn MetricReader>,
        leadership: Leadership,
        identity: &str,
        metrics: ControllerMetrics,
    ) -> Arc<Self> {
        let reporter = Reporter {
            controller: "ebb".into(),
            instance: Some(identity.into()),
        };
        Arc::new(Self {
            writer: writer::Writer::start(
                client.clone(),
                Recorder::new(client.clone(), reporter.clone()),
                metrics.stats.clone(),
            ),
            reporter,
            replicas: replicas::ReplicaCache::new(client.clone()),
            hpas: std::sync::OnceLock::new(),
            client,
            reader,
            leadership,
            targets: Mutex::default(),
            kinds: Mutex::default(),
            escalator: Escalator::default(),
            stats: metrics.stats.clone(),
            metrics,
            store: std::sync::OnceLock::new(),
            backfills: Arc::new(tokio::sync::Semaphore::new(
                adaptive::MAX_CONCURRENT_BACKFILLS,
            )),
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

    /// Drops what is kept for a ScaledTarget that is gone: its state (and with it its series)
    /// and the values the external metrics API serves for it.
    fn forget(&self, namespace: &str, name: &str) {
        let key = format!("{namespace}/{name}");
        self.targets.lock().expect("targets").remove(&key);
        self.writer.forget(&key);
        if let Some(store) = self.store.get() {
            store.remove(namespace, name);
        }
    }

    /// Publishes every reading into `store` from now on (the API server serves from it).
    pub fn publish_to(&self, store: Arc<crate::api::store::MetricStore>) {
        let _ = self.store.set(store);
    }

    /// The target's `/scale` API and its current counts: from the replica watch where it has
    /// them, else read from `/scale`.
    async fn scale_of(&self, st: &ScaledTarget) -> Result<(ScaleApi, replicas::Counts)> {
        let api = self.scale_api(st).await?;
        let ns = st.namespace().unwrap_or_default();
        let name = &st.spec.target_ref.name;
        if let Some(c) = self.replicas.get(&api.kind, &ns, name) {
            self.stats
                .cached_scale_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok((api, c));
        }
        // Not watched, not listed yet, or not seen yet (a target created a moment ago).
        self.stats.requests(1);
        let scale = api.api.get_scale(name).await?;
        let counts = replicas::Counts::new(
            scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
            scale.status.as_ref().map_or(0, |s| s.replicas),
            scale.metadata.resource_version.as_deref(),
        );
        Ok((api, counts))
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
                let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk)
                    .await
                    .map_err(|e| {
                        ControllerError::UnknownKind(format!("{}/{}", t.api_version, t.kind), e)
                    })?;
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
    // The ScaledTargets are kept without their managed fields (about a third of a stored object
    // once ebb has written status), the largest share of the controller's memory at scale.
    // `for_stream` is kube-runtime's `unstable-runtime` API.
    let (reader, writer) = kube::runtime::reflector::store();
    let objects = watcher(sts, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(|st| st.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    Controller::for_stream(objects, reader)
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

/// Transient errors retry soon; the next poll would anyway.
pub fn error_policy(st: Arc<ScaledTarget>, error: &ControllerError, _: Arc<Context>) -> Action {
    tracing::warn!(scaledtarget = %key(&st), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
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
    at: Time,
}

/// Publishes one poll's readings for the external metrics API. A failed reading is published
/// as a failure, which the API answers with an error: never as 0. `served` holds, where set,
/// the value to serve instead of the reading (mode Hpa: raised to the forecast).
fn publish_readings(
    store: &crate::api::store::MetricStore,
    st: &ScaledTarget,
    readings: &[Reading],
    served: &[Option<f64>],
    interval: Duration,
) {
    use crate::api::store::{MetricValue, Sample};
    let ns = st.namespace().unwrap_or_default();
    let name = st.name_any();
    for (i, (metric, reading)) in st.spec.metrics.iter().zip(readings).enumerate() {
        let raised = reading
            .value
            .as_ref()
            .map(|v| served.get(i).copied().flatten().unwrap_or(*v));
        let value = match &raised {
            Ok(v) if v.is_finite() => MetricValue::Milli((v * 1000.0).round() as i64),
            Ok(v) => MetricValue::Failed(format!("value {v} is not a number")),
            Err(e) => MetricValue::Failed(e.to_string()),
        };
        store.publish(
            &ns,
            &metric.name,
            &name,
            Sample {
                labels: Default::default(),
                value,
                timestamp: chrono::Utc::now(),
                window_seconds: Some(interval.as_secs() as i64),
            },
        );
    }
    store.mark_filled();
}

/// One poll of one ScaledTarget.
pub async fn reconcile(st: Arc<ScaledTarget>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let interval = st.spec.polling_interval();
    if st.metadata.deletion_timestamp.is_some() {
        ctx.forget(&st.namespace().unwrap_or_default(), &st.name_any());
        return Ok(Action::await_change());
    }
    let paused = pause(&st);
    let same_object = |s: &Schedule| {
        s.uid == st.metadata.uid && s.generation == st.metadata.generation && s.paused == paused
    };
    {
        let targets = ctx.targets.lock().expect("targets");
        if let Some(s) = targets.get(&key(&st)).and_then(|t| t.scheduled.as_ref()) {
            if started < s.due && same_object(s) {
                return Ok(Action::requeue(s.due - started));
            }
            if started >= s.due {
                ctx.stats.record_lag(started - s.due);
            }
        }
    }
    ctx.stats
        .polls
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // The next poll is due one interval after this one started, moved to the target's own slot
    // (sooner when the engine asks), however long this one takes.
    let started_wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let requeue = |after: Duration| {
        let after = if after >= interval {
            regular_wait(
                interval,
                st.metadata.uid.as_deref().unwrap_or_default(),
                started_wall,
            )
        } else {
            after
        };
        let mut targets = ctx.targets.lock().expect("targets");
        targets.entry(key(&st)).or_default().scheduled = Some(Schedule {
            due: started + after,
            uid: st.metadata.uid.clone(),
            generation: st.metadata.generation,
            paused,
        });
        Action::requeue(after.saturating_sub(started.elapsed()))
    };
    let ns = st.namespace().unwrap_or_default();
    let reads = futures::future::join_all(st.spec.metrics.iter().map(|m| {
        let reader = ctx.reader.clone();
        let ns = ns.clone();
        async move {
            Reading {
                value: reader.read(&ns, m, interval).await,
                at: Time(Timestamp::now()),
            }
        }
    }));
    let (readings, slo) = futures::future::join(reads, slo_inputs(&ctx, &st, interval)).await;
    // Every replica learns (a new leader knows what the old one knew) and serves the API, so
    // every replica publishes, leader or not.
    let learned = learn(&ctx, &st, &readings, &slo, interval);
    if let Some(store) = ctx.store.get() {
        publish_readings(store, &st, &readings, &learned.served, interval);
    }
    if !ctx.leadership.is_leader() {
        // Only the leader's decisions are exported: a standby drops what it had.
        if let Some(t) = ctx.targets.lock().expect("targets").get_mut(&key(&st)) {
            t.series = None;
            t.status = None;
        }
        return Ok(requeue(interval));
    }
    for change in &learned.changes {
        let note = format!("metric {}: {}", change.metric, change.message);
        tracing::info!(scaledtarget = %key(&st), metric = %change.metric, change = %change.message, "learned values changed");
        publish(
            ctx.as_ref(),
            &st,
            EventType::Normal,
            "LearnedChanged",
            "Learn",
            note,
        )
        .await;
    }
    // What the status says now: the last one this replica queued, else the object's.
    let previous = {
        let targets = ctx.targets.lock().expect("targets");
        targets
            .get(&key(&st))
            .filter(|t| Some(&t.uid) == st.metadata.uid.as_ref())
            .and_then(|t| t.status.clone())
    }
    .or_else(|| st.status.clone());
    let mut conditions = Conditions::from_status(previous.as_ref());
    let mut status = ScaledTargetStatus {
        metrics: metric_statuses(&st, &readings, &learned.status),
        observed_generation: st.metadata.generation,
        last_scale_time: previous.as_ref().and_then(|s| s.last_scale_time.clone()),
        ..Default::default()
    };
    let active = readings
        .iter()
        .any(|r| r.value.as_ref().is_ok_and(|v| *v > 0.0));
    conditions.set(condition(
        "Active",
        active,
        if active { "MetricsAboveZero" } else { "NoLoad" },
        if active {
            "at least one metric reads above zero"
        } else {
            "no metric reads above zero"
        },
    ));
    conditions.set(match paused {
        Some(Some(n)) => condition(
            "Paused",
            true,
            "PausedAtReplicas",
            &format!("paused at {n} replicas by {PAUSED_REPLICAS_ANNOTATION}"),
        ),
        Some(None) => condition(
            "Paused",
            true,
            "Paused",
            &format!("scaling frozen by {PAUSED_ANNOTATION}"),
        ),
        None => condition("Paused", false, "NotPaused", "scaling is automatic"),
    });
    let next = match st.spec.mode {
        Mode::Hpa => {
            reconcile_hpa(&st, &ctx, &learned, paused, &mut conditions, &mut status).await?
        }
        Mode::Direct | Mode::Shadow => {
            reconcile_scale(&st, &ctx, &readings, paused, &mut conditions, &mut status).await?
        }
    };
    status.conditions = conditions.into_vec();
    {
        let mut targets = ctx.targets.lock().expect("targets");
        let t = targets.entry(key(&st)).or_default();
        let values = readings.iter().map(|r| r.value.as_ref().ok().copied());
        ctx.series(t, &st).observe(values, &status);
    }
    if status::worth_writing(previous.as_ref(), &status) {
        // Decisions never read status back; the writer retries a failed write a few times.
        state_for(&mut ctx.targets.lock().expect("targets"), &st).status = Some(status.clone());
        ctx.writer.write_status(&st, status).await;
    }
    Ok(requeue(next.unwrap_or(interval)))
}

/// `Some(None)`: paused where it is; `Some(Some(n))`: paused at n replicas; `None`: not paused.
fn pause(st: &ScaledTarget) -> Option<Option<i32>> {
    let a = st.annotations();
    if let Some(n) = a
        .get(PAUSED_REPLICAS_ANNOTATION)
        .and_then(|v| v.trim().parse().ok())
    {
        return Some(Some(n));
    }
    a.get(PAUSED_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        .then_some(None)
}

/// What one poll's learning step gives the rest of the poll.
struct LearnStep {
    /// Material changes of learned values (`LearnedChanged` Events).
    changes: Vec<adaptive::Change>,
    /// Per metric, the value to serve instead of the reading (mode Hpa).
    served: Vec<Option<f64>>,
    /// Per metric, learnedTarget and learned for status.
    status: Vec<(Option<Quantity>, Option<crate::crd::LearnedStatus>)>,
    /// Learned targets for the owned HPA (mode Hpa).
    hpa_targets: std::collections::BTreeMap<String, Quantity>,
    /// Metrics waiting for their backfill, with the range a learned target may take.
    pending: std::collections::BTreeMap<String, (f64, f64)>,
    /// Learned scale-down window and tolerance for the owned HPA (mode Hpa).
    hpa_scale_down: Option<adaptive::LearnedScaleDown>,
}

/// What the SLO rule pairs with each reading: the SLO signals (index-aligned with
/// `spec.metrics`, `None` where a metric has no `slo` or its read failed) and the workload's
/// pods. Read only while learning is on and some metric has an `slo`.
#[derive(Default)]
struct SloInputs {
    signals: Vec<Option<f64>>,
    pods: Option<i32>,
}

async fn slo_inputs(ctx: &Arc<Context>, st: &ScaledTarget, interval: Duration) -> SloInputs {
    if adaptive::config(st).is_none() || st.spec.metrics.iter().all(|m| m.slo.is_none()) {
        return SloInputs::default();
    }
    let ns = st.namespace().unwrap_or_default();
    let signals = futures::future::join_all(st.spec.metrics.iter().map(|m| {
        let (reader, ns) = (ctx.reader.clone(), ns.clone());
        async move {
            let signal = m.slo_signal()?;
            match reader.read(&ns, &signal, interval).await {
                Ok(v) => Some(v),
                Err(e) => {
                    // No reading, not a good or a bad one: the SLO rule waits for the next.
                    tracing::debug!(scaledtarget = %key(st), metric = %m.name, error = %e, "slo signal not read");
                    None
                }
            }
        }
    }));
    let pods = async { ctx.scale_of(st).await.ok().map(|(_, c)| c.status) };
    let (signals, pods) = futures::future::join(signals, pods).await;
    SloInputs { signals, pods }
}

/// Feeds the poll's readings to the target's learning state (`spec.adaptive`), starting the
/// backfill of new Prometheus metrics in the background.
fn learn(
    ctx: &Arc<Context>,
    st: &ScaledTarget,
    readings: &[Reading],
    slo: &SloInputs,
    interval: Duration,
) -> LearnStep {
    let now = Timestamp::now().as_millisecond();
    let values: Vec<Option<f64>> = readings
        .iter()
        .map(|r| r.value.as_ref().ok().copied())
        .collect();
    let mut targets = ctx.targets.lock().expect("targets");
    let t = state_for(&mut targets, st);
    let ns = st.namespace().unwrap_or_default();
    for job in t.learning.sync(&key(st), st, interval) {
        tokio::spawn(adaptive::run_backfill(ctx.clone(), ns.clone(), job));
    }
    let changes = t
        .learning
        .observe_with_slo(&values, &slo.signals, slo.pods, now);
    let served = match st.spec.mode {
        Mode::Hpa => values
            .iter()
            .enumerate()
            .map(|(i, v)| v.map(|v| t.learning.served(i, v, now)))
            .collect(),
        Mode::Direct | Mode::Shadow => Vec::new(),
    };
    LearnStep {
        changes,
        served,
        status: (0..readings.len()).map(|i| t.learning.status(i)).collect(),
        hpa_targets: t.learning.hpa_targets(),
        pending: t.learning.pending(),
        hpa_scale_down: t.learning.hpa_scale_down(st.spec.metrics.len()),
    }
}

fn metric_statuses(
    st: &ScaledTarget,
    readings: &[Reading],
    learned: &[(Option<Quantity>, Option<crate::crd::LearnedStatus>)],
) -> Vec<MetricStatus> {
    st.spec
        .metrics
        .iter()
        .zip(readings)
        .enumerate()
        .map(|(i, (m, r))| MetricStatus {
            name: m.name.clone(),
            value: r
                .value
                .as_ref()
                .ok()
                .map(|v| Quantity(from_milli(to_milli(*v)))),
            target: m.target.quantity().cloned(),
            learned_target: learned.get(i).and_then(|l| l.0.clone()),
            learned: learned.get(i).and_then(|l| l.1.clone()),
            timestamp: Some(r.at.clone()),
            error: r.value.as_ref().err().map(ToString::to_string),
        })
        .collect()
}

fn to_milli(v: f64) -> i64 {
    (v * 1000.0).round().clamp(i64::MIN as f64, i64::MAX as f64) as i64
}

/// Mode Hpa: keep the owned HPA in sync (or away while paused); refuse to fight a foreign one.
async fn reconcile_hpa(
    st: &ScaledTarget,
    ctx: &Context,
    learned: &LearnStep,
    paused: Option<Option<i32>>,
    conditions: &mut Conditions,
    status: &mut ScaledTargetStatus,
) -> Result<Option<Duration>> {
    let ns = st.namespace().unwrap_or_default();
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(ctx.client.clone(), &ns);
    let name = hpa::hpa_name(st);
    let view = match ctx.hpas.get().and_then(|index| index.view(st)) {
        Some(view) => view,
        None => {
            // No watch (yet): list the namespace.
            ctx.stats.requests(1);
            let listed: Vec<_> = hpas
                .list(&ListParams::default())
                .await?
                .items
                .into_iter()
                .map(Arc::new)
                .collect();
            hpa_index::HpaView::of(st, &listed)
        }
    };
    let hpa_index::HpaView { ours, foreign } = view;
    // Learned targets; a metric still waiting for its backfill keeps the one its HPA has.
    let mut learned_targets = learned.hpa_targets.clone();
    if let Some(ours) = &ours {
        learned_targets.extend(hpa::kept_targets(ours, &learned.pending));
    }
    if let Some(foreign) = foreign {
        let message = format!(
            "HPA {} already scales {} {}; ebb does not fight an HPA it does not own",
            foreign.name_any(),
            st.spec.target_ref.kind,
            st.spec.target_ref.name
        );
        conditions.set(condition("Ready", false, "ForeignHpa", &message));
        publish(ctx, st, EventType::Warning, "ForeignHpa", "Refuse", message).await;
        return Ok(None);
    }
    if let Some(pause) = paused {
        // KEDA's semantics: a paused target has no HPA; with a count, ebb sets it once.
        if ours.is_some() {
            ctx.stats.requests(1);
            match hpas.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        state_for(&mut ctx.targets.lock().expect("targets"), st).hpa_applied = None;
        if let Some(n) = pause {
            set_paused_replicas(st, ctx, n, status).await?;
        }
        conditions.set(condition(
            "Ready",
            true,
            "Paused",
            "the owned HPA is removed while paused",
        ));
        return Ok(None);
    }
    let desired = hpa::desired_hpa_with(st, &learned_targets, learned.hpa_scale_down);
    let fingerprint = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_vec(&desired)
            .unwrap_or_default()
            .hash(&mut h);
        h.finish()
    };
    let last = {
        let mut targets = ctx.targets.lock().expect("targets");
        let t = state_for(&mut targets, st);
        t.paused_applied = None;
        t.hpa_applied
    };
    let in_sync = match (&ours, last) {
        (Some(h), Some(a)) => a.desired == fingerprint && json_hash(&h.spec) == a.spec,
        _ => false,
    };
    let hpa_now = if in_sync {
        ours.as_deref().cloned().unwrap_or_default()
    } else {
        ctx.stats.requests(1);
        let applied = hpas
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(desired),
            )
            .await?;
        state_for(&mut ctx.targets.lock().expect("targets"), st).hpa_applied = Some(AppliedHpa {
            desired: fingerprint,
            spec: json_hash(&applied.spec),
        });
        applied
    };
    status.hpa_name = Some(name.clone());
    if let Some(s) = hpa_now.status {
        status.current_replicas = s.current_replicas;
        status.desired_replicas = Some(s.desired_replicas);
        status.last_scale_time = s.last_scale_time.or(status.last_scale_time.take());
        if let Some(limited) = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "ScalingLimited")
        {
            conditions.set(condition(
                "ScalingLimited",
                limited.status == "True",
                limited.reason.as_deref().unwrap_or("Unknown"),
                limited.message.as_deref().unwrap_or(""),
            ));
        }
    }
    conditions.set(condition(
        "Ready",
        true,
        "HpaSynced",
        &format!("HPA {name} is in sync"),
    ));
    conditions.set(condition(
        "Fallback",
        false,
        "NotNeeded",
        "the HPA reads ebb's metrics",
    ));
    Ok(None)
}

async fn set_paused_replicas(
    st: &ScaledTarget,
    ctx: &Context,
    n: i32,
    status: &mut ScaledTargetStatus,
) -> Result<()> {
    let done = ctx
        .targets
        .lock()
        .expect("targets")
        .get(&key(st))
        .and_then(|t| t.paused_applied);
    if done == Some(n) {
        return Ok(());
    }
    let (api, counts) = ctx.scale_of(st).await?;
    let current = counts.spec;
    if current != n {
        patch_scale(ctx, &api, st, n, counts.status).await?;
        audit(
            ctx,
            st,
            current,
            n,
            "paused-replicas",
            PAUSED_REPLICAS_ANNOTATION,
        )
        .await;
        status.last_scale_time = Some(Time(Timestamp::now()));
    }
    ctx.targets
        .lock()
        .expect("targets")
        .entry(key(st))
        .or_default()
        .paused_applied = Some(n);
    Ok(())
}

async fn patch_scale(
    ctx: &Context,
    api: &ScaleApi,
    st: &ScaledTarget,
    replicas: i32,
    status_replicas: i32,
) -> Result<()> {
    ctx.stats.requests(1);
    let scale = api
        .api
        .patch_scale(
            &st.spec.target_ref.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": { "replicas": replicas } })),
        )
        .await?;
    ctx.replicas.wrote(
        &api.kind,
        &st.namespace().unwrap_or_default(),
        &st.spec.target_ref.name,
        replicas::Counts::new(
            replicas,
            scale
                .status
                .as_ref()
                .map_or(status_replicas, |s| s.replicas),
            scale.metadata.resource_version.as_deref(),
        ),
    );
    Ok(())
}

/// Modes Direct and Shadow: the engine decides from the readings; Direct applies.
async fn reconcile_scale(
    st: &ScaledTarget,
    ctx: &Context,
    readings: &[Reading],
    paused: Option<Option<i32>>,
    conditions: &mut Conditions,
    status: &mut ScaledTargetStatus,
) -> Result<Option<Duration>> {
    let (api, counts) = ctx.scale_of(st).await?;
    let (spec_replicas, status_replicas) = (counts.spec, counts.status);
    status.current_replicas = Some(spec_replicas);
    let direct = st.spec.mode == Mode::Direct;
    if let Some(pause) = paused {
        match pause {
            Some(n) if direct => set_paused_replicas(st, ctx, n, status).await?,
            _ => {}
        }
        status.desired_replicas = Some(pause.unwrap_or(spec_replicas));
        conditions.set(condition("Ready", true, "Paused", "scaling is paused"));
        return Ok(None);
    }
    // Targets that cannot be read are a configuration error, reported and not guessed.
    let mut samples = Vec::with_capacity(readings.len());
    for (m, r) in st.spec.metrics.iter().zip(readings) {
        let target = match m.target.to_engine() {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("metric {}: {e}", m.name);
                conditions.set(condition("Ready", false, "InvalidTarget", &msg));
                return Ok(None);
            }
        };
        let observation = r
            .value
            .as_ref()
            .map(|v| to_milli(*v))
            .map_err(ReadError::no_data);
        samples.push(MetricSample {
            target,
            observation,
        });
    }
    let spec = st.spec.engine_spec();
    let now = Timestamp::now().as_millisecond();
    let replicas = Replicas {
        spec: spec_replicas,
        status: status_replicas,
        // `/scale` has no ready count; the pods that exist stand in (Value targets only).
        ready: status_replicas,
    };
    let all_failed = samples.iter().all(|s| s.observation.is_err());
    let k = key(st);
    let (decision, fallback_floor, adaptive_reasons) = {
        let mut targets = ctx.targets.lock().expect("targets");
        let t = state_for(&mut targets, st);
        t.paused_applied = None;
        update_fallback(t, st, all_failed);
        // Learning metrics: their adaptive recommendation is what the engine decides on, as an
        // equivalent load; bounds and rate limits still apply (docs/adaptive.md).
        let (decision, reasons) = if t.learning.active() {
            let loads: Vec<Option<f64>> = readings
                .iter()
                .map(|r| r.value.as_ref().ok().copied())
                .collect();
            let (equivalent, reasons) = t
                .learning
                .equivalent_samples(&spec, &samples, &loads, replicas, now);
            let all = adaptive::all_learning(&t.learning, samples.len());
            let engine = adaptive::engine_spec(spec.clone(), all);
            (
                decide(&engine, &mut t.scaling, replicas, &equivalent, now),
                reasons,
            )
        } else {
            (
                decide(&spec, &mut t.scaling, replicas, &samples, now),
                Vec::new(),
            )
        };
        let floor = match (&st.spec.fallback, t.in_fallback) {
            (Some(f), true) => Some(spec_replicas.max(f.replicas).min(st.spec.max_replicas)),
            _ => None,
        };
        (decision, floor, reasons)
    };
    // The rule that decided the winning metric, when the adaptive rules moved it.
    let learned_rule = decision
        .metric_index
        .and_then(|i| adaptive_reasons.get(i).copied().flatten())
        .filter(|r| *r != crate::engine::adaptive::AdaptiveReason::Reactive);
    // In fallback nothing scales down, and the count is at least the fallback count.
    let desired = fallback_floor.map_or(decision.desired, |f| f.max(decision.desired));
    status.desired_replicas = Some(desired);
    match fallback_floor {
        Some(f) => conditions.set(condition(
            "Fallback",
            true,
            "SourcesFailing",
            &format!("every metric failed on several polls in a row: holding at least {f} replicas, no scale-down"),
        )),
        None => conditions.set(condition("Fallback", false, "MetricsAvailable", "metrics are read normally")),
    }
    let rule = match learned_rule {
        Some(r) if decision.limited => format!("{} after {r}", decision.reason),
        Some(r) => r.to_string(),
        None => decision.reason.to_string(),
    };
    let reason = if fallback_floor.is_some() && desired != decision.desired {
        "Fallback"
    } else {
        rule.as_str()
    };
    conditions.set(condition(
        "ScalingLimited",
        decision.limited,
        decision.scaling_limited.as_str(),
        &match learned_rule {
            Some(r) => format!(
                "engine: {} (proposal {:?}, adaptive {r})",
                decision.scaling_limited, decision.proposal
            ),
            None => format!(
                "engine: {} (proposal {:?})",
                decision.scaling_limited, decision.proposal
            ),
        },
    ));
    let metric = decision
        .metric_index
        .and_then(|i| st.spec.metrics.get(i))
        .map_or("-", |m| m.name.as_str());
    let mut tried = Vec::new();
    if desired != spec_replicas {
        if direct {
            ctx.stats
                .actions
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match patch_scale(ctx, &api, st, desired, status_replicas).await {
                Ok(()) => {
                    {
                        let mut targets = ctx.targets.lock().expect("targets");
                        let t = targets.entry(k.clone()).or_default();
                        t.scaling.store_scale_event(
                            spec.behavior.as_ref(),
                            spec_replicas,
                            desired,
                            now,
                        );
                        t.scale_failures = 0;
                    }
                    audit(ctx, st, spec_replicas, desired, metric, reason).await;
                    status.last_scale_time = Some(Time(Timestamp::now()));
                    status.current_replicas = Some(desired);
                }
                Err(e) => {
                    let failures = {
                        let mut targets = ctx.targets.lock().expect("targets");
                        let t = targets.entry(k.clone()).or_default();
                        t.scale_failures += 1;
                        t.scale_failures
                    };
                    let message = format!(
                        "scaling {spec_replicas} -> {desired} failed ({failures} in a row): {e}"
                    );
                    tracing::warn!(scaledtarget = %k, %message, "scale failed");
                    publish(
                        ctx,
                        st,
                        EventType::Warning,
                        "FailedRescale",
                        "Scale",
                        message.clone(),
                    )
                    .await;
                    tried.push(message);
                    let threshold = st
                        .spec
                        .escalation
                        .as_ref()
                        .map_or(i32::MAX, |e| e.failure_threshold);
                    if failures >= threshold {
                        escalate(
                            ctx,
                            st,
                            EscalationReason::ScalingFailing,
                            spec_replicas,
                            desired,
                            decision.proposal,
                            tried.clone(),
                        )
                        .await;
                    }
                }
            }
        } else {
            let first = {
                let mut targets = ctx.targets.lock().expect("targets");
                let t = targets.entry(k.clone()).or_default();
                t.reported.replace(desired) != Some(desired)
            };
            if first {
                ctx.stats
                    .actions
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                ctx.count_action(st, spec_replicas, desired);
                let note = format!(
                    "would scale {spec_replicas} -> {desired} (metric {metric}, rule {reason}); mode Shadow changes nothing"
                );
                tracing::info!(scaledtarget = %k, old = spec_replicas, new = desired, metric, rule = reason, "shadow decision");
                record_action(ctx, st, "ShadowDecision", "Decide", note).await;
            }
        }
    }
    // Demand above maxReplicas while already there: automation cannot cope, tell a human.
    let at_max = desired >= st.spec.max_replicas
        && decision.proposal.is_some_and(|p| p > st.spec.max_replicas);
    if at_max {
        tried.push(format!("scaled to maxReplicas {}", st.spec.max_replicas));
        escalate(
            ctx,
            st,
            EscalationReason::AtMaxReplicas,
            spec_replicas,
            desired,
            decision.proposal,
            tried,
        )
        .await;
    }
    conditions.set(condition(
        "Ready",
        true,
        "Decided",
        &format!("{rule} (metric {metric})"),
    ));
    let recheck = decision
        .recheck_at
        .map(|at| Duration::from_millis((at - now).max(1000) as u64));
    Ok(recheck)
}

fn update_fallback(t: &mut TargetState, st: &ScaledTarget, all_failed: bool) {
    let Some(f) = &st.spec.fallback else {
        return;
    };
    if all_failed {
        t.failed_polls += 1;
        t.ok_polls = 0;
        if t.failed_polls >= f.failure_threshold {
            t.in_fallback = true;
        }
    } else {
        t.failed_polls = 0;
        // Leaving fallback takes as many good polls in a row as entering it took failed ones,
        // so a flapping source does not toggle between fallback and normal.
        if t.in_fallback {
            t.ok_polls += 1;
            if t.ok_polls >= f.failure_threshold {
                t.in_fallback = false;
                t.ok_polls = 0;
            }
        }
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
    record_action(ctx, st, "Scaled", "Scale", note).await;
}

/// Creates one Normal Event per action. The audit trail needs each action's own note: kube's
/// [`Recorder`] folds events with the same reason into a series of the first one, which keeps
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
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    ctx.writer.publish(event, st.object_ref(&())).await;
}

async fn escalate(
    ctx: &Context,
    st: &ScaledTarget,
    reason: EscalationReason,
    current: i32,
    desired: i32,
    demanded: Option<i32>,
    tried: Vec<String>,
) {
    let Some(e) = &st.spec.escalation else {
        return;
    };
    let message = match reason {
        EscalationReason::AtMaxReplicas => format!(
            "{} is at maxReplicas {} and the metrics ask for {}",
            key(st),
            st.spec.max_replicas,
            demanded.unwrap_or(desired)
        ),
        EscalationReason::ScalingFailing => format!("{}: scaling keeps failing", key(st)),
    };
    let payload = EscalationPayload {
        scaled_target: key(st),
        reason,
        message: message.clone(),
        current_replicas: current,
        desired_replicas: desired,
        demanded_replicas: demanded,
        max_replicas: st.spec.max_replicas,
        tried,
    };
    let ns = st.namespace().unwrap_or_default();
    match ctx
        .escalator
        .escalate(
            &ctx.client,
            &ns,
            &e.webhook_secret_ref.name,
            e.min_interval.into(),
            &payload,
        )
        .await
    {
        Ok(true) => {
            tracing::warn!(scaledtarget = %key(st), ?reason, %message, "escalated");
            publish(
                ctx,
                st,
                EventType::Warning,
                "Escalated",
                "Escalate",
                message,
            )
            .await;
        }
        Ok(false) => {}
        Err(err) => tracing::warn!(scaledtarget = %key(st), error = %err, "escalation failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn target_with_fallback(threshold: i32) -> ScaledTarget {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ebb.dev/v1alpha1",
            "kind": "ScaledTarget",
            "metadata": { "name": "t", "namespace": "n" },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "t" },
                "maxReplicas": 5,
                "metrics": [],
                "fallback": { "failureThreshold": threshold, "replicas": 2 }
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_flapping_source_does_not_toggle_fallback() {
        let st = target_with_fallback(3);
        let mut t = TargetState::default();
        for _ in 0..2 {
            update_fallback(&mut t, &st, true);
        }
        assert!(!t.in_fallback, "two failures are below the threshold");
        update_fallback(&mut t, &st, true);
        assert!(t.in_fallback);
        // Flapping: ok, fail, ok, ok, fail ... never three good polls in a row.
        for failed in [false, true, false, false, true, false, true] {
            update_fallback(&mut t, &st, failed);
            assert!(t.in_fallback, "left fallback on a flapping source");
        }
        for _ in 0..3 {
            update_fallback(&mut t, &st, false);
        }
        assert!(!t.in_fallback, "three good polls in a row end fallback");
        // A single failure afterwards does not re-enter it.
        update_fallback(&mut t, &st, true);
        assert!(!t.in_fallback);
    }
}
