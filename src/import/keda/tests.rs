//! The mapping, case by case. The inputs (and whether KEDA accepts them) are KEDA's own, cited
//! per case from kedacore/keda: `pkg/scalers/prometheus_scaler_test.go` (`testPromMetadata`,
//! `testPrometheusAuthMetadata`), `pkg/scalers/rabbitmq_scaler_test.go`
//! (`testRabbitMQMetadata`, `testRabbitMQAuthParamData`) and `config/samples/`. The expected
//! outcome is ebb's: converted (to what), converted with report lines, or refused.

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

#[test]
fn what_ebb_has_no_counterpart_for_is_reported_by_field() {
    let (outcome, st) = one(
        json!({
            "idleReplicaCount": 1, "minReplicaCount": 3,
            "advanced": {"restoreToOriginalReplicaCount": true, "scalingModifiers": {"formula": "a + b", "target": "2"}},
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
        "spec.advanced.scalingModifiers",
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
