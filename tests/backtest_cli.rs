//! `ebb backtest` end to end through the binary: output, files, and errors on bad input.

use std::path::PathBuf;
use std::process::{Command, Output};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ebb-backtest-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ebb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ebb"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `ebb` expecting success; its standard output.
fn ebb_ok(args: &[&str]) -> String {
    let out = ebb(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A small trace: unsorted rows, a two-minute gap, a burst.
const TRACE: &str = "period,count\n\
2024-01-01 00:02:00,300\n\
2024-01-01 00:00:00,100\n\
2024-01-01 00:01:00,200\n\
2024-01-01 00:05:00,900\n\
2024-01-01 00:06:00,4000\n\
2024-01-01 00:07:00,3000\n\
2024-01-01 00:08:00,500\n\
2024-01-01 00:09:00,400\n";

#[test]
fn table_decisions_and_plot() {
    let dir = scratch("ok");
    let trace = dir.join("t.csv");
    std::fs::write(&trace, TRACE).unwrap();
    let stdout = ebb_ok(&[
        "backtest",
        "--trace",
        trace.to_str().unwrap(),
        "--policy",
        "oracle,hpa",
        "--decisions",
        dir.join("d.csv").to_str().unwrap(),
        "--plot",
        dir.join("p.svg").to_str().unwrap(),
    ]);
    // median of the 8 known values is (400 + 500) / 2 = 450: c = 45, max demand 89 -> 134.
    assert!(stdout.starts_with("c = 45.0 per step per pod, S = 1 step(s), bounds [1, 134], step 60 s, 10 steps (2 missing)"), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("oracle ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("hpa ")), "{stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("kpa ")), "{stdout}");
    for policy in ["oracle", "hpa"] {
        let csv = std::fs::read_to_string(dir.join(format!("d.{policy}.csv"))).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "step,desired");
        assert_eq!(lines.len(), 11, "{csv}");
        let svg = std::fs::read_to_string(dir.join(format!("p.{policy}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("<path"), "{svg}");
    }
    // The oracle knows the burst one step ahead: demand at step 6 is ceil(4000 / 45) = 89.
    let oracle = std::fs::read_to_string(dir.join("d.oracle.csv")).unwrap();
    assert!(oracle.lines().any(|l| l == "5,89"), "{oracle}");

    let json = ebb(&[
        "backtest",
        "--trace",
        trace.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["results"].as_array().unwrap().len(), 6); // oracle, hpa, kpa, hpa-engine, ebb, ebb-hpa
    assert_eq!(v["results"][0]["policy"], "oracle");
    assert_eq!(v["results"][0]["a_u"], 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = scratch("bad");
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "period,count\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,lots\n",
    )
    .unwrap();
    let out = ebb(&["backtest", "--trace", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv:3: field \"count\": not a number: \"lots\""),
        "{err}"
    );

    let dup = dir.join("dup.csv");
    std::fs::write(
        &dup,
        "period,count\n2024-01-01 00:00:00,1\n2024-01-01 00:00:00,2\n",
    )
    .unwrap();
    let err = String::from_utf8_lossy(&ebb(&["backtest", "--trace", dup.to_str().unwrap()]).stderr)
        .into_owned();
    assert!(err.contains("dup.csv:3: duplicate timestamp"), "{err}");

    let empty = dir.join("empty.csv");
    std::fs::write(&empty, "period,count\n").unwrap();
    let err =
        String::from_utf8_lossy(&ebb(&["backtest", "--trace", empty.to_str().unwrap()]).stderr)
            .into_owned();
    assert!(
        err.contains("empty.csv: the trace has no data rows"),
        "{err}"
    );

    let err = String::from_utf8_lossy(
        &ebb(&[
            "backtest",
            "--trace",
            bad.to_str().unwrap(),
            "--policy",
            "magic",
        ])
        .stderr,
    )
    .into_owned();
    assert!(err.contains("unknown policy \"magic\""), "{err}");

    let err = String::from_utf8_lossy(
        &ebb(&[
            "backtest",
            "--trace",
            dir.join("absent.csv").to_str().unwrap(),
        ])
        .stderr,
    )
    .into_owned();
    assert!(err.contains("absent.csv"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn frontier_tunes_the_reference_families_to_the_risk() {
    let stdout = ebb_ok(&[
        "backtest",
        "--synthetic",
        "daily",
        "--policy",
        "oracle",
        "--frontier",
        "--risk",
        "1",
    ]);
    assert!(
        stdout.contains("reference families tuned in hindsight to tau_U <= 1.00 %"),
        "{stdout}"
    );
    for family in ["held+H ", "held+k*noise ", "clairvoyant "] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(family))
            .unwrap_or_else(|| panic!("no {family} row: {stdout}"));
        // Columns: family, window, k, headroom%, tau_U%, cost/oracle, actions.
        let cols: Vec<&str> = line.split_whitespace().collect();
        let tau_u: f64 = cols[4].parse().unwrap();
        let cost: f64 = cols[5].parse().unwrap();
        assert!(tau_u <= 1.0 && cost >= 1.0, "{line}");
    }

    let json = ebb(&[
        "backtest",
        "--synthetic",
        "step",
        "--policy",
        "oracle",
        "--frontier",
        "--max-actions",
        "100",
        "--format",
        "json",
    ]);
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["frontier"]["riskPercent"], 0.5);
    for row in v["frontier"]["rows"].as_array().unwrap() {
        assert!(row["actions"].as_u64().unwrap() <= 100, "{row}");
        assert!(row["tau_u"].as_f64().unwrap() <= 0.5, "{row}");
    }

    let err = ebb(&["backtest", "--synthetic", "flat", "--frontier", "--risk=-1"]);
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("invalid --risk"), "{err}");
}

#[test]
fn a_misset_target_and_the_slo_rule_show_in_the_header() {
    let stdout = ebb_ok(&[
        "backtest",
        "--synthetic",
        "flat",
        "--policy",
        "hpa,ebb",
        "--target-per-pod",
        "150",
        "--slo",
    ]);
    assert!(
        stdout.contains("every policy is configured with a target of 150.0 per pod (1.50c)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ebb learns its per-pod target from the SLO signal"),
        "{stdout}"
    );
    let err = ebb(&["backtest", "--synthetic", "flat", "--target-per-pod", "0"]);
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains("invalid --target-per-pod: 0 is not a positive number"),
        "{err}"
    );
}

#[test]
fn aggregate_replays_on_a_coarser_grid() {
    let stdout = ebb_ok(&[
        "backtest",
        "--synthetic",
        "daily",
        "--aggregate",
        "3600",
        "--policy",
        "oracle,hpa",
    ]);
    // A week of minutes is 168 hours; at an hour a step the startup delay is 0 steps.
    assert!(
        stdout.contains("S = 0 step(s)") && stdout.contains("step 3600 s, 168 steps"),
        "{stdout}"
    );
    let err = ebb(&["backtest", "--synthetic", "daily", "--aggregate", "90"]);
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(
        err.contains(
            "invalid --aggregate: 90 is not a positive multiple of the trace's step (60 s)"
        ),
        "{err}"
    );
}

#[test]
fn queue_replays_the_load_as_arrivals_beside_queue_length_and_rate() {
    let dir = scratch("queue");
    let trace = dir.join("q.csv");
    // Quiet, two hours at eight times the load, quiet.
    let mut csv = String::from("timestamp,value\n");
    for k in 0..300 {
        let v = if (60..180).contains(&k) { 4800 } else { 600 };
        csv.push_str(&format!("{},{v}\n", 1_700_000_000 + 60 * k));
    }
    std::fs::write(&trace, csv).unwrap();
    let args = [
        "backtest",
        "--queue",
        "--capacity",
        "600",
        "--drain-seconds",
        "120",
        "--format",
        "json",
        "--trace",
    ];
    let mut all: Vec<&str> = args.to_vec();
    all.push(trace.to_str().unwrap());
    let scores: serde_json::Value = serde_json::from_str(&ebb_ok(&all)).unwrap();
    let row = |p: &str| {
        scores
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["policy"] == p)
            .unwrap_or_else(|| panic!("no {p} row: {scores}"))
            .clone()
    };
    let (drain, qlen) = (row("ebb"), row("queue-length"));
    row("rate");
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    assert!(
        f(&drain, "backlog_message_seconds") < f(&qlen, "backlog_message_seconds"),
        "{scores}"
    );
    assert!(
        f(&drain, "late_steps_percent") <= f(&qlen, "late_steps_percent"),
        "{scores}"
    );
    // The table names the queue's settings.
    let table = ebb_ok(&["backtest", "--queue", "--trace", trace.to_str().unwrap()]);
    assert!(table.contains("drainSeconds 300"), "{table}");
    // A drain time that is not one is refused.
    let out = ebb(&[
        "backtest",
        "--queue",
        "--drain-seconds",
        "0",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--drain-seconds"));
}

#[test]
fn risk_sweep_replays_ebb_at_each_risk_beside_the_frontier_at_its_own_tau_u() {
    let json = ebb_ok(&[
        "backtest",
        "--synthetic",
        "step",
        "--policy",
        "ebb-hpa",
        "--risk-sweep",
        "1",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{json}");
    let row = &rows[0];
    assert_eq!(row["policy"], "ebb-hpa");
    assert_eq!(row["riskPercent"], 1.0);
    let tau_u = row["tauUPercent"].as_f64().unwrap();
    assert_eq!(
        row["calibrated"].as_bool().unwrap(),
        (0.5..=1.5).contains(&tau_u),
        "{row}"
    );
    let ratio =
        row["costVsOracle"].as_f64().unwrap() / row["frontierCostVsOracle"].as_f64().unwrap();
    assert!(
        (row["vsFrontier"].as_f64().unwrap() - ratio).abs() < 1e-9,
        "{row}"
    );

    for (args, says) in [
        (&["--risk-sweep", "0.5", "--policy", "hpa"][..], "not hpa"),
        (
            &["--max-actions", "10"][..],
            "give --frontier or --risk-sweep",
        ),
        (
            &["--risk-sweep", "0.5", "--frontier"][..],
            "cannot be used with",
        ),
    ] {
        let out = ebb(&[&["backtest", "--synthetic", "flat"][..], args].concat());
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
