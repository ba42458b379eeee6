//! The Grafana dashboards in dashboards/ against the real thing: `ebb serve` scaling a workload
//! on a RabbitMQ backlog (and a Prometheus query), the local-stack Prometheus scraping ebb's
//! /metrics every second, then every panel query, annotation query and variable query of both
//! dashboards sent to that Prometheus. A query that does not parse fails; one that returns
//! nothing fails too, unless it is in [`MAY_BE_EMPTY`] with the reason. The JSON is also checked
//! for what an import needs (datasource, gridPos, unique ids, defined variables).

mod controller_common;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Command;
use std::time::Duration;

use controller_common::*;
use ebb::localstack::kube::ControlPlaneOptions;
use ebb::localstack::process::{ManagedProcess, free_port};
use ebb::localstack::prometheus::ScrapeTarget;
use ebb::localstack::{Stack, StackOptions};
use serde_json::{Value, json};
use support::{eventually, https_client, start_stack};

const DASHBOARDS: [(&str, &str); 2] = [
    (
        "ebb-overview",
        include_str!("../dashboards/ebb-overview.json"),
    ),
    (
        "ebb-internals",
        include_str!("../dashboards/ebb-internals.json"),
    ),
];

/// Queries that may return nothing in this scenario: (dashboard uid, what, why). Everything
/// else must return data.
const MAY_BE_EMPTY: &[(&str, &str, &str)] = &[(
    "ebb-internals",
    "annotation Leader changes",
    "one replica, which may hold the Lease from before Prometheus first scrapes it",
)];

/// What Grafana substitutes for its own variables: rates over 15 s see 15 scrapes at 1 s.
const BUILTINS: [(&str, &str); 3] = [
    ("$__rate_interval", "15s"),
    ("$__interval", "5s"),
    ("$__range", "5m"),
];

/// One query of a dashboard, named for messages and for [`MAY_BE_EMPTY`].
#[derive(Debug)]
struct Query {
    dashboard: String,
    what: String,
    kind: QueryKind,
}

#[derive(Debug)]
enum QueryKind {
    /// PromQL, evaluated as a range query (as a panel or annotation does).
    PromQl(String),
    /// `label_values(selector, label)`, as the Prometheus data source's variable query runs it.
    LabelValues { selector: String, label: String },
}

#[tokio::test]
async fn every_dashboard_query_parses_and_returns_data_from_a_real_ebb() {
    let dashboards: Vec<Value> = DASHBOARDS
        .iter()
        .map(|(uid, text)| {
            let d: Value = serde_json::from_str(text).expect("dashboard JSON");
            assert_eq!(d["uid"], *uid, "stable uid");
            d
        })
        .collect();
    for d in &dashboards {
        check_importable(d);
    }

    let metrics_port = free_port();
    let stack = start_stack(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: false, // Direct mode only
            ..Default::default()
        }),
        prometheus: true,
        rabbitmq: true,
        scrape: vec![ScrapeTarget {
            job: "ebb".into(),
            address: format!("127.0.0.1:{metrics_port}"),
            interval: Duration::from_secs(1),
        }],
    });
    let started = std::time::SystemTime::now();
    let (ns, ebb, api) = scale_something(&stack, metrics_port).await;

    // API traffic for the API panels: health checks (200) and an anonymous list (401).
    let api_traffic = tokio::spawn({
        let http = https_client(stack.kube.as_ref().unwrap().ca_pem(), None);
        async move {
            loop {
                for path in [
                    "/healthz",
                    "/readyz",
                    "/apis/external.metrics.k8s.io/v1beta1",
                ] {
                    let _ = http.get(format!("{api}{path}")).send().await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });

    let vars = [
        ("$namespace", ns.as_str()),
        ("$scaledtarget", "worker|standby"),
        ("$job", "ebb"),
        ("$instance", ".+"),
    ];
    let queries: Vec<Query> = dashboards.iter().flat_map(queries_of).collect();
    let allowed: HashSet<(&str, &str)> = MAY_BE_EMPTY.iter().map(|(d, w, _)| (*d, *w)).collect();
    for (d, w, _) in MAY_BE_EMPTY {
        assert!(
            queries.iter().any(|q| q.dashboard == *d && q.what == *w),
            "MAY_BE_EMPTY names {d} {w}, which no dashboard has"
        );
    }
    let prometheus = stack.prometheus.as_ref().unwrap().url();
    let http = reqwest::Client::new();
    // Bounded: the scrapes behind the slowest rate need 15 s and a scrape interval or two.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut pending: Vec<&Query> = queries.iter().collect();
    let mut empty_allowed = Vec::new();
    loop {
        let mut still = Vec::new();
        for q in pending {
            let answer = run(&http, &prometheus, q, &vars, started).await;
            match answer {
                Err(parse_error) => panic!(
                    "{} {}: Prometheus rejects the query: {parse_error}",
                    q.dashboard, q.what
                ),
                Ok(true) => {}
                Ok(false) => still.push(q),
            }
        }
        pending = still;
        let must: Vec<&&Query> = pending
            .iter()
            .filter(|q| !allowed.contains(&(q.dashboard.as_str(), q.what.as_str())))
            .collect();
        if must.is_empty() {
            empty_allowed.extend(
                pending
                    .iter()
                    .map(|q| format!("{} {}", q.dashboard, q.what)),
            );
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let names: Vec<String> = must
                .iter()
                .map(|q| format!("{} {}: {:?}", q.dashboard, q.what, q.kind))
                .collect();
            panic!(
                "no data within 60 s for:\n{}\n--- ebb's log ---\n{}",
                names.join("\n"),
                ebb.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "{} queries checked; empty as allowed: {empty_allowed:?}",
        queries.len()
    );
    api_traffic.abort();

    // A deleted ScaledTarget takes its series with it.
    let client = stack.kube.as_ref().unwrap().client().await.unwrap();
    kube::Api::<ebb::crd::ScaledTarget>::namespaced(client, &ns)
        .delete("worker", &Default::default())
        .await
        .unwrap();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    eventually(
        15 * SECOND,
        "the deleted ScaledTarget's series gone from /metrics",
        || async {
            let text = reqwest::get(&metrics_url).await.ok()?.text().await.ok()?;
            let gone = !text.contains(r#"scaledtarget="worker""#);
            (gone && text.contains(r#"scaledtarget="standby""#)).then_some(())
        },
    )
    .await;
}

/// Two ScaledTargets in Direct mode under `ebb serve`: `worker` scales on a backlog (and reads
/// Prometheus too), `standby` reads a query with no data and goes to its fallback count.
/// Returns the namespace, the ebb process and the API's URL.
async fn scale_something(stack: &Stack, metrics_port: u16) -> (String, ManagedProcess, String) {
    let kube = stack.kube.as_ref().unwrap();
    let rabbit = stack.rabbitmq.as_ref().unwrap();
    let prometheus = stack.prometheus.as_ref().unwrap().url();
    let client = kube.client().await.unwrap();
    ebb::crd::install(&client).await.unwrap();
    let ns = "dashboards".to_string();
    kube.create_namespace(&ns).await.unwrap();
    rabbit_secret(&client, &ns, rabbit).await;
    deployment(&client, &ns, "worker", 1).await;
    deployment(&client, &ns, "standby", 1).await;

    let queue = format!("{ns}-orders");
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 0).await;
    let mut worker = backlog_target("worker", &queue, "Direct", 10, "1s");
    // Learning on: its backlog metric reports a learned target (the static one while the
    // history is short), for the learned-target series.
    worker["spec"]["adaptive"] = json!({});
    worker["spec"]["metrics"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "name": "scrapes",
            "prometheus": { "address": prometheus, "query": "sum(up{job=\"ebb\"})" },
            "target": { "type": "Value", "value": "100" }
        }));
    scaled_target(&client, &ns, worker).await;
    // Its only query has no data: the source errors and, after two polls, the fallback count.
    let mut standby = backlog_target("standby", &queue, "Direct", 3, "1s");
    standby["spec"]["metrics"] = json!([{
        "name": "absent",
        "prometheus": { "address": prometheus, "query": "sum(ebb_test_no_such_metric)" },
        "target": { "type": "AverageValue", "averageValue": "1" }
    }]);
    standby["spec"]["fallback"] = json!({ "failureThreshold": 2, "replicas": 2 });
    scaled_target(&client, &ns, standby).await;

    let dir = tempfile::tempdir().unwrap().keep();
    let (cert, key) = kube
        .serving_cert(&["localhost", "127.0.0.1"])
        .unwrap()
        .write(&dir, "serving")
        .unwrap();
    let api_port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ebb"));
    cmd.args(["serve", "--identity", "ebb-dashboards-0"])
        .args(["--leader-election-namespace", &ns, "--lease-name", "ebb"])
        .args(["--lease-duration-seconds", "4"])
        .args(["--api-listen", &format!("127.0.0.1:{api_port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-private-key-file")
        .arg(&key)
        .env(
            "KUBECONFIG",
            kube.kubeconfig_for("ebb-dashboards", Some("system:masters"))
                .unwrap(),
        )
        .env("RUST_LOG", "info");
    let ebb = ManagedProcess::spawn("ebb", cmd, &dir.join("ebb.log")).expect("spawn ebb serve");

    publish(&channel, &queue, 50).await;
    eventually(
        30 * SECOND,
        "worker scaled to 5 for 50 messages",
        || async { (replicas(&client, &ns, "worker").await == 5).then_some(()) },
    )
    .await;
    eventually(15 * SECOND, "standby at its fallback count 2", || async {
        (replicas(&client, &ns, "standby").await == 2).then_some(())
    })
    .await;
    (ns, ebb, format!("https://127.0.0.1:{api_port}"))
}

/// Sends one query; `Ok(true)` when it returned a finite sample (or, for a variable, the
/// values the test expects), `Err` when Prometheus rejects it.
async fn run(
    http: &reqwest::Client,
    prometheus: &str,
    q: &Query,
    vars: &[(&str, &str)],
    since: std::time::SystemTime,
) -> Result<bool, String> {
    let start = since
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (url, params) = match &q.kind {
        QueryKind::PromQl(expr) => (
            format!("{prometheus}/api/v1/query_range"),
            vec![
                ("query", substitute(expr, vars)),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("step", "2".to_string()),
            ],
        ),
        QueryKind::LabelValues { selector, label } => (
            format!("{prometheus}/api/v1/label/{label}/values"),
            vec![
                ("match[]", substitute(selector, vars)),
                ("start", start.to_string()),
                ("end", end.to_string()),
            ],
        ),
    };
    let response = http
        .get(&url)
        .query(&params)
        .send()
        .await
        .expect("Prometheus answers");
    let body: Value = response.json().await.expect("a JSON answer");
    if body["status"] != "success" {
        return Err(format!("{}: {}", body["errorType"], body["error"]));
    }
    Ok(match &q.kind {
        QueryKind::PromQl(_) => body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|series| series["values"].as_array().unwrap())
            .any(|point| {
                point[1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(f64::is_finite)
            }),
        QueryKind::LabelValues { .. } => !body["data"].as_array().unwrap().is_empty(),
    })
}

/// `$name` → value, longest names first (`$__interval` is not `$__rate_interval`).
fn substitute(expr: &str, vars: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = vars.iter().chain(BUILTINS.iter()).copied().collect();
    all.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let out = all
        .iter()
        .fold(expr.to_string(), |e, (name, value)| e.replace(name, value));
    assert!(!out.contains('$'), "a variable left in {out}");
    out
}

/// Every query of a dashboard: panel targets (rows' nested panels too), Prometheus
/// annotations, query variables.
fn queries_of(d: &Value) -> Vec<Query> {
    let uid = d["uid"].as_str().unwrap().to_string();
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                dashboard: uid.clone(),
                what: format!(
                    "panel {} / {}",
                    p["title"].as_str().unwrap(),
                    t["refId"].as_str().unwrap()
                ),
                kind: QueryKind::PromQl(t["expr"].as_str().unwrap().to_string()),
            });
        }
    }
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = a["expr"].as_str() {
            out.push(Query {
                dashboard: uid.clone(),
                what: format!("annotation {}", a["name"].as_str().unwrap()),
                kind: QueryKind::PromQl(expr.to_string()),
            });
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            out.push(Query {
                dashboard: uid.clone(),
                what: format!("variable {}", v["name"].as_str().unwrap()),
                kind: label_values(v["query"].as_str().expect("a query variable's query")),
            });
        }
    }
    out
}

/// `label_values(selector, label)` → its parts (the only variable query form the dashboards use).
fn label_values(query: &str) -> QueryKind {
    let inner = query
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values(...): {query}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .expect("label_values(selector, label)");
    QueryKind::LabelValues {
        selector: selector.trim().to_string(),
        label: label.trim().to_string(),
    }
}

/// Top-level panels and those nested in collapsed rows.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// What an import needs: identity and schema, a Prometheus datasource chosen at import
/// (`${datasource}` variable), every panel placed and uniquely identified, every query bound to
/// that datasource, every variable used defined.
fn check_importable(d: &Value) {
    let uid = d["uid"].as_str().expect("uid");
    assert!(
        d["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{uid}: title"
    );
    let schema = d["schemaVersion"].as_i64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "{uid}: schemaVersion {schema}");
    assert!(
        d["time"]["from"].is_string() && d["time"]["to"].is_string(),
        "{uid}: time"
    );

    let variables = d["templating"]["list"].as_array().expect("templating.list");
    let ds = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .unwrap_or_else(|| panic!("{uid}: no datasource variable"));
    assert_eq!(ds["type"], "datasource", "{uid}");
    assert_eq!(ds["query"], "prometheus", "{uid}");
    let prometheus = json!({ "type": "prometheus", "uid": "${datasource}" });
    let mut defined: BTreeSet<String> = BUILTINS.iter().map(|(n, _)| n[1..].to_string()).collect();
    for v in variables {
        let name = v["name"].as_str().expect("a variable name");
        assert!(
            defined.insert(name.to_string()),
            "{uid}: variable {name} twice"
        );
        if v["type"] == "query" {
            assert_eq!(v["datasource"], prometheus, "{uid}: variable {name}");
            assert!(
                v["definition"].is_string(),
                "{uid}: variable {name} definition"
            );
        }
    }

    let mut ids = HashSet::new();
    let mut titles = HashSet::new();
    let mut cells: BTreeMap<(i64, i64), String> = BTreeMap::new();
    for p in all_panels(d) {
        let title = p["title"].as_str().expect("a panel title");
        let id = p["id"]
            .as_i64()
            .unwrap_or_else(|| panic!("{uid}: {title}: id"));
        assert!(ids.insert(id), "{uid}: id {id} twice");
        let g = &p["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
            g[k].as_i64()
                .unwrap_or_else(|| panic!("{uid}: {title}: gridPos.{k}"))
        });
        assert!(
            h > 0 && (1..=24).contains(&w) && x >= 0 && x + w <= 24 && y >= 0,
            "{uid}: {title}: {g}"
        );
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.to_string()) {
                    panic!("{uid}: {title} overlaps {other}");
                }
            }
        }
        assert!(
            p["type"].as_str().is_some_and(|t| !t.is_empty()),
            "{uid}: {title}: type"
        );
        if p["type"] == "row" {
            if let Some(var) = p["repeat"].as_str() {
                assert!(
                    defined.contains(var),
                    "{uid}: row {title} repeats unknown {var}"
                );
            }
            continue;
        }
        assert!(titles.insert(title), "{uid}: two panels titled {title}");
        assert_eq!(p["datasource"], prometheus, "{uid}: {title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{uid}: {title}: no query");
        let mut refs = HashSet::new();
        for t in targets {
            let r = t["refId"].as_str().expect("refId");
            assert!(refs.insert(r), "{uid}: {title}: refId {r} twice");
            assert_eq!(t["datasource"], prometheus, "{uid}: {title} / {r}");
            let expr = t["expr"].as_str().expect("expr");
            assert_variables_defined(uid, expr, &defined);
        }
    }
    for a in d["annotations"]["list"]
        .as_array()
        .expect("annotations.list")
    {
        if let Some(expr) = a["expr"].as_str() {
            assert_eq!(a["datasource"], prometheus, "{uid}: annotation");
            assert!(
                a["name"].is_string() && a["enable"].is_boolean(),
                "{uid}: {a}"
            );
            assert_variables_defined(uid, expr, &defined);
        }
    }
}

fn assert_variables_defined(uid: &str, expr: &str, defined: &BTreeSet<String>) {
    for (i, _) in expr.match_indices('$') {
        let name: String = expr[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            defined.contains(&name),
            "{uid}: ${name} is not defined, in {expr}"
        );
    }
}
