//! Decision cost and full-replay cost.
//!
//! - `decision/hpa_behavior_2_metrics`: one behavior-path decision for a target with two
//!   metrics and a warm state (a full 300 s window of recommendations, recent scale events).
//!   Goal: under 2 µs.
//! - `decision/adaptive_observe_recommend`: one reading into a warm `AdaptiveState` (two days
//!   of 15 s readings, all rules learned) and one recommendation.
//! - `replay/worldcup/<policy>`: the 125,310-step WorldCup 98 trace through each baseline, as
//!   `ebb backtest` replays it (`hpa-engine` makes 4 engine decisions per step). Goal: under
//!   1 s per policy.
//! - `pods/<index|scan>`: one poll's look-up of its workload's pods (3 of 15,000 pods: 5,000
//!   Deployments in one namespace) through the pod watch's label index, and the same look-up
//!   as a scan of the namespace, for the ratio.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ebb::backtest::make_policy;
use ebb::backtest::replay::{ReplayConfig, replay};
use ebb::backtest::trace::{TraceOptions, read_trace, worldcup_trace_path};
use ebb::engine::adaptive::{AdaptiveConfig, AdaptiveState, Inputs};
use ebb::engine::hpa::{self, HpaSpec, Replicas, ScalingState};
use ebb::engine::{MetricSample, Target};

fn decision(c: &mut Criterion) {
    let spec = HpaSpec {
        min_replicas: 1,
        max_replicas: 500,
        behavior: Some(Box::default()),
        ..Default::default()
    };
    let metrics = |i: i64| {
        let load = 40_000_000 + 15_000_000 * ((i / 9) % 4);
        [
            MetricSample {
                target: Target::AverageValue(100_000),
                observation: Ok(load),
            },
            MetricSample {
                target: Target::Value(20_000_000),
                observation: Ok(load / 3),
            },
        ]
    };
    let mut state = ScalingState::default();
    let mut current = 100;
    let step = |state: &mut ScalingState, i: i64, current: &mut i32| {
        let now = i * 15_000;
        let d = hpa::decide(&spec, state, Replicas::all(*current), &metrics(i), now);
        if d.desired != *current {
            state.store_scale_event(spec.behavior.as_deref(), *current, d.desired, now);
            *current = d.desired;
        }
        d
    };
    // Warm up: more than a 300 s window of 15 s polls.
    let mut i = 0;
    while i < 100 {
        step(&mut state, i, &mut current);
        i += 1;
    }
    c.bench_function("decision/hpa_behavior_2_metrics", |b| {
        b.iter(|| {
            i += 1;
            black_box(step(&mut state, black_box(i), &mut current))
        })
    });
}

fn adaptive_decision(c: &mut Criterion) {
    let load = |i: i64| 5000.0 * (1.0 + 0.3 * ((i % 5760) as f64 / 916.7).sin()) + (i % 7) as f64;
    let mut state = AdaptiveState::new(AdaptiveConfig::default(), 15_000, 100.0).unwrap();
    let mut i = 0;
    while i < 2 * 5760 {
        state.observe(i * 15_000, load(i));
        i += 1;
    }
    c.bench_function("decision/adaptive_observe_recommend", |b| {
        b.iter(|| {
            i += 1;
            let l = load(i);
            state.observe(i * 15_000, l);
            black_box(state.recommend(
                (i + 1) * 15_000,
                Inputs {
                    reactive: (l / 100.0).ceil() as u32,
                    load: Some(l),
                    target_per_pod: 100.0,
                    current: 55,
                },
            ))
        })
    });
}

fn full_replay(c: &mut Criterion) {
    let path = worldcup_trace_path();
    let trace = match read_trace(&path, &TraceOptions::default()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("skipping the replay benchmarks: {e} (set EBB_TRACES_DIR)");
            return;
        }
    };
    let cfg = ReplayConfig::for_series(&trace.values, trace.step_seconds as f64, None, None)
        .expect("the trace has data");
    let demand = cfg.demand(&trace.values);
    let mut group = c.benchmark_group("replay/worldcup");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for name in ["hpa", "kpa", "oracle", "hpa-engine", "ebb", "ebb-hpa"] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut policy =
                    make_policy(name, &demand, &cfg, &Default::default()).expect("a known policy");
                black_box(replay(black_box(&trace.values), &cfg, policy.as_mut()))
            })
        });
    }
    group.finish();
}

fn pods_of_a_workload(c: &mut Criterion) {
    use ebb::api::selector::Selector;
    use ebb::controller::pods::PodIndex;
    use k8s_openapi::api::core::v1::Pod;
    const WORKLOADS: usize = 5_000;
    let pods: Vec<Pod> = (0..WORKLOADS * 3)
        .map(|i| {
            let app = format!("w{}", i / 3);
            serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": format!("{app}-5d8f7c-{}", i % 3), "namespace": "shop",
                    "uid": format!("uid-{i}"), "creationTimestamp": "2026-12-03T10:00:00Z",
                    "labels": { "app": app, "pod-template-hash": "5d8f7c" }
                },
                "status": { "phase": "Running", "conditions": [
                    { "type": "Ready", "status": "True", "lastTransitionTime": "2026-12-03T10:00:04Z" }
                ] }
            }))
            .unwrap()
        })
        .collect();
    let index: PodIndex = pods.iter().cloned().collect();
    let selector = Selector::parse(&format!("app=w{}", WORKLOADS / 2)).unwrap();
    let mut group = c.benchmark_group("pods");
    group.bench_function("index", |b| {
        b.iter(|| black_box(index.pods_of("shop", black_box(&selector))))
    });
    let labels: Vec<_> = pods
        .iter()
        .map(|p| p.metadata.labels.clone().unwrap())
        .collect();
    group.bench_function("scan", |b| {
        b.iter(|| {
            black_box(
                labels
                    .iter()
                    .filter(|l| black_box(&selector).matches(*l))
                    .count(),
            )
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    decision,
    adaptive_decision,
    full_replay,
    pods_of_a_workload
);
criterion_main!(benches);
