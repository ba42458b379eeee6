//! `ebb backtest`: replay a recorded load series through policies as
//! `shared/reference/backtest-protocol.md` defines, and score them with the SPEC RG elasticity
//! metrics. The policies are the engine's own ([`crate::engine::baseline`]); nothing here
//! decides, it only reads, replays, scores and writes.

pub mod frontier;
pub mod machine;
pub mod metrics;
pub mod plot;
pub mod prometheus;
pub mod queue;
pub mod replay;
pub mod sweep;
pub mod synthetic;
pub mod trace;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::crd::ScaledTarget;
use crate::engine::adaptive::{AdaptiveConfig, AdaptiveError};
use crate::engine::baseline::{self, HpaBaseline, HpaEngineBaseline, KpaBaseline, OracleBaseline};
use crate::engine::policy::ReplayPolicy;
use crate::engine::slo::SloConfig;
use crate::engine::target::Mode;
use frontier::{Family, FrontierOptions, FrontierRow};
use metrics::Elasticity;
use replay::{Replay, ReplayConfig};
use trace::{Trace, TraceError, TraceOptions};

/// Errors of the backtest layer.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The trace could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A policy name that is not known.
    #[error("unknown policy {0:?} (known: {known}, all)", known = POLICY_NAMES.join(", "))]
    UnknownPolicy(String),
    /// The trace has no known value to derive capacity and bounds from.
    #[error("the trace has no known value")]
    NoData,
    /// A flag value that cannot be used.
    #[error("invalid {flag}: {message}")]
    InvalidArg {
        /// The flag.
        flag: &'static str,
        /// Why.
        message: String,
    },
    /// The adaptive configuration is invalid.
    #[error(transparent)]
    Adaptive(#[from] AdaptiveError),
    /// The adaptive configuration file could not be read or parsed.
    #[error("{path}: {message}")]
    AdaptiveFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The Prometheus range query failed or returned something other than one series.
    #[error("prometheus {url}: {message}")]
    Prometheus {
        /// The server.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// An output file could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Every policy `--policy` knows, in table order: the baselines, then ebb's own.
pub const POLICY_NAMES: [&str; 6] = [
    baseline::NAMES[0],
    baseline::NAMES[1],
    baseline::NAMES[2],
    baseline::NAMES[3],
    "ebb",
    "ebb-hpa",
];

/// Result alias of the backtest layer.
pub type Result<T> = std::result::Result<T, BacktestError>;

/// Output format of `ebb backtest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text table.
    Table,
    /// One JSON document.
    Json,
}

/// `ebb backtest`: replay a recorded load series through policies and score them.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["trace", "synthetic", "prometheus"])))]
pub struct BacktestArgs {
    /// CSV with a timestamp column and a value column (e.g. ../shared/traces/worldcup98-requests-per-minute.csv).
    #[arg(long, env = "EBB_BACKTEST_TRACE")]
    pub trace: Option<PathBuf>,
    /// A synthetic week of minutes instead of a trace (see docs/adaptive.md).
    #[arg(long, value_enum)]
    pub synthetic: Option<synthetic::Shape>,
    /// Read the series from this Prometheus server instead (with --query, --start, --end, --step).
    #[arg(long, value_name = "URL", requires_all = ["query", "start", "end"])]
    pub prometheus: Option<String>,
    /// PromQL returning one series (aggregate with sum(...)).
    #[arg(long, requires = "prometheus")]
    pub query: Option<String>,
    /// Start of the range: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or Unix seconds.
    #[arg(long, requires = "prometheus")]
    pub start: Option<String>,
    /// End of the range (inclusive), same formats.
    #[arg(long, requires = "prometheus")]
    pub end: Option<String>,
    /// Step of the range query in seconds.
    #[arg(long, default_value_t = 60, requires = "prometheus")]
    pub step: i64,
    /// Policies to replay: oracle, hpa, kpa, hpa-engine, ebb (mode Direct), ebb-hpa (mode Hpa:
    /// through a modelled HPA), a comma list, or all.
    #[arg(long, default_value = "all")]
    pub policy: String,
    /// Load one pod serves per step (default: median load / 10).
    #[arg(long)]
    pub capacity: Option<f64>,
    /// Steps before an added pod is ready (default: 1 for steps up to a minute, else 0).
    #[arg(long)]
    pub startup_delay: Option<usize>,
    /// The per-pod target every policy is configured with (default: the capacity `c`): a
    /// static target set too high or too low, while demand still counts in `c`.
    #[arg(long)]
    pub target_per_pod: Option<f64>,
    /// The `ebb` policy learns its per-pod target from an SLO signal: each step's utilization
    /// of the ready pods' true capacity, objective 1 (docs/adaptive.md, rule 4).
    #[arg(long)]
    pub slo: bool,
    /// Score only the last N days (the replay still runs over the whole trace).
    #[arg(long)]
    pub last_days: Option<f64>,
    /// Write each policy's decisions as CSV `step,desired` (several policies: one FILE.POLICY.csv each).
    #[arg(long, value_name = "FILE")]
    pub decisions: Option<PathBuf>,
    /// Draw demand, supply and decisions as SVG (several policies: one FILE.POLICY.svg each).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Replay on a coarser grid: sum the load into steps of this many seconds (a multiple of
    /// the trace's step, e.g. 3600 for hours; the protocol's startup delay is then 0 steps
    /// for steps over a minute).
    #[arg(long, value_name = "SECONDS")]
    pub aggregate: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Timestamp column (name or 0-based index).
    #[arg(long)]
    pub time_column: Option<String>,
    /// Value column (name or 0-based index).
    #[arg(long)]
    pub value_column: Option<String>,
    /// The `ebb` policy's adaptive configuration: a YAML or JSON file holding either a
    /// ScaledTarget (its `spec.adaptive` is used) or the adaptive section alone. The replay's
    /// startup delay overrides its `startupDelaySeconds`.
    #[arg(long, value_name = "FILE")]
    pub adaptive: Option<PathBuf>,
    /// The ScaledTarget to replay (YAML or JSON, as it will be applied): `ebb` and `ebb-hpa`
    /// decide with its bounds, behavior, targets, adaptive, fallback; the trace feeds the
    /// metric `--metric` (default: the first). Its bounds and the metric's AverageValue
    /// target also configure the other policies.
    #[arg(long, value_name = "FILE", conflicts_with = "adaptive")]
    pub scaledtarget: Option<PathBuf>,
    /// The ScaledTarget's metric the trace feeds.
    #[arg(long, requires = "scaledtarget")]
    pub metric: Option<String>,
    /// Also tune simple reference policies in hindsight to `--risk` and print the cheapest of
    /// each family (a yardstick for what a goal asks; see docs/adaptive.md).
    #[arg(long)]
    pub frontier: bool,
    /// tau_U in % the frontier's families are tuned to.
    #[arg(long, default_value_t = 0.5, requires = "frontier")]
    pub risk: f64,
    /// Frontier rows with more scaling actions than this are left out (with --frontier or
    /// --risk-sweep).
    #[arg(long)]
    pub max_actions: Option<u64>,
    /// Replay ebb (modes Direct and Hpa, or the ones --policy names) at each of these risks
    /// (`adaptive.underProvisionRisk`, in %, e.g. `0.1,0.5,2`) and print, for each, the tau_U
    /// got, whether it is calibrated, the cost, and the cheapest reference family tuned in
    /// hindsight to the same tau_U (docs/adaptive.md, "Calibration"). With `--plot FILE.svg`,
    /// also draws cost against tau_U: ebb at each risk, the families tuned in hindsight over
    /// the range, hpa and kpa.
    #[arg(
        long,
        value_name = "PCTS",
        value_delimiter = ',',
        conflicts_with_all = ["frontier", "queue", "decisions"]
    )]
    pub risk_sweep: Option<Vec<f64>>,
    /// Replay the load as the arrivals into a queue served at `c` per ready pod, and score
    /// ebb's DrainTime target beside KEDA-style QueueLength and a rate target (docs/queues.md).
    #[arg(long, conflicts_with_all = ["scaledtarget", "frontier", "slo"])]
    pub queue: bool,
    /// `--queue`: any backlog should be gone within this many seconds (default: five steps).
    #[arg(long, value_name = "SECONDS", requires = "queue")]
    pub drain_seconds: Option<f64>,
}

/// What to replay and how to score it.
#[derive(Debug, Clone, Default)]
pub struct BacktestOptions {
    /// Policy names, in order.
    pub policies: Vec<String>,
    /// Override of `c`.
    pub capacity: Option<f64>,
    /// Override of `S`.
    pub startup_delay: Option<usize>,
    /// The policies' per-pod target, if not `c`.
    pub target_per_pod: Option<f64>,
    /// The `ebb` policy also learns its per-pod target from this SLO (objective on the
    /// utilization of the pods' true capacity).
    pub slo: Option<SloConfig>,
    /// Score only the last N days.
    pub last_days: Option<f64>,
    /// Configuration of the `ebb` policies (without a ScaledTarget).
    pub adaptive: AdaptiveConfig,
    /// The ScaledTarget `ebb` and `ebb-hpa` replay, and its metric fed by the trace.
    pub scaled_target: Option<(ScaledTarget, Option<String>)>,
    /// Tune the reference families too.
    pub frontier: Option<FrontierOptions>,
}

/// A policy's replay is starting (for progress lines on long traces).
#[derive(Debug, Clone, Copy)]
pub struct ReplayStarted<'a> {
    pub policy: &'a str,
    /// 0-based position among the policies asked for.
    pub index: usize,
    pub of: usize,
    /// Steps in the trace.
    pub steps: usize,
}

/// One policy's replay and scores.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    /// Policy name.
    pub policy: String,
    /// Its scores.
    #[serde(flatten)]
    pub scores: Elasticity,
    /// Its cost divided by the oracle's.
    pub cost_vs_oracle: f64,
    /// ebb's policies: decisions at which the learned headroom was held at `maxHeadroom`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decisions_at_max_headroom: Option<u64>,
    /// Its decisions.
    #[serde(skip)]
    pub replay: Replay,
}

/// Everything a backtest produced.
#[derive(Debug, Clone, Serialize)]
pub struct BacktestReport {
    /// Capacity, delay, bounds and step.
    pub config: ReplayConfig,
    /// Grid steps in the trace.
    pub steps: usize,
    /// Missing grid steps.
    pub missing: usize,
    /// First scored step.
    pub scored_from: usize,
    /// One entry per policy.
    pub results: Vec<PolicyResult>,
    /// The oracle's cost (ready pod-steps), which `cost_vs_oracle` divides by.
    pub oracle_cost: u64,
    /// The SLO the `ebb` policy learned its per-pod target from (`--slo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloConfig>,
    /// The reference families tuned in hindsight (with `--frontier`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontier: Option<FrontierReport>,
    /// Demand per step (for plots).
    #[serde(skip)]
    pub demand: Vec<Option<u32>>,
}

/// The frontier's options and rows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontierReport {
    /// tau_U the families were tuned to, in %.
    pub risk_percent: f64,
    /// The action budget, if any.
    pub max_actions: Option<u64>,
    /// The cheapest row of each family that has one.
    pub rows: Vec<FrontierRow>,
}

/// Expand `--policy` (comma list, `all`) into known names.
pub fn parse_policies(spec: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let names: Vec<&str> = if name.eq_ignore_ascii_case("all") {
            POLICY_NAMES.to_vec()
        } else if let Some(n) = POLICY_NAMES.iter().find(|n| n.eq_ignore_ascii_case(name)) {
            vec![*n]
        } else {
            return Err(BacktestError::UnknownPolicy(name.to_string()));
        };
        for n in names {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_string());
            }
        }
    }
    if out.is_empty() {
        return Err(BacktestError::UnknownPolicy(spec.to_string()));
    }
    Ok(out)
}

/// A fresh policy by name.
pub fn make_policy(
    name: &str,
    demand: &[Option<u32>],
    cfg: &ReplayConfig,
    opts: &BacktestOptions,
) -> Result<Box<dyn ReplayPolicy>> {
    let ebb = |mode: Mode| -> Result<Box<dyn ReplayPolicy>> {
        let spec = match &opts.scaled_target {
            Some((st, metric)) => machine::scaled_target_spec(st, metric.as_deref(), mode)
                .map_err(|message| BacktestError::InvalidArg {
                    flag: "--scaledtarget",
                    message,
                })?,
            None => machine::protocol_spec(mode, cfg, &opts.adaptive, opts.slo.as_ref()),
        };
        Ok(Box::new(machine::MachinePolicy::new(spec, cfg)))
    };
    Ok(match name {
        "ebb" => ebb(Mode::Direct)?,
        "ebb-hpa" => ebb(Mode::Hpa)?,
        "oracle" => Box::new(OracleBaseline::new(demand.to_vec(), cfg.startup_delay)),
        "hpa" => Box::new(HpaBaseline::default()),
        "kpa" => Box::new(KpaBaseline),
        "hpa-engine" => Box::new(HpaEngineBaseline::default()),
        _ => return Err(BacktestError::UnknownPolicy(name.to_string())),
    })
}

/// Replay and score the trace.
pub fn run_backtest(trace: &Trace, opts: &BacktestOptions) -> Result<BacktestReport> {
    run_backtest_with_progress(trace, opts, &mut |_| {})
}

/// [`run_backtest`], telling `progress` when each policy's replay starts.
pub fn run_backtest_with_progress(
    trace: &Trace,
    opts: &BacktestOptions,
    progress: &mut dyn FnMut(ReplayStarted<'_>),
) -> Result<BacktestReport> {
    if let Some(c) = opts.capacity
        && !(c.is_finite() && c > 0.0)
    {
        return Err(BacktestError::InvalidArg {
            flag: "--capacity",
            message: format!("{c} is not a positive number"),
        });
    }
    let mut cfg = ReplayConfig::for_series(
        &trace.values,
        trace.step_seconds as f64,
        opts.capacity,
        opts.startup_delay,
    )
    .ok_or(BacktestError::NoData)?;
    cfg.start_unix = trace.start;
    opts.adaptive.validate()?;
    if let Some(t) = opts.target_per_pod {
        if !(t.is_finite() && t > 0.0) {
            return Err(BacktestError::InvalidArg {
                flag: "--target-per-pod",
                message: format!("{t} is not a positive number"),
            });
        }
        cfg.target_per_pod = t;
    }
    if let Some((st, metric)) = &opts.scaled_target {
        // The ScaledTarget's bounds and per-pod target configure every policy alike.
        let spec = machine::scaled_target_spec(st, metric.as_deref(), Mode::Direct).map_err(
            |message| BacktestError::InvalidArg {
                flag: "--scaledtarget",
                message,
            },
        )?;
        // A target that scales to zero may be replayed at zero (the machine owns 0 <-> 1).
        cfg.min_replicas = if spec.idle.is_some() {
            0
        } else {
            spec.hpa.min_replicas.max(0) as u32
        };
        cfg.max_replicas = spec.hpa.max_replicas.max(1) as u32;
        if let (Ok(crate::engine::Target::AverageValue(t)), None) =
            (&spec.metrics[0].target, opts.target_per_pod)
        {
            cfg.target_per_pod = *t as f64 / 1000.0;
        }
    }
    if let Some(slo) = &opts.slo {
        slo.validate()
            .map_err(|message| BacktestError::InvalidArg {
                flag: "--slo",
                message,
            })?;
    }
    if let Some(f) = opts.frontier
        && !(f.risk_percent.is_finite() && (0.0..100.0).contains(&f.risk_percent))
    {
        return Err(BacktestError::InvalidArg {
            flag: "--risk",
            message: format!("{} is not a percentage in [0, 100)", f.risk_percent),
        });
    }
    let demand = cfg.demand(&trace.values);
    let scored_from = match opts.last_days {
        None => 0,
        Some(days) if days.is_finite() && days > 0.0 => {
            let steps = (days * 86_400.0 / trace.step_seconds as f64).round() as usize;
            trace.len().saturating_sub(steps)
        }
        Some(days) => {
            return Err(BacktestError::InvalidArg {
                flag: "--last-days",
                message: format!("{days} is not a positive number of days"),
            });
        }
    };
    let run = |name: &str| -> Result<(Replay, Elasticity, Option<u64>)> {
        let mut policy = make_policy(name, &demand, &cfg, opts)?;
        let r = replay::replay(&trace.values, &cfg, policy.as_mut());
        let e = r.score(&demand, cfg.startup_delay, scored_from);
        Ok((r, e, policy.decisions_at_max_headroom()))
    };
    let mut results = Vec::new();
    for (index, name) in opts.policies.iter().enumerate() {
        progress(ReplayStarted {
            policy: name,
            index,
            of: opts.policies.len(),
            steps: trace.len(),
        });
        let (replay, scores, decisions_at_max_headroom) = run(name)?;
        results.push(PolicyResult {
            policy: name.clone(),
            cost_vs_oracle: f64::NAN,
            decisions_at_max_headroom,
            scores,
            replay,
        });
    }
    // cost/oracle needs the oracle's cost even when its row was not asked for.
    let oracle_cost = match results.iter().find(|r| r.policy == "oracle") {
        Some(r) => r.scores.cost,
        None => run("oracle")?.1.cost,
    };
    for r in &mut results {
        r.cost_vs_oracle = r.scores.cost as f64 / oracle_cost.max(1) as f64;
    }
    let frontier = opts.frontier.map(|f| FrontierReport {
        risk_percent: f.risk_percent,
        max_actions: f.max_actions,
        rows: frontier::frontier(&trace.values, &cfg, scored_from, oracle_cost, f),
    });
    Ok(BacktestReport {
        config: cfg,
        steps: trace.len(),
        missing: trace.missing(),
        scored_from,
        results,
        oracle_cost,
        slo: opts.slo.clone(),
        frontier,
        demand,
    })
}

/// What a table of ebb's figures says first when the trace is shorter than the history ebb's
/// risk is calibrated from (`engine::adaptive::CALIBRATION_HISTORY`).
fn calibration_note(history_days: f64) -> Option<String> {
    let days = crate::engine::adaptive::CALIBRATION_HISTORY as f64 / 86_400_000.0;
    (history_days < days).then(|| {
        format!(
            "not calibrated: the trace spans {history_days:.1} days of history, and ebb's risk \
             is calibrated from {days:.0} on (its status says riskCalibrated: false until then)"
        )
    })
}

/// The results as an aligned text table with a header line.
pub fn format_table(report: &BacktestReport) -> String {
    let c = &report.config;
    let mut out = String::new();
    let scored = report.results.first().map_or(0, |r| r.scores.steps);
    let _ = writeln!(
        out,
        "c = {:.1} per step per pod, S = {} step(s), bounds [{}, {}], step {} s, {} steps ({} missing), scored {} steps from step {}",
        c.capacity,
        c.startup_delay,
        c.min_replicas,
        c.max_replicas,
        c.step_seconds,
        report.steps,
        report.missing,
        scored,
        report.scored_from
    );
    if c.target_per_pod != c.capacity {
        let _ = writeln!(
            out,
            "every policy is configured with a target of {:.1} per pod ({:.2}c)",
            c.target_per_pod,
            c.target_per_pod / c.capacity
        );
    }
    if report.slo.is_some() {
        let _ = writeln!(
            out,
            "ebb learns its per-pod target from the SLO signal (utilization of the ready pods, objective 1)"
        );
    }
    let history_days = report.steps as f64 * c.step_seconds / 86_400.0;
    if report.results.iter().any(|r| r.policy.starts_with("ebb"))
        && let Some(note) = calibration_note(history_days)
    {
        let _ = writeln!(out, "{note}");
    }
    let w = report
        .results
        .iter()
        .map(|r| r.policy.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let _ = writeln!(
        out,
        "{:<w$} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>12} {:>11} {:>8} {:>9}",
        "policy",
        "tau_U%",
        "theta_U%",
        "tau_O%",
        "theta_O%",
        "A_U",
        "A_O",
        "cost",
        "cost/oracle",
        "actions",
        "reversals"
    );
    for r in &report.results {
        let e = &r.scores;
        let _ = writeln!(
            out,
            "{:<w$} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10} {:>10} {:>12} {:>11.3} {:>8} {:>9}",
            r.policy,
            e.tau_u,
            e.theta_u,
            e.tau_o,
            e.theta_o,
            e.a_u,
            e.a_o,
            e.cost,
            r.cost_vs_oracle,
            e.actions,
            e.reversals
        );
    }
    if let Some(f) = &report.frontier {
        let budget = f
            .max_actions
            .map_or(String::new(), |m| format!(", at most {m} actions"));
        let _ = writeln!(
            out,
            "\nreference families tuned in hindsight to tau_U <= {:.2} %{budget} (not causal: \
             each parameter is chosen knowing the whole trace)",
            f.risk_percent
        );
        let _ = writeln!(
            out,
            "{:<13} {:>7} {:>9} {:>10} {:>8} {:>11} {:>8}",
            "family", "window", "k", "headroom%", "tau_U%", "cost/oracle", "actions"
        );
        for family in Family::ALL {
            match f.rows.iter().find(|r| r.family == family) {
                Some(r) => {
                    let _ = writeln!(
                        out,
                        "{:<13} {:>7} {:>9.4} {:>10.2} {:>8.2} {:>11.3} {:>8}",
                        family.label(),
                        r.window_steps.map_or("-".to_string(), |w| w.to_string()),
                        r.parameter,
                        r.mean_headroom_percent,
                        r.scores.tau_u,
                        r.cost_vs_oracle,
                        r.scores.actions
                    );
                }
                None => {
                    let within = if f.max_actions.is_some() {
                        " within the action budget"
                    } else {
                        ""
                    };
                    let _ = writeln!(out, "{:<13} (none meets the risk{within})", family.label());
                }
            }
        }
    }
    out
}

/// `FILE` for one policy, `FILE.<policy>.<ext>` when several share the flag.
fn output_path(base: &Path, policy: &str, several: bool) -> PathBuf {
    if !several {
        return base.to_path_buf();
    }
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy())
        .unwrap_or_default();
    let name = match base.extension() {
        Some(ext) => format!("{stem}.{policy}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{policy}"),
    };
    base.with_file_name(name)
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| BacktestError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Read an adaptive configuration from YAML or JSON: a ScaledTarget (`spec.adaptive`) or the
/// adaptive section alone. Unknown fields are errors, so a typo does not silently fall back.
pub fn read_adaptive_config(path: &Path) -> Result<AdaptiveConfig> {
    let fail = |message: String| BacktestError::AdaptiveFile {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let section = match doc.get("spec") {
        Some(spec) => spec
            .get("adaptive")
            .cloned()
            .ok_or_else(|| fail("the ScaledTarget has no spec.adaptive".to_string()))?,
        None => doc,
    };
    serde_yaml::from_value(section).map_err(|e| fail(e.to_string()))
}

/// Read a ScaledTarget from YAML or JSON, checked as the API server's schema would type it.
pub fn read_scaled_target(path: &Path) -> Result<ScaledTarget> {
    let fail = |message: String| BacktestError::AdaptiveFile {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let st: ScaledTarget = serde_yaml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    if let Some(a) = &st.spec.adaptive {
        a.validate()?;
    }
    Ok(st)
}

/// The decisions as CSV `step,desired`.
pub fn decisions_csv(replay: &Replay) -> String {
    let mut out = String::with_capacity(replay.decisions.len() * 10);
    out.push_str("step,desired\n");
    for (t, d) in replay.decisions.iter().enumerate() {
        let _ = writeln!(out, "{t},{d}");
    }
    out
}

/// `ebb backtest`: read, replay, print, and write the optional files.
/// `ebb backtest --queue`: every queue policy over the series, one table.
fn run_queue(
    series: &Trace,
    capacity: Option<f64>,
    startup_delay: Option<usize>,
    drain_seconds: Option<f64>,
    format: Format,
) -> anyhow::Result<()> {
    let load = &series.values;
    let step_seconds = series.step_seconds as f64;
    let cfg = ReplayConfig::for_series(load, step_seconds, capacity, startup_delay)
        .ok_or(BacktestError::NoData)?;
    let drain = drain_seconds.unwrap_or(5.0 * step_seconds);
    if !(drain.is_finite() && drain > 0.0) {
        return Err(BacktestError::InvalidArg {
            flag: "--drain-seconds",
            message: format!("{drain} is not a positive number of seconds"),
        }
        .into());
    }
    let scores: Vec<_> = queue::QUEUE_POLICIES
        .iter()
        .filter_map(|p| queue::replay_queue(load, &cfg, drain, p))
        .collect();
    match format {
        Format::Table => print!("{}", queue::format_queue_table(&scores, &cfg, drain)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&scores)?),
    }
    Ok(())
}

pub fn run(args: &BacktestArgs) -> anyhow::Result<()> {
    let BacktestArgs {
        trace,
        synthetic,
        prometheus,
        query,
        start,
        end,
        step,
        policy,
        capacity,
        startup_delay,
        target_per_pod,
        slo,
        last_days,
        decisions,
        plot,
        aggregate,
        format,
        time_column,
        value_column,
        adaptive,
        scaledtarget,
        metric,
        frontier,
        risk,
        max_actions,
        risk_sweep,
        queue,
        drain_seconds,
    } = args;
    let opts = TraceOptions {
        time_column: time_column.clone(),
        value_column: value_column.clone(),
    };
    // Flags first: a typo should not wait for a large trace to load.
    let policies = match risk_sweep {
        // The sweep replays ebb's modes: `all` (the default) means both.
        Some(_) if policy.eq_ignore_ascii_case("all") => {
            sweep::SWEPT.iter().map(|p| p.to_string()).collect()
        }
        _ => parse_policies(policy)?,
    };
    if max_actions.is_some() && !*frontier && risk_sweep.is_none() {
        return Err(BacktestError::InvalidArg {
            flag: "--max-actions",
            message: "applies to the frontier: give --frontier or --risk-sweep".into(),
        }
        .into());
    }
    let adaptive = match adaptive {
        Some(path) => read_adaptive_config(path)?,
        None => AdaptiveConfig::default(),
    };
    adaptive.validate()?;
    let scaled_target = match scaledtarget {
        Some(path) => Some((read_scaled_target(path)?, metric.clone())),
        None => None,
    };
    let (series, title) = if let Some(path) = trace {
        (trace::read_trace(path, &opts)?, path.display().to_string())
    } else if let Some(shape) = synthetic {
        let name = format!("synthetic {shape:?}");
        (synthetic::generate(*shape), name)
    } else {
        let time = |flag: &'static str, v: &Option<String>| {
            let v = v.as_deref().unwrap_or_default();
            trace::parse_time(v).ok_or_else(|| BacktestError::InvalidArg {
                flag,
                message: format!("{v:?} is not a timestamp"),
            })
        };
        let q = prometheus::RangeQuery {
            url: prometheus.clone().unwrap_or_default(),
            query: query.clone().unwrap_or_default(),
            start: time("--start", start)?,
            end: time("--end", end)?,
            step_seconds: *step,
        };
        let samples = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(prometheus::fetch(&q))?;
        let title = format!("{} {}", q.url, q.query);
        (
            prometheus::to_trace(&samples, q.start, q.end, q.step_seconds),
            title,
        )
    };
    let series = match aggregate {
        None => series,
        Some(seconds) => series
            .aggregate(*seconds)
            .ok_or_else(|| BacktestError::InvalidArg {
                flag: "--aggregate",
                message: format!(
                    "{seconds} is not a positive multiple of the trace's step ({} s)",
                    series.step_seconds
                ),
            })?,
    };
    if *queue {
        return run_queue(&series, *capacity, *startup_delay, *drain_seconds, *format);
    }
    let options = BacktestOptions {
        policies,
        capacity: *capacity,
        startup_delay: *startup_delay,
        target_per_pod: *target_per_pod,
        slo: slo.then(|| SloConfig::with_objective(1.0)),
        last_days: *last_days,
        adaptive,
        scaled_target,
        frontier: frontier.then_some(FrontierOptions {
            risk_percent: *risk,
            max_actions: *max_actions,
        }),
    };
    if let Some(risks) = risk_sweep {
        let report = sweep::risk_sweep(&series, &options, risks, *max_actions)?;
        match format {
            Format::Table => print!("{}", sweep::format_sweep(&report)),
            Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        }
        if let Some(path) = plot {
            let picture = sweep::picture(&series, &options, &report, *max_actions)?;
            write_file(path, &sweep::render_sweep(&title, &report, &picture))?;
        }
        return Ok(());
    }
    // Progress on standard error, where a terminal shows it; the report goes to standard output.
    let show_progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut started: Option<(String, std::time::Instant)> = None;
    let finish = |started: &mut Option<(String, std::time::Instant)>| {
        if let Some((policy, at)) = started.take() {
            eprintln!("  {policy}: {:.1} s", at.elapsed().as_secs_f64());
        }
    };
    let report = run_backtest_with_progress(&series, &options, &mut |p| {
        if show_progress {
            finish(&mut started);
            eprintln!(
                "[{}/{}] replaying {} over {} steps...",
                p.index + 1,
                p.of,
                p.policy,
                p.steps
            );
            started = Some((p.policy.to_string(), std::time::Instant::now()));
        }
    })?;
    finish(&mut started);
    match format {
        Format::Table => print!("{}", format_table(&report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    let several = report.results.len() > 1;
    for r in &report.results {
        if let Some(base) = decisions {
            write_file(
                &output_path(base, &r.policy, several),
                &decisions_csv(&r.replay),
            )?;
        }
        if let Some(base) = plot {
            let supply = r.replay.supply(report.config.startup_delay);
            let as_f = |v: &[u32]| v.iter().map(|&x| Some(x as f64)).collect();
            let svg = plot::render(
                &format!("{title}: {} policy", r.policy),
                &[
                    plot::Series {
                        label: "demand (pods)",
                        color: "#555555",
                        values: report.demand.iter().map(|d| d.map(f64::from)).collect(),
                    },
                    plot::Series {
                        label: "ready supply",
                        color: "#1f77b4",
                        values: as_f(&supply),
                    },
                    plot::Series {
                        label: "decisions",
                        color: "#d62728",
                        values: as_f(&r.replay.decisions),
                    },
                ],
            );
            write_file(&output_path(base, &r.policy, several), &svg)?;
        }
    }
    Ok(())
}
