//! The collector against a real Prometheus: identical queries are fetched once per interval
//! (counted at Prometheus), history comes from Prometheus itself, failures are cached as
//! errors next to the last good value, and the cache recovers with the upstream.

mod support;

use std::sync::Arc;
use std::time::Duration;

use ebb::collect::{Collector, CollectorOptions, Subscription};
use ebb::localstack::StackOptions;
use ebb::localstack::prometheus::Prometheus;
use ebb::source::{PrometheusConfig, Query, SourceError};
use ebb::telemetry::Telemetry;
use support::{eventually, start_stack};

fn query(address: &str, promql: &str) -> Query {
    let config = PrometheusConfig {
        address: address.into(),
        query: promql.into(),
        auth_secret_ref: None,
        timeout: Some("2s".into()),
        empty_as: None,
        ..Default::default()
    };
    Query::Prometheus(config.resolve(None).unwrap())
}

fn prometheus_only() -> ebb::localstack::Stack {
    start_stack(StackOptions {
        prometheus: true,
        ..Default::default()
    })
}

async fn instant_queries_served(prometheus: &Prometheus) -> u64 {
    prometheus
        .requests_served(&["/api/v1/query"])
        .await
        .expect("Prometheus /metrics")
}

/// Waits until every subscription holds a result fetched after `after`; returns the latest
/// fetch time.
async fn round_after(subs: &[Subscription], after: tokio::time::Instant) -> tokio::time::Instant {
    eventually(
        Duration::from_secs(30),
        "a full round of fetches",
        || async {
            let times: Option<Vec<_>> = subs
                .iter()
                .map(|s| s.get().map(|v| v.fetched_at).filter(|t| *t > after))
                .collect();
            times?.into_iter().max()
        },
    )
    .await
}

#[tokio::test]
async fn a_hundred_targets_over_ten_queries_cost_ten_upstream_queries_per_interval() {
    let stack = prometheus_only();
    let prometheus = stack.prometheus.as_ref().unwrap();
    let collector = Collector::start(Arc::new(Telemetry::new()), CollectorOptions::default());
    // Long enough that reading Prometheus's counter after a round always ends before the next
    // round starts, even on a loaded machine.
    let interval = Duration::from_secs(5);
    let subs: Vec<Subscription> = (0..100)
        .map(|target| {
            let q = query(&prometheus.url(), &format!("vector({})", target % 10));
            collector.register(q, interval).unwrap()
        })
        .collect();
    assert_eq!(collector.distinct_queries(), 10);

    // Count at Prometheus between the ends of consecutive rounds: a round's fetches finish
    // within milliseconds, far from the next one 5 s later.
    let mut last = round_after(&subs, tokio::time::Instant::now() - Duration::from_secs(60)).await;
    let mut before = instant_queries_served(prometheus).await;
    for _ in 0..3 {
        last = round_after(&subs, last).await;
        let after = instant_queries_served(prometheus).await;
        assert_eq!(after - before, 10, "upstream queries in one interval");
        before = after;
    }
    // Everyone reads the value of their own query.
    for (target, sub) in subs.iter().enumerate() {
        assert_eq!(sub.get().unwrap().result, Ok((target % 10) as f64));
    }
    let metrics = collector.telemetry().encode();
    assert!(
        metrics.contains("ebb_collect_distinct_queries 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ebb_collect_subscriptions 100"),
        "{metrics}"
    );

    // Unsubscribing the last target of a query stops its polling.
    drop(subs);
    assert_eq!(collector.distinct_queries(), 0);
}

#[tokio::test]
async fn a_subscription_reads_its_history_from_prometheus() {
    let stack = prometheus_only();
    let prometheus = stack.prometheus.as_ref().unwrap();
    // 30 minutes of history, as if ebb had been restarted.
    let end = chrono::Utc::now().timestamp() / 60 * 60 - 60;
    let samples: Vec<(i64, f64)> = (0..30)
        .map(|i| ((end - (29 - i) * 60) * 1000, 100.0 + i as f64))
        .collect();
    prometheus
        .push(&[("__name__", "learned_load")], &samples)
        .await
        .unwrap();
    let collector = Collector::start(Arc::new(Telemetry::new()), CollectorOptions::default());
    let sub = collector
        .register(
            query(&prometheus.url(), "learned_load"),
            Duration::from_secs(15),
        )
        .unwrap();
    let points = eventually(Duration::from_secs(30), "the history", || async {
        let window = Duration::from_secs(30 * 60);
        let minute = Duration::from_secs(60);
        let points = sub.source_history(window, end, minute).await.ok()??;
        (points.len() == 30).then_some(points)
    })
    .await;
    let expected: Vec<(i64, f64)> = samples.iter().map(|&(t, v)| (t / 1000, v)).collect();
    assert_eq!(points, expected);
}

#[tokio::test]
async fn an_outage_is_cached_as_an_error_and_the_cache_recovers() {
    let mut stack = prometheus_only();
    let prometheus = stack.prometheus.as_mut().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    prometheus
        .push(&[("__name__", "served_load")], &[(now_ms - 1_000, 5.0)])
        .await
        .unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let collector = Collector::start(telemetry.clone(), CollectorOptions::default());
    let sub = collector
        .register(
            query(&prometheus.url(), "served_load"),
            Duration::from_secs(1),
        )
        .unwrap();
    eventually(Duration::from_secs(20), "the first value", || async {
        (sub.get()?.result == Ok(5.0)).then_some(())
    })
    .await;

    prometheus.stop();
    let failed = eventually(
        Duration::from_secs(20),
        "the outage in the cache",
        || async { sub.get().filter(|v| v.result.is_err()) },
    )
    .await;
    assert!(
        matches!(
            failed.result,
            Err(SourceError::Unreachable(_) | SourceError::Timeout(_))
        ),
        "{:?}",
        failed.result
    );
    // The last good value and its age stay available to the engine, apart from the error.
    assert_eq!(failed.last_ok.map(|(v, _)| v), Some(5.0));
    assert!(failed.value_age().unwrap() >= failed.age());
    let metrics = telemetry.encode();
    assert!(
        metrics.contains(r#"ebb_source_errors_total{source="prometheus",kind="Unreachable"}"#)
            || metrics.contains(r#"kind="Timeout""#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"ebb_source_value_age_seconds{source="prometheus"}"#));

    prometheus.start_again().await.unwrap();
    prometheus
        .push(
            &[("__name__", "served_load")],
            &[(chrono::Utc::now().timestamp_millis() - 500, 6.0)],
        )
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "recovery in the cache", || async {
        (sub.get()?.result == Ok(6.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_stalled_upstream_gets_bounded_concurrency_and_no_pile_up() {
    // A stalled upstream (accepts connections, never answers): what a hung Prometheus looks
    // like from outside; no real service can be told to hang on demand.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(socket);
        }
    });
    let telemetry = Arc::new(Telemetry::new());
    let collector = Collector::start(
        telemetry.clone(),
        CollectorOptions {
            max_concurrency_per_upstream: 2,
            ..Default::default()
        },
    );
    let subs: Vec<Subscription> = (0..6)
        .map(|i| {
            let config = PrometheusConfig {
                address: address.clone(),
                query: format!("vector({i})"),
                auth_secret_ref: None,
                timeout: Some("6s".into()),
                empty_as: None,
                ..Default::default()
            };
            let q = Query::Prometheus(config.resolve(None).unwrap());
            collector.register(q, Duration::from_millis(500)).unwrap()
        })
        .collect();
    // Within the first timeout (6 s) only two queries may be in flight at the upstream.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(subs.iter().all(|s| s.get().is_none()));
    // Rounds that came due meanwhile were skipped, not queued behind the stalled ones.
    let metrics = telemetry.encode();
    let skipped: f64 = metrics
        .lines()
        .find(|l| l.starts_with("ebb_collect_skipped_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert!(skipped >= 2.0, "{metrics}");
    // Then the timeouts land in the cache as errors, never as values.
    // (Three batches of two, 6 s each, at most.)
    let failed = eventually(Duration::from_secs(40), "timeouts in the cache", || async {
        subs[0].get()
    })
    .await;
    assert_eq!(
        failed.result,
        Err(SourceError::Timeout(Duration::from_secs(6)))
    );
}
