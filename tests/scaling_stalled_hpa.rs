//! Mode Hpa: a scale-up the real HPA controller makes onto a full cluster (kwok's node tainted
//! NoSchedule, on a stack of this binary's own), with a real `ebb serve`: ebb finds it stalled,
//! serves values on which the HPA adds nothing however high the load goes, pages with the
//! diagnosis in the webhook's body, and lets the HPA go on once there is room again.

mod controller_common;
mod support;

use std::time::Duration;

use controller_common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{ebb_serve, eventually, stack_with_own_prometheus};

#[tokio::test]
async fn the_hpa_adds_nothing_onto_a_full_cluster_and_the_page_says_why() {
    let stack = stack_with_own_prometheus();
    let kube = stack.kube.as_ref().unwrap();
    let client = kube.client().await.unwrap();
    let prometheus = stack.prometheus.as_ref().unwrap();
    let _ebb = ebb_serve(kube, stack.dir(), "ebb-stalled-hpa").await;
    let ns = "stalled-hpa";
    kube.create_namespace(ns).await.unwrap();
    let push = |value: f64| async move {
        let now = chrono::Utc::now().timestamp_millis();
        prometheus
            .push(&[("__name__", "ebb_stall_hpa_load")], &[(now, value)])
            .await
            .unwrap();
    };
    let (url, calls) = webhook().await;
    secret(&client, ns, "pager", json!({ "url": url })).await;
    deployment(&client, ns, "worker", 5).await;
    push(50.0).await;
    let mut target = prometheus_target("Hpa", 20, &prometheus.url(), "sum(ebb_stall_hpa_load)");
    target["spec"]["escalation"] =
        json!({ "webhookSecretRef": { "name": "pager" }, "minInterval": "10m" });
    scaled_target(&client, ns, target).await;
    eventually(
        60 * SECOND,
        "pods watched, every scale-up Ready",
        || async {
            status_condition(&client, ns, "worker", "ScalingStalled")
                .await
                .filter(|c| c.status == "False")
        },
    )
    .await;

    let nodes = Api::<Node>::all(client.clone());
    let taint = |taints: Value| {
        let nodes = nodes.clone();
        async move {
            nodes
                .patch(
                    ebb::localstack::kube::NODE_NAME,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "spec": { "taints": taints } })),
                )
                .await
                .unwrap();
        }
    };
    taint(json!([{ "key": "ebb.dev/test-full", "value": "true", "effect": "NoSchedule" }])).await;
    push(100.0).await;
    eventually(30 * SECOND, "the HPA scales to 10", || async {
        (replicas(&client, ns, "worker").await == 10).then_some(())
    })
    .await;
    let stalled = eventually(90 * SECOND, "ScalingStalled=True", || async {
        status_condition(&client, ns, "worker", "ScalingStalled")
            .await
            .filter(|c| c.status == "True")
    })
    .await;
    assert_eq!(stalled.reason, "Unschedulable", "{}", stalled.message);

    // The load asks for 20; the HPA reads values that ask for no more than 10.
    push(200.0).await;
    for _ in 0..16 {
        assert_eq!(
            replicas(&client, ns, "worker").await,
            10,
            "the HPA added replicas"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let page = eventually(20 * SECOND, "the page", || async {
        calls.lock().unwrap().first().map(|c| c.body.clone())
    })
    .await;
    assert_eq!(page["reason"], "ScalingStalled", "{page}");
    assert_eq!(page["stall"]["pattern"], "Unschedulable", "{page}");
    assert_eq!(
        (&page["stall"]["wanted"], &page["stall"]["notReady"]),
        (&json!(10), &json!(5)),
        "{page}"
    );
    assert_eq!(page["stall"]["pods"].as_array().unwrap().len(), 5, "{page}");
    assert!(
        page["tried"][0]
            .as_str()
            .is_some_and(|t| t.contains("stopped adding replicas at 10")),
        "{page}"
    );

    taint(json!([])).await;
    eventually(
        60 * SECOND,
        "the HPA goes on to 20 once pods start",
        || async { (replicas(&client, ns, "worker").await == 20).then_some(()) },
    )
    .await;
    assert_eq!(
        calls.lock().unwrap().len(),
        1,
        "one page per pattern per minInterval"
    );
}
