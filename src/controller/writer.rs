//! Writes that follow a decision but must not delay the next one: Events (the audit trail) and
//! ScaledTarget status.
//!
//! A poll's only write on its own path is the one that acts (`/scale`, the owned HPA). When
//! thousands of targets act together, an Event and a status write per target would triple the
//! requests each poll waits on, and the queue of due polls would drain at a third of the rate.
//! Here they go through a bounded queue drained by a few writers at a time:
//! - Events are queued in order and never dropped (a full queue makes the poll wait: back
//!   pressure, not loss); each keeps the time of the action as its `eventTime`.
//! - Status is coalesced per target: only the newest status of a target waits, and a target
//!   holds at most one place in the queue, so under pressure status writes shrink to one per
//!   target instead of piling up.
//!
//! - A status is written only while this replica holds the lease: once it is lost, the new
//!   leader's status must not be overwritten by an old one still queued here. Events stay:
//!   each records an action this replica did take, and the audit trail keeps it.
//!
//! At shutdown [`Writer::flush`] gives what is queued a bounded time to land.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

use super::events::{EventSeries, Notice};
use super::leader::Leadership;
use super::stats::ControllerStats;
use crate::crd::{ScaledTarget, ScaledTargetStatus};

/// Writes in flight at once. Fewer than the polls in flight: these may wait, polls should not.
pub const WRITE_CONCURRENCY: usize = 16;

/// Writes waiting at most (an Event waiting is about 1 KiB: a few MiB in all); beyond this,
/// queuing one makes the poll wait. When the API server cannot absorb the writes, the lag grows
/// rather than the memory.
const QUEUE_CAPACITY: usize = 8_192;

enum Job {
    /// An Event of its own (an action of the audit trail).
    Create {
        namespace: String,
        event: Box<K8sEvent>,
    },
    /// An Event that folds its repeats into a series (warnings that repeat).
    Publish {
        notice: Box<Notice>,
        regarding: Box<k8s_openapi::api::core::v1::ObjectReference>,
    },
    /// The newest status queued for this target (`namespace/name`).
    Status(String),
}

struct PendingStatus {
    namespace: String,
    name: String,
    /// Shared with the target's state until written (`TargetState::status`).
    status: Arc<ScaledTargetStatus>,
    /// Failed writes of this status so far.
    failures: u8,
}

/// Tries of one status write; a status is rewritten anyway when it changes (or every
/// `status::REFRESH`).
const STATUS_TRIES: u8 = 3;

struct Shared {
    client: kube::Client,
    events: Arc<EventSeries>,
    stats: Arc<ControllerStats>,
    leadership: Leadership,
    statuses: Mutex<HashMap<String, PendingStatus>>,
    /// To queue a retry; weak, so that dropping the Writer still stops the workers.
    retry: mpsc::WeakSender<Job>,
    /// Jobs queued or in flight (for [`Writer::flush`]).
    outstanding: AtomicUsize,
}

/// The queue of deferred writes; cheap to share.
pub struct Writer {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the writers on the current Tokio runtime; they stop when the Writer is dropped.
    pub fn start(
        client: kube::Client,
        events: Arc<EventSeries>,
        stats: Arc<ControllerStats>,
        leadership: Leadership,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            retry: tx.downgrade(),
            client,
            events,
            stats,
            leadership,
            statuses: Mutex::default(),
            outstanding: AtomicUsize::new(0),
        });
        let worker = shared.clone();
        tokio::spawn(async move {
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|j| (j, rx)) })
                .for_each_concurrent(WRITE_CONCURRENCY, |job| {
                    let shared = worker.clone();
                    async move {
                        shared.run(job).await;
                        shared.outstanding.fetch_sub(1, Ordering::AcqRel);
                    }
                })
                .await;
        });
        Self { tx, shared }
    }

    async fn enqueue(&self, job: Job) {
        self.shared.outstanding.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(job).await.is_err() {
            self.shared.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Queues an Event to be created as it is.
    pub async fn create_event(&self, namespace: String, event: K8sEvent) {
        self.enqueue(Job::Create {
            namespace,
            event: Box::new(event),
        })
        .await;
    }

    /// Queues an Event that folds its repeats into a series ([`EventSeries`]).
    pub async fn publish(
        &self,
        notice: Notice,
        regarding: k8s_openapi::api::core::v1::ObjectReference,
    ) {
        self.enqueue(Job::Publish {
            notice: Box::new(notice),
            regarding: Box::new(regarding),
        })
        .await;
    }

    /// Queues `status` as the one to write for `st`, replacing any not yet written.
    pub async fn write_status(&self, st: &ScaledTarget, status: Arc<ScaledTargetStatus>) {
        use kube::ResourceExt;
        let namespace = st.namespace().unwrap_or_default();
        let name = st.name_any();
        let key = format!("{namespace}/{name}");
        let queued = self
            .shared
            .statuses
            .lock()
            .expect("statuses")
            .insert(
                key.clone(),
                PendingStatus {
                    namespace,
                    name,
                    status,
                    failures: 0,
                },
            )
            .is_some();
        if !queued {
            self.enqueue(Job::Status(key)).await;
        }
    }

    /// Drops a target's status that is not yet written (the target is gone).
    pub fn forget(&self, key: &str) {
        self.shared.statuses.lock().expect("statuses").remove(key);
    }

    /// Writes not yet done (queued or in flight).
    pub fn outstanding(&self) -> usize {
        self.shared.outstanding.load(Ordering::Acquire)
    }

    /// Waits until every queued write is done, or `timeout` has passed; returns what is left.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.outstanding() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.outstanding()
    }
}

impl Shared {
    /// Queues a failed status again, unless a newer one is already waiting.
    async fn requeue_status(&self, key: String, mut p: PendingStatus) {
        p.failures += 1;
        {
            let mut statuses = self.statuses.lock().expect("statuses");
            if statuses.contains_key(&key) {
                return;
            }
            statuses.insert(key.clone(), p);
        }
        if let Some(tx) = self.retry.upgrade() {
            self.outstanding.fetch_add(1, Ordering::AcqRel);
            if tx.send(Job::Status(key)).await.is_err() {
                self.outstanding.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    async fn run(&self, job: Job) {
        match job {
            Job::Create { namespace, event } => {
                self.stats.requests(1);
                let events = Api::<K8sEvent>::namespaced(self.client.clone(), &namespace);
                if let Err(e) = events.create(&PostParams::default(), &event).await {
                    tracing::warn!(namespace, error = %e, note = ?event.note, "could not record an action Event");
                }
            }
            Job::Publish { notice, regarding } => {
                self.stats.requests(1);
                if let Err(e) = self.events.publish(&notice, &regarding).await {
                    tracing::warn!(error = %e, reason = notice.reason, "could not publish an Event");
                }
            }
            Job::Status(key) => {
                let Some(p) = self.statuses.lock().expect("statuses").remove(&key) else {
                    return; // forgotten: the target is gone
                };
                if !self.leadership.is_leader() {
                    tracing::debug!(scaledtarget = %key, "lease lost: status left to the leader");
                    return;
                }
                self.stats.requests(1);
                let api = Api::<ScaledTarget>::namespaced(self.client.clone(), &p.namespace);
                let patch = Patch::Merge(serde_json::json!({ "status": &*p.status }));
                match api
                    .patch_status(&p.name, &PatchParams::default(), &patch)
                    .await
                {
                    Ok(_) => {}
                    // Deleted meanwhile: nothing to report on.
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(scaledtarget = %key, error = %e, "status write failed");
                        if p.failures + 1 < STATUS_TRIES {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            self.requeue_status(key, p).await;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Writer whose API server is a closed port: every write it tries fails, and counts.
    fn writer(leader: bool) -> (Writer, Arc<ControllerStats>) {
        let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let events = Arc::new(EventSeries::new(
            client.clone(),
            kube::runtime::events::Reporter {
                controller: "ebb-test".into(),
                instance: None,
            },
        ));
        let stats = Arc::new(ControllerStats::default());
        let w = Writer::start(client, events, stats.clone(), Leadership::fixed(leader));
        (w, stats)
    }

    fn target() -> ScaledTarget {
        serde_json::from_value(crate::crd::example_json()).unwrap()
    }

    #[tokio::test]
    async fn a_status_is_written_by_the_leader_only() {
        for leader in [true, false] {
            let (w, stats) = writer(leader);
            w.write_status(&target(), Arc::default()).await;
            assert_eq!(w.flush(Duration::from_secs(10)).await, 0);
            let tried = stats.api_requests.load(Ordering::Relaxed);
            // The leader tries it (and retries: the server is down); a standby never does.
            assert_eq!(tried > 0, leader, "leader {leader}: {tried} requests");
        }
    }
}
