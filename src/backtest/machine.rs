//! ebb's own policies in the replay: the decision machine the controller runs
//! ([`crate::engine::target::TargetMachine`]), stepped once per trace step on the reading of the
//! step before, as `ebb serve` steps it once per poll.
//!
//! - `ebb`: mode Direct. The machine decides and its decision is applied at once (what the
//!   controller does with `/scale`): adaptive rules, then the HPA algorithm with the
//!   ScaledTarget's bounds, behavior, stabilization and rate limits, fallback on gaps.
//! - `ebb-hpa`: mode Hpa. The machine serves values and learned targets to an HPA that it
//!   models with the engine's HPA algorithm, synced every
//!   [`crate::engine::hpa::SYNC_PERIOD_MS`] as the HPA controller does (several syncs per step
//!   on a minute grid) on the values last served.
//!
//! The ScaledTarget comes from `--scaledtarget FILE` (the object a user will apply), else from
//! the protocol's defaults: one AverageValue metric with the replay's per-pod target, bounds
//! from the protocol, no behavior (the HPA's legacy path, as a ScaledTarget without one),
//! `spec.adaptive` from `--adaptive`. Timing differences with a cluster, by design: one reading
//! per step (the trace's grid, not `pollingInterval`), readings without collection delay, and
//! an HPA sync that falls on ebb's poll.

use super::replay::ReplayConfig;
use crate::engine::Millis;
use crate::engine::NoData;
use crate::engine::hpa::Replicas;
use crate::engine::policy::{ReplayPolicy, StepContext};
use crate::engine::target::{Action, Inputs, Mode, TargetMachine, TargetSpec};

/// The decision machine as a replay policy.
pub struct MachinePolicy {
    name: &'static str,
    spec: TargetSpec,
    machine: TargetMachine,
    /// Feed the SLO rule each step's utilization of the ready pods (`--slo`).
    slo: bool,
    /// Decisions taken while the learned headroom was held at `maxHeadroom`.
    at_max_headroom: u64,
}

impl MachinePolicy {
    /// A policy stepping a fresh machine for `spec` (its mode picks the name: `ebb` for
    /// Direct and Shadow, `ebb-hpa` for Hpa). The readings come once per replay step.
    pub fn new(mut spec: TargetSpec, cfg: &ReplayConfig) -> Self {
        spec.interval = step_millis(cfg);
        let slo = spec
            .metrics
            .iter()
            .any(|m| m.learn.as_ref().is_some_and(|l| l.slo.is_some()));
        Self {
            name: match spec.mode {
                Mode::Hpa => "ebb-hpa",
                Mode::Direct | Mode::Shadow => "ebb",
            },
            spec,
            machine: TargetMachine::new(),
            slo,
            at_max_headroom: 0,
        }
    }

    /// The machine, for tests that look inside after a replay.
    pub fn machine(&self) -> &TargetMachine {
        &self.machine
    }
}

fn step_millis(cfg: &ReplayConfig) -> Millis {
    ((cfg.step_seconds * 1000.0).round() as Millis).max(1)
}

impl ReplayPolicy for MachinePolicy {
    fn name(&self) -> &str {
        self.name
    }

    fn decide(&mut self, ctx: &StepContext<'_>) -> u32 {
        let interval = self.spec.interval;
        let now = ctx.start_unix * 1000 + ctx.step as Millis * interval;
        let previous = ctx.previous.min(i32::MAX as u32) as i32;
        // Pods that exist are those asked for; the ready ones serve (Value targets).
        let replicas = |spec: i32| Replicas {
            spec,
            status: spec,
            ready: ctx.ready.min(i32::MAX as u32) as i32,
        };
        if ctx.step > 0 {
            let reading = ctx.last_observation().ok_or(NoData::Empty);
            let readings = vec![reading; self.spec.metrics.len()];
            let (signals, pods) = match (self.slo, ctx.last_served) {
                (true, Some(s)) => (
                    vec![Some(s.utilization); self.spec.metrics.len()],
                    Some(s.pods.min(i32::MAX as u32) as i32),
                ),
                _ => (Vec::new(), None),
            };
            let inputs = Inputs {
                readings: &readings,
                slo: &signals,
                pods,
                ..Inputs::default()
            };
            self.machine.observe(now, &self.spec, inputs);
        }
        let step = self.machine.step(now, &self.spec, replicas(previous));
        let held = |l: crate::engine::learning::MetricLearned| {
            l.learned.headroom_basis == crate::engine::adaptive::Basis::MaxHeadroom
        };
        // A decision is held when any learning metric's headroom is (the replay feeds every
        // metric the same reading, but each may learn with its own settings).
        if (0..self.spec.metrics.len()).any(|i| self.machine.learned(i).is_some_and(held)) {
            self.at_max_headroom += 1;
        }
        let mut count = step.desired;
        // ebb's own writes, as the controller carries them out: every change in mode Direct,
        // the moves to and from zero in mode Hpa.
        if let Action::Scale { from, to } = step.action {
            self.machine.applied(now, &self.spec, from, to);
        }
        if self.spec.mode == Mode::Hpa {
            // The HPA syncs again on the values served until ebb's next poll (at 0 it does
            // nothing: only ebb wakes the workload).
            let sync = crate::engine::hpa::SYNC_PERIOD_MS;
            let mut at = now + sync;
            while at < now + interval {
                count = self.machine.hpa_sync(at, &self.spec, replicas(count));
                at += sync;
            }
        }
        count.max(0) as u32
    }

    fn decisions_at_max_headroom(&self) -> Option<u64> {
        self.spec
            .metrics
            .iter()
            .any(|m| m.learn.is_some())
            .then_some(self.at_max_headroom)
    }
}

/// The ScaledTarget of a replay without `--scaledtarget`: one AverageValue metric aimed at the
/// replay's per-pod target, the protocol's bounds, no behavior, `adaptive` learning (its
/// startup delay is the replay's), the SLO rule when `slo` is given.
pub fn protocol_spec(
    mode: Mode,
    cfg: &ReplayConfig,
    adaptive: &crate::engine::adaptive::AdaptiveConfig,
    slo: Option<&crate::engine::slo::SloConfig>,
) -> TargetSpec {
    use crate::engine::hpa::HpaSpec;
    use crate::engine::learning::LearnSpec;
    use crate::engine::target::MetricSpec;
    let mut adaptive = adaptive.clone();
    adaptive.startup_delay_seconds = (cfg.startup_delay as f64 * cfg.step_seconds).round() as u64;
    let per_pod = cfg.target_per_pod;
    let clamp = |v: u32| v.min(i32::MAX as u32) as i32;
    TargetSpec {
        formula: None,
        mode,
        hpa: HpaSpec {
            min_replicas: clamp(cfg.min_replicas),
            max_replicas: clamp(cfg.max_replicas),
            ..Default::default()
        },
        interval: step_millis(cfg),
        metrics: vec![MetricSpec {
            name: "load".into(),
            target: Ok(crate::engine::Target::AverageValue(
                (per_pod * 1000.0).round().max(1.0) as i64,
            )),
            learn: adaptive.enabled.then(|| {
                Box::new(LearnSpec {
                    name: "load".into(),
                    static_target: per_pod,
                    slo: slo.cloned(),
                    resume_slo: None,
                    resume_risk_correction: 0.0,
                    backfill: false,
                    fingerprint: "replay".into(),
                })
            }),
            drain: None,
            activation: 0.0,
        }],
        adaptive: Some(Box::new(adaptive)),
        fallback: None,
        escalation: None,
        idle: None,
        pause: None,
        revision: Some(("replay".into(), 1)),
    }
}

/// The machine's spec of a ScaledTarget for a replay of one metric's series: `metric` (by
/// name, else the first), in `mode`. The other metrics are left out (the trace is one series;
/// a metric with no reading would hold every scale-down, as it does in a cluster). With a
/// formula, the trace is the formula's value: it decides alone, as in a cluster.
pub fn scaled_target_spec(
    st: &crate::crd::ScaledTarget,
    metric: Option<&str>,
    mode: Mode,
) -> Result<TargetSpec, String> {
    let mut spec = st.machine_spec();
    if let Some(formula) = &st.spec.formula {
        if let Some(Err(e)) = spec.formula.as_deref() {
            return Err(format!("formula: {e}"));
        }
        if metric.is_some_and(|m| m != formula.name) {
            return Err(format!(
                "with a formula only the formula {:?} scales: the trace is its value (with \
                 --prometheus, a query that computes it from the inputs' queries)",
                formula.name
            ));
        }
        spec.formula = None;
    }
    let index = match metric {
        Some(name) => spec
            .metrics
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| format!("the ScaledTarget has no metric {name:?}"))?,
        None if spec.metrics.is_empty() => return Err("the ScaledTarget has no metric".into()),
        None => 0,
    };
    let m = spec.metrics.swap_remove(index);
    if let Err(e) = &m.target {
        return Err(format!("metric {}: {e}", m.name));
    }
    spec.metrics = vec![m];
    spec.mode = mode;
    spec.pause = None;
    if let Some(m) = spec.metrics[0].learn.as_mut() {
        m.backfill = false;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::replay::replay;

    /// A ScaledTarget that scales to zero after a 10-minute cooldown, on one AverageValue
    /// metric of 10 per pod.
    fn zero_target(mode: &str) -> crate::crd::ScaledTarget {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "ebb.dev/v1alpha1", "kind": "ScaledTarget",
            "metadata": { "name": "w", "namespace": "n", "uid": "u", "generation": 1 },
            "spec": {
                "targetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "w" },
                "mode": mode, "minReplicas": 0, "maxReplicas": 20, "cooldownSeconds": 600,
                "metrics": [{
                    "name": "load",
                    "prometheus": { "address": "http://p:9090", "query": "q" },
                    "target": { "type": "AverageValue", "averageValue": "10" }
                }]
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_formula_target_replays_the_formula_s_value_and_an_input_is_refused() {
        let mut st = zero_target("Direct");
        st.spec.min_replicas = 1;
        let mut input = st.spec.metrics[0].clone();
        input.name = "refunds".into();
        st.spec.metrics.push(input);
        st.spec.formula = Some(Box::new(crate::crd::FormulaMetric {
            name: "work".into(),
            expression: "load + 2 * refunds".into(),
            target: st.spec.metrics[0].target.clone(),
            activation: None,
        }));
        let spec = scaled_target_spec(&st, Some("work"), Mode::Direct).unwrap();
        assert!(spec.formula.is_none(), "the trace is the formula's value");
        assert_eq!(spec.metrics.len(), 1);
        assert_eq!(spec.metrics[0].name, "work");
        let e = scaled_target_spec(&st, Some("refunds"), Mode::Direct).unwrap_err();
        assert!(e.contains("only the formula \"work\" scales"), "{e}");
        // A trace of 40 at 10 per pod: 4 replicas, as for any metric.
        let cfg = ReplayConfig {
            capacity: 10.0,
            target_per_pod: 10.0,
            startup_delay: 1,
            min_replicas: 1,
            max_replicas: 20,
            step_seconds: 60.0,
            start_unix: 0,
        };
        let mut policy = MachinePolicy::new(spec, &cfg);
        let out = replay(&[Some(40.0); 10], &cfg, &mut policy);
        assert_eq!(out.decisions[5], 4);
        st.spec.formula.as_mut().unwrap().expression = "load +".into();
        let e = scaled_target_spec(&st, None, Mode::Direct).unwrap_err();
        assert!(
            e.starts_with("formula: syntax error at line 1, column 7"),
            "{e}"
        );
    }

    #[test]
    fn a_replay_goes_to_zero_after_the_cooldown_and_wakes_in_both_modes() {
        // An hour of 50, an hour of nothing, an hour of 50 again, one-minute steps.
        let load: Vec<Option<f64>> = (0..180)
            .map(|t| Some(if (60..120).contains(&t) { 0.0 } else { 50.0 }))
            .collect();
        for (mode, machine_mode) in [("Direct", Mode::Direct), ("Hpa", Mode::Hpa)] {
            let st = zero_target(mode);
            let spec = scaled_target_spec(&st, None, machine_mode).unwrap();
            assert!(spec.idle.is_some() && spec.hpa.min_replicas == 1);
            let cfg = ReplayConfig {
                capacity: 10.0,
                target_per_pod: 10.0,
                startup_delay: 1,
                min_replicas: 0,
                max_replicas: 20,
                step_seconds: 60.0,
                start_unix: 0,
            };
            let mut policy = MachinePolicy::new(spec, &cfg);
            let out = replay(&load, &cfg, &mut policy);
            let d = |t: usize| out.decisions[t];
            assert!(d(59) >= 5, "{mode}: busy at {}", d(59));
            // The last reading of 50 is observed at step 60 (a step reads the one before):
            // zero ten minutes later, not before.
            assert!(d(69) > 0, "{mode}: zero within the cooldown");
            let zero_at = (60..120).find(|&t| d(t) == 0).expect("never at zero");
            assert!(
                (70..=72).contains(&zero_at),
                "{mode}: zero at step {zero_at}"
            );
            assert!((zero_at..120).all(|t| d(t) == 0), "{mode}: woke on no load");
            // Load again: woken at the next step, then up to the load.
            assert!(d(121) >= 1, "{mode}: not woken at {}", d(121));
            assert!(d(130) >= 5, "{mode}: not back up: {}", d(130));
        }
    }
}
