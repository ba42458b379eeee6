//! Property tests: the CSV reader and the engine never panic on any input, and the engine's
//! answers respect the bounds whenever the inputs make bounds meaningful.

use std::path::Path;

use ebb::backtest::replay::{ReplayConfig, replay};
use ebb::backtest::trace::{TraceOptions, parse_trace};
use ebb::engine::baseline::{HpaBaseline, HpaEngineBaseline, KpaBaseline, OracleBaseline};
use ebb::engine::hpa::{self, ControllerConfig, HpaSpec, MAX_RECORDS, Replicas, ScalingState};
use ebb::engine::policy::ReplayPolicy;
use ebb::engine::{
    Behavior, Direction, MetricSample, NoData, Policy, ScalingRules, SelectPolicy, Target,
};
use proptest::prelude::*;

fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("period".to_string()),
        Just("NaN".to_string()),
        (0i64..4_000_000_000).prop_map(|t| t.to_string()),
        (0u32..100, 0u32..60).prop_map(|(h, m)| format!("1998-05-01 {:02}:{:02}:00", h % 24, m)),
        any::<f64>().prop_map(|v| v.to_string()),
        "[ -~]{0,12}",
    ]
}

fn csv_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::collection::vec(field(), 0..4), 0..40).prop_map(|rows| {
        rows.iter()
            .map(|r| r.join(","))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn csv_reader_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = parse_trace(&text, Path::new("fuzz.csv"), &TraceOptions::default());
    }

    #[test]
    fn csv_reader_never_panics_on_rows(text in csv_text(), tcol in prop::option::of("[a-z0-9]{1,3}"), vcol in prop::option::of("[a-z0-9]{1,3}")) {
        let opts = TraceOptions { time_column: tcol, value_column: vcol };
        if let Ok(t) = parse_trace(&text, Path::new("fuzz.csv"), &opts) {
            prop_assert!(t.step_seconds > 0);
            prop_assert!(!t.values.is_empty());
            prop_assert!(t.values.iter().flatten().all(|v| v.is_finite() && *v >= 0.0));
        }
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        (any::<i32>(), any::<i32>()).prop_map(|(value, period_seconds)| Policy::Pods {
            value,
            period_seconds
        }),
        (any::<i32>(), any::<i32>()).prop_map(|(value, period_seconds)| Policy::Percent {
            value,
            period_seconds
        }),
    ]
}

fn rules() -> impl Strategy<Value = ScalingRules> {
    (
        prop::option::of(any::<i32>()),
        prop::option::of(prop_oneof![
            Just(SelectPolicy::Max),
            Just(SelectPolicy::Min),
            Just(SelectPolicy::Disabled)
        ]),
        prop::collection::vec(policy(), 0..3),
        prop::option::of(prop_oneof![
            Just(0.0),
            Just(0.1),
            Just(0.5),
            Just(2.0),
            Just(f64::NAN)
        ]),
    )
        .prop_map(|(w, s, policies, tolerance)| ScalingRules {
            stabilization_window_seconds: w,
            select_policy: s,
            policies,
            tolerance,
        })
}

fn sample() -> impl Strategy<Value = MetricSample> {
    let target = prop_oneof![
        any::<i64>().prop_map(Target::Value),
        any::<i64>().prop_map(Target::AverageValue),
        any::<i32>().prop_map(Target::Utilization),
    ];
    let observation = prop_oneof![
        any::<i64>().prop_map(Ok),
        (0i64..10_000_000).prop_map(Ok),
        Just(Err(NoData::SourceFailed)),
        Just(Err(NoData::Empty)),
    ];
    (target, observation).prop_map(|(target, observation)| MetricSample {
        target,
        observation,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any inputs at all: no panic.
    #[test]
    fn decide_never_panics(
        min in any::<i32>(), max in any::<i32>(), spec in any::<i32>(), status in any::<i32>(), ready in any::<i32>(),
        behavior in prop::option::of((rules(), rules())), metrics in prop::collection::vec(sample(), 0..4),
        now in any::<i64>(), factor in any::<f64>(),
    ) {
        let spec_ = HpaSpec {
            min_replicas: min,
            max_replicas: max,
            behavior: behavior.map(|(u, d)| Box::new(Behavior { scale_up: u, scale_down: d })),
            config: ControllerConfig { scale_up_limit_factor: factor, ..Default::default() },
        };
        let mut state = ScalingState::default();
        let r = Replicas { spec, status, ready };
        let d = hpa::decide(&spec_, &mut state, r, &metrics, now);
        state.store_scale_event(spec_.behavior.as_deref(), spec, d.desired, now);
    }

    /// Sane bounds and a running target: every decision of a sequence lies within them, and
    /// the state's buffers stay bounded.
    #[test]
    fn decisions_stay_within_bounds(
        min in 0i32..50, span in 0i32..500, start in 0i32..600,
        behavior in prop::option::of((rules(), rules())),
        loads in prop::collection::vec(prop::option::of(0i64..100_000_000), 1..60),
        per_pod in 1i64..1_000_000, step_ms in 1i64..120_000,
    ) {
        let max = min + span;
        let spec = HpaSpec {
            min_replicas: min,
            max_replicas: max,
            behavior: behavior.map(|(u, d)| Box::new(Behavior { scale_up: u, scale_down: d })),
            config: ControllerConfig::default(),
        };
        let mut state = ScalingState::default();
        let mut current = start.clamp(min.max(1), max.max(1));
        for (i, load) in loads.iter().enumerate() {
            let now = i as i64 * step_ms;
            let metrics = [
                MetricSample { target: Target::AverageValue(per_pod), observation: load.ok_or(NoData::Stale) },
                MetricSample { target: Target::Value(per_pod * 3), observation: load.map(|l| l / 2).ok_or(NoData::Empty) },
            ];
            let d = hpa::decide(&spec, &mut state, Replicas::all(current), &metrics, now);
            prop_assert!(d.desired >= min && d.desired <= max, "{d:?} outside [{min}, {max}] from {current}");
            if d.limited {
                prop_assert_eq!(d.reason, d.scaling_limited);
            }
            if d.desired != current {
                state.store_scale_event(spec.behavior.as_deref(), current, d.desired, now);
                current = d.desired;
            }
            prop_assert!(state.recommendations().len() <= MAX_RECORDS);
            prop_assert!(state.scale_events(Direction::Up).len() <= MAX_RECORDS);
        }
    }

    /// Every baseline's replay stays within the bounds, and the oracle is never under-provisioned
    /// once the startup delay has passed.
    #[test]
    fn replays_respect_bounds_and_the_oracle_never_falls_short(
        load in prop::collection::vec(prop::option::of(0.0f64..1e6), 1..300),
        delay in 0usize..4,
    ) {
        prop_assume!(load.iter().any(Option::is_some));
        let cfg = ReplayConfig::for_series(&load, 60.0, None, Some(delay)).unwrap();
        let demand = cfg.demand(&load);
        let mut policies: Vec<Box<dyn ReplayPolicy>> = vec![
            Box::new(OracleBaseline::new(demand.clone(), delay)),
            Box::new(HpaBaseline::default()),
            Box::new(KpaBaseline),
            Box::new(HpaEngineBaseline::default()),
        ];
        for p in policies.iter_mut() {
            let r = replay(&load, &cfg, p.as_mut());
            prop_assert_eq!(r.decisions.len(), load.len());
            prop_assert!(r.decisions.iter().all(|&d| d >= cfg.min_replicas && d <= cfg.max_replicas));
            if p.name() == "oracle" {
                let supply = r.supply(delay);
                // From step S on: earlier, the warm start (demand at step 0) may fall short.
                for (t, d) in demand.iter().enumerate().skip(delay) {
                    if let Some(d) = d {
                        prop_assert!(supply[t] >= *d, "step {t}: supply {} < demand {d}", supply[t]);
                    }
                }
            }
        }
    }
}
