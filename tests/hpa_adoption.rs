//! HPA takeover on the real control plane and HPA controller, `ebb serve` running as in a
//! cluster: a Deployment at 7 replicas under a hand-made HPA is adopted by a ScaledTarget
//! annotated `ebb.dev/adopt-hpa` (the same HPA object, now owned by the ScaledTarget and
//! reading ebb's metric) and never drops below 7 on the way; the way back
//! (`kubectl delete scaledtarget --cascade=orphan`, then the old HPA applied again) leaves the
//! count where it is. An annotation that names another workload's HPA is refused.

mod controller_common;
mod support;

use std::time::{Duration, Instant};

use controller_common::*;
use ebb::crd::ScaledTarget;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use serde_json::{Value, json};
use support::{ebb_serve, eventually, shared_stack};

/// The user's own HPA: at least 7 replicas, on CPU (no metrics server here: it holds).
fn hand_made_hpa(name: &str) -> Value {
    json!({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": { "name": name, "labels": { "team": "orders" } },
        "spec": {
            "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
            "minReplicas": 7,
            "maxReplicas": 12,
            "metrics": [{ "type": "Resource", "resource": {
                "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 60 }
            }}]
        }
    })
}

/// Replicas of `worker` sampled every 200 ms for `window`.
async fn sampled(client: &kube::Client, ns: &str, window: Duration) -> Vec<i32> {
    let until = Instant::now() + window;
    let mut seen = Vec::new();
    while Instant::now() < until {
        seen.push(replicas(client, ns, "worker").await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}

#[tokio::test]
async fn an_adopted_hpa_keeps_its_count_and_the_way_back_leaves_it() {
    let stack = shared_stack();
    let _ebb = ebb_serve(stack.kube.as_ref().unwrap(), stack.dir(), "ebb-adoption").await;
    let (client, ns) = setup("adopt").await;
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns);
    deployment(&client, &ns, "worker", 7).await;
    let theirs = hpas
        .create(
            &PostParams::default(),
            &from_json(hand_made_hpa("orders-hpa")),
        )
        .await
        .unwrap();
    // A backlog of 70 at 10 per pod: ebb's metric asks for the same 7.
    let queue = format!("{ns}-jobs");
    let (_conn, channel) = channel(shared_stack().rabbitmq.as_ref().unwrap()).await;
    publish(&channel, &queue, 70).await;

    // An annotation that names another workload's HPA is refused, and that HPA is untouched.
    deployment(&client, &ns, "other", 2).await;
    let mut other = hand_made_hpa("other-hpa");
    other["spec"]["scaleTargetRef"]["name"] = json!("other");
    hpas.create(&PostParams::default(), &from_json(other))
        .await
        .unwrap();
    let mut wrong = backlog_target("wrong", &queue, "Hpa", 12, "1s");
    wrong["spec"]["targetRef"]["name"] = json!("worker-b");
    wrong["metadata"]["annotations"] = json!({ "ebb.dev/adopt-hpa": "other-hpa" });
    deployment(&client, &ns, "worker-b", 1).await;
    scaled_target(&client, &ns, wrong).await;
    let message = eventually(30 * SECOND, "the wrong adoption refused", || async {
        let c = status_condition(&client, &ns, "wrong", "Ready").await?;
        (c.reason == "ForeignHpa").then_some(c.message)
    })
    .await;
    assert!(message.contains("scales Deployment other"), "{message}");
    let untouched = hpas.get("other-hpa").await.unwrap();
    assert!(untouched.owner_references().is_empty());
    assert_eq!(untouched.spec.scale_target_ref.name, "other");

    let mut st = backlog_target("worker", &queue, "Hpa", 12, "1s");
    st["metadata"]["annotations"] = json!({ "ebb.dev/adopt-hpa": "orders-hpa" });
    let created = scaled_target(&client, &ns, st).await;
    let sampler = tokio::spawn({
        let (client, ns) = (client.clone(), ns.clone());
        async move { sampled(&client, &ns, 25 * SECOND).await }
    });
    let adopted = eventually(30 * SECOND, "the HPA owned by the ScaledTarget", || async {
        let h = hpas.get("orders-hpa").await.ok()?;
        h.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == created.metadata.uid.as_ref())
            .then_some(h)
    })
    .await;
    // The same object, ebb's spec: its metric, its bounds; the user's labels kept.
    assert_eq!(adopted.uid(), theirs.uid());
    let external = adopted.spec.metrics.as_ref().unwrap()[0]
        .external
        .as_ref()
        .unwrap();
    assert_eq!(external.metric.name, "backlog");
    assert_eq!(
        (adopted.spec.min_replicas, adopted.spec.max_replicas),
        (Some(1), 12)
    );
    assert_eq!(
        adopted.labels().get("team").map(String::as_str),
        Some("orders")
    );
    assert!(hpas.get_opt("ebb-worker").await.unwrap().is_none());
    // The HPA reads ebb's metric (70 over 7 pods: 10 each, its target): it holds at 7 on it.
    eventually(30 * SECOND, "the HPA reading the backlog", || async {
        let h = hpas.get("orders-hpa").await.ok()?;
        let current = h.status?.current_metrics?;
        let external = current.first()?.external.as_ref()?;
        (external.metric.name == "backlog" && external.current.average_value.as_ref()?.0 == "10")
            .then_some(())
    })
    .await;
    let during = sampler.await.unwrap();
    assert!(
        during.iter().all(|&r| r >= 7),
        "dropped during the handover: {during:?}"
    );
    assert!(!events(&client, &ns, "AdoptedHpa").await.is_empty());
    let (ready, reason) = condition(&client, &ns, "worker", "Ready").await.unwrap();
    assert_eq!((ready.as_str(), reason.as_str()), ("True", "HpaSynced"));

    // The way back: delete the ScaledTarget leaving its HPA, apply the old HPA again.
    Api::<ScaledTarget>::namespaced(client.clone(), &ns)
        .delete(
            "worker",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    eventually(
        30 * SECOND,
        "the ScaledTarget gone, its HPA left",
        || async {
            let gone = Api::<ScaledTarget>::namespaced(client.clone(), &ns)
                .get_opt("worker")
                .await
                .ok()?
                .is_none();
            let h = hpas.get_opt("orders-hpa").await.ok()??;
            (gone && h.owner_references().is_empty()).then_some(())
        },
    )
    .await;
    let mut back: HorizontalPodAutoscaler = from_json(hand_made_hpa("orders-hpa"));
    let now = hpas.get("orders-hpa").await.unwrap();
    back.metadata.resource_version = now.metadata.resource_version;
    hpas.replace("orders-hpa", &PostParams::default(), &back)
        .await
        .unwrap();
    let after = sampled(&client, &ns, 8 * SECOND).await;
    assert!(
        after.iter().all(|&r| r == 7),
        "moved on the way back: {after:?}"
    );
}
