//! Escalation off the decision path, on the real control plane and RabbitMQ: a pager webhook
//! (a small HTTP server of the test's own on loopback) that answers 500, or that hangs, does
//! not hold up the polls (they keep their 1 s schedule), and its calls back off instead of
//! coming once per poll.

mod controller_common;
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use controller_common::*;
use ebb::controller::Context;
use ebb::controller::metrics::ControllerMetrics;
use serde_json::json;
use support::{eventually, shared_stack};

/// The controller on `ns` as the only replica, with its context and metrics, once it has
/// scaled the target of [`escalating_target`] to its maximum and called the webhook once.
async fn start_until_first_call(
    client: &kube::Client,
    ns: &str,
    calls: &Calls,
) -> (Arc<Context>, ControllerMetrics) {
    let c = start_controller_with(client.clone(), ns, ebb::source::SecretAccess::Any);
    eventually(20 * SECOND, "at maxReplicas 2", || async {
        (replicas(client, ns, "worker").await == 2).then_some(())
    })
    .await;
    eventually(10 * SECOND, "a first webhook call", || async {
        (!calls.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    (c.ctx, c.metrics)
}

/// A Direct target polled every second, pinned at maxReplicas 2 by a backlog that asks for 10,
/// escalating with `minInterval: 0s`: the decision machine asks on every poll.
async fn escalating_target(client: &kube::Client, ns: &str, url: &str, secret_extra: &str) {
    let mut data = json!({ "url": url });
    if !secret_extra.is_empty() {
        data["timeoutSeconds"] = json!(secret_extra);
    }
    secret(client, ns, "pager", data).await;
    let queue = format!("{ns}-q");
    let (_conn, channel) = channel(shared_stack().rabbitmq.as_ref().unwrap()).await;
    publish(&channel, &queue, 100).await;
    deployment(client, ns, "worker", 1).await;
    let mut st = backlog_target("worker", &queue, "Direct", 2, "1s");
    st["spec"]["escalation"] =
        json!({ "webhookSecretRef": { "name": "pager" }, "minInterval": "0s" });
    scaled_target(client, ns, st).await;
}

/// Polls over `window` while the webhook misbehaves: about one a second.
async fn polls_keep_their_schedule(ctx: &Context, window: Duration) {
    let before = ctx.stats.polls.load(Relaxed);
    tokio::time::sleep(window).await;
    let polls = ctx.stats.polls.load(Relaxed) - before;
    let expected = window.as_secs();
    assert!(
        polls + 2 >= expected,
        "{polls} polls in {window:?} at a 1 s interval while the webhook misbehaves"
    );
    let p99 = ctx.stats.lag_quantile(0.99).unwrap();
    assert!(p99 < Duration::from_millis(500), "poll lag p99 {p99:?}");
}

fn gaps(calls: &Calls) -> Vec<Duration> {
    let calls = calls.lock().unwrap().clone();
    calls.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test]
async fn a_webhook_that_answers_500_is_called_less_and_less_often_and_polls_go_on() {
    let (client, ns) = setup("esc500").await;
    let (url, calls) =
        webhook_answering(|| async { http::StatusCode::INTERNAL_SERVER_ERROR }).await;
    escalating_target(&client, &ns, &url, "").await;
    let (ctx, metrics) = start_until_first_call(&client, &ns, &calls).await;
    polls_keep_their_schedule(&ctx, 12 * SECOND).await;
    // The machine asked on every poll; the calls came at 1-2 s, then 2-4 s, then 4-8 s, ...
    let gaps = gaps(&calls);
    eprintln!("gaps between calls: {gaps:?}");
    assert!(gaps.len() >= 2, "too few calls: {gaps:?}");
    assert!(gaps.len() <= 4, "called too often in ~13 s: {gaps:?}");
    for (i, gap) in gaps.iter().enumerate() {
        let least = Duration::from_millis(500 * (1 << (i + 1)) - 100);
        assert!(
            *gap >= least,
            "call {} came {gap:?} after the one before",
            i + 2
        );
    }
    // Asked again while on its way: dropped, not queued twice.
    assert!(metrics.escalations("dropped") >= 5);
    // The fifth call fails it.
    eventually(25 * SECOND, "the escalation failed", || async {
        (metrics.escalations("failed") == 1).then_some(())
    })
    .await;
    assert_eq!(calls.lock().unwrap().len(), 5);
    assert_eq!(metrics.escalations("delivered"), 0);
    eventually(10 * SECOND, "an EscalationFailed Event", || async {
        (!events(&client, &ns, "EscalationFailed").await.is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_webhook_that_hangs_holds_up_no_poll() {
    let (client, ns) = setup("eschang").await;
    let (url, calls) = webhook_answering(|| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        http::StatusCode::OK
    })
    .await;
    // Each call gives up after 2 s.
    escalating_target(&client, &ns, &url, "2").await;
    let (ctx, metrics) = start_until_first_call(&client, &ns, &calls).await;
    polls_keep_their_schedule(&ctx, 10 * SECOND).await;
    // Each call hangs until its 2 s timeout, then waits its target's backoff: 2 s + 1-2 s,
    // then 2 s + 2-4 s, ...
    let gaps = gaps(&calls);
    eprintln!("gaps between calls: {gaps:?}");
    assert!(!gaps.is_empty() && gaps.len() <= 3, "{gaps:?}");
    for (i, gap) in gaps.iter().enumerate() {
        let least = Duration::from_millis(2000 + 500 * (1 << (i + 1)) - 100);
        assert!(
            *gap >= least,
            "call {} came {gap:?} after the one before",
            i + 2
        );
    }
    assert_eq!(metrics.escalations("delivered"), 0);
}
