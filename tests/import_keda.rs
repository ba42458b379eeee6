//! `ebb import keda` as a user runs it: the built binary on tests/data/keda/orders.yaml.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use ebb::crd::ScaledTarget;
use serde::Deserialize as _;

const INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keda/orders.yaml");

fn ebb(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ebb runs");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn targets(stdout: &[u8]) -> Vec<ScaledTarget> {
    let text = std::str::from_utf8(stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(text)
        .map(|document| ScaledTarget::deserialize(document).expect("a ScaledTarget"))
        .collect()
}

#[test]
fn scaled_objects_become_scaled_targets_and_every_loss_is_listed() {
    let out = ebb(&["import", "keda", INPUT], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let targets = targets(&out.stdout);
    let names: Vec<_> = targets
        .iter()
        .map(|t| {
            (
                t.metadata.namespace.clone().unwrap(),
                t.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("orders".into(), "api".into()),
            ("orders".into(), "worker".into())
        ]
    );

    let api = &targets[0].spec;
    assert_eq!((api.min_replicas, api.max_replicas), (2, 20));
    let names: Vec<&str> = api.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["http-rate", "inflight"],
        "the cpu trigger is dropped"
    );
    // scalingModifiers: the formula over the trigger names, in ebb's syntax over the metrics'.
    let formula = api
        .formula
        .as_ref()
        .expect("scalingModifiers as spec.formula");
    assert_eq!(formula.name, "composite");
    assert_eq!(
        formula.expression,
        "inflight > 50 && http_rate > 5 ? max(http_rate, inflight / 2) : http_rate"
    );
    assert_eq!(formula.target.average_value.as_ref().unwrap().0, "20");
    assert_eq!(formula.activation, Some(5.0));
    formula.parse(&api.metrics).expect("a formula ebb takes");
    let prometheus = api.metrics[0].prometheus.as_ref().unwrap();
    assert_eq!(prometheus.tenant.as_deref(), Some("team-a"));
    assert_eq!(prometheus.timeout.as_deref(), Some("1500ms"));
    assert_eq!(
        prometheus.auth_secret_ref.as_ref().unwrap().name,
        "prometheus-credentials"
    );
    let worker = &targets[1].spec;
    let rabbitmq = worker.metrics[0].rabbitmq.as_ref().unwrap();
    assert_eq!(rabbitmq.measure, ebb::crd::Measure::Ready);
    assert_eq!(rabbitmq.connection_secret_ref.name, "rabbitmq-connection");
    assert_eq!(worker.cooldown_seconds, Some(120));

    for line in [
        "orders/api: triggers[1] (type cpu): ebb has no resource metrics",
        "orders/worker: triggers[1] (type kafka): no kafka source in ebb; dropped",
        "orders/worker: spec.fallback.behavior: KEDA's static fallback sets exactly 6 replicas",
        "orders/api: triggers[0] (type prometheus) authenticationRef (prometheus-auth parameter bearerToken): ebb reads fixed keys: Secret prometheus-credentials needs key bearerToken (KEDA reads key token)",
        "orders/api: spec.advanced.scalingModifiers.formula: \"inflight > 50 and http_rate > 5 ? max(http_rate, inflight / 2) : http_rate\" is written in ebb's syntax as \"inflight > 50 && http_rate > 5 ? max(http_rate, inflight / 2) : http_rate\"; note",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    // The CA's key is already ebb's name (ca.crt) and the RabbitMQ Secret's key `host` is read
    // as the AMQP URL: no line for them.
    assert!(!stderr.contains("parameter ca"), "{stderr}");
    assert!(!stderr.contains("rabbitmq-auth parameter host"), "{stderr}");
}

#[test]
fn check_exits_2_when_something_was_not_carried_and_0_when_all_was() {
    let lossy = ebb(&["import", "keda", "--check", INPUT], None);
    assert_eq!(
        lossy.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&lossy.stderr)
    );
    assert_eq!(
        targets(&lossy.stdout).len(),
        2,
        "--check still writes the conversion"
    );

    // From stdin; a trigger carried over whole (notes only).
    let clean = "apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: api, namespace: orders}
spec:
  scaleTargetRef: {name: api}
  triggers:
    - type: prometheus
      metadata: {serverAddress: 'http://prometheus:9090', query: up, threshold: '10'}
";
    let out = ebb(&["import", "keda", "--check", "-"], Some(clean));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(targets(&out.stdout).len(), 1);
}

#[test]
fn a_refused_object_exits_1_and_says_why() {
    let refused = "kind: ScaledObject
metadata: {name: api, namespace: orders}
spec:
  scaleTargetRef: {name: api}
  triggers:
    - type: prometheus
      metadata: {serverAddress: 'http://prometheus:9090', query: up, threshold: one}
";
    let out = ebb(&["import", "keda", "-"], Some(refused));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: orders/api: triggers[0] (type prometheus) metadata.threshold: \"one\" is not a number (KEDA refuses it too); not imported"),
        "{stderr}"
    );
}

/// A formula ebb cannot write as KEDA computes it (KEDA's docs' `count` example) refuses the
/// ScaledObject: without it the workload would scale on other numbers.
#[test]
fn a_formula_with_no_counterpart_refuses_its_object() {
    let refused = "kind: ScaledObject
metadata: {name: api, namespace: orders}
spec:
  scaleTargetRef: {name: api}
  advanced:
    scalingModifiers: {formula: 'count([trig_one,trig_two],{#>1}) > 1 ? 5 : 0', target: '2'}
  triggers:
    - {type: prometheus, name: trig_one, metadata: {serverAddress: 'http://prometheus:9090', query: up, threshold: '10'}}
    - {type: prometheus, name: trig_two, metadata: {serverAddress: 'http://prometheus:9090', query: up, threshold: '10'}}
";
    let out = ebb(&["import", "keda", "--check", "-"], Some(refused));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: orders/api: spec.advanced.scalingModifiers.formula: the function count() has no counterpart: ebb's formula has numbers, trigger names, + - * /, comparisons, and/or/not, ?:, min() and max(); not imported"),
        "{stderr}"
    );
}
