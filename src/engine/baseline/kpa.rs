//! Knative-style KPA: the mean of the last minute of observations against a target
//! utilization of 0.7 per pod, with a change bounded to `[ready / 2, 1000 * ready]` per
//! decision. The 6 s panic window cannot be resolved at minute steps, so panic mode is off.

use crate::engine::ceil_eps;
use crate::engine::policy::{ReplayPolicy, StepContext};

/// Target utilization of a pod's capacity.
pub const TARGET_UTILIZATION: f64 = 0.7;
/// Stable window in seconds.
pub const STABLE_WINDOW_SECONDS: f64 = 60.0;
/// Maximum scale-up rate (times the ready pods).
pub const MAX_SCALE_UP_RATE: f64 = 1000.0;
/// Maximum scale-down rate (ready pods divided by).
pub const MAX_SCALE_DOWN_RATE: f64 = 2.0;

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub struct KpaBaseline;

impl ReplayPolicy for KpaBaseline {
    fn name(&self) -> &str {
        "kpa"
    }

    fn decide(&mut self, ctx: &StepContext<'_>) -> u32 {
        let n = ((STABLE_WINDOW_SECONDS / ctx.step_seconds).floor() as usize).max(1);
        let window = &ctx.observed[ctx.observed.len().saturating_sub(n)..];
        // Missing observations: no change.
        if window.is_empty() || window.iter().any(Option::is_none) {
            return ctx.previous;
        }
        let mean = window.iter().flatten().sum::<f64>() / window.len() as f64;
        let want = ceil_eps(mean / (TARGET_UTILIZATION * ctx.target_per_pod));
        let ready = ctx.ready.max(1) as f64;
        let lo = (ready / MAX_SCALE_DOWN_RATE).floor();
        let hi = ceil_eps(MAX_SCALE_UP_RATE * ready);
        // Saturating conversion: NaN becomes 0 and the replay's clamp lifts it to the minimum.
        want.clamp(lo, hi) as u32
    }
}
