//! Leader election with a `coordination.k8s.io/v1` Lease: one replica acts, all replicas watch,
//! read metrics and serve the API.
//!
//! This follows client-go's `tools/leaderelection/leaderelection.go` (kubernetes/client-go):
//! - **Expiry is timed locally.** A replica never compares the holder's `renewTime` with its own
//!   clock (a replica whose clock is an hour ahead would see every lease as expired). It records
//!   the moment, on its own clock, at which it last saw the Lease record change (holder,
//!   `renewTime` or resourceVersion: client-go's `observedRawRecord` / `observedTime`), and
//!   takes the lease over only when the record has not changed for `leaseDurationSeconds` since
//!   then (client-go's `isLeaseValid`). Clock offsets between replicas therefore do not matter;
//!   only clock *rates* do, and the ratio of lease duration to renew deadline is the tolerance
//!   (client-go's doc.go).
//! - **Renew deadline < lease duration.** The holder renews every retry period; when no renewal
//!   has succeeded for the renew deadline (measured from the start of the last renewal that
//!   succeeded), it stops acting, even while a request hangs (client-go's `renew`, a
//!   `PollImmediateUntil` bounded by `RenewDeadline`). Another replica waits a whole lease
//!   duration from the last change it saw, which it saw after that renewal was written: by then
//!   the old holder has stopped.
//! - **Jitter.** A replica waiting to acquire retries every retry period stretched by a random
//!   factor up to 1.2 (client-go's `wait.JitterUntil(..., RetryPeriod, JitterFactor=1.2, ...)`),
//!   so standbys do not hit the API server in step.
//!
//! The clock is injectable ([`Clock`]): "now" for the local timing and the wall-clock stamps
//! written into the Lease come from it, so a test can skew one replica's clock.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

/// client-go's `JitterFactor`: a standby waits up to 1.2 retry periods more between tries.
pub const JITTER_FACTOR: f64 = 1.2;

/// Where time comes from: the local timing of the election and the stamps written into the
/// Lease. Implementations must advance at the real rate (the timers are real); their offset
/// from true time may be anything.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The time now on this replica's clock.
    fn now(&self) -> Timestamp;
}

/// The system clock, made monotonic: the wall time at creation plus the monotonic time since
/// (as Go's `time.Now()` carries a monotonic reading), so a step of the wall clock does not
/// stretch or shrink a lease. `offset` skews it (tests; zero in production).
#[derive(Debug, Clone)]
pub struct SystemClock {
    wall: Timestamp,
    start: std::time::Instant,
    offset: SignedDuration,
}

impl SystemClock {
    /// The system clock as it is.
    pub fn new() -> Self {
        Self::skewed(SignedDuration::ZERO)
    }

    /// The system clock moved by `offset` (positive: ahead).
    pub fn skewed(offset: SignedDuration) -> Self {
        Self {
            wall: Timestamp::now(),
            start: std::time::Instant::now(),
            offset,
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).unwrap_or(SignedDuration::MAX);
        self.wall
            .saturating_add(elapsed)
            .and_then(|t| t.saturating_add(self.offset))
            .unwrap_or(self.wall)
    }
}

/// Where the lease lives, who we are and the election's timing.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This process's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal (written as `leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// The holder stops acting when no renewal succeeded for this long; shorter than the lease.
    pub renew_deadline: Duration,
    /// Time between tries (jittered while waiting to acquire).
    pub retry_period: Duration,
    /// This replica's clock.
    pub clock: Arc<dyn Clock>,
}

impl LeaseConfig {
    /// A lease of `lease_duration` with client-go's proportions (15 s / 10 s / 2 s by default
    /// there): renew deadline 2/3 of the lease, a try every 1/6 of it (four tries before the
    /// deadline), on the system clock.
    pub fn new(namespace: &str, name: &str, identity: &str, lease_duration: Duration) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(1));
        Self {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration / 6,
            clock: Arc::new(SystemClock::new()),
        }
    }

    /// client-go's validation (`NewLeaderElector`): lease duration > renew deadline >
    /// jitter factor x retry period.
    pub fn validate(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err("the lease duration must be longer than the renew deadline".into());
        }
        if self.renew_deadline.as_secs_f64() <= JITTER_FACTOR * self.retry_period.as_secs_f64() {
            return Err(format!(
                "the renew deadline must be longer than {JITTER_FACTOR} x the retry period"
            ));
        }
        Ok(())
    }
}

/// Whether this process holds the lease now.
#[derive(Debug, Clone)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// True while this process holds the lease.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Leadership that never changes (a single replica without election, tests).
    pub fn fixed(leader: bool) -> Self {
        let (tx, rx) = watch::channel(leader);
        // Keep the sender alive for the process's life: the value never changes.
        std::mem::forget(tx);
        Self(rx)
    }
}

/// A running election: its leadership flag, and a handle that stops it (without releasing
/// the lease: the holder just stops renewing, as a process that dies).
#[derive(Debug)]
pub struct Elector {
    /// The leadership flag.
    pub leadership: Leadership,
    task: tokio::task::JoinHandle<()>,
    tx: Arc<watch::Sender<bool>>,
}

impl Elector {
    /// Stops renewing and stops acting at once.
    pub fn stop(self) {
        self.task.abort();
        let _ = self.tx.send(false);
    }
}

/// Starts the election loop on the current runtime and returns the leadership flag.
pub fn elect(client: kube::Client, config: LeaseConfig) -> Leadership {
    start(client, config).leadership
}

/// As [`elect`], with a handle that stops the election.
pub fn start(client: kube::Client, config: LeaseConfig) -> Elector {
    if let Err(e) = config.validate() {
        tracing::warn!(error = %e, "leader election timing is unsafe");
    }
    let (tx, rx) = watch::channel(false);
    let tx = Arc::new(tx);
    let task = tokio::spawn(run(client, config, tx.clone()));
    Elector {
        leadership: Leadership(rx),
        task,
        tx,
    }
}

/// What identifies one version of the Lease record: any change restarts the local timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey {
    /// `spec.holderIdentity` (empty: released).
    pub holder: String,
    /// `spec.renewTime` as written by the holder (compared, never timed).
    pub renew_time: Option<Timestamp>,
    /// `metadata.resourceVersion`.
    pub resource_version: Option<String>,
}

impl RecordKey {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.as_ref();
        Self {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            renew_time: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }
}

/// The last record seen and when, on the local clock (client-go's `observedRecord` and
/// `observedTime`). The pure part of the election.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    record: Option<RecordKey>,
    at: Option<Timestamp>,
    duration: Duration,
}

impl Observation {
    /// Sees `record` (valid for `duration` from its last change) at local time `now`: the
    /// timer restarts only when the record differs from the last one seen.
    pub fn see(&mut self, record: RecordKey, duration: Duration, now: Timestamp) {
        if self.record.as_ref() != Some(&record) {
            self.record = Some(record);
            self.at = Some(now);
        }
        self.duration = duration;
    }

    /// The holder of the record last seen.
    pub fn holder(&self) -> Option<&str> {
        self.record.as_ref().map(|r| r.holder.as_str())
    }

    /// True while the record last seen has changed within its duration before `now` (both on
    /// the local clock: client-go's `isLeaseValid`).
    pub fn valid(&self, now: Timestamp) -> bool {
        match self.at {
            Some(at) => elapsed(at, now) < self.duration,
            None => false,
        }
    }
}

/// Time from `from` to `to` on one clock (zero if it went back).
fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

/// True when the holder must stop acting: its last renewal that succeeded started at
/// `last_renew` and the renew deadline has passed since (all on the local clock).
pub fn renew_deadline_passed(last_renew: Timestamp, now: Timestamp, deadline: Duration) -> bool {
    elapsed(last_renew, now) >= deadline
}

/// The wait before the next try: the retry period, stretched by up to `JITTER_FACTOR` while
/// not leading (client-go's `wait.Jitter`).
fn next_wait(retry: Duration, leading: bool) -> Duration {
    if leading {
        return retry;
    }
    // A cheap uniform draw: the sub-second nanoseconds of the system time.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let r = f64::from(nanos % 1_000_000) / 1_000_000.0;
    retry.mul_f64(1.0 + r * JITTER_FACTOR)
}

async fn run(client: kube::Client, config: LeaseConfig, tx: Arc<watch::Sender<bool>>) {
    let api = Api::<Lease>::namespaced(client, &config.namespace);
    let clock = config.clock.clone();
    let mut observed = Observation::default();
    // Local start of the last renewal that succeeded, while leading.
    let mut last_renew: Option<Timestamp> = None;
    loop {
        let started = clock.now();
        // A holder's try may not outlive its renew deadline: it must step down on time even
        // when the API server does not answer.
        let limit = match last_renew {
            Some(at) => config
                .renew_deadline
                .saturating_sub(elapsed(at, started))
                .max(Duration::from_millis(1)),
            None => config.lease_duration,
        };
        let outcome = tokio::time::timeout(
            limit,
            try_acquire_or_renew(&api, &config, &mut observed, started),
        )
        .await;
        let leading = match outcome {
            Ok(Ok(true)) => {
                if last_renew.is_none() {
                    tracing::info!(identity = %config.identity, lease = %config.name, "became leader");
                }
                last_renew = Some(started);
                true
            }
            Ok(Ok(false)) => {
                if last_renew.is_some() {
                    tracing::warn!(identity = %config.identity, holder = ?observed.holder(), "lost the lease to another replica");
                }
                last_renew = None;
                false
            }
            Ok(Err(_)) | Err(_) => {
                if let Ok(Err(e)) = &outcome {
                    tracing::warn!(error = %e, "lease renewal failed");
                } else {
                    tracing::warn!("lease renewal timed out");
                }
                match last_renew {
                    Some(at) if renew_deadline_passed(at, clock.now(), config.renew_deadline) => {
                        tracing::warn!(identity = %config.identity, "renew deadline passed: stop acting");
                        last_renew = None;
                        false
                    }
                    Some(_) => true,
                    None => false,
                }
            }
        };
        if *tx.borrow() != leading {
            let _ = tx.send(leading);
        }
        let mut wait = next_wait(config.retry_period, leading);
        if let Some(at) = last_renew {
            // Wake at the deadline at the latest, to step down on time.
            let left = config
                .renew_deadline
                .saturating_sub(elapsed(at, clock.now()));
            wait = wait.min(left);
        }
        tokio::time::sleep(wait).await;
    }
}

/// One round (client-go's `tryAcquireOrRenew`): create the lease, renew ours, or take over one
/// whose record has not changed for its duration on our clock. `Ok(true)`: we hold it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Observation,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let duration_secs = config.lease_duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                observed.see(RecordKey::of(&created), config.lease_duration, now);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let record_duration = lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .map_or(config.lease_duration, |d| {
            Duration::from_secs(d.max(0) as u64)
        });
    observed.see(RecordKey::of(&lease), record_duration, now);
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == config.identity;
    if !holder.is_empty() && !ours && observed.valid(now) {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(duration_secs);
    // `replace` carries the resourceVersion we read: if another replica wrote in between, the
    // API server answers 409 and this round is lost, never both.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(written) => {
            observed.see(RecordKey::of(&written), config.lease_duration, now);
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn record(holder: &str, renew: Timestamp, rv: &str) -> RecordKey {
        RecordKey {
            holder: holder.into(),
            renew_time: Some(renew),
            resource_version: Some(rv.into()),
        }
    }

    const LEASE: Duration = Duration::from_secs(15);

    #[test]
    fn a_record_that_keeps_changing_stays_valid_whatever_its_renew_time_says() {
        let mut o = Observation::default();
        // The holder's clock is an hour behind ours: its renewTime is long past on our clock.
        let behind = SignedDuration::from_hours(1);
        for t in (0..120).step_by(2) {
            let now = at(t);
            o.see(record("a", now - behind, &t.to_string()), LEASE, now);
            assert!(o.valid(now), "renewed at {t} s");
        }
    }

    #[test]
    fn a_record_expires_a_lease_duration_after_it_was_last_seen_to_change() {
        let mut o = Observation::default();
        // The holder's clock is an hour ahead: its renewTime lies in our future for ever.
        let ahead = SignedDuration::from_hours(1);
        let last = record("a", at(0) + ahead, "7");
        o.see(last.clone(), LEASE, at(0));
        for t in 1..15 {
            o.see(last.clone(), LEASE, at(t));
            assert!(o.valid(at(t)), "{t} s after the last change");
        }
        o.see(last, LEASE, at(15));
        assert!(!o.valid(at(15)), "a whole lease duration without a change");
    }

    #[test]
    fn a_replica_that_starts_waits_a_whole_lease_duration_from_its_first_look() {
        let mut o = Observation::default();
        assert!(!o.valid(at(0)), "nothing seen: free to create");
        // A record renewed long ago by the holder's clock; we see it only now.
        o.see(record("a", at(-3600), "1"), LEASE, at(100));
        assert!(o.valid(at(100)));
        assert!(o.valid(at(114)));
        assert!(!o.valid(at(115)));
    }

    #[test]
    fn the_holder_steps_down_at_its_renew_deadline_before_anyone_may_take_over() {
        let deadline = Duration::from_secs(10);
        // The holder's last successful renewal started at 0; the write landed and a standby
        // saw it change at 0.5 on its own clock (offset by anything).
        assert!(!renew_deadline_passed(at(0), at(9), deadline));
        assert!(renew_deadline_passed(at(0), at(10), deadline));
        let mut standby = Observation::default();
        let standby_offset = SignedDuration::from_hours(-1);
        let seen = at(0) + standby_offset + SignedDuration::from_millis(500);
        standby.see(record("a", at(0), "9"), LEASE, seen);
        // The standby may take over only 15 s after it saw the change: well after the holder
        // stopped at 10 s.
        let holder_stops = at(10);
        let earliest_takeover = seen + SignedDuration::from_secs(15);
        assert!(standby.valid(holder_stops + standby_offset));
        assert!(!standby.valid(earliest_takeover));
        assert!(earliest_takeover - standby_offset > holder_stops);
    }

    #[test]
    fn the_default_timing_passes_client_go_s_validation() {
        for secs in [1, 4, 15, 60] {
            let c = LeaseConfig::new("ns", "ebb", "a", Duration::from_secs(secs));
            c.validate().unwrap();
        }
        let mut bad = LeaseConfig::new("ns", "ebb", "a", Duration::from_secs(15));
        bad.renew_deadline = bad.lease_duration;
        assert!(bad.validate().is_err());
        bad.renew_deadline = Duration::from_secs(2);
        assert!(bad.validate().is_err(), "2 s is not above 1.2 x 2.5 s");
    }

    #[test]
    fn standbys_jitter_their_tries_and_the_holder_does_not() {
        let retry = Duration::from_secs(2);
        assert_eq!(next_wait(retry, true), retry);
        for _ in 0..100 {
            let w = next_wait(retry, false);
            assert!(
                w >= retry && w <= retry.mul_f64(1.0 + JITTER_FACTOR),
                "{w:?}"
            );
        }
    }

    #[test]
    fn a_skewed_clock_is_offset_and_runs_at_the_real_rate() {
        let real = SystemClock::new();
        let skewed = SystemClock::skewed(SignedDuration::from_hours(1));
        let gap = skewed.now().duration_since(real.now());
        assert!((gap - SignedDuration::from_hours(1)).abs() < SignedDuration::from_secs(1));
        let a = skewed.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = skewed.now();
        assert!(b.duration_since(a) >= SignedDuration::from_millis(20));
    }
}
