//! Decision cost and full-replay cost.
//!
//! - `decision/hpa_behavior_2_metrics`: one behavior-path decision for a target with two
//!   metrics and a warm state (a full 300 s window of recommendations, recent scale events).
//!   Goal: under 2 µs.
//! - `replay/worldcup/<policy>`: the 125,310-step WorldCup 98 trace through each baseline, as
//!   `ebb backtest` replays it (`hpa-engine` makes 4 engine decisions per step). Goal: under
//!   1 s per policy.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ebb::backtest::make_policy;
use ebb::backtest::replay::{ReplayConfig, replay};
use ebb::backtest::trace::{TraceOptions, read_trace, worldcup_trace_path};
use ebb::engine::hpa::{self, HpaSpec, Replicas, ScalingState};
use ebb::engine::{Behavior, MetricSample, Target};

fn decision(c: &mut Criterion) {
    let spec = HpaSpec {
        min_replicas: 1,
        max_replicas: 500,
        behavior: Some(Behavior::default()),
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
            state.store_scale_event(spec.behavior.as_ref(), *current, d.desired, now);
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
    for name in ["hpa", "kpa", "oracle", "hpa-engine", "ebb"] {
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

criterion_group!(benches, decision, full_replay);
criterion_main!(benches);
