//! `cargo bench --bench live`: the live counterpart of the backtest. The demo's scenario (a
//! RabbitMQ worker and a web service, src/demo/scenario.rs) runs on the local stack once per
//! system, with the same load cycle (quiet, ramp up, peak, ramp down, quiet), and each run is
//! scored the same way, one sample a second: seconds under-provisioned against what the load
//! needs, pod-seconds, scaling actions and reversals (the backtest's elasticity metrics), and
//! the queue's backlog in message-seconds and its longest drain.
//!
//! Systems (`--systems`, default ebb-direct,ebb-hpa,keda):
//! - ebb-direct: the demo's ScaledTargets, both in mode Direct;
//! - ebb-hpa: the same, both in mode Hpa (ebb writes the HPAs, the HPA controller scales);
//! - keda: KEDA v2.21.0 ScaledObjects on equivalent settings (below), KEDA writes the HPAs.
//!
//! Every system gets the same bounds (1..20), polling interval (5 s), scaling behavior
//! (scenario::behavior) and worker fallback (4 replicas after 3 failed polls); the HPA controller
//! syncs every 5 s. KEDA's worker has the two RabbitMQ triggers KEDA offers for the two halves of
//! ebb's DrainTime target, and the HPA takes the larger: QueueLength at the messages a worker gets
//! through in the drain time (10/s x 30 s = 300) and MessageRate at a worker's 10/s. The web
//! service: a prometheus trigger on the same query with threshold 5 (AverageValue).
//!
//! Options: `--systems`, `--cycles` (default 2), `--cycle-seconds` (default 240), `--drain-seconds`
//! (default the demo's 30: the worker's drain time, ebb's `drainSeconds` and KEDA's QueueLength
//! at 10/s times it; a run at another drain time puts each system at another point of its
//! trade-off between seconds short and pod-seconds). Prints one table
//! and writes it to `target/peers/live.{csv,json}`, and each system's run second by second to
//! `target/peers/live-<system>.csv` (the load, the backlog, the worker's replicas, what ebb
//! decided and read, what the worker's HPA read and asked for): where a run was short, it shows
//! which link of the chain was late. KEDA comes from scripts/build-peers.sh.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ebb::backtest::metrics::Elasticity;
use ebb::demo::load::{LoadCounters, LoadProfile};
use ebb::demo::scenario::{
    self, DRAIN_SECONDS, MAX_REPLICAS, MIN_REPLICAS, PER_WEB, PER_WORKER, POLL, PUBLISH, Replicas,
    RunScores, Sample, Scorecard, WEB_QUERY,
};
use ebb::localstack::kube::{ControlPlane, ControlPlaneOptions, apply_yaml};
use ebb::localstack::process::{ManagedProcess, free_port};
use ebb::localstack::prometheus::{Prometheus, ScrapeTarget};
use ebb::localstack::rabbitmq::{QueueCounts, RabbitMq};
use ebb::localstack::{Stack, StackOptions};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    EbbDirect,
    EbbHpa,
    Keda,
}

impl System {
    const ALL: [System; 3] = [System::EbbDirect, System::EbbHpa, System::Keda];

    fn name(self) -> &'static str {
        match self {
            System::EbbDirect => "ebb-direct",
            System::EbbHpa => "ebb-hpa",
            System::Keda => "keda",
        }
    }

    fn settings(self, drain_seconds: u32) -> String {
        match self {
            System::EbbDirect | System::EbbHpa => format!(
                "ScaledTargets mode {}: worker DrainTime ({drain_seconds} s, {PER_WORKER}/s a pod), \
                 web AverageValue {PER_WEB}",
                if self == System::EbbDirect {
                    "Direct"
                } else {
                    "Hpa"
                }
            ),
            System::Keda => format!(
                "ScaledObjects: worker rabbitmq QueueLength {} + MessageRate {PER_WORKER} (the HPA \
                 takes the larger), web prometheus threshold {PER_WEB}",
                queue_length(drain_seconds)
            ),
        }
    }
}

struct Args {
    systems: Vec<System>,
    cycles: u32,
    cycle: Duration,
    drain_seconds: u32,
}

/// KEDA's QueueLength for a drain time: the messages a worker gets through in it.
fn queue_length(drain_seconds: u32) -> f64 {
    PER_WORKER * f64::from(drain_seconds)
}

fn parse_args() -> Option<Args> {
    let flags = support::Flags::parse()?;
    let value = |flag: &str| flags.value(flag);
    let systems = flags
        .list("--systems", "ebb-direct,ebb-hpa,keda")
        .iter()
        .map(|s| {
            *System::ALL
                .iter()
                .find(|x| x.name() == s)
                .unwrap_or_else(|| panic!("unknown system {s}"))
        })
        .collect();
    Some(Args {
        systems,
        cycles: value("--cycles").map_or(2, |v| v.parse().expect("--cycles")),
        cycle: Duration::from_secs(
            value("--cycle-seconds").map_or(240, |v| v.parse().expect("--cycle-seconds")),
        ),
        drain_seconds: value("--drain-seconds")
            .map_or(DRAIN_SECONDS, |v| v.parse().expect("--drain-seconds")),
    })
}

fn main() {
    let Some(args) = parse_args() else { return };
    ebb::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(run(args));
}

/// One system's run.
#[derive(Debug, serde::Serialize)]
struct Row {
    system: String,
    /// Seconds from applying the system's objects until it acted on both workloads.
    ready_seconds: f64,
    settings: String,
    scores: RunScores,
    published: u64,
    consumed: u64,
    requests: u64,
    request_errors: u64,
    /// Seconds in which the broker's queue counts could not be read.
    backlog_unread: usize,
}

struct Bench {
    kube: ControlPlane,
    prometheus: Prometheus,
    rabbitmq: RabbitMq,
    client: kube::Client,
    web_url: String,
    dir: PathBuf,
    keda_bin: Option<PathBuf>,
    args: Args,
}

async fn run(args: Args) {
    let keda_bin = if args.systems.contains(&System::Keda) {
        Some(
            ebb::localstack::peers_dirs()
                .await
                .expect("KEDA (scripts/build-peers.sh)")
                .0,
        )
    } else {
        None
    };
    let web = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let web_addr = web.local_addr().unwrap();
    ebb::demo::load::serve_web(web).await.unwrap();
    let mut stack = Stack::start(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: true,
            hpa_sync_period: POLL,
            ..Default::default()
        }),
        prometheus: true,
        scrape: vec![ScrapeTarget {
            job: "demo-web".into(),
            address: web_addr.to_string(),
            interval: Duration::from_secs(1),
        }],
        rabbitmq: true,
    })
    .await
    .expect("the local stack");
    let dir = stack.dir().join("live");
    std::fs::create_dir_all(&dir).unwrap();
    let kube = stack.kube.take().unwrap();
    let client = kube.client().await.unwrap();
    let bench = Bench {
        client,
        kube,
        prometheus: stack.prometheus.take().unwrap(),
        rabbitmq: stack.rabbitmq.take().unwrap(),
        web_url: format!("http://{web_addr}/"),
        dir,
        keda_bin,
        args,
    };
    let mut rows = Vec::new();
    for &system in &bench.args.systems {
        eprintln!("[live] {}", system.name());
        let row = run_system(&bench, system).await;
        eprintln!("[live] {}: {}", system.name(), row.scores.line());
        rows.push(row);
    }
    report(&bench.args, &rows);
    drop(bench);
    drop(stack);
}

async fn run_system(bench: &Bench, system: System) -> Row {
    let ns = format!("live-{}", system.name());
    let queue = format!("jobs-{}", system.name());
    bench.kube.create_namespace(&ns).await.unwrap();
    scenario::create_workloads(&bench.client, &ns)
        .await
        .unwrap();
    // The queue exists before any system reads it.
    let connection = bench.rabbitmq.connect().await.unwrap();
    ebb::localstack::rabbitmq::declare_queue(&connection.create_channel().await.unwrap(), &queue)
        .await
        .unwrap();

    let sys_dir = bench.dir.join(system.name());
    std::fs::create_dir_all(&sys_dir).unwrap();
    let processes = start_system(bench, system, &sys_dir).await;
    apply_yaml(&bench.client, &manifest(bench, system, &ns, &queue), "live")
        .await
        .unwrap();
    // The load starts once the system acts on both workloads: its two HPAs read their metrics
    // (ScalingActive), or in mode Direct, both ScaledTargets have decided once (`status.desiredReplicas`).
    let configured = Instant::now();
    let ready = ebb::localstack::process::wait_until(Duration::from_secs(180), || {
        acting(bench, system, &ns)
    })
    .await;
    let ready_seconds = configured.elapsed().as_secs_f64();
    eprintln!(
        "[live] {}: {} after {ready_seconds:.0} s",
        system.name(),
        if ready { "acting" } else { "NOT acting" }
    );
    tokio::time::sleep(POLL).await;

    let profile = LoadProfile {
        cycle: bench.args.cycle,
    };
    let counters = Arc::new(LoadCounters::default());
    let started = Instant::now();
    let mut load = scenario::start_load(
        &connection,
        &queue,
        bench.web_url.clone(),
        profile,
        started,
        counters.clone(),
    )
    .await
    .unwrap();
    let mut card = Scorecard::default();
    let mut timeline = String::from(TIMELINE_HEADER);
    let mut backlog_unread = 0;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut last_line = Instant::now();
    while started.elapsed() < bench.args.cycle * bench.args.cycles {
        tokio::select! {
            _ = ticks.tick() => {}
            Some(result) = load.join_next() => panic!("the load stopped: {result:?}"),
        }
        let replicas = scenario::deployment_replicas(&bench.client, &ns).await;
        let (Some(worker), Some(web)) = (replicas.get("worker"), replicas.get("web")) else {
            continue;
        };
        counters
            .worker_replicas
            .store(worker.ready, Ordering::Relaxed);
        let counts = bench.rabbitmq.queue_counts(&queue).await.ok().flatten();
        let backlog = counts.map(|c| c.backlog());
        backlog_unread += usize::from(backlog.is_none());
        let elapsed = started.elapsed();
        card.record(Sample {
            level: profile.level(elapsed),
            worker: *worker,
            web: *web,
            backlog,
        });
        timeline.push_str(&timeline_row(
            &WorkerView::read(&bench.client, &ns).await,
            elapsed,
            PUBLISH.at(profile.level(elapsed)),
            counts,
            *worker,
        ));
        if last_line.elapsed() >= Duration::from_secs(30) {
            last_line = Instant::now();
            eprintln!(
                "[live] {} {:>4} s {:<18} worker {}/{} web {}/{} backlog {}",
                system.name(),
                elapsed.as_secs(),
                profile.phase(elapsed),
                worker.ready,
                worker.desired,
                web.ready,
                web.desired,
                backlog.map_or("-".into(), |b| b.to_string())
            );
        }
    }
    load.abort_all();
    let timeline_file = support::peers::out_dir().join(format!("live-{}.csv", system.name()));
    std::fs::write(&timeline_file, timeline).unwrap();
    eprintln!(
        "[live] {}: second by second in {}",
        system.name(),
        timeline_file.display()
    );
    let row = Row {
        ready_seconds,
        system: system.name().into(),
        settings: system.settings(bench.args.drain_seconds),
        scores: card.scores(),
        published: counters.published.load(Ordering::Relaxed),
        consumed: counters.consumed.load(Ordering::Relaxed),
        requests: counters.requests.load(Ordering::Relaxed),
        request_errors: counters.request_errors.load(Ordering::Relaxed),
        backlog_unread,
    };

    // The namespace goes while the system still runs (its finalizers, its HPAs); then it stops.
    let namespaces = Api::<Namespace>::all(bench.client.clone());
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    let gone = ebb::localstack::process::wait_until(Duration::from_secs(180), || async {
        namespaces.get_opt(&ns).await.is_ok_and(|n| n.is_none())
    })
    .await;
    if !gone {
        eprintln!("[live] namespace {ns} still terminating after 180 s");
    }
    drop(processes);
    row
}

const TIMELINE_HEADER: &str = "t_s,publish_per_s,broker_publish_rate,broker_published,backlog,worker_spec,\
    worker_ready,ebb_desired,ebb_value,hpa_value,hpa_target,hpa_desired\n";

/// One second of a run, a row of `live-<system>.csv`.
fn timeline_row(
    view: &WorkerView,
    elapsed: Duration,
    publish: f64,
    counts: Option<QueueCounts>,
    worker: Replicas,
) -> String {
    let cell = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}"));
    format!(
        "{:.0},{publish:.1},{},{},{},{},{},{},{},{},{},{}\n",
        elapsed.as_secs_f64(),
        cell(counts.and_then(|c| c.publish_rate)),
        counts
            .and_then(|c| c.published)
            .map_or(String::new(), |p| p.to_string()),
        counts.map_or(String::new(), |c| c.backlog().to_string()),
        worker.desired,
        worker.ready,
        view.ebb_desired.map_or(String::new(), |d| d.to_string()),
        cell(view.ebb_value),
        cell(view.hpa_value),
        cell(view.hpa_target),
        view.hpa_desired.map_or(String::new(), |d| d.to_string()),
    )
}

/// The worker's chain at one instant: what ebb decided and read (its ScaledTarget's status;
/// none with KEDA) and what the HPA that scales it read and asked for (none in mode Direct).
#[derive(Debug, Default)]
struct WorkerView {
    ebb_desired: Option<i32>,
    ebb_value: Option<f64>,
    hpa_value: Option<f64>,
    hpa_target: Option<f64>,
    hpa_desired: Option<i32>,
}

impl WorkerView {
    async fn read(client: &kube::Client, ns: &str) -> WorkerView {
        let mut view = WorkerView::default();
        let targets = Api::<ebb::crd::ScaledTarget>::namespaced(client.clone(), ns);
        if let Ok(Some(status)) = targets
            .get_opt("worker")
            .await
            .map(|t| t.and_then(|t| t.status))
        {
            view.ebb_desired = status.desired_replicas;
            view.ebb_value = status
                .metrics
                .first()
                .and_then(|m| m.value.as_ref())
                .and_then(quantity);
        }
        let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), ns);
        let Ok(list) = hpas.list(&ListParams::default()).await else {
            return view;
        };
        let Some(hpa) = list
            .items
            .into_iter()
            .find(|h| h.spec.scale_target_ref.name == "worker")
        else {
            return view;
        };
        // The HPA takes the largest proposal: show the metric it read that asks most, i.e.
        // the one with the highest value over its target.
        let targets: Vec<Option<f64>> = hpa
            .spec
            .metrics
            .iter()
            .flatten()
            .map(|m| {
                let t = &m.external.as_ref()?.target;
                t.average_value
                    .as_ref()
                    .or(t.value.as_ref())
                    .and_then(quantity)
            })
            .collect();
        let status = hpa.status.unwrap_or_default();
        view.hpa_desired = Some(status.desired_replicas);
        let values = status.current_metrics.into_iter().flatten().map(|m| {
            let c = m.external.map(|e| e.current);
            c.and_then(|c| c.average_value.or(c.value))
                .as_ref()
                .and_then(quantity)
        });
        let best = values
            .zip(targets)
            .filter_map(|(v, t)| Some((v?, t?)))
            .max_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)));
        if let Some((v, t)) = best {
            view.hpa_value = Some(v);
            view.hpa_target = Some(t);
        }
        view
    }
}

fn quantity(q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<f64> {
    ebb::crd::milli_value(&q.0).ok().map(|m| m as f64 / 1000.0)
}

/// Whether `system` acts on both workloads of `ns` (see [`run_system`]).
async fn acting(bench: &Bench, system: System, ns: &str) -> bool {
    if system == System::EbbDirect {
        let targets = Api::<ebb::crd::ScaledTarget>::namespaced(bench.client.clone(), ns);
        return targets.list(&ListParams::default()).await.is_ok_and(|l| {
            l.items.len() == 2
                && l.items.iter().all(|t| {
                    t.status
                        .as_ref()
                        .is_some_and(|s| s.desired_replicas.is_some())
                })
        });
    }
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(bench.client.clone(), ns);
    hpas.list(&ListParams::default()).await.is_ok_and(|l| {
        l.items.len() == 2
            && l.items.iter().all(|h| {
                h.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "ScalingActive" && c.status == "True")
                    })
            })
    })
}

async fn start_system(bench: &Bench, system: System, dir: &Path) -> Vec<ManagedProcess> {
    match system {
        System::EbbDirect | System::EbbHpa => vec![
            ebb::localstack::ebb::serve(
                &bench.kube,
                dir,
                Path::new(env!("CARGO_BIN_EXE_ebb")),
                "ebb-live",
                free_port(),
                free_port(),
            )
            .await
            .expect("ebb serve"),
        ],
        System::Keda => {
            let bin = bench.keda_bin.as_ref().expect("KEDA's binaries");
            support::peers::start_keda(&bench.kube, bin, dir, false).await
        }
    }
}

/// The system's objects for the scenario in `ns`, as YAML.
fn manifest(bench: &Bench, system: System, ns: &str, queue: &str) -> String {
    let objects = match system {
        System::EbbDirect | System::EbbHpa => {
            let mode = if system == System::EbbDirect {
                "Direct"
            } else {
                "Hpa"
            };
            let mut objects = scenario::ebb_targets(
                ns,
                queue,
                mode,
                mode,
                &bench.rabbitmq,
                &bench.prometheus.url(),
            );
            for o in &mut objects {
                if o["kind"] == "ScaledTarget" && o["metadata"]["name"] == "worker" {
                    o["spec"]["metrics"][0]["target"]["drainSeconds"] =
                        json!(bench.args.drain_seconds);
                }
            }
            objects
        }
        System::Keda => keda_objects(bench, ns, queue),
    };
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

/// KEDA's ScaledObjects on settings equivalent to ebb's (see the module's comment).
fn keda_objects(bench: &Bench, ns: &str, queue: &str) -> Vec<Value> {
    let advanced = json!({ "horizontalPodAutoscalerConfig": { "behavior": scenario::behavior() } });
    let host = format!(
        "{}/",
        bench
            .rabbitmq
            .management_url()
            .trim_end_matches('/')
            .replace("http://", "http://guest:guest@")
    );
    let rabbitmq = |name: &str, mode: &str, value: f64| {
        json!({
            "type": "rabbitmq", "name": name,
            "metadata": { "protocol": "http", "host": host, "queueName": queue,
                          "mode": mode, "value": value.to_string() }
        })
    };
    let worker = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": { "name": "worker", "namespace": ns },
        "spec": {
            "scaleTargetRef": { "name": "worker" },
            "pollingInterval": POLL.as_secs(),
            "minReplicaCount": MIN_REPLICAS, "maxReplicaCount": MAX_REPLICAS,
            "fallback": scenario::fallback(),
            "advanced": advanced,
            "triggers": [
                rabbitmq("backlog", "QueueLength", queue_length(bench.args.drain_seconds)),
                rabbitmq("arrivals", "MessageRate", PER_WORKER),
            ]
        }
    });
    let web = json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": { "name": "web", "namespace": ns },
        "spec": {
            "scaleTargetRef": { "name": "web" },
            "pollingInterval": POLL.as_secs(),
            "minReplicaCount": MIN_REPLICAS, "maxReplicaCount": MAX_REPLICAS,
            "advanced": advanced,
            "triggers": [{
                "type": "prometheus",
                "metadata": { "serverAddress": bench.prometheus.url(), "query": WEB_QUERY,
                              "threshold": PER_WEB.to_string() }
            }]
        }
    });
    vec![worker, web]
}

fn report(args: &Args, rows: &[Row]) {
    let headers = [
        "system",
        "worker under-provisioned s (%)",
        "worker pod-s",
        "worker actions (reversals)",
        "web under-provisioned s (%)",
        "web pod-s",
        "web actions (reversals)",
        "backlog message-s",
        "longest drain s",
        "published / consumed",
        "request errors",
        "backlog unread s",
        "acting after s",
    ];
    let under = scenario::under_seconds;
    let base = rows.first().map(|r| r.scores);
    let ratio = |x: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!(" (x{:.2})", x / b),
        _ => String::new(),
    };
    println!(
        "\n{} cycles of {} s; ratios to {}\n",
        args.cycles,
        args.cycle.as_secs(),
        rows.first().map_or("-", |r| r.system.as_str())
    );
    println!("| {} |", headers.join(" | "));
    println!("|{}", "---|".repeat(headers.len()));
    let mut csv = String::from(
        "system,worker_under_s,worker_tau_u,worker_pod_s,worker_actions,worker_reversals,\
         web_under_s,web_tau_u,web_pod_s,web_actions,web_reversals,backlog_message_s,\
         longest_drain_s,published,consumed,request_errors,backlog_unread_s\n",
    );
    for (i, r) in rows.iter().enumerate() {
        let s = &r.scores;
        let b = base.filter(|_| i > 0);
        // One workload's three cells: seconds short, pod-seconds, actions (reversals).
        let workload = |e: &Elasticity, base: Option<&Elasticity>| {
            [
                format!(
                    "{:.0} ({:.1} %){}",
                    under(e),
                    e.tau_u,
                    ratio(under(e), base.map(under))
                ),
                format!(
                    "{}{}",
                    e.cost,
                    ratio(e.cost as f64, base.map(|b| b.cost as f64))
                ),
                format!("{} ({})", e.actions, e.reversals),
            ]
        };
        let mut cells = vec![r.system.clone()];
        cells.extend(workload(&s.worker, b.as_ref().map(|b| &b.worker)));
        cells.extend(workload(&s.web, b.as_ref().map(|b| &b.web)));
        cells.extend([
            format!(
                "{:.0}{}",
                s.backlog_message_seconds,
                ratio(
                    s.backlog_message_seconds,
                    b.map(|b| b.backlog_message_seconds)
                )
            ),
            format!("{:.1}", s.longest_drain_seconds),
            format!("{} / {}", r.published, r.consumed),
            r.request_errors.to_string(),
            r.backlog_unread.to_string(),
            format!("{:.0}", r.ready_seconds),
        ]);
        println!("| {} |", cells.join(" | "));
        csv.push_str(&format!(
            "{},{},{:.2},{},{},{},{},{:.2},{},{},{},{:.0},{:.1},{},{},{},{}\n",
            r.system,
            under(&s.worker),
            s.worker.tau_u,
            s.worker.cost,
            s.worker.actions,
            s.worker.reversals,
            under(&s.web),
            s.web.tau_u,
            s.web.cost,
            s.web.actions,
            s.web.reversals,
            s.backlog_message_seconds,
            s.longest_drain_seconds,
            r.published,
            r.consumed,
            r.request_errors,
            r.backlog_unread
        ));
    }
    println!("\nsettings:");
    for r in rows {
        println!("- {}: {}", r.system, r.settings);
    }
    let out = support::peers::out_dir();
    std::fs::write(out.join("live.csv"), csv).unwrap();
    std::fs::write(
        out.join("live.json"),
        serde_json::to_vec_pretty(rows).unwrap(),
    )
    .unwrap();
    println!("written: {}/live.{{csv,json}}", out.display());
}
