//! What a failed poll means, by kind.
//!
//! - **Transient** (timeouts, connection errors, 5xx, 409 conflicts, 429): the next try may
//!   succeed. The target is tried again after an exponential backoff with jitter, capped, kept
//!   per target (1 s, 2 s, 4 s, ... up to [`TRANSIENT_CAP`], each drawn from its upper half), and
//!   reset by the next poll that succeeds, or cut short when the API server answers again after
//!   an outage (one probe, not every target's retries, finds out: [`super::recovery`]).
//! - **Permanent** (the workload does not exist, its kind has no `/scale`, ebb is forbidden to
//!   read or write it, the kind is not served): nothing changes until someone fixes the spec, the
//!   workload or ebb's RBAC. The leader writes `Ready=False` with a reason and a message that says
//!   what to fix (even though the poll failed before its status), and the target is polled again
//!   after [`PERMANENT_RETRY`], or at once when its spec changes.
//!
//! Both are counted in `ebb_reconcile_errors_total{kind, reason}`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::status::{Conditions, condition};
use super::{Context, ControllerError, Schedule, key, state_for};
use crate::crd::{ScaledTarget, ScaledTargetStatus};
use crate::engine::conditions as cond;

/// Least wait before a transient failure is tried again.
pub const TRANSIENT_BASE: Duration = Duration::from_secs(1);
/// Most wait before a transient failure is tried again.
pub const TRANSIENT_CAP: Duration = Duration::from_secs(60);
/// Wait before a target that failed permanently is polled again (a spec change polls at once).
pub const PERMANENT_RETRY: Duration = Duration::from_secs(60);

/// Transient or permanent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// May succeed when tried again.
    Transient,
    /// Needs a fix by someone.
    Permanent,
}

impl Kind {
    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Transient => "transient",
            Kind::Permanent => "permanent",
        }
    }
}

/// A failure, classified: its kind, a reason (a condition reason for permanent ones, from
/// `engine::conditions`) and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    /// Transient or permanent.
    pub kind: Kind,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What happened and, for permanent failures, what to fix.
    pub message: String,
}

/// Classifies `error`, met while polling `st`. `None`: not a failure (the lease was lost, and
/// the new leader acts; or the count moved under a write, and the next poll decides again).
pub fn classify(error: &ControllerError, st: &ScaledTarget) -> Option<Classified> {
    let t = &st.spec.target_ref;
    let workload = format!("{} {}", t.kind, t.name);
    let ns = st.namespace().unwrap_or_default();
    let transient = |reason, message: String| Classified {
        kind: Kind::Transient,
        reason,
        message,
    };
    let permanent = |reason, message: String| Classified {
        kind: Kind::Permanent,
        reason,
        message,
    };
    Some(match error {
        ControllerError::LeaseLost | ControllerError::CountChanged { .. } => return None,
        ControllerError::NoScale(kind) => permanent(
            cond::NO_SCALE_SUBRESOURCE,
            format!(
                "{kind} has no /scale subresource: spec.targetRef must name a kind with /scale \
                 (Deployment, StatefulSet, ReplicaSet, or a custom resource whose CRD enables \
                 subresources.scale)"
            ),
        ),
        ControllerError::UnknownKind(kind, e) => match api_code(e) {
            Some(c) if retriable(c) => transient(cond::API_UNAVAILABLE, format!("{kind}: {e}")),
            None if !matches!(e, kube::Error::Discovery(_)) => {
                transient(cond::API_UNAVAILABLE, format!("{kind}: {e}"))
            }
            _ => permanent(
                cond::UNKNOWN_KIND,
                format!(
                    "the API server does not serve {kind}: fix spec.targetRef's apiVersion and \
                     kind, or install the CRD that defines it ({e})"
                ),
            ),
        },
        ControllerError::Kube(e) => match api_code(e) {
            Some(404) => permanent(
                cond::TARGET_NOT_FOUND,
                format!(
                    "{workload} not found in namespace {ns}: create it, or fix spec.targetRef \
                     ({})",
                    api_message(e)
                ),
            ),
            Some(403) => permanent(
                cond::FORBIDDEN,
                format!(
                    "ebb may not do what scaling {workload} needs: {}; grant that to ebb's \
                     ServiceAccount (deploy/rbac-controller.yaml has every rule ebb needs)",
                    api_message(e)
                ),
            ),
            Some(c) if retriable(c) => transient(
                cond::API_UNAVAILABLE,
                format!("{workload}: {}", api_message(e)),
            ),
            // Other refusals (400, 422, ...) will not pass by retrying either.
            Some(_) => permanent(
                cond::REJECTED,
                format!(
                    "the API server rejected ebb's request for {workload}: {}",
                    api_message(e)
                ),
            ),
            // Timeouts, connections, decoding: the network or the server, not the spec.
            None => transient(cond::API_UNAVAILABLE, format!("{workload}: {e}")),
        },
        ControllerError::Escalation(m) => transient(cond::API_UNAVAILABLE, m.clone()),
    })
}

/// 5xx, 409 (a conflict: someone wrote in between), 429 (throttled), 401 (credentials being
/// rotated) and 408 are worth another try.
fn retriable(code: u16) -> bool {
    code >= 500 || matches!(code, 401 | 408 | 409 | 429)
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

/// True when `error` will not pass by retrying.
pub fn is_permanent(error: &ControllerError, st: &ScaledTarget) -> bool {
    classify(error, st).is_some_and(|c| c.kind == Kind::Permanent)
}

/// The wait after the `n`-th transient failure in a row (1-based): `TRANSIENT_BASE * 2^(n-1)`,
/// capped at `TRANSIENT_CAP`, drawn from `[d/2, d]` with `r` in `[0, 1)` so that targets that
/// failed together do not retry together.
pub fn transient_backoff(n: u32, r: f64) -> Duration {
    let exp = n.saturating_sub(1).min(16);
    let d = TRANSIENT_BASE.saturating_mul(1 << exp).min(TRANSIENT_CAP);
    d.mul_f64(0.5 + 0.5 * r.clamp(0.0, 1.0))
}

/// A uniform draw in `[0, 1)` (not for secrets: spreads retries).
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    f64::from(nanos % 1_000_000) / 1_000_000.0
}

/// One target's transient failures in a row.
#[derive(Debug)]
struct Streak {
    /// Failures in a row.
    count: u32,
    /// When the last one was met.
    last: Instant,
    /// The target, to poll it again when the API server answers after an outage.
    target: ObjectRef<ScaledTarget>,
}

#[derive(Debug, Default)]
struct Streaks {
    by_target: HashMap<String, Streak>,
    /// The probe found the API server not answering while targets back off.
    down: bool,
}

/// Failures in a row per target, for the backoff, and what the API server probe saw of an
/// outage while any target backs off ([`super::recovery`]).
#[derive(Debug, Default)]
pub(super) struct Failures {
    streaks: Mutex<Streaks>,
    /// Wakes the probe when a first target starts backing off.
    backing_off: tokio::sync::Notify,
}

impl Failures {
    /// A transient failure of `target` (keyed `key`) at `at`; returns its failures in a row.
    pub(super) fn record(&self, key: &str, target: ObjectRef<ScaledTarget>, at: Instant) -> u32 {
        let mut s = self.streaks.lock().expect("failures");
        let first = s.by_target.is_empty();
        let streak = s.by_target.entry(key.to_string()).or_insert(Streak {
            count: 0,
            last: at,
            target,
        });
        streak.count = streak.count.saturating_add(1);
        streak.last = at;
        let n = streak.count;
        if first {
            self.backing_off.notify_one();
        }
        n
    }

    /// A poll of `key` succeeded, failed permanently, or the target is gone.
    pub(super) fn clear(&self, key: &str) {
        let mut s = self.streaks.lock().expect("failures");
        s.by_target.remove(key);
        if s.by_target.is_empty() {
            s.down = false;
        }
    }

    /// Returns once some target is backing off.
    pub(super) async fn any_backing_off(&self) {
        loop {
            if !self.streaks.lock().expect("failures").by_target.is_empty() {
                return;
            }
            // `notify_one` keeps a permit when nobody waits: a first failure recorded between
            // the check and this wait is not missed.
            self.backing_off.notified().await;
        }
    }

    /// What a probe of the API server found at `at`: when it answers after having been found
    /// down, the outage is over, and every target whose streak was met before now is handed
    /// back to be polled at once, its streak forgotten (the failures were the outage's). A
    /// probe that answers without an outage seen changes nothing: those targets fail for
    /// their own reasons and keep their backoff.
    /// Each is handed back with its key.
    pub(super) fn probed(
        &self,
        answered: bool,
        at: Instant,
    ) -> Vec<(String, ObjectRef<ScaledTarget>)> {
        let mut s = self.streaks.lock().expect("failures");
        if !answered {
            s.down = true;
            return Vec::new();
        }
        if !std::mem::take(&mut s.down) {
            return Vec::new();
        }
        let mut resumed = Vec::new();
        s.by_target.retain(|key, streak| {
            let through_outage = streak.last <= at;
            if through_outage {
                resumed.push((key.clone(), streak.target.clone()));
            }
            !through_outage
        });
        resumed
    }
}

/// kube-runtime's error policy: classify, count, tell (permanent failures on the leader:
/// `Ready=False`), and wait as the kind asks.
pub fn error_policy(
    st: Arc<ScaledTarget>,
    error: &ControllerError,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    use kube::runtime::controller::Action;
    let Some(c) = classify(error, &st) else {
        // The lease moved: the next regular poll, as a standby.
        return Action::requeue(st.spec.polling_interval());
    };
    ctx.metrics.reconcile_error(c.kind.label(), c.reason);
    let wait = match c.kind {
        Kind::Transient => {
            let n = ctx
                .failures
                .record(&key(&st), ObjectRef::from_obj(&*st), Instant::now());
            let wait = transient_backoff(n, jitter());
            tracing::warn!(scaledtarget = %key(&st), reason = c.reason, failures = n, retry_in = ?wait, error = %c.message, "poll failed (transient)");
            wait
        }
        Kind::Permanent => {
            ctx.failures.clear(&key(&st));
            tracing::warn!(scaledtarget = %key(&st), reason = c.reason, error = %c.message, "poll failed (permanent)");
            if ctx.leadership.is_leader() {
                let ctx = ctx.clone();
                let st = st.clone();
                tokio::spawn(async move { not_ready(&ctx, &st, &c).await });
            }
            PERMANENT_RETRY
        }
    };
    // Wake-ups before then for the same object (our own status write) do no work.
    let spec = ctx.spec_of(&st);
    let mut targets = ctx.targets.lock().expect("targets");
    state_for(&mut targets, &st).scheduled = Some(Schedule {
        due: std::time::Instant::now() + wait,
        uid: st.metadata.uid.clone(),
        generation: st.metadata.generation,
        paused: spec.pause,
    });
    Action::requeue(wait)
}

/// Queues `Ready=False` with the failure's reason and message, on top of the last status.
async fn not_ready(ctx: &Context, st: &ScaledTarget, c: &Classified) {
    let previous = ctx.last_status(st);
    let mut conditions = Conditions::from_status(previous.as_ref());
    conditions.set(condition(cond::READY, false, c.reason, &c.message));
    let status = ScaledTargetStatus {
        conditions: conditions.into_vec(),
        observed_generation: st.metadata.generation,
        ..previous.clone().unwrap_or_default()
    };
    if super::status::worth_writing(previous.as_ref(), &status) {
        let status = Arc::new(status);
        state_for(&mut ctx.targets.lock().expect("targets"), st).queue_status(status.clone());
        ctx.writer.write_status(st, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st() -> ScaledTarget {
        serde_json::from_value(crate::crd::example_json()).unwrap()
    }

    fn api(code: u16, message: &str) -> ControllerError {
        ControllerError::Kube(kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: message.into(),
            ..Default::default()
        })))
    }

    #[test]
    fn errors_are_classified_by_what_would_fix_them() {
        let st = st();
        let kind = |e: &ControllerError| classify(e, &st).map(|c| (c.kind, c.reason));
        for code in [409, 429, 500, 503, 504] {
            assert_eq!(
                kind(&api(code, "x")),
                Some((Kind::Transient, cond::API_UNAVAILABLE)),
                "{code}"
            );
        }
        assert_eq!(
            kind(&api(404, "deployments.apps \"web\" not found")),
            Some((Kind::Permanent, cond::TARGET_NOT_FOUND))
        );
        assert_eq!(
            kind(&api(403, "forbidden")),
            Some((Kind::Permanent, cond::FORBIDDEN))
        );
        assert_eq!(
            kind(&ControllerError::NoScale("v1/ConfigMap".into())),
            Some((Kind::Permanent, cond::NO_SCALE_SUBRESOURCE))
        );
        assert_eq!(kind(&ControllerError::LeaseLost), None);
        let unserved = |e| ControllerError::UnknownKind("example.com/v1/Widget".into(), e);
        let missing_kind =
            kube::Error::Discovery(kube::error::DiscoveryError::MissingKind("Widget".into()));
        assert_eq!(
            kind(&unserved(missing_kind)),
            Some((Kind::Permanent, cond::UNKNOWN_KIND))
        );
        let group_404 = kube::Error::Api(Box::new(kube::core::Status {
            code: 404,
            ..Default::default()
        }));
        assert_eq!(
            kind(&unserved(group_404)),
            Some((Kind::Permanent, cond::UNKNOWN_KIND))
        );
        let busy = kube::Error::Api(Box::new(kube::core::Status {
            code: 503,
            ..Default::default()
        }));
        assert_eq!(
            kind(&unserved(busy)),
            Some((Kind::Transient, cond::API_UNAVAILABLE))
        );
        let missing = classify(&api(404, "not found"), &st).unwrap();
        assert!(
            missing
                .message
                .contains("Deployment web not found in namespace shop")
                && missing.message.contains("spec.targetRef"),
            "{}",
            missing.message
        );
    }

    #[test]
    fn transient_backoff_doubles_with_jitter_up_to_its_cap() {
        assert_eq!(
            transient_backoff(1, 0.999_999),
            Duration::from_secs(1).mul_f64(0.9999995)
        );
        assert_eq!(transient_backoff(1, 0.0), Duration::from_millis(500));
        assert_eq!(transient_backoff(3, 0.0), Duration::from_secs(2));
        let mut last = Duration::ZERO;
        for n in 1..12 {
            let hi = transient_backoff(n, 0.999_999);
            assert!(hi >= last, "not growing at {n}");
            assert!(hi <= TRANSIENT_CAP);
            last = hi;
        }
        assert!(transient_backoff(100, 0.999_999) > TRANSIENT_CAP.mul_f64(0.99));
        assert_eq!(transient_backoff(100, 0.0), TRANSIENT_CAP / 2);
    }

    fn target(name: &str) -> ObjectRef<ScaledTarget> {
        ObjectRef::new(name).within("shop")
    }

    #[test]
    fn an_outage_seen_by_the_probe_ends_the_backoffs_it_caused() {
        let failures = Failures::default();
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        // Two targets fail through an outage; their streaks grow.
        for at in [0, 1, 3, 7] {
            assert!(failures.record("shop/a", target("a"), s(at)) >= 1);
        }
        assert_eq!(failures.record("shop/b", target("b"), s(5)), 1);
        // The probe finds the server down, then up: both are handed back, their streaks gone.
        assert!(failures.probed(false, s(8)).is_empty());
        assert!(failures.probed(false, s(9)).is_empty());
        let mut resumed = failures.probed(true, s(10));
        resumed.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            resumed,
            [
                ("shop/a".into(), target("a")),
                ("shop/b".into(), target("b"))
            ]
        );
        assert_eq!(
            failures.record("shop/a", target("a"), s(11)),
            1,
            "streak restarts"
        );
        // One outage, one resumption: later answers leave that new streak to its backoff.
        assert!(failures.probed(true, s(12)).is_empty());
    }

    #[test]
    fn failures_while_the_server_answers_keep_their_backoff() {
        let failures = Failures::default();
        let t0 = Instant::now();
        let s = |secs: u64| t0 + Duration::from_secs(secs);
        failures.record("shop/a", target("a"), s(0));
        assert!(failures.probed(true, s(1)).is_empty());
        assert_eq!(failures.record("shop/a", target("a"), s(2)), 2);
        // A failure met after the answer that ends an outage is not the outage's.
        failures.probed(false, s(3));
        failures.record("shop/b", target("b"), s(5));
        let resumed = failures.probed(true, s(4));
        assert_eq!(resumed, [("shop/a".into(), target("a"))]);
        assert_eq!(failures.record("shop/b", target("b"), s(6)), 2);
        // Once no target backs off, an outage seen before is forgotten.
        failures.probed(false, s(7));
        failures.clear("shop/b");
        failures.record("shop/c", target("c"), s(8));
        assert!(failures.probed(true, s(9)).is_empty());
    }
}
