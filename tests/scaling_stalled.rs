//! Scale-ups whose pods cannot start, on the local stack (the real scheduler and controllers,
//! kwok playing kubelet with the fault stages of `src/localstack/kwok-fault-stages.yaml`):
//!
//! - a full cluster: the workload's node is tainted, new pods stay Pending Unschedulable;
//! - a bad release that crash-loops, is OOM-killed, whose image cannot be pulled, whose
//!   container cannot be created (a missing Secret), or whose readiness probe never passes:
//!   the pod template gets kwok's fault label, the rollout sticks with the new pods failing,
//!   then the load rises;
//! - a slow start: pods Ready only N seconds after they start, and a full cluster after.
//!
//! In each, ebb finds the scale-up stalled once the budget from the startup delay it learned
//! from the workload's own pods is over (twice the delay, at least 30 s), names the pattern in
//! the pods' own words (condition and Event), adds no replicas however high the load goes, and
//! resumes by itself when the cause goes. Each test has its namespace, its metric series and,
//! when it taints one, a kwok node of its own (the others never land there), so that the
//! tests run side by side.

mod controller_common;
mod support;

use std::time::{Duration, Instant};

use controller_common::*;
use ebb::controller::pods::pod_state;
use ebb::crd::ScaledTarget;
use ebb::engine::stall::Pattern;
use ebb::localstack::kube::{
    FAULT_CONFIGERROR, FAULT_CRASHLOOP, FAULT_IMAGEPULL, FAULT_LABEL, FAULT_OOMKILLED,
    FAULT_UNREADY, READY_AFTER_LABEL,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use support::{eventually, shared_stack};

/// The taint that makes a test's node full.
const FULL: &str = "ebb.dev/test-full";
/// The label and taint that keep a test's node to the test's own pods.
const POOL: &str = "ebb.dev/pool";

async fn push_load(ns: &str, value: f64) {
    let prometheus = shared_stack().prometheus.as_ref().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    prometheus
        .push(
            &[("__name__", "ebb_stall_load"), ("job", ns)],
            &[(now, value)],
        )
        .await
        .unwrap();
}

/// A kwok node for the test in `ns` alone: labelled and tainted with its pool, so that only
/// pods that select and tolerate it ([`deployment_with`]'s `own_node`) run there.
async fn own_node(ns: &str) -> String {
    let name = format!("kwok-{ns}");
    shared_stack()
        .kube
        .as_ref()
        .unwrap()
        .add_node(&name, &[(POOL, ns)], &[(POOL, ns, "NoSchedule")])
        .await
        .unwrap();
    name
}

/// Taints the test's node full, NoSchedule (pods already there stay), or lifts that taint.
async fn set_full(client: &kube::Client, node: &str, ns: &str, full: bool) {
    let mut taints = vec![json!({ "key": POOL, "value": ns, "effect": "NoSchedule" })];
    if full {
        taints.push(json!({ "key": FULL, "value": "true", "effect": "NoSchedule" }));
    }
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "taints": taints } })),
        )
        .await
        .unwrap();
}

/// The sample workload (`ebb::localstack::workload`) with `labels` on its pods, on the test's
/// own node when `own_node` (the namespace's pool) is given.
async fn deployment_with(
    client: &kube::Client,
    ns: &str,
    name: &str,
    replicas: i32,
    labels: &[(&str, &str)],
    own_node: Option<&str>,
) {
    let mut d = workload_with_labels(name, replicas, labels);
    if let Some(pool) = own_node {
        let template = &mut d["spec"]["template"];
        template["spec"]["nodeSelector"] = json!({ POOL: pool });
        template["spec"]["tolerations"] =
            json!([{ "key": POOL, "operator": "Equal", "value": pool, "effect": "NoSchedule" }]);
    }
    create_deployment(client, ns, d).await;
}

/// A release of Deployment `name` whose pods carry kwok's fault label `fault`, or (`None`)
/// one without it again: a rollout either way.
async fn release(client: &kube::Client, ns: &str, name: &str, fault: Option<&str>) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({
                "spec": { "template": { "metadata": { "labels": { FAULT_LABEL: fault } } } }
            })),
        )
        .await
        .unwrap();
}

/// A ScaledTarget on Deployment `worker`, mode Direct, polling every second, one pod per 10 of
/// the namespace's load series.
async fn worker_target(client: &kube::Client, ns: &str) {
    scaled_target(client, ns, worker_target_object(ns)).await;
}

fn worker_target_object(ns: &str) -> serde_json::Value {
    let prometheus = shared_stack().prometheus.as_ref().unwrap().url();
    let query = format!("sum(ebb_stall_load{{job=\"{ns}\"}})");
    prometheus_target("Direct", 20, &prometheus, &query)
}

/// [`worker_target`], escalating to a webhook of the test's own: its calls.
async fn worker_target_paging(client: &kube::Client, ns: &str) -> Calls {
    let (url, calls) = webhook().await;
    secret(client, ns, "pager", json!({ "url": url })).await;
    let mut target = worker_target_object(ns);
    target["spec"]["escalation"] =
        json!({ "webhookSecretRef": { "name": "pager" }, "minInterval": "10m" });
    scaled_target(client, ns, target).await;
    calls
}

async fn ready_replicas(client: &kube::Client, ns: &str, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .ok()
        .and_then(|d| d.status?.ready_replicas)
        .unwrap_or(0)
}

/// What ebb's pod watch reads from each pod of the namespace (`controller::pods::pod_state`).
async fn pod_states(client: &kube::Client, ns: &str) -> Vec<ebb::engine::stall::PodState> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(pod_state)
        .collect()
}

/// Starts the controller on `ns` and waits until it watches the pods and judges scale-ups,
/// and the workload's `ready` pods are Ready (the starts ebb learns the delay from).
async fn watch_until_ready(
    client: &kube::Client,
    ns: &str,
    ready: i32,
    within: Duration,
) -> tokio::task::JoinHandle<()> {
    let controller = start_controller(client.clone(), ns);
    eventually(within, "pods watched, every scale-up Ready", || async {
        let judged = status_condition(client, ns, "worker", "ScalingStalled")
            .await
            .is_some_and(|c| c.status == "False" && c.reason == "ScaleUpsReady");
        (judged && ready_replicas(client, ns, "worker").await >= ready).then_some(())
    })
    .await;
    controller
}

/// Raises the load to 100 (10 replicas), waits for the scale-up, then for `ScalingStalled=True`;
/// returns it with how long after the scale-up it came.
async fn scale_up_until_stalled(client: &kube::Client, ns: &str) -> (Condition, Duration) {
    push_load(ns, 100.0).await;
    eventually(30 * SECOND, "the scale-up to 10", || async {
        (replicas(client, ns, "worker").await == 10).then_some(())
    })
    .await;
    let scaled = Instant::now();
    let stalled = eventually(90 * SECOND, "ScalingStalled=True", || async {
        status_condition(client, ns, "worker", "ScalingStalled")
            .await
            .filter(|c| c.status == "True")
    })
    .await;
    let after = scaled.elapsed();
    eprintln!(
        "{ns}: stalled after {after:?}: {}: {}",
        stalled.reason, stalled.message
    );
    (stalled, after)
}

/// The load asks for 20: nothing is added while stalled, nothing taken away.
async fn held_at_10(client: &kube::Client, ns: &str) {
    push_load(ns, 200.0).await;
    for _ in 0..16 {
        assert_eq!(replicas(client, ns, "worker").await, 10, "held at 10");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The cause went: the condition clears and ebb scales on to what the load asks, by itself.
async fn resumes_to_20(client: &kube::Client, ns: &str) {
    eventually(60 * SECOND, "ScaleUpsReady again", || async {
        status_condition(client, ns, "worker", "ScalingStalled")
            .await
            .filter(|c| c.status == "False" && c.reason == "ScaleUpsReady")
    })
    .await;
    eventually(60 * SECOND, "up to 20 once pods start", || async {
        (replicas(client, ns, "worker").await == 20).then_some(())
    })
    .await;
}

/// The one Warning Event `ScalingStalled`, naming `pattern`.
async fn one_stalled_event(client: &kube::Client, ns: &str, pattern: Pattern) {
    let events = events(client, ns, "ScalingStalled").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].type_.as_deref(), Some("Warning"));
    let note = events[0].note.as_deref().unwrap_or_default();
    assert!(note.contains(pattern.as_str()), "{note}");
}

#[tokio::test]
async fn a_scale_up_onto_a_full_cluster_is_named_held_and_resumes_when_room_returns() {
    let (client, ns) = setup("stalled").await;
    let node = own_node(&ns).await;
    // Five pods start on the test's node: five starts to learn the startup delay from.
    deployment_with(&client, &ns, "worker", 5, &[], Some(&ns)).await;
    push_load(&ns, 50.0).await;
    worker_target(&client, &ns).await;
    let _controller = watch_until_ready(&client, &ns, 5, 60 * SECOND).await;

    set_full(&client, &node, &ns, true).await;
    let (stalled, after) = scale_up_until_stalled(&client, &ns).await;
    assert_eq!(stalled.reason, "Unschedulable");
    assert!(
        stalled.message.contains("5 of 10 pods not Ready"),
        "{}",
        stalled.message
    );
    assert!(
        stalled.message.contains("untolerated taint"),
        "{}",
        stalled.message
    );
    // The budget is the learned delay times 2, at least 30 s: not before.
    assert!(after >= Duration::from_secs(28), "stalled after {after:?}");
    one_stalled_event(&client, &ns, Pattern::Unschedulable).await;
    held_at_10(&client, &ns).await;

    // Room again: the pods start, the stall clears, and ebb scales on by itself.
    set_full(&client, &node, &ns, false).await;
    resumes_to_20(&client, &ns).await;
}

/// A healthy workload (five quick starts learned: the budget is the 30 s minimum) gets a
/// release whose pods fail with kwok's `fault`; the rollout sticks (the Deployment keeps most
/// old pods, the new ones never become available). Then the load rises: the scale-up adds
/// pods to both ReplicaSets, the new ones fail, and ebb finds it stalled with the failing
/// pods' pattern and words, and pages once with them. Releasing the template without the fault (a rollback: the old
/// ReplicaSet takes over again) is the cause going: every pod Ready, and ebb scales on.
async fn a_bad_release_is_named_held_and_resumes_after_the_fix(
    prefix: &str,
    fault: &str,
    pattern: Pattern,
    words: &str,
) {
    let (client, ns) = setup(prefix).await;
    deployment_with(&client, &ns, "worker", 5, &[], None).await;
    push_load(&ns, 50.0).await;
    let pages = worker_target_paging(&client, &ns).await;
    let _controller = watch_until_ready(&client, &ns, 5, 60 * SECOND).await;

    release(&client, &ns, "worker", Some(fault)).await;
    // kwok plays kubelet for the new pods, and ebb's pod watch reads the pattern from them.
    eventually(30 * SECOND, "new pods failing", || async {
        pod_states(&client, &ns)
            .await
            .iter()
            .any(|p| p.problem.as_ref().is_some_and(|(q, _)| *q == pattern))
            .then_some(())
    })
    .await;

    let (stalled, after) = scale_up_until_stalled(&client, &ns).await;
    assert_eq!(stalled.reason, pattern.as_str());
    assert!(stalled.message.contains(words), "{}", stalled.message);
    assert!(after >= Duration::from_secs(28), "stalled after {after:?}");
    one_stalled_event(&client, &ns, pattern).await;
    // The page: the pattern, the failing pods by name, the counts, what ebb did.
    let page = eventually(20 * SECOND, "the page", || async {
        pages.lock().unwrap().first().map(|c| c.body.clone())
    })
    .await;
    assert_eq!(page["reason"], "ScalingStalled", "{page}");
    assert_eq!(page["stall"]["pattern"], pattern.as_str(), "{page}");
    assert_eq!(page["stall"]["wanted"], 10, "{page}");
    let not_ready = page["stall"]["notReady"].as_u64().unwrap();
    let pods = page["stall"]["pods"].as_array().unwrap();
    // The pods showing the pattern, named up to five.
    assert!(
        (1..=5).contains(&pods.len()) && pods.len() as u64 <= not_ready,
        "{page}"
    );
    assert!(
        page["stall"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(words)),
        "{page}"
    );
    assert!(
        page["tried"][0]
            .as_str()
            .is_some_and(|t| t.contains("stopped adding replicas at 10")),
        "{page}"
    );
    held_at_10(&client, &ns).await;

    release(&client, &ns, "worker", None).await;
    resumes_to_20(&client, &ns).await;
    assert_eq!(pages.lock().unwrap().len(), 1, "one page per pattern");
}

#[tokio::test]
async fn a_release_that_crash_loops_is_named_held_and_resumes_after_the_fix() {
    a_bad_release_is_named_held_and_resumes_after_the_fix(
        "crashloop",
        FAULT_CRASHLOOP,
        Pattern::CrashLoopBackOff,
        "restarting failed container",
    )
    .await;
}

#[tokio::test]
async fn a_release_whose_image_cannot_be_pulled_is_named_held_and_resumes_after_the_fix() {
    a_bad_release_is_named_held_and_resumes_after_the_fix(
        "imagepull",
        FAULT_IMAGEPULL,
        Pattern::ImagePull,
        "Back-off pulling image",
    )
    .await;
}

/// The other known patterns, side by side (each in its namespace, with its series): a release
/// OOM-killed as soon as it runs, one whose container cannot be created, one whose readiness
/// probe never passes.
#[tokio::test]
async fn releases_oom_killed_misconfigured_or_never_ready_are_named_held_and_resume_after_the_fix()
{
    tokio::join!(
        a_bad_release_is_named_held_and_resumes_after_the_fix(
            "oomkilled",
            FAULT_OOMKILLED,
            Pattern::OomKilled,
            "OOMKilled",
        ),
        a_bad_release_is_named_held_and_resumes_after_the_fix(
            "configerror",
            FAULT_CONFIGERROR,
            Pattern::CreateContainerConfigError,
            "secret \"worker-config\" not found",
        ),
        a_bad_release_is_named_held_and_resumes_after_the_fix(
            "unready",
            FAULT_UNREADY,
            Pattern::ReadinessProbe,
            "runs but is not ready",
        ),
    );
}

/// Pods Ready only N s after they start (kwok's ready-after stage; Running, not ready, until
/// then): ebb learns N from five starts, shows it in `status.learned`, and the budget of a
/// stalled scale-up is 2N: not the 30 s minimum, nor the 300 s before anything is learned.
#[tokio::test]
async fn the_startup_delay_learned_from_slow_starts_sets_the_stall_budget() {
    const N: u64 = 20;
    let (client, ns) = setup("slowstart").await;
    let node = own_node(&ns).await;
    deployment_with(
        &client,
        &ns,
        "worker",
        5,
        &[(READY_AFTER_LABEL, &format!("{N}s"))],
        Some(&ns),
    )
    .await;
    push_load(&ns, 50.0).await;
    worker_target(&client, &ns).await;
    let _controller = watch_until_ready(&client, &ns, 5, Duration::from_secs(N + 30)).await;
    // The five starts, each created -> Ready as ebb reads them: N s, up to 2 s more (the API
    // server keeps either time to the second, and kwok starts the delay when it sees the pod).
    let starts: Vec<i64> = pod_states(&client, &ns)
        .await
        .iter()
        .filter_map(|p| Some(p.ready_since? - p.created))
        .collect();
    assert_eq!(starts.len(), 5, "{starts:?}");
    let n_ms = N as i64 * 1000;
    assert!(
        starts.iter().all(|s| (n_ms..=n_ms + 2000).contains(s)),
        "starts {starts:?} ms, N = {N} s"
    );
    // The status shows the delay learned from them (the 0.9 quantile of five: the slowest): N.
    let learned = eventually(10 * SECOND, "status.learned", || async {
        Api::<ScaledTarget>::namespaced(client.clone(), &ns)
            .get("worker")
            .await
            .ok()?
            .status?
            .learned
    })
    .await;
    eprintln!(
        "{ns}: status.learned: {} s ({})",
        learned.startup_delay_seconds, learned.basis
    );
    assert!(
        (N as f64..=N as f64 + 2.0).contains(&learned.startup_delay_seconds),
        "learned {} s, N = {N} s",
        learned.startup_delay_seconds
    );
    assert!(learned.basis.contains("5 pod starts"), "{}", learned.basis);

    set_full(&client, &node, &ns, true).await;
    let (stalled, after) = scale_up_until_stalled(&client, &ns).await;
    assert_eq!(stalled.reason, "Unschedulable");
    // The budget is twice the learned delay (2N = 40 s), seen from the scale-up within a poll
    // or two (the machine sees the new count one poll after it wrote it).
    let budget = Duration::from_secs_f64(2.0 * learned.startup_delay_seconds);
    eprintln!(
        "{ns}: stalled after {after:?}, the budget 2 x {} s = {budget:?}, N = {N} s",
        learned.startup_delay_seconds
    );
    assert!(
        after >= budget - SECOND && after <= budget + 6 * SECOND,
        "stalled after {after:?}, the budget {budget:?}"
    );
    one_stalled_event(&client, &ns, Pattern::Unschedulable).await;
}
