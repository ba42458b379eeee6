//! `cargo bench --bench api`: value requests over TLS on loopback against ebb's API server with
//! 5,000 ScaledTargets in the store, from a load generator in a second process (this binary
//! re-executed with `--load-generator`), over one HTTP/2 connection with a client certificate,
//! as the aggregator connects. Prints a table: latency p50/p99 and requests per second.
//!
//! Authorization goes through the real cache; behind it, a local reviewer that allows after a
//! simulated round trip stands in for the kube-apiserver's SubjectAccessReview (no control
//! plane runs in the bench). Each (namespace, metric) is requested once before measuring, as a
//! running HPA would have; entries then expire after the cache TTL during the runs, as they do
//! in production.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb::api::auth::{Attributes, Auth, AuthError, AuthSettings, RequestHeaderConfig, Reviewer};
use ebb::api::server::{ServeConfig, Server, metrics_text};
use ebb::api::{ApiMetrics, ApiState, MetricStore, MetricValue, Readiness, Sample, UserInfo};
use ebb::localstack::certs::{Ca, Usage};
use futures::future::BoxFuture;

const NAMESPACES: usize = 100;
const TARGETS_PER_NAMESPACE: usize = 50; // 5,000 ScaledTargets
const METRIC: &str = "rabbitmq-backlog";
/// What a SubjectAccessReview round trip costs, roughly, on a quiet cluster.
const REVIEW_LATENCY: Duration = Duration::from_millis(2);

/// Allows everything after [`REVIEW_LATENCY`]: the kube-apiserver's stand-in.
struct SlowAllowReviewer;

impl Reviewer for SlowAllowReviewer {
    fn review_token<'a>(
        &'a self,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<UserInfo>, AuthError>> {
        Box::pin(async { Ok(None) })
    }

    fn review_access<'a>(
        &'a self,
        _: &'a UserInfo,
        _: &'a Attributes,
    ) -> BoxFuture<'a, Result<bool, AuthError>> {
        Box::pin(async {
            tokio::time::sleep(REVIEW_LATENCY).await;
            Ok(true)
        })
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--load-generator") {
        load_generator(&args);
        return;
    }
    // `cargo test --benches` runs bench binaries with no `--bench`: only build-check then.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    ebb::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(run_server_and_load());
}

async fn run_server_and_load() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let cluster_ca = Ca::new("bench-cluster-ca").unwrap();
    let front_proxy_ca = Ca::new("bench-front-proxy-ca").unwrap();
    let (cert_file, key_file) = cluster_ca
        .issue("localhost", None, &["localhost"], Usage::Server)
        .unwrap()
        .write(dir.path(), "serving")
        .unwrap();
    let (client_cert, client_key) = cluster_ca
        .issue(
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
            None,
            &[],
            Usage::Client,
        )
        .unwrap()
        .write(dir.path(), "client")
        .unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, cluster_ca.cert_pem()).unwrap();

    let store = Arc::new(MetricStore::new());
    for n in 0..NAMESPACES {
        for t in 0..TARGETS_PER_NAMESPACE {
            store.publish(
                &format!("bench-{n}"),
                METRIC,
                &format!("target-{t}"),
                Sample {
                    labels: BTreeMap::from([("queue".into(), format!("queue-{t}"))]),
                    value: MetricValue::Milli((n * 1000 + t) as i64 * 1500),
                    timestamp: chrono::Utc::now(),
                    window_seconds: None,
                },
            );
        }
    }
    let settings = AuthSettings {
        client_ca_pem: Some(cluster_ca.cert_pem().to_string()),
        request_header: Some(RequestHeaderConfig::with_default_headers(
            front_proxy_ca.cert_pem().to_string(),
            vec!["front-proxy-client".into()],
        )),
    };
    let state = ApiState {
        store,
        auth: Arc::new(Auth::new(settings, Arc::new(SlowAllowReviewer)).unwrap()),
        readiness: Arc::new(Readiness::ready()),
        metrics: ApiMetrics::default(),
    };
    let server = Server::bind(
        ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            cert_file,
            key_file,
            cert_reload_interval: Duration::from_secs(5),
        },
        state,
        metrics_text(prometheus_client::registry::Registry::default()),
    )
    .await
    .expect("the server binds");
    let port = server.local_addr().port();
    tokio::spawn(server.run());

    let output = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--load-generator",
            &port.to_string(),
            &ca_file.display().to_string(),
            &client_cert.display().to_string(),
            &client_key.display().to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .expect("the load generator runs");
    assert!(output.status.success(), "the load generator failed");
    println!(
        "external metrics API: {} ScaledTargets, TLS + HTTP/2 on loopback, client certificate, \
         load generator in a second process",
        NAMESPACES * TARGETS_PER_NAMESPACE
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

/// One measured run.
struct Run {
    name: String,
    sent: usize,
    errors: usize,
    elapsed: Duration,
    /// From sending to the full answer.
    latencies: Vec<Duration>,
    /// From the scheduled send time (open loop; tokio's 1 ms timer adds up to 1 ms here).
    scheduled: Vec<Duration>,
}

impl Run {
    fn row(&self) -> String {
        let sorted = |v: &[Duration]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        let pct = |l: &[Duration], p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .map_or("-".to_string(), |d| {
                    format!("{:.3}", d.as_secs_f64() * 1000.0)
                })
        };
        let (l, s) = (sorted(&self.latencies), sorted(&self.scheduled));
        format!(
            "| {:<28} | {:>8} | {:>6} | {:>9.0} | {:>8} | {:>8} | {:>8} | {:>13} |",
            self.name,
            self.sent,
            self.errors,
            self.sent as f64 / self.elapsed.as_secs_f64(),
            pct(&l, 0.50),
            pct(&l, 0.99),
            pct(&l, 1.0),
            pct(&s, 0.99),
        )
    }
}

fn load_generator(args: &[String]) {
    let i = args.iter().position(|a| a == "--load-generator").unwrap();
    let [port, ca, cert, key] = [1, 2, 3, 4].map(|k| args[i + k].clone());
    ebb::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async move {
        let client = client(&PathBuf::from(ca), &PathBuf::from(cert), &PathBuf::from(key));
        let base = format!("https://localhost:{port}");
        // Warm-up: every (namespace, metric) once, as the HPA's first sync would.
        for n in 0..NAMESPACES {
            let url = format!("{base}{}", path(n, 0));
            assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
        }
        println!(
            "| {:<28} | {:>8} | {:>6} | {:>9} | {:>8} | {:>8} | {:>8} | {:>13} |",
            "run", "requests", "errors", "req/s", "p50 ms", "p99 ms", "max ms", "p99 sched. ms"
        );
        println!(
            "|------------------------------|----------|--------|-----------|----------|----------|----------|---------------|"
        );
        for rate in [1_000, 2_000] {
            let run = open_loop(&client, &base, rate, Duration::from_secs(10)).await;
            println!("{}", run.row());
        }
        let run = closed_loop(&client, &base, 64, Duration::from_secs(5)).await;
        println!("{}", run.row());
    });
}

fn client(ca: &PathBuf, cert: &PathBuf, key: &PathBuf) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            CertificateDer::pem_file_iter(cert)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_file(key).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .http2_prior_knowledge()
        .build()
        .unwrap()
}

/// A pseudo-random ScaledTarget's request path (xorshift: no RNG crate for a bench).
fn random_path(state: &mut u64) -> String {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    let n = (*state % NAMESPACES as u64) as usize;
    let t = ((*state >> 32) % TARGETS_PER_NAMESPACE as u64) as usize;
    path(n, t)
}

fn path(n: usize, t: usize) -> String {
    format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/bench-{n}/{METRIC}\
         ?labelSelector=ebb.dev%2Fscaledtarget%3Dtarget-{t}"
    )
}

async fn get(client: &reqwest::Client, url: String) -> bool {
    match client.get(url).send().await {
        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// `rate` requests per second on schedule; latency counts from the scheduled send time, so a
/// stall shows up in the figures instead of slowing the load (no coordinated omission).
async fn open_loop(client: &reqwest::Client, base: &str, rate: u64, duration: Duration) -> Run {
    let total = (rate * duration.as_secs()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let url = format!("{base}{}", random_path(&mut seed));
        let client = client.clone();
        tasks.spawn(async move {
            let sent = tokio::time::Instant::now();
            let ok = get(&client, url).await;
            (ok, sent.elapsed(), scheduled.elapsed())
        });
    }
    let results = tasks.join_all().await;
    Run {
        name: format!("open loop, {rate} req/s"),
        sent: total,
        errors: results.iter().filter(|(ok, _, _)| !ok).count(),
        elapsed: start.elapsed(),
        latencies: results.iter().map(|(_, d, _)| *d).collect(),
        scheduled: results.iter().map(|(_, _, d)| *d).collect(),
    }
}

/// `concurrency` requests always in flight: the throughput ceiling.
async fn closed_loop(
    client: &reqwest::Client,
    base: &str,
    concurrency: usize,
    duration: Duration,
) -> Run {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (client, base) = (client.clone(), base.to_string());
        tasks.spawn(async move {
            let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ (w as u64 + 1);
            let mut out = Vec::new();
            while start.elapsed() < duration {
                let sent = Instant::now();
                let ok = get(&client, format!("{base}{}", random_path(&mut seed))).await;
                out.push((ok, sent.elapsed()));
            }
            out
        });
    }
    let results: Vec<_> = tasks.join_all().await.into_iter().flatten().collect();
    Run {
        name: format!("closed loop, {concurrency} in flight"),
        sent: results.len(),
        errors: results.iter().filter(|(ok, _)| !ok).count(),
        elapsed: start.elapsed(),
        latencies: results.into_iter().map(|(_, d)| d).collect(),
        scheduled: Vec::new(),
    }
}
