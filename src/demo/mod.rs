//! `ebb demo`: ebb scaling a sample workload on the local stack, live in the terminal.
//!
//! What runs, all on loopback: the local stack (control plane with the HPA controller and kwok,
//! Prometheus, RabbitMQ); `ebb serve` as a child process, as it runs in a cluster (the
//! ServiceAccount's RBAC from deploy/, the external metrics API registered as the APIService
//! with a certificate from the cluster CA); two workloads in namespace `demo`:
//! - `worker`, scaled by ebb in mode Direct on the backlog of RabbitMQ queue `jobs`; simulated
//!   workers drain the queue at a rate proportional to its Ready replicas;
//! - `web`, scaled by the HPA that ebb owns (mode Hpa) on the request rate Prometheus scrapes
//!   from a sample HTTP service;
//!
//! and a load generator that repeats a cycle (quiet, ramp up, peak, ramp down, quiet). The
//! table is `ebb status`'s; at the end a summary says how each workload was scaled.
//! Everything started stops on exit, also on Ctrl-C.

pub mod load;
pub mod scenario;

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::localstack::kube::{ControlPlane, ControlPlaneOptions, apply_yaml};
use crate::localstack::process::free_port;
use crate::localstack::prometheus::ScrapeTarget;
use crate::localstack::rabbitmq::RabbitMq;
use crate::localstack::{Stack, StackOptions};
use load::{LoadCounters, LoadProfile};
use scenario::{
    DRAIN_SECONDS, PER_WORKER, POLL, PUBLISH, REQUESTS, Replicas, Sample, Scorecard,
    deployment_replicas,
};

/// Flags of `ebb demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this many seconds instead of waiting for Ctrl-C (for scripted runs).
    #[arg(long, value_name = "SECONDS")]
    pub exit_after: Option<u64>,
    /// Stop after this many load cycles (for scripted runs and the test).
    #[arg(long, value_name = "N")]
    pub cycles: Option<u32>,
    /// Length of one load cycle (quiet, ramp up, peak, ramp down, quiet), in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 240)]
    pub cycle: u64,
    /// Print a progress line every 10 s instead of redrawing the table (the default when
    /// standard output is not a terminal).
    #[arg(long)]
    pub plain: bool,
}

const NAMESPACE: &str = "demo";
/// The queue the worker drains.
const QUEUE: &str = "jobs";

/// Runs the demo on its own tokio runtime.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    // The web service first: Prometheus is told what to scrape when it starts.
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let web_addr = web.local_addr()?;
    load::serve_web(web).await?;
    let (api_port, metrics_port) = (free_port(), free_port());

    eprintln!("starting the local stack (control plane, Prometheus, RabbitMQ)...");
    let stack = Stack::start(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: true,
            hpa_sync_period: POLL,
            hpa_downscale_stabilization: Duration::from_secs(30),
            ..Default::default()
        }),
        prometheus: true,
        scrape: vec![
            ScrapeTarget {
                job: "demo-web".into(),
                address: web_addr.to_string(),
                interval: Duration::from_secs(1),
            },
            ScrapeTarget {
                job: "ebb".into(),
                address: format!("127.0.0.1:{metrics_port}"),
                interval: Duration::from_secs(5),
            },
        ],
        rabbitmq: true,
    })
    .await?;
    let kube = stack
        .kube
        .as_ref()
        .expect("the demo starts a control plane");
    let prometheus = stack.prometheus.as_ref().expect("started");
    let rabbitmq = stack.rabbitmq.as_ref().expect("started");
    let client = kube.client().await?;

    eprintln!("installing ebb (CRD, RBAC) and starting `ebb serve`...");
    let _ebb = crate::localstack::ebb::serve(
        kube,
        stack.dir(),
        &std::env::current_exe()?,
        "ebb-demo",
        api_port,
        metrics_port,
    )
    .await?;

    eprintln!("creating the sample workloads and their ScaledTargets in namespace {NAMESPACE}...");
    create_workloads(kube, rabbitmq, &prometheus.url()).await?;

    let profile = LoadProfile {
        cycle: Duration::from_secs(args.cycle.max(30)),
    };
    let counters = Arc::new(LoadCounters::default());
    let load_started = Instant::now();
    let connection = rabbitmq.connect().await?;
    let mut load = scenario::start_load(
        &connection,
        QUEUE,
        format!("http://{web_addr}/"),
        profile,
        load_started,
        counters.clone(),
    )
    .await?;

    println!(
        "\nebb is scaling `worker` (Direct, on the work of RabbitMQ queue `jobs`) and `web` (owned HPA, request rate).\n\
         Look around while it runs:\n\
         \n  export KUBECONFIG={}\n  export PATH={}:$PATH\n  kubectl -n {NAMESPACE} get scaledtargets,hpa,deploy\n  \
         target/debug/ebb status -n {NAMESPACE} --watch 2\n\
         \n  Prometheus:  {}   (ebb's own metrics: job=\"ebb\")\n  RabbitMQ:    {} (guest/guest)\n  Logs:        {}\n",
        kube.admin_kubeconfig.display(),
        crate::localstack::control_plane_bin().await?.display(),
        prometheus.url(),
        rabbitmq.management_url(),
        stack.dir().display(),
    );

    let live = !args.plain && std::io::stdout().is_terminal();
    let deadline = args.exit_after.map(|s| started + Duration::from_secs(s));
    let mut history = ReplicaHistory::default();
    let mut queue = QueueTrack::default();
    let mut scorecard = Scorecard::default();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut last_plain_line = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    if deadline.is_none() && args.cycles.is_none() {
        println!("Press Ctrl-C to stop everything.");
    }
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut ctrl_c => break,
            Some(result) = load.join_next() => {
                // A load task ends only on an error (RabbitMQ gone, say): say so and stop.
                result??;
            }
        }
        let cycles_done = args
            .cycles
            .is_some_and(|n| load_started.elapsed() >= profile.cycle * n);
        if cycles_done || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let replicas = deployment_replicas(&client, NAMESPACE).await;
        if let Some(ready) = replicas.get("worker").map(|r| r.ready) {
            counters.worker_replicas.store(ready, Ordering::Relaxed);
        }
        history.record(&replicas);
        let read_backlog = rabbitmq
            .queue_counts(QUEUE)
            .await
            .ok()
            .flatten()
            .map(|c| c.backlog());
        let backlog = read_backlog.unwrap_or(0);
        let elapsed = load_started.elapsed();
        if let (Some(worker), Some(web)) = (replicas.get("worker"), replicas.get("web")) {
            let at_peak = profile.phase(elapsed) == "peak";
            queue.record(
                backlog,
                *worker,
                at_peak,
                PUBLISH.at(profile.level(elapsed)),
            );
            scorecard.record(Sample {
                level: profile.level(elapsed),
                worker: *worker,
                web: *web,
                backlog: read_backlog,
            });
        }
        let headline = format!(
            "ebb demo  {}  load: {} (publishing {:.0}/s, {:.0} req/s)  queue `{QUEUE}`: {backlog}  \
             published {}, processed {}, requests {}",
            clock(started.elapsed()),
            profile.phase(elapsed),
            PUBLISH.at(profile.level(elapsed)),
            REQUESTS.at(profile.level(elapsed)),
            counters.published.load(Ordering::Relaxed),
            counters.consumed.load(Ordering::Relaxed),
            counters.requests.load(Ordering::Relaxed),
        );
        if live {
            let table = match crate::status::rows(&client, Some(NAMESPACE)).await {
                Ok(rows) => crate::status::render(&rows, k8s_openapi::jiff::Timestamp::now()),
                Err(e) => format!("(reading ScaledTargets: {e})\n"),
            };
            print!("{}{headline}\n\n{table}", crate::status::CLEAR_SCREEN);
        } else if last_plain_line.elapsed() >= Duration::from_secs(10) {
            last_plain_line = Instant::now();
            let replicas: Vec<String> = replicas
                .iter()
                .map(|(name, r)| format!("{name}={}", r.desired))
                .collect();
            println!("{headline}  replicas: {}", replicas.join(" "));
        }
    }
    load.abort_all();
    let scores = scorecard.scores();
    println!(
        "\n{}{}{}",
        history.summary(),
        queue.summary(&scores),
        scores.line()
    );
    eprintln!("stopping everything...");
    drop(_ebb);
    drop(stack);
    Ok(())
}

/// The two sample Deployments, the Secret of the RabbitMQ metric and the two ScaledTargets:
/// the worker in mode Direct, the web service through the HPA ebb owns.
async fn create_workloads(
    kube: &ControlPlane,
    rabbitmq: &RabbitMq,
    prometheus_url: &str,
) -> anyhow::Result<()> {
    kube.create_namespace(NAMESPACE).await?;
    let client = kube.client().await?;
    scenario::create_workloads(&client, NAMESPACE).await?;
    let manifest: Vec<String> =
        scenario::ebb_targets(NAMESPACE, QUEUE, "Direct", "Hpa", rabbitmq, prometheus_url)
            .iter()
            .map(serde_yaml::to_string)
            .collect::<Result<_, _>>()?;
    apply_yaml(&client, &manifest.join("---\n"), "ebb-demo").await?;
    Ok(())
}

/// What each Deployment's replica count did over the run, for the summary.
#[derive(Debug, Default)]
struct ReplicaHistory {
    workloads: BTreeMap<String, Track>,
}

#[derive(Debug, Clone, Copy)]
struct Track {
    first: i32,
    last: i32,
    peak: i32,
    ups: u32,
    downs: u32,
}

impl ReplicaHistory {
    fn record(&mut self, replicas: &BTreeMap<String, Replicas>) {
        for (name, r) in replicas {
            let n = r.desired;
            let track = self.workloads.entry(name.clone()).or_insert(Track {
                first: n,
                last: n,
                peak: n,
                ups: 0,
                downs: 0,
            });
            if n > track.last {
                track.ups += 1;
            } else if n < track.last {
                track.downs += 1;
            }
            track.last = n;
            track.peak = track.peak.max(n);
        }
    }

    /// One line per workload: `summary: worker replicas 1 -> peak 8 -> 2 (scaled up 3 times,
    /// down 2 times)`; `tests/demo.rs` reads these lines.
    fn summary(&self) -> String {
        let mut out = String::from("Summary of the run:\n");
        if self.workloads.is_empty() {
            out.push_str("summary: no workload was observed\n");
        }
        for (name, t) in &self.workloads {
            out.push_str(&format!(
                "summary: {name} replicas {} -> peak {} -> {} (scaled up {} times, down {} times)\n",
                t.first, t.peak, t.last, t.ups, t.downs
            ));
        }
        out
    }
}

/// The worker at peak, sampled once a second, for the summary.
#[derive(Debug, Default)]
struct QueueTrack {
    /// At peak, once the workers first reached what the peak needs: the fewest and most.
    peak_range: Option<(i32, i32)>,
    /// The largest backlog at peak.
    peak_backlog: i64,
}

impl QueueTrack {
    fn record(&mut self, backlog: i64, worker: Replicas, at_peak: bool, arrival: f64) {
        let needed = (arrival / PER_WORKER).ceil() as i32;
        if at_peak {
            self.peak_backlog = self.peak_backlog.max(backlog);
        }
        if at_peak && (self.peak_range.is_some() || worker.desired >= needed) {
            let (lo, hi) = self.peak_range.unwrap_or((worker.desired, worker.desired));
            self.peak_range = Some((lo.min(worker.desired), hi.max(worker.desired)));
        }
    }

    /// `summary: queue jobs backlog 1234 message-seconds, longest drain 12.3 s, worker at
    /// peak 8..9 (needs 8, the drain term up to 1)`; `tests/demo.rs` reads it.
    fn summary(&self, scores: &scenario::RunScores) -> String {
        let (lo, hi) = self.peak_range.unwrap_or((0, 0));
        let drain_term =
            (self.peak_backlog as f64 / (f64::from(DRAIN_SECONDS) * PER_WORKER)).ceil() as i32;
        format!(
            "summary: queue {QUEUE} backlog {:.0} message-seconds, longest drain {:.1} s, \
             worker at peak {lo}..{hi} (needs {}, the drain term up to {drain_term})\n",
            scores.backlog_message_seconds,
            scores.longest_drain_seconds,
            (PUBLISH.peak / PER_WORKER).ceil() as i32
        )
    }
}

fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_counts_changes_and_keeps_the_peak() {
        let mut h = ReplicaHistory::default();
        for n in [1, 1, 3, 6, 6, 4, 2] {
            let r = Replicas {
                desired: n,
                ready: n,
            };
            h.record(&BTreeMap::from([("worker".to_string(), r)]));
        }
        let s = h.summary();
        assert!(
            s.contains(
                "summary: worker replicas 1 -> peak 6 -> 2 (scaled up 2 times, down 2 times)"
            ),
            "{s}"
        );
    }
}
