//! What the backtest measures is what `ebb serve` does: one recorded series (a rise, a burst, a
//! gap and a drop) fed through the real Prometheus to a real `ebb serve` in mode Direct on the
//! local control plane, and through `ebb backtest --scaledtarget` with the same ScaledTarget
//! file. Both step the same decision machine; their scaling actions must be the same, in the
//! same order, the live ones late by at most the documented timing difference.
//!
//! Timing differences, by design (docs/architecture.md, "One decision machine"): the backtest
//! decides at step k on the reading of step k-1; the live controller reads what its collector
//! fetched last (up to one polling interval old) at its own slot within the second, so a live
//! action may come up to two steps after the replay's. Each level of the series is held for
//! three seconds so that a reading late by a step does not skip a level.

mod controller_common;
mod support;

use std::time::{Duration, Instant};

use controller_common::*;
use ebb::localstack::StackOptions;
use ebb::localstack::kube::ControlPlaneOptions;
use serde_json::json;
use support::{ebb_serve, eventually, start_stack, unique_namespace};

/// Seconds each level of the series is held.
const HOLD: usize = 3;

/// The series, one value per level (`None`: no sample, a gap): quiet, a rise, a burst, a
/// plateau, a gap, the plateau again, a drop.
fn levels() -> Vec<Option<f64>> {
    let mut v = vec![Some(10.0); 4];
    v.extend((1..=8).map(|i| Some(10.0 + 10.0 * f64::from(i))));
    v.extend([Some(160.0), Some(160.0)]);
    v.extend([Some(90.0); 5]);
    v.extend([None; 4]);
    v.extend([Some(90.0); 5]);
    v.extend([Some(30.0), Some(10.0), Some(10.0), Some(10.0), Some(10.0)]);
    v
}

/// The counts a trajectory passes through, repeats removed.
fn actions(counts: impl IntoIterator<Item = u32>) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for c in counts {
        if out.last() != Some(&c) {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn ebb_serve_and_ebb_backtest_take_the_same_decisions_on_the_same_series() {
    let stack = start_stack(StackOptions {
        kube: Some(ControlPlaneOptions {
            hpa_controller: false,
            ..Default::default()
        }),
        prometheus: true,
        scrape: Vec::new(),
        rabbitmq: false,
    });
    let kube = stack.kube.as_ref().unwrap();
    let prometheus = stack.prometheus.as_ref().unwrap();
    let client = kube.client().await.unwrap();
    let _ebb = ebb_serve(kube, stack.dir(), "ebb-agreement").await;
    let ns = unique_namespace("agreement");
    kube.create_namespace(&ns).await.unwrap();
    deployment(&client, &ns, "worker", 1).await;
    let labels = [("__name__", "ebb_agreement_load"), ("job", ns.as_str())];
    let push = |v: f64| {
        let now = chrono::Utc::now().timestamp_millis();
        async move { prometheus.push(&labels, &[(now, v)]).await.unwrap() }
    };
    // The object applied is the file the backtest reads.
    let object = json!({
        "apiVersion": "ebb.dev/v1alpha1",
        "kind": "ScaledTarget",
        "metadata": { "name": "worker", "namespace": ns },
        "spec": {
            "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "worker" },
            "mode": "Direct",
            "minReplicas": 1,
            "maxReplicas": 20,
            "pollingInterval": "1s",
            "metrics": [{
                "name": "load",
                "prometheus": {
                    "address": prometheus.url(),
                    // A step without a sample is no data (not the last value for 5 minutes).
                    "query": format!("sum(last_over_time(ebb_agreement_load{{job=\"{ns}\"}}[1500ms]))")
                },
                "target": { "type": "AverageValue", "averageValue": "10" }
            }],
            // No window and no effective rate limit: a window or a period measured on the wall
            // clock would let a second of jitter change an intermediate count.
            "behavior": {
                "scaleUp": { "policies": [{ "type": "Pods", "value": 100, "periodSeconds": 1 }] },
                "scaleDown": { "stabilizationWindowSeconds": 0 }
            },
            "fallback": { "failureThreshold": 2, "replicas": 12 }
        }
    });
    let file = stack.dir().join("agreement-scaledtarget.yaml");
    std::fs::write(&file, serde_yaml::to_string(&object).unwrap()).unwrap();

    // A quiet start, until the controller has read it once.
    push(10.0).await;
    scaled_target(&client, &ns, object.clone()).await;
    eventually(30 * SECOND, "the first decision", || async {
        push(10.0).await;
        let ready = condition(&client, &ns, "worker", "Ready").await?;
        (ready.0 == "True").then_some(())
    })
    .await;

    // The series, one step a second; the replica count sampled every 100 ms.
    let series: Vec<Option<f64>> = levels()
        .into_iter()
        .flat_map(|v| std::iter::repeat_n(v, HOLD))
        .collect();
    let t0 = Instant::now();
    let mut live: Vec<(f64, u32)> = Vec::new();
    let steps = series.len() + 6;
    for k in 0..steps {
        // After the series, its last level goes on, so that the live controller does not
        // read the end of the pushes as a gap (the replay simply ends).
        if let Some(Some(v)) = series.get(k).or(series.last()) {
            push(*v).await;
        }
        let next = t0 + Duration::from_secs(k as u64 + 1);
        while Instant::now() < next {
            let count = replicas(&client, &ns, "worker").await as u32;
            if live.last().is_none_or(|&(_, c)| c != count) {
                live.push((t0.elapsed().as_secs_f64(), count));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The same series through `ebb backtest`, as one sample a second.
    let csv = stack.dir().join("agreement.csv");
    let mut text = String::from("timestamp,value\n");
    for (k, v) in series.iter().enumerate() {
        if let Some(v) = v {
            text.push_str(&format!("{},{v}\n", 1_800_000_000 + k));
        }
    }
    std::fs::write(&csv, text).unwrap();
    let decisions = stack.dir().join("agreement-decisions.csv");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(["backtest", "--policy", "ebb", "--capacity", "10"])
        .arg("--trace")
        .arg(&csv)
        .arg("--scaledtarget")
        .arg(&file)
        .arg("--decisions")
        .arg(&decisions)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let replayed: Vec<u32> = std::fs::read_to_string(&decisions)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(replayed.len(), series.len());

    let expected = actions(std::iter::once(1).chain(replayed.iter().copied()));
    let seen = actions(live.iter().map(|&(_, c)| c));
    eprintln!("backtest: {expected:?}\nlive:     {seen:?}\nlive at:  {live:?}");
    assert!(
        expected.len() >= 6,
        "the series makes the machine act: {expected:?}"
    );
    assert!(
        expected.contains(&12),
        "the gap engages fallback: {expected:?}"
    );
    assert_eq!(seen, expected, "the same actions in the same order");
    // Each live action after the reading it follows (pushed at step k-1 for the replay's
    // decision at step k), and at most two steps after the replay's.
    let mut replay_at = Vec::new();
    let mut last = 1;
    for (k, &d) in replayed.iter().enumerate() {
        if d != last {
            replay_at.push(k as f64);
            last = d;
        }
    }
    for ((at, count), k) in live.iter().skip(1).zip(&replay_at) {
        assert!(
            *at >= *k - 1.0 && *at < *k + 2.5,
            "{count} live at {at:.1} s, replayed at step {k}"
        );
    }
}
