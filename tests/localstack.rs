//! The local stack is real: each service does what production's does.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, ListParams, PostParams};
use support::{eventually, kube_client, shared_stack, unique_namespace};

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

#[tokio::test]
async fn a_deployment_gets_ready_pods_on_kwok() {
    let kube = shared_stack().kube.as_ref().unwrap();
    let ns = unique_namespace("deploy");
    kube.create_namespace(&ns).await.unwrap();
    let client = kube_client().await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .create(&PostParams::default(), &ebb::localstack::workload("web", 3))
        .await
        .unwrap();
    eventually(Duration::from_secs(60), "3 ready replicas", || async {
        let d = deployments.get("web").await.ok()?;
        (d.status?.ready_replicas? == 3).then_some(())
    })
    .await;
    let pods = Api::<Pod>::namespaced(client, &ns)
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 3);
    for pod in pods.items {
        let spec = pod.spec.unwrap();
        assert_eq!(
            spec.node_name.as_deref(),
            Some(ebb::localstack::kube::NODE_NAME)
        );
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert!(
            status
                .conditions
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
    }
}

#[tokio::test]
async fn an_apiservice_on_loopback_is_reachable_through_the_aggregator() {
    let kube = shared_stack().kube.as_ref().unwrap();
    let ns = unique_namespace("aggregated");
    kube.create_namespace(&ns).await.unwrap();
    let service = "probe-api";
    // The aggregator verifies the serving certificate for <service>.<namespace>.svc.
    let cert = kube
        .serving_cert(&[&format!("{service}.{ns}.svc"), "localhost", "127.0.0.1"])
        .unwrap();
    let resources = serde_json::json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "probe.ebb.dev/v1alpha1",
        "resources": [{ "name": "widgets", "singularName": "widget", "namespaced": true,
                        "kind": "Widget", "verbs": ["get"] }]
    });
    let router = axum::Router::new().route(
        "/apis/probe.ebb.dev/v1alpha1",
        axum::routing::get(move || {
            let body = resources.clone();
            async move { axum::Json(body) }
        }),
    );
    let addr = support::serve_https(router, &cert).await;

    let client = kube_client().await;
    Api::<Service>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({
                "metadata": { "name": service },
                "spec": { "type": "ExternalName", "externalName": "localhost" }
            })),
        )
        .await
        .unwrap();
    use base64::Engine as _;
    let apiservices = Api::<APIService>::all(client.clone());
    apiservices
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({
                "metadata": { "name": "v1alpha1.probe.ebb.dev" },
                "spec": {
                    "group": "probe.ebb.dev", "version": "v1alpha1",
                    "groupPriorityMinimum": 100, "versionPriority": 100,
                    "service": { "namespace": ns, "name": service, "port": addr.port() },
                    "caBundle": base64::engine::general_purpose::STANDARD.encode(kube.ca_pem()),
                }
            })),
        )
        .await
        .unwrap();
    kube.wait_api_service_available("v1alpha1.probe.ebb.dev")
        .await
        .expect("the APIService to be Available");
    // A `kubectl get --raw` through the kube-apiserver, proxied to our server.
    let req = http::Request::get("/apis/probe.ebb.dev/v1alpha1")
        .body(Vec::new())
        .unwrap();
    let body: serde_json::Value =
        serde_json::from_str(&client.request_text(req).await.unwrap()).unwrap();
    assert_eq!(body["groupVersion"], "probe.ebb.dev/v1alpha1");
    assert_eq!(body["resources"][0]["name"], "widgets");
    // ... and the aggregated discovery lists the group.
    let req = http::Request::get("/apis").body(Vec::new()).unwrap();
    let groups = client.request_text(req).await.unwrap();
    assert!(groups.contains("probe.ebb.dev"), "{groups}");
}

#[tokio::test]
async fn samples_pushed_into_prometheus_come_back_from_an_instant_query() {
    let prometheus = shared_stack().prometheus.as_ref().unwrap();
    let now_ms = chrono::Utc::now().timestamp_millis();
    prometheus
        .push(
            &[("__name__", "ebb_probe_requests"), ("service", "orders")],
            &[(now_ms - 2_000, 12.5), (now_ms - 1_000, 42.25)],
        )
        .await
        .unwrap();
    let client = prometheus_http_query::Client::try_from(prometheus.url().as_str()).unwrap();
    let value = eventually(Duration::from_secs(10), "the pushed sample", || async {
        let result = client
            .query("ebb_probe_requests{service=\"orders\"}")
            .get()
            .await
            .ok()?;
        let vector = result.data().as_vector()?;
        vector.first().map(|s| s.sample().value())
    })
    .await;
    assert_eq!(value, 42.25);
}

#[tokio::test]
async fn published_messages_show_as_ready_and_unacked_in_the_management_api() {
    use futures::StreamExt;
    use lapin::options::{
        BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    ebb::install_crypto_provider();
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let conn =
        lapin::Connection::connect(&rabbit.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queue = "probe-orders";
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for i in 0..10 {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Take 3 deliveries and hold them unacknowledged.
    let consumer_channel = conn.create_channel().await.unwrap();
    consumer_channel
        .basic_qos(3, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = consumer_channel
        .basic_consume(
            queue.into(),
            "probe".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(consumer.next().await.unwrap().unwrap());
    }
    let http = reqwest::Client::new();
    let url = format!("{}/api/queues/%2f/{queue}", rabbit.management_url());
    let (ready, unacked) = eventually(Duration::from_secs(20), "7 ready and 3 unacked", || async {
        let q: serde_json::Value = http
            .get(&url)
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let counts = (
            q["messages_ready"].as_u64()?,
            q["messages_unacknowledged"].as_u64()?,
        );
        (counts == (7, 3)).then_some(counts)
    })
    .await;
    assert_eq!((ready, unacked), (7, 3));
    drop(held);
    conn.close(0, "done".into()).await.unwrap();
}
