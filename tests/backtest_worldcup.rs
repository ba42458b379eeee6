//! The baselines on the full WorldCup 98 trace must reproduce the figures of an independent
//! implementation of backtest-protocol.md (issue 4): they are the check that the replay follows
//! the protocol. Cost and actions to the last digit; percentages to their two printed decimals.

use ebb::backtest::{
    BacktestOptions, BacktestReport, format_table, parse_policies, run_backtest, trace,
};

fn worldcup(last_days: Option<f64>) -> BacktestReport {
    let path = trace::worldcup_trace_path();
    let series = trace::read_trace(&path, &trace::TraceOptions::default())
        .unwrap_or_else(|e| panic!("the shared trace is needed (set EBB_TRACES_DIR): {e}"));
    let opts = BacktestOptions {
        policies: parse_policies("all").unwrap(),
        last_days,
        ..Default::default()
    };
    run_backtest(&series, &opts).unwrap()
}

/// The full-trace report, computed once for the tests that share it.
fn full() -> &'static BacktestReport {
    static REPORT: std::sync::OnceLock<BacktestReport> = std::sync::OnceLock::new();
    REPORT.get_or_init(|| worldcup(None))
}

fn row<'a>(r: &'a BacktestReport, name: &str) -> &'a ebb::backtest::PolicyResult {
    r.results.iter().find(|p| p.policy == name).unwrap()
}

#[test]
fn baselines_reproduce_the_independent_figures() {
    let r = full();
    print!("{}", format_table(r));
    assert_eq!(format!("{:.1}", r.config.capacity), "388.4");
    assert_eq!(
        (
            r.config.startup_delay,
            r.config.min_replicas,
            r.config.max_replicas
        ),
        (1, 1, 887)
    );
    assert_eq!(r.steps - r.missing, 125_300, "known points");

    let oracle = row(r, "oracle");
    assert_eq!(
        (oracle.scores.cost, oracle.scores.actions),
        (3_569_338, 46_697)
    );
    assert_eq!(
        oracle.scores.a_u, 0,
        "the oracle is never under-provisioned"
    );

    let hpa = row(r, "hpa");
    assert_eq!(
        format!("{:.2} {:.2}", hpa.scores.tau_u, hpa.scores.theta_u),
        "19.25 1.99"
    );
    assert_eq!((hpa.scores.cost, hpa.scores.actions), (3_651_205, 6_115));

    let kpa = row(r, "kpa");
    assert_eq!(format!("{:.2}", kpa.scores.tau_u), "0.69");
    assert_eq!(kpa.scores.cost, 4_943_812);
}

/// The engine's own HPA at its 15 s sync lands within a few pod-steps of the protocol's
/// one-decision-per-step model. These figures are ebb's (a regression check), not independent.
#[test]
fn engine_hpa_tracks_the_protocol_model() {
    let r = full();
    let (model, engine) = (row(r, "hpa"), row(r, "hpa-engine"));
    assert_eq!(
        (engine.scores.cost, engine.scores.actions, engine.scores.a_u),
        (3_651_200, 6_115, 75_142)
    );
    assert!(model.scores.cost.abs_diff(engine.scores.cost) < 100);
}

#[test]
fn last_days_scores_only_the_tail() {
    let full = full();
    let tail = worldcup(Some(30.0));
    assert_eq!(tail.results[0].scores.steps, 30 * 1440);
    for (f, t) in full.results.iter().zip(&tail.results) {
        // The simulation is the same; only the scored range differs.
        assert_eq!(f.replay, t.replay, "{}", f.policy);
        assert!(t.scores.cost < f.scores.cost, "{}", f.policy);
    }
}
