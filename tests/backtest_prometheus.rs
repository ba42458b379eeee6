//! `ebb backtest --prometheus`: the replay reads its series from a real Prometheus (a private
//! one from the local stack, backfilled through remote write) and sees exactly what a CSV of
//! the same samples gives.

mod support;

use std::process::Command;
use std::time::Duration;

use ebb::backtest::prometheus::{RangeQuery, fetch, to_trace};
use ebb::backtest::synthetic::{self, Shape};
use ebb::backtest::trace::{TraceOptions, read_trace};
use ebb::localstack::{Stack, StackOptions};
use ebb::source::{Connections, PrometheusConfig, Query};
use support::{eventually, start_stack};

const HOURS: usize = 6;

fn stack() -> Stack {
    start_stack(StackOptions {
        prometheus: true,
        ..Default::default()
    })
}

/// Six hours of the synthetic burst series, on whole minutes ending two hours ago.
fn samples() -> (i64, Vec<(i64, f64)>) {
    let now = chrono::Utc::now().timestamp();
    let start = (now - (HOURS as i64 + 2) * 3600) / 60 * 60;
    let series = synthetic::generate(Shape::Burst);
    let samples = series.values[..HOURS * 60]
        .iter()
        .enumerate()
        .map(|(i, v)| ((start + i as i64 * 60) * 1000, v.unwrap()))
        .collect();
    (start, samples)
}

fn ebb(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn the_replay_sees_the_same_series_as_from_a_csv() {
    let stack = stack();
    let prometheus = stack.prometheus.as_ref().unwrap();
    let (start, samples) = samples();
    let end = start + (HOURS as i64 * 60 - 1) * 60;
    prometheus
        .push(
            &[("__name__", "ebb_backtest_load"), ("job", "shop")],
            &samples,
        )
        .await
        .unwrap();
    let q = RangeQuery {
        url: prometheus.url(),
        query: "ebb_backtest_load".to_string(),
        start,
        end,
        step_seconds: 60,
    };
    let fetched = eventually(
        Duration::from_secs(20),
        "the backfilled history",
        || async { fetch(&q).await.ok().filter(|s| s.len() == samples.len()) },
    )
    .await;
    assert_eq!(fetched, samples);

    // The same samples as a CSV, through the trace reader.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("load.csv");
    let mut text = String::from("time,load\n");
    for (ms, v) in &samples {
        text.push_str(&format!("{},{v}\n", ms / 1000));
    }
    std::fs::write(&csv, text).unwrap();
    let from_csv = read_trace(&csv, &TraceOptions::default()).unwrap();
    assert_eq!(to_trace(&fetched, start, end, 60), from_csv);

    // End to end: the command's JSON report is the same from both sources.
    let common = ["--policy", "all", "--format", "json"];
    let via_csv = ebb(&[&["backtest", "--trace", csv.to_str().unwrap()][..], &common].concat());
    let (s, e) = (start.to_string(), end.to_string());
    let url = prometheus.url();
    let via_prometheus = ebb(&[
        &[
            "backtest",
            "--prometheus",
            &url,
            "--query",
            "ebb_backtest_load",
            "--start",
            &s,
            "--end",
            &e,
            "--step",
            "60",
        ][..],
        &common,
    ]
    .concat());
    assert!(via_csv.status.success(), "{via_csv:?}");
    assert!(via_prometheus.status.success(), "{via_prometheus:?}");
    let report: serde_json::Value = serde_json::from_slice(&via_prometheus.stdout).unwrap();
    assert_eq!(report["steps"], HOURS * 60);
    assert_eq!(report["results"].as_array().unwrap().len(), 6);
    assert_eq!(via_csv.stdout, via_prometheus.stdout);
}

#[tokio::test]
async fn several_series_or_no_server_is_a_clear_error_never_zero_load() {
    let stack = stack();
    let prometheus = stack.prometheus.as_ref().unwrap();
    let (start, samples) = samples();
    for job in ["a", "b"] {
        prometheus
            .push(
                &[("__name__", "ebb_two_series"), ("job", job)],
                &samples[..10],
            )
            .await
            .unwrap();
    }
    let q = RangeQuery {
        url: prometheus.url(),
        query: "ebb_two_series".to_string(),
        start,
        end: start + 540,
        step_seconds: 60,
    };
    let err = eventually(Duration::from_secs(20), "both series", || async {
        match fetch(&q).await {
            Err(e) if e.to_string().contains("returned 2 series") => Some(e),
            _ => None,
        }
    })
    .await;
    assert!(err.to_string().contains("sum(...)"), "{err}");

    let out = ebb(&[
        "backtest",
        "--prometheus",
        "http://127.0.0.1:9",
        "--query",
        "up",
        "--start",
        &start.to_string(),
        "--end",
        &(start + 600).to_string(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("prometheus http://127.0.0.1:9"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// More steps than Prometheus answers in one range query (11,000 points per series; here 12,000
/// minutes, 8.3 days): the range is split into requests and every step comes back once, through
/// `ebb backtest --prometheus` and the adaptive backfill alike (one client).
#[tokio::test]
async fn a_range_over_eleven_thousand_steps_comes_back_whole() {
    const STEPS: i64 = 12_000;
    let stack = stack();
    let prometheus = stack.prometheus.as_ref().unwrap();
    let end = (chrono::Utc::now().timestamp() - 2 * 3600) / 60 * 60;
    let start = end - (STEPS - 1) * 60;
    let samples: Vec<(i64, f64)> = (0..STEPS)
        .map(|i| ((start + i * 60) * 1000, (i % 1440) as f64))
        .collect();
    prometheus
        .push(&[("__name__", "ebb_long_history")], &samples)
        .await
        .unwrap();
    let q = RangeQuery {
        url: prometheus.url(),
        query: "ebb_long_history".to_string(),
        start,
        end,
        step_seconds: 60,
    };
    let fetched = eventually(Duration::from_secs(30), "12,000 steps", || async {
        fetch(&q).await.ok().filter(|s| s.len() == samples.len())
    })
    .await;
    assert_eq!(fetched, samples);

    // The backfill's path: the source's history over the same window.
    let config = PrometheusConfig {
        address: prometheus.url(),
        query: "ebb_long_history".to_string(),
        auth_secret_ref: None,
        timeout: None,
        empty_as: None,
        ..Default::default()
    };
    let source = Connections::new()
        .source_for(&Query::Prometheus(config.resolve(None).unwrap()))
        .unwrap();
    let window = Duration::from_secs(STEPS as u64 * 60);
    let history = ebb::history::backfill(source.as_ref(), window, end, Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let in_seconds: Vec<(i64, f64)> = samples.iter().map(|&(t, v)| (t / 1000, v)).collect();
    assert_eq!(history, in_seconds);

    // ... and the command replays every step.
    let (s, e) = (start.to_string(), end.to_string());
    let url = prometheus.url();
    let out = ebb(&[
        "backtest",
        "--prometheus",
        &url,
        "--query",
        "ebb_long_history",
        "--start",
        &s,
        "--end",
        &e,
        "--policy",
        "hpa",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"], STEPS);
}
