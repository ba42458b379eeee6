//! A scale-up whose pods cannot start, on the local stack (the real scheduler, kwok's node):
//! the node is tainted so that new pods stay Pending as on a full cluster. ebb finds the
//! scale-up stalled once the budget from the startup delay it learned from the workload's own
//! pods is over, names the pattern with the scheduler's words (condition and Event), adds no
//! replicas however high the load goes, and resumes by itself when the taint goes.

mod controller_common;
mod support;

use std::time::{Duration, Instant};

use controller_common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::{eventually, shared_stack};

const TAINT: &str = "ebb.dev/test-full";

async fn push_load(ns: &str, value: f64) {
    let prometheus = shared_stack().prometheus.as_ref().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    prometheus
        .push(
            &[("__name__", "ebb_stall_load"), ("job", ns)],
            &[(now, value)],
        )
        .await
        .unwrap();
}

/// Taints kwok's node NoSchedule (pods already there stay), or lifts the taint.
async fn set_full(client: &kube::Client, full: bool) {
    let taints = if full {
        json!([{ "key": TAINT, "value": "true", "effect": "NoSchedule" }])
    } else {
        json!([])
    };
    Api::<Node>::all(client.clone())
        .patch(
            ebb::localstack::kube::NODE_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "taints": taints } })),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_scale_up_onto_a_full_cluster_is_named_held_and_resumes_when_room_returns() {
    let (client, ns) = setup("stalled").await;
    // Five pods start on kwok's node: five starts to learn the startup delay from.
    deployment(&client, &ns, "worker", 5).await;
    push_load(&ns, 50.0).await;
    let prometheus = shared_stack().prometheus.as_ref().unwrap().url();
    scaled_target(
        &client,
        &ns,
        json!({
            "apiVersion": "ebb.dev/v1alpha1",
            "kind": "ScaledTarget",
            "metadata": { "name": "worker" },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
                "mode": "Direct",
                "minReplicas": 1,
                "maxReplicas": 20,
                "pollingInterval": "1s",
                "metrics": [{
                    "name": "load",
                    "prometheus": { "address": prometheus, "query": format!("sum(ebb_stall_load{{job=\"{ns}\"}})") },
                    "target": { "type": "AverageValue", "averageValue": "10" }
                }]
            }
        }),
    )
    .await;
    let _controller = start_controller(client.clone(), &ns);
    eventually(
        60 * SECOND,
        "pods watched, every scale-up Ready",
        || async {
            status_condition(&client, &ns, "worker", "ScalingStalled")
                .await
                .filter(|c| c.status == "False" && c.reason == "ScaleUpsReady")
        },
    )
    .await;

    set_full(&client, true).await;
    push_load(&ns, 100.0).await;
    eventually(30 * SECOND, "the scale-up to 10", || async {
        (replicas(&client, &ns, "worker").await == 10).then_some(())
    })
    .await;
    let scaled = Instant::now();
    let stalled = eventually(90 * SECOND, "ScalingStalled=True Unschedulable", || async {
        status_condition(&client, &ns, "worker", "ScalingStalled")
            .await
            .filter(|c| c.status == "True")
    })
    .await;
    let after = scaled.elapsed();
    eprintln!("stalled after {after:?}: {}", stalled.message);
    assert_eq!(stalled.reason, "Unschedulable");
    assert!(
        stalled.message.contains("5 of 10 pods not Ready"),
        "{}",
        stalled.message
    );
    assert!(
        stalled.message.contains("untolerated taint"),
        "{}",
        stalled.message
    );
    // The budget is the learned delay times 2, at least 30 s: not before.
    assert!(after >= Duration::from_secs(28), "stalled after {after:?}");
    let events = events(&client, &ns, "ScalingStalled").await;
    assert_eq!(events.len(), 1, "{events:?}");

    // The load asks for 20: nothing is added while the cluster is full, nothing taken away.
    push_load(&ns, 200.0).await;
    for _ in 0..16 {
        assert_eq!(replicas(&client, &ns, "worker").await, 10, "held at 10");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Room again: the pods start, the stall clears, and ebb scales on by itself.
    set_full(&client, false).await;
    eventually(60 * SECOND, "ScaleUpsReady again", || async {
        status_condition(&client, &ns, "worker", "ScalingStalled")
            .await
            .filter(|c| c.status == "False")
    })
    .await;
    eventually(60 * SECOND, "up to 20 once pods start", || async {
        (replicas(&client, &ns, "worker").await == 20).then_some(())
    })
    .await;
}
