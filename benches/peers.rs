//! `cargo bench --bench peers`: ebb side by side with KEDA and prometheus-adapter on the same
//! local stack (one control plane, one Prometheus), the same targets, the same load, one after
//! another (only one APIService can serve `external.metrics.k8s.io` at a time: each system is
//! registered in turn, exactly as ebb's harness registers ebb).
//!
//! For each size N (`--sizes`, default 100,1000) and each system (`--systems`, default
//! ebb,prometheus-adapter,keda,keda-cached), N targets scale N workloads (a bench CRD with a
//! `/scale` subresource: no pods, so the HPA controller's reads and writes are all the cluster
//! does for them); target i's query is `sum(peers_load{q="q<i mod N/10>"})` over series pushed to
//! Prometheus by remote write every 10 s (N/10 distinct queries). Each system gets:
//! - ebb: ScaledTargets in mode Hpa, defaults (pollingInterval 15 s);
//! - prometheus-adapter: one `externalRules` rule and N HPAs written by hand;
//! - keda: ScaledObjects with a prometheus trigger, defaults (pollingInterval 30 s, live reads);
//! - keda-cached: the same with `useCachedMetrics: true` (KEDA's advice for many HPA reads).
//!
//! Every HPA targets AverageValue 10 (the values are 20), min 1, max 10. Measured per system:
//! the external metrics API's latency through the kube-apiserver (the aggregator) at fixed
//! request rates (`--rates`, default 100,1000; open loop, HTTP/2, requests shaped like the HPA
//! controller's, as a user with RBAC), errors; upstream Prometheus queries per minute from
//! Prometheus's own `prometheus_http_requests_total` (handlers /api/v1/query and query_range)
//! with no load but the HPA controller's, and per second under the highest rate; resident memory
//! and CPU seconds per minute of every process of the system (KEDA: operator + adapter). The
//! floor row is the same load against a plain GET of a Deployment. For ebb, also the p99 of the
//! time its own server spent on those requests (its `ebb_api_request_duration_seconds`, read
//! before and after each load: the upper bound of a bucket, the buckets doubling from 0.1 ms),
//! which splits the latency seen through the aggregator into ebb's part and the path's.
//!
//! Prints one table (each peer's cell with its ratio to ebb at the same N) and writes it to
//! `target/peers/peers.{csv,json}`. Peers come from `scripts/build-peers.sh` (built once).
//! Options: `--sizes`, `--rates`, `--systems`, `--load-seconds` (default 15), `--window-seconds`
//! (idle window for queries and CPU, default 60), `--targets-per-query` (default 10; 1: every
//! target's query distinct), `--ebb-polling-seconds` (ebb's pollingInterval; default its own,
//! 15; 30 is KEDA's, to compare upstream queries a minute at one interval). `EBB_BENCH_EBB` runs another command as ebb's binary (a wrapper
//! that starts it under a heap profiler, say).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ebb::localstack::kube::{ControlPlane, ControlPlaneOptions, apply_yaml};
use ebb::localstack::process::{ManagedProcess, free_port};
use ebb::localstack::prometheus::{Prometheus, histogram_buckets, quantile_between};
use ebb::localstack::rabbitmq::RabbitMq;
use ebb::localstack::{Stack, StackOptions};
use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::json;

const LOAD_USER: &str = "peers-load";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Every series' value: with the HPAs' AverageValue 10, two replicas.
const BASE_VALUE: f64 = 20.0;
/// The value of the load step: four replicas.
const STEP_VALUE: f64 = 40.0;
/// How long the HPAs get to see the step.
const STEP_WAIT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Ebb,
    PrometheusAdapter,
    Keda,
    KedaCached,
}

impl System {
    const ALL: [System; 4] = [
        System::Ebb,
        System::PrometheusAdapter,
        System::Keda,
        System::KedaCached,
    ];

    fn name(self) -> &'static str {
        match self {
            System::Ebb => "ebb",
            System::PrometheusAdapter => "prometheus-adapter",
            System::Keda => "keda",
            System::KedaCached => "keda-cached",
        }
    }

    fn settings(self) -> &'static str {
        match self {
            System::Ebb => "ScaledTarget mode Hpa, defaults (pollingInterval 15s)",
            System::PrometheusAdapter => {
                "externalRules (namespaced: false), --metrics-relist-interval 30s, hand-written HPAs"
            }
            System::Keda => "ScaledObject, defaults (pollingInterval 30s, live metric reads)",
            System::KedaCached => {
                "ScaledObject, KEDA's advice for scale: useCachedMetrics: true, --kube-api-qps 100 \
                 --kube-api-burst 150 (operator and adapter), KEDA_SCALEDOBJECT_CTRL_MAX_RECONCILES=20 \
                 (pollingInterval 30s)"
            }
        }
    }

    /// The external metric and label selector the HPA of target `i` asks for.
    fn metric(self, i: usize, distinct: usize, source: Source) -> (String, String) {
        match self {
            System::Ebb => ("load".into(), format!("ebb.dev/scaledtarget=t{i}")),
            System::PrometheusAdapter => ("peers_load".into(), format!("q=q{}", i % distinct)),
            System::Keda | System::KedaCached => (
                match source {
                    Source::Prometheus => "s0-prometheus".into(),
                    // KEDA names it after the queue (rabbitmq_scaler.go GetMetricSpecForScaling).
                    Source::RabbitMq => format!("s0-rabbitmq-{}", queue_name(i % distinct)),
                },
                format!("scaledobject.keda.sh/name=t{i}"),
            ),
        }
    }
}

/// Where every target's metric comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Series pushed to Prometheus by remote write; target i queries series i mod N/10.
    Prometheus,
    /// RabbitMQ queues holding a fixed backlog (no consumers); target i reads queue i mod N/10
    /// through the management API (behind the bench's counting proxy).
    RabbitMq,
}

struct Args {
    source: Source,
    sizes: Vec<usize>,
    rates: Vec<u64>,
    systems: Vec<System>,
    load: Duration,
    window: Duration,
    /// Targets sharing one query (10: N/10 distinct queries; 1: every query distinct).
    targets_per_query: usize,
    /// ebb's pollingInterval in seconds, when not its default (30: KEDA's default, to compare
    /// upstream queries per minute at one interval).
    ebb_polling_seconds: Option<u64>,
}

fn parse_args() -> Option<Args> {
    let flags = support::Flags::parse()?;
    let value = |flag: &str| flags.value(flag);
    let list = |flag: &str, default: &str| flags.list(flag, default);
    let source = match value("--source").as_deref() {
        None | Some("prometheus") => Source::Prometheus,
        Some("rabbitmq") => Source::RabbitMq,
        Some(other) => panic!("--source prometheus|rabbitmq, not {other}"),
    };
    let systems = list("--systems", "ebb,prometheus-adapter,keda,keda-cached")
        .iter()
        .map(|s| {
            *System::ALL
                .iter()
                .find(|x| x.name() == s)
                .unwrap_or_else(|| panic!("unknown system {s}"))
        })
        .filter(|s| {
            // prometheus-adapter reads Prometheus only: a RabbitMQ queue reaches it only as
            // series of a RabbitMQ exporter that Prometheus scrapes, another architecture.
            let skip = source == Source::RabbitMq && *s == System::PrometheusAdapter;
            if skip {
                eprintln!("[peers] prometheus-adapter does not read RabbitMQ: no row");
            }
            !skip
        })
        .collect();
    let secs = |flag: &str, default: u64| {
        Duration::from_secs(value(flag).map_or(default, |v| v.parse().expect(flag)))
    };
    Some(Args {
        source,
        sizes: list("--sizes", "100,1000")
            .iter()
            .map(|s| s.parse().expect("--sizes"))
            .collect(),
        rates: list("--rates", "100,1000")
            .iter()
            .map(|s| s.parse().expect("--rates"))
            .collect(),
        systems,
        load: secs("--load-seconds", 15),
        window: secs("--window-seconds", 60),
        targets_per_query: value("--targets-per-query")
            .map_or(10, |v| v.parse().expect("--targets-per-query"))
            .max(1),
        ebb_polling_seconds: value("--ebb-polling-seconds")
            .map(|v| v.parse().expect("--ebb-polling-seconds")),
    })
}

fn main() {
    let Some(args) = parse_args() else { return };
    ebb::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(run(args));
}

/// Latency at one rate.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Load {
    rate: u64,
    requests: usize,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// Upstream Prometheus queries per second while this load ran.
    upstream_per_s: f64,
    /// ebb only: the p99 of its own server's time on this load's requests (a bucket's upper
    /// bound); NaN for the others.
    server_p99_ms: f64,
    /// The kube-apiserver's own p99 for requests of this kind while the load ran (external
    /// metrics lists, the floor's Deployment GETs; a bucket's upper bound), the HPA
    /// controller's reads included: the time inside the apiserver, proxying to the system
    /// included, as against the load generator's end-to-end figure.
    apiserver_p99_ms: f64,
    /// API Priority and Fairness, over the load generator's flow ([`LOAD_FLOW`]) while this
    /// load ran: the p99 of the wait in its queue and of the execution that follows
    /// (authorization and the handler: for external metrics, the proxying to the system and
    /// its answer). APF times every request it dispatches, proxied ones included.
    apf_wait_p99_ms: f64,
    apf_execution_p99_ms: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Row {
    system: String,
    targets: usize,
    distinct_queries: usize,
    settings: String,
    /// Targets whose metric answered 200 with a value before the measurement.
    ready_targets: usize,
    loads: Vec<Load>,
    /// Upstream queries per minute with only the HPA controller reading.
    upstream_per_min: f64,
    rss_mib: f64,
    cpu_s_per_min: f64,
    /// CPU seconds per minute under the highest rate.
    cpu_s_per_min_loaded: f64,
    /// The HPA controller's view of a load step (every series 20 -> 40): seconds until each
    /// HPA's desired replicas went from 2 to 4.
    step: Step,
}

/// Seconds from a load step to the HPAs' desired replicas changing.
#[derive(Debug, Clone, Default, serde::Serialize)]
struct Step {
    /// HPAs at 2 desired replicas before the step.
    settled: usize,
    /// HPAs that reached 4 within [`STEP_WAIT`].
    changed: usize,
    p50_s: f64,
    max_s: f64,
}

struct Bench {
    kube: ControlPlane,
    /// The value every pushed series has now (f64 bits): 20, or 40 during the load step.
    series_value: AtomicU64,
    prometheus: Prometheus,
    client: kube::Client,
    load: reqwest::Client,
    workloads: ApiResource,
    dir: PathBuf,
    peers: Option<(PathBuf, PathBuf)>,
    /// With `--source rabbitmq`: the broker and its queues.
    queues: Option<Queues>,
    args: Args,
}

/// The RabbitMQ variant's broker: queues `peers-q<k>`, no consumers, each holding the bench's
/// current value in messages; the systems read them through a counting proxy.
struct Queues {
    /// Kept for its lifetime: the broker stops when the bench drops it.
    _broker: RabbitMq,
    proxy: support::peers::CountingProxy,
    channel: lapin::Channel,
    _connection: lapin::Connection,
}

impl Queues {
    async fn start(broker: RabbitMq, distinct: usize) -> Queues {
        let proxy = support::peers::CountingProxy::start(broker.management_url()).await;
        let connection = broker.connect().await.expect("AMQP");
        let channel = connection.create_channel().await.unwrap();
        for k in 0..distinct {
            ebb::localstack::rabbitmq::declare_queue(&channel, &queue_name(k))
                .await
                .unwrap();
        }
        Queues {
            _broker: broker,
            proxy,
            channel,
            _connection: connection,
        }
    }

    /// The management API as the systems see it: the proxy, with the broker's credentials.
    fn url(&self) -> String {
        self.proxy.url.replace("http://", "http://guest:guest@")
    }

    /// Each of the first `distinct` queues from `from` to `to` messages: the difference
    /// published when it grows (the backlog never reads less on the way), else purged and
    /// refilled.
    async fn fill(&self, distinct: usize, from: f64, to: f64) {
        use lapin::options::QueuePurgeOptions;
        let (from, to) = (from as u64, to as u64);
        for k in 0..distinct {
            let queue = queue_name(k);
            let add = if to >= from {
                to - from
            } else {
                self.channel
                    .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                    .await
                    .unwrap();
                to
            };
            ebb::demo::load::publish_messages(&self.channel, &queue, add)
                .await
                .unwrap();
        }
    }
}

fn queue_name(k: usize) -> String {
    format!("peers-q{k}")
}

async fn run(args: Args) {
    let needs_peers = args.systems.iter().any(|s| *s != System::Ebb);
    let peers = if needs_peers {
        Some(
            ebb::localstack::peers_dirs()
                .await
                .expect("the peers (scripts/build-peers.sh)"),
        )
    } else {
        None
    };
    let mut stack = Stack::start(StackOptions {
        kube: Some(ControlPlaneOptions::default()),
        prometheus: true,
        scrape: Vec::new(),
        rabbitmq: args.source == Source::RabbitMq,
    })
    .await
    .expect("the local stack");
    let kube = stack.kube.take().unwrap();
    let prometheus = stack.prometheus.take().unwrap();
    let dir = stack.dir().join("peers");
    std::fs::create_dir_all(&dir).unwrap();
    let client = kube.client().await.unwrap();
    let workloads = setup_cluster(&client).await;
    let load = load_client(&kube);
    let distinct_max = args
        .sizes
        .iter()
        .map(|n| args.distinct(*n))
        .max()
        .unwrap_or(1);
    let queues = match stack.rabbitmq.take() {
        Some(broker) => Some(Queues::start(broker, distinct_max).await),
        None => None,
    };
    let bench = Arc::new(Bench {
        kube,
        series_value: AtomicU64::new(0f64.to_bits()),
        prometheus,
        client,
        load,
        workloads,
        dir,
        peers,
        queues,
        args,
    });

    set_load(&bench, distinct_max, BASE_VALUE).await;
    // Remote-written series go stale without new samples; queues keep their messages.
    let pusher = tokio::spawn({
        let bench = bench.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if bench.queues.is_none() {
                    push_series(&bench, distinct_max).await;
                }
            }
        }
    });

    let load_before = loadavg();
    let mut rows = vec![floor(&bench).await];
    for &n in &bench.args.sizes {
        for &system in &bench.args.systems {
            eprintln!("[peers] {} at {n} targets", system.name());
            let row = run_system(&bench, system, n).await;
            eprintln!("[peers] {row:?}");
            rows.push(row);
        }
    }
    pusher.abort();
    report(&bench.args, &rows);
    println!(
        "machine: {} cores; load average (1, 5, 15 min) at the start {load_before}, at the end {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    drop(bench);
    drop(stack);
}

impl Args {
    /// Distinct queries among `n` targets: one per `--targets-per-query` targets.
    fn distinct(&self, n: usize) -> usize {
        (n / self.targets_per_query).max(1)
    }
}

fn query(k: usize) -> String {
    format!("sum(peers_load{{q=\"q{k}\"}})")
}

/// One sample now for each of `distinct` series `peers_load{q="q<k>"}`, of the bench's
/// current value.
async fn push_series(bench: &Bench, distinct: usize) {
    let prometheus = &bench.prometheus;
    let value = f64::from_bits(bench.series_value.load(Ordering::Relaxed));
    let now = chrono::Utc::now().timestamp_millis();
    futures::stream::iter(0..distinct)
        .map(|k| async move {
            let q = format!("q{k}");
            if let Err(e) = prometheus
                .push(&[("__name__", "peers_load"), ("q", &q)], &[(now, value)])
                .await
            {
                eprintln!("[peers] push failed: {e}");
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
}

/// Sets what every target's metric reads from now on: the value the series carry (the
/// refresher pushes it too; pushed at once), or the messages each queue holds.
async fn set_load(bench: &Bench, distinct: usize, value: f64) {
    let before = f64::from_bits(bench.series_value.swap(value.to_bits(), Ordering::Relaxed));
    match &bench.queues {
        None => push_series(bench, distinct).await,
        Some(queues) => queues.fill(distinct, before, value).await,
    }
}

/// The bench CRD (workloads with `/scale`, no pods), the load user's RBAC, the floor's
/// Deployment, ebb's namespace (for the APIService's Service).
async fn setup_cluster(client: &kube::Client) -> ApiResource {
    let manifest = format!(
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{ name: peers-load }}
rules:
  - apiGroups: [external.metrics.k8s.io]
    resources: ["*"]
    verbs: [get, list]
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{ name: peers-load }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: peers-load }}
subjects: [{{ apiGroup: rbac.authorization.k8s.io, kind: User, name: {LOAD_USER} }}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{ name: peers-workloads }}
rules:
  - apiGroups: [bench.ebb.dev]
    resources: [workloads, workloads/scale]
    verbs: [get, list, watch, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{ name: peers-workloads }}
roleRef: {{ apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: peers-workloads }}
subjects:
  - {{ kind: ServiceAccount, name: ebb, namespace: ebb-system }}
  - {{ kind: ServiceAccount, name: horizontal-pod-autoscaler, namespace: kube-system }}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{ name: floor, namespace: default }}
spec:
  replicas: 0
  selector: {{ matchLabels: {{ app: floor }} }}
  template:
    metadata: {{ labels: {{ app: floor }} }}
    spec: {{ containers: [{{ name: c, image: none }}] }}
"#
    );
    apply_yaml(client, include_str!("../deploy/namespace.yaml"), "peers")
        .await
        .unwrap();
    apply_yaml(client, &manifest, "peers").await.unwrap();
    support::install_workloads(client).await
}

/// An HTTP/2 client to the kube-apiserver as [`LOAD_USER`] (a client certificate; RBAC, as the
/// HPA controller's service account has).
fn load_client(kube: &ControlPlane) -> reqwest::Client {
    use base64::Engine as _;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let path = kube.kubeconfig_for(LOAD_USER, None).unwrap();
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let user = &config["users"][0]["user"];
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    };
    let cert = b64(&user["client-certificate-data"]);
    let key = b64(&user["client-key-data"]);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(kube.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<_, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(&key).unwrap(),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http2_prior_knowledge()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap()
}

/// The floor: the same load against a plain GET of a Deployment.
async fn floor(bench: &Bench) -> Row {
    let url = format!(
        "{}/apis/apps/v1/namespaces/default/deployments/floor",
        bench.kube.server_url
    );
    // A warm connection, as every system's run has after its readiness check.
    for _ in 0..100 {
        let _ = bench.load.get(&url).send().await;
    }
    let mut loads = Vec::new();
    let floor_requests = [
        ("group", "apps"),
        ("resource", "deployments"),
        ("verb", "GET"),
    ];
    for &rate in &bench.args.rates {
        let apiserver_before = apiserver_durations(&bench.client, &floor_requests).await;
        let apf_before = Apf::read(&bench.client).await;
        let (mut load, _) = open_loop(bench, rate, |_| url.clone()).await;
        let apiserver_after = apiserver_durations(&bench.client, &floor_requests).await;
        Apf::read(&bench.client).await.since(&apf_before, &mut load);
        load.upstream_per_s = f64::NAN;
        load.server_p99_ms = f64::NAN;
        load.apiserver_p99_ms =
            quantile_between(&apiserver_before, &apiserver_after, 0.99) * 1000.0;
        loads.push(load);
    }
    Row {
        system: "floor (GET Deployment)".into(),
        settings: "kube-apiserver alone".into(),
        loads,
        upstream_per_min: f64::NAN,
        rss_mib: f64::NAN,
        cpu_s_per_min: f64::NAN,
        cpu_s_per_min_loaded: f64::NAN,
        step: Step {
            p50_s: f64::NAN,
            max_s: f64::NAN,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A system's running processes.
struct Running {
    processes: Vec<ManagedProcess>,
    /// ebb's own /metrics (plain HTTP), for its server-side request durations.
    server_metrics: Option<String>,
}

async fn run_system(bench: &Bench, system: System, n: usize) -> Row {
    let ns = format!("peers-{}-{n}", system.name());
    bench.kube.create_namespace(&ns).await.unwrap();
    let d = bench.args.distinct(n);
    let workloads =
        Api::<DynamicObject>::namespaced_with(bench.client.clone(), &ns, &bench.workloads);
    support::for_all(n, |i| {
        let workloads = workloads.clone();
        async move {
            let name = format!("w{i}");
            let w: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "bench.ebb.dev/v1", "kind": "Workload",
                "metadata": { "name": name }, "spec": { "replicas": 1 }
            }))
            .unwrap();
            workloads.create(&Default::default(), &w).await.unwrap();
            workloads
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({ "status": { "replicas": 1, "selector": format!("app={name}") } }),
                    ),
                )
                .await
                .unwrap();
        }
    })
    .await;

    let sys_dir = bench.dir.join(format!("{}-{n}", system.name()));
    std::fs::create_dir_all(&sys_dir).unwrap();
    let running = start_system(bench, system, &sys_dir).await;
    create_targets(bench, system, &ns, n).await;

    // Every target once (as the HPA's first syncs would), until each answers or 3 minutes pass.
    let started = Instant::now();
    let mut ready = 0;
    while started.elapsed() < Duration::from_secs(180) {
        ready = ready_targets(bench, system, &ns, n).await;
        if ready == n {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!(
        "[peers] {}: {ready}/{n} targets answered after {:?}",
        system.name(),
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(15)).await;

    // No load but the HPA controller's.
    let pids: Vec<u32> = running.processes.iter().map(|p| p.pid()).collect();
    let (q0, c0, t0) = (
        upstream_queries(bench).await,
        cpu_seconds(&pids),
        Instant::now(),
    );
    tokio::time::sleep(bench.args.window).await;
    let (q1, c1) = (upstream_queries(bench).await, cpu_seconds(&pids));
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let rss_idle = rss_mib(&pids);

    let mut loads = Vec::new();
    let mut cpu_loaded = 0.0;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    for &rate in &bench.args.rates {
        let paths: Vec<String> = (0..n)
            .map(|i| {
                let (metric, selector) = system.metric(i, d, bench.args.source);
                format!(
                    "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector={}",
                    bench.kube.server_url,
                    percent_encoding::utf8_percent_encode(&selector, percent_encoding::NON_ALPHANUMERIC)
                )
            })
            .collect();
        let (c0, t0) = (cpu_seconds(&pids), Instant::now());
        let served_before = served_durations(&bench.load, running.server_metrics.as_deref()).await;
        let apiserver_before = apiserver_durations(&bench.client, &EXTERNAL_METRICS_LISTS).await;
        let apf_before = Apf::read(&bench.client).await;
        let (mut load, _) = open_loop(bench, rate, |_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            paths[(rng % n as u64) as usize].clone()
        })
        .await;
        cpu_loaded = (cpu_seconds(&pids) - c0) / (t0.elapsed().as_secs_f64() / 60.0);
        let served_after = served_durations(&bench.load, running.server_metrics.as_deref()).await;
        load.server_p99_ms = quantile_between(&served_before, &served_after, 0.99) * 1000.0;
        let apiserver_after = apiserver_durations(&bench.client, &EXTERNAL_METRICS_LISTS).await;
        Apf::read(&bench.client).await.since(&apf_before, &mut load);
        load.apiserver_p99_ms =
            quantile_between(&apiserver_before, &apiserver_after, 0.99) * 1000.0;
        loads.push(load);
    }
    let rss = rss_mib(&pids).max(rss_idle);
    let step = load_step(bench, &ns, d).await;
    eprintln!("[peers] {}: load step {step:?}", system.name());

    let row = Row {
        system: system.name().into(),
        targets: n,
        distinct_queries: d,
        settings: match (system, bench.args.ebb_polling_seconds) {
            (System::Ebb, Some(secs)) => {
                format!("ScaledTarget mode Hpa, defaults but pollingInterval {secs}s")
            }
            _ => system.settings().into(),
        },
        ready_targets: ready,
        loads,
        upstream_per_min: (q1 - q0) / minutes,
        rss_mib: rss,
        cpu_s_per_min: (c1 - c0) / minutes,
        cpu_s_per_min_loaded: cpu_loaded,
        step,
    };

    // The namespace goes while the system still runs (its finalizers, its HPAs), so that no
    // later system finds leftovers to clean up; then the system stops.
    let namespaces = Api::<Namespace>::all(bench.client.clone());
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    let gone = ebb::localstack::process::wait_until(Duration::from_secs(180), || async {
        namespaces.get_opt(&ns).await.is_ok_and(|n| n.is_none())
    })
    .await;
    if !gone {
        eprintln!("[peers] namespace {ns} still terminating after 180 s");
    }
    drop(running);
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(bench.client.clone(), &ns);
    let _ = hpas
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    row
}

/// The HPA controller's view: every series steps from 20 to 40 (2 to 4 replicas at
/// AverageValue 10) once the HPAs of `ns` desire 2; seconds from the step's push until each
/// HPA's `status.desiredReplicas` is 4, polled every 500 ms. The series go back to 20 after.
async fn load_step(bench: &Bench, ns: &str, distinct: usize) -> Step {
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(bench.client.clone(), ns);
    let desired = |h: &HorizontalPodAutoscaler| h.status.as_ref().map_or(0, |s| s.desired_replicas);
    let list = || async {
        hpas.list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
    };
    let mut settled = 0;
    let waited = Instant::now();
    while waited.elapsed() < STEP_WAIT {
        let items = list().await;
        settled = items.iter().filter(|h| desired(h) == 2).count();
        if settled == items.len() && settled > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    set_load(bench, distinct, STEP_VALUE).await;
    let stepped = Instant::now();
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    while stepped.elapsed() < STEP_WAIT {
        let items = list().await;
        let at = stepped.elapsed().as_secs_f64();
        for h in &items {
            if desired(h) >= 4 {
                seen.entry(h.metadata.name.clone().unwrap_or_default())
                    .or_insert(at);
            }
        }
        if !items.is_empty() && seen.len() == items.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    set_load(bench, distinct, BASE_VALUE).await;
    let mut times: Vec<f64> = seen.into_values().collect();
    times.sort_by(f64::total_cmp);
    Step {
        settled,
        changed: times.len(),
        p50_s: times.get(times.len() / 2).copied().unwrap_or(f64::NAN),
        max_s: times.last().copied().unwrap_or(f64::NAN),
    }
}

/// How many of the `n` targets answer 200 with one item.
async fn ready_targets(bench: &Bench, system: System, ns: &str, n: usize) -> usize {
    let d = bench.args.distinct(n);
    let ok = futures::stream::iter(0..n)
        .map(|i| {
            let (metric, selector) = system.metric(i, d, bench.args.source);
            let url = format!(
                "{}/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?labelSelector={}",
                bench.kube.server_url,
                percent_encoding::utf8_percent_encode(
                    &selector,
                    percent_encoding::NON_ALPHANUMERIC
                )
            );
            async move {
                let Ok(r) = bench.load.get(url).send().await else {
                    return false;
                };
                if !r.status().is_success() {
                    return false;
                }
                r.json::<serde_json::Value>()
                    .await
                    .is_ok_and(|v| v["items"].as_array().is_some_and(|a| !a.is_empty()))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<bool>>()
        .await;
    ok.into_iter().filter(|&b| b).count()
}

async fn start_system(bench: &Bench, system: System, dir: &Path) -> Running {
    match system {
        System::Ebb => {
            let metrics_port = free_port();
            let binary = std::env::var_os("EBB_BENCH_EBB")
                .map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ebb")), PathBuf::from);
            let process = ebb::localstack::ebb::serve(
                &bench.kube,
                dir,
                &binary,
                "ebb-peers",
                free_port(),
                metrics_port,
            )
            .await
            .expect("ebb serve");
            Running {
                processes: vec![process],
                server_metrics: Some(format!("http://127.0.0.1:{metrics_port}/metrics")),
            }
        }
        System::PrometheusAdapter => {
            let bin = &bench.peers.as_ref().unwrap().1;
            let config = dir.join("config.yaml");
            std::fs::write(
                &config,
                r#"externalRules:
  - seriesQuery: 'peers_load{q!=""}'
    resources: { namespaced: false }
    name: { matches: "^peers_load$", as: "peers_load" }
    metricsQuery: 'sum(<<.Series>>{<<.LabelMatchers>>})'
"#,
            )
            .unwrap();
            let (crt, key) = bench
                .kube
                .serving_cert(support::peers::SERVING_SANS)
                .unwrap()
                .write(dir, "serving")
                .unwrap();
            let kc = bench.kube.admin_kubeconfig.display().to_string();
            let port = free_port();
            let mut cmd = std::process::Command::new(bin.join("prometheus-adapter"));
            cmd.current_dir(dir)
                .env("KUBECONFIG", &kc)
                .arg(format!("--prometheus-url={}", bench.prometheus.url()))
                .arg(format!("--config={}", config.display()))
                .arg("--metrics-relist-interval=30s")
                .arg(format!("--lister-kubeconfig={kc}"))
                .arg(format!("--authentication-kubeconfig={kc}"))
                .arg(format!("--authorization-kubeconfig={kc}"))
                .arg(format!("--secure-port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--cert-dir={}", dir.join("certs").display()))
                .arg(format!("--tls-cert-file={}", crt.display()))
                .arg(format!("--tls-private-key-file={}", key.display()));
            let process =
                ManagedProcess::spawn("prometheus-adapter", cmd, &dir.join("adapter.log")).unwrap();
            support::peers::register(&bench.kube, port, &process).await;
            Running {
                processes: vec![process],
                server_metrics: None,
            }
        }
        System::Keda => start_keda(bench, dir, false).await,
        System::KedaCached => start_keda(bench, dir, true).await,
    }
}

/// KEDA's operator and adapter, registered as the APIService.
async fn start_keda(bench: &Bench, dir: &Path, for_scale: bool) -> Running {
    let bin = &bench.peers.as_ref().unwrap().0;
    Running {
        processes: support::peers::start_keda(&bench.kube, bin, dir, for_scale).await,
        server_metrics: None,
    }
}

async fn create_targets(bench: &Bench, system: System, ns: &str, n: usize) {
    let d = bench.args.distinct(n);
    let prometheus = bench.prometheus.url();
    let management = bench.queues.as_ref().map(Queues::url);
    if let (Some(url), System::Ebb) = (&management, system) {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "rabbit", "namespace": ns },
            "stringData": { "managementUrl": url }
        });
        apply_yaml(
            &bench.client,
            &serde_yaml::to_string(&secret).unwrap(),
            "peers",
        )
        .await
        .unwrap();
    }
    // Target i's source, as each system spells it.
    let ebb_metric = |i: usize| match &management {
        None => json!({
            "name": "load",
            "prometheus": { "address": prometheus, "query": query(i % d) },
            "target": { "type": "AverageValue", "averageValue": "10" }
        }),
        Some(_) => json!({
            "name": "load",
            "rabbitmq": { "connectionSecretRef": { "name": "rabbit" }, "queue": queue_name(i % d) },
            "target": { "type": "AverageValue", "averageValue": "10" }
        }),
    };
    let keda_trigger = |i: usize| match &management {
        None => json!({
            "type": "prometheus",
            "metadata": { "serverAddress": prometheus, "query": query(i % d), "threshold": "10" }
        }),
        Some(url) => json!({
            "type": "rabbitmq",
            "metadata": { "protocol": "http", "host": format!("{url}/"), "queueName": queue_name(i % d),
                          "mode": "QueueLength", "value": "10" }
        }),
    };
    let ebb_polling = bench.args.ebb_polling_seconds;
    let (api, body): (ApiResource, Box<dyn Fn(usize) -> serde_json::Value + Sync>) = match system {
        System::Ebb => (
            ApiResource::erase::<ebb::crd::ScaledTarget>(&()),
            Box::new(move |i| {
                let mut st = json!({
                    "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
                    "metadata": { "name": format!("t{i}") },
                    "spec": {
                        "targetRef": { "apiVersion": "bench.ebb.dev/v1", "kind": "Workload", "name": format!("w{i}") },
                        "mode": "Hpa", "minReplicas": 1, "maxReplicas": 10,
                        "metrics": [ebb_metric(i)]
                    }
                });
                if let Some(secs) = ebb_polling {
                    st["spec"]["pollingInterval"] = json!(format!("{secs}s"));
                }
                st
            }),
        ),
        System::PrometheusAdapter => (
            ApiResource::erase::<HorizontalPodAutoscaler>(&()),
            Box::new(move |i| {
                json!({
                    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                    "metadata": { "name": format!("t{i}") },
                    "spec": {
                        "scaleTargetRef": { "apiVersion": "bench.ebb.dev/v1", "kind": "Workload", "name": format!("w{i}") },
                        "minReplicas": 1, "maxReplicas": 10,
                        "metrics": [{ "type": "External", "external": {
                            "metric": { "name": "peers_load", "selector": { "matchLabels": { "q": format!("q{}", i % d) } } },
                            "target": { "type": "AverageValue", "averageValue": "10" }
                        }}]
                    }
                })
            }),
        ),
        System::Keda | System::KedaCached => {
            let cached = system == System::KedaCached;
            (
                ApiResource {
                    group: "keda.sh".into(),
                    version: "v1alpha1".into(),
                    api_version: "keda.sh/v1alpha1".into(),
                    kind: "ScaledObject".into(),
                    plural: "scaledobjects".into(),
                },
                Box::new(move |i| {
                    let mut trigger = keda_trigger(i);
                    if cached {
                        trigger["useCachedMetrics"] = true.into();
                    }
                    json!({
                        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                        "metadata": { "name": format!("t{i}") },
                        "spec": {
                            "scaleTargetRef": { "apiVersion": "bench.ebb.dev/v1", "kind": "Workload", "name": format!("w{i}") },
                            "minReplicaCount": 1, "maxReplicaCount": 10,
                            "triggers": [trigger]
                        }
                    })
                }),
            )
        }
    };
    let objects = Api::<DynamicObject>::namespaced_with(bench.client.clone(), ns, &api);
    let body = &body;
    support::for_all(n, |i| {
        let objects = objects.clone();
        async move {
            let object: DynamicObject = serde_json::from_value(body(i)).unwrap();
            objects.create(&Default::default(), &object).await.unwrap();
        }
    })
    .await;
}

/// `rate` requests per second for the load duration, on schedule (open loop: a stall shows in
/// the figures instead of slowing the load). Latency from send to the full answer.
async fn open_loop(
    bench: &Bench,
    rate: u64,
    mut url: impl FnMut(usize) -> String,
) -> (Load, Duration) {
    let total = (rate * bench.args.load.as_secs()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let q0 = upstream_queries(bench).await;
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let request = bench.load.get(url(i));
        tasks.spawn(async move {
            let sent = Instant::now();
            let ok = match request.send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            (ok, sent.elapsed())
        });
    }
    let results = tasks.join_all().await;
    let elapsed = start.elapsed();
    let q1 = upstream_queries(bench).await;
    let mut latencies: Vec<Duration> = results.iter().filter(|r| r.0).map(|r| r.1).collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let load = Load {
        rate,
        requests: total,
        errors: results.iter().filter(|r| !r.0).count(),
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        upstream_per_s: (q1 - q0) / elapsed.as_secs_f64(),
        server_p99_ms: f64::NAN,
        apiserver_p99_ms: f64::NAN,
        apf_wait_p99_ms: f64::NAN,
        apf_execution_p99_ms: f64::NAN,
    };
    (load, elapsed)
}

/// The external metrics API's reads, in the kube-apiserver's request metrics.
const EXTERNAL_METRICS_LISTS: [(&str, &str); 2] =
    [("group", "external.metrics.k8s.io"), ("verb", "LIST")];

/// The kube-apiserver's `apiserver_request_duration_seconds` buckets for the requests with
/// `labels`, summed over the series that carry them (empty without an answer).
async fn apiserver_durations(client: &kube::Client, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    histogram_buckets(
        &apiserver_metrics(client).await,
        "apiserver_request_duration_seconds",
        labels,
    )
}

/// The kube-apiserver's `/metrics` (empty without an answer).
async fn apiserver_metrics(client: &kube::Client) -> String {
    let Ok(request) = http::Request::get("/metrics").body(Vec::new()) else {
        return String::new();
    };
    client.request_text(request).await.unwrap_or_default()
}

/// The flow schema of the load generator's requests: its user belongs to no system group, so
/// API Priority and Fairness files it under the catch-all for authenticated users.
const LOAD_FLOW: (&str, &str) = ("flow_schema", "global-default");

/// The buckets of API Priority and Fairness's histograms for [`LOAD_FLOW`] at one moment.
struct Apf {
    wait: Vec<(f64, f64)>,
    execution: Vec<(f64, f64)>,
}

impl Apf {
    async fn read(client: &kube::Client) -> Self {
        let text = apiserver_metrics(client).await;
        Self {
            wait: histogram_buckets(
                &text,
                "apiserver_flowcontrol_request_wait_duration_seconds",
                &[LOAD_FLOW, ("execute", "true")],
            ),
            execution: histogram_buckets(
                &text,
                "apiserver_flowcontrol_request_execution_seconds",
                &[LOAD_FLOW, ("type", "regular")],
            ),
        }
    }

    /// The p99s of the requests between `before` and this reading, into `load`.
    fn since(&self, before: &Apf, load: &mut Load) {
        load.apf_wait_p99_ms = quantile_between(&before.wait, &self.wait, 0.99) * 1000.0;
        load.apf_execution_p99_ms =
            quantile_between(&before.execution, &self.execution, 0.99) * 1000.0;
    }
}

/// The buckets (upper bound, cumulative count) of ebb's served-request histogram for
/// successful lists, read from its `/metrics` at `url` (empty when there is none). Asked as
/// Prometheus asks, for gzip: ebb's memory is measured as a scraped ebb's.
async fn served_durations(client: &reqwest::Client, url: Option<&str>) -> Vec<(f64, f64)> {
    let Some(url) = url else {
        return Vec::new();
    };
    let Ok((gzip, body)) = async {
        let response = client
            .get(url)
            .header("Accept-Encoding", "gzip")
            .send()
            .await?;
        let gzip = response
            .headers()
            .get("content-encoding")
            .is_some_and(|v| v == "gzip");
        Ok::<_, reqwest::Error>((gzip, response.bytes().await?))
    }
    .await
    else {
        return Vec::new();
    };
    let mut text = String::new();
    let decoded = if gzip {
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut text)
            .is_ok()
    } else {
        String::from_utf8(body.to_vec()).map(|t| text = t).is_ok()
    };
    if !decoded {
        return Vec::new();
    }
    histogram_buckets(
        &text,
        "ebb_api_request_duration_seconds",
        &[("verb", "list"), ("code", "200")],
    )
}

/// Requests the systems made upstream so far: Prometheus's own count of the queries it
/// answered, or the management API requests the bench's proxy forwarded.
async fn upstream_queries(bench: &Bench) -> f64 {
    if let Some(queues) = &bench.queues {
        return queues.proxy.count() as f64;
    }
    bench
        .prometheus
        .requests_served(&["/api/v1/query", "/api/v1/query_range"])
        .await
        .expect("Prometheus /metrics") as f64
}

/// The first three fields of /proc/loadavg: other work on the machine shows here.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// utime + stime of the processes, in seconds.
fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    pids.iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command (which may hold spaces) in parentheses: state is field 3,
            // utime 14, stime 15.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        })
        .sum()
}

/// VmRSS of the processes together, in MiB.
fn rss_mib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .sum::<f64>()
        / 1024.0
}

/// The table (each peer's figure with its ratio to ebb's at the same N), CSV and JSON.
fn report(args: &Args, rows: &[Row]) {
    let mut headers: Vec<String> = vec![
        "system".into(),
        "N".into(),
        "queries".into(),
        "ready".into(),
    ];
    for r in &args.rates {
        for what in [
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "ebb's server p99 ms",
            "apiserver p99 ms",
            "APF wait p99 ms",
            "APF execution p99 ms",
        ] {
            headers.push(format!("{what} @{r}/s"));
        }
    }
    headers.extend(
        [
            "upstream q/min (idle)",
            &format!(
                "upstream q/s @{}/s",
                args.rates.iter().max().copied().unwrap_or(0)
            ),
            "RSS MiB",
            "CPU s/min (idle)",
            &format!(
                "CPU s/min @{}/s",
                args.rates.iter().max().copied().unwrap_or(0)
            ),
            "step: HPAs changed",
            "step p50 s",
            "step max s",
        ]
        .map(String::from),
    );
    let values = |r: &Row| -> Vec<f64> {
        let mut v = Vec::new();
        for l in &r.loads {
            v.extend([
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                l.errors as f64,
                l.server_p99_ms,
                l.apiserver_p99_ms,
                l.apf_wait_p99_ms,
                l.apf_execution_p99_ms,
            ]);
        }
        let max_load = r.loads.iter().max_by_key(|l| l.rate);
        v.extend([
            r.upstream_per_min,
            max_load.map_or(f64::NAN, |l| l.upstream_per_s),
            r.rss_mib,
            r.cpu_s_per_min,
            r.cpu_s_per_min_loaded,
            if r.targets == 0 {
                f64::NAN
            } else {
                r.step.changed as f64
            },
            r.step.p50_s,
            r.step.max_s,
        ]);
        v
    };
    let ebb_rows: BTreeMap<usize, Vec<f64>> = rows
        .iter()
        .filter(|r| r.system == "ebb")
        .map(|r| (r.targets, values(r)))
        .collect();
    let fmt = |x: f64| {
        if x.is_nan() {
            "-".to_string()
        } else if x.abs() >= 100.0 || x == x.trunc() {
            format!("{x:.0}")
        } else {
            format!("{x:.2}")
        }
    };
    println!(
        "\nsource: {}",
        match args.source {
            Source::Prometheus => {
                "Prometheus; upstream = the queries Prometheus answered (prometheus_http_requests_total)"
            }
            Source::RabbitMq => {
                "RabbitMQ; upstream = the management API requests the bench's proxy forwarded"
            }
        }
    );
    println!("\n| {} |", headers.join(" | "));
    println!("|{}", "---|".repeat(headers.len()));
    let mut csv = format!("{},settings\n", headers.join(","));
    for r in rows {
        let vals = values(r);
        let is_floor = r.targets == 0;
        let mut cells = vec![
            r.system.clone(),
            if is_floor {
                "-".into()
            } else {
                r.targets.to_string()
            },
            if is_floor {
                "-".into()
            } else {
                r.distinct_queries.to_string()
            },
            if is_floor {
                "-".into()
            } else {
                format!("{}/{}", r.ready_targets, r.targets)
            },
        ];
        let base = ebb_rows
            .get(&r.targets)
            .filter(|_| r.system != "ebb" && !is_floor);
        for (k, &x) in vals.iter().enumerate() {
            let ratio = base
                .and_then(|b| b.get(k))
                .filter(|b| **b > 0.0 && !x.is_nan())
                .map(|b| format!(" (x{:.1})", x / b))
                .unwrap_or_default();
            cells.push(format!("{}{ratio}", fmt(x)));
        }
        println!("| {} |", cells.join(" | "));
        csv.push_str(&format!(
            "{},{},{},{},{},\"{}\"\n",
            r.system,
            r.targets,
            r.distinct_queries,
            r.ready_targets,
            vals.iter().map(|x| fmt(*x)).collect::<Vec<_>>().join(","),
            r.settings
        ));
    }
    println!("\nsettings:");
    for r in rows.iter().filter(|r| r.targets > 0) {
        if !rows
            .iter()
            .take_while(|x| !std::ptr::eq(*x, r))
            .any(|x| x.system == r.system)
        {
            println!("- {}: {}", r.system, r.settings);
        }
    }
    let out = support::peers::out_dir();
    std::fs::write(out.join("peers.csv"), csv).unwrap();
    std::fs::write(
        out.join("peers.json"),
        serde_json::to_vec_pretty(rows).unwrap(),
    )
    .unwrap();
    println!("written: {}/peers.{{csv,json}}", out.display());
}
