//! Escalation: a webhook, from a Secret (`url`, optional `headers` as `Name: value` lines,
//! optional `timeoutSeconds`, default 10), called when a target sits at maxReplicas while demand
//! exceeds it, or when scaling keeps failing.
//!
//! Off the decision path: a poll only queues the escalation ([`EscalationQueue::send`], never
//! waits); a worker task of its own reads the Secret and calls the webhook. A dead or hanging
//! pager therefore costs the polls nothing.
//! - **Bounded**: at most [`QUEUE_CAPACITY`] escalations wait; one more is dropped (counted), as
//!   is one whose target and reason are already queued or being retried.
//! - **Retries with backoff**: up to [`MAX_ATTEMPTS`] calls per escalation.
//! - **Rate limit per target that counts attempts**: a target's next call, whichever escalation
//!   it carries, waits `BACKOFF_BASE * 2^(failures in a row)` (capped at [`BACKOFF_CAP`],
//!   jittered) after its last call, failed or not; a delivery resets the count. So a pager that
//!   answers 500 or hangs is called less and less often, never once per poll.
//! - The decision machine still asks at most once per `minInterval` per target and reason
//!   (`engine::target`).
//!
//! Counted in `ebb_escalations_total{result="delivered|failed|dropped"}` and
//! `ebb_escalation_attempts_total`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;

use super::events::{EventSeries, Notice};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::leader::Leadership;
use super::metrics::ControllerMetrics;
use crate::engine::conditions as cond;
use crate::source::Secrets;

pub use crate::engine::target::EscalationReason;

/// Escalations that may wait at once.
pub const QUEUE_CAPACITY: usize = 256;
/// Escalations being delivered at once (each may wait for its target's rate limit).
pub const CONCURRENCY: usize = 16;
/// Calls per escalation before it counts as failed.
pub const MAX_ATTEMPTS: u32 = 5;
/// The wait after a target's call when its previous call succeeded.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// The longest wait between two calls for one target.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// A call's timeout when the Secret has no `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook's JSON body: what is wrong and what ebb tried.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EscalationPayload {
    /// `namespace/name` of the ScaledTarget.
    pub scaled_target: String,
    /// Why ebb escalates.
    pub reason: EscalationReason,
    /// A sentence for humans.
    pub message: String,
    /// Replicas now.
    pub current_replicas: i32,
    /// Replicas ebb wanted.
    pub desired_replicas: i32,
    /// The metrics' unbounded demand, when known.
    pub demanded_replicas: Option<i32>,
    /// The ScaledTarget's maxReplicas.
    pub max_replicas: i32,
    /// What ebb did before escalating.
    pub tried: Vec<String>,
    /// A stalled scale-up: what the pods say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallReport>,
}

/// The diagnosis of a stalled scale-up, in a webhook's body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StallReport {
    /// `Unschedulable`, `CrashLoopBackOff`, `ImagePullBackOff`, `OOMKilled`,
    /// `CreateContainerConfigError`, `ReadinessProbeFailing` or `Unknown`.
    pub pattern: &'static str,
    /// One affected pod's own words (the scheduler's message, the container's reason).
    pub message: String,
    /// Pods showing the pattern (at most five).
    pub pods: Vec<String>,
    /// Replicas asked for, Ready, not Ready.
    pub wanted: i32,
    pub ready: i32,
    pub not_ready: i32,
    /// When the scale-up that stalled was seen, and when it was found stalled (RFC 3339).
    pub scaled_at: String,
    pub since: String,
}

impl StallReport {
    /// From the machine's diagnosis (times in Unix milliseconds).
    pub fn new(s: &crate::engine::stall::Stall) -> Self {
        let time = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default()
        };
        Self {
            pattern: s.pattern.as_str(),
            message: s.message.clone(),
            pods: s.pods.clone(),
            wanted: s.wanted,
            ready: s.ready,
            not_ready: s.not_ready,
            scaled_at: time(s.scaled_at),
            since: time(s.since),
        }
    }
}

/// One escalation to deliver.
#[derive(Debug, Clone)]
pub struct Job {
    /// Namespace of the ScaledTarget (and of the Secret).
    pub namespace: String,
    /// The Secret with the webhook.
    pub secret_name: String,
    /// The ScaledTarget, for the Events.
    pub regarding: ObjectReference,
    /// The body.
    pub payload: EscalationPayload,
}

impl Job {
    fn pending_key(&self) -> (String, String) {
        (
            self.payload.scaled_target.clone(),
            self.payload.reason.as_str().to_string(),
        )
    }
}

/// The wait after a target's call, given its failures in a row (0 after a success) and a draw
/// `r` in `[0, 1)`: `BACKOFF_BASE * 2^failures`, capped, drawn from its upper half.
pub fn call_gap(failures: u32, r: f64) -> Duration {
    let d = BACKOFF_BASE
        .saturating_mul(1 << failures.min(16))
        .min(BACKOFF_CAP);
    d.mul_f64(0.5 + 0.5 * r.clamp(0.0, 1.0))
}

/// A target's calls: when the next may start, and failures in a row.
#[derive(Debug, Default, Clone, Copy)]
struct TargetCalls {
    next: Option<Instant>,
    failures: u32,
}

struct Shared {
    secrets: Secrets,
    http: reqwest::Client,
    events: Arc<EventSeries>,
    leadership: Leadership,
    metrics: ControllerMetrics,
    /// `(target, reason)` queued or being retried.
    pending: Mutex<HashSet<(String, String)>>,
    /// Per target (`namespace/name`).
    calls: Mutex<HashMap<String, TargetCalls>>,
}

/// The queue of escalations and its worker (see the module docs). Cheap to share.
pub struct EscalationQueue {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

impl EscalationQueue {
    /// Starts the worker on the current Tokio runtime; it stops when the queue is dropped.
    pub fn start(
        secrets: Secrets,
        events: Arc<EventSeries>,
        leadership: Leadership,
        metrics: ControllerMetrics,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let shared = Arc::new(Shared {
            secrets,
            http: reqwest::Client::new(),
            events,
            leadership,
            metrics,
            pending: Mutex::default(),
            calls: Mutex::default(),
        });
        let worker = shared.clone();
        tokio::spawn(async move {
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|j| (j, rx)) })
                .for_each_concurrent(CONCURRENCY, |job| {
                    let shared = worker.clone();
                    async move { shared.deliver(job).await }
                })
                .await;
        });
        Self { tx, shared }
    }

    /// Queues `job` without waiting. Dropped (and counted) when the queue is full or the same
    /// escalation is already on its way. Returns whether it was queued.
    pub fn send(&self, job: Job) -> bool {
        let key = job.pending_key();
        if !self
            .shared
            .pending
            .lock()
            .expect("pending")
            .insert(key.clone())
        {
            self.shared.metrics.escalation("dropped");
            tracing::debug!(scaledtarget = %key.0, reason = %key.1, "escalation already on its way");
            return false;
        }
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(_) => {
                self.shared.pending.lock().expect("pending").remove(&key);
                self.shared.metrics.escalation("dropped");
                tracing::warn!(scaledtarget = %key.0, reason = %key.1, "escalation queue full: dropped");
                false
            }
        }
    }
}

impl Shared {
    /// Delivers one escalation: up to [`MAX_ATTEMPTS`] calls, each when its target's rate limit
    /// allows.
    async fn deliver(&self, job: Job) {
        let key = job.pending_key();
        let target = key.0.clone();
        let mut result = "failed";
        let mut last_error = String::new();
        for attempt in 1..=MAX_ATTEMPTS {
            let next = self
                .calls
                .lock()
                .expect("calls")
                .get(&target)
                .and_then(|c| c.next);
            if let Some(at) = next {
                tokio::time::sleep_until(at).await;
            }
            // Escalating is acting: a replica that lost the lease leaves it to the leader.
            if !self.leadership.is_leader() {
                result = "dropped";
                break;
            }
            self.metrics.escalation_attempt();
            let outcome = self.call(&job).await;
            let delivered = outcome.is_ok();
            {
                let mut calls = self.calls.lock().expect("calls");
                let c = calls.entry(target.clone()).or_default();
                c.failures = if delivered { 0 } else { c.failures + 1 };
                c.next = Some(Instant::now() + call_gap(c.failures, jitter()));
            }
            match outcome {
                Ok(()) => {
                    result = "delivered";
                    break;
                }
                Err(e) => {
                    tracing::warn!(scaledtarget = %target, attempt, error = %e, "escalation call failed");
                    last_error = e;
                }
            }
        }
        self.pending.lock().expect("pending").remove(&key);
        self.metrics.escalation(result);
        let (type_, reason, note) = match result {
            "delivered" => {
                tracing::warn!(scaledtarget = %target, reason = ?job.payload.reason, message = %job.payload.message, "escalated");
                (
                    EventType::Warning,
                    cond::EVENT_ESCALATED,
                    job.payload.message.clone(),
                )
            }
            "failed" => (
                EventType::Warning,
                cond::EVENT_ESCALATION_FAILED,
                format!(
                    "escalation ({:?}) not delivered after {MAX_ATTEMPTS} calls: {last_error}",
                    job.payload.reason
                ),
            ),
            _ => return,
        };
        let notice = Notice {
            type_,
            reason,
            action: "Escalate",
            note,
        };
        if let Err(e) = self.events.publish(&notice, &job.regarding).await {
            tracing::warn!(scaledtarget = %target, error = %e, "escalation Event not recorded");
        }
    }

    /// One call: the Secret, then the webhook.
    async fn call(&self, job: &Job) -> Result<(), String> {
        let data = self
            .secrets
            .data(&job.namespace, &job.secret_name)
            .await
            .map_err(|e| e.to_string())?;
        let text = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
        };
        let url =
            text("url").ok_or_else(|| format!("secret {} has no key \"url\"", job.secret_name))?;
        let timeout = text("timeoutSeconds")
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64);
        let mut request = self.http.post(&url).timeout(timeout).json(&job.payload);
        for line in text("headers").unwrap_or_default().lines() {
            if let Some((name, value)) = line.split_once(':') {
                request = request.header(name.trim(), value.trim());
            }
        }
        request
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map(|_| ())
            .map_err(|e| format!("webhook {url}: {e}"))
    }
}

/// A uniform draw in `[0, 1)` (spreads retries; not for secrets).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_calls_back_off_with_its_failures_up_to_a_cap() {
        assert_eq!(call_gap(0, 0.0), Duration::from_millis(500));
        assert_eq!(call_gap(0, 0.999_999), BACKOFF_BASE.mul_f64(0.9999995));
        assert_eq!(call_gap(3, 0.0), Duration::from_secs(4));
        let mut last = Duration::ZERO;
        for n in 0..20 {
            let gap = call_gap(n, 0.0);
            assert!(gap >= last && gap <= BACKOFF_CAP, "{n}: {gap:?}");
            last = gap;
        }
        assert_eq!(call_gap(40, 0.0), BACKOFF_CAP / 2);
    }
}
