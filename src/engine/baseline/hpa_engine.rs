//! The HPA as production runs it: [`crate::engine::hpa::decide`] with the default behavior,
//! called once per 15 s sync within each replay step (the metric stays `lambda_{t-1}` for the
//! whole step), scale events stored as the controller stores them. Unlike the protocol's `hpa`
//! baseline (a one-decision-per-step model), tolerance and stabilization see every sync.

use crate::engine::hpa::{self, HpaSpec, Replicas, SYNC_PERIOD_MS, ScalingState};
use crate::engine::policy::{ReplayPolicy, StepContext};
use crate::engine::{MetricSample, NoData, Target};

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct HpaEngineBaseline {
    spec: Option<HpaSpec>,
    state: ScalingState,
}

fn to_i32(x: u32) -> i32 {
    i32::try_from(x).unwrap_or(i32::MAX)
}

impl ReplayPolicy for HpaEngineBaseline {
    fn name(&self) -> &str {
        "hpa-engine"
    }

    fn decide(&mut self, ctx: &StepContext<'_>) -> u32 {
        let spec = self.spec.get_or_insert_with(|| HpaSpec {
            min_replicas: to_i32(ctx.min_replicas),
            max_replicas: to_i32(ctx.max_replicas),
            behavior: Some(Box::default()),
            ..Default::default()
        });
        // An AverageValue target of c per pod, in milli-units as the HPA reads Quantities.
        let sample = MetricSample {
            target: Target::AverageValue((ctx.target_per_pod * 1000.0).round() as i64),
            observation: ctx
                .last_observation()
                .map(|l| (l * 1000.0).round() as i64)
                .ok_or(NoData::Stale),
        };
        let step_ms = (ctx.step_seconds * 1000.0).round() as i64;
        let syncs = (step_ms / SYNC_PERIOD_MS).max(1);
        let start = ctx.step as i64 * step_ms;
        let mut current = to_i32(ctx.previous);
        for k in 0..syncs {
            let now = start + k * SYNC_PERIOD_MS;
            let d = hpa::decide(
                spec,
                &mut self.state,
                Replicas::all(current),
                &[sample],
                now,
            );
            if d.desired != current {
                self.state
                    .store_scale_event(spec.behavior.as_deref(), current, d.desired, now);
                current = d.desired;
            }
        }
        u32::try_from(current).unwrap_or(0)
    }
}
