//! The API server itself enforces the ScaledTarget rules (schema + CEL), with a message that
//! says what is wrong.

mod support;

use ebb::crd::ScaledTarget;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::{kube_client, shared_stack, unique_namespace};

fn valid() -> Value {
    json!({
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "ScaledTarget",
        "metadata": { "name": "orders" },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "orders" },
            "mode": "Direct",
            "minReplicas": 1,
            "maxReplicas": 10,
            "pollingInterval": "5s",
            "metrics": [{
                "name": "backlog",
                "rabbitmq": { "connectionSecretRef": { "name": "rabbit" }, "queue": "orders" },
                "target": { "type": "AverageValue", "averageValue": "20" }
            }]
        }
    })
}

async fn setup() -> Api<ScaledTarget> {
    let kube = shared_stack().kube.as_ref().unwrap();
    let client = kube_client().await;
    ebb::crd::install(&client).await.unwrap();
    let ns = unique_namespace("crd");
    kube.create_namespace(&ns).await.unwrap();
    Api::namespaced(client, &ns)
}

/// Creates `object` and returns the API server's rejection message (panics if it was accepted).
async fn rejection(api: &Api<ScaledTarget>, name: &str, mut object: Value) -> String {
    object["metadata"]["name"] = json!(name);
    let st: ScaledTarget = serde_json::from_value(object).expect("deserializes client-side");
    match api.create(&PostParams::default(), &st).await {
        Ok(_) => panic!("{name}: the API server accepted an invalid ScaledTarget"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{name}: {status:?}");
            status.message
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

#[tokio::test]
async fn a_valid_scaled_target_is_accepted_with_defaults_filled_in_by_the_api_server() {
    use kube::api::{ApiResource, DynamicObject};
    let api = setup().await;
    // Sent as raw JSON without the defaulted fields, so that the API server fills them in.
    let mut object = valid();
    for field in ["pollingInterval", "mode", "minReplicas"] {
        object["spec"].as_object_mut().unwrap().remove(field);
    }
    object["spec"]["metrics"][0]["rabbitmq"]
        .as_object_mut()
        .unwrap()
        .remove("vhost");
    let ns = api.resource_url().split('/').nth(5).unwrap().to_string();
    let raw = Api::<DynamicObject>::namespaced_with(
        kube_client().await,
        &ns,
        &ApiResource::erase::<ScaledTarget>(&()),
    );
    raw.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap();
    let stored = raw.get("orders").await.unwrap();
    let spec = &stored.data["spec"];
    assert_eq!(spec["mode"], "Hpa");
    assert_eq!(spec["pollingInterval"], "15s");
    assert_eq!(spec["minReplicas"], 1);
    // No vhost default: the connection Secret's URL may name it (else `/`, when resolved).
    assert!(spec["metrics"][0]["rabbitmq"]["vhost"].is_null());
    assert_eq!(spec["metrics"][0]["rabbitmq"]["measure"], "Backlog");
    // ... and it reads back as the Rust type.
    let typed = api.get("orders").await.unwrap();
    assert_eq!(typed.spec.mode, ebb::crd::Mode::Hpa);
}

#[tokio::test]
async fn min_above_max_is_rejected() {
    let api = setup().await;
    let mut object = valid();
    object["spec"]["minReplicas"] = json!(5);
    object["spec"]["maxReplicas"] = json!(2);
    let message = rejection(&api, "min-above-max", object).await;
    assert!(
        message.contains("minReplicas must not exceed maxReplicas"),
        "{message}"
    );
}

#[tokio::test]
async fn two_sources_in_one_metric_are_rejected() {
    let api = setup().await;
    let mut object = valid();
    object["spec"]["metrics"][0]["prometheus"] =
        json!({ "address": "http://prometheus:9090", "query": "sum(up)" });
    let message = rejection(&api, "two-sources", object).await;
    assert!(message.contains("exactly one source"), "{message}");
    // ... and none is as wrong as two.
    let mut object = valid();
    object["spec"]["metrics"][0]
        .as_object_mut()
        .unwrap()
        .remove("rabbitmq");
    let message = rejection(&api, "no-source", object).await;
    assert!(message.contains("exactly one source"), "{message}");
}

#[tokio::test]
async fn a_negative_or_tiny_polling_interval_is_rejected() {
    let api = setup().await;
    for (name, interval) in [("negative", "-5s"), ("tiny", "10ms")] {
        let mut object = valid();
        object["spec"]["pollingInterval"] = json!(interval);
        let message = rejection(&api, name, object).await;
        assert!(
            message.contains("pollingInterval must be a duration between 1s and 1h"),
            "{message}"
        );
    }
}

/// KEDA reads `timeout: "1000"` as milliseconds: copied here, a bare number is refused with
/// the units it needs rather than read as seconds.
#[tokio::test]
async fn a_timeout_without_a_unit_is_rejected() {
    let api = setup().await;
    let mut object = valid();
    object["spec"]["metrics"][0]["rabbitmq"]["timeout"] = json!("1000");
    let message = rejection(&api, "bare-rabbitmq", object).await;
    assert!(
        message.contains("a timeout needs a unit, e.g. 1500ms or 5s"),
        "{message}"
    );
    let mut object = valid();
    object["spec"]["metrics"][0] = json!({
        "name": "rps",
        "prometheus": { "address": "http://prometheus:9090", "query": "sum(up)", "timeout": "2.5" },
        "target": { "type": "AverageValue", "averageValue": "20" }
    });
    let message = rejection(&api, "bare-prometheus", object.clone()).await;
    assert!(message.contains("KEDA reads"), "{message}");
    // With units, the same objects are accepted.
    object["spec"]["metrics"][0]["prometheus"]["timeout"] = json!("1500ms");
    object["metadata"]["name"] = json!("with-unit");
    let st: ScaledTarget = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &st).await.unwrap();
}

#[tokio::test]
async fn a_target_without_its_quantity_or_of_an_unknown_type_is_rejected() {
    let api = setup().await;
    let mut object = valid();
    object["spec"]["metrics"][0]["target"] = json!({ "type": "Value", "averageValue": "20" });
    let message = rejection(&api, "wrong-quantity", object).await;
    assert!(
        message.contains("target type Value needs value"),
        "{message}"
    );
    // An unknown type cannot even be built client-side, so send it as raw JSON.
    let mut object = valid();
    object["metadata"]["name"] = json!("utilization");
    object["spec"]["metrics"][0]["target"] = json!({ "type": "Utilization", "averageValue": "20" });
    let request = http::Request::post(format!(
        "/apis/ebb.dev/v1alpha1/namespaces/{}/scaledtargets",
        api.resource_url().split('/').nth(5).unwrap()
    ))
    .header("content-type", "application/json")
    .body(serde_json::to_vec(&object).unwrap())
    .unwrap();
    let err = kube_client().await.request_text(request).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("Unsupported value: \"Utilization\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_target_quantity_that_does_not_parse_is_rejected() {
    let api = setup().await;
    for (name, target, says) in [
        (
            "average-one",
            json!({ "type": "AverageValue", "averageValue": "one" }),
            "averageValue must be a Kubernetes quantity",
        ),
        (
            "value-5x",
            json!({ "type": "Value", "value": "5x" }),
            "value must be a Kubernetes quantity",
        ),
    ] {
        let mut object = valid();
        object["spec"]["metrics"][0]["target"] = target;
        let message = rejection(&api, name, object).await;
        assert!(message.contains(says), "{name}: {message}");
    }
    // Every form of quantity is accepted, a bare integer too (sent raw: the typed Quantity is a
    // string), and ebb reads each.
    use kube::api::{ApiResource, DynamicObject};
    let ns = api.resource_url().split('/').nth(5).unwrap().to_string();
    let raw = Api::<DynamicObject>::namespaced_with(
        kube_client().await,
        &ns,
        &ApiResource::erase::<ScaledTarget>(&()),
    );
    for (i, quantity) in ["20", "1.5k", "250m", "2Mi", "1e3", "0.5"]
        .iter()
        .enumerate()
    {
        let mut object = valid();
        object["metadata"]["name"] = json!(format!("quantity-{i}"));
        object["spec"]["metrics"][0]["target"]["averageValue"] = json!(quantity);
        raw.create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("{quantity}: {e}"));
        assert!(ebb::crd::milli_value(quantity).is_ok(), "{quantity}");
    }
    let mut object = valid();
    object["metadata"]["name"] = json!("quantity-integer");
    object["spec"]["metrics"][0]["target"] = json!({ "type": "Value", "value": 20 });
    raw.create(
        &PostParams::default(),
        &serde_json::from_value(object).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn scale_to_zero_is_accepted_in_every_mode_and_an_idle_count_other_than_zero_is_not() {
    let api = setup().await;
    for mode in ["Hpa", "Direct", "Shadow"] {
        let mut object = valid();
        object["metadata"]["name"] = json!(format!("zero-{}", mode.to_lowercase()));
        object["spec"]["mode"] = json!(mode);
        object["spec"]["minReplicas"] = json!(0);
        object["spec"]["cooldownSeconds"] = json!(120);
        object["spec"]["initialCooldownSeconds"] = json!(60);
        object["spec"]["metrics"][0]["activation"] = json!(2.5);
        let st: ScaledTarget = serde_json::from_value(object).unwrap();
        let created = api.create(&PostParams::default(), &st).await.unwrap();
        assert_eq!(created.spec.cooldown_seconds, Some(120));
        assert_eq!(created.spec.metrics[0].activation, Some(2.5));
    }
    let mut object = valid();
    object["spec"]["minReplicas"] = json!(2);
    object["spec"]["idleReplicas"] = json!(1);
    let message = rejection(&api, "idle-one", object).await;
    assert!(message.contains("idleReplicas"), "{message}");
    let mut object = valid();
    object["spec"]["cooldownSeconds"] = json!(-1);
    let message = rejection(&api, "cooldown-negative", object).await;
    assert!(message.contains("cooldownSeconds"), "{message}");
}

#[tokio::test]
async fn adaptive_bounds_are_checked_and_its_defaults_filled_in() {
    let api = setup().await;
    for (name, adaptive, expected) in [
        (
            "headroom",
            json!({ "minHeadroom": 0.5, "maxHeadroom": 0.2 }),
            "need 0 <= minHeadroom <= maxHeadroom",
        ),
        (
            "tolerance",
            json!({ "minTolerance": 0.3, "maxTolerance": 0.1 }),
            "need 0 <= minTolerance <= maxTolerance < 1",
        ),
        (
            "tolerance-one",
            json!({ "maxTolerance": 1.0 }),
            "would never scale down",
        ),
        (
            "window",
            json!({ "minScaleDownWindowSeconds": 600, "maxScaleDownWindowSeconds": 60 }),
            "need minScaleDownWindowSeconds <= maxScaleDownWindowSeconds",
        ),
        (
            "risk-zero",
            json!({ "underProvisionRisk": 0.0 }),
            "underProvisionRisk must be in (0, 0.5]",
        ),
        (
            "risk-high",
            json!({ "underProvisionRisk": 0.6 }),
            "underProvisionRisk must be in (0, 0.5]",
        ),
    ] {
        let mut object = valid();
        object["spec"]["adaptive"] = adaptive;
        let message = rejection(&api, name, object).await;
        assert!(message.contains(expected), "{name}: {message}");
    }
    // The edge of the risk's range is allowed; `{}` is on, with every default in the object.
    use kube::api::{ApiResource, DynamicObject};
    let ns = api.resource_url().split('/').nth(5).unwrap().to_string();
    let raw = Api::<DynamicObject>::namespaced_with(
        kube_client().await,
        &ns,
        &ApiResource::erase::<ScaledTarget>(&()),
    );
    for (name, adaptive) in [
        ("half", json!({ "underProvisionRisk": 0.5 })),
        ("defaults", json!({})),
    ] {
        let mut object = valid();
        object["metadata"]["name"] = json!(name);
        object["spec"]["adaptive"] = adaptive;
        raw.create(
            &PostParams::default(),
            &serde_json::from_value(object).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let stored = raw.get("defaults").await.unwrap();
    let adaptive = &stored.data["spec"]["adaptive"];
    assert_eq!(adaptive["enabled"], true);
    assert_eq!(adaptive["minHistorySeconds"], 3600);
    assert_eq!(adaptive["forecast"], true);
    let typed = api.get("defaults").await.unwrap();
    assert_eq!(typed.spec.adaptive, Some(Box::default()));
}

#[tokio::test]
async fn an_slo_needs_an_average_value_target_and_sane_bounds() {
    let api = setup().await;
    let slo = json!({
        "prometheus": { "address": "http://prometheus:9090", "query": "p99_latency_seconds" },
        "objective": 0.25
    });
    let mut on_value = valid();
    on_value["spec"]["metrics"][0]["target"] = json!({ "type": "Value", "value": "100" });
    on_value["spec"]["metrics"][0]["slo"] = slo.clone();
    let message = rejection(&api, "slo-on-value", on_value).await;
    assert!(
        message.contains("slo learns a per-pod target: it needs target type AverageValue"),
        "{message}"
    );
    for (name, field, value, says) in [
        ("slo-margin", "margin", 1.0, "slo: margin must be in [0, 1)"),
        (
            "slo-allowed",
            "allowedViolations",
            0.0,
            "slo: allowedViolations must be in (0, 0.5)",
        ),
        (
            "slo-ratio",
            "minTargetRatio",
            1.5,
            "slo: need 0 < minTargetRatio <= 1 <= maxTargetRatio",
        ),
    ] {
        let mut object = valid();
        let mut bad = slo.clone();
        bad[field] = json!(value);
        object["spec"]["metrics"][0]["slo"] = bad;
        let message = rejection(&api, name, object).await;
        assert!(message.contains(says), "{name}: {message}");
    }
    let mut ok = valid();
    ok["spec"]["metrics"][0]["slo"] = slo;
    let st: ScaledTarget = serde_json::from_value(ok).unwrap();
    let stored = api.create(&PostParams::default(), &st).await.unwrap();
    let learn = &stored.spec.metrics[0].slo.as_ref().unwrap().learn;
    assert_eq!((learn.margin, learn.allowed_violations), (0.1, 0.01));
}

#[tokio::test]
async fn a_drain_time_target_needs_its_fields_and_a_backlog_with_rates() {
    let api = setup().await;
    let drain = json!({ "type": "DrainTime", "drainSeconds": 60, "throughputPerPod": "10" });
    // Valid: a RabbitMQ queue (its rates come from the broker) and a Prometheus backlog with
    // an arrival-rate query.
    let mut ok = valid();
    ok["spec"]["metrics"][0]["target"] = drain.clone();
    ok["metadata"]["name"] = json!("drain-ok");
    api.create(&PostParams::default(), &serde_json::from_value(ok).unwrap())
        .await
        .expect("a DrainTime target on a RabbitMQ queue is valid");
    let prometheus = json!({ "address": "http://prometheus:9090", "query": "sum(kafka_lag)" });
    let mut ok = valid();
    ok["spec"]["metrics"][0] = json!({
        "name": "lag", "prometheus": prometheus, "target": drain,
        "arrivalRate": { "address": "http://prometheus:9090", "query": "sum(rate(produced[1m]))" }
    });
    ok["metadata"]["name"] = json!("drain-prometheus-ok");
    api.create(&PostParams::default(), &serde_json::from_value(ok).unwrap())
        .await
        .expect("a DrainTime target on a Prometheus backlog with arrivalRate is valid");

    let cases = [
        (
            "no-drain-seconds",
            json!({ "type": "DrainTime", "throughputPerPod": "10" }),
            None,
            "needs drainSeconds and throughputPerPod",
        ),
        (
            "zero-throughput",
            json!({ "type": "DrainTime", "drainSeconds": 60, "throughputPerPod": "0" }),
            None,
            "throughputPerPod must be a positive",
        ),
        (
            "drain-with-average-value",
            json!({ "type": "DrainTime", "drainSeconds": 60, "throughputPerPod": "10",
                    "averageValue": "5" }),
            None,
            "type DrainTime neither",
        ),
        (
            "drain-fields-on-average-value",
            json!({ "type": "AverageValue", "averageValue": "5", "drainSeconds": 60 }),
            None,
            "belong to type DrainTime only",
        ),
        (
            "drain-on-a-rate",
            drain.clone(),
            Some((
                "rabbitmq",
                json!({ "connectionSecretRef": { "name": "rabbit" },
                                      "queue": "orders", "measure": "PublishRate" }),
            )),
            "rabbitmq.measure must be Backlog",
        ),
        (
            "drain-without-arrival-rate",
            drain.clone(),
            Some(("prometheus", prometheus.clone())),
            "needs arrivalRate",
        ),
    ];
    for (name, target, source, expected) in cases {
        let mut object = valid();
        object["spec"]["metrics"][0]["target"] = target;
        if let Some((kind, config)) = source {
            let metric = object["spec"]["metrics"][0].as_object_mut().unwrap();
            metric.remove("rabbitmq");
            metric.insert(kind.into(), config);
        }
        let message = rejection(&api, name, object).await;
        assert!(message.contains(expected), "{name}: {message}");
    }
    // arrivalRate on a metric that does not read it.
    let mut object = valid();
    object["spec"]["metrics"][0]["arrivalRate"] = prometheus;
    let message = rejection(&api, "arrival-without-drain", object).await;
    assert!(
        message.contains("read only by target type DrainTime"),
        "{message}"
    );
}

/// Headers, tenant and queryParameters of a Prometheus metric: a valid set is accepted, and
/// each refusal names the header or parameter at fault.
#[tokio::test]
async fn prometheus_headers_tenant_and_parameters_are_checked_by_name() {
    let api = setup().await;
    let with = |extra: Value| {
        let mut prometheus =
            json!({ "address": "http://mimir:8080/prometheus", "query": "sum(up)" });
        prometheus
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let mut object = valid();
        object["spec"]["metrics"][0] = json!({
            "name": "rps", "prometheus": prometheus,
            "target": { "type": "AverageValue", "averageValue": "20" }
        });
        object
    };
    let mut ok = with(json!({
        "authSecretRef": { "name": "prom-auth" },
        "tenant": "team-a",
        "headers": [
            { "name": "X-Team", "value": "orders" },
            { "name": "X-Tenant-Token", "valueFrom": { "secretKeyRef": { "key": "tenantToken" } } }
        ],
        "queryParameters": { "partial_response": "false", "dedup": "true" }
    }));
    ok["metadata"]["name"] = json!("headers-ok");
    api.create(&PostParams::default(), &serde_json::from_value(ok).unwrap())
        .await
        .expect("headers, a tenant and query parameters are valid");

    let cases = [
        (
            "header-name",
            json!({ "headers": [{ "name": "X Team", "value": "orders" }] }),
            "headers[0].name in body should match",
        ),
        (
            "reserved-header",
            json!({ "headers": [{ "name": "Host", "value": "mimir" }] }),
            "headers: Host is set by ebb's HTTP client: remove it",
        ),
        (
            "duplicate-header",
            json!({ "headers": [{ "name": "X-Team", "value": "a" }, { "name": "x-team", "value": "b" }] }),
            "headers: a header name is given more than once (names are case-insensitive)",
        ),
        (
            "value-and-value-from",
            json!({ "authSecretRef": { "name": "prom-auth" }, "headers": [{
                "name": "X-Token", "value": "t",
                "valueFrom": { "secretKeyRef": { "key": "token" } } }] }),
            "headers: X-Token needs exactly one of value and valueFrom",
        ),
        (
            "value-from-without-secret",
            json!({ "headers": [{ "name": "X-Token",
                "valueFrom": { "secretKeyRef": { "key": "token" } } }] }),
            "headers: valueFrom reads a key of the authSecretRef Secret: set authSecretRef",
        ),
        (
            "tenant-and-header",
            json!({ "tenant": "team-a", "headers": [{ "name": "X-Scope-OrgID", "value": "team-b" }] }),
            "tenant sets the X-Scope-OrgID header: set it with tenant or in headers, not both",
        ),
        (
            "reserved-parameter",
            json!({ "queryParameters": { "dedup": "true", "step": "60" } }),
            "queryParameters: step is set by ebb on every query (query, time, timeout, start, end, step): remove it",
        ),
    ];
    for (name, extra, expected) in cases {
        let message = rejection(&api, name, with(extra)).await;
        assert!(message.contains(expected), "{name}: {message}");
    }
}

/// `ebb import keda` writes what the API server accepts: every ScaledTarget converted from
/// tests/data/keda/orders.yaml is created (schema and CEL rules).
#[tokio::test]
async fn scaled_targets_imported_from_keda_are_accepted_and_so_are_their_hpas() {
    let api = setup().await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keda");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut imported = 0;
    for file in files {
        let input = std::fs::read_to_string(&file).unwrap();
        let outcome = ebb::import::keda::import(&input).unwrap();
        assert!(
            outcome.refusals.is_empty(),
            "{file:?}: {:?}",
            outcome.refusals
        );
        for mut target in outcome.targets {
            // The namespace of the Api (the API server fills it in), not the input's.
            target.metadata.namespace = None;
            let name = target.metadata.name.clone().unwrap();
            let created = api
                .create(&PostParams::default(), &target)
                .await
                .unwrap_or_else(|e| {
                    panic!("{name}: the API server refused an imported ScaledTarget: {e}")
                });
            assert_eq!(created.spec, target.spec, "{name}: changed on the way in");
            // In mode Hpa ebb owns this HPA for it: the API server takes it too.
            let hpa = ebb::controller::hpa::desired_hpa(&created);
            let hpas = Api::<HorizontalPodAutoscaler>::namespaced(
                api.clone().into_client(),
                created.metadata.namespace.as_deref().unwrap(),
            );
            let dry_run = PostParams {
                dry_run: true,
                ..Default::default()
            };
            hpas.create(&dry_run, &hpa)
                .await
                .unwrap_or_else(|e| panic!("{name}: the API server refused its HPA: {e}"));
            imported += 1;
        }
    }
    assert!(
        imported >= 6,
        "{imported} ScaledTargets from tests/data/keda"
    );
}

#[tokio::test]
async fn a_formula_is_checked_where_cel_can_and_accepted_with_its_default_name() {
    let api = setup().await;
    let with_formula = |expression: &str| {
        let mut object = valid();
        object["spec"]["metrics"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "name": "card-refunds",
                "prometheus": { "address": "http://prometheus:9090", "query": "sum(refunds)" },
                "target": { "type": "Value", "value": "100" }
            }));
        object["spec"]["formula"] = json!({
            "expression": expression,
            "target": { "type": "AverageValue", "averageValue": "10" }
        });
        object
    };
    let message = rejection(&api, "formula-string", with_formula("backlog + size('x')")).await;
    assert!(
        message.contains("formula.expression: only numbers, metric names"),
        "{message}"
    );
    let mut object = with_formula("backlog");
    object["spec"]["formula"]["name"] = json!("backlog");
    let message = rejection(&api, "formula-name", object).await;
    assert!(
        message.contains("formula.name must differ from every metric's name"),
        "{message}"
    );
    let mut object = with_formula("backlog");
    object["spec"]["formula"]["target"] =
        json!({ "type": "DrainTime", "drainSeconds": 60, "throughputPerPod": "5" });
    let message = rejection(&api, "formula-drain", object).await;
    assert!(
        message.contains("formula.target: type Value or AverageValue"),
        "{message}"
    );
    let mut object = with_formula("backlog");
    object["spec"]["metrics"][0]["target"] =
        json!({ "type": "DrainTime", "drainSeconds": 60, "throughputPerPod": "5" });
    let message = rejection(&api, "formula-drain-input", object).await;
    assert!(
        message.contains("with a formula the metrics are its inputs"),
        "{message}"
    );

    let mut object =
        with_formula("backlog > 100 && card_refunds > 3 ? backlog : max(card_refunds, 1)");
    object["metadata"]["name"] = json!("formula-ok");
    let st: ScaledTarget = serde_json::from_value(object).unwrap();
    let created = api.create(&PostParams::default(), &st).await.unwrap();
    let formula = created.spec.formula.unwrap();
    assert_eq!(formula.name, "formula");
    // What CEL cannot check (the grammar, the names) the controller reports with where.
    assert!(formula.parse(&created.spec.metrics).is_ok());
}
