//! Collection: polls each distinct query once per interval, whoever asks for it, and keeps the
//! latest result of each in memory for the metrics API and the engine.
//!
//! - **Dedupe**: subscribers [`Collector::register`] a resolved [`Query`]; identical queries
//!   (same source, address, query, credentials: the `Hash`/`Eq` of [`Query`]) share one slot,
//!   ref-counted by its [`Subscription`]s, polled at the shortest interval any subscriber asked
//!   for. 100 ScaledTargets asking the same thing cost one upstream query per interval.
//! - **Bounded load**: fetches to one upstream (a Prometheus address, a broker) run under a
//!   per-upstream semaphore ([`CollectorOptions::max_concurrency_per_upstream`]); a query whose
//!   previous fetch still runs is skipped for that round rather than piled up.
//! - **Memory reads**: [`Subscription::get`] and [`Collector::get`] read the cache under a
//!   short lock, never awaiting and never querying upstream. Every value carries when it was
//!   fetched and when the query last succeeded ([`CachedValue`]), so readers can judge its age
//!   ([`Subscription::stale_after`]); `ebb_source_value_age_seconds` exposes the oldest.
//! - **History**: none kept here; [`Subscription::source_history`] asks the source's own
//!   (Prometheus range queries), see [`crate::history`].
//!
//! Timeouts are the sources' own (each query has one); a failure is cached as the error it
//! is, next to the last good value, never as a number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::history;
use crate::source::{Connections, Query, Source, SourceError};
use crate::telemetry::{ErrorLabels, SourceLabels, Telemetry};

/// A cached outcome is stale once this many polling intervals, plus the query's timeout, have
/// passed since it was fetched: two refreshes in a row have not landed (a stalled scheduler,
/// an upstream whose queue keeps fetches waiting), so it no longer says what the source says now.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// Tuning of the collector.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// Concurrent fetches per upstream (Prometheus address or broker).
    pub max_concurrency_per_upstream: usize,
    /// How often the scheduler looks for due queries: the resolution of intervals.
    pub tick: Duration,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        Self {
            max_concurrency_per_upstream: 16,
            tick: Duration::from_millis(250),
        }
    }
}

/// The latest outcome of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedValue {
    /// The value, or why there is none.
    pub result: Result<f64, SourceError>,
    /// When the fetch was due (queueing for the upstream's semaphore included in what follows).
    pub due_at: Instant,
    /// When the fetch finished.
    pub fetched_at: Instant,
    /// `fetched_at` on the wall clock (for API timestamps).
    pub timestamp: SystemTime,
    /// The last successful value and when it was fetched, kept across failures.
    pub last_ok: Option<(f64, Instant)>,
}

impl CachedValue {
    /// Time since this outcome was fetched.
    pub fn age(&self) -> Duration {
        self.fetched_at.elapsed()
    }

    /// Time since the last successful fetch (`None`: never succeeded).
    pub fn value_age(&self) -> Option<Duration> {
        self.last_ok.map(|(_, at)| at.elapsed())
    }
}

/// One distinct query being polled.
struct Slot {
    query: Arc<Query>,
    source: Arc<dyn Source>,
    upstream: Arc<Semaphore>,
    labels: SourceLabels,
    schedule: Mutex<Schedule>,
    value: RwLock<Option<CachedValue>>,
    created_at: Instant,
}

struct Schedule {
    /// One entry per subscriber: the slot runs at the shortest.
    intervals: Vec<Duration>,
    next_due: Instant,
    in_flight: bool,
}

impl Schedule {
    fn interval(&self) -> Duration {
        self.intervals
            .iter()
            .copied()
            .min()
            .unwrap_or(Duration::MAX)
    }
}

struct Inner {
    connections: Connections,
    slots: Mutex<HashMap<Arc<Query>, Arc<Slot>>>,
    upstreams: Mutex<HashMap<String, Arc<Semaphore>>>,
    options: CollectorOptions,
    telemetry: Arc<Telemetry>,
    /// Subscriptions alive.
    subscriptions: AtomicUsize,
    /// Wakes the scheduler early when a new query is registered (its first fetch is due now).
    wake: Notify,
}

/// The polling scheduler and its cache. Cheap to clone; the scheduler task stops when the
/// last clone and the last [`Subscription`] are dropped.
#[derive(Clone)]
pub struct Collector {
    inner: Arc<Inner>,
}

impl Collector {
    /// Starts the scheduler on the current tokio runtime.
    pub fn start(telemetry: Arc<Telemetry>, options: CollectorOptions) -> Self {
        let inner = Arc::new(Inner {
            connections: Connections::new(),
            slots: Mutex::default(),
            upstreams: Mutex::default(),
            options,
            telemetry,
            subscriptions: AtomicUsize::new(0),
            wake: Notify::new(),
        });
        tokio::spawn(run_scheduler(Arc::downgrade(&inner)));
        Self { inner }
    }

    /// Subscribes to `query`, polled at least every `interval`. The first subscriber to a
    /// query creates its source (failing only on unusable configuration) and triggers an
    /// immediate fetch; later ones share both.
    /// Call from within the tokio runtime the collector was started on.
    pub fn register(&self, query: Query, interval: Duration) -> Result<Subscription, SourceError> {
        let inner = &self.inner;
        let now = Instant::now();
        let mut slots = inner.slots.lock().expect("slots lock");
        let slot = match slots.get(&query) {
            Some(slot) => {
                let mut schedule = slot.schedule.lock().expect("schedule lock");
                schedule.intervals.push(interval);
                schedule.next_due = schedule.next_due.min(now + interval);
                slot.clone()
            }
            None => {
                let source = inner.connections.source_for(&query)?;
                let upstream = inner
                    .upstreams
                    .lock()
                    .expect("upstreams lock")
                    .entry(query.upstream())
                    .or_insert_with(|| {
                        Arc::new(Semaphore::new(
                            inner.options.max_concurrency_per_upstream.max(1),
                        ))
                    })
                    .clone();
                let query = Arc::new(query);
                let slot = Arc::new(Slot {
                    labels: SourceLabels {
                        source: query.kind().as_str(),
                    },
                    query: query.clone(),
                    source,
                    upstream,
                    schedule: Mutex::new(Schedule {
                        intervals: vec![interval],
                        next_due: now,
                        in_flight: false,
                    }),
                    value: RwLock::new(None),
                    created_at: now,
                });
                slots.insert(query, slot.clone());
                inner.wake.notify_one();
                slot
            }
        };
        inner.subscriptions.fetch_add(1, Ordering::Relaxed);
        inner.update_gauges(&slots);
        drop(slots);
        Ok(Subscription {
            inner: self.inner.clone(),
            slot,
            interval,
        })
    }

    /// The cached outcome of `query`, if anyone subscribes to it and it was fetched once.
    pub fn get(&self, query: &Query) -> Option<CachedValue> {
        let slot = self
            .inner
            .slots
            .lock()
            .expect("slots lock")
            .get(query)?
            .clone();
        slot.read()
    }

    /// How many distinct queries are polled.
    pub fn distinct_queries(&self) -> usize {
        self.inner.slots.lock().expect("slots lock").len()
    }

    /// The telemetry this collector records into.
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.inner.telemetry
    }
}

impl Slot {
    fn read(&self) -> Option<CachedValue> {
        self.value.read().expect("value lock").clone()
    }
}

impl Inner {
    /// Gauges kept up to date on (un)registration, in O(1): registering thousands of targets
    /// must not rescan every slot each time.
    fn update_gauges(&self, slots: &HashMap<Arc<Query>, Arc<Slot>>) {
        let collect = &self.telemetry.collect;
        collect.distinct_queries.set(slots.len() as i64);
        collect
            .subscriptions
            .set(self.subscriptions.load(Ordering::Relaxed) as i64);
    }

    /// Starts the fetches that are due, and refreshes the value-age gauges.
    fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let mut due = Vec::new();
        let mut oldest: HashMap<&'static str, Duration> = HashMap::new();
        {
            let slots = self.slots.lock().expect("slots lock");
            for slot in slots.values() {
                let mut schedule = slot.schedule.lock().expect("schedule lock");
                if schedule.next_due <= now {
                    let interval = schedule.interval();
                    // Keep the phase; after a stall, start again from now.
                    let next = schedule.next_due + interval;
                    schedule.next_due = if next <= now { now + interval } else { next };
                    if schedule.in_flight {
                        self.telemetry.collect.skipped.inc();
                    } else {
                        schedule.in_flight = true;
                        due.push((slot.clone(), now));
                    }
                }
                drop(schedule);
                let last_ok = slot
                    .value
                    .read()
                    .expect("value lock")
                    .as_ref()
                    .and_then(|v| v.last_ok);
                let since_ok = match last_ok {
                    Some((_, at)) => now - at,
                    None => now - slot.created_at,
                };
                let entry = oldest.entry(slot.labels.source).or_default();
                *entry = (*entry).max(since_ok);
            }
        }
        for (source, age) in oldest {
            self.telemetry
                .sources
                .value_age
                .get_or_create(&SourceLabels { source })
                .set(age.as_secs_f64());
        }
        for (slot, due_at) in due {
            tokio::spawn(fetch(self.clone(), slot, due_at));
        }
    }
}

/// The scheduler loop: one tick per [`CollectorOptions::tick`], or sooner when a query is
/// registered. Holds the collector weakly so it ends with it.
async fn run_scheduler(inner: Weak<Inner>) {
    loop {
        let (tick, woken) = {
            let Some(inner) = inner.upgrade() else { return };
            inner.tick();
            (inner.options.tick, Arc::clone(&inner))
        };
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = woken.wake.notified() => {}
        }
        drop(woken);
    }
}

/// One fetch of one slot, under its upstream's semaphore.
async fn fetch(inner: Arc<Inner>, slot: Arc<Slot>, due_at: Instant) {
    let result = {
        let _permit = slot
            .upstream
            .acquire()
            .await
            .expect("semaphores are never closed");
        let started = Instant::now();
        let span = tracing::debug_span!("source_query", query = %slot.query.describe());
        let result = slot.source.fetch().instrument(span).await;
        let sources = &inner.telemetry.sources;
        sources
            .query_duration
            .get_or_create(&slot.labels)
            .observe(started.elapsed().as_secs_f64());
        inner
            .telemetry
            .collect
            .upstream_queries
            .get_or_create(&slot.labels)
            .inc();
        if let Err(e) = &result {
            sources
                .errors
                .get_or_create(&ErrorLabels {
                    source: slot.labels.source,
                    kind: e.kind(),
                })
                .inc();
            tracing::debug!(query = %slot.query.describe(), error = %e, "metric query failed");
        }
        result
    };
    let fetched_at = Instant::now();
    let timestamp = SystemTime::now();
    {
        let mut value = slot.value.write().expect("value lock");
        let last_ok = match &result {
            Ok(v) => Some((*v, fetched_at)),
            Err(_) => value.as_ref().and_then(|c| c.last_ok),
        };
        *value = Some(CachedValue {
            result,
            due_at,
            fetched_at,
            timestamp,
            last_ok,
        });
    }
    slot.schedule.lock().expect("schedule lock").in_flight = false;
}

/// A subscriber's hold on a polled query. Dropping it unsubscribes; the query stops being
/// polled when its last subscription is gone.
pub struct Subscription {
    inner: Arc<Inner>,
    slot: Arc<Slot>,
    interval: Duration,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("query", &self.slot.query.describe())
            .field("interval", &self.interval)
            .finish()
    }
}

impl Subscription {
    /// The latest outcome (`None` until the first fetch finished). Reads memory only.
    pub fn get(&self) -> Option<CachedValue> {
        self.slot.read()
    }

    /// How old the cached outcome may be before it is stale: [`STALE_AFTER_INTERVALS`] of the
    /// interval the query is polled at (the shortest any subscriber asked for), plus its timeout
    /// (a fetch may take that long to land).
    pub fn stale_after(&self) -> Duration {
        let interval = self.slot.schedule.lock().expect("schedule lock").interval();
        interval
            .saturating_mul(STALE_AFTER_INTERVALS)
            .saturating_add(self.slot.query.timeout())
    }

    /// Unsubscribes (the same as dropping the subscription).
    pub fn unregister(self) {}

    /// The query this subscribes to.
    pub fn query(&self) -> &Query {
        &self.slot.query
    }

    /// The query's past values from its source's own history at `step` over `window` ending at
    /// `now` (Unix seconds), as [`history::backfill`]: `Ok(None)` when the source keeps no
    /// history (RabbitMQ).
    pub fn source_history(
        &self,
        window: Duration,
        now: i64,
        step: Duration,
    ) -> futures::future::BoxFuture<'static, Result<Option<crate::source::Points>, SourceError>>
    {
        let source = self.slot.source.clone();
        Box::pin(async move { history::backfill(source.as_ref(), window, now, step).await })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut slots = self.inner.slots.lock().expect("slots lock");
        let now_unused = {
            let mut schedule = self.slot.schedule.lock().expect("schedule lock");
            if let Some(i) = schedule.intervals.iter().position(|i| *i == self.interval) {
                schedule.intervals.swap_remove(i);
            }
            schedule.intervals.is_empty()
        };
        if now_unused {
            slots.remove(&self.slot.query);
        }
        self.inner.subscriptions.fetch_sub(1, Ordering::Relaxed);
        self.inner.update_gauges(&slots);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::PrometheusConfig;

    #[tokio::test]
    async fn a_value_goes_stale_after_three_intervals_of_the_shortest_subscriber_plus_the_timeout()
    {
        let collector = Collector::start(Arc::new(Telemetry::new()), Default::default());
        let config = PrometheusConfig {
            address: "http://127.0.0.1:9".into(),
            query: "up".into(),
            auth_secret_ref: None,
            timeout: Some("2s".into()),
            empty_as: None,
            ..Default::default()
        };
        let query = Query::Prometheus(config.resolve(None).unwrap());
        let slow = collector
            .register(query.clone(), Duration::from_secs(30))
            .unwrap();
        assert_eq!(slow.stale_after(), Duration::from_secs(92));
        let fast = collector.register(query, Duration::from_secs(5)).unwrap();
        assert_eq!(slow.stale_after(), Duration::from_secs(17));
        drop(fast);
        assert_eq!(slow.stale_after(), Duration::from_secs(92));
    }
}
