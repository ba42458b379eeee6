//! Thresholds learned from history, per metric of one ScaledTarget (`spec.adaptive`,
//! [`super::adaptive`]): one [`AdaptiveState`] per AverageValue metric, fed every reading,
//! backfilled once from the source's own history (the controller fetches it) so that a restart
//! does not forget, and mapped to what each mode acts on:
//!
//! - **Direct / Shadow**: the metric's adaptive recommendation replaces its HPA proposal
//!   ([`Learning::proposals`]); bounds and the behavior's windows and rate limits still apply
//!   in [`super::hpa::decide_proposals`].
//! - **Hpa**: the owned HPA's target is the learned target (static target / (1 + headroom)),
//!   changed only when it moves by more than the learned tolerance and at most once per
//!   [`TARGET_CHANGE_INTERVAL`]; the served value is raised to the forecast.
//!
//! Pure: time is an argument. [`super::target::TargetMachine`] owns one [`Learning`]. The rules
//! of composition are in `docs/adaptive.md` ("In the controller").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::adaptive::{
    AdaptiveConfig, AdaptiveReason, AdaptiveState, Inputs, Learned, Recommendation,
};
use super::hpa::{self, HpaSpec, Proposal, Replicas, Tolerances};
use super::slo::{SloConfig, SloLearner, SloTarget};
use super::{MetricSample, Millis, ceil_eps};

/// An owned HPA's learned target changes at most once per this long per metric.
pub const TARGET_CHANGE_INTERVAL: Duration = Duration::from_secs(300);
/// Most readings a backfill asks for (one week at a 15 s interval): bounds its query, memory
/// and replay time whatever `minHistorySeconds` says.
pub const MAX_BACKFILL_POINTS: u64 = 40_320;
/// Live readings kept while a backfill runs, replayed into it when it lands.
const MAX_BUFFERED: usize = 4096;

/// Tells a backfill's result which state it belongs to (a reset makes a new one).
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// The learning state of one ScaledTarget: per metric (by index in `spec.metrics`), `Some` for
/// AverageValue metrics while `spec.adaptive` is on.
#[derive(Default)]
pub struct Learning {
    pub(crate) metrics: Vec<Option<MetricLearning>>,
    /// The object revision and interval the states were matched to: a step of the same
    /// revision skips matching.
    /// What the states were last matched to.
    synced: Option<SyncedTo>,
}

pub(crate) struct MetricLearning {
    name: String,
    /// What the state was made for (uid, metric, config, interval): a change starts afresh.
    fingerprint: String,
    epoch: u64,
    pub(crate) state: AdaptiveState,
    interval: Millis,
    static_target: f64,
    last_observed: Option<Millis>,
    /// The learned values as last reported (status `learned`, `LearnedChanged` Events).
    shown: Learned,
    /// The learned target in use, and when it last changed.
    pub(crate) target: f64,
    target_changed_at: Option<Millis>,
    /// Readings since a backfill started, while it runs.
    buffered: Option<Vec<(Millis, Option<f64>)>>,
    /// The per-pod target learned from the metric's SLO signal (`slo`), and as last reported.
    pub(crate) slo: Option<SloLearner>,
    slo_shown: Option<SloTarget>,
}

/// What one metric learns with, from the ScaledTarget (`None` in [`super::target::MetricSpec`]
/// for a metric that does not learn).
#[derive(Debug, Clone, PartialEq)]
pub struct LearnSpec {
    /// The metric's name (HPA targets and Events name it).
    pub name: String,
    /// Its static AverageValue target per pod.
    pub static_target: f64,
    /// The per-pod target is learned from this SLO, when set.
    pub slo: Option<SloConfig>,
    /// The SLO target learned before a restart (from status), to resume from.
    pub resume_slo: Option<SloTarget>,
    /// The risk correction before a restart (from status; `AdaptiveState::track`): the polls
    /// short it was learned from are not in the metric's history, which a backfill replays.
    pub resume_risk_correction: f64,
    /// Whether the source has a history to backfill from (Prometheus).
    pub backfill: bool,
    /// What identifies the metric and its configuration: a change starts afresh.
    pub fingerprint: String,
}

/// A backfill to run for one metric: the controller fetches `window` of the metric's history
/// at `interval` and hands [`AdaptiveState::backfill`]'s result to [`Learning::install`].
#[derive(Debug, Clone)]
pub struct Backfill {
    /// The metric's index in `spec.metrics`.
    pub index: usize,
    /// Which state it belongs to.
    pub epoch: u64,
    /// The configuration to rebuild the state with.
    pub config: AdaptiveConfig,
    /// Reading interval.
    pub interval: Millis,
    /// The metric's static per-pod target.
    pub static_target: f64,
    /// How much history to fetch.
    pub window: Duration,
}

/// A material change of one metric's learned values, for a `LearnedChanged` Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub metric: String,
    pub message: String,
}

/// (revision, interval, startup delay in force) of the last match.
type SyncedTo = (Option<(String, i64)>, Millis, u64);

/// How much history a backfill asks for: what the rules use, at most [`MAX_BACKFILL_POINTS`].
pub fn backfill_window(config: &AdaptiveConfig, interval: Duration) -> Duration {
    let ms = (interval.as_millis() as Millis).max(1);
    let wanted = config.history_wanted_seconds(ms);
    let cap = (MAX_BACKFILL_POINTS * ms as u64).div_ceil(1000);
    Duration::from_secs(wanted.min(cap))
}

impl Learning {
    /// Whether any metric is learning.
    pub fn active(&self) -> bool {
        self.metrics.iter().any(Option::is_some)
    }

    /// Matches the states to the spec: keeps those whose metric, configuration and interval
    /// are unchanged, starts new ones (returning the backfills to run), drops the rest.
    /// `revision` (uid, generation) lets a step of the same object skip matching.
    pub fn sync(
        &mut self,
        revision: Option<(String, i64)>,
        config: Option<&AdaptiveConfig>,
        metrics: &[Option<&LearnSpec>],
        interval: Millis,
    ) -> Vec<Backfill> {
        let startup = config.map_or(0, |c| c.startup_delay_seconds);
        let object = (revision, interval, startup);
        if object.0.is_some() && self.synced.as_ref() == Some(&object) {
            return Vec::new();
        }
        self.synced = Some(object);
        let mut old = std::mem::take(&mut self.metrics);
        let Some(config) = config.filter(|c| c.enabled) else {
            return Vec::new();
        };
        let interval_ms = interval.max(1);
        let mut jobs = Vec::new();
        for (index, m) in metrics.iter().enumerate() {
            let Some(m) = m else {
                self.metrics.push(None);
                continue;
            };
            // The startup delay in force (the spec's, or the one learned from the pods) sizes
            // the horizon: a new one starts learning afresh from the backfill. A metric with no
            // history to backfill keeps the horizon it has rather than lose what it learned.
            let fingerprint = if m.backfill {
                format!("{interval_ms}|{startup}|{}", m.fingerprint)
            } else {
                format!("{interval_ms}|{}", m.fingerprint)
            };
            if let Some(i) = old
                .iter()
                .position(|o| o.as_ref().is_some_and(|o| o.fingerprint == fingerprint))
            {
                self.metrics.push(old[i].take());
                continue;
            }
            let target = m.static_target;
            let state = match AdaptiveState::new(config.clone(), interval_ms, target) {
                Ok(s) => s.with_risk_correction(m.resume_risk_correction),
                Err(e) => {
                    // The CRD's rules reject bad bounds; an object stored before them is
                    // reported and runs on the plain HPA algorithm.
                    tracing::warn!(metric = %m.name, error = %e, "adaptive off");
                    self.metrics.push(None);
                    continue;
                }
            };
            let slo = m.slo.as_ref().and_then(|slo| {
                match SloLearner::new(slo.clone(), target, config.min_history_seconds) {
                    // After a restart the target learned before stays in use meanwhile.
                    Ok(l) => Some(match m.resume_slo {
                        Some(p) => l.resume(p),
                        None => l,
                    }),
                    Err(e) => {
                        tracing::warn!(metric = %m.name, error = %e, "slo learning off");
                        None
                    }
                }
            });
            let epoch = EPOCH.fetch_add(1, Ordering::Relaxed);
            if m.backfill {
                jobs.push(Backfill {
                    index,
                    epoch,
                    config: config.clone(),
                    interval: interval_ms,
                    static_target: target,
                    window: backfill_window(
                        config,
                        Duration::from_millis(interval_ms.max(0) as u64),
                    ),
                });
            }
            let slo_shown = slo.as_ref().map(SloLearner::learned);
            self.metrics.push(Some(MetricLearning {
                name: m.name.clone(),
                fingerprint,
                epoch,
                shown: state.learned(),
                state,
                interval: interval_ms,
                static_target: target,
                last_observed: None,
                target: slo_shown.map_or(target, |t| t.target),
                target_changed_at: None,
                buffered: m.backfill.then(Vec::new),
                slo,
                slo_shown,
            }));
        }
        jobs
    }

    /// Feeds one poll's readings (index-aligned with `spec.metrics`) at `now`; a failed read
    /// is a missing reading, never zero. A poll less than half an interval after the last
    /// observation (an early wake-up) is not a new reading. Returns the material changes of
    /// the learned values since they were last reported.
    #[cfg(test)]
    pub fn observe(&mut self, values: &[Option<f64>], now: Millis) -> Vec<Change> {
        self.observe_with_slo(values, &[], None, now)
    }

    /// Before [`Self::observe_with_slo`] with the same `values`: the Ready pods while they
    /// were read. Each learning metric whose load needed more pods than that counts the poll
    /// as short ([`AdaptiveState::track`]).
    pub fn track_supply(&mut self, values: &[Option<f64>], ready: i32) {
        for (ml, value) in self.metrics.iter_mut().zip(values) {
            let (Some(ml), Some(v)) = (ml, value) else {
                continue;
            };
            let needed = ceil_eps(v / ml.per_pod_target());
            ml.state.track(needed > f64::from(ready.max(0)));
        }
    }

    /// [`Self::observe`], with the SLO signals (index-aligned with `spec.metrics`, `None`
    /// where a metric has none or it failed) and the workload's pods, for the metrics whose
    /// per-pod target is learned from an SLO: each reading's load per pod is paired with its
    /// signal.
    pub fn observe_with_slo(
        &mut self,
        values: &[Option<f64>],
        slo_signals: &[Option<f64>],
        pods: Option<i32>,
        now: Millis,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for (i, (ml, value)) in self.metrics.iter_mut().zip(values).enumerate() {
            let Some(ml) = ml else { continue };
            if ml.last_observed.is_some_and(|l| now - l < ml.interval / 2) {
                continue;
            }
            ml.last_observed = Some(now);
            let value = *value;
            if let Some(slo) = &mut ml.slo {
                let per_pod = value
                    .zip(pods.filter(|&p| p > 0))
                    .map(|(v, p)| v / f64::from(p));
                slo.observe(now, per_pod, slo_signals.get(i).copied().flatten());
            }
            match value {
                Some(v) => ml.state.observe(now, v),
                None => ml.state.observe_missing(now),
            }
            if let Some(b) = &mut ml.buffered
                && b.len() < MAX_BUFFERED
            {
                b.push((now, value));
            }
            if let Some(c) = ml.update(now) {
                changes.push(c);
            }
        }
        changes
    }

    /// Installs a backfilled state if its metric's state is still the one it was made for,
    /// after replaying the readings observed meanwhile. Returns whether it was installed.
    pub fn install(&mut self, index: usize, epoch: u64, mut state: AdaptiveState) -> bool {
        let Some(Some(ml)) = self.metrics.get_mut(index) else {
            return false;
        };
        if ml.epoch != epoch {
            return false;
        }
        // The history replayed has no polls short: the correction goes on from the live one.
        state = state.with_risk_correction(ml.state.risk_correction());
        for (ts, v) in ml.buffered.take().unwrap_or_default() {
            match v {
                Some(v) => state.observe(ts, v),
                None => state.observe_missing(ts),
            }
        }
        ml.state = state;
        true
    }

    /// Gives up waiting for a backfill: learning goes on from the live readings.
    pub fn abandon(&mut self, index: usize, epoch: u64) {
        if let Some(Some(ml)) = self.metrics.get_mut(index)
            && ml.epoch == epoch
        {
            ml.buffered = None;
        }
    }

    /// Mode Direct/Shadow: each metric's proposal for [`hpa::decide_proposals`], and the
    /// adaptive reason per metric: for a learning metric, the adaptive recommendation over its
    /// reactive `ceil(load / target)`; for the others, the HPA's own proposal with its
    /// tolerance. A failed metric stays failed (never zero).
    pub fn proposals(
        &mut self,
        tolerances: Tolerances,
        samples: &[MetricSample],
        loads: &[Option<f64>],
        replicas: Replicas,
        now: Millis,
    ) -> (Vec<Proposal>, Vec<Option<AdaptiveReason>>) {
        let mut reasons = vec![None; samples.len()];
        let out = samples
            .iter()
            .enumerate()
            .map(|(i, sample)| {
                let learning = self.metrics.get_mut(i).and_then(Option::as_mut);
                match (learning, sample.observation) {
                    (Some(ml), Ok(_)) => {
                        let mut rec =
                            ml.recommend(now, loads.get(i).copied().flatten(), replicas.spec);
                        // Waiting for its backfill, the state knows only the last few
                        // readings: no scale-down on that short a memory.
                        let current = replicas.spec.max(0) as u32;
                        if ml.buffered.is_some() && rec.replicas < current {
                            rec = Recommendation {
                                replicas: current,
                                reason: AdaptiveReason::Stabilized,
                            };
                        }
                        reasons[i] = Some(rec.reason);
                        Ok(i32::try_from(rec.replicas).unwrap_or(i32::MAX))
                    }
                    _ => hpa::proposal(sample, replicas, tolerances),
                }
            })
            .collect();
        (out, reasons)
    }

    /// Mode Hpa: the value to serve for metric `index` read as `load`: raised to the forecast
    /// where the forecast is higher, expressed against the learned target the HPA has
    /// (`load * F * learned / static`, so that the HPA's `ceil(value / learned)` is the
    /// engine's `ceil(load * F / static)`: the forecast without the headroom on top).
    pub fn served(&mut self, index: usize, load: f64, now: Millis) -> f64 {
        let Some(Some(ml)) = self.metrics.get_mut(index) else {
            return load;
        };
        match ml.state.forecast_ratio(now) {
            Some(f) => load.max(load * f * ml.target / ml.per_pod_target()),
            None => load,
        }
    }

    /// The learned targets to put on the owned HPA, by metric name (only those that differ
    /// from the static target).
    pub fn hpa_targets(&self) -> BTreeMap<String, f64> {
        self.metrics
            .iter()
            .flatten()
            .filter(|ml| ml.target != ml.static_target)
            .map(|ml| (ml.name.clone(), ml.target))
            .collect()
    }

    /// The scale-down behavior learned for the owned HPA, when every one of the target's
    /// `metrics` learns (the HPA has one behavior for all metrics; one that does not learn
    /// keeps the HPA's defaults): the longest learned window and the widest learned band, as
    /// of the last `LearnedChanged` Event (so the HPA changes only when the values moved).
    /// While the history is short these are the HPA's own defaults (300 s, 0.1).
    pub fn hpa_behavior(&self, metrics: usize) -> Option<LearnedBehavior> {
        if !all_learning(self, metrics) {
            return None;
        }
        let shown = self.metrics.iter().flatten().map(|ml| &ml.shown);
        Some(LearnedBehavior {
            window_seconds: shown.clone().map(|l| l.scale_down_window_seconds).max()?,
            tolerance: shown.map(|l| l.tolerance).fold(0.0, f64::max),
        })
    }

    /// Metrics waiting for their backfill, by name, with the range a learned target may take
    /// (`target / (1 + maxHeadroom)` to `target / (1 + minHeadroom)`): in mode Hpa the owned
    /// HPA keeps a learned target in that range until the backfill lands, so that a restart
    /// does not put the static target back for a while.
    pub fn pending(&self) -> BTreeMap<String, (f64, f64)> {
        self.metrics
            .iter()
            .flatten()
            .filter(|ml| ml.buffered.is_some())
            .map(|ml| {
                let c = ml.state.config();
                let (lo, hi) = ml.slo.as_ref().map_or((1.0, 1.0), |l| {
                    (l.config().min_target_ratio, l.config().max_target_ratio)
                });
                (
                    ml.name.clone(),
                    (
                        ml.static_target * lo / (1.0 + c.max_headroom),
                        ml.static_target * hi / (1.0 + c.min_headroom),
                    ),
                )
            })
            .collect()
    }

    /// Status of metric `index`: the learned target and the learned values.
    pub fn status(&self, index: usize) -> Option<MetricLearned> {
        let ml = self.metrics.get(index)?.as_ref()?;
        Some(MetricLearned {
            target: ml.target,
            learned: ml.shown,
            slo: ml.slo_shown,
        })
    }
}

/// What the owned HPA's behavior takes from learning ([`Learning::hpa_behavior`]), merged
/// with what the ScaledTarget's behavior sets explicitly by the methods below: the one place
/// for these rules, which the HPA ebb writes and the HPA the machine models both follow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LearnedBehavior {
    /// Scale-down stabilization window.
    pub window_seconds: u64,
    /// Scale-down tolerance (the HPA's `behavior.scaleDown.tolerance`).
    pub tolerance: f64,
}

impl LearnedBehavior {
    /// The scale-down window: the learned one, or the explicit one when longer.
    pub fn scale_down_window(&self, explicit: Option<i32>) -> i32 {
        let learned = i32::try_from(self.window_seconds).unwrap_or(i32::MAX);
        explicit.map_or(learned, |e| e.max(learned))
    }

    /// The scale-down tolerance: an explicit one stays, else the learned one, to the three
    /// decimals the HPA reads from the quantity ebb writes.
    pub fn scale_down_tolerance(&self, explicit: Option<f64>) -> f64 {
        explicit.unwrap_or((self.tolerance * 1000.0).round() / 1000.0)
    }

    /// The scale-up tolerance: an explicit one stays, else half the learned band. The HPA
    /// reads the reading itself on every sync, where mode Direct decides on the window's
    /// highest reading: half the band holds the rises that noise alone makes most often
    /// (the band is the one-sided 95 % of noise-driven moves between two readings), and the
    /// learned headroom, not a band, carries the safety. The HPA's default 10 % would hold
    /// every smaller scale-up, and the headroom with it (docs/adaptive.md, "Figures").
    pub fn scale_up_tolerance(&self, explicit: Option<f64>) -> f64 {
        explicit.unwrap_or((self.tolerance * 500.0).round() / 1000.0)
    }
}

/// What one metric learned, as status shows it ([`Learning::status`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricLearned {
    /// The learned target in use.
    pub target: f64,
    /// The learned values as last reported.
    pub learned: Learned,
    /// The SLO-learned per-pod target as last reported.
    pub slo: Option<SloTarget>,
}

/// Whether an owned HPA's learned target moves from `current` to `wanted`. A lower target
/// (more headroom: more pods) moves at once when it is more than 1 % lower: a headroom that
/// waited would leave the HPA short while the load grows, which is what the headroom is for.
/// A higher one (fewer pods) waits until it moved by more than the learned tolerance and the
/// last move is [`TARGET_CHANGE_INTERVAL`] old, so that the HPA is not rewritten on every
/// wobble of what was learned.
fn target_moves(
    current: f64,
    wanted: f64,
    tolerance: f64,
    changed_at: Option<Millis>,
    now: Millis,
) -> bool {
    if wanted < current * 0.99 {
        return true;
    }
    let due = changed_at.is_none_or(|t| now - t >= TARGET_CHANGE_INTERVAL.as_millis() as Millis);
    due && (wanted / current - 1.0).abs() > tolerance
}

impl MetricLearning {
    /// After a reading: report a material change of the learned values, and move the learned
    /// target when it moved by more than the tolerance and the last move is old enough.
    fn update(&mut self, now: Millis) -> Option<Change> {
        let learned = self.state.learned();
        let wanted = learned_target(self.per_pod_target(), &learned);
        if target_moves(
            self.target,
            wanted,
            learned.tolerance,
            self.target_changed_at,
            now,
        ) {
            self.target = wanted;
            self.target_changed_at = Some(now);
        }
        let mut messages = Vec::new();
        if let Some(m) = learned.change_from(&self.shown) {
            self.shown = learned;
            messages.push(m);
        }
        if let (Some(l), Some(shown)) = (&self.slo, &mut self.slo_shown)
            && let Some(m) = l.learned().change_from(shown)
        {
            *shown = l.learned();
            messages.push(m);
        }
        (!messages.is_empty()).then(|| Change {
            metric: self.name.clone(),
            message: messages.join("; "),
        })
    }

    /// The per-pod target the rules work against: the SLO-learned one, else the static one.
    fn per_pod_target(&self) -> f64 {
        self.slo
            .as_ref()
            .map_or(self.static_target, |l| l.learned().target)
    }

    fn recommend(&mut self, now: Millis, load: Option<f64>, current: i32) -> Recommendation {
        let current = current.max(0) as u32;
        let per_pod = self.per_pod_target();
        let reactive = load.map_or(current, |l| {
            let p = ceil_eps(l / per_pod);
            if p.is_finite() && p > 0.0 {
                p.min(u32::MAX as f64) as u32
            } else {
                0
            }
        });
        self.state.recommend(
            now,
            Inputs {
                reactive,
                load,
                target_per_pod: per_pod,
                current,
            },
        )
    }
}

/// The learned target: the per-pod target (the static one, or the one learned from the SLO)
/// over one plus the learned headroom (the per-pod target itself while the headroom has no
/// history).
pub fn learned_target(per_pod_target: f64, learned: &Learned) -> f64 {
    per_pod_target / (1.0 + learned.headroom.max(0.0))
}

/// The engine spec for a target whose proposals come from [`Learning::proposals`]: when every
/// metric learns, no default scale-down window (the learned window holds instead). What the
/// behavior sets explicitly stays: its scale-down window holds on top of the learned one; its
/// policies, `selectPolicy` and scale-up window limit the result, as do min/max replicas.
pub fn engine_spec(mut spec: HpaSpec, all_learning: bool) -> HpaSpec {
    if all_learning {
        spec.config.downscale_stabilization_seconds = 0;
    }
    spec
}

/// Whether every metric of the target learns (then the default scale-down window is off).
pub fn all_learning(learning: &Learning, metrics: usize) -> bool {
    learning.metrics.len() == metrics && learning.metrics.iter().all(Option::is_some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ConditionReason;
    use crate::engine::adaptive::Basis;
    use crate::engine::hpa::{ScalingState, decide_proposals};
    use crate::engine::{Behavior, NoData, Policy, ScalingRules, Target};
    // Fixtures are ScaledTargets as users write them, through the spec the machine gets.
    use crate::crd::ScaledTarget;

    impl Learning {
        fn sync_target(&mut self, st: &ScaledTarget, interval: Duration) -> Vec<Backfill> {
            let spec = st.machine_spec();
            let learn: Vec<_> = spec.metrics.iter().map(|m| m.learn.as_deref()).collect();
            let ms = interval.as_millis() as Millis;
            self.sync(spec.revision, spec.adaptive.as_deref(), &learn, ms)
        }
    }

    fn target(adaptive: serde_json::Value) -> ScaledTarget {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ebb.dev/v1alpha1",
            "kind": "ScaledTarget",
            "metadata": { "name": "t", "namespace": "n", "uid": "u1" },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "t" },
                "maxReplicas": 50,
                "pollingInterval": "60s",
                "adaptive": adaptive,
                "metrics": [
                    { "name": "rps", "prometheus": { "address": "http://p:9090", "query": "q" },
                      "target": { "type": "AverageValue", "averageValue": "100" } },
                    { "name": "total", "prometheus": { "address": "http://p:9090", "query": "q2" },
                      "target": { "type": "Value", "value": "1k" } }
                ]
            }
        }))
        .unwrap()
    }

    const MIN: Millis = 60_000;

    /// 1000, with a burst to 1500 for three readings in twenty.
    fn burst(k: i64) -> f64 {
        if k % 20 >= 17 { 1500.0 } else { 1000.0 }
    }

    fn learned_state(st: &ScaledTarget) -> Learning {
        let mut l = Learning::default();
        l.sync_target(st, Duration::from_secs(60));
        l
    }

    #[test]
    fn only_average_value_metrics_learn_and_only_when_enabled() {
        let st = target(serde_json::json!({}));
        let mut l = Learning::default();
        let jobs = l.sync_target(&st, Duration::from_secs(60));
        assert!(l.metrics[0].is_some() && l.metrics[1].is_none());
        assert_eq!(
            jobs.len(),
            1,
            "one backfill, for the Prometheus AverageValue metric"
        );
        assert_eq!((jobs[0].index, jobs[0].static_target), (0, 100.0));
        // Same spec: kept (no new backfill); another config: started afresh.
        let epoch = l.metrics[0].as_ref().unwrap().epoch;
        assert!(l.sync_target(&st, Duration::from_secs(60)).is_empty());
        assert_eq!(l.metrics[0].as_ref().unwrap().epoch, epoch);
        let other = target(serde_json::json!({ "maxHeadroom": 0.5 }));
        assert_eq!(l.sync_target(&other, Duration::from_secs(60)).len(), 1);
        assert_ne!(l.metrics[0].as_ref().unwrap().epoch, epoch);
        // Another interval too.
        assert_eq!(l.sync_target(&other, Duration::from_secs(30)).len(), 1);
        // Off: nothing learns.
        l.sync_target(
            &target(serde_json::json!({ "enabled": false })),
            Duration::from_secs(60),
        );
        assert!(!l.active());
        let mut absent = target(serde_json::json!({}));
        absent.spec.adaptive = None;
        l.sync_target(&absent, Duration::from_secs(60));
        assert!(!l.active());
        // With a generation, a poll of the same one does not match again; a new one does.
        let mut st = target(serde_json::json!({}));
        st.metadata.generation = Some(1);
        assert_eq!(l.sync_target(&st, Duration::from_secs(60)).len(), 1);
        assert!(l.sync_target(&st, Duration::from_secs(60)).is_empty());
        st.spec.adaptive = None;
        assert!(l.active(), "same generation: not looked at");
        st.metadata.generation = Some(2);
        l.sync_target(&st, Duration::from_secs(60));
        assert!(!l.active());
    }

    /// The risk correction is learned from polls short of capacity, which no history holds:
    /// after a restart it resumes from status, and a backfilled state takes the live one.
    #[test]
    fn the_risk_correction_resumes_from_status_and_outlives_a_backfill() {
        let mut st = target(serde_json::json!({}));
        st.status = Some(
            serde_json::from_value(serde_json::json!({
                "metrics": [{ "name": "rps", "learned": {
                    "headroom": 0.2, "headroomBasis": "History", "tolerance": 0.1,
                    "toleranceBasis": "Static", "scaleDownWindowSeconds": 300,
                    "scaleDownWindowBasis": "Static", "growthSamples": 5000,
                    "riskCorrection": -0.25 } }]
            }))
            .unwrap(),
        );
        let mut l = Learning::default();
        let jobs = l.sync_target(&st, Duration::from_secs(60));
        let correction = |l: &Learning| l.metrics[0].as_ref().unwrap().state.risk_correction();
        assert_eq!(correction(&l), -0.25);
        let job = &jobs[0];
        let rebuilt = AdaptiveState::backfill(
            job.config.clone(),
            job.interval,
            job.static_target,
            (0..100).map(|k| (k * MIN, burst(k))),
        )
        .unwrap();
        assert_eq!(rebuilt.risk_correction(), 0.0);
        assert!(l.install(0, job.epoch, rebuilt));
        assert_eq!(correction(&l), -0.25);
        // Status shows it again, to two decimals.
        let shown = crate::crd::LearnedStatus::from(&Learned {
            risk_correction: -0.2468,
            ..l.metrics[0].as_ref().unwrap().state.learned()
        });
        assert_eq!(shown.risk_correction, -0.25);
    }

    #[test]
    fn the_backfill_window_is_what_the_rules_need_and_bounded() {
        let c = AdaptiveConfig::default();
        // Three days for the period check, above 2,000 growth samples at 60 s (~34 h).
        assert_eq!(
            backfill_window(&c, Duration::from_secs(60)).as_secs(),
            3 * 86_400
        );
        let plain = AdaptiveConfig {
            forecast: false,
            phase_of_day: false,
            ..c.clone()
        };
        let w = backfill_window(&plain, Duration::from_secs(60)).as_secs();
        assert!((2000 * 60..=2100 * 60).contains(&w), "{w}");
        let long = AdaptiveConfig {
            min_history_seconds: 90 * 86_400,
            ..c
        };
        assert_eq!(
            backfill_window(&long, Duration::from_secs(15)).as_secs(),
            MAX_BACKFILL_POINTS * 15
        );
    }

    #[test]
    fn static_while_short_then_the_learned_target_and_one_change_event() {
        let st = target(serde_json::json!({ "minHistorySeconds": 0, "forecast": false }));
        let mut l = learned_state(&st);
        let ok = |v: f64| vec![Some(v), Some(0.0)];
        l.observe(&ok(1000.0), 0);
        let learned = l.status(0).unwrap();
        assert_eq!(
            learned.target, 100.0,
            "the static target while the history is short"
        );
        assert_eq!(learned.learned.headroom_basis, Basis::Static);
        assert_eq!(l.status(1), None);
        assert!(l.hpa_targets().is_empty());
        // Bursts of 50 % for three readings in twenty.
        let mut changes = Vec::new();
        for k in 1..3000 {
            changes.extend(l.observe(&ok(burst(k)), k * MIN));
        }
        let ml = l.metrics[0].as_ref().unwrap();
        assert_eq!(ml.state.learned().headroom_basis, Basis::History);
        assert_eq!(ml.shown.headroom_basis, Basis::History);
        assert!(!changes.is_empty());
        assert!(
            changes[0].message.contains("History"),
            "{}",
            changes[0].message
        );
        assert!(ml.target < 100.0, "{}", ml.target);
        assert_eq!(l.status(0).map(|s| s.target), Some(ml.target));
        assert_eq!(l.hpa_targets().get("rps"), Some(&ml.target));
    }

    #[test]
    fn a_lower_learned_target_moves_at_once_a_higher_one_beyond_the_tolerance_every_five_minutes() {
        let st = target(serde_json::json!({}));
        let mut l = learned_state(&st);
        let ml = l.metrics[0].as_mut().unwrap();
        let base = ml.state.learned();
        let with = |h: f64, tol: f64| Learned {
            headroom: h,
            tolerance: tol,
            ..base
        };
        // The decision rule alone, on hand-made learned values.
        let step = |ml: &mut MetricLearning, l: Learned, now: Millis| {
            let wanted = learned_target(ml.static_target, &l);
            if target_moves(ml.target, wanted, l.tolerance, ml.target_changed_at, now) {
                ml.target = wanted;
                ml.target_changed_at = Some(now);
            }
        };
        let near = |a: f64, b: f64| (a - b).abs() < 0.01;
        step(ml, with(0.25, 0.1), 0);
        assert_eq!(ml.target, 80.0);
        // More headroom: at once, within the five minutes.
        step(ml, with(0.5, 0.1), 60_000);
        assert!(near(ml.target, 66.67), "{}", ml.target);
        // Less headroom: not within five minutes of the last move.
        step(ml, with(0.25, 0.1), 120_000);
        assert!(near(ml.target, 66.67), "{}", ml.target);
        // Due, but within the tolerance (66.67 -> 68.97).
        step(ml, with(0.45, 0.1), 360_000);
        assert!(near(ml.target, 66.67), "{}", ml.target);
        step(ml, with(0.3, 0.1), 360_000);
        assert!(near(ml.target, 76.92), "{}", ml.target);
        // A lower target by less than 1 % waits like a higher one.
        step(ml, with(0.305, 0.1), 361_000);
        assert!(near(ml.target, 76.92), "{}", ml.target);
    }

    #[test]
    fn proposals_give_the_adaptive_count_through_bounds_and_policies() {
        let st = target(serde_json::json!({ "minHistorySeconds": 0, "forecast": false }));
        let mut l = learned_state(&st);
        for k in 0..3000 {
            l.observe(&[Some(burst(k)), Some(0.0)], k * MIN);
        }
        let headroom = l.metrics[0].as_ref().unwrap().state.learned().headroom;
        assert!(headroom > 0.0);
        let now = 3000 * MIN;
        let samples = [
            MetricSample {
                target: Target::AverageValue(100_000),
                observation: Ok(1_500_000),
            },
            MetricSample {
                target: Target::Value(1_000_000),
                observation: Ok(0),
            },
        ];
        let replicas = Replicas::all(15);
        let base = HpaSpec {
            min_replicas: 1,
            max_replicas: 50,
            behavior: Some(Box::default()),
            ..Default::default()
        };
        let (eq, reasons) = l.proposals(
            base.tolerances(),
            &samples,
            &[Some(1500.0), Some(0.0)],
            replicas,
            now,
        );
        let wanted = l.metrics[0]
            .as_mut()
            .unwrap()
            .recommend(now, Some(1500.0), 15)
            .replicas as i32;
        assert!(wanted > 15, "headroom over the plain ceil(1500 / 100) = 15");
        assert_eq!(eq[0], Ok(wanted));
        assert!(reasons[0].is_some() && reasons[1].is_none());
        let spec = engine_spec(base.clone(), false);
        let d = decide_proposals(
            &spec,
            &mut ScalingState::default(),
            replicas,
            eq.clone(),
            now,
        );
        assert_eq!(d.desired, wanted);
        // A scale-up policy of one pod per minute still limits it.
        let mut limited = base.clone();
        limited.behavior = Some(Box::new(Behavior {
            scale_up: ScalingRules {
                policies: vec![Policy::Pods {
                    value: 1,
                    period_seconds: 60,
                }],
                ..Default::default()
            },
            ..Default::default()
        }));
        let d = decide_proposals(
            &engine_spec(limited, false),
            &mut ScalingState::default(),
            replicas,
            eq.clone(),
            now,
        );
        assert_eq!(d.desired, 16);
        // And maxReplicas.
        let capped = HpaSpec {
            max_replicas: 15,
            ..base
        };
        let d = decide_proposals(
            &engine_spec(capped, false),
            &mut ScalingState::default(),
            replicas,
            eq,
            now,
        );
        assert_eq!(d.desired, 15);
        // A failed read stays a failure for the engine, never zero.
        let failed = [
            MetricSample {
                target: Target::AverageValue(100_000),
                observation: Err(NoData::SourceFailed),
            },
            samples[1],
        ];
        let (eq, _) = l.proposals(
            spec.tolerances(),
            &failed,
            &[None, Some(0.0)],
            replicas,
            now,
        );
        assert_eq!(eq[0], Err(ConditionReason::FailedGetExternalMetric));
    }

    #[test]
    fn engine_spec_drops_the_default_window_only() {
        let spec = HpaSpec {
            behavior: Some(Box::new(Behavior {
                scale_down: ScalingRules {
                    stabilization_window_seconds: Some(120),
                    tolerance: Some(0.2),
                    ..Default::default()
                },
                ..Default::default()
            })),
            ..Default::default()
        };
        let s = engine_spec(spec.clone(), true);
        // The tolerance belongs to the proposals of the metrics that do not learn.
        assert_eq!(s.tolerances().down, 0.2);
        assert_eq!(s.config.downscale_stabilization_seconds, 0);
        assert_eq!(
            s.behavior.unwrap().scale_down.stabilization_window_seconds,
            Some(120),
            "an explicit window stays"
        );
        let mixed = engine_spec(spec, false);
        assert_eq!(mixed.config.downscale_stabilization_seconds, 300);
    }

    #[test]
    fn the_served_value_is_raised_to_the_forecast_against_the_learned_target() {
        // A daily cycle at 15-minute readings, five days: the forecast knows the morning rise.
        // No headroom: a headroom above the forecast's rise would leave nothing to raise.
        let mut st = target(serde_json::json!({
            "minHistorySeconds": 0,
            "startupDelaySeconds": 3600,
            "phaseOfDay": false,
            "maxHeadroom": 0
        }));
        st.spec.polling_interval = Duration::from_secs(900).into();
        let mut l = Learning::default();
        l.sync_target(&st, Duration::from_secs(900));
        let q: Millis = 900_000;
        let daily = |k: i64| {
            let phase = (k % 96) as f64 / 96.0 * std::f64::consts::TAU;
            1000.0 + 600.0 * phase.sin()
        };
        let mut raised = None;
        for k in 0..96 * 5 {
            let v = daily(k);
            l.observe(&[Some(v), Some(0.0)], k * q);
            let ml = l.metrics[0].as_mut().unwrap();
            if let Some(f) = ml.state.forecast_ratio(k * q) {
                let (target, stat) = (ml.target, ml.static_target);
                let served = l.served(0, v, k * q);
                assert!((served - v * f * target / stat).abs() < 1e-9 || served == v);
                if served > v {
                    raised = Some((k, v, served));
                }
            }
        }
        let (k, v, served) = raised.expect("the forecast raised the served value");
        assert!(served > v, "{k}: {v} -> {served}");
    }

    #[test]
    fn the_served_value_is_the_load_without_a_forecast() {
        let st = target(serde_json::json!({}));
        let mut l = learned_state(&st);
        l.observe(&[Some(500.0), Some(1.0)], 0);
        assert_eq!(l.served(0, 500.0, 0), 500.0);
        assert_eq!(l.served(1, 7.0, 0), 7.0, "not learning: as read");
    }

    /// The target with an SLO on its first metric (p99 latency, objective 0.25 s), no headroom
    /// (so that the learned target is the SLO's) and a narrow band (the test's load sweeps far:
    /// its learned tolerance would hold the target).
    fn with_slo(status: Option<serde_json::Value>) -> ScaledTarget {
        let mut st = target(serde_json::json!({
            "minHistorySeconds": 0, "maxHeadroom": 0, "maxTolerance": 0.1
        }));
        st.spec.metrics[0].slo = Some(
            serde_json::from_value(serde_json::json!({
                "prometheus": { "address": "http://p:9090", "query": "p99" },
                "objective": 0.25
            }))
            .unwrap(),
        );
        if let Some(status) = status {
            st.status = Some(serde_json::from_value(status).unwrap());
        }
        st
    }

    #[test]
    fn an_slo_that_breaks_above_80_per_pod_brings_the_target_down() {
        let st = with_slo(None);
        let mut l = learned_state(&st);
        // 10 pods; the load per pod sweeps 40..110; latency breaks the SLO above 80 per pod.
        let mut changes = Vec::new();
        for k in 0..3000i64 {
            let per_pod = 40.0 + 70.0 * (k as f64 * 0.618_033_988_75).fract();
            let latency = if per_pod > 80.0 { 1.0 } else { 0.1 };
            changes.extend(l.observe_with_slo(
                &[Some(per_pod * 10.0), Some(0.0)],
                &[Some(latency), None],
                Some(10),
                k * MIN,
            ));
        }
        let ml = l.metrics[0].as_ref().unwrap();
        let slo = ml.slo.as_ref().unwrap().learned();
        assert!((78.0..81.0).contains(&slo.knee.unwrap()), "{slo:?}");
        assert!((ml.per_pod_target() - slo.target).abs() < 1e-9);
        assert!(ml.per_pod_target() < 75.0);
        // The change was reported, status shows it, and the learned target follows it.
        assert!(
            changes
                .iter()
                .any(|c| c.message.contains("slo target 100.000 ->")),
            "{:?}",
            changes.iter().map(|c| &c.message).collect::<Vec<_>>()
        );
        let learned = l.status(0).unwrap();
        let status = learned.slo.unwrap();
        assert_eq!(status.basis, crate::engine::slo::SloBasis::Knee);
        assert!(
            (learned.target - status.target).abs() < 1e-3,
            "{} vs {status:?}",
            learned.target
        );
        // The recommendation counts pods of the learned target: 1000 per second needs
        // ceil(1000 / target) pods at least.
        let ml = l.metrics[0].as_mut().unwrap();
        let rec = ml.recommend(3000 * MIN, Some(1000.0), 10);
        assert!(
            rec.replicas >= (1000.0 / slo.target).ceil() as u32,
            "{rec:?}"
        );
    }

    #[test]
    fn no_pods_or_no_signal_is_no_slo_reading() {
        let st = with_slo(None);
        let mut l = learned_state(&st);
        for k in 0..3000i64 {
            l.observe_with_slo(&[Some(500.0), Some(0.0)], &[None, None], Some(5), k * MIN);
        }
        for k in 3000..6000i64 {
            l.observe_with_slo(&[Some(500.0), Some(0.0)], &[Some(1.0), None], None, k * MIN);
        }
        let slo = l.metrics[0]
            .as_ref()
            .unwrap()
            .slo
            .as_ref()
            .unwrap()
            .learned();
        assert_eq!((slo.samples, slo.target), (0, 100.0));
    }

    #[test]
    fn the_slo_target_in_status_survives_a_restart() {
        let st = with_slo(Some(serde_json::json!({
            "metrics": [{
                "name": "rps",
                "learned": {
                    "headroom": 0.0, "headroomBasis": "Static", "tolerance": 0.1,
                    "toleranceBasis": "Static", "scaleDownWindowSeconds": 300,
                    "scaleDownWindowBasis": "Static", "growthSamples": 0,
                    "slo": { "target": 72.0, "basis": "Knee", "knee": 80.0, "samples": 3000 }
                }
            }]
        })));
        let l = learned_state(&st);
        let ml = l.metrics[0].as_ref().unwrap();
        assert_eq!(ml.per_pod_target(), 72.0);
        assert_eq!(ml.target, 72.0, "the HPA's target starts from it");
        assert_eq!(l.hpa_targets().get("rps"), Some(&72.0));
        // A target without an slo ignores it.
        let mut plain = st.clone();
        plain.spec.metrics[0].slo = None;
        let l = learned_state(&plain);
        assert_eq!(l.metrics[0].as_ref().unwrap().per_pod_target(), 100.0);
    }
}
