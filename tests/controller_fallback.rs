//! Fallback, in mode Direct and in mode Hpa with the real HPA controller: Prometheus stopped
//! mid-run -> the Fallback condition, no scale-down, the fallback count if it is higher;
//! Prometheus back -> normal scaling again.

mod controller_common;
mod support;

use std::time::Duration;

use controller_common::*;
use ebb::localstack::StackOptions;
use ebb::localstack::kube::ControlPlaneOptions;
use ebb::localstack::prometheus::Prometheus;
use serde_json::json;
use support::{ebb_serve, eventually, stack_with_own_prometheus, start_stack, unique_namespace};

async fn push(prometheus: &Prometheus) {
    let now = chrono::Utc::now().timestamp_millis();
    prometheus
        .push(
            &[("__name__", "ebb_load"), ("service", "worker")],
            &[(now, 30.0)],
        )
        .await
        .unwrap();
}

/// A Deployment `worker` at 1 replica and its ScaledTarget in `mode`: load 30 from Prometheus
/// at AverageValue 10 (3 replicas), polled every second, fallback to 5 after 2 failed reads.
async fn worker_on_prometheus(
    client: &kube::Client,
    ns: &str,
    prometheus: &Prometheus,
    mode: &str,
) {
    deployment(client, ns, "worker", 1).await;
    push(prometheus).await;
    let address = prometheus.url();
    let mut target = prometheus_target(mode, 10, &address, "sum(ebb_load{service=\"worker\"})");
    target["spec"]["behavior"] = json!({ "scaleDown": { "stabilizationWindowSeconds": 0 } });
    target["spec"]["fallback"] = json!({ "failureThreshold": 2, "replicas": 5 });
    scaled_target(client, ns, target).await;
}

#[tokio::test]
async fn a_stopped_prometheus_means_fallback_and_no_scale_down_until_it_is_back() {
    // A private stack: this test stops its Prometheus.
    let mut stack = start_stack(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: false,
            ..Default::default()
        }),
        prometheus: true,
        scrape: Vec::new(),
        rabbitmq: false,
    });
    let client = stack.kube.as_ref().unwrap().client().await.unwrap();
    ebb::crd::install(&client).await.unwrap();
    let ns = unique_namespace("fallback");
    stack
        .kube
        .as_ref()
        .unwrap()
        .create_namespace(&ns)
        .await
        .unwrap();
    worker_on_prometheus(&client, &ns, stack.prometheus.as_ref().unwrap(), "Direct").await;
    let _controller = start_controller(client.clone(), &ns);
    eventually(20 * SECOND, "3 replicas for a load of 30", || async {
        (replicas(&client, &ns, "worker").await == 3).then_some(())
    })
    .await;
    // Status is written just after the `/scale` write it reports.
    eventually(5 * SECOND, "Fallback False in status", || async {
        let (status, _) = condition(&client, &ns, "worker", "Fallback").await?;
        (status == "False").then_some(())
    })
    .await;

    stack.prometheus.as_mut().unwrap().stop();
    // Every replica count seen from now on: never below 3.
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        seen.push(replicas(&client, &ns, "worker").await);
        if condition(&client, &ns, "worker", "Fallback")
            .await
            .is_some_and(|c| c.0 == "True")
            && seen.last() == Some(&5)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no fallback to 5: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen.iter().all(|&r| r >= 3),
        "scaled down while the source failed: {seen:?}"
    );
    let (_, reason) = condition(&client, &ns, "worker", "Fallback").await.unwrap();
    assert_eq!(reason, "SourcesFailing");
    let st: ebb::crd::ScaledTarget = kube::Api::namespaced(client.clone(), &ns)
        .get("worker")
        .await
        .unwrap();
    let metric = &st.status.unwrap().metrics[0];
    assert!(
        metric.value.is_none(),
        "a failed source reads as no value, not zero"
    );
    assert!(
        metric.error.as_deref().unwrap().contains("source failed"),
        "{metric:?}"
    );
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(
        replicas(&client, &ns, "worker").await,
        5,
        "held in fallback"
    );

    stack
        .prometheus
        .as_mut()
        .unwrap()
        .start_again()
        .await
        .unwrap();
    push(stack.prometheus.as_ref().unwrap()).await;
    eventually(30 * SECOND, "Fallback False and back to 3", || async {
        let (status, _) = condition(&client, &ns, "worker", "Fallback").await?;
        (status == "False" && replicas(&client, &ns, "worker").await == 3).then_some(())
    })
    .await;
}

/// Mode Hpa, with the real HPA controller reading a real `ebb serve`'s external metrics API:
/// when Prometheus stops, ebb serves values that make the HPA hold the count (or go to the
/// fallback count), never "no data" turned into a scale-down; when it is back, normal again
/// without flapping.
#[tokio::test]
async fn in_mode_hpa_a_stopped_prometheus_holds_the_real_hpa_and_recovers_without_flapping() {
    let mut stack = stack_with_own_prometheus();
    let kube = stack.kube.as_ref().unwrap();
    let client = kube.client().await.unwrap();
    let _ebb = ebb_serve(kube, stack.dir(), "ebb-fallback-hpa").await;
    let ns = unique_namespace("fallback-hpa");
    kube.create_namespace(&ns).await.unwrap();
    worker_on_prometheus(&client, &ns, stack.prometheus.as_ref().unwrap(), "Hpa").await;
    eventually(
        60 * SECOND,
        "the HPA scales to 3 for a load of 30",
        || async { (replicas(&client, &ns, "worker").await == 3).then_some(()) },
    )
    .await;

    stack.prometheus.as_mut().unwrap().stop();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        seen.push(replicas(&client, &ns, "worker").await);
        let fallback = condition(&client, &ns, "worker", "Fallback").await;
        if fallback.is_some_and(|c| c.0 == "True") && seen.last() == Some(&5) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the HPA did not go to the fallback count: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Held there by the HPA on ebb's values, sync after sync.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen.push(replicas(&client, &ns, "worker").await);
    }
    assert!(
        seen.iter().all(|&r| r >= 3),
        "the HPA scaled down while the source failed: {seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&5),
        "held at the fallback count: {seen:?}"
    );

    stack
        .prometheus
        .as_mut()
        .unwrap()
        .start_again()
        .await
        .unwrap();
    push(stack.prometheus.as_ref().unwrap()).await;
    eventually(
        60 * SECOND,
        "Fallback False and the HPA back to 3",
        || async {
            let (status, _) = condition(&client, &ns, "worker", "Fallback").await?;
            (status == "False" && replicas(&client, &ns, "worker").await == 3).then_some(())
        },
    )
    .await;
    // No flapping: it stays at 3.
    let mut after = Vec::new();
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after.push(replicas(&client, &ns, "worker").await);
    }
    assert!(
        after.iter().all(|&r| r == 3),
        "flapped after recovery: {after:?}"
    );
}
