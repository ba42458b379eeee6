//! ebb's external metrics API server against the real control plane: registered through the
//! manifests in deploy/ (Service made an ExternalName to loopback, caBundle from the local CA),
//! read through the aggregator, by the real HPA controller, and by clients with and without
//! the right credentials.
//!
//! Only one external.metrics.k8s.io APIService can exist per cluster, and the stack is shared
//! by this binary's tests: [`api`] starts the server and registers it once.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ebb::api::auth::Auth;
use ebb::api::server::{ServeConfig, Server, metrics_text};
use ebb::api::{ApiMetrics, ApiState, MetricStore, MetricValue, Readiness, Sample};
use ebb::source::{Connections, Query, RabbitMqConfig, SecretData, Source};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use support::{
    eventually, https_client, kube_client, kubeconfig_identity, shared_stack, unique_namespace,
};

/// The metric the tests publish, as `ebb.dev/scaledtarget=<name>` entries.
const METRIC: &str = "rabbitmq-backlog";

struct TestApi {
    store: Arc<MetricStore>,
    addr: SocketAddr,
    metrics_addr: SocketAddr,
}

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a valid object")
}

/// The server, started on a runtime of its own (it outlives each test's runtime) and
/// registered as the cluster's external metrics API, Available.
fn api() -> &'static TestApi {
    static API: OnceLock<TestApi> = OnceLock::new();
    API.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("a runtime");
            runtime.block_on(async move {
                tx.send(start_and_register().await).expect("the test waits");
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the API server thread panicked")
    })
}

async fn start_and_register() -> TestApi {
    let kube = shared_stack().kube.as_ref().expect("a control plane");
    let admin = kube.client().await.expect("an admin client");
    for manifest in [
        include_str!("../deploy/namespace.yaml"),
        include_str!("../deploy/rbac.yaml"),
    ] {
        ebb::localstack::kube::apply_yaml(&admin, manifest, "ebb-test")
            .await
            .expect("deploy/'s objects are accepted");
    }
    // The server acts as its ServiceAccount's user with only deploy/'s RBAC: proves it suffices
    // for reading the authentication ConfigMap and asking for reviews.
    let sa_kubeconfig = kube
        .kubeconfig_for(
            "system:serviceaccount:ebb-system:ebb",
            Some("system:serviceaccounts"),
        )
        .expect("a kubeconfig");
    let server_client = ebb::localstack::kube::kube_client(&sa_kubeconfig)
        .await
        .expect("a client");
    let auth = Arc::new(
        Auth::from_cluster(server_client.clone())
            .await
            .expect("authentication settings"),
    );
    tokio::spawn({
        let auth = auth.clone();
        async move { auth.refresh_from_cluster(server_client).await }
    });

    let dir = tempfile::tempdir().expect("a temp dir").keep();
    let (cert_file, key_file) = kube
        .serving_cert(&["ebb.ebb-system.svc", "localhost", "127.0.0.1"])
        .expect("a serving certificate")
        .write(&dir, "serving")
        .expect("written");
    let store = Arc::new(MetricStore::new());
    let metrics = ApiMetrics::default();
    let mut registry = prometheus_client::registry::Registry::with_prefix("ebb");
    metrics.register(&mut registry);
    let state = ApiState {
        store: store.clone(),
        auth,
        readiness: Arc::new(Readiness::ready()),
        metrics,
    };
    let server = Server::bind(
        ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            cert_file,
            key_file,
            cert_reload_interval: Duration::from_secs(5),
        },
        state,
        metrics_text(registry),
    )
    .await
    .expect("the server binds");
    let (addr, metrics_addr) = (server.local_addr(), server.metrics_addr());
    tokio::spawn(async move { server.run().await.expect("the server runs") });

    // No pods run ebb here: the Service points at loopback, where the test serves.
    kube.register_api_service(include_str!("../deploy/apiservice.yaml"), addr.port())
        .await
        .expect("the APIService becomes Available");
    TestApi {
        store,
        addr,
        metrics_addr,
    }
}

fn sample(milli: i64) -> Sample {
    Sample {
        labels: BTreeMap::from([("queue".to_string(), "orders".to_string())]),
        value: MetricValue::Milli(milli),
        timestamp: chrono::Utc::now(),
        window_seconds: None,
    }
}

fn values_path(ns: &str, metric: &str, selector: &str) -> String {
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("labelSelector", selector)
        .finish();
    format!("/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}?{query}")
}

async fn get_raw(client: &kube::Client, path: &str) -> Result<serde_json::Value, kube::Error> {
    let text = client
        .request_text(http::Request::get(path).body(Vec::new()).unwrap())
        .await?;
    Ok(serde_json::from_str(&text).expect("JSON"))
}

fn status_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(status) => status.code,
        other => panic!("expected a Status, got {other}"),
    }
}

#[tokio::test]
async fn discovery_and_values_come_back_through_the_aggregator() {
    let api = api();
    let kube = shared_stack().kube.as_ref().unwrap();
    let ns = unique_namespace("values");
    kube.create_namespace(&ns).await.unwrap();
    api.store.publish(&ns, METRIC, "orders", sample(42_000));
    api.store.publish(&ns, METRIC, "invoices", sample(1_500));
    let client = kube_client().await;

    let resources = get_raw(&client, "/apis/external.metrics.k8s.io/v1beta1")
        .await
        .unwrap();
    assert_eq!(resources["kind"], "APIResourceList");
    assert!(
        resources["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == METRIC && r["namespaced"] == true),
        "{resources}"
    );
    let groups = get_raw(&client, "/apis").await.unwrap();
    assert!(
        groups.to_string().contains("external.metrics.k8s.io"),
        "{groups}"
    );

    let list = get_raw(
        &client,
        &values_path(&ns, METRIC, "ebb.dev/scaledtarget=orders"),
    )
    .await
    .unwrap();
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["apiVersion"], "external.metrics.k8s.io/v1beta1");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["value"], "42");
    assert_eq!(items[0]["metricName"], METRIC);
    assert_eq!(items[0]["metricLabels"]["queue"], "orders");
    let both = get_raw(&client, &values_path(&ns, METRIC, "queue=orders"))
        .await
        .unwrap();
    assert_eq!(both["items"].as_array().unwrap().len(), 2, "{both}");

    let unknown = get_raw(&client, &values_path(&ns, "no-such-metric", ""))
        .await
        .unwrap_err();
    assert_eq!(status_code(unknown), 404);
    let bad = get_raw(
        &client,
        &values_path(&ns, METRIC, "ebb.dev/scaledtarget in orders"),
    )
    .await
    .unwrap_err();
    assert_eq!(status_code(bad), 400);
}

async fn service_account_token(client: &kube::Client, ns: &str, name: &str) -> String {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({ "metadata": { "name": name } })),
        )
        .await
        .unwrap();
    let request = http::Request::post(format!(
        "/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(
        serde_json::to_vec(&serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": { "expirationSeconds": 3600 }
        }))
        .unwrap(),
    )
    .unwrap();
    let response: serde_json::Value = client.request(request).await.unwrap();
    response["status"]["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn direct_requests_are_authenticated_and_authorized() {
    let api = api();
    let kube = shared_stack().kube.as_ref().unwrap();
    let ns = unique_namespace("auth");
    kube.create_namespace(&ns).await.unwrap();
    api.store.publish(&ns, METRIC, "orders", sample(7_000));
    let url = format!(
        "https://localhost:{}{}",
        api.addr.port(),
        values_path(&ns, METRIC, "")
    );
    let send = |client: reqwest::Client, headers: &[(&str, &str)]| {
        let mut request = client.get(&url);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        async move {
            let response = request.send().await.unwrap();
            let code = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            (code, body)
        }
    };
    let as_admin = [
        ("X-Remote-User", "admin"),
        ("X-Remote-Group", "system:masters"),
    ];
    let anonymous = https_client(kube.ca_pem(), None);

    let (code, status) = send(anonymous.clone(), &[]).await;
    assert_eq!(code, 401);
    assert_eq!(
        (
            status["kind"].as_str(),
            status["reason"].as_str(),
            status["code"].as_u64()
        ),
        (Some("Status"), Some("Unauthorized"), Some(401))
    );
    // Forged front-proxy headers without the front proxy's certificate are not trusted ...
    assert_eq!(send(anonymous.clone(), &as_admin).await.0, 401);
    // ... nor with a client certificate of the cluster CA (its own user counts) ...
    let nobody = kubeconfig_identity(&kube.kubeconfig_for("nobody", None).unwrap());
    let nobody = https_client(kube.ca_pem(), Some((&nobody.0, &nobody.1)));
    let (code, status) = send(nobody.clone(), &[]).await;
    assert_eq!(
        (code, status["reason"].as_str()),
        (403, Some("Forbidden")),
        "{status}"
    );
    assert_eq!(send(nobody, &as_admin).await.0, 403);
    // ... nor with a front-proxy-CA certificate whose name is not allowed.
    let intruder = kube.front_proxy_client_cert("intruder").unwrap();
    let intruder = https_client(kube.ca_pem(), Some((&intruder.cert_pem, &intruder.key_pem)));
    assert_eq!(send(intruder, &as_admin).await.0, 401);
    // The allowed front proxy is trusted (what the aggregator does).
    let proxy = kube.front_proxy_client_cert("front-proxy-client").unwrap();
    let proxy = https_client(kube.ca_pem(), Some((&proxy.cert_pem, &proxy.key_pem)));
    let (code, list) = send(proxy, &as_admin).await;
    assert_eq!(
        (code, list["items"][0]["value"].as_str()),
        (200, Some("7")),
        "{list}"
    );

    // Bearer tokens, reviewed by the kube-apiserver; RBAC decides.
    let admin = kube_client().await;
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({
                "metadata": { "name": "metrics-reader" },
                "rules": [{ "apiGroups": ["external.metrics.k8s.io"], "resources": [METRIC],
                            "verbs": ["list"] }]
            })),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({
                "metadata": { "name": "metrics-reader" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                             "name": "metrics-reader" },
                "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": ns }]
            })),
        )
        .await
        .unwrap();
    let reader = service_account_token(&admin, &ns, "reader").await;
    let stranger = service_account_token(&admin, &ns, "stranger").await;
    let bearer = |t: &str| format!("Bearer {t}");
    let (code, list) = send(anonymous.clone(), &[("Authorization", &bearer(&reader))]).await;
    assert_eq!(
        (code, list["items"][0]["value"].as_str()),
        (200, Some("7")),
        "{list}"
    );
    assert_eq!(
        send(anonymous.clone(), &[("Authorization", &bearer(&stranger))])
            .await
            .0,
        403
    );
    assert_eq!(
        send(
            anonymous.clone(),
            &[("Authorization", "Bearer not-a-token")]
        )
        .await
        .0,
        401
    );

    // Health needs no credentials; /metrics (plain HTTP) counts what was answered.
    let health = format!("https://localhost:{}/readyz", api.addr.port());
    assert_eq!(anonymous.get(&health).send().await.unwrap().status(), 200);
    let text = reqwest::get(format!("http://{}/metrics", api.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("ebb_api_request_duration_seconds_count{verb=\"list\",code=\"403\"}"),
        "{text}"
    );
    // Prometheus asks for gzip: the same series, compressed.
    let gzip = reqwest::Client::new()
        .get(format!("http://{}/metrics", api.metrics_addr))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.status(), 200);
    assert_eq!(gzip.headers()["content-encoding"], "gzip");
    let mut decoded = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&gzip.bytes().await.unwrap()[..]),
        &mut decoded,
    )
    .unwrap();
    assert!(
        decoded.contains("ebb_api_request_duration_seconds_count{verb=\"list\",code=\"403\"}"),
        "{decoded}"
    );
    assert!(decoded.ends_with("# EOF\n"), "{decoded}");
}

/// ebb's RabbitMQ source for the backlog (ready + unacknowledged) of `queue`.
fn backlog_source(rabbit: &ebb::localstack::rabbitmq::RabbitMq, queue: &str) -> Arc<dyn Source> {
    use k8s_openapi::ByteString;
    let management = rabbit
        .management_url()
        .replace("http://", "http://guest:guest@");
    let data = SecretData::from([
        (
            "managementUrl".to_string(),
            ByteString(management.into_bytes()),
        ),
        (
            "amqpUrl".to_string(),
            ByteString(rabbit.amqp_url().into_bytes()),
        ),
    ]);
    let config: RabbitMqConfig = from_json(serde_json::json!({
        "connectionSecretRef": { "name": "rabbit" }, "queue": queue, "measure": "Backlog"
    }));
    Connections::new()
        .source_for(&Query::RabbitMq(
            config.resolve(&data).expect("a valid config"),
        ))
        .expect("a source")
}

#[tokio::test]
async fn the_hpa_controller_scales_a_deployment_on_a_rabbitmq_backlog() {
    use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueuePurgeOptions};
    use lapin::types::FieldTable;
    let api = api();
    let stack = shared_stack();
    let kube = stack.kube.as_ref().unwrap();
    let rabbit = stack.rabbitmq.as_ref().unwrap();
    let ns = unique_namespace("hpa");
    kube.create_namespace(&ns).await.unwrap();
    let client = kube_client().await;

    // A real queue, measured by ebb's RabbitMQ source and published into the store the way
    // the collector does: a failed fetch is published as a failure, never as 0.
    let queue = format!("orders-{ns}");
    let conn =
        lapin::Connection::connect(&rabbit.amqp_url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let source = backlog_source(rabbit, &queue);
    let feeder = {
        let (store, ns) = (api.store.clone(), ns.clone());
        tokio::spawn(async move {
            loop {
                let value = match source.fetch().await {
                    Ok(backlog) => MetricValue::Milli((backlog * 1000.0).round() as i64),
                    Err(e) => MetricValue::Failed(e.to_string()),
                };
                store.publish(&ns, METRIC, "worker", Sample { value, ..sample(0) });
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let deployments = Api::<Deployment>::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &ebb::localstack::workload("worker", 1),
        )
        .await
        .unwrap();
    Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &from_json(serde_json::json!({
                "metadata": { "name": "worker" },
                "spec": {
                    "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
                    "minReplicas": 1,
                    "maxReplicas": 4,
                    "metrics": [{
                        "type": "External",
                        "external": {
                            "metric": { "name": METRIC,
                                        "selector": { "matchLabels": { "ebb.dev/scaledtarget": "worker" } } },
                            "target": { "type": "AverageValue", "averageValue": "10" }
                        }
                    }]
                }
            })),
        )
        .await
        .unwrap();
    let replicas = |want: i32| {
        let deployments = deployments.clone();
        async move {
            let d = deployments.get("worker").await.ok()?;
            (d.spec?.replicas? == want).then_some(())
        }
    };

    // 40 messages at 10 per replica: 4 replicas.
    for i in 0..40 {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                format!("m{i}").as_bytes(),
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(90), "the HPA to scale up to 4", || {
        replicas(4)
    })
    .await;
    // The HPA read ebb's value (its average is per replica at the time it looked). Its status
    // is its last sync's: a sync that met the broker between two statistics samples ("no
    // data", never zero) shows that instead, so look until a sync shows the value.
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns);
    let status = eventually(
        Duration::from_secs(30),
        "the HPA to show ebb's value",
        || {
            let hpas = hpas.clone();
            async move {
                let status = serde_json::to_value(hpas.get("worker").await.ok()?.status?).ok()?;
                let valid = status["conditions"].as_array()?.iter().any(|c| {
                    c["type"] == "ScalingActive"
                        && c["status"] == "True"
                        && c["reason"] == "ValidMetricFound"
                });
                valid.then_some(status)
            }
        },
    )
    .await;
    assert_eq!(
        status["currentMetrics"][0]["external"]["metric"]["name"], METRIC,
        "{status}"
    );

    // The queue drains: back to the minimum after the (5 s) downscale stabilization.
    channel
        .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
        .await
        .unwrap();
    eventually(
        Duration::from_secs(90),
        "the HPA to scale down to 1",
        || replicas(1),
    )
    .await;
    feeder.abort();
    conn.close(0, "done".into()).await.unwrap();
}
