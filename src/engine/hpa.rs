//! The Kubernetes HPA algorithm, reproduced from `pkg/controller/podautoscaler` (horizontal.go,
//! replica_calculator.go) and checked against its table tests (`tests/engine_conformance.rs`).
//!
//! The entry point is [`decide`]: called once per poll of a target with the spec, the target's
//! [`ScalingState`], the replica counts, the metric samples and `now`, it returns a [`Decision`].
//! After the controller has applied a decision that changed the count, it calls
//! [`ScalingState::store_scale_event`], as upstream does after a successful `/scale` update:
//! the behavior path's rate limits count those events.
//!
//! ```
//! use ebb::engine::{hpa, Behavior, MetricSample, Target};
//! let spec = hpa::HpaSpec { min_replicas: 1, max_replicas: 10, behavior: Some(Box::new(Behavior::default())),
//!                           ..Default::default() };
//! let mut state = hpa::ScalingState::default();
//! let replicas = hpa::Replicas::all(2);
//! // 500 requests/s against 100 per pod: 5 pods wanted, within the default scale-up rate (2 -> 6).
//! let metrics = [MetricSample { target: Target::AverageValue(100_000), observation: Ok(500_000) }];
//! let d = hpa::decide(&spec, &mut state, replicas, &metrics, 0);
//! assert_eq!(d.desired, 5);
//! if d.rescale(replicas.spec) { state.store_scale_event(spec.behavior.as_deref(), 2, d.desired, 0); }
//! ```

use super::{
    Behavior, ConditionReason, DEFAULT_DOWNSCALE_STABILIZATION_SECONDS, DEFAULT_TOLERANCE,
    Decision, Direction, MetricSample, Millis, NoData, Policy, SelectPolicy, Target,
};

/// The HPA controller's sync period (`--horizontal-pod-autoscaler-sync-period`, default 15 s).
pub const SYNC_PERIOD_MS: Millis = 15_000;

/// Controller-wide settings (kube-controller-manager flags and constants).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ControllerConfig {
    /// Global tolerance (`--horizontal-pod-autoscaler-tolerance`).
    pub tolerance: f64,
    /// Downscale stabilization window in seconds (`--horizontal-pod-autoscaler-downscale-stabilization`).
    pub downscale_stabilization_seconds: i32,
    /// Legacy path: scale-up at most to `max(factor * current, minimum)` per decision.
    pub scale_up_limit_factor: f64,
    /// Legacy path: see `scale_up_limit_factor`.
    pub scale_up_limit_minimum: f64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            tolerance: DEFAULT_TOLERANCE,
            downscale_stabilization_seconds: DEFAULT_DOWNSCALE_STABILIZATION_SECONDS,
            scale_up_limit_factor: 2.0,
            scale_up_limit_minimum: 4.0,
        }
    }
}

impl ControllerConfig {
    /// The legacy scale-up limit of one decision taken every `interval` instead of every
    /// [`SYNC_PERIOD_MS`]: the per-sync limit compounded over the syncs the interval spans
    /// (`n = interval / 15 s`: from `x`, `max(2^n x, 2^(n-1) * 4)` with the defaults), never
    /// less than one sync's. The HPA's limit is a rate (at most double every sync); ebb
    /// deciding every minute under the per-sync limit would ramp up four times slower than the
    /// HPA it stands in for, and slower the longer its polling interval.
    pub fn over_interval(self, interval: Millis) -> Self {
        // Beyond 62 syncs (15.5 minutes) the limit is past any replica count already.
        let syncs = (interval as f64 / SYNC_PERIOD_MS as f64).clamp(1.0, 62.0);
        if syncs == 1.0 {
            return self;
        }
        let compounded = self.scale_up_limit_factor.powf(syncs);
        Self {
            scale_up_limit_factor: compounded,
            scale_up_limit_minimum: self.scale_up_limit_minimum * compounded
                / self.scale_up_limit_factor,
            ..self
        }
    }
}

/// What the HPA spec says about one target.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    /// Lower bound (upstream default 1; 0 allows scale to zero).
    pub min_replicas: i32,
    /// Upper bound.
    pub max_replicas: i32,
    /// `Some`: the behavior path; `None`: the legacy path. Boxed: 104 bytes inline, and most
    /// targets set none.
    pub behavior: Option<Box<Behavior>>,
    /// Controller-wide settings.
    pub config: ControllerConfig,
}

impl Default for HpaSpec {
    fn default() -> Self {
        Self {
            min_replicas: 1,
            max_replicas: i32::MAX,
            behavior: None,
            config: ControllerConfig::default(),
        }
    }
}

impl HpaSpec {
    /// The tolerances in force: per direction from the behavior, else the global one.
    pub fn tolerances(&self) -> Tolerances {
        let global = self.config.tolerance;
        let per = |d| {
            self.behavior
                .as_ref()
                .and_then(|b| b.rules(d).tolerance)
                .unwrap_or(global)
        };
        Tolerances {
            up: per(Direction::Up),
            down: per(Direction::Down),
        }
    }
}

/// The target's replica counts at this decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// `scale.spec.replicas`: the count the controller compares against ("current").
    pub spec: i32,
    /// `scale.status.replicas`: pods that exist (AverageValue divides by this).
    pub status: i32,
    /// Running and Ready pods matching the selector (Value and Utilization multiply by this).
    pub ready: i32,
}

impl Replicas {
    /// All three counts equal: a settled target.
    pub fn all(n: i32) -> Self {
        Self {
            spec: n,
            status: n,
            ready: n,
        }
    }
}

/// Tolerance band around a usage ratio of 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerances {
    /// Ratios up to `1 + up` cause no scale-up.
    pub up: f64,
    /// Ratios down to `1 - down` cause no scale-down.
    pub down: f64,
}

impl Tolerances {
    /// Whether a usage ratio is close enough to 1 to leave the count alone.
    pub fn within(&self, ratio: f64) -> bool {
        (1.0 - self.down) <= ratio && ratio <= (1.0 + self.up)
    }
}

/// `int32(math.Ceil(x))` as Go does it for the finite, in-range values the HPA produces, and
/// saturating (never panicking) outside them.
fn ceil_i32(x: f64) -> i32 {
    if x.is_nan() { 0 } else { x.ceil() as i32 }
}

/// One metric's replica proposal (replica_calculator.go).
///
/// `Err` is a metric that gives no proposal: no data, or a target that cannot be divided by.
pub fn propose(sample: &MetricSample, replicas: Replicas, tol: Tolerances) -> Result<i32, NoData> {
    let usage = sample.observation?;
    match sample.target {
        Target::Value(target) => {
            if target <= 0 {
                return Err(NoData::SourceFailed);
            }
            let ratio = usage as f64 / target as f64;
            Ok(usage_ratio_replicas(ratio, replicas, tol))
        }
        Target::AverageValue(per_pod) => {
            if per_pod <= 0 {
                return Err(NoData::SourceFailed);
            }
            let ratio = usage as f64 / (per_pod as f64 * replicas.status as f64);
            if tol.within(ratio) {
                Ok(replicas.status)
            } else {
                Ok(ceil_i32(usage as f64 / per_pod as f64))
            }
        }
        Target::Utilization(percent) => {
            if percent <= 0 {
                return Err(NoData::SourceFailed);
            }
            let ratio = usage as f64 / percent as f64;
            if tol.within(ratio) {
                Ok(replicas.spec)
            } else {
                Ok(ceil_i32(ratio * replicas.ready as f64))
            }
        }
    }
}

/// getUsageRatioReplicaCount: a Value target scales the ready pods by the usage ratio, and from
/// zero replicas straight to `ceil(ratio)`.
fn usage_ratio_replicas(ratio: f64, replicas: Replicas, tol: Tolerances) -> i32 {
    if replicas.spec == 0 {
        return ceil_i32(ratio);
    }
    if tol.within(ratio) {
        return replicas.spec;
    }
    ceil_i32(ratio * replicas.ready as f64)
}

/// The failure reason upstream reports for a metric of this target type.
fn failure_reason(target: Target) -> ConditionReason {
    match target {
        Target::Utilization(_) => ConditionReason::FailedGetResourceMetric,
        Target::Value(_) | Target::AverageValue(_) => ConditionReason::FailedGetExternalMetric,
    }
}

/// One metric's replica proposal for [`decide_proposals`], or the reason it has none (the
/// reason upstream reports for a failed metric of its type).
pub type Proposal = Result<i32, ConditionReason>;

/// [`propose`] with the failure reason of the metric's type.
pub fn proposal(sample: &MetricSample, replicas: Replicas, tol: Tolerances) -> Proposal {
    propose(sample, replicas, tol).map_err(|_| failure_reason(sample.target))
}

/// computeReplicasForMetrics: the largest valid proposal and its metric's index, or the first
/// failure's reason when every metric fails, or when some fail and the rest would scale down
/// from `current` (a failing metric might be the one that needs the pods).
pub fn reconcile_proposals(
    proposals: impl IntoIterator<Item = Proposal>,
    current: i32,
) -> Result<(i32, usize), ConditionReason> {
    let mut best: Option<(i32, usize)> = None;
    let mut first_failure = None;
    for (i, p) in proposals.into_iter().enumerate() {
        match p {
            Ok(p) => {
                if best.is_none_or(|(b, _)| p > b) {
                    best = Some((p, i));
                }
            }
            Err(reason) => {
                first_failure.get_or_insert(reason);
            }
        }
    }
    match (best, first_failure) {
        (None, f) => Err(f.unwrap_or(ConditionReason::FailedGetExternalMetric)),
        (Some((p, _)), Some(f)) if p < current => Err(f),
        (Some(b), _) => Ok(b),
    }
}

/// [`reconcile_proposals`] over the metrics' own proposals.
pub fn reconcile_metrics(
    metrics: &[MetricSample],
    replicas: Replicas,
    tol: Tolerances,
) -> Result<(i32, usize), ConditionReason> {
    reconcile_proposals(
        metrics.iter().map(|m| proposal(m, replicas, tol)),
        replicas.spec,
    )
}

/// One unstabilized recommendation and when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    /// The recommended replica count.
    pub replicas: i32,
    /// When.
    pub at: Millis,
}

/// One applied scale change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    /// Pods added (up list) or removed (down list), positive.
    pub change: i32,
    /// When.
    pub at: Millis,
    /// Older than the direction's longest policy period: its slot may be reused.
    pub outdated: bool,
}

/// Upper bound on stored recommendations and scale events per list. Upstream lists grow with
/// the number of decisions inside the longest window (about 20 at a 15 s sync and 300 s); the
/// bound only matters for a caller deciding far more often, which then loses the oldest entry.
pub const MAX_RECORDS: usize = 1024;

/// Per-target memory of the HPA algorithm: recommendations for stabilization and scale events
/// for the rate limits. Slots older than every window are reused, so steady-state decisions
/// allocate nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScalingState {
    /// Upstream's `recommendations[key] != nil`: a state that has decided before, or was given
    /// a history. A new state's first decision records the current count as a recommendation
    /// (recordInitialRecommendation), so that a restarted controller does not scale down before
    /// it has seen a stabilization window of its own.
    seen: bool,
    recommendations: Vec<Recommendation>,
    up_events: Vec<ScaleEvent>,
    down_events: Vec<ScaleEvent>,
}

impl ScalingState {
    /// A state with the given history (tests, restoring after a restart).
    pub fn with_history(
        recommendations: Vec<Recommendation>,
        up_events: Vec<ScaleEvent>,
        down_events: Vec<ScaleEvent>,
    ) -> Self {
        Self {
            seen: true,
            recommendations,
            up_events,
            down_events,
        }
    }

    /// recordInitialRecommendation: the first decision of a new state remembers the count it
    /// found, as if it had been recommended then.
    pub fn record_initial(&mut self, current: i32, now: Millis) {
        if !self.seen {
            self.seen = true;
            self.recommendations.push(Recommendation {
                replicas: current,
                at: now,
            });
        }
    }

    /// Stored recommendations, in slot order.
    pub fn recommendations(&self) -> &[Recommendation] {
        &self.recommendations
    }

    /// Stored scale events of one direction, in slot order.
    pub fn scale_events(&self, dir: Direction) -> &[ScaleEvent] {
        match dir {
            Direction::Up => &self.up_events,
            Direction::Down => &self.down_events,
        }
    }

    /// Record an applied change from `prev` to `new` replicas (storeScaleEvent). Without a
    /// behavior nothing is stored: the legacy path has no rate policies that would read it.
    pub fn store_scale_event(
        &mut self,
        behavior: Option<&Behavior>,
        prev: i32,
        new: i32,
        now: Millis,
    ) {
        let Some(behavior) = behavior else { return };
        let dir = if new > prev {
            Direction::Up
        } else {
            Direction::Down
        };
        let change = to_i32((new as i64 - prev as i64).abs());
        let cutoff = now.saturating_sub(secs(behavior.longest_period_seconds(dir)));
        let events = match dir {
            Direction::Up => &mut self.up_events,
            Direction::Down => &mut self.down_events,
        };
        let mut reuse = None;
        for (i, e) in events.iter_mut().enumerate() {
            if e.at < cutoff {
                e.outdated = true;
            }
            // Upstream reuses the last outdated slot (flags persist once set).
            if e.outdated {
                reuse = Some(i);
            }
        }
        let event = ScaleEvent {
            change,
            at: now,
            outdated: false,
        };
        put(events, reuse, event, |e| e.at);
    }
}

/// Store `item` in slot `reuse`, else append, else (at the bound) over the oldest entry.
fn put<T>(list: &mut Vec<T>, reuse: Option<usize>, item: T, at: impl Fn(&T) -> Millis) {
    if let Some(i) = reuse {
        list[i] = item;
    } else if list.len() < MAX_RECORDS {
        list.push(item);
    } else if let Some(i) = (0..list.len()).min_by_key(|&i| at(&list[i])) {
        list[i] = item;
    }
}

fn secs(s: i32) -> Millis {
    s as Millis * 1000
}

/// Legacy stabilization (stabilizeRecommendation): the highest recommendation of the last
/// `window_seconds`, this one included; records this one.
pub fn stabilize_legacy(
    state: &mut ScalingState,
    desired: i32,
    window_seconds: i32,
    now: Millis,
) -> i32 {
    let cutoff = now.saturating_sub(secs(window_seconds));
    let mut max = desired;
    let mut reuse = None;
    for (i, r) in state.recommendations.iter().enumerate() {
        if r.at < cutoff {
            reuse = Some(i);
        } else if r.replicas > max {
            max = r.replicas;
        }
    }
    let rec = Recommendation {
        replicas: desired,
        at: now,
    };
    put(&mut state.recommendations, reuse, rec, |r| r.at);
    max
}

/// Legacy limits (convertDesiredReplicasWithRules): bounds and `max(factor * current, minimum)`.
pub fn convert_with_rules(
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    cfg: &ControllerConfig,
) -> (i32, ConditionReason) {
    // int32(math.Max(...)): truncated, saturating.
    let up_limit =
        (cfg.scale_up_limit_factor * current as f64).max(cfg.scale_up_limit_minimum) as i32;
    let (max_allowed, reason) = if max > up_limit {
        (up_limit, ConditionReason::ScaleUpLimit)
    } else {
        (max, ConditionReason::TooManyReplicas)
    };
    if desired < min {
        (min, ConditionReason::TooFewReplicas)
    } else if desired > max_allowed {
        (max_allowed, reason)
    } else {
        (desired, ConditionReason::DesiredWithinRange)
    }
}

/// Behavior stabilization (stabilizeRecommendationWithBehaviors): the count is held between
/// the lowest recommendation of the scale-up window and the highest of the scale-down window;
/// records this recommendation, reusing a slot older than both windows.
pub fn stabilize_with_behavior(
    state: &mut ScalingState,
    behavior: &Behavior,
    downscale_default_seconds: i32,
    current: i32,
    desired: i32,
    now: Millis,
) -> (i32, ConditionReason) {
    let up_cutoff = now.saturating_sub(secs(
        behavior.stabilization_window_seconds(Direction::Up, 0),
    ));
    let down_cutoff = now.saturating_sub(secs(
        behavior.stabilization_window_seconds(Direction::Down, downscale_default_seconds),
    ));
    let (mut up_rec, mut down_rec) = (desired, desired);
    let mut reuse = None;
    for (i, r) in state.recommendations.iter().enumerate() {
        if r.at > up_cutoff {
            up_rec = up_rec.min(r.replicas);
        }
        if r.at > down_cutoff {
            down_rec = down_rec.max(r.replicas);
        }
        if r.at < up_cutoff && r.at < down_cutoff {
            reuse = Some(i);
        }
    }
    let mut rec = current;
    if rec < up_rec {
        rec = up_rec;
    }
    if rec > down_rec {
        rec = down_rec;
    }
    let item = Recommendation {
        replicas: desired,
        at: now,
    };
    put(&mut state.recommendations, reuse, item, |r| r.at);
    let reason = if desired >= current {
        ConditionReason::ScaleUpStabilized
    } else {
        ConditionReason::ScaleDownStabilized
    };
    (rec, reason)
}

/// Sum of the changes in `events` newer than `period_seconds` (getReplicasChangePerPeriod).
pub fn replicas_change_per_period(period_seconds: i32, events: &[ScaleEvent], now: Millis) -> i32 {
    let cutoff = now.saturating_sub(secs(period_seconds));
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .fold(0i32, |acc, e| acc.saturating_add(e.change))
}

/// The count at the start of a policy's period: current minus what was added plus what was
/// removed within it.
fn period_start(policy: &Policy, state: &ScalingState, current: i32, now: Millis) -> i64 {
    let p = policy.period_seconds();
    current as i64 - replicas_change_per_period(p, &state.up_events, now) as i64
        + replicas_change_per_period(p, &state.down_events, now) as i64
}

fn to_i32(x: i64) -> i32 {
    x.clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// The highest count the scale-up policies allow now (calculateScaleUpLimitWithScalingRules).
pub fn scale_up_limit(behavior: &Behavior, state: &ScalingState, current: i32, now: Millis) -> i32 {
    let select = behavior.select_policy(Direction::Up);
    let (mut result, pick): (i64, fn(i64, i64) -> i64) = match select {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i32::MAX as i64, i64::min),
        SelectPolicy::Max => (i32::MIN as i64, i64::max),
    };
    for policy in behavior.policies(Direction::Up) {
        let start = period_start(policy, state, current, now);
        let proposed = match *policy {
            Policy::Pods { value, .. } => start + value as i64,
            // Rounded up, or a small target could never grow.
            Policy::Percent { value, .. } => {
                (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as i64
            }
        };
        result = pick(result, proposed);
    }
    to_i32(result)
}

/// The lowest count the scale-down policies allow now (calculateScaleDownLimitWithBehaviors).
pub fn scale_down_limit(
    behavior: &Behavior,
    state: &ScalingState,
    current: i32,
    now: Millis,
) -> i32 {
    let select = behavior.select_policy(Direction::Down);
    let (mut result, pick): (i64, fn(i64, i64) -> i64) = match select {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Min => (i32::MIN as i64, i64::max),
        SelectPolicy::Max => (i32::MAX as i64, i64::min),
    };
    for policy in behavior.policies(Direction::Down) {
        let start = period_start(policy, state, current, now);
        let proposed = match *policy {
            Policy::Pods { value, .. } => start - value as i64,
            // Truncated toward zero, as Go's int32() conversion.
            Policy::Percent { value, .. } => (start as f64 * (1.0 - value as f64 / 100.0)) as i64,
        };
        result = pick(result, proposed);
    }
    to_i32(result)
}

/// Behavior limits (convertDesiredReplicasWithBehaviorRate): bounds and rate policies.
pub fn convert_with_behavior_rate(
    behavior: &Behavior,
    state: &ScalingState,
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    now: Millis,
) -> (i32, ConditionReason) {
    if desired > current {
        // Events may put the limit below current; never scale down on the way up.
        let limit = scale_up_limit(behavior, state, current, now).max(current);
        let (allowed, reason) = if max > limit {
            (limit, ConditionReason::ScaleUpLimit)
        } else {
            (max, ConditionReason::TooManyReplicas)
        };
        if desired > allowed {
            return (allowed, reason);
        }
    } else if desired < current {
        let limit = scale_down_limit(behavior, state, current, now).min(current);
        let (allowed, reason) = if min < limit {
            (limit, ConditionReason::ScaleDownLimit)
        } else {
            (min, ConditionReason::TooFewReplicas)
        };
        if desired < allowed {
            return (allowed, reason);
        }
    }
    (desired, ConditionReason::DesiredWithinRange)
}

/// One decision for one target (reconcileAutoscaler without the I/O).
///
/// - `spec`: bounds, behavior (`None`: legacy path) and controller settings.
/// - `state`: this target's history; updated with this decision's recommendation.
/// - `replicas`: spec, status and ready counts of the target now.
/// - `metrics`: each metric's target and reading; a reading may be missing.
/// - `now`: the decision time.
///
/// Outcomes before any metric is read, as upstream: a target at 0 replicas with `min != 0` is
/// left alone (`ScalingDisabled`); a count above `max` or below `min` goes to that bound
/// (upstream sets no ScalingLimited condition there; ebb reports `TooManyReplicas` /
/// `TooFewReplicas`, limited).
///
/// Scale events are not stored here: call [`ScalingState::store_scale_event`] once the change
/// is applied.
pub fn decide(
    spec: &HpaSpec,
    state: &mut ScalingState,
    replicas: Replicas,
    metrics: &[MetricSample],
    now: Millis,
) -> Decision {
    let tol = spec.tolerances();
    let proposals = metrics.iter().map(|m| proposal(m, replicas, tol));
    decide_proposals(spec, state, replicas, proposals, now)
}

/// [`decide`] on proposals already made, one per metric in the spec's order: for a caller
/// whose proposals come from elsewhere (ebb's adaptive rules), so that nothing is dressed up
/// as a sample to get a replica count back. The spec's tolerances are not applied again (they
/// belong to the proposals); its bounds, windows and policies are.
pub fn decide_proposals(
    spec: &HpaSpec,
    state: &mut ScalingState,
    replicas: Replicas,
    proposals: impl IntoIterator<Item = Proposal>,
    now: Millis,
) -> Decision {
    let current = replicas.spec;
    state.record_initial(current, now);
    let unchanged = |desired, reason, limited, active| Decision {
        desired,
        reason,
        limited,
        able_to_scale: ConditionReason::ReadyForNewScale,
        scaling_active: active,
        scaling_limited: if limited {
            reason
        } else {
            ConditionReason::DesiredWithinRange
        },
        proposal: None,
        metric_index: None,
        recheck_at: None,
    };
    if current == 0 && spec.min_replicas != 0 {
        let r = ConditionReason::ScalingDisabled;
        return unchanged(0, r, false, r);
    }
    if current > spec.max_replicas {
        let r = ConditionReason::TooManyReplicas;
        return unchanged(
            spec.max_replicas,
            r,
            true,
            ConditionReason::ValidMetricFound,
        );
    }
    if current < spec.min_replicas {
        let r = ConditionReason::TooFewReplicas;
        return unchanged(
            spec.min_replicas,
            r,
            true,
            ConditionReason::ValidMetricFound,
        );
    }
    let (proposal, index) = match reconcile_proposals(proposals, current) {
        Ok(p) => p,
        Err(reason) => return unchanged(current, reason, false, reason),
    };
    let prenormalized = proposal.max(0);
    let (stabilized, stab_reason, (desired, limit_reason)) = match &spec.behavior {
        None => {
            let window = spec.config.downscale_stabilization_seconds;
            let stab = stabilize_legacy(state, prenormalized, window, now);
            let conv = convert_with_rules(
                current,
                stab,
                spec.min_replicas,
                spec.max_replicas,
                &spec.config,
            );
            (stab, ConditionReason::ScaleDownStabilized, conv)
        }
        Some(b) => {
            let window = spec.config.downscale_stabilization_seconds;
            let (stab, why) =
                stabilize_with_behavior(state, b, window, current, prenormalized, now);
            let conv = convert_with_behavior_rate(
                b,
                state,
                current,
                stab,
                spec.min_replicas,
                spec.max_replicas,
                now,
            );
            (stab, why, conv)
        }
    };
    let able_to_scale = if stabilized != prenormalized {
        stab_reason
    } else {
        ConditionReason::ReadyForNewScale
    };
    let limited = desired != stabilized;
    let reason = if limited || able_to_scale == ConditionReason::ReadyForNewScale {
        limit_reason
    } else {
        able_to_scale
    };
    let recheck_at = recheck_at(spec, state, able_to_scale, limited, limit_reason, now);
    Decision {
        desired,
        reason,
        limited,
        able_to_scale,
        scaling_active: ConditionReason::ValidMetricFound,
        scaling_limited: limit_reason,
        proposal: Some(proposal),
        metric_index: Some(index),
        recheck_at,
    }
}

/// When a decision held back by a window or a rate limit may change with no new observation:
/// the earliest moment a record that held it leaves its window or policy period.
fn recheck_at(
    spec: &HpaSpec,
    state: &ScalingState,
    able_to_scale: ConditionReason,
    limited: bool,
    limit_reason: ConditionReason,
    now: Millis,
) -> Option<Millis> {
    // Records newer than `window` before now leave it at `at + window`.
    let expiry = |times: &mut dyn Iterator<Item = Millis>, window: Millis| {
        let cutoff = now.saturating_sub(window);
        times
            .filter(|&at| at > cutoff)
            .map(|at| at.saturating_add(window))
            .min()
    };
    let downscale = spec.config.downscale_stabilization_seconds;
    let held = match (&spec.behavior, able_to_scale) {
        (_, ConditionReason::ReadyForNewScale) => None,
        (None, _) => Some(downscale),
        (Some(b), ConditionReason::ScaleUpStabilized) => {
            Some(b.stabilization_window_seconds(Direction::Up, downscale))
        }
        (Some(b), _) => Some(b.stabilization_window_seconds(Direction::Down, downscale)),
    };
    let stabilization =
        held.and_then(|w| expiry(&mut state.recommendations.iter().map(|r| r.at), secs(w)));
    let rate = match (&spec.behavior, limited, limit_reason) {
        (Some(b), true, ConditionReason::ScaleUpLimit | ConditionReason::ScaleDownLimit) => {
            let dir = if limit_reason == ConditionReason::ScaleUpLimit {
                Direction::Up
            } else {
                Direction::Down
            };
            b.policies(dir)
                .iter()
                .filter_map(|p| {
                    let events = state.up_events.iter().chain(&state.down_events);
                    expiry(&mut events.map(|e| e.at), secs(p.period_seconds()))
                })
                .min()
        }
        _ => None,
    };
    match (stabilization, rate) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_limit_over_a_longer_interval_is_the_per_sync_limit_compounded() {
        let per_sync = ControllerConfig::default();
        assert_eq!(per_sync.over_interval(15_000), per_sync);
        assert_eq!(per_sync.over_interval(5_000), per_sync, "never stricter");
        let minute = per_sync.over_interval(60_000);
        let limit =
            |c: &ControllerConfig, x: i32| convert_with_rules(x, i32::MAX - 1, 1, i32::MAX, c).0;
        for x in [0, 1, 2, 3, 5, 10, 100, 1000] {
            let mut synced = x;
            for _ in 0..4 {
                synced = limit(&per_sync, synced);
            }
            assert_eq!(limit(&minute, x), synced, "from {x}");
        }
        // In between, in between; an hour is unbounded in practice.
        let twenty = limit(&per_sync.over_interval(20_000), 10);
        assert!(20 < twenty && twenty < 40, "{twenty}");
        assert_eq!(limit(&per_sync.over_interval(3_600_000), 1), i32::MAX - 1);
    }
    use crate::engine::ScalingRules;

    fn avg(per_pod: i64, usage: i64) -> MetricSample {
        MetricSample {
            target: Target::AverageValue(per_pod),
            observation: Ok(usage),
        }
    }

    fn spec(behavior: Option<Behavior>) -> HpaSpec {
        HpaSpec {
            min_replicas: 1,
            max_replicas: 100,
            behavior: behavior.map(Box::new),
            ..Default::default()
        }
    }

    #[test]
    fn per_direction_tolerance_overrides_the_global_one() {
        let mut b = Behavior::default();
        b.scale_up.tolerance = Some(0.05);
        let s = spec(Some(b));
        assert_eq!(
            s.tolerances(),
            Tolerances {
                up: 0.05,
                down: 0.1
            }
        );
        // 10 pods at 107 % of target: within the global 10 %, outside the scale-up 5 %.
        let m = [avg(1000, 10_700)];
        let d = decide(&s, &mut ScalingState::default(), Replicas::all(10), &m, 0);
        assert_eq!(d.desired, 11);
        let d = decide(
            &spec(None),
            &mut ScalingState::default(),
            Replicas::all(10),
            &m,
            0,
        );
        assert_eq!(d.desired, 10);
    }

    #[test]
    fn behavior_path_scale_down_is_stabilized_then_follows() {
        let s = spec(Some(Behavior::default()));
        let mut st = ScalingState::default();
        let r = Replicas::all(10);
        let d = decide(&s, &mut st, r, &[avg(1000, 10_000)], 0);
        assert_eq!(
            (d.desired, d.reason),
            (10, ConditionReason::DesiredWithinRange)
        );
        // Load halves: the 300 s window still holds the 10.
        let d = decide(&s, &mut st, r, &[avg(1000, 5_000)], 15_000);
        assert_eq!(d.desired, 10);
        assert_eq!(d.reason, ConditionReason::ScaleDownStabilized);
        assert!(!d.limited);
        // The 10 recorded at 0 leaves the 300 s window at 300 s.
        assert_eq!(d.recheck_at, Some(300_000));
        // 300 s later the old recommendation has left the window.
        let d = decide(&s, &mut st, r, &[avg(1000, 5_000)], 315_000);
        assert_eq!(
            (d.desired, d.reason),
            (5, ConditionReason::DesiredWithinRange)
        );
    }

    #[test]
    fn a_new_state_holds_the_count_it_found_for_a_scale_down_window() {
        // A controller that restarts during a drop: its first decision sees half the load.
        let s = spec(Some(Behavior::default()));
        let mut st = ScalingState::default();
        let r = Replicas::all(10);
        let d = decide(&s, &mut st, r, &[avg(1000, 5_000)], 1_000);
        assert_eq!(
            (d.desired, d.reason, d.recheck_at),
            (10, ConditionReason::ScaleDownStabilized, Some(301_000))
        );
        let d = decide(&s, &mut st, r, &[avg(1000, 5_000)], 301_000);
        assert_eq!(d.desired, 5, "a window after the first decision");
        // The legacy path holds the same way.
        let mut st = ScalingState::default();
        let d = decide(&spec(None), &mut st, r, &[avg(1000, 5_000)], 1_000);
        assert_eq!(d.desired, 10);
        // A state restored with a history, even an empty one, decides on that history.
        let mut st = ScalingState::with_history(vec![], vec![], vec![]);
        let d = decide(&s, &mut st, r, &[avg(1000, 5_000)], 1_000);
        assert_eq!(d.desired, 5);
    }

    #[test]
    fn scale_up_rate_limit_counts_stored_events() {
        let b = Behavior {
            scale_up: ScalingRules {
                policies: vec![Policy::Pods {
                    value: 2,
                    period_seconds: 60,
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let s = spec(Some(b));
        let mut st = ScalingState::default();
        let d = decide(&s, &mut st, Replicas::all(4), &[avg(1000, 20_000)], 0);
        assert_eq!(
            (d.desired, d.reason, d.limited),
            (6, ConditionReason::ScaleUpLimit, true)
        );
        st.store_scale_event(s.behavior.as_deref(), 4, 6, 0);
        // 30 s later the 2 pods added still count: no room in this period until 60 s.
        let d = decide(&s, &mut st, Replicas::all(6), &[avg(1000, 20_000)], 30_000);
        assert_eq!((d.desired, d.recheck_at), (6, Some(60_000)));
        let d = decide(&s, &mut st, Replicas::all(6), &[avg(1000, 20_000)], 61_000);
        assert_eq!(d.desired, 8);
    }

    #[test]
    fn failures_block_scale_down_not_scale_up_and_record_nothing() {
        let s = spec(Some(Behavior::default()));
        let failed = MetricSample {
            target: Target::Value(1000),
            observation: Err(NoData::SourceFailed),
        };
        let mut st = ScalingState::default();
        let d = decide(
            &s,
            &mut st,
            Replicas::all(10),
            &[avg(1000, 2_000), failed],
            0,
        );
        assert_eq!(
            (d.desired, d.reason),
            (10, ConditionReason::FailedGetExternalMetric)
        );
        assert_eq!(
            st.recommendations(),
            [Recommendation {
                replicas: 10,
                at: 0
            }],
            "only the count found at the first decision"
        );
        let d = decide(&s, &mut st, Replicas::all(10), &[failed, failed], 0);
        assert_eq!(d.desired, 10);
        let d = decide(
            &s,
            &mut st,
            Replicas::all(10),
            &[avg(1000, 15_000), failed],
            0,
        );
        assert_eq!((d.desired, d.metric_index), (15, Some(0)));
    }

    #[test]
    fn zero_replicas_with_nonzero_min_disables_scaling() {
        let d = decide(
            &spec(None),
            &mut ScalingState::default(),
            Replicas::all(0),
            &[avg(1, 1000)],
            0,
        );
        assert_eq!((d.desired, d.reason), (0, ConditionReason::ScalingDisabled));
        let mut s = spec(None);
        s.min_replicas = 0;
        // Value target from zero: straight to ceil(ratio).
        let m = [MetricSample {
            target: Target::Value(1000),
            observation: Ok(3500),
        }];
        let d = decide(&s, &mut ScalingState::default(), Replicas::all(0), &m, 0);
        assert_eq!(d.desired, 4);
    }

    #[test]
    fn steady_state_decisions_reuse_their_buffers() {
        let s = spec(Some(Behavior::default()));
        let mut st = ScalingState::default();
        let mut current = 5;
        let mut run = |st: &mut ScalingState, from: i64, to: i64| {
            for i in from..to {
                let now = i * 15_000;
                let load = 5_000 + 4_000 * ((i / 7) % 3);
                let d = decide(&s, st, Replicas::all(current), &[avg(1000, load)], now);
                if d.desired != current {
                    st.store_scale_event(s.behavior.as_deref(), current, d.desired, now);
                    current = d.desired;
                }
            }
        };
        run(&mut st, 0, 200);
        let caps = (
            st.recommendations.capacity(),
            st.up_events.capacity(),
            st.down_events.capacity(),
        );
        run(&mut st, 200, 2_000);
        assert_eq!(
            caps,
            (
                st.recommendations.capacity(),
                st.up_events.capacity(),
                st.down_events.capacity()
            )
        );
        // 300 s / 15 s = 20 recommendations in the window, plus this one.
        assert!(
            st.recommendations.len() <= 22,
            "{}",
            st.recommendations.len()
        );
    }
}
