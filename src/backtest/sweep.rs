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
