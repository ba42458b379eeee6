//! The mapping, case by case. The inputs (and whether KEDA accepts them) are KEDA's own, cited
//! per case from kedacore/keda: `pkg/scalers/prometheus_scaler_test.go` (`testPromMetadata`,
//! `testPrometheusAuthMetadata`), `pkg/scalers/rabbitmq_scaler_test.go`
//! (`testRabbitMQMetadata`, `testRabbitMQAuthParamData`) and `config/samples/`; the
//! scalingModifiers formulas from KEDA's docs, `scaledobject_webhook_test.go` and e2e tests
//! (cited at [`scaling_modifiers_cases_of_keda`]). The expected outcome is ebb's: converted (to
//! what), converted with report lines, or refused.

use serde_json::{Value as Json, json};

use super::*;
use crate::crd::{Measure, Metric};
use crate::source::rabbitmq::Aggregate;

type Pairs = &'static [(&'static str, &'static str)];

/// What a case should come to.
enum Expect {
    /// Converted: `check` looks at the metric; `losses` are exactly the trigger's lines that
    /// fail `--check` (a loss and a piece of the field), notes aside.
    Converted {
        check: fn(&Metric),
        losses: &'static [(Loss, &'static str)],
    },
    /// Refused: the refusal's field and message contain this.
    Refused(&'static str),
}
use Expect::*;

struct Case {
    /// Upstream file, table and case comment.
    source: &'static str,
    metadata: Pairs,
    /// TriggerAuthentication parameters, each from key of the same name in Secret `creds`.
    auth: Option<&'static [&'static str]>,
    expect: Expect,
}

fn trigger_auth(params: &[&str]) -> Json {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": "auth", "namespace": "ns"},
        "spec": {"secretTargetRef": params.iter().map(|p| json!({
            "parameter": p, "name": "creds", "key": p
        })).collect::<Vec<_>>()}
    })
}

fn scaled_object(trigger: Json) -> Json {
    json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "so", "namespace": "ns"},
        "spec": {"scaleTargetRef": {"name": "app"}, "triggers": [trigger]}
    })
}

fn yaml(documents: &[Json]) -> String {
    documents
        .iter()
        .map(|d| format!("---\n{}", serde_yaml::to_string(d).unwrap()))
        .collect()
}

fn run_case(type_: &str, case: &Case) {
    let metadata: serde_json::Map<String, Json> = case
        .metadata
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let mut trigger = json!({"type": type_, "metadata": metadata});
    let mut documents = Vec::new();
    if let Some(params) = case.auth {
        trigger["authenticationRef"] = json!({"name": "auth"});
        documents.push(trigger_auth(params));
    }
    documents.push(scaled_object(trigger));
    let outcome = import(&yaml(&documents)).unwrap();
    let what = case.source;
    match &case.expect {
        Refused(expected) => {
            assert!(
                outcome.targets.is_empty(),
                "{what}: expected a refusal, got {:?}",
                outcome.targets
            );
            assert!(
                outcome
                    .refusals
                    .iter()
                    .any(|r| format!("{}: {}", r.field, r.message).contains(expected)),
                "{what}: no refusal mentions {expected:?}: {:#?}",
                outcome.refusals
            );
        }
        Converted { check, losses } => {
            assert!(
                outcome.refusals.is_empty(),
                "{what}: refused: {:#?}",
                outcome.refusals
            );
            let metric = &outcome.targets[0].spec.metrics[0];
            check(metric);
            let found: Vec<&Finding> = outcome
                .findings
                .iter()
                .filter(|f| f.loss.fails_check())
                .collect();
            for (loss, field) in *losses {
                assert!(
                    found
                        .iter()
                        .any(|f| f.loss == *loss && f.field.contains(field)),
                    "{what}: no {loss:?} line on {field:?}: {found:#?}"
                );
            }
            assert_eq!(found.len(), losses.len(), "{what}: other lines: {found:#?}");
        }
    }
}

fn prom(m: &Metric) -> &PrometheusConfig {
    m.prometheus.as_ref().expect("a prometheus metric")
}

fn rabbit(m: &Metric) -> &RabbitMqConfig {
    m.rabbitmq.as_ref().expect("a rabbitmq metric")
}

fn average(m: &Metric) -> &str {
    assert_eq!(m.target.type_, TargetType::AverageValue);
    &m.target.average_value.as_ref().unwrap().0
}

use crate::crd::{PrometheusConfig, RabbitMqConfig};

const PROM_OK: Pairs = &[
    ("serverAddress", "http://localhost:9090"),
    ("metricName", "http_requests_total"),
    ("threshold", "100"),
    ("query", "up"),
];

/// `testPromMetadata` of pkg/scalers/prometheus_scaler_test.go, every case, in order.
#[test]
fn prometheus_metadata_cases_of_keda() {
    const F: &str = "prometheus_scaler_test.go testPromMetadata";
    let cases = [
        Case {
            source: "testPromMetadata[0] {} (isError)",
            metadata: &[],
            auth: None,
            expect: Refused("serverAddress: missing"),
        },
        Case {
            source: "testPromMetadata[1] all properly formed",
            metadata: PROM_OK,
            auth: None,
            expect: Converted {
                check: |m| {
                    let p = prom(m);
                    assert_eq!(
                        (p.address.as_str(), p.query.as_str()),
                        ("http://localhost:9090", "up")
                    );
                    assert_eq!(average(m), "100");
                    // KEDA's ignoreNullValues default (true) kept explicitly.
                    assert_eq!(p.empty_as, Some(0.0));
                    assert_eq!(m.name, "prometheus-0");
                    assert_eq!(m.activation, None);
                },
                losses: &[],
            },
        },
        Case {
            source: "testPromMetadata[2] with namespace",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("namespace", "foo"),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    assert_eq!(
                        prom(m).query_parameters,
                        Some([("namespace".to_string(), "foo".to_string())].into())
                    )
                },
                losses: &[],
            },
        },
        Case {
            source: "testPromMetadata[3] ignoreNullValues false",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("ignoreNullValues", "false"),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    assert_eq!(
                        prom(m).empty_as,
                        None,
                        "no data stays no data, as KEDA's error"
                    )
                },
                losses: &[],
            },
        },
        Case {
            source: "testPromMetadata[4] activationThreshold",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("activationThreshold", "50"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(m.activation, Some(50.0)),
                losses: &[],
            },
        },
        Case {
            source: "testPromMetadata[5] missing serverAddress",
            metadata: &[("serverAddress", ""), ("threshold", "100"), ("query", "up")],
            auth: None,
            expect: Refused("serverAddress: missing"),
        },
        Case {
            source: "testPromMetadata[6] missing threshold",
            metadata: &[("serverAddress", "http://localhost:9090"), ("query", "up")],
            auth: None,
            expect: Refused("threshold: missing"),
        },
        Case {
            source: "testPromMetadata[7] malformed threshold",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "one"),
                ("query", "up"),
            ],
            auth: None,
            expect: Refused("metadata.threshold: \"one\" is not a number"),
        },
        Case {
            source: "testPromMetadata[8] malformed activationThreshold",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("activationThreshold", "one"),
                ("query", "up"),
            ],
            auth: None,
            expect: Refused("activationThreshold: \"one\" is not a number"),
        },
        Case {
            source: "testPromMetadata[9] missing query",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", ""),
            ],
            auth: None,
            expect: Refused("query: missing"),
        },
        Case {
            source: "testPromMetadata[10] ignoreNullValues wrong value",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("ignoreNullValues", "xxxx"),
            ],
            auth: None,
            expect: Refused("ignoreNullValues: \"xxxx\" is not a boolean"),
        },
        Case {
            source: "testPromMetadata[11] unsafeSsl",
            metadata: &[
                ("serverAddress", "https://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("unsafeSsl", "true"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(prom(m).address, "https://localhost:9090"),
                losses: &[(Loss::Dropped, "unsafeSsl")],
            },
        },
        Case {
            source: "testPromMetadata[12] customHeaders",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("customHeaders", "key1=value1,key2=value2"),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    let headers: Vec<(String, Option<String>)> = prom(m)
                        .headers
                        .iter()
                        .flatten()
                        .map(|h| (h.name.clone(), h.value.clone()))
                        .collect();
                    assert_eq!(
                        headers,
                        [
                            ("key1".into(), Some("value1".into())),
                            ("key2".into(), Some("value2".into()))
                        ]
                    );
                },
                losses: &[],
            },
        },
        Case {
            source: "testPromMetadata[13] customHeaders wrong format",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("customHeaders", "key1=value1,key2"),
            ],
            auth: None,
            expect: Refused("customHeaders: \"key2\" is not key=value"),
        },
        Case {
            source: "testPromMetadata[14] queryParameters",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("queryParameters", "key1=value1,key2=value2"),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    assert_eq!(
                        prom(m).query_parameters,
                        Some(
                            [
                                ("key1".to_string(), "value1".to_string()),
                                ("key2".to_string(), "value2".to_string())
                            ]
                            .into()
                        )
                    )
                },
                losses: &[],
            },
        },
        Case {
            source: "testPromMetadata[15] queryParameters wrong format",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("queryParameters", "key1=value1,key2"),
            ],
            auth: None,
            expect: Refused("queryParameters: \"key2\" is not key=value"),
        },
        Case {
            source: "testPromMetadata[16] valid timeout (milliseconds)",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("timeout", "1000"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(prom(m).timeout.as_deref(), Some("1000ms")),
                losses: &[],
            },
        },
        Case {
            source: "testPromMetadata[17] negative timeout",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("timeout", "-1"),
            ],
            auth: None,
            expect: Refused("timeout: -1: must not be negative"),
        },
        Case {
            source: "testPromMetadata[18] timeout not a number",
            metadata: &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("timeout", "a"),
            ],
            auth: None,
            expect: Refused("timeout: \"a\" is neither a duration"),
        },
    ];
    for case in &cases {
        println!("{F}: {}", case.source);
        run_case("prometheus", case);
    }
}

const PROM_UP: Pairs = &[
    ("serverAddress", "http://localhost:9090"),
    ("threshold", "100"),
    ("query", "up"),
    ("authModes", "tls"),
];

fn secret_name(m: &Metric) -> Option<&str> {
    prom(m).auth_secret_ref.as_ref().map(|s| s.name.as_str())
}

/// `testPrometheusAuthMetadata` of pkg/scalers/prometheus_scaler_test.go: the authParams as a
/// TriggerAuthentication whose Secret keys are named like KEDA's parameters.
#[test]
fn prometheus_auth_cases_of_keda() {
    const F: &str = "prometheus_scaler_test.go testPrometheusAuthMetadata";
    let with = |modes: &'static str| -> Pairs {
        match modes {
            "tls" => PROM_UP,
            "bearer" => &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("authModes", "bearer"),
            ],
            "basic" => &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("authModes", "basic"),
            ],
            "tls, basic" => &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("authModes", "tls, basic"),
            ],
            "custom" => &[
                ("serverAddress", "http://localhost:9090"),
                ("threshold", "100"),
                ("query", "up"),
                ("authModes", "custom"),
            ],
            _ => unreachable!(),
        }
    };
    let cases = [
        Case {
            source: "success TLS",
            metadata: with("tls"),
            auth: Some(&["ca", "cert", "key"]),
            expect: Converted {
                check: |m| assert_eq!(secret_name(m), Some("creds")),
                // ebb reads ca.crt, tls.crt and tls.key: each KEDA key needs its ebb name.
                losses: &[
                    (Loss::Action, "parameter ca"),
                    (Loss::Action, "parameter cert"),
                    (Loss::Action, "parameter key"),
                ],
            },
        },
        Case {
            source: "TLS, ca is optional",
            metadata: with("tls"),
            auth: Some(&["cert", "key"]),
            expect: Converted {
                check: |m| assert_eq!(secret_name(m), Some("creds")),
                losses: &[
                    (Loss::Action, "parameter cert"),
                    (Loss::Action, "parameter key"),
                ],
            },
        },
        Case {
            source: "fail TLS, key not given",
            metadata: with("tls"),
            auth: Some(&["ca", "cert"]),
            expect: Refused("tls needs the parameters cert and key"),
        },
        Case {
            source: "fail TLS, cert not given",
            metadata: with("tls"),
            auth: Some(&["ca", "key"]),
            expect: Refused("tls needs the parameters cert and key"),
        },
        Case {
            source: "success bearer default",
            metadata: with("bearer"),
            auth: Some(&["bearerToken"]),
            expect: Converted {
                // The Secret's key is already ebb's name: nothing to do.
                check: |m| assert_eq!(secret_name(m), Some("creds")),
                losses: &[],
            },
        },
        Case {
            source: "fail bearerAuth with no token",
            metadata: with("bearer"),
            auth: Some(&[]),
            expect: Refused("bearer needs the parameter bearerToken"),
        },
        Case {
            source: "success basicAuth",
            metadata: with("basic"),
            auth: Some(&["username", "password"]),
            expect: Converted {
                check: |m| assert_eq!(secret_name(m), Some("creds")),
                losses: &[],
            },
        },
        Case {
            source: "fail basicAuth with no username",
            metadata: with("basic"),
            auth: Some(&[]),
            expect: Refused("basic needs the parameter username"),
        },
        Case {
            source: "tls, basic (all given)",
            metadata: with("tls, basic"),
            auth: Some(&["ca", "cert", "key", "username", "password"]),
            expect: Converted {
                check: |m| assert_eq!(secret_name(m), Some("creds")),
                losses: &[
                    (Loss::Action, "parameter ca"),
                    (Loss::Action, "parameter cert"),
                    (Loss::Action, "parameter key"),
                ],
            },
        },
        Case {
            source: "tls,basic with username and password only (isError)",
            metadata: with("tls, basic"),
            auth: Some(&["username", "password"]),
            expect: Refused("tls needs the parameters cert and key"),
        },
        Case {
            source: "success custom auth",
            metadata: with("custom"),
            auth: Some(&["customAuthHeader", "customAuthValue"]),
            expect: Converted {
                // The header's name is a Secret's value: out of the import's sight.
                check: |m| assert_eq!(prom(m).headers, None),
                losses: &[(Loss::Dropped, "authModes")],
            },
        },
        Case {
            source: "fail custom auth with no customAuthHeader",
            metadata: with("custom"),
            auth: Some(&["customAuthValue"]),
            expect: Refused("custom needs the parameters customAuthHeader and customAuthValue"),
        },
        Case {
            source: "fail custom auth with no customAuthValue",
            metadata: with("custom"),
            auth: Some(&["customAuthHeader"]),
            expect: Refused("custom needs the parameters customAuthHeader and customAuthValue"),
        },
    ];
    for case in &cases {
        println!("{F}: {}", case.source);
        run_case("prometheus", case);
    }
}

/// testPrometheusAuthMetadata "pod identity and other auth modes enabled together" (refused
/// by KEDA) and "azure workload identity" (accepted by KEDA; ebb has no cloud identities).
#[test]
fn prometheus_pod_identity_is_refused_beside_auth_modes_and_dropped_alone() {
    let ta = |provider: &str| {
        let mut ta = trigger_auth(&["username", "password"]);
        ta["spec"]["podIdentity"] = json!({"provider": provider});
        ta
    };
    let so = |modes: Option<&str>| {
        let mut metadata =
            json!({"serverAddress": "http://localhost:9090", "threshold": "100", "query": "up"});
        if let Some(m) = modes {
            metadata["authModes"] = json!(m);
        }
        scaled_object(
            json!({"type": "prometheus", "metadata": metadata, "authenticationRef": {"name": "auth"}}),
        )
    };
    let both = import(&yaml(&[ta("azure-workload"), so(Some("basic"))])).unwrap();
    assert!(both.targets.is_empty());
    assert!(
        both.refusals[0]
            .message
            .contains("pod identity cannot be combined"),
        "{:?}",
        both.refusals
    );

    let alone = import(&yaml(&[ta("azure-workload"), so(None)])).unwrap();
    assert_eq!(alone.targets.len(), 1);
    assert_eq!(
        prom(&alone.targets[0].spec.metrics[0]).auth_secret_ref,
        None
    );
    let line = alone
        .findings
        .iter()
        .find(|f| f.loss == Loss::Dropped)
        .expect("a dropped line");
    assert!(line.field.contains("spec.podIdentity"), "{line}");

    // provider none is KEDA's "no identity": nothing to report.
    let none = import(&yaml(&[ta("none"), so(Some("basic"))])).unwrap();
    assert!(
        none.findings.iter().all(|f| !f.loss.fails_check()),
        "{:#?}",
        none.findings
    );
}

const HOST: &str = "myHostSecret";

/// `testRabbitMQMetadata` of pkg/scalers/rabbitmq_scaler_test.go (the env var the test
/// resolves, `myHostSecret`, is an amqp:// URL).
#[test]
fn rabbitmq_metadata_cases_of_keda() {
    const F: &str = "rabbitmq_scaler_test.go testRabbitMQMetadata";
    // A URL from the workload's environment: a Secret to create, a protocol to confirm.
    const FROM_ENV: &[(Loss, &str)] = &[(Loss::Action, "hostFromEnv"), (Loss::Action, "protocol")];
    const LITERAL: &[(Loss, &str)] = &[(Loss::Action, "metadata.host")];
    let cases = [
        Case {
            source: "nothing passed",
            metadata: &[],
            auth: None,
            expect: Refused("queueName: missing"),
        },
        Case {
            source: "properly formed metadata",
            metadata: &[
                ("queueLength", "10"),
                ("queueName", "sample"),
                ("hostFromEnv", HOST),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    let r = rabbit(m);
                    assert_eq!(r.queue.as_deref(), Some("sample"));
                    // KEDA counts ready messages over AMQP.
                    assert_eq!(r.measure, Measure::Ready);
                    assert_eq!(r.connection_secret_ref.name, "so-rabbitmq");
                    assert_eq!(average(m), "10");
                },
                losses: FROM_ENV,
            },
        },
        Case {
            source: "malformed queueLength",
            metadata: &[
                ("queueLength", "AA"),
                ("queueName", "sample"),
                ("hostFromEnv", HOST),
            ],
            auth: None,
            expect: Refused("queueLength: \"AA\" is not a number"),
        },
        Case {
            source: "missing host",
            metadata: &[("queueLength", "AA"), ("queueName", "sample")],
            auth: None,
            expect: Refused("host: missing"),
        },
        Case {
            source: "missing queueName",
            metadata: &[("queueLength", "10"), ("hostFromEnv", HOST)],
            auth: None,
            expect: Refused("queueName: missing"),
        },
        Case {
            source: "host defined in authParams (no queueName)",
            metadata: &[("queueLength", "10"), ("hostFromEnv", HOST)],
            auth: Some(&["host"]),
            expect: Refused("queueName: missing"),
        },
        Case {
            source: "properly formed metadata with http protocol",
            metadata: &[
                ("queueLength", "10"),
                ("queueName", "sample"),
                ("host", HOST),
                ("protocol", "http"),
            ],
            auth: None,
            expect: Converted {
                // KEDA's messages over HTTP: ready + unacknowledged.
                check: |m| assert_eq!(rabbit(m).measure, Measure::Backlog),
                losses: LITERAL,
            },
        },
        Case {
            source: "queue name with slashes",
            metadata: &[
                ("queueLength", "10"),
                ("queueName", "namespace/name"),
                ("hostFromEnv", HOST),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).queue.as_deref(), Some("namespace/name")),
                losses: FROM_ENV,
            },
        },
        Case {
            source: "vhost passed",
            metadata: &[
                ("vhostName", "myVhost"),
                ("queueName", "namespace/name"),
                ("hostFromEnv", HOST),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    assert_eq!(rabbit(m).vhost.as_deref(), Some("myVhost"));
                    // KEDA's default: QueueLength 20.
                    assert_eq!(average(m), "20");
                },
                losses: FROM_ENV,
            },
        },
        Case {
            source: "vhost passed but empty",
            metadata: &[
                ("vhostName", ""),
                ("queueName", "namespace/name"),
                ("hostFromEnv", HOST),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).vhost, None),
                losses: FROM_ENV,
            },
        },
        Case {
            source: "protocol defined in authParams",
            metadata: &[("queueName", "sample"), ("hostFromEnv", HOST)],
            auth: Some(&["protocol"]),
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).connection_secret_ref.name, "so-rabbitmq"),
                losses: FROM_ENV,
            },
        },
        Case {
            source: "auto protocol and a bad URL",
            metadata: &[("queueName", "sample"), ("host", "something://")],
            auth: None,
            expect: Refused("not amqp(s):// or http(s)://"),
        },
        Case {
            source: "auto protocol and an HTTP URL",
            metadata: &[("queueName", "sample"), ("host", "http://")],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).measure, Measure::Backlog),
                losses: LITERAL,
            },
        },
        Case {
            source: "auto protocol and an HTTPS URL",
            metadata: &[("queueName", "sample"), ("host", "https://")],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).measure, Measure::Backlog),
                losses: LITERAL,
            },
        },
        Case {
            source: "queueLength and mode",
            metadata: &[
                ("queueLength", "10"),
                ("mode", "QueueLength"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Refused("queueLength is deprecated"),
        },
        Case {
            source: "queueLength and value",
            metadata: &[
                ("queueLength", "10"),
                ("value", "20"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Refused("queueLength is deprecated"),
        },
        Case {
            source: "queueLength and mode and value",
            metadata: &[
                ("queueLength", "10"),
                ("mode", "QueueLength"),
                ("value", "20"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Refused("queueLength is deprecated"),
        },
        Case {
            source: "only mode",
            metadata: &[
                ("mode", "QueueLength"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Refused("value: missing beside mode"),
        },
        Case {
            source: "only value",
            metadata: &[
                ("value", "20"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Refused("mode: missing beside value"),
        },
        Case {
            source: "mode and value",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "20"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!((rabbit(m).measure, average(m)), (Measure::Backlog, "20")),
                losses: LITERAL,
            },
        },
        Case {
            source: "invalid mode",
            metadata: &[
                ("mode", "Feelings"),
                ("value", "20"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Refused("\"Feelings\" is not QueueLength"),
        },
        Case {
            source: "invalid value",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "lots"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Refused("value: \"lots\" is not a number"),
        },
        Case {
            source: "queue length amqp",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "20"),
                ("queueName", "sample"),
                ("host", "amqps://"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).measure, Measure::Ready),
                losses: LITERAL,
            },
        },
        Case {
            source: "message rate amqps",
            metadata: &[
                ("mode", "MessageRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "amqps://"),
            ],
            auth: None,
            expect: Refused("needs the HTTP protocol"),
        },
        Case {
            source: "message rate amqp",
            metadata: &[
                ("mode", "MessageRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "amqp://"),
            ],
            auth: None,
            expect: Refused("needs the HTTP protocol"),
        },
        Case {
            source: "message rate http",
            metadata: &[
                ("mode", "MessageRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    assert_eq!(
                        (rabbit(m).measure, average(m)),
                        (Measure::PublishRate, "1000")
                    )
                },
                // KEDA's activation also looks at the message count.
                losses: &[
                    (Loss::Action, "metadata.host"),
                    (Loss::Changed, "activationValue"),
                ],
            },
        },
        Case {
            source: "message rate https",
            metadata: &[
                ("mode", "MessageRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "https://"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).measure, Measure::PublishRate),
                losses: &[
                    (Loss::Action, "metadata.host"),
                    (Loss::Changed, "activationValue"),
                ],
            },
        },
        Case {
            source: "deliverGet rate amqps",
            metadata: &[
                ("mode", "DeliverGetRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "amqps://"),
            ],
            auth: None,
            expect: Refused("needs the HTTP protocol"),
        },
        Case {
            source: "deliverGet rate amqp",
            metadata: &[
                ("mode", "DeliverGetRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "amqp://"),
            ],
            auth: None,
            expect: Refused("needs the HTTP protocol"),
        },
        Case {
            source: "deliverGet rate http",
            metadata: &[
                ("mode", "DeliverGetRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).measure, Measure::DeliverRate),
                losses: LITERAL,
            },
        },
        Case {
            source: "amqp host and useRegex",
            metadata: &[
                ("queueName", "sample"),
                ("host", "amqps://"),
                ("useRegex", "true"),
            ],
            auth: None,
            expect: Refused("useRegex needs the HTTP protocol"),
        },
        Case {
            source: "http host and useRegex",
            metadata: &[
                ("queueName", "sample"),
                ("host", "http://"),
                ("useRegex", "true"),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    let r = rabbit(m);
                    // Unanchored as KEDA's; no matching queue reads 0 as in KEDA.
                    assert_eq!(
                        (r.queue.as_deref(), r.queue_regex.as_deref()),
                        (None, Some(".*(sample).*"))
                    );
                    assert_eq!(r.empty_as, Some(0.0));
                    assert_eq!(r.aggregate, Aggregate::Sum);
                },
                losses: LITERAL,
            },
        },
        Case {
            source: "deliverGet rate and useRegex",
            metadata: &[
                ("mode", "DeliverGetRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
                ("useRegex", "true"),
            ],
            auth: None,
            expect: Converted {
                check: |m| {
                    assert_eq!(
                        (rabbit(m).measure, rabbit(m).queue_regex.is_some()),
                        (Measure::DeliverRate, true)
                    )
                },
                losses: LITERAL,
            },
        },
        Case {
            source: "http valid timeout",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
                ("timeout", "1000"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).timeout.as_deref(), Some("1000ms")),
                losses: LITERAL,
            },
        },
        Case {
            source: "http invalid timeout",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
                ("timeout", "-10"),
            ],
            auth: None,
            expect: Refused("timeout: -10: must not be negative"),
        },
        Case {
            source: "http wrong timeout",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
                ("timeout", "error"),
            ],
            auth: None,
            expect: Refused("\"error\" is neither a duration"),
        },
        Case {
            source: "amqp timeout",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "amqp://"),
                ("timeout", "10"),
            ],
            auth: None,
            expect: Refused("timeout needs the HTTP protocol"),
        },
        Case {
            source: "valid pageSize",
            metadata: &[
                ("mode", "MessageRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
                ("useRegex", "true"),
                ("pageSize", "100"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert!(rabbit(m).queue_regex.is_some()),
                losses: &[
                    (Loss::Action, "metadata.host"),
                    (Loss::Changed, "activationValue"),
                ],
            },
        },
        Case {
            source: "pageSize less than 1",
            metadata: &[
                ("mode", "MessageRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
                ("useRegex", "true"),
                ("pageSize", "-1"),
            ],
            auth: None,
            expect: Refused("pageSize: \"-1\""),
        },
        Case {
            source: "invalid pageSize",
            metadata: &[
                ("mode", "MessageRate"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
                ("useRegex", "true"),
                ("pageSize", "a"),
            ],
            auth: None,
            expect: Refused("pageSize: \"a\""),
        },
        Case {
            source: "activationValue passed",
            metadata: &[
                ("activationValue", "10"),
                ("queueLength", "20"),
                ("queueName", "sample"),
                ("hostFromEnv", HOST),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!((m.activation, average(m)), (Some(10.0), "20")),
                losses: FROM_ENV,
            },
        },
        Case {
            source: "malformed activationValue",
            metadata: &[
                ("activationValue", "AA"),
                ("queueLength", "10"),
                ("queueName", "sample"),
                ("hostFromEnv", HOST),
            ],
            auth: None,
            expect: Refused("activationValue: \"AA\" is not a number"),
        },
        Case {
            source: "http and excludeUnacknowledged",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "http://"),
                ("useRegex", "true"),
                ("excludeUnacknowledged", "true"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).measure, Measure::Ready),
                losses: LITERAL,
            },
        },
        Case {
            source: "amqp and excludeUnacknowledged",
            metadata: &[
                ("mode", "QueueLength"),
                ("value", "1000"),
                ("queueName", "sample"),
                ("host", "amqp://"),
                ("useRegex", "true"),
                ("excludeUnacknowledged", "true"),
            ],
            auth: None,
            expect: Refused("needs the HTTP protocol"),
        },
        Case {
            source: "unsafeSsl true",
            metadata: &[
                ("queueName", "sample"),
                ("host", "https://"),
                ("unsafeSsl", "true"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).measure, Measure::Backlog),
                losses: &[
                    (Loss::Action, "metadata.host"),
                    (Loss::Dropped, "unsafeSsl"),
                ],
            },
        },
        Case {
            source: "unsafeSsl wrong input",
            metadata: &[
                ("queueName", "sample"),
                ("host", "https://"),
                ("unsafeSsl", "random"),
            ],
            auth: None,
            expect: Refused("unsafeSsl: \"random\" is not a boolean"),
        },
    ];
    for case in &cases {
        println!("{F}: {}", case.source);
        run_case("rabbitmq", case);
    }
}

/// `testRabbitMQAuthParamData` of pkg/scalers/rabbitmq_scaler_test.go (TLS material from the
/// TriggerAuthentication) and the host from a Secret, as tests/scalers/rabbitmq's
/// rabbitmq_queue_amqp_auth and rabbitmq_queue_http_auth pass it.
#[test]
fn rabbitmq_auth_cases_of_keda() {
    const F: &str = "rabbitmq_scaler_test.go testRabbitMQAuthParamData / tests/scalers/rabbitmq";
    let cases = [
        Case {
            source: "success, TLS ca/cert/key (host from a Secret, key host)",
            metadata: &[("queueName", "sample"), ("protocol", "amqp")],
            auth: Some(&["host", "tls", "ca", "cert", "key"]),
            expect: Converted {
                check: |m| {
                    assert_eq!(
                        (
                            rabbit(m).connection_secret_ref.name.as_str(),
                            rabbit(m).measure
                        ),
                        ("creds", Measure::Ready)
                    )
                },
                // ebb reads KEDA's key `host` as the AMQP URL; the TLS keys need ebb's names.
                losses: &[
                    (Loss::Action, "parameter ca"),
                    (Loss::Action, "parameter cert"),
                    (Loss::Action, "parameter key"),
                ],
            },
        },
        Case {
            source: "success, TLS cert/key + key password",
            metadata: &[("queueName", "sample"), ("protocol", "amqp")],
            auth: Some(&["host", "tls", "cert", "key", "keyPassword"]),
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).connection_secret_ref.name, "creds"),
                losses: &[
                    (Loss::Action, "parameter cert"),
                    (Loss::Action, "parameter key"),
                    (Loss::Dropped, "keyPassword"),
                ],
            },
        },
        Case {
            source: "http host from a Secret (rabbitmq_queue_http_auth)",
            metadata: &[
                ("queueName", "sample"),
                ("protocol", "http"),
                ("mode", "QueueLength"),
                ("value", "10"),
            ],
            auth: Some(&["host"]),
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).measure, Measure::Backlog),
                // ebb reads the management URL only from key managementUrl.
                losses: &[(Loss::Action, "parameter host")],
            },
        },
        Case {
            source: "username and password apart from the host (rabbitmq_queue_amqp_auth)",
            metadata: &[
                ("queueName", "sample"),
                ("hostFromEnv", "RabbitApiHost"),
                ("mode", "QueueLength"),
                ("value", "10"),
                ("activationValue", "5"),
            ],
            auth: Some(&["username", "password"]),
            expect: Converted {
                check: |m| assert_eq!(m.activation, Some(5.0)),
                losses: &[
                    (Loss::Action, "hostFromEnv"),
                    (Loss::Action, "protocol"),
                    (Loss::Action, "parameters username, password"),
                ],
            },
        },
        Case {
            source: "user and password from the environment (rabbitmq_queue_amqp_auth scaledObjectAuthFromEnvTemplate)",
            metadata: &[
                ("queueName", "sample"),
                ("hostFromEnv", "RabbitApiHost"),
                ("usernameFromEnv", "RabbitUsername"),
                ("passwordFromEnv", "RabbitPassword"),
                ("mode", "QueueLength"),
                ("value", "10"),
                ("activationValue", "5"),
            ],
            auth: None,
            expect: Converted {
                check: |m| assert_eq!(rabbit(m).connection_secret_ref.name, "so-rabbitmq"),
                // One line each, saying where the value must go (the URL in the Secret).
                losses: &[
                    (Loss::Action, "hostFromEnv"),
                    (Loss::Action, "protocol"),
                    (Loss::Action, "usernameFromEnv"),
                    (Loss::Action, "passwordFromEnv"),
                ],
            },
        },
    ];
    for case in &cases {
        println!("{F}: {}", case.source);
        run_case("rabbitmq", case);
    }
}

/// config/samples/keda_v1alpha1_scaledobject.yaml: its only trigger is a made-up type, so
/// nothing can be carried and the ScaledObject is refused, saying why.
#[test]
fn keda_sample_scaled_object_is_refused_for_want_of_a_trigger() {
    let sample = "apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: example-scaledobject
spec:
  scaleTargetRef:
    name: example-deployment
  pollingInterval: 30
  cooldownPeriod: 300
  minReplicaCount: 0
  maxReplicaCount: 100
  triggers:
    - type: example-trigger
      metadata:
        property: example-property
";
    let outcome = import(sample).unwrap();
    assert!(outcome.targets.is_empty());
    let lines: Vec<String> = outcome.findings.iter().map(ToString::to_string).collect();
    assert!(lines.contains(&"example-scaledobject: triggers[0] (type example-trigger): no example-trigger source in ebb; dropped".to_string()), "{lines:#?}");
    assert!(
        outcome.refusals[0]
            .to_string()
            .contains("no trigger could be carried over"),
        "{:?}",
        outcome.refusals
    );
}

fn one(spec: Json, annotations: Json) -> (Outcome, Option<ScaledTarget>) {
    let mut so = scaled_object(
        json!({"type": "prometheus", "metadata": {"serverAddress": "http://p:9090", "query": "up", "threshold": "5"}}),
    );
    for (k, v) in spec.as_object().unwrap() {
        so["spec"][k] = v.clone();
    }
    so["metadata"]["annotations"] = annotations;
    let outcome = import(&yaml(&[so])).unwrap();
    let target = outcome.targets.first().cloned();
    (outcome, target)
}

fn has_line(outcome: &Outcome, loss: Loss, field: &str) -> bool {
    outcome
        .findings
        .iter()
        .any(|f| f.loss == loss && f.field.contains(field))
}

/// KEDA's ScaledObject defaults (scaledobject_types.go and the docs): min 0, max 100,
/// pollingInterval 30, cooldown 300 (ebb's default too), Deployment in apps/v1.
#[test]
fn scaled_object_defaults_are_written_out() {
    let (outcome, st) = one(json!({}), json!({}));
    let st = st.unwrap();
    let spec = &st.spec;
    assert_eq!((spec.min_replicas, spec.max_replicas), (0, 100));
    assert_eq!(spec.polling_interval(), std::time::Duration::from_secs(30));
    assert_eq!(spec.cooldown_seconds, None);
    assert_eq!(spec.mode, Mode::Hpa);
    assert_eq!(
        (
            spec.target_ref.api_version.as_str(),
            spec.target_ref.kind.as_str(),
            spec.target_ref.name.as_str()
        ),
        ("apps/v1", "Deployment", "app")
    );
    assert_eq!(st.metadata.namespace.as_deref(), Some("ns"));
    // KEDA's HPA keda-hpa-<name> is taken over rather than replaced.
    assert_eq!(
        st.metadata.annotations.as_ref().unwrap()[ADOPT_HPA_ANNOTATION],
        "keda-hpa-so"
    );
    assert!(
        outcome.findings.iter().all(|f| !f.loss.fails_check()),
        "{:#?}",
        outcome.findings
    );
}

#[test]
fn scaled_object_fields_map_to_their_counterparts() {
    let (outcome, st) = one(
        json!({
            "scaleTargetRef": {"name": "web", "kind": "StatefulSet", "apiVersion": "apps/v1"},
            "minReplicaCount": 2, "maxReplicaCount": 9, "idleReplicaCount": 0,
            "pollingInterval": 10, "cooldownPeriod": 60, "initialCooldownPeriod": 120,
            "advanced": {"horizontalPodAutoscalerConfig": {"name": "web-hpa", "behavior": {"scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max"}}}},
        }),
        json!({"autoscaling.keda.sh/paused": "true", "autoscaling.keda.sh/paused-replicas": "4", "team": "orders", "kubectl.kubernetes.io/last-applied-configuration": "{}"}),
    );
    let st = st.unwrap();
    let spec = &st.spec;
    assert_eq!(
        (spec.min_replicas, spec.max_replicas, spec.idle_replicas),
        (2, 9, Some(0))
    );
    assert_eq!(spec.target_ref.kind, "StatefulSet");
    assert_eq!(spec.polling_interval(), std::time::Duration::from_secs(10));
    assert_eq!(
        (spec.cooldown_seconds, spec.initial_cooldown_seconds),
        (Some(60), Some(120))
    );
    let up = spec.behavior.as_ref().unwrap().scale_up.as_ref().unwrap();
    assert_eq!(
        (up.stabilization_window_seconds, up.select_policy.as_deref()),
        (Some(0), Some("Max"))
    );
    let annotations = st.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[ADOPT_HPA_ANNOTATION], "web-hpa");
    assert_eq!(annotations[PAUSED_ANNOTATION], "true");
    assert_eq!(annotations[PAUSED_REPLICAS_ANNOTATION], "4");
    assert_eq!(annotations["team"], "orders");
    assert!(!annotations.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    assert!(
        outcome.findings.iter().all(|f| !f.loss.fails_check()),
        "{:#?}",
        outcome.findings
    );
}

/// KEDA's CheckReplicaCountBoundsAreValid (`scaledobject_types.go`): idleReplicaCount below
/// minReplicaCount, an unset one read as 0 and a set one as at least 1.
#[test]
fn an_idle_count_keda_refuses_is_refused() {
    for (spec, refused) in [
        (json!({"idleReplicaCount": 0}), true),
        (json!({"idleReplicaCount": 0, "minReplicaCount": 0}), false),
        (json!({"idleReplicaCount": 1, "minReplicaCount": 1}), true),
        (json!({"idleReplicaCount": 0, "minReplicaCount": 1}), false),
    ] {
        let (outcome, st) = one(spec.clone(), json!({}));
        assert_eq!(st.is_none(), refused, "{spec}: {:#?}", outcome.refusals);
        if refused {
            assert!(
                outcome.refusals[0]
                    .to_string()
                    .contains("spec.idleReplicaCount: ")
                    && outcome.refusals[0]
                        .to_string()
                        .contains("must be below minReplicaCount"),
                "{:#?}",
                outcome.refusals
            );
        }
    }
}

#[test]
fn what_ebb_has_no_counterpart_for_is_reported_by_field() {
    let (outcome, st) = one(
        json!({
            "idleReplicaCount": 1, "minReplicaCount": 3,
            "advanced": {"restoreToOriginalReplicaCount": true},
        }),
        json!({"autoscaling.keda.sh/paused-scale-in": "true"}),
    );
    assert_eq!(
        st.unwrap().spec.idle_replicas,
        None,
        "only idleReplicas 0 exists in ebb"
    );
    for field in [
        "spec.idleReplicaCount",
        "spec.advanced.restoreToOriginalReplicaCount",
        "paused-scale-in",
    ] {
        assert!(
            has_line(&outcome, Loss::Dropped, field),
            "{field}: {:#?}",
            outcome.findings
        );
    }
}

/// KEDA's fallback behaviours (scaledobject_types.go: static by default; pkg/fallback: after
/// more than failureThreshold failures) against ebb's, which runs max(current, replicas) once
/// the failures reach failureThreshold.
#[test]
fn fallback_behaviours() {
    let fallback = |behavior: Option<&str>, threshold: i64| {
        let mut f = json!({"failureThreshold": threshold, "replicas": 5});
        if let Some(b) = behavior {
            f["behavior"] = json!(b);
        }
        one(json!({"fallback": f, "maxReplicaCount": 10}), json!({}))
    };
    let (outcome, st) = fallback(None, 3);
    assert_eq!(
        st.unwrap().spec.fallback,
        Some(Fallback {
            failure_threshold: 4,
            replicas: 5
        })
    );
    assert!(has_line(&outcome, Loss::Changed, "spec.fallback.behavior"));

    let (outcome, st) = fallback(Some("currentReplicasIfHigher"), 3);
    assert_eq!(
        st.unwrap().spec.fallback,
        Some(Fallback {
            failure_threshold: 4,
            replicas: 5
        })
    );
    assert!(
        outcome.findings.iter().all(|f| !f.loss.fails_check()),
        "{:#?}",
        outcome.findings
    );

    let (_, st) = fallback(Some("currentReplicas"), 3);
    assert_eq!(
        st.unwrap().spec.fallback.unwrap().replicas,
        0,
        "max(current, 0) keeps the count"
    );

    let (outcome, st) = fallback(Some("currentReplicasIfLower"), 3);
    assert_eq!(st.unwrap().spec.fallback, None);
    assert!(has_line(&outcome, Loss::Dropped, "spec.fallback"));

    // KEDA's 0 falls back at the first failure: ebb's 1.
    let (outcome, st) = fallback(Some("currentReplicasIfHigher"), 0);
    assert_eq!(st.unwrap().spec.fallback.unwrap().failure_threshold, 1);
    assert!(
        outcome.findings.iter().all(|f| !f.loss.fails_check()),
        "{:#?}",
        outcome.findings
    );

    let (outcome, st) = fallback(Some("currentReplicasIfHigher"), 500);
    assert_eq!(st.unwrap().spec.fallback.unwrap().failure_threshold, 100);
    assert!(has_line(
        &outcome,
        Loss::Changed,
        "spec.fallback.failureThreshold"
    ));
}

#[test]
fn refusals_name_the_object_and_the_field() {
    let (outcome, st) = one(
        json!({"minReplicaCount": 5, "maxReplicaCount": 2}),
        json!({}),
    );
    assert!(st.is_none());
    assert_eq!(
        outcome.refusals[0].to_string(),
        "error: ns/so: spec.minReplicaCount: minReplicaCount 5 and maxReplicaCount 2: need 0 <= min <= max and max >= 1 (KEDA refuses them too); not imported"
    );
    let missing = import(&yaml(&[scaled_object(json!({"type": "prometheus", "metadata": {"serverAddress": "http://p", "query": "up", "threshold": "1"}, "authenticationRef": {"name": "nowhere"}}))])).unwrap();
    assert!(
        missing.refusals[0]
            .to_string()
            .contains("TriggerAuthentication \"nowhere\" is not in the input"),
        "{:?}",
        missing.refusals
    );
    let job = import("kind: ScaledJob\nmetadata: {name: batch}\n").unwrap();
    assert!(job.refusals[0].to_string().contains("does not start Jobs"));
}

/// Metric names: the trigger's name as a DNS-1123 label, else `<type>-<index>`, unique.
#[test]
fn metric_names_are_dns_labels_and_unique() {
    let trigger = |name: Option<&str>| {
        let mut t = json!({"type": "prometheus", "metadata": {"serverAddress": "http://p", "query": "up", "threshold": "1"}});
        if let Some(n) = name {
            t["name"] = json!(n);
        }
        t
    };
    let mut so = scaled_object(trigger(Some("HTTP_Requests")));
    so["spec"]["triggers"] = json!([
        trigger(Some("HTTP_Requests")),
        trigger(None),
        trigger(Some("http-requests")),
        json!({"type": "cpu", "metadata": {"value": "50"}}),
        trigger(None)
    ]);
    let outcome = import(&yaml(&[so])).unwrap();
    let names: Vec<&str> = outcome.targets[0]
        .spec
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "http-requests",
            "prometheus-1",
            "http-requests-2",
            "prometheus-4"
        ]
    );
    assert_eq!(dns_label("-A.b_c-"), "a-b-c");
    assert_eq!(dns_label(&"x".repeat(70)).len(), 63);
}

#[test]
fn durations_and_quantities_as_keda_reads_them() {
    assert_eq!(go_duration_ms("1m30s"), Some(90_000.0));
    assert_eq!(go_duration_ms("1.5s"), Some(1500.0));
    assert_eq!(go_duration_ms("250ms"), Some(250.0));
    assert_eq!(go_duration_ms("5x"), None);
    assert_eq!(format_ms(90_000.0), "90s");
    assert_eq!(format_ms(1500.0), "1500ms");
    assert_eq!(quantity(100.0).unwrap().0, "100");
    assert_eq!(quantity(0.5).unwrap().0, "0.5");
    assert_eq!(quantity(0.0001), None, "finer than ebb's milli precision");
    assert_eq!(quantity(-1.0), None);
}

/// `kind: List` (kubectl get -o yaml) is read item by item; other kinds are noted and skipped.
#[test]
fn lists_are_flattened_and_other_kinds_noted() {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": [
        scaled_object(json!({"type": "prometheus", "metadata": {"serverAddress": "http://p", "query": "up", "threshold": "1"}})),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}},
    ]});
    let outcome = import(&yaml(&[list])).unwrap();
    assert_eq!(outcome.targets.len(), 1);
    assert!(has_line(&outcome, Loss::Note, "kind \"Secret\""));
}

// ---- spec.advanced.scalingModifiers -> spec.formula ----

/// A trigger of the ScaledObjects below: prometheus (carried whole), or a type ebb drops.
fn named_trigger(type_: &str, name: Option<&str>) -> Json {
    let mut t = match type_ {
        "prometheus" => {
            json!({"type": "prometheus", "metadata": {"serverAddress": "http://p:9090", "query": "up", "threshold": "5", "activationThreshold": "1"}})
        }
        "cpu" => json!({"type": "cpu", "metricType": "Utilization", "metadata": {"value": "60"}}),
        other => json!({"type": other, "metadata": {"topic": "orders"}}),
    };
    if let Some(n) = name {
        t["name"] = json!(n);
    }
    t
}

/// A ScaledObject with `triggers` (type, name) and `spec` merged in.
fn with_triggers(triggers: &[(&str, Option<&str>)], spec: Json) -> Json {
    let mut so = scaled_object(json!({}));
    so["spec"]["triggers"] = triggers
        .iter()
        .map(|(type_, name)| named_trigger(type_, *name))
        .collect();
    for (k, v) in spec.as_object().unwrap() {
        so["spec"][k] = v.clone();
    }
    so
}

/// What a scalingModifiers case should come to.
enum Composite {
    /// Written: spec.formula's expression, target type and quantity, activation.
    Formula(&'static str, TargetType, &'static str, Option<f64>),
    /// Refused: a refusal's field and message contain this.
    Refused(&'static str),
}

struct ModifiersCase {
    /// Upstream file and case.
    source: &'static str,
    /// (type, name) of each trigger.
    triggers: &'static [(&'static str, Option<&'static str>)],
    /// `spec.advanced.scalingModifiers`.
    modifiers: Json,
    expect: Composite,
}

/// The CRD's rule on formula.expression (`^[-+*/()<>=!?:&|,._ \t\n0-9a-zA-Z]+$`).
fn admissible(expression: &str) -> bool {
    !expression.is_empty()
        && expression
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-+*/()<>=!?:&|,._ \t\n".contains(c))
}

fn run_modifiers_case(case: &ModifiersCase) {
    let so = with_triggers(
        case.triggers,
        json!({"advanced": {"scalingModifiers": case.modifiers}}),
    );
    let outcome = import(&yaml(&[so])).unwrap();
    let what = case.source;
    match case.expect {
        Composite::Refused(expected) => {
            assert!(outcome.targets.is_empty(), "{what}: {:?}", outcome.targets);
            assert!(
                outcome
                    .refusals
                    .iter()
                    .any(|r| format!("{}: {}", r.field, r.message).contains(expected)),
                "{what}: no refusal mentions {expected:?}: {:#?}",
                outcome.refusals
            );
        }
        Composite::Formula(expression, type_, quantity, activation) => {
            assert!(
                outcome.refusals.is_empty(),
                "{what}: refused: {:#?}",
                outcome.refusals
            );
            let spec = &outcome.targets[0].spec;
            let formula = spec.formula.as_ref().expect("a formula");
            assert_eq!(formula.expression, expression, "{what}");
            assert_eq!(formula.name, "composite", "{what}");
            assert_eq!(formula.target.type_, type_, "{what}");
            let q = match type_ {
                TargetType::Value => &formula.target.value,
                _ => &formula.target.average_value,
            };
            assert_eq!(q.as_ref().map(|q| q.0.as_str()), Some(quantity), "{what}");
            assert_eq!(formula.activation, activation, "{what}");
            // What the API server and the controller check.
            assert!(admissible(&formula.expression), "{what}: {expression}");
            formula
                .parse(&spec.metrics)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                spec.metrics.iter().all(|m| m.slo.is_none()
                    && matches!(m.target.type_, TargetType::Value | TargetType::AverageValue)),
                "{what}: a formula's inputs are Value or AverageValue without slo"
            );
            let lossy: Vec<&Finding> = outcome
                .findings
                .iter()
                .filter(|f| f.loss.fails_check())
                .collect();
            assert!(lossy.is_empty(), "{what}: {lossy:#?}");
        }
    }
}

const TRIG_ONE_TWO: &[(&str, Option<&str>)] = &[
    ("prometheus", Some("trig_one")),
    ("prometheus", Some("trig_two")),
];
const WORKLOAD_CRON: &[(&str, Option<&str>)] = &[
    ("prometheus", Some("cron_trig")),
    ("prometheus", Some("workload_trig")),
];

/// KEDA's own formulas, each with its trigger names, from kedacore/keda-docs
/// `content/docs/2.18/concepts/scaling-deployments.md` ("Scaling Modifiers"; where a snippet
/// has no target, the first example's "2" is added), kedacore/keda
/// `apis/keda/v1alpha1/scaledobject_webhook_test.go` ("SCALING MODIFIERS" cases, whether KEDA
/// admits them noted) and `tests/internals/scaling_modifiers/scaling_modifiers_test.go`,
/// `tests/internals/fallback/fallback_scaling_modifiers_test.go`. Their triggers
/// (kubernetes-workload, cron, metrics-api, kubernetes-resource) are not sources ebb imports: here
/// they are Prometheus triggers of the same names.
#[test]
fn scaling_modifiers_cases_of_keda() {
    use Composite::*;
    use TargetType::{AverageValue, Value};
    let cases = [
        ModifiersCase {
            source: "docs: compose average value",
            triggers: TRIG_ONE_TWO,
            modifiers: json!({"formula": "(trig_one + trig_two)/2", "target": "2", "activationTarget": "2", "metricType": "AverageValue"}),
            expect: Formula("(trig_one + trig_two)/2", AverageValue, "2", Some(2.0)),
        },
        ModifiersCase {
            source: "docs: ternary operator",
            triggers: TRIG_ONE_TWO,
            modifiers: json!({"formula": "trig_one > 2 ? trig_one + trig_two : 1", "target": "2"}),
            expect: Formula(
                "trig_one > 2 ? trig_one + trig_two : 1",
                AverageValue,
                "2",
                None,
            ),
        },
        ModifiersCase {
            source: "docs: count function",
            triggers: &[
                ("prometheus", Some("trig_one")),
                ("prometheus", Some("trig_two")),
                ("prometheus", Some("trig_three")),
            ],
            modifiers: json!({"formula": "count([trig_one,trig_two,trig_three],{#>1}) > 1 ? 5 : 0", "target": "2"}),
            expect: Refused("the function count() has no counterpart"),
        },
        ModifiersCase {
            source: "docs: nested conditions and operators",
            triggers: TRIG_ONE_TWO,
            modifiers: json!({"formula": "trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0", "target": "2"}),
            // CEL takes a ?: in the middle of another only in parentheses.
            expect: Formula(
                "trig_one < 2 ? (trig_one+trig_two >= 2 ? 5 : 10) : 0",
                AverageValue,
                "2",
                None,
            ),
        },
        ModifiersCase {
            source: "webhook: with ScalingModifiers.Formula (admitted)",
            triggers: WORKLOAD_CRON,
            modifiers: json!({"formula": "workload_trig + cron_trig", "target": "2"}),
            expect: Formula("workload_trig + cron_trig", AverageValue, "2", None),
        },
        ModifiersCase {
            source: "webhook: Formula but no target (refused)",
            triggers: WORKLOAD_CRON,
            modifiers: json!({"formula": "workload_trig + cron_trig"}),
            expect: Refused("scalingModifiers.target: missing"),
        },
        ModifiersCase {
            source: "webhook: triggers dont have names (refused)",
            triggers: &[("prometheus", None), ("prometheus", None)],
            modifiers: json!({"formula": "workload_trig + cron_trig"}),
            expect: Refused("no trigger is named \"workload_trig\""),
        },
        ModifiersCase {
            source: "webhook: formula triggers have names but not all triggers (admitted)",
            triggers: &[("prometheus", None), ("prometheus", Some("workload_trig"))],
            modifiers: json!({"formula": "workload_trig + 1", "target": "2"}),
            expect: Formula("workload_trig + 1", AverageValue, "2", None),
        },
        ModifiersCase {
            source: "webhook: formula casts to float already (admitted)",
            triggers: &[("prometheus", Some("workload_trig"))],
            modifiers: json!({"formula": "float(workload_trig + 1)", "target": "2"}),
            expect: Formula("(workload_trig + 1)", AverageValue, "2", None),
        },
        ModifiersCase {
            source: "webhook: casting float from ternary operator (admitted)",
            triggers: WORKLOAD_CRON,
            modifiers: json!({"formula": "float(workload_trig < 5 ? cron_trig + workload_trig : 5)", "target": "2"}),
            expect: Formula(
                "(workload_trig < 5 ? cron_trig + workload_trig : 5)",
                AverageValue,
                "2",
                None,
            ),
        },
        ModifiersCase {
            source: "webhook: ternary operator without casting float (admitted)",
            triggers: WORKLOAD_CRON,
            modifiers: json!({"formula": "workload_trig < 5 ? cron_trig + workload_trig : 5", "target": "2"}),
            expect: Formula(
                "workload_trig < 5 ? cron_trig + workload_trig : 5",
                AverageValue,
                "2",
                None,
            ),
        },
        ModifiersCase {
            source: "webhook: count operator (admitted)",
            triggers: TRIG_ONE_TWO,
            modifiers: json!({"formula": "count([trig_one,trig_two],{#>1}) > 1 ? 5 : 0", "target": "2"}),
            expect: Refused("the function count()"),
        },
        ModifiersCase {
            source: "webhook: complex ternary (admitted)",
            triggers: TRIG_ONE_TWO,
            modifiers: json!({"formula": "float(trig_one < 2 ? trig_one+trig_two >= 2 ? 5 : 10 : 0)", "target": "2"}),
            expect: Formula(
                "(trig_one < 2 ? (trig_one+trig_two >= 2 ? 5 : 10) : 0)",
                AverageValue,
                "2",
                None,
            ),
        },
        ModifiersCase {
            source: "webhook: double float cast (admitted)",
            triggers: TRIG_ONE_TWO,
            modifiers: json!({"formula": "float(float(trig_two < 5 ? trig_one + trig_two : 5))", "target": "2"}),
            expect: Formula(
                "((trig_two < 5 ? trig_one + trig_two : 5))",
                AverageValue,
                "2",
                None,
            ),
        },
        ModifiersCase {
            source: "webhook: fallback is configured, and so uses ScalingModifiers (its formula and metricType Value)",
            triggers: &[
                ("prometheus", Some("workload_trig_1")),
                ("prometheus", Some("workload_trig_2")),
            ],
            modifiers: json!({"formula": "workload_trig_1 + workload_trig_2", "target": "2", "metricType": "Value"}),
            expect: Formula("workload_trig_1 + workload_trig_2", Value, "2", None),
        },
        ModifiersCase {
            source: "webhook: scalingModifiers fallback behavior (admitted)",
            triggers: TRIG_ONE_TWO,
            modifiers: json!({"formula": "trig_one ?? trig_two ?? 5", "target": "2"}),
            expect: Refused("?? (nil coalescing) has no counterpart"),
        },
        ModifiersCase {
            source: "scaling_modifiers_test.go: scaledObjectTemplate",
            triggers: &[
                ("prometheus", Some("metrics_api")),
                ("prometheus", Some("kw_trig")),
            ],
            modifiers: json!({"formula": "metrics_api + kw_trig", "target": "2", "activationTarget": "2"}),
            expect: Formula("metrics_api + kw_trig", AverageValue, "2", Some(2.0)),
        },
        ModifiersCase {
            source: "scaling_modifiers_test.go: scaledObjectTemplateFormula (count)",
            triggers: &[
                ("prometheus", Some("metrics_api")),
                ("prometheus", Some("kw_trig")),
            ],
            modifiers: json!({"formula": "count([kw_trig,metrics_api],{#>1}) > 1 ? 5 : 0", "target": "2", "activationTarget": "2"}),
            expect: Refused("the function count()"),
        },
        ModifiersCase {
            source: "fallback_scaling_modifiers_test.go: scaledObjectTemplate",
            triggers: &[
                ("prometheus", Some("primary")),
                ("prometheus", Some("secondary")),
            ],
            modifiers: json!({"target": "2", "formula": "primary ?? secondary ?? 8"}),
            expect: Refused("??"),
        },
    ];
    for case in &cases {
        run_modifiers_case(case);
    }
}

/// The translation, construct by construct (expr-lang's lexer and operators,
/// expr-lang/expr `parser/lexer/state.go` and `parser/operator/operator.go`, against ebb's
/// formula language).
#[test]
fn expr_lang_is_translated_token_by_token_or_refused_by_name() {
    let translate = |formula: &str| {
        modifiers::translate(formula, &mut |name| match name {
            "trig_one" => Ok("trig_one".into()),
            "HTTP_Rate" => Ok("http_rate".into()),
            other => Err(format!("unknown {other}")),
        })
    };
    for (formula, expected) in [
        (
            "trig_one > 1 and not (trig_one > 5) or trig_one == 0 ? 1 : 0",
            "trig_one > 1 && ! (trig_one > 5) || trig_one == 0 ? 1 : 0",
        ),
        ("HTTP_Rate * 2", "http_rate * 2"),
        ("+trig_one - -1 * +2", "trig_one - -1 * 2"),
        (
            "1_000 + 0x1F + 0o17 + 0b11 + .5 + 1. + 2e3 + 1.5E-2 + 007",
            "1000 + 31 + 15 + 3 + 0.5 + 1.0 + 2e3 + 1.5E-2 + 7",
        ),
        ("trig_one /* rps */ + 1 // one more", "trig_one   + 1  "),
        (
            "max(trig_one, 2) / min(trig_one, 1)",
            "max(trig_one, 2) / min(trig_one, 1)",
        ),
        (
            "float (trig_one) != 1 ? true : false",
            " (trig_one) != 1 ? true : false",
        ),
        ("trig_one\r\n\t<= 2 ? 1 : 2", "trig_one \n\t<= 2 ? 1 : 2"),
        // A ?: in the middle of another is parenthesized (CEL's grammar), at any depth; in the
        // last branch or in parentheses it is left as it is.
        (
            "trig_one ? trig_one ? trig_one ? 1 : 2 : 3 : 4",
            "trig_one ? (trig_one ? (trig_one ? 1 : 2) : 3) : 4",
        ),
        (
            "trig_one ? max(trig_one ? 1 : 2, 3) : trig_one ? 4 : 5",
            "trig_one ? max(trig_one ? 1 : 2, 3) : trig_one ? 4 : 5",
        ),
        ("(trig_one ? 1 : 2) ? 3 : 4", "(trig_one ? 1 : 2) ? 3 : 4"),
    ] {
        assert_eq!(translate(formula).as_deref(), Ok(expected), "{formula}");
    }
    for (formula, expected) in [
        ("trig_one % 2", "% (modulo) has no counterpart"),
        ("trig_one ** 2", "** (a power)"),
        ("trig_one ^ 2", "^ (a power)"),
        ("abs(trig_one)", "the function abs()"),
        ("ceil(trig_one)", "the function ceil()"),
        ("floor(trig_one)", "the function floor()"),
        ("round(trig_one)", "the function round()"),
        ("int(trig_one)", "the function int()"),
        ("len(\"abc\")", "the function len()"),
        ("trig_one ?? 1", "?? (nil coalescing)"),
        ("trig_one?.x", "?. (optional chaining)"),
        ("trig_one.x", ". (a field or a method)"),
        ("1..3", ".. (a range)"),
        ("[trig_one][0]", "[ ] (an array or an index)"),
        ("{\"a\": 1}.a", "{ } (a map or a predicate)"),
        ("trig_one in [1, 2]", "the operator in"),
        ("trig_one not in [1]", "the operator in"),
        ("'a' == 'a' ? 1 : 0", "a string"),
        ("`raw` == 'x' ? 1 : 0", "a string"),
        ("trig_one == nil ? 1 : 0", "nil"),
        ("let x = trig_one; x", "let (a variable)"),
        ("trig_one | max()", "| (a pipe)"),
        ("if trig_one > 1 { 1 } else { 0 }", "if/else"),
        ("trig_one # 1", "# (a predicate's element)"),
        ("(trig_one; 1)", "; (a sequence)"),
        ("trig_one = 1", "= (an assignment)"),
        ("trig_one @ 1", "the character '@'"),
        ("trig_one § 1", "the character '§'"),
        ("trig_oné", "unknown trig_oné"),
        ("1x + trig_one", "\"1x\" is not a number"),
        ("1.5.3", "is not a number"),
        ("2e + 1", "is not a number"),
        ("0x", "is not a number"),
        ("99999999999999999999", "is not a number"),
        ("trig_one /* open", "not closed"),
        ("trig_two + 1", "unknown trig_two"),
    ] {
        let e = translate(formula).unwrap_err();
        assert!(e.contains(expected), "{formula}: {e}");
    }
}

/// ebb's side of the mapping: names, the formula's own name, what a formula may read, the
/// target and activation, and KEDA's checks mirrored (`ValidateAndCompileScalingModifiers`,
/// `validateScalingModifiersTarget` and the scalingModifiers fallback rule of
/// `scaledobject_webhook.go`).
#[test]
fn scaling_modifiers_map_to_spec_formula() {
    use Composite::*;
    use TargetType::AverageValue;
    let cases = [
        ModifiersCase {
            source: "a trigger name that is no DNS label: the metric's identifier",
            triggers: &[
                ("prometheus", Some("HTTP_Rate")),
                ("prometheus", Some("queue")),
            ],
            modifiers: json!({"formula": "HTTP_Rate / max(queue, 1)", "target": 2}),
            expect: Formula("http_rate / max(queue, 1)", AverageValue, "2", None),
        },
        ModifiersCase {
            source: "not carried but not read: kafka trigger beside",
            triggers: &[("prometheus", Some("a")), ("prometheus", Some("b"))],
            modifiers: json!({"formula": "a - b", "target": "0.5", "activationTarget": "-1"}),
            expect: Formula("a - b", AverageValue, "0.5", Some(-1.0)),
        },
        ModifiersCase {
            source: "reads a trigger ebb drops",
            triggers: &[("prometheus", Some("a")), ("kafka", Some("lag"))],
            modifiers: json!({"formula": "a + lag", "target": "2"}),
            expect: Refused(
                "reads trigger \"lag\" (triggers[1], type kafka), which is not carried over",
            ),
        },
        ModifiersCase {
            source: "reads a cpu trigger",
            triggers: &[("prometheus", Some("a")), ("cpu", Some("cpu"))],
            modifiers: json!({"formula": "a + cpu", "target": "2"}),
            expect: Refused("\"cpu\" is a cpu trigger, which a formula cannot read"),
        },
        ModifiersCase {
            source: "a name two triggers have",
            triggers: &[("prometheus", Some("a")), ("prometheus", Some("a"))],
            modifiers: json!({"formula": "a * 2", "target": "2"}),
            expect: Refused("2 triggers are named \"a\""),
        },
        ModifiersCase {
            source: "a chained comparison (expr-lang's 1 < a && a < 3)",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "1 < a < 3 ? 1 : 0", "target": "2"}),
            expect: Refused(
                "written as \"1 < a < 3 ? 1 : 0\", it is not a formula ebb takes: < takes a number",
            ),
        },
        ModifiersCase {
            source: "true or false (KEDA's float() refuses it too)",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a > 1", "target": "2"}),
            expect: Refused("gives true or false"),
        },
        ModifiersCase {
            source: "not expr-lang",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a +", "target": "2"}),
            expect: Refused("syntax error at line 1"),
        },
        ModifiersCase {
            source: "longer than the CRD takes",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": format!("a{}", " + a".repeat(300)), "target": "2"}),
            expect: Refused("longer than 1024 characters"),
        },
        ModifiersCase {
            source: "no formula",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"target": "2"}),
            expect: Refused("scalingModifiers.formula: missing"),
        },
        ModifiersCase {
            source: "target 0",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a", "target": "0"}),
            expect: Refused("\"0\": must be a number above 0"),
        },
        ModifiersCase {
            source: "target not a number",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a", "target": "two"}),
            expect: Refused("\"two\": must be a number above 0"),
        },
        ModifiersCase {
            source: "target below a thousandth: KEDA's HPA would have 0 (controllers/keda/hpa.go)",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a", "target": "0.0001"}),
            expect: Refused("int64(0.0001 * 1000) = 0 milli-units, which the API server refuses"),
        },
        ModifiersCase {
            source: "target finer than a thousandth: KEDA's HPA truncates it to 1m",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a", "target": "0.0015"}),
            expect: Formula("a", AverageValue, "1m", None),
        },
        ModifiersCase {
            source: "32.3 * 1000 is 32299.999... in floats: KEDA's HPA has 32299m",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a", "target": "32.3", "metricType": "Value"}),
            expect: Formula("a", TargetType::Value, "32299m", None),
        },
        ModifiersCase {
            source: "metricType Utilization",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a", "target": "2", "metricType": "Utilization"}),
            expect: Refused("Utilization: the composite metric is an external metric"),
        },
        ModifiersCase {
            source: "activationTarget not a number",
            triggers: &[("prometheus", Some("a"))],
            modifiers: json!({"formula": "a", "target": "2", "activationTarget": "high"}),
            expect: Refused("\"high\" is not a number: KEDA fails on it at every poll"),
        },
    ];
    for case in &cases {
        run_modifiers_case(case);
    }

    let run = |triggers: &[(&str, Option<&str>)], spec: Json| {
        let outcome = import(&yaml(&[with_triggers(triggers, spec)])).unwrap();
        let target = outcome.targets.first().cloned();
        (outcome, target)
    };

    // A metric named like the formula: the formula takes the next name.
    let (_, st) = run(
        &[("prometheus", Some("composite"))],
        json!({"advanced": {"scalingModifiers": {"formula": "composite + 1", "target": "2"}}}),
    );
    let formula = st.unwrap().spec.formula.unwrap();
    assert_eq!(
        (formula.name.as_str(), formula.expression.as_str()),
        ("composite-2", "composite + 1")
    );

    // A trigger not read and not carried: its own line, the formula written.
    let (outcome, st) = run(
        &[("prometheus", Some("a")), ("kafka", Some("lag"))],
        json!({"advanced": {"scalingModifiers": {"formula": "a * 2", "target": "2", "extra": 1}}}),
    );
    assert_eq!(st.unwrap().spec.formula.unwrap().expression, "a * 2");
    assert!(has_line(
        &outcome,
        Loss::Dropped,
        "triggers[1] (type kafka)"
    ));
    assert!(has_line(
        &outcome,
        Loss::Dropped,
        "spec.advanced.scalingModifiers.extra"
    ));

    // A rewritten formula says so, in a note.
    let (outcome, _) = run(
        &[("prometheus", Some("a")), ("prometheus", Some("b"))],
        json!({"advanced": {"scalingModifiers": {"formula": "a > 1 and b > 1 ? a : 0", "target": "2"}}}),
    );
    assert!(
        outcome.findings.iter().any(|f| f.loss == Loss::Note
            && f.to_string().contains(
                "\"a > 1 and b > 1 ? a : 0\" is written in ebb's syntax as \"a > 1 && b > 1 ? a : 0\""
            )),
        "{:#?}",
        outcome.findings
    );

    // Empty: not in use (KEDA's IsUsingModifiers), nothing written or said.
    let (outcome, st) = run(
        &[("prometheus", Some("a"))],
        json!({"advanced": {"scalingModifiers": {}}}),
    );
    assert_eq!(st.unwrap().spec.formula, None);
    assert!(
        !outcome
            .findings
            .iter()
            .any(|f| f.field.contains("scalingModifiers"))
    );
    // Only a field KEDA does not have: not in use either, and the field named.
    let (outcome, st) = run(
        &[("prometheus", Some("a"))],
        json!({"advanced": {"scalingModifiers": {"formulas": "a"}}}),
    );
    assert_eq!(st.unwrap().spec.formula, None);
    assert!(has_line(
        &outcome,
        Loss::Dropped,
        "spec.advanced.scalingModifiers.formulas"
    ));

    // Fallback: KEDA refuses behavior scalingModifiers without a formula; with one, ebb has no
    // ?? for it; a static fallback with a formula falls back on the formula's value in both.
    let fallback = |behavior: &str, modifiers: Json| {
        run(
            &[("prometheus", Some("a")), ("prometheus", Some("b"))],
            json!({"fallback": {"failureThreshold": 3, "replicas": 5, "behavior": behavior}, "advanced": {"scalingModifiers": modifiers}}),
        )
    };
    let (outcome, st) = fallback("scalingModifiers", json!({}));
    assert!(st.is_none());
    assert!(
        outcome.refusals[0].to_string().contains(
            "spec.fallback.behavior: scalingModifiers needs spec.advanced.scalingModifiers.formula"
        ),
        "{:?}",
        outcome.refusals
    );
    let (outcome, st) = fallback(
        "scalingModifiers",
        json!({"formula": "a + b", "target": "2"}),
    );
    let spec = st.unwrap().spec;
    assert_eq!(spec.fallback, None);
    assert!(spec.formula.is_some());
    assert!(has_line(&outcome, Loss::Dropped, "spec.fallback"));
    let (outcome, st) = fallback("static", json!({"formula": "a + b", "target": "2"}));
    assert!(st.unwrap().spec.fallback.is_some());
    let on_fallback = |loss| {
        outcome
            .findings
            .iter()
            .any(|f| f.loss == loss && f.field == "spec.fallback")
    };
    assert!(on_fallback(Loss::Note) && !on_fallback(Loss::Changed));
    assert!(has_line(&outcome, Loss::Changed, "spec.fallback.behavior"));
}
