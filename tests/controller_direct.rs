//! Modes Direct and Shadow against the real control plane and RabbitMQ: scale on a backlog,
//! scale down only after the stabilization window at the policy's rate, pause, escalation.

mod controller_common;
mod support;

use std::time::{Duration, Instant};

use controller_common::*;
use ebb::crd::ScaledTarget;
use ebb::engine::conditions as cond;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::{eventually, shared_stack};

#[tokio::test]
async fn a_backlog_scales_up_within_a_poll_and_drains_down_after_the_window_one_pod_at_a_time() {
    let (client, ns) = setup("direct").await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-orders");
    deployment(&client, &ns, "worker", 1).await;
    let mut st = backlog_target("worker", &queue, "Direct", 10, "2s");
    st["spec"]["behavior"] = json!({
        "scaleDown": {
            "stabilizationWindowSeconds": 6,
            "policies": [{ "type": "Pods", "value": 1, "periodSeconds": 2 }]
        }
    });
    scaled_target(&client, &ns, st).await;
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 0).await; // declare only: the first polls read 0
    let _controller = start_controller(client.clone(), &ns);
    eventually(20 * SECOND, "a first decision in status", || async {
        let (status, _) = condition(&client, &ns, "worker", "Ready").await?;
        (status == "True").then_some(())
    })
    .await;
    assert_eq!(replicas(&client, &ns, "worker").await, 1);

    publish(&channel, &queue, 50).await;
    eventually(10 * SECOND, "the backlog in the management API", || async {
        (backlog(rabbit, &queue).await? == 50).then_some(())
    })
    .await;
    let seen = Instant::now();
    // One polling interval (2 s) plus one second, with slack for a loaded machine.
    eventually(
        2 * SECOND + SECOND + 3 * SECOND,
        "5 replicas for 50 messages at 10 each",
        || async { (replicas(&client, &ns, "worker").await == 5).then_some(()) },
    )
    .await;
    eprintln!("scaled up {:?} after the backlog showed", seen.elapsed());
    // The Event follows the `/scale` write that the replica count shows.
    eventually(5 * SECOND, "a Scaled Event from 1 to 5", || async {
        events(&client, &ns, "Scaled")
            .await
            .iter()
            .any(|e| {
                e.note
                    .as_deref()
                    .unwrap_or("")
                    .contains("from 1 to 5 (metric backlog")
            })
            .then_some(())
    })
    .await;

    purge(rabbit, &queue).await;
    let drained = Instant::now();
    let mut history = vec![5];
    let mut first_down = None;
    while history.last() != Some(&1) {
        assert!(
            drained.elapsed() < Duration::from_secs(40),
            "never got down to 1: {history:?}"
        );
        let r = replicas(&client, &ns, "worker").await;
        if Some(&r) != history.last() {
            first_down.get_or_insert(drained.elapsed());
            history.push(r);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The audit trail has every step down as an Event of its own (the last one may trail the
    // `/scale` write it records by a moment).
    for step in history.windows(2) {
        let note = format!("from {} to {} (metric backlog", step[0], step[1]);
        scaled_event_saying(&client, &ns, &note, 5 * SECOND).await;
    }
    // The window (6 s) counts from the last high reading, at most one interval (2 s) before
    // the purge; the policy allows one pod per 2 s.
    let first_down = first_down.unwrap();
    assert!(
        first_down >= Duration::from_secs(4),
        "scaled down after {first_down:?}"
    );
    assert_eq!(history, [5, 4, 3, 2, 1], "one pod per period");
    let st = Api::<ScaledTarget>::namespaced(client.clone(), &ns)
        .get("worker")
        .await
        .unwrap();
    let status = st.status.unwrap();
    assert_eq!(status.observed_generation, st.metadata.generation);
    assert_eq!(status.metrics[0].name, "backlog");
    assert_eq!(
        status.metrics[0].value.as_ref().map(|q| q.0.as_str()),
        Some("0")
    );
}

/// A restart (or a new leader) during a drop: the new process has no memory of the high
/// readings, and must not scale down on the first low one. It holds the count it found for a
/// scale-down window of its own (upstream's initial recommendation), then scales down.
#[tokio::test]
async fn a_restart_during_a_drop_scales_down_only_after_a_window_of_its_own() {
    let (client, ns) = setup("restart").await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-orders");
    deployment(&client, &ns, "worker", 1).await;
    let mut st = backlog_target("worker", &queue, "Direct", 10, "1s");
    st["spec"]["behavior"] = json!({
        "scaleDown": {
            "stabilizationWindowSeconds": 20,
            "policies": [{ "type": "Percent", "value": 100, "periodSeconds": 1 }]
        }
    });
    scaled_target(&client, &ns, st).await;
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 40).await;
    let first = start_controller(client.clone(), &ns);
    eventually(30 * SECOND, "4 replicas for 40 messages", || async {
        (replicas(&client, &ns, "worker").await == 4).then_some(())
    })
    .await;

    // The process goes, the load drops, a new process starts.
    first.abort();
    let _ = first.await;
    purge(rabbit, &queue).await;
    eventually(
        10 * SECOND,
        "the empty queue in the management API",
        || async { (backlog(rabbit, &queue).await? == 0).then_some(()) },
    )
    .await;
    let restarted = Instant::now();
    let _second = start_controller(client.clone(), &ns);
    // Only the new process can see the empty queue; it says why it holds.
    let held = eventually(20 * SECOND, "the new process holding in status", || async {
        let c = status_condition(&client, &ns, "worker", "Ready").await?;
        c.message
            .contains("ScaleDownStabilized")
            .then_some(c.message)
    })
    .await;
    eprintln!("held {:?} after the restart: {held}", restarted.elapsed());
    assert_eq!(replicas(&client, &ns, "worker").await, 4, "{held}");
    eventually(60 * SECOND, "down to 1 after the window", || async {
        (replicas(&client, &ns, "worker").await == 1).then_some(())
    })
    .await;
    // The window counts from the new process's first decision, after `restarted`.
    let down = restarted.elapsed();
    assert!(
        down >= Duration::from_secs(20),
        "scaled down {down:?} after the restart"
    );
}

#[tokio::test]
async fn shadow_mode_reports_the_decision_and_changes_nothing() {
    let (client, ns) = setup("shadow").await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-orders");
    deployment(&client, &ns, "worker", 1).await;
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 30).await;
    scaled_target(
        &client,
        &ns,
        backlog_target("worker", &queue, "Shadow", 10, "1s"),
    )
    .await;
    let _controller = start_controller(client.clone(), &ns);
    let sts = Api::<ScaledTarget>::namespaced(client.clone(), &ns);
    eventually(20 * SECOND, "desired 3 in status", || async {
        let s = sts.get("worker").await.ok()?.status?;
        (s.desired_replicas == Some(3)).then_some(())
    })
    .await;
    let shadow = eventually(10 * SECOND, "a ShadowDecision event", || async {
        let e = events(&client, &ns, "ShadowDecision").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(
        shadow[0]
            .note
            .as_deref()
            .unwrap()
            .contains("would scale 1 -> 3"),
        "{shadow:?}"
    );
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(replicas(&client, &ns, "worker").await, 1);
    assert_eq!(
        events(&client, &ns, "ShadowDecision").await.len(),
        1,
        "one event per change"
    );
}

#[tokio::test]
async fn pause_annotations_freeze_scaling_and_paused_replicas_sets_the_count() {
    let (client, ns) = setup("pause").await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-orders");
    deployment(&client, &ns, "worker", 1).await;
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 40).await;
    let mut st = backlog_target("worker", &queue, "Direct", 10, "1s");
    st["metadata"]["annotations"] = json!({ "ebb.dev/paused": "true" });
    scaled_target(&client, &ns, st).await;
    let _controller = start_controller(client.clone(), &ns);
    eventually(20 * SECOND, "Paused condition", || async {
        let (status, _) = condition(&client, &ns, "worker", "Paused").await?;
        (status == "True").then_some(())
    })
    .await;
    tokio::time::sleep(3 * SECOND).await; // three polls
    assert_eq!(
        replicas(&client, &ns, "worker").await,
        1,
        "paused: no scaling despite 40 messages"
    );

    let sts = Api::<ScaledTarget>::namespaced(client.clone(), &ns);
    let annotate = |a: serde_json::Value| {
        let sts = sts.clone();
        async move {
            sts.patch(
                "worker",
                &PatchParams::default(),
                &Patch::Merge(json!({ "metadata": { "annotations": a } })),
            )
            .await
            .unwrap();
        }
    };
    annotate(json!({ "ebb.dev/paused": null, "ebb.dev/paused-replicas": "2" })).await;
    eventually(10 * SECOND, "paused at 2", || async {
        (replicas(&client, &ns, "worker").await == 2).then_some(())
    })
    .await;
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(
        replicas(&client, &ns, "worker").await,
        2,
        "held at the paused count"
    );

    annotate(json!({ "ebb.dev/paused-replicas": null })).await;
    eventually(
        10 * SECOND,
        "unpaused: 4 replicas for 40 messages",
        || async { (replicas(&client, &ns, "worker").await == 4).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn escalation_fires_once_at_max_replicas_with_demand_above() {
    let (client, ns) = setup("escalate").await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-orders");
    let (url, calls) = webhook().await;
    secret(
        &client,
        &ns,
        "pager",
        json!({ "url": url, "headers": "X-Token: s3cret" }),
    )
    .await;

    deployment(&client, &ns, "worker", 1).await;
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 100).await;
    let mut st = backlog_target("worker", &queue, "Direct", 3, "1s");
    st["spec"]["escalation"] = json!({ "webhookSecretRef": { "name": "pager" } });
    scaled_target(&client, &ns, st).await;
    let _controller = start_controller(client.clone(), &ns);
    eventually(20 * SECOND, "at maxReplicas 3", || async {
        (replicas(&client, &ns, "worker").await == 3).then_some(())
    })
    .await;
    eventually(10 * SECOND, "a webhook call", || async {
        (!calls.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    tokio::time::sleep(5 * SECOND).await; // five more polls at max
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "once, not per poll: {calls:?}");
    let (token, body) = (&calls[0].headers["x-token"], &calls[0].body);
    assert_eq!(token, "s3cret");
    assert_eq!(body["reason"], "AtMaxReplicas");
    assert_eq!(body["maxReplicas"], 3);
    assert_eq!(body["demandedReplicas"], 10);
    assert!(
        body["tried"].to_string().contains("maxReplicas 3"),
        "{body}"
    );
    assert_eq!(events(&client, &ns, "Escalated").await.len(), 1);
}

/// The current count comes from a watch of the Deployments (src/controller/replicas.rs), not a
/// GET per poll: a change made by hand must still be seen by the next poll. If the watch were
/// stale, ebb would take 7 for the 3 it last wrote and leave the workload at 7.
#[tokio::test]
async fn a_workload_scaled_by_hand_is_seen_by_the_next_poll() {
    let (client, ns) = setup("handscaled").await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-jobs");
    deployment(&client, &ns, "worker", 1).await;
    let mut st = backlog_target("worker", &queue, "Direct", 10, "1s");
    st["spec"]["behavior"] = json!({ "scaleDown": { "stabilizationWindowSeconds": 0 } });
    scaled_target(&client, &ns, st).await;
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 30).await;
    let _controller = start_controller(client.clone(), &ns);
    eventually(20 * SECOND, "3 replicas for 30 messages", || async {
        (replicas(&client, &ns, "worker").await == 3).then_some(())
    })
    .await;

    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), &ns)
        .patch_scale(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 7 } })),
        )
        .await
        .unwrap();
    eventually(10 * SECOND, "a Scaled Event from 7 to 3", || async {
        events(&client, &ns, "Scaled")
            .await
            .iter()
            .any(|e| e.note.as_deref().unwrap_or("").contains("from 7 to 3"))
            .then_some(())
    })
    .await;
    assert_eq!(replicas(&client, &ns, "worker").await, 3);
}

/// A `queueRegex` over queues that come and go: with none left, it is no data (held, and
/// `SourcesHealthy` says so) unless the user says what that stands for: `emptyAs: 0` lets the
/// target go down to its minimum.
#[tokio::test]
async fn no_matching_queue_holds_unless_empty_as_says_it_is_zero() {
    let (client, ns) = setup("emptyas").await;
    let regex = format!("{ns}-gone-.*");
    let with = |name: &str, empty_as: Option<f64>| {
        let mut st = backlog_target(name, "unused", "Direct", 10, "1s");
        let rabbitmq = &mut st["spec"]["metrics"][0]["rabbitmq"];
        rabbitmq.as_object_mut().unwrap().remove("queue");
        rabbitmq["queueRegex"] = json!(regex);
        if let Some(v) = empty_as {
            rabbitmq["emptyAs"] = json!(v);
        }
        st["spec"]["behavior"] = json!({ "scaleDown": { "stabilizationWindowSeconds": 0 } });
        st
    };
    for (name, empty_as) in [("held", None), ("zero", Some(0.0))] {
        deployment(&client, &ns, name, 3).await;
        scaled_target(&client, &ns, with(name, empty_as)).await;
    }
    let _controller = start_controller(client.clone(), &ns);
    eventually(20 * SECOND, "emptyAs 0: down to the minimum", || async {
        (replicas(&client, &ns, "zero").await == 1).then_some(())
    })
    .await;
    // The two targets' status writes are queued apart: the held one's may land later.
    let (healthy, reason) = eventually(10 * SECOND, "held: a SourcesHealthy condition", || {
        condition(&client, &ns, "held", cond::SOURCES_HEALTHY)
    })
    .await;
    assert_eq!(
        (healthy.as_str(), reason.as_str()),
        ("False", cond::NO_DATA)
    );
    assert_eq!(
        replicas(&client, &ns, "held").await,
        3,
        "no data is not zero"
    );
}

/// ebb's `/scale` writes carry the resourceVersion of the count they were decided from
/// (`controller::patch_scale`): the real API server refuses such a write once the count has
/// moved (here, another writer took it from 2 to 8), so a decision made from a stale count
/// cannot take 8 down to 6 past every scale-down rule; on the fresh version it goes through.
#[tokio::test]
async fn a_scale_write_from_a_count_that_moved_is_refused_and_one_from_the_fresh_count_is_not() {
    use k8s_openapi::api::apps::v1::Deployment;
    let (client, ns) = setup("stale-write").await;
    deployment(&client, &ns, "w", 2).await;
    let api = Api::<Deployment>::namespaced(client.clone(), &ns);
    let patch = |replicas: i32, version: &str| {
        Patch::Merge(json!({
            "metadata": { "resourceVersion": version },
            "spec": { "replicas": replicas }
        }))
    };
    // The Deployment's status moves while its pods come and go, and each move is a new
    // version: as ebb does, read again and write again while the count read is still `from`.
    // Gives the version the count `from` was read at before the write went through.
    let write_on_a_fresh_read = |from: i32, to: i32| {
        let api = api.clone();
        async move {
            for _ in 0..20 {
                let fresh = api.get_scale("w").await.unwrap();
                assert_eq!(fresh.spec.and_then(|s| s.replicas), Some(from));
                let version = fresh.metadata.resource_version.unwrap();
                match api
                    .patch_scale("w", &PatchParams::default(), &patch(to, &version))
                    .await
                {
                    Ok(_) => return version,
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("a write on the fresh version goes through: {e}"),
                }
            }
            panic!("{from} -> {to}: the version moved at every one of 20 reads");
        }
    };
    let read_at_2 = write_on_a_fresh_read(2, 8).await;
    let stale = api
        .patch_scale("w", &PatchParams::default(), &patch(6, &read_at_2))
        .await;
    assert!(
        matches!(&stale, Err(kube::Error::Api(e)) if e.code == 409),
        "{stale:?}"
    );
    assert_eq!(replicas(&client, &ns, "w").await, 8);
    write_on_a_fresh_read(8, 6).await;
    assert_eq!(replicas(&client, &ns, "w").await, 6);
}
