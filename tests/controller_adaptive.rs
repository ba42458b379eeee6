//! Learned thresholds in the running controller, against the real control plane, Prometheus and
//! RabbitMQ: a ScaledTarget with `spec.adaptive` learns from its metric's history (backfilled
//! from Prometheus), shows the learned target and values in status and a `LearnedChanged`
//! Event, scales with the learned headroom (mode Direct) or puts the learned target on its HPA
//! (mode Hpa); a second controller arrives at the same values from the backfill (restart); with
//! a short history the static target stays (fallback).
//!
//! Expected numbers come from `engine::adaptive` run by the test on the same readings.

mod controller_common;
mod support;

use std::time::Duration;

use controller_common::*;
use ebb::crd::{LearnedStatus, ScaledTarget};
use ebb::engine::adaptive::{AdaptiveConfig, AdaptiveState, Inputs};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use support::{eventually, shared_stack};

/// Polling interval and history step (ms).
const STEP_MS: i64 = 2000;
/// Readings of history pushed before the controller starts.
const HISTORY: i64 = 300;
/// The per-pod target and the calm level (4 pods' worth); bursts reach 6 pods' worth.
const TARGET: f64 = 100.0;
const CALM: f64 = 400.0;
const BURST: f64 = 600.0;

/// How long the tests' pods take to become Ready: within the 4 s `startupDelaySeconds` (the
/// same two 2 s polls), so that the delay ebb learns from them leaves the horizon as set.
const STARTUP: &str = "3s";

/// The adaptive section the tests use: a 2 s interval, 4 s startup, 10 % risk (so that a few
/// hundred readings are a tail's worth), no daily pattern to look for.
fn adaptive(min_history_seconds: u64) -> Value {
    json!({
        "minHistorySeconds": min_history_seconds,
        "startupDelaySeconds": 4,
        "underProvisionRisk": 0.1,
        "maxScaleDownWindowSeconds": 20,
        "forecast": false,
        "phaseOfDay": false
    })
}

fn config(min_history_seconds: u64) -> AdaptiveConfig {
    serde_json::from_value(adaptive(min_history_seconds)).unwrap()
}

/// Calm at 400 with a burst to 600 for three readings every twenty.
fn load(k: i64) -> f64 {
    if k % 20 >= 17 { BURST } else { CALM }
}

/// Pushes `HISTORY` readings of bursty load for series `job=<ns>` into the shared Prometheus,
/// on the 2 s grid, ending just before now, then keeps the series alive at the calm level
/// (one sample a second, as a scrape would). Returns the history and the pusher.
async fn history(ns: &str) -> (Vec<(i64, f64)>, tokio::task::JoinHandle<()>) {
    let prometheus = shared_stack().prometheus.as_ref().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let end = now.div_euclid(STEP_MS) * STEP_MS - STEP_MS;
    // The last burst ends well before the end: the live part continues calm.
    let readings: Vec<(i64, f64)> = (0..HISTORY)
        .map(|k| (end - (HISTORY - 1 - k) * STEP_MS, load(k)))
        .collect();
    let labels = [("__name__", "ebb_adaptive_load"), ("job", ns)];
    for chunk in readings.chunks(100) {
        prometheus.push(&labels, chunk).await.unwrap();
    }
    let job = ns.to_string();
    let live = tokio::spawn(async move {
        let prometheus = shared_stack().prometheus.as_ref().unwrap();
        let labels = [("__name__", "ebb_adaptive_load"), ("job", job.as_str())];
        loop {
            let now = chrono::Utc::now().timestamp_millis();
            let _ = prometheus.push(&labels, &[(now, CALM)]).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (readings, live)
}

/// A ScaledTarget on Deployment `worker` reading the pushed series: the shared builder's, with
/// `adaptive`, polled every 2 s, at 100 per pod up to 20.
fn adaptive_target(ns: &str, mode: &str, adaptive: Value) -> Value {
    let address = shared_stack().prometheus.as_ref().unwrap().url();
    let query = format!("ebb_adaptive_load{{job=\"{ns}\"}}");
    let mut object = prometheus_target(mode, 20, &address, &query);
    let spec = &mut object["spec"];
    spec["pollingInterval"] = json!("2s");
    spec["adaptive"] = adaptive;
    spec["metrics"][0]["target"]["averageValue"] = json!("100");
    object
}

/// What the engine learns from the readings the controller's backfill holds (the last
/// `window` of the history, then calm), and what it recommends for the calm load from 1 pod.
fn expected(readings: &[(i64, f64)], config: AdaptiveConfig) -> (f64, u32) {
    let window = ebb::engine::learning::backfill_window(&config, Duration::from_secs(2));
    let keep = (window.as_millis() as i64 / STEP_MS) as usize;
    let last = readings.last().unwrap().0;
    let mut state = AdaptiveState::backfill(
        config,
        STEP_MS,
        TARGET,
        readings[readings.len().saturating_sub(keep)..]
            .iter()
            .copied()
            .chain((1..=5).map(|k| (last + k * STEP_MS, CALM))),
    )
    .unwrap();
    let headroom = state.learned().headroom;
    let rec = state.recommend(
        last + 6 * STEP_MS,
        Inputs {
            reactive: (CALM / TARGET).ceil() as u32,
            load: Some(CALM),
            target_per_pod: TARGET,
            current: 1,
        },
    );
    (headroom, rec.replicas)
}

async fn learned(client: &kube::Client, ns: &str) -> Option<(String, LearnedStatus)> {
    let st = Api::<ScaledTarget>::namespaced(client.clone(), ns)
        .get("worker")
        .await
        .ok()?;
    let m = st.status?.metrics.into_iter().next()?;
    Some((m.learned_target?.0, *m.learned?))
}

/// The engine's `headroom` (from the history alone) with the correction status shows from the
/// polls short since ebb took over (two decimals: within 0.006 of the one in use).
fn corrected(headroom: f64, shown: &LearnedStatus) -> f64 {
    (1.0 + headroom) * shown.risk_correction.exp() - 1.0
}

fn milli(q: &str) -> f64 {
    ebb::crd::milli_value(q).unwrap() as f64 / 1000.0
}

#[tokio::test]
async fn direct_mode_learns_from_prometheus_history_scales_with_headroom_and_a_restart_relearns_the_same()
 {
    let (client, ns) = setup("adaptive-direct").await;
    let (readings, live) = history(&ns).await;
    let (headroom, want) = expected(&readings, config(300));
    let want = want as i32;
    let plain = (CALM / TARGET).ceil() as i32;
    assert!(headroom > 0.0, "the bursts need headroom");
    assert!(
        want > plain,
        "headroom asks for more than the plain HPA formula: {want} vs {plain}"
    );
    deployment_starting_in(&client, &ns, "worker", 1, STARTUP).await;
    scaled_target(&client, &ns, adaptive_target(&ns, "Direct", adaptive(300))).await;
    let first = start_controller(client.clone(), &ns);

    // Learned from the backfill: a learned target below the static one, the values in status.
    let (target, values) = eventually(60 * SECOND, "learned values in status", || async {
        learned(&client, &ns)
            .await
            .filter(|(_, l)| l.headroom_basis == "History")
    })
    .await;
    eprintln!("learned target {target}, {values:?}; engine: headroom {headroom}, {want} replicas");
    assert!(
        (values.headroom - corrected(headroom, &values)).abs() <= 0.016,
        "status headroom {} vs the engine's {headroom}",
        values.headroom
    );
    let want_target = TARGET / (1.0 + values.headroom);
    assert!(
        (milli(&target) - want_target).abs() <= 0.01 * want_target,
        "{target} vs {want_target}"
    );
    assert!(milli(&target) < TARGET);
    let changed = eventually(10 * SECOND, "a LearnedChanged event", || async {
        let e = events(&client, &ns, "LearnedChanged").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    let note = changed[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("metric load: headroom 0.000 ->") && note.contains("(History)"),
        "{note}"
    );

    // Direct: the engine's count with the learned headroom, above the plain HPA formula (or one
    // less: see below).
    eventually(30 * SECOND, "the learned count of replicas", || async {
        let r = replicas(&client, &ns, "worker").await;
        (plain + 1..=want).contains(&r).then_some(())
    })
    .await;
    // Then no poll falls short of the steady load: the learned headroom over-protects for the
    // 10 % risk asked, and the correction from the polls short takes some back (within a few
    // polls here, the engine's count being 5.004 pods rounded up), never below the plain
    // formula while the bursts in the history ask for headroom.
    tokio::time::sleep(6 * SECOND).await;
    let settled = replicas(&client, &ns, "worker").await;
    assert!(
        (plain + 1..=want).contains(&settled),
        "{settled}: between {plain} + 1 and {want}"
    );
    // The decision names the learned rule in Ready's message.
    let ready = eventually(10 * SECOND, "Ready naming the learned rule", || async {
        let c = status_condition(&client, &ns, "worker", "Ready").await?;
        c.message.contains("LearnedHeadroom").then_some(c.message)
    })
    .await;
    assert_eq!(ready, "LearnedHeadroom (metric load)");
    assert!(!events(&client, &ns, "Scaled").await.is_empty());

    // Restart: a new controller (new Context, nothing in memory) on the same ScaledTarget.
    let before = learned(&client, &ns).await.unwrap();
    first.abort();
    let _ = first.await;
    let sts = Api::<ScaledTarget>::namespaced(client.clone(), &ns);
    sts.patch_status(
        "worker",
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": { "metrics": [] } })),
    )
    .await
    .unwrap();
    let _second = start_controller(client.clone(), &ns);
    // Until its backfill lands, the new controller does not scale down on a short memory.
    let mut seen = Vec::new();
    let (target2, values2) = loop {
        seen.push(replicas(&client, &ns, "worker").await);
        if let Some(l) = learned(&client, &ns)
            .await
            .filter(|(_, l)| l.headroom_basis == "History")
        {
            break l;
        }
        assert!(seen.len() < 600, "no relearned values in status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // (On its short memory it would ask for the plain formula's count.)
    assert!(
        seen.iter().all(|r| *r > plain),
        "{seen:?} from {settled}: down to {plain}"
    );
    eprintln!("after the restart: {target2}, {values2:?}");
    let (target1, values1) = before;
    // The same from the same history; the correction from the polls short is not in the
    // history (status, wiped here, is where it resumes from).
    let uncorrected = |l: &LearnedStatus| (1.0 + l.headroom) * (-l.risk_correction).exp() - 1.0;
    assert!(
        (uncorrected(&values2) - uncorrected(&values1)).abs() <= 0.016,
        "{values1:?} / {values2:?}"
    );
    assert!(
        (values2.tolerance - values1.tolerance).abs() <= 0.02,
        "{values1:?} / {values2:?}"
    );
    assert_eq!(
        values2.scale_down_window_seconds,
        values1.scale_down_window_seconds
    );
    let uncorrected_target = |t: &str, l: &LearnedStatus| milli(t) * l.risk_correction.exp();
    let (t1, t2) = (
        uncorrected_target(&target1, &values1),
        uncorrected_target(&target2, &values2),
    );
    assert!((t2 - t1).abs() <= 0.016 * t1, "{target1} / {target2}");
    tokio::time::sleep(6 * SECOND).await;
    let after = replicas(&client, &ns, "worker").await;
    assert!((plain + 1..=want).contains(&after), "{after}");
    live.abort();
}

#[tokio::test]
async fn hpa_mode_puts_the_learned_target_on_the_owned_hpa() {
    let (client, ns) = setup("adaptive-hpa").await;
    let (readings, live) = history(&ns).await;
    let (headroom, _) = expected(&readings, config(300));
    deployment_starting_in(&client, &ns, "worker", 1, STARTUP).await;
    scaled_target(&client, &ns, adaptive_target(&ns, "Hpa", adaptive(300))).await;
    let controller = start_controller(client.clone(), &ns);
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns);
    let (target, values) = eventually(60 * SECOND, "learned values in status", || async {
        learned(&client, &ns)
            .await
            .filter(|(_, l)| l.headroom_basis == "History")
    })
    .await;
    assert!(
        (values.headroom - corrected(headroom, &values)).abs() <= 0.016,
        "{values:?} vs the engine's {headroom}"
    );
    let on_hpa = eventually(20 * SECOND, "the learned target on the HPA", || async {
        let hpa = hpas.get_opt("ebb-worker").await.ok()??;
        let m = hpa.spec.metrics?.into_iter().next()?;
        let t = m.external?.target.average_value?.0;
        (t == target).then_some(t)
    })
    .await;
    assert!(milli(&on_hpa) < TARGET, "{on_hpa}");
    // The learned scale-down window reaches the HPA too (the target's only metric learns),
    // and the scale-up tolerance is half the learned band, not the HPA's 10 % (the API server
    // of the local stack has HPAConfigurableTolerance: the field stays).
    let window = values.scale_down_window_seconds as i32;
    let up_tolerance = eventually(20 * SECOND, "the learned behavior on the HPA", || async {
        let behavior = hpas.get_opt("ebb-worker").await.ok()??.spec.behavior?;
        let down = behavior.scale_down?;
        let up = behavior.scale_up?.tolerance?;
        (down.stabilization_window_seconds == Some(window)).then_some(milli(&up.0))
    })
    .await;
    assert!(
        (up_tolerance - values.tolerance / 2.0).abs() <= 0.001,
        "scale-up tolerance {up_tolerance}, learned band {}",
        values.tolerance
    );

    // Restart: the new controller keeps the HPA's learned target while it backfills.
    controller.abort();
    let _ = controller.await;
    Api::<ScaledTarget>::namespaced(client.clone(), &ns)
        .patch_status(
            "worker",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "metrics": [] } })),
        )
        .await
        .unwrap();
    let _second = start_controller(client.clone(), &ns);
    let mut seen = Vec::new();
    let relearned = loop {
        let hpa = hpas.get("ebb-worker").await.unwrap();
        let m = hpa.spec.metrics.unwrap().into_iter().next().unwrap();
        seen.push(m.external.unwrap().target.average_value.unwrap().0);
        if let Some(l) = learned(&client, &ns)
            .await
            .filter(|(_, l)| l.headroom_basis == "History")
        {
            break l;
        }
        assert!(seen.len() < 600, "no relearned values in status");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(seen.iter().all(|t| *t == on_hpa), "{seen:?}");
    assert_eq!(relearned.0, on_hpa);
    live.abort();
}

#[tokio::test]
async fn with_a_short_history_the_static_target_stays() {
    let (client, ns) = setup("adaptive-short").await;
    let rabbit = shared_stack().rabbitmq.as_ref().unwrap();
    let queue = format!("{ns}-orders");
    deployment_starting_in(&client, &ns, "worker", 1, STARTUP).await;
    let (_conn, channel) = channel(rabbit).await;
    publish(&channel, &queue, 30).await;
    // RabbitMQ keeps no history: learning starts live, and an hour is far away.
    let mut st = backlog_target("worker", &queue, "Direct", 10, "1s");
    st["spec"]["adaptive"] = json!({});
    scaled_target(&client, &ns, st).await;
    let _controller = start_controller(client.clone(), &ns);
    eventually(20 * SECOND, "3 replicas for 30 messages at 10", || async {
        (replicas(&client, &ns, "worker").await == 3).then_some(())
    })
    .await;
    let (target, values) = eventually(10 * SECOND, "learned values in status", || async {
        learned(&client, &ns).await
    })
    .await;
    assert_eq!(target, "10", "the static target while the history is short");
    assert_eq!(
        (values.headroom, values.headroom_basis.as_str()),
        (0.0, "Static")
    );
    assert_eq!(values.scale_down_window_basis, "Static");
    tokio::time::sleep(3 * SECOND).await;
    assert_eq!(replicas(&client, &ns, "worker").await, 3, "no headroom yet");
    assert!(events(&client, &ns, "LearnedChanged").await.is_empty());
}

/// The SLO rule end to end: a load of `400 + 300 sin(t / 7 s)` on 10 pods (mode Shadow, so the
/// pods stay 10) and an SLO signal that is the load per pod itself, objective 50: the SLO
/// breaks above 50 per pod. The controller pairs each reading's load per pod (from the
/// workload's pods) with the signal, both read from the real Prometheus, and learns a knee near
/// 50 and a per-pod target under it.
#[tokio::test]
async fn the_per_pod_target_is_learned_from_the_slo_signal() {
    let (client, ns) = setup("adaptive-slo").await;
    deployment_starting_in(&client, &ns, "worker", 10, STARTUP).await;
    let load = "400 + 300 * sin(vector(time() / 7))";
    let mut object = adaptive_target(
        &ns,
        "Shadow",
        // No headroom: the learned target is then the SLO's alone (the headroom's part is
        // tested above).
        json!({ "minHistorySeconds": 0, "maxHeadroom": 0, "forecast": false, "phaseOfDay": false }),
    );
    object["spec"]["pollingInterval"] = json!("1s");
    object["spec"]["metrics"][0]["prometheus"]["query"] = json!(load);
    object["spec"]["metrics"][0]["slo"] = json!({
        "prometheus": {
            "address": shared_stack().prometheus.as_ref().unwrap().url(),
            "query": format!("({load}) / 10"),
        },
        "objective": 50,
        // 20 % allowed: 50 paired readings are enough to learn from (10 / 0.2).
        "allowedViolations": 0.2,
        // The knee is near half the static target: let the target go that low.
        "minTargetRatio": 0.2,
    });
    scaled_target(&client, &ns, object).await;
    let _controller = start_controller(client.clone(), &ns);
    let (target, learned) = eventually(150 * SECOND, "an SLO knee in status", || async {
        learned(&client, &ns)
            .await
            .filter(|(_, l)| l.slo.as_ref().is_some_and(|s| s.basis == "Knee"))
    })
    .await;
    let slo = learned.slo.unwrap();
    // The load and its signal are read a moment apart: the knee is 50 within what the load
    // moves in a second (up to 4.3 per pod).
    let knee = slo.knee.unwrap();
    assert!((42.0..=56.0).contains(&knee), "{slo:?}");
    assert!((slo.target - knee * 0.9).abs() < 0.01, "{slo:?}");
    assert!(slo.samples >= 50, "{slo:?}");
    // The learned target the rules work with follows it (no headroom yet: short history).
    assert!(
        (milli(&target) - slo.target).abs() < 0.01,
        "{target} vs {slo:?}"
    );
}
