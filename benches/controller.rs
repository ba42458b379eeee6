//! The controller at scale: N ScaledTargets (default 5,000) on the local control plane (kwok
//! stack), in mode Shadow, then Direct, then Hpa (the HPA controller does not run here: the row
//! measures ebb's own cost of keeping 5,000 owned HPAs). Prints the decision loop's lag past the
//! polling interval, the Kubernetes API requests per second ebb makes, and resident memory.
//!
//! `cargo bench --bench controller` (env: `EBB_BENCH_TARGETS`, `EBB_BENCH_INTERVAL_SECONDS`,
//! `EBB_BENCH_WINDOW_SECONDS`, `EBB_BENCH_FLIP_SECONDS`, `EBB_BENCH_STAGGER`, `EBB_BENCH_MODES`).
//!
//! The targets scale a bench CRD with a `/scale` subresource (no pods, no controller behind
//! it, so the API server's work is ebb's). Metric values come from memory, as the `collect`
//! layer's cache serves them: the bench measures the controller, not the sources. The value
//! flips between 20 and 40 every `EBB_BENCH_FLIP_SECONDS` (default 30; target 10 per replica),
//! so in Direct every target scales at each flip: all at once, or each at its own offset with
//! `EBB_BENCH_STAGGER=1`. `EBB_BENCH_MODES` (default
//! `Shadow,Direct,Hpa`) picks the rows.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ebb::controller::leader::Leadership;
use ebb::controller::reader::{MetricReader, ReadFuture};
use ebb::controller::{Context, run_namespaced};
use ebb::crd::{Metric, ScaledTarget};
use ebb::localstack::kube::ControlPlaneOptions;
use ebb::localstack::{Stack, StackOptions};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

/// Values from memory: 20 or 40, flipping every `flip` seconds; all targets at once, or each
/// at its own offset (`stagger`, from its query) as unrelated workloads would.
struct MemoryReader {
    flip: u64,
    stagger: bool,
}

impl MetricReader for MemoryReader {
    fn read<'a>(&'a self, _: &'a str, m: &'a Metric, _: std::time::Duration) -> ReadFuture<'a> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let offset = match (&m.prometheus, self.stagger) {
            (Some(p), true) => p
                .query
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
            _ => 0,
        } % self.flip;
        Box::pin(std::future::ready(Ok(
            if ((secs + offset) / self.flip).is_multiple_of(2) {
                20.0
            } else {
                40.0
            },
        )))
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

struct Row {
    mode: &'static str,
    polls_per_s: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    requests_per_s: f64,
    cached_reads_per_s: f64,
    actions: u64,
    queued: usize,
    rss: f64,
    peak: f64,
}

async fn measure(ctx: &Context, mode: &'static str, interval: Duration, window: Duration) -> Row {
    // One full interval for the change to settle, then a clean window.
    tokio::time::sleep(interval + Duration::from_secs(2)).await;
    ctx.stats.reset();
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let secs = start.elapsed().as_secs_f64();
    let s = &ctx.stats;
    let (rss, peak) = rss_mib();
    Row {
        mode,
        polls_per_s: s.polls.load(Ordering::Relaxed) as f64 / secs,
        p50: s.lag_quantile(0.5).unwrap_or_default(),
        p99: s.lag_quantile(0.99).unwrap_or_default(),
        max: s.lag_quantile(1.0).unwrap_or_default(),
        requests_per_s: s.api_requests.load(Ordering::Relaxed) as f64 / secs,
        cached_reads_per_s: s.cached_scale_reads.load(Ordering::Relaxed) as f64 / secs,
        actions: s.actions.load(Ordering::Relaxed),
        queued: ctx.writer.outstanding(),
        rss,
        peak,
    }
}

async fn set_mode(sts: &Api<ScaledTarget>, n: usize, mode: &str) {
    support::for_all(n, |i| {
        let sts = sts.clone();
        async move {
            sts.patch(
                &format!("w{i}"),
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "mode": mode } })),
            )
            .await
            .unwrap();
        }
    })
    .await;
}

#[tokio::main]
async fn main() {
    let n = env("EBB_BENCH_TARGETS", 5000) as usize;
    let interval = Duration::from_secs(env("EBB_BENCH_INTERVAL_SECONDS", 15));
    let window = Duration::from_secs(env("EBB_BENCH_WINDOW_SECONDS", 60));
    let flip = env("EBB_BENCH_FLIP_SECONDS", 30).max(1);
    let stagger = env("EBB_BENCH_STAGGER", 0) == 1;
    let modes = std::env::var("EBB_BENCH_MODES").unwrap_or_else(|_| "Shadow,Direct,Hpa".into());
    let modes: Vec<&'static str> = ["Shadow", "Direct", "Hpa"]
        .into_iter()
        .filter(|m| modes.split(',').any(|x| x.trim() == *m))
        .collect();
    let stack = Stack::start(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: false,
            ..Default::default()
        }),
        prometheus: false,
        scrape: Vec::new(),
        rabbitmq: false,
    })
    .await
    .expect("the local stack");
    let kube = stack.kube.as_ref().unwrap();
    let client = kube.client().await.unwrap();
    ebb::crd::install(&client).await.unwrap();
    let ar = support::install_workloads(&client).await;
    kube.create_namespace("bench").await.unwrap();
    let workloads = Api::<DynamicObject>::namespaced_with(client.clone(), "bench", &ar);
    let sts = Api::<ScaledTarget>::namespaced(client.clone(), "bench");
    let created = Instant::now();
    support::for_all(n, |i| {
        let (workloads, sts) = (workloads.clone(), sts.clone());
        async move {
            let name = format!("w{i}");
            let w: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "bench.ebb.dev/v1", "kind": "Workload",
                "metadata": { "name": name }, "spec": { "replicas": 2 }
            }))
            .unwrap();
            workloads.create(&PostParams::default(), &w).await.unwrap();
            let st: ScaledTarget = serde_json::from_value(json!({
                "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
                "metadata": { "name": name },
                "spec": {
                    "targetRef": { "apiVersion": "bench.ebb.dev/v1", "kind": "Workload", "name": name },
                    "mode": "Shadow", "minReplicas": 1, "maxReplicas": 10,
                    "pollingInterval": format!("{}s", interval.as_secs()),
                    "metrics": [{
                        "name": "load",
                        "prometheus": { "address": "http://unused", "query": format!("load{{workload=\"{name}\"}}") },
                        "target": { "type": "AverageValue", "averageValue": "10" }
                    }],
                    "behavior": { "scaleDown": { "stabilizationWindowSeconds": 0 } }
                }
            }))
            .unwrap();
            sts.create(&PostParams::default(), &st).await.unwrap();
        }
    })
    .await;
    eprintln!(
        "created {n} workloads and ScaledTargets in {:?}",
        created.elapsed()
    );

    let (rss_before, _) = rss_mib();
    let ctx = Context::new(
        client.clone(),
        Arc::new(MemoryReader { flip, stagger }),
        Leadership::fixed(true),
        "bench",
    );
    let controller = tokio::spawn(run_namespaced(ctx.clone(), "bench"));
    let mut rows = Vec::new();
    for mode in modes {
        // The targets are created in mode Shadow.
        if mode != "Shadow" {
            set_mode(&sts, n, mode).await;
        }
        rows.push(measure(&ctx, mode, interval, window).await);
    }
    controller.abort();

    println!(
        "\n{n} ScaledTargets, pollingInterval {}s, load flips every {flip}s ({}), window {}s (RSS of the bench process; {:.1} MiB before the controller started)\n",
        interval.as_secs(),
        if stagger {
            "each target at its own offset"
        } else {
            "all targets at once"
        },
        window.as_secs(),
        rss_before
    );
    println!(
        "| mode | polls/s | lag p50 | lag p99 | lag max | API requests/s | /scale reads from watch/s | actions | writes queued at end | RSS MiB | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.2} s | {:.2} s | {:.2} s | {:.1} | {:.1} | {} | {} | {:.1} | {:.1} |",
            r.mode,
            r.polls_per_s,
            r.p50.as_secs_f64(),
            r.p99.as_secs_f64(),
            r.max.as_secs_f64(),
            r.requests_per_s,
            r.cached_reads_per_s,
            r.actions,
            r.queued,
            r.rss,
            r.peak
        );
    }
    drop(stack);
}
