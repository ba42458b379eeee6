//! The Prometheus source against a real Prometheus: exact values, one number or a clear error,
//! "no data" never read as 0, and an outage seen within one timeout and recovered from.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ebb::localstack::{Stack, StackOptions};
use ebb::source::{Connections, PrometheusConfig, Query, Source, SourceError, apply_empty_as};
use support::{eventually, start_stack};

/// One Prometheus for the tests that do not stop it (no control plane: not needed here).
fn prometheus_stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        start_stack(StackOptions {
            prometheus: true,
            ..Default::default()
        })
    })
}

fn source(address: &str, query: &str, timeout: &str) -> Arc<dyn Source> {
    let config = PrometheusConfig {
        address: address.into(),
        query: query.into(),
        auth_secret_ref: None,
        timeout: Some(timeout.into()),
        empty_as: None,
    };
    let query = Query::Prometheus(config.resolve(None).unwrap());
    Connections::new().source_for(&query).unwrap()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test]
async fn pushed_values_come_back_exactly() {
    let prometheus = prometheus_stack().prometheus.as_ref().unwrap();
    prometheus
        .push(
            &[("__name__", "orders_rps"), ("service", "orders")],
            &[(now_ms() - 3_000, 11.0), (now_ms() - 1_000, 1234.5678)],
        )
        .await
        .unwrap();
    let source = source(&prometheus.url(), r#"orders_rps{service="orders"}"#, "5s");
    let value = eventually(Duration::from_secs(15), "the pushed sample", || async {
        source.fetch().await.ok()
    })
    .await;
    assert_eq!(value, 1234.5678);
    // A scalar result is one number too.
    let scalar = self::source(&prometheus.url(), "scalar(orders_rps) * 2", "5s");
    assert_eq!(scalar.fetch().await, Ok(2469.1356));
}

#[tokio::test]
async fn two_series_give_the_aggregation_hint() {
    let prometheus = prometheus_stack().prometheus.as_ref().unwrap();
    for pod in ["a", "b"] {
        prometheus
            .push(
                &[("__name__", "queue_depth"), ("pod", pod)],
                &[(now_ms() - 1_000, 5.0)],
            )
            .await
            .unwrap();
    }
    let source = source(&prometheus.url(), "queue_depth", "5s");
    let err = eventually(Duration::from_secs(15), "both series", || async {
        match source.fetch().await {
            Err(e @ SourceError::Ambiguous { .. }) => Some(e),
            _ => None,
        }
    })
    .await;
    assert_eq!(err, SourceError::Ambiguous { series: 2 });
    assert!(err.to_string().contains("sum("), "{err}");
    // The aggregation the hint suggests gives one number.
    let summed = self::source(&prometheus.url(), "sum(queue_depth)", "5s");
    assert_eq!(summed.fetch().await, Ok(10.0));
}

#[tokio::test]
async fn an_empty_result_is_no_data_not_zero() {
    let prometheus = prometheus_stack().prometheus.as_ref().unwrap();
    let source = source(&prometheus.url(), r#"absent_metric{job="none"}"#, "5s");
    let result = source.fetch().await;
    assert!(matches!(result, Err(SourceError::NoData(_))), "{result:?}");
    // NaN is no data too.
    let nan = self::source(&prometheus.url(), "vector(0) / 0", "5s");
    assert!(matches!(nan.fetch().await, Err(SourceError::NoData(_))));
    // Only an explicit emptyAs turns it into a value.
    assert_eq!(apply_empty_as(result.clone(), Some(0.0)), Ok(0.0));
    assert!(apply_empty_as(result, None).is_err());
}

#[tokio::test]
async fn bad_promql_is_a_query_error() {
    let prometheus = prometheus_stack().prometheus.as_ref().unwrap();
    let source = source(&prometheus.url(), "sum(rate(x[1m]", "5s");
    assert!(matches!(source.fetch().await, Err(SourceError::Query(_))));
}

#[tokio::test]
async fn a_range_query_returns_the_history_at_each_step() {
    let prometheus = prometheus_stack().prometheus.as_ref().unwrap();
    let end = chrono::Utc::now().timestamp() / 60 * 60 - 60;
    let samples: Vec<(i64, f64)> = (0..30)
        .map(|i| ((end - (29 - i) * 60) * 1000, i as f64 * 1.5))
        .collect();
    prometheus
        .push(&[("__name__", "history_probe")], &samples)
        .await
        .unwrap();
    let source = source(&prometheus.url(), "history_probe", "5s");
    let points = eventually(Duration::from_secs(15), "30 points", || async {
        let fetch = source.history(end - 29 * 60, end, Duration::from_secs(60))?;
        fetch.await.ok().filter(|p| p.len() == 30)
    })
    .await;
    let expected: Vec<(i64, f64)> = samples.iter().map(|&(t, v)| (t / 1000, v)).collect();
    assert_eq!(points, expected);
}

#[tokio::test]
async fn an_outage_is_an_error_within_one_timeout_and_recovery_follows() {
    // A private stack: this test stops its Prometheus.
    let mut stack = start_stack(StackOptions {
        prometheus: true,
        ..Default::default()
    });
    let prometheus = stack.prometheus.as_mut().unwrap();
    prometheus
        .push(&[("__name__", "up_probe")], &[(now_ms() - 1_000, 7.0)])
        .await
        .unwrap();
    let timeout = Duration::from_secs(2);
    let source = source(&prometheus.url(), "up_probe", "2s");
    eventually(
        Duration::from_secs(15),
        "the value before the outage",
        || async { (source.fetch().await == Ok(7.0)).then_some(()) },
    )
    .await;

    prometheus.stop();
    let started = Instant::now();
    let result = source.fetch().await;
    let took = started.elapsed();
    assert!(
        matches!(
            result,
            Err(SourceError::Unreachable(_) | SourceError::Timeout(_))
        ),
        "{result:?}"
    );
    // Within one timeout (plus slack for a loaded machine).
    assert!(took < timeout + Duration::from_secs(2), "took {took:?}");

    prometheus.start_again().await.unwrap();
    prometheus
        .push(&[("__name__", "up_probe")], &[(now_ms() - 500, 8.0)])
        .await
        .unwrap();
    eventually(Duration::from_secs(30), "recovery", || async {
        (source.fetch().await == Ok(8.0)).then_some(())
    })
    .await;
    drop(stack);
}
