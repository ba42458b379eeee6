//! `ebb import keda` as a user runs it: the built binary on tests/data/keda/orders.yaml; and the
//! round trip: for every ScaledObject of tests/data/keda/, the HPA ebb owns for its import
//! against the HPA KEDA makes for it.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use ebb::crd::ScaledTarget;
use ebb::import::keda::Loss;
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, ExternalMetricSource, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricIdentifier, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use serde::Deserialize as _;
use serde_yaml::Value;

const INPUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keda/orders.yaml");

fn ebb(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ebb runs");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn targets(stdout: &[u8]) -> Vec<ScaledTarget> {
    let text = std::str::from_utf8(stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(text)
        .map(|document| ScaledTarget::deserialize(document).expect("a ScaledTarget"))
        .collect()
}

#[test]
fn scaled_objects_become_scaled_targets_and_every_loss_is_listed() {
    let out = ebb(&["import", "keda", INPUT], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let targets = targets(&out.stdout);
    let names: Vec<_> = targets
        .iter()
        .map(|t| {
            (
                t.metadata.namespace.clone().unwrap(),
                t.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("orders".into(), "api".into()),
            ("orders".into(), "worker".into())
        ]
    );

    let api = &targets[0].spec;
    assert_eq!((api.min_replicas, api.max_replicas), (2, 20));
    let names: Vec<&str> = api.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        ["http-rate", "inflight"],
        "the cpu trigger is dropped"
    );
    // scalingModifiers: the formula over the trigger names, in ebb's syntax over the metrics'.
    let formula = api
        .formula
        .as_ref()
        .expect("scalingModifiers as spec.formula");
    assert_eq!(formula.name, "composite");
    assert_eq!(
        formula.expression,
        "inflight > 50 && http_rate > 5 ? max(http_rate, inflight / 2) : http_rate"
    );
    assert_eq!(formula.target.average_value.as_ref().unwrap().0, "20");
    assert_eq!(formula.activation, Some(5.0));
    formula.parse(&api.metrics).expect("a formula ebb takes");
    let prometheus = api.metrics[0].prometheus.as_ref().unwrap();
    assert_eq!(prometheus.tenant.as_deref(), Some("team-a"));
    assert_eq!(prometheus.timeout.as_deref(), Some("1500ms"));
    assert_eq!(
        prometheus.auth_secret_ref.as_ref().unwrap().name,
        "prometheus-credentials"
    );
    let worker = &targets[1].spec;
    let rabbitmq = worker.metrics[0].rabbitmq.as_ref().unwrap();
    assert_eq!(rabbitmq.measure, ebb::crd::Measure::Ready);
    assert_eq!(rabbitmq.connection_secret_ref.name, "rabbitmq-connection");
    assert_eq!(worker.cooldown_seconds, Some(120));

    for line in [
        "orders/api: triggers[1] (type cpu): ebb has no resource metrics",
        "orders/worker: triggers[1] (type kafka): no kafka source in ebb; dropped",
        "orders/worker: spec.fallback.behavior: KEDA's static fallback sets exactly 6 replicas",
        "orders/api: triggers[0] (type prometheus) authenticationRef (prometheus-auth parameter bearerToken): ebb reads fixed keys: Secret prometheus-credentials needs key bearerToken (KEDA reads key token)",
        "orders/api: spec.advanced.scalingModifiers.formula: \"inflight > 50 and http_rate > 5 ? max(http_rate, inflight / 2) : http_rate\" is written in ebb's syntax as \"inflight > 50 && http_rate > 5 ? max(http_rate, inflight / 2) : http_rate\"; note",
    ] {
        assert!(stderr.contains(line), "missing {line:?} in:\n{stderr}");
    }
    // The CA's key is already ebb's name (ca.crt) and the RabbitMQ Secret's key `host` is read
    // as the AMQP URL: no line for them.
    assert!(!stderr.contains("parameter ca"), "{stderr}");
    assert!(!stderr.contains("rabbitmq-auth parameter host"), "{stderr}");
}

#[test]
fn check_exits_2_when_something_was_not_carried_and_0_when_all_was() {
    let lossy = ebb(&["import", "keda", "--check", INPUT], None);
    assert_eq!(
        lossy.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&lossy.stderr)
    );
    assert_eq!(
        targets(&lossy.stdout).len(),
        2,
        "--check still writes the conversion"
    );

    // From stdin; a trigger carried over whole (notes only).
    let clean = "apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: api, namespace: orders}
spec:
  scaleTargetRef: {name: api}
  triggers:
    - type: prometheus
      metadata: {serverAddress: 'http://prometheus:9090', query: up, threshold: '10'}
";
    let out = ebb(&["import", "keda", "--check", "-"], Some(clean));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(targets(&out.stdout).len(), 1);
}

#[test]
fn a_refused_object_exits_1_and_says_why() {
    let refused = "kind: ScaledObject
metadata: {name: api, namespace: orders}
spec:
  scaleTargetRef: {name: api}
  triggers:
    - type: prometheus
      metadata: {serverAddress: 'http://prometheus:9090', query: up, threshold: one}
";
    let out = ebb(&["import", "keda", "-"], Some(refused));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: orders/api: triggers[0] (type prometheus) metadata.threshold: \"one\" is not a number (KEDA refuses it too); not imported"),
        "{stderr}"
    );
}

/// A formula ebb cannot write as KEDA computes it (KEDA's docs' `count` example) refuses the
/// ScaledObject: without it the workload would scale on other numbers.
#[test]
fn a_formula_with_no_counterpart_refuses_its_object() {
    let refused = "kind: ScaledObject
metadata: {name: api, namespace: orders}
spec:
  scaleTargetRef: {name: api}
  advanced:
    scalingModifiers: {formula: 'count([trig_one,trig_two],{#>1}) > 1 ? 5 : 0', target: '2'}
  triggers:
    - {type: prometheus, name: trig_one, metadata: {serverAddress: 'http://prometheus:9090', query: up, threshold: '10'}}
    - {type: prometheus, name: trig_two, metadata: {serverAddress: 'http://prometheus:9090', query: up, threshold: '10'}}
";
    let out = ebb(&["import", "keda", "--check", "-"], Some(refused));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: orders/api: spec.advanced.scalingModifiers.formula: the function count() has no counterpart: ebb's formula has numbers, trigger names, + - * /, comparisons, and/or/not, ?:, min() and max(); not imported"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Round trip (issue #17, item 6): in mode Hpa the HPA ebb owns for an imported ScaledTarget
// scales the same workload the same way as the HPA KEDA makes for the ScaledObject.

/// The HPA KEDA makes for a ScaledObject, built by KEDA's rules (kedacore/keda, cited per rule),
/// with where each part comes from, so that a part ebb does not carry can be matched to the
/// import's report.
struct KedaHpa {
    hpa: HorizontalPodAutoscaler,
    /// Per metric of `hpa`, the ScaledObject field it comes from: `triggers[i] (type t)` (the
    /// import's name for a trigger) or `spec.advanced.scalingModifiers`.
    sources: Vec<String>,
    /// `advanced.horizontalPodAutoscalerConfig.behavior` before the pause annotations.
    spec_behavior: Option<HorizontalPodAutoscalerBehavior>,
    /// The pause annotations that changed the behavior.
    paused: Vec<&'static str>,
}

/// A YAML scalar as KEDA reads it (its metadata values are strings).
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn float(v: &Value, what: &str) -> Result<Option<f64>, String> {
    text(v)
        .map(|t| t.parse::<f64>().map_err(|e| format!("{what}: {t:?}: {e}")))
        .transpose()
}

/// pkg/scalers/scaler.go `GetMetricTargetType`: unset is AverageValue, Utilization is refused
/// for anything but cpu and memory.
fn external_target_type(trigger: &Value) -> Result<String, String> {
    match text(&trigger["metricType"]).as_deref() {
        None => Ok("AverageValue".into()),
        Some("Utilization") => Err("metricType Utilization on an external scaler".into()),
        Some(other) => Ok(other.into()),
    }
}

/// pkg/scalers/scaler.go `GetMetricTargetMili`: the float as `fmt.Sprintf("%.3f")`
/// (`quantityFromFloat64`), as Value or AverageValue.
fn target_mili(type_: &str, value: f64) -> MetricTarget {
    target_quantity(type_, Quantity(format!("{value:.3}")))
}

fn target_quantity(type_: &str, q: Quantity) -> MetricTarget {
    MetricTarget {
        type_: type_.into(),
        average_value: (type_ == "AverageValue").then(|| q.clone()),
        value: (type_ != "AverageValue").then_some(q),
        ..Default::default()
    }
}

fn external(name: String, target: MetricTarget) -> MetricSpec {
    MetricSpec {
        type_: "External".into(),
        external: Some(ExternalMetricSource {
            metric: MetricIdentifier {
                name,
                selector: None,
            },
            target,
        }),
        ..Default::default()
    }
}

/// pkg/util `NormalizeString`, for the metric names KEDA gives.
fn normalize(s: &str) -> String {
    s.chars()
        .map(|c| if "/.:%()".contains(c) { '-' } else { c })
        .collect()
}

/// One trigger's metric spec, each scaler's `GetMetricSpecForScaling` (pkg/scalers/); metric
/// names are `GenerateMetricNameWithIndex` (`s<index>-...`, pkg/scalers/scaler.go).
fn keda_metric(index: usize, trigger: &Value) -> Result<MetricSpec, String> {
    let metadata = &trigger["metadata"];
    let type_ = text(&trigger["type"]).unwrap_or_default();
    Ok(match type_.as_str() {
        // prometheus_scaler.go: `s<i>-prometheus`, GetMetricTargetMili of `threshold` (required).
        "prometheus" => {
            let threshold = float(&metadata["threshold"], "threshold")?
                .ok_or("prometheus: threshold is required")?;
            external(
                format!("s{index}-prometheus"),
                target_mili(&external_target_type(trigger)?, threshold),
            )
        }
        // rabbitmq_scaler.go: `s<i>-rabbitmq-<queueName>`, GetMetricTargetMili of `value`;
        // validateTrigger: none of queueLength, mode, value is QueueLength 20
        // (defaultRabbitMQQueueLength), the deprecated queueLength alone is the value.
        "rabbitmq" => {
            let queue = text(&metadata["queueName"]).ok_or("rabbitmq: queueName")?;
            let queue_length = float(&metadata["queueLength"], "queueLength")?.unwrap_or(0.0);
            let value = float(&metadata["value"], "value")?.unwrap_or(0.0);
            let mode = text(&metadata["mode"]);
            let value = match (queue_length, mode, value) {
                (0.0, None, 0.0) => 20.0,
                (q, None, 0.0) => q,
                (0.0, Some(_), v) if v != 0.0 => v,
                _ => return Err("rabbitmq: mode and value, or queueLength alone".into()),
            };
            external(
                format!("s{index}-{}", normalize(&format!("rabbitmq-{queue}"))),
                target_mili(&external_target_type(trigger)?, value),
            )
        }
        // kafka_scaler.go: `s<i>-kafka-<topic>`, GetMetricTarget (an integer quantity) of
        // lagThreshold, default 10.
        "kafka" => {
            let topic = text(&metadata["topic"]).unwrap_or_default();
            let lag: i64 = text(&metadata["lagThreshold"])
                .map_or(Ok(10), |t| t.parse())
                .map_err(|e| format!("kafka: lagThreshold: {e}"))?;
            external(
                format!("s{index}-{}", normalize(&format!("kafka-{topic}"))),
                target_quantity(&external_target_type(trigger)?, Quantity(lag.to_string())),
            )
        }
        // cpu_memory_scaler.go: a Resource metric; metricType Utilization (averageUtilization,
        // an integer) or AverageValue (a quantity) of `value`.
        "cpu" | "memory" => {
            let value = text(&metadata["value"]).ok_or("cpu/memory: value")?;
            let metric_type = text(&trigger["metricType"])
                .or_else(|| text(&metadata["type"]))
                .ok_or("cpu/memory: metricType")?;
            let target = match metric_type.as_str() {
                "Utilization" => MetricTarget {
                    type_: metric_type.clone(),
                    average_utilization: Some(value.parse().map_err(|e| format!("{e}"))?),
                    ..Default::default()
                },
                "AverageValue" => target_quantity("AverageValue", Quantity(value)),
                other => return Err(format!("cpu/memory: metricType {other}")),
            };
            MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: type_.clone(),
                    target,
                }),
                ..Default::default()
            }
        }
        other => return Err(format!("no rule here for trigger type {other}: add one")),
    })
}

/// The HPA KEDA makes for `so`, or why KEDA refuses it.
fn keda_hpa(so: &Value) -> Result<KedaHpa, String> {
    let spec = &so["spec"];
    let name = text(&so["metadata"]["name"]).ok_or("no name")?;
    let min = spec["minReplicaCount"].as_i64();
    let max = spec["maxReplicaCount"].as_i64();
    // apis/keda/v1alpha1/scaledobject_types.go `GetHPAMinReplicas`: minReplicaCount if above 0,
    // else 1 (KEDA scales between 0 and 1 itself); `GetHPAMaxReplicas`: maxReplicaCount, else
    // 100.
    let hpa_min = min.filter(|m| *m > 0).unwrap_or(1) as i32;
    let hpa_max = max.unwrap_or(100) as i32;
    // ibid. `CheckReplicaCountBoundsAreValid` (webhook and controller): an unset minimum reads 0.
    let check_min = if min.is_some() { hpa_min } else { 0 };
    if check_min > hpa_max {
        return Err(format!("min {check_min} > max {hpa_max}"));
    }
    if let Some(idle) = spec["idleReplicaCount"].as_i64()
        && idle >= i64::from(check_min)
    {
        return Err(format!(
            "idleReplicaCount {idle} >= minReplicaCount {check_min}"
        ));
    }

    // controllers/keda/hpa.go `getScaledObjectMetricSpecs`: the scalers' specs in trigger order
    // (pkg/scaling/scalers_builder.go `buildScalers`, pkg/scaling/cache `GetMetricSpecForScaling`),
    // then `sort.Slice` by metric source type ("External" before "Resource"; for up to 12
    // metrics Go's sort is an insertion sort, so stable).
    let triggers = spec["triggers"].as_sequence().cloned().unwrap_or_default();
    let mut metrics = Vec::new();
    for (i, trigger) in triggers.iter().enumerate() {
        let field = format!(
            "triggers[{i}] (type {})",
            text(&trigger["type"]).unwrap_or_default()
        );
        metrics.push((field, keda_metric(i, trigger)?));
    }
    metrics.sort_by(|a, b| a.1.type_.cmp(&b.1.type_));
    // ibid.: with scalingModifiers (`IsUsingModifiers`: any of its fields set) and a target
    // above 0, the external metrics give way to one composite metric (resource metrics stay,
    // first): target `resource.NewMilliQuantity(int64(target*1000))` of `metricType`
    // (default AverageValue; Utilization refused).
    let modifiers = &spec["advanced"]["scalingModifiers"];
    let in_use = ["formula", "target", "activationTarget", "metricType"]
        .iter()
        .any(|k| text(&modifiers[*k]).is_some());
    if in_use {
        // apis/keda/v1alpha1/scaledobject_webhook.go `ValidateAndCompileScalingModifiers`.
        text(&modifiers["formula"]).ok_or("scalingModifiers without a formula")?;
        let target = float(&modifiers["target"], "scalingModifiers.target")?
            .ok_or("a formula without a target")?;
        let metric_type = text(&modifiers["metricType"]).unwrap_or("AverageValue".into());
        if metric_type == "Utilization" || target <= 0.0 {
            return Err("scalingModifiers: Utilization, or a target not above 0".into());
        }
        let milli = (target * 1000.0) as i64;
        metrics.retain(|(_, m)| m.type_ == "Resource");
        metrics.push((
            "spec.advanced.scalingModifiers".into(),
            // kedav1alpha1.CompositeMetricName.
            external(
                "composite-metric".into(),
                target_quantity(&metric_type, Quantity(format!("{milli}m"))),
            ),
        ));
    }

    // controllers/keda/hpa.go `newHPAForScaledObject`: behavior from
    // advanced.horizontalPodAutoscalerConfig; the paused-scale-in / -out annotations
    // (`NeedToPauseScaleIn`/`Out`, true unless strconv.ParseBool says false) set
    // scaleDown / scaleUp selectPolicy Disabled.
    let hpa_config = &spec["advanced"]["horizontalPodAutoscalerConfig"];
    let spec_behavior: Option<HorizontalPodAutoscalerBehavior> =
        serde_yaml::from_value(hpa_config["behavior"].clone()).map_err(|e| e.to_string())?;
    let mut behavior = spec_behavior.clone();
    let mut paused = Vec::new();
    for (annotation, down) in [
        ("autoscaling.keda.sh/paused-scale-in", true),
        ("autoscaling.keda.sh/paused-scale-out", false),
    ] {
        let Some(value) = text(&so["metadata"]["annotations"][annotation]) else {
            continue;
        };
        if matches!(
            value.as_str(),
            "0" | "f" | "F" | "false" | "FALSE" | "False"
        ) {
            continue;
        }
        let b = behavior.get_or_insert_with(Default::default);
        let rules = if down {
            &mut b.scale_down
        } else {
            &mut b.scale_up
        };
        rules.get_or_insert_with(Default::default).select_policy = Some("Disabled".into());
        paused.push(annotation);
    }
    // ibid. `getHPAName`: horizontalPodAutoscalerConfig.name, else keda-hpa-<name>;
    // scaleTargetRef from apis/keda/v1alpha1/gvkr.go `ParseGVKR`: apps/v1 and Deployment
    // unless given.
    let hpa_name = text(&hpa_config["name"]).unwrap_or(format!("keda-hpa-{name}"));
    let target = &spec["scaleTargetRef"];
    let (sources, metrics): (Vec<String>, Vec<MetricSpec>) = metrics.into_iter().unzip();
    Ok(KedaHpa {
        hpa: HorizontalPodAutoscaler {
            metadata: ObjectMeta {
                name: Some(hpa_name),
                namespace: text(&so["metadata"]["namespace"]),
                ..Default::default()
            },
            spec: HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some(text(&target["apiVersion"]).unwrap_or("apps/v1".into())),
                    kind: text(&target["kind"]).unwrap_or("Deployment".into()),
                    name: text(&target["name"]).ok_or("no scaleTargetRef.name")?,
                },
                min_replicas: Some(hpa_min),
                max_replicas: hpa_max,
                metrics: Some(metrics),
                behavior,
            },
            status: None,
        },
        sources,
        spec_behavior,
        paused,
    })
}

/// How a metric scales, names aside: its source type, and its target's type and quantities in
/// milli-units (as the HPA computes).
fn scales_as(m: &MetricSpec) -> (String, String, Option<i64>, Option<i64>, Option<i32>) {
    let target = match (&m.external, &m.resource) {
        (Some(e), _) => &e.target,
        (_, Some(r)) => &r.target,
        _ => panic!("{m:?}: neither External nor Resource"),
    };
    let milli = |q: &Option<Quantity>| q.as_ref().map(|q| ebb::crd::milli_value(&q.0).unwrap());
    (
        m.type_.clone(),
        target.type_.clone(),
        milli(&target.value),
        milli(&target.average_value),
        target.average_utilization,
    )
}

/// Every ScaledObject of tests/data/keda/ that the import takes: KEDA's HPA and the HPA ebb
/// owns for its import (`desired_hpa`, mode Hpa) have the same name and scaleTargetRef, the same
/// minReplicas and maxReplicas, the same behavior, and per metric, in order, the same source
/// type, target type and quantity. Metric names differ by design (KEDA's `s0-prometheus`,
/// `composite-metric`; ebb's are the ScaledTarget's metric names, served by ebb). Where ebb's HPA
/// lacks something of KEDA's, the import has said so: a trigger it drops (its metric is then
/// not in ebb's HPA), a pause annotation it drops (KEDA's Disabled selectPolicy); a fallback
/// that differs (neither HPA shows a fallback) is reported too.
#[test]
fn the_hpa_ebb_owns_for_an_import_scales_as_the_hpa_keda_makes() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/keda");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut compared = Vec::new();
    for file in &files {
        let input = std::fs::read_to_string(file).unwrap();
        let outcome = ebb::import::keda::import(&input).unwrap();
        let objects = serde_yaml::Deserializer::from_str(&input)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|d| d["kind"].as_str() == Some("ScaledObject"));
        for so in objects {
            let object = format!(
                "{}/{}",
                text(&so["metadata"]["namespace"]).unwrap(),
                text(&so["metadata"]["name"]).unwrap()
            );
            let what = format!("{} {object}", file.display());
            if outcome.refusals.iter().any(|r| r.object == object) {
                continue;
            }
            let keda = keda_hpa(&so)
                .unwrap_or_else(|e| panic!("{what}: KEDA refuses it ({e}), the import took it"));
            let target = outcome
                .targets
                .iter()
                .find(|t| {
                    format!(
                        "{}/{}",
                        t.metadata.namespace.as_deref().unwrap_or_default(),
                        t.metadata.name.as_deref().unwrap_or_default()
                    ) == object
                })
                .unwrap_or_else(|| panic!("{what}: not refused and not written"));
            let reported = |field: &str, loss: Loss| {
                outcome
                    .findings
                    .iter()
                    .any(|f| f.object == object && f.field == field && f.loss == loss)
            };
            let ebb_hpa = ebb::controller::hpa::desired_hpa(target);
            let (ours, theirs) = (&ebb_hpa.spec, &keda.hpa.spec);

            // The same HPA (ebb takes KEDA's over), on the same workload, within the same bounds.
            assert_eq!(
                ebb_hpa.metadata.name, keda.hpa.metadata.name,
                "{what}: name"
            );
            assert_eq!(
                ebb_hpa.metadata.namespace, keda.hpa.metadata.namespace,
                "{what}"
            );
            assert_eq!(
                ours.scale_target_ref, theirs.scale_target_ref,
                "{what}: scaleTargetRef"
            );
            assert_eq!(
                (ours.min_replicas, ours.max_replicas),
                (theirs.min_replicas, theirs.max_replicas),
                "{what}: minReplicas, maxReplicas"
            );

            // The same behavior but for the pause annotations, which ebb drops and says so.
            assert_eq!(ours.behavior, keda.spec_behavior, "{what}: behavior");
            for annotation in &keda.paused {
                assert!(
                    reported(
                        &format!("metadata.annotations[{annotation}]"),
                        Loss::Dropped
                    ),
                    "{what}: KEDA's HPA has a Disabled selectPolicy for {annotation}, ebb's not, and the import does not say so: {:#?}",
                    outcome.findings
                );
            }
            if keda.paused.is_empty() {
                assert_eq!(ours.behavior, theirs.behavior, "{what}: behavior");
            }

            // The same metrics, in order, but for those of triggers the import drops and says so.
            let carried: Vec<_> = keda
                .sources
                .iter()
                .zip(theirs.metrics.iter().flatten())
                .filter(|(source, _)| !reported(source, Loss::Dropped))
                .map(|(_, m)| scales_as(m))
                .collect();
            let ebb_metrics: Vec<_> = ours.metrics.iter().flatten().map(scales_as).collect();
            assert_eq!(
                ebb_metrics, carried,
                "{what}: metrics (KEDA's from {:?})",
                keda.sources
            );

            // Fallback: KEDA's acts in its metrics adapter (pkg/fallback), ebb's in its
            // machine; neither HPA shows it. Where they differ the import says so: KEDA's
            // static fallback sets exactly `replicas`, ebb's never scales down; KEDA replaces
            // each failing trigger, ebb falls back when every metric fails.
            let fallback = &so["spec"]["fallback"];
            if !fallback.is_null() {
                let behavior = text(&fallback["behavior"]).unwrap_or("static".into());
                if behavior == "static" {
                    assert!(
                        reported("spec.fallback.behavior", Loss::Changed),
                        "{what}: static fallback"
                    );
                }
                if target.spec.formula.is_none() && target.spec.metrics.len() > 1 {
                    assert!(
                        reported("spec.fallback", Loss::Changed),
                        "{what}: fallback per trigger"
                    );
                }
            }
            compared.push(object);
        }
    }
    // Not vacuous: every ScaledObject of the data files is compared.
    assert_eq!(
        compared,
        [
            "orders/api",
            "orders/worker",
            "shop/checkout",
            "shop/search",
            "shop/mailer",
            "shop/invoices"
        ]
    );
}
