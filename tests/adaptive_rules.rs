//! The `ebb` policy (the decision machine, engine::target, in mode Direct) on series with a known answer, on the WorldCup trace, and
//! the no-peeking property: a decision at step k does not change when the trace is cut right
//! after k.

use ebb::backtest::machine::{MachinePolicy, protocol_spec};
use ebb::backtest::replay::{ReplayConfig, replay};
use ebb::backtest::synthetic::{self, Shape};
use ebb::backtest::trace::{self, Trace};
use ebb::backtest::{
    BacktestOptions, BacktestReport, PolicyResult, format_table, parse_policies, run_backtest,
};
use ebb::engine::adaptive::{AdaptiveConfig, AdaptiveState, Basis};
use ebb::engine::forecast::Period;
use ebb::engine::target::Mode;

fn backtest(series: &Trace, last_days: Option<f64>) -> BacktestReport {
    let opts = BacktestOptions {
        policies: parse_policies("all").unwrap(),
        last_days,
        ..Default::default()
    };
    let report = run_backtest(series, &opts).unwrap();
    print!("{}", format_table(&report));
    report
}

fn row<'a>(r: &'a BacktestReport, name: &str) -> &'a PolicyResult {
    r.results.iter().find(|p| p.policy == name).unwrap()
}

/// The ebb decisions over `values`, replayed as the backtest does.
fn ebb_decisions(series: &Trace, values: &[Option<f64>], cfg: &ReplayConfig) -> Vec<u32> {
    let mut cfg = *cfg;
    cfg.start_unix = series.start;
    let spec = protocol_spec(Mode::Direct, &cfg, &AdaptiveConfig::default(), None);
    let mut policy = MachinePolicy::new(spec, &cfg);
    replay(values, &cfg, &mut policy).decisions
}

fn assert_no_peeking(series: &Trace, cuts: &[usize]) {
    // The configuration is fixed from the whole series, as the backtest does, so that only the
    // policy's knowledge differs between the runs.
    let cfg =
        ReplayConfig::for_series(&series.values, series.step_seconds as f64, None, None).unwrap();
    let full = ebb_decisions(series, &series.values, &cfg);
    for &k in cuts {
        let cut = ebb_decisions(series, &series.values[..=k], &cfg);
        assert_eq!(cut.len(), k + 1);
        assert_eq!(
            cut,
            full[..=k],
            "decisions up to step {k} changed with the future"
        );
    }
}

#[test]
fn no_peeking_on_synthetic_series() {
    for shape in [Shape::Burst, Shape::Daily, Shape::Step] {
        assert_no_peeking(
            &synthetic::generate(shape),
            &[0, 1, 59, 1500, 5760, 7000, 10_079],
        );
    }
}

#[test]
fn no_peeking_on_the_worldcup_trace() {
    let series = worldcup();
    assert_no_peeking(&series, &[2, 40_000, 90_001]);
}

#[test]
fn flat_noise_does_not_make_ebb_flap() {
    let r = backtest(&synthetic::generate(Shape::Flat), None);
    let (ebb, hpa) = (row(&r, "ebb"), row(&r, "hpa"));
    assert!(
        ebb.scores.actions <= hpa.scores.actions,
        "ebb {} actions, hpa {}",
        ebb.scores.actions,
        hpa.scores.actions
    );
}

#[test]
fn a_step_is_followed_with_fewer_short_minutes_than_hpa() {
    let r = backtest(&synthetic::generate(Shape::Step), None);
    let (ebb, hpa, kpa) = (row(&r, "ebb"), row(&r, "hpa"), row(&r, "kpa"));
    assert!(ebb.scores.tau_u < hpa.scores.tau_u / 10.0);
    assert!(ebb.cost_vs_oracle < kpa.cost_vs_oracle);
    // After the step the count settles at the new demand plus headroom, not at the old level.
    let last = *ebb.replay.decisions.last().unwrap();
    let demand = r.demand.last().unwrap().unwrap();
    assert!(last >= demand && f64::from(last) < 1.5 * f64::from(demand));
}

#[test]
fn bursts_are_met_better_than_by_hpa() {
    let r = backtest(&synthetic::generate(Shape::Burst), None);
    let (ebb, hpa) = (row(&r, "ebb"), row(&r, "hpa"));
    assert!(ebb.scores.tau_u < hpa.scores.tau_u / 5.0);
    assert!(ebb.scores.a_u < hpa.scores.a_u);
}

#[test]
fn a_daily_cycle_is_found_and_followed() {
    let series = synthetic::generate(Shape::Daily);
    let r = backtest(&series, None);
    assert!(row(&r, "ebb").scores.tau_u < row(&r, "hpa").scores.tau_u / 5.0);
    let learned = learn(&series, AdaptiveConfig::default(), r.config.capacity);
    assert_eq!(learned.period, Some(Period::Daily));
}

/// Rule 4 in the replay: every policy aims at 1.5 times what a pod serves (a static target
/// set too high). hpa and plain ebb drown; ebb learning its per-pod target from the SLO
/// signal (the ready pods' utilization) finds the knee at the true capacity and recovers once
/// it has its 1,000 readings.
#[test]
fn a_static_target_set_too_high_is_corrected_by_the_slo() {
    use ebb::engine::slo::{SloBasis, SloConfig};
    let series = synthetic::generate(Shape::Daily);
    let c = ReplayConfig::for_series(&series.values, 60.0, None, None)
        .unwrap()
        .capacity;
    let run = |slo: Option<SloConfig>| {
        let opts = BacktestOptions {
            policies: parse_policies("hpa,ebb").unwrap(),
            target_per_pod: Some(1.5 * c),
            slo,
            ..Default::default()
        };
        let r = run_backtest(&series, &opts).unwrap();
        print!("{}", format_table(&r));
        r
    };
    let plain = run(None);
    let learning = run(Some(SloConfig::with_objective(1.0)));
    assert!(row(&plain, "hpa").scores.tau_u > 50.0);
    assert!(row(&plain, "ebb").scores.tau_u > 50.0);
    assert!(row(&learning, "ebb").scores.tau_u < 15.0);
    // The learned target: under the knee at c by the margin.
    let mut cfg = ReplayConfig::for_series(&series.values, 60.0, None, None).unwrap();
    cfg.target_per_pod = 1.5 * c;
    cfg.start_unix = series.start;
    let slo = SloConfig::with_objective(1.0);
    let spec = protocol_spec(Mode::Direct, &cfg, &AdaptiveConfig::default(), Some(&slo));
    let mut policy = MachinePolicy::new(spec, &cfg);
    replay(&series.values, &cfg, &mut policy);
    let learned = policy.machine().learned(0).unwrap().slo.unwrap();
    assert_eq!(learned.basis, SloBasis::Knee, "{learned:?}");
    let knee = learned.knee.unwrap();
    // Within a bin (2 %) of c, the readings around it mixed.
    assert!(
        (0.96 * c..=1.045 * c).contains(&knee),
        "{learned:?} vs c = {c}"
    );
    assert!((learned.target - 0.9 * knee).abs() < 1e-9);
}

fn learn(series: &Trace, config: AdaptiveConfig, capacity: f64) -> ebb::engine::adaptive::Learned {
    let step = series.step_seconds * 1000;
    let readings = series
        .values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.map(|v| (series.start * 1000 + i as i64 * step, v)));
    AdaptiveState::backfill(config, step, capacity, readings)
        .unwrap()
        .learned()
}

#[test]
fn learned_values_stay_within_their_bounds_and_fall_back_while_history_is_short() {
    let series = synthetic::generate(Shape::Burst);
    let config = AdaptiveConfig {
        max_headroom: 0.05,
        min_tolerance: 0.2,
        min_scale_down_window_seconds: 600,
        max_scale_down_window_seconds: 900,
        ..Default::default()
    };
    let l = learn(&series, config, 100.0);
    // The bursts need more than 5 %: the headroom is held at the bound, and says so.
    assert_eq!(l.headroom_basis, Basis::MaxHeadroom, "{l:?}");
    assert_eq!(l.headroom, 0.05);
    assert!(l.tolerance >= 0.2);
    assert!((600..=900).contains(&l.scale_down_window_seconds));
    // 50 minutes: younger than minHistorySeconds (an hour); the static target holds.
    let short = |minutes: usize| Trace {
        values: series.values[..minutes].to_vec(),
        ..series.clone()
    };
    let l = learn(&short(50), AdaptiveConfig::default(), 100.0);
    assert_eq!(
        (l.headroom, l.headroom_basis, l.scale_down_window_basis),
        (0.0, Basis::Static, Basis::Static)
    );
    assert_eq!(l.scale_down_window_seconds, 300);
    // 90 minutes: fewer than 100 growth samples, too few to fit a tail; the largest growth
    // seen (the noise's), a floor under any high quantile.
    let l = learn(&short(90), AdaptiveConfig::default(), 100.0);
    assert_eq!(l.headroom_basis, Basis::Extrapolated);
    assert!(l.headroom > 0.0 && l.headroom < 0.5, "{l:?}");
    // Three hours: short of the 2,000 samples a 99.5th percentile needs, enough to
    // extrapolate its tail from the 90th-odd percentile.
    let l = learn(&short(180), AdaptiveConfig::default(), 100.0);
    assert_eq!(l.headroom_basis, Basis::Extrapolated);
    assert!(l.headroom > 0.0 && l.headroom <= 1.0, "{l:?}");
    // Adaptive off: the static values whatever the history.
    let off = AdaptiveConfig {
        enabled: false,
        ..Default::default()
    };
    let l = learn(&series, off, 100.0);
    assert_eq!((l.headroom_basis, l.tolerance), (Basis::Static, 0.1));
}

fn worldcup() -> Trace {
    trace::read_trace(&trace::worldcup_trace_path(), &Default::default())
        .unwrap_or_else(|e| panic!("the shared trace is needed (set EBB_TRACES_DIR): {e}"))
}

/// The figures: the tables are printed (`--nocapture`) for docs/adaptive.md. Asserted:
/// ebb falls short in the share of minutes asked (the default 0.5 %, within issue #19's band
/// [0.25, 0.75] %), over the whole trace and its last 30 days, at less cost than kpa (the
/// safest baseline: 0.69 % and 0.27 %) and within the action budget; its cost against the
/// frontier is in docs/adaptive.md.
#[test]
fn worldcup_full_and_last_30_days() {
    let series = worldcup();
    for last_days in [None, Some(30.0)] {
        let r = backtest(&series, last_days);
        let (ebb, kpa) = (row(&r, "ebb"), row(&r, "kpa"));
        let tau_u = ebb.scores.tau_u;
        assert!((0.25..=0.75).contains(&tau_u), "tau_U {tau_u} %");
        assert!(ebb.cost_vs_oracle < kpa.cost_vs_oracle);
        if last_days.is_none() {
            assert!(ebb.scores.actions <= 20_000);
        }
    }
}

/// The risk asked is the risk got (issue #19's band: within [0.5 r, 1.5 r]) in both modes on a
/// load the histograms alone over-protect: on the level-shift family Direct got 0.15 % of its
/// minutes short for 0.5 % asked, and 0.48 % for 2 %, before the polls short corrected the
/// headroom (`AdaptiveState::track`).
#[test]
fn the_risk_asked_is_the_risk_got_in_both_modes() {
    let series = synthetic::generate(Shape::LevelShift);
    for risk in [0.5, 2.0] {
        let opts = BacktestOptions {
            policies: vec!["ebb".into(), "ebb-hpa".into()],
            adaptive: AdaptiveConfig {
                under_provision_risk: risk / 100.0,
                ..Default::default()
            },
            ..Default::default()
        };
        let report = run_backtest(&series, &opts).unwrap();
        for policy in ["ebb", "ebb-hpa"] {
            let got = row(&report, policy).scores.tau_u;
            assert!(
                (0.5 * risk..=1.5 * risk).contains(&got),
                "{policy}: {got} % short for {risk} % asked"
            );
        }
    }
}
