//! `/readyz` of a real `ebb serve` (deploy/'s RBAC, its APIService registered) with many
//! ScaledTargets: 503 until the ScaledTarget watch has listed and every target has had its
//! first reading, then 200, and from that moment the external metrics API answers for every
//! target: a value, or a failure (503) for a source with no data, one that refuses
//! connections, and one that never answers (bounded by the reader's first-read wait and the
//! query's timeout), never an empty list or a 404.

mod controller_common;
mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use controller_common::scaled_target;
use ebb::localstack::kube::ControlPlaneOptions;
use ebb::localstack::process::free_port;
use ebb::localstack::{StackOptions, workload};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::{ebb_serve_on, https_client, kubeconfig_identity, start_stack};

/// What a target's first reading is, and so what the API answers for it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Source {
    /// `vector(n)`: served as `n`.
    Value(u32),
    /// A query with no data.
    Empty,
    /// A Prometheus address nothing listens on.
    Refused,
    /// A Prometheus that accepts connections and never answers, with the query's timeout.
    Silent(&'static str),
}

/// Per namespace: the same names in both, so that one namespace's readings cannot stand in
/// for the other's.
fn targets() -> Vec<(String, Source)> {
    let mut t: Vec<(String, Source)> = (0..60)
        .map(|i| (format!("t-{i:03}"), Source::Value(i + 1)))
        .collect();
    t.extend((0..4).map(|i| (format!("empty-{i}"), Source::Empty)));
    t.extend((0..4).map(|i| (format!("refused-{i}"), Source::Refused)));
    // The default timeout (5 s), and one longer than the first-read wait (10 s).
    t.extend((0..4).map(|i| (format!("silent-{i}"), Source::Silent("5s"))));
    t.extend((0..4).map(|i| (format!("silent-long-{i}"), Source::Silent("60s"))));
    t
}

fn metric(source: Source, ns_index: u32, prometheus: &str, refused: &str, silent: &str) -> Value {
    let prom = |address: &str, query: String, timeout: Option<&str>| {
        let mut p = json!({ "address": address, "query": query });
        if let Some(t) = timeout {
            p["timeout"] = t.into();
        }
        p
    };
    let prometheus = match source {
        // Distinct queries per namespace: each is its own fetch.
        Source::Value(n) => prom(
            prometheus,
            format!("vector({n}) + {}", ns_index * 1000),
            None,
        ),
        Source::Empty => prom(prometheus, "sum(ebb_test_no_such_metric)".into(), None),
        Source::Refused => prom(refused, "vector(1)".into(), None),
        Source::Silent(t) => prom(silent, format!("vector(1) + {ns_index}"), Some(t)),
    };
    json!({
        "name": "load",
        "prometheus": prometheus,
        "target": { "type": "AverageValue", "averageValue": "10" }
    })
}

#[tokio::test]
async fn readyz_waits_for_a_first_reading_of_every_scaled_target() {
    let stack = start_stack(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: false,
            ..Default::default()
        }),
        prometheus: true,
        ..Default::default()
    });
    let kube = stack.kube.as_ref().unwrap();
    let client = kube.client().await.unwrap();
    ebb::crd::install(&client).await.unwrap();
    let prometheus = stack.prometheus.as_ref().unwrap().url();
    let refused = format!("http://127.0.0.1:{}", free_port());
    // Accepts connections and holds them without a word.
    let silent_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = format!("http://{}", silent_listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent_listener.incoming() {
            held.extend(conn.ok());
        }
    });

    let namespaces = ["ready-a", "ready-b"];
    let targets = targets();
    let mut creates = Vec::new();
    for (ns_index, ns) in namespaces.iter().enumerate() {
        kube.create_namespace(ns).await.unwrap();
        for (name, source) in &targets {
            let st = json!({
                "apiVersion": "ebb.dev/v1alpha1",
                "kind": "ScaledTarget",
                "metadata": { "name": name },
                "spec": {
                    "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
                    "mode": "Hpa",
                    "minReplicas": 1,
                    "maxReplicas": 5,
                    "metrics": [metric(*source, ns_index as u32, &prometheus, &refused, &silent)]
                }
            });
            let client = client.clone();
            creates.push(async move {
                Api::<Deployment>::namespaced(client.clone(), ns)
                    .create(&PostParams::default(), &workload(name, 1))
                    .await
                    .expect("create deployment");
                scaled_target(&client, ns, st).await;
            });
        }
    }
    futures::stream::iter(creates)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let total = namespaces.len() * targets.len();

    // /readyz from the moment ebb starts; at its first 200, every target's value at once.
    let api_port = free_port();
    let base = format!("https://127.0.0.1:{api_port}");
    let (cert, key) = kubeconfig_identity(
        &kube
            .kubeconfig_for("admin", Some("system:masters"))
            .unwrap(),
    );
    let admin = https_client(kube.ca_pem(), Some((&cert, &key)));
    let anonymous = https_client(kube.ca_pem(), None);
    let watch = tokio::spawn({
        let (base, targets) = (base.clone(), targets.clone());
        async move {
            let started = Instant::now();
            let mut unready = 0;
            loop {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "/readyz not 200 within 120 s ({unready} answers 503)"
                );
                match anonymous.get(format!("{base}/readyz")).send().await {
                    Ok(r) if r.status() == 200 => break,
                    Ok(r) => {
                        assert_eq!(r.status(), 503, "{:?}", r.text().await);
                        unready += 1;
                    }
                    Err(_) => {} // not listening yet
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (admin, base, targets) = (&admin, &base, &targets);
            let answers = futures::future::join_all(namespaces.iter().flat_map(|ns| {
                targets.iter().map(move |(name, source)| async move {
                    let url = format!(
                        "{base}/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/load\
                             ?labelSelector=ebb.dev%2Fscaledtarget%3D{name}"
                    );
                    let r = admin.get(url).send().await.expect("the API answers");
                    let code = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    (*ns, name.clone(), *source, code, body)
                })
            }))
            .await;
            (unready, started.elapsed(), answers)
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let ebb = ebb_serve_on(kube, dir.path(), "ebb-readiness-0", api_port).await;
    let (unready, after, answers) = match watch.await {
        Ok(r) => r,
        Err(e) => panic!("{e}\n--- ebb's log ---\n{}", ebb.log_tail(40)),
    };
    eprintln!("ready after {after:?} ({unready} answers 503 before), {total} ScaledTargets");
    assert!(unready > 0, "/readyz answered 200 from the start");
    assert_eq!(answers.len(), total);
    let mut wrong = Vec::new();
    for (ns, name, source, code, body) in &answers {
        let ns_index = namespaces.iter().position(|n| n == ns).unwrap() as u32;
        let ok = match source {
            Source::Value(n) => {
                let items = body["items"].as_array().cloned().unwrap_or_default();
                code == &200
                    && items.len() == 1
                    && items[0]["value"] == json!((n + ns_index * 1000).to_string())
            }
            // A definite failure: the HPA keeps the scale for this metric.
            _ => code == &503 && body["kind"] == "Status",
        };
        if !ok {
            wrong.push(format!("{ns}/{name} ({source:?}): {code} {body}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "at the first 200 of /readyz, {} of {total} targets answer wrongly:\n{}\n--- ebb's log ---\n{}",
        wrong.len(),
        wrong.join("\n"),
        ebb.log_tail(40)
    );
}
