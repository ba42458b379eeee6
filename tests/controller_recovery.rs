//! After an API server outage: targets whose polls failed all through it, and so backed off
//! further and further (up to a minute), are polled again as soon as the server answers, not
//! when their backoff ends. On a control plane of its own (the test restarts its API server).

mod controller_common;
mod support;

use std::time::Duration;

use controller_common::*;
use ebb::controller::errors::TRANSIENT_CAP;
use ebb::engine::conditions as cond;
use ebb::localstack::prometheus::Prometheus;
use ebb::source::SecretAccess;
use serde_json::json;
use support::{eventually, stack_with_own_prometheus, unique_namespace};

const TARGETS: usize = 6;

async fn load(prometheus: &Prometheus, value: f64) {
    let now = chrono::Utc::now().timestamp_millis();
    prometheus
        .push(&[("__name__", "ebb_recovery_load")], &[(now, value)])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_that_backed_off_through_an_api_server_outage_resume_when_it_answers() {
    // The controller's log goes with the test's output (shown when it fails).
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ebb=info,kube_runtime=warn")
        .with_test_writer()
        .try_init();
    let mut stack = stack_with_own_prometheus();
    let kube = stack.kube.as_ref().unwrap();
    let client = kube.client().await.unwrap();
    ebb::crd::install(&client).await.unwrap();
    let ns = unique_namespace("recovery");
    kube.create_namespace(&ns).await.unwrap();
    let prometheus = stack.prometheus.as_ref().unwrap();
    load(prometheus, 10.0).await;
    let names: Vec<String> = (0..TARGETS).map(|i| format!("w{i}")).collect();
    for name in &names {
        deployment(&client, &ns, name, 1).await;
        let mut target =
            prometheus_target("Direct", 10, &prometheus.url(), "sum(ebb_recovery_load)");
        target["metadata"]["name"] = json!(name);
        target["spec"]["targetRef"]["name"] = json!(name);
        scaled_target(&client, &ns, target).await;
    }
    let controller = start_controller_with(client.clone(), &ns, SecretAccess::Any);
    for name in &names {
        eventually(60 * SECOND, &format!("{name} Ready"), || async {
            let c = status_condition(&client, &ns, name, cond::READY).await?;
            (c.status == "True").then_some(())
        })
        .await;
    }

    // The load rises a moment into an outage of 35 s: every target wants 5 replicas, and each
    // try to write them fails while the server is down, so its backoff grows to 16 to 32 s.
    let prometheus = stack.prometheus.as_ref().unwrap();
    let kube = stack.kube.as_mut().unwrap();
    let (restarted, ()) = tokio::join!(kube.restart_apiserver(Duration::from_secs(35)), async {
        tokio::time::sleep(3 * SECOND).await;
        load(prometheus, 50.0).await;
    });
    restarted.unwrap();
    let back = tokio::time::Instant::now();
    let failed = controller
        .metrics
        .reconcile_errors("transient", cond::API_UNAVAILABLE);
    assert!(
        failed >= 4 * TARGETS as u64,
        "the outage did not make every target back off: {failed} transient failures"
    );

    // The probe finds the server ready within a few of its periods and hands the targets back
    // (a target whose own retry came first, between the server's return and the probe, is not
    // counted). Without it none would be, and each would wait out the rest of its backoff.
    eventually(30 * SECOND, "targets resumed by the probe", || async {
        (controller.metrics.resumed_after_outage_count() > 0).then_some(())
    })
    .await;
    let resumed = tokio::time::Instant::now();
    eprintln!(
        "resumed {:.1} s after the API server answered",
        (resumed - back).as_secs_f64()
    );
    // Resumed, each is scaled within a few polls.
    let within = 20 * SECOND;
    assert!(within < TRANSIENT_CAP / 2);
    for name in &names {
        let left = within.saturating_sub(resumed.elapsed());
        eventually(
            left,
            &format!("{name} scaled to 5 once resumed"),
            || async { (replicas(&client, &ns, name).await == 5).then_some(()) },
        )
        .await;
    }
}
