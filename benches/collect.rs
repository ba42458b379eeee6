//! Collection at scale against a real Prometheus: 5,000 targets over 500 distinct queries, each
//! query with 24 hours of 1-minute history in Prometheus.
//!
//! Prints the time to fetch every query's 24 h of history (the adaptive backfill after a
//! restart, 4 at a time as the controller runs them), then, per interval, the instant queries
//! Prometheus served (counted by Prometheus itself) and the collection cycle time (from the
//! round's due time to its last result), then the process's resident memory.
//!
//! `cargo bench --bench collect`; knobs (env): `EBB_BENCH_TARGETS` (5000), `EBB_BENCH_QUERIES`
//! (500), `EBB_BENCH_INTERVAL_SECS` (15), `EBB_BENCH_ROUNDS` (3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb::collect::{Collector, CollectorOptions, Subscription};
use ebb::localstack::{Stack, StackOptions};
use ebb::source::{PrometheusConfig, Query};
use ebb::telemetry::Telemetry;
use futures::StreamExt as _;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` (or another field) of this process, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Waits until each of `subs` holds a result fetched after `after`; returns (earliest due
/// time, latest fetch time) of that round.
async fn next_round(
    subs: &[Subscription],
    after: tokio::time::Instant,
) -> (tokio::time::Instant, tokio::time::Instant) {
    loop {
        let values: Option<Vec<_>> = subs
            .iter()
            .map(|s| s.get().filter(|v| v.fetched_at > after))
            .collect();
        if let Some(values) = values {
            let due = values.iter().map(|v| v.due_at).min().expect("values");
            let done = values.iter().map(|v| v.fetched_at).max().expect("values");
            return (due, done);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let targets = env_or("EBB_BENCH_TARGETS", 5000) as usize;
    let queries = env_or("EBB_BENCH_QUERIES", 500) as usize;
    let interval = Duration::from_secs(env_or("EBB_BENCH_INTERVAL_SECS", 15));
    let rounds = env_or("EBB_BENCH_ROUNDS", 3) as usize;
    let history = Duration::from_secs(24 * 3600);

    let stack = Stack::start(StackOptions {
        prometheus: true,
        ..Default::default()
    })
    .await
    .expect("a local Prometheus");
    let prometheus = stack.prometheus.as_ref().expect("Prometheus");

    // 24 h of 1-minute samples per series, pushed in through remote write.
    let started = Instant::now();
    let now_min = chrono::Utc::now().timestamp() / 60;
    for series in 0..queries {
        let samples: Vec<(i64, f64)> = (0..1440)
            .map(|i| {
                let minute = now_min - 1440 + i;
                let daily = (i as f64 / 1440.0 * std::f64::consts::TAU).sin();
                (minute * 60_000, 100.0 + series as f64 + 50.0 * daily)
            })
            .collect();
        let series = series.to_string();
        prometheus
            .push(
                &[("__name__", "ebb_bench_load"), ("series", &series)],
                &samples,
            )
            .await
            .expect("remote write");
    }
    eprintln!(
        "pushed {queries} series × 1440 samples in {:.1?}",
        started.elapsed()
    );

    let rss_before = proc_status_kib("VmRSS:");
    let collector = Collector::start(Arc::new(Telemetry::new()), CollectorOptions::default());
    let distinct: Vec<Query> = (0..queries)
        .map(|i| {
            let config = PrometheusConfig {
                address: prometheus.url(),
                query: format!(r#"ebb_bench_load{{series="{i}"}}"#),
                auth_secret_ref: None,
                timeout: Some("5s".into()),
                empty_as: None,
                ..Default::default()
            };
            Query::Prometheus(config.resolve(None).expect("a valid query"))
        })
        .collect();
    let registered = Instant::now();
    let subs: Vec<Subscription> = (0..targets)
        .map(|t| {
            collector
                .register(distinct[t % queries].clone(), interval)
                .expect("register")
        })
        .collect();
    let register_time = registered.elapsed();
    // One subscription per distinct query is enough to watch the rounds.
    let watched = &subs[..queries.min(targets)];

    // The backfill after a restart: every query's day of history, 4 fetches at a time.
    let backfill_started = Instant::now();
    let now = chrono::Utc::now().timestamp();
    let points: usize = futures::stream::iter(watched)
        .map(|s| s.source_history(history, now, Duration::from_secs(60)))
        .buffer_unordered(4)
        .map(|fetched| fetched.expect("history").map_or(0, |p| p.len()))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    let backfill_time = backfill_started.elapsed();

    println!("collect bench: {targets} targets, {queries} distinct queries, interval {interval:?}");
    println!();
    println!("| round | upstream queries (at Prometheus) | cycle time |");
    println!("|---|---|---|");
    let (_, mut last) = next_round(
        watched,
        tokio::time::Instant::now() - Duration::from_secs(3600),
    )
    .await;
    let mut before = prometheus
        .requests_served(&["/api/v1/query"])
        .await
        .unwrap();
    let mut cycles = Vec::new();
    for round in 1..=rounds {
        let (due, done) = next_round(watched, last).await;
        let after = prometheus
            .requests_served(&["/api/v1/query"])
            .await
            .unwrap();
        let cycle = done - due;
        println!("| {round} | {} | {:.1?} |", after - before, cycle);
        cycles.push(cycle);
        before = after;
        last = done;
    }
    let rss = proc_status_kib("VmRSS:");
    let hwm = proc_status_kib("VmHWM:");
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| register {targets} targets | {register_time:.1?} |");
    println!(
        "| backfill {queries} × 24 h (range queries, 4 at a time) | {backfill_time:.1?} ({points} points) |"
    );
    println!(
        "| max cycle time | {:.1?} |",
        cycles.iter().max().copied().unwrap_or_default()
    );
    println!("| RSS before collector | {:.1} MiB |", mib(rss_before));
    println!("| RSS now (whole process) | {:.1} MiB |", mib(rss));
    println!("| RSS peak (VmHWM) | {:.1} MiB |", mib(hwm));
    println!(
        "| RSS per target (now - before) | {:.0} B |",
        (rss.saturating_sub(rss_before) * 1024) as f64 / targets as f64
    );
    drop(subs);
    drop(stack);
}
