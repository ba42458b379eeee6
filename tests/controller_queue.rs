//! A queue scaled on its work (target type DrainTime) against the real control plane and
//! RabbitMQ: simulated workers that each get through 10 msg/s (the demo's consumer, one share
//! per replica), a publisher at a steady rate, and ebb in mode Direct with a throughput guess
//! twice too high. ebb learns the real throughput from the queue's own statistics and settles
//! at the count the work needs, and stays there while the rate holds.

mod controller_common;
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use controller_common::*;
use ebb::crd::ScaledTarget;
use ebb::demo::load::{LoadCounters, consume};
use kube::api::Api;
use serde_json::json;
use support::{eventually, shared_stack};

/// Messages per second one simulated worker gets through.
const PER_WORKER: f64 = 10.0;
/// Messages published per second.
const RATE: f64 = 60.0;

#[tokio::test]
async fn a_queue_scales_on_its_work_learns_the_workers_throughput_and_holds_while_the_rate_holds() {
    let (client, ns) = setup("queue").await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-jobs");
    deployment(&client, &ns, "worker", 1).await;
    let st = json!({
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "ScaledTarget",
        "metadata": { "name": "worker" },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
            "mode": "Direct",
            "minReplicas": 1,
            "maxReplicas": 20,
            "pollingInterval": "2s",
            "metrics": [{
                "name": "jobs",
                "rabbitmq": { "connectionSecretRef": { "name": "rabbit" }, "queue": queue },
                // A guess twice too high: ebb must learn 10.
                "target": { "type": "DrainTime", "drainSeconds": 20, "throughputPerPod": "20" }
            }],
            "behavior": { "scaleDown": { "stabilizationWindowSeconds": 10 } }
        }
    });
    scaled_target(&client, &ns, st).await;
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 0).await; // declare

    // The workers: each replica of the Deployment serves PER_WORKER msg/s.
    let counters = Arc::new(LoadCounters::default());
    counters.worker_replicas.store(1, Ordering::Relaxed);
    let workers = tokio::spawn(consume(
        rabbit
            .connect()
            .await
            .unwrap()
            .create_channel()
            .await
            .unwrap(),
        queue.clone(),
        PER_WORKER,
        counters.clone(),
    ));
    let publisher = tokio::spawn({
        let channel = channel.clone();
        let queue = queue.clone();
        async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticks.tick().await;
                publish(&channel, &queue, (RATE / 10.0) as usize).await;
            }
        }
    });
    let _controller = start_controller(client.clone(), &ns);

    // Follow the replicas (the workers' count) until the learned throughput shows.
    let started = Instant::now();
    let mut history: Vec<(f64, i32)> = Vec::new();
    let mut learned = None;
    let st_api = Api::<ScaledTarget>::namespaced(client.clone(), &ns);
    // Samples come only while the pods are saturated and their count settled: 40 s alone and
    // 41 s beside two busy loops on 2 cores (2026-12-04).
    while started.elapsed() < Duration::from_secs(180) {
        let r = replicas(&client, &ns, "worker").await;
        counters.worker_replicas.store(r, Ordering::Relaxed);
        if history.last().is_none_or(|&(_, c)| c != r) {
            history.push((started.elapsed().as_secs_f64(), r));
        }
        let status = st_api.get("worker").await.unwrap().status;
        learned = status
            .and_then(|s| s.metrics.first()?.learned_target.clone())
            .map(|q| ebb::crd::milli_value(&q.0).unwrap() as f64 / 1000.0);
        if learned.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let Some(learned) = learned else {
        let trail = audit_trail(&client, &ns).await;
        panic!("no throughput learned: {history:?}; ebb's Events:{trail}");
    };
    eprintln!(
        "learned {learned} msg/s per pod after {:?}; replicas {history:?}",
        started.elapsed()
    );
    assert!(
        (8.0..=12.0).contains(&learned),
        "learned {learned} msg/s per pod, the workers do 10"
    );
    eventually(
        5 * SECOND,
        "a LearnedChanged Event about the throughput",
        || async {
            events(&client, &ns, "LearnedChanged")
                .await
                .iter()
                .any(|e| {
                    e.note
                        .as_deref()
                        .unwrap_or("")
                        .contains("throughput per pod")
                })
                .then_some(())
        },
    )
    .await;

    // Then the count the work needs: 60 msg/s at 10 each is 6 (7 while a backlog drains),
    // reached and held while the rate holds: no scale-down to what the (near empty) backlog
    // alone would ask for.
    let settle = Instant::now();
    eventually(90 * SECOND, "6 or 7 workers", || async {
        let r = replicas(&client, &ns, "worker").await;
        counters.worker_replicas.store(r, Ordering::Relaxed);
        (6..=7).contains(&r).then_some(())
    })
    .await;
    eprintln!("settled after {:?}", settle.elapsed());
    let mut held = Vec::new();
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(20) {
        let r = replicas(&client, &ns, "worker").await;
        counters.worker_replicas.store(r, Ordering::Relaxed);
        held.push(r);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if !held.iter().all(|r| (6..=8).contains(r)) {
        let trail = audit_trail(&client, &ns).await;
        panic!("held at the work's count while the rate held: {held:?}; ebb's Events:{trail}");
    }
    let backlog = backlog(rabbit, &queue).await.unwrap();
    assert!(
        (backlog as f64) < RATE * 20.0,
        "the backlog drains within drainSeconds of the rate: {backlog}"
    );
    publisher.abort();
    workers.abort();
    purge(rabbit, &queue).await;
}

/// The rule is not RabbitMQ's: a Prometheus backlog (say Kafka lag through an exporter) with an
/// arrival-rate query, and no data from the rate is never read as no work.
#[tokio::test]
async fn a_prometheus_backlog_with_an_arrival_rate_scales_on_its_work() {
    let (client, ns) = setup("queue-prom").await;
    let prometheus = shared_stack().prometheus.as_ref().unwrap();
    deployment(&client, &ns, "consumer", 1).await;
    let series = |name: &str| format!("sum(last_over_time({name}{{job=\"{ns}\"}}[3s]))");
    let st = json!({
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "ScaledTarget",
        "metadata": { "name": "consumer" },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "consumer" },
            "mode": "Direct",
            "minReplicas": 1,
            "maxReplicas": 20,
            "pollingInterval": "1s",
            "metrics": [{
                "name": "lag",
                "prometheus": { "address": prometheus.url(), "query": series("ebb_q_lag") },
                "arrivalRate": { "address": prometheus.url(), "query": series("ebb_q_produced") },
                "target": { "type": "DrainTime", "drainSeconds": 60, "throughputPerPod": "5",
                            "learnThroughput": false }
            }],
            "behavior": { "scaleDown": { "stabilizationWindowSeconds": 0 } }
        }
    });
    scaled_target(&client, &ns, st).await;
    let _controller = start_controller(client.clone(), &ns);
    let push = |name: &'static str, v: f64| {
        let ns = ns.clone();
        async move {
            let labels = [("__name__", name), ("job", ns.as_str())];
            let now = chrono::Utc::now().timestamp_millis();
            prometheus.push(&labels, &[(now, v)]).await.unwrap();
        }
    };
    // 30 msg/s arriving and 600 behind: (30 + 600/60) / 5 = 8 pods.
    eventually(30 * SECOND, "8 consumers for 40 msg/s of work", || async {
        push("ebb_q_lag", 600.0).await;
        push("ebb_q_produced", 30.0).await;
        (replicas(&client, &ns, "consumer").await == 8).then_some(())
    })
    .await;
    // Caught up: the arrivals alone, 6.
    eventually(30 * SECOND, "6 consumers once the lag is gone", || async {
        push("ebb_q_lag", 0.0).await;
        push("ebb_q_produced", 30.0).await;
        (replicas(&client, &ns, "consumer").await == 6).then_some(())
    })
    .await;
    // The rate's series stops: no data, not zero work. The count holds.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        push("ebb_q_lag", 0.0).await;
        assert_eq!(replicas(&client, &ns, "consumer").await, 6);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let status = Api::<ScaledTarget>::namespaced(client.clone(), &ns)
        .get("consumer")
        .await
        .unwrap()
        .status
        .unwrap();
    assert!(
        status.metrics[0].value.is_none() && status.metrics[0].error.is_some(),
        "the work has no value without the rate: {:?}",
        status.metrics[0]
    );
}
