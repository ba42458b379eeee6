//! Learned state survives a restart: ebb learns live from readings it also finds in Prometheus;
//! after a restart it rebuilds the state from a Prometheus range query and has learned the same
//! values.

mod support;

use std::time::Duration;

use ebb::backtest::prometheus::{RangeQuery, backfill_state, fetch};
use ebb::backtest::synthetic::{self, Shape};
use ebb::engine::adaptive::{AdaptiveConfig, AdaptiveState, Basis};
use ebb::localstack::StackOptions;
use support::{eventually, start_stack};

const DAYS: usize = 3;
const TARGET_PER_POD: f64 = 100.0;

#[tokio::test]
async fn learned_values_are_rebuilt_from_prometheus_after_a_restart() {
    let stack = start_stack(StackOptions {
        prometheus: true,
        ..Default::default()
    });
    let prometheus = stack.prometheus.as_ref().unwrap();
    let now = chrono::Utc::now().timestamp();
    let start = (now - (DAYS as i64 * 86_400 + 3600)) / 60 * 60;
    let series = synthetic::generate(Shape::Burst);
    let readings: Vec<(i64, f64)> = series.values[..DAYS * 1440]
        .iter()
        .enumerate()
        .map(|(i, v)| ((start + i as i64 * 60) * 1000, v.unwrap()))
        .collect();

    // Live: each hour of readings is scraped (pushed) and fed to the learning state.
    let config = AdaptiveConfig::default();
    let mut live = AdaptiveState::new(config.clone(), 60_000, TARGET_PER_POD).unwrap();
    let labels = [("__name__", "ebb_restart_load"), ("job", "shop")];
    for hour in readings.chunks(60) {
        prometheus.push(&labels, hour).await.unwrap();
        for &(ts, v) in hour {
            live.observe(ts, v);
        }
    }
    let before = live.learned();
    assert_eq!(before.headroom_basis, Basis::History, "{before:?}");
    assert_eq!(before.scale_down_window_basis, Basis::History);
    assert_eq!(before.tolerance_basis, Basis::History);
    drop(live); // the restart: nothing survives in memory

    let q = RangeQuery {
        url: prometheus.url(),
        query: "ebb_restart_load".to_string(),
        start,
        end: start + (readings.len() as i64 - 1) * 60,
        step_seconds: 60,
    };
    eventually(Duration::from_secs(30), "the pushed history", || async {
        fetch(&q).await.ok().filter(|s| s.len() == readings.len())
    })
    .await;
    let after = backfill_state(&q, config, TARGET_PER_POD)
        .await
        .unwrap()
        .learned();
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(1.0);
    assert!(
        close(after.headroom, before.headroom),
        "{before:?} / {after:?}"
    );
    assert!(
        close(after.tolerance, before.tolerance),
        "{before:?} / {after:?}"
    );
    assert_eq!(
        after.scale_down_window_seconds,
        before.scale_down_window_seconds
    );
    assert_eq!(
        (after.headroom_basis, after.period, after.growth_samples),
        (before.headroom_basis, before.period, before.growth_samples)
    );
}
