//! The Prometheus source against a real Prometheus: exact values, one number or a clear error,
//! "no data" never read as 0, and an outage seen within one timeout and recovered from.

mod support;

use std::sync::{Arc, Mutex, OnceLock};
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
        ..Default::default()
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
    // NaN and ±Inf are no data too (an infinite value would scale to max or to min).
    for query in [
        "vector(0) / 0",
        "vector(1) / 0",
        "vector(-1) / 0",
        "scalar(vector(1)) / 0",
    ] {
        let not_finite = self::source(&prometheus.url(), query, "5s");
        let result = not_finite.fetch().await;
        assert!(
            matches!(result, Err(SourceError::NoData(_))),
            "{query}: {result:?}"
        );
    }
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

/// Prometheus behind an HTTPS endpoint that demands a bearer token, as an authenticating
/// proxy does in production. The proxy is the only stand-in: the local Prometheus has no TLS
/// or auth configured; the answers still come from the real one behind it.
async fn prometheus_behind_tls_and_a_token(
    upstream: String,
    token: &'static str,
) -> (String, ebb::localstack::certs::Ca) {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    use ebb::localstack::certs::{Ca, Usage};
    let ca = Ca::new("proxy-ca").unwrap();
    let cert = ca
        .issue(
            "localhost",
            None,
            &["localhost", "127.0.0.1"],
            Usage::Server,
        )
        .unwrap();
    let http = reqwest::Client::new();
    let router = axum::Router::new().fallback(move |request: Request| {
        let (http, upstream) = (http.clone(), upstream.clone());
        async move {
            let expected = format!("Bearer {token}");
            if request
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some(expected.as_str())
            {
                return (http::StatusCode::UNAUTHORIZED, "unauthorized").into_response();
            }
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let answer = http.get(format!("{upstream}{path}")).send().await.unwrap();
            let status = answer.status();
            let body = answer.text().await.unwrap();
            (status, [("content-type", "application/json")], body).into_response()
        }
    });
    let addr = support::serve_https(router, &cert).await;
    (format!("https://127.0.0.1:{}", addr.port()), ca)
}

#[tokio::test]
async fn bearer_token_and_a_custom_ca_come_from_the_secret() {
    use ebb::source::{SecretRef, secret};
    use k8s_openapi::ByteString;
    let prometheus = prometheus_stack().prometheus.as_ref().unwrap();
    prometheus
        .push(&[("__name__", "secured_load")], &[(now_ms() - 1_000, 3.25)])
        .await
        .unwrap();
    let (address, ca) = prometheus_behind_tls_and_a_token(prometheus.url(), "s3cret").await;
    let config = PrometheusConfig {
        address,
        query: "secured_load".into(),
        auth_secret_ref: Some(SecretRef {
            name: "prom-auth".into(),
        }),
        timeout: Some("5s".into()),
        empty_as: None,
        ..Default::default()
    };
    let fetch = |pairs: Vec<(&str, String)>| {
        let data: ebb::source::SecretData = pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
            .collect();
        let query = Query::Prometheus(config.resolve(Some(&data)).unwrap());
        async move { Connections::new().source_for(&query).unwrap().fetch().await }
    };
    let ca_pem = ca.cert_pem().to_string();
    let value = eventually(Duration::from_secs(15), "the value through TLS", || {
        let f = fetch(vec![
            ("bearerToken", "s3cret".into()),
            (secret::KEY_CA, ca_pem.clone()),
        ]);
        async move { f.await.ok() }
    })
    .await;
    assert_eq!(value, 3.25);
    // A wrong token is an authentication error.
    let wrong = fetch(vec![
        ("bearerToken", "guess".into()),
        (secret::KEY_CA, ca_pem.clone()),
    ])
    .await;
    assert!(matches!(wrong, Err(SourceError::Auth(_))), "{wrong:?}");
    // Without the CA the server is not trusted: an error, never a value.
    let untrusted = fetch(vec![("bearerToken", "s3cret".into())]).await;
    assert!(
        matches!(untrusted, Err(SourceError::Unreachable(_))),
        "{untrusted:?}"
    );
}

/// One request as the recording proxy saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
    parameters: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Prometheus behind a plain-HTTP proxy that records each request's path, headers and query
/// parameters and forwards it to the real one (which ignores what it does not know, as
/// Prometheus does with Thanos' parameters and Mimir's tenant header).
async fn prometheus_behind_a_recording_proxy(upstream: String) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let address = support::forwarding_proxy(upstream, move |request| {
        let uri = request.uri();
        record.lock().unwrap().push(Seen {
            path: uri.path().to_string(),
            headers: request.headers().clone(),
            parameters: form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        });
        Some(uri.path_and_query().map_or("/", |p| p.as_str()).to_string())
    })
    .await;
    (address, seen)
}

fn secret_data(pairs: &[(&str, &str)]) -> ebb::source::SecretData {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                k8s_openapi::ByteString(v.as_bytes().to_vec()),
            )
        })
        .collect()
}

/// A Mimir tenant, a Thanos-style parameter pair and a header read from the Secret arrive on
/// the live instant query and on the history's range queries alike, beside the bearer token.
#[tokio::test]
async fn headers_tenant_and_query_parameters_reach_prometheus_on_instant_and_range_queries() {
    use ebb::source::{HeaderValueFrom, PrometheusHeader, SecretKeyRef, SecretRef};
    let prometheus = prometheus_stack().prometheus.as_ref().unwrap();
    let end = chrono::Utc::now().timestamp() / 60 * 60 - 60;
    let samples: Vec<(i64, f64)> = (0..5)
        .map(|i| ((end - (4 - i) * 60) * 1000, i as f64))
        .collect();
    prometheus
        .push(&[("__name__", "tenant_probe")], &samples)
        .await
        .unwrap();
    let (address, seen) = prometheus_behind_a_recording_proxy(prometheus.url()).await;
    let config = PrometheusConfig {
        address,
        query: "tenant_probe".into(),
        auth_secret_ref: Some(SecretRef {
            name: "prom-auth".into(),
        }),
        headers: Some(vec![
            PrometheusHeader {
                name: "X-Team".into(),
                value: Some("orders".into()),
                value_from: None,
            },
            PrometheusHeader {
                name: "X-Tenant-Token".into(),
                value: None,
                value_from: Some(HeaderValueFrom {
                    secret_key_ref: SecretKeyRef {
                        key: "tenantToken".into(),
                    },
                }),
            },
        ]),
        tenant: Some("team-a".into()),
        query_parameters: Some(
            [("partial_response", "false"), ("dedup", "true")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    let secret = secret_data(&[("bearerToken", "t0k"), ("tenantToken", "tt-s3cret\n")]);
    let query = Query::Prometheus(config.resolve(Some(&secret)).unwrap());
    let source = Connections::new().source_for(&query).unwrap();
    eventually(Duration::from_secs(15), "the instant value", || async {
        (source.fetch().await == Ok(4.0)).then_some(())
    })
    .await;
    let points = eventually(Duration::from_secs(15), "5 points", || async {
        let fetch = source.history(end - 4 * 60, end, Duration::from_secs(60))?;
        fetch.await.ok().filter(|p| p.len() == 5)
    })
    .await;
    assert_eq!(points.last(), Some(&(end, 4.0)));

    let seen = seen.lock().unwrap().clone();
    for path in ["/api/v1/query", "/api/v1/query_range"] {
        let request = seen
            .iter()
            .find(|s| s.path == path)
            .unwrap_or_else(|| panic!("no request to {path}: {seen:?}"));
        assert_eq!(request.header("x-scope-orgid"), Some("team-a"), "{path}");
        assert_eq!(request.header("x-team"), Some("orders"), "{path}");
        assert_eq!(
            request.header("x-tenant-token"),
            Some("tt-s3cret"),
            "{path}"
        );
        assert_eq!(
            request.header("authorization"),
            Some("Bearer t0k"),
            "{path}"
        );
        assert_eq!(
            request.parameter("partial_response"),
            Some("false"),
            "{path}"
        );
        assert_eq!(request.parameter("dedup"), Some("true"), "{path}");
        // ebb's own parameters are still its own.
        assert_eq!(request.parameter("query"), Some("tenant_probe"), "{path}");
    }
    // The Secret's value is not in the query's Debug (which logs may show).
    assert!(!format!("{query:?}").contains("tt-s3cret"));
}

/// Two targets that differ only in their tenant ask Prometheus twice: the tenant is part of
/// the collector's dedupe key, so neither reads the other tenant's value.
#[tokio::test]
async fn metrics_that_differ_only_in_tenant_are_fetched_apart() {
    use ebb::collect::{Collector, CollectorOptions};
    let prometheus = prometheus_stack().prometheus.as_ref().unwrap();
    let (address, seen) = prometheus_behind_a_recording_proxy(prometheus.url()).await;
    let for_tenant = |tenant: &str| {
        let config = PrometheusConfig {
            address: address.clone(),
            query: "vector(1)".into(),
            tenant: Some(tenant.into()),
            ..Default::default()
        };
        Query::Prometheus(config.resolve(None).unwrap())
    };
    let collector = Collector::start(
        Arc::new(ebb::telemetry::Telemetry::new()),
        CollectorOptions::default(),
    );
    let interval = Duration::from_secs(1);
    let subscriptions = [
        collector.register(for_tenant("team-a"), interval).unwrap(),
        collector.register(for_tenant("team-a"), interval).unwrap(),
        collector.register(for_tenant("team-b"), interval).unwrap(),
    ];
    assert_eq!(collector.distinct_queries(), 2);
    eventually(Duration::from_secs(15), "a value for each", || async {
        subscriptions
            .iter()
            .all(|s| s.get().is_some_and(|v| v.result == Ok(1.0)))
            .then_some(())
    })
    .await;
    let tenants: std::collections::BTreeSet<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| s.header("x-scope-orgid").map(str::to_string))
        .collect();
    assert_eq!(tenants, ["team-a".to_string(), "team-b".to_string()].into());
}
