//! Events that fold their repeats into a series (`events.k8s.io/v1`): the first occurrence is
//! created, a repeat within [`SERIES_TTL`] (same type, reason, action and object) patches the
//! first one's `series` (count, last observed time). This is what kube-runtime's `Recorder`
//! does, kept smaller: per series ebb keeps only the Event's name, its count and when it was
//! last seen, where the Recorder keeps the whole Event (about 700 bytes with its object
//! reference, 3.6 MB at 5,000 targets in the peers bench), scans every series on every publish
//! under one write lock, and never gives back its table's room after a burst.
//!
//! An Event's note cannot change once created (the API server's update validation for
//! `events.k8s.io/v1`), so a series keeps its first note; the audit trail's actions, whose
//! notes each matter, are Events of their own (`Writer::create_event`).

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};

/// A repeat this long after the last one starts a new Event (kube-runtime's and client-go's
/// choice).
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// Series older than [`SERIES_TTL`] are dropped at most this often.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// An Event to publish: its reason and action are this crate's names (`status::cond`).
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    warning: bool,
    reason: &'static str,
    action: &'static str,
    /// The object's uid, or `namespace/name` when the reference has none.
    regarding: Box<str>,
}

#[derive(Debug)]
struct Series {
    /// The first Event's name.
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

#[derive(Debug, Default)]
struct Table {
    series: HashMap<SeriesKey, Series>,
    swept: Option<Timestamp>,
}

/// Publishes Events, folding repeats into series. One per controller, shared by its writers.
pub struct EventSeries {
    client: kube::Client,
    reporter: Reporter,
    table: Mutex<Table>,
}

impl EventSeries {
    pub fn new(client: kube::Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            table: Mutex::default(),
        }
    }

    /// Publishes `notice` about `regarding` now.
    pub async fn publish(
        &self,
        notice: &Notice,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        self.publish_at(Timestamp::now(), notice, regarding).await
    }

    /// Publishes `notice` about `regarding` as at `now` (tests step the clock).
    pub async fn publish_at(
        &self,
        now: Timestamp,
        notice: &Notice,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let key = SeriesKey {
            warning: matches!(notice.type_, EventType::Warning),
            reason: notice.reason,
            action: notice.action,
            regarding: match &regarding.uid {
                Some(uid) => uid.as_str().into(),
                None => format!(
                    "{}/{}",
                    regarding.namespace.as_deref().unwrap_or_default(),
                    regarding.name.as_deref().unwrap_or_default()
                )
                .into(),
            },
        };
        let repeat = {
            let mut table = self.table.lock().expect("event series");
            table.sweep(now);
            table
                .series
                .get(&key)
                .filter(|s| now.duration_since(s.last) < SERIES_TTL)
                .map(|s| (s.name.clone(), s.count + 1))
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events = Api::<K8sEvent>::namespaced(self.client.clone(), namespace);
        // The series as it stands after this publish: its first Event's name and its count.
        let (name, count) = match repeat {
            Some((name, count)) => {
                let patch = serde_json::json!({
                    "series": { "count": count, "lastObservedTime": MicroTime(now) }
                });
                match events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    Ok(_) => (name, count),
                    // The first Event is gone (its own TTL, or deleted): a new series.
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        (self.create(&events, now, notice, regarding).await?, 1)
                    }
                    Err(e) => return Err(e),
                }
            }
            None => (self.create(&events, now, notice, regarding).await?, 1),
        };
        let mut table = self.table.lock().expect("event series");
        match table.series.get_mut(&key) {
            // Another publish of the same series may have raced this one: keep the higher count.
            Some(s) if s.name == name => {
                s.count = s.count.max(count);
                s.last = now;
            }
            _ => {
                table.series.insert(
                    key,
                    Series {
                        name,
                        count,
                        last: now,
                    },
                );
            }
        }
        Ok(())
    }

    /// Creates the first Event of a series; returns its name.
    async fn create(
        &self,
        events: &Api<K8sEvent>,
        now: Timestamp,
        notice: &Notice,
        regarding: &ObjectReference,
    ) -> Result<Box<str>, kube::Error> {
        let name = format!(
            "{}.{:x}",
            regarding
                .name
                .as_deref()
                .unwrap_or(&self.reporter.controller),
            now.as_nanosecond()
        );
        let event = K8sEvent {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                namespace: regarding.namespace.clone(),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(match notice.type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            reason: Some(notice.reason.into()),
            action: Some(notice.action.into()),
            note: Some(notice.note.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        events.create(&PostParams::default(), &event).await?;
        Ok(name.into())
    }

    /// Series open now (tests).
    pub fn open_series(&self) -> usize {
        self.table.lock().expect("event series").series.len()
    }
}

impl Table {
    /// Drops the series past [`SERIES_TTL`], at most every [`SWEEP_EVERY`], and gives back the
    /// table's room once it is mostly empty.
    fn sweep(&mut self, now: Timestamp) {
        if self
            .swept
            .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.swept = Some(now);
        self.series
            .retain(|_, s| now.duration_since(s.last) < SERIES_TTL);
        if self.series.capacity() > 2 * self.series.len() + 16 {
            self.series.shrink_to_fit();
        }
    }
}
