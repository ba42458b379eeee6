//! The decision engine: pure functions and plain data. No I/O, no clock, no async: every function
//! takes the time it needs as an argument (`now`, milliseconds since any fixed epoch), so the
//! controller, the external metrics API and `ebb backtest` all run the very same code.
//!
//! - [`hpa`]: the Kubernetes HPA algorithm (per-metric proposals with tolerance, reconcile across
//!   metrics, the legacy and the behavior normalization paths), per target state in
//!   [`hpa::ScalingState`].
//! - [`policy`]: the step-wise interface the backtest replays ([`policy::ReplayPolicy`]).
//! - [`baseline`]: the comparison policies (`hpa`, `kpa`, `oracle`) on that interface.
//! - [`adaptive`]: thresholds learned from history (headroom, tolerance, scale-down window) and
//!   [`forecast`]: period detection and a seasonal forecast; [`learning`]: those rules per metric
//!   of one ScaledTarget.
//! - [`target`]: one ScaledTarget's decisions as a machine, stepped by the controller and the
//!   backtest alike; [`conditions`]: the names of its conditions and Events.

pub mod adaptive;
pub mod baseline;
pub mod conditions;
pub mod drain;
pub mod forecast;
pub mod formula;
pub mod hpa;
pub mod learning;
pub mod policy;
pub mod slo;
pub mod stall;
pub mod target;

/// Time as the engine sees it: milliseconds since an epoch the caller chooses (Unix time in
/// production, step * step length in a replay). Only differences matter.
pub type Millis = i64;

/// The default tolerance of the HPA controller (`--horizontal-pod-autoscaler-tolerance`).
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// The default downscale stabilization window of the HPA controller, in seconds.
pub const DEFAULT_DOWNSCALE_STABILIZATION_SECONDS: i32 = 300;

/// What a metric is compared against, as in the HPA v2 `MetricTarget`.
///
/// Quantities are in milli-units (`Quantity::MilliValue()`), as upstream computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The metric's total (sum of the returned items) against this value.
    Value(i64),
    /// The metric's total divided by the current replica count against this value.
    AverageValue(i64),
    /// Average utilization of the pods' requests, in percent (resource metrics).
    Utilization(i32),
}

/// Why a metric has no value this time. Never read as zero: a failing source is not no load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoData {
    /// The source answered with an error or timed out.
    SourceFailed,
    /// The source answered with no items (upstream: "no metrics returned from external metrics API").
    Empty,
    /// The last value is older than the caller accepts.
    Stale,
}

/// One metric's reading for this decision: a value in milli-units (for [`Target::Utilization`]:
/// the average utilization in whole percent, as upstream truncates it), or no data.
pub type Observation = Result<i64, NoData>;

/// A metric's total over the items a source returned, as upstream sums them (saturating at
/// `i64::MAX`); no items is no data, never zero.
pub fn total(items_milli: &[i64]) -> Observation {
    if items_milli.is_empty() {
        return Err(NoData::Empty);
    }
    Ok(items_milli.iter().fold(0i64, |a, &v| a.saturating_add(v)))
}

/// A metric as the engine sees it at one decision: its target and its reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSample {
    /// What the metric is compared against.
    pub target: Target,
    /// The reading, or why there is none.
    pub observation: Observation,
}

/// A rate-limit policy of one scaling direction (`HPAScalingPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// At most `value` pods added (or removed) within the last `period_seconds`.
    Pods {
        /// Pods per period.
        value: i32,
        /// Length of the period in seconds.
        period_seconds: i32,
    },
    /// At most `value` percent of the replicas at the period's start added (or removed).
    Percent {
        /// Percent per period.
        value: i32,
        /// Length of the period in seconds.
        period_seconds: i32,
    },
}

impl Policy {
    /// The policy's period in seconds.
    pub fn period_seconds(&self) -> i32 {
        match *self {
            Policy::Pods { period_seconds, .. } | Policy::Percent { period_seconds, .. } => {
                period_seconds
            }
        }
    }
}

/// How the policies of one direction combine (`selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    #[default]
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// Scaling rules of one direction (`HPAScalingRules`). `None` and empty fields take the
/// API server's defaults for that direction (see [`Behavior`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScalingRules {
    /// Stabilization window; `None`: 0 s for scale-up, the controller's 300 s for scale-down.
    pub stabilization_window_seconds: Option<i32>,
    /// How the policies combine; `None`: [`SelectPolicy::Max`].
    pub select_policy: Option<SelectPolicy>,
    /// Rate limits; empty: the direction's default policies.
    pub policies: Vec<Policy>,
    /// Per-direction tolerance (HPAConfigurableTolerance); `None`: the spec's global tolerance.
    pub tolerance: Option<f64>,
}

/// Default scale-up policies: 4 pods or 100 % per 15 s, whichever is more.
pub const DEFAULT_SCALE_UP_POLICIES: [Policy; 2] = [
    Policy::Pods {
        value: 4,
        period_seconds: 15,
    },
    Policy::Percent {
        value: 100,
        period_seconds: 15,
    },
];
/// Default scale-down policy: 100 % per 15 s (no rate limit in practice).
pub const DEFAULT_SCALE_DOWN_POLICIES: [Policy; 1] = [Policy::Percent {
    value: 100,
    period_seconds: 15,
}];

/// The HPA v2 `behavior` field. Present (even all default) selects the behavior path; absent
/// (`HpaSpec::behavior == None`) selects the legacy path.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Behavior {
    /// Rules when the recommendation is above the current count.
    pub scale_up: ScalingRules,
    /// Rules when the recommendation is below the current count.
    pub scale_down: ScalingRules,
}

/// The scaling direction a rule or event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Adding replicas.
    Up,
    /// Removing replicas.
    Down,
}

impl Behavior {
    /// The rules of one direction.
    pub fn rules(&self, dir: Direction) -> &ScalingRules {
        match dir {
            Direction::Up => &self.scale_up,
            Direction::Down => &self.scale_down,
        }
    }

    /// The effective policies of one direction (defaults when none are given).
    pub fn policies(&self, dir: Direction) -> &[Policy] {
        let rules = self.rules(dir);
        if !rules.policies.is_empty() {
            return &rules.policies;
        }
        match dir {
            Direction::Up => &DEFAULT_SCALE_UP_POLICIES,
            Direction::Down => &DEFAULT_SCALE_DOWN_POLICIES,
        }
    }

    /// The effective `selectPolicy` of one direction.
    pub fn select_policy(&self, dir: Direction) -> SelectPolicy {
        self.rules(dir).select_policy.unwrap_or_default()
    }

    /// The effective stabilization window of one direction, in seconds.
    pub fn stabilization_window_seconds(&self, dir: Direction, downscale_default: i32) -> i32 {
        let w = self.rules(dir).stabilization_window_seconds;
        match dir {
            Direction::Up => w.unwrap_or(0),
            Direction::Down => w.unwrap_or(downscale_default),
        }
        .max(0)
    }

    /// The longest policy period of one direction: older scale events no longer matter.
    pub fn longest_period_seconds(&self, dir: Direction) -> i32 {
        self.policies(dir)
            .iter()
            .map(Policy::period_seconds)
            .max()
            .unwrap_or(0)
    }
}

/// Condition reasons, with the exact strings upstream writes into HPA status conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionReason {
    // AbleToScale
    /// The stabilized recommendation equals the raw one.
    ReadyForNewScale,
    /// A lower recent recommendation held a scale-up back.
    ScaleUpStabilized,
    /// A higher recent recommendation held a scale-down back.
    ScaleDownStabilized,
    // ScalingActive
    /// At least one metric gave a usable proposal.
    ValidMetricFound,
    /// The target has 0 replicas while minReplicas is not 0: autoscaling is off.
    ScalingDisabled,
    /// An external metric could not be read.
    FailedGetExternalMetric,
    /// A resource metric could not be read.
    FailedGetResourceMetric,
    // ScalingLimited
    /// The result is the (stabilized) recommendation itself.
    DesiredWithinRange,
    /// Capped by maxReplicas.
    TooManyReplicas,
    /// Raised to minReplicas.
    TooFewReplicas,
    /// Capped by the scale-up rate.
    ScaleUpLimit,
    /// Held back by the scale-down rate.
    ScaleDownLimit,
}

impl ConditionReason {
    /// The upstream reason string.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ReadyForNewScale => "ReadyForNewScale",
            Self::ScaleUpStabilized => "ScaleUpStabilized",
            Self::ScaleDownStabilized => "ScaleDownStabilized",
            Self::ValidMetricFound => "ValidMetricFound",
            Self::ScalingDisabled => "ScalingDisabled",
            Self::FailedGetExternalMetric => "FailedGetExternalMetric",
            Self::FailedGetResourceMetric => "FailedGetResourceMetric",
            Self::DesiredWithinRange => "DesiredWithinRange",
            Self::TooManyReplicas => "TooManyReplicas",
            Self::TooFewReplicas => "TooFewReplicas",
            Self::ScaleUpLimit => "ScaleUpLimit",
            Self::ScaleDownLimit => "ScaleDownLimit",
        }
    }
}

impl std::fmt::Display for ConditionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one decision for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The replica count to set (equal to the current count when nothing changes).
    pub desired: i32,
    /// The headline reason: the limit that bound, else the stabilization that held, else
    /// `DesiredWithinRange`; on failure the failure (`FailedGetExternalMetric`, `ScalingDisabled`).
    pub reason: ConditionReason,
    /// Whether a rule (bounds or rate) changed the stabilized recommendation: the
    /// `ScalingLimited` condition's status.
    pub limited: bool,
    /// The `AbleToScale` reason (`ReadyForNewScale`, `ScaleUpStabilized`, `ScaleDownStabilized`).
    pub able_to_scale: ConditionReason,
    /// The `ScalingActive` reason (`ValidMetricFound` or the failure).
    pub scaling_active: ConditionReason,
    /// The `ScalingLimited` reason (`DesiredWithinRange` when not limited).
    pub scaling_limited: ConditionReason,
    /// The largest valid per-metric proposal before stabilization and limits, if any.
    pub proposal: Option<i32>,
    /// Index of the metric that gave `proposal`.
    pub metric_index: Option<usize>,
    /// When a stabilization window or a rate limit held this decision back: the earliest time
    /// it may change with no new observation (a record leaving its window or period). A
    /// controller may poll again then instead of waiting a full period.
    pub recheck_at: Option<Millis>,
}

impl Decision {
    /// Whether the decision changes the replica count.
    pub fn rescale(&self, current: i32) -> bool {
        self.desired != current
    }
}

/// `ceil(x - 1e-9)`: the backtest protocol's ceiling, so that float rounding at an exact
/// multiple does not add a pod.
pub fn ceil_eps(x: f64) -> f64 {
    (x - 1e-9).ceil()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_sums_saturating_and_empty_is_no_data() {
        assert_eq!(total(&[]), Err(NoData::Empty));
        assert_eq!(total(&[1500, 2500]), Ok(4000));
        assert_eq!(total(&[i64::MAX, 1]), Ok(i64::MAX));
    }

    #[test]
    fn reasons_are_the_upstream_strings() {
        assert_eq!(
            ConditionReason::ScaleDownStabilized.as_str(),
            "ScaleDownStabilized"
        );
        assert_eq!(
            ConditionReason::TooManyReplicas.to_string(),
            "TooManyReplicas"
        );
    }
}
