//! Permanent failures on the real control plane: a ScaledTarget whose workload does not exist,
//! whose kind has no `/scale`, or that ebb's RBAC forbids to scale shows `Ready=False` with a
//! reason and a message that says what to fix, is counted in `ebb_reconcile_errors_total`, and
//! is not polled again every few seconds (its next poll is a minute away, or at once when its
//! spec changes).

mod controller_common;
mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use controller_common::*;
use ebb::controller::Context;
use ebb::controller::metrics::ControllerMetrics;
use ebb::crd::ScaledTarget;
use ebb::engine::conditions as cond;
use ebb::source::SecretAccess;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use support::{eventually, shared_stack};

/// The controller on `ns` as the only replica, with its context and metrics.
fn start(client: kube::Client, ns: &str) -> (Arc<Context>, ControllerMetrics) {
    let c = start_controller_with(client, ns, SecretAccess::Any);
    (c.ctx, c.metrics)
}

/// A Direct target on `kind`/`name` (apiVersion `api_version`), polled every second, with at
/// least 2 replicas (so that a workload at 1 is scaled).
fn target(api_version: &str, kind: &str, name: &str, queue: &str) -> serde_json::Value {
    let mut st = backlog_target("t", queue, "Direct", 5, "1s");
    st["spec"]["targetRef"] = json!({ "apiVersion": api_version, "kind": kind, "name": name });
    st["spec"]["minReplicas"] = json!(2);
    st
}

/// Waits for `Ready=False` with `reason`; returns its message.
async fn not_ready(client: &kube::Client, ns: &str, reason: &str) -> String {
    eventually(30 * SECOND, &format!("Ready=False {reason}"), || async {
        let c = status_condition(client, ns, "t", cond::READY).await?;
        (c.status == "False" && c.reason == reason).then_some(c.message)
    })
    .await
}

/// With a 1 s polling interval, a target that failed permanently is polled at most once more
/// in 8 s (a regular schedule would poll 8 times, the old 5 s retry twice).
async fn polls_slowly(ctx: &Context) {
    let before = ctx.stats.polls.load(Relaxed);
    tokio::time::sleep(8 * SECOND).await;
    let polls = ctx.stats.polls.load(Relaxed) - before;
    assert!(polls <= 1, "{polls} polls in 8 s after a permanent failure");
}

#[tokio::test]
async fn a_missing_workload_is_not_ready_until_the_spec_names_one() {
    let (client, ns) = setup("missing").await;
    let queue = format!("{ns}-q");
    let (_conn, channel) = channel(shared_stack().rabbitmq.as_ref().unwrap()).await;
    publish(&channel, &queue, 0).await;
    let (ctx, metrics) = start(client.clone(), &ns);
    scaled_target(
        &client,
        &ns,
        target("apps/v1", "Deployment", "nowhere", &queue),
    )
    .await;
    let message = not_ready(&client, &ns, cond::TARGET_NOT_FOUND).await;
    assert!(
        message.contains(&format!("Deployment nowhere not found in namespace {ns}"))
            && message.contains("create it, or fix spec.targetRef"),
        "{message}"
    );
    assert!(metrics.reconcile_errors("permanent", cond::TARGET_NOT_FOUND) >= 1);
    polls_slowly(&ctx).await;

    // The fix: point the target at a workload that exists. A spec change polls at once.
    deployment(&client, &ns, "web", 1).await;
    Api::<ScaledTarget>::namespaced(client.clone(), &ns)
        .patch(
            "t",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "targetRef": { "name": "web" } } })),
        )
        .await
        .unwrap();
    eventually(10 * SECOND, "Ready=True and 2 replicas", || async {
        let ready = condition(&client, &ns, "t", cond::READY).await?;
        (ready.0 == "True" && replicas(&client, &ns, "web").await == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_kind_without_scale_is_not_ready_with_what_to_fix() {
    let (client, ns) = setup("noscale").await;
    let queue = format!("{ns}-q");
    let (_conn, channel) = channel(shared_stack().rabbitmq.as_ref().unwrap()).await;
    publish(&channel, &queue, 0).await;
    let configmaps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), &ns);
    configmaps
        .create(
            &Default::default(),
            &from_json(json!({ "metadata": { "name": "settings" } })),
        )
        .await
        .unwrap();
    let (ctx, metrics) = start(client.clone(), &ns);
    scaled_target(&client, &ns, target("v1", "ConfigMap", "settings", &queue)).await;
    let message = not_ready(&client, &ns, cond::NO_SCALE_SUBRESOURCE).await;
    assert!(
        message.contains("v1/ConfigMap has no /scale subresource")
            && message.contains("spec.targetRef must name a kind with /scale"),
        "{message}"
    );
    assert!(metrics.reconcile_errors("permanent", cond::NO_SCALE_SUBRESOURCE) >= 1);
    polls_slowly(&ctx).await;
}

/// The user of the next test: deploy/'s ClusterRole without its `*/scale` rule.
const NO_SCALE_USER: &str = "ebb-no-scale";

async fn grant_all_but_scale(client: &kube::Client) {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    use serde::Deserialize;
    let text = include_str!("../deploy/rbac-controller.yaml");
    let role = serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap();
    let mut role: ClusterRole = from_json(role);
    let rules = role.rules.as_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| {
        !r.resources
            .iter()
            .flatten()
            .any(|res| res.ends_with("/scale"))
    });
    assert_eq!(rules.len(), before - 1, "deploy/ has one /scale rule");
    role.metadata.name = Some(NO_SCALE_USER.into());
    let binding: ClusterRoleBinding = from_json(json!({
        "metadata": { "name": NO_SCALE_USER },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NO_SCALE_USER },
        "subjects": [{ "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": NO_SCALE_USER }]
    }));
    let pp = PatchParams::apply("ebb-test").force();
    Api::<ClusterRole>::all(client.clone())
        .patch(NO_SCALE_USER, &pp, &Patch::Apply(&role))
        .await
        .unwrap();
    Api::<ClusterRoleBinding>::all(client.clone())
        .patch(NO_SCALE_USER, &pp, &Patch::Apply(&binding))
        .await
        .unwrap();
}

#[tokio::test]
async fn rbac_that_forbids_scale_is_not_ready_with_what_to_grant() {
    let (client, ns) = setup("forbidden").await;
    grant_all_but_scale(&client).await;
    let queue = format!("{ns}-q");
    let (_conn, channel) = channel(shared_stack().rabbitmq.as_ref().unwrap()).await;
    publish(&channel, &queue, 0).await;
    deployment(&client, &ns, "web", 1).await;
    let kubeconfig = shared_stack()
        .kube
        .as_ref()
        .unwrap()
        .kubeconfig_for(NO_SCALE_USER, None)
        .unwrap();
    let restricted = ebb::localstack::kube::kube_client(&kubeconfig)
        .await
        .unwrap();
    let (ctx, metrics) = start(restricted, &ns);
    scaled_target(&client, &ns, target("apps/v1", "Deployment", "web", &queue)).await;
    let message = not_ready(&client, &ns, cond::FORBIDDEN).await;
    assert!(
        message.contains("ebb may not do what scaling Deployment web needs")
            && message.contains(NO_SCALE_USER)
            && message.contains("deployments/scale")
            && message.contains("grant that to ebb's ServiceAccount"),
        "{message}"
    );
    assert!(metrics.reconcile_errors("permanent", cond::FORBIDDEN) >= 1);
    assert_eq!(replicas(&client, &ns, "web").await, 1);
    eprintln!("{message}");
    polls_slowly(&ctx).await;
}

/// Bad input next to a good target: a PromQL syntax error, a refused RabbitMQ password, a
/// Secret that does not exist and a Secret with the wrong keys each show as
/// `SourcesHealthy=False` with a reason and a message naming the problem; none of them scales
/// its workload or writes an Event, and the good target in the same namespace scales as usual.
#[tokio::test]
async fn bad_input_is_a_condition_naming_the_problem_and_nothing_else_changes() {
    let (client, ns) = setup("badinput").await;
    let stack = shared_stack();
    let rabbit = stack.rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-q");
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 30).await;
    secret(
        &client,
        &ns,
        "wrong-password",
        json!({ "managementUrl": rabbit.management_url().replace("http://", "http://guest:nope@") }),
    )
    .await;
    secret(
        &client,
        &ns,
        "wrong-keys",
        json!({ "user": "guest", "password": "guest" }),
    )
    .await;
    let with_secret = |name: &str, secret: &str| {
        let mut st = backlog_target(name, &queue, "Direct", 10, "1s");
        st["spec"]["metrics"][0]["rabbitmq"]["connectionSecretRef"]["name"] = json!(secret);
        st
    };
    let mut bad_query = backlog_target("badquery", &queue, "Direct", 10, "1s");
    bad_query["spec"]["metrics"][0] = json!({
        "name": "load",
        "prometheus": {
            "address": stack.prometheus.as_ref().unwrap().url(),
            "query": "sum(rate(http_requests_total[1m]) by (job"
        },
        "target": { "type": "AverageValue", "averageValue": "10" }
    });
    let targets = [
        ("good", with_secret("good", "rabbit")),
        ("badquery", bad_query),
        ("badpassword", with_secret("badpassword", "wrong-password")),
        ("nosecret", with_secret("nosecret", "absent")),
        ("badkeys", with_secret("badkeys", "wrong-keys")),
    ];
    for (name, st) in targets {
        deployment(&client, &ns, name, 2).await;
        scaled_target(&client, &ns, st).await;
    }
    let _controller = start_controller(client.clone(), &ns);

    let expect: [(&str, &str, Vec<String>); 4] = [
        (
            "badquery",
            cond::QUERY_REJECTED,
            vec![
                "metric load: source failed: query rejected:".into(),
                "parse error".into(),
            ],
        ),
        (
            "badpassword",
            cond::AUTHENTICATION_REFUSED,
            vec!["metric backlog: source failed: authentication refused: HTTP 401".into()],
        ),
        (
            "nosecret",
            cond::SECRET_NOT_FOUND,
            vec![format!("metric backlog: secret {ns}/absent not found")],
        ),
        (
            "badkeys",
            cond::INVALID_CONFIGURATION,
            vec![
                "metric backlog: bad configuration: secret wrong-keys (keys: password, user)"
                    .into(),
                "needs managementUrl or amqpUrl".into(),
            ],
        ),
    ];
    for (name, reason, parts) in &expect {
        let message = eventually(30 * SECOND, &format!("{name}: {reason}"), || async {
            let c = status_condition(&client, &ns, name, cond::SOURCES_HEALTHY).await?;
            (c.status == "False" && c.reason == *reason).then_some(c.message)
        })
        .await;
        eprintln!("{name}: {reason}: {message}");
        for part in parts {
            assert!(
                message.contains(part.as_str()),
                "{name}: {message:?} lacks {part:?}"
            );
        }
    }
    eventually(30 * SECOND, "the good target at 3 replicas", || async {
        (replicas(&client, &ns, "good").await == 3).then_some(())
    })
    .await;
    let (healthy, reason) = condition(&client, &ns, "good", cond::SOURCES_HEALTHY)
        .await
        .unwrap();
    assert_eq!(
        (healthy.as_str(), reason.as_str()),
        ("True", cond::ALL_METRICS_READ)
    );
    // Several more polls: the bad targets keep their count and their spec, and write no Event.
    tokio::time::sleep(3 * SECOND).await;
    for (name, reason, _) in &expect {
        assert_eq!(replicas(&client, &ns, name).await, 2, "{name}");
        let st = Api::<ScaledTarget>::namespaced(client.clone(), &ns)
            .get(name)
            .await
            .unwrap();
        let status = st.status.unwrap();
        assert_eq!(status.current_replicas, Some(2), "{name}");
        assert_eq!(
            status.metrics[0].value, None,
            "{name}: never read as a number"
        );
        assert!(status.metrics[0].error.is_some(), "{name}");
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == cond::SOURCES_HEALTHY)
            .unwrap();
        assert_eq!(&c.reason, reason, "{name}");
    }
    let scaled = events(&client, &ns, cond::EVENT_SCALED).await;
    assert!(
        scaled
            .iter()
            .all(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("good")),
        "{scaled:?}"
    );
}

/// `--secret-namespaces`: a Secret outside the list is refused by name, before the API server
/// is asked, and the workload keeps its count.
#[tokio::test]
async fn a_secret_outside_the_listed_namespaces_is_refused_with_what_to_add() {
    let (client, ns) = setup("restricted").await;
    let queue = format!("{ns}-q");
    let (_conn, channel) = channel(shared_stack().rabbitmq.as_ref().unwrap()).await;
    publish(&channel, &queue, 30).await;
    deployment(&client, &ns, "web", 2).await;
    let only = SecretAccess::from_namespaces(&["team-a".into(), "team-b".into()]);
    let _controller = start_controller_with(client.clone(), &ns, only);
    let mut st = backlog_target("t", &queue, "Direct", 10, "1s");
    st["spec"]["targetRef"]["name"] = json!("web");
    scaled_target(&client, &ns, st).await;
    let message = eventually(
        30 * SECOND,
        "SourcesHealthy=False SecretRestricted",
        || async {
            let c = status_condition(&client, &ns, "t", cond::SOURCES_HEALTHY).await?;
            (c.status == "False" && c.reason == cond::SECRET_RESTRICTED).then_some(c.message)
        },
    )
    .await;
    assert!(
        message.contains(&format!(
            "secret {ns}/rabbit: ebb reads Secrets only in team-a, team-b"
        )) && message.contains(&format!("add {ns} to the chart's secretAccess.namespaces")),
        "{message}"
    );
    tokio::time::sleep(2 * SECOND).await;
    assert_eq!(replicas(&client, &ns, "web").await, 2);
}

/// A warning that repeats is one Event whose series counts the repeats (as client-go's and
/// kube-runtime's recorders do), until it has not repeated for six minutes; another reason
/// is another Event; a series whose Event was deleted starts again. On a stepped clock.
#[tokio::test]
async fn a_repeated_warning_is_one_event_with_a_series() {
    use ebb::controller::events::{EventSeries, Notice, SERIES_TTL};
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::jiff::{SignedDuration, Timestamp};
    use kube::Resource;
    use kube::runtime::events::{EventType, Reporter};

    let (client, ns) = setup("event-series").await;
    let st = scaled_target(&client, &ns, backlog_target("t", "q", "Direct", 5, "1s")).await;
    let regarding = st.object_ref(&());
    let reporter = Reporter {
        controller: "ebb".into(),
        instance: Some("test".into()),
    };
    let series = EventSeries::new(client.clone(), reporter);
    let notice = |reason, note: &str| Notice {
        type_: EventType::Warning,
        reason,
        action: "Scale",
        note: note.into(),
    };
    let events = Api::<Event>::namespaced(client.clone(), &ns);
    let list = || async {
        let mut items = events.list(&Default::default()).await.unwrap().items;
        items.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
        items
            .into_iter()
            .map(|e| {
                let count = e.series.as_ref().map(|s| s.count);
                (
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                    count,
                )
            })
            .collect::<Vec<_>>()
    };
    let t0 = Timestamp::now() - SignedDuration::from_hours(3);
    let at = |seconds: i64| t0 + SignedDuration::from_secs(seconds);
    let publish = |seconds: i64, n: Notice| {
        let (series, regarding) = (&series, &regarding);
        async move { series.publish_at(at(seconds), &n, regarding).await.unwrap() }
    };
    let failed = cond::EVENT_FAILED_RESCALE;
    publish(0, notice(failed, "first")).await;
    publish(10, notice(failed, "second")).await;
    publish(20, notice(failed, "third")).await;
    publish(20, notice(cond::SCALING_STALLED, "stalled")).await;
    // A series keeps its first note: an Event's note cannot change.
    assert_eq!(
        list().await,
        [
            (failed.to_string(), "first".to_string(), Some(3)),
            (
                cond::SCALING_STALLED.to_string(),
                "stalled".to_string(),
                None
            ),
        ]
    );

    // Six minutes without a repeat: a new Event.
    let later = 20 + SERIES_TTL.as_secs();
    publish(later, notice(failed, "again")).await;
    let listed = list().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[2], (failed.to_string(), "again".to_string(), None));

    // Its Event deleted (the API server's own TTL, or by hand): the repeat starts a new one.
    let name = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.note.as_deref() == Some("again"))
        .and_then(|e| e.metadata.name)
        .unwrap();
    events.delete(&name, &Default::default()).await.unwrap();
    publish(later + 5, notice(failed, "after the delete")).await;
    let listed = list().await;
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(
        listed[2],
        (failed.to_string(), "after the delete".to_string(), None)
    );
    // The stall's series, six minutes old at the publish after the delete, was dropped.
    assert_eq!(series.open_series(), 1);
    // An hour on, the old series are dropped at the next publish.
    publish(later + 3600, notice(cond::SCALING_STALLED, "stalled again")).await;
    assert_eq!(series.open_series(), 1);
}
