//! Scale to and from zero on the real control plane (with its HPA controller), RabbitMQ and
//! Prometheus, `ebb serve` running as in a cluster: in both modes a queue that empties takes its
//! workload to zero only after the cooldown, a message wakes it to 1 (in mode Hpa the HPA then
//! takes it up: ebb writes only the moves to and from zero), and a Prometheus that stops while
//! one target sits at zero and another is busy wakes nothing and scales nothing down.

mod controller_common;
mod support;

use std::time::{Duration, Instant};

use controller_common::*;
use serde_json::{Value, json};
use support::{ebb_serve, eventually, shared_stack, stack_with_own_prometheus, unique_namespace};

const COOLDOWN_SECONDS: u64 = 5;

/// `object` (a ScaledTarget) allowed to scale to zero after a short cooldown.
fn to_zero(mut object: Value) -> Value {
    object["spec"]["minReplicas"] = json!(0);
    object["spec"]["cooldownSeconds"] = json!(COOLDOWN_SECONDS);
    object
}

/// Replicas of `name` sampled every 200 ms for `window`.
async fn sampled(client: &kube::Client, ns: &str, name: &str, window: Duration) -> Vec<i32> {
    let until = Instant::now() + window;
    let mut seen = Vec::new();
    while Instant::now() < until {
        seen.push(replicas(client, ns, name).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}

/// One mode's run on the shared stack: 30 messages (3 replicas), emptied (0 after the
/// cooldown, and left there by the HPA), one message (1), 60 messages (up to 6 by the HPA in
/// mode Hpa, by ebb in mode Direct).
async fn queue_to_zero_and_back(mode: &'static str) {
    let (client, ns) = setup(&format!("zero-{}", mode.to_lowercase())).await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-jobs");
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 30).await;
    deployment(&client, &ns, "worker", 1).await;
    scaled_target(
        &client,
        &ns,
        to_zero(backlog_target("worker", &queue, mode, 10, "1s")),
    )
    .await;
    eventually(90 * SECOND, "3 replicas for a backlog of 30", || async {
        (replicas(&client, &ns, "worker").await == 3).then_some(())
    })
    .await;

    purge(rabbit, &queue).await;
    let emptied = Instant::now();
    eventually(60 * SECOND, "zero replicas after the cooldown", || async {
        (replicas(&client, &ns, "worker").await == 0).then_some(())
    })
    .await;
    let quiet = emptied.elapsed();
    eprintln!("{mode}: at zero {quiet:?} after the queue emptied");
    // The cooldown counts from the last reading above the activation, at most one poll (1 s)
    // after the purge.
    assert!(
        quiet >= Duration::from_secs(COOLDOWN_SECONDS - 1),
        "{mode}: zero after {quiet:?}, within the {COOLDOWN_SECONDS} s cooldown"
    );
    // Events are queued off the decision path: the move's Event lands shortly after the move.
    scaled_event_saying(&client, &ns, " to 0 ", 10 * SECOND).await;
    // Left at zero: the HPA (minReplicas 1) does not scale a workload at 0.
    let held = sampled(&client, &ns, "worker", 5 * SECOND).await;
    assert!(held.iter().all(|&r| r == 0), "{mode}: left zero: {held:?}");
    let (active, reason) = condition(&client, &ns, "worker", "Active").await.unwrap();
    assert_eq!(
        (active.as_str(), reason.as_str()),
        ("False", "BelowActivation")
    );

    publish(&channel, &queue, 1).await;
    let sent = Instant::now();
    eventually(30 * SECOND, "woken to 1 by one message", || async {
        (replicas(&client, &ns, "worker").await == 1).then_some(())
    })
    .await;
    eprintln!("{mode}: woken {:?} after one message", sent.elapsed());
    publish(&channel, &queue, 59).await;
    eventually(90 * SECOND, "6 replicas for a backlog of 60", || async {
        (replicas(&client, &ns, "worker").await == 6).then_some(())
    })
    .await;
    let (active, reason) = condition(&client, &ns, "worker", "Active").await.unwrap();
    assert_eq!(
        (active.as_str(), reason.as_str()),
        ("True", "AboveActivation")
    );
    if mode == "Hpa" {
        // The HPA took it from 1 to 6; ebb's own writes were the moves to and from zero.
        let hpa =
            kube::Api::<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler>::namespaced(
                client.clone(),
                &ns,
            )
            .get("ebb-worker")
            .await
            .unwrap();
        assert_eq!(hpa.spec.min_replicas, Some(1), "the HPA cannot hold 0");
        let notes: Vec<String> = events(&client, &ns, "Scaled")
            .await
            .into_iter()
            .filter_map(|e| e.note)
            .collect();
        assert!(
            notes
                .iter()
                .all(|n| n.contains(" to 0 ") || n.contains("from 0 to 1 ")),
            "ebb scaled besides 0 <-> 1 in mode Hpa: {notes:?}"
        );
    }
}

#[tokio::test]
async fn a_queue_goes_to_zero_after_its_cooldown_and_a_message_wakes_it_in_both_modes() {
    let stack = shared_stack();
    let _ebb = ebb_serve(stack.kube.as_ref().unwrap(), stack.dir(), "ebb-zero").await;
    tokio::join!(
        queue_to_zero_and_back("Hpa"),
        queue_to_zero_and_back("Direct")
    );
}

#[tokio::test]
async fn a_prometheus_that_stops_wakes_no_target_at_zero_and_scales_no_busy_one_down() {
    let mut stack = stack_with_own_prometheus();
    let kube = stack.kube.as_ref().unwrap();
    let client = kube.client().await.unwrap();
    let _ebb = ebb_serve(kube, stack.dir(), "ebb-zero-prometheus").await;
    let ns = unique_namespace("zero-prometheus");
    kube.create_namespace(&ns).await.unwrap();
    let prometheus = stack.prometheus.as_ref().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    for (service, value) in [("idle", 0.0), ("busy", 30.0)] {
        prometheus
            .push(
                &[("__name__", "ebb_zero_load"), ("service", service)],
                &[(now, value)],
            )
            .await
            .unwrap();
        deployment(&client, &ns, service, 1).await;
        let target = to_zero(json!({
            "apiVersion": "ebb.dev/v1alpha1",
            "kind": "ScaledTarget",
            "metadata": { "name": service },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": service },
                "mode": "Hpa",
                "maxReplicas": 10,
                "pollingInterval": "1s",
                "metrics": [{
                    "name": "load",
                    "prometheus": {
                        "address": prometheus.url(),
                        "query": format!("sum(ebb_zero_load{{service=\"{service}\"}})")
                    },
                    "target": { "type": "AverageValue", "averageValue": "10" }
                }],
                "fallback": { "failureThreshold": 2, "replicas": 5 }
            }
        }));
        scaled_target(&client, &ns, target).await;
    }
    eventually(90 * SECOND, "idle at 0 and busy at 3", || async {
        (replicas(&client, &ns, "idle").await == 0 && replicas(&client, &ns, "busy").await == 3)
            .then_some(())
    })
    .await;

    stack.prometheus.as_mut().unwrap().stop();
    eventually(30 * SECOND, "fallback on both", || async {
        let idle = condition(&client, &ns, "idle", "Fallback").await?;
        let busy = condition(&client, &ns, "busy", "Fallback").await?;
        (idle.0 == "True" && busy.0 == "True").then_some(())
    })
    .await;
    // Fallback holds the busy one (at least its count, the fallback count at most) and wakes
    // nothing at zero: no evidence of load is not load, and no wake-up storm.
    let idle = sampled(&client, &ns, "idle", 8 * SECOND).await;
    let busy = sampled(&client, &ns, "busy", SECOND).await;
    assert!(
        idle.iter().all(|&r| r == 0),
        "woken without a reading: {idle:?}"
    );
    assert!(
        busy.iter().all(|&r| r >= 3),
        "scaled down on no data: {busy:?}"
    );
    let (_, reason) = condition(&client, &ns, "idle", "Active").await.unwrap();
    assert_eq!(reason, "ActivityUnknown");
}
