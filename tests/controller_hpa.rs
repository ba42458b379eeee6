//! Mode Hpa: ebb owns an autoscaling/v2 HPA pointing at its external metrics, keeps it in sync,
//! lets it go with the ScaledTarget, and refuses to fight an HPA it does not own.

mod controller_common;
mod support;

use controller_common::*;
use ebb::api::selector::Selector;
use ebb::api::store::Lookup;
use ebb::crd::ScaledTarget;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use support::eventually;

#[tokio::test]
async fn the_owned_hpa_has_the_metrics_and_behavior_follows_edits_and_goes_with_the_scaled_target()
{
    let (client, ns) = setup("hpa").await;
    deployment(&client, &ns, "worker", 1).await;
    let mut st = backlog_target("worker", "orders", "Hpa", 7, "1s");
    st["spec"]["minReplicas"] = json!(2);
    st["spec"]["behavior"] = json!({
        "scaleDown": {
            "stabilizationWindowSeconds": 60,
            "policies": [{ "type": "Percent", "value": 50, "periodSeconds": 30 }]
        }
    });
    let created = scaled_target(&client, &ns, st).await;
    let controller = start_controller_with(client.clone(), &ns, ebb::source::SecretAccess::Any);
    let store = controller.store.clone();
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns);
    let selector = Selector::parse("ebb.dev/scaledtarget=worker").unwrap();
    let served = || store.lookup(&ns, "backlog", &selector) != Lookup::UnknownMetric;
    let hpa = eventually(20 * SECOND, "the owned HPA", || async {
        hpas.get_opt("ebb-worker").await.ok()?
    })
    .await;
    let spec = &hpa.spec;
    assert_eq!(spec.scale_target_ref.kind, "Deployment");
    assert_eq!(spec.scale_target_ref.name, "worker");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 7));
    let metrics = spec.metrics.as_ref().unwrap();
    assert_eq!(metrics.len(), 1);
    let external = metrics[0].external.as_ref().unwrap();
    assert_eq!(metrics[0].type_, "External");
    assert_eq!(external.metric.name, "backlog");
    let labels = external
        .metric
        .selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert_eq!(
        labels.get("ebb.dev/scaledtarget").map(String::as_str),
        Some("worker")
    );
    assert_eq!(external.target.type_, "AverageValue");
    assert_eq!(external.target.average_value.as_ref().unwrap().0, "10");
    let down = spec.behavior.as_ref().unwrap().scale_down.as_ref().unwrap();
    assert_eq!(down.stabilization_window_seconds, Some(60));
    let policy = &down.policies.as_ref().unwrap()[0];
    assert_eq!(
        (policy.type_.as_str(), policy.value, policy.period_seconds),
        ("Percent", 50, 30)
    );
    let owner = &hpa.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, created.metadata.uid.clone().unwrap());
    assert_eq!(owner.controller, Some(true));

    // Kept in sync: an edit of the ScaledTarget reaches the HPA ...
    let sts = Api::<ScaledTarget>::namespaced(client.clone(), &ns);
    sts.patch(
        "worker",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "maxReplicas": 9 } })),
    )
    .await
    .unwrap();
    eventually(10 * SECOND, "maxReplicas 9 on the HPA", || async {
        (hpas.get("ebb-worker").await.ok()?.spec.max_replicas == 9).then_some(())
    })
    .await;
    // ... and a hand edit of the HPA is put back.
    hpas.patch(
        "ebb-worker",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "maxReplicas": 50 } })),
    )
    .await
    .unwrap();
    eventually(10 * SECOND, "maxReplicas back to 9", || async {
        (hpas.get("ebb-worker").await.ok()?.spec.max_replicas == 9).then_some(())
    })
    .await;
    let st = sts.get("worker").await.unwrap();
    assert_eq!(st.status.unwrap().hpa_name.as_deref(), Some("ebb-worker"));
    assert!(served(), "the HPA's metric is served");

    // Goes with the ScaledTarget (garbage collection through the owner reference).
    sts.delete("worker", &DeleteParams::foreground())
        .await
        .unwrap();
    eventually(30 * SECOND, "the HPA gone", || async {
        hpas.get_opt("ebb-worker")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    // ... and the external metrics API stops serving its metric.
    eventually(30 * SECOND, "the metric no longer served", || async {
        (!served()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_foreign_hpa_on_the_same_workload_is_not_fought() {
    let (client, ns) = setup("foreign").await;
    deployment(&client, &ns, "worker", 1).await;
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns);
    hpas.create(
        &PostParams::default(),
        &from_json(json!({
            "metadata": { "name": "theirs" },
            "spec": {
                "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 50 } } }]
            }
        })),
    )
    .await
    .unwrap();
    scaled_target(
        &client,
        &ns,
        backlog_target("worker", "orders", "Hpa", 7, "1s"),
    )
    .await;
    let _controller = start_controller(client.clone(), &ns);
    let (status, reason) = eventually(20 * SECOND, "the Ready condition", || async {
        condition(&client, &ns, "worker", "Ready").await
    })
    .await;
    assert_eq!((status.as_str(), reason.as_str()), ("False", "ForeignHpa"));
    let st = Api::<ScaledTarget>::namespaced(client.clone(), &ns)
        .get("worker")
        .await
        .unwrap();
    let ready = st
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert!(
        ready
            .message
            .contains("HPA theirs already scales Deployment worker"),
        "{}",
        ready.message
    );
    assert!(hpas.get_opt("ebb-worker").await.unwrap().is_none());
}

#[tokio::test]
async fn switching_to_direct_deletes_the_owned_hpa_so_that_it_stops_scaling() {
    let (client, ns) = setup("switch").await;
    deployment(&client, &ns, "worker", 1).await;
    scaled_target(
        &client,
        &ns,
        backlog_target("worker", "switch-orders", "Hpa", 7, "1s"),
    )
    .await;
    let _controller = start_controller(client.clone(), &ns);
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns);
    eventually(20 * SECOND, "the owned HPA", || async {
        hpas.get_opt("ebb-worker").await.ok()?
    })
    .await;
    Api::<ScaledTarget>::namespaced(client.clone(), &ns)
        .patch(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "mode": "Direct" } })),
        )
        .await
        .unwrap();
    eventually(20 * SECOND, "the owned HPA deleted", || async {
        hpas.get_opt("ebb-worker")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
}
