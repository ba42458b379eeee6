//! A composite metric (`spec.formula`) scales a workload, on the real control plane with the
//! real HPA controller, Prometheus and `ebb serve`: in both modes the formula decides (not
//! the highest of its inputs), an input without data gives the formula no value (held, never
//! read as 0), and a formula that does not parse is reported with where.

mod controller_common;
mod support;

use std::time::Duration;

use controller_common::*;
use ebb::crd::ScaledTarget;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::Api;
use serde_json::{Value, json};
use support::{ebb_serve, eventually, shared_stack};

/// Pushes `value` now for series `name` of namespace `ns`.
async fn push(ns: &str, name: &str, value: f64) {
    let prometheus = shared_stack().prometheus.as_ref().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    prometheus
        .push(&[("__name__", name), ("job", ns)], &[(now, value)])
        .await
        .unwrap();
}

/// `worker` scaled on `orders + 2 * refunds` at 10 per replica; each input alone has a target
/// that would ask for fewer replicas than the formula.
fn formula_target(ns: &str, mode: &str, expression: &str) -> Value {
    let prometheus = shared_stack().prometheus.as_ref().unwrap().url();
    let metric = |name: &str, series: &str| {
        json!({
            "name": name,
            "prometheus": { "address": prometheus, "query": format!("sum({series}{{job=\"{ns}\"}})") },
            "target": { "type": "AverageValue", "averageValue": "10" }
        })
    };
    // The shared builder's target (mode, 1 s, up to 10), with two inputs and the formula.
    let mut object = prometheus_target(mode, 10, &prometheus, "unused");
    let spec = &mut object["spec"];
    spec["metrics"] = json!([
        metric("orders", "ebb_formula_orders"),
        metric("card-refunds", "ebb_formula_refunds")
    ]);
    spec["formula"] = json!({
        "name": "work",
        "expression": expression,
        "target": { "type": "AverageValue", "averageValue": "10" }
    });
    spec["behavior"] = json!({ "scaleDown": { "stabilizationWindowSeconds": 0 } });
    object
}

async fn formula_scales(mode: &'static str) {
    let (client, ns) = setup(&format!("formula-{}", mode.to_lowercase())).await;
    deployment(&client, &ns, "worker", 1).await;
    push(&ns, "ebb_formula_orders", 20.0).await;
    push(&ns, "ebb_formula_refunds", 5.0).await;
    scaled_target(
        &client,
        &ns,
        formula_target(&ns, mode, "orders + 2 * card_refunds"),
    )
    .await;
    // 20 + 2 * 5 = 30 at 10 per replica: 3 (the inputs alone would ask for 2 and 1).
    eventually(
        60 * SECOND,
        &format!("{mode}: 3 replicas for a formula of 30"),
        || async { (replicas(&client, &ns, "worker").await == 3).then_some(()) },
    )
    .await;
    // Status is written off the decision path: it lands shortly after the move.
    let sts = Api::<ScaledTarget>::namespaced(client.clone(), &ns);
    let expected = [
        ("orders".to_string(), Some("20".to_string())),
        ("card-refunds".to_string(), Some("5".to_string())),
        ("work".to_string(), Some("30".to_string())),
    ];
    let deadline = std::time::Instant::now() + 10 * SECOND;
    loop {
        let shown: Vec<(String, Option<String>)> = sts
            .get("worker")
            .await
            .ok()
            .and_then(|st| st.status)
            .map(|status| {
                status
                    .metrics
                    .iter()
                    .map(|m| (m.name.clone(), m.value.as_ref().map(|q| q.0.clone())))
                    .collect()
            })
            .unwrap_or_default();
        if shown == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{mode}: status shows {shown:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    if mode == "Hpa" {
        let hpa = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
            .get("ebb-worker")
            .await
            .unwrap();
        let names: Vec<String> = hpa
            .spec
            .metrics
            .unwrap_or_default()
            .iter()
            .filter_map(|m| Some(m.external.as_ref()?.metric.name.clone()))
            .collect();
        assert_eq!(names, ["work"], "the owned HPA reads the formula alone");
    }

    push(&ns, "ebb_formula_refunds", 20.0).await;
    eventually(
        60 * SECOND,
        &format!("{mode}: 6 replicas for 60"),
        || async { (replicas(&client, &ns, "worker").await == 6).then_some(()) },
    )
    .await;

    // The refunds series goes away (a query with no data): the formula has no value and the
    // count holds, with the input named in status.
    push(&ns, "ebb_formula_refunds", f64::NAN).await;
    let error = eventually(30 * SECOND, "the formula reports no value", || async {
        let status = sts.get("worker").await.ok()?.status?;
        status
            .metrics
            .iter()
            .find(|m| m.name == "work")
            .and_then(|m| m.error.clone())
    })
    .await;
    assert!(error.contains("input card-refunds"), "{error}");
    for _ in 0..10 {
        assert_eq!(replicas(&client, &ns, "worker").await, 6, "{mode}: held");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_formula_over_two_metrics_scales_the_workload_in_both_modes() {
    let stack = shared_stack();
    let _ebb = ebb_serve(stack.kube.as_ref().unwrap(), stack.dir(), "ebb-formula").await;
    tokio::join!(formula_scales("Hpa"), formula_scales("Direct"));
}

#[tokio::test]
async fn a_formula_that_does_not_parse_is_reported_where_and_scales_nothing() {
    let (client, ns) = setup("formula-bad").await;
    deployment(&client, &ns, "worker", 2).await;
    scaled_target(
        &client,
        &ns,
        formula_target(&ns, "Direct", "orders + (card_refunds"),
    )
    .await;
    let _controller = start_controller(client.clone(), &ns);
    let ready = eventually(30 * SECOND, "Ready=False InvalidFormula", || async {
        status_condition(&client, &ns, "worker", "Ready")
            .await
            .filter(|c| c.reason == "InvalidFormula")
    })
    .await;
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("line 1, column"),
        "the position: {}",
        ready.message
    );
    assert_eq!(replicas(&client, &ns, "worker").await, 2);
}
