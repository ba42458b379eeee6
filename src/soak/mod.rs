//! The fault soak: ebb under moving load and overlapping, repeated faults, judged from the
//! cluster's own record.
//!
//! On a local stack of its own (control plane with the HPA controller and an audit log of
//! `/scale` writes, Prometheus, RabbitMQ), [`run`] starts two `ebb serve` replicas behind one
//! Service-like proxy, creates ScaledTargets in all three modes over Deployments, moves their
//! load (Prometheus series by remote write, RabbitMQ backlogs), and carries out a fault
//! schedule drawn from a seed ([`schedule`]). It samples the targets' status, ebb's memory and
//! file descriptors, and at the end reads the audit log and ebb's `Scaled` Events to count
//! ([`audit::check`]): scale-downs while a source failed, actions taken twice, replica changes
//! without their Event. Those three must be zero.
//!
//! `cargo bench --bench soak` runs it (20 minutes by default); `tests/soak.rs` runs the short
//! profile with a fixed seed and asserts the zeros.

pub mod audit;
pub mod proxy;
pub mod schedule;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use serde_json::json;
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

use crate::crd::ScaledTarget;
use crate::engine::conditions as cond;
use crate::localstack::kube::{ControlPlane, ControlPlaneOptions};
use crate::localstack::process::{ManagedProcess, free_port};
use crate::localstack::prometheus::Prometheus;
use crate::localstack::rabbitmq::RabbitMq;
use crate::localstack::{Stack, StackOptions};
use audit::{FailingWindow, ScaledEvent};
use proxy::Proxy;
use schedule::{Fault, FaultKind, Profile};

/// The namespace of the soak's workloads and ScaledTargets.
const NAMESPACE: &str = "soak";
/// ebb's user on the local control plane (deploy/'s ServiceAccount).
const EBB_USER: &str = "system:serviceaccount:ebb-system:ebb";
/// The ScaledTargets' polling interval.
const INTERVAL: Duration = Duration::from_secs(5);
/// How often the Prometheus series are pushed (and the lookback of the queries over them).
const PUSH_EVERY: Duration = Duration::from_secs(5);
const LOOKBACK_SECONDS: u64 = 20;
/// How often the RabbitMQ backlogs move.
const BACKLOG_EVERY: Duration = Duration::from_secs(30);
/// Each pod's share of the load (AverageValue target).
const PER_POD: f64 = 10.0;
/// ebb's timeout for a Prometheus query (the default).
const QUERY_TIMEOUT: Duration = crate::source::prometheus::DEFAULT_TIMEOUT;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub profile: Profile,
    pub seed: u64,
    /// ScaledTargets in all (4 in 10 Direct, 4 in 10 Hpa, 2 in 10 Shadow).
    pub targets: usize,
    /// The `ebb` executable the replicas run.
    pub ebb: PathBuf,
}

/// One target as the soak set it up.
#[derive(Debug, Clone)]
struct TargetSetup {
    name: String,
    mode: &'static str,
    /// Prometheus query group, or RabbitMQ queue.
    source: Source,
    fallback: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Prometheus { group: usize },
    RabbitMq { queue: String },
}

/// The targets: by index, the mode (Direct, Hpa, Shadow) and the source (RabbitMQ for 3 in 10,
/// Prometheus for the rest); every other target has a fallback.
fn targets(n: usize, groups: usize) -> Vec<TargetSetup> {
    (0..n)
        .map(|i| {
            let (mode, rabbit) = match i % 10 {
                0 | 1 => ("Direct", true),
                2 | 3 => ("Direct", false),
                4 => ("Hpa", true),
                5..=7 => ("Hpa", false),
                _ => ("Shadow", false),
            };
            TargetSetup {
                name: format!("w{i}"),
                mode,
                source: if rabbit {
                    Source::RabbitMq {
                        queue: format!("soak-q{i}"),
                    }
                } else {
                    Source::Prometheus { group: i % groups }
                },
                fallback: i % 2 == 1,
            }
        })
        .collect()
}

fn scaled_target(t: &TargetSetup, prometheus: &str) -> ScaledTarget {
    let metric = match &t.source {
        Source::Prometheus { group } => json!({
            "name": "load",
            "prometheus": {
                "address": prometheus,
                "query": format!("sum(last_over_time(soak_load{{g=\"{group}\"}}[{LOOKBACK_SECONDS}s]))"),
            },
            "target": { "type": "AverageValue", "averageValue": PER_POD.to_string() }
        }),
        Source::RabbitMq { queue } => json!({
            "name": "backlog",
            "rabbitmq": { "connectionSecretRef": { "name": "rabbit" }, "queue": queue },
            "target": { "type": "AverageValue", "averageValue": PER_POD.to_string() }
        }),
    };
    let mut spec = json!({
        "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": t.name },
        "mode": t.mode,
        "minReplicas": 1,
        "maxReplicas": 10,
        "pollingInterval": format!("{}s", INTERVAL.as_secs()),
        "metrics": [metric],
        "behavior": { "scaleDown": { "stabilizationWindowSeconds": 30 } }
    });
    if t.fallback {
        spec["fallback"] = json!({ "failureThreshold": 3, "replicas": 3 });
    }
    serde_json::from_value(json!({
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "ScaledTarget",
        "metadata": { "name": t.name, "namespace": NAMESPACE },
        "spec": spec,
    }))
    .expect("a valid ScaledTarget")
}

/// The load of query group `g` at `t` seconds: a seeded wave around a seeded base, with a
/// seeded step every few minutes; from 5 to 95 (1 to 10 pods at 10 per pod).
fn group_load(seed: u64, g: usize, t: f64) -> f64 {
    let mut rng = XorShiftRng::seed_from_u64(seed ^ (g as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let base = rng.random_range(20.0..60.0);
    let amplitude = rng.random_range(5.0..25.0);
    let period = rng.random_range(120.0..600.0);
    let phase = rng.random_range(0.0..std::f64::consts::TAU);
    let step_every = rng.random_range(60.0..180.0);
    let step = {
        let k = (t / step_every).floor() as u64;
        let mut s =
            XorShiftRng::seed_from_u64(seed ^ g as u64 ^ k.wrapping_mul(0x2545_F491_4F6C_DD1D));
        s.random_range(-20.0..20.0)
    };
    (base + amplitude * (std::f64::consts::TAU * t / period + phase).sin() + step).clamp(5.0, 95.0)
}

/// The backlog of queue `q` in the `k`-th backlog period: 0 to 90 messages.
fn queue_backlog(seed: u64, q: usize, k: u64) -> usize {
    XorShiftRng::seed_from_u64(seed ^ 0xB10C ^ (q as u64) << 20 ^ k.wrapping_mul(0x5851_F42D))
        .random_range(0..=90)
}

/// A fault as it was carried out: when the soak started and ended it, and when the sources it
/// broke were failing (after each failure could have been seen, until they were back).
#[derive(Debug, Clone)]
struct DoneFault {
    fault: Fault,
    started: Duration,
    ended: Duration,
    failing: Vec<(Duration, Duration)>,
    /// Which targets it affects (for recovery and the failing windows).
    affected: Vec<String>,
}

/// One sample of an ebb process: seconds since the soak's start, RSS bytes, open fds.
pub type ProcessSample = (f64, u64, usize);
type ProcessSamples = Vec<ProcessSample>;

/// One `ebb serve` process: its identity, pid, and its first and last sample.
#[derive(Debug, Clone)]
pub struct ProcessFigures {
    pub identity: String,
    pub pid: u32,
    pub first: ProcessSample,
    pub last: ProcessSample,
}

/// What the soak measured.
#[derive(Debug, Clone)]
pub struct SoakReport {
    pub seed: u64,
    pub profile: Profile,
    pub targets: usize,
    pub findings: audit::Findings,
    /// Writes to `/scale` by ebb and by the HPA controller.
    pub ebb_writes: usize,
    pub hpa_writes: usize,
    /// Per fault: kind, start, end, and seconds from its end until every target it affected
    /// decided normally again (None: not within the run, or another fault came first).
    pub faults: Vec<(FaultKind, Duration, Duration, Option<f64>)>,
    /// Fallback entries and exits over the run, and over the flapping windows alone.
    pub fallback_entries: usize,
    pub fallback_exits: usize,
    pub fallback_entries_flapping: usize,
    pub targets_with_fallback: usize,
    pub targets_with_fallback_on_prometheus: usize,
    /// Targets deciding normally (sources healthy, no fallback, status fresh) at the last
    /// status sample.
    pub normal_at_end: usize,
    /// The others, each with its mode, source and whether it was in fallback: where to look
    /// when a run ends with some not back.
    pub not_normal_at_end: Vec<String>,
    /// Per replica run (identity, pid): first and last sample.
    pub processes: Vec<ProcessFigures>,
}

impl SoakReport {
    /// The three counts that must be zero are.
    pub fn passed(&self) -> bool {
        self.findings.scale_downs_while_failing.is_empty()
            && self.findings.repeated_actions.is_empty()
            && self.findings.changes_without_event.is_empty()
    }

    /// Recovery seconds p50, p99, max over the faults whose recovery was measured.
    pub fn recovery(&self) -> Option<(f64, f64, f64)> {
        let mut r: Vec<f64> = self.faults.iter().filter_map(|f| f.3).collect();
        if r.is_empty() {
            return None;
        }
        r.sort_by(f64::total_cmp);
        let q = |p: f64| r[((r.len() - 1) as f64 * p).round() as usize];
        Some((q(0.5), q(0.99), *r.last().unwrap()))
    }
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mb = |b: u64| b as f64 / 1_048_576.0;
        writeln!(
            f,
            "soak: seed {}, {} s, {} ScaledTargets (4 in 10 Direct, 4 in 10 Hpa, 2 in 10 Shadow), 2 ebb replicas, {} faults",
            self.seed,
            self.profile.total.as_secs(),
            self.targets,
            self.faults.len()
        )?;
        writeln!(f)?;
        writeln!(f, "| check | result |")?;
        writeln!(f, "|---|---|")?;
        let n = |v: &Vec<String>| v.len();
        writeln!(
            f,
            "| scale-downs while a source failed (must be 0) | {} |",
            n(&self.findings.scale_downs_while_failing)
        )?;
        writeln!(
            f,
            "| actions taken twice (must be 0) | {} |",
            n(&self.findings.repeated_actions)
        )?;
        writeln!(
            f,
            "| replica changes without their Event (must be 0) | {} |",
            n(&self.findings.changes_without_event)
        )?;
        writeln!(
            f,
            "| targets deciding normally at the end | {} of {} |",
            self.normal_at_end, self.targets
        )?;
        writeln!(
            f,
            "| `/scale` writes: ebb (Direct) / HPA controller (Hpa) | {} / {} |",
            self.ebb_writes, self.hpa_writes
        )?;
        match self.recovery() {
            Some((p50, p99, max)) => writeln!(
                f,
                "| from a fault's end to normal decisions, p50 / p99 / max | {p50:.1} s / {p99:.1} s / {max:.1} s |"
            )?,
            None => writeln!(
                f,
                "| from a fault's end to normal decisions | not measured |"
            )?,
        }
        writeln!(
            f,
            "| fallback entries / exits (all run; {} targets have a fallback) | {} / {} |",
            self.targets_with_fallback, self.fallback_entries, self.fallback_exits
        )?;
        writeln!(
            f,
            "| fallback entries while Prometheus flapped / targets with a fallback on it | {} / {} |",
            self.fallback_entries_flapping, self.targets_with_fallback_on_prometheus
        )?;
        for ProcessFigures {
            identity,
            pid,
            first,
            last,
        } in &self.processes
        {
            writeln!(
                f,
                "| {identity} (pid {pid}) RSS, open fds: at {:.0} s / at {:.0} s | {:.1} MB, {} / {:.1} MB, {} |",
                first.0,
                last.0,
                mb(first.1),
                first.2,
                mb(last.1),
                last.2
            )?;
        }
        writeln!(f)?;
        writeln!(f, "| fault | start | end | back to normal after |")?;
        writeln!(f, "|---|---|---|---|")?;
        for (kind, start, end, recovered) in &self.faults {
            writeln!(
                f,
                "| {} | {:.0} s | {:.0} s | {} |",
                kind.name(),
                start.as_secs_f64(),
                end.as_secs_f64(),
                recovered.map_or("-".to_string(), |s| format!("{s:.1} s"))
            )?;
        }
        for (what, list) in [
            (
                "scale-down while failing",
                &self.findings.scale_downs_while_failing,
            ),
            ("repeated", &self.findings.repeated_actions),
            ("without Event", &self.findings.changes_without_event),
            ("not deciding normally at the end", &self.not_normal_at_end),
        ] {
            for item in list.iter().take(20) {
                writeln!(f, "{what}: {item}")?;
            }
        }
        Ok(())
    }
}

/// Everything the soak's tasks share.
struct Soak {
    start: Instant,
    start_unix_ms: i64,
    seed: u64,
    /// Prometheus flapping: down for half of it, up for the other half.
    flap_period: Duration,
    client: kube::Client,
    kube: RwLock<ControlPlane>,
    prometheus: RwLock<Prometheus>,
    rabbitmq: RwLock<RabbitMq>,
    prometheus_proxy: Proxy,
    /// Query groups whose metric is renamed (an empty vector).
    renamed: std::sync::Mutex<Vec<bool>>,
    replicas: Mutex<[Option<ManagedProcess>; 2]>,
    replica_ports: [(u16, u16); 2],
    dir: PathBuf,
    ebb: PathBuf,
    setups: Vec<TargetSetup>,
    stop: AtomicBool,
}

impl Soak {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    async fn sleep_until(&self, at: Duration) {
        tokio::time::sleep_until(self.start + at).await;
    }

    fn identity(i: usize) -> String {
        format!("ebb-{}", ["a", "b"][i])
    }

    fn start_replica(&self, kube: &ControlPlane, i: usize) -> anyhow::Result<ManagedProcess> {
        let (api, metrics) = self.replica_ports[i];
        crate::localstack::ebb::start(
            kube,
            &self.dir,
            &self.ebb,
            &Self::identity(i),
            api,
            metrics,
            &[],
        )
    }

    /// SIGKILLs replica `i` (its whole process group).
    async fn kill_replica(&self, i: usize) {
        if let Some(p) = self.replicas.lock().await[i].take() {
            // SAFETY: kill(2) on the replica's own process group.
            unsafe {
                libc::kill(-(p.pid() as i32), libc::SIGKILL);
            }
            drop(p);
        }
    }

    fn names(&self, pick: impl Fn(&TargetSetup) -> bool) -> Vec<String> {
        self.setups
            .iter()
            .filter(|t| pick(t))
            .map(|t| t.name.clone())
            .collect()
    }

    /// Carries out `fault` (from its start time) and says what happened.
    async fn carry_out(&self, fault: Fault, rng: &mut XorShiftRng) -> anyhow::Result<DoneFault> {
        self.sleep_until(fault.start).await;
        let started = self.now();
        // A failure is seen at the next fetch: within one polling interval.
        let seen = INTERVAL + Duration::from_secs(2);
        let prometheus_targets = || self.names(|t| matches!(t.source, Source::Prometheus { .. }));
        let mut failing = Vec::new();
        let affected;
        match fault.kind {
            FaultKind::PrometheusKilled => {
                affected = prometheus_targets();
                self.prometheus.write().await.stop();
                let down = self.now();
                tokio::time::sleep(fault.duration).await;
                self.prometheus.write().await.start_again().await?;
                failing.push((down + seen, self.now()));
            }
            FaultKind::PrometheusFlapping => {
                affected = prometheus_targets();
                let half = self.flap_period / 2;
                let periods = (fault.duration.as_secs_f64() / (2.0 * half.as_secs_f64())).round();
                for _ in 0..periods as usize {
                    self.prometheus.write().await.stop();
                    let down = self.now();
                    tokio::time::sleep(half).await;
                    self.prometheus.write().await.start_again().await?;
                    failing.push((down + seen, self.now()));
                    tokio::time::sleep(half).await;
                }
            }
            FaultKind::SlowUpstream => {
                affected = prometheus_targets();
                self.prometheus_proxy.set_delay(fault.delay);
                let set = self.now();
                tokio::time::sleep(fault.duration).await;
                self.prometheus_proxy.set_delay(Duration::ZERO);
                if fault.delay >= QUERY_TIMEOUT {
                    // Timeouts: the last value stands until it is stale (three intervals and a
                    // timeout), then the reading fails.
                    let stale = INTERVAL * crate::collect::STALE_AFTER_INTERVALS + QUERY_TIMEOUT;
                    failing.push((set + stale + seen, self.now()));
                }
            }
            FaultKind::EmptyVector => {
                affected = self.names(|t| t.source == Source::Prometheus { group: fault.which });
                self.renamed.lock().expect("renamed")[fault.which] = true;
                let renamed = self.now();
                tokio::time::sleep(fault.duration).await;
                self.renamed.lock().expect("renamed")[fault.which] = false;
                // The query's lookback still sees the last sample for LOOKBACK_SECONDS.
                failing.push((
                    renamed + PUSH_EVERY + Duration::from_secs(LOOKBACK_SECONDS) + seen,
                    self.now() + PUSH_EVERY,
                ));
            }
            FaultKind::RabbitMqRestarted => {
                affected = self.names(|t| matches!(t.source, Source::RabbitMq { .. }));
                self.rabbitmq.write().await.stop();
                let down = self.now();
                tokio::time::sleep(fault.duration).await;
                self.rabbitmq.write().await.start_again().await?;
                // Its queues come back empty (and are declared again).
                self.fill_queues().await;
                failing.push((down + seen, self.now()));
            }
            FaultKind::ApiServerRestarted => {
                affected = self.names(|_| true);
                self.kube
                    .write()
                    .await
                    .restart_apiserver(fault.duration)
                    .await?;
            }
            FaultKind::LeaderKilled | FaultKind::EbbKilledMidPoll => {
                affected = self.names(|_| true);
                let victim = if fault.kind == FaultKind::LeaderKilled {
                    let leases = Api::<Lease>::namespaced(self.client.clone(), "ebb-system");
                    let holder = leases
                        .get_opt("ebb-controller")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|l| l.spec?.holder_identity);
                    usize::from(holder.as_deref() == Some(Self::identity(1).as_str()))
                } else {
                    // At a random moment of a poll cycle.
                    tokio::time::sleep(Duration::from_millis(rng.random_range(0..5_000))).await;
                    fault.which
                };
                self.kill_replica(victim).await;
                tokio::time::sleep(fault.duration).await;
                let process = {
                    let kube = self.kube.read().await;
                    self.start_replica(&kube, victim)?
                };
                self.replicas.lock().await[victim] = Some(process);
            }
        }
        Ok(DoneFault {
            fault,
            started,
            ended: self.now(),
            failing,
            affected,
        })
    }

    /// Pushes every query group's load every PUSH_EVERY (a renamed group under another name).
    async fn push_loads(&self) {
        while !self.stop.load(Relaxed) {
            let t = self.now().as_secs_f64();
            let ts = self.start_unix_ms + self.now().as_millis() as i64;
            let renamed = self.renamed.lock().expect("renamed").clone();
            {
                let prometheus = self.prometheus.read().await;
                for (g, renamed) in renamed.iter().enumerate() {
                    let group = g.to_string();
                    let name = if *renamed {
                        "soak_load_renamed"
                    } else {
                        "soak_load"
                    };
                    let labels = [("__name__", name), ("g", group.as_str())];
                    // A stopped Prometheus misses the sample, as a scrape would.
                    let _ = prometheus
                        .push(&labels, &[(ts, group_load(self.seed, g, t))])
                        .await;
                }
            }
            tokio::time::sleep(PUSH_EVERY).await;
        }
    }

    /// Sets every queue to its backlog of this period (declaring it).
    async fn fill_queues(&self) {
        let k = self.now().as_secs() / BACKLOG_EVERY.as_secs();
        let rabbit = self.rabbitmq.read().await;
        let Ok(conn) = rabbit.connect().await else {
            return;
        };
        let Ok(channel) = conn.create_channel().await else {
            return;
        };
        for (q, t) in self.setups.iter().enumerate() {
            let Source::RabbitMq { queue } = &t.source else {
                continue;
            };
            if crate::localstack::rabbitmq::declare_queue(&channel, queue)
                .await
                .is_err()
            {
                return;
            }
            let want = queue_backlog(self.seed, q, k);
            let have = rabbit
                .queue_counts(queue)
                .await
                .ok()
                .flatten()
                .map_or(0, |c| c.backlog().max(0) as usize);
            let publish = if want >= have {
                want - have
            } else {
                let _ = rabbit.purge(queue).await;
                want
            };
            for _ in 0..publish {
                let _ = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        Default::default(),
                        b"job",
                        Default::default(),
                    )
                    .await;
            }
        }
        let _ = conn.close(200, "soak".into()).await;
    }

    async fn move_backlogs(&self) {
        while !self.stop.load(Relaxed) {
            self.fill_queues().await;
            let next =
                (self.now().as_secs() / BACKLOG_EVERY.as_secs() + 1) * BACKLOG_EVERY.as_secs();
            self.sleep_until(Duration::from_secs(next)).await;
        }
    }
}

/// Per target, from the status samples: (seconds, deciding normally, in fallback).
type StatusSamples = HashMap<String, Vec<(f64, bool, bool)>>;

/// What the status samples saw: per target, and when a leader renewed the Lease.
#[derive(Default)]
struct Samples {
    targets: StatusSamples,
    /// (seconds of the sample, seconds of the Lease's last renewal), both since the start.
    lease: Vec<(f64, f64)>,
}

/// Lists the ScaledTargets every 2 s: does each decide normally (sources healthy, not in
/// fallback)? And reads the Lease: does a leader act?
async fn sample_statuses(soak: &Soak) -> Samples {
    let api = Api::<ScaledTarget>::namespaced(soak.client.clone(), NAMESPACE);
    let leases = Api::<Lease>::namespaced(soak.client.clone(), "ebb-system");
    let mut samples = Samples::default();
    while !soak.stop.load(Relaxed) {
        let at = soak.now().as_secs_f64();
        if let Ok(list) = api.list(&ListParams::default()).await {
            for st in list.items {
                let Some(status) = st.status else { continue };
                let condition = |type_: &str| {
                    status
                        .conditions
                        .iter()
                        .find(|c| c.type_ == type_)
                        .map(|c| c.status == "True")
                };
                let healthy = condition(cond::SOURCES_HEALTHY) == Some(true);
                let fallback = condition(cond::FALLBACK) == Some(true);
                samples
                    .targets
                    .entry(st.metadata.name.unwrap_or_default())
                    .or_default()
                    .push((at, healthy && !fallback, fallback));
            }
        }
        if let Some(renewed) = leases
            .get_opt("ebb-controller")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.renew_time)
        {
            let ms = renewed.0.as_millisecond() - soak.start_unix_ms;
            samples.lease.push((at, ms as f64 / 1000.0));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    samples
}

/// A fault as recovery sees it: when it was on (seconds since the start), whom it touched.
struct Span<'a> {
    started: f64,
    ended: f64,
    affected: &'a std::collections::HashSet<String>,
}

/// Seconds from the end of fault `i` to the first sample at which a leader had renewed the
/// Lease and every target it affected decided normally; `None` when a fault that touched some
/// of the same targets was on at its end or began before then (the recovery is not its own),
/// or when that moment did not come within the run.
fn recovery(i: usize, spans: &[Span<'_>], samples: &Samples, run_end: f64) -> Option<f64> {
    let d = &spans[i];
    let touching = |o: &&Span<'_>| !std::ptr::eq(*o, d) && !o.affected.is_disjoint(d.affected);
    if spans
        .iter()
        .filter(touching)
        .any(|o| o.started <= d.ended && o.ended > d.ended)
    {
        return None;
    }
    let next_start = spans
        .iter()
        .filter(touching)
        .filter(|o| o.started > d.ended)
        .map(|o| o.started)
        .fold(run_end, f64::min);
    let led = samples
        .lease
        .iter()
        .find(|(_, renewed)| *renewed >= d.ended)
        .map(|(at, _)| *at)?;
    let mut back = led;
    for name in d.affected {
        let (at, _, _) = samples
            .targets
            .get(name)?
            .iter()
            .find(|(at, ok, _)| *at >= d.ended && *ok)?;
        back = back.max(*at);
    }
    (back < next_start).then_some(back - d.ended)
}

/// Samples RSS and open fds of the live replicas every 5 s.
async fn sample_processes(soak: &Soak) -> BTreeMap<(String, u32), ProcessSamples> {
    let mut samples: BTreeMap<(String, u32), ProcessSamples> = BTreeMap::new();
    while !soak.stop.load(Relaxed) {
        let at = soak.now().as_secs_f64();
        let pids: Vec<(usize, u32)> = soak
            .replicas
            .lock()
            .await
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.as_ref()?.pid())))
            .collect();
        for (i, pid) in pids {
            let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                });
            let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count());
            if let (Some(kb), Ok(fds)) = (rss, fds) {
                samples
                    .entry((Soak::identity(i), pid))
                    .or_default()
                    .push((at, kb * 1024, fds));
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    samples
}

/// Runs the soak; see the module docs.
pub async fn run(options: SoakOptions) -> anyhow::Result<SoakReport> {
    let SoakOptions {
        profile,
        seed,
        targets: n,
        ebb,
    } = options;
    let prometheus_targets = (0..n).filter(|i| !matches!(i % 10, 0 | 1 | 4)).count();
    let groups = (prometheus_targets / 10).max(1);
    let plan = schedule::schedule(seed, profile, groups);
    let setups = targets(n, groups);

    let mut stack = Stack::start(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: true,
            hpa_sync_period: Duration::from_secs(15),
            hpa_downscale_stabilization: Duration::from_secs(30),
            audit_scale_writes: true,
        }),
        prometheus: true,
        rabbitmq: true,
        ..Default::default()
    })
    .await?;
    let kube = stack.kube.take().context("control plane")?;
    let prometheus = stack.prometheus.take().context("prometheus")?;
    let rabbitmq = stack.rabbitmq.take().context("rabbitmq")?;
    let dir = stack.dir().join("soak");
    std::fs::create_dir_all(&dir)?;
    let client = kube.client().await?;
    let prometheus_addr = prometheus.url().trim_start_matches("http://").parse()?;
    let prometheus_proxy = Proxy::start(vec![prometheus_addr]).await?;

    crate::localstack::ebb::install(&kube, "ebb-soak").await?;
    kube.create_namespace(NAMESPACE).await?;
    let management = rabbitmq
        .management_url()
        .replace("http://", "http://guest:guest@");
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": "rabbit" },
                "stringData": { "managementUrl": management, "amqpUrl": rabbitmq.amqp_url() }
            }))?,
        )
        .await?;

    let replica_ports = [(free_port(), free_port()), (free_port(), free_port())];
    let now_ms = chrono::Utc::now().timestamp_millis();
    let soak = Arc::new(Soak {
        start: Instant::now(),
        start_unix_ms: now_ms,
        seed,
        flap_period: profile.flap_period,
        client: client.clone(),
        kube: RwLock::new(kube),
        prometheus: RwLock::new(prometheus),
        rabbitmq: RwLock::new(rabbitmq),
        prometheus_proxy,
        renamed: std::sync::Mutex::new(vec![false; groups]),
        replicas: Mutex::new([None, None]),
        replica_ports,
        dir,
        ebb,
        setups: setups.clone(),
        stop: AtomicBool::new(false),
    });

    // Load first, so that the first polls read it.
    let pusher = tokio::spawn({
        let soak = soak.clone();
        async move { soak.push_loads().await }
    });
    soak.fill_queues().await;
    let backlogs = tokio::spawn({
        let soak = soak.clone();
        async move { soak.move_backlogs().await }
    });

    let deployments = Api::<Deployment>::namespaced(client.clone(), NAMESPACE);
    let sts = Api::<ScaledTarget>::namespaced(client.clone(), NAMESPACE);
    let proxied = format!("http://{}", soak.prometheus_proxy.addr());
    for t in &setups {
        deployments
            .create(
                &PostParams::default(),
                &crate::localstack::workload(&t.name, 2),
            )
            .await?;
        sts.create(&PostParams::default(), &scaled_target(t, &proxied))
            .await?;
    }
    {
        let kube = soak.kube.read().await;
        let mut replicas = soak.replicas.lock().await;
        for i in 0..2 {
            replicas[i] = Some(soak.start_replica(&kube, i)?);
        }
    }
    let api_proxy = Proxy::start(
        replica_ports
            .iter()
            .map(|(api, _)| std::net::SocketAddr::from(([127, 0, 0, 1], *api)))
            .collect(),
    )
    .await?;
    crate::localstack::ebb::register(&*soak.kube.read().await, api_proxy.addr().port()).await?;
    eprintln!(
        "[soak] seed {seed}: {n} targets, {} faults over {} s; stack in {}",
        plan.len(),
        profile.total.as_secs(),
        soak.dir.display()
    );

    let statuses = tokio::spawn({
        let soak = soak.clone();
        async move { sample_statuses(&soak).await }
    });
    let processes = tokio::spawn({
        let soak = soak.clone();
        async move { sample_processes(&soak).await }
    });

    // Each resource's faults in order, resources side by side.
    let mut by_resource: BTreeMap<&str, Vec<Fault>> = BTreeMap::new();
    for f in &plan {
        by_resource
            .entry(f.kind.resource())
            .or_default()
            .push(f.clone());
    }
    let runners: Vec<_> = by_resource
        .into_values()
        .enumerate()
        .map(|(r, faults)| {
            let soak = soak.clone();
            tokio::spawn(async move {
                let mut rng = XorShiftRng::seed_from_u64(seed ^ 0xFA17 ^ r as u64);
                let mut done = Vec::new();
                for fault in faults {
                    eprintln!(
                        "[soak] {:>5.0} s: {} for {:.0} s",
                        fault.start.as_secs_f64(),
                        fault.kind.name(),
                        fault.duration.as_secs_f64()
                    );
                    match soak.carry_out(fault.clone(), &mut rng).await {
                        Ok(d) => done.push(d),
                        Err(e) => eprintln!("[soak] {} failed: {e:#}", fault.kind.name()),
                    }
                }
                done
            })
        })
        .collect();
    let mut done: Vec<DoneFault> = Vec::new();
    for r in runners {
        done.extend(r.await?);
    }
    // Every fault gets its cool-down to recover in, also one that ended later than planned (an
    // API server that takes long to come back on a loaded machine).
    let last_end = done.iter().map(|d| d.ended).max().unwrap_or_default();
    soak.sleep_until(profile.total.max(last_end + profile.cool_down))
        .await;
    soak.stop.store(true, Relaxed);
    let statuses = statuses.await?;
    let processes = processes.await?;
    pusher.abort();
    backlogs.abort();
    let end = soak.now();
    done.sort_by_key(|d| d.started);

    // The record: the audit log's /scale writes, ebb's Scaled Events.
    let log = std::fs::read_to_string(soak.kube.read().await.audit_log()).unwrap_or_default();
    let writes = audit::scale_writes(&log, NAMESPACE, soak.start_unix_ms);
    let events: Vec<ScaledEvent> = Api::<Event>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(cond::EVENT_SCALED))
        .filter_map(|e| {
            let (from, to) = audit::from_to(e.note.as_deref()?)?;
            Some(ScaledEvent {
                target: e.regarding?.name?,
                from,
                to,
                count: e.series.map_or(1, |s| s.count.max(1) as u32),
            })
        })
        .collect();
    let windows: Vec<FailingWindow> = done
        .iter()
        .flat_map(|d| {
            d.failing
                .iter()
                .filter(|(s, e)| s < e)
                .map(|&(start, end)| FailingWindow {
                    targets: d.affected.clone(),
                    start,
                    end,
                })
        })
        .collect();
    let modes: HashMap<String, String> = setups
        .iter()
        .map(|t| (t.name.clone(), t.mode.to_string()))
        .collect();
    let initial: HashMap<String, i32> = setups.iter().map(|t| (t.name.clone(), 2)).collect();
    let findings = audit::check(&writes, &events, &windows, &modes, &initial, EBB_USER);

    // Recovery: from a fault's end to the first sample at which a leader acts and every
    // target it affected decides normally, unless a fault touching the same targets was still
    // on at its end or began before that.
    let affected: Vec<std::collections::HashSet<String>> = done
        .iter()
        .map(|d| d.affected.iter().cloned().collect())
        .collect();
    let spans: Vec<Span<'_>> = done
        .iter()
        .zip(&affected)
        .map(|(d, affected)| Span {
            started: d.started.as_secs_f64(),
            ended: d.ended.as_secs_f64(),
            affected,
        })
        .collect();
    let faults = done
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let back = recovery(i, &spans, &statuses, end.as_secs_f64());
            (d.fault.kind, d.started, d.ended, back)
        })
        .collect();

    // Fallback transitions, from the status samples.
    let flapping: Vec<(f64, f64)> = done
        .iter()
        .filter(|d| d.fault.kind == FaultKind::PrometheusFlapping)
        .map(|d| (d.started.as_secs_f64(), d.ended.as_secs_f64() + 30.0))
        .collect();
    let (mut entries, mut exits, mut entries_flapping) = (0, 0, 0);
    for s in statuses.targets.values() {
        for w in s.windows(2) {
            match (w[0].2, w[1].2) {
                (false, true) => {
                    entries += 1;
                    if flapping.iter().any(|(a, b)| *a <= w[1].0 && w[1].0 <= *b) {
                        entries_flapping += 1;
                    }
                }
                (true, false) => exits += 1,
                _ => {}
            }
        }
    }
    let fallback_on_prometheus = setups
        .iter()
        .filter(|t| t.fallback && matches!(t.source, Source::Prometheus { .. }))
        .count();
    let processes = processes
        .into_iter()
        .filter_map(|((identity, pid), s)| {
            // From a minute into the run of the process (or its first sample), to its last.
            let first = *s
                .iter()
                .find(|x| x.0 >= s[0].0 + 60.0)
                .unwrap_or(s.first()?);
            Some(ProcessFigures {
                identity,
                pid,
                first,
                last: *s.last()?,
            })
        })
        .collect();

    let report = SoakReport {
        seed,
        profile,
        targets: n,
        ebb_writes: writes.iter().filter(|w| w.user == EBB_USER).count(),
        hpa_writes: writes.iter().filter(|w| w.user != EBB_USER).count(),
        findings,
        faults,
        fallback_entries: entries,
        fallback_exits: exits,
        fallback_entries_flapping: entries_flapping,
        targets_with_fallback: setups.iter().filter(|t| t.fallback).count(),
        targets_with_fallback_on_prometheus: fallback_on_prometheus,
        normal_at_end: statuses
            .targets
            .values()
            .filter(|s| s.last().is_some_and(|x| x.1))
            .count(),
        not_normal_at_end: setups
            .iter()
            .filter_map(|t| {
                let last = statuses.targets.get(&t.name).and_then(|s| s.last());
                let state = match last {
                    Some((_, true, _)) => return None,
                    Some((_, false, true)) => "in fallback",
                    Some((_, false, false)) => "sources not healthy",
                    None => "no status",
                };
                Some(format!("{} ({}, {:?}, {state})", t.name, t.mode, t.source))
            })
            .collect(),
        processes,
    };
    // Stop ebb before the stack it talks to.
    for i in 0..2 {
        soak.kill_replica(i).await;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_backlogs_are_seeded_and_in_range() {
        for g in 0..20 {
            for t in (0..1200).step_by(7) {
                let l = group_load(3, g, t as f64);
                assert!((5.0..=95.0).contains(&l), "{l}");
                assert_eq!(l, group_load(3, g, t as f64));
            }
            assert!(queue_backlog(3, g, 4) <= 90);
        }
        assert_ne!(group_load(3, 0, 100.0), group_load(4, 0, 100.0));
    }

    #[test]
    fn recovery_is_measured_unless_a_fault_on_the_same_targets_overlaps_it() {
        let set = |names: &[&str]| -> std::collections::HashSet<String> {
            names.iter().map(|n| n.to_string()).collect()
        };
        let (prom, rabbit) = (set(&["p1", "p2"]), set(&["r1"]));
        let all = set(&["p1", "p2", "r1"]);
        let mut samples = Samples::default();
        // Every 2 s from 0 to 200 s: p1 back at 44 s, p2 at 50 s, r1 always fine; the Lease
        // renewed every sample.
        for k in 0..100 {
            let at = k as f64 * 2.0;
            samples.lease.push((at, at));
            for (name, ok_from) in [("p1", 44.0), ("p2", 50.0), ("r1", 0.0)] {
                let ok = !(30.0..ok_from).contains(&at);
                samples
                    .targets
                    .entry(name.into())
                    .or_default()
                    .push((at, ok, false));
            }
        }
        let span = |started, ended, affected| Span {
            started,
            ended,
            affected,
        };
        // A Prometheus fault 30..40 s and a RabbitMQ fault 35..60 s: disjoint targets.
        let spans = [span(30.0, 40.0, &prom), span(35.0, 60.0, &rabbit)];
        assert_eq!(recovery(0, &spans, &samples, 200.0), Some(10.0));
        assert_eq!(recovery(1, &spans, &samples, 200.0), Some(0.0));
        // An ebb fault (all targets) on at the Prometheus fault's end: not its own recovery.
        let spans = [span(30.0, 40.0, &prom), span(38.0, 45.0, &all)];
        assert_eq!(recovery(0, &spans, &samples, 200.0), None);
        // One that begins before the targets are back: neither.
        let spans = [span(30.0, 40.0, &prom), span(46.0, 47.0, &all)];
        assert_eq!(recovery(0, &spans, &samples, 200.0), None);
        // Not back within the run.
        assert_eq!(
            recovery(0, &[span(30.0, 40.0, &prom)], &samples, 45.0),
            None
        );
    }

    #[test]
    fn targets_cover_every_mode_and_source() {
        let t = targets(20, 1);
        let count = |mode: &str, rabbit: bool| {
            t.iter()
                .filter(|x| x.mode == mode && matches!(x.source, Source::RabbitMq { .. }) == rabbit)
                .count()
        };
        assert_eq!(
            [
                count("Direct", true),
                count("Direct", false),
                count("Hpa", true),
                count("Hpa", false),
                count("Shadow", false)
            ],
            [4, 4, 2, 6, 4]
        );
        assert_eq!(t.iter().filter(|x| x.fallback).count(), 10);
        // Every target's object is valid.
        for x in &t {
            let st = scaled_target(x, "http://127.0.0.1:9090");
            assert_eq!(st.spec.metrics.len(), 1);
        }
    }
}
