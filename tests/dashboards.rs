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
        ("$target_key", "dashboards/worker"),
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

/// Three ScaledTargets in Direct mode under `ebb serve`: `worker` scales on a backlog (and reads
/// Prometheus too), `standby` reads a query with no data and goes to its fallback count,
/// `orphan` names a Deployment that does not exist (a permanent poll failure).
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
    // Its workload does not exist: a permanent poll failure, for the failures panel.
    let mut orphan = backlog_target("orphan", &queue, "Direct", 3, "1s");
    orphan["spec"]["targetRef"]["name"] = json!("no-such-deployment");
    scaled_target(&client, &ns, orphan).await;

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
    substitute_with(expr, vars, &BUILTINS)
}

/// [`substitute`] with Grafana's own variables given. `$1` (a `label_replace` group) stays.
fn substitute_with(expr: &str, vars: &[(&str, &str)], builtins: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = vars.iter().chain(builtins.iter()).copied().collect();
    all.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let out = all
        .iter()
        .fold(expr.to_string(), |e, (name, value)| e.replace(name, value));
    let left = variable_names(&out);
    assert!(left.is_empty(), "variables {left:?} left in {out}");
    out
}

/// The `$name`s in `expr`, not counting `$1` and the like (regex groups of `label_replace`).
fn variable_names(expr: &str) -> Vec<String> {
    expr.match_indices('$')
        .map(|(i, _)| {
            expr[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.starts_with(|c: char| c.is_ascii_digit()))
        .collect()
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
                kind: variable_query(v["query"].as_str().expect("a query variable's query")),
            });
        }
    }
    out
}

/// `label_values(selector, label)` → its parts; `query_result(expr)` → the expression (the
/// variable's regex then picks a label's value out of each series).
fn variable_query(query: &str) -> QueryKind {
    if let Some(expr) = query
        .strip_prefix("query_result(")
        .and_then(|q| q.strip_suffix(')'))
    {
        return QueryKind::PromQl(expr.to_string());
    }
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
    for name in variable_names(expr) {
        assert!(
            defined.contains(&name),
            "{uid}: ${name} is not defined, in {expr}"
        );
    }
}

/// The dashboards as Grafana's own schema reads them: tools/dashboard-check decodes each one
/// strictly with grafana-foundation-sdk (unknown fields, wrong types and missing required fields
/// are errors; panel options, field config and queries by their plugins' types). The tool is
/// built once per SDK version and source hash (scripts/build-dashboard-check.sh).
#[test]
fn dashboards_decode_strictly_with_grafana_foundation_sdk() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let built = Command::new(root.join("scripts/build-dashboard-check.sh"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("scripts/build-dashboard-check.sh runs");
    assert!(
        built.status.success(),
        "building tools/dashboard-check failed"
    );
    let tool = String::from_utf8(built.stdout).unwrap();
    let tool = tool
        .lines()
        .last()
        .expect("the tool's path")
        .trim()
        .to_string();
    let check = |files: &[std::path::PathBuf]| {
        let out = Command::new(&tool)
            .args(files)
            .output()
            .expect("dashboard-check runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let shipped: Vec<_> = DASHBOARDS
        .iter()
        .map(|(uid, _)| root.join(format!("dashboards/{uid}.json")))
        .collect();
    let (ok, report) = check(&shipped);
    assert!(ok, "the strict decode finds:\n{report}");
    assert_eq!(
        report.lines().filter(|l| l.ends_with(": ok")).count(),
        2,
        "{report}"
    );

    // The check can fail: a row with `repeatDirection` (a panel's field, not a row's) and a
    // legend without its `calcs`.
    let mut d: Value = serde_json::from_str(DASHBOARDS[0].1).unwrap();
    let panels = d["panels"].as_array_mut().unwrap();
    let row = panels.iter_mut().find(|p| p["repeat"].is_string()).unwrap();
    row["repeatDirection"] = json!("h");
    let legend = panels
        .iter_mut()
        .find_map(|p| p["options"]["legend"].as_object_mut())
        .unwrap();
    legend.remove("calcs");
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, serde_json::to_vec(&d).unwrap()).unwrap();
    let (ok, report) = check(&[broken]);
    assert!(!ok, "{report}");
    assert!(
        report.contains("unexpected field 'repeatDirection'"),
        "{report}"
    );
    assert!(
        report.contains("legend.calcs: required field is missing"),
        "{report}"
    );
}

/// The scrape interval the rule tests below assume, and how many samples they hold.
const SCRAPE: u32 = 30;
const SAMPLES: u32 = 81;

/// A scaling action (or several in one scrape) as ebb's counter shows it: `count` more at
/// sample `at` (time `at * SCRAPE`) of ScaledTarget `worker` in `namespace`, by the replica
/// that led then.
struct Action {
    at: u32,
    namespace: &'static str,
    direction: &'static str,
    count: u32,
}

/// What happens in the rule tests, at a scrape every 30 s: both namespaces have a ScaledTarget
/// named `worker`. Replica i1 leads until sample 48, replica i2 from sample 50 (its counters
/// start at 0, an action of its first poll already counted at its first scrape); i2's
/// container restarts at sample 65 (its counters drop to 0).
const ACTIONS: &[Action] = &[
    Action {
        at: 3,
        namespace: "a",
        direction: "up",
        count: 1,
    },
    // Two actions in one scrape interval, and one in the other namespace at the same time.
    Action {
        at: 10,
        namespace: "a",
        direction: "up",
        count: 2,
    },
    Action {
        at: 10,
        namespace: "b",
        direction: "up",
        count: 1,
    },
    Action {
        at: 20,
        namespace: "a",
        direction: "down",
        count: 1,
    },
    Action {
        at: 30,
        namespace: "b",
        direction: "up",
        count: 1,
    },
    // The last scrape of the old leader, the first of the new one.
    Action {
        at: 48,
        namespace: "a",
        direction: "up",
        count: 1,
    },
    Action {
        at: 50,
        namespace: "a",
        direction: "up",
        count: 1,
    },
    Action {
        at: 55,
        namespace: "b",
        direction: "up",
        count: 1,
    },
    Action {
        at: 58,
        namespace: "b",
        direction: "up",
        count: 2,
    },
    Action {
        at: 60,
        namespace: "a",
        direction: "up",
        count: 1,
    },
    // After the restart at 65.
    Action {
        at: 66,
        namespace: "b",
        direction: "up",
        count: 1,
    },
    Action {
        at: 70,
        namespace: "a",
        direction: "down",
        count: 1,
    },
];
const HANDOVER: u32 = 49; // i1's series are stale here, i2's begin at the next sample
const RESTART: u32 = 65;

/// The input series of the rule tests, in promtool's notation.
fn input_series() -> Vec<Value> {
    let mut series = Vec::new();
    let values = |f: &dyn Fn(u32) -> Option<String>| {
        (0..SAMPLES)
            .map(|i| f(i).unwrap_or_else(|| "_".into()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for namespace in ["a", "b"] {
        for direction in ["up", "down"] {
            for instance in ["i1", "i2"] {
                let counter = |i: u32| -> Option<String> {
                    let (from, to) = match instance {
                        "i1" if i == HANDOVER => return Some("stale".into()),
                        "i1" => (0, HANDOVER - 1),
                        _ => (HANDOVER + 1, SAMPLES - 1),
                    };
                    if i < from || i > to {
                        return None;
                    }
                    // The counter counts from the series' start, or from the restart.
                    let start = if instance == "i2" && i >= RESTART {
                        RESTART
                    } else {
                        from
                    };
                    let n: u32 = ACTIONS
                        .iter()
                        .filter(|a| a.namespace == namespace && a.direction == direction)
                        .filter(|a| a.at >= start && a.at <= i)
                        .map(|a| a.count)
                        .sum();
                    Some(n.to_string())
                };
                series.push(json!({
                    "series": format!(
                        r#"ebb_scaling_actions_total{{job="ebb", instance="{instance}", namespace="{namespace}", scaledtarget="worker", direction="{direction}"}}"#
                    ),
                    "values": values(&counter),
                }));
            }
        }
        let (current, desired) = if namespace == "a" { (3, 4) } else { (7, 6) };
        for (kind, v) in [("current", current), ("desired", desired)] {
            series.push(json!({
                "series": format!(r#"ebb_scaledtarget_replicas{{job="ebb", instance="i1", namespace="{namespace}", scaledtarget="worker", kind="{kind}"}}"#),
                "values": values(&|_| Some(v.to_string())),
            }));
        }
        let mode = if namespace == "a" { "Direct" } else { "Hpa" };
        series.push(json!({
            "series": format!(r#"ebb_scaledtarget_info{{job="ebb", instance="i1", namespace="{namespace}", scaledtarget="worker", mode="{mode}", target="Deployment/worker"}}"#),
            "values": values(&|_| Some("1".into())),
        }));
    }
    let leader = |instance: &str, identity: &str, f: &dyn Fn(u32) -> Option<String>| {
        json!({
            "series": format!(r#"ebb_leader{{job="ebb", instance="{instance}", identity="{identity}"}}"#),
            "values": values(f),
        })
    };
    series.push(leader("i1", "ebb-0", &|i| match i {
        _ if i < HANDOVER => Some("1".into()),
        HANDOVER => Some("stale".into()),
        _ => None,
    }));
    series.push(leader("i2", "ebb-1", &|i| {
        Some(if i > HANDOVER { "1" } else { "0" }.into())
    }));
    series
}

/// A dashboard query by what [`queries_of`] names it.
fn promql(dashboards: &[Value], what: &str) -> String {
    let found: Vec<Query> = dashboards
        .iter()
        .flat_map(queries_of)
        .filter(|q| q.what == what)
        .collect();
    match found.as_slice() {
        [
            Query {
                kind: QueryKind::PromQl(expr),
                ..
            },
        ] => expr.clone(),
        _ => panic!("no single PromQL query {what}: {found:?}"),
    }
}

fn sample(labels: &[(&str, &str)], value: u32) -> Value {
    let labels: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!(r#"{k}="{v}""#))
        .collect();
    json!({ "labels": format!("{{{}}}", labels.join(", ")), "value": value })
}

/// The dashboards' queries where a scrape interval of 30 s matters, taken from the JSON that
/// ships, Grafana's variables substituted as Grafana does for a range query at step `$__interval`
/// (`$__rate_interval` = max(4 x scrape, `$__interval` + scrape)), evaluated by promtool's rule
/// tests at every step of a 40-minute range, at steps shorter and longer than the scrape
/// interval. Expected: every action counted once, in the step whose interval holds its scrape,
/// in whole numbers (bars, the range's total, annotations), also across a leader change and a
/// restart; same-named ScaledTargets of two namespaces stay apart (annotations, the row keyed by
/// namespace and name); a leader change annotated once.
#[test]
fn queries_count_every_action_once_at_a_30s_scrape_interval() {
    let dashboards: Vec<Value> = DASHBOARDS
        .iter()
        .map(|(_, text)| serde_json::from_str(text).unwrap())
        .collect();
    let bars = promql(&dashboards, "panel Scaling actions / A");
    let total = promql(&dashboards, "panel Scaling actions in range / A");
    let actions = promql(&dashboards, "annotation Scaling actions");
    let leader = promql(&dashboards, "annotation Leader changes");
    let replicas = promql(&dashboards, "panel Replicas / A");
    let mode = promql(&dashboards, "panel Mode / A");
    let keys = promql(&dashboards, "variable target_key");
    let in_range = dashboards[0]["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == "Scaling actions in range")
        .unwrap();
    assert_eq!(
        in_range["options"]["reduceOptions"]["calcs"],
        json!(["sum"]),
        "the range's total is the sum of the per-interval counts"
    );
    let all = [
        ("$namespace", ".*"),
        ("$scaledtarget", ".*"),
        ("$job", ".*"),
        ("$instance", ".*"),
    ];

    let mut tests = Vec::new();
    let mut counted = 0;
    for step in [15, 60] {
        let interval = format!("{step}s");
        let rate_interval = format!("{}s", (4 * SCRAPE).max(step + SCRAPE));
        let builtins = [
            ("$__rate_interval", rate_interval.as_str()),
            ("$__interval", interval.as_str()),
            ("$__range", "40m"),
        ];
        let q = |expr: &str, vars: &[(&str, &str)]| substitute_with(expr, vars, &builtins);
        let mut exprs = Vec::new();
        for t in (step..SAMPLES * SCRAPE).step_by(step as usize) {
            // Actions whose scrape falls in (t - step, t].
            let n = |namespace: Option<&str>, direction: Option<&str>| -> u32 {
                ACTIONS
                    .iter()
                    .filter(|a| a.at * SCRAPE + step > t && a.at * SCRAPE <= t)
                    .filter(|a| namespace.is_none_or(|n| n == a.namespace))
                    .filter(|a| direction.is_none_or(|d| d == a.direction))
                    .map(|a| a.count)
                    .sum()
            };
            let eval_time = format!("{t}s");
            exprs.push(json!({
                "expr": q(&bars, &all), "eval_time": eval_time,
                "exp_samples": (["up", "down"].map(|d| sample(&[("direction", d)], n(None, Some(d))))),
            }));
            exprs.push(json!({
                "expr": q(&total, &all), "eval_time": eval_time,
                "exp_samples": [sample(&[], n(None, None))],
            }));
            counted += n(None, None);
            let mut marks = Vec::new();
            for namespace in ["a", "b"] {
                for d in ["up", "down"] {
                    let c = n(Some(namespace), Some(d));
                    if c > 0 {
                        let labels = [
                            ("namespace", namespace),
                            ("scaledtarget", "worker"),
                            ("direction", d),
                        ];
                        marks.push(sample(&labels, c));
                    }
                }
            }
            exprs.push(
                json!({ "expr": q(&actions, &all), "eval_time": eval_time, "exp_samples": marks }),
            );
            let took_over = (HANDOVER + 1) * SCRAPE;
            let changed = if took_over + step > t && took_over <= t {
                vec![sample(&[("identity", "ebb-1")], 1)]
            } else {
                vec![]
            };
            exprs.push(
                json!({ "expr": q(&leader, &all), "eval_time": eval_time, "exp_samples": changed }),
            );
        }
        // One row per namespace/name; the row of a/worker shows a's series only.
        let row_a = [all.as_slice(), &[("$target_key", "a/worker")]].concat();
        let at = format!("{}s", 20 * SCRAPE);
        exprs.push(json!({
            "expr": q(&keys, &all), "eval_time": at,
            "exp_samples": (["a", "b"].map(|n| sample(&[("key", &format!("{n}/worker")), ("namespace", n), ("scaledtarget", "worker")], 1))),
        }));
        exprs.push(json!({
            "expr": q(&replicas, &row_a), "eval_time": at,
            "exp_samples": ([("current", 3), ("desired", 4)].map(|(k, v)| sample(&[("namespace", "a"), ("scaledtarget", "worker"), ("kind", k)], v))),
        }));
        exprs.push(json!({
            "expr": q(&mode, &row_a), "eval_time": at,
            "exp_samples": [sample(&[("namespace", "a"), ("scaledtarget", "worker"), ("mode", "Direct"), ("target", "Deployment/worker")], 1)],
        }));
        tests.push(json!({
            "name": format!("step {step}s, scrape {SCRAPE}s"),
            "interval": format!("{SCRAPE}s"),
            "input_series": input_series(),
            "promql_expr_test": exprs,
        }));
    }
    let events: u32 = ACTIONS.iter().map(|a| a.count).sum();
    assert_eq!(counted, 2 * events, "each step size sees every action once");

    // JSON is YAML.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, "groups: []\n").unwrap();
    let file = dir.path().join("dashboards.test.yml");
    let doc = json!({ "rule_files": [rules], "evaluation_interval": "15s", "tests": tests });
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian package prometheus: scripts/install-packages.sh)");
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let keep = std::env::temp_dir().join("ebb-dashboards.test.yml");
        let _ = std::fs::copy(&file, &keep);
        panic!(
            "promtool test rules failed ({} kept):\n{report}",
            keep.display()
        );
    }
    assert!(report.contains("SUCCESS"), "{report}");
}
