//! `ebb backtest --risk-sweep`: does the risk a user sets mean what it says on this load?
//!
//! For each risk r asked (`adaptive.underProvisionRisk`), ebb is replayed in each mode asked
//! (`ebb`: Direct, `ebb-hpa`: through the modelled HPA), and the row gives the tau_U it got
//! (calibrated when within [r/2, 3r/2]), its cost against the oracle's, and the cheapest
//! causal reference family tuned in hindsight to that same tau_U (`frontier.rs`): how much a
//! policy of the same kind, its one parameter picked knowing the whole trace, would have saved
//! at ebb's own risk. The clairvoyant family (it reads the level of the load ahead) is shown
//! beside it, as the floor no causal policy reaches.

use serde::Serialize;

use super::frontier::{self, Family, FrontierOptions};
use super::{BacktestError, BacktestOptions, Result, Trace, run_backtest};

/// The policies a sweep replays: ebb's two modes.
pub const SWEPT: [&str; 2] = ["ebb", "ebb-hpa"];

/// Calibrated: the tau_U got is within this factor band of the risk asked.
pub const CALIBRATION_BAND: (f64, f64) = (0.5, 1.5);

/// One mode at one risk.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepRow {
    /// `ebb` or `ebb-hpa`.
    pub policy: String,
    /// The risk asked, in %.
    pub risk_percent: f64,
    /// The tau_U got, in %.
    pub tau_u_percent: f64,
    /// Within [`CALIBRATION_BAND`] of the risk asked.
    pub calibrated: bool,
    /// Cost divided by the oracle's.
    pub cost_vs_oracle: f64,
    /// Scaling actions.
    pub actions: u64,
    /// The cheapest causal reference family tuned in hindsight to this row's tau_U, if any
    /// met it.
    pub frontier_family: Option<Family>,
    /// Its cost divided by the oracle's.
    pub frontier_cost_vs_oracle: Option<f64>,
    /// This row's cost over the frontier's (1.03: 3 % above the cheapest family).
    pub vs_frontier: Option<f64>,
    /// The clairvoyant family's cost at this row's tau_U, divided by the oracle's.
    pub clairvoyant_cost_vs_oracle: Option<f64>,
    /// Share of the decisions, in %, taken with the learned headroom held at `maxHeadroom`:
    /// where the risk asked needed more than the bound allows.
    pub at_max_headroom_percent: Option<f64>,
}

/// The sweep's rows, by risk then policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    pub steps: usize,
    /// Days the trace spans: ebb's risk is calibrated from
    /// [`crate::engine::adaptive::CALIBRATION_HISTORY`] on.
    pub history_days: f64,
    pub scored_from: usize,
    pub max_actions: Option<u64>,
    pub rows: Vec<SweepRow>,
}

/// Replays `opts.policies` (ebb's modes only) at each risk in `risks_percent`.
pub fn risk_sweep(
    trace: &Trace,
    opts: &BacktestOptions,
    risks_percent: &[f64],
    max_actions: Option<u64>,
) -> Result<SweepReport> {
    if risks_percent.is_empty() {
        return Err(BacktestError::InvalidArg {
            flag: "--risk-sweep",
            message: "no risk given".into(),
        });
    }
    if let Some(p) = opts.policies.iter().find(|p| !SWEPT.contains(&p.as_str())) {
        return Err(BacktestError::InvalidArg {
            flag: "--risk-sweep",
            message: format!("replays ebb's modes (ebb, ebb-hpa), not {p}"),
        });
    }
    if let Some((st, _)) = &opts.scaled_target
        && st.spec.adaptive.is_none()
    {
        return Err(BacktestError::InvalidArg {
            flag: "--risk-sweep",
            message: "the ScaledTarget has no spec.adaptive: its policy takes no risk to sweep"
                .into(),
        });
    }
    let mut rows = Vec::new();
    let mut shape = None;
    for &risk in risks_percent {
        if !(risk.is_finite() && risk > 0.0 && risk <= 50.0) {
            return Err(BacktestError::InvalidArg {
                flag: "--risk-sweep",
                message: format!("{risk} is not a risk in (0, 50] %"),
            });
        }
        let mut at_risk = opts.clone();
        at_risk.frontier = None;
        at_risk.adaptive.under_provision_risk = risk / 100.0;
        if let Some((st, _)) = &mut at_risk.scaled_target
            && let Some(adaptive) = &mut st.spec.adaptive
        {
            adaptive.under_provision_risk = risk / 100.0;
        }
        let report = run_backtest(trace, &at_risk)?;
        for r in &report.results {
            let (clairvoyant, causal): (Vec<_>, Vec<_>) = frontier::frontier(
                &trace.values,
                &report.config,
                report.scored_from,
                report.oracle_cost,
                FrontierOptions {
                    risk_percent: r.scores.tau_u,
                    max_actions,
                },
            )
            .into_iter()
            .partition(|row| row.family == Family::Clairvoyant);
            let best = causal
                .into_iter()
                .min_by(|a, b| a.cost_vs_oracle.total_cmp(&b.cost_vs_oracle));
            let (lo, hi) = CALIBRATION_BAND;
            rows.push(SweepRow {
                policy: r.policy.clone(),
                risk_percent: risk,
                tau_u_percent: r.scores.tau_u,
                calibrated: (lo * risk..=hi * risk).contains(&r.scores.tau_u),
                cost_vs_oracle: r.cost_vs_oracle,
                actions: r.scores.actions,
                frontier_family: best.as_ref().map(|b| b.family),
                frontier_cost_vs_oracle: best.as_ref().map(|b| b.cost_vs_oracle),
                vs_frontier: best.map(|b| r.cost_vs_oracle / b.cost_vs_oracle),
                clairvoyant_cost_vs_oracle: clairvoyant.first().map(|c| c.cost_vs_oracle),
                at_max_headroom_percent: r
                    .decisions_at_max_headroom
                    .map(|n| 100.0 * n as f64 / report.steps.max(1) as f64),
            });
        }
        shape = Some((report.steps, report.scored_from, report.config.step_seconds));
    }
    let (steps, scored_from, step_seconds) = shape.unwrap_or_default();
    Ok(SweepReport {
        steps,
        history_days: steps as f64 * step_seconds / 86_400.0,
        scored_from,
        max_actions,
        rows,
    })
}

/// Points of tau_U at which the picture's family curves are tuned.
pub const PICTURE_GRID: usize = 12;

/// The baselines the picture replays once, beside ebb's rows.
pub const PICTURE_BASELINES: [&str; 2] = ["hpa", "kpa"];

/// What `--risk-sweep --plot` draws besides ebb's rows: the reference families' cost over a
/// range of tau_U (each point the family tuned in hindsight to it), and the baselines.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepPicture {
    /// Each family's `(tau_U %, cost vs oracle)` at the grid's points it can meet, by tau_U.
    pub families: Vec<(Family, Vec<(f64, f64)>)>,
    /// `(policy, tau_U %, cost vs oracle)` of each baseline replayed with the same options.
    pub baselines: Vec<(String, f64, f64)>,
}

/// The families' curves over the tau_U the report and the baselines span (a log-spaced grid
/// of [`PICTURE_GRID`] points, from half the lowest to twice the highest), and the baselines.
pub fn picture(
    trace: &Trace,
    opts: &BacktestOptions,
    report: &SweepReport,
    max_actions: Option<u64>,
) -> Result<SweepPicture> {
    let mut at_baselines = opts.clone();
    at_baselines.frontier = None;
    at_baselines.policies = PICTURE_BASELINES.iter().map(|p| p.to_string()).collect();
    let replayed = run_backtest(trace, &at_baselines)?;
    let baselines: Vec<(String, f64, f64)> = replayed
        .results
        .iter()
        .map(|r| (r.policy.clone(), r.scores.tau_u, r.cost_vs_oracle))
        .collect();
    let spanned = report
        .rows
        .iter()
        .flat_map(|r| [r.tau_u_percent, r.risk_percent])
        .chain(baselines.iter().map(|b| b.1))
        .filter(|t| *t > 0.0);
    let (lo, hi) = spanned.fold((f64::INFINITY, 0.0f64), |(lo, hi), t| {
        (lo.min(t), hi.max(t))
    });
    let (lo, hi) = ((lo / 2.0).max(0.01), (hi * 2.0).min(50.0));
    let mut families: Vec<(Family, Vec<(f64, f64)>)> =
        Family::ALL.iter().map(|&f| (f, Vec::new())).collect();
    if lo < hi {
        for i in 0..PICTURE_GRID {
            let risk = lo * (hi / lo).powf(i as f64 / (PICTURE_GRID - 1) as f64);
            let rows = frontier::frontier(
                &trace.values,
                &replayed.config,
                replayed.scored_from,
                replayed.oracle_cost,
                FrontierOptions {
                    risk_percent: risk,
                    max_actions,
                },
            );
            for row in rows {
                if let Some((_, curve)) = families.iter_mut().find(|(f, _)| *f == row.family) {
                    curve.push((row.scores.tau_u, row.cost_vs_oracle));
                }
            }
        }
    }
    for (_, curve) in &mut families {
        curve.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Ok(SweepPicture {
        families,
        baselines,
    })
}

/// The lowest tau_U (%) the picture's log axis shows: a point never short (0) is drawn there.
pub const PICTURE_TAU_FLOOR: f64 = 0.01;

/// The sweep as an SVG: cost against tau_U, ebb's modes at each risk asked (with the band
/// that counts as calibrated), the families tuned in hindsight, and the baselines.
pub fn render_sweep(title: &str, report: &SweepReport, picture: &SweepPicture) -> String {
    use super::plot::{Band, XySeries, render_xy};
    let mut series = Vec::new();
    for (policy, color, what) in [
        ("ebb", "#d62728", "ebb (Direct)"),
        ("ebb-hpa", "#ff7f0e", "ebb-hpa (Hpa)"),
    ] {
        let rows: Vec<&SweepRow> = report.rows.iter().filter(|r| r.policy == policy).collect();
        if rows.is_empty() {
            continue;
        }
        series.push(XySeries {
            label: what.to_string(),
            color,
            points: rows
                .iter()
                .map(|r| (r.tau_u_percent, r.cost_vs_oracle))
                .collect(),
            line: true,
            notes: rows
                .iter()
                .map(|r| format!("{} %", r.risk_percent))
                .collect(),
        });
    }
    for (family, curve) in &picture.families {
        let color = match family {
            Family::HeldHeadroom => "#1f77b4",
            Family::HeldNoise => "#17becf",
            Family::Clairvoyant => "#7f7f7f",
        };
        series.push(XySeries {
            label: format!("{} (hindsight)", family.label()),
            color,
            points: curve.clone(),
            line: true,
            notes: Vec::new(),
        });
    }
    for ((policy, tau_u, cost), color) in picture.baselines.iter().zip(["#9467bd", "#8c564b"]) {
        series.push(XySeries {
            label: policy.clone(),
            color,
            points: vec![(*tau_u, *cost)],
            line: false,
            notes: vec![policy.clone()],
        });
    }
    let mut risks: Vec<f64> = report.rows.iter().map(|r| r.risk_percent).collect();
    risks.sort_by(f64::total_cmp);
    risks.dedup();
    let (lo, hi) = CALIBRATION_BAND;
    let bands: Vec<Band> = risks
        .iter()
        .map(|&r| Band {
            from: lo * r,
            to: hi * r,
            label: format!("{r} %"),
        })
        .collect();
    for s in &mut series {
        for p in &mut s.points {
            p.0 = p.0.max(PICTURE_TAU_FLOOR);
        }
    }
    let mut heading = format!("{title}: cost against tau_U; shaded: calibrated for the risk asked");
    if let Some(note) = super::calibration_note(report.history_days) {
        heading = format!("{heading} ({note})");
    }
    render_xy(
        &heading,
        &format!("tau_U: steps short of capacity, % (log; 0 drawn at {PICTURE_TAU_FLOOR})"),
        "cost / oracle's",
        &series,
        &bands,
    )
}

/// The sweep as an aligned text table.
pub fn format_sweep(report: &SweepReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let (lo, hi) = CALIBRATION_BAND;
    let _ = writeln!(
        out,
        "risk asked vs tau_U got (calibrated: within [{lo} r, {hi} r]); cost vs the cheapest \
         causal family tuned in hindsight to the same tau_U{}, and the clairvoyant floor",
        report
            .max_actions
            .map(|a| format!(" with at most {a} actions"))
            .unwrap_or_default()
    );
    if let Some(note) = super::calibration_note(report.history_days) {
        let _ = writeln!(out, "{note}");
    }
    let _ = writeln!(
        out,
        "{:<8} {:>7} {:>8} {:>10} {:>11} {:>8} {:>13} {:>9} {:>11} {:>11}",
        "policy",
        "risk%",
        "tau_U%",
        "calibrated",
        "cost/oracle",
        "actions",
        "frontier",
        "its cost",
        "vs frontier",
        "clairvoyant"
    );
    for r in &report.rows {
        let _ = writeln!(
            out,
            "{:<8} {:>7.2} {:>8.3} {:>10} {:>11.3} {:>8} {:>13} {:>9} {:>11} {:>11}",
            r.policy,
            r.risk_percent,
            r.tau_u_percent,
            if r.calibrated { "yes" } else { "no" },
            r.cost_vs_oracle,
            r.actions,
            r.frontier_family.map_or("-", Family::label),
            r.frontier_cost_vs_oracle
                .map_or("-".into(), |c| format!("{c:.3}")),
            r.vs_frontier.map_or("-".into(), |v| format!("{v:.3}")),
            r.clairvoyant_cost_vs_oracle
                .map_or("-".into(), |c| format!("{c:.3}")),
        );
    }
    // A row short more often than asked says how often the bound held the headroom (the
    // lines start with "note": the table's rows are read by position).
    for r in &report.rows {
        if let Some(share) = r.at_max_headroom_percent.filter(|&s| s > 0.0)
            && r.tau_u_percent > hi * r.risk_percent
        {
            let _ = writeln!(
                out,
                "note: {} at {} %: in {share:.1} % of its decisions the headroom wanted more \
                 than maxHeadroom and was held at it (spec.adaptive.maxHeadroom bounds what \
                 the risk can buy)",
                r.policy, r.risk_percent
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::synthetic::{self, Shape};

    fn options(policies: &[&str]) -> BacktestOptions {
        BacktestOptions {
            policies: policies.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        }
    }

    /// A higher risk asked buys a cheaper policy that falls short more often, in both modes;
    /// each row's frontier is tuned to the tau_U the row got.
    #[test]
    fn a_higher_risk_is_cheaper_and_falls_short_more_often_in_both_modes() {
        let trace = synthetic::generate(Shape::Daily);
        let report = risk_sweep(&trace, &options(&SWEPT), &[0.1, 5.0], None).unwrap();
        assert_eq!(report.rows.len(), 4);
        for policy in SWEPT {
            let rows: Vec<&SweepRow> = report.rows.iter().filter(|r| r.policy == policy).collect();
            let (low, high) = (rows[0], rows[1]);
            assert_eq!((low.risk_percent, high.risk_percent), (0.1, 5.0));
            assert!(
                high.cost_vs_oracle < low.cost_vs_oracle,
                "{policy}: {low:?} {high:?}"
            );
            assert!(high.tau_u_percent > low.tau_u_percent, "{policy}");
            for r in rows {
                let (lo, hi) = CALIBRATION_BAND;
                assert_eq!(
                    r.calibrated,
                    r.tau_u_percent >= lo * r.risk_percent
                        && r.tau_u_percent <= hi * r.risk_percent
                );
                let (Some(f), Some(v)) = (r.frontier_cost_vs_oracle, r.vs_frontier) else {
                    panic!("{policy}: no family met tau_U {}", r.tau_u_percent);
                };
                assert!((v - r.cost_vs_oracle / f).abs() < 1e-12);
                assert_ne!(r.frontier_family, Some(Family::Clairvoyant));
                assert!(r.clairvoyant_cost_vs_oracle.is_some(), "{r:?}");
            }
        }
        let table = format_sweep(&report);
        let short = report.history_days < 14.0;
        assert_eq!(table.contains("not calibrated"), short, "{table}");
        assert_eq!(table.lines().count(), 2 + 4 + usize::from(short), "{table}");
    }

    /// A risk that needs more headroom than `maxHeadroom` allows is not met, and the sweep
    /// says the bound is why.
    #[test]
    fn a_risk_beyond_the_headroom_bound_says_so() {
        let trace = synthetic::generate(Shape::Daily);
        let mut opts = options(&["ebb"]);
        let free = risk_sweep(&trace, &opts, &[0.1], None).unwrap();
        assert_eq!(free.rows[0].at_max_headroom_percent, Some(0.0), "{free:?}");
        assert!(!format_sweep(&free).contains("maxHeadroom"));
        opts.adaptive.max_headroom = 0.01;
        let bound = risk_sweep(&trace, &opts, &[0.1], None).unwrap();
        let row = &bound.rows[0];
        assert!(
            !row.calibrated && row.tau_u_percent > free.rows[0].tau_u_percent,
            "{row:?}"
        );
        assert!(row.at_max_headroom_percent.unwrap() > 50.0, "{row:?}");
        let table = format_sweep(&bound);
        assert!(
            table.contains("note: ebb at 0.1 %: in ") && table.contains("held at it"),
            "{table}"
        );
    }

    /// Below the history the risk is calibrated from, the sweep says so rather than pretend.
    #[test]
    fn a_short_history_is_called_not_calibrated() {
        let mut trace = synthetic::generate(Shape::Daily);
        let full = risk_sweep(&trace, &options(&["ebb"]), &[0.5], None).unwrap();
        trace.values.truncate(trace.values.len() / 4);
        let short = risk_sweep(&trace, &options(&["ebb"]), &[0.5], None).unwrap();
        assert!(
            (short.history_days * 4.0 - full.history_days).abs() < 0.1,
            "{} of {} days",
            short.history_days,
            full.history_days
        );
        let days = |r: &SweepReport| format!("spans {:.1} days", r.history_days);
        let table = format_sweep(&short);
        assert!(
            short.history_days < 14.0 && table.contains(&days(&short)),
            "{table}"
        );
        assert!(table.contains("not calibrated"), "{table}");
        // The replay's table says it too, above ebb's rows only.
        let table = |policies: &[&str]| {
            let report = crate::backtest::run_backtest(&trace, &options(policies)).unwrap();
            crate::backtest::format_table(&report)
        };
        assert!(table(&["oracle", "ebb"]).contains(&days(&short)));
        assert!(!table(&["oracle", "hpa"]).contains("not calibrated"));
    }

    /// The picture puts ebb's rows beside the families' curves and the baselines: each curve
    /// gets cheaper as the tau_U it may reach grows, and no causal family beats the clairvoyant
    /// one at the same tau_U by much.
    #[test]
    fn the_picture_draws_ebb_beside_the_families_and_the_baselines() {
        let mut trace = synthetic::generate(Shape::Daily);
        trace.values.truncate(3 * 1440);
        let opts = options(&SWEPT);
        let report = risk_sweep(&trace, &opts, &[0.5, 2.0], None).unwrap();
        let picture = picture(&trace, &opts, &report, None).unwrap();
        let names: Vec<&str> = picture.baselines.iter().map(|b| b.0.as_str()).collect();
        assert_eq!(names, PICTURE_BASELINES);
        for (family, curve) in &picture.families {
            assert!(curve.len() >= PICTURE_GRID / 2, "{family:?}: {curve:?}");
            for pair in curve.windows(2) {
                assert!(pair[0].0 <= pair[1].0, "{family:?} sorted by tau_U");
                assert!(
                    pair[1].1 <= pair[0].1 + 1e-9,
                    "{family:?}: more risk allowed never costs more: {curve:?}"
                );
            }
        }
        let svg = render_sweep("daily", &report, &picture);
        for label in [
            "ebb (Direct)",
            "ebb-hpa (Hpa)",
            "held+H (hindsight)",
            "held+k*noise (hindsight)",
            "clairvoyant (hindsight)",
            ">hpa<",
            ">kpa<",
            ">0.5 %<",
            ">2 %<",
            "not calibrated",
        ] {
            assert!(svg.contains(label), "{label} missing");
        }
        let circles = svg.matches("<circle").count();
        let curve_points: usize = picture.families.iter().map(|(_, c)| c.len()).sum();
        assert_eq!(circles, report.rows.len() + curve_points + 2);
    }

    #[test]
    fn a_sweep_replays_ebb_only_and_takes_risks_in_percent() {
        let trace = synthetic::generate(Shape::Flat);
        for (policies, risks, says) in [
            (&["ebb", "hpa"][..], &[0.5][..], "not hpa"),
            (&["ebb"][..], &[][..], "no risk"),
            (&["ebb"][..], &[0.0][..], "0 is not a risk"),
            (&["ebb"][..], &[60.0][..], "60 is not a risk"),
        ] {
            let e = risk_sweep(&trace, &options(policies), risks, None).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
