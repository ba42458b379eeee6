//! One ScaledTarget's decisions as a deterministic machine: what `ebb serve` decides and what
//! `ebb backtest` replays are the same calls on the same state.
//!
//! In the spirit of quinn-proto's connection: no I/O, no clock, no async. The caller feeds it
//! ([`TargetMachine::observe`]: the readings of one poll), asks it ([`TargetMachine::step`]:
//! what to do now, as a [`Step`] of intents), and tells it what came of the intents
//! ([`TargetMachine::applied`], [`TargetMachine::apply_failed`], [`TargetMachine::paused_at`]).
//! Time is an argument everywhere (milliseconds since an epoch the caller chooses).
//!
//! The machine owns:
//! - the scaling state of [`super::hpa::decide`] (stabilization windows, rate-limit events);
//! - learning per metric ([`super::learning`]), including the 5-minute rate limit of a learned
//!   target and the backfill gating (no scale-down on the short memory of a state that waits
//!   for its history);
//! - fallback: entered after `failureThreshold` readings in which every metric failed, left
//!   after as many good readings in a row (hysteresis: a flapping source does not toggle it);
//!   in mode Direct it holds at least the fallback count and never scales down; in mode Hpa it
//!   serves values that make the HPA hold the current count or go to the fallback count;
//! - pause, the escalation intents and their rate limit, and when it next wants to be stepped;
//! - in mode Hpa, a model of the HPA controller reading the served values (the same
//!   [`super::hpa::decide`] the HPA runs), so that the machine knows what the HPA will do:
//!   the backtest replays it at the HPA's sync period, and escalation works in mode Hpa too.
//!
//! "A wake-up is not a reading": a step that comes early (a recheck when a window expires, an
//! edit of the object) decides again on the last readings; only an observation at least half
//! an interval after the previous one counts as a new reading (for learning and fallback).

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};

use super::adaptive::{AdaptiveConfig, AdaptiveReason};
use super::conditions as cond;
use super::drain::{DrainSpec, QueueSignals, Throughput};
use super::hpa::{self, HpaSpec, Replicas, ScalingState, propose};
use super::learning::{self, Backfill, Change, LearnSpec, LearnedBehavior, Learning};
use super::stall::{StallWatch, StartupDelay};
use super::{Decision, MetricSample, Millis, NoData, Target};

/// How ebb acts on the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// ebb serves values to an HPA it owns; the HPA scales.
    #[default]
    Hpa,
    /// ebb scales the workload's `/scale` itself.
    Direct,
    /// ebb decides and reports, and changes nothing.
    Shadow,
}

/// A paused target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Scaling frozen where it is.
    Frozen,
    /// Set once to this count, then frozen.
    At(i32),
}

/// One metric as the machine sees it (what most metrics do not set is boxed: 256 bytes inline,
/// now 72).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// The metric's name.
    pub name: String,
    /// Its target, or why the ScaledTarget's target cannot be read.
    pub target: Result<Target, String>,
    /// How it learns, when it does (AverageValue metrics with `spec.adaptive` on).
    pub learn: Option<Box<LearnSpec>>,
    /// A queue scaled on its work (`DrainTime`): the reading is its backlog, the value the
    /// machine decides on is the work, and `target` is the set per-pod throughput.
    pub drain: Option<Box<DrainSpec>>,
    /// The reading at or below which this metric counts as idle (0 unless set). A DrainTime
    /// metric compares its backlog, not its work.
    pub activation: f64,
}

/// Scale to and from zero: ebb owns 0 <-> `hpa.min_replicas` (at least 1; the HPA, or ebb's
/// own decisions in mode Direct, own the rest). Zero only after every metric was read at or
/// below its activation for `cooldown` since the last reading above it, never on a failing
/// source, and never within `initial_cooldown` of the target's creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleSpec {
    /// Quiet time after the last activity before scaling to zero.
    pub cooldown: Millis,
    /// No scale to zero this long after `created`.
    pub initial_cooldown: Millis,
    /// When the target was created (`None`: when the machine first stepped).
    pub created: Option<Millis>,
}

/// What one poll read, index-aligned with `spec.metrics` (a slice shorter than the metrics
/// reads as "not read" for the rest).
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    /// Each metric's value (a DrainTime metric's backlog); a value that is not finite is no
    /// data.
    pub readings: &'a [Reading],
    /// The SLO signals (`None` where a metric has none or its read failed).
    pub slo: &'a [Option<f64>],
    /// DrainTime metrics: the queue's rates and waiting messages.
    pub queues: &'a [Option<QueueSignals>],
    /// The workload's pods (the SLO rule).
    pub pods: Option<i32>,
    /// The workload's Ready pods (DrainTime: the ones that serve the queue, whose throughput
    /// is learned).
    pub ready: Option<i32>,
    /// What each pod of the workload says, when the caller watches them: stalled scale-ups
    /// and the learned startup delay (`engine::stall`). `None`: neither is judged.
    pub workload_pods: Option<&'a [super::stall::PodState]>,
}

/// What to do when every source fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallbackSpec {
    /// Readings in a row in which every metric failed before fallback starts (and good ones
    /// in a row before it ends).
    pub failure_threshold: u32,
    /// Replicas to hold at least while in fallback.
    pub replicas: i32,
}

/// When to ask a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscalationSpec {
    /// Failed scaling attempts in a row before escalating.
    pub failure_threshold: u32,
    /// Least time between two escalations of the same reason.
    pub min_interval: Millis,
}

/// Everything the machine needs to know of a ScaledTarget, free of Kubernetes types (built by
/// `crd::ScaledTarget::machine_spec`, or by the backtest). The controller keeps one per target:
/// what most targets do not set is boxed (with it inline a spec was 408 bytes, now 168).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// How ebb acts.
    pub mode: Mode,
    /// Bounds, behavior and controller settings (those of the owned HPA in mode Hpa).
    pub hpa: HpaSpec,
    /// The polling interval.
    pub interval: Millis,
    /// The metrics that decide, in `spec.metrics` order; with a formula, the formula alone.
    pub metrics: Vec<MetricSpec>,
    /// A composite metric: the readings fed in are its inputs, and its value is the one
    /// reading of `metrics[0]`. `Err`: it does not parse (the step says why, and decides
    /// nothing).
    pub formula: Option<Box<Result<super::formula::Formula, String>>>,
    /// Learning from history, when on.
    pub adaptive: Option<Box<AdaptiveConfig>>,
    /// Fallback, when configured.
    pub fallback: Option<FallbackSpec>,
    /// Escalation, when configured.
    pub escalation: Option<Box<EscalationSpec>>,
    /// Scale to zero, when the target may go there.
    pub idle: Option<Box<IdleSpec>>,
    /// Pause, when paused.
    pub pause: Option<Pause>,
    /// The object's (uid, generation): learning is matched to the spec again only when it
    /// changes (`None`: on every step).
    pub revision: Option<(String, i64)>,
}

/// One metric's reading: a finite value, or why there is none (never zero).
pub type Reading = Result<f64, NoData>;

/// Why ebb asks a human for help (serialized as its name; a stall's pattern goes with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EscalationReason {
    /// At maxReplicas and the metrics ask for more.
    AtMaxReplicas,
    /// Scaling the workload failed on several attempts in a row.
    ScalingFailing,
    /// The pods of a scale-up do not become Ready, for this reason.
    ScalingStalled(super::stall::Pattern),
}

impl EscalationReason {
    /// Its name, as webhooks receive it.
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationReason::AtMaxReplicas => "AtMaxReplicas",
            EscalationReason::ScalingFailing => "ScalingFailing",
            EscalationReason::ScalingStalled(_) => "ScalingStalled",
        }
    }
}

impl serde::Serialize for EscalationReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An escalation the caller should send (already rate-limited by the machine).
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    /// Why.
    pub reason: EscalationReason,
    /// Replicas now.
    pub current: i32,
    /// Replicas ebb wanted.
    pub desired: i32,
    /// The metrics' unbounded demand, when known.
    pub demanded: Option<i32>,
    /// What ebb did before escalating.
    pub tried: Vec<String>,
    /// A stalled scale-up: the diagnosis.
    pub stall: Option<super::stall::Stall>,
}

/// What the caller should do on the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Mode Direct: set `/scale` from `from` to `to`, then call [`TargetMachine::applied`] or
    /// [`TargetMachine::apply_failed`].
    Scale { from: i32, to: i32 },
    /// Mode Shadow: report that ebb would scale from `from` to `to` (once per new count).
    Report { from: i32, to: i32 },
    /// Paused at a count not yet applied: set `/scale` to it, then call
    /// [`TargetMachine::paused_at`]. In mode Hpa the owned HPA is removed first.
    PauseAt(i32),
}

/// A status condition the step sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Its type ([`cond`]).
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// Its reason ([`cond`], or an HPA reason).
    pub reason: String,
    /// A sentence.
    pub message: String,
}

/// Mode Hpa: what the owned HPA should say beyond the ScaledTarget's own spec.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaIntent {
    /// Learned AverageValue targets by metric name (only those that differ from the static).
    pub targets: BTreeMap<String, f64>,
    /// Metrics waiting for their backfill, with the range a learned target may take: the HPA
    /// keeps a target it has in that range until the backfill lands.
    pub pending: BTreeMap<String, (f64, f64)>,
    /// Learned scale-down window and tolerances, when every metric learns.
    pub behavior: Option<LearnedBehavior>,
    /// Whether the owned HPA should exist (not while paused).
    pub present: bool,
}

/// One step's outcome: the decision and the intents the caller carries out.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Replicas wanted now. Mode Hpa: what the HPA will set, as the machine models it.
    pub desired: i32,
    /// What to do on the workload.
    pub action: Action,
    /// The rule that decided, for the audit trail ("ScaleUpLimit after Headroom", "Fallback").
    pub rule: String,
    /// The metric whose proposal won, if any.
    pub metric: Option<usize>,
    /// The largest unbounded per-metric proposal, if any.
    pub proposal: Option<i32>,
    /// Mode Hpa: the value to serve per metric (index-aligned with the spec's metrics).
    pub served: Vec<Reading>,
    /// Mode Hpa: the owned HPA's learned part.
    pub hpa: Option<HpaIntent>,
    /// Conditions to set.
    pub conditions: Vec<Condition>,
    /// Escalations to send.
    pub escalations: Vec<Escalation>,
    /// The learned target per metric in use (`None` where it does not learn).
    pub learned_targets: Vec<Option<f64>>,
    /// When the machine wants its next step before the next regular reading (a window or a
    /// rate limit that held this decision back expires then).
    pub next_wake: Option<Millis>,
    /// A scale-up found stalled at this step (a `ScalingStalled` Event; once per stall).
    pub stalled: Option<super::stall::Stall>,
}

impl Step {
    /// Sets `new` in place of the condition of its type, if the step has one.
    fn replace_condition(&mut self, new: Condition) {
        if let Some(c) = self.conditions.iter_mut().find(|c| c.type_ == new.type_) {
            *c = new;
        }
    }
}

/// What an observation gave.
#[derive(Debug, Default)]
pub struct Observed {
    /// Whether it counted as a new reading (not an early wake-up).
    pub reading: bool,
    /// Material changes of learned values (`LearnedChanged` Events).
    pub changes: Vec<Change>,
    /// Backfills to run for metrics that started learning.
    pub backfills: Vec<Backfill>,
}

/// A fallback entered within this long of the last exit counts as the same flapping source.
const FLAP_MEMORY: Millis = 600_000;
/// Leaving fallback takes at most this many times `failureThreshold` good readings.
const MAX_EXIT_FACTOR: u32 = 8;

/// Fallback state with hysteresis.
#[derive(Debug, Default, Clone, Copy)]
struct FallbackState {
    /// Readings in a row in which every metric failed.
    failed: u32,
    /// Readings in a row with a value since fallback began.
    ok: u32,
    active: bool,
    /// Entries in a row each within [`FLAP_MEMORY`] of the exit before it.
    flaps: u32,
    exited_at: Option<Millis>,
}

impl FallbackState {
    fn update(&mut self, now: Millis, threshold: u32, all_failed: bool) {
        if all_failed {
            self.failed += 1;
            self.ok = 0;
            if self.failed >= threshold && !self.active {
                self.active = true;
                let again = self.exited_at.is_some_and(|t| now - t <= FLAP_MEMORY);
                self.flaps = if again { self.flaps + 1 } else { 1 };
            }
        } else {
            self.failed = 0;
            // Leaving fallback takes as many good readings in a row as entering it took failed
            // ones, twice as many each time the source fails again soon after (up to
            // MAX_EXIT_FACTOR times): a flapping source keeps the target in fallback instead
            // of toggling it every time it comes up.
            if self.active {
                self.ok += 1;
                let factor = 1u32 << self.flaps.saturating_sub(1).min(MAX_EXIT_FACTOR.ilog2());
                if self.ok >= threshold.saturating_mul(factor) {
                    self.active = false;
                    self.ok = 0;
                    self.exited_at = Some(now);
                }
            }
        }
    }
}

/// The decisions of one ScaledTarget.
#[derive(Default)]
pub struct TargetMachine {
    /// Modes Direct and Shadow: ebb's own decisions.
    scaling: ScalingState,
    /// Mode Hpa: the HPA controller's state as the machine models it.
    hpa_model: ScalingState,
    learning: Learning,
    /// DrainTime metrics: the per-pod throughput, set or learned.
    throughput: Vec<Option<Throughput>>,
    /// The last readings, per metric (a DrainTime metric's work).
    readings: Vec<Reading>,
    /// Mode Hpa: the values last served, per metric.
    served: Vec<Reading>,
    /// When the last reading was observed.
    last_reading: Option<Millis>,
    fallback: FallbackState,
    /// Failed scaling attempts in a row.
    scale_failures: u32,
    /// When each reason was last escalated.
    escalated: BTreeMap<&'static str, Millis>,
    /// Mode Shadow: the last count reported (one report per change, not per step).
    reported: Option<i32>,
    /// The paused count applied.
    paused_applied: Option<i32>,
    /// Whether the last readings had a metric above its activation.
    activity: Activity,
    /// When a reading was last above its activation (a fresh machine counts its first step:
    /// a restarted ebb waits a whole cooldown before scaling to zero).
    last_active: Option<Millis>,
    /// The first step (stands in for the creation time when the spec has none).
    first_step: Option<Millis>,
    /// The latest scale-up, until its pods are Ready (`engine::stall`).
    stall: StallWatch,
    /// The startup delay learned from the workload's pods.
    startup: StartupDelay,
    /// Whether the caller watches the pods (the ScalingStalled condition is set only then).
    pods_watched: bool,
    /// A stall found at the last observation, to escalate at the next step.
    stall_found: bool,
    /// The workload's count at the last step: a rise is a scale-up to watch, whoever made it.
    last_spec: Option<i32>,
    /// The learned startup delay in force as the learning horizon (seconds).
    startup_in_force: Option<u64>,
    /// While learning: the counts the workload was asked for at the last steps, oldest first,
    /// as many as the startup delay spans. Boxed: most targets do not learn (8 bytes inline
    /// instead of a deque's 32: the machine is 712 bytes, 736 unboxed, 696 before it).
    #[allow(clippy::box_collection)]
    asked: Option<Box<VecDeque<i32>>>,
    /// The Ready pods at the last step (those serving while the next reading accrues), when
    /// at least as many as asked at each step the startup delay spans: a poll short then is
    /// the learned headroom's to correct. One short with fewer Ready is the pods' delay (a
    /// stall, slow starts, a workload ebb only just took over), which the stall watch judges.
    ready_as_asked: Option<i32>,
}

/// The learned startup delay stays within this factor of `adaptive.startupDelaySeconds`.
pub const STARTUP_BOUND: u64 = 4;
/// The CRD's bound on `startupDelaySeconds`.
const MAX_STARTUP_SECONDS: u64 = 3600;

/// What the last readings say of the target's work.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
enum Activity {
    /// This metric reads this value, above its activation (the first such).
    Active(usize, f64),
    /// Every metric was read at or below its activation.
    Idle,
    /// None above its activation, and some not read: no evidence either way.
    #[default]
    Unknown,
}

impl TargetMachine {
    /// A machine with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Another replica leads: this one's own scaling decisions are not carried out, so their
    /// memory goes. When it leads again its first decision starts a stabilization window of its
    /// own rather than scale down on a memory with a gap in it (learning and the model of the
    /// HPA go on: they follow the readings, not the decisions).
    pub fn stand_by(&mut self) {
        self.scaling = ScalingState::default();
    }

    /// The learning state (the controller installs backfilled states into it).
    pub fn learning_mut(&mut self) -> &mut Learning {
        &mut self.learning
    }

    /// What metric `index` learned, when it learns.
    pub fn learned(&self, index: usize) -> Option<learning::MetricLearned> {
        self.learning.status(index)
    }

    /// Whether fallback is on.
    pub fn in_fallback(&self) -> bool {
        self.fallback.active
    }

    /// The per-pod throughput in force for DrainTime metric `index`, and whether it was
    /// learned.
    pub fn throughput(&self, index: usize) -> Option<(f64, bool)> {
        let t = self.throughput.get(index)?.as_ref()?;
        Some((t.current(), t.learned().is_some()))
    }

    /// The value metric `index` is decided on (a DrainTime metric's work), as last observed.
    pub fn value(&self, index: usize) -> Option<Reading> {
        self.readings.get(index).copied()
    }

    /// Feeds one poll's inputs.
    pub fn observe(&mut self, now: Millis, spec: &TargetSpec, inputs: Inputs<'_>) -> Observed {
        if let Some(pods) = inputs.workload_pods {
            self.startup.observe(pods);
        }
        let learn: Vec<Option<&LearnSpec>> =
            spec.metrics.iter().map(|m| m.learn.as_deref()).collect();
        let adaptive = self.adaptive_in_force(spec);
        let backfills = self.learning.sync(
            spec.revision.clone(),
            adaptive.as_ref(),
            &learn,
            spec.interval,
        );
        self.sync_throughput(spec);
        let combined: [Reading; 1];
        let readings = match spec.formula.as_deref() {
            Some(Ok(f)) => {
                combined = [f.reading(inputs.readings)];
                &combined[..]
            }
            Some(Err(_)) => &[],
            None => inputs.readings,
        };
        self.readings.clear();
        let throughput = &mut self.throughput;
        self.readings
            .extend(readings.iter().enumerate().map(|(i, r)| {
                let finite = match r {
                    Ok(v) if v.is_finite() => Ok(*v),
                    Ok(_) => Err(NoData::SourceFailed),
                    Err(e) => Err(*e),
                };
                match throughput.get_mut(i).and_then(Option::as_mut) {
                    Some(t) => {
                        let signals = inputs.queues.get(i).and_then(Option::as_ref);
                        t.work(now, finite, signals, inputs.ready)
                    }
                    None => finite,
                }
            }));
        self.activity = activity(spec, readings);
        if let Some(pods) = inputs.workload_pods {
            self.pods_watched = true;
            let budget = self.startup.budget(static_startup_delay(spec));
            self.stall_found |= self.stall.observe(now, pods, budget).is_some();
        }
        let reading = self
            .last_reading
            .is_none_or(|last| now - last >= spec.interval / 2);
        if !reading {
            return Observed {
                reading,
                changes: Vec::new(),
                backfills,
            };
        }
        self.last_reading = Some(now);
        if let Some(f) = &spec.fallback {
            let all_failed = self.readings.iter().all(Result::is_err);
            self.fallback
                .update(now, f.failure_threshold.max(1), all_failed);
        }
        let values: Vec<Option<f64>> = self.readings.iter().map(|r| r.ok()).collect();
        if let Some(ready) = self.ready_as_asked {
            self.learning.track_supply(&values, ready);
        }
        let mut changes = self
            .learning
            .observe_with_slo(&values, inputs.slo, inputs.pods, now);
        for (i, (t, m)) in self.throughput.iter_mut().zip(&spec.metrics).enumerate() {
            if let Some(t) = t {
                let signals = inputs.queues.get(i).and_then(Option::as_ref);
                changes.extend(t.observe(now, &m.name, signals, inputs.ready.or(inputs.pods)));
            }
        }
        Observed {
            reading,
            changes,
            backfills,
        }
    }

    /// One throughput per DrainTime metric; a changed DrainTime spec starts afresh.
    /// None at all when no metric drains: most targets keep no slots (a `Throughput` is a
    /// quarter kilobyte, and a vector grown by one takes four).
    fn sync_throughput(&mut self, spec: &TargetSpec) {
        let slots = if spec.metrics.iter().any(|m| m.drain.is_some()) {
            spec.metrics.len()
        } else {
            0
        };
        if self.throughput.len() != slots {
            self.throughput.resize(slots, None);
            self.throughput.shrink_to_fit();
        }
        for (t, m) in self.throughput.iter_mut().zip(&spec.metrics) {
            match (&m.drain, t.as_ref()) {
                (Some(d), Some(have)) if *have.spec() == **d => {}
                (Some(d), _) => *t = Some(Throughput::new(**d)),
                (None, _) => *t = None,
            }
        }
    }

    /// The target a metric is decided against: a DrainTime metric's is the per-pod
    /// throughput in force.
    fn target_of(&self, index: usize, m: &MetricSpec) -> Option<Target> {
        match self.throughput.get(index).and_then(Option::as_ref) {
            Some(t) => Some(Target::AverageValue(to_milli(t.current()).max(1))),
            None => m.target.as_ref().ok().copied(),
        }
    }

    /// What to do at `now` with the workload at `replicas`, on the last readings.
    pub fn step(&mut self, now: Millis, spec: &TargetSpec, replicas: Replicas) -> Step {
        self.remember_asked(spec, replicas.spec);
        self.ready_as_asked = self
            .asked
            .as_ref()
            .and_then(|asked| asked.iter().min())
            .is_some_and(|&asked| replicas.ready >= asked)
            .then_some(replicas.ready);
        let conditions = vec![self.active_condition(spec)];
        if matches!(self.activity, Activity::Active(..)) || self.last_active.is_none() {
            self.last_active = Some(now);
        }
        self.first_step.get_or_insert(now);
        let learned_targets = (0..spec.metrics.len())
            .map(|i| self.learning.status(i).map(|l| l.target))
            .collect();
        let mut step = Step {
            desired: replicas.spec,
            action: Action::None,
            rule: String::new(),
            metric: None,
            proposal: None,
            served: Vec::new(),
            hpa: None,
            conditions,
            escalations: Vec::new(),
            learned_targets,
            next_wake: None,
            stalled: None,
        };
        if let Some(pause) = spec.pause {
            self.step_paused(spec, pause, replicas, &mut step);
            return step;
        }
        self.paused_applied = None;
        step.conditions.push(condition(
            cond::PAUSED,
            false,
            cond::NOT_PAUSED,
            "scaling is automatic",
        ));
        if let Some(Err(e)) = spec.formula.as_deref() {
            step.conditions.push(condition(
                cond::READY,
                false,
                cond::INVALID_FORMULA,
                &format!("formula: {e}"),
            ));
            return step;
        }
        if let Some((name, e)) = spec
            .metrics
            .iter()
            .find_map(|m| m.target.as_ref().err().map(|e| (&m.name, e)))
        {
            // A target that cannot be read is a configuration error, reported and not guessed.
            step.conditions.push(condition(
                cond::READY,
                false,
                cond::INVALID_TARGET,
                &format!("metric {name}: {e}"),
            ));
            return step;
        }
        match spec.mode {
            Mode::Direct | Mode::Shadow => self.step_scale(now, spec, replicas, &mut step),
            Mode::Hpa => self.step_hpa(now, spec, replicas, &mut step),
        }
        if let Some(idle) = spec.idle.as_deref().copied() {
            self.step_idle(now, spec, idle, replicas, &mut step);
        }
        self.step_stall(now, spec, replicas, &mut step);
        // Demand above maxReplicas while already there: automation cannot cope, tell a human.
        let max = spec.hpa.max_replicas;
        if step.desired >= max && step.proposal.is_some_and(|p| p > max) {
            let tried = vec![format!("scaled to maxReplicas {max}")];
            self.escalate(
                now,
                spec,
                EscalationReason::AtMaxReplicas,
                replicas.spec,
                &mut step,
                tried,
            );
        }
        step
    }

    /// Keeps the count the workload was asked for at this step (by ebb, or by the HPA in mode
    /// Hpa) while learning (for `ready_as_asked`): as many as the startup delay spans, this
    /// one included. The pods Ready are at least the fewest of those unless some start late.
    fn remember_asked(&mut self, spec: &TargetSpec, asked: i32) {
        if !self.learning.active() {
            self.asked = None;
            return;
        }
        // The startup delay the learning horizon spans: the learned one when in force.
        let seconds = self
            .startup_in_force
            .or(spec.adaptive.as_ref().map(|a| a.startup_delay_seconds))
            .unwrap_or(0);
        let startup = seconds as Millis * 1000;
        let steps = ((startup + spec.interval - 1) / spec.interval.max(1)).max(1) as usize;
        let kept = self.asked.get_or_insert_with(Default::default);
        while kept.len() >= steps {
            kept.pop_front();
        }
        kept.push_back(asked);
    }

    /// The Active condition, naming the metric that keeps the target active.
    fn active_condition(&self, spec: &TargetSpec) -> Condition {
        let name = |i: usize| spec.metrics.get(i).map_or("-", |m| m.name.as_str());
        match self.activity {
            Activity::Active(i, value) => {
                let activation = spec.metrics.get(i).map_or(0.0, |m| m.activation);
                condition(
                    cond::ACTIVE,
                    true,
                    cond::ABOVE_ACTIVATION,
                    &format!("metric {} reads {value} (activation {activation})", name(i)),
                )
            }
            Activity::Idle => condition(
                cond::ACTIVE,
                false,
                cond::BELOW_ACTIVATION,
                "every metric reads at or below its activation",
            ),
            Activity::Unknown => condition(
                cond::ACTIVE,
                false,
                cond::ACTIVITY_UNKNOWN,
                "no metric reads above its activation and some were not read",
            ),
        }
    }

    /// Scale to and from zero over the mode's own decision: at 0, wake to the lower bound when
    /// a metric reads above its activation and stay otherwise (a failing source wakes
    /// nothing: no wake-up storm when a shared Prometheus goes down); above 0, go to 0 once
    /// every metric has read at or below its activation for the cooldown (never in fallback,
    /// never on readings that failed).
    fn step_idle(
        &mut self,
        now: Millis,
        spec: &TargetSpec,
        idle: IdleSpec,
        replicas: Replicas,
        step: &mut Step,
    ) {
        let mut set = |machine: &mut Self, to: i32, rule: &'static str| {
            step.desired = to;
            step.rule = rule.to_string();
            // The mode's decision at 0 reads as the HPA's ScalingDisabled; the idle rule is what
            // decided, and no bound or rate limited it.
            step.replace_condition(condition(
                cond::SCALING_LIMITED,
                false,
                rule,
                &format!("idle rule: {rule} (scale to zero, not a limit)"),
            ));
            if let Some(ready) = step
                .conditions
                .iter_mut()
                .find(|c| c.type_ == cond::READY && c.reason == cond::DECIDED)
            {
                ready.message = rule.to_string();
            }
            step.action = match spec.mode {
                _ if to == replicas.spec => Action::None,
                Mode::Direct | Mode::Hpa => Action::Scale {
                    from: replicas.spec,
                    to,
                },
                Mode::Shadow if machine.reported.replace(to) != Some(to) => Action::Report {
                    from: replicas.spec,
                    to,
                },
                Mode::Shadow => Action::None,
            };
        };
        if replicas.spec == 0 {
            match self.activity {
                Activity::Active(i, _) => {
                    set(self, spec.hpa.min_replicas.max(1), cond::ACTIVATED);
                    step.metric = Some(i);
                }
                Activity::Idle | Activity::Unknown => {
                    set(self, 0, cond::IDLE);
                    step.metric = None;
                    step.next_wake = None;
                }
            }
            return;
        }
        if self.activity != Activity::Idle || self.fallback.active {
            return;
        }
        let last_active = self.last_active.unwrap_or(now);
        let created = idle.created.or(self.first_step).unwrap_or(now);
        let due = (last_active + idle.cooldown).max(created + idle.initial_cooldown);
        if now >= due {
            set(self, 0, cond::IDLE_AFTER_COOLDOWN);
            step.metric = None;
            step.next_wake = None;
        } else if due < now + spec.interval {
            step.next_wake = Some(step.next_wake.map_or(due, |w| w.min(due)));
        }
    }

    /// A scale-up whose pods do not become Ready: watch each rise of the count, and while one
    /// is stalled add nothing (mode Hpa: the served values already hold the HPA), keep what
    /// there is, say why, and escalate once per pattern.
    fn step_stall(&mut self, now: Millis, spec: &TargetSpec, replicas: Replicas, step: &mut Step) {
        if let Some(last) = self.last_spec.replace(replicas.spec)
            && last != replicas.spec
        {
            self.stall.scaled(now, last, replicas.spec);
        }
        if !self.pods_watched {
            return;
        }
        let holds = self.stall.holds_scale_up(now);
        if holds && step.desired > replicas.spec {
            step.desired = replicas.spec;
            step.action = Action::None;
            step.rule = cond::SCALING_STALLED.to_string();
        }
        if let Some(retry) = self.stall.retry_at().filter(|_| holds) {
            step.next_wake = Some(step.next_wake.map_or(retry, |w| w.min(retry)));
        }
        let Some(stall) = self.stall.stall().cloned() else {
            step.conditions.push(condition(
                cond::SCALING_STALLED,
                false,
                cond::SCALE_UPS_READY,
                "every scale-up's pods became Ready",
            ));
            return;
        };
        let what = if holds {
            match self.stall.retry_at() {
                Some(t) => format!(
                    "adding no replicas, holding {}; one more try in {} s",
                    replicas.spec,
                    (t - now).max(0) / 1000
                ),
                None => format!("holding {} while one more try starts", replicas.spec),
            }
        } else {
            "the backoff is over: one more try when the metrics ask for it".to_string()
        };
        step.conditions.push(condition(
            cond::SCALING_STALLED,
            true,
            stall.pattern.as_str(),
            &format!(
                "{} of {} pods not Ready {} s after the scale-up ({} Ready): {}: {} (pods {}); {what}",
                stall.not_ready,
                stall.wanted,
                (stall.since - stall.scaled_at) / 1000,
                stall.ready,
                stall.pattern.as_str(),
                stall.message,
                stall.pods.join(", "),
            ),
        ));
        if std::mem::take(&mut self.stall_found) {
            step.stalled = Some(stall.clone());
            let tried = vec![
                format!(
                    "stopped adding replicas at {} (pods of the last scale-up not Ready)",
                    replicas.spec
                ),
                "kept the replicas there are (a crash is no reason to scale down)".to_string(),
            ];
            self.escalate(
                now,
                spec,
                EscalationReason::ScalingStalled(stall.pattern),
                replicas.spec,
                step,
                tried,
            );
            if let Some(e) = step.escalations.last_mut()
                && matches!(e.reason, EscalationReason::ScalingStalled(_))
            {
                e.stall = Some(stall);
            }
        }
    }

    /// The adaptive configuration in force: the spec's, with the startup delay learned from
    /// the workload's pods once there is one as the horizon of the learned headroom and the
    /// forecast. It stays within a factor [`STARTUP_BOUND`] of the spec's (the fallback and the
    /// bound: a pod that waited long for room does not stretch the horizon without limit), and
    /// moves only when the horizon in polls changes and by more than a quarter, since a new
    /// horizon starts learning afresh.
    fn adaptive_in_force(&mut self, spec: &TargetSpec) -> Option<AdaptiveConfig> {
        let mut config = (**spec.adaptive.as_ref()?).clone();
        let Some((learned, _)) = self.startup.learned() else {
            return Some(config);
        };
        let set = config.startup_delay_seconds.max(1);
        let learned = (learned.max(0) as u64).div_ceil(1000).clamp(
            (set / STARTUP_BOUND).max(1),
            (set * STARTUP_BOUND).min(MAX_STARTUP_SECONDS),
        );
        // What is in force now: the learned delay taken before, else the spec's. A delay that
        // gives the same horizon in polls, or lies within a quarter of it, changes nothing.
        let current = self.startup_in_force.unwrap_or(set);
        let steps = |seconds: u64| (seconds * 1000).div_ceil(spec.interval.max(1) as u64);
        if steps(learned) != steps(current) && learned.abs_diff(current) * 4 > current {
            self.startup_in_force = Some(learned);
        }
        if let Some(s) = self.startup_in_force {
            config.startup_delay_seconds = s;
        }
        Some(config)
    }

    /// The startup delay used as the learning horizon, when learned from the pods.
    pub fn startup_in_force(&self) -> Option<u64> {
        self.startup_in_force
    }

    /// The learned startup delay (pod created -> Ready) and the starts it rests on.
    pub fn learned_startup_delay(&self) -> Option<(Millis, usize)> {
        self.startup.learned()
    }

    /// Mode Hpa between two steps: one more sync of the modelled HPA on the values last
    /// served (the HPA syncs every 15 s whatever ebb's interval). Returns its count.
    pub fn hpa_sync(&mut self, now: Millis, spec: &TargetSpec, replicas: Replicas) -> i32 {
        let owned = self.owned_hpa_spec(spec);
        let samples = self.hpa_samples(spec, &self.served.clone());
        let d = hpa::decide(&owned, &mut self.hpa_model, replicas, &samples, now);
        if d.desired != replicas.spec {
            self.hpa_model.store_scale_event(
                owned.behavior.as_deref(),
                replicas.spec,
                d.desired,
                now,
            );
        }
        d.desired
    }

    /// The caller scaled the workload from `from` to `to` as a step asked.
    pub fn applied(&mut self, now: Millis, spec: &TargetSpec, from: i32, to: i32) {
        self.scaling
            .store_scale_event(spec.hpa.behavior.as_deref(), from, to, now);
        self.scale_failures = 0;
    }

    /// Scaling from `from` to `to` failed with `error`. Returns the escalation to send when
    /// the failures in a row reached the threshold (rate-limited), and the count of failures.
    pub fn apply_failed(
        &mut self,
        now: Millis,
        spec: &TargetSpec,
        from: i32,
        to: i32,
        error: &str,
    ) -> (u32, Option<Escalation>) {
        self.scale_failures += 1;
        let failures = self.scale_failures;
        let threshold = spec
            .escalation
            .as_deref()
            .map_or(u32::MAX, |e| e.failure_threshold.max(1));
        if failures < threshold {
            return (failures, None);
        }
        let mut step = Step {
            desired: to,
            action: Action::None,
            rule: String::new(),
            metric: None,
            proposal: None,
            served: Vec::new(),
            hpa: None,
            conditions: Vec::new(),
            escalations: Vec::new(),
            learned_targets: Vec::new(),
            next_wake: None,
            stalled: None,
        };
        let tried = vec![format!(
            "scaling {from} -> {to} failed ({failures} in a row): {error}"
        )];
        self.escalate(
            now,
            spec,
            EscalationReason::ScalingFailing,
            from,
            &mut step,
            tried,
        );
        (failures, step.escalations.pop())
    }

    /// The paused count `n` was applied.
    pub fn paused_at(&mut self, n: i32) {
        self.paused_applied = Some(n);
    }

    fn escalate(
        &mut self,
        now: Millis,
        spec: &TargetSpec,
        reason: EscalationReason,
        current: i32,
        step: &mut Step,
        tried: Vec<String>,
    ) {
        let Some(e) = spec.escalation.as_deref().copied() else {
            return;
        };
        let key = reason_key(reason);
        if self
            .escalated
            .get(key)
            .is_some_and(|&at| now - at < e.min_interval)
        {
            return;
        }
        self.escalated.insert(key, now);
        step.escalations.push(Escalation {
            reason,
            current,
            desired: step.desired,
            demanded: step.proposal,
            tried,
            stall: None,
        });
    }

    fn step_paused(
        &mut self,
        spec: &TargetSpec,
        pause: Pause,
        replicas: Replicas,
        step: &mut Step,
    ) {
        let (reason, message) = match pause {
            Pause::At(n) => (cond::PAUSED_AT_REPLICAS, format!("paused at {n} replicas")),
            Pause::Frozen => (cond::PAUSED, "scaling frozen".to_string()),
        };
        step.conditions
            .push(condition(cond::PAUSED, true, reason, &message));
        step.conditions.push(condition(
            cond::READY,
            true,
            cond::PAUSED,
            match spec.mode {
                Mode::Hpa => "the owned HPA is removed while paused",
                Mode::Direct | Mode::Shadow => "scaling is paused",
            },
        ));
        step.rule = reason.to_string();
        if spec.mode == Mode::Hpa {
            // KEDA's semantics: a paused target has no HPA; with a count, ebb sets it once.
            step.hpa = Some(HpaIntent {
                targets: BTreeMap::new(),
                pending: BTreeMap::new(),
                behavior: None,
                present: false,
            });
        }
        match pause {
            Pause::At(n) if spec.mode != Mode::Shadow => {
                step.desired = n;
                if self.paused_applied != Some(n) {
                    step.action = Action::PauseAt(n);
                }
            }
            Pause::At(n) => step.desired = n,
            Pause::Frozen => step.desired = replicas.spec,
        }
    }

    /// Modes Direct and Shadow: the engine decides from the readings (learning metrics
    /// through their adaptive recommendation), within bounds, windows and rate limits; in
    /// fallback at least the fallback count and never down.
    fn step_scale(&mut self, now: Millis, spec: &TargetSpec, replicas: Replicas, step: &mut Step) {
        let samples = self.samples(spec);
        // Without a behavior, the HPA's per-sync scale-up limit as a rate over the interval
        // (`over_interval` leaves 15 s or less alone; checked here too so that the spec is
        // borrowed, not cloned, at the default interval).
        let rules = match spec.hpa.behavior {
            None if spec.interval > hpa::SYNC_PERIOD_MS => Cow::Owned(HpaSpec {
                config: spec.hpa.config.over_interval(spec.interval),
                ..spec.hpa.clone()
            }),
            _ => Cow::Borrowed(&spec.hpa),
        };
        let (decision, reasons) = if self.learning.active() {
            let loads: Vec<Option<f64>> = self.readings.iter().map(|r| r.ok()).collect();
            let tolerances = spec.hpa.tolerances();
            let (proposals, reasons) = self
                .learning
                .proposals(tolerances, &samples, &loads, replicas, now);
            let all = learning::all_learning(&self.learning, samples.len());
            let engine = learning::engine_spec(rules.into_owned(), all);
            (
                hpa::decide_proposals(&engine, &mut self.scaling, replicas, proposals, now),
                reasons,
            )
        } else {
            (
                hpa::decide(&rules, &mut self.scaling, replicas, &samples, now),
                Vec::new(),
            )
        };
        // The rule that decided the winning metric, when the adaptive rules moved it.
        let learned_rule = decision
            .metric_index
            .and_then(|i| reasons.get(i).copied().flatten())
            .filter(|r| *r != AdaptiveReason::Reactive);
        let floor = self.fallback_floor(spec, replicas);
        let desired = floor.map_or(decision.desired, |f| f.max(decision.desired));
        let rule = match learned_rule {
            Some(r) if decision.limited => format!("{} after {r}", decision.reason),
            Some(r) => r.to_string(),
            None => decision.reason.to_string(),
        };
        step.conditions.push(fallback_condition(floor));
        step.conditions.push(condition(
            cond::SCALING_LIMITED,
            decision.limited,
            decision.scaling_limited.as_str(),
            &match learned_rule {
                Some(r) => format!(
                    "engine: {} (proposal {:?}, adaptive {r})",
                    decision.scaling_limited, decision.proposal
                ),
                None => format!(
                    "engine: {} (proposal {:?})",
                    decision.scaling_limited, decision.proposal
                ),
            },
        ));
        let metric_name = decision
            .metric_index
            .and_then(|i| spec.metrics.get(i))
            .map_or("-", |m| m.name.as_str());
        step.conditions.push(condition(
            cond::READY,
            true,
            cond::DECIDED,
            &format!("{rule} (metric {metric_name})"),
        ));
        step.rule = if floor.is_some() && desired != decision.desired {
            cond::FALLBACK.to_string()
        } else {
            rule
        };
        step.desired = desired;
        step.metric = decision.metric_index;
        step.proposal = decision.proposal;
        step.next_wake = decision.recheck_at.map(|at| at.max(now + 1000));
        if desired != replicas.spec {
            step.action = match spec.mode {
                Mode::Direct => Action::Scale {
                    from: replicas.spec,
                    to: desired,
                },
                _ if self.reported.replace(desired) != Some(desired) => Action::Report {
                    from: replicas.spec,
                    to: desired,
                },
                _ => Action::None,
            };
        }
    }

    /// Mode Hpa: the values to serve (raised to the forecast; in fallback, values that make
    /// the HPA hold the current count or go to the fallback count), the owned HPA's learned
    /// part, and what the HPA will do with them.
    fn step_hpa(&mut self, now: Millis, spec: &TargetSpec, replicas: Replicas, step: &mut Step) {
        let mut served: Vec<Reading> = self
            .readings
            .iter()
            .enumerate()
            .map(|(i, r)| r.map(|v| self.learning.served(i, v, now)))
            .collect();
        let floor = self.fallback_floor(spec, replicas);
        if let Some(floor) = floor {
            let targets = self.hpa_targets(spec);
            for (value, target) in served.iter_mut().zip(&targets) {
                let hold = hold_value(*target, floor, replicas, &spec.hpa);
                *value = Ok(match value {
                    Ok(v) => v.max(hold),
                    Err(_) => hold,
                });
            }
        }
        if self.stall.holds_scale_up(now) {
            // No replicas the cluster cannot start: values for which the HPA asks for no more
            // than the current count.
            let targets = self.hpa_targets(spec);
            for (value, target) in served.iter_mut().zip(&targets) {
                if let Ok(v) = value {
                    *v = v.min(hold_value(*target, replicas.spec, replicas, &spec.hpa));
                }
            }
        }
        step.conditions.push(fallback_condition(floor));
        self.served = served.clone();
        step.served = served;
        let mut targets = self.learning.hpa_targets();
        for (m, t) in spec.metrics.iter().zip(&self.throughput) {
            if let Some(learned) = t.as_ref().and_then(Throughput::learned) {
                targets.insert(m.name.clone(), learned);
            }
        }
        step.hpa = Some(HpaIntent {
            targets,
            pending: self.learning.pending(),
            behavior: self.learning.hpa_behavior(spec.metrics.len()),
            present: true,
        });
        let owned = self.owned_hpa_spec(spec);
        let samples = self.hpa_samples(spec, &self.served.clone());
        let d: Decision = hpa::decide(&owned, &mut self.hpa_model, replicas, &samples, now);
        if d.desired != replicas.spec {
            self.hpa_model.store_scale_event(
                owned.behavior.as_deref(),
                replicas.spec,
                d.desired,
                now,
            );
        }
        step.desired = d.desired;
        step.metric = d.metric_index;
        step.proposal = d.proposal;
        step.rule = if floor.is_some() {
            cond::FALLBACK.to_string()
        } else {
            d.reason.to_string()
        };
    }

    /// In fallback: the count to hold at least (the current one, or the fallback count if
    /// higher, within maxReplicas).
    fn fallback_floor(&self, spec: &TargetSpec, replicas: Replicas) -> Option<i32> {
        let f = spec.fallback?;
        self.fallback
            .active
            .then(|| replicas.spec.max(f.replicas).min(spec.hpa.max_replicas))
    }

    /// The readings against the static targets.
    fn samples(&self, spec: &TargetSpec) -> Vec<MetricSample> {
        spec.metrics
            .iter()
            .zip(&self.readings)
            .enumerate()
            .filter_map(|(i, (m, r))| {
                Some(MetricSample {
                    target: self.target_of(i, m)?,
                    observation: r.map(to_milli),
                })
            })
            .collect()
    }

    /// Mode Hpa: the targets the owned HPA has (learned AverageValue ones where learned).
    fn hpa_targets(&self, spec: &TargetSpec) -> Vec<Target> {
        spec.metrics
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let t = self.target_of(i, m).unwrap_or(Target::Value(1));
                match (t, self.learning.status(i)) {
                    (Target::AverageValue(_), Some(l)) => {
                        Target::AverageValue(to_milli(l.target).max(1))
                    }
                    (t, _) => t,
                }
            })
            .collect()
    }

    /// What the HPA reads: the served values against the owned HPA's targets.
    fn hpa_samples(&self, spec: &TargetSpec, served: &[Reading]) -> Vec<MetricSample> {
        self.hpa_targets(spec)
            .into_iter()
            .zip(served)
            .map(|(target, r)| MetricSample {
                target,
                observation: r.map(to_milli),
            })
            .collect()
    }

    /// The owned HPA's spec as the HPA controller reads it: the ScaledTarget's bounds and
    /// behavior, with the learned scale-down window and tolerance (as `controller::hpa` writes
    /// them: an explicit window holds when longer, an explicit tolerance stays).
    fn owned_hpa_spec(&self, spec: &TargetSpec) -> HpaSpec {
        let mut owned = spec.hpa.clone();
        if let Some(learned) = self.learning.hpa_behavior(spec.metrics.len()) {
            let mut behavior = owned.behavior.take().unwrap_or_default();
            let down = &mut behavior.scale_down;
            down.stabilization_window_seconds =
                Some(learned.scale_down_window(down.stabilization_window_seconds));
            down.tolerance = Some(learned.scale_down_tolerance(down.tolerance));
            behavior.scale_up.tolerance =
                Some(learned.scale_up_tolerance(behavior.scale_up.tolerance));
            owned.behavior = Some(behavior);
        }
        owned
    }
}

/// What `readings` (as read: a DrainTime metric's backlog) say of the target's work.
fn activity(spec: &TargetSpec, readings: &[Reading]) -> Activity {
    let mut unread = false;
    for (i, m) in spec.metrics.iter().enumerate() {
        match readings.get(i) {
            Some(Ok(v)) if v.is_finite() && *v > m.activation => return Activity::Active(i, *v),
            Some(Ok(v)) if v.is_finite() => {}
            _ => unread = true,
        }
    }
    if unread || spec.metrics.is_empty() {
        Activity::Unknown
    } else {
        Activity::Idle
    }
}

/// The escalation's rate-limit key: one per reason, and per pattern for a stall.
fn reason_key(reason: EscalationReason) -> &'static str {
    use super::stall::Pattern;
    match reason {
        EscalationReason::AtMaxReplicas => "AtMaxReplicas",
        EscalationReason::ScalingFailing => "ScalingFailing",
        EscalationReason::ScalingStalled(p) => match p {
            Pattern::Unschedulable => "ScalingStalled/Unschedulable",
            Pattern::CrashLoopBackOff => "ScalingStalled/CrashLoopBackOff",
            Pattern::ImagePull => "ScalingStalled/ImagePull",
            Pattern::OomKilled => "ScalingStalled/OOMKilled",
            Pattern::CreateContainerConfigError => "ScalingStalled/CreateContainerConfigError",
            Pattern::ReadinessProbe => "ScalingStalled/ReadinessProbe",
            Pattern::Unknown => "ScalingStalled/Unknown",
        },
    }
}

/// The startup delay to use before one is learned from the pods: the adaptive section's, but
/// at least [`UNLEARNED_STARTUP_DELAY`], so that a slow-starting workload ebb has not yet seen
/// start is not held back as stalled on a guess.
fn static_startup_delay(spec: &TargetSpec) -> Millis {
    spec.adaptive
        .as_ref()
        .map_or(0, |a| a.startup_delay_seconds as Millis * 1000)
        .max(UNLEARNED_STARTUP_DELAY)
}

/// The startup delay assumed until one is learned: a stall budget of 5 minutes.
pub const UNLEARNED_STARTUP_DELAY: Millis = 150_000;

/// A value in milli-units, saturating.
fn to_milli(v: f64) -> i64 {
    (v * 1000.0).round().clamp(i64::MIN as f64, i64::MAX as f64) as i64
}

/// The value to serve for a metric with `target` so that the HPA proposes `count` replicas
/// (the largest such value: the HPA's proposal for it is exactly `count`).
fn hold_value(target: Target, count: i32, replicas: Replicas, spec: &HpaSpec) -> f64 {
    let count = count.max(0);
    let milli = match target {
        // ceil(total / per-pod target) = count.
        Target::AverageValue(t) => i64::from(count).saturating_mul(t),
        // ceil(total / target * ready) = count: from the exact ratio down to a value the
        // HPA's own arithmetic proposes `count` for.
        Target::Value(t) => {
            let ready = i64::from(replicas.ready.max(1));
            let tol = spec.tolerances();
            let proposes = |v: i64| {
                let sample = MetricSample {
                    target,
                    observation: Ok(v),
                };
                propose(&sample, replicas, tol)
            };
            let mut v = i64::from(count).saturating_mul(t) / ready;
            while v > 0 && proposes(v).is_ok_and(|p| p > count) {
                v -= 1;
            }
            v
        }
        // Resource metrics are not served by ebb.
        Target::Utilization(_) => 0,
    };
    milli as f64 / 1000.0
}

fn fallback_condition(floor: Option<i32>) -> Condition {
    match floor {
        Some(f) => condition(
            cond::FALLBACK,
            true,
            cond::SOURCES_FAILING,
            &format!(
                "every metric failed on several readings in a row: holding at least {f} replicas, no scale-down"
            ),
        ),
        None => condition(
            cond::FALLBACK,
            false,
            cond::METRICS_AVAILABLE,
            "metrics are read normally",
        ),
    }
}

fn condition(type_: &'static str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_,
        status,
        reason: reason.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    //! The machine stepped on a simulated clock: no sleeps, no cluster.
    use super::super::stall::{Pattern, PodState};
    use super::*;

    const S: Millis = 1000;
    const INTERVAL: Millis = 15 * S;

    /// Readings alone, as most tests feed them.
    fn reads(readings: &[Reading]) -> Inputs<'_> {
        Inputs {
            readings,
            ..Inputs::default()
        }
    }

    /// One AverageValue metric of 100 per pod (and a Value metric of 1000 when `value`).
    fn spec(mode: Mode) -> TargetSpec {
        TargetSpec {
            formula: None,
            mode,
            hpa: HpaSpec {
                min_replicas: 1,
                max_replicas: 10,
                ..Default::default()
            },
            interval: INTERVAL,
            metrics: vec![MetricSpec {
                name: "rps".into(),
                target: Ok(Target::AverageValue(100_000)),
                learn: None,
                drain: None,
                activation: 0.0,
            }],
            adaptive: None,
            fallback: Some(FallbackSpec {
                failure_threshold: 3,
                replicas: 4,
            }),
            escalation: Some(Box::new(EscalationSpec {
                failure_threshold: 2,
                min_interval: 600 * S,
            })),
            idle: None,
            pause: None,
            revision: None,
        }
    }

    /// Observes `reading` at `now` and steps, applying a Direct scale as the controller does.
    fn poll(
        m: &mut TargetMachine,
        spec: &TargetSpec,
        now: Millis,
        reading: Reading,
        current: i32,
    ) -> Step {
        let readings = vec![reading; spec.metrics.len()];
        m.observe(now, spec, reads(&readings));
        let step = m.step(now, spec, Replicas::all(current));
        if let Action::Scale { from, to } = step.action {
            m.applied(now, spec, from, to);
        }
        step
    }

    fn condition_of<'a>(step: &'a Step, type_: &str) -> &'a Condition {
        step.conditions
            .iter()
            .rev()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    /// `spec(mode)` scaling to zero: activation 5, a 60 s cooldown, 30 s after creation at 0.
    fn idle_spec(mode: Mode) -> TargetSpec {
        let mut spec = spec(mode);
        spec.metrics[0].activation = 5.0;
        spec.idle = Some(Box::new(IdleSpec {
            cooldown: 60 * S,
            initial_cooldown: 30 * S,
            created: Some(0),
        }));
        spec
    }

    /// `n` pods: the first `ready` Ready since long ago, the rest created at `created` and
    /// stuck on `pattern`.
    fn pods(n: usize, ready: usize, created: Millis, pattern: Pattern) -> Vec<PodState> {
        (0..n)
            .map(|i| PodState {
                name: format!("w-{i}"),
                uid: format!("u-{i}"),
                created: if i < ready { -600 * S } else { created },
                ready_since: (i < ready).then_some(-590 * S),
                problem: (i >= ready).then(|| (pattern, "0/3 nodes are available".to_string())),
                terminating: false,
            })
            .collect()
    }

    /// Observes load `rps` and the pods, steps at `current`, applies a Direct scale.
    fn poll_with_pods(
        m: &mut TargetMachine,
        spec: &TargetSpec,
        now: Millis,
        rps: f64,
        current: i32,
        pods: &[PodState],
    ) -> Step {
        let readings = [Ok(rps)];
        m.observe(
            now,
            spec,
            Inputs {
                readings: &readings,
                workload_pods: Some(pods),
                ..Inputs::default()
            },
        );
        let step = m.step(now, spec, Replicas::all(current));
        if let Action::Scale { from, to } = step.action {
            m.applied(now, spec, from, to);
        }
        step
    }

    #[test]
    fn a_stalled_scale_up_adds_nothing_is_named_and_escalated_once_and_resumes_when_pods_start() {
        for mode in [Mode::Direct, Mode::Hpa] {
            let spec = spec(mode);
            let mut m = TargetMachine::new();
            // 2 pods Ready at 2 replicas; the load asks for 4.
            let s = poll_with_pods(&mut m, &spec, 0, 200.0, 2, &pods(2, 2, 0, Pattern::Unknown));
            assert_eq!(
                condition_of(&s, cond::SCALING_STALLED).reason,
                cond::SCALE_UPS_READY
            );
            let s = poll_with_pods(
                &mut m,
                &spec,
                INTERVAL,
                400.0,
                2,
                &pods(2, 2, 0, Pattern::Unknown),
            );
            assert_eq!(s.desired, 4, "{mode:?}");
            // Scaled to 4 (by ebb or the HPA); two pods stay Pending: no room on any node.
            let stuck = pods(4, 2, 2 * INTERVAL, Pattern::Unschedulable);
            let mut now = 2 * INTERVAL;
            let mut found = None;
            // The budget before a startup delay is learned: 2 x 150 s.
            while now <= 2 * INTERVAL + 330 * S {
                let s = poll_with_pods(&mut m, &spec, now, 800.0, 4, &stuck);
                let c = condition_of(&s, cond::SCALING_STALLED);
                if c.status {
                    found.get_or_insert((now, s.clone()));
                    // The load asks for 8: nothing is added, nothing taken away.
                    assert_eq!(
                        (s.desired, s.action),
                        (4, Action::None),
                        "{mode:?} at {now}"
                    );
                    if mode == Mode::Hpa {
                        // Served so that the HPA asks for no more than 4.
                        assert!(s.served[0].unwrap() < 800.0, "{mode:?}: {:?}", s.served);
                    }
                } else {
                    assert_eq!(
                        s.desired, 8,
                        "{mode:?}: before the stall the decision stands"
                    );
                }
                now += INTERVAL;
            }
            let (at, first) = found.expect("stalled");
            // The rise to 4 is seen at 30 s; stalled at the first poll 300 s after.
            assert_eq!(at, 2 * INTERVAL + 300 * S, "{mode:?}");
            let c = condition_of(&first, cond::SCALING_STALLED);
            assert_eq!(c.reason, "Unschedulable");
            assert!(c.message.contains("2 of 4 pods not Ready"), "{}", c.message);
            assert!(
                c.message.contains("0/3 nodes are available"),
                "{}",
                c.message
            );
            let e = &first.escalations;
            assert_eq!(e.len(), 1, "{mode:?}: {e:?}");
            assert_eq!(
                e[0].reason,
                EscalationReason::ScalingStalled(Pattern::Unschedulable)
            );
            assert_eq!(e[0].stall.as_ref().unwrap().pods, ["w-2", "w-3"]);
            // The pods start: the stall clears and the decision stands again.
            let ready = pods(4, 4, 0, Pattern::Unknown);
            let s = poll_with_pods(&mut m, &spec, now, 800.0, 4, &ready);
            assert_eq!(
                condition_of(&s, cond::SCALING_STALLED).reason,
                cond::SCALE_UPS_READY
            );
            assert_eq!(s.desired, 8, "{mode:?}");
        }
    }

    #[test]
    fn the_startup_delay_learned_from_pods_becomes_the_learning_horizon_within_bounds() {
        let mut spec = spec(Mode::Direct);
        spec.adaptive = Some(Box::new(AdaptiveConfig {
            enabled: true,
            startup_delay_seconds: 60,
            ..AdaptiveConfig::default()
        }));
        spec.revision = Some(("u".into(), 1));
        spec.metrics[0].learn = Some(Box::new(LearnSpec {
            name: "rps".into(),
            static_target: 100.0,
            slo: None,
            resume_slo: None,
            resume_risk_correction: 0.0,
            backfill: true,
            fingerprint: "f".into(),
        }));
        let started = |n: usize, seconds: i64| -> Vec<PodState> {
            (0..n)
                .map(|i| PodState {
                    name: format!("w-{i}"),
                    uid: format!("u-{seconds}-{i}"),
                    created: 0,
                    ready_since: Some(seconds * S),
                    problem: None,
                    terminating: false,
                })
                .collect()
        };
        let observe = |m: &mut TargetMachine, now: Millis, pods: &[PodState]| {
            let readings = [Ok(100.0)];
            m.observe(
                now,
                &spec,
                Inputs {
                    readings: &readings,
                    workload_pods: Some(pods),
                    ..Inputs::default()
                },
            )
            .backfills
        };
        let mut m = TargetMachine::new();
        // Fewer than five starts: the spec's 60 s.
        let jobs = observe(&mut m, 0, &started(3, 120));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].config.startup_delay_seconds, 60);
        // Pods take 120 s: a new horizon, learned afresh from a backfill with it.
        let jobs = observe(&mut m, INTERVAL, &started(6, 120));
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].config.startup_delay_seconds, 120);
        assert_eq!(m.startup_in_force(), Some(120));
        // 130 s is within a quarter of 120 s: no restart on noise.
        let mut pods = started(6, 120);
        pods.extend(started(60, 130));
        assert!(observe(&mut m, 2 * INTERVAL, &pods).is_empty());
        assert_eq!(m.startup_in_force(), Some(120));
        // Starts close to the spec's 60 s (the same four 15 s polls): nothing changes.
        let mut close = TargetMachine::new();
        let jobs = observe(&mut close, 0, &started(5, 55));
        assert_eq!(jobs[0].config.startup_delay_seconds, 60);
        assert_eq!(close.startup_in_force(), None);
        // A pod that waited an hour for room: bounded at 4 x 60 s.
        let mut slow = TargetMachine::new();
        let jobs = observe(&mut slow, 0, &started(5, 3600));
        assert_eq!(jobs[0].config.startup_delay_seconds, 240);
    }

    /// `spec(mode)` deciding on `orders + 2 * refunds` (its one metric is the formula), with
    /// the formula's activation at 5 and scale to zero.
    fn formula_spec(mode: Mode, expression: &str) -> TargetSpec {
        let mut spec = idle_spec(mode);
        spec.metrics[0].name = "work".into();
        spec.formula = Some(Box::new(
            super::super::formula::Formula::parse(expression, &["orders", "refunds"])
                .map_err(|e| e.to_string()),
        ));
        spec
    }

    #[test]
    fn a_formula_decides_on_its_value_and_has_none_when_an_input_has_none() {
        for mode in [Mode::Direct, Mode::Hpa] {
            let spec = formula_spec(mode, "orders + 2 * refunds");
            let mut m = TargetMachine::new();
            // 200 + 2 * 50 = 300 at 100 per pod: 3 (the inputs alone: 2 and 1).
            m.observe(0, &spec, reads(&[Ok(200.0), Ok(50.0)]));
            let s = m.step(0, &spec, Replicas::all(1));
            assert_eq!(s.desired, 3, "{mode:?}");
            assert!(
                condition_of(&s, cond::ACTIVE)
                    .message
                    .contains("work reads 300"),
                "{mode:?}"
            );
            if mode == Mode::Hpa {
                assert_eq!(s.served, [Ok(300.0)]);
            }
            // An input without data: the formula has none, and nothing scales down on it.
            for k in 1..=2 {
                m.observe(k * INTERVAL, &spec, reads(&[Ok(200.0), Err(NoData::Empty)]));
                let s = m.step(k * INTERVAL, &spec, Replicas::all(3));
                assert!(s.desired >= 3, "{mode:?}: {}", s.desired);
                assert_eq!(
                    condition_of(&s, cond::ACTIVE).reason,
                    cond::ACTIVITY_UNKNOWN
                );
            }
        }
    }

    #[test]
    fn a_formula_that_does_not_parse_decides_nothing_and_says_where() {
        let spec = formula_spec(Mode::Direct, "orders + (refunds");
        let mut m = TargetMachine::new();
        m.observe(0, &spec, reads(&[Ok(200.0), Ok(50.0)]));
        let s = m.step(0, &spec, Replicas::all(2));
        assert_eq!((s.desired, s.action), (2, Action::None));
        let ready = condition_of(&s, cond::READY);
        assert_eq!(
            (ready.status, ready.reason.as_str()),
            (false, cond::INVALID_FORMULA)
        );
        assert!(
            ready.message.contains("line 1, column 18"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn every_mode_goes_to_zero_only_after_the_cooldown_and_wakes_on_activity() {
        for mode in [Mode::Direct, Mode::Hpa] {
            let spec = idle_spec(mode);
            let mut m = TargetMachine::new();
            // Busy at 3 replicas, then the load falls to 4: below the activation of 5.
            let mut current = 3;
            let s = poll(&mut m, &spec, 0, Ok(250.0), current);
            assert_eq!(
                condition_of(&s, cond::ACTIVE).reason,
                cond::ABOVE_ACTIVATION
            );
            assert!(
                condition_of(&s, cond::ACTIVE)
                    .message
                    .contains("rps reads 250")
            );
            let mut now = 0;
            let mut zero_at = None;
            while now < 120 * S {
                now += INTERVAL;
                let s = poll(&mut m, &spec, now, Ok(4.0), current);
                assert_eq!(
                    condition_of(&s, cond::ACTIVE).reason,
                    cond::BELOW_ACTIVATION
                );
                if s.desired == 0 && zero_at.is_none() {
                    assert_eq!(
                        s.action,
                        Action::Scale {
                            from: current,
                            to: 0
                        },
                        "{mode:?}"
                    );
                    assert_eq!(s.rule, cond::IDLE_AFTER_COOLDOWN);
                    if mode == Mode::Direct {
                        let limited = condition_of(&s, cond::SCALING_LIMITED);
                        assert_eq!(
                            (limited.status, limited.reason.as_str()),
                            (false, cond::IDLE_AFTER_COOLDOWN)
                        );
                    }
                    zero_at = Some(now);
                }
                current = s.desired;
            }
            // The last activity was at 0: zero at the first poll at or after 60 s, not before.
            assert_eq!(zero_at, Some(60 * S), "{mode:?}");
            // At zero, a reading at the activation wakes nothing; one above it wakes to 1.
            let s = poll(&mut m, &spec, now + INTERVAL, Ok(5.0), 0);
            assert_eq!(
                (s.desired, s.action, s.rule.as_str()),
                (0, Action::None, cond::IDLE)
            );
            if mode == Mode::Direct {
                // Not the HPA's ScalingDisabled: the idle rule holds it at zero.
                assert_eq!(condition_of(&s, cond::READY).message, cond::IDLE);
                assert_eq!(condition_of(&s, cond::SCALING_LIMITED).reason, cond::IDLE);
            }
            let s = poll(&mut m, &spec, now + 2 * INTERVAL, Ok(6.0), 0);
            assert_eq!(s.action, Action::Scale { from: 0, to: 1 }, "{mode:?}");
            assert_eq!(s.rule, cond::ACTIVATED);
        }
    }

    #[test]
    fn a_failing_source_never_takes_a_target_to_zero_nor_wakes_one_there() {
        for mode in [Mode::Direct, Mode::Hpa] {
            let spec = idle_spec(mode);
            let mut m = TargetMachine::new();
            poll(&mut m, &spec, 0, Ok(250.0), 3);
            // Failing for ten minutes, well past the cooldown, with fallback on after 3.
            for k in 1..=40 {
                let s = poll(&mut m, &spec, k * INTERVAL, Err(NoData::SourceFailed), 3);
                assert_eq!(
                    condition_of(&s, cond::ACTIVE).reason,
                    cond::ACTIVITY_UNKNOWN
                );
                assert!(s.desired >= 3, "{mode:?} at {k}: {}", s.desired);
            }
            // Back and idle: fallback holds until it is left, then the cooldown counts from
            // the last activity (long ago): zero follows, but not while in fallback.
            let mut now = 40 * INTERVAL;
            let mut fallback_seen_at_zero = false;
            loop {
                now += INTERVAL;
                let s = poll(&mut m, &spec, now, Ok(0.0), 3);
                if s.desired == 0 {
                    fallback_seen_at_zero |= condition_of(&s, cond::FALLBACK).status;
                    break;
                }
                assert!(now < 40 * INTERVAL + 600 * S, "{mode:?} never went to zero");
            }
            assert!(!fallback_seen_at_zero, "{mode:?} went to zero in fallback");

            // At zero with the source down: no wake-up to the fallback count, no write.
            let mut m = TargetMachine::new();
            poll(&mut m, &spec, 0, Ok(0.0), 0);
            for k in 1..=10 {
                let s = poll(&mut m, &spec, k * INTERVAL, Err(NoData::SourceFailed), 0);
                assert_eq!((s.desired, s.action), (0, Action::None), "{mode:?} at {k}");
            }
        }
    }

    #[test]
    fn a_new_or_restarted_machine_waits_the_initial_and_a_whole_cooldown() {
        let mut spec = idle_spec(Mode::Direct);
        // Created 10 s ago with a 30 s initial cooldown and a shorter 5 s cooldown.
        spec.idle = Some(Box::new(IdleSpec {
            cooldown: 5 * S,
            initial_cooldown: 30 * S,
            created: Some(-10 * S),
        }));
        let mut m = TargetMachine::new();
        let first_zero = (0..10)
            .map(|k| k * 5 * S)
            .find(|&now| poll(&mut m, &spec, now, Ok(0.0), 2).desired == 0);
        assert_eq!(first_zero, Some(20 * S), "creation + 30 s");
        // A fresh machine long after creation: its first step counts as the last activity.
        let mut m = TargetMachine::new();
        let start = 3_600 * S;
        let first_zero = (0..10)
            .map(|k| start + k * 5 * S)
            .find(|&now| poll(&mut m, &spec, now, Ok(0.0), 2).desired == 0);
        assert_eq!(first_zero, Some(start + 5 * S));
    }

    #[test]
    fn shadow_reports_the_move_to_zero_once_and_changes_nothing() {
        let spec = idle_spec(Mode::Shadow);
        let mut m = TargetMachine::new();
        poll(&mut m, &spec, 0, Ok(0.0), 2);
        let reports: Vec<Action> = (1..=12)
            .map(|k| poll(&mut m, &spec, k * INTERVAL, Ok(0.0), 2).action)
            .filter(|a| *a != Action::None)
            .collect();
        assert_eq!(reports, vec![Action::Report { from: 2, to: 0 }]);
    }

    #[test]
    fn a_flapping_source_keeps_the_target_in_fallback_instead_of_toggling_it() {
        let spec = spec(Mode::Direct); // failureThreshold 3
        let mut m = TargetMachine::new();
        let mut now = 0;
        let mut current = poll(&mut m, &spec, now, Ok(300.0), 1).desired;
        // Down for 4 readings, up for 4, twenty times: 20 s down, 20 s up at 5 s polls.
        let (mut entries, mut exits, mut was) = (0, 0, false);
        for _ in 0..20 {
            for reading in [Err(NoData::SourceFailed); 4]
                .into_iter()
                .chain([Ok(300.0); 4])
            {
                now += INTERVAL;
                let s = poll(&mut m, &spec, now, reading, current);
                current = s.desired;
                let active = condition_of(&s, cond::FALLBACK).status;
                entries += usize::from(active && !was);
                exits += usize::from(!active && was);
                was = active;
            }
        }
        assert_eq!((entries, exits), (2, 1), "toggled with the source");
        // Steady again: it leaves after 6 good readings in a row (twice the threshold; the
        // last up phase gave 4), not after 3.
        let mut good = 0;
        while condition_of(
            &poll(&mut m, &spec, now + INTERVAL, Ok(300.0), current),
            cond::FALLBACK,
        )
        .status
        {
            now += INTERVAL;
            good += 1;
        }
        assert_eq!(good, 1, "left on the 6th good reading in a row");
        // Much later, one outage: the plain threshold again, in and out.
        now += 3_600 * S;
        for k in 1..=3 {
            let s = poll(
                &mut m,
                &spec,
                now + k * INTERVAL,
                Err(NoData::SourceFailed),
                current,
            );
            assert_eq!(
                condition_of(&s, cond::FALLBACK).status,
                k == 3,
                "failed reading {k}"
            );
        }
        now += 3 * INTERVAL;
        for k in 1..=3 {
            let s = poll(&mut m, &spec, now + k * INTERVAL, Ok(300.0), current);
            assert_eq!(
                condition_of(&s, cond::FALLBACK).status,
                k < 3,
                "good reading {k}"
            );
        }
    }

    /// The first poll at which the machine scales down from `current` on a steady `reading`.
    fn first_scale_down(
        m: &mut TargetMachine,
        spec: &TargetSpec,
        from: Millis,
        current: i32,
    ) -> Millis {
        (0..100)
            .map(|k| from + k * INTERVAL)
            .find(|&now| poll(m, spec, now, Ok(100.0), current).desired < current)
            .expect("a scale-down within 100 polls")
    }

    #[test]
    fn a_restarted_or_new_leader_scales_down_only_after_a_window_of_its_own() {
        let spec = spec(Mode::Direct);
        // A restart during a drop: the first reading asks for 1 pod of the 9 running.
        let mut m = TargetMachine::new();
        let down = first_scale_down(&mut m, &spec, 0, 9);
        assert!(
            down > 300 * S,
            "scaled down at {down} ms, inside the 300 s window"
        );
        assert!(down <= 300 * S + INTERVAL, "{down}");
        // A replica that led (at 900 per second: 9 pods), stood by for an hour, leads again.
        let mut m = TargetMachine::new();
        let mut now = 0;
        for _ in 0..40 {
            poll(&mut m, &spec, now, Ok(900.0), 9);
            now += INTERVAL;
        }
        for _ in 0..240 {
            m.stand_by();
            now += INTERVAL;
        }
        let back = now;
        let down = first_scale_down(&mut m, &spec, back, 9);
        assert!(
            down - back > 300 * S,
            "scaled down {} ms after leading again",
            down - back
        );
        // Without the stand-by, the old memory (older than any window) would not hold it.
        let mut m = TargetMachine::new();
        for k in 0..40 {
            poll(&mut m, &spec, k * INTERVAL, Ok(900.0), 9);
        }
        assert_eq!(first_scale_down(&mut m, &spec, back, 9), back);
    }

    #[test]
    fn fallback_enters_after_the_threshold_holds_the_fallback_count_and_leaves_after_as_many_good_readings()
     {
        let spec = spec(Mode::Direct);
        let mut m = TargetMachine::new();
        // 300 per second: 3 pods.
        let s = poll(&mut m, &spec, 0, Ok(300.0), 1);
        assert_eq!(s.desired, 3);
        let mut current = s.desired;
        // Two failed readings: below the threshold, the count holds (never read as zero).
        for k in 1..=2 {
            let s = poll(
                &mut m,
                &spec,
                k * INTERVAL,
                Err(NoData::SourceFailed),
                current,
            );
            assert_eq!((s.desired, s.action), (3, Action::None), "reading {k}");
            assert!(!condition_of(&s, cond::FALLBACK).status);
        }
        // The third: fallback, up to its count.
        let s = poll(
            &mut m,
            &spec,
            3 * INTERVAL,
            Err(NoData::SourceFailed),
            current,
        );
        assert!(condition_of(&s, cond::FALLBACK).status);
        assert_eq!(s.action, Action::Scale { from: 3, to: 4 });
        assert_eq!(s.rule, cond::FALLBACK);
        current = 4;
        // Back, reading 100 (1 pod): still in fallback for two good readings, no scale-down.
        for k in 4..=5 {
            let s = poll(&mut m, &spec, k * INTERVAL, Ok(100.0), current);
            assert!(condition_of(&s, cond::FALLBACK).status, "reading {k}");
            assert_eq!(s.desired, 4);
        }
        let s = poll(&mut m, &spec, 6 * INTERVAL, Ok(100.0), current);
        assert!(!condition_of(&s, cond::FALLBACK).status);
        assert!(!m.in_fallback());
        // Out of fallback, the scale-down window (300 s) remembers the 3 pods asked for before
        // the outage; once it has passed, the readings decide.
        assert_eq!(s.desired, 3);
        let s = poll(&mut m, &spec, 6 * INTERVAL + 301 * S, Ok(100.0), current);
        assert_eq!(s.desired, 1);
    }

    #[test]
    fn a_flapping_source_neither_toggles_fallback_nor_the_count() {
        let spec = spec(Mode::Direct);
        let mut m = TargetMachine::new();
        let mut current = poll(&mut m, &spec, 0, Ok(300.0), 1).desired;
        for k in 1..=3 {
            current = poll(
                &mut m,
                &spec,
                k * INTERVAL,
                Err(NoData::SourceFailed),
                current,
            )
            .desired;
        }
        assert!(m.in_fallback());
        assert_eq!(current, 4);
        // ok, fail, ok, ok, fail, ...: never three good readings in a row.
        let mut counts = Vec::new();
        for (i, failed) in [
            false, true, false, false, true, false, true, false, false, true,
        ]
        .into_iter()
        .enumerate()
        {
            let now = (4 + i as Millis) * INTERVAL;
            let reading = if failed {
                Err(NoData::SourceFailed)
            } else {
                Ok(300.0)
            };
            let s = poll(&mut m, &spec, now, reading, current);
            assert!(m.in_fallback(), "left fallback at flap {i}");
            current = s.desired;
            counts.push(current);
        }
        assert!(counts.iter().all(|&c| c == 4), "{counts:?}");
    }

    #[test]
    fn a_wake_up_is_not_a_reading() {
        let spec = spec(Mode::Direct);
        let mut m = TargetMachine::new();
        assert!(m.observe(0, &spec, reads(&[Ok(300.0)])).reading);
        // Failures seen on early wake-ups (a recheck, our own status write) do not count.
        for k in 1..=5 {
            let o = m.observe(k * S, &spec, reads(&[Err(NoData::SourceFailed)]));
            assert!(!o.reading);
        }
        assert!(!m.in_fallback());
        assert!(
            m.observe(INTERVAL / 2, &spec, reads(&[Err(NoData::SourceFailed)]))
                .reading
        );
    }

    #[test]
    fn escalation_at_max_replicas_is_rate_limited() {
        let spec = spec(Mode::Direct);
        let mut m = TargetMachine::new();
        // 5000 per second: 50 pods asked, 10 allowed.
        let s = poll(&mut m, &spec, 0, Ok(5000.0), 10);
        assert_eq!(s.desired, 10);
        assert_eq!(s.escalations.len(), 1);
        let e = &s.escalations[0];
        assert_eq!(
            (e.reason, e.current, e.demanded),
            (EscalationReason::AtMaxReplicas, 10, Some(50))
        );
        // Within minInterval (600 s): nothing (the controller's escalation worker retries a
        // failed send itself); after it, asked again.
        for at in [INTERVAL, 2 * INTERVAL, 599 * S] {
            let s = poll(&mut m, &spec, at, Ok(5000.0), 10);
            assert!(s.escalations.is_empty(), "at {at} ms");
        }
        let s = poll(&mut m, &spec, 600 * S, Ok(5000.0), 10);
        assert_eq!(s.escalations.len(), 1);
    }

    #[test]
    fn failed_scaling_escalates_at_the_threshold_and_success_resets_it() {
        let spec = spec(Mode::Direct);
        let mut m = TargetMachine::new();
        m.observe(0, &spec, reads(&[Ok(400.0)]));
        let s = m.step(0, &spec, Replicas::all(1));
        assert_eq!(s.action, Action::Scale { from: 1, to: 4 });
        assert_eq!(m.apply_failed(0, &spec, 1, 4, "forbidden"), (1, None));
        let (n, e) = m.apply_failed(INTERVAL, &spec, 1, 4, "forbidden");
        assert_eq!(n, 2);
        let e = e.expect("escalated at the threshold");
        assert_eq!(e.reason, EscalationReason::ScalingFailing);
        assert!(e.tried[0].contains("forbidden"), "{:?}", e.tried);
        // Rate-limited, then a success resets the count.
        assert_eq!(
            m.apply_failed(2 * INTERVAL, &spec, 1, 4, "forbidden"),
            (3, None)
        );
        m.applied(3 * INTERVAL, &spec, 1, 4);
        assert_eq!(m.apply_failed(4 * INTERVAL, &spec, 4, 5, "x"), (1, None));
    }

    #[test]
    fn pause_freezes_or_sets_the_count_once() {
        let mut spec = spec(Mode::Direct);
        let mut m = TargetMachine::new();
        spec.pause = Some(Pause::Frozen);
        let s = poll(&mut m, &spec, 0, Ok(900.0), 2);
        assert_eq!((s.desired, s.action), (2, Action::None));
        assert_eq!(condition_of(&s, cond::PAUSED).reason, cond::PAUSED);
        spec.pause = Some(Pause::At(7));
        let s = poll(&mut m, &spec, INTERVAL, Ok(900.0), 2);
        assert_eq!(s.action, Action::PauseAt(7));
        m.paused_at(7);
        let s = poll(&mut m, &spec, 2 * INTERVAL, Ok(900.0), 7);
        assert_eq!((s.desired, s.action), (7, Action::None));
        // Mode Hpa: the HPA goes away while paused.
        spec.mode = Mode::Hpa;
        let s = poll(&mut m, &spec, 3 * INTERVAL, Ok(900.0), 7);
        assert!(!s.hpa.unwrap().present);
        // Unpaused: scaling resumes from the readings.
        spec.pause = None;
        spec.mode = Mode::Direct;
        let s = poll(&mut m, &spec, 4 * INTERVAL, Ok(900.0), 7);
        assert_eq!(s.action, Action::Scale { from: 7, to: 9 });
    }

    #[test]
    fn mode_hpa_serves_raised_values_and_in_fallback_values_that_hold_or_reach_the_fallback_count()
    {
        let mut spec = spec(Mode::Hpa);
        spec.metrics.push(MetricSpec {
            name: "queue".into(),
            target: Ok(Target::Value(1_000_000)),
            learn: None,
            drain: None,
            activation: 0.0,
        });
        let mut m = TargetMachine::new();
        let s = poll(&mut m, &spec, 0, Ok(300.0), 1);
        assert_eq!(s.served, vec![Ok(300.0), Ok(300.0)]);
        assert!(s.hpa.as_ref().unwrap().present);
        // The modelled HPA: 3 pods from the AverageValue metric.
        assert_eq!(s.desired, 3);
        // Every source fails: first the HPA sees failures (it holds), then held values.
        for k in 1..=2 {
            let s = poll(&mut m, &spec, k * INTERVAL, Err(NoData::SourceFailed), 6);
            assert!(s.served.iter().all(Result::is_err));
            assert_eq!(s.desired, 6, "the HPA holds on failed metrics");
        }
        let s = poll(&mut m, &spec, 3 * INTERVAL, Err(NoData::SourceFailed), 6);
        assert!(condition_of(&s, cond::FALLBACK).status);
        // At 6 (above the fallback count 4): values that make the HPA propose exactly 6.
        let replicas = Replicas::all(6);
        let tol = spec.hpa.tolerances();
        for (metric, served) in spec.metrics.iter().zip(&s.served) {
            let sample = MetricSample {
                target: metric.target.clone().unwrap(),
                observation: Ok(to_milli(*served.as_ref().unwrap())),
            };
            assert_eq!(
                propose(&sample, replicas, tol),
                Ok(6),
                "{}: {served:?}",
                metric.name
            );
        }
        assert_eq!(s.desired, 6);
        // At 2 (below it): the HPA is taken to 4.
        let s = poll(&mut m, &spec, 4 * INTERVAL, Err(NoData::SourceFailed), 2);
        assert_eq!(s.desired, 4);
        // A value that is not finite is no data, never a number.
        let s = poll(&mut m, &spec, 5 * INTERVAL, Ok(f64::INFINITY), 4);
        assert!(
            s.served.iter().all(|v| v.is_ok_and(|v| v < 1e6)),
            "{:?}",
            s.served
        );
    }

    #[test]
    fn a_state_waiting_for_its_backfill_does_not_scale_down() {
        use crate::engine::adaptive::AdaptiveConfig;
        let mut spec = spec(Mode::Direct);
        spec.fallback = None;
        spec.adaptive = Some(Box::new(AdaptiveConfig::default()));
        spec.metrics[0].learn = Some(Box::new(LearnSpec {
            name: "rps".into(),
            static_target: 100.0,
            slo: None,
            resume_slo: None,
            resume_risk_correction: 0.0,
            backfill: true,
            fingerprint: "rps".into(),
        }));
        let mut m = TargetMachine::new();
        let readings = [Ok(200.0)];
        let o = m.observe(0, &spec, reads(&readings));
        assert_eq!(
            o.backfills.len(),
            1,
            "a Prometheus metric asks for its history"
        );
        // Running at 8 with load for 2: no scale-down on a memory of one reading.
        let s = m.step(0, &spec, Replicas::all(8));
        assert_eq!(s.desired, 8);
        // The backfill is given up: learning goes on from the live readings, and the static
        // scale-down window (300 s) then lets the count down.
        let b = &o.backfills[0];
        m.learning_mut().abandon(b.index, b.epoch);
        let mut desired = 8;
        for k in 1..=30 {
            m.observe(k * INTERVAL, &spec, reads(&readings));
            desired = m.step(k * INTERVAL, &spec, Replicas::all(desired)).desired;
        }
        assert!(desired < 8, "{desired}");
    }
}

#[cfg(test)]
mod drain_tests {
    //! DrainTime metrics through the machine, on a simulated clock.
    use super::*;

    const S: Millis = 1000;
    const INTERVAL: Millis = 15 * S;

    /// A queue scaled in mode `mode` on its work: drain within 60 s, 10 msg/s per pod set.
    fn queue_spec(mode: Mode, learn: bool) -> TargetSpec {
        TargetSpec {
            formula: None,
            mode,
            hpa: HpaSpec {
                min_replicas: 1,
                max_replicas: 30,
                ..Default::default()
            },
            interval: INTERVAL,
            metrics: vec![MetricSpec {
                name: "jobs".into(),
                target: Ok(Target::AverageValue(10_000)),
                learn: None,
                drain: Some(Box::new(DrainSpec {
                    drain_seconds: 60.0,
                    throughput: 10.0,
                    learn: learn.then_some((2.0, 40.0)),
                })),
                activation: 0.0,
            }],
            adaptive: None,
            fallback: None,
            escalation: None,
            idle: None,
            pause: None,
            revision: None,
        }
    }

    /// One poll: the queue's backlog, arrival and served rates and waiting messages, with
    /// `current` pods; a Direct scale is applied.
    fn poll(
        m: &mut TargetMachine,
        spec: &TargetSpec,
        now: Millis,
        backlog: f64,
        arrival: Reading,
        served: f64,
        current: i32,
    ) -> Step {
        let queues = [Some(QueueSignals {
            arrival,
            served: Some(served),
            waiting: Some(backlog),
            published: None,
        })];
        let inputs = Inputs {
            readings: &[Ok(backlog)],
            queues: &queues,
            pods: Some(current),
            ..Inputs::default()
        };
        m.observe(now, spec, inputs);
        let step = m.step(now, spec, Replicas::all(current));
        if let Action::Scale { from, to } = step.action {
            m.applied(now, spec, from, to);
        }
        step
    }

    #[test]
    fn a_queue_that_keeps_up_holds_its_count_while_arrivals_hold() {
        let spec = queue_spec(Mode::Direct, false);
        let mut m = TargetMachine::new();
        let mut current = 1;
        let mut counts = Vec::new();
        for k in 0..80 {
            // 75 msg/s arrive. Until the pods are there a backlog builds; once they keep up
            // it reads near zero (0 or 20 between fetches), which a backlog target would
            // read as no load.
            let backlog = if current < 8 {
                600.0
            } else {
                20.0 * (k % 2) as f64
            };
            let s = poll(
                &mut m,
                &spec,
                k * INTERVAL,
                backlog,
                Ok(75.0),
                75.0,
                current,
            );
            current = s.desired;
            counts.push(current);
        }
        // 75 + 600/60 = 85 msg/s: up to 9 pods (through the default scale-up limit), then
        // 75 msg/s (+ 20/60 at most): 8 once the scale-down window has passed, and 8 it stays.
        assert_eq!(&counts[..3], &[4, 8, 9], "{counts:?}");
        assert!(counts[30..].iter().all(|&c| c == 8), "{counts:?}");
    }

    #[test]
    fn no_arrival_rate_is_no_data_not_zero() {
        let spec = queue_spec(Mode::Direct, false);
        let mut m = TargetMachine::new();
        let s = poll(&mut m, &spec, 0, 0.0, Ok(50.0), 50.0, 5);
        assert_eq!(s.desired, 5);
        // The rate fails and the backlog reads 0: the count holds (no scale-down to 1).
        for k in 1..40 {
            let s = poll(
                &mut m,
                &spec,
                k * INTERVAL,
                0.0,
                Err(NoData::SourceFailed),
                0.0,
                5,
            );
            assert_eq!(s.desired, 5, "poll {k}");
        }
        assert_eq!(m.value(0), Some(Err(NoData::SourceFailed)));
    }

    #[test]
    fn the_learned_throughput_sets_the_count_in_both_modes() {
        for mode in [Mode::Direct, Mode::Hpa] {
            let spec = queue_spec(mode, true);
            let mut m = TargetMachine::new();
            // The pods really get through 20 msg/s each (the set 10 is a guess): 4 pods,
            // saturated for five minutes, serve 80 msg/s while 120 arrive.
            let mut changes = Vec::new();
            for k in 0..20 {
                let inputs_backlog = 3000.0;
                let queues = [Some(QueueSignals {
                    arrival: Ok(120.0),
                    served: Some(80.0),
                    waiting: Some(inputs_backlog),
                    published: None,
                })];
                let o = m.observe(
                    k * INTERVAL,
                    &spec,
                    Inputs {
                        readings: &[Ok(inputs_backlog)],
                        queues: &queues,
                        pods: Some(4),
                        ..Inputs::default()
                    },
                );
                changes.extend(o.changes);
            }
            assert_eq!(m.throughput(0), Some((20.0, true)), "{mode:?}");
            assert_eq!(changes.len(), 1, "{changes:?}");
            // 120 msg/s arriving and nothing waiting: 6 pods at 20, not 12 at the set 10.
            let s = poll(&mut m, &spec, 20 * INTERVAL, 0.0, Ok(120.0), 120.0, 4);
            match mode {
                Mode::Hpa => {
                    assert_eq!(s.served, vec![Ok(120.0)]);
                    assert_eq!(s.hpa.as_ref().unwrap().targets.get("jobs"), Some(&20.0));
                }
                _ => assert_eq!(s.desired, 6),
            }
        }
    }
}
