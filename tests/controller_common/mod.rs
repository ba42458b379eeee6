//! Helpers shared by the controller tests: a workload, a RabbitMQ backlog, ScaledTargets, and
//! the controller itself running in the test's runtime against the real control plane.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;
use std::time::Duration;

use ebb::controller::leader::Leadership;
use ebb::controller::{CollectReader, Context};
use ebb::crd::ScaledTarget;
use ebb::localstack::rabbitmq::RabbitMq;
use ebb::source::SecretAccess;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

pub fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// A client of the shared stack with the CRD installed, and a fresh namespace (named after
/// `prefix`) holding the `rabbit` Secret.
pub async fn setup(prefix: &str) -> (kube::Client, String) {
    let stack = crate::support::shared_stack();
    let client = crate::support::kube_client().await;
    ebb::crd::install(&client).await.expect("the CRD installs");
    let ns = crate::support::unique_namespace(prefix);
    stack
        .kube
        .as_ref()
        .expect("the shared stack has a control plane")
        .create_namespace(&ns)
        .await
        .expect("a namespace");
    rabbit_secret(&client, &ns, stack.rabbitmq.as_ref().expect("RabbitMQ")).await;
    (client, ns)
}

/// Creates Deployment `name` with `replicas` in `ns`.
pub async fn deployment(client: &kube::Client, ns: &str, name: &str, replicas: i32) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &ebb::localstack::workload(name, replicas),
        )
        .await
        .expect("create deployment");
}

/// The sample workload (`ebb::localstack::workload`) as JSON, with `labels` on its pods.
pub fn workload_with_labels(name: &str, replicas: i32, labels: &[(&str, &str)]) -> Value {
    let mut d = serde_json::to_value(ebb::localstack::workload(name, replicas)).unwrap();
    for (k, v) in labels {
        d["spec"]["template"]["metadata"]["labels"][*k] = (*v).into();
    }
    d
}

/// Creates the Deployment `object` in `ns`.
pub async fn create_deployment(client: &kube::Client, ns: &str, object: Value) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &from_json(object))
        .await
        .expect("create deployment");
}

/// Creates Deployment `name` with `replicas` in `ns` whose pods become Ready `ready_after`
/// (e.g. `3s`) after they are created (the local stack's kwok stage for
/// [`ebb::localstack::kube::READY_AFTER_LABEL`]), as a workload with a startup delay does.
pub async fn deployment_starting_in(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
    ready_after: &str,
) {
    let labels = [(ebb::localstack::kube::READY_AFTER_LABEL, ready_after)];
    create_deployment(client, ns, workload_with_labels(name, replicas, &labels)).await;
}

/// A ScaledTarget `worker` on Deployment `worker` in `mode`, polled every second, with one
/// Prometheus metric `load` (`query` on `address`) at AverageValue 10 per pod, up to `max`.
pub fn prometheus_target(mode: &str, max: i32, address: &str, query: &str) -> Value {
    serde_json::json!({
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "ScaledTarget",
        "metadata": { "name": "worker" },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
            "mode": mode,
            "minReplicas": 1,
            "maxReplicas": max,
            "pollingInterval": "1s",
            "metrics": [{
                "name": "load",
                "prometheus": { "address": address, "query": query },
                "target": { "type": "AverageValue", "averageValue": "10" }
            }]
        }
    })
}

/// The Deployment's `spec.replicas`.
pub async fn replicas(client: &kube::Client, ns: &str, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get deployment")
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or(0)
}

/// Creates Secret `name` with string data.
pub async fn secret(client: &kube::Client, ns: &str, name: &str, data: Value) {
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &from_json(json!({ "metadata": { "name": name }, "stringData": data })),
        )
        .await
        .expect("create secret");
}

/// The secret a RabbitMQ metric reads: the management URL with guest credentials.
pub async fn rabbit_secret(client: &kube::Client, ns: &str, rabbit: &RabbitMq) {
    let management = rabbit
        .management_url()
        .replace("http://", "http://guest:guest@");
    secret(
        client,
        ns,
        "rabbit",
        json!({ "managementUrl": management, "amqpUrl": rabbit.amqp_url() }),
    )
    .await;
}

/// Creates the ScaledTarget from JSON.
pub async fn scaled_target(client: &kube::Client, ns: &str, object: Value) -> ScaledTarget {
    Api::<ScaledTarget>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &from_json(object))
        .await
        .expect("create ScaledTarget")
}

/// A Direct-mode ScaledTarget on Deployment `name` reading the backlog of queue `queue`.
pub fn backlog_target(name: &str, queue: &str, mode: &str, max: i32, interval: &str) -> Value {
    json!({
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "ScaledTarget",
        "metadata": { "name": name },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": name },
            "mode": mode,
            "minReplicas": 1,
            "maxReplicas": max,
            "pollingInterval": interval,
            "metrics": [{
                "name": "backlog",
                "rabbitmq": { "connectionSecretRef": { "name": "rabbit" }, "queue": queue },
                "target": { "type": "AverageValue", "averageValue": "10" }
            }]
        }
    })
}

/// A controller started by [`start_controller_with`]: its task, its context and metrics, and
/// the store it publishes readings to.
pub struct RunningController {
    pub handle: tokio::task::JoinHandle<()>,
    pub ctx: Arc<Context>,
    pub metrics: ebb::controller::metrics::ControllerMetrics,
    pub store: Arc<ebb::api::store::MetricStore>,
}

/// Runs the controller on namespace `ns` in this runtime, as the only replica (always leader).
pub fn start_controller(client: kube::Client, ns: &str) -> tokio::task::JoinHandle<()> {
    start_controller_with(client, ns, SecretAccess::Any).handle
}

/// [`start_controller`], reading Secrets within `access` and publishing its readings to a store
/// as `ebb serve` does for the external metrics API.
pub fn start_controller_with(
    client: kube::Client,
    ns: &str,
    access: SecretAccess,
) -> RunningController {
    // The production path: the collector's deduplicated cache, read through CollectReader.
    let telemetry = Arc::new(ebb::telemetry::Telemetry::new());
    let collector = ebb::collect::Collector::start(telemetry, Default::default());
    let reader =
        Arc::new(CollectReader::new(client.clone(), collector).with_secret_access(access.clone()));
    let metrics = ebb::controller::metrics::ControllerMetrics::default();
    let ctx = Context::with_metrics(
        client,
        reader,
        Leadership::fixed(true),
        "test",
        metrics.clone(),
        access,
    );
    let store = Arc::new(ebb::api::store::MetricStore::new());
    ctx.publish_to(store.clone(), Arc::new(ebb::api::Readiness::default()));
    let handle = tokio::spawn({
        let ctx = ctx.clone();
        let ns = ns.to_string();
        async move { ebb::controller::run_namespaced(ctx, &ns).await }
    });
    RunningController {
        handle,
        ctx,
        metrics,
        store,
    }
}

/// A RabbitMQ channel to publish on.
pub async fn channel(rabbit: &RabbitMq) -> (lapin::Connection, lapin::Channel) {
    let conn = rabbit.connect().await.expect("amqp connect");
    let channel = conn.create_channel().await.expect("channel");
    (conn, channel)
}

/// Declares `queue` and publishes `n` messages to it.
pub async fn publish(channel: &lapin::Channel, queue: &str, n: usize) {
    use lapin::options::BasicPublishOptions;
    ebb::localstack::rabbitmq::declare_queue(channel, queue)
        .await
        .expect("declare");
    for i in 0..n {
        channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                Default::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

/// The queue's ready + unacked count as the management API shows it.
pub async fn backlog(rabbit: &RabbitMq, queue: &str) -> Option<i64> {
    Some(rabbit.queue_counts(queue).await.ok()??.backlog())
}

/// Empties the queue.
pub async fn purge(rabbit: &RabbitMq, queue: &str) {
    rabbit.purge(queue).await.expect("purge");
}

/// Events (events.k8s.io/v1) in `ns` with `reason`.
pub async fn events(client: &kube::Client, ns: &str, reason: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

/// ebb's audit trail in namespace `ns`, oldest first: one line per Event (its reason, count
/// and note), for a failing test to say why ebb did what it did.
pub async fn audit_trail(client: &kube::Client, ns: &str) -> String {
    let mut events = Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let first_seen = |e: &Event| {
        e.event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.deprecated_first_timestamp.as_ref().map(|t| t.0))
    };
    events.sort_by_key(first_seen);
    let mut trail = String::new();
    for e in &events {
        let count = e.series.as_ref().map_or(1, |s| s.count);
        trail.push_str(&format!(
            "\n  {} {} x{count}: {}",
            first_seen(e).map(|t| t.to_string()).unwrap_or_default(),
            e.reason.as_deref().unwrap_or(""),
            e.note.as_deref().unwrap_or("")
        ));
    }
    trail
}

/// The status condition `type_` of ScaledTarget `name`.
pub async fn status_condition(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let st = Api::<ScaledTarget>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()?;
    st.status?.conditions.into_iter().find(|c| c.type_ == type_)
}

/// The status condition `type_` of ScaledTarget `name`, as (status, reason).
pub async fn condition(
    client: &kube::Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Option<(String, String)> {
    let c = status_condition(client, ns, name, type_).await?;
    Some((c.status, c.reason))
}

pub const SECOND: Duration = Duration::from_secs(1);

/// One call a [`webhook`] received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: std::time::Instant,
    pub headers: http::HeaderMap,
    /// The body as JSON (`Null` when it is not).
    pub body: Value,
}

/// The calls a [`webhook`] received, in order.
pub type Calls = Arc<std::sync::Mutex<Vec<Call>>>;

/// A webhook of the test's own on loopback (a real HTTP server) that keeps every call and
/// answers 200; its URL and its calls.
pub async fn webhook() -> (String, Calls) {
    webhook_answering(|| async { http::StatusCode::OK }).await
}

/// [`webhook`], answering each call as `answer` does (an error status, or after a while).
pub async fn webhook_answering<F, Fut>(answer: F) -> (String, Calls)
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::StatusCode> + Send,
{
    let calls: Calls = Arc::default();
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let calls = calls.clone();
            move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let calls = calls.clone();
                let answer = answer.clone();
                async move {
                    calls.lock().unwrap().push(Call {
                        at: std::time::Instant::now(),
                        headers,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    answer().await
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (format!("http://{addr}/hook"), calls)
}

/// Waits up to `within` for a `Scaled` Event whose note contains `text`. Events are queued off
/// the decision path, so one may land a moment after the `/scale` write it records.
pub async fn scaled_event_saying(client: &kube::Client, ns: &str, text: &str, within: Duration) {
    crate::support::eventually(
        within,
        &format!("a Scaled Event that says {text}"),
        || async {
            events(client, ns, "Scaled")
                .await
                .iter()
                .any(|e| e.note.as_deref().is_some_and(|n| n.contains(text)))
                .then_some(())
        },
    )
    .await;
}
