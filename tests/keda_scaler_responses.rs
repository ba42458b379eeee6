//! KEDA's scaler response cases run through ebb's sources, each with ebb's outcome beside
//! KEDA's: the same, or stricter with the reason (#17, item 7). The cases are data from
//! kedacore/keda at 8b4f083c (v2.20.1-117): `pkg/scalers/prometheus_scaler_test.go`
//! (`testPromQueryResult`, `TestPrometheusScalerExecutePromQuery_TrailingSlashBehavior`) and
//! `pkg/scalers/rabbitmq_scaler_test.go` (`testQueueInfoTestData`,
//! `testQueueInfoTestDataSingleVhost`, `getVhostAndPathFromURLTestData`). The metadata cases
//! of the same files are in `src/import/keda/tests.rs`.
//!
//! Stand-in: a canned HTTP responder serves each answer, as KEDA's own tests do with httptest.
//! These are fixed, partly malformed answers that a real Prometheus or RabbitMQ cannot be made
//! to give; the same sources against the real servers are tested in `source_prometheus.rs`
//! and `source_rabbitmq.rs`.

use std::future::IntoFuture as _;
use std::sync::{Arc, Mutex};

use ebb::source::{
    Aggregate, Connections, Measure, PrometheusConfig, Query, RabbitMqConfig, SecretData,
    SecretRef, SourceError,
};
use k8s_openapi::ByteString;

/// A loopback HTTP server that answers every request with `status` and `body`, and records
/// each request's path and query.
async fn answering(status: u16, body: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    use axum::extract::Request;
    use axum::response::IntoResponse;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let router = axum::Router::new().fallback(move |request: Request| {
        let record = record.clone();
        async move {
            let uri = request.uri();
            record.lock().unwrap().push(
                uri.path_and_query()
                    .map_or(uri.path(), |p| p.as_str())
                    .to_string(),
            );
            (
                http::StatusCode::from_u16(status).unwrap(),
                [("content-type", "application/json")],
                body,
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, router).into_future());
    (address, seen)
}

/// What a source made of an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    /// A number.
    Value(f64),
    /// No data (an empty result, NaN, ±Inf): a failed metric, never 0.
    NoData,
    /// More than one series where one number was asked.
    Ambiguous,
    /// Not an answer of the API asked (no `status`, no `resultType`, a sample without its value).
    Unexpected,
    /// An HTTP error status, the body's words kept.
    HttpError,
    /// Credentials refused, the body's words kept.
    Refused,
}

fn outcome(read: Result<f64, SourceError>) -> Outcome {
    match read {
        Ok(v) => Outcome::Value(v),
        Err(SourceError::NoData(_)) => Outcome::NoData,
        Err(SourceError::Ambiguous { .. }) => Outcome::Ambiguous,
        Err(SourceError::Protocol(_)) => Outcome::Unexpected,
        Err(SourceError::Http { .. } | SourceError::Upstream(_) | SourceError::Query(_)) => {
            Outcome::HttpError
        }
        Err(SourceError::Auth(_)) => Outcome::Refused,
        Err(other) => panic!("an outcome no case expects: {other:?}"),
    }
}

async fn prometheus_reads(address: &str) -> Result<f64, SourceError> {
    let config = PrometheusConfig {
        address: address.into(),
        query: "up".into(),
        timeout: Some("3s".into()),
        ..Default::default()
    };
    let query = Query::Prometheus(config.resolve(None).unwrap());
    Connections::new().source_for(&query).unwrap().fetch().await
}

/// KEDA's value, or `None` for KEDA's error; with `ignoreNullValues` as the case sets it (KEDA's
/// default is true: an empty result, or ±Inf, reads 0 there).
type Keda = Option<f64>;

/// `testPromQueryResult`: each body as KEDA's test sends it, then (where Prometheus can be in
/// that state) as Prometheus itself sends it, with `status` and `resultType`.
#[tokio::test]
async fn keda_prometheus_answers_read_the_same_or_stricter() {
    use Outcome::*;
    const EMPTY: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
    const TWO: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"2"]}]}}"#;
    const TWO_SERIES: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
    const PLUS_INF: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"+Inf"]}]}}"#;
    const MINUS_INF: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"-Inf"]}]}}"#;
    const BAD_DATA: &str =
        r#"{"status":"error","errorType":"bad_data","error":"1:3: parse error: unexpected"}"#;
    #[rustfmt::skip]
    let cases: &[(&str, u16, &'static str, bool, Keda, Outcome)] = &[
        // (KEDA's name, status, body, ignoreNullValues, KEDA's value, ebb's outcome)
        ("no results", 200, "{}", true, Some(0.0), Unexpected),
        ("no values", 200, r#"{"data":{"result":[]}}"#, true, Some(0.0), Unexpected),
        ("no values (as Prometheus sends it)", 200, EMPTY, true, Some(0.0), NoData),
        ("no values but shouldn't ignore", 200, EMPTY, false, None, NoData),
        ("value is empty list", 200, r#"{"data":{"result":[{"value": []}]}}"#, true, Some(0.0), Unexpected),
        ("value is empty list but shouldn't ignore", 200, r#"{"data":{"result":[{"value": []}]}}"#, false, None, Unexpected),
        ("valid value", 200, r#"{"data":{"result":[{"value": ["1", "2"]}]}}"#, true, Some(2.0), Unexpected),
        ("valid value (as Prometheus sends it)", 200, TWO, true, Some(2.0), Value(2.0)),
        ("not enough values", 200, r#"{"data":{"result":[{"value": ["1"]}]}}"#, true, None, Unexpected),
        ("multiple results", 200, r#"{"data":{"result":[{},{}]}}"#, true, None, Unexpected),
        ("multiple results (as Prometheus sends them)", 200, TWO_SERIES, true, None, Ambiguous),
        ("error status response", 400, "{}", true, None, Unexpected),
        ("error status response (as Prometheus sends it)", 400, BAD_DATA, true, None, HttpError),
        ("+Inf (as Prometheus sends it)", 200, PLUS_INF, true, Some(0.0), NoData),
        ("+Inf but shouldn't ignore", 200, PLUS_INF, false, None, NoData),
        ("-Inf (as Prometheus sends it)", 200, MINUS_INF, true, Some(0.0), NoData),
        ("-Inf but shouldn't ignore", 200, MINUS_INF, false, None, NoData),
    ];
    let mut stricter = 0;
    for &(name, status, body, _ignore_null, keda, ebb) in cases {
        let (address, _) = answering(status, body).await;
        let got = outcome(prometheus_reads(&address).await);
        assert_eq!(got, ebb, "{name}: ebb read {got:?}");
        // Never looser than KEDA: where KEDA errs, so does ebb; where both read a number, it is
        // the same number; where KEDA reads 0 for no data, ebb reads no data.
        match (keda, got) {
            (None, Value(v)) => panic!("{name}: KEDA errs, ebb read {v}"),
            (Some(k), Value(v)) => assert_eq!(k, v, "{name}"),
            (Some(_), _) => stricter += 1,
            (None, _) => {}
        }
    }
    assert_eq!(
        stricter, 7,
        "the cases where KEDA reads a number and ebb refuses"
    );
}

/// `TestPrometheusScalerExecutePromQuery_TrailingSlashBehavior`: an address with or without a
/// path and a trailing slash asks the same `/api/v1/query` under that path.
#[tokio::test]
async fn keda_prometheus_addresses_with_a_path_or_a_trailing_slash_ask_the_same_place() {
    const FORTY_TWO: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"42"]}]}}"#;
    for (suffix, path) in [
        ("", "/api/v1/query"),
        ("/", "/api/v1/query"),
        ("/prometheus", "/prometheus/api/v1/query"),
        ("/prometheus/", "/prometheus/api/v1/query"),
    ] {
        let (address, seen) = answering(200, FORTY_TWO).await;
        let read = prometheus_reads(&format!("{address}{suffix}")).await;
        assert_eq!(read, Ok(42.0), "{suffix:?}");
        let asked = seen.lock().unwrap().clone();
        assert_eq!(asked.len(), 1, "{suffix:?}: {asked:?}");
        assert!(
            asked[0].starts_with(&format!("{path}?")),
            "{suffix:?} asked {}",
            asked[0]
        );
    }
}

fn rabbit(management_url: &str, vhost: Option<&str>, measure: Measure) -> Query {
    let mut data = SecretData::new();
    data.insert(
        "managementUrl".into(),
        ByteString(management_url.as_bytes().to_vec()),
    );
    let config = RabbitMqConfig {
        connection_secret_ref: SecretRef {
            name: "rabbit".into(),
        },
        queue: Some("evaluate_trials".into()),
        queue_regex: None,
        aggregate: Aggregate::Sum,
        vhost: vhost.map(Into::into),
        measure,
        timeout: Some("3s".into()),
        empty_as: None,
    };
    Query::RabbitMq(config.resolve(&data).unwrap())
}

/// A queue's answer in KEDA's cases: messages, unacknowledged, publish rate, deliver rate.
type QueueAnswer = (u32, u32, f64, f64);

/// `testQueueInfoTestData`: KEDA's mode (queueLength and QueueLength count every message,
/// ready and unacknowledged, as ebb's Backlog does; MessageRate is the publish rate;
/// DeliverGetRate the deliver rate) and whether KEDA calls the queue active (above an
/// activation of 0, the default in both). ebb reads the same number in every case.
#[tokio::test]
async fn keda_rabbitmq_answers_read_the_same_value_and_activity() {
    fn answer(messages: u32, unacked: u32, publish: f64, deliver: f64) -> &'static str {
        Box::leak(
            format!(
                r#"{{"messages": {messages}, "messages_unacknowledged": {unacked}, "message_stats": {{"publish_details": {{"rate": {publish}}}, "deliver_get_details": {{"rate": {deliver}}}}}, "name": "evaluate_trials"}}"#
            )
            .into_boxed_str(),
        )
    }
    use Measure::{Backlog, DeliverRate, PublishRate};
    #[rustfmt::skip]
    let cases: &[(Measure, QueueAnswer, bool)] = &[
        // (ebb's measure for KEDA's mode, (messages, unacked, publish, deliver), KEDA's isActive)
        // queueLength (legacy)
        (Backlog, (4, 1, 0.0, 0.0), true), (Backlog, (1, 1, 0.0, 0.0), true),
        (Backlog, (1, 0, 0.0, 0.0), true), (Backlog, (0, 0, 0.0, 0.0), false),
        (Backlog, (4, 1, 1.4, 0.8), true), (Backlog, (1, 1, 1.4, 1.2), true),
        (Backlog, (1, 0, 1.4, 1.6), true), (Backlog, (0, 0, 1.4, 2.0), false),
        // mode QueueLength
        (Backlog, (4, 1, 0.0, 1.3), true), (Backlog, (1, 1, 0.0, 1.0), true),
        (Backlog, (1, 0, 0.0, 1.0), true), (Backlog, (0, 0, 0.0, 0.0), false),
        (Backlog, (4, 1, 1.4, 1.3), true), (Backlog, (1, 1, 1.4, 1.0), true),
        (Backlog, (1, 0, 1.4, 1.0), true), (Backlog, (0, 0, 1.4, 0.0), false),
        // mode MessageRate
        (PublishRate, (4, 1, 0.0, 1.3), true), (PublishRate, (1, 1, 0.0, 1.0), true),
        (PublishRate, (1, 0, 0.0, 1.0), true), (PublishRate, (0, 0, 0.0, 0.0), false),
        (PublishRate, (4, 1, 1.4, 1.3), true), (PublishRate, (1, 1, 1.4, 1.0), true),
        (PublishRate, (1, 0, 1.4, 1.0), true), (PublishRate, (0, 0, 1.4, 0.0), true),
        // mode DeliverGetRate
        (DeliverRate, (30, 10, 5.0, 1.0), true), (DeliverRate, (20, 0, 0.0, 10.0), true),
        (DeliverRate, (10, 0, 0.0, 12.5), true), (DeliverRate, (0, 0, 0.0, 0.0), false),
        (DeliverRate, (45, 5, 5.5, 1.5), true), (DeliverRate, (22, 0, 1.5, 23.0), true),
        (DeliverRate, (3, 0, 0.0, 18.5), true),
    ];
    let mut disagreeing = Vec::new();
    for &(measure, (messages, unacked, publish, deliver), keda_active) in cases {
        let body = answer(messages, unacked, publish, deliver);
        let (address, seen) = answering(200, body).await;
        let url = address.replace("http://", "http://guest:guest@");
        let source = Connections::new()
            .source_for(&rabbit(&url, None, measure))
            .unwrap();
        let value = source
            .fetch()
            .await
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        let want = match measure {
            Backlog => messages as f64,
            PublishRate => publish,
            _ => deliver,
        };
        assert_eq!(value, want, "{measure:?} of {body}");
        if (value > 0.0) != keda_active {
            disagreeing.push((measure, body));
        }
        let asked = seen.lock().unwrap().clone();
        assert!(
            asked[0].starts_with("/api/queues/%2F/evaluate_trials?"),
            "{asked:?}"
        );
    }
    // KEDA's MessageRate mode also counts a queue active while messages wait and nothing is
    // published; ebb's activity is the value it scales on (the publish rate) above its
    // activation, and `ebb import keda` reports that difference for every MessageRate trigger.
    // Everywhere else the two agree.
    let publish_idle_with_a_backlog: Vec<_> = cases
        .iter()
        .filter(|&&(m, (messages, _, publish, _), _)| {
            m == PublishRate && publish == 0.0 && messages > 0
        })
        .map(|&(m, (messages, unacked, publish, deliver), _)| {
            (m, answer(messages, unacked, publish, deliver))
        })
        .collect();
    assert_eq!(disagreeing.len(), 3);
    assert_eq!(disagreeing, publish_idle_with_a_backlog);

    // The error answer: KEDA keeps the body in its error, and so does ebb.
    let (address, _) = answering(401, "Password is incorrect").await;
    let url = address.replace("http://", "http://guest:wrong@");
    let read = Connections::new()
        .source_for(&rabbit(&url, None, Backlog))
        .unwrap()
        .fetch()
        .await;
    assert_eq!(outcome(read.clone()), Outcome::Refused);
    assert!(
        read.unwrap_err()
            .to_string()
            .contains("Password is incorrect")
    );
}

/// `testQueueInfoTestDataSingleVhost` and `getVhostAndPathFromURLTestData` on the wire: the
/// request goes to `<prefix>/api/queues/<vhost>/evaluate_trials` as KEDA sends it.
#[tokio::test]
async fn keda_rabbitmq_urls_ask_the_path_keda_asks() {
    const BODY: &str = r#"{"messages": 4, "messages_unacknowledged": 1, "message_stats": {"publish_details": {"rate": 1.4}, "deliver_get_details": {"rate": 1.6}}, "name": "evaluate_trials"}"#;
    #[rustfmt::skip]
    let cases: &[(&str, Option<&str>, &str)] = &[
        // (the URL's path, vhost, the path KEDA asks)
        ("", Some("myhost"), "/api/queues/myhost/evaluate_trials"),
        ("", Some("/"), "/api/queues/%2F/evaluate_trials"),
        ("", None, "/api/queues/%2F/evaluate_trials"),
        ("/myVhost", None, "/api/queues/myVhost/evaluate_trials"),
        ("/%2FmyVhost", None, "/api/queues/%2FmyVhost/evaluate_trials"),
        ("/sub1/myVhost", None, "/sub1/api/queues/myVhost/evaluate_trials"),
        ("/sub1/", Some("myVhost"), "/sub1/api/queues/myVhost/evaluate_trials"),
        ("/sub1/sub2/%2F", None, "/sub1/sub2/api/queues/%2F/evaluate_trials"),
        ("/sub1/sub2//", None, "/sub1/sub2/api/queues/%2F/evaluate_trials"),
    ];
    for &(path, vhost, keda_asks) in cases {
        let (address, seen) = answering(200, BODY).await;
        let url = format!(
            "{}{path}",
            address.replace("http://", "http://guest:guest@")
        );
        let value = Connections::new()
            .source_for(&rabbit(&url, vhost, Measure::Ready))
            .unwrap()
            .fetch()
            .await;
        assert_eq!(value, Ok(3.0), "{path:?}: ready is messages less unacked");
        let asked = seen.lock().unwrap().clone();
        assert!(
            asked[0].starts_with(&format!("{keda_asks}?")),
            "{path:?} {vhost:?} asked {}",
            asked[0]
        );
    }
}
