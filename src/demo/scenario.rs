//! The demo's scenario: two workloads, the load that drives them, ebb's ScaledTargets for them,
//! and how a run is scored. `ebb demo` runs it with ebb; `cargo bench --bench live` runs the
//! same scenario once per system (ebb in mode Direct, ebb in mode Hpa, KEDA) and scores each
//! run the same way: the backtest's elasticity metrics (backtest-protocol.md section 5) on one
//! sample a second, and the queue's backlog as the queue replay counts it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use super::load::{self, LoadCounters, LoadProfile, Rate};
use crate::backtest::metrics::{Elasticity, score};
use crate::localstack::StackError;
use crate::localstack::rabbitmq::RabbitMq;
use crate::localstack::workload;

/// Messages a simulated worker replica processes per second.
pub const PER_WORKER: f64 = 10.0;
/// Requests per second one web replica is meant to serve: the web target's AverageValue.
pub const PER_WEB: f64 = 5.0;
/// Messages published per second, quiet to peak (the peak needs 8 workers to keep up).
pub const PUBLISH: Rate = Rate {
    base: 2.0,
    peak: 80.0,
};
/// Requests per second to the web service, quiet to peak.
pub const REQUESTS: Rate = Rate {
    base: 2.0,
    peak: 40.0,
};
/// The worker's drain time: any backlog gone within this many seconds.
pub const DRAIN_SECONDS: u32 = 30;
/// How often the autoscaler polls and the HPA controller syncs: fast enough to watch.
pub const POLL: Duration = Duration::from_secs(5);
/// The web service's request rate, as Prometheus scrapes it (every second).
pub const WEB_QUERY: &str = "sum(rate(demo_http_requests_total[15s]))";
/// Both workloads' bounds.
pub const MIN_REPLICAS: i32 = 1;
pub const MAX_REPLICAS: i32 = 20;

/// The scaling behavior of both workloads, as an HPA's `spec.behavior` (ebb's `spec.behavior`
/// has the same shape). Scale-down waits out a 30 s window and then halves at most every 10 s;
/// scale-up adds at most 4 pods per poll: the rate limits an SRE would set for a queue worker.
pub fn behavior() -> Value {
    json!({
        "scaleUp": { "stabilizationWindowSeconds": 0,
                     "policies": [{ "type": "Pods", "value": 4, "periodSeconds": POLL.as_secs() }] },
        "scaleDown": { "stabilizationWindowSeconds": 30,
                       "policies": [{ "type": "Percent", "value": 50, "periodSeconds": 10 }] }
    })
}

/// The worker's fallback while its metric cannot be read: 4 replicas after 3 failed polls.
pub fn fallback() -> Value {
    json!({ "failureThreshold": 3, "replicas": 4 })
}

/// The two Deployments, `worker` and `web`, at one replica each.
pub async fn create_workloads(client: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    for name in ["worker", "web"] {
        deployments
            .create(&PostParams::default(), &workload(name, MIN_REPLICAS))
            .await?;
    }
    Ok(())
}

/// ebb's configuration of the scenario in `namespace`: the Secret of the RabbitMQ metric and
/// the two ScaledTargets, the worker's in `worker_mode` and the web's in `web_mode` (`Direct`
/// or `Hpa`). The worker scales on the work of `queue`, not its length alone: what arrives plus
/// the backlog spread over [`DRAIN_SECONDS`], at the throughput a worker gets through (learned
/// from the queue's own rates while messages wait; [`PER_WORKER`] is the start value). The web
/// service scales on its request rate at [`PER_WEB`] a replica.
pub fn ebb_targets(
    namespace: &str,
    queue: &str,
    worker_mode: &str,
    web_mode: &str,
    rabbitmq: &RabbitMq,
    prometheus_url: &str,
) -> Vec<Value> {
    let interval = format!("{}s", POLL.as_secs());
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "rabbit", "namespace": namespace },
        "stringData": {
            "managementUrl": rabbitmq.management_url().replace("http://", "http://guest:guest@"),
            "amqpUrl": rabbitmq.amqp_url(),
        }
    });
    let worker = json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
        "metadata": { "name": "worker", "namespace": namespace },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
            "mode": worker_mode, "minReplicas": MIN_REPLICAS, "maxReplicas": MAX_REPLICAS,
            "pollingInterval": interval,
            "metrics": [{
                "name": "jobs",
                "rabbitmq": { "connectionSecretRef": { "name": "rabbit" }, "queue": queue },
                "target": { "type": "DrainTime", "drainSeconds": DRAIN_SECONDS,
                            "throughputPerPod": PER_WORKER.to_string() }
            }],
            "behavior": behavior(),
            "fallback": fallback()
        }
    });
    let web = json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
        "metadata": { "name": "web", "namespace": namespace },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "web" },
            "mode": web_mode, "minReplicas": MIN_REPLICAS, "maxReplicas": MAX_REPLICAS,
            "pollingInterval": interval,
            "metrics": [{
                "name": "http-rps",
                "prometheus": { "address": prometheus_url, "query": WEB_QUERY },
                "target": { "type": "AverageValue", "averageValue": PER_WEB.to_string() }
            }],
            "behavior": behavior()
        }
    });
    vec![secret, worker, web]
}

/// Starts the scenario's load: publishing to `queue` following `profile`, the simulated workers
/// draining it (at [`PER_WORKER`] per Ready worker replica, as `counters.worker_replicas` says),
/// and requests to the web service at `web_url`. The tasks run until the set is dropped; one
/// ends only on an error (RabbitMQ gone).
pub async fn start_load(
    connection: &lapin::Connection,
    queue: &str,
    web_url: String,
    profile: LoadProfile,
    started: Instant,
    counters: Arc<LoadCounters>,
) -> Result<tokio::task::JoinSet<Result<(), StackError>>, StackError> {
    let channel = || async {
        connection
            .create_channel()
            .await
            .map_err(|e| StackError::Upstream(format!("AMQP channel: {e}")))
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(load::publish(
        channel().await?,
        queue.into(),
        profile,
        PUBLISH,
        started,
        counters.clone(),
    ));
    tasks.spawn(load::consume(
        channel().await?,
        queue.into(),
        PER_WORKER,
        counters.clone(),
    ));
    tasks.spawn(async move {
        load::request_ramp(web_url, profile, REQUESTS, started, counters).await;
        Ok(())
    });
    Ok(tasks)
}

/// Desired (`spec.replicas`) and Ready replicas of a Deployment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replicas {
    pub desired: i32,
    pub ready: i32,
}

/// The Deployments of `namespace`, by name (empty on a read error: the next sample tries again).
pub async fn deployment_replicas(
    client: &kube::Client,
    namespace: &str,
) -> BTreeMap<String, Replicas> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), namespace);
    let Ok(list) = deployments.list(&Default::default()).await else {
        return BTreeMap::new();
    };
    list.items
        .into_iter()
        .filter_map(|d| {
            let name = d.metadata.name?;
            let desired = d.spec.and_then(|s| s.replicas).unwrap_or(0);
            let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            Some((name, Replicas { desired, ready }))
        })
        .collect()
}

/// What a second of the run looked like.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// The load level (0 quiet .. 1 peak).
    pub level: f64,
    pub worker: Replicas,
    pub web: Replicas,
    /// Messages waiting in the queue (ready + unacked); `None` when the broker did not answer.
    pub backlog: Option<i64>,
}

/// One sample a second of a run, scored the backtest's way: a step is a second, demand is the
/// replicas the load of that second needs (the arrival rate over [`PER_WORKER`], the request
/// rate over [`PER_WEB`]), supply the Ready replicas, the decision the desired count.
#[derive(Debug, Default)]
pub struct Scorecard {
    worker: Series,
    web: Series,
    backlog_message_seconds: f64,
    longest_drain_seconds: f64,
}

#[derive(Debug, Default)]
struct Series {
    demand: Vec<Option<u32>>,
    supply: Vec<u32>,
    decisions: Vec<u32>,
}

impl Series {
    fn record(&mut self, needed: f64, r: Replicas) {
        self.demand.push(Some(needed.ceil().max(1.0) as u32));
        self.supply.push(r.ready.max(0) as u32);
        self.decisions.push(r.desired.max(0) as u32);
    }

    fn score(&self) -> Elasticity {
        let first = self.decisions.first().copied().unwrap_or(0);
        score(&self.demand, &self.supply, &self.decisions, first, 0)
    }
}

/// A run's scores.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RunScores {
    pub worker: Elasticity,
    pub web: Elasticity,
    /// Messages waiting, summed over the seconds sampled.
    pub backlog_message_seconds: f64,
    /// The longest any backlog would have taken to drain at the Ready workers' capacity then.
    pub longest_drain_seconds: f64,
}

impl Scorecard {
    pub fn record(&mut self, s: Sample) {
        self.worker
            .record(PUBLISH.at(s.level) / PER_WORKER, s.worker);
        self.web.record(REQUESTS.at(s.level) / PER_WEB, s.web);
        let backlog = s.backlog.unwrap_or(0).max(0);
        self.backlog_message_seconds += backlog as f64;
        if backlog > 0 {
            let capacity = f64::from(s.worker.ready.max(0)) * PER_WORKER;
            let drain = if capacity > 0.0 {
                backlog as f64 / capacity
            } else {
                f64::INFINITY
            };
            self.longest_drain_seconds = self.longest_drain_seconds.max(drain);
        }
    }

    pub fn scores(&self) -> RunScores {
        RunScores {
            worker: self.worker.score(),
            web: self.web.score(),
            backlog_message_seconds: self.backlog_message_seconds,
            longest_drain_seconds: self.longest_drain_seconds,
        }
    }
}

/// The seconds (steps) a workload was under-provisioned.
pub fn under_seconds(e: &Elasticity) -> f64 {
    (e.tau_u * e.steps as f64 / 100.0).round()
}

impl RunScores {
    /// `score: worker under-provisioned 12 of 240 s (5.0 %), 1234 pod-seconds, 8 actions (2
    /// reversals); web ...; backlog 567 message-seconds, longest drain 3.2 s`.
    pub fn line(&self) -> String {
        let one = |name: &str, e: &Elasticity| {
            let under = under_seconds(e);
            format!(
                "{name} under-provisioned {under:.0} of {} s ({:.1} %), {} pod-seconds, {} actions ({} reversals)",
                e.steps, e.tau_u, e.cost, e.actions, e.reversals
            )
        };
        format!(
            "score: {}; {}; backlog {:.0} message-seconds, longest drain {:.1} s",
            one("worker", &self.worker),
            one("web", &self.web),
            self.backlog_message_seconds,
            self.longest_drain_seconds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(desired: i32, ready: i32) -> Replicas {
        Replicas { desired, ready }
    }

    #[test]
    fn a_run_is_scored_per_second_against_what_the_load_needs() {
        let mut card = Scorecard::default();
        // Quiet: 2 msg/s needs 1 worker, 2 req/s 1 web replica; both have 1.
        card.record(Sample {
            level: 0.0,
            worker: r(1, 1),
            web: r(1, 1),
            backlog: Some(0),
        });
        // Peak: 80 msg/s needs 8 workers, 40 req/s 8 web replicas; the worker asked for 8
        // but has 4 ready (4 short) with 120 messages waiting; the web has 9 (1 over).
        card.record(Sample {
            level: 1.0,
            worker: r(8, 4),
            web: r(9, 9),
            backlog: Some(120),
        });
        // The broker did not answer: no backlog is counted, the replicas still are.
        card.record(Sample {
            level: 1.0,
            worker: r(8, 8),
            web: r(9, 9),
            backlog: None,
        });
        let s = card.scores();
        assert_eq!(s.worker.steps, 3);
        assert_eq!(s.worker.a_u, 4, "4 worker-seconds missing");
        assert!((s.worker.tau_u - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.worker.cost, 1 + 4 + 8);
        assert_eq!(s.worker.actions, 1, "1 -> 8 once");
        assert_eq!(s.web.tau_u, 0.0);
        assert_eq!(s.web.a_o, 2, "one over at each peak second");
        assert_eq!(s.backlog_message_seconds, 120.0);
        assert_eq!(s.longest_drain_seconds, 3.0, "120 messages at 4 x 10/s");
        let line = s.line();
        assert!(
            line.starts_with("score: worker under-provisioned 1 of 3 s (33.3 %), 13 pod-seconds"),
            "{line}"
        );
    }

    #[test]
    fn a_backlog_with_no_worker_ready_takes_forever_to_drain() {
        let mut card = Scorecard::default();
        card.record(Sample {
            level: 0.0,
            worker: r(1, 0),
            web: r(1, 1),
            backlog: Some(5),
        });
        assert!(card.scores().longest_drain_seconds.is_infinite());
    }
}
